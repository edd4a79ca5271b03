"""The runner side of speculative decoding: conf/decoding/speculative_{lookup,self,draft}.yaml and the draft/ group.

Each config runs end to end on the tiny Llama, writes speed/acceptance_rate and speed/tokens_per_target_forward,
and (greedy) writes the samples plain greedy writes; bad combinations fail before any model loads; speculative
jobs never share a batched sweep generation (its loop would ignore the proposer); a real multirun works with
both launchers.
"""

import json
import math

import pytest
import torch

from experiments.batched_sweep import group_jobs
from experiments.run import check_config, run
from tests.experiments.runner_helpers import TINY_RUN, compose_config, run_cli

# Longer prompts than TINY_RUN's: prompt lookup then finds n-grams to propose from.
SPEC_RUN = [*TINY_RUN, "task=generate", "logger=none", "metrics.mauve=false", "prompts.prompt_tokens=32",
            "prompts.continuation_tokens=24"]
RATES = ("speed/acceptance_rate", "speed/tokens_per_target_forward")
# (decoding overrides, tokens proposed per step at most)
CONFIGS = {
    "lookup": (["decoding=speculative_lookup", "decoding.max_matching_ngram_size=1"], 5),
    "self": (["decoding=speculative_self", "decoding.draft_layers=1"], 4),  # the tiny Llama has 2 layers
    "draft": (["decoding=speculative_draft", "draft=tiny_llama"], 4),
}


