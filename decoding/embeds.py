"""`inputs_embeds`: a prompt given as embedding vectors, as `model.generate(inputs_embeds=...)` takes it.

What generate does with it for a decoder-only model (transformers 5.x, `_prepare_model_inputs`,
`_prepare_generated_length`, `prepare_inputs_for_generation`), and so what we do:

- The embeddings replace the prompt's token embeddings in the **first** forward pass only; every later step
  feeds the chosen token ids. The three concepts of loop.py do not change: the prompt still fills slots
  [0, T), position ids are still `cumsum(mask) - 1`, the mask is still (B, T + N).
- **Embeddings only** (no `input_ids`): generate's `input_ids` start empty, (B, 0). So `sequences` holds the
  new tokens only, and every processor and stopping criterion sees only the new tokens as its `input_ids`
  (repetition penalty, n-gram bans, `min_new_tokens` / `min_length` count from 0). The prompt's slots in our
  buffers hold a placeholder id that neither the model nor a processor ever reads: `PromptEmbeds.visible_start`
  is the first column they see (T here). A `max_length` (caller's or model's) still counts the embedded
  prompt (generate subtracts T from it); a `min_length` does not (generate lowers it by T, to at least 0).
  One transformers quirk is kept: on a padded batch the repetition penalty skips each row's first
  `padding` *new* tokens, because generate passes the prompt's padding lengths while its `input_ids` hold
  only new tokens.
- **Both** `input_ids` and `inputs_embeds` (same (B, T)): the embeddings feed the first forward, the ids are
  the prompt everywhere else (sequences, processors, stop strings), exactly as with ids alone.
- No `attention_mask`: with ids it is inferred from `pad_token_id` as for ids alone; with embeddings only
  every slot is attended (generate cannot infer padding from vectors).
- `cache="none"` (`use_cache=False`): generate switches the cache on for embeddings (it could not tell the
  first step otherwise). We keep no cache and recompute the whole sequence every step from the prompt's
  embeddings plus the new tokens' embeddings (`model.get_input_embeddings()`), which is the same
  computation; the float bits may differ from generate's cached run as any uncached run's do.

What we accept: a floating (B, T, H) tensor, H the model's embedding width, in the model's dtype (no silent
cast: a float32 prompt into a bfloat16 model is an error saying to convert), finite, moved to the model's
device as `input_ids` are. Refused before any forward pass, each with a ValueError: guidance
(`guidance_scale` != 1: its unconditional branch starts from the prompt's last token id, which embeddings-only
calls do not have), diverse beam search, and `generate_sweep` (its configs refuse the keyword).
`encoder_repetition_penalty` / `encoder_no_repeat_ngram_size` are ignored with a warning, as generate ignores
them: its "encoder input" is then the embeddings, not ids, even when input_ids are given too.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .inputs import check_attention_mask, check_input_ids
from .processors.guidance import guidance_active


@dataclass
class PromptEmbeds:
    """The prompt's embeddings and which prompt columns the rest of the call sees as token ids."""

    embeds: torch.Tensor  # (B, T, H) in the model's dtype, on its device
    visible_start: int  # 0 when input_ids were given, T when not: generate's input_ids begin there


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{value!r}"[:200] + f" ({type(value).__name__})"


def embedding_width(model: Any) -> int | None:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    width = getattr(embeddings, "embedding_dim", None)
    if width is None:
        width = getattr(model.config.get_text_config(decoder=True), "hidden_size", None)
    return None if width is None else int(width)


def check_inputs_embeds(model: Any, inputs_embeds: Any) -> torch.Tensor:
    """(B, T, H) prompt embeddings in the model's dtype, moved to the model's device."""
    if not isinstance(inputs_embeds, torch.Tensor):
        raise ValueError(f"inputs_embeds={_describe(inputs_embeds)} is not allowed: pass a float tensor of shape "
                         "(B, T, hidden), e.g. model.get_input_embeddings()(input_ids), or None")
    if not inputs_embeds.is_floating_point():
        raise ValueError(f"inputs_embeds is {_describe(inputs_embeds)}: embeddings must be a floating tensor in the "
                         f"model's dtype {model.dtype} (token ids go in input_ids)")
    if inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds has shape {tuple(inputs_embeds.shape)} ({inputs_embeds.dim()} dimensions): "
                         "use (B, T, hidden), one embedding vector per prompt slot")
    batch, length, width = inputs_embeds.shape
    if batch == 0 or length == 0:
        raise ValueError(f"inputs_embeds has shape {tuple(inputs_embeds.shape)}: an empty prompt is not allowed; "
                         "give at least one prompt of at least one slot")
    expected = embedding_width(model)
    if expected is not None and width != expected:
        raise ValueError(f"inputs_embeds has shape {tuple(inputs_embeds.shape)}: its last dimension {width} must be "
                         f"the model's embedding width {expected}")
    if inputs_embeds.dtype != model.dtype:
        raise ValueError(f"inputs_embeds is {_describe(inputs_embeds)} but the model runs in {model.dtype}: convert "
                         f"with inputs_embeds.to({model.dtype}) (decodelab does not cast silently)")
    if not bool(torch.isfinite(inputs_embeds).all()):
        bad_at = (~torch.isfinite(inputs_embeds)).nonzero()[0].tolist()
        raise ValueError(f"inputs_embeds holds a non-finite value (NaN or inf) at (row, slot, feature) "
                         f"{tuple(bad_at)}: embeddings must be finite")
    return inputs_embeds.to(model.device)


