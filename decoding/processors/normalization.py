"""Processors that condition the scores themselves rather than choose tokens.

`remove_invalid_values` replaces NaN and +-inf by finite numbers so that sampling cannot fail on them;
`renormalize_logits` turns the final scores into log-probabilities (generate applies it last, after every
warper, so that beam search compares normalized scores).
"""

from __future__ import annotations

import torch

from .base import LogitsProcessor


class InfNanRemove(LogitsProcessor):
    """NaN -> 0, +inf -> the dtype's largest finite value, -inf -> its smallest (transformers' rule)."""

    def __call__(self, input_ids, scores):
        info = torch.finfo(scores.dtype)
        out = torch.where(torch.isnan(scores), 0.0, scores)
        out = torch.where(scores == float("inf"), info.max, out)
        return torch.where(scores == -float("inf"), info.min, out)


class LogitNormalization(LogitsProcessor):
    """Log-softmax over the vocabulary: the scores become log-probabilities."""

    def __call__(self, input_ids, scores):
        return scores.log_softmax(dim=-1)
