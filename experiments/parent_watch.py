"""Worker processes end with the sweep that started them (`hydra/launcher=joblib`).

joblib's loky workers run a job to its end even when the sweep process that dispatched it is gone (SIGKILLed
by a user, a scheduler or the out-of-memory killer): nothing will ever read their result, yet they hold a GPU, a
job folder and, for minutes or hours, the CPU. A worker cannot be told by its parent that the parent died
(SIGKILL runs no handler), so each worker watches for it: a daemon thread notices that its parent pid
changed (the kernel re-parents an orphan) and ends the process at once. Ending it is safe: every result
file is written atomically and a job without metrics.json is recomputed by the next run.

The watch is installed by the job function itself (`ParentBound`, wrapped around Hydra's task function by
`JoblibLauncher.setup`), so it runs inside whatever process runs the job, and only where that is not the
sweep process (joblib with n_jobs=1 runs jobs in the sweep process, whose parent is a shell that may
rightly go away under `nohup`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher

POLL_SECONDS = 0.5
_watching = False


def watch_parent(poll_seconds: float = POLL_SECONDS) -> None:
    """From now on, end this process within `poll_seconds` of its parent's death (once per process)."""
    global _watching
    if _watching:
        return
    _watching = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        print(f"decodelab: the sweep process {parent} is gone; worker {os.getpid()} ends its job unfinished "
              "(a rerun of the sweep recomputes it)", file=sys.stderr, flush=True)
        os._exit(1)  # no cleanup: another thread holds the job; its files are atomic

    threading.Thread(target=watch, name="decodelab-parent-watch", daemon=True).start()


class ParentBound:
    """A task function that, in a worker process, first ties that worker's life to the sweep process's."""

    def __init__(self, task_function: Callable[[Any], Any], sweep_pid: int) -> None:
        self.task_function = task_function
        self.sweep_pid = sweep_pid

    def __call__(self, cfg: Any) -> Any:
        if os.getpid() != self.sweep_pid:
            watch_parent()
        return self.task_function(cfg)


class JoblibLauncher(HydraJoblibLauncher):
    """Hydra's joblib launcher whose workers end with the sweep process (conf/hydra/launcher/joblib.yaml)."""

    def setup(self, *, hydra_context: Any, task_function: Callable[[Any], Any], config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=ParentBound(task_function, os.getpid()),
                      config=config)
