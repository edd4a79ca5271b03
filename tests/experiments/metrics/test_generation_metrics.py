"""The aggregator: which keys appear when, that it agrees with the plain functions, and its errors."""

import logging
import math

import pytest

from experiments.metrics import compute_generation_metrics, score_generations
from experiments.metrics.mauve_score import MIN_SAMPLES
from experiments.metrics.diversity import diversity_metrics
from experiments.metrics.repetition import repetition_pct
from experiments.metrics.self_bleu import self_bleu
from experiments.metrics.tokens import tokenize
from experiments.metrics.zipf import zipf_coefficient

TEXTS = [
    "The cat sat on the mat and looked at the door.",
    "A dog ran through the park, then it ran back home.",
    "I think I think I think I think I think I think",
    "",
]
REFERENCES = [
    "The cat lay on the rug and watched the door.",
    "A dog walked in the park before going home.",
    "She thought about the question for a while.",
    "Nothing more was said.",
]
COUNT_KEYS = {
    "distinct_1", "distinct_2", "distinct_3", "distinct_4", "rep_2", "rep_3", "rep_4", "diversity",
    "self_bleu4", "zipf", "repetition_pct", "mean_length",
}
REFERENCE_KEYS = {"bleu", "chrf", "rougeL"}


def test_without_references_only_the_count_metrics(tokenizer):
    out = compute_generation_metrics(TEXTS, None, tokenizer)
    assert set(out) == COUNT_KEYS
    assert all(isinstance(value, float) for value in out.values())


def test_with_references_adds_bleu_chrf_rouge_but_mauve_needs_a_features_model(tokenizer):
    assert set(compute_generation_metrics(TEXTS, REFERENCES, tokenizer)) == COUNT_KEYS | REFERENCE_KEYS


def test_with_a_features_model_adds_mauve(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    out = compute_generation_metrics(TEXTS, REFERENCES, tokenizer, features_model=model, seed=0)
    assert set(out) == COUNT_KEYS | REFERENCE_KEYS | {"mauve", "mauve_samples"}
    assert 0.0 < out["mauve"] <= 1.0 + 1e-9
    assert out["mauve_samples"] == 3.0  # four texts a side, the empty generation dropped as MAUVE drops it


def test_values_are_those_of_the_plain_functions_on_the_same_tokens(tokenizer):
    out = compute_generation_metrics(TEXTS, None, tokenizer, seed=3, self_bleu_sample_size=3)
    tokens = tokenize(TEXTS, tokenizer)
    for key, value in diversity_metrics(tokens).items():
        assert out[key] == pytest.approx(value)
    assert out["self_bleu4"] == pytest.approx(self_bleu(tokens, sample_size=3, seed=3))
    assert out["zipf"] == pytest.approx(zipf_coefficient(tokens))
    assert out["repetition_pct"] == pytest.approx(repetition_pct(tokens))
    assert out["mean_length"] == pytest.approx(sum(map(len, tokens)) / 4)


def test_whitespace_tokenization_needs_no_tokenizer():
    out = compute_generation_metrics(["a b a b", "a b c"], None, None, tokenization="whitespace")
    assert out["mean_length"] == pytest.approx(3.5)
    assert out["distinct_2"] == pytest.approx(3 / 5)
    assert out["rep_2"] == pytest.approx(20.0)
    assert out["repetition_pct"] == 0.0


def test_undefined_values_are_nan_not_errors():
    out = compute_generation_metrics(["word word word"], None, None, tokenization="whitespace")
    assert math.isnan(out["self_bleu4"])  # one text has no others to compare with
    assert math.isnan(out["zipf"])  # one distinct token: no slope
    out = compute_generation_metrics(["", ""], None, None, tokenization="whitespace")
    assert out["mean_length"] == 0.0 and out["distinct_1"] == 0.0 and out["diversity"] == 1.0


def test_every_nan_comes_with_its_reason():
    scores = score_generations(["word word word"], None, None, tokenization="whitespace")
    assert scores.not_measurable == {"self_bleu4": "n=1", "zipf": "fewer than 2 distinct tokens"}
    assert {k for k, v in scores.values.items() if math.isnan(v)} == set(scores.not_measurable)
    assert scores.caveats == {}
    defined = score_generations(["a b c", "c d e f"], None, None, tokenization="whitespace")
    assert defined.not_measurable == {} and not any(math.isnan(v) for v in defined.values.values())


def test_mauve_on_few_samples_and_random_features_carries_a_caveat_and_warns_once(tiny_llama_with_tokenizer,
                                                                                   caplog):
    model, tokenizer = tiny_llama_with_tokenizer
    with caplog.at_level(logging.WARNING, logger="experiments.metrics.mauve_score"):
        scores = score_generations(TEXTS, REFERENCES, tokenizer, features_model=model, seed=0,
                                   features_name="tiny_llama", features_random=True)
    caveat = scores.caveats["mauve"]
    assert f"3 samples per side, below the minimum of {MIN_SAMPLES}" in caveat
    assert "tiny_llama, a model with random weights" in caveat
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"MAUVE caveat: {caveat}"]
    assert "mauve" not in scores.not_measurable and scores.values["mauve"] > 0.0


