"""Mirostat v1 and v2 (Basu et al. 2021, llama.cpp's mirostat / mirostat_tau / mirostat_eta): truncate each row so
that the surprise of the sampled tokens stays near a target tau, with a per-row state mu carried across steps.

The rules, as llama.cpp's mirostat and mirostat_v2 samplers apply them to one row (surprise = -log2 p, in bits):
- v2 keeps the candidates whose surprise under the softmax of the row is at most mu (at least one: the most
  likely);
- v1 estimates the Zipf exponent s_hat of the row from its m = 100 most likely candidates (a least-squares fit
  of log(p_i / p_i+1) against log((i + 2) / (i + 1)) over the first m - 1 neighbouring pairs), computes
  k = (e * 2 ** mu / (1 - n_vocab ** -e)) ** (1 / s_hat) with e = s_hat - 1, and keeps the int(k) most likely
  candidates (at least one); n_vocab is the model's vocabulary (`vocab_size_of`), the scores' width without a
  model;
- both then sample from the renormalised survivors, and mu -= eta * (surprise of the chosen token - tau); mu
  starts at 2 * tau.
Here the processor only truncates (sets -inf). The loop's sampler draws the token from the run's generator, then
calls `observe(tokens, scores)` with the processed scores the token was drawn from, and each row's mu is updated
from the chosen token's probability under their softmax. With llama.cpp's order mirostat is the last processor,
so those scores are its own output; in transformers' order only the watermark (which biases the green tokens)
and renormalize_logits (which changes no probability) follow it.

The arithmetic is llama.cpp's, in float32: log(p_i / p_i+1) from the probabilities (so a probability that
underflowed to 0 behaves as there), the pairs' sums accumulated in order (a cumulative sum), mu updated as
`mu - eta * (surprise - tau)`. The softmax is torch's: llama.cpp adds its terms one by one in float32, which over
SmolLM2's 49152 candidates moves its probabilities by up to ~5e-5 (relative), enough to put a token lying within
1e-4 bits of mu on the other side of the cut when mu reaches the dense tail (tests/goldens/llama_mirostat.py).
Candidates are the finite logits (llama.cpp's shrunken array).
Ties at v1's cut-off keep the lower token ids (a stable sort; llama.cpp's partial sort leaves them unspecified).
Where v1's k is not a representable int llama.cpp's float-to-int conversion is undefined behaviour: +inf (a flat
head, s_hat near 0, with 2 ** mu > n_vocab - 1) keeps one token on x86 and every candidate on ARM; here
it keeps every candidate (the formula's own answer); NaN (one candidate, or s_hat exactly 1) keeps one, as on both.

llama.cpp's chain with mirostat on is only logit_bias, the plain temperature (no dynamic temperature) and mirostat
(common/sampling.cpp): its top-k, top-p, min-p, typical, XTC, DRY, penalties and top-nσ are skipped. Here every
other processor a call sets still applies, transformers' default top_k=50 when sampling included: set top_k=0
(and leave the others at their neutral values) for llama.cpp's chain; under sampler_order="llama.cpp" a
UserWarning names the ones still on (param_checks.py).

The state is per row: mu is (B, 1), made at the first call from tau, and reset by `bind` (called before a run's
first step), so a processor object reused for a second run starts afresh. Beam search and speculative decoding
refuse mirostat (param_checks.py): they would update mu from steps that are replayed or thrown away.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..checks import check, is_int, is_real
from .base import NEG_INF, LogitsProcessor, ValueRepr

if TYPE_CHECKING:
    from ..params import GenerationParams

VERSIONS = (0, 1, 2)  # 0: off, 1: mirostat, 2: mirostat 2.0
HEAD = 100  # v1's m: the most likely candidates its Zipf fit reads (common/sampling.cpp passes 100)


def surprise_cut(probs: torch.Tensor, finite: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """v2's survivors: the candidates with -log2 p <= mu, else the most likely one.

    Args:
        probs: (B, V) float32 softmax of the row's candidates; finite: (B, V) bool, the candidates.
        mu: (B, 1) float32.
    Returns:
        (B, V) bool, the tokens kept.
    """
    keep = finite & (-torch.log2(probs) <= mu)  # llama.cpp removes the first (so every) candidate above mu
    top = torch.zeros_like(keep).scatter_(1, probs.argmax(-1, keepdim=True), True)  # (B, V): first maximum
    return torch.where(keep.any(-1, keepdim=True), keep, top)


def zipf_exponent(sorted_probs: torch.Tensor, n_candidates: torch.Tensor, head: int = HEAD) -> torch.Tensor:
    """v1's s_hat per row: sum(t_i * b_i) / sum(t_i ** 2) over the first min(head, n) - 1 pairs.

    t_i = log((i + 2) / (i + 1)), b_i = log(p_i / p_i+1) of the row's probabilities in descending order.

    Args:
        sorted_probs: (B, V) float32, each row descending (removed tokens, probability 0, last).
        n_candidates: (B, 1) the number of finite candidates per row.
    Returns:
        (B, 1) float32; NaN for a row of one candidate (0 / 0, as llama.cpp).
    """
    top = sorted_probs[:, :head]  # (B, M), M = min(head, V)
    i = torch.arange(top.shape[1] - 1, device=top.device)  # (M - 1,)
    t = torch.log((i + 2).float() / (i + 1).float())  # (M - 1,) as logf(float(i + 2) / float(i + 1))
    b = torch.log(top[:, :-1] / top[:, 1:])  # (B, M - 1); inf / NaN past the candidates, masked next
    used = i[None, :] < n_candidates - 1  # (B, M - 1): pairs of two candidates
    return in_order_sum(torch.where(used, t * b, 0.0)) / in_order_sum(torch.where(used, t * t, 0.0))


def in_order_sum(terms: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, 1) sums adding the terms left to right, as llama.cpp's float32 loop (a cumulative sum's end;
    a leading 0 changes nothing and makes N = 0 give 0)."""
    return torch.cat([terms.new_zeros(terms.shape[0], 1), terms], -1).cumsum(-1)[:, -1:]


