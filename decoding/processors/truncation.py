"""Truncation warpers: keep the head of the distribution, set the tail to -inf (sampling only).

Top-k, top-p (nucleus), min-p, typical, epsilon and eta: each class computes what the transformers warper
of the same name computes. The rules of top-p and min-p are also functions (`drop_low_mass`,
`drop_below_min_p`) so that the per-row versions in rows.py apply the very same operations.
"""

from __future__ import annotations

import torch

from .base import NEG_INF, LogitsProcessor
from .top_p_head import drop_low_mass_from_heads


class TopK(LogitsProcessor):
    """Keep the k highest logits (ties with the k-th are kept too, as in transformers)."""

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        if not (isinstance(top_k, int) and top_k > 0):
            raise ValueError(f"top_k={top_k!r} is not allowed: use an integer > 0")
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]  # (B, 1)
        return scores.masked_fill(scores < kth, NEG_INF)


class TopP(LogitsProcessor):
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose mass reaches top_p."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p!r} is not allowed: use a number in (0, 1]")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return drop_low_mass(scores, 1 - self.top_p, self.min_tokens_to_keep)


def drop_low_mass(scores: torch.Tensor, drop_mass, min_tokens_to_keep: int) -> torch.Tensor:
    """Top-p's rule: drop the least likely tokens while their summed probability stays <= `drop_mass`
    (1 - top_p: a float, or a (B, 1) tensor with one value per row).

    What `drop_low_mass_sorted` computes, taken from a top-k head of each row where that decides it
    (top_p_head.py: 10x cheaper than sorting a 49k vocabulary), and from the sort elsewhere."""
    return drop_low_mass_from_heads(scores, drop_mass, min_tokens_to_keep, drop_low_mass_sorted)


def drop_low_mass_sorted(scores: torch.Tensor, drop_mass, min_tokens_to_keep: int) -> torch.Tensor:
    """Top-p's rule as transformers' TopPLogitsWarper computes it: sort each row, cumulate its softmax."""
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # ascending: drop the low-mass head
    drop_sorted = cumulative <= drop_mass
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(1, sorted_idx, drop_sorted)
    return scores.masked_fill(drop, NEG_INF)


class MinP(LogitsProcessor):
    """Keep tokens whose probability is at least min_p times the top token's (Nguyen et al. 2024)."""

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1):
        if not 0 <= min_p <= 1:
            raise ValueError(f"min_p={min_p!r} is not allowed: use a number in [0, 1]")
        self.min_p = float(min_p)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return drop_below_min_p(scores, self.min_p, self.min_tokens_to_keep)


def drop_below_min_p(scores: torch.Tensor, min_p, min_tokens_to_keep: int) -> torch.Tensor:
    """Min-p's rule: drop tokens less likely than `min_p` times the top token (a float, or (B, 1) per row)."""
    probs = torch.softmax(scores, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    keep_idx = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop = drop.scatter(-1, keep_idx, False)
    return scores.masked_fill(drop, NEG_INF)


class Typical(LogitsProcessor):
    """Locally typical sampling (Meister et al. 2022): tokens whose surprisal is closest to the entropy."""

    def __init__(self, mass: float, min_tokens_to_keep: int = 1):
        if not 0 < mass < 1:
            raise ValueError(f"typical_p={mass!r} is not allowed here: use a number in (0, 1)")
        self.mass = float(mass)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        logp = torch.nn.functional.log_softmax(scores, dim=-1)
        entropy = -(logp * logp.exp()).nansum(-1, keepdim=True)  # (B, 1)
        shifted = torch.abs(-logp - entropy)
        sorted_shift, sorted_idx = torch.sort(shifted, descending=False)
        cumulative = scores.gather(-1, sorted_idx).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_shift.shape[-1] - 1)
        drop_sorted = sorted_shift > sorted_shift.gather(1, last.view(-1, 1))
        drop_sorted[..., : self.min_tokens_to_keep] = False
        drop = drop_sorted.scatter(1, sorted_idx, drop_sorted)
        return scores.masked_fill(drop, NEG_INF)


def _drop_below(scores: torch.Tensor, probs: torch.Tensor, threshold, min_tokens_to_keep: int) -> torch.Tensor:
    """Mask tokens whose probability is below `threshold`, except the `min_tokens_to_keep` highest."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    drop = (probs < threshold) & (scores < torch.topk(scores, k)[0][..., -1, None])
    return scores.masked_fill(drop, NEG_INF)


class EpsilonCutoff(LogitsProcessor):
    """Truncation sampling (Hewitt et al. 2022): drop tokens with probability below epsilon."""

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1):
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon_cutoff={epsilon!r} is not allowed here: use a number in (0, 1)")
        self.epsilon = float(epsilon)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return _drop_below(scores, scores.softmax(dim=-1), self.epsilon, self.min_tokens_to_keep)


class EtaCutoff(LogitsProcessor):
    """Eta sampling (Hewitt et al. 2022): an entropy-dependent cutoff min(eta, sqrt(eta) * exp(-H))."""

    def __init__(self, epsilon: float, min_tokens_to_keep: int = 1):
        if not 0 < epsilon < 1:
            raise ValueError(f"eta_cutoff={epsilon!r} is not allowed here: use a number in (0, 1)")
        self.epsilon = float(epsilon)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        probs = scores.softmax(dim=-1)
        entropy = torch.distributions.Categorical(logits=scores).entropy()  # (B,)
        eps = torch.tensor(self.epsilon, device=scores.device)
        eta = torch.min(eps, torch.sqrt(eps) * torch.exp(-entropy))[..., None]
        return _drop_below(scores, probs, eta, self.min_tokens_to_keep)


class TopH(LogitsProcessor):
    """Top-H (Potraghloo et al. 2025): among the 100 most likely tokens, keep the most likely ones while their
    summed entropy terms -p log p stay <= top_h times the entropy of those 100 (the first always kept)."""

    def __init__(self, top_h: float):
        if not 0 < top_h <= 1:
            raise ValueError(f"top_h={top_h!r} is not allowed: use a number in (0, 1]")
        self.top_h = float(top_h)

    def __call__(self, input_ids, scores):
        return drop_beyond_entropy_share(scores, self.top_h)


TOP_H_CANDIDATES = 100  # transformers' cap on the candidates top-h looks at


def drop_beyond_entropy_share(scores: torch.Tensor, top_h) -> torch.Tensor:
    """Top-h's rule (`top_h` a float, or (B, 1) with one value per row)."""
    top_logits, top_idx = torch.topk(scores, min(TOP_H_CANDIDATES, scores.shape[-1]), dim=-1)  # (B, n), descending
    dist = torch.distributions.Categorical(logits=top_logits)
    probs = dist.probs
    tau = dist.entropy().unsqueeze(-1) * top_h  # (B, 1)
    selected = torch.cumsum(-probs * torch.log(probs), dim=-1) <= tau
    selected[:, 0] = True
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter(1, top_idx, selected)
    return scores.masked_fill(~keep, NEG_INF)
