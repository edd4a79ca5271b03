"""Top-nσ (Tang et al. 2024, llama.cpp's top_n_sigma): keep logits within n standard deviations of the max."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


class TopNSigma(LogitsProcessor):
    """Being written (issue 15)."""


def build_top_n_sigma(p: "GenerationParams") -> LogitsProcessor | None:
    """TopNSigma(p.top_n_sigma), or None when top_n_sigma is None (off)."""
    if p.top_n_sigma is None:
        return None
    raise NotImplementedError("top_n_sigma: being written (issue 15)")


def check_top_n_sigma(p: "GenerationParams") -> None:
    """Types and ranges of top_n_sigma (a ValueError naming the parameter, the value and what is allowed)."""
