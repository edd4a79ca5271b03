"""Golden cases for the OpenAI / vLLM parameters, from a numpy transcription of vLLM's sampler (no vLLM, no torch,
nothing of decodelab's): `.venv/bin/python -m tests.goldens.vllm_penalties_cases` writes
tests/decoding/goldens/vllm_penalties.json.

vLLM is not installable here (CUDA wheels, gigabytes), so the reference is its published source, transcribed
step by step into `vllm_logits` below and run in float32 as vLLM runs it:
- vllm/v1/sample/sampler.py `Sampler.apply_logits_processors`: the allowed_token_ids mask (-inf elsewhere), bad
  words, then the non-argmax-invariant logits processors in BUILTIN_LOGITS_PROCESSORS order (logits_processor/
  __init__.py: MinTokens, then LogitBias), then the penalties;
- logits_processor/builtin.py: min_tokens sets the stop ids (EOS) to -inf while fewer than min_tokens tokens
  were generated; logit_bias adds each bias (float32) to its token's logit only;
- sampling_params.py `SamplingParams.from_optional`: logit_bias keys through int(), biases clamped to [-100, 100];
- model_executor/layers/utils.py `apply_penalties`: the repetition penalty over the tokens of the prompt or the
  output (csrc/sampler.cu: `logit > 0 ? logit / penalty : logit * penalty`), then `logits -= frequency *
  output_counts`, then `logits -= presence * (output_counts > 0)`; the counts over the output tokens only.

The prompt is the row's own, unpadded (vLLM pads its prompt tensor with vocab_size, which matches nothing).
Each batch of cases shares one setting and one output length (a decodelab batch decodes its rows in step); the
test left-pads the prompts with `pad_token_id`, a real token that must not count as seen. Logits are random
(seeded) with a few exact zeros (the repetition penalty's sign test) and stored in full (V is small).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

VOCAB = 24
OUT = Path(__file__).resolve().parents[1] / "decoding" / "goldens" / "vllm_penalties.json"
COMMAND = ".venv/bin/python -m tests.goldens.vllm_penalties_cases"
SOURCES = {  # the vLLM files transcribed, at the commits read
    "vllm/v1/sample/sampler.py": "3e342658b2e9c85a30a54d19e64e5ad77b8a26a6",
    "vllm/v1/sample/logits_processor/__init__.py": "6e052ba8f4d97e43fb88a3288f3240ff4f73d7d2",
    "vllm/v1/sample/logits_processor/builtin.py": "bf17660a2493b9cec475b6ba790a390afd317e8b",
    "vllm/model_executor/layers/utils.py": "00358600ed52e00c3c99b35e54aa916f900c4c15",
    "vllm/sampling_params.py": "from_optional: int(key), min(100.0, max(-100.0, bias))",
    "csrc/sampler.cu": "apply_repetition_penalties_kernel: logit > 0 ? logit / penalty : logit * penalty",
}

# (settings, [(prompt, output), ...]): the rows of one batch share the settings and the output length.
BATCHES = [
    (dict(frequency_penalty=0.5), [([3, 4, 5], [1, 1, 2, 7]), ([9], [7, 7, 7, 7]), ([0, 0, 6, 6], [0, 2, 4, 6])]),
    (dict(presence_penalty=1.25), [([3, 4, 5], [1, 1, 2, 7]), ([2, 2], [3, 3, 8, 9])]),
    (dict(presence_penalty=-0.75, frequency_penalty=0.3), [([1], [5, 5, 5, 6, 5]), ([8, 9, 10], [10, 11, 12, 10, 0])]),
    (dict(frequency_penalty=-2.0, presence_penalty=2.0), [([4, 4], [4, 4, 4]), ([0], [0, 1, 0])]),
    (dict(repetition_penalty=1.5), [([3, 4, 5], [1, 2]), ([0, 7], [7, 0]), ([11], [12, 13])]),
    (dict(repetition_penalty=0.8, frequency_penalty=0.4, presence_penalty=0.6),
     [([5, 6, 7, 8], [5, 9, 9]), ([2], [3, 3, 3])]),
    (dict(logit_bias={"3": 2.5, 7: -4.0, "20": 100.0}), [([1, 2], [3]), ([4], [5])]),
    (dict(logit_bias={5: 1.5, 6: -1.0}, repetition_penalty=2.0, frequency_penalty=0.25),
     [([5, 6], [6, 5, 6]), ([1, 2, 3], [6, 6, 4])]),
    (dict(allowed_token_ids=[2, 5, 11, 17]), [([1, 2, 3], [2, 5]), ([6], [7, 8])]),
    (dict(allowed_token_ids=[2, 5, 11], logit_bias={5: 3.0, 9: 50.0}, presence_penalty=0.5),
     [([1, 2, 3], [5, 5]), ([9], [11, 2])]),
    (dict(min_tokens=3, eos_token_id=[1, 4]), [([2, 3], [5, 6]), ([7], [1, 8])]),
    (dict(min_tokens=2, eos_token_id=[1], logit_bias={1: 10.0}), [([2, 3], [5, 6]), ([7], [9, 8])]),
    (dict(min_tokens=3, eos_token_id=[1], logit_bias={1: 10.0}, allowed_token_ids=[1, 2, 3, 4],
          repetition_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.1),
     [([2, 3, 3], [4, 2]), ([4], [4, 4])]),
]


def vllm_logits(logits: np.ndarray, prompt: list[int], output: list[int], settings: dict) -> np.ndarray:
    """One row's logits (V,) float32 after vLLM's steps up to (not including) temperature, in its order."""
    x = logits.astype(np.float32).copy()
    vocab = x.shape[0]
    allowed = settings.get("allowed_token_ids")
    if allowed is not None:  # step 3: the allowed_token_ids whitelist
        mask = np.ones(vocab, dtype=bool)
        mask[allowed] = False
        x[mask] = -np.inf
    min_tokens = settings.get("min_tokens", 0)
    if min_tokens and len(output) < min_tokens:  # step 5a: MinTokensLogitsProcessor
        x[list(settings["eos_token_id"])] = -np.inf
    for key, bias in (settings.get("logit_bias") or {}).items():  # step 5b: LogitBiasLogitsProcessor
        token = int(key)
        x[token] = x[token] + np.float32(min(100.0, max(-100.0, bias)))
    counts = np.zeros(vocab, dtype=np.int64)  # step 6: apply_penalties, output tokens counted
    np.add.at(counts, output, 1)
    seen = np.zeros(vocab, dtype=bool)
    seen[prompt] = True
    seen |= counts > 0
    penalty = np.float32(settings.get("repetition_penalty", 1.0))
    x = np.where(seen, np.where(x > 0, x / penalty, x * penalty), x).astype(np.float32)
    x = (x - np.float32(settings.get("frequency_penalty", 0.0)) * counts.astype(np.float32)).astype(np.float32)
    x = (x - np.float32(settings.get("presence_penalty", 0.0)) * (counts > 0).astype(np.float32)).astype(np.float32)
    return x


def random_logits(rng: np.random.Generator) -> np.ndarray:
    """(V,) float32 in [-4, 4) with three exact zeros (where the repetition penalty's sign test is decided)."""
    logits = rng.uniform(-4.0, 4.0, VOCAB).astype(np.float32)
    logits[rng.choice(VOCAB, 3, replace=False)] = 0.0
    return logits


def as_json(values: np.ndarray) -> list:
    """float32 values as Python floats (exact), -inf as None (JSON has no infinity)."""
    return [None if v == -np.inf else float(v) for v in values.tolist()]


def main() -> None:
    rng = np.random.default_rng(15)
    batches = []
    for settings, rows in BATCHES:
        assert len({len(output) for _, output in rows}) == 1, "one output length per batch"
        cases = []
        for prompt, output in rows:
            logits = random_logits(rng)
            expected = vllm_logits(logits, prompt, output, settings)
            cases.append(dict(prompt=prompt, output=output, logits=as_json(logits), expected=as_json(expected)))
        # JSON keys are strings: keep the int keys' spelling for the test ("3" and 3 are both accepted)
        stored = dict(settings)
        if "logit_bias" in stored:
            stored["logit_bias"] = [[key, bias] for key, bias in stored["logit_bias"].items()]
        batches.append(dict(settings=stored, rows=cases))
    payload = {"reference": "numpy transcription of vLLM's sampler (vllm_logits in the command's module)",
               "sources": SOURCES, "versions": {"numpy": np.__version__, "python": platform.python_version()},
               "command": COMMAND, "vocab_size": VOCAB, "pad_token_id": 0, "batches": batches}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {OUT} ({sum(len(b['rows']) for b in batches)} rows in {len(batches)} batches)")


if __name__ == "__main__":
    main()
