"""Generation parameters: transformers' names and defaults, validated once, before the loop.

Why mirror `transformers.GenerationConfig` exactly: the same keyword arguments given to `model.generate` and
to `decoding.generate` must mean the same thing. So values resolve in the order generate uses: the caller's
keywords (an explicit None included), then a passed `generation_config=`, then the model's own
`generation_config` (for example a checkpoint's `temperature`), then transformers' global defaults
(`max_length=20` new tokens, `top_k=50` whenever sampling, ...); decoding/resolution.py has the rules.

Everything that can be wrong with a value is caught here, with an error that names the parameter, the value
and what is allowed. The hot loop never validates.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import torch

from .hooks import resolve_hooks
from .checks import check as _check, is_int as _is_int
from .param_checks import check_vocabulary, validate
from .processors.watermark import as_watermark_settings
from .refused_keywords import drop_neutral, refusal_reason

# Defaults transformers applies when neither the caller nor the model set a value
# (GenerationConfig._get_default_generation_params in transformers 5.x).
GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
}

# generate's processor order, as data, lives with the processors (processors/order.py).
from .processors.order import TRANSFORMERS_PROCESSOR_ORDER, order_of  # noqa: E402
from .param_checks import check_sampler_order  # noqa: E402
from .resolution import (  # noqa: E402
    DEFAULT,
    default_pad,
    merge_sources,
    model_config_values,
    passed_config_values,
    resolve_max_new_tokens,
    resolve_min_lengths,
    with_origin,
)

CACHE_SETTINGS = ("none", "dynamic", "static")


@dataclass(frozen=True)
class GenerationParams:
    """Resolved, validated parameters of one generate call. Field names are GenerationConfig's."""

    max_new_tokens: int
    min_new_tokens: int = 0
    min_length: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    encoder_repetition_penalty: float | None = None  # over the prompt's tokens (generate's 'encoder input')
    encoder_no_repeat_ngram_size: int | None = None  # n-grams of the prompt
    num_return_sequences: int = 1
    eos_token_id: tuple[int, ...] | None = None
    pad_token_id: int | None = None
    stop_strings: tuple[str, ...] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    # generate's outputs and hooks (decoding/hooks.py): the caller's objects are kept as given
    max_time: float | None = None
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    logits_processor: tuple | None = None
    stopping_criteria: tuple | None = None
    streamer: Any = None
    # token bans, forced tokens and score conditioning (decoding/processors/, in generate's order)
    suppress_tokens: Any = None  # token ids (list / tuple / 1-D tensor), None: off
    begin_suppress_tokens: Any = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: Any = None  # one id or several
    remove_invalid_values: bool = False
    exponential_decay_length_penalty: tuple | None = None  # (start_index, decay_factor)
    renormalize_logits: bool = False
    sequence_bias: Any = None  # {(ids...): bias} or [[ids, bias], ...]
    bad_words_ids: Any = None  # [[ids...], ...]
    top_h: float | None = None
    prefix_allowed_tokens_fn: Any = None  # (batch_id, row ids (T,)) -> allowed token ids
    # classifier-free guidance (decoding/processors/guidance.py); the tensors are kept as given
    guidance_scale: float | None = None  # None or 1: off
    negative_prompt_ids: Any = None  # (B, L) long, left-padded; None: the last prompt token of each row
    negative_prompt_attention_mask: Any = None  # (B, L) 0/1, with negative_prompt_ids
    # the Kirchenbauer watermark (decoding/processors/watermark.py): WatermarkingConfig or a dict of its fields in,
    # a WatermarkSettings after resolution; None: off
    watermarking_config: Any = None
    # speculative decoding (decoding/speculative/): one proposer at most; the draft model is kept as given
    assistant_model: Any = None  # a causal LM with the target's tokenizer
    prompt_lookup_num_tokens: int | None = None  # n-gram lookup over the prompt and the text so far
    max_matching_ngram_size: int | None = None  # lookup n-gram size (None: 2, as generate)
    draft_layers: int | None = None  # self-speculation: the target's first L layers + its head (assistant_early_exit)
    num_assistant_tokens: int = 20
    num_assistant_tokens_schedule: str = "constant"
    assistant_confidence_threshold: float | None = 0.4
    max_active_rows: int | None = None  # at most this many rows decode at once; waiting prompts refill (speculative)
    # the strategies transformers 5 moved out of its core, and two it never had (decoding/strategies/)
    penalty_alpha: float | None = None  # contrastive search when > 0 with top_k > 1 and greedy (as 4.x generate)
    low_memory: bool | None = None  # contrastive search: the k candidates one at a time (4.x's option)
    dola_layers: Any = None  # DoLa: "low" | "high" | a list of premature layer indices; None: off
    amateur_model: Any = None  # contrastive decoding: a causal LM with the expert's vocabulary
    amateur_layers: int | None = None  # contrastive decoding: the expert's first L layers + its head as amateur
    amateur_temperature: float = 1.0  # the amateur's logits are divided by it before its log-softmax
    plausibility_alpha: float = 0.1  # contrastive decoding keeps tokens with p_expert >= alpha * max p_expert
    mbr_candidates: int | None = None  # MBR: draw n candidates per prompt, return the best by expected utility
    mbr_utility: str = "chrf"  # "chrf" | "bleu" | "embedding"
    mbr_scorer: Any = None  # MBR "embedding" utility: the model whose hidden states embed; None: the model itself
    # llama.cpp's samplers (decoding/processors/: sigma.py, xtc.py, dry.py, mirostat.py, dynatemp.py), its names
    top_n_sigma: float | None = None  # keep logits >= max - n * std (Tang et al. 2024); None: off
    xtc_probability: float = 0.0  # XTC: the chance per row and step of excluding the top choices; 0: off
    xtc_threshold: float = 0.1  # XTC: tokens with probability >= this are the "top choices"
    dry_multiplier: float = 0.0  # DRY: penalty multiplier; 0: off
    dry_base: float = 1.75  # DRY: penalty = multiplier * base ** (repeat length - allowed length)
    dry_allowed_length: int = 2  # DRY: repeats up to this long go unpenalised
    dry_penalty_last_n: int = -1  # DRY: how many of the last tokens are searched; -1: all, 0: off
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", "\"", "*")  # DRY: repeats do not run across these
    dry_breaker_sequences: Any = None  # the breakers as token sequences of the call's tokenizer (resolved, internal)
    mirostat: int = 0  # 0: off, 1: mirostat (v1), 2: mirostat 2.0
    mirostat_tau: float = 5.0  # target surprise, in bits
    mirostat_eta: float = 0.1  # learning rate of mu
    dynatemp_range: float = 0.0  # dynamic temperature in [temperature - range, temperature + range]; 0: off
    dynatemp_exponent: float = 1.0  # the normalised entropy's exponent
    # the OpenAI / vLLM parameters (decoding/processors/openai_penalties.py)
    presence_penalty: float = 0.0  # subtracted once from every token generated so far
    frequency_penalty: float = 0.0  # subtracted per occurrence among the generated tokens
    logit_bias: Any = None  # {token id: additive bias}
    allowed_token_ids: Any = None  # only these tokens may be generated
    # decodelab's own settings (not GenerationConfig fields)
    cache: str = "dynamic"
    max_cache_len: int | None = None
    # torch.compile the single-token decode step (cache="static" only; decoding/compiled.py): False, True, or
    # "max-autotune" (inductor benchmarks its own GEMM kernels at compile time: slower to compile, faster steps)
    compile: Any = False
    # beam search's prefill: "per_beam" runs the prompt once per beam (B * num_beams rows, generate's way and
    # token-identical to it), "shared" once per prompt and copies its cache to the beams (decoding/beam.py)
    beam_prefill: str = "per_beam"
    # the processors' order: "transformers" (generate's, the default), "llama.cpp", "vllm", or a list of processor
    # names reordered among themselves (processors/order.py); processor_order is the full order it resolves to
    sampler_order: Any = "transformers"
    processor_order: tuple[str, ...] = field(default=TRANSFORMERS_PROCESSOR_ORDER)

    @property
    def is_beam(self) -> bool:
        return self.num_beams > 1

    @property
    def is_speculative(self) -> bool:
        return (self.assistant_model is not None or self.prompt_lookup_num_tokens is not None
                or self.draft_layers is not None)

    @property
    def is_contrastive_search(self) -> bool:
        return (not self.do_sample and self.penalty_alpha is not None and self.penalty_alpha > 0
                and self.top_k is not None and self.top_k > 1)

    @property
    def is_dola(self) -> bool:
        return self.dola_layers is not None

    @property
    def is_contrastive_decoding(self) -> bool:
        return self.amateur_model is not None or self.amateur_layers is not None

    @property
    def is_mbr(self) -> bool:
        return self.mbr_candidates is not None

    def with_(self, **changes: Any) -> "GenerationParams":
        return replace(self, **changes)


