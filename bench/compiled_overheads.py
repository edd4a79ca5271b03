"""What the compiled step's two overhead cuts buy: packed grouped-query attention and skipped steady guards.

    .venv/bin/python bench/compiled_overheads.py [--threads 2] [--dtypes float32 bfloat16] [--batches 1 8]
                                                 [--compile max-autotune] [--rounds 3]

decoding/compiled.py (its docstring says why each exists). For each dtype and batch size, SmolLM2 greedy decode
of 64 new tokens (static cache, the compiled step) in three settings, run alternately `--rounds` times:

- `neither`: transformers' own choice under dynamo (keys / values repeated to every query head) and every guard
  checked at every step: the compiled step as it was before either cut;
- `packed`: the packed single-token attention only;
- `both`: packed attention and, after a step checked in full, the steady steps run with only the differentiating
  guards (the default).

Decode tokens/s exclude the prefill (GenerationResult.decode_seconds); medians over rounds. Dynamo is reset
before each dtype and batch size (one shape per graph); each setting is warmed up (compiled) before the clock
runs, its compile time printed. Every run's tokens are compared with the eager static path's (an error if they
differ in float32; counted in bfloat16, where compiled kernels may round a near tie the other way).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import torch
from prompts import PROMPTS  # bench/prompts.py (the script folder is on sys.path)
from timing import timed  # bench/timing.py

import decoding
import decoding.compiled as compiled
from experiments.models import load_model

SETTINGS = {"neither": (False, False), "packed": (True, False), "both": (True, True)}  # (PACK_GQA, SKIP_...)


def run(model, ids, mask, compile_setting, new_tokens: int):
    return decoding.generate(model, ids, mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, cache="static", compile=compile_setting)


def measure(model, tokenizer, batch: int, args) -> dict[str, tuple[float, float, int]]:
    """setting -> (median decode tok/s, warm-up s, runs whose tokens differ from eager)."""
    enc = tokenizer(PROMPTS[:batch], return_tensors="pt", padding=True)
    ids, mask = enc.input_ids.to(model.device), enc.attention_mask.to(model.device)
    with torch.inference_mode():
        eager = decoding.generate(model, ids, mask, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                  do_sample=False, cache="static").sequences
        torch._dynamo.reset()
        warm = {}
        for name, (pack, skip) in SETTINGS.items():
            compiled.PACK_GQA, compiled.SKIP_STEADY_GUARDS = pack, skip
            warm[name] = timed(lambda: run(model, ids, mask, args.compile, 2))[1]
        speeds: dict[str, list[float]] = {name: [] for name in SETTINGS}
        differ = dict.fromkeys(SETTINGS, 0)
        for _ in range(args.rounds):
            for name, (pack, skip) in SETTINGS.items():
                compiled.PACK_GQA, compiled.SKIP_STEADY_GUARDS = pack, skip
                out = run(model, ids, mask, args.compile, args.new_tokens)
                speeds[name].append(batch * (args.new_tokens - 1) / out.decode_seconds)
                if not torch.equal(out.sequences, eager):
                    if model.dtype == torch.float32:
                        raise AssertionError(f"{name}: float32 greedy tokens differ from the eager static path")
                    differ[name] += 1
    compiled.PACK_GQA, compiled.SKIP_STEADY_GUARDS = True, True
    return {name: (statistics.median(speeds[name]), warm[name], differ[name]) for name in SETTINGS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--compile", default="max-autotune", choices=["max-autotune", "true"],
                        help="the compile setting: compile='max-autotune' or compile=True")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    args.compile = True if args.compile == "true" else args.compile
    torch.set_num_threads(args.threads)
    print(f"model=smollm2 torch={torch.__version__} threads={args.threads} cpu={platform.machine()} "
          f"capability={torch.backends.cpu.get_cpu_capability()} compile={args.compile!r} "
          f"new_tokens={args.new_tokens} rounds={args.rounds} load average at start {os.getloadavg()}")
    rows = []
    for dtype in args.dtypes:
        model, tokenizer = load_model("smollm2", dtype=dtype)
        for batch in args.batches:
            result = measure(model, tokenizer, batch, args)
            print(f"done: {dtype} batch {batch}: " + ", ".join(
                f"{name} {tps:.1f} tok/s (warm-up {warm:.0f} s, {diff} runs differ)"
                for name, (tps, warm, diff) in result.items()), flush=True)
            rows.append((dtype, batch, result))
    print("| dtype | batch | neither tok/s | packed GQA | + steady guards skipped | packed / neither | both / neither |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for dtype, batch, r in rows:
        neither, packed, both = (r[name][0] for name in SETTINGS)
        print(f"| {dtype} | {batch} | {neither:.1f} | {packed:.1f} | {both:.1f} | {packed / neither:.2f} | "
              f"{both / neither:.2f} |")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
