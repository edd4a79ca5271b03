"""Where the tests read the llama.cpp golden files: tests/decoding/goldens/, or DECODELAB_GOLDEN_DIR when set
(tests/decoding/test_llama_live.py remakes the goldens with llama.cpp there and reruns the tests on them)."""

from __future__ import annotations

import os
from pathlib import Path

CHECKED_IN = Path(__file__).resolve().parents[1] / "decoding" / "goldens"


def llama_golden(name: str) -> Path:
    """The path of golden file `name` (e.g. "llama_dry.json")."""
    return Path(os.environ.get("DECODELAB_GOLDEN_DIR") or CHECKED_IN) / name
