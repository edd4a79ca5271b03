"""Temperature-like processors: rescale the whole distribution without removing tokens from it."""

from __future__ import annotations

from .base import LogitsProcessor


class Temperature(LogitsProcessor):
    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} is not allowed while sampling: use a number > 0, "
                             "or do_sample=False for greedy decoding")
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        return scores / self.temperature
