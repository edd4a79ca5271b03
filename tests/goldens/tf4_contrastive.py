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

import sys
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from tests.goldens.tf4_common import PAD, TEXTS, TINY_PROMPTS, generate_ids, left_pad, write_goldens

OUT = Path("tests/decoding/goldens/contrastive_tf4.json")
COMMAND = "/work/ref-tf4/bin/python -m tests.goldens.tf4_contrastive /tmp/decodelab-golden-models"


def run(model, ids: torch.Tensor, mask: torch.Tensor, args: dict) -> list[list[int]]:
    return generate_ids(model, ids, mask, {"do_sample": False, **args}, seed=0)  # contrastive search draws nothing


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


def cases_of(name: str, folder: Path, model) -> list[dict]:
    return smollm2_cases(folder, model) if name == "smollm2" else tiny_cases(name, model)


if __name__ == "__main__":
    write_goldens(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-golden-models"), OUT, COMMAND, cases_of)
