"""Save the test models where a transformers 4.x interpreter can load them, for the golden outputs.

Run in the project's environment (transformers 5.x):
    .venv/bin/python -m tests.goldens.export_models /tmp/decodelab-golden-models

It writes tiny_llama/, tiny_gpt2/ (the fixtures' weights: vocab 1000, seed 0) and smollm2/ (the converted
embedded SmolLM2, with its tokenizer) with save_pretrained. transformers 4.x refuses safetensors files
without `format: pt` in their metadata, which 5.x no longer writes, so the files are rewritten with it. The
golden scripts (`/work/ref-tf4/bin/python -m tests.goldens.tf4_<name>`, run from the repository root) load
these folders; each golden file records `weights_fingerprint` of the models it used, which the tests recompute.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.goldens.fingerprint import weights_fingerprint

TINY = ("tiny_llama", "tiny_gpt2")


def _save_for_tf4(model, folder: Path, tokenizer=None) -> None:
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    for path in folder.glob("*.safetensors"):
        save_file(load_file(path), path, metadata={"format": "pt"})


def export(folder: Path) -> dict[str, float]:
    from experiments.models import build_tiny_model, load_smollm2

    folder.mkdir(parents=True, exist_ok=True)
    fingerprints = {}
    for kind in TINY:
        model = build_tiny_model(kind, vocab_size=1000, seed=0)
        _save_for_tf4(model, folder / kind)
        fingerprints[kind] = weights_fingerprint(model)
    model, tokenizer = load_smollm2()
    _save_for_tf4(model, folder / "smollm2", tokenizer)
    fingerprints["smollm2"] = weights_fingerprint(model)
    for name, value in fingerprints.items():
        print(name, folder / name, value)
    return fingerprints


if __name__ == "__main__":
    export(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-golden-models"))
