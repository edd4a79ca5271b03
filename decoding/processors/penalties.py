"""Penalties: processors that lower (or raise) scores because of what the row already holds or how long it is.

Each class computes what the transformers processor of the same name computes, so that the same parameters
give the same tokens (see base.py for the protocol and shapes).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .base import NEG_INF, LogitsProcessor


class RepetitionPenalty(LogitsProcessor):
    """CTRL's penalty (Keskar et al. 2019): divide positive / multiply negative logits of seen tokens.

    `prompt_start` (B,) is each row's count of left-padding slots: pad tokens are not "seen" text.
    """

    def __init__(self, penalty: float, prompt_start: torch.Tensor | None = None):
        if not penalty > 0:
            raise ValueError(f"repetition_penalty={penalty!r} is not allowed: use a number > 0")
        self.penalty = float(penalty)
        self.prompt_start = prompt_start

    def __call__(self, input_ids, scores):
        vocab = scores.shape[-1]
        if self.prompt_start is not None:
            slots = torch.arange(input_ids.shape[1], device=input_ids.device)
            input_ids = input_ids.masked_fill(slots[None, :] < self.prompt_start[:, None], vocab)
        input_ids = input_ids.clamp(max=vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))  # (B, V+1): column V absorbs masked ids
        seen = torch.gather(padded, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return padded.scatter(1, input_ids, seen)[..., :vocab]


class NoRepeatNGram(LogitsProcessor):
    """Ban every token that would complete an n-gram already present in the row (Paulus et al. 2017)."""

    def __init__(self, ngram_size: int):
        if not (isinstance(ngram_size, int) and ngram_size > 0):
            raise ValueError(f"no_repeat_ngram_size={ngram_size!r} is not allowed: use an integer > 0")
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        n, length = self.ngram_size, input_ids.shape[-1]
        if length < n:
            return scores
        prefix = input_ids[:, length + 1 - n:]  # (B, n-1): the n-gram the next token would complete
        windows = input_ids.unfold(1, n, 1)  # (B, W, n)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W)
        vocab = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """Raise EOS scores exponentially once `start_index` new tokens follow the (padded) prompt of length T.

    At input length L > T + start_index, each EOS score s becomes s + |s| * (factor ** (L - T - start_index)
    - 1): the absolute value so that negative scores rise too; non-finite scores are left as they are.
    """

    def __init__(self, start_index: int, decay_factor: float, eos_token_id: Sequence[int], prompt_length: int):
        self.regulation_start = start_index + prompt_length
        self.decay_factor = float(decay_factor)
        self.eos_token_id = tuple(eos_token_id)

    def __call__(self, input_ids, scores):
        length = input_ids.shape[-1]
        if length <= self.regulation_start:
            return scores
        eos = list(self.eos_token_id)
        eos_scores = scores[:, eos]  # (B, E)
        penalty = torch.abs(eos_scores) * (pow(self.decay_factor, length - self.regulation_start) - 1)
        penalty = penalty.masked_fill(~torch.isfinite(eos_scores), 0.0)
        penalties = torch.zeros_like(scores)
        penalties[:, eos] = penalty
        return scores + penalties  # adding zeros elsewhere: -inf stays -inf, as in transformers


class EncoderRepetitionPenalty(LogitsProcessor):
    """generate's `encoder_repetition_penalty` ("hallucination" penalty): the scores of the prompt's tokens are
    multiplied by 1 / penalty where positive and by penalty where negative, so a penalty > 1 favours them.

    For a decoder-only model generate takes the prompt as the "encoder input": the padded (B, T) prompt ids,
    pad slots included (their id is scored too, as there). Here each row reads its prompt from its own first
    `prompt_length` slots, which is the same ids in the row order of any expanded batch (samples, beams, sweeps).
    """

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty = 1 / float(penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        prompt = input_ids[:, : self.prompt_length]  # (B, T)
        if prompt.shape[1] == 0:
            return scores
        seen = torch.gather(scores, 1, prompt)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, prompt, seen)


class EncoderNoRepeatNGram(LogitsProcessor):
    """generate's `encoder_no_repeat_ngram_size`: ban every token that would complete an n-gram of the prompt
    (padded prompt, pad slots included, as generate builds its table from the padded prompt ids).

    The next token completes the n-gram whose first n - 1 tokens are the row's last n - 1 (prompt and generated
    tokens alike). Tables are built per row at the first call; a row keeps its prompt for the whole call.
    """

    def __init__(self, ngram_size: int, prompt_length: int):
        self.ngram_size = ngram_size
        self.prompt_length = prompt_length
        self.tables: list[dict[tuple[int, ...], list[int]]] | None = None

    def _build(self, prompts: list[list[int]]) -> list[dict[tuple[int, ...], list[int]]]:
        n = self.ngram_size
        tables = []
        for ids in prompts:
            table: dict[tuple[int, ...], list[int]] = {}
            for start in range(len(ids) - n + 1):
                table.setdefault(tuple(ids[start:start + n - 1]), []).append(ids[start + n - 1])
            tables.append(table)
        return tables

    def __call__(self, input_ids, scores):
        if self.tables is None:
            self.tables = self._build(input_ids[:, : self.prompt_length].tolist())
        n, length = self.ngram_size, input_ids.shape[-1]
        if length < n - 1:
            return scores
        tails = input_ids[:, length - (n - 1):].tolist()  # (B, n-1) the prefix the next token would extend
        out = scores.clone()
        for row, tail in enumerate(tails):
            banned = self.tables[row].get(tuple(tail))
            if banned:
                out[row, banned] = NEG_INF
        return out
