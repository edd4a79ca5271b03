"""A real one-node Slurm cluster on this machine, private to one test: `with one_node_slurm(tmp_path) as c:`.

Everything lives under `workdir`: a munge key and socket, slurm.conf, state, spool and logs. The
daemons (munged, slurmctld, slurmd, and with `accounting=True` mariadbd + slurmdbd) run in the
foreground under subprocess with ports picked free, so two clusters, or a leftover from a killed
run, never collide and nothing in /etc is read or written. Clients find the cluster through
`SLURM_CONF` alone (`cluster.env`); slurm.conf names the munge socket, so no munge setting is needed.

Why accounting is optional: the cluster itself runs without it, but `sacct` answers only through
slurmdbd, and submitit learns a job's state (CANCELLED, FAILED, ...) only from `sacct`. Without it a
job that dies before writing its result leaves submitit waiting forever; successful jobs still work,
because submitit checks for the result file first.

Needs root (slurmd starts jobs as their user) and Debian's slurm-wlm + munge
(tests/cluster/install_slurm.sh). `slurm_available()` says why not, for pytest skips.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.cluster.daemons import (
    Daemon,
    DaemonStartError,
    free_tcp_ports,
    port_accepts,
    run_checked,
    start_daemon,
    wait_until,
)
from tests.cluster.slurm_accounting import ACCOUNTING_BINARIES, start_accounting

CLUSTER_NAME = "decodelab"
PARTITION = "debug"
SLURM_BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
MUNGE_KEY_BYTES = 1024  # what `mungekey` generates by default
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes, NUL included


def slurm_available(accounting: bool = False) -> str | None:
    """None when a one-node cluster can be started here, else the reason (for `pytest.skip`)."""
    needed = SLURM_BINARIES + (ACCOUNTING_BINARIES if accounting else ())
    missing = [name for name in needed if shutil.which(name) is None]
    if missing:
        return f"Slurm binaries not found: {', '.join(missing)} (install with tests/cluster/install_slurm.sh)"
    if os.geteuid() != 0:
        return f"a one-node Slurm needs root (slurmd launches jobs as their user); running as uid {os.geteuid()}"
    return None


@dataclass
class SlurmCluster:
    """A running cluster. `env` is what a client process needs (SLURM_CONF set, stray SLURM_* removed)."""

    workdir: Path
    conf: Path
    env: dict[str, str] = field(repr=False)
    node_name: str
    partition: str
    accounting: bool
    startup_s: float  # from the first daemon started to the node reported idle
    daemons: list[Daemon] = field(default_factory=list, repr=False)

    def run(self, *argv: str, timeout_s: float = 30.0) -> str:
        """Run a Slurm client command against this cluster; raise on a non-zero exit. Returns stdout."""
        return run_checked(argv, self.env, timeout_s)

    def job_state(self, job_id: str) -> str:
        """The state slurmctld reports for a job ("PENDING", "RUNNING", "COMPLETED", ...), even after it ended.

        `scontrol show job` answers for about MinJobAge (300 s) after the job ends, with no accounting.
        """
        out = self.run("scontrol", "show", "job", "--oneliner", job_id)
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        raise RuntimeError(f"no JobState in `scontrol show job {job_id}`: {out}")

    def wait_job(self, job_id: str, timeout_s: float = 60.0) -> str:
        """Wait until a job leaves PENDING/RUNNING/COMPLETING; return its final state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
                return state
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f} s\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(daemon.log_tail() for daemon in self.daemons)


def node_hardware() -> tuple[str, str]:
    """(node name, the hardware part of its NodeName line) as `slurmd -C` reports this machine."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    line = out.splitlines()[0]  # NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105
    words = line.split()
    if not words or not words[0].startswith("NodeName="):
        raise RuntimeError(f"unexpected `slurmd -C` output: {out!r}")
    return words[0].split("=", 1)[1], " ".join(words[1:])


def write_slurm_conf(
    workdir: Path,
    node_name: str,
    hardware: str,
    ports: tuple[int, int],
    munge_socket: Path,
    accounting: str,
    first_job_id: int,
    extra_conf: str = "",
) -> Path:
    """slurm.conf for one node named as `slurmd -C` names it, every path under `workdir`."""
    ctld_port, slurmd_port = ports
    # The node's address is given as 127.0.0.1, so /etc/hosts need not resolve the hostname; the name must
    # still equal `hostname -s`, which is how slurmd finds its own NodeName line.
    lines = f"""\
