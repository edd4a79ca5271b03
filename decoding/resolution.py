"""Where each generation value comes from, and the length and special-token rules, as `model.generate` has them.

transformers 5.x builds the values a call uses in this order (`GenerationMixin._prepare_generation_config`):

1. the caller's `generation_config=` (a `GenerationConfig`; none given means an empty one),
2. whatever it leaves unset (None) is taken from the model's own `generation_config`,
3. whatever both leave unset from the global defaults (`max_length=20`, `top_k=50`, ...),
4. then every keyword argument overrides the result, an explicit `None` included.

So keywords win over the passed config, which wins over the model's, which wins over the defaults. A passed
config equal to the model's own changes nothing: the merge is field by field, there is no "is it the default"
test. An explicit keyword `None` is a value: `eos_token_id=None` means no EOS (not the model's EOS),
`temperature=None` means no temperature warper (not the model's temperature).

Then lengths (`_prepare_generated_length`): a `max_new_tokens` from any source wins over any `max_length`; a
`max_length` from any source (caller or model) counts the prompt; only when no source set `max_length` does
generate take its default of 20 *new* tokens, capped at the model's positions. A `min_new_tokens` from any
source (0 included) replaces `min_length` by `min_new_tokens + prompt length`.

Special tokens (`_prepare_special_tokens`): without a pad id, finished rows are padded with the first EOS id.

The functions here work on plain dicts and know nothing of `GenerationParams`; `params.resolve_params` calls
them, then validates the result.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .checks import is_int as _is_int

# Where a value came from, for error messages and for generate's "was max_length ever set" test.
KEYWORD, PASSED_CONFIG, MODEL_CONFIG, DEFAULT = "keyword", "generation_config", "model's generation_config", "default"

# Names whose explicit None generate reads as "unset" / "off" in a way that is not our field's default:
# top_k=None disables top-k (the default is 50), the lengths and special tokens fall through their own rules.
# An explicit None of any other name means generate's neutral value, which is our field's default
# (temperature=None: no warper, as 1.0; do_sample=None: greedy; ...).
NONE_KEPT = frozenset({
    "top_k", "min_p", "eos_token_id", "pad_token_id", "stop_strings", "max_new_tokens", "min_new_tokens",
    "max_length", "max_cache_len",
    # generate cannot run with these None (it computes with them): kept, so validation names them.
    "num_beams", "num_return_sequences",
})

# Fields of a GenerationConfig that mean nothing to a decoder-only generate call given input ids.
IGNORED_CONFIG_NAMES = frozenset({"bos_token_id", "decoder_start_token_id", "transformers_version"})


def _refuse(name: str, value: Any, allowed: str, origin: str = KEYWORD) -> ValueError:
    where = "" if origin == KEYWORD else f" (from the {origin})"
    return ValueError(f"{name}={value!r}{where} is not allowed: {allowed}")


def model_config_values(model: Any, accepted: Iterable[str]) -> dict[str, Any]:
    """The values a model's own `generation_config` sets (its None fields set nothing)."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    values = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    accepted = set(accepted)
    return {k: v for k, v in values.items() if k in accepted and v is not None}


def passed_config_values(generation_config: Any, accepted: Iterable[str]) -> dict[str, Any]:
    """The values a caller's `generation_config=` sets; a set field decodelab cannot honour is an error.

    A field set to transformers' global default (`num_assistant_tokens=20`, ...) or switched off (`False`, as a
    copy of a model's config has `output_attentions=False`) changes nothing and is accepted.
    """
    if generation_config is None:
        return {}
    from transformers import GenerationConfig

    if not isinstance(generation_config, GenerationConfig):
        raise _refuse("generation_config", generation_config,
                      "use a transformers.GenerationConfig, or None (or pass the values as keywords)")
    defaults = GenerationConfig._get_default_generation_params()
    accepted = set(accepted)
    values = {k: v for k, v in generation_config.to_dict().items() if not k.startswith("_") and v is not None}
    unsupported = sorted(k for k, v in values.items()
                         if k not in accepted and k not in IGNORED_CONFIG_NAMES and v is not False
                         and not (k in defaults and v == defaults[k]))
    if unsupported:
        shown = ", ".join(f"{k}={values[k]!r}" for k in unsupported)
        raise ValueError(f"generation_config sets {shown}, which decodelab's generate does not support: unset "
                         f"{'it' if len(unsupported) == 1 else 'them'} (supported: {sorted(accepted)})")
    return {k: v for k, v in values.items() if k in accepted}


