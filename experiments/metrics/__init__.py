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

The last four appear only when `references` is given, `mauve` only when `features_model` is given too: a
missing input leaves its keys out rather than filling them with a made-up value. Each library keeps its
usual scale so numbers match published tables. Undefined values are NaN, never an exception: `zipf` with
fewer than two distinct tokens, `self_bleu4` with fewer than two texts. Empty strings are valid
generations (zero tokens); an empty list is a ValueError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Modules, not their functions: `from .self_bleu import self_bleu` would rebind `experiments.metrics.self_bleu`
# from the module to the function, and `import experiments.metrics.self_bleu as m` would then return the function.
from experiments.metrics import diversity, mauve_score, reference, repetition, self_bleu, tokens, zipf

__all__ = ["compute_generation_metrics"]


def compute_generation_metrics(
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
    feature_batch_size: int = 16,
) -> dict[str, float]:
    """All generation-quality metrics of `texts` (and against `references`, paired by position).

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
    token_lists = tokens.tokenize(texts, tokenizer, tokenization=tokenization)

    metrics = diversity.diversity_metrics(token_lists)
    metrics["self_bleu4"] = (
        self_bleu.self_bleu(token_lists, max_n=4, sample_size=self_bleu_sample_size, seed=seed)
        if len(token_lists) >= 2
        else float("nan")
    )
    metrics["zipf"] = zipf.zipf_coefficient(token_lists, top_n=zipf_top_n)
    metrics["repetition_pct"] = repetition.repetition_pct(token_lists)
    metrics["mean_length"] = sum(len(sequence) for sequence in token_lists) / len(token_lists)

    if references is not None:
        metrics.update(reference.reference_metrics(texts, references))
        if features_model is not None:
            metrics["mauve"] = mauve_score.mauve_score(
                texts,
                references,
                features_model,
                features_tokenizer,
                seed=seed,
                num_buckets=mauve_num_buckets,
                batch_size=feature_batch_size,
            )
    return {key: float(value) for key, value in metrics.items()}
