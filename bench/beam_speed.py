"""Tokens/s of our beam search against `model.generate` beam search, same arguments, same process.

Cells: widths (num_beams) 4 and 8, batch 1 and 4 (left-padded prompts of different lengths). In each cell
the two implementations run alternately (theirs, ours, theirs, ours, ...) so that a noisy neighbour
on a shared machine hurts both alike; every pair is checked for identical sequences and scores within
1e-5, and the table shows the median tokens/s of each and the ratio ours / theirs (target >= 1.0).
`min_new_tokens = max_new_tokens` keeps EOS away so that every run does the same number of steps;
tokens/s counts the returned tokens, batch x new tokens (the work behind them is K times that).
Both use their default dynamic cache; `--cache static` times our static cache instead.

    .venv/bin/python bench/beam_speed.py              # SmolLM2, 32 new tokens, 3 repeats per cell
    .venv/bin/python bench/beam_speed.py --quick      # 8 new tokens, 1 repeat: a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import decoding
from experiments.models import load_model

PROMPTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "The state of our Union is strong, and tonight",
    "Our economy",
    "Fellow citizens of the Senate and House of Representatives:",
]


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_cell(model, batch, width: int, new_tokens: int, repeats: int, cache: str) -> tuple[float, float]:
    """Median seconds of (theirs, ours) over `repeats` alternating runs; raises if any pair differs."""
    kwargs = dict(num_beams=width, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    theirs_t, ours_t = [], []
    for _ in range(repeats):
        theirs, t = timed(lambda: model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                                 return_dict_in_generate=True, output_scores=True, **kwargs))
        theirs_t.append(t)
        ours, t = timed(lambda: decoding.generate(model, batch.input_ids, batch.attention_mask, cache=cache,
                                                  **kwargs))
        ours_t.append(t)
        same = torch.equal(ours.sequences, theirs.sequences) and torch.allclose(
            ours.sequences_scores, theirs.sequences_scores, atol=1e-5)
        if not same:
            raise AssertionError(f"outputs differ: batch={batch.input_ids.shape[0]} width={width}")
    return statistics.median(theirs_t), statistics.median(ours_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cache", default="dynamic", choices=["dynamic", "static"], help="our cache setting")
    parser.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.new_tokens, args.repeats = 8, 1
    if max(args.batch_sizes) > len(PROMPTS):
        parser.error(f"--batch-sizes {max(args.batch_sizes)} is more than the {len(PROMPTS)} prompts")

    model, tokenizer = load_model(args.model, device=args.device)
    print(f"# {args.model} on {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}; {args.new_tokens} new tokens, "
          f"median of {args.repeats}, our cache {args.cache}")
    warm = tokenizer(PROMPTS[:1], return_tensors="pt").to(model.device)
    model.generate(warm.input_ids, num_beams=2, max_new_tokens=2)
    decoding.generate(model, warm.input_ids, num_beams=2, max_new_tokens=2)

    print("| batch | num_beams | generate tok/s | ours tok/s | ratio ours/theirs |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for batch_size in args.batch_sizes:
        batch = tokenizer(PROMPTS[:batch_size], return_tensors="pt", padding=True).to(model.device)
        for width in args.widths:
            theirs, ours = run_cell(model, batch, width, args.new_tokens, args.repeats, args.cache)
            tokens = batch_size * args.new_tokens
            ratios.append(theirs / ours)
            print(f"| {batch_size} | {width} | {tokens / theirs:.1f} | {tokens / ours:.1f} | {theirs / ours:.2f} |",
                  flush=True)
    print(f"# min ratio {min(ratios):.2f}; sequences identical and scores within 1e-5 in every run")


if __name__ == "__main__":
    main()
