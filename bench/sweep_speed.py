"""A top-p sweep in one batch against `model.generate` once per configuration, outputs checked equal.

The workload of issue #7: 5 top-p values x 32 prompts x 64 new tokens on SmolLM2 (prompts are 32-token
windows of the sotu test split, as the runner cuts them). Three ways, timed alternately in one process:

- generate:   `model.generate` once per top-p value (each prefills all prompts again), torch.manual_seed(seed);
- ours, loop: `decoding.generate` once per value, the same way (our loop, no batching across values);
- ours, sweep: `decoding.generate_sweep`: one prefill, 5 x 32 rows in one decode batch, per-row top-p,
  one torch.Generator per value seeded like generate's global RNG.

Every configuration's tokens from the sweep are compared with generate's; the script says how many rows
differ (0 expected) and fails if any do, unless --allow-mismatch.

    python bench/sweep_speed.py                          # CPU, SmolLM2, the issue's workload
    python bench/sweep_speed.py --device cuda --repeats 3
    python bench/sweep_speed.py --prompts 8 --new-tokens 16 --repeats 1     # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from timing import timed  # bench/timing.py (the script folder is on sys.path)

import decoding
from experiments.generation import left_pad
from experiments.models import load_model


def sweep_prompts(tokenizer, count: int, prompt_tokens: int, prompts_file: str | None) -> list[list[int]]:
    """Token ids of the prompts: cut from the sotu test split, or read from a JSON list (for a machine
    without the dataset packages; write one with --save-prompts)."""
    if prompts_file:
        return json.loads(Path(prompts_file).read_text())[:count]
    from experiments.data import load_documents, make_prompt_pairs

    documents = load_documents(source="sotu", split="test")
    pairs = make_prompt_pairs(documents, tokenizer, prompt_tokens=prompt_tokens, continuation_tokens=64,
                              mode="window", pairs_per_document=count, seed=0, max_pairs=count)
    return [list(p["prompt_ids"]) for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--top-p", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95, 1.0])
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static"])
    parser.add_argument("--repeats", type=int, default=1, help="rounds; each round times all three ways")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompts-file", default=None, help="JSON list of prompt token-id lists")
    parser.add_argument("--save-prompts", default=None, help="write the prompts' token ids here and exit")
    parser.add_argument("--allow-mismatch", action="store_true", help="report differing rows instead of failing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    prompts = sweep_prompts(tokenizer, args.prompts, args.prompt_tokens, args.prompts_file)
    if args.save_prompts:
        Path(args.save_prompts).write_text(json.dumps(prompts))
        return
    ids, mask = left_pad(prompts, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, model.device)
    configs = [dict(do_sample=True, top_k=0, top_p=p) for p in args.top_p]
    shared = dict(max_new_tokens=args.new_tokens)
    console = Console()
    console.print(f"model={args.model} device={model.device} dtype={model.dtype} torch={torch.__version__} "
                  f"threads={torch.get_num_threads()} cpu={platform.processor() or platform.machine()} "
                  f"gpu={torch.cuda.get_device_name() if model.device.type == 'cuda' else '-'}\n"
                  f"workload: {len(configs)} top-p values x {ids.shape[0]} prompts of {ids.shape[1]} tokens x "
                  f"{args.new_tokens} new tokens, cache={args.cache}, repeats={args.repeats}")

    def with_generate():
        outs = []
        for config in configs:
            torch.manual_seed(args.seed)
            outs.append(model.generate(ids, attention_mask=mask, cache_implementation=args.cache if
                                       args.cache == "static" else None, **shared, **config))
        return outs

    def with_our_loop():
        return [decoding.generate(model, ids, mask, cache=args.cache,
                                  generator=torch.Generator(model.device).manual_seed(args.seed), **shared, **config)
                for config in configs]

    def with_our_sweep():
        generators = [torch.Generator(model.device).manual_seed(args.seed) for _ in configs]
        return decoding.generate_sweep(model, ids, mask, configs=configs, generators=generators, cache=args.cache,
                                       **shared)

    ways = {"generate (one call per value)": with_generate, "ours: loop (one call per value)": with_our_loop,
            "ours: batched sweep": with_our_sweep}
    warm = dict(max_new_tokens=2)
    model.generate(ids[:2], attention_mask=mask[:2], **warm)
    decoding.generate_sweep(model, ids[:2], mask[:2], configs=configs[:2],
                            generators=[torch.Generator(model.device).manual_seed(0)] * 2, **warm)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    outputs = {}
    for round_ in range(args.repeats):
        order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
        for name in order:
            outputs[name], t = timed(ways[name])
            seconds[name].append(t)
            console.print(f"round {round_ + 1}: {name}: {t:.2f} s")

    reference = outputs["generate (one call per value)"]
    differing = 0
    for name in ("ours: loop (one call per value)", "ours: batched sweep"):
        for config, ref, ours in zip(configs, reference, outputs[name]):
            seq = ours.sequences
            if seq.shape != ref.shape:
                differing += ref.shape[0]
                console.print(f"{name} top_p={config['top_p']}: shape {tuple(seq.shape)} vs {tuple(ref.shape)}")
                continue
            rows = int((seq != ref).any(dim=1).sum())
            differing += rows
            if rows:
                console.print(f"{name} top_p={config['top_p']}: {rows} of {ref.shape[0]} rows differ from generate")

    new_tokens = len(configs) * ids.shape[0] * args.new_tokens  # upper bound: rows may stop at EOS
    base = statistics.median(seconds["generate (one call per value)"])
    table = Table(title=f"{len(configs)}-value top-p sweep, {ids.shape[0]} prompts, {args.new_tokens} new tokens "
                        f"(median of {args.repeats})")
    for column in ("way", "seconds", "rows x tokens / s", "speed-up vs generate"):
        table.add_column(column, justify="right")
    for name in ways:
        t = statistics.median(seconds[name])
        table.add_row(name, f"{t:.2f}", f"{new_tokens / t:.0f}", f"{base / t:.2f}x")
    console.print(table)
    ratio = base / statistics.median(seconds["ours: batched sweep"])
    console.print(f"batched sweep vs generate: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'}); "
                  f"rows differing from generate: {differing}")
    if differing and not args.allow_mismatch:
        raise SystemExit(f"{differing} rows differ from model.generate")


if __name__ == "__main__":
    main()
