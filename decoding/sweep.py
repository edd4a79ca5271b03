"""Batched sweeps: several sampling configurations over the same prompts in one decode batch.

`model.generate` runs one configuration per call and prefills every prompt again for each. Here the
prompts are prefilled once; their KV cache and last logits are copied into the rows of every
configuration (`loop.copy_prefix`), and one decode loop runs all of them, each row with its own
temperature / top-k / top-p / min-p / top-h / guidance scale / watermark (`processors/rows.py`) and its
configuration's own random stream.

Batch layout for C configurations, B prompts and n = num_return_sequences:

    row = c * (B * n) + b * n + s      configuration c, prompt b, sample s

so configuration c's rows are exactly the rows a run of c alone would have, in the same order.

Why each row equals its configuration run alone (`generate(..., generator=g_c, **config_c)`):
- the prefill is the same forward over the same padded prompts;
- the processors compute per row what the scalar ones compute (processors/rows.py);
- configuration c's rows draw `torch.multinomial` from c's own generator, over c's rows only, in row
  order: the same draws from the same stream as the lone run. A configuration given one generator per
  row draws row by row instead, and then each row equals that row run alone with its generator.
What can still differ: a decode step's forward runs C times as many rows, and a matrix kernel may sum in
another order for another batch size. On the CPU kernels tested that does not happen (the tests check
token identity on tiny models; `bench/sweep_speed.py` checks SmolLM2); on other hardware the bench
reports how many rows differ.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping, Sequence

import torch

from .cache import KVCache
from .loop import decode_n_tokens, init_state, prepare_call
from .params import GenerationParams
from .result import GenerationResult
from .processors.draws import Draws
from .processors.rows import ROW_PARAMETERS, build_row_processors

RowGenerators = torch.Generator | Sequence[torch.Generator] | None


class GroupedSampler:
    """Chooses each row's next token: argmax for greedy rows; for sampling rows, one multinomial per group
    of rows [start, stop) from that group's generator, in row order (as a run of that group alone draws).
    `probs` keeps the step's softmax (None when every row is greedy) for the processors' observe."""

    def __init__(self, groups: list[tuple[int, int, bool, torch.Generator | None]]):
        self.groups = groups
        self.probs: torch.Tensor | None = None
        self.any_greedy = any(not sample for _, _, sample, _ in groups)
        self.any_sampling = any(sample for _, _, sample, _ in groups)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:  # (R, V) -> (R,)
        tokens = torch.argmax(scores, dim=-1) if self.any_greedy else scores.new_empty(scores.shape[0],
                                                                                       dtype=torch.long)
        if not self.any_sampling:  # an all-greedy batch needs no (R, V) softmax
            return tokens
        probs = self.probs = torch.softmax(scores, dim=-1)
        for start, stop, sample, generator in self.groups:
            if sample:
                tokens[start:stop] = torch.multinomial(probs[start:stop], 1, generator=generator).squeeze(1)
        return tokens


def own_loop_strategy(p: GenerationParams) -> str | None:
    """The strategy of `p` that runs a decode loop of its own (decoding/strategies/), which a batched sweep's
    one-token loop would silently replace by plain greedy / sampling; None for greedy, sampling and processors."""
    for active, name in ((p.is_contrastive_search, "contrastive search (penalty_alpha > 0 with top_k > 1)"),
                         (p.is_dola, "DoLa (dola_layers)"),
                         (p.is_contrastive_decoding, "contrastive decoding (amateur_model or amateur_layers)"),
                         (p.is_mbr, "MBR decoding (mbr_candidates)")):
        if active:
            return name
    return None


def check_batchable(params: Sequence[GenerationParams]) -> None:
    """Configurations may share a batch when they differ only in ROW_PARAMETERS."""
    first = params[0]
    if first.is_beam or first.num_beam_groups > 1:
        raise ValueError(f"configs[0] has num_beams={first.num_beams}: a batched sweep runs greedy / sampling "
                         "configurations; run beam search configurations one by one")
    speculative = [i for i, p in enumerate(params) if p.is_speculative]
    if speculative:  # its plain decode loop would ignore the proposer without a word
        raise ValueError(f"configs[{speculative[0]}] is speculative (assistant_model, prompt_lookup_num_tokens or "
                         "draft_layers): a batched sweep decodes one token per step; run speculative "
                         "configurations one by one with generate")
    own_loop = [(i, own_loop_strategy(p)) for i, p in enumerate(params) if own_loop_strategy(p)]
    if own_loop:  # checked per configuration: top_k, a row parameter, turns contrastive search on
        i, name = own_loop[0]
        raise ValueError(f"configs[{i}] is {name}: a batched sweep runs one greedy / sampling decode loop, which "
                         "would ignore it; run these configurations one by one with generate")
    for f in fields(GenerationParams):
        # dry_breaker_sequences is dry_sequence_breakers (compared) resolved for the sweep's one tokenizer, left
        # unresolved where DRY is off: DRY's for_rows takes the table of the configurations that use it
        if f.name in ROW_PARAMETERS or f.name == "dry_breaker_sequences":
            continue
        values = [getattr(p, f.name) for p in params]
        for i, value in enumerate(values):
            if not _same_value(value, values[0]):
                raise ValueError(
                    f"configs[{i}] has {f.name}={value!r} but configs[0] has {f.name}={values[0]!r}: only "
                    f"{', '.join(ROW_PARAMETERS)} (and the seed) may differ within one batched sweep; "
                    "run configurations that differ otherwise separately")


def _same_value(a: Any, b: Any) -> bool:
    """Equal settings; tensors (negative_prompt_ids, ...) by shape and value, not elementwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a.cpu(), b.cpu()))
    return a == b