# Names a caller may pass: GenerationConfig's (plus max_length) and decodelab's cache / compile settings.
_OWN_FIELDS = {f.name for f in fields(GenerationParams)}
ACCEPTED_NAMES = (_OWN_FIELDS - {"dry_breaker_sequences"}) | {"max_length", "use_cache", "cache_implementation",
                                                               "assistant_early_exit", "min_tokens"}


def _model_generation_defaults(model: Any) -> dict[str, Any]:
    """The values the model's own generation_config sets (resolution.py has the rules)."""
    return model_config_values(model, ACCEPTED_NAMES)


def _as_token_tuple(name: str, value: Any) -> tuple[int, ...] | None:
    """EOS ids as generate takes them: one id, a list of ids, or an integer tensor of them."""
    if value is None:
        return None
    allowed = "use a token id (an integer >= 0), a list of them, or None"
    if isinstance(value, torch.Tensor):
        _check(not value.is_floating_point() and value.dtype != torch.bool and value.dim() <= 1, name, value,
               allowed + " (an integer tensor of at most one dimension)")
        value = value.tolist()
    items = [value] if _is_int(value) else list(value) if isinstance(value, (list, tuple)) else None
    _check(items is not None, name, value, allowed)
    if not items:
        return ()  # no EOS id: nothing ends a row on a token, but generate still builds its EOS criterion
    _check(all(_is_int(v) and v >= 0 for v in items), name, value, allowed)
    return tuple(int(v) for v in items)


