"""The decoding configs for issue 12's processors (conf/decoding/top_h.yaml, penalties.yaml): the runner checks
them, passes their values to decoding.generate unchanged, and a batched sweep over top_h shares one generation
whose samples equal each job run alone."""

import pytest

from experiments.batched_sweep import group_jobs
from experiments.run import check_config, decoding_params
from tests.experiments.runner_helpers import TINY_RUN, compose_config, sweep_and_alone


def config(tmp_path, *overrides, name="job"):
    return compose_config([*TINY_RUN, "task=generate", *overrides], tmp_path / name)


@pytest.mark.parametrize("choice, expected", [
    ("top_h", dict(do_sample=True, top_k=None, top_h=0.4)),
    ("penalties", dict(do_sample=True, top_k=None, top_p=0.95, repetition_penalty=1.2, no_repeat_ngram_size=3)),
])
def test_the_runner_checks_and_passes_the_config(tmp_path, choice, expected):
    cfg = config(tmp_path, f"decoding={choice}")
    params = check_config(cfg)
    # top_k: 0 resolves to "off" (None), as generate treats it
    assert {k: getattr(params, k) if k != "top_k" else (params.top_k or None) for k in expected} == expected
    assert decoding_params(cfg)["max_new_tokens"] == cfg.prompts.continuation_tokens


def test_a_bad_top_h_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"decoding=top_h: top_h=1.5 is not allowed: use a number in \(0, 1\]"):
        check_config(config(tmp_path, "decoding=top_h", "decoding.top_h=1.5"))


def test_a_top_h_sweep_shares_one_generation_equal_to_each_job_alone(tmp_path):
    cfgs = [config(tmp_path, "decoding=top_h", f"decoding.top_h={value}", name=f"job{i}")
            for i, value in enumerate((0.2, 0.6, 0.9))]
    # not top_h=1.0: there the last candidate's running entropy sum equals the bound by construction, so float
    # rounding of the batched forward (1e-6) decides whether it stays; the tokens stay, the processed
    # log-probs move by its mass (6e-3 on this tiny model's flat distribution)
    assert group_jobs(cfgs) == [[0, 1, 2]]
    runs = [batched for batched, _ in sweep_and_alone(cfgs)]
    assert [s["continuation"] for s in runs[0].samples] != [s["continuation"] for s in runs[2].samples]  # top_h matters
