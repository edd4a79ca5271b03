"""95% bootstrap intervals of the generation metrics (experiments/metrics/intervals.py) and their keys in a run.

The hand bootstrap below draws the same resamples (`numpy.random.default_rng(seed).integers`, as
`experiments.lm_eval_stats.bootstrap_picks`), builds each resampled list of texts literally (a text drawn twice
appears twice) and scores it with the point-estimate functions themselves, so the vectorised intervals are
checked against the metrics' own definitions, not against a second copy of the vectorised code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.lm_eval_stats import bootstrap_ci95
from experiments.metrics import diversity, intervals, reference, repetition, score_generations
from experiments.metrics.tokens import tokenize

TEXTS = [
    "the cat sat on the mat and the cat sat on the mat again",
    "a dog ran far away from the house",
    "one two three one two three one two three one two three",
    "hello world hello there",
    "rain fell on the quiet town all night long",
    "we will build it and we will build it better",
    "",
    "stars over the sea",
]
REFERENCES = [
    "the cat is on a mat", "the dog ran home", "one two three four", "hello there world",
    "rain fell all night", "we built it", "nothing here", "stars over the hills",
]
WITH_INTERVAL = ("rep_2", "rep_3", "rep_4", "diversity", "repetition_pct", "mean_length", "bleu", "chrf", "rougeL")
SET_LEVEL = ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "zipf", "self_bleu4")  # set_intervals.py


def scores(**kwargs):
    return score_generations(TEXTS, REFERENCES, None, tokenization="whitespace", **kwargs)


def hand_metrics(texts: list[str], refs: list[str]) -> dict[str, float]:
    """Each metric of one resampled list, from the point-estimate functions."""
    tokens = tokenize(texts, None, tokenization="whitespace")
    out = {f"rep_{n}": diversity.rep_n(tokens, n) for n in (2, 3, 4)}
    out["diversity"] = diversity.diversity(tokens)
    out["repetition_pct"] = repetition.repetition_pct(tokens)
    out["mean_length"] = sum(len(t) for t in tokens) / len(tokens)
    out.update(reference.reference_metrics(texts, refs))
    return out


def test_intervals_equal_a_hand_bootstrap_of_the_metrics_own_functions():
    resamples, seed = 40, 3
    got = scores(bootstrap_resamples=resamples, seed=seed).intervals
    picks = np.random.default_rng(seed).integers(0, len(TEXTS), size=(resamples, len(TEXTS)))
    resampled = [hand_metrics([TEXTS[i] for i in row], [REFERENCES[i] for i in row]) for row in picks]
    assert set(got) == set(WITH_INTERVAL) | set(SET_LEVEL)
    for key in WITH_INTERVAL:  # the set-level ones are not a plain bootstrap: tests/experiments/test_set_intervals.py
        values = np.array([r[key] for r in resampled])
        expected = np.percentile(values[~np.isnan(values)], [2.5, 97.5])
        assert got[key] == pytest.approx(tuple(expected), rel=1e-9, abs=1e-9), key


def test_a_mean_over_texts_has_the_task_metrics_interval():
    """One bootstrap for the project: mean_length's interval is lm_eval_stats.bootstrap_ci95 of the lengths."""
    lengths = [len(t.split()) for t in TEXTS]
    assert scores(bootstrap_resamples=500, seed=7).intervals["mean_length"] == pytest.approx(
        bootstrap_ci95(lengths, 500, 7), abs=1e-12)


def test_every_interval_contains_its_point_estimate():
    result = scores()
    for key, (low, high) in result.intervals.items():
        assert low <= result.values[key] <= high, (key, low, result.values[key], high)
        assert low < high, key  # these texts differ, so every metric varies over resamples


def test_seeded_identical_across_calls_and_a_new_seed_draws_new_resamples():
    first, again, other = scores(seed=0).intervals, scores(seed=0).intervals, scores(seed=1).intervals
    assert first == again
    assert first["mean_length"] != other["mean_length"]