def _as_pad_id(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    _check(value is None or (_is_int(value) and value >= 0), "pad_token_id", value,
           "use one token id (an integer >= 0), or None")
    return None if value is None else int(value)


def _as_stop_strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    _check(value is None or isinstance(value, (list, tuple)), "stop_strings", value,
           "use a string or a list of non-empty strings")
    return tuple(value) if value else None


def _as_processor_order(value: Any) -> tuple[str, ...]:
    _check(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), "processor_order", value,
           f"use a list of processor names from {list(TRANSFORMERS_PROCESSOR_ORDER)}")
    return tuple(value)


def _resolve_cache(given: dict[str, Any]) -> str:
    """Our one-word cache setting, also reachable through transformers' `use_cache` / `cache_implementation`."""
    cache = given.pop("cache", None)
    if hasattr(cache, "get_seq_length"):  # generate's cache= (a Cache object, was past_key_values)
        raise ValueError(f"cache={type(cache).__name__}(...) is not allowed: {refusal_reason('past_key_values')}")
    use_cache = given.pop("use_cache", None)
    implementation = given.pop("cache_implementation", None)
    _check(use_cache is None or isinstance(use_cache, bool), "use_cache", use_cache, "use true, false or None")
    implied = None
    if use_cache is False:
        implied = "none"
    elif implementation is not None:
        _check(implementation in ("dynamic", "static"), "cache_implementation", implementation,
               "use 'dynamic' or 'static' (or cache='none')")
        implied = implementation
    if cache is not None and implied is not None and cache != implied:
        raise ValueError(
            f"cache={cache!r} contradicts use_cache={use_cache!r} / cache_implementation={implementation!r}: "
            "give one of them"
        )
    cache = cache if cache is not None else implied or "dynamic"
    _check(cache in CACHE_SETTINGS, "cache", cache, f"use one of {CACHE_SETTINGS}")
    return cache


def _unknown_names_error(unknown: list[str]) -> ValueError:
    refused = [name for name in unknown if refusal_reason(name) is not None]
    if refused:  # a generate keyword we do not support: its reason, not a typo hint (decoding/refused_keywords.py)
        reasons = "; ".join(f"{name}: {refusal_reason(name)}" for name in refused)
        return ValueError(f"generation parameter(s) {refused} are not supported by decodelab's generate: {reasons}")
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(ACCEPTED_NAMES), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ValueError(f"unknown or unsupported generation parameter(s) {unknown}: {', '.join(hints)}; "
                      f"supported: {sorted(ACCEPTED_NAMES)}")


def _alias(values: dict[str, Any], alias: str, name: str) -> None:
    """Another engine's name for one of ours (vLLM's `min_tokens` is `min_new_tokens`): both given must agree."""
    value = values.pop(alias, None)
    if value is None:
        return
    given = values.get(name)
    if given not in (None, 0) and (given != value or type(given) is not type(value)):
        raise ValueError(f"{alias}={value!r} contradicts {name}={given!r}: they name the same setting, give one of them")
    values[name] = value


def _resolve_order(values: dict[str, Any]) -> None:
    """processor_order from sampler_order (a name or a list), unless a full processor_order was given."""
    sampler_order = values.get("sampler_order", "transformers")
    check_sampler_order(sampler_order)
    if isinstance(sampler_order, list):
        sampler_order = tuple(sampler_order)
    values["sampler_order"] = sampler_order
    given = values.get("processor_order")
    if given is not None:
        if sampler_order != "transformers":
            raise ValueError(f"processor_order and sampler_order={sampler_order!r} are both given: sampler_order "
                             "names an order, processor_order spells one out; give one of them")
        values["processor_order"] = _as_processor_order(given)
        return
    values["processor_order"] = order_of(sampler_order)


