"""Report files written whole or not at all, so a report killed while writing and run again ends the same.

Each output is written to a temporary sibling (`.<name>.<pid>.report-tmp`) and renamed over its target
(`os.replace`, atomic on one filesystem): a reader, or a report killed half-way, sees the old file or the
new one, never half of one. Temporary files a killed report left behind are removed by the next report
into the same folder (`remove_leftovers`). Files are opened normally, so they get the umask's mode (a
collaborator can read them), not mkstemp's 600.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".report-tmp"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` when the block ends without error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_leftovers(folder: Path) -> None:
    """Temporary files of a report into `folder` that was killed before it could rename them."""
    for leftover in folder.glob(f".*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
