"""95% intervals of the set-level generation metrics: distinct-n, Zipf, Self-BLEU and MAUVE.

`intervals.py` bootstraps the metrics that are sums over texts. The metrics here compare texts with each other,
and a resample drawn with replacement repeats texts: distinct-n reads a repeated text as cross-text repetition
(falls), Zipf as once-seen tokens turned twice-seen (a bent tail), Self-BLEU as a text quoting itself (rises).
Such resampled values are biased, not noise around the estimate, so each metric gets a method that never
puts one text in a set twice:

- `distinct_1..4`, `zipf`: the delete-one jackknife over texts. theta_(i) is the metric without text i,
  SE_jack = sqrt((n - 1) / n * sum_i (theta_(i) - mean theta_(.))^2), interval = estimate -/+ 1.96 SE_jack
  (normal 95%). Leaving a text out removes it, it never duplicates one. Exact and cheap: for distinct-n we
  count once which n-grams occur in one text only (leaving text i out removes those of text i and text i's
  n-grams from the total); for Zipf we subtract text i's token counts from the pooled counts and refit with
  `zipf.zipf_from_counts`, the point estimate's own fit. The jackknife variance is conservative (Efron and
  Stein 1981), and the interval is not clipped to the metric's range. Fewer than `MIN_JACKKNIFE_TEXTS` texts:
  no interval, with the reason.
- `self_bleu4`: a percentile bootstrap over the Self-BLEU sample's hypotheses with the reference pool fixed:
  each sampled text keeps its score against all other sampled texts (`self_bleu.self_bleu_scores`), and a
  resample reweights those scores (`intervals.resample_weights`, seeded like the other intervals). A text
  drawn twice is then scored twice, never used as its own reference. The variance from which texts form the
  pool is not included.
- `mauve`: a bootstrap over prompts with the quantization fixed, read as a standard error. We cluster once as
  mauve-text's `cluster_feats` does (rows of vstack([q, p]) l2-normalised, PCA keeping 90% of the variance
  with random_state seed + 1, faiss k-means with niter 500, nredo 5, seed seed + 2), keep each text's bucket,
  and rebuild the two histograms per resample from one weight per prompt (its generated and its human text
  are drawn together, so the pairing stays; a text dropped as empty contributes nothing). MAUVE then follows
  the histograms: the divergence curve at 25 mixture weights, scaling 5, the mean of the two areas,
  vectorised over resamples. Re-clustering per resample would cost a k-means each and let duplicates pull
  centroids; fixed, the interval leaves out the clustering's own variance (it is narrower than the full one).
  `mauve_score.measure_mauve` checks that these labels give mauve-text's histograms before using them.
  Why not the percentiles: MAUVE is not linear in the histograms, and a resample's histograms are noisier than
  the sample's, so resampled MAUVE sits below the estimate (261 random features per side, MAUVE 0.95: 99% of
  resamples below it, percentiles [0.74, 0.94], excluding it). The resamples' spread is still the sampling
  noise, so the interval is estimate -/+ 1.96 x their standard deviation, kept in [0, 1]
  (`standard_error_interval`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from experiments.metrics import intervals, zipf
from experiments.metrics.tokens import Tokens, ngrams

Z95 = 1.96  # two-sided normal 95%
MIN_JACKKNIFE_TEXTS = 3
FEW_TEXTS = f"fewer than {MIN_JACKKNIFE_TEXTS} texts: no jackknife interval"
ZIPF_UNDEFINED_WITHOUT_ONE = "the Zipf slope is undefined once some text is left out: no jackknife interval"
# mauve-text's defaults, which `mauve_score` uses.
EXPLAINED_VARIANCE = 0.9
KMEANS_ITERATIONS = 500
KMEANS_REDO = 5
DIVERGENCE_POINTS = 25
MAUVE_SCALING = 5.0


def jackknife_interval(estimate: float, leave_one_out: np.ndarray) -> tuple[float, float]:
    """estimate -/+ 1.96 * SE_jack, from the n leave-one-out values (n,)."""
    values = np.asarray(leave_one_out, dtype=np.float64)
    n = len(values)
    if n < 2:
        raise ValueError(f"leave_one_out needs at least 2 values, got {n}")
    se = math.sqrt((n - 1) / n * float(np.sum((values - values.mean()) ** 2)))
    return estimate - Z95 * se, estimate + Z95 * se


def standard_error_interval(estimate: float, resampled: np.ndarray, *, lower: float | None = None,
                            upper: float | None = None) -> tuple[float, float]:
    """estimate -/+ 1.96 x the standard deviation of the resampled values (R,; NaN ignored), kept within
    [lower, upper] (the metric's range)."""
    finite = np.asarray(resampled, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size < 2:
        return float("nan"), float("nan")
    se = float(finite.std(ddof=1))
    low, high = estimate - Z95 * se, estimate + Z95 * se
    return (max(low, lower) if lower is not None else low), (min(high, upper) if upper is not None else high)


def distinct_leave_one_out(token_lists: Sequence[Tokens], n: int) -> np.ndarray:
    """distinct-n of the set without text i, for each i: (N,); 0.0 where the rest has no n-grams, as `distinct_n`."""
    owner: dict[tuple, int] = {}  # n-gram -> the one text containing it, -1 once a second text has it
    totals = np.zeros(len(token_lists), dtype=np.int64)  # (N,) n-grams per text
    for i, tokens in enumerate(token_lists):
        grams = ngrams(tokens, n)
        totals[i] = len(grams)
        for gram in set(grams):
            owner[gram] = i if owner.get(gram, i) == i else -1
    only = np.bincount([o for o in owner.values() if o >= 0], minlength=len(token_lists))  # (N,) types only in i
    distinct_rest = len(owner) - only  # (N,)
    total_rest = int(totals.sum()) - totals  # (N,)
    return np.where(total_rest > 0, distinct_rest / np.maximum(total_rest, 1), 0.0)


def zipf_leave_one_out(token_lists: Sequence[Tokens], *, top_n: int = zipf.DEFAULT_TOP_N) -> np.ndarray:
    """Zipf coefficient of the set without text i, for each i: (N,); NaN where it is undefined."""
    vocabulary: dict = {}
    ids = [np.array([vocabulary.setdefault(t, len(vocabulary)) for t in tokens], dtype=np.int64)
           for tokens in token_lists]  # N arrays of token ids
    pooled = np.bincount(np.concatenate(ids) if ids else np.zeros(0, np.int64), minlength=len(vocabulary))  # (V,)
    out = np.empty(len(token_lists))
    for i, text_ids in enumerate(ids):
        unique, counts = np.unique(text_ids, return_counts=True)
        rest = pooled.copy()
        rest[unique] -= counts  # the pooled counts without text i
        out[i] = zipf.zipf_from_counts(rest, top_n=top_n)
    return out


def self_bleu_interval(scores: Sequence[float], *, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of the sample's per-text Self-BLEU scores (S,), reference pool fixed."""
    values = np.asarray(scores, dtype=np.float64)  # (S,)
    weights = intervals.resample_weights(len(values), resamples, seed)  # (R, S)
    return intervals.percentile_interval(weights @ values / len(values))


def count_metric_intervals(token_lists: Sequence[Tokens], values: dict[str, float],
                           bleu_scores: Sequence[float] | None, *, zipf_top_n: int, resamples: int,
                           seed: int) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """({metric: (ci95_low, ci95_high)}, {metric: why it has none}) for distinct_1..4, zipf and self_bleu4.

    `values` are the point estimates (the jackknife centres); `bleu_scores` is `self_bleu_scores`, or None
    when Self-BLEU was not measurable; `resamples` 0 gives no intervals, as in `intervals.py`."""
    if resamples == 0:
        return {}, {}
    found: dict[str, tuple[float, float]] = {}
    missing: dict[str, str] = {}
    jackknifed = [f"distinct_{n}" for n in (1, 2, 3, 4)] + ["zipf"]
    if len(token_lists) < MIN_JACKKNIFE_TEXTS:
        missing.update({key: FEW_TEXTS for key in jackknifed if not math.isnan(values[key])})
    else:
        for n in (1, 2, 3, 4):
            key = f"distinct_{n}"
            found[key] = jackknife_interval(values[key], distinct_leave_one_out(token_lists, n))
        if not math.isnan(values["zipf"]):  # NaN: not_measurable says why
            left_out = zipf_leave_one_out(token_lists, top_n=zipf_top_n)
            if np.isnan(left_out).any():
                missing["zipf"] = ZIPF_UNDEFINED_WITHOUT_ONE
            else:
                found["zipf"] = jackknife_interval(values["zipf"], left_out)
    if bleu_scores is not None:
        found["self_bleu4"] = self_bleu_interval(bleu_scores, resamples=resamples, seed=seed)
    return found, missing


def mauve_labels(p_features: np.ndarray, q_features: np.ndarray, *, num_buckets: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's bucket under mauve-text's quantization of these features and seed: (p (Np,), q (Nq,)) int64."""
    import faiss
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    pooled = normalize(np.vstack([q_features, p_features]), norm="l2", axis=1)  # (Nq + Np, D): q first, as mauve
    pca = PCA(n_components=None, whiten=False, random_state=seed + 1).fit(pooled)
    kept = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= EXPLAINED_VARIANCE)) + 1
    reduced = np.ascontiguousarray(pca.transform(pooled)[:, :kept], dtype=np.float32)  # faiss wants float32
    kmeans = faiss.Kmeans(kept, num_buckets, niter=KMEANS_ITERATIONS, nredo=KMEANS_REDO, update_index=True,
                          seed=seed + 2, verbose=False)
    kmeans.train(reduced)
    _, labels = kmeans.index.search(reduced, 1)  # (Nq + Np, 1): the nearest centroid
    labels = labels.reshape(-1).astype(np.int64)
    return labels[len(q_features):], labels[: len(q_features)]


def bucket_histograms(labels: np.ndarray, prompts: np.ndarray, weights: np.ndarray, num_buckets: int) -> np.ndarray:
    """Each resample's share of one side's texts per bucket: (R, K); a NaN row where it drew none of them.

    labels (M,) bucket of each text, prompts (M,) its prompt, weights (R, prompts) draws of each prompt."""
    onehot = np.zeros((len(labels), num_buckets))  # (M, K)
    onehot[np.arange(len(labels)), labels] = 1.0
    counts = weights[:, np.asarray(prompts, dtype=np.int64)] @ onehot  # (R, K)
    totals = counts.sum(axis=1, keepdims=True)  # (R, 1)
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)


def _kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KL(a || b) over the last axis, 0 log 0 = 0 (b > 0 wherever a > 0 here: b mixes a in)."""
    positive = a > 0
    ratio = np.where(positive, a, 1.0) / np.where(positive, b, 1.0)
    return np.sum(np.where(positive, a * np.log(ratio), 0.0), axis=-1)


def _area(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Trapezoid area under y(x) of each row (R, P) sorted by x; ties by y decreasing, the frontier's order
    (mauve-text's argsort leaves tied points, e.g. P = Q, in an arbitrary order)."""
    order = np.lexsort((-y, x), axis=-1)  # (R, P): x ascending, then y descending
    xs, ys = np.take_along_axis(x, order, -1), np.take_along_axis(y, order, -1)
    return np.sum(np.diff(xs, axis=-1) * (ys[:, 1:] + ys[:, :-1]) / 2.0, axis=-1)


def mauve_of_histograms(p_hist: np.ndarray, q_hist: np.ndarray) -> np.ndarray:
    """MAUVE of each row pair of histograms (R, K), as mauve-text computes it from its p_hist / q_hist: (R,);
    NaN where a row is NaN."""
    weights = np.sort(np.linspace(1e-6, 1 - 1e-6, DIVERGENCE_POINTS))[None, :, None]  # (1, W, 1)
    valid = ~(np.isnan(p_hist).any(axis=1) | np.isnan(q_hist).any(axis=1))  # (R,)
    p, q = np.nan_to_num(p_hist)[:, None, :], np.nan_to_num(q_hist)[:, None, :]  # (R, 1, K)
    mixture = weights * p + (1 - weights) * q  # (R, W, K)
    ones, zeros = np.ones((len(valid), 1)), np.zeros((len(valid), 1))
    # The curve's points, with mauve-text's end points (0, inf) and (inf, 0) before the exp: (R, W + 2).
    x = np.hstack([ones, np.exp(-MAUVE_SCALING * _kl(q, mixture)), zeros])
    y = np.hstack([zeros, np.exp(-MAUVE_SCALING * _kl(p, mixture)), ones])
    return np.where(valid, 0.5 * (_area(x, y) + _area(y, x)), np.nan)


def mauve_resamples(p_labels: np.ndarray, q_labels: np.ndarray, p_prompts: np.ndarray, q_prompts: np.ndarray,
                    weights: np.ndarray, num_buckets: int) -> np.ndarray:
    """MAUVE of each resample of prompts, quantization fixed: (R,). weights (R, prompts), one per prompt."""
    p_hist = bucket_histograms(p_labels, p_prompts, weights, num_buckets)  # (R, K)
    q_hist = bucket_histograms(q_labels, q_prompts, weights, num_buckets)  # (R, K)
    return mauve_of_histograms(p_hist, q_hist)
