"""The one-node Slurm cluster runs real jobs: sbatch, a submitit job array, and a cancelled array element.

One cluster with accounting (so submitit can read states through sacct) serves the module; one
without accounting shows what submitit cannot see there. Skipped, with the reason, where the Slurm
binaries are missing or the tests do not run as root.

The functions submitted through submitit are defined inside the tests on purpose: cloudpickle then
sends them by value, so the job need not import this test module (pytest names it
`cluster.test_slurm_cluster`, a name the job's Python could not import).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cluster.daemons import port_accepts
from tests.cluster.slurm_one_node import DaemonStartError, one_node_slurm, slurm_available

submitit = pytest.importorskip("submitit")

SKIP_REASON = slurm_available(accounting=True)
needs_slurm = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A cluster with accounting, SLURM_CONF set in os.environ (submitit's sbatch/sacct calls inherit it)."""
    with one_node_slurm(tmp_path_factory.mktemp("slurm"), accounting=True) as running:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(running.conf))
            yield running


def slurm_executor(folder: Path, **parameters) -> "submitit.AutoExecutor":
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=10, cpus_per_task=1, **parameters)
    return executor


def wait_for_state(cluster, job_id: str, wanted: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (state := cluster.job_state(job_id)) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {state}, not {wanted}, after {timeout_s} s"
        time.sleep(0.2)


def submitit_state_settles(job, timeout_s: float = 30) -> str:
    """The job's state in sacct once it is final (submitit's own poll waits >= 2 s between sacct calls)."""
    deadline = time.monotonic() + timeout_s
    while (state := job.watcher.get_state(job.job_id, mode="force")) in ("UNKNOWN", "PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"sacct still says {state} for {job.job_id} after {timeout_s} s"
        time.sleep(0.5)
    return state


def test_slurm_available_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no binary can be found
    reason = slurm_available(accounting=True)
    assert reason is not None and "slurmctld" in reason and "slurmdbd" in reason and "install_slurm.sh" in reason


def test_bad_timeout_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match=r"timeout_s=0.*> 0"):
        with one_node_slurm(tmp_path, timeout_s=0):
            pass
    assert not (tmp_path / "slurm.conf").exists()


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_daemon_that_dies_at_start_is_reported_with_its_own_log_lines(tmp_path):
    bad_plugin = "PriorityType=priority/no_such_plugin"
    with pytest.raises(DaemonStartError, match=r"slurmctld \(pid \d+\) exited with code") as raised:
        with one_node_slurm(tmp_path, extra_conf=bad_plugin):
            pass
    message = str(raised.value)
    assert f"--- {tmp_path}/log/slurmctld.log" in message
    assert "priority/no_such_plugin" in message  # slurmctld's own fatal line, not just "it exited"
    # Everything was stopped on the way out: nothing listens at the ports this slurm.conf names.
    conf = dict(line.split("=", 1) for line in (tmp_path / "slurm.conf").read_text().splitlines() if "=" in line)
    assert not port_accepts(int(conf["SlurmdPort"])) and not port_accepts(int(conf["SlurmctldPort"]))


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_node_is_idle_with_this_machines_cpus(cluster):
    cpus = cluster.run("sinfo", "-h", "-N", "-o", "%T %c %P").split()
    assert cpus[0] == "idle"
    assert int(cpus[1]) == os.cpu_count()  # not `nproc`: it obeys OMP_NUM_THREADS
    assert cpus[2] == "debug*"  # the default partition
    assert cluster.startup_s < 30


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sbatch_wrap_runs_a_job_that_writes_a_file(cluster, tmp_path):
    written = tmp_path / "written.txt"
    job_id = cluster.run(
        "sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", "--wrap",
        f"echo job $SLURM_JOB_ID on $(hostname -s) > {written}; echo to-stdout",
    ).strip()  # fmt: skip
    assert cluster.wait_job(job_id) == "COMPLETED"
    assert written.read_text().split() == ["job", job_id, "on", cluster.node_name]
    assert (tmp_path / f"slurm-{job_id}.out").read_text().strip() == "to-stdout"


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_submitit_job_array_returns_each_tasks_result(cluster, tmp_path):
    def square_in_array(x: int) -> tuple[int, str]:
        import os

        return x * x, os.environ["SLURM_ARRAY_TASK_ID"]

    executor = slurm_executor(tmp_path, slurm_array_parallelism=2)
    jobs = executor.map_array(square_in_array, [3, 4])
    assert len(jobs) == 2 and jobs[0].job_id.endswith("_0") and jobs[1].job_id.endswith("_1")
    assert [job.result() for job in jobs] == [(9, "0"), (16, "1")]
    # Where the launcher will find each task's streams: folder/<array id>_<task>/..._log.{out,err}.
    assert all(job.paths.stdout.exists() and job.paths.stderr.exists() for job in jobs)
    # sacct lags: an element's record reaches slurmdbd seconds after its result file exists.
    assert [submitit_state_settles(job) for job in jobs] == ["COMPLETED", "COMPLETED"]


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_submitit_reports_a_cancelled_array_element(cluster, tmp_path):
    def sleep_then_return(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    executor = slurm_executor(tmp_path, slurm_array_parallelism=2)
    quick, long = executor.map_array(sleep_then_return, [0.0, 600.0])
    wait_for_state(cluster, long.job_id, "RUNNING")
    cluster.run("scancel", long.job_id)  # one element: "<array id>_1"

    assert quick.result() == 0.0
    long.wait()  # returns only because sacct tells submitit the element ended
    assert long.state.startswith("CANCELLED"), long.state  # sacct says "CANCELLED by 0"
    # exception()/result() of a job without a result file wait 15 s for a slow shared filesystem first;
    # submitit's own tests shorten that the same way.
    long._results_timeout_s = 1
    assert isinstance(long.exception(), submitit.core.utils.UncompletedJobError)
    # sacct may say CANCELLED while slurmctld still shows COMPLETING (the step is being torn down).
    assert cluster.wait_job(long.job_id) == "CANCELLED"


@needs_slurm
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_without_accounting_submitit_sees_no_states(tmp_path, monkeypatch):
    """Why the cluster above has accounting: here sacct fails, so a cancelled job is UNKNOWN forever."""
    with one_node_slurm(tmp_path / "cluster") as bare:
        monkeypatch.setenv("SLURM_CONF", str(bare.conf))
        assert bare.startup_s < 30
        executor = slurm_executor(tmp_path / "jobs")
        job = executor.submit(time.sleep, 600)  # time.sleep pickles by reference: the job imports `time`
        wait_for_state(bare, job.job_id, "RUNNING")
        bare.run("scancel", job.job_id)
        assert bare.wait_job(job.job_id) == "CANCELLED"  # slurmctld knows ...
        assert not job.done(force_check=True)  # ... submitit does not: no result file, no sacct answer
        assert job.state == "UNKNOWN"
