"""Golden results of llama.cpp's DRY sampler (tests/decoding/test_dry.py).

Runs in the llama.cpp reference venv (llama-cpp-python and numpy, no torch), from the project root:
    .venv/bin/python -m tests.goldens.smollm2_logits /tmp/decodelab-smollm2-logits.npz
    /work/ref-llama/bin/python -m tests.goldens.llama_dry /tmp/decodelab-smollm2-logits.npz
and writes tests/decoding/goldens/llama_dry.json.

Inputs: SmolLM2's 6 next-token rows (stored as their fingerprint; the test recomputes them) and 3 seeded random
rows over SmolLM2's vocabulary, each after token histories that repeat themselves and hold breakers: texts
tokenised by llama.cpp's own SmolLM2 tokenizer (`llama_ref.vocab()`), plus a degenerate loop. Each case applies
`llama_sampler_init_dry(vocab, multiplier, base, allowed_length, last_n, breakers)` after accepting the history.
DRY only lowers the logits of tokens it penalises, so a case stores those tokens (`changed_ids`), their logits
before (`exact_logits`, so the test runs on the golden's exact inputs there) and after (`changed_logits`).
A case with dry_penalty_last_n -1 (ours: the whole history) gives llama.cpp a window longer than the history
(its 0.3.36 sampler turns itself off for a negative one).

`breaker_tables`: for each breaker list, the (head, tail) table llama.cpp's get_overlapping_token_sequences builds,
rebuilt here with the same procedure on llama.cpp's detokenised tokens and llama.cpp's tokenizer (the sampler
keeps its table private); the cases check that table's effect through the sampler itself.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from tests.goldens.llama_ref import apply_chain, vocab, write_golden
from tests.goldens.smollm2_logits import fingerprint

OUT = Path(__file__).resolve().parents[1] / "decoding" / "goldens" / "llama_dry.json"
COMMAND = "/work/ref-llama/bin/python -m tests.goldens.llama_dry /tmp/decodelab-smollm2-logits.npz"
WHOLE = 1 << 16  # llama.cpp's window for our -1: longer than every history here
RANDOM_ROWS = 3
RANDOM_SEED = 15

DEFAULT_BREAKERS = ["\n", ":", "\"", "*"]
BREAKER_LISTS = [DEFAULT_BREAKERS, [], [" the cat", "Assistant:", "\n\n"]]

TEXTS = [
    "The cat sat on the mat. The cat sat on the mat. The cat sat on the",
    "He said: \"the cat sat on the mat\" and then he said: \"the cat sat on the",
    "* item one\n* item two\n* item three\n* item",
    "User: tell me a story\nAssistant: once upon a time the cat sat\nUser: tell me a story\nAssistant: once upon a",
    "Once upon a time, a small fox ran. Once upon a time, a small fox ran. Once upon a time, a small",
    "In the year 1861, the nation was divided. In the year 1861, the nation was",
]
# (multiplier, base, allowed_length, penalty_last_n): llama.cpp's defaults, a short window, allowed 0, base 1
SETTINGS = [(0.8, 1.75, 2, -1), (1.5, 2.0, 1, 16), (0.5, 1.1, 0, 64), (2.0, 1.75, 3, -1), (1.0, 1.0, 2, 40),
            (0.25, 3.0, 2, -1)]


def detokenized(model_vocab, token: int) -> bytes:
    """One token's text as llama.cpp's sampler reads it (vocab.detokenize({token}, special=true))."""
    buf = ctypes.create_string_buffer(512)
    n = llama_cpp.llama_detokenize(model_vocab, (llama_cpp.llama_token * 1)(token), 1, buf, 512, False, True)
    return buf.raw[:n]


def tokenized(model_vocab, text: bytes) -> list[int]:
    """llama.cpp's tokenization without special tokens (vocab.tokenize(text, false, false))."""
    out = (llama_cpp.llama_token * 512)()
    n = llama_cpp.llama_tokenize(model_vocab, text, len(text), out, 512, False, False)
    return list(out[:n])


def breaker_table(model_vocab, breakers: list[str]) -> dict:
    """get_overlapping_token_sequences over every token, for each breaker (cut to 40 bytes, tails to 20 tokens)."""
    words = [detokenized(model_vocab, t) for t in range(llama_cpp.llama_vocab_n_tokens(model_vocab))]
    single, tails = set(), set()
    for breaker in breakers:
        text = breaker.encode()[:40]
        for token, word in enumerate(words):
            if text in word:
                single.add(token)
                continue
            for pos in range(len(word)):
                if word[pos] == text[0] and text.startswith(word[pos:]):
                    tails.add((token, tuple(tokenized(model_vocab, text[len(word) - pos:])[:20])))
    return {"breakers": breakers, "single": sorted(single), "tails": [[h, list(t)] for h, t in sorted(tails)]}


def dry_sampler(model_vocab, setting, breakers: list[str], history_length: int):
    multiplier, base, allowed, last_n = setting
    strings = (ctypes.c_char_p * max(1, len(breakers)))(*[b.encode() for b in breakers])
    window = WHOLE if last_n == -1 else last_n
    assert window > history_length or last_n != -1
    return llama_cpp.llama_sampler_init_dry(model_vocab, multiplier, base, allowed, window, strings, len(breakers))


def histories(model_vocab) -> list[tuple[str, list[int]]]:
    out = [(f"text{i}", tokenized(model_vocab, text.encode())) for i, text in enumerate(TEXTS)]
    loop = tokenized(model_vocab, b" la la la") * 70  # a degenerate loop: long repeats, the exponent cap
    out.append(("loop", loop[:200]))
    return out


def main(npz: str) -> None:
    model_vocab = vocab()
    smollm2 = np.load(npz, allow_pickle=True)["logits"]
    rng = np.random.default_rng(RANDOM_SEED)
    random_rows = rng.standard_normal((RANDOM_ROWS, smollm2.shape[1])).astype(np.float32) * 3
    cases, exact = [], {}
    for name, history in histories(model_vocab):
        for s, setting in enumerate(SETTINGS):
            for b, breakers in enumerate(BREAKER_LISTS):
                if b and s % 2:  # the custom breaker lists with every other setting only
                    continue
                source, rows = ("smollm2", smollm2) if (s + b) % 2 == 0 else ("random", random_rows)
                row = (len(cases) * 5) % rows.shape[0]
                logits = rows[row]
                result = apply_chain([dry_sampler(model_vocab, setting, breakers, len(history))], logits, history)
                after = np.full_like(logits, -np.inf)
                after[result["ids"]] = np.asarray(result["logits"], dtype=np.float32)
                changed = np.nonzero(after != logits)[0].tolist()
                key = f"{source}:{row}"
                known = exact.setdefault(key, {})
                known.update({i: float(logits[i]) for i in changed})
                cases.append({"name": f"{name}/s{s}/b{b}", "logits": source, "row": row, "history": history,
                              "multiplier": setting[0], "base": setting[1], "allowed_length": setting[2],
                              "penalty_last_n": setting[3], "breakers": breakers, "changed_ids": changed,
                              "changed_logits": [float(after[i]) for i in changed]})
    exact_logits = {k: {"ids": sorted(v), "logits": [v[i] for i in sorted(v)]} for k, v in exact.items()}
    write_golden(OUT, COMMAND, cases, smollm2_fingerprint=fingerprint(smollm2), random_seed=RANDOM_SEED,
                 random_rows=RANDOM_ROWS, exact_logits=exact_logits,
                 breaker_tables=[breaker_table(model_vocab, b) for b in BREAKER_LISTS])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/decodelab-smollm2-logits.npz")
