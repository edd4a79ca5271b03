"""Golden outputs of transformers 4.55.4's contrastive search (`_contrastive_search`), for
tests/decoding/test_contrastive_search.py.

Why a script run outside the project: transformers 5 moved contrastive search out of its core, so the last
4.x release is the reference; it lives in its own interpreter. Run from the repository root, after
`.venv/bin/python -m tests.goldens.export_models /tmp/decodelab-golden-models`:

    /work/ref-tf4/bin/python -m tests.goldens.tf4_contrastive /tmp/decodelab-golden-models

It writes tests/decoding/goldens/contrastive_tf4.json: the versions, this command, each model's weights
fingerprint, and per case the prompts (left-padded token ids and mask), the generate arguments and the output
ids. Cases: tiny Llama and tiny GPT-2 (B = 3, prompts of 6, 4 and 2 tokens) at two (penalty_alpha, top_k)
settings, with the loop's processors, and with an EOS id picked (and recorded) so that the rows end at
different steps; SmolLM2 (B = 3 text prompts) at two settings; B = 1 with low_memory=True (4.55's low_memory
path indexes its candidates per batch wrongly for B > 1, so it is recorded at B = 1 only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from tests.goldens.fingerprint import weights_fingerprint

OUT = Path("tests/decoding/goldens/contrastive_tf4.json")
COMMAND = "/work/ref-tf4/bin/python -m tests.goldens.tf4_contrastive /tmp/decodelab-golden-models"
PAD = 2
TINY_PROMPTS = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 24], [31, 32]]
TEXTS = ["The history of the printing press", "Once upon a time, a small fox", "Water boils at"]


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def run(model, ids: torch.Tensor, mask: torch.Tensor, args: dict) -> list[list[int]]:
    torch.manual_seed(0)  # contrastive search draws nothing; a seed anyway, so a stray draw would repeat
    out = model.generate(ids, attention_mask=mask, do_sample=False, **args)
    return out.tolist()


def eos_ending_apart(model, ids: torch.Tensor, mask: torch.Tensor, args: dict) -> int | None:
    """A token id that, as EOS, ends the rows at different steps (picked from a run without EOS)."""
    out = torch.tensor(run(model, ids, mask, {**args, "eos_token_id": None}))[:, ids.shape[1]:]
    for token in torch.unique(out).tolist():
        firsts = []
        for row in out.tolist():
            firsts.append(row.index(token) if token in row else len(row))
        if len(set(firsts)) == len(firsts) and min(firsts) >= 1 and sorted(firsts)[1] < len(out[0]):
            return int(token)
    return None


def case(name: str, model_name: str, model, ids, mask, args: dict) -> dict:
    return {"name": name, "model": model_name, "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
            "generate": args, "output_ids": run(model, ids, mask, args)}


def tiny_cases(model_name: str, model) -> list[dict]:
    ids, mask = left_pad(TINY_PROMPTS, PAD)
    cases = []
    for alpha, k in ((0.6, 4), (0.3, 7)):
        args = {"penalty_alpha": alpha, "top_k": k, "max_new_tokens": 16, "pad_token_id": PAD, "eos_token_id": PAD}
        cases.append(case(f"{model_name}-a{alpha}-k{k}", model_name, model, ids, mask, args))
    processors = {"penalty_alpha": 0.5, "top_k": 5, "max_new_tokens": 16, "pad_token_id": PAD, "eos_token_id": PAD,
                  "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 3,
                  "bad_words_ids": [[17], [40, 41]]}
    cases.append(case(f"{model_name}-processors", model_name, model, ids, mask, processors))
    args = {"penalty_alpha": 0.6, "top_k": 4, "max_new_tokens": 16, "pad_token_id": PAD}
    eos = eos_ending_apart(model, ids, mask, args)
    if eos is None:
        raise SystemExit(f"{model_name}: no token ends the three rows at different steps; change TINY_PROMPTS")
    cases.append(case(f"{model_name}-eos-apart", model_name, model, ids, mask, {**args, "eos_token_id": eos}))
    one, one_mask = left_pad(TINY_PROMPTS[:1], PAD)
    low = {"penalty_alpha": 0.6, "top_k": 4, "max_new_tokens": 12, "pad_token_id": PAD, "eos_token_id": PAD,
           "low_memory": True}
    cases.append(case(f"{model_name}-low-memory-b1", model_name, model, one, one_mask, low))
    return cases


def smollm2_cases(folder: Path, model) -> list[dict]:
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    ids, mask = left_pad([tokenizer(t)["input_ids"] for t in TEXTS], PAD)
    cases = []
    for alpha, k in ((0.6, 4), (0.4, 6)):
        args = {"penalty_alpha": alpha, "top_k": k, "max_new_tokens": 24, "pad_token_id": PAD, "eos_token_id": PAD}
        cases.append(case(f"smollm2-a{alpha}-k{k}", "smollm2", model, ids, mask, args))
    return cases


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


def main(folder: Path) -> None:
    torch.set_num_threads(1)
    fingerprints, cases = {}, []
    for name in ("tiny_llama", "tiny_gpt2", "smollm2"):
        model = load_for_tf4(folder / name)
        fingerprints[name] = weights_fingerprint(model)
        cases += smollm2_cases(folder / name, model) if name == "smollm2" else tiny_cases(name, model)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                               "command": COMMAND, "fingerprints": fingerprints, "cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-golden-models"))
