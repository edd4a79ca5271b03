"""Tokens/s of our beam search against `model.generate` beam search, same arguments, same process.

Cells: widths (num_beams) 4 and 8, batch 1 and 4 (left-padded prompts of different lengths). In each cell
the two implementations run alternately (theirs, ours, theirs, ours, ...) so that a noisy neighbour
on a shared machine hurts both alike; every pair is checked for identical sequences and scores within
1e-5, and the table shows the median tokens/s of each and the ratio ours / theirs (target >= 1.0).
`min_new_tokens = max_new_tokens` keeps EOS away so that every run does the same number of steps;
tokens/s counts the returned tokens, batch x new tokens (the work behind them is K times that).
generate runs with its default dynamic cache; we run with ours (the same `DynamicCache`, the
like-for-like ratio) and with our static slot cache (no concatenation per step: "ratio static").

    .venv/bin/python bench/beam_speed.py              # SmolLM2, 32 new tokens, 3 repeats per cell
    .venv/bin/python bench/beam_speed.py --quick      # 8 new tokens, 1 repeat: a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
from timing import timed  # bench/timing.py (the script folder is on sys.path)

import decoding
from experiments.models import load_model

PROMPTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "The state of our Union is strong, and tonight",
    "Our economy",
    "Fellow citizens of the Senate and House of Representatives:",
]


def run_cell(model, batch, width: int, new_tokens: int, repeats: int, caches: list[str]) -> list[float]:
    """Median seconds of generate, then of ours with each cache setting, over `repeats` alternating rounds.

    Raises if any of our runs differs from generate's.
    """
    kwargs = dict(num_beams=width, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    times: list[list[float]] = [[] for _ in range(1 + len(caches))]
    for _ in range(repeats):
        theirs, t = timed(lambda: model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                                 return_dict_in_generate=True, output_scores=True, **kwargs))
        times[0].append(t)
        for i, cache in enumerate(caches, start=1):
            ours, t = timed(lambda: decoding.generate(model, batch.input_ids, batch.attention_mask, cache=cache,
                                                      **kwargs))
            times[i].append(t)
            same = torch.equal(ours.sequences, theirs.sequences) and torch.allclose(
                ours.sequences_scores, theirs.sequences_scores, atol=1e-5)
            if not same:
                raise AssertionError(f"outputs differ: batch={batch.input_ids.shape[0]} width={width} cache={cache}")
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--caches", nargs="+", default=["dynamic", "static"], choices=["none", "dynamic", "static"],
                        help="our cache settings to time")
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
          f"median of {args.repeats} alternating rounds")
    warm = tokenizer(PROMPTS[:1], return_tensors="pt").to(model.device)
    model.generate(warm.input_ids, num_beams=2, max_new_tokens=2)
    decoding.generate(model, warm.input_ids, num_beams=2, max_new_tokens=2)

    header = ["batch", "num_beams", "generate tok/s"]
    for cache in args.caches:
        header += [f"ours ({cache}) tok/s", f"ratio {cache}"]
    print("| " + " | ".join(header) + " |")
    print("|" + " ---: |" * len(header))
    ratios: dict[str, list[float]] = {cache: [] for cache in args.caches}
    for batch_size in args.batch_sizes:
        batch = tokenizer(PROMPTS[:batch_size], return_tensors="pt", padding=True).to(model.device)
        for width in args.widths:
            theirs, *ours = run_cell(model, batch, width, args.new_tokens, args.repeats, args.caches)
            tokens = batch_size * args.new_tokens
            cells = [str(batch_size), str(width), f"{tokens / theirs:.1f}"]
            for cache, seconds in zip(args.caches, ours):
                ratios[cache].append(theirs / seconds)
                cells += [f"{tokens / seconds:.1f}", f"{theirs / seconds:.2f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    summary = ", ".join(f"{cache} {min(r):.2f}" for cache, r in ratios.items())
    print(f"# min ratio ours/theirs: {summary}; sequences identical and scores within 1e-5 in every run")


if __name__ == "__main__":
    main()
