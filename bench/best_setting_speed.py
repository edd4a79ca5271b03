"""Each implementation at its best: decoding.generate's fastest cache setting against model.generate's fastest.

bench/generate_speed.py compares the two with the same cache argument. This one asks what a user gets who
picks the fastest setting each offers, compile included:

- ours: `cache="dynamic"`, `cache="static"`, `cache="static", compile=True` (the fixed-shape compiled step);
- theirs: the default dynamic cache, `cache_implementation="static"`, and that static cache with generate's own
  automatic compilation of the forward. generate compiles only on accelerators unless told otherwise, so on
  CPU it is handed a `CompileConfig` with its `_compile_all_devices` flag set (transformers' switch for
  compiling on any device) and inductor's default mode, as ours; on CUDA its default `reduce-overhead` mode
  (CUDA graphs) is kept, as ours uses.
- with `--autotune`, also both with inductor's max-autotune: ours `compile="max-autotune"`, theirs a
  CompileConfig with the same options (`decoding.compiled.CPU_AUTOTUNE_OPTIONS`; on CUDA the mode). One
  difference stays: our step also runs inside `torch._inductor.config.patch(freezing=True)`, which dynamo must
  see to freeze the weights (the CPU GEMM templates take only constant weights); generate's compile gets the
  option only, so its weights are not frozen, and freezing them globally would also fold its StaticCache
  buffers, which it marks as static addresses (ours are not marked on CPU for that reason), and lose the
  cache's writes.

Cells: batch 1 and 8, greedy and top-p (0.9). Before a batch size, dynamo is reset and every compiled setting
is warmed up once with the cell's own lengths (generate's static cache is sized prompt + new tokens, and a new
size recompiles its graph; its compile time printed); then `--repeats` rounds run every setting alternately, each
call generating exactly `--new-tokens` tokens per row, timed whole (prefill included, as generate_speed).
Tokens are compared with model.generate's default (dynamic) call under the same seed: greedy float32 must be
identical in every setting (an error otherwise); a compiled top-p run may choose differently where its logits
round differently, so each setting's column says whether its tokens matched.

    .venv/bin/python bench/best_setting_speed.py                      # SmolLM2 float32, 64 new tokens
    .venv/bin/python bench/best_setting_speed.py --dtype bfloat16
    .venv/bin/python bench/best_setting_speed.py --quick              # 16 new tokens, 2 repeats
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch
from transformers import CompileConfig
from prompts import PROMPTS  # bench/prompts.py (the script folder is on sys.path)
from timing import timed  # bench/timing.py
from rich.console import Console
from rich.table import Table

import decoding
from decoding.compiled import CPU_AUTOTUNE_OPTIONS
from experiments.models import load_model

MODES = {"greedy": dict(do_sample=False), "top_p": dict(do_sample=True, top_p=0.9, top_k=0)}


def our_settings(autotune: bool) -> dict[str, dict]:
    settings = {"dynamic": dict(cache="dynamic"), "static": dict(cache="static"),
                "static+compile": dict(cache="static", compile=True)}
    if autotune:
        settings["static+autotune"] = dict(cache="static", compile="max-autotune")
    return settings


def compile_config(device_type: str, autotune: bool) -> CompileConfig:
    if device_type == "cuda":
        return CompileConfig(mode="max-autotune" if autotune else "reduce-overhead")
    config = CompileConfig(mode=None, options=dict(CPU_AUTOTUNE_OPTIONS) if autotune else None)
    config._compile_all_devices = True  # transformers' own switch to compile on CPU
    return config


def their_settings(device_type: str, autotune: bool) -> dict[str, dict]:
    settings = {"dynamic": {}, "static": dict(cache_implementation="static"),
                "static+compile": dict(cache_implementation="static",
                                       compile_config=compile_config(device_type, False))}
    if autotune:
        settings["static+autotune"] = dict(cache_implementation="static",
                                           compile_config=compile_config(device_type, True))
    return settings


def call(model, batch, implementation: str, setting: dict, kwargs: dict, seed: int) -> torch.Tensor:
    """(B, T + N) sequences of one call, the global generator seeded first (both draw from it alike)."""
    torch.manual_seed(seed)
    if implementation == "ours":
        return decoding.generate(model, batch.input_ids, batch.attention_mask, **setting, **kwargs).sequences
    return model.generate(batch.input_ids, attention_mask=batch.attention_mask, **setting, **kwargs)


def run_cell(model, batch, mode: str, settings: dict, new_tokens: int, repeats: int):
    """(label -> median tokens/s, label -> tokens equal to generate's dynamic call in every round)."""
    kwargs = dict(MODES[mode], max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    times = {label: [] for label in settings}
    same = {label: True for label in settings}
    for rep in range(repeats):
        reference = None
        for label, (implementation, setting) in settings.items():
            sequences, t = timed(lambda: call(model, batch, implementation, setting, kwargs, rep))
            times[label].append(t)
            reference = sequences if reference is None else reference  # the first setting: theirs dynamic
            same[label] &= torch.equal(sequences, reference)
    tokens = batch.input_ids.shape[0] * new_tokens
    return {label: tokens / statistics.median(t) for label, t in times.items()}, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 2 repeats")
    parser.add_argument("--autotune", action="store_true", help="also both compiled with inductor's max-autotune")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.new_tokens, args.repeats = 16, 2
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    console = Console(width=160)
    console.print(f"model={args.model} device={args.device} dtype={args.dtype} torch={torch.__version__} "
                  f"threads={torch.get_num_threads()} cpu={platform.processor() or platform.machine()} "
                  f"capability={torch.backends.cpu.get_cpu_capability()} new_tokens={args.new_tokens} "
                  f"repeats={args.repeats}")
    settings = {f"generate {k}": ("theirs", v) for k, v in their_settings(model.device.type, args.autotune).items()}
    settings.update({f"ours {k}": ("ours", v) for k, v in our_settings(args.autotune).items()})
    table = Table(title="best setting of each (tokens/s, median; * = tokens equal to generate dynamic)")
    for column in ("batch", "mode", *settings, "best ours / best generate"):
        table.add_column(column, justify="right")
    ratios = []
    for batch_size in map(int, args.batches.split(",")):
        batch = tokenizer(PROMPTS[:batch_size], return_tensors="pt", padding=True).to(model.device)
        torch._dynamo.reset()  # every compiled setting compiles for this batch shape from scratch
        for label, (implementation, setting) in settings.items():
            if "static+" in label:
                _, t = timed(lambda: call(model, batch, implementation, setting,
                                          dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens), 0))
                console.print(f"warm-up: batch={batch_size} {label}: {t:.0f} s")
        for mode in MODES:
            rates, same = run_cell(model, batch, mode, settings, args.new_tokens, args.repeats)
            if mode == "greedy" and args.dtype == "float32" and not all(same.values()):
                raise AssertionError(f"greedy float32 tokens differ at batch {batch_size}: {same}")
            best_ours = max((r, l) for l, r in rates.items() if l.startswith("ours"))
            best_theirs = max((r, l) for l, r in rates.items() if l.startswith("generate"))
            ratios.append(best_ours[0] / best_theirs[0])
            table.add_row(str(batch_size), mode, *(f"{rates[l]:.1f}{'*' if same[l] else ''}" for l in settings),
                          f"{ratios[-1]:.2f} ({best_ours[1][5:]} / {best_theirs[1][9:]})")
            console.print(f"done: batch={batch_size} {mode}: " + ", ".join(f"{l} {r:.1f}" for l, r in rates.items()))
    console.print(table)
    console.print(f"min best-to-best ratio {min(ratios):.2f}")


if __name__ == "__main__":
    main()
