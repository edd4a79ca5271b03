"""DRY, "don't repeat yourself" (llama.cpp's dry_*): penalise the token that would extend a repeat of an earlier
run of the text, exponentially in the run's length.

The rule, as llama.cpp's dry sampler applies it to one row (src/llama-sampler.cpp, llama_sampler_dry_apply):
- the history is the row's last N = min(length, dry_penalty_last_n) tokens (-1 here: all of them); nothing
  happens when N <= dry_allowed_length;
- sequence breakers cut repeats: scanning back from the last token, the first token that heads a breaker (a
  token whose text contains a breaker string, or one whose text ends with the start of a breaker string that the
  following tokens complete, see `resolve_breakers`) limits every repeat length to the number of tokens after
  the breaker (`rep_limit`); nothing happens when that is below dry_allowed_length;
- for each earlier position j of the window, the repeat length at j is the length of the longest run ending at
  j that equals the run ending at the last token (both inside the window), capped at rep_limit; when it is >=
  dry_allowed_length, the token after j would extend the repeat: it gets that length, the longest over every j
  where it follows;
- each such token, unless it is a single-token breaker, has `multiplier * base ** (length - allowed_length)`
  subtracted from its logit (the exponent capped at 88.7228391 / log(base) so the power stays finite in float;
  llama.cpp's power is a double, the penalty a float, as here).

History: what llama.cpp's sampler has accepted, which in llama.cpp's server is the prompt and every generated
token (server-context.cpp accepts the prompt's tokens into the sampler before the first step). So DRY reads the
whole `input_ids` row, prompt included, without its left padding (`prompt_start`). dry_penalty_last_n = -1 means
the whole history (llama.cpp's older "context size"; in llama-cpp-python 0.3.36 a negative value turns the sampler
off and its server refuses one), 0 turns DRY off.

Cost: the repeat lengths are the suffix-match lengths S[j] (longest common suffix of the history up to j and the
whole history), computed for every position at once, with no loop over the sequence. A first call (or a history
this processor has not seen grow) computes them from scratch, by comparing ever longer spans of the candidate
positions only (or, for text that loops, by prefix doubling); a call whose history extends the previous call's
by a few tokens updates them in O(B * T): S'[j] = S[j - 1] + 1 where the new last token equals token j, else 0.
The cache is keyed by the previous history's ids (checked equal), so a beam reorder, a speculative prefix or
another batch falls back to the full computation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..checks import check, is_int, is_real
from .base import LogitsProcessor, ValueRepr
from .dry_breakers import BreakerTable, _BreakerTensors

if TYPE_CHECKING:
    from ..params import GenerationParams

FLOAT_MAX_LOG = np.float32(88.7228391)  # log of float's max: the exponent cap's numerator, as llama.cpp
MAX_INCREMENT = 8  # tokens appended since the cached history that are folded in one by one (else: recompute)


# ---------------------------------------------------------------------------------------------- repeats


def suffix_matches(ids: torch.Tensor, start: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """(B, T) long: S[b, j] = the length of the longest run ending at position j that equals the run ending at the
    last position, both inside [start[b], T), at most cap[b]; S[:, T - 1] = 0 (unused).

    Only the positions holding the last token can match; their runs are compared over spans of doubling width,
    dropping a position once its run ends: the work is about the sum of the runs' lengths, with one host sync per
    span. Text that loops makes that sum quadratic; once a span would cost more than a pass over the batch,
    `suffix_matches_by_ranks` (O(B T log T) whatever the text) takes over.

    Args:
        ids: (B, T) long; start: (B,) long, the first real position of each row; cap: (B, 1) long (a large value
            for none).
    """
    batch, length = ids.shape
    matches = torch.zeros((batch, length), dtype=torch.long, device=ids.device)
    if length < 2:
        return matches
    positions = torch.arange(length - 1, device=ids.device)
    hits = (ids[:, :-1] == ids[:, -1:]) & (positions[None, :] >= start[:, None]) & (cap > 0)  # (B, T - 1)
    rows, cols = hits.nonzero(as_tuple=True)  # (K,)
    matches[rows, cols] = 1
    done, span = 1, 1  # every remaining candidate matches `done` tokens so far
    while rows.numel() > 0:
        if rows.numel() * span > batch * length:
            return suffix_matches_by_ranks(ids, start, cap)
        steps = done + torch.arange(span, device=ids.device)  # (span,) offsets back from j and from the end
        back = cols[:, None] - steps  # (K, span) positions before j
        inside = back >= start[rows][:, None]
        ends = (length - 1 - steps).clamp(min=0)  # (span,) positions before the last token
        same = ids[rows[:, None], back.clamp(min=0)] == ids[rows[:, None], ends]  # (K, span)
        run = (same & inside).long().cumprod(-1).sum(-1)  # (K,) matching tokens in this span, from its start
        matches[rows, cols] += run
        go_on = (run == span) & (matches[rows, cols] < cap[rows, 0])
        rows, cols = rows[go_on], cols[go_on]
        done, span = done + span, span * 2
    return torch.minimum(matches, cap)


def suffix_matches_by_ranks(ids: torch.Tensor, start: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """`suffix_matches` by prefix doubling: rank[k][b, j] names the block of 2 ** k tokens ending at j (equal
    blocks, equal ranks; padding slots are tokens of their own, so a block reaching into them matches nothing),
    then each run is found by binary lifting from the longest block down. log2(T) sorts of B * T keys."""
    batch, length = ids.shape
    device = ids.device
    positions = torch.arange(length, device=device)
    flat = torch.arange(batch, device=device)[:, None] * length + positions[None, :]  # (B, T) distinct numbers
    tokens = torch.where(positions[None, :] >= start[:, None], ids, -1 - flat)  # padding: tokens of their own
    ranks = [torch.unique(tokens, return_inverse=True)[1]]  # (B, T) dense ranks of single tokens
    while 2 ** len(ranks) <= length:
        half = 2 ** (len(ranks) - 1)
        right = ranks[-1]
        count = int(right.max()) + 2  # ranks 0..count-2, and count-1 for "no block" (before position 0)
        left = torch.nn.functional.pad(right[:, :-half], (half, 0), value=count - 1)  # the block ending at j - half
        key = left * count + right
        ranks.append(torch.unique(key, return_inverse=True)[1])  # blocks that begin before 0: never compared
    matches = torch.zeros((batch, length), dtype=torch.long, device=device)
    mine = positions[None, :-1].expand(batch, -1)  # (B, T - 1) the positions j
    for k in range(len(ranks) - 1, -1, -1):  # greedy from the longest block: a matching run is a prefix-closed set
        size = 2 ** k
        end_j = mine - matches[:, :-1]  # (B, T - 1) the next block ends here on j's side
        end_last = length - 1 - matches[:, :-1]  # and here on the last token's side
        fits = end_j - size + 1 >= 0
        same = ranks[k].gather(1, end_j.clamp(min=0)) == ranks[k].gather(1, end_last)
        matches[:, :-1] += torch.where(fits & same, size, 0)
    matches[:, -1] = 0
    return torch.minimum(matches, cap)


def extend_suffix_matches(matches: torch.Tensor, ids: torch.Tensor, start: torch.Tensor,
                          cap: torch.Tensor) -> torch.Tensor:
    """`suffix_matches(ids, ...)` from `matches`, those of ids[:, :-1] (B, T - 1): a run that ends at j and equals
    the run ending at the new last token is the run ending at j - 1 (equal to the one ending at the old last
    token) plus token j, when token j is the new last token."""
    batch, length = ids.shape
    positions = torch.arange(length - 1, device=ids.device)
    same = (ids[:, :-1] == ids[:, -1:]) & (positions[None, :] >= start[:, None])  # (B, T - 1)
    before = torch.nn.functional.pad(matches[:, :-1], (1, 0))  # (B, T - 1): the run ending at j - 1
    grown = torch.where(same, torch.minimum(before + 1, cap), 0)
    return torch.nn.functional.pad(grown, (0, 1))  # (B, T): the last position's own entry, unused


class _SuffixCache:
    """The last history's ids and suffix matches; repr is constant so that it never tells processors apart."""

    def __init__(self):
        self.ids: torch.Tensor | None = None  # (B, T) a copy: the loop's ids are a view of a buffer it fills
        self.matches: torch.Tensor | None = None  # (B, T)
        self.start: torch.Tensor | None = None  # (B,)

    def __repr__(self) -> str:
        return "_SuffixCache()"

    def lookup(self, ids: torch.Tensor, start: torch.Tensor, cap: torch.Tensor, compute) -> torch.Tensor:
        """Suffix matches of `ids`: from the cache when `ids` extends the cached history by a few tokens (or is
        it), else from `compute` (the full computation)."""
        old = self.ids
        grown = ids.shape[1] - (0 if old is None else old.shape[1])
        if (old is not None and old.shape[0] == ids.shape[0] and 0 <= grown <= MAX_INCREMENT
                and old.device == ids.device and torch.equal(self.start, start)
                and torch.equal(ids[:, :old.shape[1]], old)):
            matches = self.matches
            for end in range(old.shape[1] + 1, ids.shape[1] + 1):
                matches = extend_suffix_matches(matches, ids[:, :end], start, cap)
        else:
            matches = compute(ids, start, cap)
        self.ids, self.matches, self.start = ids.clone(), matches, start
        return matches


