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
import math
import numbers
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np
import torch

from .hooks import resolve_hooks

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
}

# generate's processor order, as data, lives with the processors (processors/order.py).
from .processors.order import TRANSFORMERS_PROCESSOR_ORDER  # noqa: E402
from .resolution import (  # noqa: E402
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
    # decodelab's own settings (not GenerationConfig fields)
    cache: str = "dynamic"
    max_cache_len: int | None = None
    compile: bool = False  # torch.compile the single-token decode step (cache="static" only; decoding/compiled.py)
    processor_order: tuple[str, ...] = field(default=TRANSFORMERS_PROCESSOR_ORDER)

    @property
    def is_beam(self) -> bool:
        return self.num_beams > 1

    def with_(self, **changes: Any) -> "GenerationParams":
        return replace(self, **changes)


# Names a caller may pass: GenerationConfig's (plus max_length) and decodelab's cache / compile settings.
_OWN_FIELDS = {f.name for f in fields(GenerationParams)}
ACCEPTED_NAMES = _OWN_FIELDS | {"max_length", "use_cache", "cache_implementation"}


def _model_generation_defaults(model: Any) -> dict[str, Any]:
    """The values the model's own generation_config sets (resolution.py has the rules)."""
    return model_config_values(model, ACCEPTED_NAMES)


def _is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool: True is not a count nor a token id."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


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
        return None  # an empty list disables EOS, as an empty tensor does in generate
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


def _check(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _resolve_cache(given: dict[str, Any]) -> str:
    """Our one-word cache setting, also reachable through transformers' `use_cache` / `cache_implementation`."""
    cache = given.pop("cache", None)
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
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(ACCEPTED_NAMES), n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ValueError(f"unknown or unsupported generation parameter(s) {unknown}: {', '.join(hints)}; "
                      f"supported: {sorted(ACCEPTED_NAMES)}")


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

    values["max_new_tokens"] = resolve_max_new_tokens(values, origin, prompt_length, max_positions)
    values.pop("max_length", None)
    values["min_new_tokens"], values["min_length"] = resolve_min_lengths(values, prompt_length)

    values["eos_token_id"] = _as_token_tuple("eos_token_id", values.get("eos_token_id"))
    values["pad_token_id"] = default_pad(values["eos_token_id"], _as_pad_id(values.get("pad_token_id")))
    values["stop_strings"] = _as_stop_strings(values.get("stop_strings"))
    values["processor_order"] = _as_processor_order(values.get("processor_order", TRANSFORMERS_PROCESSOR_ORDER))
    values["cache"] = cache
    values.update(resolve_hooks(values))

    params = GenerationParams(**{k: v for k, v in values.items() if k in _OWN_FIELDS})
    try:
        _validate(params, prompt_length, max_positions)
    except ValueError as err:
        raise with_origin(err, origin) from None
    if model is not None:
        check_vocabulary(params, vocab_size_of(model))
    return params


def check_vocabulary(p: GenerationParams, vocab_size: int | None) -> None:
    """EOS and pad ids the model can emit and embed: an EOS id outside the vocabulary would never end a row
    (generate accepts it and runs to the length limit), a pad id outside it crashes the embedding."""
    if vocab_size is None:
        return
    outside = [t for t in p.eos_token_id or () if t >= vocab_size]
    _check(not outside, "eos_token_id", list(p.eos_token_id or ()),
           f"token ids must be in [0, {vocab_size}), the model's vocabulary ({outside} lie outside it)")
    _check(p.pad_token_id is None or p.pad_token_id < vocab_size, "pad_token_id", p.pad_token_id,
           f"use a token id in [0, {vocab_size}), the model's vocabulary")
    # Ids a processor indexes the scores with (suppress_tokens only match, so any id is harmless there).
    indexed = {"forced_bos_token_id": p.forced_bos_token_id, "forced_eos_token_id": p.forced_eos_token_id,
               "sequence_bias": p.sequence_bias, "bad_words_ids": p.bad_words_ids}
    for name, value in indexed.items():
        outside = [t for t in _token_ids_in(value) if t >= vocab_size]
        _check(not outside, name, value, f"token ids must be in [0, {vocab_size}), the model's vocabulary "
                                         f"({outside} lie outside it)")


def _token_ids_in(value: Any) -> list[int]:
    """Every token id in a validated id, id list, bad-words list or sequence-bias value."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(t) for t in value.flatten().tolist()]
    if _is_int(value):
        return [int(value)]
    if isinstance(value, dict):
        return [int(t) for ids in value for t in ids]
    flat: list[int] = []
    for item in value:
        if _is_int(item):
            flat.append(int(item))
        elif isinstance(item, (list, tuple)) and item and isinstance(item[0], (list, tuple)):
            flat += [int(t) for t in item[0]]  # a [[ids], bias] pair
        else:
            flat += [int(t) for t in item]
    return flat


def _validate(p: GenerationParams, prompt_length: int, max_positions: int | None) -> None:
    """Every check that needs no model: types and ranges first, then combinations, then lengths."""
    _validate_values(p)
    _validate_combinations(p)
    _validate_lengths(p, prompt_length, max_positions)
    _warn_ignored(p)


def _validate_values(p: GenerationParams) -> None:
    _check(_is_int(p.max_new_tokens) and p.max_new_tokens >= 1, "max_new_tokens", p.max_new_tokens,
           "use a positive integer")
    _check(_is_int(p.min_new_tokens) and p.min_new_tokens >= 0, "min_new_tokens", p.min_new_tokens,
           "use an integer >= 0")
    _check(_is_int(p.min_length) and p.min_length >= 0, "min_length", p.min_length, "use an integer >= 0")
    _check(isinstance(p.do_sample, bool), "do_sample", p.do_sample, "use true or false")
    _check(_is_number(p.temperature) and p.temperature >= 0 and math.isfinite(p.temperature), "temperature",
           p.temperature, "use a finite number >= 0 (0 only without sampling)")
    _check(p.top_k is None or (_is_int(p.top_k) and p.top_k >= 0),
           "top_k", p.top_k, "use an integer >= 0 (0 or None disables top-k)")
    _check(_is_number(p.top_p) and 0 < p.top_p <= 1, "top_p", p.top_p, "use a number in (0, 1]")
    _check(p.min_p is None or (_is_number(p.min_p) and 0 <= p.min_p <= 1), "min_p", p.min_p,
           "use a number in [0, 1] (or None)")
    _check(_is_number(p.typical_p) and 0 < p.typical_p <= 1, "typical_p", p.typical_p, "use a number in (0, 1]")
    _check(_is_number(p.epsilon_cutoff) and 0 <= p.epsilon_cutoff < 1, "epsilon_cutoff", p.epsilon_cutoff,
           "use a number in [0, 1) (0 disables it)")
    _check(_is_number(p.eta_cutoff) and 0 <= p.eta_cutoff < 1, "eta_cutoff", p.eta_cutoff,
           "use a number in [0, 1) (0 disables it)")
    _check(_is_number(p.repetition_penalty) and p.repetition_penalty > 0 and math.isfinite(p.repetition_penalty),
           "repetition_penalty", p.repetition_penalty, "use a finite number > 0 (1.0 disables it)")
    _check(_is_int(p.no_repeat_ngram_size) and p.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
           p.no_repeat_ngram_size, "use an integer >= 0 (0 disables it)")
    _check(_is_int(p.num_beams) and p.num_beams >= 1, "num_beams", p.num_beams, "use an integer >= 1")
    _check(_is_int(p.num_return_sequences) and p.num_return_sequences >= 1, "num_return_sequences",
           p.num_return_sequences, "use an integer >= 1")
    _check(_is_number(p.length_penalty) and math.isfinite(p.length_penalty), "length_penalty", p.length_penalty,
           "use a finite number")
    _check(isinstance(p.early_stopping, (bool, str)) and p.early_stopping in (True, False, "never"),
           "early_stopping", p.early_stopping, "use true, false or 'never'")
    _check(_is_int(p.num_beam_groups) and p.num_beam_groups >= 1, "num_beam_groups", p.num_beam_groups,
           "use an integer >= 1")
    _check(_is_number(p.diversity_penalty) and p.diversity_penalty >= 0 and math.isfinite(p.diversity_penalty),
           "diversity_penalty", p.diversity_penalty, "use a finite number >= 0")
    _check(p.max_cache_len is None or (_is_int(p.max_cache_len) and p.max_cache_len >= 1), "max_cache_len",
           p.max_cache_len, "use a positive integer (the static cache's slots), or None for prompt + new tokens")
    _check(isinstance(p.compile, bool), "compile", p.compile, "use true or false")
    _validate_processor_values(p)
    unknown_steps = sorted(set(p.processor_order) - set(TRANSFORMERS_PROCESSOR_ORDER))
    _check(not unknown_steps, "processor_order", list(p.processor_order),
           f"name only these processors: {list(TRANSFORMERS_PROCESSOR_ORDER)} (unknown: {unknown_steps})")
    repeated = sorted({name for name in p.processor_order if p.processor_order.count(name) > 1})
    _check(not repeated, "processor_order", list(p.processor_order), f"name each processor once ({repeated} repeat)")
    if p.stop_strings is not None:
        _check(all(isinstance(s, str) and s for s in p.stop_strings), "stop_strings", list(p.stop_strings),
               "use a string or a list of non-empty strings")


def _is_token_list(value: Any) -> bool:
    """A list / tuple / 1-D integer tensor of token ids (integers >= 0)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.dtype == torch.bool or value.dim() != 1:
            return False
        value = value.tolist()
    return isinstance(value, (list, tuple)) and all(_is_int(v) and v >= 0 for v in value)


def _validate_processor_values(p: GenerationParams) -> None:
    """The token bans, forced tokens and score conditioning (processors/constraints.py, normalization.py)."""
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        value = getattr(p, name)
        _check(value is None or _is_token_list(value), name, value,
               "use a list of token ids (integers >= 0), or None")
    _check(p.forced_bos_token_id is None or (_is_int(p.forced_bos_token_id) and p.forced_bos_token_id >= 0),
           "forced_bos_token_id", p.forced_bos_token_id, "use one token id (an integer >= 0), or None")
    forced_eos = p.forced_eos_token_id
    _check(forced_eos is None or (_is_int(forced_eos) and forced_eos >= 0) or _is_token_list(forced_eos),
           "forced_eos_token_id", forced_eos, "use a token id (an integer >= 0), a list of them, or None")
    for name in ("remove_invalid_values", "renormalize_logits"):
        _check(isinstance(getattr(p, name), bool), name, getattr(p, name), "use true or false")
    decay = p.exponential_decay_length_penalty
    _check(decay is None or (isinstance(decay, (list, tuple)) and len(decay) == 2 and _is_int(decay[0])
                             and decay[0] >= 0 and _is_number(decay[1]) and math.isfinite(decay[1])
                             and decay[1] > 0),
           "exponential_decay_length_penalty", decay,
           "use a (start_index, decay_factor) pair: an integer >= 0 and a finite number > 0, or None")
    if decay is not None and not p.eos_token_id:
        raise ValueError(f"exponential_decay_length_penalty={decay!r} is not allowed without an EOS token: it "
                         "raises the EOS score; set eos_token_id, or exponential_decay_length_penalty=None")
    _check(p.top_h is None or (_is_number(p.top_h) and 0 < p.top_h <= 1), "top_h", p.top_h,
           "use a number in (0, 1] (or None)")
    _check(p.prefix_allowed_tokens_fn is None or callable(p.prefix_allowed_tokens_fn), "prefix_allowed_tokens_fn",
           p.prefix_allowed_tokens_fn, "use a function (batch_id, input_ids) -> list of allowed token ids, or None")
    _check(p.bad_words_ids is None or (isinstance(p.bad_words_ids, list) and p.bad_words_ids and all(
        isinstance(seq, list) and seq and all(_is_int(t) and t >= 0 for t in seq) for seq in p.bad_words_ids)),
        "bad_words_ids", p.bad_words_ids, "use a non-empty list of non-empty lists of token ids (integers >= 0)")
    _check(p.sequence_bias is None or _is_sequence_bias(p.sequence_bias), "sequence_bias", p.sequence_bias,
           "use a non-empty {(token ids...): float} dict or [[token ids], float] list, token ids integers >= 0")


def _is_sequence_bias(value: Any) -> bool:
    """generate's two spellings of sequence_bias: {(ids...): float} or [[ids], float] pairs (floats, as it checks)."""
    def ids_ok(ids: Any, kind: type) -> bool:
        return isinstance(ids, kind) and len(ids) > 0 and all(_is_int(t) and t >= 0 for t in ids)

    if isinstance(value, dict):
        return bool(value) and all(ids_ok(ids, tuple) and isinstance(b, float) for ids, b in value.items())
    return isinstance(value, list) and bool(value) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and ids_ok(pair[0], list) and isinstance(pair[1], float)
        for pair in value)


def _validate_combinations(p: GenerationParams) -> None:
    if p.do_sample and p.temperature == 0:
        raise ValueError("temperature=0 is not allowed while sampling (do_sample=True): "
                         "for greedy decoding set do_sample=False, or use a temperature > 0")
    if p.num_return_sequences > 1 and not p.do_sample and p.num_beams == 1:
        raise ValueError(
            f"num_return_sequences={p.num_return_sequences} is not allowed with greedy decoding: every sequence "
            "would be the same. Set do_sample=True, or num_beams >= num_return_sequences"
        )
    if p.num_beams > 1 and p.num_return_sequences > p.num_beams:
        raise ValueError(f"num_return_sequences={p.num_return_sequences} is not allowed: it must be <= "
                         f"num_beams={p.num_beams}")
    if p.num_beams % p.num_beam_groups:
        raise ValueError(f"num_beams={p.num_beams} is not allowed: it must be divisible by "
                         f"num_beam_groups={p.num_beam_groups}")
    if p.diversity_penalty > 0 and p.num_beam_groups == 1:
        raise ValueError(f"diversity_penalty={p.diversity_penalty} is not allowed without groups: "
                         "set num_beam_groups > 1 (diverse beam search) or diversity_penalty=0")
    if p.num_beam_groups > 1 and p.diversity_penalty == 0:
        raise ValueError(f"num_beam_groups={p.num_beam_groups} is not allowed with diversity_penalty=0: the "
                         "groups would all be the same beam search. Set diversity_penalty > 0, or num_beam_groups=1")
    if p.num_beam_groups > 1 and p.do_sample:
        raise ValueError(f"num_beam_groups={p.num_beam_groups} is not allowed with do_sample=True: diverse "
                         "beam search is deterministic. Set do_sample=False, or num_beam_groups=1 for beam sampling")
    if p.max_cache_len is not None and p.cache != "static":
        raise ValueError(f"max_cache_len={p.max_cache_len} is not allowed with cache={p.cache!r}: only the static "
                         "cache has a size; use cache='static', or max_cache_len=None")
    if p.compile and p.cache != "static":
        raise ValueError(f"compile=True is not allowed with cache={p.cache!r}: the compiled decode step needs the "
                         "fixed shapes of the static cache; use cache='static', or compile=False")
    if p.compile and p.num_beams > 1:
        raise ValueError(f"compile=True is not allowed with num_beams={p.num_beams}: only the greedy / sampling "
                         "decode step is compiled; use num_beams=1, or compile=False")


def _validate_lengths(p: GenerationParams, prompt_length: int, max_positions: int | None) -> None:
    # generate only warns here ("Unfeasible length constraints") and then cannot honour the minimum; we refuse.
    if p.min_new_tokens > p.max_new_tokens:
        raise ValueError(f"min_new_tokens={p.min_new_tokens} is not allowed: it exceeds max_new_tokens="
                         f"{p.max_new_tokens}, so it could never be met; lower min_new_tokens or raise max_new_tokens")
    total = prompt_length + p.max_new_tokens
    if p.min_length > total:
        raise ValueError(f"min_length={p.min_length} is not allowed: it counts the prompt ({prompt_length}) and "
                         f"exceeds prompt + max_new_tokens = {total}, so it could never be met; lower min_length "
                         "or raise max_new_tokens")
    if max_positions is not None and total > max_positions:
        raise ValueError(
            f"max_new_tokens={p.max_new_tokens} is not allowed: prompt length {prompt_length} + max_new_tokens = "
            f"{total} exceeds the model's maximum positions ({max_positions}); shorten the prompt or generate fewer"
        )
    if p.max_cache_len is not None and total > p.max_cache_len:
        raise ValueError(
            f"max_cache_len={p.max_cache_len} is too small: prompt length {prompt_length} + max_new_tokens "
            f"{p.max_new_tokens} = {total} slots would overflow the static cache; raise max_cache_len"
        )


def _warn_ignored(p: GenerationParams) -> None:
    """Settings the chosen mode never reads: warned about, as GenerationConfig.validate warns (greedy and beam
    search without sampling ignore the warpers; a single beam ignores the beam-only settings)."""
    ignored = []
    if not p.do_sample:
        sampling_only = {"temperature": 1.0, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}
        ignored += [name for name, neutral in sampling_only.items() if getattr(p, name) != neutral]
        if p.min_p is not None:
            ignored.append("min_p")
    if ignored:
        warnings.warn(f"{ignored} only apply when sampling; do_sample=False ignores them, as generate does",
                      UserWarning, stacklevel=4)
    if p.num_beams == 1:
        beam_only = [name for name, neutral in {"length_penalty": 1.0, "early_stopping": False}.items()
                     if getattr(p, name) != neutral]
        if beam_only:
            warnings.warn(f"{beam_only} only apply to beam search; num_beams=1 ignores them, as generate does",
                          UserWarning, stacklevel=4)


def eos_list(params: GenerationParams) -> Sequence[int]:
    return params.eos_token_id or ()
