"""Beam search and beam sampling on our own loop, token-identical to transformers 5's `_beam_search`.

Beam search is a loop of its own, not a logits processor: after every step the surviving beams are a
new selection of rows, so the token buffer, the per-token records and the KV cache are reordered. It
still reuses the decoding core: `init_state` (slots, position ids, mask), `Forward` (one model call),
`build_processors`, `check_finite` and `KVCache.reorder`.

Layout. Every prompt is expanded to K = `num_beams` adjacent rows (row b*K + j is beam j of prompt b),
as `model.generate` expands it. Position ids and the attention mask are the same for all beams of a
prompt, so only token rows move on a reorder.

The prefill (`beam_prefill`). "per_beam", the default, prefills every one of the B*K rows, as generate
does: the same batch shapes give the same floating-point logits, which is what token identity rests on.
"shared" prefills the B prompts once each, then copies each prompt's cache rows, slots and first logits to
its K beams (`loop.copy_prefix`): 1/K of the prefill's work. Its logits are the same numbers computed in a
smaller batch; the matrix kernels may then round differently (on this project's CPU for one or two
prompts: SmolLM2's logits up to 4e-5 apart; bit-identical from four prompts up in what was measured), so
its scores agree with generate's to float rounding and its tokens may differ where two candidates tie to
that precision (tests/decoding/test_beam_shared_prefill.py counts them). Everything after the prefill is
unchanged: processors, recorded scores and logits see B*K rows in beam order, as generate records them.

One step, for each prompt ("item"), follows transformers 5 op for op (its tie-breaking and rounding
included), because any other formulation may pick a different token at a near-tie:

1. `log_softmax` of the float32 logits, then the logits processors on those log-probabilities.
2. Add each beam's running score and flatten to (items, K*V); keep C = max(2, 1 + #EOS ids) * K
   candidates: `topk`, or for beam sampling `multinomial` without replacement over the softmax of the
   flattened scores (same RNG draws as generate), re-sorted by score.
3. A candidate "hits" when its token is an EOS id, it completes a stop string, or it reaches the length
   limit. The K best candidates that do not end (EOS, stop string) become the running beams (the others
   get -1e9; at the length limit the search stops, so those beams only matter to diverse search).
4. Hits among the first K candidates enter the finished store with score
   `sum_logprobs / generated_len ** length_penalty`, where `generated_len` counts the new tokens only
   (EOS included, prompt and padding excluded); the store keeps the K best.
5. Early stopping, per item: `True` stops once K hypotheses finished; `False` stops when the best
   running beam, scored at the current length, cannot beat the worst finished one; `"never"` does the
   same but scores the running beam at `max_new_tokens` when `length_penalty > 0` (the optimistic bound).

At the start only beam 0 of each prompt is live (the others score -1e9), so the first step expands one
beam rather than K copies of it.

Results: `sequences` (B * num_return_sequences, T + N) with each prompt's best hypotheses adjacent,
best first, filled after a hypothesis ends with generate's fill value (`pad_token_id`, except that a
pad id of 0 falls back to the first EOS id, and -1 without EOS: transformers' `pad or eos[0]`);
`sequences_scores`; `token_logprobs` (log-softmax of the processed scores, the distribution the
token was chosen under, as in the sampling loop) and `token_logprobs_raw` (the model's own); and
`extras["beam_token_scores"]`, the per-token terms the beam score sums (processed log-probs; with
diverse beam search, after the diversity penalty), so that
`sequences_scores == beam_token_scores.sum(-1) / generated_len ** length_penalty`.

Speed: the step costs a few small ops per beam next to the forward pass; the KV cache reorder is one
`index_select` per layer (the static slot cache copies only its filled slots, into a spare buffer,
and never concatenates), none when the beams kept their rows (the identity: read on the host with the
stopping flags, one device transfer per step). With `compile=True` (static cache) the single-token steps
run through the compiled fixed-shape step (decoding/compiled.py); the prefill stays eager. Diverse (group)
beam search lives in `beam_diverse.py` and reuses `expand` and `merge_finished` per group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from .cache import KVCache
from .loop import Forward, copy_prefix, sync_device, check_finite, init_state
from .params import GenerationParams
from .processors import build_processors
from .result import GenerationResult
from .hooks import Recorder, Stops, merge_processors
from .stopping import FINISH_CRITERIA, FINISH_EOS, FINISH_LENGTH, FINISH_MAX_TIME, FINISH_STOP_STRING, StopStrings

NEG = -1.0e9  # transformers' stand-in for "impossible" beams and candidates (finite: it is added to scores)
REASONS = (FINISH_LENGTH, FINISH_EOS, FINISH_STOP_STRING, FINISH_MAX_TIME, FINISH_CRITERIA)  # codes 0..4
# Per-token records: processed log-prob, raw log-prob, beam score increment, and the flat row (of that step's
# B*K rows) the token extended: generate's `beam_indices`, exact in float32 below 2**24 rows.
VALUES = 4


def fill_value(params: GenerationParams) -> int:
    """What generate writes after a hypothesis ended: `pad_token_id or eos[0] if eos is not None else -1`
    (with an empty EOS list and no truthy pad id generate fails on `eos[0]`; we write -1, as with no EOS)."""
    if params.eos_token_id is None:
        return -1
    if params.pad_token_id:
        return params.pad_token_id
    return params.eos_token_id[0] if params.eos_token_id else -1


@dataclass
class Store:
    """The best finished hypotheses of each item, S of them: transformers' `sequences` / `beam_scores`."""

    scores: torch.Tensor  # (I, S) NEG (float32) or -inf (float64, diverse search) where empty
    done: torch.Tensor  # (I, S) bool: slot holds a finished hypothesis (transformers' is_sent_finished)
    tokens: torch.Tensor  # (I, S, N) long new tokens, fill value after the end
    lengths: torch.Tensor  # (I, S) long generated length
    reasons: torch.Tensor  # (I, S) long index into REASONS
    values: torch.Tensor  # (I, S, 3, N) float32 per-token records (VALUES)

    @classmethod
    def empty(cls, items: int, width: int, n_max: int, fill: int, device: torch.device,
              dtype: torch.dtype = torch.float32) -> "Store":
        empty_score = NEG if dtype == torch.float32 else -torch.inf
        return cls(
            scores=torch.full((items, width), empty_score, dtype=dtype, device=device),
            done=torch.zeros((items, width), dtype=torch.bool, device=device),
            tokens=torch.full((items, width, n_max), fill, dtype=torch.long, device=device),
            lengths=torch.zeros((items, width), dtype=torch.long, device=device),
            reasons=torch.zeros((items, width), dtype=torch.long, device=device),
            values=torch.zeros((items, width, VALUES, n_max), device=device),
        )

    def rows(self, items: torch.Tensor) -> "Store":
        return Store(*(getattr(self, f).index_select(0, items) for f in STORE_FIELDS))

    def put(self, items: torch.Tensor, part: "Store") -> None:
        for f in STORE_FIELDS:
            getattr(self, f).index_copy_(0, items, getattr(part, f))


