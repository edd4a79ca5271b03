"""Logits processors: one small class each, `__call__(input_ids, scores) -> scores`, never in place.

The math of each class is the math of the transformers processor of the same name, so that the same
parameters give the same tokens. `build_processors` assembles them in the order recorded in
`GenerationParams.processor_order` (transformers' order by default): penalties and length constraints
first, then, only when sampling, temperature before the truncation warpers.

Shapes: `input_ids` is (B, T) — the whole sequence so far, left padding included, exactly what generate
passes — and `scores` is (B, V) float32.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .params import GenerationParams

NEG_INF = -math.inf


class LogitsProcessor:
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, torch.Tensor))
        return f"{type(self).__name__}({args})"


class RepetitionPenalty(LogitsProcessor):
    """CTRL's penalty (Keskar et al. 2019): divide positive / multiply negative logits of seen tokens.

    `prompt_start` (B,) is each row's count of left-padding slots: pad tokens are not "seen" text.
    """

    def __init__(self, penalty: float, prompt_start: torch.Tensor | None = None):
        if not penalty > 0:
            raise ValueError(f"repetition_penalty={penalty!r} is not allowed: use a number > 0")
        self.penalty = float(penalty)
        self.prompt_start = prompt_start

    def __call__(self, input_ids, scores):
        vocab = scores.shape[-1]
        if self.prompt_start is not None:
            slots = torch.arange(input_ids.shape[1], device=input_ids.device)
            input_ids = input_ids.masked_fill(slots[None, :] < self.prompt_start[:, None], vocab)
        input_ids = input_ids.clamp(max=vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))  # (B, V+1): column V absorbs masked ids
        seen = torch.gather(padded, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return padded.scatter(1, input_ids, seen)[..., :vocab]


class NoRepeatNGram(LogitsProcessor):
    """Ban every token that would complete an n-gram already present in the row (Paulus et al. 2017)."""

    def __init__(self, ngram_size: int):
        if not (isinstance(ngram_size, int) and ngram_size > 0):
            raise ValueError(f"no_repeat_ngram_size={ngram_size!r} is not allowed: use an integer > 0")
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        n, length = self.ngram_size, input_ids.shape[-1]
        if length < n:
            return scores
        prefix = input_ids[:, length + 1 - n:]  # (B, n-1): the n-gram the next token would complete
        windows = input_ids.unfold(1, n, 1)  # (B, W, n)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W)
        vocab = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


class MinLength(LogitsProcessor):
    """Forbid EOS while the whole sequence (prompt included) is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id: Sequence[int]):
        self.min_length = min_length
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores
        out = scores.clone()
        out[:, list(self.eos_token_id)] = NEG_INF
        return out


class MinNewTokens(LogitsProcessor):
    """Forbid EOS until `min_new_tokens` tokens follow the (padded) prompt of length `prompt_length`."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_id: Sequence[int]):
        self.prompt_length = prompt_length
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores
        out = scores.clone()
        out[:, list(self.eos_token_id)] = NEG_INF
        return out


class Temperature(LogitsProcessor):
    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} is not allowed while sampling: use a number > 0, "
                             "or do_sample=False for greedy decoding")
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        return scores / self.temperature


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
    (1 - top_p: a float, or a (B, 1) tensor with one value per row)."""
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


class ProcessorList(list):
    """Apply processors in order."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


def processor_factories(p: GenerationParams, prompt_length: int, prompt_start: torch.Tensor | None,
               keep: int) -> dict[str, Callable[[], LogitsProcessor | None]]:
    """For each processor name: a factory returning the processor, or None when its setting is neutral."""
    eos = p.eos_token_id
    sampling = p.do_sample
    return {
        "repetition_penalty": lambda: RepetitionPenalty(p.repetition_penalty, prompt_start)
        if p.repetition_penalty != 1.0 else None,
        "no_repeat_ngram_size": lambda: NoRepeatNGram(p.no_repeat_ngram_size) if p.no_repeat_ngram_size > 0 else None,
        "min_length": lambda: MinLength(p.min_length, eos) if p.min_length > 0 and eos else None,
        "min_new_tokens": lambda: MinNewTokens(prompt_length, p.min_new_tokens, eos)
        if p.min_new_tokens > 0 and eos else None,
        "temperature": lambda: Temperature(p.temperature) if sampling and p.temperature != 1.0 else None,
        "top_k": lambda: TopK(p.top_k, keep) if sampling and p.top_k else None,
        "top_p": lambda: TopP(p.top_p, keep) if sampling and p.top_p < 1.0 else None,
        "min_p": lambda: MinP(p.min_p, keep) if sampling and p.min_p is not None else None,
        "typical_p": lambda: Typical(p.typical_p, keep) if sampling and p.typical_p < 1.0 else None,
        "epsilon_cutoff": lambda: EpsilonCutoff(p.epsilon_cutoff, keep)
        if sampling and 0 < p.epsilon_cutoff < 1 else None,
        "eta_cutoff": lambda: EtaCutoff(p.eta_cutoff, keep) if sampling and 0 < p.eta_cutoff < 1 else None,
    }


def build_processors(p: GenerationParams, prompt_length: int,
                     prompt_start: torch.Tensor | None = None) -> ProcessorList:
    """The processors `p` asks for, in `p.processor_order`.

    Args:
        p: resolved parameters.
        prompt_length: padded prompt length T (min_new_tokens counts from there, as generate does).
        prompt_start: (B,) number of left-padding slots per row (the repetition penalty skips them).
    """
    # Beam sampling keeps one more candidate than there are EOS ids, so a beam can always continue.
    keep = (len(p.eos_token_id) + 1 if p.eos_token_id else 2) if p.num_beams > 1 else 1
    factories = processor_factories(p, prompt_length, prompt_start, keep)
    built = (factories[name]() for name in p.processor_order)
    return ProcessorList(proc for proc in built if proc is not None)
