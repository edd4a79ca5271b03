"""What the golden scripts share (run by transformers 4.55.4's interpreter: imports torch and transformers only).

Each tests/goldens/tf4_<name>.py builds its cases; this module loads the exported models as 4.x must read them,
pads prompts, runs 4.x's generate and writes the golden file with the versions, the command and the weights'
fingerprints (tests/goldens/fingerprint.py), which the tests check before comparing tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import transformers
from transformers import AutoModelForCausalLM

from tests.goldens.fingerprint import weights_fingerprint

PAD = 2
TINY_PROMPTS = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 24], [31, 32]]
TEXTS = ["The history of the printing press", "Once upon a time, a small fox", "Water boils at"]
MODELS = ("tiny_llama", "tiny_gpt2", "smollm2")


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate_ids(model, ids: torch.Tensor, mask: torch.Tensor, args: dict, seed: int) -> list[list[int]]:
    torch.manual_seed(seed)  # sampling cases draw from the global RNG; the others draw nothing
    return model.generate(ids, attention_mask=mask, **args).tolist()


def load_for_tf4(folder: Path):
    """The saved model in float32. transformers 5 writes the rotary base as `rope_parameters.rope_theta`, a key
    4.55 does not read (it would fall back to 10000: SmolLM2's is 100000), so it is passed as 4.x names it."""
    config = json.loads((folder / "config.json").read_text())
    extra = {}
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        if rope.get("rope_type", "default") != "default":
            raise SystemExit(f"{folder}: rope_type {rope['rope_type']!r} needs its 4.x rope_scaling spelled out")
        extra["rope_theta"] = rope["rope_theta"]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, **extra).eval()
    if "rope_theta" in extra and model.config.rope_theta != extra["rope_theta"]:
        raise SystemExit(f"{folder}: rope_theta {model.config.rope_theta} != {extra['rope_theta']}")
    return model


def write_goldens(folder: Path, out: Path, command: str, cases_of: Callable[[str, Path, object], list[dict]]) -> None:
    """Load each exported model, collect `cases_of(name, its folder, model)`, write them to `out`."""
    torch.set_num_threads(1)
    fingerprints, cases = {}, []
    for name in MODELS:
        model = load_for_tf4(folder / name)
        fingerprints[name] = weights_fingerprint(model)
        cases += cases_of(name, folder / name, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                               "command": command, "fingerprints": fingerprints, "cases": cases}, indent=1) + "\n")
    print(f"wrote {out}: {len(cases)} cases")
