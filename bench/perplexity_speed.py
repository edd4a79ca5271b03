"""Scored tokens/s of `experiments.perplexity.score_windows` against a bare forward pass over the same windows.

The bare forward is what any scorer must pay at least: `model(input_ids, attention_mask)` on the same
batches (same sorting, same padding), with full logits and nothing done with them. The scorer adds the
window bookkeeping, the target gather and the logsumexp; the target is a ratio of at least 0.95.

    .venv/bin/python bench/perplexity_speed.py                       # SmolLM2, sotu test, 8 windows of 512
    .venv/bin/python bench/perplexity_speed.py --batch-sizes 1 4 16 --windows 32 --device cuda

Each (batch size, method) is timed `--repeats` times after one warm-up and the best run is kept; the
two methods alternate so that a noisy neighbour on a shared machine hurts both alike.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from experiments.data import load_documents
from experiments.models import load_model
from experiments.perplexity import batches_by_length, prefix_token_id, score_windows
from experiments.windows import rolling_windows


def bare_forward(model, windows, batch_size: int, pad_id: int) -> None:
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in batches_by_length(windows, batch_size):
            width = max(len(windows[i].input_ids) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(windows[i].input_ids)
                ids[row, width - n:] = torch.tensor(windows[i].input_ids)
                mask[row, width - n:] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.sum().item()


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--windows", type=int, default=8, help="how many windows of the sotu test split to score")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

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
    for batch_size in args.batch_sizes:
        bare_forward(model, windows[:batch_size], batch_size, pad_id)  # warm-up
        score_windows(model, windows[:batch_size], batch_size, pad_id)
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(timed(lambda: bare_forward(model, windows, batch_size, pad_id)))
            ours.append(timed(lambda: score_windows(model, windows, batch_size, pad_id)))
        bare_rate, our_rate = scored / min(bare), scored / min(ours)
        print(f"| {batch_size} | {bare_rate:,.0f} | {our_rate:,.0f} | {our_rate / bare_rate:.3f} |", flush=True)


if __name__ == "__main__":
    main()
