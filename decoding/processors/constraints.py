"""Constraints: processors that forbid (or force) tokens by rule, whatever the model's scores say.

Length constraints (no EOS before a minimum length) live here, and so do the token bans (suppress_tokens,
begin_suppress_tokens), the forced tokens (forced_bos_token_id, forced_eos_token_id) and the caller's
prefix_allowed_tokens_fn. Sequence biases and bad words are in bias.py. Each class computes what the
transformers processor of the same name computes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .base import NEG_INF, LogitsProcessor


class MinLength(LogitsProcessor):
    """Forbid EOS while the whole sequence (prompt included) is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id: Sequence[int]):
        self.min_length = min_length
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores
        return _forbid(self.eos_token_id, scores)


class MinNewTokens(LogitsProcessor):
    """Forbid EOS until `min_new_tokens` tokens follow the (padded) prompt of length `prompt_length`."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_id: Sequence[int]):
        self.prompt_length = prompt_length
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores
        return _forbid(self.eos_token_id, scores)


def _forbid(token_ids: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
    """A copy of `scores` (B, V) with -inf at the given ids; ids outside the vocabulary match nothing.

    An EOS id past the scores' vocabulary is no error for transformers' MinLength / MinNewTokens either. Why not
    `torch.where(torch.isin(arange(V), ids), -inf, scores)`, what transformers computes: the same values, but
    isin over the vocabulary costs about 0.2 ms a step on CPU (49152 tokens), a clone and index_fill_ 6 us.
    """
    inside = [i for i in token_ids if 0 <= i < scores.shape[-1]]
    out = scores.clone()
    if inside:
        out.index_fill_(-1, torch.tensor(inside, dtype=torch.long, device=scores.device), NEG_INF)
    return out


class SuppressTokens(LogitsProcessor):
    """Set the scores of `suppress_tokens` to -inf at every step (generate's `suppress_tokens`)."""

    def __init__(self, suppress_tokens: Sequence[int]):
        self.suppress_tokens = tuple(suppress_tokens)

    def __call__(self, input_ids, scores):
        return _forbid(self.suppress_tokens, scores)


class SuppressTokensAtBegin(LogitsProcessor):
    """Set the scores of `begin_suppress_tokens` to -inf at the one step whose input is `begin_index` long.

    generate's begin index is the padded prompt length T (T + 1 when T <= 1 and a BOS token is forced).
    """

    def __init__(self, begin_suppress_tokens: Sequence[int], begin_index: int):
        self.begin_suppress_tokens = tuple(begin_suppress_tokens)
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return _forbid(self.begin_suppress_tokens, scores)


class ForcedBOS(LogitsProcessor):
    """Force `bos_token_id` when the sequence is one token long (a one-token prompt): every other -inf, it 0."""

    def __init__(self, bos_token_id: int):
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != 1:
            return scores
        out = torch.full_like(scores, NEG_INF)
        out[:, self.bos_token_id] = 0
        return out


class ForcedEOS(LogitsProcessor):
    """Force an EOS id (all of `eos_token_id` score 0, the rest -inf) at the step that reaches `max_length`.

    `max_length` is generate's total length: padded prompt + max_new_tokens.
    """

    def __init__(self, max_length: int, eos_token_id: Sequence[int]):
        self.max_length = max_length
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        out = torch.full_like(scores, NEG_INF)
        out[:, list(self.eos_token_id)] = 0
        return out


class PrefixAllowedTokens(LogitsProcessor):
    """Allow only the tokens `prefix_allowed_tokens_fn(batch_id, row_ids)` returns (constrained generation).

    Rows come in groups of `num_beams` per prompt (beams, or the samples of num_return_sequences). When every
    allowed token of all of a prompt's rows already scores -inf, the allowed tokens get 0 there instead, so
    the constraint still holds (transformers' rule).
    """

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]], num_beams: int):
        self.prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self.num_beams = num_beams

    def __call__(self, input_ids, scores):
        mask = torch.full_like(scores, NEG_INF)  # (B * K, V)
        prompts = input_ids.shape[0] // self.num_beams
        for batch_id in range(prompts):
            for beam in range(self.num_beams):
                row = batch_id * self.num_beams + beam
                allowed = self.prefix_allowed_tokens_fn(batch_id, input_ids[row])
                if len(allowed) == 0:
                    raise ValueError(f"prefix_allowed_tokens_fn returned no token for batch id {batch_id} (row {row}):"
                                     " the constraint cannot be met; return at least one allowed token id")
                mask[row, allowed] = 0
        out = scores + mask
        stuck = out.amax(dim=-1).isneginf().view(prompts, -1).all(dim=-1, keepdim=True)  # (prompts, 1)
        return torch.where(stuck.repeat_interleave(self.num_beams, dim=0), mask, out)
