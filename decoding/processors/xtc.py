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

Cost: with threshold t > 0 a row has at most ~1/t top choices, so they are found by a top-k of that many
(`most_top_choices`) rather than by full-width masks; thresholds below 1/256 (and 0) take the masks. Both give
the same bits (tests/decoding/test_sampler_fast_paths.py).

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


# Above this many possible top choices the full-width mask is cheaper than a top-k (threshold below ~1/256).
MOST_FOR_TOPK = 256


def most_top_choices(threshold: float) -> int | None:
    """An upper bound on a row's top choices at `threshold` (p >= threshold and the probabilities sum to 1,
    up to float32 rounding), or None where it exceeds MOST_FOR_TOPK (threshold 0: every candidate)."""
    if threshold <= 0:
        return None
    most = math.floor(1.001 / threshold) + 1  # the 0.1% covers a float32 softmax summing to 1 + 1e-6
    return most if most <= MOST_FOR_TOPK else None


def exclude_top_choices(scores: torch.Tensor, threshold: torch.Tensor, apply_rows: torch.Tensor,
                        min_keep: int, most: int | None = None) -> torch.Tensor:
    """The XTC rule without the draw: on the rows where `apply_rows` is True, remove every candidate with
    probability >= threshold except the least likely of them (when >= 2 reach it and >= min_keep remain).

    Args:
        scores: (B, V) float32; -inf marks tokens already removed.
        threshold: (1, 1) or (B, 1) float32.
        apply_rows: (B,) bool: the rows whose draw said "apply".
        min_keep: the fewest candidates a row may be left with.
        most: at least the number of top choices any applied row can have (`most_top_choices` of the smallest
            threshold): they are then found by a top-k over the row instead of full-width masks, the same
            result at a third of the cost. None: the masks.
    Returns:
        (B, V) new scores; `scores` is not changed.
    """
    probs = torch.softmax(scores, dim=-1)  # (B, V); removed tokens have 0
    if most is not None and most < scores.shape[-1]:
        values, ids = torch.topk(probs, most, dim=-1)  # (B, K): every top choice is among them
        top = values >= threshold  # (B, K)
    else:
        ids = None
        top = (probs >= threshold) & (scores != NEG_INF)  # (B, V); threshold 0: removed tokens are no top choice
    allowed = apply_rows[:, None]  # (B, 1)
    if min_keep > 1:  # llama.cpp keeps the candidates from the last top choice on: n_candidates - n_top + 1
        n_top = top.sum(-1, keepdim=True, dtype=torch.int32)  # (B, 1)
        n_candidates = (scores != NEG_INF).sum(-1, keepdim=True, dtype=torch.int32)  # (B, 1)
        allowed = allowed & (n_candidates - (n_top - 1) >= min_keep)
    if ids is not None:
        # the one that stays: the least likely top choice, of tied ones the highest index; with one top choice
        # it is that one, so XTC's "at least two" needs no count
        least = torch.where(top, values, 2.0).amin(-1, keepdim=True)  # (B, 1)
        kept = torch.where(top & (values == least), ids, -1).amax(-1, keepdim=True)  # (B, 1)
        remove = allowed & top & (ids != kept)  # (B, K)
        return scores.scatter(1, ids, torch.where(remove, NEG_INF, scores.gather(1, ids)))
    # Full width: min over the reversed row gives the first minimum there, the last in index order. Every top
    # choice (>= the least) goes, then the kept one is put back: with a single top choice that restores the
    # row; without any, `kept` points at a token whose score is put back as it was.
    least, last = torch.where(top, probs, 2.0).flip(-1).min(-1, keepdim=True)  # (B, 1); 2.0: no top choice
    kept = scores.shape[-1] - 1 - last  # (B, 1)
    out = torch.where(probs >= torch.where(allowed, least, torch.inf), NEG_INF, scores)
    return out.scatter_(1, kept, scores.gather(1, kept))


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
        self.most = most_top_choices(float(self.threshold))  # bound on the top choices (float32's threshold)
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
        return exclude_top_choices(scores, self.threshold, apply_rows[:, 0], self.min_keep, self.most)

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
        bounds = [p.most for p in used]  # rows without XTC are never applied: their bound does not matter
        row.most = None if None in bounds else max(bounds)
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
