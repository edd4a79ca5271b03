"""XTC, exclude top choices (llama.cpp's xtc_probability / xtc_threshold): with probability p, drop every
token above the threshold but the least likely of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


class XTC(LogitsProcessor):
    """Being written (issue 15)."""


def build_xtc(p: "GenerationParams", min_tokens_to_keep: int) -> LogitsProcessor | None:
    """XTC(...), or None when xtc_probability == 0 (off)."""
    if p.xtc_probability == 0:
        return None
    raise NotImplementedError("xtc: being written (issue 15)")


def check_xtc(p: "GenerationParams") -> None:
    """Types and ranges of xtc_probability and xtc_threshold."""