def zipf_top_k(s_hat: torch.Tensor, mu: torch.Tensor, n_vocab: int, n_tokens: int) -> torch.Tensor:
    """v1's k per row: max(int((e * 2 ** mu / (1 - n_vocab ** -e)) ** (1 / s_hat)), 1) with e = s_hat - 1.

    Args:
        s_hat, mu: (B, 1) float32. n_vocab: the model's vocabulary. n_tokens: the scores' width V.
    Returns:
        (B, 1) float32 whole numbers in [1, V]: +inf keeps every token, NaN one (the module docstring).
    """
    e = s_hat - 1
    k = (e * torch.pow(2.0, mu) / (1 - torch.pow(float(n_vocab), -e))) ** (1 / s_hat)  # (B, 1)
    k = torch.nan_to_num(k, nan=1.0, posinf=float(n_tokens))
    return k.floor().clamp(1.0, float(n_tokens))  # int(k) truncates; k >= 0 here


def zipf_cut(scores: torch.Tensor, probs: torch.Tensor, finite: torch.Tensor, mu: torch.Tensor,
             n_vocab: int) -> torch.Tensor:
    """v1's survivors: the k most likely candidates of each row, k from its Zipf exponent and mu.

    Args:
        scores: (B, V) float32; probs: (B, V) their softmax; finite: (B, V) bool, the candidates.
        mu: (B, 1) float32. n_vocab: the model's vocabulary.
    Returns:
        (B, V) bool, the tokens kept.
    """
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, V); ties: lower id first
    n_candidates = finite.sum(-1, keepdim=True)  # (B, 1)
    k = zipf_top_k(zipf_exponent(probs.gather(1, order), n_candidates), mu, n_vocab, scores.shape[-1])
    rank = torch.arange(scores.shape[-1], device=scores.device, dtype=torch.float32)  # (V,)
    kept_sorted = rank[None, :] < k  # (B, V), in descending order
    return torch.zeros_like(kept_sorted).scatter_(1, order, kept_sorted) & finite


