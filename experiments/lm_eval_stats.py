"""Statistics for task scores: the unbiased pass@k estimator and seeded bootstrap intervals over documents.

- pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1): with n draws per
  problem of which c are correct, `1 - C(n - c, k) / C(n, k)`, the probability that at least one of k draws
  chosen without replacement from the n is correct; computed as a product so large n does not overflow.
- Intervals: the percentile bootstrap of a mean over documents (each resample draws len(values) documents
  with replacement), from `numpy.random.default_rng(seed)`, so the same values and seed give the same
  interval on every machine. The number of resamples is recorded beside the numbers (`meta/bootstrap`).
- `paired_bootstrap_test`: two methods scored on the same documents; the two-sided p-value of "the mean
  difference is zero" from resampling documents (pairs kept together), with the difference's interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n draws, c of them correct, k <= n."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i = n - c + 1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_picks(size: int, resamples: int, seed: int) -> np.ndarray:
    """The resamples' item indices, drawn with replacement: (resamples, size) int64. Every bootstrap of the
    project draws through here, so one seed means the same resampled items for task and generation metrics."""
    if size == 0:
        raise ValueError("bootstrap over no values: nothing was scored")
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def bootstrap_means(values: Sequence[float], resamples: int, seed: int) -> np.ndarray:
    """`resamples` means of documents drawn with replacement: (resamples,) float64."""
    data = np.asarray(values, dtype=np.float64)
    return data[bootstrap_picks(data.size, resamples, seed)].mean(axis=1)


def bootstrap_ci95(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `values`."""
    means = bootstrap_means(values, resamples, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap_test(a: Sequence[float], b: Sequence[float], resamples: int = 1000,
                          seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired documents, its 95% interval, and a two-sided bootstrap p-value.

    The p-value is the share of resampled differences on the other side of zero, doubled (the percentile
    method's test), at least 1 / resamples.
    """
    if len(a) != len(b):
        raise ValueError(f"paired test needs the same documents: {len(a)} scores against {len(b)}")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = bootstrap_means(diff, resamples, seed)
    observed = float(diff.mean())
    if observed >= 0:
        tail = float(np.mean(means <= 0.0))
    else:
        tail = float(np.mean(means >= 0.0))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"diff": observed, "ci95_low": float(low), "ci95_high": float(high),
            "p_value": min(1.0, max(2.0 * tail, 1.0 / resamples)), "documents": float(diff.size)}