STORE_FIELDS = ("scores", "done", "tokens", "lengths", "reasons", "values")


@dataclass
class StepInput:
    """One step of one block of items (all prompts, or one group of every prompt), rows item-major."""

    scores: torch.Tensor  # (I*S, V) processed log-probs
    logp: torch.Tensor  # (I*S, V) raw log-softmax of the logits
    logp_processed: torch.Tensor  # (I*S, V) log-softmax of `scores` (the same tensor as logp without processors)
    run_scores: torch.Tensor  # (I, S) running beam scores
    run_tokens: torch.Tensor  # (I*S, T + N) running sequences (prompt included)
    run_values: torch.Tensor  # (I*S, 3, N) running per-token records
    store: Store  # I items
    open: torch.Tensor  # (I, 1) bool: the item may still gain finished hypotheses
    rows: torch.Tensor | None = None  # (I, S) flat row (of all B*K) of each beam; None: item * S + beam


@dataclass
class StepConfig:
    """What a step needs beyond tensors; built once per generate call."""

    width: int  # S beams per item
    candidates: int  # C
    prompt_length: int  # T
    n_max: int  # N = max_new_tokens
    length_penalty: float
    early_stopping: bool | str
    do_sample: bool
    generator: torch.Generator | None
    eos: torch.Tensor | None  # (E,) long
    stop_strings: StopStrings | None
    fill: int
    stops: Stops | None = None  # user stopping criteria and max_time (decoding/hooks.py)
    visible_start: int = 0  # first column criteria see (T for inputs_embeds alone: decoding/embeds.py)