# ---------------------------------------------------------------------------------------------- the processor


def _max_exponent(base: float) -> int:
    """llama.cpp's cap on the exponent (0: none): FLOAT_MAX_LOG / log(base) in float, truncated."""
    base32 = np.float32(base)
    return int(FLOAT_MAX_LOG / np.log(base32)) if base32 > np.float32(1.000001) else 0


class DRY(ValueRepr, LogitsProcessor):
    """Subtract `multiplier * base ** (length - allowed_length)` from each token that would extend a repeat of
    `length >= allowed_length` tokens (see the module docstring for the exact rule)."""

    def __init__(self, multiplier: float, base: float, allowed_length: int, penalty_last_n: int,
                 breakers: BreakerTable | None = None, prompt_start: torch.Tensor | None = None,
                 used: Sequence[bool] | None = None):
        """breakers: the resolved table (None: no breakers); prompt_start: (B,) left-padding slots per row;
        used: per row, whether it uses DRY (a batched sweep), None: every row does."""
        check(is_real(multiplier) and math.isfinite(multiplier) and multiplier > 0, "dry_multiplier", multiplier,
              "use a finite number > 0 (0 turns DRY off)")
        check(is_real(base) and math.isfinite(base) and base >= 1, "dry_base", base, "use a finite number >= 1")
        check(is_int(allowed_length) and allowed_length >= 0, "dry_allowed_length", allowed_length,
              "use an integer >= 0")
        check(is_int(penalty_last_n) and (penalty_last_n == -1 or penalty_last_n > 0), "dry_penalty_last_n",
              penalty_last_n, "use an integer > 0, or -1 for the whole history (0 turns DRY off)")
        self.multiplier = torch.tensor([[float(multiplier)]], dtype=torch.float32)  # (1, 1)
        self.base = torch.tensor([[float(base)]], dtype=torch.float32)  # (1, 1)
        self.allowed_length = torch.tensor([[int(allowed_length)]])  # (1, 1) long
        self.penalty_last_n = torch.tensor([[int(penalty_last_n)]])  # (1, 1) long; -1: the whole history
        self.max_exponent = torch.tensor([[_max_exponent(base)]])  # (1, 1) long; 0: uncapped
        self.breakers = breakers
        self.prompt_start = prompt_start
        self.used = None if used is None else [bool(u) for u in used]
        self._lookup: _BreakerTensors | None = None
        self._cache = _SuffixCache()

    def _on(self, device: torch.device, vocab: int) -> None:
        if self.multiplier.device != device:
            for name in ("multiplier", "base", "allowed_length", "penalty_last_n", "max_exponent"):
                setattr(self, name, getattr(self, name).to(device))
        if self._lookup is None or self._lookup.device != device or self._lookup.vocab != vocab:
            self._lookup = _BreakerTensors(self.breakers, vocab, device)

    def _window(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(first real position (B,), first window position (B,), window size (B,)) of each row."""
        batch, length = input_ids.shape
        device = input_ids.device
        real = (torch.zeros(batch, dtype=torch.long, device=device) if self.prompt_start is None
                else self.prompt_start.to(device).long())
        available = length - real  # (B,)
        last_n = self.penalty_last_n[:, 0].expand(batch)
        size = torch.where(last_n < 0, available, torch.minimum(available, last_n))  # (B,) llama.cpp's N
        return real, length - size, size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        batch, vocab = scores.shape
        length = input_ids.shape[1]
        self._on(scores.device, vocab)
        ids = input_ids.to(scores.device)
        real, start, size = self._window(ids)
        if length < 2:  # no earlier position to repeat
            return scores
        positions = torch.arange(length, device=ids.device)  # (T,)
        allowed = self.allowed_length.expand(batch, 1)  # (B, 1)

        # the nearest breaker from the end inside the window limits the repeat length
        breaks = self._lookup.match_lengths(ids)  # (B, T)
        breaks = torch.where(positions[None, :] >= start[:, None], breaks, -1)
        nearest = torch.where(breaks >= 0, positions[None, :], -1).max(-1, keepdim=True).values  # (B, 1)
        tail = breaks.gather(1, nearest.clamp(min=0))  # (B, 1)
        rep_limit = torch.where(nearest >= 0, length - 1 - nearest - tail, size[:, None])  # (B, 1)
        row_on = (size[:, None] > allowed) & (rep_limit >= allowed)  # (B, 1) llama.cpp's two early returns
        if self.used is not None:
            if self._lookup.used_rows is None:
                self._lookup.used_rows = torch.tensor(self.used, dtype=torch.bool, device=ids.device)  # (R,)
            row_on = row_on & self._lookup.used_rows[:, None]

        # repeat lengths: the run ending at j that equals the one ending at the last token, inside the window
        no_cap = torch.full_like(self.penalty_last_n, length)
        cap = torch.where(self.penalty_last_n > 0, self.penalty_last_n, no_cap).expand(batch, 1)  # (B, 1)
        matches = self._cache.lookup(ids, real, cap, suffix_matches)  # (B, T)
        repeat = torch.minimum(torch.minimum(matches, positions[None, :] - start[:, None] + 1), rep_limit)
        counts = (positions[None, :-1] >= start[:, None]) & (repeat[:, :-1] >= allowed) & row_on  # (B, T - 1)

        # each token after such a j: the longest repeat it would extend, through a (B, V) buffer of -1s kept
        # between calls (filling B * V entries per step would cost more than the rest): set, read, reset
        following = ids[:, 1:].clamp(max=vocab - 1)  # (B, T - 1)
        longest = self._lookup.longest_buffer(batch)
        longest.scatter_reduce_(1, following, torch.where(counts, repeat[:, :-1], -1).int(), "amax")
        extends = longest.gather(1, following)  # (B, T - 1): the token's own longest repeat (or -1)
        longest.scatter_(1, following, -1)  # every entry back to -1
        penalised = (extends >= 0) & ~self._lookup.single[following]

        exponent = (extends - allowed).clamp(min=0)
        exponent = torch.where((self.max_exponent > 0) & (exponent > self.max_exponent), self.max_exponent, exponent)
        power = torch.pow(self.base.double(), exponent.double())  # (B, T - 1): a double, as C++'s pow(float, int)
        penalty = (self.multiplier.double() * power).float()  # the float llama.cpp subtracts
        old = scores.gather(1, following)
        # every entry of one token writes the same value, so repeated indices agree
        return scores.scatter(1, following, torch.where(penalised, old - penalty, old))

    @classmethod
    def for_rows(cls, built: list["DRY | None"], rows_per_config: int, device) -> LogitsProcessor:
        """Configuration c's multiplier, base, allowed length and window on its rows; rows of configurations
        without DRY pass through unchanged (a row mask). The sequence breakers must be the same for all."""
        used = [p for p in built if p is not None]
        tables = {repr(p.breakers) for p in used}
        check(len(tables) == 1, "dry_sequence_breakers", sorted(tables),
              "use the same breakers in every configuration of one batched sweep")
        first = used[0]
        row = cls(1.0, 1.0, 0, -1, first.breakers, first.prompt_start,
                  [p is not None for p in built for _ in range(rows_per_config)])

        def column(name: str, neutral: Any, dtype: torch.dtype) -> torch.Tensor:
            values = [getattr(p, name).reshape(()).item() if p is not None else neutral for p in built]
            return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(rows_per_config)[:, None]

        row.multiplier = column("multiplier", 0.0, torch.float32)  # (R, 1)
        row.base = column("base", 1.0, torch.float32)
        row.allowed_length = column("allowed_length", 0, torch.long)
        row.penalty_last_n = column("penalty_last_n", -1, torch.long)
        row.max_exponent = column("max_exponent", 0, torch.long)
        return row


def build_dry(p: "GenerationParams", prompt_length: int, prompt_start: torch.Tensor | None) -> LogitsProcessor | None:
    """DRY(...), or None when dry_multiplier == 0 or dry_penalty_last_n == 0 (off). The sequence breakers come
    resolved to token ids (p.dry_breaker_sequences, from `resolve_breakers` at the call's start). The history is
    the whole row, prompt included (see the module docstring): `prompt_length` is not needed."""
    if p.dry_multiplier == 0 or p.dry_penalty_last_n == 0:
        return None
    if p.dry_sequence_breakers and p.dry_breaker_sequences is None:
        raise ValueError(f"dry_sequence_breakers={list(p.dry_sequence_breakers)!r} are not resolved to tokens: "
                         "call decoding.processors.dry_breakers.with_breakers(params, tokenizer) first")
    breakers = p.dry_breaker_sequences if p.dry_sequence_breakers else None
    return DRY(p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, breakers, prompt_start)


def check_dry(p: "GenerationParams") -> None:
    """Types and ranges of dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n, dry_sequence_breakers.

    A dry_base below 1 is refused: llama.cpp's sampler silently turns itself off there (and its server swaps in the
    default), which would hide a typo. Empty breakers are refused too (llama.cpp skips them with a warning)."""
    check(is_real(p.dry_multiplier) and math.isfinite(p.dry_multiplier) and p.dry_multiplier >= 0, "dry_multiplier",
          p.dry_multiplier, "use a finite number >= 0 (0: off)")
    check(is_real(p.dry_base) and math.isfinite(p.dry_base) and p.dry_base >= 1, "dry_base", p.dry_base,
          "use a finite number >= 1 (the penalty is multiplier * base ** (repeat length - allowed length))")
    check(is_int(p.dry_allowed_length) and p.dry_allowed_length >= 0, "dry_allowed_length", p.dry_allowed_length,
          "use an integer >= 0 (repeats up to this long go unpenalised)")
    check(is_int(p.dry_penalty_last_n) and p.dry_penalty_last_n >= -1, "dry_penalty_last_n", p.dry_penalty_last_n,
          "use an integer >= -1 (how many of the last tokens are searched; -1: all, 0: off)")
    breakers = p.dry_sequence_breakers
    check(isinstance(breakers, (tuple, list)) and all(isinstance(b, str) and b for b in breakers),
          "dry_sequence_breakers", breakers, "use a list of non-empty strings (or [] for none)")
