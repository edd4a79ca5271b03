"""How close each generation is to the human continuation of the same prompt: BLEU, chrF and ROUGE-L.

One human reference per generation, paired by position. Each number is what its standard library computes,
so it can be compared with published tables:
- `bleu`: sacreBLEU's corpus BLEU (Papineni et al. 2002; Post 2018, "A Call for Clarity in Reporting BLEU
  Scores"), default `13a` tokenization, n-gram statistics summed over the corpus before the geometric mean.
  Scale 0..100.
- `chrf`: sacreBLEU's corpus chrF (Popovic 2015): character n-grams up to 6, beta = 2, no word n-grams
  (chrF, not chrF++), statistics summed over the corpus. Scale 0..100.
- `rougeL`: ROUGE-L F-measure (Lin 2004, longest common subsequence) from Google's `rouge-score`, which has
  no corpus statistic of its own: we report the mean over pairs of the per-pair F-measure, as its
  `BootstrapAggregator` and the `evaluate` "rouge" module do (without bootstrap). Default tokenizer
  (lowercase, alphanumeric words), no stemming. Scale 0..1, as that library reports it.

Continuation metrics of open-ended generation measure closeness to *one* possible continuation, so they
reward safe, generic text; read them alongside diversity and MAUVE, never alone.

Empty strings are valid inputs on either side (they score 0 against a non-empty text); an empty list or
lists of different lengths raise a ValueError.
"""

from __future__ import annotations

from collections.abc import Sequence


def _check_pairs(texts: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(texts, str) or isinstance(references, str):
        raise TypeError("texts and references must be lists of strings, not a single string")
    if not texts:
        raise ValueError("reference metrics need at least one generation, got an empty list")
    if len(texts) != len(references):
        raise ValueError(
            f"texts and references must pair up one to one: got {len(texts)} texts and {len(references)} references"
        )


def bleu(texts: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU corpus BLEU of the generations against their human continuations (0..100)."""
    import sacrebleu

    _check_pairs(texts, references)
    return float(sacrebleu.corpus_bleu(list(texts), [list(references)]).score)


def chrf(texts: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU corpus chrF of the generations against their human continuations (0..100)."""
    import sacrebleu

    _check_pairs(texts, references)
    return float(sacrebleu.corpus_chrf(list(texts), [list(references)]).score)


def rouge_l(texts: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure of each generation against its human continuation (0..1)."""
    from rouge_score import rouge_scorer

    _check_pairs(texts, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    # rouge-score's argument order is (target, prediction).
    scores = [scorer.score(reference, text)["rougeL"].fmeasure for text, reference in zip(texts, references)]
    return sum(scores) / len(scores)


def reference_metrics(texts: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """bleu, chrf and rougeL in one dict, keyed as the runner logs them."""
    return {"bleu": bleu(texts, references), "chrf": chrf(texts, references), "rougeL": rouge_l(texts, references)}
