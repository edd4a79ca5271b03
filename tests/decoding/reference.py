"""The reference call every parity test makes: `model.generate` and `decoding.generate` after the same seed."""

import contextlib
import warnings

import torch
from transformers import GenerationConfig

import decoding


def reference_and_ours(model, ids, mask, cache="dynamic", seed=0, **kwargs):
    """(model.generate's sequences, our GenerationResult) for the same arguments and `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours


def same_keywords_both(model, ids, mask, seed=0, **kwargs):
    """(model.generate's sequences, our result) for the very same keywords (transformers' spelling of the cache,
    `use_cache` / `cache_implementation`, included) and global seed; "ignored setting" warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not under test where this is used
        torch.manual_seed(seed)
        reference = model.generate(ids, attention_mask=mask, **kwargs)
        torch.manual_seed(seed)
        ours = decoding.generate(model, ids, mask, **kwargs)
    return reference, ours


@contextlib.contextmanager
def model_config(model, **values):
    """Give the (session-wide) model its own generation_config for one test, then restore the original."""
    original = model.generation_config
    model.generation_config = GenerationConfig(**values)
    try:
        yield model
    finally:
        model.generation_config = original
