"""The sweep-summary W&B run at the end of a multirun (analysis/sweep_summary_callback.py).

Two real `python -m experiments.run -m ...` sweeps on the tiny random Llama with W&B offline: one whose two
jobs finish, one whose second job fails (top_p=1.5 is refused in the job, as in tests/test_sweeps.py). Both
must leave one `sweep-summary` offline run under `<sweep>/summary`; the failed one must still exit non-zero,
which also proves the order of the callbacks (failed_jobs' SystemExit would stop a summary after it). The
other tests call the callback itself on the real composed config over a copy of the finished sweep's jobs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import read_write

from analysis.sweep_summary_callback import SUMMARY_SUBDIR, SweepSummaryCallback, summary_settings
from experiments.logging import find_offline_runs, read_offline_run
from tests.experiments.runner_helpers import CORPUS, compose_config, run_cli

# Two short generate-only jobs; `dataset.path=corpus` is relative to the root each sweep runs in.
BASE = ["model=tiny_llama", "dataset=files", "dataset.path=corpus", "task=generate", "metrics.mauve=false",
        "prompts.num_prompts=2", "prompts.pairs_per_document=1", "prompts.prompt_tokens=8",
        "prompts.continuation_tokens=8", "decoding=top_p"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def sweep(root: Path, name: str, top_ps: str):
    """A real two-job multirun into `root`: (the finished process, its sweep folder)."""
    shutil.copytree(CORPUS, root / "corpus", dirs_exist_ok=True)
    result = run_cli(["-m", f"decoding.top_p={top_ps}", f"name={name}", *BASE], root)
    return result, root / "outputs" / "multirun" / name


def summary_runs(sweep_dir: Path) -> list[dict]:
    return [read_offline_run(run) for run in find_offline_runs(sweep_dir / SUMMARY_SUBDIR)]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """The two-job sweep whose jobs both finish: (process, sweep folder)."""
    return sweep(tmp_path_factory.mktemp("summary_ok"), "pair", "0.5,0.9")


def test_a_multirun_ends_with_one_offline_sweep_summary_run_of_its_jobs(finished_sweep):
    result, sweep_dir = finished_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 2
    [logged] = summary_runs(sweep_dir)
    assert logged["config"]["runs"] == 2 and logged["config"]["summary_of"] == [str(sweep_dir)]
    assert logged["group"] == "pair" and logged["name"] == "pair: summary"  # the jobs' group (`name`)
    assert [step["curve/top_p"] for step in logged["history"] if "curve/top_p" in step] == [0.5, 0.9]
    assert logged["summary"]["sweep/runs/nrows"] == 2
    assert f"sweep summary: W&B run in {sweep_dir / SUMMARY_SUBDIR}" in result.stderr
    jobs = [r for r in find_offline_runs(sweep_dir) if SUMMARY_SUBDIR not in r.relative_to(sweep_dir).parts]
    assert len(jobs) == 2  # each job keeps its own W&B run beside the summary


def test_after_a_partial_failure_the_summary_is_written_and_the_sweep_still_fails(tmp_path):
    result, sweep_dir = sweep(tmp_path, "half", "0.5,1.5")
    assert result.returncode == 1, result.stderr[-3000:]  # FailedJobsCallback's exit, not hidden
    assert "failed job" in result.stderr and "top_p=1.5 is not allowed" in result.stderr
    [logged] = summary_runs(sweep_dir)
    assert logged["config"]["runs"] == 1 and logged["group"] == "half"
    # the summary ran first: failed_jobs' SystemExit ends the callbacks (conf/hydra/default.yaml)
    assert result.stderr.index("sweep summary: W&B run in") < result.stderr.index("failed job")


@pytest.fixture()
def jobs_copy(finished_sweep, tmp_path) -> Path:
    """The finished sweep's job folders (not its summary), copied to a folder of their own."""
    _, sweep_dir = finished_sweep
    copy = tmp_path / "multirun" / "copy"
    for job in sweep_dir.glob("*/metrics.json"):
        shutil.copytree(job.parent, copy / job.parent.name)
    return copy


def sweep_config(overrides: list[str], sweep_dir: Path, tmp_path: Path):
    """The real composed config of `python -m experiments.run -m <overrides>`, its sweep folder `sweep_dir`."""
    cfg = compose_config(["name=copy", *overrides], tmp_path / "job")
    with read_write(cfg.hydra):  # Hydra's node is read-only
        cfg.hydra.sweep.dir = str(sweep_dir)
    return cfg


@pytest.mark.parametrize("overrides", [["logger=none"], ["logger.mode=disabled"]])
def test_no_summary_when_the_sweep_logs_nothing_to_wandb(jobs_copy, tmp_path, overrides, capsys):
    cfg = sweep_config(overrides, jobs_copy, tmp_path)
    assert SweepSummaryCallback.log_summary(cfg) is None
    SweepSummaryCallback().on_multirun_end(cfg)
    assert not (jobs_copy / SUMMARY_SUBDIR).exists() and capsys.readouterr().err == ""


def test_the_same_jobs_with_wandb_offline_get_a_summary(jobs_copy, tmp_path):
    """The control for the test above: the copy is summarisable, so its silence is the logger's doing."""
    folder = SweepSummaryCallback.log_summary(sweep_config([], jobs_copy, tmp_path))
    assert folder is not None and Path(folder).parent == jobs_copy / SUMMARY_SUBDIR / "wandb"
    [logged] = summary_runs(jobs_copy)
    assert logged["config"]["runs"] == 2 and logged["group"] == "copy"


def test_no_summary_when_no_job_finished(jobs_copy, tmp_path, capsys):
    for metrics in jobs_copy.glob("*/metrics.json"):
        metrics.unlink()  # as a sweep whose every job failed leaves them
    SweepSummaryCallback().on_multirun_end(sweep_config([], jobs_copy, tmp_path))
    assert not (jobs_copy / SUMMARY_SUBDIR).exists() and capsys.readouterr().err == ""


def test_a_failing_summary_is_one_line_on_stderr_and_raises_nothing(jobs_copy, tmp_path, capsys):
    for metrics in jobs_copy.glob("*/metrics.json"):
        metrics.write_text("{broken")  # untrusted: the loader skips every job, so there is nothing to chart
    SweepSummaryCallback().on_multirun_end(sweep_config([], jobs_copy, tmp_path))
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sweep summary failed, not logged to W&B (ValueError: no finished runs under")


def test_the_summary_takes_the_sweeps_logger_settings(tmp_path):
    cfg = sweep_config(["logger.project=elsewhere", "logger.mode=online", "+logger.entity=someone"], tmp_path,
                       tmp_path)
    assert summary_settings(cfg) == {"project": "elsewhere", "mode": "online", "entity": "someone", "group": "copy"}
    assert summary_settings(sweep_config([], tmp_path, tmp_path))["mode"] == "offline"  # the default
