"""The processor protocol and the list that applies processors in order.

A logits processor is `__call__(input_ids, scores) -> scores` and never changes `scores` in place: the
caller may keep the raw logits (output_logits) beside the processed ones. `input_ids` is (B, T), the whole
sequence so far with its left padding, exactly what generate passes; `scores` is (B, V) float32.
"""

from __future__ import annotations

import math

import torch

NEG_INF = -math.inf


class LogitsProcessor:
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        # repr compares processors across sweep configurations: tensors are left out (not comparable by text).
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, torch.Tensor))
        return f"{type(self).__name__}({args})"


class ProcessorList(list):
    """Apply processors in order."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores
