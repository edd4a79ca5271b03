"""The processor order as data, and `build_processors`, which assembles processors in that order.

Order matters for parity: generate applies penalties and length constraints first, then, only when
sampling, temperature before the truncation warpers (`GenerationMixin._get_logits_processor`). The order
is a tuple of parameter names so that a config can record it and a user can change it
(`GenerationParams.processor_order`); each name has one factory that builds its processor, or returns
None when the parameter's value is neutral.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Callable

import torch

from .base import LogitsProcessor, ProcessorList
from .bias import NoBadWords, SequenceBias
from .constraints import (ForcedBOS, ForcedEOS, MinLength, MinNewTokens, PrefixAllowedTokens, SuppressTokens,
                          SuppressTokensAtBegin)
from .guidance import build_guidance
from .normalization import InfNanRemove, LogitNormalization
from .penalties import (EncoderNoRepeatNGram, EncoderRepetitionPenalty, ExponentialDecayLengthPenalty, NoRepeatNGram,
                        RepetitionPenalty)
from .truncation import EpsilonCutoff, EtaCutoff, MinP, TopH, TopK, TopP, Typical
from .watermark import build_watermark
from .dry import build_dry
from .dynatemp import build_temperature
from .mirostat import build_mirostat
from .openai_penalties import build_allowed_token_ids, build_frequency_penalty, build_logit_bias, build_presence_penalty
from .sigma import build_top_n_sigma
from .xtc import build_xtc

if TYPE_CHECKING:  # params.py imports this module for the order: no runtime import back
    from ..params import GenerationParams

# The order in which generate applies its logits processors (GenerationMixin._get_logits_processor).
# Classifier-free guidance comes first: the others work on its log-probabilities. The warpers from
# "temperature" to "eta_cutoff" only run when sampling; generate puts a caller's own
# logits_processor list between "begin_suppress_tokens" and "temperature". The watermark follows every warper
# and precedes renormalize_logits, as in generate.
TRANSFORMERS_PROCESSOR_ORDER: tuple[str, ...] = (
    "guidance_scale",
    "allowed_token_ids",
    "logit_bias",
    "sequence_bias",
    "encoder_repetition_penalty",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "no_repeat_ngram_size",
    "dry_multiplier",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "prefix_allowed_tokens_fn",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "temperature",
    "top_n_sigma",
    "top_h",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "xtc_probability",
    "mirostat",
    "watermarking_config",
    "renormalize_logits",
)

# llama.cpp's default chain (common/common.h `samplers`: penalties, DRY, top-n-sigma, top-k, typical, top-p,
# min-p, XTC, temperature; then mirostat or the final draw), its logit_bias first as common/sampling.cpp adds it.
# The processors llama.cpp lacks keep their transformers neighbours: constraints before the penalties, the
# other truncations (top-h, epsilon, eta) beside its own, the watermark and renormalisation last.
LLAMA_CPP_PROCESSOR_ORDER: tuple[str, ...] = (
    "guidance_scale",
    "allowed_token_ids",
    "logit_bias",
    "sequence_bias",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "prefix_allowed_tokens_fn",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "encoder_repetition_penalty",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "dry_multiplier",
    "top_n_sigma",
    "top_k",
    "typical_p",
    "top_p",
    "min_p",
    "xtc_probability",
    "top_h",
    "epsilon_cutoff",
    "eta_cutoff",
    "temperature",
    "mirostat",
    "watermarking_config",
    "renormalize_logits",
)

# vLLM's sampler (v1/sample/sampler.py): the token masks (allowed ids, bad words), min_tokens and logit_bias first (its non-argmax-
# invariant logits processors), then the penalties (repetition, frequency, presence), then temperature, min-p
# (an argmax-invariant processor), and top-k / top-p last. What vLLM lacks keeps its transformers neighbours.
VLLM_PROCESSOR_ORDER: tuple[str, ...] = (
    "guidance_scale",
    "allowed_token_ids",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "logit_bias",
    "sequence_bias",
    "prefix_allowed_tokens_fn",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "encoder_repetition_penalty",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "dry_multiplier",
    "temperature",
    "min_p",
    "top_k",
    "top_p",
    "top_n_sigma",
    "top_h",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "xtc_probability",
    "mirostat",
    "watermarking_config",
    "renormalize_logits",
)

SAMPLER_ORDERS: dict[str, tuple[str, ...]] = {
    "transformers": TRANSFORMERS_PROCESSOR_ORDER,
    "llama.cpp": LLAMA_CPP_PROCESSOR_ORDER,
    "vllm": VLLM_PROCESSOR_ORDER,
}


def order_of(sampler_order) -> tuple[str, ...]:
    """The full processor order a `sampler_order` names (validated by param_checks.check_sampler_order).

    A name ("transformers", "llama.cpp", "vllm") gives that engine's order. A list of processor names reorders
    just those among themselves: they take the places the transformers order gives them, in the list's order,
    and every other processor stays where transformers puts it (["top_k", "top_p", "temperature"] moves
    temperature after top-p and changes nothing else).
    """
    if isinstance(sampler_order, str):
        return SAMPLER_ORDERS[sampler_order]
    listed = list(sampler_order)
    queue = iter(listed)
    return tuple(next(queue) if name in listed else name for name in TRANSFORMERS_PROCESSOR_ORDER)


def _ids(value) -> list[int]:
    """One token id, a sequence of them or a 1-D tensor of them (validated in params.py), as a list of ints."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return [int(value)] if isinstance(value, numbers.Integral) else [int(v) for v in value]


