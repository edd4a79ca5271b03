"""Real multirun sweeps in subprocesses: batched (the default), basic, joblib and submitit_local launchers,
resume, failures.

Each test runs `python -m experiments.run -m ...` exactly as a user would, on the tiny random Llama and a
three-document local corpus, and reads what the jobs left on disk.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from experiments.logging import find_offline_runs, read_offline_run
from tests.experiments.runner_helpers import CORPUS, assert_same_samples, run_cli

pytestmark = pytest.mark.slow

# Short job folder names: the sweep's own keys plus these.
SWEEP_BASE = ["model=tiny_llama", "dataset=files", "dataset.path=corpus", "task=generate", "metrics.mauve=false",
              "prompts.num_prompts=2", "prompts.pairs_per_document=1", "prompts.prompt_tokens=8",
              "prompts.continuation_tokens=8"]


@pytest.fixture()
def root(tmp_path):
    shutil.copytree(CORPUS, tmp_path / "corpus")
    return tmp_path


def job_dirs(root: Path, name: str) -> list[Path]:
    return sorted(p.parent for p in (root / "outputs" / "multirun" / name).rglob("metrics.json"))


def test_sweep_config_runs_its_grid_with_the_default_launcher(root):
    result = run_cli(["-m", "sweep=top_p", "name=grid", *SWEEP_BASE], root)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = job_dirs(root, "grid")
    assert len(jobs) == 5
    top_ps = sorted(json.loads((job / "metrics.json").read_text()) and
                    float(next(l for l in (job / "config.yaml").read_text().splitlines() if "top_p:" in l).split()[-1])
                    for job in jobs)
    assert top_ps == [0.5, 0.7, 0.9, 0.95, 1.0]
    groups = {read_offline_run(r)["group"] for r in find_offline_runs(root / "outputs" / "multirun" / "grid")}
    assert groups == {"grid"}  # the runs of one multirun share a group


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_two_point_sweep_with_parallel_launchers(root, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=20"]
    result = run_cli(["-m", f"hydra/launcher={launcher}", *extra, "decoding=top_p", "decoding.top_p=0.5,0.9",
                      f"name={launcher}", *SWEEP_BASE], root)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(root, launcher)
    assert len(jobs) == 2 and "decoding.top_p=0.5" in jobs[0].name and "decoding.top_p=0.9" in jobs[1].name
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["gen/samples"] == 2 and (job / "samples.jsonl").is_file()
        logged = read_offline_run(find_offline_runs(job)[0])
        assert logged["config"]["decoding"]["top_p"] in (0.5, 0.9)


def test_interrupted_sweep_resumes_without_redoing_finished_jobs(root):
    args = ["-m", "decoding=top_p", "decoding.top_p=0.5,0.9", "name=resume", *SWEEP_BASE]
    env = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not job_dirs(root, "resume") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep dies after its first job
    proc.wait()
    finished = job_dirs(root, "resume")
    assert len(finished) == 1, "the first job should have finished before the kill"
    first_mtime = (finished[0] / "metrics.json").stat().st_mtime_ns
    result = run_cli(args, root)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = job_dirs(root, "resume")
    assert len(jobs) == 2
    assert (finished[0] / "metrics.json").stat().st_mtime_ns == first_mtime  # not recomputed
    assert "already finished" in result.stdout


def test_a_failing_job_does_not_end_the_sweep(root):
    result = run_cli(["-m", "decoding=top_p", "decoding.top_p=0.5,1.5", "name=failing", *SWEEP_BASE], root)
    assert result.returncode != 0
    jobs = job_dirs(root, "failing")
    assert len(jobs) == 1 and "decoding.top_p=0.5" in jobs[0].name
    errors = list((root / "outputs" / "multirun" / "failing").rglob("error.txt"))
    assert len(errors) == 1 and "top_p=1.5 is not allowed" in errors[0].read_text()
    assert "failed job" in result.stderr
    # Another grid into the same folder: the old failure is not this multirun's (FailedJobsCallback)
    other = run_cli(["-m", "decoding=top_p", "decoding.top_p=0.5,0.7", "name=failing", *SWEEP_BASE], root)
    assert other.returncode == 0, other.stderr[-2000:]
    assert "failed job" not in other.stderr and errors[0].is_file()


@pytest.mark.parametrize("args, message", [
    (["model=nonexistent"], "model/nonexistent"),
    (["decoding=top_p", "decoding.top_p=2.0"], "top_p=2.0 is not allowed"),
    (["dataset.path=missing_folder"], "missing_folder"),
])
def test_bad_input_is_one_clear_error_and_no_results(root, args, message):
    result = run_cli([*SWEEP_BASE, *args], root)
    assert result.returncode != 0
    assert message in result.stderr
    assert not list((root / "outputs").rglob("metrics.json")) if (root / "outputs").exists() else True
    assert "Traceback" not in result.stderr


# A 3-point top-p sweep, batched (the default launcher) and basic, on the same root; read by the tests below.
TOP_P_SWEEP = ["-m", "decoding=top_p", "decoding.top_p=0.5,0.7,0.9", *SWEEP_BASE]


@pytest.fixture(scope="module")
def both_launchers(tmp_path_factory):
    root = tmp_path_factory.mktemp("launchers")
    shutil.copytree(CORPUS, root / "corpus")
    seconds = {}
    for name, extra in (("batched", []), ("basic", ["hydra/launcher=basic"])):
        start = time.perf_counter()
        result = run_cli([*TOP_P_SWEEP, *extra, f"name={name}"], root)
        seconds[name] = time.perf_counter() - start
        assert result.returncode == 0, result.stderr[-3000:]
    print(f"3-point tiny top-p sweep: batched {seconds['batched']:.1f} s, basic {seconds['basic']:.1f} s")
    return root


def read_samples(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]


def quality(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(("speed/", "mem/"))}


def test_batched_sweep_writes_what_the_basic_launcher_writes(both_launchers):
    root = both_launchers
    batched, basic = job_dirs(root, "batched"), job_dirs(root, "basic")
    assert [j.name for j in batched] == [j.name for j in basic] and len(batched) == 3
    for b, a in zip(batched, basic):
        assert_same_samples(read_samples(b), read_samples(a))
        mb, ma = (json.loads((j / "metrics.json").read_text()) for j in (b, a))
        assert mb["speed/sweep_configurations"] == 3 and ma["speed/sweep_configurations"] == 1
        assert quality(mb) == quality(ma)  # every number but speed and memory, the fingerprint too
        cb, ca = (yaml.safe_load((j / "config.yaml").read_text()) for j in (b, a))
        for config in (cb, ca):  # where and under what name a job shows its results
            for key in ("name", "paths", "logger"):
                config.pop(key)
        assert cb == ca
        logged = read_offline_run(find_offline_runs(b)[0])  # each job its own W&B run
        assert logged["group"] == "batched"
        assert f"decoding.top_p={logged['config']['decoding']['top_p']}" in b.name


def test_batched_sweep_resumes_only_the_missing_job(both_launchers, tmp_path):
    shutil.copytree(both_launchers, tmp_path, dirs_exist_ok=True)
    jobs = job_dirs(tmp_path, "batched")
    before = {job: (job / "metrics.json").stat().st_mtime_ns for job in jobs}
    first_samples = read_samples(jobs[1])
    (jobs[1] / "metrics.json").unlink()
    result = run_cli([*TOP_P_SWEEP, "name=batched"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already finished") == 2
    assert "batched generation" not in result.stderr + result.stdout  # one job left: generated alone
    for job in (jobs[0], jobs[2]):
        assert (job / "metrics.json").stat().st_mtime_ns == before[job]
    redone = json.loads((jobs[1] / "metrics.json").read_text())
    assert redone["speed/sweep_configurations"] == 1
    assert_same_samples(read_samples(jobs[1]), first_samples)


def test_sweep_mixing_batchable_and_other_changes(both_launchers, tmp_path):
    shutil.copytree(CORPUS, tmp_path / "corpus")
    result = run_cli(["-m", "decoding=top_p", "decoding.top_p=0.5,0.9", "+decoding.num_beams=1,2", "name=mixed",
                      *SWEEP_BASE], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(tmp_path, "mixed")
    assert len(jobs) == 4
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        beams = 2 if "decoding.num_beams=2" in job.name else 1
        assert metrics["speed/sweep_configurations"] == (1 if beams == 2 else 2)  # beam sampling runs alone
        assert metrics["gen/samples"] == 2
        if beams == 1:  # the batched pair equals the basic launcher's runs of the same top_p
            top_p = "0.5" if "decoding.top_p=0.5" in job.name else "0.9"
            alone = next(j for j in job_dirs(both_launchers, "basic") if f"decoding.top_p={top_p}" in j.name)
            assert_same_samples(read_samples(job), read_samples(alone))


# ---------------------------------------------------------------------------------------------- the job store


@pytest.mark.parametrize("launcher", ["batched", "basic"])
def test_broken_and_edited_results_are_named_moved_aside_and_recomputed(both_launchers, tmp_path, launcher):
    """A truncated metrics.json and a hand-edited config.yaml: both jobs recomputed, the third left alone."""
    shutil.copytree(both_launchers, tmp_path, dirs_exist_ok=True)
    jobs = job_dirs(tmp_path, launcher)
    before = {job: read_samples(job) for job in jobs}
    untouched = (jobs[0] / "metrics.json").stat().st_mtime_ns
    broken = (jobs[1] / "metrics.json").read_text()[:40]
    (jobs[1] / "metrics.json").write_text(broken)
    config = (jobs[2] / "config.yaml").read_text()
    (jobs[2] / "config.yaml").write_text(config.replace("top_p: 0.9", "top_p: 0.3"))
    extra = ["hydra/launcher=basic"] if launcher == "basic" else []
    result = run_cli([*TOP_P_SWEEP, *extra, f"name={launcher}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert str(jobs[1] / "metrics.json") in out and str(jobs[2] / "config.yaml") in out
    assert "decoding.top_p: 0.3 -> 0.9" in out  # what was edited
    assert [p.read_text() for p in jobs[1].glob("metrics.json.corrupt-*")] == [broken]  # moved aside, kept
    assert len(list(jobs[2].glob("config.yaml.edited-*"))) == 1
    assert (jobs[0] / "metrics.json").stat().st_mtime_ns == untouched
    assert [out.count(f"{job}: computing this job") for job in jobs] == [0, 1, 1]
    for job in jobs:
        json.loads((job / "metrics.json").read_text())
        assert_same_samples(read_samples(job), before[job])
    for job in jobs[1:]:  # the runner's messages land in the job's own log
        log = (job / "run.log").read_text()
        assert "moved aside" in log and "computing this job" in log


@pytest.mark.parametrize("launcher", ["batched", "basic"])
def test_two_identical_sweeps_at_once_compute_each_job_once(both_launchers, tmp_path, launcher):
    shutil.copytree(CORPUS, tmp_path / "corpus")
    extra = ["hydra/launcher=basic"] if launcher == "basic" else []
    args = [sys.executable, "-m", "experiments.run", *TOP_P_SWEEP, *extra, "name=twice"]
    env = dict(os.environ, DECODELAB_ROOT=str(tmp_path), WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    text = "".join(stdout + stderr for stdout, stderr in outputs)
    jobs = job_dirs(tmp_path, "twice")
    assert len(jobs) == 3
    for job in jobs:
        assert text.count(f"{job}: computing this job") == 1, job  # one process computed it ...
    assert text.count("already finished") == 3  # ... the other read its result
    print(f"{launcher}: waits seen: {text.count('waiting for')}")
    reference = job_dirs(both_launchers, launcher)
    for job, alone in zip(jobs, reference):
        assert_same_samples(read_samples(job), read_samples(alone))
        assert not (job / ".lock").exists()
