"""The objects of a generate call, checked before any forward pass: prompt ids, attention mask, RNG, tokenizer.

`params.py` checks the keyword parameters; this module checks what only a tensor or an object can get wrong.
Both raise ValueError naming the argument, the offending value and what is allowed, so a bad call fails
before the model runs, never halfway through a batch (an out-of-vocabulary id would otherwise be an
IndexError in the embedding on CPU, and a device-side assert that poisons the CUDA context on a GPU).

Where transformers' `generate` accepts an input and gives it a defined meaning, so do we:
- a (T,) prompt is one row; a bool or 0./1. float attention mask means what the 0/1 integer mask means;
- without `attention_mask`, padding is inferred from `pad_token_id` only when that id occurs in the prompt
  and is not an EOS id (`_prepare_attention_mask_for_generation`); otherwise every slot is attended. With
  several prompts and no pad id at all nothing can be inferred, so we warn (every slot is attended, as in
  generate) instead of guessing;
- a padded batch (attention_mask given) with `pad_token_id` and `eos_token_id` both None is fine: the mask
  says where the padding is, and without EOS no pad id is ever written (a row ended by a stop string keeps
  decoding, as in generate; `new_token_mask` marks its tokens after the stop as not generated).
One difference, kept on purpose: prompt tensors on another device are moved to the model's (generate fails).
We reject what generate would crash on or silently misread: fractional or out-of-range mask values
(generate would treat 0.5 as "attend", our integer mask as "pad"), masks with a hole or right padding (the
loop's slots and processors assume left padding), non-integer ids, ids outside the vocabulary.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

_INT_DTYPES = (torch.long, torch.int)


def input_vocab_size(model: Any) -> int | None:
    """How many rows the input embedding has: the ids a prompt may hold."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        return int(embeddings.num_embeddings)
    from .params import vocab_size_of

    return vocab_size_of(model)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{value!r}"[:200] + f" ({type(value).__name__})"


