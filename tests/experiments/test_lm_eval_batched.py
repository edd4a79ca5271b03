"""task=lm_eval sweeps under the batched launcher: which jobs share one evaluation, that a shared evaluation gives
each job the metrics, lm-eval samples and W&B run of its lone run, resume, and the one-by-one fallback."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from omegaconf import open_dict, read_write

pytest.importorskip("lm_eval")

from experiments.batched_sweep import BatchedLauncher, Group, Job, batch_key, group_jobs  # noqa: E402
from experiments.generation import drop_precomputed, precomputed_run  # noqa: E402
from experiments.logging import find_offline_runs, read_offline_run  # noqa: E402
from experiments.run import fingerprint, run  # noqa: E402
from tests.experiments.runner_helpers import compose_config, run_cli  # noqa: E402

LM_EVAL = ["task=lm_eval", "model=tiny_llama", "eval.limit=2", "eval.bootstrap_resamples=50", "logger=none"]
TEMPERATURE = ["decoding=temperature"]


@pytest.fixture()
def configs(tmp_path):
    """Composes task=lm_eval configs as a sweep's jobs see them: `configs([...], [...], ...)`."""
    def compose(*override_sets):
        return [compose_config([*LM_EVAL, *overrides], tmp_path / f"job{i}")
                for i, overrides in enumerate(override_sets)]
    return compose


def test_lm_eval_jobs_that_differ_in_row_parameters_share_one_group(configs):
    cfgs = configs(*[[*TEMPERATURE, f"decoding.temperature={t}"] for t in (0.5, 1.0, 1.5)],
                   ["decoding=min_p"], ["decoding=greedy"])
    assert group_jobs(cfgs) == [[0, 1, 2, 3, 4]]


def test_the_minp_tasks_grid_is_one_group(configs):
    """experiment=minp_tasks: sampling, top-p and min-p at four temperatures each, all row parameters."""
    cfgs = configs(*[[f"decoding={method}", f"++decoding.temperature={t}", "eval.tasks=[sotu_last_word,arithmetic_add]"]
                     for method in ("temperature", "top_p", "min_p") for t in (0.5, 1.0, 1.5, 2.0)])
    assert group_jobs(cfgs, max_configurations=16) == [list(range(12))]


def test_lm_eval_groups_split_on_anything_else(configs):
    cfgs = configs([*TEMPERATURE, "decoding.temperature=0.5"], [*TEMPERATURE, "decoding.temperature=1.5"],
                   [*TEMPERATURE, "decoding.temperature=0.5", "eval.limit=3"],
                   [*TEMPERATURE, "decoding.temperature=1.5", "eval.limit=3"],
                   [*TEMPERATURE, "decoding.temperature=1.5", "eval.tasks=[arithmetic_add]"],  # other tasks: alone
                   ["decoding=beam"],  # beam search: alone
                   [*TEMPERATURE, "decoding.temperature=1.0", "task=generate"])  # a generation job: not with these
    assert batch_key(cfgs[5]) is None
    assert batch_key(cfgs[6]) != batch_key(cfgs[1])
    assert group_jobs(cfgs) == [[0, 1], [2, 3]]


def _sweep_jobs(cfgs) -> list[Job]:
    jobs = []
    for i, cfg in enumerate(cfgs):
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):  # as the launcher's _compose sets it
            cfg.hydra.runtime.output_dir = cfg.paths.output_dir
        jobs.append(Job(i, [], cfg, fingerprint(cfg)))
    return jobs


def test_shared_evaluation_is_each_jobs_lone_evaluation(configs, tmp_path, monkeypatch):
    """The launcher's shared step stashes each job's evaluation; the job's run then evaluates nothing itself
    and writes the metrics and samples its lone run writes."""
    from experiments import lm_eval_run

    temperatures = (0.7, 1.3)
    shared_cfgs = configs(*[[*TEMPERATURE, f"decoding.temperature={t}", "eval.tasks=[arithmetic_add]"]
                            for t in temperatures])
    lone_cfgs = [compose_config([*LM_EVAL, *TEMPERATURE, f"decoding.temperature={t}", "eval.tasks=[arithmetic_add]"],
                                tmp_path / f"lone{i}") for i, t in enumerate(temperatures)]
    launcher = BatchedLauncher()
    locks = launcher._generate(Group(_sweep_jobs(shared_cfgs)))
    assert sorted(locks) == [0, 1]
    real_evaluate = lm_eval_run.evaluate_tasks

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated although a shared evaluation was stashed")

    try:
        assert precomputed_run(fingerprint(shared_cfgs[1])).configurations == 2
        monkeypatch.setattr(lm_eval_run, "evaluate_tasks", no_evaluation)
        shared = [run(cfg) for cfg in shared_cfgs]
    finally:
        for cfg in shared_cfgs:
            drop_precomputed(fingerprint(cfg))
        for lock in locks.values():
            lock.release()
    monkeypatch.setattr(lm_eval_run, "evaluate_tasks", real_evaluate)
    lone = [run(cfg) for cfg in lone_cfgs]
    for got, want, cfg, lone_cfg in zip(shared, lone, shared_cfgs, lone_cfgs):
        task_keys = [k for k in want if k.startswith("task/")]
        assert task_keys and {k: got[k] for k in task_keys} == {k: want[k] for k in task_keys}
        assert got["meta/lm_eval_generation"] == want["meta/lm_eval_generation"]
        samples = Path(cfg.paths.output_dir, "lm_eval_samples", "arithmetic_add.jsonl").read_text()
        assert samples == Path(lone_cfg.paths.output_dir, "lm_eval_samples", "arithmetic_add.jsonl").read_text()
    assert shared[0]["task/arithmetic_add/exact_match"] is not None


