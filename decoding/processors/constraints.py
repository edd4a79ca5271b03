"""Constraints: processors that forbid (or force) tokens by rule, whatever the model's scores say.

Length constraints (no EOS before a minimum length) live here, and so do the token bans and forced
tokens. Each class computes what the transformers processor of the same name computes.
"""

from __future__ import annotations

from typing import Sequence

from .base import NEG_INF, LogitsProcessor


class MinLength(LogitsProcessor):
    """Forbid EOS while the whole sequence (prompt included) is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id: Sequence[int]):
        self.min_length = min_length
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores
        out = scores.clone()
        out[:, list(self.eos_token_id)] = NEG_INF
        return out


class MinNewTokens(LogitsProcessor):
    """Forbid EOS until `min_new_tokens` tokens follow the (padded) prompt of length `prompt_length`."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_id: Sequence[int]):
        self.prompt_length = prompt_length
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores
        out = scores.clone()
        out[:, list(self.eos_token_id)] = NEG_INF
        return out
