"""The processor protocol and the list that applies processors in order.

A logits processor is `__call__(input_ids, scores) -> scores` and never changes `scores` in place: the
caller may keep the raw logits (output_logits) beside the processed ones. `input_ids` is (B, T), the whole
sequence so far with its left padding, exactly what generate passes; `scores` is (B, V) float32.

Two processors of llama.cpp's are more than a function of (input_ids, scores), and say so with `stateful`:
XTC draws a uniform number per row and step from the run's random stream (`bind` hands it a `Draws`), and
mirostat carries a per-row state that the chosen token updates (`observe`, called by the loop once the step's
tokens are chosen, with the scores they were drawn from). The loops that re-run or reorder steps (beam
search, speculative verification) refuse stateful processors.
"""

from __future__ import annotations

import math
from typing import Any

import torch

NEG_INF = -math.inf


class LogitsProcessor:
    stateful = False  # True: random draws or per-row state across steps (bind / observe below)

    def bind(self, draws: Any) -> None:
        """Receive the run's random stream (a `draws.Draws`) before the first step; only XTC draws."""

    def observe(self, tokens: torch.Tensor, scores: torch.Tensor, probs: torch.Tensor | None = None) -> None:
        """After a step: `tokens` (B,) were chosen from `scores` (B, V), this list's output (mirostat's update);
        `probs`: softmax(scores) where the sampler computed it (None: compute it if needed)."""

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

    @property
    def stateful(self) -> bool:
        return any(getattr(processor, "stateful", False) for processor in self)  # a caller's own: not ours

    def bind(self, draws: Any) -> None:
        for processor in self:
            if getattr(processor, "stateful", False):
                processor.bind(draws)

    def observe(self, tokens: torch.Tensor, scores: torch.Tensor, probs: torch.Tensor | None = None) -> None:
        for processor in self:
            if getattr(processor, "stateful", False):
                processor.observe(tokens, scores, probs)


class ValueRepr:
    """A repr that shows small tensors' values: a batched sweep compares processors by repr to find the ones
    every configuration shares, so parameters held as (1, 1) tensors must show in it."""

    def __repr__(self) -> str:
        def shown(value: Any) -> Any:
            return value.tolist() if isinstance(value, torch.Tensor) and value.numel() <= 64 else value

        args = ", ".join(f"{k}={shown(v)!r}" for k, v in vars(self).items()
                         if not isinstance(v, torch.Tensor) or v.numel() <= 64)
        return f"{type(self).__name__}({args})"
