"""MAUVE on our own features: the featurizer on tiny random models, the score on synthetic features,
and one end-to-end run on SmolLM2 (slow)."""

import numpy as np
import pytest
import torch

from experiments.metrics.mauve_score import (MIN_SAMPLES, auto_num_buckets, last_token_features, mauve_caveat,
                                             mauve_from_features, mauve_score, measure_mauve, reference_features)


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_gpt2"])
def test_features_are_the_last_hidden_state_of_each_text_alone(kind, tokenizer):
    from experiments.models import load_model

    model, _ = load_model(kind)
    texts = ["Hello there, how are you today?", "Short.", "", "A somewhat longer sentence about cats."]
    features = last_token_features(texts, model, tokenizer, batch_size=3)
    assert features.shape == (3, model.config.hidden_size)  # the empty text is dropped, as MAUVE does
    for row, text in enumerate([t for t in texts if t]):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            expected = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        # Batched with right padding, each row equals the text run alone.
        np.testing.assert_allclose(features[row], expected.numpy(), atol=1e-4)


def test_features_truncate_long_texts(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    text = "one two three four five six"
    first_three = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:3]])
    with torch.no_grad():
        expected = model(first_three, output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(last_token_features([text], model, tokenizer, max_text_length=3)[0], expected, atol=1e-4)


def test_features_need_a_non_empty_text(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    with pytest.raises(ValueError, match="non-empty text"):
        last_token_features(["", ""], model, tokenizer)


def test_auto_num_buckets_is_one_per_ten_texts():
    assert auto_num_buckets(5, 5) == 2
    assert auto_num_buckets(100, 250) == 10
    assert auto_num_buckets(1000, 1000) == 100


def test_mauve_is_high_for_one_distribution_and_low_for_two():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(40, 16))
    same = mauve_from_features(p, rng.normal(size=(40, 16)), seed=0)
    apart = mauve_from_features(p, rng.normal(size=(40, 16)) + 5.0, seed=0)
    assert same > 0.9
    assert apart < 0.1
    # Same features and seed: the same number.
    assert mauve_from_features(p, p + 5.0, seed=0) == mauve_from_features(p, p + 5.0, seed=0)


def test_mauve_rejects_bad_shapes_and_buckets():
    p = np.zeros((4, 8))
    with pytest.raises(ValueError, match="differ in width"):
        mauve_from_features(p, np.zeros((4, 6)))
    with pytest.raises(ValueError, match="num_buckets=20 exceeds the 8 texts"):
        mauve_from_features(p, p, num_buckets=20)
    with pytest.raises(ValueError, match="num_buckets=1"):
        mauve_from_features(p, p, num_buckets=1)
    with pytest.raises(ValueError, match="q_features must be a non-empty"):
        mauve_from_features(p, np.zeros((0, 8)))


def test_mauve_score_featurizes_both_sides_then_scores(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    human = [f"Day {i}: the river rose." for i in range(6)]
    generated = [f"Day {i}: the the the the." for i in range(6)]
    expected = mauve_from_features(
        last_token_features(human, model, tokenizer), last_token_features(generated, model, tokenizer), seed=4
    )
    assert mauve_score(generated, human, model, tokenizer, seed=4) == expected


def test_measure_mauve_reports_the_samples_it_rests_on(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    human = [f"Day {i}: the river rose." for i in range(6)]
    generated = [f"Day {i}: the the the the." for i in range(5)] + [""]
    result = measure_mauve(generated, human, model, tokenizer, seed=4)
    assert result.samples == 5 and result.not_measurable == ""  # the smaller side, its empty text dropped
    assert result.score == mauve_score(generated, human, model, tokenizer, seed=4)
    empty_humans = measure_mauve(generated, ["", ""], model, tokenizer)
    assert empty_humans.samples == 0 and empty_humans.not_measurable == "every human text empty"


def test_reference_features_computed_once_give_the_same_mauve_and_interval(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    human = [f"Day {i}: the river rose." for i in range(5)] + [""]  # an empty reference is dropped on both routes
    generated = [f"Day {i}: the the the the." for i in range(6)]
    p = reference_features(human, model, tokenizer)
    assert p.shape[0] == 5 and reference_features(["", ""], model, tokenizer) is None
    given = measure_mauve(generated, human, model, tokenizer, seed=4, resamples=50, reference_features=p)
    computed = measure_mauve(generated, human, model, tokenizer, seed=4, resamples=50)
    assert (given.score, given.samples, given.interval) == (computed.score, computed.samples, computed.interval)
    with pytest.raises(ValueError, match="reference_features has 4 rows but 5 of the 6 references are non-empty"):
        measure_mauve(generated, human, model, tokenizer, reference_features=p[:4])


def test_mauve_caveat_below_the_minimum_or_on_random_features_only(caplog):
    assert mauve_caveat(MIN_SAMPLES, "smollm2", random_weights=False) is None
    assert not caplog.records  # nothing to warn about
    few = mauve_caveat(MIN_SAMPLES - 1, "smollm2", random_weights=False)
    assert few.startswith(f"{MIN_SAMPLES - 1} samples per side, below the minimum of {MIN_SAMPLES}")
    assert "random" not in few
    random_only = mauve_caveat(5000, "tiny_gpt2", random_weights=True)
    assert random_only == "features from tiny_gpt2, a model with random weights: the score says nothing about the text"


@pytest.mark.slow
def test_mauve_on_smollm2_features_separates_unrelated_text(smollm2):
    model, tokenizer = smollm2
    subjects = ["The river", "My neighbour", "The old train", "A small bird", "The city council"]
    verbs = ["moved slowly past the mill", "talked about the weather"]
    pool = [f"{s} {v} on day {i}." for i in range(2) for s in subjects for v in verbs]
    far = [f"{i} {i} {i} {i} {i} {i}" for i in range(10)]
    pool_features = last_token_features(pool, model, tokenizer)
    human, close = pool_features[0::2], pool_features[1::2]  # two samples of one distribution
    far_features = last_token_features(far, model, tokenizer)
    assert mauve_from_features(human, close, seed=0) > mauve_from_features(human, far_features, seed=0)
