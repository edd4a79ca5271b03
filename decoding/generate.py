"""The public entry point: check and resolve the arguments, pick the strategy, run it.

This is the only dispatch, and it sits above the strategies: loop.py (greedy and sampling, and the
primitives every strategy uses), beam.py and beam_diverse.py import loop.py, never this module, so no
strategy module imports another through the dispatch.
"""

from __future__ import annotations

from typing import Any

import torch

from .beam import beam_search
from .beam_diverse import diverse_beam_search
from .embeds import prepare_embeds_call
from .loop import greedy_or_sample, prepare_call
from .result import GenerationResult
from .speculative.strategy import speculative_decode


@torch.inference_mode()
def generate(model: Any, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
             generator: torch.Generator | None = None, tokenizer: Any = None, inputs_embeds: torch.Tensor | None = None,
             **params: Any) -> GenerationResult:
    """Cache-backed generation on `model.forward`, token-identical to `model.generate` for the same arguments.

    Args:
        model: a transformers causal LM.
        input_ids: (B, T) left-padded prompt token ids (or (T,) for one prompt); may be None with inputs_embeds.
        attention_mask: (B, T) 1 for real tokens, 0 for padding; inferred from `pad_token_id` when None.
        generator: a seeded `torch.Generator` for sampling; None draws from torch's global RNG exactly as
            generate does.
        tokenizer: needed only for `stop_strings`.
        inputs_embeds: (B, T, H) prompt embeddings in the model's dtype, fed to the first forward instead of the
            prompt's ids, as in generate (decoding/embeds.py); without input_ids, `sequences` holds new tokens only.
        **params: `transformers.GenerationConfig` names (`max_new_tokens`, `do_sample`, `temperature`,
            `top_k`, `top_p`, `min_p`, `typical_p`, `epsilon_cutoff`, `eta_cutoff`, `repetition_penalty`,
            `no_repeat_ngram_size`, `min_new_tokens`, `num_return_sequences`, `eos_token_id`,
            `pad_token_id`, `stop_strings`, `num_beams`, `suppress_tokens`, `bad_words_ids`, `sequence_bias`,
            `forced_eos_token_id`, `top_h`, `renormalize_logits`, `prefix_allowed_tokens_fn`, ...) plus `cache`
            ("none" | "dynamic" | "static") and `max_cache_len` for the static cache.

    Returns:
        GenerationResult; `sequences` is (B * num_return_sequences, T + N) ((.., N) for inputs_embeds alone).
    """
    extra: dict[str, Any] = {}
    if inputs_embeds is not None:
        input_ids, attention_mask, p, extra["prompt_embeds"] = prepare_embeds_call(
            model, input_ids, inputs_embeds, attention_mask, params, generator, tokenizer)
    else:
        if input_ids is None:
            raise ValueError("input_ids=None is not allowed without inputs_embeds: pass the prompt's token ids "
                             "(B, T), or its embeddings as inputs_embeds=(B, T, hidden)")
        input_ids, attention_mask, (p,) = prepare_call(model, input_ids, attention_mask, [params],
                                                       {"generator": generator}, tokenizer)
    if p.is_speculative:
        strategy = speculative_decode
    elif p.is_mbr:
        from .strategies.mbr import mbr_decode as strategy
    elif p.is_contrastive_search:
        from .strategies.contrastive import contrastive_search as strategy
    elif p.is_dola:
        from .strategies.dola import dola_decode as strategy
    elif p.is_contrastive_decoding:
        from .strategies.contrastive_decoding import contrastive_decode as strategy
    elif p.num_beam_groups > 1:
        strategy = diverse_beam_search
    elif p.is_beam:
        strategy = beam_search
    else:
        strategy = greedy_or_sample
    return strategy(model, input_ids, attention_mask, p, generator=generator, tokenizer=tokenizer, **extra)
