"""decodelab's lm-eval model against lm-eval's own HFLM on the same local tasks, in one process.

Both LMs wrap the same loaded SmolLM2 module and tokenizer; each `lm_eval.simple_evaluate` call runs the same
tasks, documents and few-shot prompts. Two workloads, each timed for both sides, alternating:

- greedy: one configuration (the tasks' own greedy gen_kwargs);
- sweep: 5 temperatures (0.3 0.6 0.9 1.2 1.5), one simple_evaluate per temperature on each side (lm-eval takes
  one gen_kwargs per run: `gen_kwargs=` for HFLM, the run's decoding config for ours), and ours shared:
  `SweepDecodelabLM` (experiments/lm_eval_sweep.py) answers all 5 from one generate_sweep per batch (one
  prefill) and scores each log-likelihood once.

Scores are printed beside the times; greedy scores must be equal (the tests hold the strings equal).

    python bench/lm_eval_speed.py                       # SmolLM2, CPU, 40 documents per task
    python bench/lm_eval_speed.py --limit 10 --tasks arithmetic_add
    python bench/lm_eval_speed.py --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from timing import timed  # bench/timing.py (the script folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEMPERATURES = (0.3, 0.6, 0.9, 1.2, 1.5)


def evaluate(lm, tasks: list[str], limit: int, manager, gen_kwargs: dict | None = None) -> dict[str, float]:
    import lm_eval

    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, bootstrap_iters=0,
                                      gen_kwargs=gen_kwargs, log_samples=False)["results"]
    scores = {}
    for task, values in results.items():
        for key in ("acc_norm,none", "exact_match,first"):
            if key in values:
                scores[task] = float(values[key])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="sotu_next_sentence,sotu_last_word,arithmetic_add")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from experiments.lm_eval_model import DecodelabLM
    from experiments.lm_eval_run import LOCAL_TASKS
    from experiments.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    tasks = args.tasks.split(",")
    manager = TaskManager(include_path=str(LOCAL_TASKS), include_defaults=False)
    print(f"{args.model} on {args.device} ({platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads); tasks {tasks}, {args.limit} documents each")

    def ours(**decoding):
        return DecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, **decoding)

    hf = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    (hf_scores, hf_s) = timed(lambda: evaluate(hf, tasks, args.limit, manager))
    (our_scores, our_s) = timed(lambda: evaluate(ours(), tasks, args.limit, manager))
    print(f"greedy: HFLM {hf_s:.1f} s {hf_scores}; decodelab {our_s:.1f} s {our_scores}; "
          f"ratio HFLM / decodelab = {hf_s / our_s:.2f}")
    if hf_scores != our_scores:
        print("greedy scores differ: see tests/experiments/test_lm_eval_model.py")

    hf_total = our_total = 0.0
    for temperature in TEMPERATURES:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}
        torch.manual_seed(0)
        (hf_scores, seconds) = timed(lambda: evaluate(hf, tasks, args.limit, manager, gen_kwargs=sampling))
        hf_total += seconds
        (our_scores, ours_seconds) = timed(lambda: evaluate(ours(**sampling), tasks, args.limit, manager))
        our_total += ours_seconds
        print(f"  temperature {temperature}: HFLM {seconds:.1f} s {hf_scores}; decodelab {ours_seconds:.1f} s {our_scores}")
    from experiments.lm_eval_sweep import SweepDecodelabLM

    configs = [{"do_sample": True, "temperature": t, "top_k": 0} for t in TEMPERATURES]

    def shared_sweep():
        lm = SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, configs=configs)
        return [evaluate(lm.use(i), tasks, args.limit, manager) for i in range(len(configs))]

    (shared_scores, shared_total) = timed(shared_sweep)
    print(f"  shared (one prefill per batch for all {len(configs)}): {shared_total:.1f} s {shared_scores}")
    print(f"sweep of {len(TEMPERATURES)}: HFLM {hf_total:.1f} s, decodelab one run each {our_total:.1f} s "
          f"(ratio {hf_total / our_total:.2f}), decodelab shared {shared_total:.1f} s (ratio {hf_total / shared_total:.2f})")


if __name__ == "__main__":
    main()
