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
    order.py        the processor orders as data (transformers', llama.cpp's, vLLM's: `sampler_order`), and
                    build_processors
    rows.py         per-row versions for batched sweeps

llama.cpp's and vLLM's samplers (their semantics, checked against llama-cpp-python and vLLM's rules):
    sigma.py        top-nσ (top_n_sigma)
    xtc.py          XTC, exclude top choices (xtc_probability, xtc_threshold): draws a uniform per row and step
    dynatemp.py     dynamic (entropy-based) temperature (dynatemp_range, dynatemp_exponent)
    dry.py          DRY, don't repeat yourself (dry_*): repeat lengths by suffix matching, cached across steps
    dry_breakers.py DRY's sequence breakers as token sequences of one tokenizer
    mirostat.py     mirostat 1 and 2 (mirostat, mirostat_tau, mirostat_eta): a per-row mu carried across steps
    openai_penalties.py  presence / frequency penalties over the generated tokens, logit_bias, allowed_token_ids
    draws.py        the per-row uniform draws stateful processors take from each row group's seeded stream

Every class named after a transformers processor computes what it computes, so that the same parameters give the
same tokens; the llama.cpp / vLLM ones compute what those engines' samplers compute (the module docstrings say
where float32 sums make them differ in the last bits). Shapes: `input_ids` (B, T), `scores` (B, V) float32.
"""

from .base import NEG_INF, LogitsProcessor, ProcessorList
from .bias import NoBadWords, SequenceBias
from .constraints import (ForcedBOS, ForcedEOS, MinLength, MinNewTokens, PrefixAllowedTokens, SuppressTokens,
                          SuppressTokensAtBegin)
from .guidance import ClassifierFreeGuidance, RowGuidance, UnconditionalBranch
from .normalization import InfNanRemove, LogitNormalization
from .draws import Draws
from .dry import DRY
from .dynatemp import DynamicTemperature
from .mirostat import Mirostat
from .openai_penalties import AllowedTokenIds, LogitBias, PresenceFrequencyPenalty
from .order import (LLAMA_CPP_PROCESSOR_ORDER, SAMPLER_ORDERS, TRANSFORMERS_PROCESSOR_ORDER, VLLM_PROCESSOR_ORDER,
                    build_processors, processor_factories)
from .sigma import TopNSigma
from .xtc import XTC
from .penalties import (EncoderNoRepeatNGram, EncoderRepetitionPenalty, ExponentialDecayLengthPenalty, NoRepeatNGram,
                        RepetitionPenalty)
from .temperature import Temperature
from .truncation import (EpsilonCutoff, EtaCutoff, MinP, TopH, TopK, TopP, Typical, drop_below_min_p,
                         drop_low_mass)
from .rows import EachOnItsRows, RowWatermark
from .watermark import Watermark, WatermarkSettings

__all__ = [
    "NEG_INF", "LogitsProcessor", "ProcessorList",
    "ForcedBOS", "ForcedEOS", "MinLength", "MinNewTokens", "SuppressTokens", "SuppressTokensAtBegin",
    "InfNanRemove", "LogitNormalization", "ExponentialDecayLengthPenalty", "NoBadWords", "SequenceBias",
    "PrefixAllowedTokens", "TopH",
    "ClassifierFreeGuidance", "RowGuidance", "UnconditionalBranch",
    "Watermark", "RowWatermark", "EachOnItsRows", "WatermarkSettings",
    "TRANSFORMERS_PROCESSOR_ORDER", "LLAMA_CPP_PROCESSOR_ORDER", "VLLM_PROCESSOR_ORDER", "SAMPLER_ORDERS",
    "build_processors", "processor_factories",
    "TopNSigma", "XTC", "DynamicTemperature", "DRY", "Mirostat", "PresenceFrequencyPenalty", "LogitBias",
    "AllowedTokenIds", "Draws",
    "NoRepeatNGram", "RepetitionPenalty", "EncoderNoRepeatNGram", "EncoderRepetitionPenalty",
    "Temperature",
    "EpsilonCutoff", "EtaCutoff", "MinP", "TopK", "TopP", "Typical", "drop_below_min_p", "drop_low_mass",
]
