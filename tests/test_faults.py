"""Fault tests: a batched sweep killed (SIGKILL) at each fail point, or failing inside, then rerun.

Every sweep is a real `python -m experiments.run -m ...` subprocess on the tiny random Llama: two top-p
values that share one batched generation plus two perplexity-only jobs, W&B offline. The fail points
(experiments/faults.py, set by DECODELAB_FAILPOINT) make each death land at a known place; the kernel kills
the process there, so no `finally` or atexit runs. After a rerun without the fault, every job must hold
what an uninterrupted run of the same sweep wrote (one reference run, shared by the module), and no job
that had finished before the kill may have been computed again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from experiments.faults import POINTS, parse
from tests.experiments.runner_helpers import CORPUS, assert_same_samples

# Jobs, in launch order: #0 generate top_p=0.5, #1 perplexity, #2 generate top_p=0.9, #3 perplexity.
# #0 and #2 share one batched generation of two prompt batches (4 prompts, 2 per batch).
BASE = ["model=tiny_llama", "dataset=files", "dataset.path=corpus", "metrics.mauve=false", "prompts.num_prompts=4",
        "prompts.pairs_per_document=2", "prompts.batch_size=2", "prompts.prompt_tokens=8",
        "prompts.continuation_tokens=8", "perplexity.max_length=128"]
SWEEP = ["-m", "decoding=top_p", "decoding.top_p=0.5,0.9", "task=generate,perplexity", *BASE]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def start_sweep(root: Path, name: str, failpoint: str | None = None,
                extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Path, Path]:
    """The sweep under `root`, named `name`, started; output in files (a killed run's leftovers may hold pipes)."""
    env = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true", HYDRA_FULL_ERROR="0",
               OMP_NUM_THREADS="1")
    env.pop("DECODELAB_FAILPOINT", None)
    if failpoint:
        env["DECODELAB_FAILPOINT"] = failpoint
    out, err = root / f"{name}.stdout", root / f"{name}.stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *SWEEP, *extra, f"name={name}"],
                                cwd=root, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return proc, out, err


def finish(proc: subprocess.Popen, out: Path, err: Path) -> Result:
    try:
        returncode = proc.wait(timeout=600)
    finally:  # what a killed sweep leaves running (W&B's service process) goes with it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Result(returncode, out.read_text(), err.read_text())


def sweep(root: Path, name: str, failpoint: str | None = None, extra: tuple[str, ...] = ()) -> Result:
    return finish(*start_sweep(root, name, failpoint, extra))


def jobs(root: Path, name: str) -> dict[str, Path]:
    """Job folders of a sweep that finished (hold metrics.json), by folder name (equal across sweep names)."""
    return {p.parent.name: p.parent for p in (root / "outputs" / "multirun" / name).glob("*/metrics.json")}


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def samples(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]


def generating(job_dirs: dict[str, Path]) -> list[str]:
    """The names of the jobs that generate (their folder names are cut, so their metrics tell)."""
    return sorted(key for key, job in job_dirs.items() if "gen/samples" in metrics(job))