# Written by tests/cluster/slurm_one_node.py for one test; safe to delete with its folder.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node_name}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={workdir / "state"}
SlurmdSpoolDir={workdir / "spool"}
SlurmctldPidFile={workdir / "run" / "slurmctld.pid"}
SlurmdPidFile={workdir / "run" / "slurmd.pid"}
SlurmctldLogFile={workdir / "log" / "slurmctld.log"}
SlurmdLogFile={workdir / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
{accounting}
SchedulerType=sched/backfill
# Short timers so a test sees state changes quickly.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=300
# A different first job id per cluster: submitit caches job states in one class-level watcher keyed by
# job id, so two clusters in one test session that both start at job 1 would read each other's states.
FirstJobId={first_job_id}
{extra_conf}
NodeName={node_name} NodeAddr=127.0.0.1 NodeHostname={node_name} {hardware} State=UNKNOWN
PartitionName={PARTITION} Nodes={node_name} Default=YES MaxTime=INFINITE State=UP
"""
    conf = workdir / "slurm.conf"
    conf.write_text(lines)
    return conf


def start_munge(workdir: Path, env: dict[str, str]) -> tuple[Daemon, Path]:
    """A private munged: its key (made if none) under `workdir/munge`, its socket in a fresh /tmp folder.

    Why not the socket in `workdir` too: munged demands that every folder above its socket be
    traversable by all, and pytest's tmp_path (like mkdtemp) is 0700; a short /tmp path also keeps
    within the 107-character limit of a Unix socket path.
    """
    munge_dir = workdir / "munge"
    munge_dir.mkdir(parents=True, exist_ok=True)
    munge_dir.chmod(0o700)
    socket_dir = Path(tempfile.mkdtemp(prefix="decodelab-munge-"))
    socket_dir.chmod(0o755)
    socket_path = socket_dir / "munge.socket"
    if len(str(socket_path)) > UNIX_SOCKET_MAX:
        shutil.rmtree(socket_dir)
        raise ValueError(
            f"TMPDIR={tempfile.gettempdir()} is too deep: the munge socket path {socket_path} is "
            f"{len(str(socket_path))} characters, a Unix socket allows {UNIX_SOCKET_MAX}; set a shorter TMPDIR"
        )
    key = munge_dir / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(MUNGE_KEY_BYTES))
    key.chmod(0o600)  # munged refuses a key others can read
    # In the foreground munged logs to stderr (log/munged.stdout), not to a --log-file.
    argv = [
        "munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
        f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'munged.seed'}",
    ]  # fmt: skip
    daemon = start_daemon("munged", argv, workdir / "log", env)
    daemon.remove_on_stop.append(socket_dir)

    def credential_round_trips() -> bool:
        encode = subprocess.run(["munge", "-n", "-S", str(socket_path)], capture_output=True, timeout=10)
        if encode.returncode != 0:
            return False
        decode = subprocess.run(["unmunge", "-S", str(socket_path)], input=encode.stdout, capture_output=True)
        return decode.returncode == 0

    wait_until(credential_round_trips, "munged to encode and decode a credential", 15, [daemon])
    return daemon, socket_path


def client_env(conf: Path) -> dict[str, str]:
    """This process's environment pointed at `conf`, without SLURM_* inherited from an enclosing job."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf)
    return env


def node_state(env: dict[str, str]) -> str:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else ""


def stop_cluster(daemons: list[Daemon], env: dict[str, str]) -> None:
    """Cancel every job (so no slurmstepd outlives slurmd), then stop the daemons, newest first."""
    controller_up = any(daemon.name == "slurmctld" and daemon.alive() for daemon in daemons)
    if controller_up:
        subprocess.run(["scancel", "--partition", PARTITION], env=env, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=10)
            if queue.returncode != 0 or not queue.stdout.strip():
                break
            time.sleep(0.2)
    for daemon in reversed(daemons):
        daemon.stop()


@contextmanager
def one_node_slurm(
    workdir: Path, accounting: bool = False, timeout_s: float = 30.0, extra_conf: str = ""
) -> Iterator[SlurmCluster]:
    """Start a one-node cluster under `workdir`, yield it, stop every daemon on exit (files are kept).

    `extra_conf`: more slurm.conf lines (say `MaxArraySize=...`), placed before the node and partition.

    Raises DaemonStartError (with the daemons' own log lines) if the node is not idle within `timeout_s`.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: must be a number of seconds > 0 (the default is 30)")
    reason = slurm_available(accounting)
    if reason is not None:
        raise RuntimeError(f"cannot start a one-node Slurm: {reason}")
    workdir = Path(workdir).resolve()
    for sub in ("state", "spool", "log", "run"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    node_name, hardware = node_hardware()
    ctld_port, slurmd_port, db_port, dbd_port = free_tcp_ports(4)
    env = client_env(workdir / "slurm.conf")
    daemons: list[Daemon] = []
    started = time.monotonic()
    try:
        munged, munge_socket = start_munge(workdir, env)
        daemons.append(munged)
        accounting_lines = "AccountingStorageType=accounting_storage/none"
        if accounting:
            accounting_daemons, accounting_lines = start_accounting(
                workdir, env, munge_socket, db_port, dbd_port
            )
            daemons.extend(accounting_daemons)
        conf = write_slurm_conf(
            workdir, node_name, hardware, (ctld_port, slurmd_port), munge_socket, accounting_lines,
            first_job_id=random.randint(1_000, 9_000_000), extra_conf=extra_conf,
        )  # fmt: skip
        log = workdir / "log"
        daemons.append(start_daemon("slurmctld", ["slurmctld", "-D"], log, env, log / "slurmctld.log"))
        # slurmd only once the controller listens: a slurmd that cannot register ignores SIGTERM for ~9 s,
        # and sinfo against a controller that is not up (or died) also retries for ~9 s.
        wait_until(lambda: port_accepts(ctld_port), f"slurmctld on 127.0.0.1:{ctld_port}", timeout_s, daemons)
        daemons.append(start_daemon("slurmd", ["slurmd", "-D"], log, env, log / "slurmd.log"))
        wait_until(lambda: node_state(env) == "idle", f"node {node_name} idle in sinfo", timeout_s, daemons)
        cluster = SlurmCluster(
            workdir=workdir, conf=conf, env=env, node_name=node_name, partition=PARTITION,
            accounting=accounting, startup_s=time.monotonic() - started, daemons=daemons,
        )  # fmt: skip
    except BaseException:
        stop_cluster(daemons, env)
        raise
    try:
        yield cluster
    finally:
        stop_cluster(daemons, env)


__all__ = ["SlurmCluster", "DaemonStartError", "one_node_slurm", "slurm_available"]
