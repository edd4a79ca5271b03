"""Self-speculation's draft: the target's first L layers, then its own final norm and head (LayerSkip, Draft & Verify).

No weights are copied: the draft is a shallow copy of the model whose layer list holds the first L of the
target's layer modules (the same parameters), with a config that says L layers, so the caches transformers
builds from it (`DynamicCache(config=...)`) and our slot cache have L layers. The target itself is untouched
(transformers' `assistant_early_exit` instead edits the live config for the draft's calls and restores it).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

# Attributes a config may hold per layer (truncated with the layers).
_PER_LAYER_CONFIG = ("layer_types",)


def _layer_list(module: torch.nn.Module, count: int) -> tuple[torch.nn.Module, str]:
    """(owner, attribute) of the decoder's ModuleList of `count` layers (Llama's `model.layers`, GPT-2's
    `transformer.h`, ...): the first such list found walking down from the model."""
    for owner in module.modules():
        for name, child in owner.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == count:
                return owner, name
    raise ValueError(f"draft_layers: no list of {count} decoder layers found in {type(module).__name__}; "
                     "self-speculation needs a decoder whose layers sit in one ModuleList")


def _shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing every parameter and child, whose own children dict can be edited."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def first_layers(model: Any, layers: int) -> Any:
    """The draft that runs `model`'s first `layers` decoder layers, then its final norm and LM head."""
    config = model.config.get_text_config(decoder=True)
    total = config.num_hidden_layers
    owner, name = _layer_list(model, total)
    # Rebuild the path from the model down to the owner with shallow copies, so the target keeps its layers.
    path = _path_to(model, owner)
    draft = _shallow(model)
    copied = [draft]
    node = draft
    for attr in path:
        child = _shallow(node._modules[attr])
        node._modules[attr] = child
        node = child
        copied.append(child)
    node._modules[name] = torch.nn.ModuleList(list(owner._modules[name])[:layers])
    draft_config = copy.deepcopy(model.config)
    text_config = draft_config.get_text_config(decoder=True)
    text_config.num_hidden_layers = layers
    for attr in _PER_LAYER_CONFIG:
        value = getattr(text_config, attr, None)
        if isinstance(value, list):
            setattr(text_config, attr, value[:layers])
    swap = {id(model.config): draft_config, id(config): text_config}
    for module in copied:  # the copies see the draft's config; the shared layers keep the target's
        held = getattr(module, "config", None)
        if id(held) in swap:
            module.__dict__["config"] = swap[id(held)]
    return draft


def _path_to(root: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Attribute names from `root` down to `target` (both modules)."""
    if root is target:
        return []
    for name, child in root.named_children():
        if any(m is target for m in child.modules()):
            return [name] + _path_to(child, target)
    raise ValueError(f"{type(target).__name__} is not inside {type(root).__name__}")
