"""The processor order as data, and `build_processors`, which assembles processors in that order.

Order matters for parity: generate applies penalties and length constraints first, then, only when
sampling, temperature before the truncation warpers (`GenerationMixin._get_logits_processor`). The order
is a tuple of parameter names so that a config can record it and a user can change it
(`GenerationParams.processor_order`); each name has one factory that builds its processor, or returns
None when the parameter's value is neutral.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .base import LogitsProcessor, ProcessorList
from .constraints import MinLength, MinNewTokens
from .penalties import NoRepeatNGram, RepetitionPenalty
from .temperature import Temperature
from .truncation import EpsilonCutoff, EtaCutoff, MinP, TopK, TopP, Typical

if TYPE_CHECKING:  # params.py imports this module for the order: no runtime import back
    from ..params import GenerationParams

# The order in which generate applies its logits processors (GenerationMixin._get_logits_processor).
# The warpers from "temperature" on only run when sampling.
TRANSFORMERS_PROCESSOR_ORDER: tuple[str, ...] = (
    "repetition_penalty",
    "no_repeat_ngram_size",
    "min_length",
    "min_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
)


def processor_factories(p: GenerationParams, prompt_length: int, prompt_start: torch.Tensor | None,
                        keep: int) -> dict[str, Callable[[], LogitsProcessor | None]]:
    """For each processor name: a factory returning the processor, or None when its setting is neutral."""
    eos = p.eos_token_id
    sampling = p.do_sample
    return {
        "repetition_penalty": lambda: RepetitionPenalty(p.repetition_penalty, prompt_start)
        if p.repetition_penalty != 1.0 else None,
        "no_repeat_ngram_size": lambda: NoRepeatNGram(p.no_repeat_ngram_size) if p.no_repeat_ngram_size > 0 else None,
        "min_length": lambda: MinLength(p.min_length, eos) if p.min_length > 0 and eos else None,
        "min_new_tokens": lambda: MinNewTokens(prompt_length, p.min_new_tokens, eos)
        if p.min_new_tokens > 0 and eos else None,
        "temperature": lambda: Temperature(p.temperature) if sampling and p.temperature != 1.0 else None,
        "top_k": lambda: TopK(p.top_k, keep) if sampling and p.top_k else None,
        "top_p": lambda: TopP(p.top_p, keep) if sampling and p.top_p < 1.0 else None,
        "min_p": lambda: MinP(p.min_p, keep) if sampling and p.min_p is not None else None,
        "typical_p": lambda: Typical(p.typical_p, keep) if sampling and p.typical_p < 1.0 else None,
        "epsilon_cutoff": lambda: EpsilonCutoff(p.epsilon_cutoff, keep)
        if sampling and 0 < p.epsilon_cutoff < 1 else None,
        "eta_cutoff": lambda: EtaCutoff(p.eta_cutoff, keep) if sampling and 0 < p.eta_cutoff < 1 else None,
    }


def build_processors(p: GenerationParams, prompt_length: int,
                     prompt_start: torch.Tensor | None = None) -> ProcessorList:
    """The processors `p` asks for, in `p.processor_order`.

    Args:
        p: resolved parameters.
        prompt_length: padded prompt length T (min_new_tokens counts from there, as generate does).
        prompt_start: (B,) number of left-padding slots per row (the repetition penalty skips them).
    """
    # Beam sampling keeps one more candidate than there are EOS ids, so a beam can always continue.
    keep = (len(p.eos_token_id) + 1 if p.eos_token_id else 2) if p.num_beams > 1 else 1
    factories = processor_factories(p, prompt_length, prompt_start, keep)
    built = (factories[name]() for name in p.processor_order)
    return ProcessorList(proc for proc in built if proc is not None)