def begin_index(p: GenerationParams, prompt_length: int) -> int:
    """The input length at which begin_suppress_tokens applies: the first new token, as generate counts it."""
    return prompt_length if prompt_length > 1 or p.forced_bos_token_id is None else prompt_length + 1


def processor_factories(p: GenerationParams, prompt_length: int, prompt_start: torch.Tensor | None,
                        keep: int, model: Any = None, prompt_rows: torch.Tensor | None = None
                        ) -> dict[str, Callable[[], LogitsProcessor | None]]:
    """For each processor name: a factory returning the processor, or None when its setting is neutral.

    `model` and `prompt_rows` are read by guidance only (its unconditional rows run on the model); the
    watermark reads the model's config vocab_size.
    """
    eos = p.eos_token_id
    sampling = p.do_sample
    return {
        "guidance_scale": lambda: build_guidance(p, model, prompt_rows),
        "repetition_penalty": lambda: RepetitionPenalty(p.repetition_penalty, prompt_start)
        if p.repetition_penalty != 1.0 else None,
        "no_repeat_ngram_size": lambda: NoRepeatNGram(p.no_repeat_ngram_size) if p.no_repeat_ngram_size > 0 else None,
        # generate scores the prompt ("encoder input") only when there is one: not for an embeddings-only prompt
        "encoder_repetition_penalty": lambda: EncoderRepetitionPenalty(p.encoder_repetition_penalty, prompt_length)
        if p.encoder_repetition_penalty not in (None, 1.0) and prompt_length > 0 else None,
        "encoder_no_repeat_ngram_size": lambda: EncoderNoRepeatNGram(p.encoder_no_repeat_ngram_size, prompt_length)
        if p.encoder_no_repeat_ngram_size and prompt_length > 0 else None,
        "min_length": lambda: MinLength(p.min_length, eos) if p.min_length > 0 and eos else None,
        "min_new_tokens": lambda: MinNewTokens(prompt_length, p.min_new_tokens, eos)
        if p.min_new_tokens > 0 and eos else None,
        # temperature, or llama.cpp's entropy-based dynamic temperature when dynatemp_range > 0 (sampling only)
        "temperature": lambda: build_temperature(p) if sampling else None,
        "top_k": lambda: TopK(p.top_k, keep) if sampling and p.top_k else None,
        "top_p": lambda: TopP(p.top_p, keep) if sampling and p.top_p < 1.0 else None,
        "min_p": lambda: MinP(p.min_p, keep) if sampling and p.min_p is not None else None,
        "typical_p": lambda: Typical(p.typical_p, keep) if sampling and p.typical_p < 1.0 else None,
        "epsilon_cutoff": lambda: EpsilonCutoff(p.epsilon_cutoff, keep)
        if sampling and 0 < p.epsilon_cutoff < 1 else None,
        "eta_cutoff": lambda: EtaCutoff(p.eta_cutoff, keep) if sampling and 0 < p.eta_cutoff < 1 else None,
        "forced_bos_token_id": lambda: ForcedBOS(int(p.forced_bos_token_id))
        if p.forced_bos_token_id is not None else None,
        "forced_eos_token_id": lambda: ForcedEOS(prompt_length + p.max_new_tokens, _ids(p.forced_eos_token_id))
        if p.forced_eos_token_id is not None and _ids(p.forced_eos_token_id) else None,
        "remove_invalid_values": lambda: InfNanRemove() if p.remove_invalid_values else None,
        "exponential_decay_length_penalty": lambda: ExponentialDecayLengthPenalty(
            *p.exponential_decay_length_penalty, eos, prompt_length)
        if p.exponential_decay_length_penalty is not None else None,
        "suppress_tokens": lambda: SuppressTokens(_ids(p.suppress_tokens)) if p.suppress_tokens else None,
        "begin_suppress_tokens": lambda: SuppressTokensAtBegin(_ids(p.begin_suppress_tokens),
                                                               begin_index(p, prompt_length))
        if p.begin_suppress_tokens else None,
        "watermarking_config": lambda: build_watermark(p.watermarking_config, model),
        "renormalize_logits": lambda: LogitNormalization() if p.renormalize_logits else None,
        "sequence_bias": lambda: SequenceBias(p.sequence_bias) if p.sequence_bias is not None else None,
        "bad_words_ids": lambda: NoBadWords(p.bad_words_ids, eos) if p.bad_words_ids is not None else None,
        "prefix_allowed_tokens_fn": lambda: PrefixAllowedTokens(p.prefix_allowed_tokens_fn,
                                                                max(p.num_beams, p.num_return_sequences))
        if p.prefix_allowed_tokens_fn is not None else None,
        "top_h": lambda: TopH(p.top_h) if sampling and p.top_h is not None else None,
        # llama.cpp's and vLLM's samplers (their own modules); the warpers act only when sampling, as above
        "allowed_token_ids": lambda: build_allowed_token_ids(p),
        "logit_bias": lambda: build_logit_bias(p),
        "frequency_penalty": lambda: build_frequency_penalty(p, prompt_length),
        "presence_penalty": lambda: build_presence_penalty(p, prompt_length),
        "dry_multiplier": lambda: build_dry(p, prompt_length, prompt_start),
        "top_n_sigma": lambda: build_top_n_sigma(p) if sampling else None,
        "xtc_probability": lambda: build_xtc(p, keep) if sampling else None,
        "mirostat": lambda: build_mirostat(p, model) if sampling else None,
    }


def build_processors(p: GenerationParams, prompt_length: int, prompt_start: torch.Tensor | None = None,
                     model: Any = None, prompt_rows: torch.Tensor | None = None) -> ProcessorList:
    """The processors `p` asks for, in `p.processor_order`.

    Args:
        p: resolved parameters.
        prompt_length: padded prompt length T (min_new_tokens counts from there, as generate does).
        prompt_start: (B,) number of left-padding slots per row (the repetition penalty skips them).
        model: the model; needed only for guidance_scale (its unconditional rows) and watermarking_config
            (its config's vocab_size).
        prompt_rows: (R,) the prompt each row continues (covering every prompt); guidance repeats a negative
            prompt row for its prompt's rows. None: one row per prompt.
    """
    # Beam sampling keeps one more candidate than there are EOS ids, so a beam can always continue.
    keep = (len(p.eos_token_id) + 1 if p.eos_token_id else 2) if p.num_beams > 1 else 1
    factories = processor_factories(p, prompt_length, prompt_start, keep, model, prompt_rows)
    built = (factories[name]() for name in p.processor_order)
    return ProcessorList(proc for proc in built if proc is not None)
