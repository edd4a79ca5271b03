"""Logits processors, one small class each, grouped by what they do.

    base.py         the protocol (`__call__(input_ids, scores) -> scores`, never in place), ProcessorList
    penalties.py    repetition penalty, no-repeat n-gram
    constraints.py  length constraints (no EOS before a minimum length)
    temperature.py  temperature
    truncation.py   top-k, top-p, min-p, typical, epsilon, eta
    order.py        generate's processor order as data, and build_processors
    rows.py         per-row versions for batched sweeps

Every class computes what the transformers processor of the same name computes, so that the same
parameters give the same tokens. Shapes: `input_ids` (B, T), `scores` (B, V) float32.
"""

from .base import NEG_INF, LogitsProcessor, ProcessorList
from .constraints import MinLength, MinNewTokens
from .order import TRANSFORMERS_PROCESSOR_ORDER, build_processors, processor_factories
from .penalties import NoRepeatNGram, RepetitionPenalty
from .temperature import Temperature
from .truncation import (EpsilonCutoff, EtaCutoff, MinP, TopK, TopP, Typical, drop_below_min_p,
                         drop_low_mass)

__all__ = [
    "NEG_INF", "LogitsProcessor", "ProcessorList",
    "MinLength", "MinNewTokens",
    "TRANSFORMERS_PROCESSOR_ORDER", "build_processors", "processor_factories",
    "NoRepeatNGram", "RepetitionPenalty",
    "Temperature",
    "EpsilonCutoff", "EtaCutoff", "MinP", "TopK", "TopP", "Typical", "drop_below_min_p", "drop_low_mass",
]
