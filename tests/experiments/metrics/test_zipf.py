"""Zipf coefficient on counts that follow a power law exactly, so the fitted slope is known by hand."""

import math

import pytest

from experiments.metrics.zipf import zipf_coefficient


def _texts_with_counts(counts):
    # Token i appears counts[i] times, spread over two texts (pooling must not matter).
    tokens = [f"t{i}" for i, count in enumerate(counts) for _ in range(count)]
    return [tokens[::2], tokens[1::2]]


def test_counts_proportional_to_one_over_rank_give_one():
    assert zipf_coefficient(_texts_with_counts([12, 6, 4, 3])) == pytest.approx(1.0)


def test_counts_proportional_to_one_over_rank_squared_give_two():
    assert zipf_coefficient(_texts_with_counts([36, 9, 4])) == pytest.approx(2.0)


def test_only_the_top_n_tokens_enter_the_fit():
    texts = _texts_with_counts([36, 9, 4, 1, 1, 1, 1])
    assert zipf_coefficient(texts, top_n=3) == pytest.approx(2.0)
    assert zipf_coefficient(texts) != pytest.approx(2.0)


def test_two_ranks_give_the_slope_through_them():
    # log(1/4) / log(2) = -2: counts 4 and 1.
    assert zipf_coefficient([["a", "a", "a", "a", "b"]]) == pytest.approx(2.0)


def test_equal_counts_give_zero():
    assert zipf_coefficient([["a", "b", "c"]]) == pytest.approx(0.0, abs=1e-12)


def test_matches_scipy_linregress_as_degen_uses_it():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np

    counts = [50, 31, 20, 9, 9, 5, 2, 1]
    slope = stats.linregress(np.log(np.arange(1, 9)), np.log(counts)).slope
    assert zipf_coefficient(_texts_with_counts(counts)) == pytest.approx(-slope)


def test_fewer_than_two_distinct_tokens_is_nan():
    assert math.isnan(zipf_coefficient([["a", "a", "a"]]))
    assert math.isnan(zipf_coefficient([[], []]))
    assert math.isnan(zipf_coefficient([]))


def test_top_n_below_two_is_rejected():
    with pytest.raises(ValueError, match="top_n=1"):
        zipf_coefficient([["a", "b"]], top_n=1)
