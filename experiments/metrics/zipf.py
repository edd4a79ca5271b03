"""Zipf coefficient of the generated tokens (Holtzman et al. 2020, "The Curious Case of Neural Text
Degeneration", Section 6.2 / Fig. 7; their code: `ari-holtzman/degen`, `metrics/zipf.py`).

Zipf's law says a token's frequency falls as a power of its frequency rank, f(r) ~ r^(-s). As in degen we
pool the tokens of all generations, sort the token counts in decreasing order, keep the `top_n` most frequent
(5000, their default), and fit log(count) = a + b * log(rank) by ordinary least squares with ranks 1..k;
the Zipf coefficient is s = -b. Human English text is close to 1; a flatter (smaller) s means the
decoder spreads probability over rare tokens, a steeper one that it sticks to frequent tokens.

degen uses `scipy.stats.linregress`; `numpy.polyfit` of degree 1 is the same least-squares slope. Ties in
counts do not matter: only the sorted counts enter the fit, not which token holds them.

Fewer than two distinct tokens leave the slope undefined: we return NaN (documented, not an error, so that a
degenerate generation set, e.g. one token repeated, still yields its other metrics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from experiments.metrics.tokens import Tokens, check_token_lists

DEFAULT_TOP_N = 5000  # degen's --N


def zipf_coefficient(token_lists: Sequence[Tokens], *, top_n: int = DEFAULT_TOP_N) -> float:
    """Negative slope of the least-squares fit of log count on log rank over the `top_n` most frequent tokens."""
    check_token_lists(token_lists)
    _check_top_n(top_n)
    counts = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return zipf_from_counts(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)), top_n=top_n)


def zipf_from_counts(counts: np.ndarray, *, top_n: int = DEFAULT_TOP_N) -> float:
    """The Zipf fit of `zipf_coefficient` from token counts (V,), in any order; zero counts (absent tokens) are
    ignored. One fit for the point estimate and its jackknife (`set_intervals.py`), so the two cannot drift."""
    _check_top_n(top_n)
    counts = np.asarray(counts, dtype=np.float64)  # (V,)
    frequencies = np.sort(counts[counts > 0])[::-1][:top_n]  # (k,) decreasing; only the values enter the fit
    if len(frequencies) < 2:
        return float("nan")
    ranks = np.arange(1, len(frequencies) + 1, dtype=np.float64)
    slope, _intercept = np.polyfit(np.log(ranks), np.log(frequencies), 1)
    return float(-slope)


def _check_top_n(top_n: int) -> None:
    if top_n < 2:
        raise ValueError(f"top_n={top_n} must be at least 2: a slope needs two ranks")
