"""The three ways to propose k tokens: prompt lookup, a draft model, the target's own first layers.

A proposer returns, per row, up to `limits[i]` proposed tokens: `(drafts (B, K), counts (B,), q)`, where
`drafts[i, :counts[i]]` are row i's proposals (the rest is filler, never attended) and `q` (B, K, V) is the
draft's processed distribution each proposal was drawn from, or None for a deterministic proposer (lookup:
q is the one-hot of the proposal). After verification `after_verify` tells it which slots every cache keeps.
"""

from __future__ import annotations

from typing import Any

import torch

from ..cache import KVCache
from .rows import SpecRows
from .slots import forward_slots

Proposals = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


def _no_proposals(batch: int, device: torch.device) -> Proposals:
    empty = torch.zeros((batch, 0), dtype=torch.long, device=device)
    return empty, torch.zeros(batch, dtype=torch.long, device=device), None


class PromptLookup:
    """generate's prompt lookup (`prompt_lookup_num_tokens`, `max_matching_ngram_size`), one row at a time.

    The last n tokens of the row's text (n from `max_matching_ngram_size` down to 1) are searched for in the
    row's text, its left padding excluded; the first earlier occurrence followed by at least one token
    proposes up to `num_tokens` of what followed it, cut before an EOS, as transformers' candidate generator
    does for its one row.
    """

    def __init__(self, num_tokens: int, ngram_size: int, eos: tuple[int, ...], prompt_start: torch.Tensor):
        self.num_tokens = num_tokens
        self.ngram_size = ngram_size
        self.eos = set(eos)
        self.prompt_start = prompt_start.tolist()  # (B,) left-padding slots per row

    def row_proposal(self, ids: torch.Tensor, limit: int) -> list[int]:
        length = ids.shape[0]
        for n in range(min(self.ngram_size, length - 1), 0, -1):
            windows = ids.unfold(0, n, 1)  # (length - n + 1, n)
            hits = (windows == ids[-n:]).all(dim=1).nonzero().flatten().tolist()
            for start in (h + n for h in hits):
                end = min(start + self.num_tokens, length)
                if start < end:
                    chosen = ids[start:end].tolist()
                    for j, token in enumerate(chosen):
                        if token in self.eos:  # the target would accept EOS and run past it
                            chosen = chosen[:j]
                            break
                    return chosen[:limit]
        return []

    def propose(self, rows: SpecRows, limits: torch.Tensor) -> Proposals:
        found: list[list[int]] = []
        for i, limit in enumerate(limits.tolist()):
            if limit <= 0:
                found.append([])
                continue
            ids = rows.text[i, self.prompt_start[i]: rows.prompt_length + int(rows.generated[i])]
            found.append(self.row_proposal(ids, limit))
        width = max(len(f) for f in found)
        if width == 0:
            return _no_proposals(rows.batch, rows.text.device)
        drafts = torch.full((rows.batch, width), rows.pad, dtype=torch.long)
        for i, f in enumerate(found):
            drafts[i, :len(f)] = torch.tensor(f, dtype=torch.long)
        counts = torch.tensor([len(f) for f in found], dtype=torch.long)
        return drafts.to(rows.text.device), counts.to(rows.text.device), None

    def after_verify(self, frontier: int, accepted: torch.Tensor, counts: torch.Tensor) -> None:
        pass

    def compact(self, index: torch.Tensor, cached: int) -> None:
        pass  # lookup reads the rows' text, which compaction does not touch

    def select_rows(self, keep: torch.Tensor) -> None:
        self.prompt_start = [self.prompt_start[i] for i in keep.tolist()]

    def append_rows(self, other: "PromptLookup", rows: SpecRows) -> None:
        self.prompt_start.extend(other.prompt_start)


