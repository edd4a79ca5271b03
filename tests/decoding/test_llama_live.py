"""llama.cpp's samplers checked live: every tests/goldens/llama_*.py script runs now in the reference venv on
SmolLM2 logits computed now, and the test module that compares our samplers with its golden file passes on the
remade file.

The fast tests compare our samplers with the checked-in golden files (made the same way, with the versions and
commands they name). This test makes the comparison against llama.cpp as it computes today, on this machine's
logits. It needs the reference venv, which CI does not have (llama-cpp-python builds llama.cpp from source, ~5
minutes, and has no torch): point DECODELAB_LLAMA_PYTHON at its interpreter (`bash tests/goldens/make_llama_venv.sh
<dir>`, then `<dir>/bin/python`); otherwise the test skips saying so. The remade goldens must draw the same
settings and histories as the checked-in ones (the scripts are seeded); their numbers move in the last bits with
the logits (another thread count), which is why the remade file, not the checked-in one, is compared here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.goldens.golden_dir import CHECKED_IN

ROOT = Path(__file__).resolve().parents[2]
# golden script -> the test module that compares our samplers with its output
CHECKS = {"llama_truncation": "tests/decoding/test_llama_truncation.py", "llama_dry": "tests/decoding/test_dry.py",
          "llama_mirostat": "tests/decoding/test_mirostat.py", "llama_chain": "tests/decoding/test_sampler_chain.py"}
REFERENCE = os.environ.get("DECODELAB_LLAMA_PYTHON")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not REFERENCE or not Path(REFERENCE).exists(),
    reason="set DECODELAB_LLAMA_PYTHON to the llama-cpp-python reference venv's python "
           "(tests/goldens/make_llama_venv.sh) to check against llama.cpp live")]


@pytest.fixture(scope="module")
def smollm2_logits(tmp_path_factory):
    path = tmp_path_factory.mktemp("logits") / "smollm2-logits.npz"
    subprocess.run([sys.executable, "-m", "tests.goldens.smollm2_logits", str(path)], cwd=ROOT, check=True,
                   capture_output=True)
    return path


@pytest.mark.parametrize("script", CHECKS)
def test_our_samplers_equal_llama_cpp_run_now(script, smollm2_logits, tmp_path):
    env = {**os.environ, "DECODELAB_GOLDEN_DIR": str(tmp_path)}
    made = subprocess.run([REFERENCE, "-m", f"tests.goldens.{script}", str(smollm2_logits)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-2000:]
    remade, stored = (json.loads((folder / f"{script}.json").read_text()) for folder in (tmp_path, CHECKED_IN))
    assert remade["versions"]["llama_cpp_python"] == stored["versions"]["llama_cpp_python"]
    for key in ("settings", "histories"):  # the seeded draws are the same: the same cases, recomputed
        assert remade.get(key) == stored.get(key), key
    assert len(remade["cases"]) == len(stored["cases"])
    checked = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CHECKS[script]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = checked.stdout.strip().splitlines()[-1]
    assert checked.returncode == 0 and " passed" in summary and "skipped" not in summary, checked.stdout[-3000:]
