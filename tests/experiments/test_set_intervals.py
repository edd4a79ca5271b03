"""Intervals of the set-level generation metrics (experiments/metrics/set_intervals.py).

The jackknife's leave-one-out values are checked against the point-estimate functions run on the list without
each text (brute force); MAUVE's fixed quantization against mauve-text's own histograms and score.
"""

from __future__ import annotations

import importlib
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from experiments.metrics import intervals, mauve_score, score_generations, self_bleu, set_intervals
from experiments.metrics.diversity import distinct_n, diversity_metrics
from experiments.metrics.zipf import zipf_coefficient

SET_LEVEL = ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "zipf", "self_bleu4")


def random_texts(count: int, seed: int, *, max_length: int = 30) -> list[list[str]]:
    """Word lists with a heavy-tailed vocabulary (so texts share words), lengths 0..max_length."""
    rng = random.Random(seed)
    return [[f"w{min(int(rng.paretovariate(1.0)), 300)}" for _ in range(rng.randint(0, max_length))]
            for _ in range(count)]


def without(items: list, i: int) -> list:
    return items[:i] + items[i + 1:]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_distinct_leave_one_out_equals_recomputing_without_each_text(n):
    texts = random_texts(25, 1) + [[], ["w1"], ["w1", "w2", "w3"]]  # empty and shorter-than-n texts too
    expected = [distinct_n(without(texts, i), n) for i in range(len(texts))]
    assert set_intervals.distinct_leave_one_out(texts, n) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_distinct_leave_one_out_with_no_ngrams_left_is_zero_as_distinct_n():
    texts = [["a", "b", "c"], ["a"], []]
    assert set_intervals.distinct_leave_one_out(texts, 2).tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("top_n", [5000, 7])
def test_zipf_leave_one_out_equals_recomputing_without_each_text(top_n):
    texts = random_texts(30, 2)
    expected = [zipf_coefficient(without(texts, i), top_n=top_n) for i in range(len(texts))]
    got = set_intervals.zipf_leave_one_out(texts, top_n=top_n)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_zipf_leave_one_out_is_nan_where_the_slope_is_undefined():
    got = set_intervals.zipf_leave_one_out([["a", "a"], ["b"], ["a"]])
    assert math.isnan(got[1])  # without text 1 only "a" is left: no slope
    assert not math.isnan(got[0]) and not math.isnan(got[2])
    texts = [["a", "a"], ["b"], ["a"]]
    values = {**diversity_metrics(texts), "zipf": zipf_coefficient(texts)}
    found, missing = set_intervals.count_metric_intervals(texts, values, None, zipf_top_n=5000, resamples=10, seed=0)
    assert "zipf" not in found and missing == {"zipf": set_intervals.ZIPF_UNDEFINED_WITHOUT_ONE}


def test_jackknife_interval_is_the_normal_interval_of_the_jackknife_se():
    left_out = np.array([0.5, 0.7, 0.6, 0.2])
    se = math.sqrt(3 / 4 * float(np.sum((left_out - left_out.mean()) ** 2)))
    assert set_intervals.jackknife_interval(0.5, left_out) == pytest.approx((0.5 - 1.96 * se, 0.5 + 1.96 * se))
    with pytest.raises(ValueError, match="leave_one_out"):
        set_intervals.jackknife_interval(0.5, np.array([0.5]))


def set_level(texts, seed=0):
    values = diversity_metrics(texts)
    values["zipf"] = zipf_coefficient(texts)
    scores = self_bleu.self_bleu_scores(texts, seed=seed)
    values["self_bleu4"] = sum(scores) / len(scores)
    found, missing = set_intervals.count_metric_intervals(texts, values, scores, zipf_top_n=5000, resamples=1000,
                                                          seed=seed)
    return values, found, missing


def test_intervals_contain_the_estimate_and_shrink_with_more_texts():
    few, many = set_level(random_texts(20, 3)), set_level(random_texts(200, 4))
    for values, found, missing in (few, many):
        assert missing == {} and set(found) == set(SET_LEVEL)
        for key, (low, high) in found.items():
            assert low < values[key] < high, key
    for key in SET_LEVEL:
        (low_few, high_few), (low_many, high_many) = few[1][key], many[1][key]
        assert high_many - low_many < high_few - low_few, key


