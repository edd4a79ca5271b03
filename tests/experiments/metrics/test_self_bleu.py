"""Self-BLEU: hand-computed BLEU values, then parity with NLTK (what Texygen and degen call)."""

import math
import random

import pytest

from experiments.metrics.self_bleu import sample_indices, self_bleu, sentence_bleu


def test_smoothed_zero_precisions():
    # hyp "a b" vs "a c": p1 = 1/2, p2 = 0 -> 0.1/1, no trigrams or 4-grams -> 0.1/1 each; BP = 1 (equal length).
    expected = (0.5 * 0.1 * 0.1 * 0.1) ** 0.25
    assert sentence_bleu(list("ab"), [list("ac")]) == pytest.approx(expected)


def test_brevity_penalty():
    # hyp "a b" vs "a b c d": p1 = p2 = 1, p3 = p4 = 0.1; BP = exp(1 - 4/2).
    expected = math.exp(1 - 4 / 2) * (0.1 * 0.1) ** 0.25
    assert sentence_bleu(list("ab"), [list("abcd")]) == pytest.approx(expected)


def test_closest_reference_length_ties_pick_the_shorter():
    # refs of length 2 and 4 are equally close to 3; the shorter (2) is used, so BP = 1.
    # p1 = 3/3, p2 = 2/2 (ab, bc), p3 = 1/1 (abc), p4 = 0.1/1 -> BLEU = 0.1 ** 0.25.
    assert sentence_bleu(list("abc"), [list("ab"), list("abcx")]) == pytest.approx(0.1**0.25)


def test_no_unigram_match_scores_zero():
    assert sentence_bleu(list("xyz"), [list("abc")]) == 0.0
    assert sentence_bleu([], [list("abc")]) == 0.0


def test_self_bleu_scores_each_text_against_the_others():
    # A and B are identical (BLEU 1 against each other), C shares nothing (0): mean 2/3.
    texts = [list("abcd"), list("abcd"), list("efgh")]
    assert self_bleu(texts) == pytest.approx(2 / 3)
    # "a b" and "a c" score each other the same smoothed value.
    assert self_bleu([list("ab"), list("ac")]) == pytest.approx((0.5 * 0.1**3) ** 0.25)


def test_a_text_is_not_its_own_reference():
    # A text repeated inside itself must be clipped by the *other* texts' counts, not its own.
    texts = [list("aaaa"), list("ab")]
    assert self_bleu(texts) == pytest.approx(
        (sentence_bleu(list("aaaa"), [list("ab")]) + sentence_bleu(list("ab"), [list("aaaa")])) / 2
    )


def test_matches_nltk_sentence_bleu_with_method1():
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    smoothing = bleu_score.SmoothingFunction().method1
    rng = random.Random(0)
    texts = [[rng.randrange(6) for _ in range(rng.randrange(0, 12))] for _ in range(25)]
    expected = [
        bleu_score.sentence_bleu(texts[:i] + texts[i + 1 :], text, smoothing_function=smoothing)
        for i, text in enumerate(texts)
    ]
    assert self_bleu(texts) == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    for i in range(5):
        assert sentence_bleu(texts[i], texts[:i] + texts[i + 1 :]) == pytest.approx(expected[i], rel=1e-12)


def test_sample_is_fixed_size_and_seeded():
    assert sample_indices(5, 100, seed=0) == [0, 1, 2, 3, 4]
    first = sample_indices(300, 100, seed=0)
    assert len(first) == 100 and first == sorted(set(first))
    assert sample_indices(300, 100, seed=0) == first
    assert sample_indices(300, 100, seed=1) != first
    rng = random.Random(1)
    texts = [[rng.randrange(20) for _ in range(10)] for _ in range(30)]
    chosen = [texts[i] for i in sample_indices(30, 10, seed=3)]
    assert self_bleu(texts, sample_size=10, seed=3) == pytest.approx(self_bleu(chosen, sample_size=10))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least two generations, got 1"):
        self_bleu([list("abc")])
    with pytest.raises(ValueError, match="sample_size=1"):
        self_bleu([list("ab"), list("ac")], sample_size=1)
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu(list("ab"), [])
