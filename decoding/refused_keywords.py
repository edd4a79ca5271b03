"""Keywords `model.generate` accepts and decodelab's generate refuses, each with its reason and what to use instead.

Why a table of reasons rather than the generic "unknown parameter": a caller porting a `model.generate` call
should learn whether a name is a typo, a feature of another generation mode, a part of generate that only
encoder-decoder models use, or one we chose not to have. The full survey of generate's keywords, with what each
one became here, is docs/generate_keywords.md; its test reads `GenerationConfig`'s fields at runtime so the survey
cannot go stale.

A refused keyword at its neutral value (None, False, or transformers' default, as a copy of a model's
generation_config carries them) changes nothing in generate, so it is accepted and dropped.
"""

from __future__ import annotations

from typing import Any

_ASSISTED = ("decodelab's speculative decoding proposes with assistant_model=, prompt_lookup_num_tokens= or "
             "draft_layers= (assistant_early_exit=); the tokens are the same as without speculation")
_UNIVERSAL = ("assisted generation across different tokenizers (universal assisted decoding) is not supported: "
              "the draft must share the target's tokenizer; " + _ASSISTED)
_ENCODER = "it only applies to encoder-decoder models; decodelab generates with decoder-only models"
_NO_EFFECT = "it tunes transformers' own implementation and has no counterpart in decodelab's loop"

# keyword -> (its neutral value(s), why it is refused and what to use instead)
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    # speculative decoding variants beyond decodelab's three proposers (decoding/speculative/)
    "assistant_tokenizer": ((None,), _UNIVERSAL),
    "assistant_lookbehind": ((None, 10), _UNIVERSAL),
    "target_lookbehind": ((None, 10), _UNIVERSAL),
    "assistant_ensemble_weight": ((None,), "ensemble verification trades exactness for acceptance; decodelab's "
                                           "speculative decoding is exact: leave it unset"),
    "is_assistant": ((None, False), "generate sets it on the draft's own config; decodelab drives the draft itself"),
    "speculation_type": ((None,), _ASSISTED),
    "use_mtp": ((None, False), _ASSISTED + " (multi-token prediction heads are not a proposer here)"),
    # encoder-decoder only
    "encoder_outputs": ((None,), _ENCODER),
    "decoder_input_ids": ((None,), _ENCODER),
    "decoder_attention_mask": ((None,), _ENCODER),
    # decoder-only, but not (yet) in decodelab
    "constraints": ((None,), "constrained beam search left transformers' generate for a Hub recipe "
                             "(custom_generate); use bad_words_ids, sequence_bias or prefix_allowed_tokens_fn"),
    "force_words_ids": ((None,), "constrained beam search left transformers' generate for a Hub recipe "
                                 "(custom_generate); use sequence_bias or prefix_allowed_tokens_fn"),
    "token_healing": ((None, False), "token healing rewrites the prompt's last tokens with a tokenizer; "
                                     "heal the prompt before calling generate"),
    # decoding.generate takes inputs_embeds as its own argument (decoding/embeds.py); only a keyword that reaches
    # the parameters (a generate_sweep configuration, the runner's decoding config) lands here
    "inputs_embeds": ((None,), "only decoding.generate(model, inputs_embeds=...) takes it; generate_sweep and "
                               "configurations prefill from token ids: pass input_ids"),
    "past_key_values": ((None,), "decodelab builds and owns the cache of each call; pass the whole prompt as "
                                 "input_ids and choose the cache with cache='none' | 'dynamic' | 'static'"),
    "position_ids": ((None,), "decodelab derives position ids from the attention mask (left padding), as "
                              "generate does when none are given"),
    "output_attentions": ((None, False), "collecting every layer's attention of every step is not supported; "
                                         "run model(..., output_attentions=True) on the result's sequences"),
    "output_hidden_states": ((None, False), "collecting every layer's hidden states of every step is not "
                                            "supported; run model(..., output_hidden_states=True) on the "
                                            "result's sequences"),
    "prefill_chunk_size": ((None,), "decodelab prefills the prompt in one forward pass; chunked prefill is "
                                    "not supported"),
    "custom_generate": ((None,), "decodelab is its own generate; call the custom recipe with model.generate"),
    "trust_remote_code": ((None, False), "decodelab loads no generation code from the Hub"),
    "synced_gpus": ((None, False), "decodelab does not run under DeepSpeed ZeRO-3 / FSDP across GPUs"),
    "cache_config": ((None,), _NO_EFFECT + " (the cache classes' options); use cache= and max_cache_len"),
    "compile_config": ((None,), _NO_EFFECT + "; use compile=True with cache='static'"),
    "disable_compile": ((None, False, True), _NO_EFFECT + "; decodelab compiles only with compile=True"),
    "continuous_batching_config": ((None,), "continuous batching (generate_batch) is not decodelab's loop; "
                                            "batch prompts with left padding"),
}

# Keywords generate accepts and, for a decoder-only model given input ids, never reads: accepted and dropped.
IGNORED: dict[str, str] = {
    "bos_token_id": "generate reads it only to start from an empty prompt; with input_ids it has no effect",
    "decoder_start_token_id": "generate reads it only for encoder-decoder models",
}


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    return any(value is n if n is None or isinstance(n, bool) else
               (not isinstance(value, bool) and type(value) in (int, float, str) and value == n) for n in neutral)


def drop_neutral(given: dict[str, Any]) -> dict[str, Any]:
    """`given` without the ignored keywords and the refused ones set to a neutral value (they change nothing
    in generate either)."""
    return {name: value for name, value in given.items() if name not in IGNORED
            and (name not in REFUSED or not _is_neutral(value, REFUSED[name][0]))}


def refusal_reason(name: str) -> str | None:
    """Why `name` is refused and what to use instead; None for a name this table does not know (a typo?)."""
    entry = REFUSED.get(name)
    return None if entry is None else entry[1]