def run_job(tmp_path, name, *overrides):
    out = tmp_path / name
    run(compose_config([*SPEC_RUN, *overrides], out))
    metrics = json.loads((out / "metrics.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return metrics, samples


def assert_greedy_text(samples, greedy):
    """The same tokens, texts and finish reasons; log-probs to float32 rounding (a k + 1 slot verify forward)."""
    assert len(samples) == len(greedy) > 0
    for s, g in zip(samples, greedy):
        assert (s["token_ids"], s["continuation"], s["finish_reason"]) == (g["token_ids"], g["continuation"],
                                                                             g["finish_reason"])
        assert s["token_logprobs_raw"] == pytest.approx(g["token_logprobs_raw"], abs=1e-4)


@pytest.fixture(scope="module")
def greedy(tmp_path_factory):
    return run_job(tmp_path_factory.mktemp("greedy"), "greedy", "decoding=greedy")


def test_a_plain_run_has_no_draft_and_no_speculative_metrics(greedy, tmp_path):
    metrics, _ = greedy
    assert not set(RATES) & set(metrics)
    assert "draft" not in compose_config([], tmp_path / "default")  # default fingerprints unchanged


@pytest.mark.parametrize("name", CONFIGS)
def test_each_speculative_config_logs_its_rates_and_writes_greedys_samples(name, greedy, tmp_path):
    overrides, k = CONFIGS[name]
    metrics, samples = run_job(tmp_path, name, *overrides)
    acceptance, per_forward = (metrics[key] for key in RATES)
    assert acceptance is not None, metrics["meta/not_measurable"]  # something was proposed
    assert 0.0 <= acceptance <= 1.0
    assert 1.0 <= per_forward <= k + 1
    assert metrics["speed/new_tokens"] == greedy[0]["speed/new_tokens"]
    assert_greedy_text(samples, greedy[1])


def test_a_draft_equal_to_the_target_has_every_proposal_accepted(greedy, tmp_path):
    metrics, samples = run_job(tmp_path, "twin", "decoding=speculative_draft", "draft=tiny_llama", "draft.seed=0")
    assert metrics["speed/acceptance_rate"] == 1.0
    assert metrics["speed/tokens_per_target_forward"] > 1.0
    assert_greedy_text(samples, greedy[1])


def test_sampling_with_a_draft_is_speculative_and_seeded(tmp_path):
    first, samples = run_job(tmp_path, "a", "decoding=top_k", "draft=tiny_llama", "draft.seed=0")
    _, again = run_job(tmp_path, "b", "decoding=top_k", "draft=tiny_llama", "draft.seed=0")
    assert first["speed/acceptance_rate"] is not None
    assert [s["token_ids"] for s in samples] == [s["token_ids"] for s in again]


# A target that cannot be loaded: an error naming the draft setting shows that the check ran before loading.
UNLOADABLE = ["model=hf", "model.name=/nonexistent/target/model", "model.device=cpu"]


@pytest.mark.parametrize("overrides, message", [
    (["decoding=speculative_draft"], r"decoding.num_assistant_tokens=4, which only a draft reads.*pass draft="),
    (["decoding=greedy", "+decoding.assistant_model=tiny_llama"], r"decoding.assistant_model='tiny_llama' is not "
                                                                 r"allowed.*pass draft="),
    (["decoding=speculative_lookup", "draft=tiny_llama"], r"draft=tiny_llama.*not allowed together"),
    (["decoding=beam", "draft=tiny_llama"], r"draft=tiny_llama.*num_beams=\d+"),
    (["decoding=greedy", "draft=tiny_llama", "task=lm_eval"], r"draft=tiny_llama is not allowed with task.lm_eval"),
    (["decoding=speculative_lookup", "decoding.prompt_lookup_num_tokens=0"], r"prompt_lookup_num_tokens=0"),
    (["decoding=greedy", "draft=hf"], r"draft.name is required"),
])
def test_a_bad_combination_fails_before_any_model_loads(overrides, message, tmp_path):
    cfg = compose_config([*SPEC_RUN, *UNLOADABLE, *overrides], tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not (tmp_path / "run" / "samples.jsonl").exists()


def test_draft_layers_beyond_the_model_fail_before_generation(tmp_path):
    cfg = compose_config([*SPEC_RUN, "decoding=speculative_self"], tmp_path / "run")  # 8 layers of 2
    with pytest.raises(ValueError, match=r"draft_layers=8.*use 1 <= draft_layers < 2"):
        run(cfg)
    assert not (tmp_path / "run" / "samples.jsonl").exists()


@pytest.mark.parametrize("overrides", [
    ["decoding=speculative_lookup", "decoding.do_sample=true"],
    ["decoding=top_k", "draft=tiny_llama"],
    ["decoding=speculative_self", "decoding.do_sample=true", "decoding.draft_layers=1"],
])
def test_speculative_jobs_never_share_a_batched_generation(overrides, tmp_path):
    cfgs = [compose_config([*SPEC_RUN, *overrides, f"+decoding.temperature={t}"], tmp_path / f"job{i}")
            for i, t in enumerate((0.5, 1.0))]
    check_config(cfgs[0])
    assert group_jobs(cfgs) == []
    plain = [compose_config([*SPEC_RUN, "decoding=top_k", f"+decoding.temperature={t}"], tmp_path / f"p{i}")
             for i, t in enumerate((0.5, 1.0))]
    assert group_jobs(plain) == [[0, 1]]  # the same sweep without a proposer is batched


def test_generate_sweep_refuses_speculative_configurations():
    from decoding import generate_sweep
    from experiments.models import build_tiny_model

    model = build_tiny_model("tiny_llama")
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    configs = [dict(prompt_lookup_num_tokens=3, do_sample=True, temperature=t) for t in (0.5, 1.0)]
    generators = [torch.Generator().manual_seed(0) for _ in configs]
    with pytest.raises(ValueError, match=r"configs\[0\] is speculative.*one by one"):
        generate_sweep(model, ids, configs=configs, generators=generators, max_new_tokens=4)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["batched", "basic"])
@pytest.mark.parametrize("sweep", [
    ["decoding=speculative_lookup", "decoding.prompt_lookup_num_tokens=3,5"],
    ["decoding=speculative_draft", "draft=tiny_llama", "decoding.num_assistant_tokens=2,4"],
], ids=["lookup", "draft"])
def test_a_multirun_over_speculative_settings(sweep, launcher, tmp_path):
    done = run_cli(["-m", *SPEC_RUN, f"hydra/launcher={launcher}", "prompts.num_prompts=2", *sweep], tmp_path,
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batched generation" not in done.stderr + done.stdout
    folders = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(folders) == 2
    texts = []
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["speed/sweep_configurations"] == 1.0
        assert metrics["speed/tokens_per_target_forward"] >= 1.0
        assert metrics["speed/acceptance_rate"] is None or 0 <= metrics["speed/acceptance_rate"] <= 1
        assert not math.isnan(metrics["speed/tokens_per_target_forward"])
        texts.append([json.loads(line)["token_ids"] for line in (folder / "samples.jsonl").read_text().splitlines()])
    assert texts[0] == texts[1]  # greedy: the number of proposed tokens changes the speed, not the text
