"""Golden distributions of llama.cpp's whole default sampler chain (tests/decoding/test_sampler_chain.py).

Runs in the llama.cpp reference venv (llama-cpp-python and numpy, no torch), from the project root:
    .venv/bin/python -m tests.goldens.smollm2_logits /tmp/decodelab-smollm2-logits.npz
    /work/ref-llama/bin/python -m tests.goldens.llama_chain /tmp/decodelab-smollm2-logits.npz
and writes tests/decoding/goldens/llama_chain.json.

SETTINGS random settings (seeded), each a subset of top_k, top_p, min_p, typical_p, temperature, top_n_sigma,
XTC (probability 0 or 1, so the draw decides nothing), dynamic temperature, the repetition / frequency / presence
penalties and DRY, named as decodelab names them. Each runs on SmolLM2's 6 next-token rows after a token history
(the row's prompt, then the row's likeliest tokens and a repeat of the prompt's end, so that the penalties and
DRY touch tokens that can survive). llama.cpp's chain is built as common/sampling.cpp builds it from
common_params_sampling, in its default order: penalties, DRY, top-nσ, top-k, typical, top-p, min-p, XTC,
temperature (temp_ext), every sampler present with the setting's value or its neutral one, min_keep 1
(decodelab keeps one token). The result is the distribution llama.cpp's dist sampler draws from: the
survivors and their softmax.

Recomputed logits differ from the .npz in their last bits (up to ~3e-5 with other thread counts), which moves
probabilities past 1e-6; the final distribution depends only on the survivors' logits (and XTC's decision on
the candidates before it, all among the likeliest tokens), so each row's EXACT_STORED highest logits and its
history tokens' logits are stored exactly, and the test runs on the recomputed row with those put back. Every
case's survivors (and XTC's candidates) are checked here to lie among the stored ids.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from tests.goldens.llama_ref import apply_chain, vocab, write_golden
from tests.goldens.smollm2_logits import fingerprint

OUT = Path(__file__).resolve().parents[1] / "decoding" / "goldens" / "llama_chain.json"
COMMAND = "/work/ref-llama/bin/python -m tests.goldens.llama_chain /tmp/decodelab-smollm2-logits.npz"
SETTINGS = 20
SEED = 15
EXACT_STORED = 1536  # highest logits per row stored exactly
MAX_SURVIVORS = 1024  # settings whose chains keep more on some row are drawn again
MIN_KEEP = 1  # decodelab's min_tokens_to_keep outside beam search
PENALTY_LAST_N = 64  # llama.cpp's default window; every history here is shorter, so it covers all of it
DRY_BREAKERS = ("\n", ":", "\"", "*")  # common_params_sampling's and decodelab's default
NEUTRAL = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, temperature=1.0, top_n_sigma=-1.0, xtc_probability=0.0,
               xtc_threshold=0.1, dynatemp_range=0.0, dynatemp_exponent=1.0, repetition_penalty=1.0,
               frequency_penalty=0.0, presence_penalty=0.0, dry_multiplier=0.0, dry_base=1.75, dry_allowed_length=2,
               dry_penalty_last_n=PENALTY_LAST_N)


def draw_setting(rng: np.random.Generator) -> dict:
    """One random subset of the samplers, in decodelab's names; at least one that truncates."""
    setting: dict = {}
    while not {"top_k", "top_p", "min_p", "top_n_sigma"} & set(setting):
        setting = {}
        if rng.random() < 0.5:
            setting["top_k"] = int(rng.choice([5, 10, 20, 40, 100, 400]))
        if rng.random() < 0.4:
            setting["top_p"] = round(float(rng.uniform(0.5, 0.95)), 2)
        if rng.random() < 0.4:
            setting["min_p"] = float(rng.choice([0.01, 0.02, 0.05, 0.1, 0.2]))
        if rng.random() < 0.4:
            setting["typical_p"] = round(float(rng.uniform(0.5, 0.95)), 2)
        if rng.random() < 0.3:
            setting["top_n_sigma"] = round(float(rng.uniform(0.5, 3.0)), 2)
    if rng.random() < 0.6:
        setting["temperature"] = round(float(rng.uniform(0.5, 1.5)), 2)
    if rng.random() < 0.35:
        setting["xtc_probability"] = float(rng.choice([0.0, 1.0], p=[0.3, 0.7]))
        setting["xtc_threshold"] = round(float(rng.uniform(0.02, 0.3)), 3)
    if rng.random() < 0.3:
        setting["dynatemp_range"] = round(float(rng.uniform(0.1, 1.0)), 2)
        setting["dynatemp_exponent"] = round(float(rng.uniform(0.5, 2.0)), 2)
    if rng.random() < 0.4:
        setting["repetition_penalty"] = round(float(rng.uniform(1.05, 1.5)), 2)
    if rng.random() < 0.3:
        setting["frequency_penalty"] = round(float(rng.uniform(0.1, 1.0)), 2)
    if rng.random() < 0.3:
        setting["presence_penalty"] = round(float(rng.uniform(0.1, 1.0)), 2)
    if rng.random() < 0.3:
        setting["dry_multiplier"] = round(float(rng.uniform(0.2, 1.5)), 2)
        setting["dry_base"] = round(float(rng.uniform(1.2, 2.0)), 2)
        setting["dry_allowed_length"] = int(rng.choice([1, 2, 3]))
    return setting