def _row_groups(params: Sequence[GenerationParams], generators: Sequence[RowGenerators], rows_per_config: int
                ) -> list[tuple[int, int, bool, torch.Generator | None]]:
    samplers_without_stream = [i for i, (p, g) in enumerate(zip(params, generators)) if p.do_sample and g is None]
    if len(params) > 1 and samplers_without_stream:
        raise ValueError(
            f"generators[{samplers_without_stream[0]}] is None but that configuration samples: in a batched sweep "
            "every sampling configuration needs its own seeded torch.Generator (a run alone with None draws from "
            "torch's global RNG, which one shared batch cannot reproduce)")
    groups = []
    for c, (p, g) in enumerate(zip(params, generators)):
        start = c * rows_per_config
        if isinstance(g, torch.Generator) or g is None:
            groups.append((start, start + rows_per_config, p.do_sample, g))
            continue
        per_row = list(g)
        if len(per_row) != rows_per_config:
            raise ValueError(f"generators[{c}] holds {len(per_row)} generators: give one torch.Generator for the "
                             f"configuration or one per row ({rows_per_config} = prompts x num_return_sequences)")
        groups.extend((start + r, start + r + 1, p.do_sample, gen) for r, gen in enumerate(per_row))
    return groups


def split_result(result: GenerationResult, configs: int, rows_per_config: int) -> list[GenerationResult]:
    """One result per configuration, as its run alone would return it.

    A configuration's sequences end where its own last row finished (the shared loop may go on for
    others). Times are the shared batch's, split evenly: each configuration's tokens/s is the batch's
    throughput; `extras["sweep"]` keeps the whole batch's numbers.
    """
    out = []
    shared = {"configurations": configs, "rows": configs * rows_per_config,
              "prefill_seconds": result.prefill_seconds, "decode_seconds": result.decode_seconds,
              "new_tokens": result.new_tokens}
    for c in range(configs):
        rows = slice(c * rows_per_config, (c + 1) * rows_per_config)
        alive = result.new_token_mask[rows]  # (n_c, N)
        active_steps = alive.any(dim=0).nonzero()
        generated = int(active_steps.max()) + 1 if active_steps.numel() else 1
        out.append(replace(
            result,
            sequences=result.sequences[rows, : result.prompt_length + generated],
            token_logprobs=result.token_logprobs[rows, :generated],
            token_logprobs_raw=result.token_logprobs_raw[rows, :generated],
            new_token_mask=alive[:, :generated],
            finish_reasons=result.finish_reasons[rows],
            prefill_seconds=result.prefill_seconds / configs,
            decode_seconds=result.decode_seconds / configs,
            new_tokens=int(alive.sum()),
            steps=generated - 1,
            # output_scores / output_logits: each configuration's rows of the steps it ran (R_c, V)
            scores=None if result.scores is None else tuple(s[rows] for s in result.scores[:generated]),
            logits=None if result.logits is None else tuple(s[rows] for s in result.logits[:generated]),
            extras={**result.extras, "sweep": shared},
        ))
    return out


