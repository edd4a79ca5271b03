"""One forward pass over a range of slots, returning the logits of its last `keep` positions."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..cache import KVCache
from ..state import DecodeState

_KEEPS_LOGITS: dict[type, bool] = {}


def _takes_logits_to_keep(model: Any) -> bool:
    kind = type(model)
    if kind not in _KEEPS_LOGITS:
        _KEEPS_LOGITS[kind] = "logits_to_keep" in inspect.signature(model.forward).parameters
    return _KEEPS_LOGITS[kind]


def forward_slots(model: Any, kv: KVCache, state: DecodeState, start: int, end: int, keep: int) -> torch.Tensor:
    """Run `model` on slots [start, end) (the whole [0, end) without a cache); (B, keep, V) float32 logits of the
    last `keep` slots. The cache writes from slot `start` (its cache position), as the plain loop's Forward."""
    if not kv.enabled:
        start = 0
    kv.before_forward(start)
    extra = {"logits_to_keep": keep} if _takes_logits_to_keep(model) else {}
    out = model(
        input_ids=state.tokens[:, start:end],
        attention_mask=state.model_mask(end),
        position_ids=state.position_ids[:, start:end],
        cache=kv.model_cache,
        use_cache=kv.enabled,
        **extra,
    )
    return out.logits[:, -keep:].to(dtype=torch.float32, copy=True)
