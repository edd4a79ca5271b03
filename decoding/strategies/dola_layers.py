"""DoLa's candidate premature layers and every check of its settings, before any forward pass.

Why a module of its own: which layers DoLa may contrast with is a rule about the model (its depth, whether
its input and output embeddings are tied), and the checks split in two: `check_dola` needs no model
(params.py's validation calls it), `check_dola_model` reads the model (dola.py calls it before the prefill).

transformers 4.55's mapping (`_dola_decoding`), which `candidate_layers` follows:
- layer index i names the hidden state entering decoder layer i; 0 is the embedding output. The final layer
  N (= num_hidden_layers) is the mature one and never a candidate.
- tied embeddings: the embedding output put through the tied LM head is close to the identity, so the
  candidates start at layer 2 (layer 1 for a 2-layer model; 0 for a 1-layer one); untied: at layer 0.
- "low": every second layer from the start up to N // 2 (up to 20 for N > 40), or just the start layer
  when it is N // 2 itself; "high": every second layer from N // 2 (from N - 20 for N > 40) below N.
- a list names the candidates itself. 4.x silently drops entries >= N; we refuse them (and negative ones),
  naming the layer count, since a dropped layer is a silent change to the experiment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..checks import check, is_int

if TYPE_CHECKING:
    from ..params import GenerationParams

NAMED = ("low", "high")
ALLOWED = "use 'low', 'high', or a non-empty list of layer indices (integers), or None for no DoLa"


def check_dola(p: GenerationParams) -> None:
    """The value of `dola_layers` and the settings DoLa cannot combine with (no model needed)."""
    value = p.dola_layers
    if value is None:
        return
    if isinstance(value, str):
        check(value in NAMED, "dola_layers", value, ALLOWED)
    else:
        check(isinstance(value, (list, tuple)) and len(value) > 0 and all(is_int(i) for i in value),
              "dola_layers", value, ALLOWED)
    refused = [
        (p.num_beams > 1, f"num_beams={p.num_beams}: DoLa contrasts one sequence per row (greedy or sampling), "
                          "as transformers 4.x; use num_beams=1"),
        (p.is_speculative, "a speculative proposer (assistant_model / prompt_lookup_num_tokens / draft_layers): "
                           "DoLa's contrast needs every step's premature hidden states; run without a proposer"),
        (p.penalty_alpha is not None and p.penalty_alpha > 0,
         f"penalty_alpha={p.penalty_alpha}: contrastive search and DoLa are two strategies; give one of them"),
        (p.is_contrastive_decoding, "amateur_model / amateur_layers: contrastive decoding and DoLa are two "
                                    "strategies; give one of them"),
        (p.is_mbr, "mbr_candidates: MBR decoding and DoLa are two strategies; give one of them"),
        (p.guidance_scale not in (None, 1, 1.0), f"guidance_scale={p.guidance_scale}: the unconditional rows' "
                                                 "forward would be read as premature layers; run without guidance"),
        (p.compile, "compile=True: the compiled step does not expose the premature hidden states; use "
                    "compile=False"),
    ]
    for bad, why in refused:
        if bad:
            raise ValueError(f"dola_layers={value!r} is not allowed with {why}")


def candidate_layers(dola_layers: str | list[int] | tuple[int, ...], num_layers: int, tied: bool) -> list[int]:
    """The candidate premature layers of a model with `num_layers` decoder layers, as transformers 4.55 picks them.

    Args:
        dola_layers: "low", "high" or explicit indices (already checked by `check_dola_model`).
        num_layers: N, the model's decoder layers (the mature layer).
        tied: whether the model's input and output embeddings are tied.
    """
    if not isinstance(dola_layers, str):
        return [int(i) for i in dola_layers]
    if not tied:
        start = 0
    else:
        start = 2 if num_layers > 2 else 1 if num_layers == 2 else 0
    half = num_layers // 2
    if dola_layers == "low":
        if start == half:
            return [start]
        return list(range(start, half if num_layers <= 40 else 20, 2))
    return list(range(half if num_layers <= 40 else num_layers - 20, num_layers, 2))


def model_layer_count(model: Any) -> int:
    return int(model.config.get_text_config(decoder=True).num_hidden_layers)


def embeddings_tied(model: Any) -> bool:
    """4.x reads the top-level config's `tie_word_embeddings`."""
    return bool(getattr(model.config, "tie_word_embeddings", False))


def decoder_layers(model: Any) -> torch.nn.ModuleList | None:
    """The model's stack of decoder layers (Llama's `model.layers`, GPT-2's `transformer.h`): the first
    ModuleList holding exactly num_hidden_layers modules."""
    count = model_layer_count(model)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    return None


def check_dola_model(model: Any, dola_layers: Any) -> list[int]:
    """Model-dependent checks (before any forward); returns the candidate premature layers.

    Raises:
        ValueError: for an encoder-decoder model, one without output embeddings or a findable layer stack, a
            layer index outside [0, num_hidden_layers), or a model too shallow to have any candidate.
    """
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"dola_layers={dola_layers!r} is not allowed with {name}: DoLa is for decoder-only models")
    if model.get_output_embeddings() is None:
        raise ValueError(f"dola_layers={dola_layers!r} is not allowed with {name}: it has no output embeddings "
                         "(LM head) to read the premature layers with")
    if decoder_layers(model) is None:
        raise ValueError(f"dola_layers={dola_layers!r} is not allowed with {name}: no stack of "
                         f"{model_layer_count(model)} decoder layers found to read premature hidden states from")
    count = model_layer_count(model)
    if not isinstance(dola_layers, str):
        outside = [int(i) for i in dola_layers if not 0 <= int(i) < count]
        check(not outside, "dola_layers", list(dola_layers),
              f"layer indices must lie in [0, {count}): the model has {count} decoder layers, index 0 is the "
              f"embedding output and {count} the final (mature) layer itself ({outside} lie outside)")
    layers = candidate_layers(dola_layers, count, embeddings_tied(model))
    check(bool(layers), "dola_layers", dola_layers, f"the model's {count} layers leave no candidate premature "
                                                    "layer for it; give layer indices explicitly")
    return layers
