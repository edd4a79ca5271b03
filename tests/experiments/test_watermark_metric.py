"""gen/watermark_* in metrics.json: the detector's numbers over a run's generations, human text as the control.

What must hold: the metric is the mean of transformers' `WatermarkDetector` z over the texts; a run with
`decoding=watermark` writes gen/watermark_z well above the threshold and human/watermark_z near 0, every key
documented in the README; a run without a watermark writes no watermark key; a bias sweep is one batched
generation whose jobs equal their runs alone.
"""

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, WatermarkingConfig
from transformers import WatermarkDetector as TransformersDetector

from experiments.batched_sweep import group_jobs
from experiments.metrics.watermark import TOO_SHORT, watermark_metrics
from experiments.run import run
from tests.experiments.runner_helpers import TINY_RUN, compose_config, sweep_and_alone
from tests.experiments.test_run import documented_key_patterns

WATERMARK_RUN = [*TINY_RUN, "task=generate", "logger=none", "metrics.mauve=false", "decoding=watermark",
                 "prompts.continuation_tokens=40"]


def test_metric_is_the_mean_of_transformers_z():
    config = WatermarkingConfig(greenlist_ratio=0.3, seeding_scheme="selfhash", context_width=2)
    gen = torch.Generator().manual_seed(0)
    texts = torch.randint(0, 127, (5, 20), generator=gen)  # no leading BOS (127) for transformers to drop
    model_config = GPT2Config(vocab_size=128, bos_token_id=127, eos_token_id=127)
    theirs = TransformersDetector(model_config, "cpu", config)(texts, return_dict=True)
    values, why = watermark_metrics(texts.tolist() + [[7, 8]], config, 128)  # the last one is too short
    assert why == {} and values["gen/watermark_scored"] == 5
    assert values["gen/watermark_z"] == pytest.approx(float(np.mean(theirs.z_score)), rel=1e-12)
    assert values["gen/watermark_detected_pct"] == 100.0 * float(np.mean(theirs.z_score > 4))
    assert values["gen/watermark_green_fraction"] == pytest.approx(
        theirs.num_green_tokens.sum() / theirs.num_tokens_scored.sum(), rel=1e-12)


def test_each_score_has_a_seeded_bootstrap_interval_over_the_texts():
    from experiments.metrics.intervals import DEFAULT_RESAMPLES, bootstrap_picks

    config = WatermarkingConfig(bias=2.0)
    texts = torch.randint(0, 120, (12, 16), generator=torch.Generator().manual_seed(1)).tolist()
    values, _ = watermark_metrics(texts, config, 128, seed=3)
    again, _ = watermark_metrics(texts, config, 128, seed=3)
    assert values == again
    for name in ("z", "detected_pct", "green_fraction"):
        key = f"gen/watermark_{name}"
        assert values[f"{key}/ci95_low"] <= values[key] <= values[f"{key}/ci95_high"]
    # the z interval by hand: the same draws (bootstrap_picks), the mean z of each resample, its percentiles
    z = np.array([watermark_metrics([t], config, 128)[0]["gen/watermark_z"] for t in texts])
    means = z[bootstrap_picks(len(texts), DEFAULT_RESAMPLES, 3)].mean(axis=1)
    assert values["gen/watermark_z/ci95_low"] == pytest.approx(np.percentile(means, 2.5), rel=1e-9)
    assert values["gen/watermark_z/ci95_high"] == pytest.approx(np.percentile(means, 97.5), rel=1e-9)


def test_nothing_to_score_is_not_measurable():
    values, why = watermark_metrics([[1], []], dict(context_width=1), 100, prefix="human")
    assert values["human/watermark_scored"] == 0 and math.isnan(values["human/watermark_z"])
    assert why == {f"human/watermark_{k}": TOO_SHORT for k in ("z", "detected_pct", "green_fraction")}


@pytest.fixture(scope="module")
def watermark_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("watermark") / "job"
    cfg = compose_config([*WATERMARK_RUN, "decoding.watermarking_config.bias=6"], out)
    return out, run(cfg)


def test_runner_writes_the_watermark_z(watermark_run):
    """Bias 6 on the tiny random model's flat distribution makes nearly every token green: 4 texts of 39 scored
    tokens each give z near 12 (z > 4 is the paper's threshold). The human continuations are chance: z ~ N(0, 1)."""
    out, metrics = watermark_run
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["gen/watermark_z"] == metrics["gen/watermark_z"] > 8
    assert stored["gen/watermark_detected_pct"] == 100.0 and stored["gen/watermark_scored"] == 4
    assert stored["gen/watermark_green_fraction"] > 0.9
    assert stored["gen/watermark_z/ci95_low"] <= stored["gen/watermark_z"] <= stored["gen/watermark_z/ci95_high"]
    assert abs(stored["human/watermark_z"]) < 4 and stored["human/watermark_detected_pct"] == 0.0
    assert 0.05 < stored["human/watermark_green_fraction"] < 0.5
    patterns = documented_key_patterns()
    assert "gen/watermark_z" in patterns
    from fnmatch import fnmatchcase
    undocumented = [k for k in stored if not any(fnmatchcase(k, p) for p in patterns)]
    assert not undocumented, f"metrics.json keys missing from the README's metrics table: {undocumented}"


def test_a_run_without_a_watermark_has_no_watermark_keys(tmp_path):
    metrics = run(compose_config([*WATERMARK_RUN, "decoding=sample", "prompts.continuation_tokens=4"],
                                 tmp_path / "job"))
    assert "gen/samples" in metrics and not [k for k in metrics if "watermark" in k]


def test_a_bias_sweep_is_one_batched_generation_equal_to_each_job_alone(tmp_path):
    cfgs = [compose_config([*WATERMARK_RUN, f"decoding.watermarking_config.bias={bias}", *extra], tmp_path / f"j{i}")
            for i, (bias, extra) in enumerate([(1, []), (4, []), (2, ["decoding.watermarking_config.greenlist_ratio=0.5"])])]
    assert group_jobs(cfgs) == [[0, 1, 2]]
    sweep_and_alone(cfgs)


@pytest.mark.parametrize("override, message", [
    ("decoding.watermarking_config.bias=nan", "watermarking_config.bias=nan is not allowed"),
    ("decoding.watermarking_config.seeding_scheme=hash", "watermarking_config.seeding_scheme='hash'"),
    ("+decoding.watermarking_config.context=2", r"watermarking_config.context=2 is not a watermark setting \(did you "
                                                "mean watermarking_config.context_width"),
])
def test_bad_watermark_values_fail_before_anything_is_written(override, message, tmp_path):
    from experiments.run import check_config

    cfg = compose_config([*WATERMARK_RUN, override], tmp_path / "job")
    with pytest.raises(ValueError, match=message):
        check_config(cfg)
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not (tmp_path / "job" / "samples.jsonl").exists()
