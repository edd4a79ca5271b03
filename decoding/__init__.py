"""decodelab's own autoregressive generation on `model.forward` (never `model.generate`)."""

from .cache import KVCache, SlotCache
from .generate import generate
from .loop import decode_n_tokens, decode_one_token, max_positions_of
from .state import prompt_position_ids
from .params import GenerationParams, check_vocabulary, resolve_params, vocab_size_of
from .processors import build_processors
from .result import GenerationResult
from .sweep import generate_sweep
from .transition_scores import transition_scores

__all__ = [
    "GenerationParams",
    "GenerationResult",
    "KVCache",
    "SlotCache",
    "build_processors",
    "check_vocabulary",
    "decode_n_tokens",
    "decode_one_token",
    "generate",
    "generate_sweep",
    "max_positions_of",
    "prompt_position_ids",
    "resolve_params",
    "transition_scores",
    "vocab_size_of",
]
