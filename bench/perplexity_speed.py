"""Scored tokens/s of `experiments.perplexity.score_batch` against a bare forward pass over the same windows.

The bare forward is what any scorer must pay at least: `model(input_ids, attention_mask)` on the same
batches (same sorting, same padding), with the model's own full-vocabulary logits and nothing done with
them. The scorer adds the window bookkeeping and the target log-probabilities (for models with a plain
linear head it projects the scored positions itself, in tiles, instead of the model's head: see
`experiments/perplexity.py`). The target is a ratio (scorer tok/s / bare tok/s) of at least 0.95.

    .venv/bin/python bench/perplexity_speed.py --threads 1           # SmolLM2, sotu test, 8 windows of 512
    .venv/bin/python bench/perplexity_speed.py --batch-sizes 1 4 16 --windows 32 --device cuda
    .venv/bin/python bench/perplexity_speed.py --threads 1 --model-logits  # the path of other heads

How noise is kept out of the verdict on a machine shared with other jobs: each repeat times, batch by
batch, the bare forward and the scorer back to back, bare first in even repeats and scorer first in odd
ones, so both meet the same load; a repeat's ratio is its bare seconds over its scorer seconds, summed
over the batches. The table gives, per batch size, the median tok/s of each, the median ratio over the
repeats and the lowest one; the verdict is on the median ratios. Before timing, each batch size is run
once by both (warm-up) and the scorer's log-probabilities are checked against a log-softmax of the bare
forward's logits.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import torch
from timing import timed  # bench/timing.py (the script folder is on sys.path)

from experiments.data import load_documents
from experiments.models import load_model
from experiments import perplexity
from experiments.perplexity import batches_by_length, prefix_token_id, score_batch
from experiments.windows import rolling_windows

TARGET = 0.95


def bare_forward(model, windows, pad_id: int) -> torch.Tensor:
    """One forward pass over the windows, padded and placed exactly as `score_batch` does: (B, T, V) logits."""
    device = next(model.parameters()).device
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(windows), width), dtype=torch.long)  # (B, T)
    for row, window in enumerate(windows):
        ids[row, width - len(window.input_ids):] = torch.tensor(window.input_ids)
        mask[row, width - len(window.input_ids):] = 1
    with torch.inference_mode():
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits


def check_scores(model, windows, pad_id: int) -> None:
    """The scorer's log-probabilities against a log-softmax of the bare forward's logits (atol 1e-4)."""
    logits = bare_forward(model, windows, pad_id)
    for row, (window, scored) in enumerate(zip(windows, score_batch(model, windows, pad_id))):
        k = len(window.target_ids)
        targets = torch.tensor(window.target_ids, device=logits.device)[:, None]  # (K, 1)
        expected = torch.log_softmax(logits[row, -k:].float(), -1).gather(-1, targets)[:, 0].cpu()  # (K,)
        if not torch.allclose(scored, expected, atol=1e-4):
            raise AssertionError(f"scorer and bare forward disagree in row {row}: max difference "
                                 f"{(scored - expected).abs().max().item():.2e}")


def compare(model, windows, batch_size: int, pad_id: int, repeats: int) -> tuple[list[float], list[float]]:
    """(bare seconds, scorer seconds) of each repeat, over all windows in batches of `batch_size`."""
    batches = [[windows[i] for i in indices] for indices in batches_by_length(windows, batch_size)]
    check_scores(model, batches[0], pad_id)  # also the warm-up of this batch shape
    bare_times, score_times = [], []
    for repeat in range(repeats):
        bare_total = score_total = 0.0
        for batch in batches:
            runs = [("bare", lambda: bare_forward(model, batch, pad_id)),
                    ("score", lambda: score_batch(model, batch, pad_id))]
            for name, fn in runs if repeat % 2 == 0 else runs[::-1]:
                seconds = timed(fn)[1]  # the output is dropped at once, outside the timing
                if name == "bare":
                    bare_total += seconds
                else:
                    score_total += seconds
        bare_times.append(bare_total)
        score_times.append(score_total)
    return bare_times, score_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--windows", type=int, default=8, help="how many windows of the sotu test split to score")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=7, help="alternating repeats per batch size")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model-logits", action="store_true",
                        help="score from the model's own logits, as for models without a plain linear head")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_logits:
        perplexity._plain_head = lambda model: None  # every model takes the `logits_to_keep` path

    model, tokenizer = load_model(args.model, device=args.device)
    text = load_documents("sotu", "test")[0]["text"]
    tokens = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    windows = rolling_windows(tokens, prefix_token_id(tokenizer), args.max_length, args.stride)[: args.windows]
    scored = sum(len(w.target_ids) for w in windows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    print(f"# {args.model} on {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}; {len(windows)} windows of "
          f"{args.max_length}, stride {args.stride or args.max_length}, {scored} scored tokens; "
          f"{args.repeats} alternating repeats; {'model logits' if args.model_logits else 'fused head'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| batch | bare forward tok/s | scorer tok/s | ratio (median) | ratio (lowest repeat) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    medians = []
    for batch_size in args.batch_sizes:
        bare, ours = compare(model, windows, batch_size, pad_id, args.repeats)
        ratios = [b / s for b, s in zip(bare, ours)]  # scorer tok/s over bare tok/s, per repeat
        medians.append(statistics.median(ratios))
        print(f"| {batch_size} | {scored / statistics.median(bare):,.0f} | {scored / statistics.median(ours):,.0f} "
              f"| {medians[-1]:.3f} | {min(ratios):.3f} |", flush=True)
    verdict = "met" if min(medians) >= TARGET else "NOT met"
    print(f"# lowest median ratio {min(medians):.3f}: target >= {TARGET} {verdict}; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
