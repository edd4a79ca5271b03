"""Validation of resolved generation parameters: every check that needs no forward pass.

Each check names the parameter, the value and what is allowed (`_check`). params.py resolves values and
calls `validate` once per call; the hot loop never validates. Checks of a processor that lives in its own
module (guidance, watermark) sit beside that processor and are called from `_validate_processor_values`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from .processors.guidance import check_guidance
from .speculative.checks import check_speculation
from .strategies.contrastive_checks import check_contrastive_search
from .strategies.amateur import check_contrastive_decoding
from .strategies.mbr_checks import check_mbr
from .strategies.dola_layers import check_dola
from .processors.watermark import check_watermarking_config
from .checks import check as _check, is_int as _is_int, is_plain_number as _is_number
from .processors.order import SAMPLER_ORDERS, TRANSFORMERS_PROCESSOR_ORDER
from .processors.dry import check_dry
from .processors.dynatemp import check_dynatemp
from .processors.mirostat import check_mirostat
from .processors.openai_penalties import check_openai_penalties, check_openai_vocabulary
from .processors.sigma import check_top_n_sigma
from .processors.xtc import check_xtc

if TYPE_CHECKING:
    from .params import GenerationParams

BEAM_PREFILL_MODES = ("per_beam", "shared")  # decoding/beam.py's module docstring says what each does
COMPILE_AUTOTUNE = "max-autotune"  # compile=: besides true / false, inductor's tuned kernels (decoding/compiled.py)


def is_compile_setting(value: Any) -> bool:
    """False, True or COMPILE_AUTOTUNE (not 0 / 1: a bool check, so YAML's 1 is refused as in every other flag)."""
    return isinstance(value, bool) or value == COMPILE_AUTOTUNE


def check_sampler_order(value: Any) -> None:
    """An engine's name, or a list of processor names, each once (reordered among themselves)."""
    allowed = (f"use one of {list(SAMPLER_ORDERS)}, or a list of processor names to reorder among themselves "
               f"(from {list(TRANSFORMERS_PROCESSOR_ORDER)})")
    if isinstance(value, str):
        _check(value in SAMPLER_ORDERS, "sampler_order", value, allowed)
        return
    _check(isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value),
           "sampler_order", value, allowed)
    unknown = [v for v in value if v not in TRANSFORMERS_PROCESSOR_ORDER]
    _check(not unknown, "sampler_order", list(value), f"{allowed}; unknown: {unknown}")
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    _check(not repeated, "sampler_order", list(value), f"name each processor once ({repeated} repeat)")


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
               "sequence_bias": p.sequence_bias, "bad_words_ids": p.bad_words_ids,
               "negative_prompt_ids": p.negative_prompt_ids}
    for name, value in indexed.items():
        outside = [t for t in _token_ids_in(value) if t >= vocab_size]
        _check(not outside, name, value, f"token ids must be in [0, {vocab_size}), the model's vocabulary "
                                         f"({outside} lie outside it)")
    check_openai_vocabulary(p, vocab_size)


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


