"""XTC, exclude top choices (llama.cpp's xtc_probability / xtc_threshold): with probability p, drop every
token above the threshold but the least likely of them.

The rule, as llama.cpp's xtc sampler applies it to one row:
- draw u uniform in [0, 1); the row is left alone when u > probability (so probability 1 always applies,
  and with 0 < p < 1 some steps apply it and others do not);
- the probabilities are the softmax over the row's current candidates (finite logits);
- the "top choices" are the tokens with probability >= threshold; when there are at least two, all of them but
  the least likely are removed, unless that would leave fewer than `min_keep` candidates (then nothing is).
Ties: among tokens of equal probability the one of the highest index counts as the least likely, so exactly
one top choice is kept, as llama.cpp keeps one (which of tied ones it keeps depends on its sort).

Candidates are the finite logits. llama.cpp counts the entries of its candidate array, and top-nσ marks tokens
-inf without removing them from it: after top-nσ (with no top-k between) llama.cpp's min_keep also counts those
dead entries; here it counts live candidates only. After the samplers that shrink the array (top-k, top-p,
min-p, typical) the two agree.

Thresholds above 0.5: at most one token can have a probability above 0.5, so XTC can never remove anything and
llama.cpp builds an empty sampler. `xtc_threshold` may be anything in [0, 1]; above 0.5 `build_xtc` builds
nothing, and nothing is drawn either (a run with a useless XTC keeps the random stream of a run without it).

The draw comes from the run's own stream (`bind` hands over a `draws.Draws`): one uniform per row and step,
drawn before the step's token is sampled from the same generator, so a seeded run is reproducible and each
configuration of a batched sweep draws exactly what it draws alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..checks import check, is_real
from .base import NEG_INF, LogitsProcessor, ValueRepr

if TYPE_CHECKING:
    from ..params import GenerationParams

# llama.cpp's own limit: no two tokens can both reach a threshold above one half.
MAX_USEFUL_THRESHOLD = 0.5


def exclude_top_choices(scores: torch.Tensor, threshold: torch.Tensor, apply_rows: torch.Tensor,
                        min_keep: int) -> torch.Tensor:
    """The XTC rule without the draw: on the rows where `apply_rows` is True, remove every candidate with
    probability >= threshold except the least likely of them (when >= 2 reach it and >= min_keep remain).

    Args:
        scores: (B, V) float32; -inf marks tokens already removed.
        threshold: (1, 1) or (B, 1) float32.
        apply_rows: (B,) bool: the rows whose draw said "apply".
        min_keep: the fewest candidates a row may be left with.
    Returns:
        (B, V) new scores; `scores` is not changed.
    """
    probs = torch.softmax(scores, dim=-1)  # (B, V); removed tokens have 0
    finite = scores != NEG_INF
    top = finite & (probs >= threshold)  # (B, V): the top choices
    n_top = top.sum(-1, keepdim=True)  # (B, 1)
    n_candidates = finite.sum(-1, keepdim=True)  # (B, 1)
    # llama.cpp keeps the candidates from the last top choice on: n_candidates - (n_top - 1) of them
    allowed = (n_top >= 2) & (n_candidates - (n_top - 1) >= min_keep) & apply_rows[:, None]  # (B, 1)
    # the one top choice that stays: the least likely, of tied ones the highest index (no sort: O(V) per row)
    least = torch.where(top, probs, torch.inf).min(-1, keepdim=True).values  # (B, 1)
    index = torch.arange(scores.shape[-1], device=scores.device)  # (V,)
    kept = torch.where(top & (probs == least), index, -1).max(-1, keepdim=True).values  # (B, 1)
    remove = allowed & top & (index != kept)
    return scores.masked_fill(remove, NEG_INF)


class XTC(ValueRepr, LogitsProcessor):
    """Exclude top choices with probability `probability` per row and step (see the module docstring)."""

    stateful = True  # one random draw per row and step

    def __init__(self, probability: float, threshold: float, min_keep: int = 1,
                 used: Sequence[bool] | None = None):
        """used: per row, whether it uses XTC (a batched sweep); None: every row does."""
        check(is_real(probability) and 0 < probability <= 1, "xtc_probability", probability,
              "use a number in (0, 1] (0 turns XTC off)")
        check(is_real(threshold) and 0 <= threshold <= MAX_USEFUL_THRESHOLD, "xtc_threshold", threshold,
              f"use a number in [0, {MAX_USEFUL_THRESHOLD}] (above it no two tokens can be excluded)")
        self.probability = torch.tensor([[float(probability)]], dtype=torch.float32)  # (1, 1)
        self.threshold = torch.tensor([[float(threshold)]], dtype=torch.float32)  # (1, 1)
        self.min_keep = int(min_keep)
        self.used = None if used is None else [bool(u) for u in used]
        self.used_rows: torch.Tensor | None = None  # `used` as a tensor on the scores' device, made on first use
        self.draws: Any = None

    def bind(self, draws: Any) -> None:
        self.draws = draws

    def _on(self, device: torch.device) -> None:
        if self.probability.device != device:
            self.probability = self.probability.to(device)
            self.threshold = self.threshold.to(device)
        if self.used is not None and (self.used_rows is None or self.used_rows.device != device):
            self.used_rows = torch.tensor(self.used, dtype=torch.bool, device=device)  # (R,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.draws is None:
            raise RuntimeError("XTC draws random numbers: bind(draws) it to the run's stream before the first step")
        self._on(scores.device)
        chance = self.draws.uniform(self.used, scores.device)  # (B,); 1.0 on rows that draw nothing
        apply_rows = chance[:, None] <= self.probability  # (B, 1): llama.cpp skips when chance > probability
        if self.used is not None:  # rows without XTC: never (their 1.0 would pass probability 1)
            apply_rows = apply_rows & self.used_rows[:, None]
        return exclude_top_choices(scores, self.threshold, apply_rows[:, 0], self.min_keep)

    @classmethod
    def for_rows(cls, built: list["XTC | None"], rows_per_config: int, device) -> LogitsProcessor:
        """Configuration c's probability and threshold on its rows; rows of configurations without XTC draw
        nothing from their stream and pass through unchanged."""
        used = [p for p in built if p is not None]
        row = cls(1.0, 0.0, used[0].min_keep, [p is not None for p in built for _ in range(rows_per_config)])
        prob = [float(p.probability.reshape(())) if p is not None else 0.0 for p in built]
        thr = [float(p.threshold.reshape(())) if p is not None else 0.0 for p in built]
        row.probability = torch.tensor(prob, device=device).repeat_interleave(rows_per_config)[:, None]  # (R, 1)
        row.threshold = torch.tensor(thr, device=device).repeat_interleave(rows_per_config)[:, None]  # (R, 1)
        return row


def build_xtc(p: "GenerationParams", min_tokens_to_keep: int) -> LogitsProcessor | None:
    """XTC(...), or None when xtc_probability == 0 (off) or xtc_threshold > 0.5 (it could exclude nothing)."""
    if p.xtc_probability == 0 or p.xtc_threshold > MAX_USEFUL_THRESHOLD:
        return None
    return XTC(p.xtc_probability, p.xtc_threshold, min_tokens_to_keep)


def check_xtc(p: "GenerationParams") -> None:
    """Types and ranges of xtc_probability and xtc_threshold."""
    check(is_real(p.xtc_probability) and math.isfinite(p.xtc_probability) and 0 <= p.xtc_probability <= 1,
          "xtc_probability", p.xtc_probability, "use a number in [0, 1] (0: off)")
    check(is_real(p.xtc_threshold) and math.isfinite(p.xtc_threshold) and 0 <= p.xtc_threshold <= 1,
          "xtc_threshold", p.xtc_threshold,
          "use a number in [0, 1] (tokens with probability >= it are the top choices; above 0.5 nothing is excluded)")
