"""Sequence biases and bad words: add a bias to a token when the row ends with the rest of a sequence.

`sequence_bias` maps token sequences to a float: when a row's last tokens are the sequence minus its last
token, the last token's score gets the bias (one-token sequences always). `bad_words_ids` is the same with
a bias of -inf, minus any one-token sequence that is an EOS id (generate never bans EOS this way).

The bias is built as transformers builds it (one-token biases first, then one group per prefix length, in
the order the sequences were given, each added with `index_add_`) so that biases adding up on one token
round the same way.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import LogitsProcessor


def as_bias_dict(sequence_bias: Any) -> dict[tuple[int, ...], float]:
    """generate's two spellings, {(ids...): bias} or [[ids, bias], ...], as one dict (validated in params.py)."""
    if isinstance(sequence_bias, dict):
        return {tuple(int(t) for t in ids): float(bias) for ids, bias in sequence_bias.items()}
    return {tuple(int(t) for t in ids): float(bias) for ids, bias in sequence_bias}


class SequenceBias(LogitsProcessor):
    def __init__(self, sequence_bias: Any):
        self.sequence_bias = as_bias_dict(sequence_bias)
        self._prepared: tuple | None = None  # (single-token bias (V,), [(prefixes, last tokens, biases)])

    def _prepare(self, scores: torch.Tensor) -> tuple:
        device = scores.device
        single = torch.zeros((scores.shape[-1],), dtype=torch.float, device=device)  # (V,)
        ones = [(ids[0], bias) for ids, bias in self.sequence_bias.items() if len(ids) == 1]
        if ones:
            single[[t for t, _ in ones]] = torch.tensor([b for _, b in ones], device=device)
        by_prefix: dict[int, list] = {}
        for ids, bias in self.sequence_bias.items():
            if len(ids) > 1:
                by_prefix.setdefault(len(ids) - 1, []).append((ids, bias))
        groups = [(torch.tensor([ids[:-1] for ids, _ in group], device=device),  # (S, L) prefixes
                   torch.tensor([ids[-1] for ids, _ in group], device=device),  # (S,) biased tokens
                   torch.tensor([bias for _, bias in group], dtype=torch.float, device=device))  # (S,)
                  for group in by_prefix.values()]
        return single, groups

    def __call__(self, input_ids, scores):
        if self._prepared is None or self._prepared[0].device != scores.device:
            self._prepared = self._prepare(scores)
        single, groups = self._prepared
        bias = torch.zeros_like(scores) + single  # (B, V)
        for prefixes, last_tokens, biases in groups:
            length = prefixes.shape[1]
            if length > input_ids.shape[1]:
                continue  # the row is shorter than the prefix: it cannot end with it
            matching = (input_ids[:, None, -length:] == prefixes).all(dim=-1)  # (B, S)
            bias.index_add_(1, last_tokens, torch.where(matching, biases, 0.0).to(bias.dtype))
        return scores + bias

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sequence_bias={self.sequence_bias!r})"


class NoBadWords(SequenceBias):
    """Ban each sequence of `bad_words_ids` (its last token gets -inf after the rest); EOS is never banned alone."""

    def __init__(self, bad_words_ids: Sequence[Sequence[int]], eos_token_id: Sequence[int] | None):
        eos = list(eos_token_id or ())
        kept = [list(seq) for seq in bad_words_ids if not any(list(seq) == [e] for e in eos)]
        super().__init__({tuple(seq): -math.inf for seq in kept})
