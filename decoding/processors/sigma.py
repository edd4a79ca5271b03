"""Top-nσ (Tang et al. 2024, llama.cpp's top_n_sigma): keep logits within n standard deviations of the max.

The rule works on logits, not probabilities, so it does not depend on the temperature applied before it (a
temperature scales the max and the standard deviation alike). As llama.cpp computes it: over the row's finite
candidates (tokens an earlier processor removed, -inf, do not count), the mean and the *population* standard
deviation (divided by the count, not count - 1); every logit below `max - n * std` is removed. The max itself
always survives (n > 0, std >= 0), and so does every token tied with it.

n <= 0: llama.cpp turns the sampler off for n <= 0 (its default, -1, means "disabled"). Here `top_n_sigma=None`
is off, and a number must be > 0: a non-positive n is refused rather than silently ignored, so that a typo
does not pass for a setting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..checks import check, is_real
from .base import NEG_INF, LogitsProcessor, ValueRepr

if TYPE_CHECKING:
    from ..params import GenerationParams


def drop_beyond_sigmas(scores: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """`scores` (B, V) with every logit below max - n * std of its row's finite logits set to -inf.

    n: (1, 1) or (B, 1) float32. Only elementwise ops with `n` and per-row reductions, so a row gives the same
    bits whatever the other rows are.
    """
    # Removed tokens (-inf) count for nothing: nan_to_num turns exactly them into 0 (NaN and +inf stay), one
    # vectorised pass where torch.where with a mask costs two. One (B, V) buffer serves every intermediate
    # (in place): a fresh 6 MB tensor per op costs its page faults again on CPU (~0.4 ms each at 32 x 49152).
    count = (scores.shape[-1] - torch.isneginf(scores).sum(-1, keepdim=True, dtype=torch.int32)).to(scores.dtype)
    top = scores.amax(-1, keepdim=True)  # (B, 1)
    work = scores.nan_to_num(nan=math.nan, posinf=math.inf, neginf=0.0)  # (B, V)
    mean = work.sum(-1, keepdim=True) / count  # (B, 1)
    deviation = torch.sub(scores, mean, out=work).nan_to_num_(nan=math.nan, posinf=math.inf, neginf=0.0)
    std = deviation.mul_(deviation).sum(-1, keepdim=True).div(count).sqrt()  # (B, 1), population std
    return torch.where(scores >= top - n * std, scores, work.new_tensor(NEG_INF), out=work)  # free again


class TopNSigma(ValueRepr, LogitsProcessor):
    """Keep the logits >= max - n * std of the row's finite logits (see the module docstring)."""

    def __init__(self, n: float):
        check(is_real(n) and math.isfinite(n) and n > 0, "top_n_sigma", n, "use a finite number > 0, or None (off)")
        self.n = torch.tensor([[float(n)]], dtype=torch.float32)  # (1, 1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.n.device != scores.device:
            self.n = self.n.to(scores.device)
        return drop_beyond_sigmas(scores, self.n)

    @classmethod
    def for_rows(cls, built: list["TopNSigma | None"], rows_per_config: int, device) -> LogitsProcessor:
        """One processor for a batched sweep: configuration c's n on its rows, the rows of configurations
        without top-nσ (None) unchanged (no n leaves a row as it is, so a row mask keeps them)."""
        return RowTopNSigma(built, rows_per_config, device)


class RowTopNSigma(ValueRepr, LogitsProcessor):
    """TopNSigma with one n per row; rows whose configuration has none pass through untouched."""

    def __init__(self, built: list[TopNSigma | None], rows_per_config: int, device):
        values = [float(p.n.reshape(())) if p is not None else 1.0 for p in built]  # 1.0: masked out below
        self.n = torch.tensor(values, dtype=torch.float32, device=device).repeat_interleave(rows_per_config)[:, None]
        self.rows = torch.tensor([p is not None for p in built], device=device).repeat_interleave(rows_per_config)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.where(self.rows[:, None], drop_beyond_sigmas(scores, self.n), scores)  # (R, V)


def build_top_n_sigma(p: "GenerationParams") -> LogitsProcessor | None:
    """TopNSigma(p.top_n_sigma), or None when top_n_sigma is None (off)."""
    if p.top_n_sigma is None:
        return None
    return TopNSigma(p.top_n_sigma)


def check_top_n_sigma(p: "GenerationParams") -> None:
    """Types and ranges of top_n_sigma (a ValueError naming the parameter, the value and what is allowed)."""
    n = p.top_n_sigma
    check(n is None or (is_real(n) and math.isfinite(n) and n > 0), "top_n_sigma", n,
          "use a finite number > 0 (keep logits within n standard deviations of the max), or None (off); "
          "llama.cpp's n <= 0 'disabled' is None here")
