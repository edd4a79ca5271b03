"""A batched sweep through each executor (experiments/sweep_executors.py): local, submitit's local processes, a
real Ray cluster (started here with `ray start --head`) and, where slurmctld can run, a one-node Slurm cluster
(tests/cluster/slurm_one_node.py).

What must hold: the same 4-job sweep (two groups of two that share a generation) gives the same samples and the
same non-speed metrics through every executor; a task killed after its first job (a fail point: SIGKILL in the
task's process) loses nothing on disk, the sweep lists the lost job and exits non-zero, and rerunning the same
command redoes only that job; bad executor settings are refused in one line within 10 s with nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.experiments.runner_helpers import CORPUS, assert_same_samples, run_cli

pytestmark = pytest.mark.slow

BASE = ["model=tiny_llama", "dataset=files", "dataset.path=corpus", "task=generate", "metrics.mauve=false",
        "prompts.num_prompts=2", "prompts.pairs_per_document=1", "prompts.continuation_tokens=8",
        "decoding=top_p", "decoding.top_p=0.5,0.9", "prompts.prompt_tokens=8,12"]  # 4 jobs, 2 groups of 2
NOT_COMPARED = ("speed/", "mem/")  # timings and memory differ from process to process


@pytest.fixture()
def root(tmp_path):
    shutil.copytree(CORPUS, tmp_path / "corpus")
    return tmp_path


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A real Ray head on 127.0.0.1 (its own port), stopped after the module: yields its address."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("Ray is not installed (pip install ray)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path_factory.mktemp("ray")
    # Ray 2.60's `ray start` asks for token authentication unless told otherwise, and a driver started without
    # RAY_AUTH_MODE does not send the token: a test cluster on 127.0.0.1 runs without (users of real clusters
    # follow Ray's own setup: RAY_AUTH_TOKEN or ~/.ray/auth_token on every node)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    started = subprocess.run([str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120, env=env)


def sweep(root: Path, name: str, executor_args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["-m", f"name={name}", *BASE, *executor_args]
    if env is None:
        return run_cli(args, root)
    full = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true", HYDRA_FULL_ERROR="0", **env)
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=root, env=full,
                          capture_output=True, text=True, timeout=900)


def results(root: Path, name: str) -> dict[str, tuple[list[dict], dict]]:
    """{job folder name: (samples, metrics without speed and memory)} of a sweep."""
    out = {}
    for metrics_file in sorted((root / "outputs" / "multirun" / name).rglob("metrics.json")):
        job = metrics_file.parent
        samples = [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]
        metrics = {k: v for k, v in json.loads(metrics_file.read_text()).items() if not k.startswith(NOT_COMPARED)}
        metrics.pop("meta/caveats", None)
        out[job.name] = (samples, metrics)
    return out


def assert_same_results(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected) and len(got) == 4
    for job, (samples, metrics) in got.items():
        assert_same_samples(samples, expected[job][0])
        assert metrics.keys() == expected[job][1].keys()
        for key, value in metrics.items():
            if isinstance(value, float):
                assert value == pytest.approx(expected[job][1][key], rel=1e-5, abs=1e-8), (job, key)
            else:
                assert value == expected[job][1][key], (job, key)


def test_local_submitit_and_ray_executors_give_the_same_results(root, ray_cluster):
    local = sweep(root, "local", [])
    assert local.returncode == 0, local.stderr[-3000:]
    expected = results(root, "local")
    submitit = sweep(root, "submitit", ["hydra.launcher.executor=submitit_local"])
    assert submitit.returncode == 0, submitit.stderr[-3000:]
    assert "2 task(s): #0,#2; #1,#3" in submitit.stdout  # one task per group of two (Hydra logs to stdout)
    assert_same_results(results(root, "submitit"), expected)
    ray = sweep(root, "ray", ["hydra.launcher.executor=ray", f"hydra.launcher.ray.address={ray_cluster}"])
    assert ray.returncode == 0, ray.stderr[-3000:]
    assert f"Ray task(s) to {ray_cluster}" in ray.stdout
    assert_same_results(results(root, "ray"), expected)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm cluster with accounting (submitit reads a task's end from sacct); skips with the
    reason where slurmctld cannot run (tests/cluster/install_slurm.sh installs it)."""
    from tests.cluster.slurm_one_node import one_node_slurm, slurm_available

    reason = slurm_available(accounting=True)
    if reason is not None:
        pytest.skip(f"no one-node Slurm here: {reason}")
    with one_node_slurm(tmp_path_factory.mktemp("slurm"), accounting=True) as cluster:
        yield cluster


