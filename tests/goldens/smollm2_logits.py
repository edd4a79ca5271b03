"""SmolLM2's next-token logits for a few fixed texts: the real-logit inputs of the llama.cpp golden scripts.

The llama.cpp reference venv has no torch, so the project's interpreter computes the logits and saves them:
    .venv/bin/python -m tests.goldens.smollm2_logits /tmp/decodelab-smollm2-logits.npz
and a golden script (`/work/ref-llama/bin/python -m tests.goldens.llama_<family> ...`) reads that file. The tests
recompute the same logits with `next_token_logits` (the `smollm2` fixture) and check them against the golden
file's `logits_fingerprint` before comparing anything, so a changed model or tokenizer fails loudly instead of
comparing against stale references.
"""

from __future__ import annotations

import sys

import numpy as np

TEXTS = (
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "The state of our Union is",
    "Once upon a time, a small fox",
    "Water boils at",
    "The history of the printing press",
    "In the year 1861, the nation",
)


def next_token_logits(model, tokenizer) -> tuple[list[list[int]], np.ndarray]:
    """(prompt ids per text, (len(TEXTS), V) float32 logits of the token after each text), one text at a time."""
    import torch

    ids, rows = [], []
    with torch.inference_mode():
        for text in TEXTS:
            prompt = tokenizer(text, return_tensors="pt").input_ids
            ids.append(prompt[0].tolist())
            rows.append(model(prompt).logits[0, -1].float().numpy())
    return ids, np.stack(rows).astype(np.float32)


def fingerprint(logits: np.ndarray) -> list[float]:
    """A few numbers that change with any logit: per-row sum, max and the value at the argmax."""
    return [round(float(v), 3) for row in logits for v in (row.sum(), row.max(), float(row.argmax()))]


def same_fingerprint(recomputed: list[float], stored: list[float]) -> bool:
    """Fingerprints equal up to the float32 summation order (thread counts change a 49k-term row sum's last
    digits: 201730.844 vs 201731.125 seen), never up to a different model."""
    return len(recomputed) == len(stored) and bool(np.allclose(recomputed, stored, rtol=1e-5, atol=2e-3))


def main(path: str) -> None:
    from experiments.models import load_model

    model, tokenizer = load_model("smollm2")
    ids, logits = next_token_logits(model, tokenizer)
    np.savez(path, logits=logits, ids=np.array([np.array(i) for i in ids], dtype=object), allow_pickle=True)
    print(f"wrote {path}: {logits.shape}, fingerprint {fingerprint(logits)[:6]}...")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-smollm2-logits.npz")
