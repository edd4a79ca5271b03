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

The arithmetic is llama.cpp's, in float32: log(p_i / p_i+1) from the probabilities (the softmax's normaliser
cancels in the ratio, so they are taken as exp(s_i - s_max) of the head alone; one that underflows to 0 behaves
as there), the pairs' sums accumulated in order (a cumulative sum), mu updated as `mu - eta * (surprise - tau)`;
v2's test -log2 p <= mu is made as p >= 2 ** -mu (the same but within an ulp of the bound). The softmax is
torch's: llama.cpp adds its terms one by one in float32, which over
SmolLM2's 49152 candidates moves its probabilities by up to ~5e-5 (relative), enough to put a token lying within
1e-4 bits of mu on the other side of the cut when mu reaches the dense tail (tests/goldens/llama_mirostat.py).
Candidates are the finite logits (llama.cpp's shrunken array).
Ties at v1's cut-off keep the lower token ids (as a stable sort orders them; llama.cpp's partial sort leaves them
unspecified).
Where v1's k is not a representable int llama.cpp's float-to-int conversion is undefined behaviour: +inf (a flat
head, s_hat near 0, with 2 ** mu > n_vocab - 1) keeps one token on x86 and every candidate on ARM; here
it keeps every candidate (the formula's own answer); NaN (one candidate, or s_hat exactly 1) keeps one, as on both.

llama.cpp's chain with mirostat on is only logit_bias, the plain temperature (no dynamic temperature) and mirostat
(common/sampling.cpp): its top-k, top-p, min-p, typical, XTC, DRY, penalties and top-nσ are skipped. Here every
other processor a call sets still applies, transformers' default top_k=50 when sampling included: set top_k=0
(and leave the others at their neutral values) for llama.cpp's chain; under sampler_order="llama.cpp" a
UserWarning names the ones still on (param_checks.py).

Cost (bench/processor_cost.py): v1 takes a top-k of the row (the fit's 100, or k + 1 where k reaches past them)
instead of sorting it, and one device sync per step for the path that follows; v2 one softmax and two
full-width passes; observe takes the sampler's softmax instead of making its own.

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


def surprise_cut(scores: torch.Tensor, probs: torch.Tensor, mu: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """v2: keep the candidates with -log2 p <= mu, else the most likely one; other rows unchanged.

    -log2 p <= mu is p >= 2 ** -mu: one comparison per token, no log over the row (the two differ only where
    float32 rounding puts p within an ulp of the bound). 2 ** -mu is kept above 0 (the smallest subnormal), so
    a removed token (p = 0) never passes. The most likely token (the first of tied maxima) is always put back:
    on a row where something passed it passed too, so that only matters where nothing did.

    Args:
        scores: (B, V) float32; probs: (B, V) their softmax, overwritten (it holds the result: one fewer
            fresh 6 MB tensor, whose page faults cost on CPU); mu: (B, 1) float32.
        rows: (B, 1) bool, the rows mirostat v2 truncates (the others get bound 0: every token passes).
    Returns:
        (B, V) new scores (in `probs`' storage).
    """
    bound = torch.where(rows, torch.exp2(-mu).clamp(min=torch.finfo(torch.float32).smallest_normal * 2 ** -23),
                        0.0)  # (B, 1)
    first = probs.max(-1, keepdim=True).indices  # (B, 1): the first maximum
    out = torch.where(probs >= bound, scores, scores.new_tensor(NEG_INF), out=probs)  # (B, V); the mask is made first
    return out.scatter_(1, first, scores.gather(1, first))


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


def zipf_cut(scores: torch.Tensor, mu: torch.Tensor, n_vocab: int, rows: torch.Tensor,
             head: int = HEAD) -> tuple[torch.Tensor, int]:
    """v1: keep the k most likely candidates of each row (ties at the cut: the lower ids), k from its Zipf
    exponent and mu.

    The fit reads only the row's HEAD most likely candidates, so a top-k finds them (not a sort of the row),
    `head` of them (>= HEAD: a caller expecting a larger k asks for more); where k reaches past those a second
    top-k takes the largest k + 1. The row is rebuilt from them: -inf everywhere, the first k put back. Where
    the k-th score ties with the next one (which of the tied tokens stay is then decided by id, and a top-k's
    order among ties is unspecified), or k is a large part of the row, the kept set is found on the whole row
    (`keep_most_likely`).

    Args:
        scores: (B, V) float32; mu: (B, 1) float32. n_vocab: the model's vocabulary.
        rows: (B, 1) bool, the rows mirostat v1 truncates; the others' results are meaningless (k = 1 there,
            so that their mu does not choose the path) and the caller replaces them.
    Returns:
        ((B, V) new scores, the largest k over `rows`).
    """
    V = scores.shape[-1]
    head = min(max(head, HEAD), V)
    top_scores, top_ids = torch.topk(scores, head, dim=-1)  # (B, K) descending
    n_head = (top_scores[:, :HEAD] != NEG_INF).sum(-1, keepdim=True)  # (B, 1): min(candidates, HEAD)
    # The fit reads ratios p_i / p_i+1 only: exp(s_i - s_max) has them without the softmax's normaliser (no
    # pass over the row); it underflows to 0 where p_i would, to within the normaliser's factor (<= V).
    head_probs = torch.exp(top_scores[:, :HEAD] - top_scores[:, :1])  # (B, M)
    k = zipf_top_k(zipf_exponent(head_probs, n_head), mu, n_vocab, V)  # (B, 1) float
    k = torch.where(rows, k, 1.0).long()  # (B, 1) in [1, V]
    k_max = int(k.max())  # one device sync per step: the path below depends on it
    if head <= k_max < V // 8:  # past the head: the top k_max + 1 (~4 ms at 32 x 49152 for k 400)
        head = k_max + 1
        top_scores, top_ids = torch.topk(scores, head, dim=-1)  # (B, K)
    if k_max < head:
        kth = top_scores.gather(1, k - 1)  # (B, 1)
        tie = (top_scores.gather(1, k) == kth) & (kth != NEG_INF)  # the k-th ties with the (k+1)-th
        if not bool(tie.any()):
            rank = torch.arange(head, device=scores.device)  # (K,)
            kept = torch.where(rank < k, top_scores, top_scores.new_tensor(NEG_INF))  # (B, K)
            return torch.full_like(scores, NEG_INF).scatter_(1, top_ids, kept), k_max
    return keep_most_likely(scores, k), k_max


def keep_most_likely(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, V) scores with each row's k (B, 1) highest kept (ties at the cut: the lower ids), the rest -inf.

    The k-th highest score per row comes from a top-k of the largest k (a sort where k is a large part of
    the row); every score above it stays, and of those equal to it the first (k - the ones above) by id.
    """
    V = scores.shape[-1]
    k_max = int(k.max())
    if k_max > V // 8:
        values = torch.sort(scores, dim=-1, descending=True).values  # (B, V)
    else:
        values = torch.topk(scores, k_max, dim=-1).values  # (B, K), descending
    kth = values.gather(1, k - 1)  # (B, 1)
    above = scores > kth  # (B, V)
    tied = scores == kth  # (B, V)
    room = k - above.sum(-1, keepdim=True)  # (B, 1): how many of the tied ones fit
    keep = above | (tied & (tied.cumsum(-1) <= room))
    return torch.where(keep, scores, scores.new_tensor(NEG_INF))


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
        self.head = HEAD  # v1's top-k size for the next step (speed only: the result does not depend on it)

    def bind(self, draws: Any) -> None:
        """Mirostat draws nothing (the loop's sampler does); a run's start resets the state."""
        self.mu = None
        self.head = HEAD

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
        out = scores
        if 1 in self.versions:
            n_vocab = self.n_vocab if self.n_vocab is not None else scores.shape[-1]
            v1, k_max = zipf_cut(scores, mu, n_vocab, self.version == 1, self.head)
            # the next step's k is near this one's: ask its top-k for that many (in steps of 64) from the start
            wide = -(-(k_max + 1) // 64) * 64
            self.head = wide if HEAD <= k_max and wide < scores.shape[-1] // 8 else HEAD
            out = v1 if set(self.versions) == {1} else torch.where(self.version == 1, v1, scores)
        if 2 in self.versions:  # rows of other versions come back unchanged
            v2 = surprise_cut(scores, torch.softmax(scores, dim=-1), mu, self.version == 2)
            out = v2 if out is scores else torch.where(self.version == 2, v2, out)  # v2 beside v1 rows
        return out

    def observe(self, tokens: torch.Tensor, scores: torch.Tensor, probs: torch.Tensor | None = None) -> None:
        """mu -= eta * (-log2 p(token) - tau) per row, p under softmax(scores) (B, V); `tokens` (B,).

        probs: softmax(scores) where the sampler already computed it (the loop hands it over: the same bits,
        one (B, V) softmax fewer per step).
        """
        if self.mu is None:
            raise RuntimeError("mirostat.observe came before its first call: nothing was truncated yet")
        if probs is None:
            probs = torch.softmax(scores, dim=-1)
        chosen = probs.gather(1, tokens[:, None])  # (B, 1)
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