def check_input_ids(model: Any, input_ids: Any) -> torch.Tensor:
    """(B, T) long prompt ids on the model's device; a (T,) tensor is one prompt."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids={_describe(input_ids)} is not allowed: pass a torch.LongTensor of token ids "
                         "of shape (B, T) or (T,), e.g. tokenizer(texts, return_tensors='pt').input_ids")
    if input_ids.dtype not in _INT_DTYPES:
        raise ValueError(f"input_ids is {_describe(input_ids)}: token ids must be integers (torch.long or "
                         "torch.int); convert with input_ids.long() if the values are whole token ids")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)} ({input_ids.dim()} dimensions): "
                         "use (B, T) for a batch of prompts or (T,) for one")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}: an empty prompt is not allowed; "
                         "give at least one prompt of at least one token (e.g. the BOS token)")
    vocab = input_vocab_size(model)
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab is not None and high >= vocab):
        bad = low if low < 0 else high
        where = (input_ids == bad).nonzero()[0].tolist()
        allowed = f"[0, {vocab})" if vocab is not None else "integers >= 0"
        raise ValueError(f"input_ids holds token id {bad} at (row, column) {tuple(where)}: ids must be in "
                         f"{allowed}, the model's vocabulary (padding slots too: the embedding reads them)")
    return input_ids.to(model.device).long()


def check_attention_mask(input_ids: torch.Tensor, attention_mask: Any, pad_token_id: int | None,
                         eos_token_id: tuple[int, ...] | None, was_1d: bool = False) -> torch.Tensor:
    """(B, T) long 0/1 left-padding mask; inferred from `pad_token_id` as generate infers it when None."""
    if attention_mask is None:
        return _inferred_mask(input_ids, pad_token_id, eos_token_id)
    if not isinstance(attention_mask, torch.Tensor):
        raise ValueError(f"attention_mask={_describe(attention_mask)} is not allowed: pass a torch tensor of 0 "
                         "(padding) and 1 (token) of the same shape as input_ids, or None")
    if was_1d and attention_mask.dim() == 1:
        attention_mask = attention_mask.unsqueeze(0)
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}: they must match")
    if attention_mask.is_complex():
        raise ValueError(f"attention_mask is {_describe(attention_mask)}: use integers, bool or floats of 0 and 1")
    if attention_mask.dtype != torch.bool:
        valid = (attention_mask == 0) | (attention_mask == 1)  # NaN is neither
        if not bool(valid.all()):
            bad_at = (~valid).nonzero()[0]
            bad = attention_mask[tuple(bad_at.tolist())].item()
            raise ValueError(f"attention_mask holds {bad!r} at (row, column) {tuple(bad_at.tolist())}: only 0 "
                             "(padding) and 1 (token) are allowed, in any integer, bool or float dtype")
    mask = attention_mask.to(input_ids.device).long()
    empty_rows = (mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(f"attention_mask rows {empty_rows} are all 0: prompt rows {empty_rows} are empty; "
                         "an empty prompt is not allowed, give each row at least one token")
    right_padded = (mask[:, -1] == 0).nonzero().flatten().tolist()
    if right_padded:
        raise ValueError(f"attention_mask rows {right_padded} end in 0: prompt rows {right_padded} are "
                         "right-padded; decoder-only generation needs left padding (tokenizer.padding_side = 'left')")
    holes = (mask[:, 1:] < mask[:, :-1]).any(-1).nonzero().flatten().tolist()  # a 0 after a 1
    if holes:
        raise ValueError(f"attention_mask rows {holes} have a 0 after a 1: only left padding is supported (all "
                         "0s first, then all 1s); pass each prompt as one contiguous run of tokens")
    return mask


def _inferred_mask(input_ids: torch.Tensor, pad_token_id: int | None, eos_token_id: tuple[int, ...] | None
                   ) -> torch.Tensor:
    eos = eos_token_id or ()
    if pad_token_id is not None and pad_token_id not in eos and bool((input_ids == pad_token_id).any()):
        try:
            return check_attention_mask(input_ids, (input_ids != pad_token_id).long(), None, None)
        except ValueError as err:
            raise ValueError(f"attention_mask=None: the mask inferred from pad_token_id={pad_token_id} (every slot "
                             f"holding that id is padding) is not usable: {err}. Pass attention_mask explicitly"
                             ) from None
    if pad_token_id is None and input_ids.shape[0] > 1:
        warnings.warn(f"attention_mask=None and pad_token_id=None with a batch of {input_ids.shape[0]} prompts: "
                      "padding cannot be told from tokens, so every slot is attended (as generate does); pass "
                      "attention_mask if the prompts are padded", UserWarning, stacklevel=4)
    return torch.ones_like(input_ids)


def check_generator(name: str, generator: Any, device: torch.device) -> None:
    """A torch.Generator (or None) on the device the sampling runs on."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name}={_describe(generator)} is not allowed: pass a seeded torch.Generator, e.g. "
                         f"torch.Generator(device={str(device)!r}).manual_seed(0), or None for torch's global RNG")
    if generator.device.type != device.type:
        raise ValueError(f"{name} is a torch.Generator on {generator.device} but the model runs on {device}: "
                         f"create it with torch.Generator(device={str(device)!r})")


def check_tokenizer(tokenizer: Any, stop_strings: tuple[str, ...] | None) -> None:
    """Stop strings decode token ids (`stopping.StopStrings`): they need an object with a callable `decode`."""
    if tokenizer is not None and not callable(getattr(tokenizer, "decode", None)):
        raise ValueError(f"tokenizer={_describe(tokenizer)} is not allowed: pass the model's tokenizer (an object "
                         "with decode(ids), e.g. transformers.AutoTokenizer.from_pretrained(...)), or None")
    if stop_strings and tokenizer is None:
        raise ValueError(f"stop_strings={list(stop_strings)!r} needs a tokenizer: pass tokenizer=... to generate")