def merge_sources(global_defaults: Mapping[str, Any], model_values: Mapping[str, Any],
                  config_values: Mapping[str, Any], given: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """generate's precedence: keywords > passed config > model's config > global defaults.

    Returns the merged values and each value's origin. A keyword given as None is dropped (our field's default
    applies, which is what generate's None means) unless its None means something of its own (`NONE_KEPT`).
    """
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, layer in ((DEFAULT, global_defaults), (MODEL_CONFIG, model_values), (PASSED_CONFIG, config_values),
                          (KEYWORD, given)):
        for name, value in layer.items():
            values[name] = value
            origin[name] = source
    for name, value in given.items():
        if value is None and name not in NONE_KEPT:
            values.pop(name)
            origin.pop(name)
    return values, origin


def resolve_max_new_tokens(values: Mapping[str, Any], origin: Mapping[str, str], prompt_length: int,
                           max_positions: int | None) -> Any:
    """New tokens to generate, by `_prepare_generated_length`'s rules (the value is validated afterwards)."""
    max_new_tokens = values.get("max_new_tokens")
    if max_new_tokens is not None:
        return max_new_tokens  # wins over any max_length, from whichever source
    max_length = values.get("max_length")
    where = origin.get("max_length", DEFAULT)
    if max_length is None:  # an explicit max_length=None with nothing else: generate fails adding it up
        raise _refuse("max_length", None, "give max_new_tokens, or an integer max_length (prompt included)")
    if where == DEFAULT:  # no source set it: generate's default counts new tokens only, within the positions
        if max_positions is None:
            return max_length
        if prompt_length >= max_positions:
            raise ValueError(f"input_ids has {prompt_length} tokens per row, as many as the model's {max_positions} "
                             "positions, so no new token fits: shorten the prompt")
        return min(max_length, max_positions - prompt_length)
    if not _is_int(max_length):
        raise _refuse("max_length", max_length, "use an integer: the total length, prompt included (or pass "
                      "max_new_tokens)", where)
    if max_length - prompt_length < 1:
        raise _refuse("max_length", max_length, f"it counts the prompt, so it must exceed the prompt length "
                      f"{prompt_length}; raise it, or pass max_new_tokens", where)
    return max_length - prompt_length


def resolve_min_lengths(values: Mapping[str, Any], prompt_length: int) -> tuple[Any, Any]:
    """(min_new_tokens, min_length) as generate uses them: a min_new_tokens (even 0) replaces min_length."""
    min_new_tokens = values.get("min_new_tokens")
    if min_new_tokens is None:
        return 0, values.get("min_length", 0)
    if not _is_int(min_new_tokens):
        return min_new_tokens, values.get("min_length", 0)  # validation names min_new_tokens
    return min_new_tokens, min_new_tokens + prompt_length


def default_pad(eos_token_id: tuple[int, ...] | None, pad_token_id: int | None) -> int | None:
    """generate pads finished rows with the first EOS id when no pad id is set (an explicit None included)."""
    if pad_token_id is None and eos_token_id:
        return eos_token_id[0]
    return pad_token_id


def with_origin(err: ValueError, origin: Mapping[str, str]) -> ValueError:
    """The same error, saying so when the value it names was not the caller's keyword but came from a config
    (a checkpoint's `temperature=0` with sampling is otherwise a puzzle)."""
    message = str(err)
    name = message.split("=", 1)[0] if "=" in message else None
    where = origin.get(name) if name and name.isidentifier() else None
    if where in (PASSED_CONFIG, MODEL_CONFIG):
        return ValueError(f"{message} ({name} comes from the {where}; pass {name}= to override it)")
    return err

