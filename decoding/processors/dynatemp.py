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
top-p, min-p, typical, XTC) the two agree. The entropy is exact to ~1e-7 relative (`row_entropy`: float32 passes
arranged so that no error is shared by every term): over SmolLM2's 49152 candidates llama.cpp's one-by-one
float32 sum is off by ~2e-4, which moves its probabilities by ~2e-5 (the golden test checks ours against the
float64 value there, and llama.cpp's within that rounding).

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


def entropy_temperature(scores: torch.Tensor, low: torch.Tensor, high: torch.Tensor, exponent: torch.Tensor,
                        may_reach_zero: bool = True) -> torch.Tensor:
    """`scores` (B, V) divided by each row's entropy-driven temperature (see the module docstring).

    low, high, exponent: (1, 1) or (B, 1) float32. Elementwise ops with them and per-row reductions only.
    may_reach_zero: False when every row's low is > 0 (its temperature cannot be 0): skips that branch.
    """
    count = scores.shape[-1] - torch.isneginf(scores).sum(-1, keepdim=True, dtype=torch.int32)  # (B, 1) candidates
    entropy, spare = entropy_and_buffer(scores)  # (B, 1) float64; a free (B, V) buffer for the result
    normalised = entropy / count.double().log()  # (B, 1); count 1 gives 0 / 0, a row left unchanged below
    temperature = (low + (high - low) * normalised.pow(exponent.double())).float()  # (B, 1)
    # count <= 1 leaves the row as it is, and so does temperature 0 before its own branch: x / 1 is x exactly
    divisor = torch.where((count > 1) & (temperature > 0), temperature, 1.0)  # (B, 1) float32
    scaled = torch.div(scores, divisor, out=spare if scores.dtype == divisor.dtype else None)
    if not may_reach_zero:
        return scaled
    # temperature 0: only the most likely token survives (llama.cpp's temp <= 0 branch), the first of tied ones
    first = scores.max(-1, keepdim=True).indices  # (B, 1)
    only_top = torch.full_like(scores, NEG_INF).scatter_(1, first, scores.gather(1, first))
    return torch.where((count > 1) & (temperature <= 0), only_top, scaled)


def row_entropy(scores: torch.Tensor) -> torch.Tensor:
    """(B, V) -> (B, 1) the entropy in nats of each row's softmax, to ~1e-7 relative (float64)."""
    return entropy_and_buffer(scores)[0]


def entropy_and_buffer(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) -> ((B, 1) the entropy in nats of each row's softmax, to ~1e-7 relative (float64), a spare
    (B, V) float buffer the caller may overwrite: one fewer fresh 6 MB tensor, whose page faults cost on CPU).

    -sum(p log p) straight from a float32 softmax is off by ~6e-6 relative over 49152 candidates (the softmax's
    normaliser is, and every log p shares its error): the probabilities after the temperature would move by
    ~2e-5. Exactly instead, with m = max s, e_i = exp(s_i - m) and Z = sum e = 1 + r:
    H = log Z - sum e_i (s_i - m) / Z, where r = sum of the others' e_i = their p_i / p_max (the softmax's own
    normaliser cancels in the ratio) and sum e_i (s_i - m) = D / p_max with D = sum p_i (s_i - m). Both r and D
    are sums of same-signed terms, so a confident row (H near 0) keeps its relative precision too; the row
    costs vectorised passes only (no log over it, no float64 copy).
    """
    probs = torch.softmax(scores, dim=-1)  # (B, V)
    p_max, first = probs.max(-1, keepdim=True)  # (B, 1)
    others = probs.scatter_(1, first, 0.0).sum(-1, keepdim=True)  # (B, 1); `probs` is ours: in place
    # one (B, V) buffer in place: a fresh 6 MB tensor per op costs its page faults again on CPU
    work = (scores - scores.amax(-1, keepdim=True)).nan_to_num_(nan=math.nan, posinf=math.inf, neginf=0.0)
    d = work.mul_(probs).sum(-1, keepdim=True).double()  # (B, 1), <= 0; the max's own term is 0
    p_max, r = p_max.double(), others.double() / p_max.double()
    return torch.log1p(r) - d / (p_max * (1 + r)), probs  # `probs` is no longer needed: the caller's buffer


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
        self.may_reach_zero = low == 0.0  # only then can the temperature be 0 (the argmax-only branch)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.low.device != scores.device:
            self.low, self.high, self.exponent = (t.to(scores.device) for t in (self.low, self.high, self.exponent))
        return entropy_temperature(scores, self.low, self.high, self.exponent, self.may_reach_zero)

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
        self.may_reach_zero = any(p.may_reach_zero for p, d in zip(built, dynamic) if d)
        # plain temperatures: divided by the Python float, as Temperature divides (one pass per distinct value)
        self.plain = sorted({p.temperature for p in built if isinstance(p, Temperature)})
        self.plain_rows = [per_row([isinstance(p, Temperature) and p.temperature == t for p in built], torch.bool)
                           for t in self.plain]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.where(self.dynamic_rows[:, None],
                          entropy_temperature(scores, self.low, self.high, self.exponent, self.may_reach_zero),
                          scores)  # (R, V)
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