def test_fewer_than_three_texts_get_no_jackknife_interval_but_a_reason():
    texts = random_texts(2, 5, max_length=10)
    _, found, missing = set_level(texts)
    assert set(found) == {"self_bleu4"}
    assert set(missing) == {f"distinct_{n}" for n in (1, 2, 3, 4)} | {"zipf"}
    assert all(why == set_intervals.FEW_TEXTS for why in missing.values())


def test_no_resamples_no_intervals():
    texts = random_texts(10, 6)
    values = {**diversity_metrics(texts), "zipf": zipf_coefficient(texts)}
    assert set_intervals.count_metric_intervals(texts, values, None, zipf_top_n=5000, resamples=0, seed=0) == ({}, {})


def test_self_bleu_scores_mean_is_self_bleu_and_the_value_before_the_refactor():
    texts = random_texts(150, 5)
    for sample_size, seed, before in ((100, 0, 0.6402369785047299), (100, 7, 0.6677130474681988),
                                      (1000, 0, 0.6773103118585433)):  # self_bleu before self_bleu_scores existed
        scores = self_bleu.self_bleu_scores(texts, sample_size=sample_size, seed=seed)
        assert len(scores) == min(sample_size, len(texts))
        assert sum(scores) / len(scores) == self_bleu.self_bleu(texts, sample_size=sample_size, seed=seed) == before


def test_self_bleu_interval_resamples_the_scores_with_the_shared_weights():
    scores = [0.1, 0.5, 0.2, 0.9, 0.4]
    weights = intervals.resample_weights(5, 200, 3)
    expected = np.percentile(weights @ np.array(scores) / 5, [2.5, 97.5])
    assert set_intervals.self_bleu_interval(scores, resamples=200, seed=3) == pytest.approx(tuple(expected))


def test_score_generations_gives_every_set_level_metric_an_interval_and_its_method():
    texts = [" ".join(t) for t in random_texts(12, 7)]
    result = score_generations(texts, None, None, tokenization="whitespace")
    for key in SET_LEVEL:
        assert key in result.intervals and key in intervals.INTERVAL_METHODS
    assert result.no_interval == {}
    two = score_generations(texts[:2], None, None, tokenization="whitespace")
    assert "self_bleu4" in two.intervals and two.no_interval["distinct_1"] == set_intervals.FEW_TEXTS


# MAUVE: random features (no model), the shape of a small run.

def features(seed: int, shift: float = 0.0, rows: int = 60) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(rows, 16)) + shift).astype(np.float32)


def mauve_result(p, q, seed):
    import mauve

    return mauve.compute_mauve(p_features=p, q_features=q, num_buckets="auto", seed=seed, verbose=False)


@pytest.mark.parametrize("seed", [0, 5])
def test_our_labels_rebuild_mauve_texts_histograms_and_score(seed):
    p, q = features(1), features(2, shift=0.3)
    result = mauve_result(p, q, seed)
    p_labels, q_labels = set_intervals.mauve_labels(p, q, num_buckets=result.num_buckets, seed=seed)
    everyone = np.ones((1, 60))  # the un-resampled set
    p_hist = set_intervals.bucket_histograms(p_labels, np.arange(60), everyone, result.num_buckets)[0]
    q_hist = set_intervals.bucket_histograms(q_labels, np.arange(60), everyone, result.num_buckets)[0]
    assert np.array_equal(p_hist, result.p_hist) and np.array_equal(q_hist, result.q_hist)
    assert set_intervals.mauve_of_histograms(p_hist[None], q_hist[None])[0] == pytest.approx(result.mauve, abs=1e-12)


def test_mauve_of_histograms_equals_mauve_texts_curve_and_area():
    compute_mauve = importlib.import_module("mauve.compute_mauve")  # the module; `mauve.compute_mauve` is the function
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(40, 2, 7)).astype(float)  # zero buckets on one side or both
    counts[:, :, 0] += 1  # every histogram non-empty
    p_hist = counts[:, 0] / counts[:, 0].sum(1, keepdims=True)  # (40, 7)
    q_hist = counts[:, 1] / counts[:, 1].sum(1, keepdims=True)  # (40, 7)
    mixtures = np.linspace(1e-6, 1 - 1e-6, 25)
    expected = []
    for p, q in zip(p_hist, q_hist):
        x, y = compute_mauve.get_divergence_curve_for_multinomials(p, q, mixtures, 5).T
        by_x, by_y = np.argsort(x), np.argsort(y)
        expected.append(0.5 * (compute_mauve.compute_area_under_curve(x[by_x], y[by_x])
                               + compute_mauve.compute_area_under_curve(y[by_y], x[by_y])))
    assert set_intervals.mauve_of_histograms(p_hist, q_hist) == pytest.approx(expected, abs=1e-12)
    assert set_intervals.mauve_of_histograms(p_hist[:1], p_hist[:1])[0] == pytest.approx(1.0)  # P = Q: ties
    assert math.isnan(set_intervals.mauve_of_histograms(np.full((1, 7), np.nan), q_hist[:1])[0])


