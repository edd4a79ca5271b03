"""Hand-computed examples for distinct-n, rep-n and diversity.

The set used throughout: A = a b a b, B = a b c.
  bigrams   A: ab ba ab   B: ab bc        -> 5 in all, distinct over the set {ab, ba, bc} = 3
  trigrams  A: aba bab    B: abc          -> 3 in all, all distinct
  4-grams   A: abab       B: (none)       -> 1
distinct-n pools the set: distinct_2 = 3/5. rep-n counts distinct n-grams within each text:
  rep_2 = 100 * (1 - (|{ab, ba}| + |{ab, bc}|) / 5) = 100 * (1 - 4/5) = 20.
"""

import pytest

from experiments.metrics.diversity import distinct_n, diversity, diversity_metrics, rep_n

A = "a b a b".split()
B = "a b c".split()


def test_distinct_n_pools_the_whole_set():
    assert distinct_n([A, B], 1) == pytest.approx(3 / 7)  # {a, b, c} over 7 tokens
    assert distinct_n([A, B], 2) == pytest.approx(3 / 5)  # ab counted once although both texts have it
    assert distinct_n([A, B], 3) == 1.0
    assert distinct_n([A, B], 4) == 1.0  # the single 4-gram abab


def test_rep_n_counts_repetition_within_each_text():
    assert rep_n([A, B], 2) == pytest.approx(20.0)
    assert rep_n([A, B], 3) == 0.0
    assert rep_n([A, B], 4) == 0.0
    # The same text twice: distinct-n halves, rep-n does not move (no text repeats itself more).
    assert rep_n([B, B], 2) == 0.0
    assert distinct_n([B, B], 2) == pytest.approx(2 / 4)


def test_diversity_is_the_product_over_orders_two_to_four():
    assert diversity([A, B]) == pytest.approx((1 - 0.20) * 1 * 1)
    loop = "x y x y x y".split()  # bigrams xy yx xy yx xy: 2 distinct of 5; trigrams 2 of 4; 4-grams 2 of 3
    expected = (2 / 5) * (2 / 4) * (2 / 3)
    assert diversity([loop]) == pytest.approx(expected)


def test_simctg_script_count_drops_the_last_ngram():
    # SimCTG's loop `while end_idx < len(tokens)` yields, for A, only ab ba (not the final ab): no repeat.
    assert rep_n([A, B], 2, simctg_last_ngram_dropped=True) == 0.0
    # 4 tokens -> 2 bigrams in their script, 3 in ours.
    assert rep_n(["p q p q p".split()], 2, simctg_last_ngram_dropped=True) == pytest.approx(100 * (1 - 2 / 3))


def test_diversity_metrics_keys_and_consistency():
    out = diversity_metrics([A, B])
    assert set(out) == {"distinct_1", "distinct_2", "distinct_3", "distinct_4", "rep_2", "rep_3", "rep_4", "diversity"}
    assert out["rep_2"] == pytest.approx(rep_n([A, B], 2))
    assert out["diversity"] == pytest.approx(diversity([A, B]))


def test_no_ngrams_gives_the_documented_values():
    for empty in ([], [[]], [["only"]]):
        assert distinct_n(empty, 2) == 0.0
        assert rep_n(empty, 2) == 0.0
        assert diversity(empty) == 1.0


def test_token_ids_work_like_words():
    assert distinct_n([[1, 2, 1, 2], [1, 2, 3]], 2) == pytest.approx(3 / 5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n=0"):
        distinct_n([A], 0)
    with pytest.raises(TypeError, match="tokenize"):
        rep_n(["a b a b"], 2)
