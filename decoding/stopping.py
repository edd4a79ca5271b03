"""When a row stops: EOS ids, stop strings, and the length limit.

Stop strings follow transformers' `StopStringCriteria`: a row stops when a stop string appears in its text
*and overlaps the token just generated* (its last character lies inside that token). A stop string that sat
entirely in earlier tokens (for example in the prompt) never triggers, and one that a token overshoots
("stop" inside the token "stopped") does.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

FINISH_EOS = "eos"
FINISH_STOP_STRING = "stop_string"
FINISH_LENGTH = "length"
FINISH_CRITERIA = "stopping_criteria"  # a user-given stopping criterion flagged the row
FINISH_MAX_TIME = "max_time"  # the call ran past max_time seconds


class StopStrings:
    """Per-row stop-string check on the decoded tail of each sequence."""

    def __init__(self, stop_strings: Sequence[str], tokenizer: Any):
        if tokenizer is None:
            raise ValueError(f"stop_strings={list(stop_strings)!r} needs a tokenizer: pass tokenizer=... to generate")
        self.stop_strings = tuple(stop_strings)
        self.tokenizer = tokenizer
        # Each token carries at least one byte, so this many tokens always cover a whole stop string
        # plus the final token.
        self.window = max(len(s.encode("utf-8")) for s in self.stop_strings) + 1

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def row_hit(self, ids: list[int]) -> bool:
        tail = ids[-self.window:]
        full = self._decode(tail)
        before = self._decode(tail[:-1])
        # The final token's text starts where the text without it ends (byte-level BPE decodes prefix-stably).
        start_of_last = len(before) if full.startswith(before) else len(full) - len(self._decode(tail[-1:]))
        for stop in self.stop_strings:
            at = full.find(stop, max(0, start_of_last - len(stop) + 1))
            while at != -1:
                if at + len(stop) > start_of_last:
                    return True
                at = full.find(stop, at + 1)
        return False

    def __call__(self, sequences: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Rows (among `rows`) whose last token completes a stop string. `sequences` is (B, T)."""
        window = sequences[:, -self.window:].tolist()
        return [r for r in rows if self.row_hit(window[r])]


def eos_hits(tokens: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: the token just chosen is one of the EOS ids."""
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, eos)