def test_mauve_of_only_empty_generations_is_nan_with_the_reason(tiny_llama_with_tokenizer):
    model, tokenizer = tiny_llama_with_tokenizer
    scores = score_generations(["", ""], REFERENCES[:2], tokenizer, features_model=model)
    assert math.isnan(scores.values["mauve"]) and scores.values["mauve_samples"] == 0.0
    assert scores.not_measurable["mauve"] == "every generated text empty"
    assert "mauve" not in scores.caveats  # nothing to caveat: there is no number


def test_bad_inputs_raise(tokenizer):
    with pytest.raises(ValueError, match="non-empty list"):
        compute_generation_metrics([], None, tokenizer)
    with pytest.raises(ValueError, match="non-empty list"):
        compute_generation_metrics("a text", None, tokenizer)
    with pytest.raises(ValueError, match="4 texts and 1 references"):
        compute_generation_metrics(TEXTS, ["x"], tokenizer)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        compute_generation_metrics(TEXTS, None, None)
    with pytest.raises(ValueError, match="features_model needs a tokenizer"):
        compute_generation_metrics(TEXTS, REFERENCES, None, tokenization="whitespace", features_model=object())


def test_submodules_stay_modules():
    # Re-exporting a function named like its module would shadow the module on the package.
    import experiments.metrics.self_bleu as module

    assert hasattr(module, "sample_indices")


@pytest.mark.slow
def test_smollm2_as_features_model(smollm2, tokenizer):
    model, smol_tokenizer = smollm2
    out = compute_generation_metrics(TEXTS * 2, REFERENCES * 2, tokenizer, features_model=model,
                                     features_tokenizer=smol_tokenizer, seed=0)
    assert 0.0 < out["mauve"] <= 1.0 + 1e-9


def test_the_runner_records_a_reason_for_every_nan_and_names_mauves_features(tiny_llama_with_tokenizer, tmp_path):
    """experiments.run.quality_metrics on the real composed config: generations that are all empty (EOS at once)
    leave gen/ppl and gen/mauve not measurable, each with its reason, under the runner's key names."""
    from experiments.run import quality_metrics
    from tests.experiments.runner_helpers import TINY_RUN, compose_config

    model, tokenizer = tiny_llama_with_tokenizer
    cfg = compose_config([*TINY_RUN, "metrics.mauve=true"], tmp_path / "job")
    out = quality_metrics(cfg, ["", ""], REFERENCES[:2], ["Once", "Then"], tokenizer, model, tokenizer, "gen", True)
    assert out["meta/not_measurable"] == {"gen/ppl": "every text empty", "gen/mauve": "every generated text empty",
                                          "gen/zipf": "fewer than 2 distinct tokens"}
    assert {k for k, v in out.items() if isinstance(v, float) and math.isnan(v)} == set(out["meta/not_measurable"])
    assert out["gen/mauve_samples"] == 0.0 and out["meta/caveats"] == {}
    assert out["meta/mauve_features"] == "tiny_llama (random weights)"
    fine = quality_metrics(cfg, TEXTS[:2], REFERENCES[:2], ["Once", "Then"], tokenizer, model, tokenizer, "gen", True)
    assert fine["meta/not_measurable"] == {}
    assert "tiny_llama, a model with random weights" in fine["meta/caveats"]["gen/mauve"]
    human = quality_metrics(cfg, TEXTS[:1], None, ["Once"], tokenizer, model, tokenizer, "human", False)
    assert human["meta/not_measurable"] == {"human/self_bleu4": "n=1"} and "meta/mauve_features" not in human