def test_set_level_metrics_get_an_interval_and_a_named_method_and_only_counts_go_without():
    result = scores()
    for key in SET_LEVEL:
        assert key in result.values and key in result.intervals
    assert intervals.INTERVAL_METHODS["distinct_2"] == intervals.INTERVAL_METHODS["zipf"] == intervals.JACKKNIFE
    assert "reference pool fixed" in intervals.INTERVAL_METHODS["self_bleu4"]
    assert "quantization fixed" in intervals.INTERVAL_METHODS["mauve"]
    assert set(intervals.INTERVAL_METHODS) >= set(WITH_INTERVAL) | set(SET_LEVEL) | {"ppl", "mauve"}
    assert set(intervals.NO_INTERVAL) == {"mauve_samples"}  # a count: nothing to estimate
    assert not set(intervals.NO_INTERVAL) & set(intervals.INTERVAL_METHODS)
    assert result.no_interval == {}
    assert scores(bootstrap_resamples=0).intervals == {}


def test_ratio_interval_is_the_ratio_of_weighted_sums():
    weights = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])  # two resamples of three texts
    got = intervals.ratio_interval([1.0, 5.0, 2.0], [1.0, 0.0, 4.0], weights)
    assert got == pytest.approx([(2 * 1 + 2) / (2 * 1 + 4), 6 / 12])
    empty = intervals.ratio_interval([1.0], [0.0], np.array([[1.0]]))
    assert math.isnan(empty[0])  # no tokens in the resample: undefined, not 0


def test_resample_weights_count_the_draws():
    weights = intervals.resample_weights(5, 30, 2)
    picks = np.random.default_rng(2).integers(0, 5, size=(30, 5))
    assert (weights == np.stack([np.bincount(row, minlength=5) for row in picks])).all()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from experiments.run import run
    from tests.experiments.runner_helpers import TINY_RUN, compose_config

    out = tmp_path_factory.mktemp("intervals") / "job"
    run(compose_config([*TINY_RUN, "decoding=top_p", "name=test_intervals"], out))
    return json.loads((out / "metrics.json").read_text())


def test_the_run_writes_intervals_for_gen_and_human_with_the_bootstrap_recorded(tiny_run):
    stored = tiny_run
    for prefix in ("gen", "human"):
        for key in ("ppl", "rep_2", "diversity", "mean_length", "repetition_pct"):
            low, high = stored[f"{prefix}/{key}/ci95_low"], stored[f"{prefix}/{key}/ci95_high"]
            value = stored[f"{prefix}/{key}"]
            if value is not None and low is not None:
                assert low <= value <= high, (prefix, key)
        for key in ("distinct_2", "zipf", "self_bleu4", "ppl", "rep_2"):  # 4 texts: enough for the jackknife
            assert f"{prefix}/{key}/ci95_low" in stored, (prefix, key)
            assert stored["meta/interval_methods"][f"{prefix}/{key}"] == intervals.INTERVAL_METHODS[key]
    for key in ("bleu", "chrf", "rougeL", "mauve"):
        assert f"gen/{key}/ci95_low" in stored and f"human/{key}/ci95_low" not in stored
    low, high = stored["gen/mauve/ci95_low"], stored["gen/mauve/ci95_high"]
    assert 0 <= low <= stored["gen/mauve"] <= high <= 1 and "gen/mauve" in stored["meta/interval_methods"]
    assert stored["meta/no_interval"] == {"gen/mauve_samples": intervals.NO_INTERVAL["mauve_samples"]}
    assert stored["meta/bootstrap_generation"]["resamples"] == intervals.DEFAULT_RESAMPLES
    assert stored["meta/bootstrap_generation"]["seed"] == 0


def test_the_interval_keys_are_documented_in_the_readme(tiny_run):
    from fnmatch import fnmatchcase

    from tests.experiments.test_run import documented_key_patterns

    patterns = documented_key_patterns()
    new = [k for k in tiny_run if "/ci95_" in k] + ["meta/bootstrap_generation", "meta/no_interval",
                                                    "meta/interval_methods"]
    assert any(k.startswith("gen/") for k in new) and any(k.startswith("human/") for k in new)
    assert [k for k in new if not any(fnmatchcase(k, p) for p in patterns)] == []
