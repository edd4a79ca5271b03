"""The rows in flight, and rows joining them: continuous batching for speculative decoding.

With `max_active_rows=W`, at most W rows decode at once; when rows finish, the next waiting prompts take their
places instead of the batch running on with fewer rows. Why it matters for speculation: rows accept different
numbers of proposals, so without refill a batch runs until its slowest row is done, and a row that lookups
rarely help holds the whole batch at plain speed (bench/speculative_speed.py measured it).

A joining row gets the batch's slot layout: its prompt (left-padded to the common T, as every row's text is)
ends at the batch's last filled slot, the slots before it are masked (attention mask 0, exactly like left
padding), so its position ids are cumsum(mask) - 1 as if it had been prefilled alone. It is prefilled on those
slots in its own cache, its first token chosen, then every per-row part (slots, text, caches, processors,
proposer state) is appended to the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..cache import KVCache
from ..params import GenerationParams
from ..state import init_state
from .processing import BlockProcessors
from .rows import SpecRows


@dataclass
class Batch:
    """Every per-row part of the rows in flight; row i of each part is the caller's row `live[i]`."""

    rows: SpecRows
    kv: KVCache
    processors: BlockProcessors
    proposer: Any
    live: torch.Tensor  # (B,) long: the caller's row of each row
    alive: torch.Tensor  # (B,) bool: not finished yet

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` (B',): finished rows leave, so the forwards stop computing them."""
        self.live, self.alive = self.live.index_select(0, keep), self.alive.index_select(0, keep)
        for part in (self.rows, self.kv, self.proposer, self.processors):
            part.select_rows(keep)

    def append(self, other: "Batch") -> None:
        """Rows joining (laid out by `Builder.start` on this batch's slots) follow this batch's rows."""
        self.proposer.append_rows(other.proposer, other.rows)
        self.rows.append_rows(other.rows)
        self.kv.append_rows(other.kv)
        self.processors.append_rows(other.processors)
        self.live = torch.cat([self.live, other.live])
        self.alive = torch.cat([self.alive, other.alive])


class Builder:
    """Builds a Batch for some of the caller's rows, on a given number of prompt slots."""

    def __init__(self, model: Any, p: GenerationParams, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 text: torch.Tensor, capacity: int, make_proposer: Callable[..., Any]):
        """input_ids, attention_mask: (N, T) every caller row's left-padded prompt; text: (N, T + N_new + 1)."""
        self.model = model
        self.p = p
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.text = text
        self.capacity = capacity
        self.make_proposer = make_proposer
        self.pad = p.pad_token_id if p.pad_token_id is not None else 0

    def start(self, origins: torch.Tensor, slots: int) -> Batch:
        """Rows `origins` (n,) with their prompts ending at slot `slots` - 1 (slots >= T; masked slots before)."""
        p, (n, prompt_len) = self.p, (origins.shape[0], self.input_ids.shape[1])
        ids = self.input_ids.index_select(0, origins)
        mask = self.attention_mask.index_select(0, origins)
        if slots > prompt_len:  # the batch is further along: mask the slots before the prompt, as left padding
            ids = torch.cat([ids.new_full((n, slots - prompt_len), self.pad), ids], dim=1)
            mask = torch.cat([mask.new_zeros((n, slots - prompt_len)), mask], dim=1)
        state = init_state(ids, mask, p.max_new_tokens, p.pad_token_id)
        device = ids.device
        rows = SpecRows(state, self.text.index_select(0, origins), torch.zeros(n, dtype=torch.long, device=device),
                        prompt_len, self.pad)
        kv = KVCache(p.cache, self.model, self.capacity + slots - prompt_len)  # capacity: for T prompt slots
        prompt_start = (self.attention_mask.index_select(0, origins) == 0).sum(-1)  # (n,) in the text's columns
        prompt_rows = origins // p.num_return_sequences
        padded = bool((prompt_start > 0).any())
        processors = BlockProcessors(p, prompt_len, prompt_start if padded else None, self.model, prompt_rows)
        proposer = self.make_proposer(processors, kv.max_cache_len, prompt_start, n)
        return Batch(rows, kv, processors, proposer, origins.clone(), torch.ones(n, dtype=torch.bool, device=device))
