"""Golden results of llama.cpp's top_n_sigma, xtc and temp_ext samplers (tests/decoding/test_llama_truncation.py).

Runs in the llama.cpp reference venv (llama-cpp-python and numpy, no torch), from the project root:
    .venv/bin/python -m tests.goldens.smollm2_logits /tmp/decodelab-smollm2-logits.npz
    /work/ref-llama/bin/python -m tests.goldens.llama_truncation /tmp/decodelab-smollm2-logits.npz
and writes tests/decoding/goldens/llama_truncation.json.

Inputs: seeded random logits (V <= 256, stored in full) and SmolLM2's 6 next-token rows (stored as their
fingerprint; the test recomputes them). Each case is a chain of llama.cpp samplers applied to one row:
- ["top_n_sigma", n]; ["top_k", k] then ["top_n_sigma", n];
- ["xtc", p, threshold, min_keep, seed] with p = 1 (always applies) and p = 0 (llama.cpp builds nothing), and
  with 0 < p < 1 over several steps of one sampler: each step's decision is recorded ("applied") together with
  the chance llama.cpp drew, recomputed here from its seeded std::mt19937 (libstdc++'s
  generate_canonical<float>: float(raw) / 2^32), so the test can check the comparison's direction;
- ["temp_ext", t, range, exponent], alone and after ["top_k", k].
SmolLM2's 64 highest logits per row are stored too, so the chains that start with top-k run on the exact inputs.
Results: surviving ids and their renormalised probabilities; a result of more than MAX_STORED survivors (the
full SmolLM2 vocabulary) is stored as its count and its TOP_STORED most likely ids and probabilities.
"""

from __future__ import annotations

import sys
from pathlib import Path

import llama_cpp
import numpy as np

from tests.goldens.llama_ref import MAX_STORED, TOP_STORED, stored, apply_chain, write_golden
from tests.goldens.smollm2_logits import fingerprint

OUT = Path(__file__).resolve().parents[1] / "decoding" / "goldens" / "llama_truncation.json"
COMMAND = "/work/ref-llama/bin/python -m tests.goldens.llama_truncation /tmp/decodelab-smollm2-logits.npz"
TOP_LOGITS = 64  # SmolLM2's highest logits stored per row (every top-k chain here keeps at most 40)
XTC_STEPS = 12  # steps of one XTC sampler with 0 < p < 1


def sampler(spec: list):
    """A llama.cpp sampler from [name, *arguments]."""
    name, *args = spec
    if name == "top_n_sigma":
        return llama_cpp.llama_sampler_init_top_n_sigma(float(args[0]))
    if name == "top_k":
        return llama_cpp.llama_sampler_init_top_k(int(args[0]))
    if name == "xtc":
        p, threshold, min_keep, seed = args
        return llama_cpp.llama_sampler_init_xtc(float(p), float(threshold), int(min_keep), int(seed))
    if name == "temp_ext":
        return llama_cpp.llama_sampler_init_temp_ext(*(float(a) for a in args))
    raise ValueError(name)


def mt19937_chances(seed: int, n: int) -> list[float]:
    """The first n draws of std::uniform_real_distribution<float>(0, 1) on std::mt19937(seed), as libstdc++."""
    generator = np.random.MT19937()
    generator._legacy_seeding(seed)  # init_genrand(seed), std::mt19937's seeding
    raw = generator.random_raw(n).astype(np.float32)
    chances = raw / np.float32(2.0 ** 32)
    return [float(min(c, np.nextafter(np.float32(1), np.float32(0)))) for c in chances]