def test_slurm_executor_gives_the_local_results_and_a_scancelled_task_resumes(root, slurm_cluster):
    env = {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    args = ["hydra.launcher.executor=slurm", f"hydra.launcher.slurm.partition={slurm_cluster.partition}",
            "hydra.launcher.slurm.mem_gb=1"]
    local = sweep(root, "local", [])
    assert local.returncode == 0, local.stderr[-3000:]
    first = sweep(root, "slurm", args, env=env)
    assert first.returncode == 0, (first.stdout[-2000:], first.stderr[-3000:])
    assert "submitted 2 slurm task(s)" in first.stdout
    assert_same_results(results(root, "slurm"), results(root, "local"))

    # the same sweep under a new name, its tasks hanging after their first job; one array task is scancelled
    hang = dict(env, DECODELAB_FAILPOINT="hang:between_jobs")
    full = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true", HYDRA_FULL_ERROR="0", **hang)
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "-m", "name=cancel", *BASE, *args],
                            cwd=root, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweep_dir = root / "outputs" / "multirun" / "cancel"
    deadline = time.monotonic() + 600
    while len(list(sweep_dir.rglob("metrics.json"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    jobs = slurm_cluster.run("squeue", "--noheader", "--array", "--format=%i").split()
    assert len(jobs) == 2, jobs  # both array tasks, each hanging after its first job
    for job in sorted(jobs):
        slurm_cluster.run("scancel", job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "failed job: " in err, (out[-2000:], err[-2000:])
    lost = list(sweep_dir.rglob("error.txt"))
    assert len(lost) == 2 and all("slurm task" in p.read_text() and "ended without results" in p.read_text()
                                  for p in lost)
    done = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("metrics.json")}
    again = sweep(root, "cancel", args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted 2 slurm task(s)" in again.stdout  # the two lost jobs only
    assert len(list(sweep_dir.rglob("metrics.json"))) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert_same_results(results(root, "cancel"), results(root, "local"))


@pytest.mark.parametrize("executor", ["submitit_local", "ray"])
def test_a_killed_task_loses_nothing_and_a_rerun_redoes_only_its_lost_job(root, executor, ray_cluster):
    args = ["hydra.launcher.executor=" + executor]
    if executor == "ray":
        args.append(f"hydra.launcher.ray.address={ray_cluster}")
    # every task process is SIGKILLed after its first job: each group keeps one finished job and loses one
    first = sweep(root, executor, args, env={"DECODELAB_FAILPOINT": "between_jobs"})
    assert first.returncode != 0
    sweep_dir = root / "outputs" / "multirun" / executor
    finished = sorted(p.parent.name for p in sweep_dir.rglob("metrics.json"))
    lost = sorted(p.parent.name for p in sweep_dir.rglob("error.txt"))
    assert len(finished) == 2 and len(lost) == 2 and not set(finished) & set(lost)
    for name in lost:
        assert "ended without results" in next(sweep_dir.rglob(f"{name}/error.txt")).read_text()
        assert f"failed job: " in first.stderr
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("metrics.json")}
    second = sweep(root, executor, args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(list(sweep_dir.rglob("metrics.json"))) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished jobs were not redone
    assert "2 task(s)" in second.stdout  # the two lost jobs, one task each (their groups' others are done)


@pytest.mark.parametrize("args, message", [
    (["hydra.launcher.executor=kubernetes"], "hydra.launcher.executor='kubernetes' is not an executor"),
    (["hydra.launcher.executor=ray", "hydra.launcher.ray.address=127.0.0.1:9"],
     "hydra.launcher.ray.address='127.0.0.1:9' does not answer"),
    (["hydra.launcher.executor=ray", "hydra.launcher.ray.num_cpus=-1"], "hydra.launcher.ray.num_cpus=-1"),
    (["hydra.launcher.slurm.mem_gb=lots"], "hydra.launcher.slurm.mem_gb='lots'"),
    (["+hydra.launcher.slurm.qos=high"], "hydra.launcher.slurm.qos"),
])
def test_bad_executor_settings_fail_in_one_line_before_anything_is_written(root, args, message):
    start = time.monotonic()
    result = sweep(root, "bad", args)
    assert time.monotonic() - start < 10 + 5  # the check's 10 s, and the interpreter's start on a busy machine
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (root / "outputs" / "multirun" / "bad").exists()


def test_slurm_without_slurm_installed_is_refused_by_name(root):
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "sbatch").exists())
    result = sweep(root, "noslurm", ["hydra.launcher.executor=slurm"], env={"PATH": path})
    assert result.returncode == 2 and "executor=slurm needs Slurm, but `sbatch` is not on PATH" in result.stderr
    assert not (root / "outputs" / "multirun" / "noslurm").exists()
