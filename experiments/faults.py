"""Fail points: named places where a test can make the process die (or raise, or hang) to prove nothing is lost.

    DECODELAB_FAILPOINT=between_jobs              SIGKILL this process the first time `failpoint("between_jobs")` runs
    DECODELAB_FAILPOINT=between_jobs:2            ... the second time
    DECODELAB_FAILPOINT=raise:shared_generation   raise FailPointError there instead (an unexpected error)
    DECODELAB_FAILPOINT=raise:generation:*        ... every time, not only once
    DECODELAB_FAILPOINT=hang:generation           sleep there forever (a job stuck mid-work), after one line on stderr

Why in the product and not in the tests: a SIGKILL from outside lands at a random moment, so a test could
never say *where* the sweep died. A fail point makes the death deterministic and still real (the kernel
kills the process; no `finally`, no atexit, no flush runs). Unset, a fail point costs one dict lookup.

Points used by the runner (names are the contract with tests/test_faults.py; a spec naming another point is
an error, so a misspelled point cannot make a fault test pass without its fault):
`shared_generation` (a batched group's generation, after its first batch), `generation` (after every batch of
any generation, shared or alone), `between_jobs` (the batched launcher, after a job finished and before the
next starts), `wandb_writing` (inside the W&B logger, after init and before finish), `metrics_writing`
(after samples.jsonl and the W&B run, before metrics.json), `report_writing` (analysis.report, while
writing its outputs).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

ENV = "DECODELAB_FAILPOINT"
POINTS = ("shared_generation", "generation", "between_jobs", "wandb_writing", "metrics_writing", "report_writing")
ACTIONS = ("kill", "raise", "hang")
_hits: Counter[str] = Counter()


class FailPointError(RuntimeError):
    """Raised at a fail point set as `raise:<name>`: an unexpected error, as a model bug would raise."""


def parse(spec: str) -> tuple[str, str, int | None]:
    """'raise:name:2' -> ("raise", "name", 2); 'name' -> ("kill", "name", 1); 'raise:name:*' -> count None."""
    usage = f"use [{'|'.join(a + ':' for a in ACTIONS)}]<point>[:<n>|:*] with <point> one of {', '.join(POINTS)}"
    parts = spec.split(":")
    action = "kill"
    if parts[0] in ACTIONS:
        action, parts = parts[0], parts[1:]
    if len(parts) not in (1, 2) or parts[0] not in POINTS:
        raise ValueError(f"{ENV}={spec!r} is not allowed: {usage}")
    if len(parts) == 1:
        return action, parts[0], 1
    if parts[1] == "*":
        return action, parts[0], None
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"{ENV}={spec!r} is not allowed: the count must be an integer >= 1 or *; {usage}")
    return action, parts[0], int(parts[1])


def failpoint(name: str) -> None:
    """Die (SIGKILL), raise or hang here if $DECODELAB_FAILPOINT names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action, point, count = parse(spec)
    if point != name:
        return
    _hits[name] += 1
    if count is not None and _hits[name] != count:
        return
    if action == "raise":
        raise FailPointError(f"fail point {name!r} reached ({ENV}={spec!r})")
    if action == "hang":
        print(f"fail point {name!r}: pid {os.getpid()} hangs ({ENV}={spec!r})", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