def test_a_failing_shared_evaluation_stashes_nothing(configs, monkeypatch, caplog):
    """Whatever the error, the group's jobs then evaluate one by one in their own runs."""
    from experiments import lm_eval_batched

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory at 3 x batch_size rows")

    monkeypatch.setattr(lm_eval_batched, "evaluate_shared", broken)
    cfgs = configs(*[[*TEMPERATURE, f"decoding.temperature={t}"] for t in (0.5, 1.5)])
    with caplog.at_level(logging.WARNING, logger="experiments.batched_sweep"):
        locks = BatchedLauncher()._generate(Group(_sweep_jobs(cfgs)))
    for lock in locks.values():
        lock.release()
    assert all(precomputed_run(fingerprint(cfg)) is None for cfg in cfgs)
    assert "shared lm-eval evaluation for jobs #0, #1 failed (RuntimeError: out of memory" in caplog.text


def test_evaluate_shared_needs_a_config():
    from experiments.lm_eval_batched import evaluate_shared

    with pytest.raises(ValueError, match=r"cfgs=\[\] is not allowed"):
        evaluate_shared([], None, None)


# -- the real multirun, both launchers ---------------------------------------------------------------------------
SWEEP = ["-m", "task=lm_eval", "model=tiny_llama", "eval.tasks=[arithmetic_add,sotu_next_sentence]", "eval.limit=3",
         "eval.bootstrap_resamples=50", *TEMPERATURE, "decoding.temperature=0.5,1.0,1.5"]


def _jobs(root: Path, name: str) -> dict[str, dict]:
    """{job folder name: metrics.json} of a sweep."""
    files = (root / "outputs" / "multirun" / name).rglob("metrics.json")
    return {p.parent.name: json.loads(p.read_text()) for p in files}


def _task_part(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith("task/") or k in ("meta/lm_eval_generation",
                                                                              "meta/bootstrap", "meta/fingerprint")}


@pytest.mark.slow
def test_batched_lm_eval_sweep_equals_the_basic_launchers_and_resumes(tmp_path):
    runs = {}
    for name, extra in (("batched", []), ("basic", ["hydra/launcher=basic"])):
        result = run_cli([*SWEEP, *extra, f"name={name}"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = result.stdout + result.stderr
    assert "shared lm-eval evaluation for jobs #0, #1, #2 (3 configurations)" in runs["batched"]
    assert "shared lm-eval evaluation" not in runs["basic"]
    batched, basic = _jobs(tmp_path, "batched"), _jobs(tmp_path, "basic")
    assert len(batched) == 3 and batched.keys() == basic.keys()
    for job in batched:  # every task number equal, not close; the speed and memory numbers aside
        assert _task_part(batched[job]) == _task_part(basic[job]) and len(_task_part(basic[job])) > 10
        folders = [tmp_path / "outputs" / "multirun" / name / job for name in ("batched", "basic")]
        for task in ("arithmetic_add", "sotu_next_sentence"):
            b, a = [(f / "lm_eval_samples" / f"{task}.jsonl").read_text() for f in folders]
            assert b == a and b
        summary = read_offline_run(find_offline_runs(folders[0] / "wandb")[0])["summary"]
        key = "task/arithmetic_add/exact_match"
        assert math.isclose(summary[key], batched[job][key], rel_tol=1e-9, abs_tol=1e-12)
    accuracies = sorted(m["task/sotu_next_sentence/acc"] for m in batched.values())
    assert accuracies[0] == accuracies[-1]  # log-likelihood tasks do not depend on the temperature

    # Resume: two of the three jobs unfinished; only their two configurations are evaluated, together.
    sweep_dir = tmp_path / "outputs" / "multirun" / "batched"
    unfinished = sorted(batched)[1:]
    for job in unfinished:
        (sweep_dir / job / "metrics.json").unlink()
    result = run_cli([*SWEEP, "name=batched"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "(2 configurations)" in log and "(3 configurations)" not in log
    assert {job: _task_part(m) for job, m in _jobs(tmp_path, "batched").items()} == {
        job: _task_part(m) for job, m in batched.items()}
