"""Mirostat v1 and v2 (Basu et al. 2021, llama.cpp's mirostat / mirostat_tau / mirostat_eta): truncate to keep the
surprise near tau, with per-row state mu carried across steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


class Mirostat(LogitsProcessor):
    """Being written (issue 15)."""


def build_mirostat(p: "GenerationParams", model: Any) -> LogitsProcessor | None:
    """Mirostat(...), or None when mirostat == 0 (off)."""
    if p.mirostat == 0:
        return None
    raise NotImplementedError("mirostat: being written (issue 15)")


def check_mirostat(p: "GenerationParams") -> None:
    """Types and ranges of mirostat, mirostat_tau, mirostat_eta."""
