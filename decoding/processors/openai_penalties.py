"""The OpenAI / vLLM sampling parameters: presence and frequency penalties over the generated tokens, logit_bias,
allowed_token_ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


class LogitBias(LogitsProcessor):
    """Being written (issue 15)."""


class AllowedTokenIds(LogitsProcessor):
    """Being written (issue 15)."""


class PresenceFrequencyPenalty(LogitsProcessor):
    """Being written (issue 15)."""


def build_allowed_token_ids(p: "GenerationParams") -> LogitsProcessor | None:
    if p.allowed_token_ids is None:
        return None
    raise NotImplementedError("allowed_token_ids: being written (issue 15)")


def build_logit_bias(p: "GenerationParams") -> LogitsProcessor | None:
    if p.logit_bias is None:
        return None
    raise NotImplementedError("logit_bias: being written (issue 15)")


def build_frequency_penalty(p: "GenerationParams", prompt_length: int) -> LogitsProcessor | None:
    if p.frequency_penalty == 0:
        return None
    raise NotImplementedError("frequency_penalty: being written (issue 15)")


def build_presence_penalty(p: "GenerationParams", prompt_length: int) -> LogitsProcessor | None:
    if p.presence_penalty == 0:
        return None
    raise NotImplementedError("presence_penalty: being written (issue 15)")


def check_openai_penalties(p: "GenerationParams") -> None:
    """Types and ranges of presence_penalty, frequency_penalty, logit_bias, allowed_token_ids."""


def check_openai_vocabulary(p: "GenerationParams", vocab_size: int) -> None:
    """logit_bias and allowed_token_ids ids inside the model's vocabulary."""