def llama_chain(setting: dict) -> list:
    """common/sampling.cpp's default chain for `setting` (neutral values for what it leaves out)."""
    s = {**NEUTRAL, **setting}
    breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*(b.encode() for b in DRY_BREAKERS))
    return [
        llama_cpp.llama_sampler_init_penalties(llama_cpp.llama_vocab_n_tokens(vocab()), PENALTY_LAST_N,
                                               s["repetition_penalty"], s["frequency_penalty"], s["presence_penalty"]),
        llama_cpp.llama_sampler_init_dry(vocab(), s["dry_multiplier"], s["dry_base"], s["dry_allowed_length"],
                                         s["dry_penalty_last_n"], breakers, len(DRY_BREAKERS)),
        llama_cpp.llama_sampler_init_top_n_sigma(s["top_n_sigma"]),
        llama_cpp.llama_sampler_init_top_k(s["top_k"]),
        llama_cpp.llama_sampler_init_typical(s["typical_p"], MIN_KEEP),
        llama_cpp.llama_sampler_init_top_p(s["top_p"], MIN_KEEP),
        llama_cpp.llama_sampler_init_min_p(s["min_p"], MIN_KEEP),
        llama_cpp.llama_sampler_init_xtc(s["xtc_probability"], s["xtc_threshold"], MIN_KEEP, SEED),
        llama_cpp.llama_sampler_init_temp_ext(s["temperature"], s["dynatemp_range"], s["dynatemp_exponent"]),
    ]


def history(prompt: list[int], row: np.ndarray) -> list[int]:
    """The prompt, its row's three likeliest tokens (the first twice), then the prompt's last three tokens again:
    the penalties count tokens that can survive, and DRY sees the prompt's end repeat (what followed it then,
    the likeliest token, continues the repeat)."""
    top = [int(i) for i in np.argsort(-row, kind="stable")[:3]]
    return list(prompt) + [top[0], top[1], top[0], top[2]] + list(prompt[-3:])


def rounded(values) -> list[float]:
    return [round(float(v), 10) for v in values]


def exact_logits(row: np.ndarray, extra: list[int]) -> dict:
    """The row's EXACT_STORED highest logits and those of `extra`, by id, as float32 values' shortest reprs."""
    ids = sorted(set(int(i) for i in np.argsort(-row, kind="stable")[:EXACT_STORED]) | set(extra))
    return {"ids": ids, "logits": [float(np.format_float_positional(row[i], unique=True)) for i in ids]}


def case(setting: dict, row_index: int, row: np.ndarray, tokens: list[int], stored: set[int]) -> dict | None:
    """llama.cpp's distribution for one setting and row; None when it keeps more than MAX_SURVIVORS."""
    result = apply_chain(llama_chain(setting), row, tokens)
    if len(result["ids"]) > MAX_SURVIVORS:
        return None
    checked = [result["ids"]]
    if setting.get("xtc_probability"):  # XTC decides on the candidates before it: they must be exact too
        checked.append(apply_chain(llama_chain({**setting, "xtc_probability": 0.0}), row, tokens)["ids"])
    for ids in checked:
        assert set(ids) <= stored, f"survivors outside the exactly stored logits: {sorted(set(ids) - stored)[:5]}"
    order = sorted(range(len(result["ids"])), key=lambda i: result["ids"][i])
    return {"row": row_index, "ids": [result["ids"][i] for i in order],
            "probs": rounded(result["probs"][i] for i in order)}


def main(npz: str) -> None:
    data = np.load(npz, allow_pickle=True)
    rows = data["logits"].astype(np.float32)
    prompts = [list(map(int, ids)) for ids in data["ids"]]
    histories = [history(prompt, row) for prompt, row in zip(prompts, rows)]
    exact = [exact_logits(row, tokens) for row, tokens in zip(rows, histories)]
    rng = np.random.default_rng(SEED)
    settings, cases, redrawn = [], [], 0
    while len(settings) < SETTINGS:
        setting = draw_setting(rng)
        found = [case(setting, i, row, tokens, set(e["ids"]))
                 for i, (row, tokens, e) in enumerate(zip(rows, histories, exact))]
        if any(c is None for c in found):
            redrawn += 1
            continue
        settings.append(setting)
        cases += [{"setting": len(settings) - 1, **c} for c in found]
    write_golden(OUT, COMMAND, cases, settings=settings, histories=histories, smollm2_fingerprint=fingerprint(rows),
                 smollm2_exact_logits=exact, min_keep=MIN_KEEP, penalty_last_n=PENALTY_LAST_N,
                 dry_sequence_breakers=list(DRY_BREAKERS),
                 notes=f"{SETTINGS} settings (seed {SEED}; {redrawn} redrawn for keeping more than {MAX_SURVIVORS} "
                       "tokens on some row) x 6 SmolLM2 rows; llama.cpp's default chain order with neutral values "
                       "for the samplers a setting leaves out; ids sorted, probs the survivors' softmax")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-smollm2-logits.npz")