def check_prompt(model: Any, input_ids: Any, inputs_embeds: Any) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Checked (B, T) ids (or None) and (B, T, H) embeddings describing the same prompt slots."""
    embeds = check_inputs_embeds(model, inputs_embeds)
    if input_ids is None:
        return None, embeds
    was_1d = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1
    ids = check_input_ids(model, input_ids)
    if was_1d or tuple(ids.shape) != tuple(embeds.shape[:2]):
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)} but inputs_embeds has "
                         f"{tuple(embeds.shape)}: with both, input_ids must be (B, T) with the (B, T) of "
                         "inputs_embeds (one id per embedded slot), or pass inputs_embeds alone")
    return ids, embeds


def embeds_mask(input_ids: torch.Tensor | None, embeds: torch.Tensor, attention_mask: Any, pad_token_id: int | None,
                eos_token_id: tuple[int, ...] | None) -> torch.Tensor:
    """(B, T) mask: checked as for ids; without one, inferred from the ids, or all ones for embeddings only."""
    if input_ids is not None:
        return check_attention_mask(input_ids, attention_mask, pad_token_id, eos_token_id)
    shape_of = torch.zeros(embeds.shape[:2], dtype=torch.long, device=embeds.device)  # (B, T): shapes only
    if attention_mask is None:
        return torch.ones_like(shape_of)
    if isinstance(attention_mask, torch.Tensor) and tuple(attention_mask.shape) != tuple(shape_of.shape):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but inputs_embeds has "
                         f"{tuple(embeds.shape)}: the mask must be (B, T), one 0/1 per embedded slot")
    return check_attention_mask(shape_of, attention_mask, None, None)


def lengths_for_embeds_only(params: Any, prompt_length: int) -> Any:
    """generate lowers `min_length` by the embedded prompt's length (to at least 0) when no ids are given.

    `resolve_params` was called with the embedded length T, so `max_length` already counts the prompt as
    generate's `max_length -= T` does, and `min_new_tokens` became `min_length = min_new_tokens + T`; the
    processors see only new tokens, so both minimums are expressed in new tokens here.
    """
    return dataclasses.replace(params, min_length=max(params.min_length - prompt_length, 0))


# Processors generate builds from its "encoder input" (`inputs_tensor`): with inputs_embeds that is the (B, T, H)
# embeddings, never ids, so generate warns and skips them, with or without input_ids. name -> its neutral values.
_ENCODER_INPUT_PARAMS = {"encoder_repetition_penalty": (None, 1.0), "encoder_no_repeat_ngram_size": (None, 0)}


def without_encoder_input_params(params: Any) -> Any:
    """`params` with the encoder-input processors switched off, warning as generate does."""
    off = {name: neutral[0] for name, neutral in _ENCODER_INPUT_PARAMS.items()
           if getattr(params, name, None) not in neutral}
    for name in off:
        warnings.warn(f"{name}={getattr(params, name)!r} is ignored with inputs_embeds, as generate ignores it: "
                      "it needs the prompt's ids as generate's encoder input, which is the embeddings here",
                      UserWarning, stacklevel=4)
    return dataclasses.replace(params, **off) if off else params


def refuse_unsupported(params: Any) -> None:
    """The combinations we cannot match, refused before any forward pass."""
    if guidance_active(params.guidance_scale):
        raise ValueError(f"guidance_scale={params.guidance_scale!r} is not allowed with inputs_embeds: "
                         "classifier-free guidance runs its unconditional branch from token ids; pass the prompt "
                         "as input_ids, or guidance_scale=1")
    if params.num_beam_groups > 1:
        raise ValueError(f"num_beam_groups={params.num_beam_groups!r} is not allowed with inputs_embeds: diverse "
                         "beam search prefills from token ids only; pass input_ids, or num_beam_groups=1")


def prepare_embeds_call(model: Any, input_ids: Any, inputs_embeds: Any, attention_mask: Any, params: dict[str, Any],
                        generator: Any, tokenizer: Any
                        ) -> tuple[torch.Tensor, torch.Tensor, Any, PromptEmbeds]:
    """`loop.prepare_call` for a prompt given as embeddings: everything checked before any forward pass.

    Returns:
        (B, T) prompt ids (a placeholder id 0 where only embeddings were given), the (B, T) mask, the resolved
        parameters, and the PromptEmbeds.
    """
    from .inputs import check_generator, check_tokenizer
    from .loop import max_positions_of
    from .params import resolve_params

    ids, embeds = check_prompt(model, input_ids, inputs_embeds)
    check_generator("generator", generator, model.device)
    prompt_length = embeds.shape[1]
    p = resolve_params(model, prompt_length, max_positions_of(model), **params)
    refuse_unsupported(p)
    p = without_encoder_input_params(p)
    check_tokenizer(tokenizer, p.stop_strings)
    from .processors.dry_breakers import with_breakers
    p = with_breakers(p, tokenizer)  # DRY's breaker strings as this tokenizer's tokens
    mask = embeds_mask(ids, embeds, attention_mask, p.pad_token_id, p.eos_token_id)
    if ids is None:
        p = lengths_for_embeds_only(p, prompt_length)
        ids = torch.zeros(embeds.shape[:2], dtype=torch.long, device=embeds.device)  # never read
        return ids, mask, p, PromptEmbeds(embeds, visible_start=prompt_length)
    return ids, mask, p, PromptEmbeds(embeds, visible_start=0)
