"""Our count-based metrics behind the `evaluate` library's module interface, loadable offline.

`evaluate.load("diversity")` would fetch a script from the Hugging Face hub, which we cannot reach; given a
local directory that holds a script of the same name, `evaluate.load` imports that script instead, with no
network. Each folder here is such a module: `evaluate.load(module_path("diversity"))`. The scripts are thin:
they tokenize and call the plain functions of `experiments.metrics`, so both interfaces give the same numbers
(tested). Inputs are `predictions` (strings); tokenization is a compute argument: pass `tokenizer=` for model
tokens, or nothing for whitespace words (`tokenization=` overrides).

Modules: `diversity` (distinct_1..4, rep_2..4, diversity), `self_bleu` (self_bleu4), `zipf` (zipf),
`repetition` (repetition_pct).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from experiments.metrics.tokens import tokenize

MODULES = ("diversity", "self_bleu", "zipf", "repetition")


def module_path(name: str) -> str:
    """The folder to hand to `evaluate.load` for one of our modules."""
    if name not in MODULES:
        raise ValueError(f"no local evaluate module named {name!r}: choose one of {MODULES}")
    return str(Path(__file__).resolve().parent / name)


def predictions_to_tokens(
    predictions: Sequence[str], tokenizer: Any = None, tokenization: str | None = None
) -> list[list[Hashable]]:
    """Tokenize module inputs: model tokens when a tokenizer is given, else whitespace words."""
    if tokenization is None:
        tokenization = "model" if tokenizer is not None else "whitespace"
    return tokenize(predictions, tokenizer, tokenization=tokenization)
