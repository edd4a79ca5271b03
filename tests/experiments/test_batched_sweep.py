"""The batched sweep in process: which jobs share a generation, and that sharing changes no sample.

The real multiruns (both launchers, resume, mixed sweeps) are in tests/test_sweeps.py.
"""

import json

import pytest

from experiments.batched_sweep import batch_key, group_jobs
from experiments.generation import GenerationRun, drop_precomputed, precomputed_run, stash_precomputed
from experiments.run import build, check_config, fingerprint, generation_options, prompt_pairs, run
from tests.experiments.runner_helpers import TINY_RUN, compose_config, sweep_and_alone

TOP_P = ["decoding=top_p"]


@pytest.fixture()
def configs(tmp_path):
    """Composes configs as a sweep's jobs see them: `configs(["decoding.top_p=0.5"], [...], ...)`."""
    def compose(*override_sets):
        return [compose_config([*TINY_RUN, "task=generate", *overrides], tmp_path / f"job{i}")
                for i, overrides in enumerate(override_sets)]
    return compose


def test_sampling_parameters_share_one_group(configs):
    cfgs = configs([*TOP_P, "decoding.top_p=0.5"], [*TOP_P, "decoding.top_p=0.7"], [*TOP_P, "decoding.top_p=0.9"])
    assert group_jobs(cfgs) == [[0, 1, 2]]


def test_methods_that_differ_only_in_row_parameters_share_a_group(configs):
    # Holtzman et al.'s table and study 1's samplers: everything but beam search fits one batch (decoding.name
    # differs too); typical and eta run on their own rows of it (decoding.processors.rows.EachOnItsRows).
    methods = ["greedy", "sample", "temperature", "top_k", "top_k640", "top_k40_t07", "top_p", "min_p", "typical",
               "eta", "top_n_sigma", "beam16"]
    cfgs = configs(*[[f"decoding={m}"] for m in methods])
    assert group_jobs(cfgs) == [list(range(len(methods) - 1))]


def test_other_changes_split_the_groups(configs):
    cfgs = configs([*TOP_P, "decoding.top_p=0.5", "prompts.continuation_tokens=4"],
                   [*TOP_P, "decoding.top_p=0.9", "prompts.continuation_tokens=4"],
                   [*TOP_P, "decoding.top_p=0.5", "prompts.continuation_tokens=8"],
                   [*TOP_P, "decoding.top_p=0.9", "prompts.continuation_tokens=8"],
                   [*TOP_P, "decoding.top_p=0.9", "seed=1"],  # its own generator stream and prompts: alone
                   ["decoding=typical"],  # typical and epsilon: per-row parameters, so with the tiny runs'
                   ["decoding=epsilon"])  # continuation_tokens (8) they join the top-p jobs at 8
    assert group_jobs(cfgs) == [[0, 1], [2, 3, 5, 6]]


@pytest.mark.parametrize("odd_one", [
    ["decoding=beam"],                                       # beam search
    [*TOP_P, "decoding.top_p=0.3", "+decoding.num_beams=2"],  # beam sampling
    [*TOP_P, "decoding.top_p=1.5"],                          # invalid: its own run reports it
    [*TOP_P, "decoding.top_p=0.3", "task=perplexity"],       # generates nothing
])
def test_jobs_that_cannot_share_run_alone(configs, odd_one):
    cfgs = configs([*TOP_P, "decoding.top_p=0.5"], odd_one, [*TOP_P, "decoding.top_p=0.9"])
    assert batch_key(cfgs[1]) is None
    assert group_jobs(cfgs) == [[0, 2]]


def test_groups_of_one_and_repeated_configs_are_not_batched(configs):
    cfgs = configs([*TOP_P, "decoding.top_p=0.5"], [*TOP_P, "decoding.top_p=0.5", "name=again"])
    assert fingerprint(cfgs[0]) == fingerprint(cfgs[1])  # the same experiment: one generation serves both
    assert group_jobs(cfgs) == []


def test_large_groups_are_cut_into_nearly_equal_parts(configs):
    cfgs = configs(*[[*TOP_P, f"decoding.top_p={p}"] for p in (0.5, 0.6, 0.7, 0.8, 0.9)])
    assert group_jobs(cfgs, max_configurations=3) == [[0, 1, 2], [3, 4]]
    assert group_jobs(cfgs, max_configurations=None) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="max_configurations=0"):
        group_jobs(cfgs, max_configurations=0)


def test_sweep_generation_equals_each_configuration_alone(configs):
    cfgs = configs(["decoding=greedy"], [*TOP_P, "decoding.top_p=0.5"], ["decoding=top_k40_t07"])
    for batched, alone in sweep_and_alone(cfgs):
        speed = batched.speed_metrics()
        assert speed["speed/sweep_configurations"] == 3 and speed["speed/sweep_tok_s"] > 0
        assert speed["speed/new_tokens"] == alone.speed_metrics()["speed/new_tokens"]
        assert alone.speed_metrics()["speed/sweep_configurations"] == 1
        assert "speed/sweep_tok_s" not in alone.speed_metrics()


def test_run_takes_a_precomputed_generation_instead_of_generating(configs, monkeypatch):
    cfg = configs([*TOP_P, "logger=none", "metrics.mauve=false"])[0]
    made = GenerationRun(sweep_configurations=2, prefill_seconds=1.0, decode_seconds=1.0, new_tokens=4,
                         decode_tokens=2, prompt_tokens=8, ttft=[2.0], sweep_new_tokens=8, sweep_seconds=4.0)
    documents = build(cfg.dataset)
    _, tokenizer = build(cfg.model)
    for pair in prompt_pairs(cfg, documents, tokenizer):
        made.samples.append({"doc_id": pair["doc_id"], "start": pair["start"], "prompt": pair["prompt"],
                             "continuation": " the Union", "human": pair["continuation"], "token_ids": [1, 2],
                             "token_logprobs": [-1.0, -1.0], "token_logprobs_raw": [-1.0, -1.0],
                             "finish_reason": "length", "sequence_score": None})

    def no_generation(*args, **kwargs):
        raise AssertionError("generated although a precomputed generation was stashed")

    monkeypatch.setattr("experiments.generation.generate_continuations", no_generation)
    stash_precomputed(fingerprint(cfg), made)
    try:
        metrics = run(cfg)
    finally:
        drop_precomputed(fingerprint(cfg))
    assert precomputed_run(fingerprint(cfg)) is None
    out = cfg.paths.output_dir
    written = [json.loads(line) for line in open(f"{out}/samples.jsonl")]
    assert written == made.samples
    assert metrics["speed/sweep_configurations"] == 2 and metrics["speed/sweep_tok_s"] == 2.0
    assert metrics["speed/tok_s"] == 2.0 and metrics["gen/samples"] == len(made.samples)


def test_compile_is_passed_only_when_the_cache_config_asks(configs):
    plain_static, compiled = configs(["cache=static"], ["cache=static", "+cache.compile=true"])
    assert "compile" not in generation_options(plain_static)
    assert generation_options(compiled)["compile"] is True
    assert check_config(compiled).compile is True
    wrong = configs(["cache=dynamic", "+cache.compile=true"])[0]
    with pytest.raises(ValueError, match="compile=True"):
        check_config(wrong)