def stamps(job_dirs: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each job's metrics.json: unchanged means not recomputed (the writer renames a new file in)."""
    return {key: ((job / "metrics.json").stat().st_ino, (job / "metrics.json").stat().st_mtime_ns)
            for key, job in job_dirs.items()}


def assert_like_reference(found: dict[str, Path], reference: dict[str, Path]) -> None:
    """Each job holds what the uninterrupted run's holds: the same samples (the same bytes when generated in
    the same batch, else the same tokens: see assert_same_samples) and the same quality numbers."""
    assert sorted(found) == sorted(reference) and len(found) == 4
    for key, job in found.items():
        ref = reference[key]
        mine, theirs = metrics(job), metrics(ref)
        assert {k: v for k, v in mine.items() if k.startswith(("ppl/", "gen/", "human/"))} == pytest.approx(
            {k: v for k, v in theirs.items() if k.startswith(("ppl/", "gen/", "human/"))}, rel=1e-6, nan_ok=True)
        assert mine["meta/fingerprint"] == theirs["meta/fingerprint"]
        if key not in generating(reference):
            assert not (job / "samples.jsonl").exists()
            continue
        if mine["speed/sweep_configurations"] == theirs["speed/sweep_configurations"]:
            assert (job / "samples.jsonl").read_bytes() == (ref / "samples.jsonl").read_bytes()
        else:
            assert_same_samples(samples(job), samples(ref))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    shutil.copytree(CORPUS, root / "corpus")
    return root


@pytest.fixture(scope="module")
def reference(root) -> dict[str, Path]:
    """The uninterrupted sweep's job folders."""
    result = sweep(root, "reference")
    assert result.returncode == 0, result.stderr[-3000:]
    found = jobs(root, "reference")
    assert len(found) == 4
    generated = [metrics(found[key]) for key in generating(found)]
    assert [m["speed/sweep_configurations"] for m in generated] == [2, 2]  # the pair shared one generation
    return found


# (fail point, jobs finished when it kills). Counts put the kill in different jobs: metrics_writing:3 in
# #2, whose part of the shared generation the rerun reads back from #2's folder (#0 is done).
KILLS = [("shared_generation", 0), ("between_jobs:2", 2), ("wandb_writing:2", 1), ("metrics_writing:3", 2)]


@pytest.mark.slow
@pytest.mark.parametrize("point, finished", KILLS, ids=[k for k, _ in KILLS])
def test_sigkill_at_a_fail_point_then_a_rerun_loses_nothing_and_redoes_nothing(root, reference, point, finished):
    name = "kill_" + point.replace(":", "_")
    died = sweep(root, name, failpoint=point)
    assert died.returncode == -signal.SIGKILL, f"the fail point {point} did not kill the sweep:\n{died.stderr[-3000:]}"
    before = jobs(root, name)
    assert len(before) == finished
    stamps_before = stamps(before)

    rerun = sweep(root, name)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = jobs(root, name)
    assert_like_reference(after, reference)
    assert {key: stamps(after)[key] for key in before} == stamps_before  # finished jobs were not computed again
    assert not list((root / "outputs" / "multirun" / name).rglob("error.txt"))


@pytest.mark.slow
def test_a_rerun_reuses_the_shared_generation_a_killed_sweep_left_in_its_job_folders(root, reference):
    """Killed after the shared generation and job #0 (between_jobs:2), the sweep left #2's part of the shared
    batch on disk; the rerun takes it from there, generates nothing, and #2 still reads as batched."""
    name = "kill_after_shared"
    died = sweep(root, name, failpoint="between_jobs:2")
    assert died.returncode == -signal.SIGKILL
    saved = list((root / "outputs" / "multirun" / name).glob("*/shared_generation.json"))
    assert len(saved) == 1  # #0 finished (its file dropped), #2 did not
    rerun = sweep(root, name)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "batched generation for jobs" not in rerun.stdout + rerun.stderr  # nothing generated again
    after = jobs(root, name)
    assert_like_reference(after, reference)
    assert [metrics(after[key])["speed/sweep_configurations"] for key in generating(after)] == [2, 2]
    assert not list((root / "outputs" / "multirun" / name).glob("*/shared_generation.json"))  # dropped when done


@pytest.mark.slow
def test_a_report_killed_while_writing_leaves_the_old_report_or_none(root, reference):
    def report(out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "DECODELAB_FAILPOINT"}
        if failpoint:
            env["DECODELAB_FAILPOINT"] = failpoint
        return subprocess.run([sys.executable, "-m", "analysis.report", str(root / "outputs" / "multirun" /
                               "reference"), "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=600)

    def contents(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if folder.exists() else {}

    fresh = root / "report_fresh"
    died = report(fresh, "report_writing")
    assert died.returncode == -signal.SIGKILL, f"report_writing did not kill the report:\n{died.stderr[-3000:]}"
    assert "index.html" not in contents(fresh)  # no report (the page is written last)

    old = root / "report_old"
    made = report(old)
    assert made.returncode == 0, made.stderr[-3000:]
    first = contents(old)
    assert {"index.html", "runs.csv"} <= set(first)
    died = report(old, "report_writing")
    assert died.returncode == -signal.SIGKILL
    left = contents(old)
    assert set(left) == set(first) and left["index.html"] == first["index.html"]  # the old report, whole

    again = report(fresh)
    assert again.returncode == 0, again.stderr[-3000:]
    assert contents(fresh)["runs.csv"] == first["runs.csv"]


@pytest.mark.slow
def test_a_shared_generation_that_fails_lets_its_jobs_generate_one_by_one(root, reference):
    result = sweep(root, "shared_fails", failpoint="raise:shared_generation")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batched generation for jobs #0, #2 failed (FailPointError" in result.stdout + result.stderr
    assert "running them one by one" in result.stdout + result.stderr
    found = jobs(root, "shared_fails")
    assert_like_reference(found, reference)
    for key in generating(reference):
        assert metrics(found[key])["speed/sweep_configurations"] == 1  # generated alone
    assert not list((root / "outputs" / "multirun" / "shared_fails").rglob("error.txt"))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["batched", "basic"])
def test_an_unexpected_error_fails_only_its_jobs_and_a_rerun_finishes_just_those(root, reference, launcher):
    name = f"errors_{launcher}"
    extra = ("hydra/launcher=basic",) if launcher == "basic" else ()
    failed = sweep(root, name, failpoint="raise:generation:*", extra=extra)  # every generation raises
    assert failed.returncode == 1, failed.stderr[-3000:]
    folder = root / "outputs" / "multirun" / name
    errors = sorted(folder.glob("*/error.txt"))
    assert [e.parent.name for e in errors] == generating(reference)
    for error in errors:
        text = error.read_text()
        assert text.startswith("error: FailPointError: fail point 'generation' reached")
        assert "Traceback (most recent call last)" in text and "experiments/generation.py" in text
        assert not (error.parent / "metrics.json").exists()
    assert failed.stderr.count("failed job: ") == 2
    done = jobs(root, name)
    assert sorted(done) == sorted(set(reference) - set(generating(reference)))  # the others went on
    stamps_before = stamps(done)

    rerun = sweep(root, name, extra=extra)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = jobs(root, name)
    assert_like_reference(after, reference)
    assert {key: stamps(after)[key] for key in done} == stamps_before
    assert not list(folder.rglob("error.txt"))


@pytest.mark.slow
def test_a_job_another_process_works_on_is_left_out_of_the_shared_generation(root, reference):
    """This test process holds #2's folder lock (a live owner, as a concurrent sweep would be): #0 generates
    alone, #2 waits for the lock and, once it is released unfinished, computes itself."""
    from experiments.job_lock import try_lock

    name = "held"
    first, second = generating(reference)
    lock = try_lock(root / "outputs" / "multirun" / name / second)
    assert lock is not None
    try:
        proc, out, err = start_sweep(root, name)
        deadline = time.time() + 300
        while "left out of the batched generation" not in (text := out.read_text() + err.read_text()):
            assert "batched generation for jobs" not in text  # #2 must not be generated while another holds it
            assert proc.poll() is None and time.time() < deadline, err.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        lock.release()
    result = finish(proc, out, err)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batched generation for jobs" not in result.stdout + result.stderr
    found = jobs(root, name)
    assert_like_reference(found, reference)
    assert [metrics(found[key])["speed/sweep_configurations"] for key in (first, second)] == [1, 1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_joblib_workers_end_when_the_sweep_process_is_killed(root):
    """Each worker hangs in its job's generation; SIGKILL the sweep process alone: the workers must follow."""
    env = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true", OMP_NUM_THREADS="1",
               DECODELAB_FAILPOINT="hang:generation")
    err = root / "joblib.stderr"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "-m", "decoding=top_p", "decoding.top_p=0.5,0.9",
                                 *BASE, "task=generate", "logger=none",
                                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "name=joblib_orphans"],
                                cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline, workers = time.time() + 300, []
        while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = [int(pid) for pid in re.findall(r"pid (\d+) hangs", err.read_text())]
        assert len(workers) == 2, err.read_text()[-3000:]
        assert proc.pid not in workers  # the jobs run in worker processes
        os.kill(proc.pid, signal.SIGKILL)  # the sweep process only, as the OOM killer would
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "joblib workers outlived the sweep process"
        assert err.read_text().count("is gone; worker") == 2
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_jobs_run_in_the_sweep_process_itself_do_not_watch_its_parent():
    """joblib with n_jobs=1 runs jobs in the sweep process, whose parent (a shell) may rightly go away."""
    import threading

    from experiments.parent_watch import ParentBound

    assert ParentBound(lambda cfg: cfg + 1, os.getpid())(1) == 2
    assert "decodelab-parent-watch" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("spec, parsed", [
    ("between_jobs", ("kill", "between_jobs", 1)),
    ("between_jobs:2", ("kill", "between_jobs", 2)),
    ("raise:shared_generation", ("raise", "shared_generation", 1)),
    ("raise:generation:*", ("raise", "generation", None)),
    ("hang:generation", ("hang", "generation", 1)),
])
def test_failpoint_specs(spec, parsed):
    assert parse(spec) == parsed


@pytest.mark.parametrize("spec", ["", "between_job", "kill:", "raise:generation:0", "generation:two",
                                  "explode:generation", "generation:1:2"])
def test_a_bad_failpoint_spec_is_an_error_naming_it_and_the_points(spec):
    with pytest.raises(ValueError) as caught:
        parse(spec)
    message = str(caught.value)
    assert f"DECODELAB_FAILPOINT={spec!r} is not allowed" in message
    assert all(point in message for point in POINTS)
