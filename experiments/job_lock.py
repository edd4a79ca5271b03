"""A job folder's lock: one process works in a job folder at a time.

`<job dir>/.lock` holds the owner's pid, host, process start time and when it took the lock. It appears
atomically and whole: written to a temporary sibling, then hard-linked to `.lock`, which fails if a lock
is there already (O_CREAT|O_EXCL where the file system has no hard links), so nobody reads a half-written
lock. It is released in `finally`. A process killed by SIGKILL leaves its lock behind: a lock whose owner
runs on this host but is not alive (or whose pid now belongs to another process: its start time
differs), or a lock that cannot be read, is stale: reported and taken over. A lock from another host
cannot be checked from here: it counts as held, and a waiter gives up after `lock_wait_s` with a message
that says how to clear it.

Locks are re-entrant within a process (counted): the batched launcher may lock a group's jobs before their
shared generation, and each job's own `run` locks its folder again. Only the owning process removes its
lock file (a forked child inherits the count, not the lock).
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
UNREADABLE_GRACE_S = 10.0  # an unreadable lock younger than this may be mid-write (O_EXCL fallback): held
TAKEOVER_GRACE_S = 30.0  # a takeover mutex older than this was left by a process killed while taking over
_HAVE_PROC = Path("/proc/self/stat").exists()

_held: dict[Path, "JobLock"] = {}
_registry = threading.Lock()


class JobLockedError(TimeoutError):
    """Another process kept the job folder locked for longer than the run would wait."""


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, /proc/<pid>/stat field 22), to tell a reused pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()[19]  # fields after "(comm)": state is field 3


def _alive(pid: int, pid_start: str | None) -> bool:
    if _HAVE_PROC:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # a zombie was killed and awaits its parent's wait(): not working
            return False
        return pid_start is None or fields[19] == str(pid_start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


@dataclass
class LockHolder:
    """Who holds a job folder's lock, and why the lock is stale (None: held by a live or unknown owner)."""

    info: dict[str, Any]
    raw: bytes
    stale: str | None

    def describe(self) -> str:
        if not self.info:
            return "an unreadable lock"
        return f"pid {self.info.get('pid')} on {self.info.get('host')} since {self.info.get('since')}"


def _lock_path(job_dir: str | Path) -> Path:
    return Path(job_dir).resolve() / LOCK_NAME


def lock_holder(job_dir: str | Path) -> LockHolder | None:
    """The holder of `job_dir`'s lock, None if it has none."""
    path = _lock_path(job_dir)
    try:
        raw = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(raw)
        pid, host = int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError):
        return LockHolder({}, raw, None if age < UNREADABLE_GRACE_S else "unreadable")
    stale = None
    if host != socket.gethostname():
        stale = None  # cannot look at another machine's processes
    elif pid == os.getpid():
        stale = None if path in _held else "left by an earlier process with this pid"
    elif not _alive(pid, info.get("pid_start")):
        stale = f"process {pid} is not running"
    return LockHolder(info, raw, stale)


@dataclass
class JobLock:
    """A held lock on one job folder; `release()` once per `try_lock`/`wait_for_lock` that returned it."""

    path: Path
    raw: bytes
    pid: int
    depth: int = 1

    def release(self) -> None:
        with _registry:
            self.depth -= 1
            if self.depth > 0:
                return
            _held.pop(self.path, None)
        if os.getpid() != self.pid:  # a forked child: the lock is its parent's
            return
        try:
            if self.path.read_bytes() == self.raw:
                self.path.unlink()
                return
        except FileNotFoundError:
            pass
        log.warning(f"{self.path}: this process's lock was removed or replaced by another process while held")

    def __enter__(self) -> "JobLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _create(path: Path, raw: bytes) -> bool:
    """Make `path` hold `raw`, atomically and whole; False if it exists."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        try:  # no hard links here: exclusive create, then write (a reader may see it empty for a moment)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path, judged: bytes) -> None:
    """Remove the stale lock `judged` (its bytes), unless it changed meanwhile; one process at a time.

    Without the mutex, two processes that both judged a lock stale could each remove it, the second one
    removing the lock the first had just taken.
    """
    mutex = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(mutex, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        try:
            if time.time() - mutex.stat().st_mtime > TAKEOVER_GRACE_S:
                mutex.unlink()
        except FileNotFoundError:
            pass
        return  # someone else is taking it over: the caller tries again
    try:
        if path.read_bytes() == judged:
            path.unlink()
    except FileNotFoundError:
        pass
    finally:
        mutex.unlink(missing_ok=True)


def try_lock(job_dir: str | Path) -> JobLock | None:
    """Lock `job_dir` (created if missing) for this process; None if another live process holds it.

    A stale lock is reported and taken over. Re-entrant: a lock this process holds is returned again,
    counted; each returned lock needs one `release()`.
    """
    path = _lock_path(job_dir)
    with _registry:
        if path in _held:
            _held[path].depth += 1
            return _held[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _start_ticks(os.getpid()),
             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    raw = json.dumps(owner).encode()
    for _ in range(3):
        if _create(path, raw):
            lock = JobLock(path, raw, os.getpid())
            with _registry:
                _held[path] = lock
            return lock
        holder = lock_holder(path.parent)
        if holder is None:
            continue  # released meanwhile
        if holder.stale is None:
            return None
        log.warning(f"{path}: stale lock ({holder.stale}; {holder.describe()}); taking it over")
        _remove_stale(path, holder.raw)
    return None


def check_wait(wait_s: Any) -> float:
    """`lock_wait_s` as seconds, or a ValueError naming it."""
    if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not math.isfinite(wait_s) or wait_s < 0:
        raise ValueError(f"lock_wait_s={wait_s!r} is not allowed: use a number of seconds >= 0 (how long a run "
                         "waits for another process working in its job folder)")
    return float(wait_s)


def wait_for_lock(job_dir: str | Path, wait_s: float, poll_s: float = 0.5, progress_s: float = 30.0) -> JobLock:
    """Lock `job_dir`, waiting up to `wait_s` seconds (progress lines every `progress_s`) while another
    live process holds it; JobLockedError if it still does then."""
    wait_s = check_wait(wait_s)
    start = time.monotonic()
    next_line = start
    while True:
        lock = try_lock(job_dir)
        now = time.monotonic()
        if lock is not None:
            if next_line > start:
                log.info(f"{job_dir}: the other process released it after {now - start:.0f} s; going on")
            return lock
        holder = lock_holder(job_dir)
        who = holder.describe() if holder else "another process"
        if now - start >= wait_s:
            raise JobLockedError(
                f"{job_dir} is locked by {who}: another run is working in this job folder (waited "
                f"{now - start:.0f} s, lock_wait_s={wait_s:g}). Let it finish and rerun, or raise lock_wait_s; "
                f"if no such process is running any more, delete {_lock_path(job_dir)}")
        if now >= next_line:
            log.info(f"waiting for {job_dir}: locked by {who} (waited {now - start:.0f} s of "
                     f"lock_wait_s={wait_s:g})")
            next_line = now + progress_s
        time.sleep(poll_s)


@atexit.register
def _release_all() -> None:
    """A normal exit with locks still held (a caller forgot `release`) leaves no lock behind."""
    for lock in list(_held.values()):
        lock.depth = 1
        lock.release()
