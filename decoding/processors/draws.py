"""The run's random stream, for processors that draw (XTC): one uniform number per row per call.

A plain run draws from its one generator (or torch's global RNG when it has none) for all rows, in row order.
A batched sweep hands each configuration's rows to that configuration's own generator (`groups`), so a row
draws exactly what its configuration run alone draws, and a configuration whose rows do not use the
processor draws nothing from its stream (the lone run would not either). The draw comes before the step's
multinomial from the same stream, in both.
"""

from __future__ import annotations

from typing import Sequence

import torch


class Draws:
    def __init__(self, groups: Sequence[tuple[int, int, torch.Generator | None]], rows: int):
        """groups: (start, stop, generator) for every run of rows that shares one stream; rows: R in all."""
        self.groups = list(groups)
        self.rows = rows

    @classmethod
    def single(cls, generator: torch.Generator | None, rows: int) -> "Draws":
        return cls([(0, rows, generator)], rows)

    def uniform(self, used: Sequence[bool] | None, device: torch.device) -> torch.Tensor:
        """(R,) float32 uniforms in [0, 1): each group whose first row is `used` draws its rows from its stream;
        the rows of the other groups get 1.0 and their streams are untouched. used None: every group draws."""
        out = torch.ones(self.rows, dtype=torch.float32, device=device)
        for start, stop, generator in self.groups:
            if used is None or used[start]:
                out[start:stop] = torch.rand(stop - start, generator=generator, device=device)
        return out
