"""Contrastive decoding's amateur: its checks and where it comes from.

Two kinds of amateur (decoding/strategies/contrastive_decoding.py runs them):
- `amateur_model`: any causal LM whose logits have the expert's width (the same vocabulary), e.g. a smaller
  model of the expert's family;
- `amateur_layers=L`: the expert's first L decoder layers, then its own final norm and LM head. No weights
  are copied: it is speculative decoding's self-draft (decoding/speculative/first_layers.py), reused.

A leaf module at import time (params.py's validation imports `check_contrastive_decoding`; the strategy
imports params.py), so whatever reads the loop or the parameters is imported inside the functions.
Every check names the parameter, the value and what is allowed, and runs before any forward pass.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from ..checks import check, is_int, is_real
from ..processors.guidance import guidance_active

if TYPE_CHECKING:
    from ..params import GenerationParams

DEFAULT_ALPHA = 0.1  # Li et al. 2023's plausibility threshold (GenerationParams.plausibility_alpha's default)
DEFAULT_AMATEUR_TEMPERATURE = 1.0


def _describe(p: GenerationParams) -> str:
    """How the amateur was given, for error messages: `amateur_model=GPT2LMHeadModel` or `amateur_layers=8`."""
    if p.amateur_model is not None:
        return f"amateur_model={type(p.amateur_model).__name__}"
    return f"amateur_layers={p.amateur_layers!r}"


def check_contrastive_decoding(p: GenerationParams) -> None:
    """Types, ranges and combinations of the contrastive decoding settings (no model needed)."""
    alpha, temperature = p.plausibility_alpha, p.amateur_temperature
    check(is_real(alpha) and 0 <= alpha <= 1, "plausibility_alpha", alpha,
          "use a number in [0, 1]: tokens with p_expert >= alpha * max p_expert stay plausible (0 keeps every "
          "token, 1 only the expert's most likely one; Li et al. use 0.1)")
    check(is_real(temperature) and math.isfinite(temperature) and temperature > 0, "amateur_temperature",
          temperature, "use a finite number > 0 (the amateur's logits are divided by it; 1 leaves them as they are)")
    check(p.amateur_layers is None or (is_int(p.amateur_layers) and p.amateur_layers >= 1), "amateur_layers",
          p.amateur_layers, "use an integer >= 1 (the expert's first L layers and its head are the amateur), or None")
    check(p.amateur_model is None or callable(getattr(p.amateur_model, "forward", None)), "amateur_model",
          type(p.amateur_model).__name__, "use a transformers causal LM with the expert's vocabulary, or None")
    if p.amateur_model is not None and p.amateur_layers is not None:
        raise ValueError(f"amateur_model={type(p.amateur_model).__name__} and amateur_layers={p.amateur_layers!r} "
                         "are not allowed together: contrastive decoding takes one amateur; give one of them")
    if not p.is_contrastive_decoding:
        changed = [name for name, neutral in (("plausibility_alpha", DEFAULT_ALPHA),
                                              ("amateur_temperature", DEFAULT_AMATEUR_TEMPERATURE))
                   if getattr(p, name) != neutral]
        if changed:
            warnings.warn(f"{changed} only apply to contrastive decoding; without amateur_model or amateur_layers "
                          "they are ignored", UserWarning, stacklevel=5)
        return
    refused = (
        (p.num_beams > 1, f"num_beams={p.num_beams}: contrastive decoding picks one token per row (greedy or "
                          "sampling); use num_beams=1"),
        (p.is_speculative, "speculative decoding (assistant_model, prompt_lookup_num_tokens or draft_layers): "
                           "its verification scores the expert alone; run one of the two"),
        (p.penalty_alpha not in (None, 0), f"penalty_alpha={p.penalty_alpha!r} (contrastive search): another "
                                           "strategy; run one of the two"),
        (p.dola_layers is not None, f"dola_layers={p.dola_layers!r} (DoLa): another contrast (of the expert's "
                                    "own layers); run one of the two"),
        (guidance_active(p.guidance_scale), f"guidance_scale={p.guidance_scale!r}: classifier-free guidance is "
                                            "another contrast of two distributions; run one of the two"),
    )
    for bad, why in refused:
        if bad:
            raise ValueError(f"{_describe(p)} (contrastive decoding) is not allowed with {why}")


def check_amateur(model: Any, p: GenerationParams, total_length: int, embeds_given: bool) -> None:
    """The checks that read the expert and the amateur, before any forward pass.

    Args:
        total_length: prompt length + max_new_tokens, the positions the amateur must hold.
        embeds_given: the prompt came as inputs_embeds.
    """
    from ..loop import max_positions_of
    from ..params import vocab_size_of

    if p.amateur_layers is not None:
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        check(p.amateur_layers <= layers - 1, "amateur_layers", p.amateur_layers,
              f"use 1 <= amateur_layers <= {layers - 1}: the expert has {layers} layers and the amateur is its "
              "first L of them")
        return
    amateur = p.amateur_model
    name = type(amateur).__name__
    if amateur is model:
        raise ValueError("amateur_model=<the expert model itself> is not allowed: every plausible token would "
                         "score 0; use a weaker model, or amateur_layers=L for the expert's first L layers")
    expert_vocab, amateur_vocab = vocab_size_of(model), vocab_size_of(amateur)
    check(expert_vocab is not None and expert_vocab == amateur_vocab, "amateur_model", name,
          f"its logits have {amateur_vocab} tokens and the expert's {expert_vocab}: use an amateur with the "
          "expert's vocabulary (the same tokenizer)")
    check(amateur.device == model.device, "amateur_model", f"{name} on {amateur.device}",
          f"put the amateur on the expert's device ({model.device})")
    positions = max_positions_of(amateur)
    check(positions is None or total_length <= positions, "amateur_model", name,
          f"it holds {positions} positions and this call needs {total_length} (prompt + max_new_tokens); "
          "use an amateur with more positions, or generate fewer tokens")
    if embeds_given:
        raise ValueError(f"amateur_model={name} is not allowed with inputs_embeds: the amateur embeds token ids "
                         "with its own embedding; pass input_ids, or amateur_layers=L (which shares the expert's)")


def build_amateur(model: Any, p: GenerationParams) -> Any:
    """The amateur LM: `p.amateur_model` as given, or the expert's first `p.amateur_layers` layers and its head."""
    if p.amateur_model is not None:
        return p.amateur_model
    from ..speculative.first_layers import first_layers

    return first_layers(model, int(p.amateur_layers))
