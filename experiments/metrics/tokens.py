"""The one place where text becomes the token sequences every count-based metric works on.

Which tokens: by default the model tokenizer's tokens (ids, no special tokens added), as Holtzman et al.
(2020) count distinct-n, Self-BLEU, Zipf and repetition on GPT-2 BPE tokens. Subword tokens make the
numbers comparable across languages and free of any whitespace-splitting choice, and the repetition
detector needs them to see loops inside words. `"whitespace"` splits on whitespace instead, as SimCTG's
evaluation script (Su et al. 2022) does for rep-n; use it to compare with numbers published that way.
Every metric in one call uses the same tokens, so rep-n, distinct-n and mean length agree with each other.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

TOKENIZATIONS = ("model", "whitespace")

Tokens = Sequence[Hashable]


def tokenize(texts: Sequence[str], tokenizer: Any = None, *, tokenization: str = "model") -> list[list[Hashable]]:
    """Split each text into tokens: model token ids (`tokenization="model"`) or whitespace words."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"tokenization={tokenization!r} is not supported: use one of {TOKENIZATIONS}")
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string: wrap it in a list")
    if tokenization == "whitespace":
        return [text.split() for text in texts]
    if tokenizer is None:
        raise ValueError('tokenization="model" needs a tokenizer: pass one, or use tokenization="whitespace"')
    if not texts:
        return []
    # No BOS/EOS: a special token the model never wrote must not count as a generated token.
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def check_token_lists(token_lists: Sequence[Tokens]) -> None:
    """Reject raw text where token sequences are expected: counting characters would give plausible nonsense."""
    if isinstance(token_lists, str) or any(isinstance(tokens, str) for tokens in token_lists):
        raise TypeError(
            "token_lists must be a list of token sequences, one per generation, not strings: "
            "tokenize the texts first (experiments.metrics.tokens.tokenize)"
        )


def ngrams(tokens: Tokens, n: int) -> list[tuple]:
    """All contiguous n-grams of one sequence, in order; a sequence shorter than n has none."""
    if n < 1:
        raise ValueError(f"n={n} must be a positive integer")
    return list(zip(*(tokens[i:] for i in range(n))))
