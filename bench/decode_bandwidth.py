"""Batch-1 decode tokens/s as a fraction of the memory-bandwidth bound, and what the compiled decode step buys.

At batch 1 each decoded token reads every weight once (the tied embedding / LM head matrix once, as the head),
so a decoder cannot beat `copy bandwidth / parameter bytes` tokens/s. This script measures

1. the machine's copy bandwidth: best of several `dst.copy_(src)` of a `--copy-mib` tensor (1 GiB: far past the
   caches), counting bytes read plus bytes written;
2. parameter bytes per token (unique storages, so tied weights count once), and the KV cache bytes a step reads
   at the mean context length (noted, not part of the bound: filled slots for the dynamic and eager static
   caches, the whole `max_cache_len` buffer for the compiled step);
3. batch-1 greedy decode tokens/s of `decoding.generate` with cache dynamic, static and static + compile, and of
   `model.generate` (default dynamic cache) for reference. Decode time is `t(N new tokens) - t(1 new token)`,
   medians over alternating rounds, so the prefill is not counted; the compile warm-up (the first compiled
   call) is timed and printed on its own;
4. the compiled / eager static decode ratio at `--ratio-batches` (dynamo is reset before each batch size, so
   every cell runs a graph compiled for its own shapes; the warm-up of each is printed).

Every row is checked against eager static greedy tokens and the result printed ("same tokens"); in float32 a
difference is an error, in bfloat16 / float16 it is reported (compiled kernels round differently).

    .venv/bin/python bench/decode_bandwidth.py                          # SmolLM2 float32 on CPU
    .venv/bin/python bench/decode_bandwidth.py --dtype bfloat16
    python bench/decode_bandwidth.py --device cuda --dtype bfloat16     # on a GPU machine (CUDA graphs)
    .venv/bin/python bench/decode_bandwidth.py --quick                  # 16 new tokens, 2 rounds: a smoke run
    .venv/bin/python bench/decode_bandwidth.py --dtype bfloat16 --quantization int4_weight_only
    .venv/bin/python bench/decode_bandwidth.py --variants float32,bfloat16,bfloat16+int8_weight_only,bfloat16+int4_weight_only
    .venv/bin/python bench/decode_bandwidth.py --variants bfloat16 --autotune   # also compile="max-autotune"

With `--variants`, one summary row per weight format instead: weights as stored (int8 / packed int4 with their
scales; an input embedding that no longer shares the head's storage is left out, as a step reads one row of it),
the bound, eager static and compiled tokens/s, and the compiled step's largest logit difference to eager.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch._dynamo.utils import counters, guard_failures
from prompts import PROMPTS  # bench/prompts.py (the script folder is on sys.path)
from timing import timed  # bench/timing.py
from rich.console import Console
from rich.table import Table

import decoding
from experiments.models import load_model, resolve_dtype
from experiments.quantization import QUANTIZATIONS, stored_weight_bytes

ROWS = {  # label -> (runner kind, decoding.generate keywords)
    "decodelab dynamic": ("ours", dict(cache="dynamic")),
    "decodelab static": ("ours", dict(cache="static")),
    "decodelab static + compile": ("ours", dict(cache="static", compile=True)),
    "model.generate (dynamic)": ("theirs", {}),
}
AUTOTUNED = {"decodelab static + max-autotune": ("ours", dict(cache="static", compile="max-autotune"))}  # --autotune


def copy_bandwidth(device: torch.device, mib: int, repeats: int = 7) -> float:
    """Bytes/s of `dst.copy_(src)`, counting the bytes read and the bytes written; best of `repeats`."""
    n = mib * 2**20
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page once
    best = min(timed(lambda: dst.copy_(src))[1] for _ in range(repeats))
    return 2 * n / best


def parameter_bytes(model) -> int:
    """Bytes a batch-1 decode step reads: every weight as stored (int8 / packed int4 data with their scales), each
    storage once (a tied embedding / LM head is read once, as the head). An input embedding with its own storage
    (untied, or kept in float while the head is quantized) is left out: a step reads one row of it."""
    total = stored_weight_bytes(model)
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    plain = type(embedding.data) is torch.Tensor
    if plain and (head is None or type(head.weight.data) is not torch.Tensor
                  or head.weight.untyped_storage().data_ptr() != embedding.untyped_storage().data_ptr()):
        total -= embedding.untyped_storage().nbytes()
    return total


def kv_bytes_per_slot(model) -> int:
    """Bytes of keys + values one cached position holds, over all layers."""
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def run_once(model, batch, kind: str, kwargs: dict, new_tokens: int):
    """Sequences (B, T + N) of one greedy call that runs all `new_tokens` steps."""
    args = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if kind == "theirs":
        return model.generate(batch.input_ids, attention_mask=batch.attention_mask, **args)
    return decoding.generate(model, batch.input_ids, batch.attention_mask, **kwargs, **args).sequences


def decode_rates(model, batch, rows: dict, new_tokens: int, rounds: int) -> dict[str, tuple[float, torch.Tensor]]:
    """label -> (decode tokens/s, sequences), medians over `rounds` alternating rounds of every row."""
    full: dict[str, list[float]] = {label: [] for label in rows}
    first: dict[str, list[float]] = {label: [] for label in rows}
    sequences = {}
    for _ in range(rounds):
        for label, (kind, kwargs) in rows.items():
            sequences[label], t = timed(lambda: run_once(model, batch, kind, kwargs, new_tokens))
            full[label].append(t)
            _, t = timed(lambda: run_once(model, batch, kind, kwargs, 1))
            first[label].append(t)
    tokens = batch.input_ids.shape[0] * (new_tokens - 1)
    return {label: (tokens / max(statistics.median(full[label]) - statistics.median(first[label]), 1e-9),
                    sequences[label]) for label in rows}


def warm_up_compiled(model, batch, new_tokens: int, compile: bool | str = True, reset: bool = True) -> float:
    """Seconds of the first compiled call for this batch shape (dynamo reset first: compile from scratch)."""
    if reset:
        torch._dynamo.reset()
    start = time.perf_counter()
    run_once(model, batch, "ours", dict(cache="static", compile=compile), new_tokens)
    if batch.input_ids.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def check_tokens(label: str, sequences: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> str:
    same = torch.equal(sequences, reference)
    if not same and dtype == torch.float32:
        raise AssertionError(f"{label}: greedy tokens differ from eager static in float32")
    return "yes" if same else "no"


def logit_gap(model, batch, new_tokens: int) -> float:
    """Max |compiled - eager static| logit over the greedy steps both take alike (the prefill is eager in both;
    steps after the first differing token are not compared: their inputs differ)."""
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, output_logits=True,
                  return_dict_in_generate=True, cache="static")
    eager = decoding.generate(model, batch.input_ids, batch.attention_mask, **kwargs)
    compiled = decoding.generate(model, batch.input_ids, batch.attention_mask, compile=True, **kwargs)
    gap = 0.0
    for step, (a, b) in enumerate(zip(eager.logits, compiled.logits)):
        gap = max(gap, (a.float() - b.float()).abs().max().item())
        if not torch.equal(eager.new_token_ids[:, step], compiled.new_token_ids[:, step]):
            break
    return gap


def variant_table(args, console: Console, bandwidth: float) -> None:
    """One row per dtype[+quantization]: bytes as stored, bound, eager static and compiled batch-1 decode, the
    compiled step's logit gap to eager; every rate also as a multiple of the first variant's eager rate."""
    table = Table(title=f"batch-1 greedy decode by weight format, {args.model} on {args.device} (median of "
                        f"{args.rounds} alternating rounds; copy bandwidth {bandwidth / 1e9:.1f} GB/s)")
    table.add_column("variant", no_wrap=True)
    tuned = " / max-autotune" if args.autotune else ""
    for column in ("weights MB", "bound tok/s", "eager static tok/s", f"compiled{tuned} tok/s",
                   f"fraction of bound (eager / compiled{tuned})", f"x first eager (eager / compiled{tuned})",
                   "max |compiled - eager| logit", "same tokens", "warm-up s"):
        table.add_column(column, justify="right")
    first = None
    for variant in args.variants.split(","):
        dtype, _, quantization = variant.partition("+")
        model, tokenizer = load_model(args.model, device=args.device, dtype=dtype, quantization=quantization or None)
        batch = tokenizer(PROMPTS[:1], return_tensors="pt").to(model.device)
        weights = parameter_bytes(model)
        bound = bandwidth / weights
        labels = ["decodelab static", "decodelab static + compile"]
        warm = [warm_up_compiled(model, batch, args.new_tokens)]
        if args.autotune:  # a second compiled graph beside the first (no reset: both stay warm)
            labels.append("decodelab static + max-autotune")
            warm.append(warm_up_compiled(model, batch, args.new_tokens, "max-autotune", reset=False))
        rows = {**ROWS, **AUTOTUNED}
        rates = decode_rates(model, batch, {label: rows[label] for label in labels}, args.new_tokens, args.rounds)
        eager, compiled = rates[labels[0]], [rates[label] for label in labels[1:]]
        first = first or eager[0]
        same = "/".join("yes" if torch.equal(eager[1], c[1]) else "no" for c in compiled)
        table.add_row(variant, f"{weights / 1e6:.0f}", f"{bound:.1f}", f"{eager[0]:.1f}",
                      " / ".join(f"{c[0]:.1f}" for c in compiled),
                      " / ".join(f"{r[0] / bound:.2f}" for r in (eager, *compiled)),
                      " / ".join(f"{r[0] / first:.2f}" for r in (eager, *compiled)),
                      f"{logit_gap(model, batch, 16):.2e}", same, " / ".join(f"{w:.0f}" for w in warm))
        console.print(f"done: {variant}: eager {eager[0]:.1f} tok/s, compiled "
                      + " / ".join(f"{c[0]:.1f}" for c in compiled) + " tok/s")
        del model
        torch._dynamo.reset()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quantization", choices=QUANTIZATIONS, help="weight-only quantization (torchao)")
    parser.add_argument("--variants", help="instead of the detailed tables: one row per dtype[+quantization], e.g. "
                        "float32,bfloat16,bfloat16+int8_weight_only,bfloat16+int4_weight_only")
    parser.add_argument("--autotune", action="store_true",
                        help="with --variants: also the compiled step with compile='max-autotune'")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of the copied tensor")
    parser.add_argument("--ratio-batches", default="1,8", help="batch sizes of the compiled / eager ratio table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="16 new tokens, 2 rounds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.new_tokens, args.rounds = 16, 2
    console = Console(width=150)
    if args.variants:
        console.print(f"model={args.model} device={args.device} torch={torch.__version__} threads="
                      f"{torch.get_num_threads()} cpu={platform.processor() or platform.machine()} capability="
                      f"{torch.backends.cpu.get_cpu_capability()} new_tokens={args.new_tokens} rounds={args.rounds}")
        variant_table(args, console, copy_bandwidth(torch.device(args.device), args.copy_mib))
        return
    dtype = resolve_dtype(args.dtype)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype, quantization=args.quantization)
    device = model.device
    gpu = f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    console.print(f"model={args.model} device={device}{gpu} dtype={args.dtype} quantization={args.quantization} "
                  f"torch={torch.__version__} "
                  f"threads={torch.get_num_threads()} cpu={platform.processor() or platform.machine()} "
                  f"new_tokens={args.new_tokens} rounds={args.rounds}")

    bandwidth = copy_bandwidth(device, args.copy_mib)
    weights = parameter_bytes(model)
    bound = bandwidth / weights
    batch = tokenizer(PROMPTS[:1], return_tensors="pt").to(device)
    prompt_len = batch.input_ids.shape[1]
    mean_context = prompt_len + args.new_tokens / 2
    compiled_len = decoding.KVCache("static", model, prompt_len + args.new_tokens, compile=True).max_cache_len
    slot = kv_bytes_per_slot(model)
    console.print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (best of 7 copies of {args.copy_mib} MiB, read + "
                  f"written); parameters {weights / 1e6:.1f} MB; bound {bound:.1f} tokens/s at batch 1")
    console.print(f"KV cache read per token (not in the bound): {slot * mean_context / 1e6:.2f} MB at the mean "
                  f"context {mean_context:.0f} (dynamic / eager static), {slot * compiled_len / 1e6:.2f} MB over "
                  f"the compiled step's {compiled_len} slots")

    warm_up = warm_up_compiled(model, batch, args.new_tokens)
    console.print(f"compile warm-up (first compiled call, batch 1): {warm_up:.1f} s")
    for kind, kwargs in ROWS.values():  # every other path once before timing (the compiled one just ran)
        if not kwargs.get("compile"):
            run_once(model, batch, kind, kwargs, 4)  # 4 tokens would put the compiled cache in another bucket
    counters.clear()
    guard_failures.clear()
    rates = decode_rates(model, batch, ROWS, args.new_tokens, args.rounds)
    recompiles = sum(len(reasons) for reasons in guard_failures.values())
    console.print(f"compiled step during the timed runs: {counters['stats']['unique_graphs']} new graphs, "
                  f"{recompiles} recompiles")
    reference = rates["decodelab static"][1]
    table = Table(title=f"batch-1 greedy decode, {args.model} {args.dtype} on {device.type} (median of "
                        f"{args.rounds})")
    for column in ("implementation", "decode tok/s", "ms / token", "fraction of bound", "same tokens as static"):
        table.add_column(column, justify="right")
    for label, (rate, sequences) in rates.items():
        table.add_row(label, f"{rate:.1f}", f"{1e3 / rate:.1f}", f"{rate / bound:.2f}",
                      check_tokens(label, sequences, reference, dtype))
    table.add_row("bound (bandwidth / parameter bytes)", f"{bound:.1f}", f"{1e3 / bound:.1f}", "1.00", "")
    console.print(table)

    ratio_table = Table(title="compiled / eager static decode, greedy (median of alternating rounds)")
    for column in ("batch", "eager static tok/s", "compiled tok/s", "ratio", "compile warm-up s", "same tokens"):
        ratio_table.add_column(column, justify="right")
    for size in [int(b) for b in args.ratio_batches.split(",") if b]:
        cell_batch = tokenizer((PROMPTS * size)[:size], return_tensors="pt", padding=True).to(device)
        warm = warm_up_compiled(model, cell_batch, args.new_tokens)
        rows = {label: ROWS[label] for label in ("decodelab static", "decodelab static + compile")}
        cell = decode_rates(model, cell_batch, rows, args.new_tokens, args.rounds)
        eager, compiled = cell["decodelab static"], cell["decodelab static + compile"]
        same = check_tokens(f"batch {size} compiled", compiled[1], eager[1], dtype)
        ratio_table.add_row(str(size), f"{eager[0]:.1f}", f"{compiled[0]:.1f}", f"{compiled[0] / eager[0]:.2f}",
                            f"{warm:.1f}", same)
        console.print(f"done: batch {size}: ratio {compiled[0] / eager[0]:.2f}")
    console.print(ratio_table)


if __name__ == "__main__":
    main()
