"""Generation-quality metrics: samples (+ human continuations) -> a flat dict of numbers.

One module per family, each with its definition, paper and deviations in its own docstring:
`diversity` (distinct-n, rep-n, diversity), `self_bleu`, `zipf`, `repetition`, `reference` (BLEU, chrF,
ROUGE-L), `mauve_score`; `tokens` decides what a token is; `evaluate_modules/` exposes the count-based ones
through the `evaluate` library's `evaluate.load(path)` interface.

`compute_generation_metrics` returns keys without a namespace; the runner prefixes `gen/` (generations) or
`human/` (the human continuations scored as if they were generations, the yardstick). Keys and scales:

| key                       | meaning                                                          | scale  |
|---------------------------|------------------------------------------------------------------|--------|
| distinct_1 .. distinct_4  | distinct n-grams / all n-grams over the whole set (Li et al.)    | 0..1   |
| rep_2 .. rep_4            | within-text n-gram repetition (Su et al., SimCTG)                | 0..100 |
| diversity                 | prod_{n=2..4} (1 - rep_n / 100) (SimCTG)                          | 0..1   |
| self_bleu4                | mean BLEU-4 of each text against the others (Texygen)            | 0..1   |
| zipf                      | Zipf coefficient of pooled token counts (Holtzman et al.)        | ~1     |
| repetition_pct            | % of texts ending in a repetition loop (Holtzman et al.)         | 0..100 |
| mean_length               | mean tokens per text                                             | tokens |
| bleu, chrf                | sacreBLEU corpus scores against the human continuations          | 0..100 |
| rougeL                    | mean ROUGE-L F-measure against the human continuations           | 0..1   |
| mauve                     | MAUVE(human, generated) on `features_model` features             | 0..1   |
| mauve_samples             | texts per side MAUVE rests on (empty texts dropped)              | count  |

The reference metrics appear only when `references` is given, `mauve` and `mauve_samples` only when
`features_model` is given too: a missing input leaves its keys out rather than filling them with a made-up
value. Each library keeps its usual scale so numbers match published tables. Undefined values are NaN, never
an exception: `zipf` with fewer than two distinct tokens, `self_bleu4` with fewer than two texts, `mauve`
when every text of one side is empty. Empty strings are valid generations (zero tokens); an empty list is a
ValueError.

Why `score_generations` returns more than numbers: a NaN alone cannot say why it is NaN, and a MAUVE
score on 16 samples looks as solid as one on 5000. `GenerationScores` carries, beside the values, the
reason for each NaN (`not_measurable`) and what a reader must know before trusting a number (`caveats`),
so the runner can record both in metrics.json and the report can show them. `compute_generation_metrics`
is the numbers alone, for callers that want just those. `GenerationScores.intervals` holds each metric's 95%
interval over texts (prompts): a percentile bootstrap for the sums over texts (`intervals.py`), and for the
set-level metrics, which a resample with repeated texts would bias, a delete-one jackknife (distinct-n, Zipf),
a bootstrap of the Self-BLEU hypotheses with the reference pool fixed, and a bootstrap of MAUVE over prompts on
a fixed quantization (`set_intervals.py`); `intervals.INTERVAL_METHODS` names each method. Only counts
(`mauve_samples`, `intervals.NO_INTERVAL`) have none, and `GenerationScores.no_interval` says why a value of
this call has none (e.g. fewer than 3 texts for the jackknife).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

# Modules, not their functions: `from .self_bleu import self_bleu` would rebind `experiments.metrics.self_bleu`
# from the module to the function, and `import experiments.metrics.self_bleu as m` would then return the function.
from experiments.metrics import (diversity, intervals, mauve_score, reference, repetition, self_bleu, set_intervals,
                                 tokens, zipf)

__all__ = ["GenerationScores", "compute_generation_metrics", "score_generations"]

log = logging.getLogger(__name__)  # progress lines: scoring takes minutes on real models (MAUVE's features)

# Why each NaN the count metrics can produce is NaN (the condition is checked where the value is made).
SELF_BLEU_ONE_TEXT = "n=1"
ZIPF_ONE_TOKEN = "fewer than 2 distinct tokens"


@dataclass
class GenerationScores:
    """What `score_generations` measured: unprefixed values, and notes keyed like them."""

    values: dict[str, float]
    not_measurable: dict[str, str] = field(default_factory=dict)  # key -> why its value is NaN, for every NaN
    caveats: dict[str, str] = field(default_factory=dict)  # key -> what to know before trusting its value
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (ci95_low, ci95_high)
    no_interval: dict[str, str] = field(default_factory=dict)  # key -> why its (measurable) value has no interval


def compute_generation_metrics(*args: Any, **kwargs: Any) -> dict[str, float]:
    """The values of `score_generations(*args, **kwargs)` alone (same arguments)."""
    return score_generations(*args, **kwargs).values


def score_generations(
    texts: list[str],
    references: list[str] | None,
    tokenizer: Any,
    *,
    features_model: Any = None,
    features_tokenizer: Any = None,
    seed: int = 0,
    tokenization: str = "model",
    self_bleu_sample_size: int = 100,
    zipf_top_n: int = zipf.DEFAULT_TOP_N,
    mauve_num_buckets: int | str = "auto",
    feature_batch_size: int = mauve_score.FEATURE_BATCH_SIZE,
    features_name: str | None = None,
    features_random: bool = False,
    bootstrap_resamples: int = intervals.DEFAULT_RESAMPLES,
    mauve_reference_features: Any = None,
) -> GenerationScores:
    """All generation-quality metrics of `texts` (and against `references`, paired by position), with the
    reason for each NaN and the caveats of MAUVE.

    Args:
        texts: the generated continuations (prompt excluded), one string each.
        references: the human continuations of the same prompts, or None to skip bleu/chrf/rougeL/mauve.
        tokenizer: the generation model's tokenizer; its tokens are what n-gram metrics count
            (may be None with `tokenization="whitespace"`).
        features_model: causal LM whose last-token hidden states feed MAUVE; None skips MAUVE.
        features_tokenizer: tokenizer of `features_model`; defaults to `tokenizer`.
        seed: drives the Self-BLEU sample and MAUVE's clustering.
        tokenization: "model" (tokenizer tokens) or "whitespace" (words), see `tokens.py`.
        self_bleu_sample_size: texts in the Self-BLEU sample (fixed, so runs compare).
        zipf_top_n: most frequent tokens in the Zipf fit.
        mauve_num_buckets: MAUVE histogram size, "auto" = n / 10.
        feature_batch_size: batch size when featurizing for MAUVE.
        features_name: how the run names `features_model` (for MAUVE's caveat); None: "the features model".
        features_random: whether `features_model` has random weights (MAUVE then gets a caveat).
        bootstrap_resamples: resamples of the bootstrap intervals over texts (seeded by `seed`); 0: no intervals,
            the jackknife ones included.
        mauve_reference_features: MAUVE's features of `references` computed earlier
            (`mauve_score.reference_features`, same batch size), or None to compute them here.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError(f"texts must be a non-empty list of generated strings, got {texts!r:.80}")
    if references is not None and len(references) != len(texts):
        raise ValueError(
            f"references must pair up with texts one to one: got {len(texts)} texts and {len(references)} references"
        )
    features_tokenizer = features_tokenizer if features_tokenizer is not None else tokenizer
    if features_model is not None and features_tokenizer is None:
        raise ValueError("features_model needs a tokenizer: pass features_tokenizer (or tokenizer)")
    log.info(f"scoring {len(texts)} texts: diversity, Self-BLEU, Zipf, repetition"
             + (", BLEU/chrF/ROUGE-L" if references is not None else ""))
    token_lists = tokens.tokenize(texts, tokenizer, tokenization=tokenization)

    metrics = diversity.diversity_metrics(token_lists)
    scores = GenerationScores(values=metrics)
    bleu_scores = None  # each sampled text's Self-BLEU, which its interval resamples
    if len(token_lists) >= 2:
        bleu_scores = self_bleu.self_bleu_scores(token_lists, max_n=4, sample_size=self_bleu_sample_size, seed=seed)
        metrics["self_bleu4"] = sum(bleu_scores) / len(bleu_scores)  # = self_bleu.self_bleu
    else:
        metrics["self_bleu4"] = math.nan
        scores.not_measurable["self_bleu4"] = SELF_BLEU_ONE_TEXT
    metrics["zipf"] = zipf.zipf_coefficient(token_lists, top_n=zipf_top_n)
    if math.isnan(metrics["zipf"]):  # zipf's only NaN: fewer than two distinct tokens to fit a slope to
        scores.not_measurable["zipf"] = ZIPF_ONE_TOKEN
    metrics["repetition_pct"] = repetition.repetition_pct(token_lists)
    metrics["mean_length"] = sum(len(sequence) for sequence in token_lists) / len(token_lists)

    if references is not None:
        metrics.update(reference.reference_metrics(texts, references))
        if features_model is not None:
            log.info(f"MAUVE: features of {len(references)} human and {len(texts)} generated texts from "
                     f"{features_name or 'the features model'}, then clustering")
            result = mauve_score.measure_mauve(
                texts,
                references,
                features_model,
                features_tokenizer,
                seed=seed,
                num_buckets=mauve_num_buckets,
                batch_size=feature_batch_size,
                resamples=bootstrap_resamples,
                reference_features=mauve_reference_features,
            )
            metrics["mauve"], metrics["mauve_samples"] = result.score, float(result.samples)
            if result.interval is not None:
                scores.intervals["mauve"] = result.interval
            elif result.no_interval:
                scores.no_interval["mauve"] = result.no_interval
            if result.not_measurable:
                scores.not_measurable["mauve"] = result.not_measurable
            else:
                caveat = mauve_score.mauve_caveat(result.samples, features_name or "the features model",
                                                  features_random)
                if caveat:
                    scores.caveats["mauve"] = caveat
    scores.values = {key: float(value) for key, value in metrics.items()}
    scores.intervals.update(intervals.generation_intervals(token_lists, texts, references,
                                                           resamples=bootstrap_resamples, seed=seed))
    found, missing = set_intervals.count_metric_intervals(token_lists, scores.values, bleu_scores,
                                                          zipf_top_n=zipf_top_n, resamples=bootstrap_resamples,
                                                          seed=seed)
    scores.intervals.update(found)
    scores.no_interval.update(missing)
    return scores