def validate(p: GenerationParams, prompt_length: int, max_positions: int | None) -> None:
    """Every check that needs no model: types and ranges first, then combinations, then lengths."""
    _validate_values(p)
    _validate_combinations(p)
    check_speculation(p)
    check_contrastive_search(p)  # first of the strategies': the others compare penalty_alpha with 0
    check_contrastive_decoding(p)
    check_mbr(p)
    check_dola(p)
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
    _check(p.encoder_repetition_penalty is None or (_is_number(p.encoder_repetition_penalty)
                                                    and p.encoder_repetition_penalty > 0
                                                    and math.isfinite(p.encoder_repetition_penalty)),
           "encoder_repetition_penalty", p.encoder_repetition_penalty,
           "use a finite number > 0 (> 1 favours the prompt's tokens; 1.0 or None disables it)")
    _check(p.encoder_no_repeat_ngram_size is None or (_is_int(p.encoder_no_repeat_ngram_size)
                                                      and p.encoder_no_repeat_ngram_size >= 0),
           "encoder_no_repeat_ngram_size", p.encoder_no_repeat_ngram_size,
           "use an integer >= 0 (0 or None disables it)")
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
    _check(is_compile_setting(p.compile), "compile", p.compile,
           "use false, true, or 'max-autotune' (inductor tunes its matmul kernels: longer compile, faster steps)")
    _check(isinstance(p.beam_prefill, str) and p.beam_prefill in BEAM_PREFILL_MODES, "beam_prefill", p.beam_prefill,
           "use 'per_beam' (the prompt prefilled once per beam, as generate does: token-identical to it) or "
           "'shared' (once per prompt, its cache copied to the beams: scores within float rounding of generate's)")
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
    check_guidance(p)
    check_watermarking_config(p.watermarking_config)
    check_top_n_sigma(p)
    check_xtc(p)
    check_dry(p)
    check_mirostat(p)
    check_dynatemp(p)
    check_openai_penalties(p)


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
        raise ValueError(f"compile={p.compile!r} is not allowed with cache={p.cache!r}: the compiled decode step "
                         "needs the fixed shapes of the static cache; use cache='static', or compile=False")
    stateful = [name for name, on in (("xtc_probability", p.xtc_probability != 0), ("mirostat", p.mirostat != 0))
                if on and p.do_sample]
    if stateful and (p.is_beam or p.is_speculative):
        mode = f"num_beams={p.num_beams}" if p.is_beam else "speculative decoding"
        raise ValueError(f"{stateful[0]}={getattr(p, stateful[0])!r} is not allowed with {mode}: it draws random "
                         "numbers or carries state from step to step, which beams and verified blocks would replay "
                         "out of order; use it with plain sampling (num_beams=1, no proposer)")


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
        if p.top_h is not None:
            ignored.append("top_h")
        sampling_only = {"top_n_sigma": None, "xtc_probability": 0.0, "mirostat": 0, "dynatemp_range": 0.0}
        ignored += [name for name, neutral in sampling_only.items() if getattr(p, name) != neutral]
    if ignored:
        warnings.warn(f"{ignored} only apply when sampling; do_sample=False ignores them, as generate does",
                      UserWarning, stacklevel=4)
    if p.do_sample and p.mirostat != 0 and p.processor_order == SAMPLER_ORDERS["llama.cpp"]:
        # llama.cpp's chain with mirostat is logit_bias, temperature, mirostat: asking for its order and keeping
        # generate's default top_k=50 would silently give another method
        kept = [name for name, on in (("top_k", p.top_k not in (None, 0)), ("top_p", p.top_p < 1.0),
                                      ("min_p", p.min_p not in (None, 0.0)), ("typical_p", p.typical_p < 1.0),
                                      ("top_n_sigma", p.top_n_sigma is not None),
                                      ("xtc_probability", p.xtc_probability != 0),
                                      ("dry_multiplier", p.dry_multiplier != 0),
                                      ("repetition_penalty", p.repetition_penalty != 1.0),
                                      ("dynatemp_range", p.dynatemp_range != 0)) if on]
        if kept:
            warnings.warn(f"mirostat={p.mirostat} with sampler_order='llama.cpp' still applies {kept} "
                          f"({', '.join(f'{k}={getattr(p, k)!r}' for k in kept)}): llama.cpp skips those samplers "
                          "when mirostat is on; set them to their neutral values (top_k=0, ...) for llama.cpp's chain",
                          UserWarning, stacklevel=4)
    if p.num_beams == 1:
        beam_only = [name for name, neutral in {"length_penalty": 1.0, "early_stopping": False,
                                                "beam_prefill": "per_beam"}.items()
                     if getattr(p, name) != neutral]
        if beam_only:
            warnings.warn(f"{beam_only} only apply to beam search; num_beams=1 ignores them, as generate does",
                          UserWarning, stacklevel=4)
