"""Golden runs of llama.cpp's mirostat and mirostat_v2 samplers (tests/decoding/test_mirostat.py).

Runs in the llama.cpp reference venv (llama-cpp-python and numpy, no torch), from the project root:
    .venv/bin/python -m tests.goldens.smollm2_logits /tmp/decodelab-smollm2-logits.npz
    /work/ref-llama/bin/python -m tests.goldens.llama_mirostat /tmp/decodelab-smollm2-logits.npz
and writes tests/decoding/goldens/llama_mirostat.json.

A run is one seeded llama.cpp sampler (optionally after a plain temperature, llama.cpp's chain with mirostat on)
applied for several steps, step t to the logits row `rows[t]`; mirostat chooses each step's token itself and
updates its mu. Per step the run records mu before the step, the truncated set (surviving ids sorted by id and
their renormalised probabilities; past MAX_STORED survivors, their count and the TOP_STORED most likely) and the
selected id. The test replays the run with our processor, forcing the selected ids through `observe`.

mu is llama.cpp's private state: it is read from the sampler's context struct (src/llama-sampler.cpp of this
version: v1 {int32 n_vocab, uint32 seed, uint32 seed_cur, float tau, float eta, int32 m, float mu, ...}, v2
{uint32 seed, uint32 seed_cur, float tau, float eta, float mu, ...}), and checked twice here: it starts at 2 * tau,
and each step moves it by -eta * (-log2 p(selected) - tau) with p the selected token's renormalised probability.

Inputs: seeded random rows (V <= 256, stored in full: normal, Zipf-like, peaked) and SmolLM2's 6 next-token rows
(their fingerprint, and their TOP_LOGITS highest logits with ids so that the test runs on the exact values the
survivors came from; the rest of each row is the test's recomputed logits).

The SmolLM2 runs keep mu where the cut falls among the likely tokens (at most a few thousand survivors). A run
whose mu runs away (tau 6 at temperature 0.8 reached mu 23 and kept the whole vocabulary) cuts deep in the tail,
where thousands of tokens lie within 1e-4 bits of each other; there llama.cpp's softmax, summing 49152 terms one
by one in float32 (relative error ~5e-5), put a token on the other side of mu than ours in 3 of 12 steps.
"""

from __future__ import annotations

import ctypes
import math
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from tests.goldens.llama_ref import MAX_STORED, TOP_STORED, stored, apply_chain, write_golden
from tests.goldens.smollm2_logits import fingerprint

OUT = Path(__file__).resolve().parents[1] / "decoding" / "goldens" / "llama_mirostat.json"
COMMAND = "/work/ref-llama/bin/python -m tests.goldens.llama_mirostat /tmp/decodelab-smollm2-logits.npz"
TOP_LOGITS = 1024  # SmolLM2's highest logits stored per row: more than any stored survivor set
MU_OFFSET = {1: 24, 2: 16}  # bytes from the context's start to its float mu (the struct layouts above)
HEAD = 100  # v1's m, as common/sampling.cpp passes it


def mu_of(sampler, version: int) -> float:
    """The sampler's current mu, read from its context struct."""
    ctx = ctypes.cast(sampler, ctypes.POINTER(llama_cpp.llama_sampler)).contents.ctx
    return ctypes.cast(ctx + MU_OFFSET[version], ctypes.POINTER(ctypes.c_float)).contents.value


def run(source: str, rows: list[int], table: list[np.ndarray], version: int, tau: float, eta: float, seed: int,
        n_vocab: int, temperature: float | None = None) -> dict:
    """One sampler over len(rows) steps: per step mu before it, the truncated set and the selected id."""
    if version == 1:
        sampler = llama_cpp.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, HEAD)
    else:
        sampler = llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta)
    temp = None if temperature is None else llama_cpp.llama_sampler_init_temp(temperature)
    mu = mu_of(sampler, version)
    assert mu == np.float32(2) * np.float32(tau), (mu, tau)  # the offset reads mu, not a neighbour
    steps = []
    for row in rows:
        result = apply_chain([s for s in (temp, sampler) if s is not None], table[row], free=False)
        after = mu_of(sampler, version)
        chosen = result["probs"][result["ids"].index(result["selected"])]
        expected = np.float32(mu) - np.float32(eta) * (np.float32(-math.log2(chosen)) - np.float32(tau))
        assert abs(after - expected) < 1e-4, (after, expected)  # mu moved by llama.cpp's rule
        steps.append({"row": row, "mu": mu, "selected": result["selected"], **stored(result, MAX_STORED, TOP_STORED)})
        mu = after
    for s in (temp, sampler):
        if s is not None:
            llama_cpp.llama_sampler_free(s)
    return {"source": source, "version": version, "tau": tau, "eta": eta, "seed": seed, "n_vocab": n_vocab,
            "temperature": temperature, "steps": steps}


