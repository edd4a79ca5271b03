"""Dynamic temperature (llama.cpp's temp_ext: dynatemp_range, dynatemp_exponent): the temperature follows the
normalised entropy of the candidates.

For each row, as llama.cpp's temp_ext sampler computes it with range > 0:
- the temperature runs from `low = max(0, temperature - range)` to `high = temperature + range`;
- the candidates are the row's finite logits (what earlier processors left); with one candidate (or none) the
  row is returned unchanged (no temperature at all, as llama.cpp returns early);
- H = entropy of the softmax over the candidates, normalised by its maximum log(number of candidates);
- t = low + (high - low) * H ** exponent, and the logits are divided by t. A confident row (low entropy) is
  sharpened towards `low`, a flat one flattened towards `high`; exponent 0 always gives `high`.
- t == 0 (low = 0 and H ** exponent rounds to 0): llama.cpp's temperature 0 keeps only the most likely token
  (the first in index order among tied maxima here).

Candidates are the finite logits. llama.cpp normalises by the log of its candidate array's size, and top-nσ
marks tokens -inf without removing them from that array: after top-nσ (with no top-k between) llama.cpp
would count those dead entries too. Here they never count; after the samplers that shrink the array (top-k,
top-p, min-p, typical, XTC) the two agree. The entropy is summed in float64: over SmolLM2's 49152 candidates
llama.cpp's one-by-one float32 sum is off by ~2e-4, which moves its probabilities by ~2e-5 (the golden test
checks ours against the exact value there, and llama.cpp's within that rounding).

With dynatemp_range == 0 `build_temperature` returns the plain `Temperature` (transformers' own path, bit for
bit), so only a nonzero range changes anything. Both parameters must be finite and >= 0 (llama.cpp does not
check them; a negative exponent would send the temperature to infinity as the entropy goes to 0).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..checks import check, is_real
from .base import NEG_INF, LogitsProcessor, ValueRepr
from .temperature import Temperature

if TYPE_CHECKING:
    from ..params import GenerationParams


def entropy_temperature(scores: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                        exponent: torch.Tensor) -> torch.Tensor:
    """`scores` (B, V) divided by each row's entropy-driven temperature (see the module docstring).

    low, high, exponent: (1, 1) or (B, 1) float32. Elementwise ops with them and per-row reductions only.
    """
    finite = scores != NEG_INF  # (B, V)
    count = finite.sum(-1, keepdim=True).double()  # (B, 1)
    # The entropy in float64: summed over 49k candidates in float32 it is off by ~1e-5 (llama.cpp's one-by-one
    # float32 sum: ~2e-4), which moves the probabilities after the temperature by 1e-6 to 2e-5.
    probs = torch.softmax(scores.double(), dim=-1)  # (B, V)
    plogp = torch.where(probs > 0, probs * probs.log(), 0.0)  # (B, V); 0 log 0 = 0, as llama.cpp skips p = 0
    entropy = -plogp.sum(-1, keepdim=True)  # (B, 1)
    normalised = entropy / count.log()  # (B, 1); count 1 gives 0 / 0, a row left unchanged below
    temperature = (low + (high - low) * normalised.pow(exponent.double())).float()  # (B, 1)
    scaled = scores / temperature
    # temperature 0: only the most likely token survives (llama.cpp's temp <= 0 branch)
    argmax = torch.zeros_like(finite).scatter_(-1, scores.argmax(-1, keepdim=True), True)
    scaled = torch.where(temperature > 0, scaled, scores.masked_fill(~argmax, NEG_INF))
    return torch.where(count > 1, scaled, scores)


class DynamicTemperature(ValueRepr, LogitsProcessor):
    """llama.cpp's temp_ext with range > 0: divide by a temperature in [low, high] set by the entropy."""

    def __init__(self, temperature: float, dynatemp_range: float, dynatemp_exponent: float = 1.0):
        check(is_real(temperature) and math.isfinite(temperature) and temperature > 0, "temperature", temperature,
              "use a finite number > 0 while sampling")
        check(is_real(dynatemp_range) and math.isfinite(dynatemp_range) and dynatemp_range > 0, "dynatemp_range",
              dynatemp_range, "use a finite number > 0 (0: the plain temperature)")
        check(is_real(dynatemp_exponent) and math.isfinite(dynatemp_exponent) and dynatemp_exponent >= 0,
              "dynatemp_exponent", dynatemp_exponent, "use a finite number >= 0")
        low, high = _bounds(temperature, dynatemp_range)
        self.low = torch.tensor([[low]], dtype=torch.float32)  # (1, 1)
        self.high = torch.tensor([[high]], dtype=torch.float32)  # (1, 1)
        self.exponent = torch.tensor([[float(dynatemp_exponent)]], dtype=torch.float32)  # (1, 1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.low.device != scores.device:
            self.low, self.high, self.exponent = (t.to(scores.device) for t in (self.low, self.high, self.exponent))
        return entropy_temperature(scores, self.low, self.high, self.exponent)

    @classmethod
    def for_rows(cls, built: list["DynamicTemperature | Temperature | None"], rows_per_config: int,
                 device) -> LogitsProcessor:
        """Configuration c's dynamic temperature on its rows; rows of a plain `Temperature` get exactly what
        Temperature computes, rows of None stay unchanged."""
        return RowDynamicTemperature(built, rows_per_config, device)