def _alias_early_exit(values: dict[str, Any]) -> None:
    """generate's `assistant_early_exit=L` is our `draft_layers=L` (the first L layers propose)."""
    early = values.pop("assistant_early_exit", None)
    if early is None:
        return
    given = values.get("draft_layers")
    if given is not None:  # both given: they must agree, and draft_layers' own value is what gets checked
        if given != early or type(given) is not type(early):
            raise ValueError(f"assistant_early_exit={early!r} contradicts draft_layers={given!r}: "
                             "they name the same setting, give one of them")
        return
    values["draft_layers"] = early


def vocab_size_of(model: Any) -> int | None:
    """How many tokens the model can produce: its logits width (output embedding rows), else config.vocab_size."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return int(size) if _is_int(size) else None


def resolve_params(model: Any, prompt_length: int, max_positions: int | None = None, *,
                   generation_config: Any = None, **given: Any) -> GenerationParams:
    """Merge caller keywords, a passed generation_config, the model's generation_config and transformers'
    defaults in generate's order (decoding/resolution.py); validate everything.

    With `model=None` (the runner's check before loading anything) everything but the token ids' vocabulary
    is checked; with a model, `eos_token_id` and `pad_token_id` must also lie in its vocabulary.

    Args:
        model: the model (its `generation_config` and vocabulary size are read), or None.
        prompt_length: padded prompt length T of the batch (max_length and min_length count it, as in generate).
        max_positions: the model's maximum number of positions, if it has one.
        generation_config: a `transformers.GenerationConfig` whose set fields win over the model's, or None.
        **given: GenerationConfig-named keywords; they win over both configs, an explicit None included.
    """
    given = drop_neutral(given)  # e.g. output_attentions=False: generate's default, nothing to refuse
    unknown = sorted(set(given) - ACCEPTED_NAMES)
    if unknown:
        raise _unknown_names_error(unknown)
    passed = passed_config_values(generation_config, ACCEPTED_NAMES)
    if passed.get("cache_implementation") == "hybrid":
        del passed["cache_implementation"]  # generate unsets it too (the hub's old default for sliding windows)
    cache_names = ("cache", "use_cache", "cache_implementation")
    cache = _resolve_cache({**{k: passed.pop(k) for k in cache_names if k in passed},
                            **{k: v for k, v in given.items() if k in cache_names and v is not None}})
    given = {k: v for k, v in given.items() if k not in cache_names}
    values, origin = merge_sources(GLOBAL_DEFAULTS, _model_generation_defaults(model), passed, given)
    for name in cache_names:
        values.pop(name, None)
    _alias(values, "min_tokens", "min_new_tokens")  # vLLM's name, before the lengths resolve

    if values.get("max_new_tokens") is None and origin.get("max_length") == DEFAULT:
        # generate's warning when only its model-agnostic default of 20 decides the length
        warnings.warn("no max_new_tokens or max_length given anywhere: generating transformers' default of 20 new "
                      "tokens (capped at the model's positions), as generate does; set max_new_tokens",
                      UserWarning, stacklevel=4)
    values["max_new_tokens"] = resolve_max_new_tokens(values, origin, prompt_length, max_positions)
    values.pop("max_length", None)
    values["min_new_tokens"], values["min_length"] = resolve_min_lengths(values, prompt_length)

    values["eos_token_id"] = _as_token_tuple("eos_token_id", values.get("eos_token_id"))
    values["pad_token_id"] = default_pad(values["eos_token_id"], _as_pad_id(values.get("pad_token_id")))
    values["stop_strings"] = _as_stop_strings(values.get("stop_strings"))
    _resolve_order(values)
    if isinstance(values.get("dry_sequence_breakers"), list):  # a Hydra list or a caller's
        values["dry_sequence_breakers"] = tuple(values["dry_sequence_breakers"])
    values["cache"] = cache
    _alias_early_exit(values)
    values["watermarking_config"] = as_watermark_settings(values.get("watermarking_config"))
    values.update(resolve_hooks(values))

    params = GenerationParams(**{k: v for k, v in values.items() if k in _OWN_FIELDS})
    try:
        validate(params, prompt_length, max_positions)
    except ValueError as err:
        raise with_origin(err, origin) from None
    if model is not None:
        check_vocabulary(params, vocab_size_of(model))
    return params


def eos_list(params: GenerationParams) -> Sequence[int]:
    return params.eos_token_id or ()
