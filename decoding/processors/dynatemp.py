"""Dynamic temperature (llama.cpp's temp_ext: dynatemp_range, dynatemp_exponent): the temperature follows the
normalised entropy of the candidates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


from .temperature import Temperature


class DynamicTemperature(LogitsProcessor):
    """Being written (issue 15)."""


def build_temperature(p: "GenerationParams") -> LogitsProcessor | None:
    """Temperature(p.temperature) (None when 1.0), or the dynamic temperature when dynatemp_range > 0."""
    if p.dynatemp_range == 0:
        return Temperature(p.temperature) if p.temperature != 1.0 else None
    raise NotImplementedError("dynatemp: being written (issue 15)")


def check_dynatemp(p: "GenerationParams") -> None:
    """Types and ranges of dynatemp_range and dynatemp_exponent."""
