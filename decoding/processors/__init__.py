"""Logits processors, one small class each, grouped by what they do.

    base.py         the protocol (`__call__(input_ids, scores) -> scores`, never in place), ProcessorList
    penalties.py    repetition penalty, no-repeat n-gram, exponential decay length penalty
    constraints.py  length constraints (no EOS before a minimum length), suppressed and forced tokens,
                    prefix_allowed_tokens_fn
    bias.py         sequence_bias, bad_words_ids
    temperature.py  temperature
    normalization.py  remove_invalid_values (NaN/inf -> finite), renormalize_logits (log-softmax)
    truncation.py   top-k, top-p, min-p, typical, epsilon, eta, top-h
    guidance.py     classifier-free guidance (guidance_scale, negative prompt): a second set of rows, own KV cache
    watermark.py    the Kirchenbauer et al. 2023 watermark (watermarking_config); its detector is
                    decoding/watermark_detect.py
    order.py        generate's processor order as data, and build_processors
    rows.py         per-row versions for batched sweeps

Every class computes what the transformers processor of the same name computes, so that the same
parameters give the same tokens. Shapes: `input_ids` (B, T), `scores` (B, V) float32.
"""

from .base import NEG_INF, LogitsProcessor, ProcessorList
from .bias import NoBadWords, SequenceBias
from .constraints import (ForcedBOS, ForcedEOS, MinLength, MinNewTokens, PrefixAllowedTokens, SuppressTokens,
                          SuppressTokensAtBegin)
from .guidance import ClassifierFreeGuidance, RowGuidance, UnconditionalBranch
from .normalization import InfNanRemove, LogitNormalization
from .order import TRANSFORMERS_PROCESSOR_ORDER, build_processors, processor_factories
from .penalties import (EncoderNoRepeatNGram, EncoderRepetitionPenalty, ExponentialDecayLengthPenalty, NoRepeatNGram,
                        RepetitionPenalty)
from .temperature import Temperature
from .truncation import (EpsilonCutoff, EtaCutoff, MinP, TopH, TopK, TopP, Typical, drop_below_min_p,
                         drop_low_mass)
from .watermark import RowWatermark, Watermark, WatermarkSettings

__all__ = [
    "NEG_INF", "LogitsProcessor", "ProcessorList",
    "ForcedBOS", "ForcedEOS", "MinLength", "MinNewTokens", "SuppressTokens", "SuppressTokensAtBegin",
    "InfNanRemove", "LogitNormalization", "ExponentialDecayLengthPenalty", "NoBadWords", "SequenceBias",
    "PrefixAllowedTokens", "TopH",
    "ClassifierFreeGuidance", "RowGuidance", "UnconditionalBranch",
    "Watermark", "RowWatermark", "WatermarkSettings",
    "TRANSFORMERS_PROCESSOR_ORDER", "build_processors", "processor_factories",
    "NoRepeatNGram", "RepetitionPenalty", "EncoderNoRepeatNGram", "EncoderRepetitionPenalty",
    "Temperature",
    "EpsilonCutoff", "EtaCutoff", "MinP", "TopK", "TopP", "Typical", "drop_below_min_p", "drop_low_mass",
]
