"""Speculative decoding, batched, on our caches: propose k tokens per row, verify them in one target forward.

One step, for every live row at once (decoding/speculative/rows.py has the slot layout):

1. the proposer offers up to k tokens per row (prompt lookup, a draft model, or the target's first layers);
2. one target forward over the pending token and the proposals (k + 1 slots, the proposals a row lacks
   written masked), with every processor applied at each position to that position's own history;
3. each row keeps the longest acceptable prefix and one more token from the target (verify.py), cut at
   EOS, a stop string, a user criterion or max_new_tokens inside the block (a row never runs past its end);
4. every cache keeps the slots below the common frontier; a row's rejected slots below it are holes.

With greedy decoding the text is plain greedy decoding's; with sampling it is distributed as plain sampling's.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..hooks import Stops, Recorder, check_streamer_rows
from ..params import GenerationParams
from ..result import GenerationResult
from ..stopping import FINISH_CRITERIA, FINISH_EOS, FINISH_LENGTH, FINISH_MAX_TIME, FINISH_STOP_STRING, StopStrings
from ..loop import check_finite, chosen_logprob, sync_device
from .checks import check_draft
from .first_layers import first_layers
from .processing import BlockProcessors
from .proposers import DraftModel, PromptLookup
from .batch import Batch, Builder
from .rows import SpecRows
from .slots import forward_slots
from .verify import greedy_accept, sample_accept


def _proposer(model: Any, p: GenerationParams, processors: BlockProcessors, capacity: int,
              prompt_start: torch.Tensor, generator: torch.Generator | None, batch: int):
    eos = p.eos_token_id or ()
    if p.prompt_lookup_num_tokens is not None:
        return PromptLookup(p.prompt_lookup_num_tokens, p.max_matching_ngram_size or 2, eos, prompt_start)
    draft = p.assistant_model if p.assistant_model is not None else first_layers(model, p.draft_layers)
    return DraftModel(draft, p.cache, capacity, p.num_assistant_tokens, p.num_assistant_tokens_schedule,
                      p.assistant_confidence_threshold, processors, p.do_sample, generator, eos, batch,
                      model.device)


def _log_softmax_at(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, J) log softmax(scores)[token] for scores (B, J, V), tokens (B, J): the plain loop's rule, per position."""
    batch, width, vocab = scores.shape
    return chosen_logprob(scores.reshape(batch * width, vocab), tokens.reshape(-1)).reshape(batch, width)


class _Ends:
    """Where a row's block stops: EOS, a stop string, a user criterion, or its length budget."""

    def __init__(self, p: GenerationParams, tokenizer: Any, stops: Stops):
        self.max_new = p.max_new_tokens
        self.eos = set(p.eos_token_id or ())
        self.stop_strings = StopStrings(p.stop_strings, tokenizer) if p.stop_strings else None
        self.stops = stops
        self.criteria = bool(stops.criteria)

    def cut(self, rows: SpecRows, row: int, tokens: list[int]) -> tuple[list[int], str | None]:
        """The tokens of `tokens` that row `row` of `rows` emits, and its finish reason if it ends inside them."""
        done = int(rows.generated[row])
        text = rows.history(row)[0].tolist() if (self.stop_strings or self.criteria) else None
        for j, token in enumerate(tokens):
            reason = None
            if token in self.eos:
                reason = FINISH_EOS
            elif self.stop_strings is not None and self.stop_strings.row_hit(text + tokens[:j + 1]):
                reason = FINISH_STOP_STRING
            elif self.criteria:
                ids = torch.tensor([text + tokens[:j + 1]], device=rows.text.device)
                if bool(self.stops.user_hits(ids)[0]):
                    reason = FINISH_CRITERIA
            if reason is None and done + j + 1 >= self.max_new:
                reason = FINISH_LENGTH
            if reason is not None:
                return tokens[:j + 1], reason
        return tokens, None


class _Outputs:
    """Per-row results in the caller's row order, written as rows emit (the live batch shrinks as rows finish)."""

    def __init__(self, batch: int, width: int, text: torch.Tensor):
        device = text.device
        self.logprobs = torch.zeros((batch, width), device=device)
        self.logprobs_raw = torch.zeros((batch, width), device=device)
        self.reasons: list[str | None] = [None] * batch
        self.accepted = torch.zeros(batch, dtype=torch.long, device=device)
        self.proposed = torch.zeros(batch, dtype=torch.long, device=device)
        self.forwards = torch.zeros(batch, dtype=torch.long, device=device)
        self.text = text.clone()  # (B, T + N + 1) each row's final text, stored when it leaves the batch
        self.generated = torch.zeros(batch, dtype=torch.long, device=device)

    def store(self, rows: SpecRows, live: torch.Tensor, which: torch.Tensor) -> None:
        """Copy the text of live rows `which` (indices into the live batch) to the caller's rows."""
        origin = live.index_select(0, which)
        self.text.index_copy_(0, origin, rows.text.index_select(0, which))
        self.generated.index_copy_(0, origin, rows.generated.index_select(0, which))


