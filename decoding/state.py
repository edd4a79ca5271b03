"""One batch's buffers, by slot: token ids, attention mask and position ids (decoding/loop.py explains them).

Below the loop and the processors alike, so that every set of rows the package decodes (the batch, beams,
the unconditional rows of classifier-free guidance) is built and advanced by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecodeState:
    """Buffers of one batch. Columns are cache positions (slots); `length` of them are filled."""

    tokens: torch.Tensor  # (B, T + N) long, pad after `length`
    attention_mask: torch.Tensor  # (B, T + N) long
    position_ids: torch.Tensor  # (B, T + N) long
    length: int  # filled columns; the next token goes to slot `length`
    padded: bool  # any pad slot at all? If not, the model gets no mask (SDPA's causal fast path, as generate)
    # inputs_embeds (decoding/embeds.py): (B, T, H) fed instead of the prompt's ids on the first forward
    prompt_embeds: torch.Tensor | None = None
    visible_start: int = 0  # first column processors, criteria and `sequences` see (T: embeddings only)

    def model_mask(self, end: int) -> torch.Tensor | None:
        return self.attention_mask[:, :end] if self.padded else None

    def select_rows(self, rows: torch.Tensor) -> "DecodeState":
        """A state whose row i is row `rows[i]` of this one (rows may repeat: a shared prefix copied)."""
        embeds = None if self.prompt_embeds is None else self.prompt_embeds.index_select(0, rows)
        return DecodeState(self.tokens.index_select(0, rows), self.attention_mask.index_select(0, rows),
                           self.position_ids.index_select(0, rows), self.length, self.padded, embeds,
                           self.visible_start)

    def visible_tokens(self) -> torch.Tensor:
        """(B, L) the ids processors and stopping criteria see: generate's `input_ids` of this step."""
        return self.tokens[:, self.visible_start: self.length]

    def append(self, tokens: torch.Tensor) -> int:
        """Write one token per row (B,) into slot `length`, one position after the row's last; returns the slot.

        The slot's mask is already 1 (generated slots are always attended: `init_state`).
        """
        slot = self.length
        self.tokens[:, slot] = tokens
        if slot > 0:
            self.position_ids[:, slot] = self.position_ids[:, slot - 1] + 1
        self.length += 1
        return slot


def prompt_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids of a left-padded prompt: each row's first real token is position 0."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def init_state(input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, pad_token_id: int | None
               ) -> DecodeState:
    batch, prompt_len = input_ids.shape
    total = prompt_len + max_new_tokens
    pad = pad_token_id if pad_token_id is not None else 0
    tokens = input_ids.new_full((batch, total), pad)
    tokens[:, :prompt_len] = input_ids
    mask = attention_mask.new_ones((batch, total), dtype=torch.long)
    mask[:, :prompt_len] = attention_mask
    positions = torch.zeros_like(mask)
    positions[:, :prompt_len] = prompt_position_ids(attention_mask)
    return DecodeState(tokens, mask, positions, prompt_len, padded=bool((attention_mask == 0).any()))
