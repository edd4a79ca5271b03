"""DRY, "don't repeat yourself" (llama.cpp's dry_*): penalise the token that would extend a repeat of an earlier
run of the text, exponentially in the run's length."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import NEG_INF, LogitsProcessor

if TYPE_CHECKING:
    from ..params import GenerationParams


class DRY(LogitsProcessor):
    """Being written (issue 15)."""


def build_dry(p: "GenerationParams", prompt_length: int, prompt_start: torch.Tensor | None) -> LogitsProcessor | None:
    """DRY(...), or None when dry_multiplier == 0 (off). The sequence breakers come resolved to token ids
    (p.dry_breaker_sequences, from `resolve_breakers` at the call's start)."""
    if p.dry_multiplier == 0:
        return None
    raise NotImplementedError("dry: being written (issue 15)")


def resolve_breakers(tokenizer: Any, breakers: tuple[str, ...]) -> Any:
    """The breaker strings as token sequences of this tokenizer (what DRY reads); called once per generate call."""
    return None


def with_breakers(p: "GenerationParams", tokenizer: Any) -> "GenerationParams":
    """`p` with dry_breaker_sequences resolved for `tokenizer` (DRY on with breakers needs one: a clear error)."""
    if p.dry_multiplier == 0 or not p.dry_sequence_breakers:
        return p
    if tokenizer is None:
        raise ValueError(f"dry_sequence_breakers={list(p.dry_sequence_breakers)!r} needs a tokenizer (DRY matches "
                         "the breakers as text): pass tokenizer=... to generate, or dry_sequence_breakers=[]")
    return p.with_(dry_breaker_sequences=resolve_breakers(tokenizer, p.dry_sequence_breakers))


def check_dry(p: "GenerationParams") -> None:
    """Types and ranges of dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n, dry_sequence_breakers."""