class DraftModel:
    """A draft causal LM (`assistant_model`, or the target's first layers) with its own cache, on our slots.

    The draft's cache mirrors the target's slot layout: it reads the same tokens, attention mask (holes
    included) and position ids, so after verification it keeps the same slots (`after_verify` crops it) and
    next time only runs the slots it has not seen. Each row proposes up to its own `k` tokens: the schedule
    (`constant`, or generate's `heuristic`: +2 after a fully accepted block, -1 otherwise) and the confidence
    threshold (a row stops after a proposal whose draft probability is below it) act per row.
    """

    def __init__(self, draft: Any, cache: str, capacity: int, num_tokens: int, schedule: str,
                 threshold: float | None, processors: Any, do_sample: bool, generator: torch.Generator | None,
                 eos: tuple[int, ...], batch: int, device: torch.device):
        self.draft = draft
        self.cache, self.capacity = cache, capacity
        self.kv = KVCache(cache, draft, capacity)
        self.filled = 0  # slots [0, filled) are in the draft's cache
        self.k = torch.full((batch,), num_tokens, dtype=torch.long, device=device)
        self.schedule = schedule
        self.threshold = threshold or 0.0
        self.processors = processors
        self.do_sample = do_sample
        self.generator = generator
        self.eos = torch.tensor(eos, device=device) if eos else None

    def propose(self, rows: SpecRows, limits: torch.Tensor) -> Proposals:
        cap = torch.minimum(self.k, limits.clamp(min=0))  # (B,)
        width = int(cap.max())
        if width == 0:
            return _no_proposals(rows.batch, rows.text.device)
        st = rows.state
        base = st.length  # the first proposal's slot; the pending token sits at base - 1
        active = cap > 0
        counts = torch.zeros_like(cap)
        drafts = torch.full((rows.batch, width), rows.pad, dtype=torch.long, device=cap.device)
        dists = []
        start = self.filled
        for j in range(width):
            self.kv.ensure_capacity(st.length)
            logits = forward_slots(self.draft, self.kv, st, start, st.length, keep=1)  # (B, 1, V)
            self.filled = st.length
            scores = self.processors(rows, logits, drafts[:, :j], active)[:, 0]  # (B, V)
            probs = torch.softmax(scores, dim=-1)
            if self.do_sample:
                token = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
                dists.append(probs)
            else:
                token = scores.argmax(dim=-1)
            drafts[:, j] = torch.where(active, token, rows.pad)
            counts += active.long()
            stop = counts >= cap
            if self.eos is not None:
                stop |= torch.isin(token, self.eos)
            if self.threshold > 0:
                stop |= probs.gather(1, token[:, None]).squeeze(1) < self.threshold
            active = active & ~stop
            if j == width - 1 or not bool(active.any()):
                break
            # The proposal goes into the next slot (scratch: verification writes the same values there again).
            start = rows.write_block(drafts[:, j:j + 1], (counts > j)[:, None])
        st.length = base  # the proposals are written for real by the verification block
        used = int(counts.max())
        q = torch.stack(dists, dim=1)[:, :used] if self.do_sample else None
        return drafts[:, :used], counts, q

    def select_rows(self, keep: torch.Tensor) -> None:
        self.kv.select_rows(keep)
        self.k = self.k.index_select(0, keep)

    def append_rows(self, other: "DraftModel", rows: SpecRows) -> None:
        """Rows joining the batch: the draft reads their slots below this cache's filled length now, so both
        caches hold the same slots (`rows`: the joining rows' own SpecRows)."""
        if self.filled > 0:
            forward_slots(other.draft, other.kv, rows.state, 0, self.filled, keep=1)
        other.filled = self.filled
        self.kv.append_rows(other.kv)
        self.k = torch.cat([self.k, other.k])

    def compact(self, index: torch.Tensor, cached: int) -> None:
        """The batch squeezes its holes out (SpecRows.compaction): the draft's cache follows when it holds the
        same `cached` slots; else it starts over (its next proposal re-reads the compacted slots)."""
        if self.filled == cached:
            self.kv.gather_slots(index)
            self.filled = index.shape[1]
        else:
            self.kv = KVCache(self.cache, self.draft, max(self.capacity, self.kv.max_cache_len))
            self.filled = 0

    def after_verify(self, frontier: int, accepted: torch.Tensor, counts: torch.Tensor) -> None:
        self.filled = min(self.filled, frontier)
        self.kv.crop(self.filled)
        if self.schedule in ("heuristic", "heuristic_transient"):
            proposed = counts > 0
            full = proposed & (accepted == counts)
            self.k = torch.where(full, self.k + 2, torch.where(proposed, (self.k - 1).clamp(min=1), self.k))
