"""Golden outputs of transformers 4.55.4's DoLa decoding (`_dola_decoding`), for tests/decoding/test_dola.py.

Why a script run outside the project: transformers 5 moved DoLa out of its core, so the last 4.x release is
the reference; it lives in its own interpreter. Run from the repository root, after
`.venv/bin/python -m tests.goldens.export_models /tmp/decodelab-golden-models`:

    /work/ref-tf4/bin/python -m tests.goldens.tf4_dola /tmp/decodelab-golden-models

It writes tests/decoding/goldens/dola_tf4.json: the versions, this command, each model's weights fingerprint,
and per case the prompts (left-padded token ids and mask), the generate arguments, the sampling seed (4.x
draws from the global RNG after `torch.manual_seed(seed)`) and the output ids. Every case uses the
repetition penalty the paper recommends (1.2). Cases:
- tiny Llama (2 layers, untied: "low" -> [0], "high" -> [1]) and tiny GPT-2 (2 layers, tied: both -> [1]),
  B = 3 prompts of 6, 4 and 2 tokens: "low", "high", the list [0, 1] (two candidates, so the JS choice runs),
  one seeded sampling case, each with an EOS id picked (and recorded) so that the rows end at different
  steps; and each prompt alone under [0, 1].
- SmolLM2 (30 layers, tied: "low" -> [2, 4, .., 14], "high" -> [15, 17, .., 29]), B = 3 text prompts:
  "low", "high", a list, one seeded sampling case; and each prompt alone under "high".
4.x couples the rows of a batch (one premature layer per step from the batch-mean divergence; the repetition
penalty counts left padding), so batched cases are compared with dola_decode(tf4_batch=True), B = 1 ones
with the default (decoding/strategies/dola.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from tests.goldens.tf4_common import PAD, TEXTS, TINY_PROMPTS, generate_ids, left_pad, write_goldens

OUT = Path("tests/decoding/goldens/dola_tf4.json")
COMMAND = "/work/ref-tf4/bin/python -m tests.goldens.tf4_dola /tmp/decodelab-golden-models"
SMOLLM2_LIST = [4, 10, 16, 22]



def eos_ending_apart(model, ids: torch.Tensor, mask: torch.Tensor, args: dict, seed: int) -> int:
    """A token id that, as EOS, ends the rows at different steps (picked from a run without EOS)."""
    out = torch.tensor(generate_ids(model, ids, mask, {**args, "eos_token_id": None}, seed))[:, ids.shape[1]:]
    width = out.shape[1]
    for token in torch.unique(out).tolist():
        firsts = [row.index(token) if token in row else width for row in out.tolist()]
        ended = [f for f in firsts if f < width]
        if len(ended) >= 2 and len(set(firsts)) == len(firsts) and min(firsts) >= 1:
            return int(token)
    raise SystemExit(f"no token ends the rows at different steps for {args}; change the prompts")


def case(name: str, model_name: str, model, ids, mask, args: dict, seed: int = 0) -> dict:
    return {"name": name, "model": model_name, "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
            "generate": args, "seed": seed, "output_ids": generate_ids(model, ids, mask, args, seed)}


def batch_cases(model_name: str, model, ids, mask, settings: list[tuple[str, dict, int]]) -> list[dict]:
    """Each setting with an EOS id that ends the rows apart (picked under the setting itself)."""
    cases = []
    for label, args, seed in settings:
        args = {**args, "pad_token_id": PAD}
        args["eos_token_id"] = eos_ending_apart(model, ids, mask, args, seed)
        cases.append(case(f"{model_name}-{label}", model_name, model, ids, mask, args, seed))
    return cases


def tiny_cases(model_name: str, model) -> list[dict]:
    ids, mask = left_pad(TINY_PROMPTS, PAD)
    base = {"max_new_tokens": 14, "repetition_penalty": 1.2}
    settings = [("low", {**base, "dola_layers": "low"}, 0), ("high", {**base, "dola_layers": "high"}, 0),
                ("list", {**base, "dola_layers": [0, 1]}, 0),
                ("sample", {**base, "dola_layers": [0, 1], "do_sample": True}, 7)]
    cases = batch_cases(model_name, model, ids, mask, settings)
    for i, prompt in enumerate(TINY_PROMPTS):
        one, one_mask = left_pad([prompt], PAD)
        args = {**base, "dola_layers": [0, 1], "pad_token_id": PAD, "eos_token_id": PAD}
        cases.append(case(f"{model_name}-alone-{i}", model_name, model, one, one_mask, args))
    return cases


def smollm2_cases(folder: Path, model) -> list[dict]:
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS]
    ids, mask = left_pad(prompts, PAD)
    base = {"max_new_tokens": 20, "repetition_penalty": 1.2}
    settings = [("low", {**base, "dola_layers": "low"}, 0), ("high", {**base, "dola_layers": "high"}, 0),
                ("list", {**base, "dola_layers": SMOLLM2_LIST}, 0),
                ("sample", {**base, "dola_layers": "high", "do_sample": True}, 3)]
    cases = batch_cases("smollm2", model, ids, mask, settings)
    for i, prompt in enumerate(prompts):
        one, one_mask = left_pad([prompt], PAD)
        args = {**base, "dola_layers": "high", "pad_token_id": PAD, "eos_token_id": PAD}
        cases.append(case(f"smollm2-alone-{i}", "smollm2", model, one, one_mask, args))
    return cases


def cases_of(name: str, folder: Path, model) -> list[dict]:
    return smollm2_cases(folder, model) if name == "smollm2" else tiny_cases(name, model)


if __name__ == "__main__":
    write_goldens(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-golden-models"), OUT, COMMAND, cases_of)