@dataclass
class Candidates:
    """The C best continuations of each item at step t, best first."""

    top: torch.Tensor  # (I, C) accumulated score (running score + processed log-prob)
    parent: torch.Tensor  # (I, C) beam of the item it extends
    token: torch.Tensor  # (I, C)
    ended: torch.Tensor  # (I, C) bool: EOS or stop string, the hypothesis is complete
    hits: torch.Tensor  # (I, C) bool: ended, or at the length limit
    reasons: torch.Tensor  # (I, C) long index into REASONS
    values: torch.Tensor  # (I, C, 3) per-token records of the new token
    keep: torch.Tensor  # (I, S) the candidates that become the running beams
    run_scores: torch.Tensor  # (I, S) their scores


@dataclass
class StepOutput:
    parent: torch.Tensor  # (I, S) beam (within its item) each new running beam continues
    tokens: torch.Tensor  # (I, S) the token it appends
    scores: torch.Tensor  # (I, S) its running score
    values: torch.Tensor  # (I, S, 3) its per-token records for this step
    hits: torch.Tensor  # (I, C)
    store: Store


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (I, M, ...) at idx (I, C) along dim 1 -> (I, C, ...)."""
    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


def _stop_string_hits(cfg: StepConfig, run_tokens: torch.Tensor, length: int, rows: torch.Tensor,
                      tokens: torch.Tensor) -> torch.Tensor:
    """(I, C) candidates whose new token completes a stop string. rows / tokens are (I, C) flat parent rows."""
    window = cfg.stop_strings.window
    tails = run_tokens[rows.flatten(), max(cfg.visible_start, length - window + 1):length]  # (I*C, w-1)
    seqs = torch.cat([tails, tokens.reshape(-1, 1)], dim=1).tolist()
    hit = [cfg.stop_strings.row_hit(seq) for seq in seqs]
    return torch.tensor(hit, dtype=torch.bool, device=tokens.device).view_as(tokens)


def expand(cfg: StepConfig, x: StepInput, t: int) -> Candidates:
    """Steps 2-3 of the module docstring: the C best continuations and the S that keep running."""
    items, width = x.run_scores.shape
    vocab = x.scores.shape[-1]
    acc = (x.scores.view(items, width, vocab) + x.run_scores[:, :, None]).reshape(items, width * vocab)
    if cfg.do_sample:
        idx = torch.multinomial(torch.softmax(acc, dim=-1), num_samples=cfg.candidates, generator=cfg.generator)
        top = acc.gather(1, idx)
        top, order = top.sort(dim=-1, descending=True)
        idx = idx.gather(-1, order)
    else:
        top, idx = torch.topk(acc, k=cfg.candidates)  # (I, C)
        if bool(torch.isnan(top[:, 0]).any()):  # top-k ranks NaN first: a NaN logit anywhere shows here
            check_finite(x.logp, t)
    parent = idx // vocab
    token = idx % vocab

    no = torch.zeros_like(token, dtype=torch.bool)
    is_eos = torch.isin(token, cfg.eos) if cfg.eos is not None else no
    is_stop = is_user = no
    rows = parent + torch.arange(items, device=idx.device)[:, None] * width  # (I, C) rows of x.run_tokens
    if cfg.stop_strings is not None:
        is_stop = _stop_string_hits(cfg, x.run_tokens, cfg.prompt_length + t, rows, token) & ~is_eos
    if cfg.stops is not None and cfg.stops.criteria:  # generate asks them about every candidate sequence
        length = cfg.prompt_length + t
        candidates = torch.cat([x.run_tokens[rows.flatten(), cfg.visible_start:length], token.reshape(-1, 1)], dim=1)
        is_user = cfg.stops.user_hits(candidates).view_as(token) & ~is_eos & ~is_stop
    ended = is_eos | is_stop | is_user
    at_limit = t + 1 >= cfg.n_max
    time_up = cfg.stops is not None and cfg.stops.expired  # like the length limit: every candidate hits
    hits = ended | at_limit | time_up
    raw = x.logp.reshape(items, -1).gather(1, idx)
    step = x.scores.reshape(items, -1).gather(1, idx)
    processed = raw if x.logp_processed is x.logp else x.logp_processed.reshape(items, -1).gather(1, idx)
    flat_row = rows if x.rows is None else x.rows.gather(1, parent)
    values = torch.stack([processed, raw, step, flat_row.to(processed.dtype)], dim=-1)  # (I, C, 4)

    # Running beams: the best S candidates that did not end (transformers: `+ hits * -1e9`, then top-k). At
    # the length limit every candidate hits and the search stops, so transformers' running beams of that
    # step are never used; we take the best non-ending ones, not a tie-break among -1e9s, because diverse
    # beam search penalises the tokens they chose.
    running = top + ended.to(torch.float32) * NEG
    keep = torch.topk(running, k=width)[1]  # (I, S)
    reasons = torch.where(is_eos, 1, torch.where(is_stop, 2, torch.where(is_user, 4, 0)))
    if time_up and not at_limit:
        reasons = torch.where(ended, reasons, 3)
    return Candidates(top=top, parent=parent, token=token, ended=ended, hits=hits, reasons=reasons,
                      values=values, keep=keep, run_scores=running.gather(1, keep))


def merge_finished(cfg: StepConfig, x: StepInput, cand: Candidates, entry_scores: torch.Tensor,
                   entered: torch.Tensor, t: int) -> Store:
    """Keep the S best of the stored hypotheses and the candidates `entered` (I, C) with `entry_scores`.

    Candidates not entered must carry scores below every stored one (transformers adds -1e9s).
    """
    items, width = x.run_scores.shape
    store, n_max = x.store, cfg.n_max
    merged = torch.cat((store.scores, entry_scores), dim=1)  # (I, S + C)
    pick = torch.topk(merged, k=width)[1]  # (I, S), best first
    tokens = _gather(x.run_tokens[:, cfg.prompt_length:].view(items, width, n_max), cand.parent)  # (I, C, N)
    tokens[:, :, t] = cand.token
    values = _gather(x.run_values.view(items, width, VALUES, n_max), cand.parent)  # (I, C, 3, N)
    values[:, :, :, t] = cand.values
    return Store(
        scores=_gather(merged, pick),
        done=_gather(torch.cat((store.done, entered), dim=1), pick),
        tokens=_gather(torch.cat((store.tokens, tokens), dim=1), pick),
        lengths=_gather(torch.cat((store.lengths, torch.full_like(cand.token, t + 1)), dim=1), pick),
        reasons=_gather(torch.cat((store.reasons, cand.reasons), dim=1), pick),
        values=_gather(torch.cat((store.values, values), dim=1), pick),
    )


def beam_step(cfg: StepConfig, x: StepInput, t: int) -> StepOutput:
    """Choose the next running beams of every item and update its finished store (transformers 5's math)."""
    cand = expand(cfg, x, t)
    width = cfg.width
    # Hits among the first S candidates enter the store, length-penalised; transformers 5 keeps the others
    # out by adding -1e9 (once per reason), which we copy: the sums decide ties at -1e9.
    entered = cand.hits & (torch.arange(cfg.candidates, device=cand.hits.device) < width)[None, :]
    scores = cand.top / ((t + 1) ** cfg.length_penalty)
    full = torch.all(x.store.done, dim=-1, keepdim=True) & (cfg.early_stopping is True)
    scores += full.to(torch.float32) * NEG
    scores += (~x.open).to(torch.float32) * NEG
    scores += (~entered) * NEG
    store = merge_finished(cfg, x, cand, scores, entered, t)
    return StepOutput(parent=cand.parent.gather(1, cand.keep), tokens=cand.token.gather(1, cand.keep),
                      scores=cand.run_scores, values=_gather(cand.values, cand.keep), hits=cand.hits, store=store)


def still_open(cfg: StepConfig, open_: torch.Tensor, run_scores: torch.Tensor, store: Store, t: int) -> torch.Tensor:
    """(I, 1) transformers' `_check_early_stop_heuristic` after step t: can the item still improve?"""
    if cfg.early_stopping == "never" and cfg.length_penalty > 0.0:
        best_length = cfg.n_max
    else:
        best_length = t + 1
    best_running = run_scores[:, :1] / (best_length ** cfg.length_penalty)
    worst_finished = torch.where(store.done, torch.min(store.scores, dim=1, keepdim=True)[0], NEG)
    return open_ & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


def keep_going(cfg: StepConfig, open_: torch.Tensor, store: Store, hits: torch.Tensor,
               rows: torch.Tensor) -> tuple[bool, bool]:
    """transformers' `_beam_search_has_unfinished_sequences`, and whether the new beams kept their rows
    (rows (B*K,) == arange: the cache needs no reorder); one device-to-host transfer for all of it."""
    identity = (rows == torch.arange(rows.shape[0], device=rows.device)).all()
    improvable, all_done, all_hit, same_rows = torch.stack([open_.any(), store.done.all(), hits.all(),
                                                            identity]).tolist()
    all_full = all_done and cfg.early_stopping is True
    return improvable and not all_full and not all_hit, same_rows


def step_config(params: GenerationParams, width: int, prompt_length: int, generator, tokenizer,
                device: torch.device) -> StepConfig:
    eos = torch.tensor(params.eos_token_id, device=device) if params.eos_token_id else None
    n_eos = len(params.eos_token_id) if params.eos_token_id else 0
    return StepConfig(
        width=width, candidates=max(2, 1 + n_eos) * width, prompt_length=prompt_length,
        n_max=params.max_new_tokens, length_penalty=params.length_penalty, early_stopping=params.early_stopping,
        do_sample=params.do_sample, generator=generator, eos=eos,
        stop_strings=StopStrings(params.stop_strings, tokenizer) if params.stop_strings else None,
        fill=fill_value(params),
    )


@dataclass
class Beams:
    """Everything a beam search carries from step to step. Items are prompts (or prompt x group)."""

    run_scores: torch.Tensor  # (I, S)
    run_values: torch.Tensor  # (I*S, 3, N)
    store: Store
    open: torch.Tensor  # (I, 1) bool


def start_beams(items: int, width: int, n_max: int, fill: int, device: torch.device,
                score_dtype: torch.dtype = torch.float32) -> Beams:
    run_scores = torch.zeros((items, width), device=device)
    run_scores[:, 1:] = NEG  # only beam 0 is live at first: K copies of one prompt would pick K equal tokens
    return Beams(run_scores=run_scores, run_values=torch.zeros((items * width, VALUES, n_max), device=device),
                 store=Store.empty(items, width, n_max, fill, device, score_dtype),
                 open=torch.ones((items, 1), dtype=torch.bool, device=device))


def advance(state, run_values: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor, values: torch.Tensor,
            t: int) -> torch.Tensor:
    """Row i of the new beams continues old row rows[i] with tokens[i]; returns the reordered run_values.

    state: the DecodeState (tokens reordered, one slot appended); values (B*K, 3): this step's records.
    Position ids and mask need no reorder: they are the same for all beams of a prompt.
    """
    state.tokens = state.tokens.index_select(0, rows)
    state.append(tokens)
    run_values = run_values.index_select(0, rows)
    run_values[:, :, t] = values
    return run_values


def finish(store: Store, prompt_ids: torch.Tensor, n_return: int, fill: int, timings: tuple[float, float],
           steps: int, recorder: Recorder | None = None) -> GenerationResult:
    """Assemble the result from per-prompt stores whose slots are sorted best first. store: (B, >=n).

    With a recorder that collected scores or logits, also generate's `beam_indices` (B*n, W) int32.
    """
    batch = prompt_ids.shape[0]
    tokens = store.tokens[:, :n_return].reshape(batch * n_return, -1)  # (B*n, N)
    lengths = store.lengths[:, :n_return].reshape(-1)  # (B*n,)
    width = int(lengths.max())
    values = store.values[:, :n_return].reshape(batch * n_return, VALUES, -1)[:, :, :width]
    mask = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]  # (B*n, W)
    values = values * mask[:, None, :]
    sequences = torch.cat([prompt_ids.repeat_interleave(n_return, dim=0), tokens[:, :width]], dim=1)
    reasons = [REASONS[r] for r in store.reasons[:, :n_return].reshape(-1).tolist()]
    prefill, decode = timings
    outputs = recorder.outputs() if recorder is not None else {}
    if any(v is not None for v in outputs.values()):
        outputs["beam_indices"] = torch.where(mask, values[:, 3].to(torch.int32), -1).to(torch.int32)
    return GenerationResult(
        sequences=sequences,
        token_logprobs=values[:, 0],
        token_logprobs_raw=values[:, 1],
        new_token_mask=mask,
        finish_reasons=reasons,
        prompt_length=prompt_ids.shape[1],
        prefill_seconds=prefill,
        decode_seconds=decode,
        new_tokens=int(lengths.sum()),
        steps=steps,
        sequences_scores=store.scores[:, :n_return].reshape(-1).to(torch.float32),
        extras={"beam_token_scores": values[:, 2], "fill_value": fill},
        **outputs,
    )


def beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: GenerationParams, *,
                generator: torch.Generator | None = None, tokenizer: Any = None,
                prompt_embeds: Any = None) -> GenerationResult:
    """Beam search (or beam sampling with `do_sample=True`) on checked, left-padded prompts.

    Args:
        model: a transformers causal LM.
        input_ids: (B, T) prompt ids; attention_mask: (B, T).
        params: resolved parameters with `num_beams > 1`.
        generator: RNG for beam sampling (None: torch's global RNG, as generate).
        tokenizer: needed only for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds, else None.

    Returns:
        GenerationResult with `sequences` (B * num_return_sequences, T + N) and `sequences_scores`.
    """
    if params.num_beam_groups > 1:  # generate.py dispatches groups to beam_diverse.py
        raise ValueError(f"num_beam_groups={params.num_beam_groups!r} is not allowed in beam_search: "
                         "use beam_diverse.diverse_beam_search (decoding.generate picks it)")
    device = input_ids.device
    batch, prompt_len = input_ids.shape
    width = params.num_beams
    n_max = params.max_new_tokens
    cfg = step_config(params, width, prompt_len, generator, tokenizer, device)
    beam_prompts = torch.arange(batch, device=device).repeat_interleave(width)  # (B*K,) the prompt of each beam
    shared = params.beam_prefill == "shared"  # prefill the B prompts, then copy them to their beams
    prefill_rows = None if shared else beam_prompts
    state = init_state(rows_of(input_ids, prefill_rows), rows_of(attention_mask, prefill_rows), n_max, cfg.fill)
    if prompt_embeds is not None:  # every beam of a prompt starts from its embeddings
        state.prompt_embeds = rows_of(prompt_embeds.embeds, prefill_rows)  # (B*K or B, T, H)
        state.visible_start = prompt_embeds.visible_start
        cfg = replace(cfg, visible_start=state.visible_start)
    kv = KVCache(params.cache, model, params.max_cache_len or prompt_len + n_max, compile=params.compile)
    forward = Forward(model, kv)
    prompt_start = (attention_mask == 0).sum(-1).repeat_interleave(width)  # (B*K,) pad slots per row
    # guidance's unconditional rows are never reordered with the beams, as in generate (processors/guidance.py)
    processors = merge_processors(build_processors(params, prompt_len - state.visible_start,
                                                   prompt_start if state.padded else None,
                                                   model, beam_prompts), params.logits_processor)
    beams = start_beams(batch, width, n_max, cfg.fill, device)
    recorder, cfg = with_hooks(cfg, params)

    sync_device(device)
    t0 = time.perf_counter()
    prefill = 0.0
    start = 0
    t = 0
    for t in range(n_max):
        logits = forward(state, start, state.length)  # (B*K, V); the shared prefill: (B, V)
        if t == 0 and shared:
            state, logits = copy_prefix(state, kv, logits, beam_prompts)  # cache, slots, logits to (B*K, ...)
        if cfg.do_sample:  # multinomial would fail on NaN first; beam search checks its candidates (`expand`)
            check_finite(logits, t)
        logp = torch.log_softmax(logits, dim=-1)
        scores = processors(state.visible_tokens(), logp) if processors else logp
        recorder.add(scores, logits)  # (B*K, V) each, rows in this step's beam order, as generate records them
        cfg.stops.tick()
        # (a full log_softmax: on CPU it is faster than a logsumexp for the candidates alone)
        logp_processed = torch.log_softmax(scores, dim=-1) if processors else logp
        out = beam_step(cfg, StepInput(scores, logp, logp_processed, beams.run_scores, state.tokens,
                                       beams.run_values, beams.store, beams.open), t)
        rows = (out.parent + torch.arange(batch, device=device)[:, None] * width).flatten()  # (B*K,)
        start = state.length
        run_values = advance(state, beams.run_values, rows, out.tokens.flatten(), out.values.flatten(0, 1), t)
        open_ = still_open(cfg, beams.open, out.scores, out.store, t)
        beams = replace(beams, run_scores=out.scores, run_values=run_values, store=out.store, open=open_)
        if t == 0:
            sync_device(device)
            prefill = time.perf_counter() - t0
        going, same_rows = keep_going(cfg, open_, out.store, out.hits, rows)
        if not going:
            break
        kv.reorder(rows, identity=same_rows)
    sync_device(device)
    total = time.perf_counter() - t0
    return finish(beams.store, input_ids[:, state.visible_start:], params.num_return_sequences, cfg.fill,
                  (prefill, total - prefill), t, recorder)


def rows_of(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """x's rows `rows` (each prompt repeated for its beams), or x itself for None (the shared prefill)."""
    return x if rows is None else x.index_select(0, rows)


def with_hooks(cfg: StepConfig, params: GenerationParams) -> tuple[Recorder, StepConfig]:
    """The call's output recorder, and its user stopping criteria / max_time (whose clock starts now)."""
    recorder = Recorder(params.output_scores, params.output_logits)
    return recorder, replace(cfg, stops=Stops(params.stopping_criteria, params.max_time, recorder))
