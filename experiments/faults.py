"""Fail points: named places where a test can make the process die (or raise) to prove nothing is lost.

    DECODELAB_FAILPOINT=between_jobs        SIGKILL this process the first time `failpoint("between_jobs")` runs
    DECODELAB_FAILPOINT=between_jobs:2      ... the second time
    DECODELAB_FAILPOINT=raise:shared_generation   raise FailPointError there instead (an unexpected error)

Why in the product and not in the tests: a SIGKILL from outside lands at a random moment, so a test could
never say *where* the sweep died. A fail point makes the death deterministic and still real (the kernel
kills the process; no `finally`, no atexit, no flush runs). Unset, a fail point costs one dict lookup.

Points used by the runner (names are the contract with tests/test_faults.py):
`shared_generation` (a batched group's generation, after its first batch), `between_jobs` (the batched
launcher, after a job finished and before the next starts), `wandb_writing` (inside the W&B logger, after
init and before finish), `metrics_writing` (after samples.jsonl and the W&B run, before metrics.json),
`report_writing` (analysis.report, while writing its outputs).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "DECODELAB_FAILPOINT"
_hits: Counter[str] = Counter()


class FailPointError(RuntimeError):
    """Raised at a fail point set as `raise:<name>`: an unexpected error, as a model bug would raise."""


def _parse(spec: str) -> tuple[str, str, int]:
    """'raise:name:2' -> ("raise", "name", 2); 'name' -> ("kill", "name", 1)."""
    parts = spec.split(":")
    action = "kill"
    if parts[0] in ("kill", "raise"):
        action, parts = parts[0], parts[1:]
    if not parts or not parts[0]:
        raise ValueError(f"{ENV}={spec!r} is not allowed: use [kill:|raise:]<point>[:<n>]")
    count = int(parts[1]) if len(parts) > 1 else 1
    return action, parts[0], count


def failpoint(name: str) -> None:
    """Die (SIGKILL) or raise here if $DECODELAB_FAILPOINT names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action, point, count = _parse(spec)
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != count:
        return
    if action == "raise":
        raise FailPointError(f"fail point {name!r} reached ({ENV}={spec!r})")
    os.kill(os.getpid(), signal.SIGKILL)
