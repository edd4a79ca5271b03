"""The reference call every parity test makes: `model.generate` and `decoding.generate` after the same seed."""

import torch

import decoding


def reference_and_ours(model, ids, mask, cache="dynamic", seed=0, **kwargs):
    """(model.generate's sequences, our GenerationResult) for the same arguments and `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours
