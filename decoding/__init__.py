"""decodelab's own autoregressive generation on `model.forward` (never `model.generate`)."""

from .cache import KVCache, SlotCache
from .loop import decode_n_tokens, decode_one_token, generate, prompt_position_ids
from .params import GenerationParams, resolve_params
from .processors import build_processors
from .result import GenerationResult
from .sweep import generate_sweep

__all__ = [
    "GenerationParams",
    "GenerationResult",
    "KVCache",
    "SlotCache",
    "build_processors",
    "decode_n_tokens",
    "decode_one_token",
    "generate",
    "generate_sweep",
    "prompt_position_ids",
    "resolve_params",
]