def interval(p, q, seed, p_prompts=None, q_prompts=None, prompts=60, resamples=1000):
    result = mauve_result(p, q, seed)
    p_prompts = np.arange(len(p)) if p_prompts is None else p_prompts
    q_prompts = np.arange(len(q)) if q_prompts is None else q_prompts
    got, why_not = mauve_score.mauve_interval(p, q, p_prompts, q_prompts, prompts, result, seed=seed,
                                              resamples=resamples)
    assert why_not == ""
    return result.mauve, got


def test_mauve_interval_is_near_the_estimate_and_seeded():
    estimate, (low, high) = interval(features(1), features(2, shift=0.3), seed=0)
    assert 0 < low < high <= 1
    assert low < estimate <= high and high - estimate <= estimate - low  # centred, capped at 1
    assert interval(features(1), features(2, shift=0.3), seed=0)[1] == (low, high)
    assert interval(features(1), features(2, shift=0.3), seed=1)[1] != (low, high)


def test_identical_human_and_generated_features_give_a_narrow_interval_at_one():
    p = features(3)
    estimate, (low, high) = interval(p, p.copy(), seed=0)
    assert estimate == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_prompts_whose_text_was_empty_contribute_nothing():
    p, q = features(1), features(2, shift=0.3)[:50]  # generations of prompts 10..59 only (0..9 were empty)
    q_prompts = np.arange(10, 60)
    estimate, (low, high) = interval(p, q, seed=0, q_prompts=q_prompts)
    assert low < estimate <= high
    result = mauve_result(p, q, 0)
    p_labels, q_labels = set_intervals.mauve_labels(p, q, num_buckets=result.num_buckets, seed=0)
    only_empty = np.zeros((1, 60))
    only_empty[0, :10] = 1.0  # a resample that drew only prompts without a generation
    values = set_intervals.mauve_resamples(p_labels, q_labels, np.arange(60), q_prompts, only_empty,
                                           result.num_buckets)
    assert math.isnan(values[0])  # undefined, and standard_error_interval ignores it


def test_no_mauve_interval_on_a_quantization_other_than_mauve_texts():
    p, q = features(1), features(2, shift=0.3)
    result = mauve_result(p, q, 0)
    other = SimpleNamespace(num_buckets=result.num_buckets, p_hist=result.p_hist[::-1], q_hist=result.q_hist)
    assert mauve_score.mauve_interval(p, q, np.arange(60), np.arange(60), 60, other, seed=0, resamples=10) == (
        None, mauve_score.QUANTIZATION_DIFFERS)
    with pytest.raises(ValueError, match="q_prompts"):
        mauve_score.mauve_interval(p, q, np.arange(60), np.arange(1, 61), 60, result, seed=0, resamples=10)


def test_standard_error_interval_is_centred_on_the_estimate_and_capped():
    resampled = np.array([0.70, 0.74, 0.78, 0.82, np.nan])  # below the estimate, as resampled MAUVE sits
    se = float(np.std([0.70, 0.74, 0.78, 0.82], ddof=1))
    low, high = set_intervals.standard_error_interval(0.9, resampled)
    assert (low, high) == pytest.approx((0.9 - 1.96 * se, 0.9 + 1.96 * se))
    assert set_intervals.standard_error_interval(0.9, resampled, upper=1.0) == pytest.approx((0.9 - 1.96 * se, 1.0))
    assert set_intervals.standard_error_interval(0.05, resampled, lower=0.0)[0] == 0.0
    assert all(math.isnan(v) for v in set_intervals.standard_error_interval(0.5, np.array([0.4, np.nan])))