def chain_cases(source: str, row: int, logits: np.ndarray) -> list[dict]:
    """Deterministic chains (top-nσ, XTC with p in {0, 1}, temp_ext) on one row."""
    chains = [[["top_n_sigma", n]] for n in (0.5, 1.0, 2.0)]
    chains += [[["top_k", 40], ["top_n_sigma", 1.5]]]
    for threshold in (0.0, 0.05, 0.1, 0.2, 0.5):
        chains += [[["top_k", 40], ["xtc", 1.0, threshold, 1, 7]]]
    chains += [[["top_k", 40], ["xtc", 1.0, 0.05, keep, 7]] for keep in (5, 38)]
    chains += [[["top_k", 40], ["xtc", 0.0, 0.1, 1, 7]]]  # XTC after top-k: SmolLM2's would keep 49k ids
    for t, delta, exponent in ((1.0, 0.5, 1.0), (0.8, 0.8, 2.0), (1.2, 0.3, 0.5), (0.5, 1.0, 1.0), (1.0, 0.5, 0.0)):
        chains += [[["temp_ext", t, delta, exponent]], [["top_k", 20], ["temp_ext", t, delta, exponent]]]
    cases = []
    for chain in chains:
        result = apply_chain([sampler(s) for s in chain], logits)
        cases.append({"source": source, "row": row, "chain": chain, **stored(result, MAX_STORED, TOP_STORED)})
    return cases


def xtc_steps(source: str, row: int, logits: np.ndarray, p: float, threshold: float, seed: int) -> dict:
    """XTC_STEPS applications of one seeded XTC sampler (after top-k 40): each step's decision and chance."""
    top_k = sampler(["top_k", 40])
    before = apply_chain([top_k], logits, free=False)
    # at most the second most likely candidate's probability, so that an applied step always excludes something
    second = sorted(before["probs"], reverse=True)[1]
    threshold = round(min(threshold, 0.9 * second), 6)
    xtc = sampler(["xtc", p, threshold, 1, seed])
    applied = []
    for _ in range(XTC_STEPS):
        result = apply_chain([top_k, xtc], logits, free=False)
        applied.append(len(result["ids"]) != len(before["ids"]))
    llama_cpp.llama_sampler_free(top_k)
    llama_cpp.llama_sampler_free(xtc)
    chances = mt19937_chances(seed, XTC_STEPS)
    # the recomputed stream must explain every decision (chance <= p applies), or the golden is wrong
    assert applied == [c <= p for c in chances], (applied, chances, p)
    return {"source": source, "row": row, "chain": [["top_k", 40], ["xtc", p, threshold, 1, seed]],
            "applied": applied, "chances": chances}


def random_rows() -> list[np.ndarray]:
    """Seeded float32 rows: normal, peaked (a few large logits, so XTC has several top choices), wide."""
    rng = np.random.default_rng(1234)
    rows = []
    for v in (8, 32, 64, 256):
        rows.append((rng.standard_normal(v) * 2).astype(np.float32))
        peaked = rng.standard_normal(v).astype(np.float32)
        peaked[rng.choice(v, size=min(4, v // 2), replace=False)] += np.float32(4.0)
        rows.append(peaked)
    rows.append((rng.standard_normal(256) * 8).astype(np.float32))
    return rows


def main(npz: str) -> None:
    cases, steps = [], []
    randoms = random_rows()
    for i, row in enumerate(randoms):
        cases += chain_cases("random", i, row)
        if row.shape[0] >= 32:
            steps.append(xtc_steps("random", i, row, 0.5, 0.05, 100 + i))
    data = np.load(npz, allow_pickle=True)
    smol = data["logits"].astype(np.float32)
    for i, row in enumerate(smol):
        cases += chain_cases("smollm2", i, row)
        steps.append(xtc_steps("smollm2", i, row, 0.3, 0.02, 200 + i))
    # the inputs of the chains that start with top-k, exactly: recomputed logits differ in their last bits with
    # the thread count, and a low dynamic temperature magnifies that past 1e-6
    top = [np.argsort(-row, kind="stable")[:TOP_LOGITS] for row in smol]
    top_logits = [{"ids": [int(i) for i in ids], "logits": [float(row[i]) for i in ids]} for ids, row in zip(top, smol)]
    write_golden(OUT, COMMAND, cases, random_logits=[r.tolist() for r in randoms],
                 smollm2_fingerprint=fingerprint(smol), smollm2_top_logits=top_logits, xtc_steps=steps,
                 notes="ids/probs sorted by id; n_ids/top_ids/top_probs when more than "
                       f"{MAX_STORED} survive; xtc_steps: decisions of one seeded sampler over {XTC_STEPS} steps")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-smollm2-logits.npz")
