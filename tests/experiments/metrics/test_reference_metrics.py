"""BLEU / chrF / ROUGE-L against human continuations, on pairs small enough to count by hand."""

import pytest

from experiments.metrics.reference import bleu, chrf, reference_metrics, rouge_l

HYP = "the cat sat on the mat"
REF = "the cat sat on a mat"


def test_bleu_by_hand():
    # Clipped precisions: 1-grams 5/6 ("the" twice, once in the reference), 2-grams 3/5, 3-grams 2/4,
    # 4-grams 1/3; equal lengths -> BP = 1. BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4).
    assert bleu([HYP], [REF]) == pytest.approx(100 * (1 / 12) ** 0.25)


def test_rouge_l_by_hand():
    # LCS "the cat sat on mat" = 5 of 6 tokens on each side: P = R = F = 5/6.
    assert rouge_l([HYP], [REF]) == pytest.approx(5 / 6)
    # Mean over pairs: the empty pair scores 0.
    assert rouge_l([HYP, ""], [REF, "hello"]) == pytest.approx(5 / 12)


def test_chrf_by_hand():
    # "ab" vs "ac": character 1-grams P = R = 1/2, 2-grams P = R = 0, no longer n-grams on either side.
    # Averaged over the two orders: P = R = 1/4, so F_2 = 5PR / (4P + R) = 1/4.
    assert chrf(["ab"], ["ac"]) == pytest.approx(25.0)


def test_identical_texts_score_the_maximum():
    out = reference_metrics([HYP, "a dog"], [HYP, "a dog"])
    assert out == pytest.approx({"bleu": 100.0, "chrf": 100.0, "rougeL": 1.0})


def test_empty_strings_score_zero_without_error():
    assert reference_metrics([""], [""]) == {"bleu": 0.0, "chrf": 0.0, "rougeL": 0.0}


def test_mismatched_or_empty_inputs_raise():
    with pytest.raises(ValueError, match="2 texts and 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty list"):
        chrf([], [])
    with pytest.raises(TypeError):
        rouge_l("abc", "abc")