class Mirostat(ValueRepr, LogitsProcessor):
    """Mirostat v1 or v2 with per-row state mu (see the module docstring); one version per row in a sweep."""

    stateful = True  # mu carries from step to step

    def __init__(self, version: int, tau: float, eta: float, n_vocab: int | None = None):
        """n_vocab: v1's vocabulary size (the model's); None: the scores' width."""
        check(is_int(version) and version in (1, 2), "mirostat", version, "use 1 (mirostat) or 2 (mirostat 2.0)")
        check(is_real(tau) and math.isfinite(tau) and tau > 0, "mirostat_tau", tau, "use a finite number > 0")
        check(is_real(eta) and math.isfinite(eta) and eta > 0, "mirostat_eta", eta, "use a finite number > 0")
        self.versions = [int(version)]  # per configuration of a sweep (0: off); which cuts to compute
        self.version = torch.tensor([[int(version)]], dtype=torch.long)  # (1, 1), or (R, 1) per row
        self.tau = torch.tensor([[float(tau)]], dtype=torch.float32)  # (1, 1), or (R, 1)
        self.eta = torch.tensor([[float(eta)]], dtype=torch.float32)  # (1, 1), or (R, 1)
        self.n_vocab = None if n_vocab is None else int(n_vocab)
        self.mu: torch.Tensor | None = None  # (B, 1) float32 per-row state, made at the first call

    def bind(self, draws: Any) -> None:
        """Mirostat draws nothing (the loop's sampler does); a run's start resets the state."""
        self.mu = None

    def _on(self, device: torch.device) -> None:
        if self.tau.device != device:
            self.version, self.tau, self.eta = self.version.to(device), self.tau.to(device), self.eta.to(device)

    def _state(self, scores: torch.Tensor) -> torch.Tensor:
        rows = scores.shape[0]
        if self.mu is None:
            self.mu = (2 * self.tau).expand(rows, 1).clone()  # (B, 1), llama.cpp's 2.0f * tau
        if self.mu.shape[0] != rows:
            raise RuntimeError(f"mirostat holds the state of {self.mu.shape[0]} rows but got scores of {rows}: "
                               "build one processor per run (bind resets it)")
        return self.mu

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._on(scores.device)
        mu = self._state(scores)
        finite = scores != NEG_INF  # (B, V): the candidates
        probs = torch.softmax(scores, dim=-1)  # (B, V)
        keep = finite  # rows without mirostat keep every candidate
        if 2 in self.versions:
            keep = torch.where(self.version == 2, surprise_cut(probs, finite, mu), keep)
        if 1 in self.versions:
            n_vocab = self.n_vocab if self.n_vocab is not None else scores.shape[-1]
            keep = torch.where(self.version == 1, zipf_cut(scores, probs, finite, mu, n_vocab), keep)
        out = scores.masked_fill(~keep, NEG_INF)
        return torch.where(self.version == 0, scores, out)  # rows without mirostat: their own bits

    def observe(self, tokens: torch.Tensor, scores: torch.Tensor) -> None:
        """mu -= eta * (-log2 p(token) - tau) per row, p under softmax(scores) (B, V); `tokens` (B,)."""
        if self.mu is None:
            raise RuntimeError("mirostat.observe came before its first call: nothing was truncated yet")
        chosen = torch.softmax(scores, dim=-1).gather(1, tokens[:, None])  # (B, 1)
        updated = self.mu - self.eta * (-torch.log2(chosen) - self.tau)
        self.mu = torch.where(self.version == 0, self.mu, updated)  # rows without mirostat: state ignored

    @classmethod
    def for_rows(cls, built: list["Mirostat | None"], rows_per_config: int, device) -> LogitsProcessor:
        """Configuration c's version, tau and eta on its rows (v1 beside v2 beside off); rows of configurations
        without mirostat pass through unchanged and their mu never moves."""
        used = [p for p in built if p is not None]
        row = cls(1, 1.0, 1.0, used[0].n_vocab)

        def col(values, dtype):
            return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(rows_per_config)[:, None]

        row.versions = [p.versions[0] if p is not None else 0 for p in built]
        row.version = col(row.versions, torch.long)  # (R, 1)
        row.tau = col([float(p.tau.reshape(())) if p is not None else 1.0 for p in built], torch.float32)  # (R, 1)
        row.eta = col([float(p.eta.reshape(())) if p is not None else 0.0 for p in built], torch.float32)  # (R, 1)
        return row


def build_mirostat(p: "GenerationParams", model: Any) -> LogitsProcessor | None:
    """Mirostat(...), or None when mirostat == 0 (off)."""
    if p.mirostat == 0:
        return None
    from ..params import vocab_size_of  # params.py imports the processors package: no import back at load time

    return Mirostat(p.mirostat, p.mirostat_tau, p.mirostat_eta, vocab_size_of(model) if model is not None else None)


def check_mirostat(p: "GenerationParams") -> None:
    """Types and ranges of mirostat, mirostat_tau, mirostat_eta."""
    check(is_int(p.mirostat) and p.mirostat in VERSIONS, "mirostat", p.mirostat,
          "use 0 (off), 1 (mirostat) or 2 (mirostat 2.0)")
    check(is_real(p.mirostat_tau) and math.isfinite(p.mirostat_tau) and p.mirostat_tau > 0, "mirostat_tau",
          p.mirostat_tau, "use a finite number > 0 (the target surprise, in bits)")
    check(is_real(p.mirostat_eta) and math.isfinite(p.mirostat_eta) and p.mirostat_eta > 0, "mirostat_eta",
          p.mirostat_eta, "use a finite number > 0 (mu's learning rate)")
