"""Tokens/s of decoding.generate against model.generate, same arguments, same process, side by side.

Cells: batch 1 and 8, greedy, top-p sampling, top-p with a watermark and greedy with classifier-free guidance
(guidance_scale 1.5), dynamic and static cache. Each cell runs the two
implementations alternately (ours, theirs, ours, theirs, ...) so machine noise hits both alike, checks
that they produced the same tokens, and reports the median tokens/s of each and their ratio (ours / theirs).
The static cells compare our static cache against generate's `cache_implementation="static"`, and also
against generate's default dynamic cache (the column "vs dynamic").

    python bench/generate_speed.py                 # SmolLM2, 64 new tokens, 5 repeats
    python bench/generate_speed.py --quick         # fewer tokens and repeats
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
from transformers import WatermarkingConfig
from prompts import PROMPTS  # bench/prompts.py (the script folder is on sys.path)
from timing import timed  # bench/timing.py
from rich.console import Console
from rich.table import Table

import decoding
from experiments.models import load_model

MODES = {"greedy": dict(do_sample=False), "top_p": dict(do_sample=True, top_p=0.9, top_k=0)}
# The Kirchenbauer watermark on top-p sampling: generate draws a greenlist permutation per row per step, we
# keep the greenlists of recent seeds (decoding/processors/watermark.py); the tokens must still be the same.
MODES["top_p+watermark"] = dict(MODES["top_p"], watermarking_config=WatermarkingConfig(bias=2.0))
# Classifier-free guidance on greedy decoding: a second set of rows (the last prompt token) with its own cache,
# one more forward per step in both implementations (generate's unconditional rows always use a dynamic cache).
MODES["greedy+cfg"] = dict(MODES["greedy"], guidance_scale=1.5)


def run_cell(model, batch, mode, cache, new_tokens, repeats):
    kwargs = dict(MODES[mode], max_new_tokens=new_tokens, min_new_tokens=new_tokens)  # every row runs to the end
    theirs_kwargs = dict(kwargs, cache_implementation="static") if cache == "static" else dict(kwargs)
    ours_t, theirs_t, dynamic_t = [], [], []
    for rep in range(repeats):
        torch.manual_seed(rep)
        ours, t = timed(lambda: decoding.generate(model, batch.input_ids, batch.attention_mask, cache=cache,
                                                  **kwargs))
        ours_t.append(t)
        torch.manual_seed(rep)
        theirs, t = timed(lambda: model.generate(batch.input_ids, attention_mask=batch.attention_mask,
                                                 **theirs_kwargs))
        theirs_t.append(t)
        if not torch.equal(ours.sequences, theirs):
            raise AssertionError(f"outputs differ in cell batch={batch.input_ids.shape[0]} {mode} {cache}")
        if cache == "static":
            torch.manual_seed(rep)
            _, t = timed(lambda: model.generate(batch.input_ids, attention_mask=batch.attention_mask, **kwargs))
            dynamic_t.append(t)
    tokens = batch.input_ids.shape[0] * new_tokens
    ours_tps = tokens / statistics.median(ours_t)
    theirs_tps = tokens / statistics.median(theirs_t)
    vs_dynamic = ours_tps / (tokens / statistics.median(dynamic_t)) if dynamic_t else None
    return ours_tps, theirs_tps, vs_dynamic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 3 repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 steadies a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.new_tokens, args.repeats = 16, 3
    model, tokenizer = load_model(args.model, device=args.device)
    console = Console()
    console.print(f"model={args.model} device={args.device} torch={torch.__version__} threads="
                  f"{torch.get_num_threads()} cpu={platform.processor() or platform.machine()} "
                  f"new_tokens={args.new_tokens} repeats={args.repeats}")
    table = Table(title="decoding.generate vs model.generate (tokens/s, median)")
    for column in ("batch", "mode", "cache", "ours tok/s", "generate tok/s", "ratio", "vs dynamic"):
        table.add_column(column, justify="right")
    warm = tokenizer(PROMPTS[:1], return_tensors="pt").to(model.device)
    decoding.generate(model, warm.input_ids, max_new_tokens=4)
    model.generate(warm.input_ids, max_new_tokens=4)
    ratios = []
    for batch_size in (1, 8):
        batch = tokenizer(PROMPTS[:batch_size], return_tensors="pt", padding=True).to(model.device)
        for mode in MODES:
            for cache in ("dynamic", "static"):
                ours, theirs, vs_dynamic = run_cell(model, batch, mode, cache, args.new_tokens, args.repeats)
                ratios.append(ours / theirs)
                table.add_row(str(batch_size), mode, cache, f"{ours:.1f}", f"{theirs:.1f}", f"{ours / theirs:.2f}",
                              "" if vs_dynamic is None else f"{vs_dynamic:.2f}")
                console.print(f"done: batch={batch_size} {mode} {cache}: ratio {ours / theirs:.2f}")
    console.print(table)
    console.print(f"min ratio {min(ratios):.2f}; outputs identical in every cell")


if __name__ == "__main__":
    main()
