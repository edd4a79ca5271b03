"""Logits processors over a verified block: each row and position sees its own history.

In a verify pass, position j of row i scores the token after the row's text plus its first j proposals, so a
processor that reads the history (repetition penalty, n-gram bans, min_new_tokens counting the length) must
see exactly that prefix, as generate's assisted loop gives it (`candidate_input_ids[:, :cur_len + j]`). Rows
have different lengths, so those processors run per row and position, on one row each (a list built per row,
with that row's left padding). Processors that never read the history (temperature and the truncations) run
once over every row and position together.
"""

from __future__ import annotations

from typing import Any

import torch

from ..params import GenerationParams
from ..processors import ProcessorList, build_processors
from ..processors.normalization import InfNanRemove, LogitNormalization
from ..processors.temperature import Temperature
from ..processors.truncation import EpsilonCutoff, EtaCutoff, MinP, TopH, TopK, TopP, Typical
from ..processors.constraints import SuppressTokens
from ..processors.dynatemp import DynamicTemperature
from ..processors.openai_penalties import AllowedTokenIds, LogitBias
from ..processors.sigma import TopNSigma
from ..hooks import merge_processors
from .rows import SpecRows

# Processors whose output depends on the scores alone (input_ids unread): one call for the whole block.
HISTORY_FREE = (Temperature, TopK, TopP, MinP, Typical, EpsilonCutoff, EtaCutoff, TopH, SuppressTokens,
                InfNanRemove, LogitNormalization, TopNSigma, DynamicTemperature, LogitBias, AllowedTokenIds)


def _history_free(processors: ProcessorList) -> bool:
    return all(type(proc) in HISTORY_FREE for proc in processors)  # exact types: a subclass may read the history


class BlockProcessors:
    """`p`'s processors (and the caller's `logits_processor`), applied position by position to verified blocks."""

    def __init__(self, p: GenerationParams, prompt_length: int, prompt_start: torch.Tensor | None, model: Any,
                 prompt_rows: torch.Tensor):
        """prompt_start: (B,) left-padding slots per row, or None when no row is padded; prompt_rows: (B,) the
        prompt each row continues."""
        batch = prompt_rows.shape[0]
        shared = merge_processors(build_processors(p, prompt_length, None, model, prompt_rows), p.logits_processor)
        self.empty = len(shared) == 0
        self.shared = shared if _history_free(shared) else None
        self.per_row: list[ProcessorList] = []
        if self.shared is None:
            for i in range(batch):
                start = None if prompt_start is None else prompt_start[i:i + 1]
                own = build_processors(p, prompt_length, start, model, prompt_rows[i:i + 1])
                self.per_row.append(merge_processors(own, p.logits_processor))

    def select_rows(self, keep: torch.Tensor) -> None:
        if self.per_row:
            self.per_row = [self.per_row[i] for i in keep.tolist()]

    def append_rows(self, other: "BlockProcessors") -> None:
        """Rows joining the batch (built for them alone by the same parameters) follow this batch's rows."""
        self.per_row.extend(other.per_row)

    def __call__(self, rows: SpecRows, logits: torch.Tensor, block: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """(B, J, V) processed scores for raw `logits` (B, J, V). `block` (B, J - 1 + m) holds the tokens after
        the row's text: position j follows the text and `block[i, :m + j]` (verification: m = 0, the proposals;
        a draft's step j: the j proposals so far, J = 1). Rows not `live` keep their raw logits (nothing reads
        them)."""
        if self.empty:
            return logits
        batch, width, vocab = logits.shape
        if self.shared is not None:
            flat = logits.reshape(batch * width, vocab)
            dummy = flat.new_zeros((batch * width, 1), dtype=torch.long)
            return self.shared(dummy, flat).reshape(batch, width, vocab)
        before = block.shape[1] - (width - 1)
        scores = logits.clone()
        for i in live.nonzero().flatten().tolist():
            for j in range(width):
                scores[i, j] = self.per_row[i](rows.history(i, block[i, :before + j]), logits[i, j][None])[0]
        return scores
