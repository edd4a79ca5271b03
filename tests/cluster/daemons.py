"""Daemons run in the foreground under subprocess, so the test owns their pids and can always stop them.

Each daemon (munged, mariadbd, slurmdbd, slurmctld, slurmd) is started with its "do not fork" flag
(`-F`, `-D`, or mariadbd's default), its stdout/stderr in a file next to its own log, and is stopped
with SIGTERM then SIGKILL. Failures quote the daemon's own log lines, because "timed out" alone says
nothing about why a cluster did not come up.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

LOG_TAIL_LINES = 25
STDOUT_TAIL_LINES = 8


@dataclass
class Daemon:
    """One running daemon: its process, where it writes, and how to stop it."""

    name: str
    process: subprocess.Popen
    log_files: list[Path] = field(default_factory=list)  # the daemon's own log first, then its stdout/stderr
    remove_on_stop: list[Path] = field(default_factory=list)  # folders made for it outside the workdir

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL. Returns the exit code (None if it could not be reaped)."""
        try:
            return self._terminate(grace_s)
        finally:
            for path in self.remove_on_stop:
                shutil.rmtree(path, ignore_errors=True)

    def _terminate(self, grace_s: float) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    return None
        return self.process.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of each of the daemon's log files, headed by the file name.

        Fewer of stdout/stderr when the daemon has its own log: in foreground mode it repeats the log
        there, and only what comes before the log opens (bad options, a missing config) is new.
        """
        parts = []
        for index, path in enumerate(self.log_files):
            if index > 0:
                lines = STDOUT_TAIL_LINES
            if not path.exists():
                parts.append(f"--- {path}: (not written)")
                continue
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts)


def start_daemon(
    name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str], own_log: Path | None = None
) -> Daemon:
    """Start `argv` (a daemon in foreground mode), its stdout+stderr in `log_dir/<name>.stdout`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout"
    with open(stdout_path, "ab") as stdout:
        # A new session: a Ctrl-C in the terminal running pytest reaches pytest, which then stops the
        # daemons in order (jobs first), instead of every daemon dying at once mid-job.
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    logs = ([own_log] if own_log is not None else []) + [stdout_path]
    return Daemon(name=name, process=process, log_files=logs)


class DaemonStartError(RuntimeError):
    """A daemon exited or never became ready; the message carries its own log lines."""


def wait_until(
    ready: Callable[[], bool], what: str, timeout_s: float, watched: Sequence[Daemon], poll_s: float = 0.2
) -> float:
    """Poll `ready()` until true; fail early if a watched daemon exits. Returns the seconds waited."""
    start = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - start
        for daemon in watched:
            if not daemon.alive():
                raise DaemonStartError(
                    f"{daemon.name} (pid {daemon.pid}) exited with code {daemon.process.returncode} "
                    f"while waiting for {what}:\n{daemon.log_tail()}"
                )
        if time.monotonic() - start > timeout_s:
            logs = "\n".join(daemon.log_tail() for daemon in watched)
            raise DaemonStartError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{logs}")
        time.sleep(poll_s)


def free_tcp_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (bound together so they differ).

    Fixed ports (Slurm's 6817/6818, MariaDB's 3306) would make two clusters on one machine, or a
    leftover daemon from a killed run, collide. There is a small window before the daemon binds.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_accepts(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (a daemon's cheap readiness check)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_checked(argv: Sequence[str], env: Mapping[str, str], timeout_s: float = 30.0) -> str:
    """Run a client command; on failure raise with its exit code and output. Returns stdout."""
    done = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with code {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done.stdout