def _checked_sweep_arguments(configs: Any, generators: Any) -> tuple[list[dict[str, Any]], list[RowGenerators]]:
    """`configs` a non-empty list of mappings; `generators` None or one entry per configuration."""
    if isinstance(configs, (Mapping, str)) or not isinstance(configs, Sequence):
        raise ValueError(f"configs={configs!r} is not allowed: pass a list of mappings of generate keywords, one "
                         "per configuration, e.g. configs=[dict(top_p=0.9), dict(top_p=0.95)]")
    if not configs:
        raise ValueError("configs=[] is not allowed: give at least one decoding configuration")
    bad = [i for i, config in enumerate(configs) if not isinstance(config, Mapping)]
    if bad:
        raise ValueError(f"configs[{bad[0]}]={configs[bad[0]]!r} is not allowed: each configuration is a mapping "
                         "of generate keywords (e.g. dict(do_sample=True, top_p=0.9))")
    if generators is None:
        return [dict(c) for c in configs], [None] * len(configs)
    if isinstance(generators, (torch.Generator, str)) or not isinstance(generators, Sequence):
        raise ValueError(f"generators={generators!r} is not allowed: pass a list with one entry per configuration "
                         "(a torch.Generator, a list of one per row, or None)")
    if len(generators) != len(configs):
        raise ValueError(f"generators has {len(generators)} entries for {len(configs)} configs: give one per "
                         "configuration")
    for c, entry in enumerate(generators):
        if entry is not None and not isinstance(entry, (torch.Generator, list, tuple)):
            raise ValueError(f"generators[{c}]={entry!r} is not allowed: use a torch.Generator, a list of one "
                             "torch.Generator per row, or None")
    return [dict(c) for c in configs], list(generators)


def _entries(entry: RowGenerators):
    """(row index or None, generator) of one configuration's generators entry."""
    if entry is None or isinstance(entry, torch.Generator):
        return [(None, entry)]
    return list(enumerate(entry))


@torch.inference_mode()
def generate_sweep(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                   configs: Sequence[Mapping[str, Any]], generators: Sequence[RowGenerators] | None = None,
                   tokenizer: Any = None, **shared: Any) -> list[GenerationResult]:
    """Decode every configuration over the same prompts in one batch with one prefill.

    Args:
        model: a transformers causal LM.
        input_ids: (B, T) left-padded prompts; attention_mask: (B, T) as for `generate`.
        configs: C mappings of generate keywords. They may differ only in the row parameters
            (`decoding.processors.rows.ROW_PARAMETERS`): do_sample, temperature, top_k, top_p, min_p, top_h,
            guidance_scale, watermarking_config, and llama.cpp's / vLLM's top_n_sigma, xtc_*, dry_* (not the
            sequence breakers), mirostat*, dynatemp_*, presence_penalty and frequency_penalty; everything else
            (max_new_tokens, sampler_order, repetition penalty, EOS, cache, ...) must be equal.
        generators: one entry per configuration: a seeded `torch.Generator` for the configuration's rows,
            or a list of B * num_return_sequences generators (one per row), or None for greedy ones.
        tokenizer: needed only for `stop_strings`.
        **shared: keywords for every configuration (a configuration's own value wins).

    Returns:
        C results; result c equals `generate(model, input_ids, attention_mask, generator=generators[c],
        **shared, **configs[c])`.
    """
    configs, generators = _checked_sweep_arguments(configs, generators)
    given = {f"generators[{c}]" + (f"[{r}]" if r is not None else ""): g
             for c, entry in enumerate(generators) for r, g in _entries(entry)}
    merged = [{**shared, **config} for config in configs]
    input_ids, attention_mask, params = prepare_call(model, input_ids, attention_mask, merged, given, tokenizer,
                                                        sweep=True)
    check_batchable(params)

    p = params[0]
    batch, prompt_len = input_ids.shape
    rows_per_config = batch * p.num_return_sequences
    groups = _row_groups(params, generators, rows_per_config)
    device = input_ids.device
    prefix_rows = torch.arange(batch, device=device).repeat_interleave(p.num_return_sequences).repeat(len(params))
    state = init_state(input_ids, attention_mask, p.max_new_tokens, p.pad_token_id)
    kv = KVCache(p.cache, model, p.max_cache_len or prompt_len + p.max_new_tokens, compile=p.compile)
    prompt_start = (attention_mask == 0).sum(-1).index_select(0, prefix_rows) if state.padded else None
    processors = build_row_processors(params, rows_per_config, prompt_len, prompt_start, device, model, prefix_rows)
    # XTC draws from each sampling configuration's (or row's) own stream, before its multinomial
    draws = Draws([(start, stop, g) for start, stop, sample, g in groups if sample], len(prefix_rows))
    result = decode_n_tokens(model, state, kv, p, processors, None, tokenizer, sampler=GroupedSampler(groups),
                             prefix_rows=prefix_rows, draws=draws)
    return split_result(result, len(params), rows_per_config)