def _bounds(temperature: float, dynatemp_range: float) -> tuple[float, float]:
    """(low, high) as llama.cpp computes them, in float32: max(0, t - range) and t + range."""
    t = torch.tensor(float(temperature), dtype=torch.float32)
    r = torch.tensor(float(dynatemp_range), dtype=torch.float32)
    return float(torch.clamp(t - r, min=0.0)), float(t + r)


class RowDynamicTemperature(ValueRepr, LogitsProcessor):
    """Per-row temperatures for a batched sweep of dynamic, plain and no temperatures."""

    def __init__(self, built: list, rows_per_config: int, device):
        def per_row(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(rows_per_config)

        dynamic = [isinstance(p, DynamicTemperature) for p in built]
        self.low = per_row([float(p.low.reshape(())) if d else 1.0 for p, d in zip(built, dynamic)])[:, None]
        self.high = per_row([float(p.high.reshape(())) if d else 1.0 for p, d in zip(built, dynamic)])[:, None]
        self.exponent = per_row([float(p.exponent.reshape(())) if d else 1.0 for p, d in zip(built, dynamic)])[:, None]
        self.dynamic_rows = per_row(dynamic, torch.bool)  # (R,)
        # plain temperatures: divided by the Python float, as Temperature divides (one pass per distinct value)
        self.plain = sorted({p.temperature for p in built if isinstance(p, Temperature)})
        self.plain_rows = [per_row([isinstance(p, Temperature) and p.temperature == t for p in built], torch.bool)
                           for t in self.plain]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.where(self.dynamic_rows[:, None],
                          entropy_temperature(scores, self.low, self.high, self.exponent), scores)  # (R, V)
        for temperature, rows in zip(self.plain, self.plain_rows):
            out = torch.where(rows[:, None], scores / temperature, out)
        return out


def build_temperature(p: "GenerationParams") -> LogitsProcessor | None:
    """Temperature(p.temperature) (None when 1.0), or the dynamic temperature when dynatemp_range > 0."""
    if p.dynatemp_range == 0:
        return Temperature(p.temperature) if p.temperature != 1.0 else None
    return DynamicTemperature(p.temperature, p.dynatemp_range, p.dynatemp_exponent)


def check_dynatemp(p: "GenerationParams") -> None:
    """Types and ranges of dynatemp_range and dynatemp_exponent."""
    check(is_real(p.dynatemp_range) and math.isfinite(p.dynatemp_range) and p.dynatemp_range >= 0,
          "dynatemp_range", p.dynatemp_range,
          "use a finite number >= 0 (0: the plain temperature; r > 0: from temperature - r to temperature + r)")
    check(is_real(p.dynatemp_exponent) and math.isfinite(p.dynatemp_exponent) and p.dynatemp_exponent >= 0,
          "dynatemp_exponent", p.dynatemp_exponent, "use a finite number >= 0 (the normalised entropy's exponent)")
