"""Generation parameters: transformers' names and defaults, validated once, before the loop.

Why mirror `transformers.GenerationConfig` exactly: the same keyword arguments given to `model.generate` and
to `decoding.generate` must mean the same thing. So values resolve in the order generate uses: the caller's
keywords, then the model's own `generation_config` (for example a checkpoint's `temperature`), then
transformers' global defaults (`max_length=20` new tokens, `top_k=50` whenever sampling, ...).

Everything that can be wrong with a value is caught here, with an error that names the parameter, the value
and what is allowed. The hot loop never validates.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

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

# The order in which generate applies its logits processors (GenerationMixin._get_logits_processor).
# Kept as data so a config can record it; the warpers after "min_new_tokens" only run when sampling.
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
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    values = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    return {k: v for k, v in values.items() if k in ACCEPTED_NAMES and v is not None}


def _as_token_tuple(name: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    items = [value] if isinstance(value, int) else list(value)
    if not items:
        return None  # an empty list disables EOS, as an empty tensor does in generate
    if not all(isinstance(v, int) and v >= 0 for v in items):
        raise ValueError(f"{name}={value!r} is not allowed: use a non-negative token id or a list of them")
    return tuple(items)


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
    cache = cache or implied or "dynamic"
    _check(cache in CACHE_SETTINGS, "cache", cache, f"use one of {CACHE_SETTINGS}")
    return cache


def resolve_params(model: Any, prompt_length: int, max_positions: int | None = None, **given: Any) -> GenerationParams:
    """Merge caller keywords, the model's generation_config and transformers' defaults; validate everything.

    Args:
        model: the model (only its `generation_config` is read).
        prompt_length: padded prompt length T of the batch (max_length and min_length count it, as in generate).
        max_positions: the model's maximum number of positions, if it has one.
        **given: GenerationConfig-named keywords.
    """
    unknown = sorted(set(given) - ACCEPTED_NAMES)
    if unknown:
        raise ValueError(
            f"unknown or unsupported generation parameter(s) {unknown}; supported: {sorted(ACCEPTED_NAMES)}"
        )
    given = {k: v for k, v in given.items() if v is not None or k in ("top_k", "min_p")}
    cache = _resolve_cache(given)
    values = {**GLOBAL_DEFAULTS, **_model_generation_defaults(model), **given}
    values.pop("use_cache", None)
    values.pop("cache_implementation", None)

    # Lengths: max_new_tokens wins over max_length, as in generate.
    if given.get("max_new_tokens") is not None:
        max_new_tokens = given["max_new_tokens"]
    elif "max_length" in given:
        max_new_tokens = given["max_length"] - prompt_length
        _check(max_new_tokens >= 1, "max_length", given["max_length"],
               f"must exceed the prompt length {prompt_length}; or pass max_new_tokens")
    elif values.get("max_new_tokens") is not None:
        max_new_tokens = values["max_new_tokens"]
    else:
        max_new_tokens = values["max_length"]  # generate's default: max_length counts new tokens only
        if max_positions is not None:
            max_new_tokens = min(max_new_tokens, max_positions - prompt_length)
    values["max_new_tokens"] = max_new_tokens
    values.pop("max_length", None)

    values["eos_token_id"] = _as_token_tuple("eos_token_id", values.get("eos_token_id"))
    pad = values.get("pad_token_id")
    if pad is not None and hasattr(pad, "item"):
        pad = int(pad.item())
    if pad is None and values["eos_token_id"] is not None:
        pad = values["eos_token_id"][0]  # generate pads finished rows with the first EOS id when unset
    values["pad_token_id"] = pad
    stop = values.get("stop_strings")
    if isinstance(stop, str):
        stop = (stop,)
    values["stop_strings"] = tuple(stop) if stop else None
    order = values.get("processor_order", TRANSFORMERS_PROCESSOR_ORDER)
    values["processor_order"] = tuple(order)
    values["cache"] = cache

    params = GenerationParams(**{k: v for k, v in values.items() if k in _OWN_FIELDS})
    _validate(params, prompt_length, max_positions)
    return params


def _validate(p: GenerationParams, prompt_length: int, max_positions: int | None) -> None:
    _check(isinstance(p.max_new_tokens, int) and p.max_new_tokens >= 1, "max_new_tokens", p.max_new_tokens,
           "use a positive integer")
    _check(isinstance(p.min_new_tokens, int) and p.min_new_tokens >= 0, "min_new_tokens", p.min_new_tokens,
           "use an integer >= 0")
    _check(isinstance(p.min_length, int) and p.min_length >= 0, "min_length", p.min_length, "use an integer >= 0")
    _check(isinstance(p.do_sample, bool), "do_sample", p.do_sample, "use true or false")
    _check(_is_number(p.temperature) and p.temperature >= 0 and math.isfinite(p.temperature), "temperature",
           p.temperature, "use a finite number >= 0 (0 only without sampling)")
    if p.do_sample and p.temperature == 0:
        raise ValueError("temperature=0 is not allowed while sampling (do_sample=True): "
                         "for greedy decoding set do_sample=False, or use a temperature > 0")
    _check(p.top_k is None or (isinstance(p.top_k, int) and not isinstance(p.top_k, bool) and p.top_k >= 0),
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
    _check(isinstance(p.no_repeat_ngram_size, int) and p.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
           p.no_repeat_ngram_size, "use an integer >= 0 (0 disables it)")
    _check(isinstance(p.num_beams, int) and p.num_beams >= 1, "num_beams", p.num_beams, "use an integer >= 1")
    _check(isinstance(p.num_return_sequences, int) and p.num_return_sequences >= 1, "num_return_sequences",
           p.num_return_sequences, "use an integer >= 1")
    if p.num_return_sequences > 1 and not p.do_sample and p.num_beams == 1:
        raise ValueError(
            f"num_return_sequences={p.num_return_sequences} is not allowed with greedy decoding: every sequence "
            "would be the same. Set do_sample=True, or num_beams >= num_return_sequences"
        )
    if p.num_beams > 1 and p.num_return_sequences > p.num_beams:
        raise ValueError(f"num_return_sequences={p.num_return_sequences} is not allowed: it must be <= "
                         f"num_beams={p.num_beams}")
    _check(_is_number(p.length_penalty) and math.isfinite(p.length_penalty), "length_penalty", p.length_penalty,
           "use a finite number")
    _check(p.early_stopping in (True, False, "never"), "early_stopping", p.early_stopping,
           "use true, false or 'never'")
    _check(isinstance(p.num_beam_groups, int) and p.num_beam_groups >= 1, "num_beam_groups", p.num_beam_groups,
           "use an integer >= 1")
    if p.num_beams % p.num_beam_groups:
        raise ValueError(f"num_beams={p.num_beams} is not allowed: it must be divisible by "
                         f"num_beam_groups={p.num_beam_groups}")
    _check(_is_number(p.diversity_penalty) and p.diversity_penalty >= 0, "diversity_penalty",
           p.diversity_penalty, "use a number >= 0")
    if p.diversity_penalty > 0 and p.num_beam_groups == 1:
        raise ValueError(f"diversity_penalty={p.diversity_penalty} is not allowed without groups: "
                         "set num_beam_groups > 1 (diverse beam search) or diversity_penalty=0")
    unknown_steps = sorted(set(p.processor_order) - set(TRANSFORMERS_PROCESSOR_ORDER))
    _check(not unknown_steps, "processor_order", list(p.processor_order),
           f"name only these processors: {list(TRANSFORMERS_PROCESSOR_ORDER)}")
    if p.stop_strings is not None:
        _check(all(isinstance(s, str) and s for s in p.stop_strings), "stop_strings", p.stop_strings,
               "use non-empty strings")
    total = prompt_length + p.max_new_tokens
    if max_positions is not None and total > max_positions:
        raise ValueError(
            f"max_new_tokens={p.max_new_tokens} is not allowed: prompt length {prompt_length} + max_new_tokens = "
            f"{total} exceeds the model's maximum positions ({max_positions}); shorten the prompt or generate fewer"
        )
    if p.max_cache_len is not None:
        _check(p.cache == "static", "max_cache_len", p.max_cache_len, "only the static cache has a size")
        if total > p.max_cache_len:
            raise ValueError(
                f"max_cache_len={p.max_cache_len} is too small: prompt length {prompt_length} + max_new_tokens "
                f"{p.max_new_tokens} = {total} slots would overflow the static cache; raise max_cache_len"
            )
    _check(isinstance(p.compile, bool), "compile", p.compile, "use true or false")
    if p.compile and p.cache != "static":
        raise ValueError(f"compile=True is not allowed with cache={p.cache!r}: the compiled decode step needs the "
                         "fixed shapes of the static cache; use cache='static', or compile=False")
    if p.compile and p.num_beams > 1:
        raise ValueError(f"compile=True is not allowed with num_beams={p.num_beams}: only the greedy / sampling "
                         "decode step is compiled; use num_beams=1, or compile=False")
    if not p.do_sample and p.num_beams == 1:
        sampling_only = {"temperature": 1.0, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}
        ignored = [name for name, neutral in sampling_only.items() if getattr(p, name) != neutral]
        if ignored:
            warnings.warn(f"{ignored} only apply when sampling; do_sample=False ignores them, as generate does",
                          UserWarning, stacklevel=3)


def eos_list(params: GenerationParams) -> Sequence[int]:
    return params.eos_token_id or ()
