"""Diverse (group) beam search: Vijayakumar et al. 2016, "Diverse Beam Search", with Hamming diversity.

The K = `num_beams` beams of each prompt are split into G = `num_beam_groups` groups of S = K / G beams,
each an independent beam search of width S. Within one step the groups choose in order 0, 1, ..., G-1,
and group g's log-probabilities are first lowered by `diversity_penalty * n(v)` for every token v, where
n(v) counts how often the beams of groups 0..g-1 chose v at this step for the same prompt. The penalty
runs before every other logits processor (they see the penalised scores), and it is part of the score
a beam accumulates, hence of `sequences_scores`. Group 0 is never penalised.

What "independent beam search" means in detail is transformers 4.x `_group_beam_search` with its
`BeamSearchScorer`, which transformers 5 moved out of its core (to a hub `custom_generate`), and which
we reproduce: checked token for token (and scores to 1e-5) against transformers 4.55 on tiny Llama and
GPT-2 models, 432 cases of widths, groups, penalties, length penalties, early-stopping modes, EOS at
different steps, left padding, repetition penalty and n-gram blocking (and `sequences` filled with
`pad_token_id` after a short hypothesis, as 4.x filled them). So, per group:
- candidates as in plain beam search (`beam.expand`: C = max(2, 1 + #EOS) * S best, EOS candidates
  ranked below S ignored, the S best non-ending ones keep running);
- finished hypotheses scored `sum_logprobs / generated_len ** length_penalty` in double precision (4.x
  did it with Python floats), the S best kept;
- a group is *done* once it holds S finished hypotheses and (early_stopping=True) or the best candidate
  of the step, length-penalised at the current length (at `max_new_tokens` for "never" with a positive
  length penalty), cannot beat the worst of them. A done group adds nothing more, and its beams then
  count as choosing `pad_token_id` in the Hamming penalty of later groups (a 4.x detail kept for identity);
- at the length limit, the running beams of groups not done join their finished hypotheses.
Finally the hypotheses of all groups of a prompt are pooled and the `num_return_sequences` best are
returned, best first.

Differences from 4.x: a hypothesis that ended with the second of several EOS ids keeps that id (4.x
wrote `eos_token_id[0]` in its place); stop strings end a hypothesis as in plain beam search (4.x had
no per-beam stop strings). Beam sampling has no diverse variant (4.x refused it too).

With G = 1 everything but the "done" rule is plain beam search; `generate` sends G = 1 there.

All groups share one forward pass per step: row b*K + g*S + j is beam j of group g of prompt b, so the
"items" that `beam.expand` works on are (prompt, group) pairs, item b*G + g. The prefill (`beam_prefill`,
per beam or shared by a prompt's beams), the compiled step and the cache reorder are plain beam search's
(beam.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from .beam import (STORE_FIELDS, Store, StepInput, advance, expand, finish, merge_finished, rows_of,
                   start_beams, step_config, with_hooks)
from .hooks import merge_processors
from .cache import KVCache
from .loop import Forward, copy_prefix, sync_device, check_finite, init_state
from .params import GenerationParams
from .processors import build_processors


class HammingDiversity:
    """Lower a group's scores by `penalty * count` of each token that earlier groups chose at this step."""

    def __init__(self, penalty: float, vocab_size: int):
        if not penalty >= 0:
            raise ValueError(f"diversity_penalty={penalty!r} is not allowed: use a number >= 0")
        self.penalty = penalty
        self.vocab_size = vocab_size

    def __call__(self, scores: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """scores (B, S, V) of one group; earlier (B, M) tokens chosen by earlier groups, -1 for none."""
        if self.penalty == 0 or earlier.shape[1] == 0:
            return scores
        valid = earlier >= 0
        counts = torch.zeros((earlier.shape[0], self.vocab_size + 1), dtype=torch.long, device=scores.device)
        counts.scatter_add_(1, torch.where(valid, earlier, self.vocab_size), valid.long())  # column V: none
        return scores - self.penalty * counts[:, None, :self.vocab_size]


def group_done(params: GenerationParams, store: Store, best: torch.Tensor, t: int) -> torch.Tensor:
    """(I, 1) transformers 4.x `BeamHypotheses.is_done` after step t; best (I,) is the step's top candidate."""
    full = store.done.all(dim=-1, keepdim=True)
    if params.early_stopping is True:
        return full
    penalty = params.length_penalty
    length = params.max_new_tokens if params.early_stopping == "never" and penalty > 0.0 else t + 1
    worst = store.scores.min(dim=-1, keepdim=True)[0]
    return full & (worst >= best.double()[:, None] / (length ** penalty))


def _entries(cand_top: torch.Tensor, entered: torch.Tensor, length: int, penalty: float) -> torch.Tensor:
    """(I, C) float64 scores of the entering candidates, -inf elsewhere."""
    scores = cand_top.double() / (length ** penalty)
    return torch.where(entered, scores, -torch.inf)


def group_step(params: GenerationParams, cfg, x: StepInput, t: int):
    """One group's step: candidates, finished hypotheses, done flags. Returns (cand, store, open)."""
    cand = expand(cfg, x, t)
    rank_ok = (torch.arange(cfg.candidates, device=cand.top.device) < cfg.width)[None, :]
    entered = cand.ended & rank_ok & x.open
    store = merge_finished(cfg, x, cand, _entries(cand.top, entered, t + 1, params.length_penalty), entered, t)
    open_ = x.open & ~group_done(params, store, cand.top[:, 0], t)
    if t + 1 >= cfg.n_max or (cfg.stops is not None and cfg.stops.expired):
        # the length limit (or max_time): running beams of groups not done become hypotheses
        last = torch.zeros_like(entered).scatter(1, cand.keep, True) & open_
        x = StepInput(x.scores, x.logp, x.logp_processed, x.run_scores, x.run_tokens, x.run_values, store, open_,
                      x.rows)
        store = merge_finished(cfg, x, cand, _entries(cand.top, last, t + 1, params.length_penalty), last, t)
    return cand, store, open_


@torch.inference_mode()
def diverse_beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        params: GenerationParams, *, generator: torch.Generator | None = None,
                        tokenizer: Any = None):
    """Group beam search on checked, left-padded prompts (see the module docstring). Returns GenerationResult.

    `generator` is accepted for a uniform signature; diverse beam search draws no random numbers.
    """
    device = input_ids.device
    batch, prompt_len = input_ids.shape
    beams_per_prompt, groups = params.num_beams, params.num_beam_groups
    width = beams_per_prompt // groups  # S
    n_max = params.max_new_tokens
    cfg = step_config(params, width, prompt_len, None, tokenizer, device)
    cfg = replace(cfg, fill=params.pad_token_id if params.pad_token_id is not None else -1)  # 4.x fills with pad
    beam_prompts = torch.arange(batch, device=device).repeat_interleave(beams_per_prompt)  # (B*K,)
    shared = params.beam_prefill == "shared"
    prefill_rows = None if shared else beam_prompts
    state = init_state(rows_of(input_ids, prefill_rows), rows_of(attention_mask, prefill_rows), n_max, cfg.fill)
    kv = KVCache(params.cache, model, params.max_cache_len or prompt_len + n_max, compile=params.compile)
    forward = Forward(model, kv)
    prompt_start = (attention_mask == 0).sum(-1).repeat_interleave(beams_per_prompt)  # (B*K,)

    offsets = torch.arange(batch, device=device)[:, None] * beams_per_prompt  # (B, 1)
    group_rows = [(offsets + g * width + torch.arange(width, device=device)).flatten() for g in range(groups)]
    group_items = [torch.arange(batch, device=device) * groups + g for g in range(groups)]
    # Each group has its own processors, so guidance gives each group its own unconditional rows.
    processors = [merge_processors(build_processors(params, prompt_len, prompt_start[rows] if state.padded else None,
                                                    model, rows // beams_per_prompt),
                                   params.logits_processor) for rows in group_rows]
    pad = params.pad_token_id if params.pad_token_id is not None else -1
    diversity = None  # built at the first step, when the vocabulary size is known
    beams = start_beams(batch * groups, width, n_max, cfg.fill, device, score_dtype=torch.float64)
    recorder, cfg = with_hooks(cfg, params)

    sync_device(device)
    t0 = time.perf_counter()
    prefill, start, t = 0.0, 0, 0
    for t in range(n_max):
        logits = forward(state, start, state.length)  # (B*K, V); the shared prefill: (B, V)
        if t == 0 and shared:
            state, logits = copy_prefix(state, kv, logits, beam_prompts)
        check_finite(logits, t)
        logp = torch.log_softmax(logits, dim=-1)
        cfg.stops.tick()
        # (B*K, V): each group's processed scores in its rows, as transformers 4.x's group search recorded them
        step_scores = torch.empty_like(logp) if recorder.scores is not None else None
        if diversity is None:
            diversity = HammingDiversity(params.diversity_penalty, logp.shape[-1])
        rows_next = torch.empty(batch * beams_per_prompt, dtype=torch.long, device=device)
        tokens_next = torch.empty_like(rows_next)
        values_next = beams.run_values.new_empty((batch * beams_per_prompt, beams.run_values.shape[1]))
        earlier = torch.empty((batch, 0), dtype=torch.long, device=device)  # (B, g*S) chosen this step
        for g in range(groups):
            rows, items = group_rows[g], group_items[g]
            tokens = state.tokens.index_select(0, rows)  # (B*S, T+N)
            group_logp = logp.index_select(0, rows)
            scores = group_logp
            if diversity.penalty > 0 and g > 0:
                scores = diversity(group_logp.view(batch, width, -1), earlier).flatten(0, 1)
            if processors[g]:
                scores = processors[g](tokens[:, :state.length], scores)
            processed = group_logp if scores is group_logp else torch.log_softmax(scores, dim=-1)
            if step_scores is not None:
                step_scores[rows] = scores
            x = StepInput(scores, group_logp, processed, beams.run_scores[items], tokens,
                          beams.run_values.index_select(0, rows), beams.store.rows(items), beams.open[items],
                          rows.view(batch, width))
            was_open = x.open
            cand, store, open_ = group_step(params, cfg, x, t)
            beams.run_scores[items] = cand.run_scores
            beams.store.put(items, store)
            beams.open[items] = open_
            chosen = cand.token.gather(1, cand.keep)  # (B, S)
            rows_next[rows] = rows.view(batch, width).gather(1, cand.parent.gather(1, cand.keep)).flatten()
            tokens_next[rows] = chosen.flatten()
            values_next[rows] = torch.take_along_dim(cand.values, cand.keep[:, :, None], dim=1).flatten(0, 1)
            # A group done before this step "chooses" pad (4.x); its real beams no longer matter.
            earlier = torch.cat([earlier, torch.where(was_open, chosen, pad)], dim=1)
        recorder.add(step_scores, logits)
        start = state.length
        beams.run_values = advance(state, beams.run_values, rows_next, tokens_next, values_next, t)
        if t == 0:
            sync_device(device)
            prefill = time.perf_counter() - t0
        same_rows = (rows_next == torch.arange(rows_next.shape[0], device=device)).all()
        any_open, same_rows = torch.stack([beams.open.any(), same_rows]).tolist()  # one transfer per step
        if not any_open or t + 1 >= n_max or cfg.stops.expired:
            break
        kv.reorder(rows_next, identity=same_rows)
    sync_device(device)
    total = time.perf_counter() - t0
    return finish(pool(beams.store, batch), input_ids, params.num_return_sequences, cfg.fill,
                  (prefill, total - prefill), t, recorder)


def pool(store: Store, batch: int) -> Store:
    """Per prompt, the hypotheses of all its groups, best first: (B*G, S) items -> (B, G*S)."""
    flat = {f: getattr(store, f).reshape(batch, -1, *getattr(store, f).shape[2:]) for f in STORE_FIELDS}
    order = torch.sort(flat["scores"], dim=1, descending=True, stable=True).indices  # (B, G*S)
    return Store(**{f: torch.take_along_dim(v, order.view(*order.shape, *([1] * (v.dim() - 2))), dim=1)
                    for f, v in flat.items()})