class _Step:
    """One target forward over a batch's block, the acceptance, and each row's emitted tokens."""

    def __init__(self, model: Any, p: GenerationParams, generator: torch.Generator | None, ends: _Ends,
                 out: _Outputs):
        self.model, self.p, self.generator, self.ends, self.out = model, p, generator, ends, out

    def __call__(self, b: Batch, block_start: int, drafts: torch.Tensor, counts: torch.Tensor, q: Any,
                 step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Verify `drafts` (B, K) written after the pending slot `block_start` (the prefill: block_start 0, no
        drafts); emit each row's tokens. Returns (kept (B,), next token (B,))."""
        rows, out = b.rows, self.out
        out.forwards.index_add_(0, b.live, torch.ones_like(b.live))
        width = drafts.shape[1]
        b.kv.ensure_capacity(rows.state.length)
        logits = forward_slots(self.model, b.kv, rows.state, block_start, rows.state.length, keep=width + 1)
        check_finite(logits, step)  # logits: (B, K + 1, V)
        scores = b.processors(rows, logits, drafts, b.alive)
        if self.p.do_sample:
            kept, next_tokens = sample_accept(scores, drafts, counts, q, self.generator)
        else:
            kept, next_tokens = greedy_accept(scores, drafts, counts)
        chosen = torch.cat([drafts, next_tokens[:, None]], dim=1)  # (B, K + 1): position j's token if j <= kept
        chosen.scatter_(1, kept[:, None], next_tokens[:, None])
        lp = _log_softmax_at(scores, chosen)
        lp_raw = lp if scores is logits else _log_softmax_at(logits, chosen)
        streamer = self.p.streamer
        for i, (origin, n_kept) in enumerate(zip(b.live.tolist(), kept.tolist())):
            tokens, reason = self.ends.cut(rows, i, chosen[i, : n_kept + 1].tolist())
            g = int(rows.generated[i])
            out.logprobs[origin, g:g + len(tokens)] = lp[i, :len(tokens)]
            out.logprobs_raw[origin, g:g + len(tokens)] = lp_raw[i, :len(tokens)]
            rows.emit(i, tokens)
            out.accepted[origin] += len(tokens) - 1
            out.proposed[origin] += int(counts[i])
            if streamer is not None:
                streamer.put(torch.tensor([tokens]))
            if reason is not None:
                out.reasons[origin] = reason
                b.alive[i] = False
        return kept, next_tokens

    def prefill(self, b: Batch, step: int) -> None:
        """The batch's prompt slots [0, length), its first token chosen and written as the pending one."""
        rows = b.rows
        empty = torch.zeros((rows.batch, 0), dtype=torch.long, device=rows.text.device)
        _, next_tokens = self(b, 0, empty, torch.zeros_like(b.live), None, step)
        rows.write_pending(next_tokens, b.alive, rows.state.position_ids[:, rows.state.length - 1])


def speculative_decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
                       generator: torch.Generator | None = None, tokenizer: Any = None,
                       prompt_embeds: Any = None) -> GenerationResult:
    """Greedy or sampled decoding with proposals verified k + 1 slots at a time (module docstring).

    Finished rows leave the batch (every cache, buffer and per-row processor drops them), so a row that
    accepted a lot and ended early stops costing the others compute; with `max_active_rows=W` at most W rows
    decode at once and waiting prompts take the places of finished rows (batch.py).

    Args:
        input_ids, attention_mask: (B, T) checked, left-padded prompts (`prepare_call`).
        p: resolved parameters with one proposer (`assistant_model`, `prompt_lookup_num_tokens`, `draft_layers`).

    Returns:
        GenerationResult with `accepted_tokens`, `proposed_tokens` and `target_forwards` per row.
    """
    if prompt_embeds is not None:
        raise ValueError("inputs_embeds is not allowed with speculative decoding: proposals are verified from "
                         "token ids; pass input_ids")
    check_draft(model, p)
    if p.num_return_sequences > 1:  # the n samples of a prompt are adjacent rows, as in generate
        input_ids = input_ids.repeat_interleave(p.num_return_sequences, dim=0)
        attention_mask = attention_mask.repeat_interleave(p.num_return_sequences, dim=0)
    device = input_ids.device
    batch, prompt_len = input_ids.shape
    n_max = p.max_new_tokens
    pad = p.pad_token_id if p.pad_token_id is not None else 0
    check_streamer_rows(p.streamer, batch)
    text = input_ids.new_full((batch, prompt_len + n_max + 1), pad)
    text[:, :prompt_len] = input_ids
    out = _Outputs(batch, n_max + 1, text)
    room = max(p.prompt_lookup_num_tokens or 0, p.num_assistant_tokens)
    capacity = max(p.max_cache_len or 0, prompt_len + n_max + room + 1)

    def make_proposer(processors, cache_len, prompt_start, rows):
        return _proposer(model, p, processors, cache_len, prompt_start, generator, rows)

    build = Builder(model, p, input_ids, attention_mask, text, capacity, make_proposer)
    waiting = torch.arange(batch, device=device)  # the caller's rows not started yet
    window = p.max_active_rows or batch
    stops = Stops(p.stopping_criteria, p.max_time, Recorder(False, False))
    step_of = _Step(model, p, generator, _Ends(p, tokenizer, stops), out)
    if p.streamer is not None:
        p.streamer.put(input_ids.cpu())

    sync_device(device)
    t0 = time.perf_counter()
    b: Batch | None = build.start(waiting[:window], prompt_len)
    waiting = waiting[window:]
    step_of.prefill(b, 0)
    sync_device(device)
    prefill_seconds = time.perf_counter() - t0
    step = 1
    while True:
        if stops.time_up() and b is not None:
            for origin in b.live[b.alive].tolist() + waiting.tolist():
                out.reasons[origin] = FINISH_MAX_TIME
            b.alive[:] = False
            waiting = waiting[:0]
        if b is not None and not bool(b.alive.all()):  # finished rows leave the batch
            out.store(b.rows, b.live, (~b.alive).nonzero().flatten())
            b = b if bool(b.alive.any()) else None
            if b is not None:
                b.select_rows(b.alive.nonzero().flatten())
        if waiting.numel() and (b is None or b.live.numel() < window):
            joining = waiting[: window - (0 if b is None else b.live.numel())]
            waiting = waiting[joining.numel():]
            if b is None:  # nothing in flight: a fresh batch on the prompts' own slots
                b = build.start(joining, prompt_len)
                step_of.prefill(b, step)
            else:
                part = build.start(joining, b.rows.state.length - 1)
                step_of.prefill(part, step)
                b.append(part)
            continue  # rows that ended on their first token leave before the next block
        if b is None:
            break
        squeeze = b.rows.compaction()  # holes a third of the slots: squeeze them out of every cache
        if squeeze is not None:
            b.proposer.compact(squeeze[0], b.rows.state.length - 1)
            b.kv.gather_slots(squeeze[0])
            b.rows.apply_compaction(*squeeze)
        block_start = b.rows.state.length - 1  # the pending token's slot
        limits = n_max - b.rows.generated - 1
        drafts, counts, q = b.proposer.propose(b.rows, limits)
        if drafts.shape[1]:
            b.rows.write_block(drafts, torch.arange(drafts.shape[1], device=device)[None, :] < counts[:, None])
        kept, next_tokens = step_of(b, block_start, drafts, counts, q, step)
        frontier = b.rows.settle(block_start, kept, b.alive, next_tokens)
        b.kv.crop(frontier)
        b.proposer.after_verify(frontier, kept, counts)
        step += 1
    sync_device(device)
    total = time.perf_counter() - t0
    if p.streamer is not None:
        p.streamer.end()
    generated = int(out.generated.max())
    new_mask = torch.arange(generated, device=device)[None, :] < out.generated[:, None]
    return GenerationResult(
        sequences=out.text[:, : prompt_len + generated],
        token_logprobs=out.logprobs[:, :generated] * new_mask,
        token_logprobs_raw=out.logprobs_raw[:, :generated] * new_mask,
        new_token_mask=new_mask,
        finish_reasons=[r if r is not None else FINISH_LENGTH for r in out.reasons],
        prompt_length=prompt_len,
        prefill_seconds=prefill_seconds,
        decode_seconds=total - prefill_seconds,
        new_tokens=int(out.generated.sum()),
        steps=step - 1,
        accepted_tokens=out.accepted,
        proposed_tokens=out.proposed,
        target_forwards=out.forwards,
    )