def random_rows() -> list[np.ndarray]:
    """Seeded float32 rows: normal at three scales, Zipf-like (logit -s * log rank, shuffled, a little noise),
    peaked (a few large logits)."""
    rng = np.random.default_rng(2468)
    rows = []
    for v in (32, 64, 256):
        for scale in (1.0, 2.0, 4.0):
            rows.append((rng.standard_normal(v) * scale).astype(np.float32))
        for s in (0.8, 1.2, 2.0):
            zipf = -s * np.log(np.arange(1, v + 1)) + 0.05 * rng.standard_normal(v)
            rows.append(rng.permutation(zipf).astype(np.float32))
        peaked = rng.standard_normal(v).astype(np.float32)
        peaked[rng.choice(v, size=4, replace=False)] += np.float32(5.0)
        rows.append(peaked)
    return rows


def random_runs(table: list[np.ndarray]) -> list[dict]:
    """v1 and v2 runs over rows of one width (the row sequence cycles through that width's rows)."""
    runs = []
    by_width: dict[int, list[int]] = {}
    for i, row in enumerate(table):
        by_width.setdefault(int(row.shape[0]), []).append(i)
    seed = 10
    for width, ids in by_width.items():
        sequence = [ids[t % len(ids)] for t in range(12)]
        for version in (1, 2):
            for tau, eta, temperature in ((3.0, 0.1, None), (5.0, 0.5, None), (2.0, 1.0, 0.7), (4.0, 0.3, 1.5)):
                seed += 1
                runs.append(run("random", sequence, table, version, tau, eta, seed, width, temperature))
        # v1 with a vocabulary wider than the scores (the model's n_vocab, not the width, enters k)
        runs.append(run("random", sequence, table, 1, 5.0, 0.2, seed + 100, 49152))
    return runs


def smollm2_runs(table: list[np.ndarray]) -> list[dict]:
    """v1 and v2 over SmolLM2's rows, twice around the 6 of them."""
    sequence = [t % len(table) for t in range(12)]
    runs = []
    for version in (1, 2):
        for i, (tau, eta, temperature) in enumerate(((5.0, 0.1, None), (3.0, 1.0, None), (4.0, 0.3, 0.8))):
            runs.append(run("smollm2", sequence, table, version, tau, eta, 300 + 10 * version + i,
                            int(table[0].shape[0]), temperature))
    return runs


def main(npz: str) -> None:
    randoms = random_rows()
    runs = random_runs(randoms)
    smol = list(np.load(npz, allow_pickle=True)["logits"].astype(np.float32))
    runs += smollm2_runs(smol)
    top = [np.argsort(-row, kind="stable")[:TOP_LOGITS] for row in smol]
    top_logits = [{"ids": [int(i) for i in ids], "logits": [float(row[i]) for i in ids]} for ids, row in zip(top, smol)]
    for r in runs:  # every stored SmolLM2 survivor lies among the stored logits
        for s in r["steps"]:
            if r["source"] == "smollm2":
                assert set(s.get("ids", s.get("top_ids"))) <= set(top_logits[s["row"]]["ids"]), (r["version"], s["row"])
    sizes = [len(s["ids"]) if "ids" in s else s["n_ids"] for r in runs for s in r["steps"]]
    print(f"survivors per step: min {min(sizes)}, max {max(sizes)}, median {sorted(sizes)[len(sizes) // 2]}")
    write_golden(OUT, COMMAND, runs, random_logits=[r.tolist() for r in randoms],
                 smollm2_fingerprint=fingerprint(np.stack(smol)), smollm2_top_logits=top_logits,
                 notes="each case is a run of one sampler: per step the logits row, mu before the step (read from "
                       "llama.cpp's context), the survivors (ids/probs sorted by id; n_ids/top_ids/top_probs when "
                       f"more than {MAX_STORED}) and the selected id")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-smollm2-logits.npz")
