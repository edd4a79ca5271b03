"""A model split over devices: the `model.device_map` / `model.tp_plan` / `model.offload_folder` settings, checked
before any work (`check_placement`), turned into `from_pretrained` keywords (`placement_kwargs`), and the loaded
model's placement checked (`check_placement_result`). experiments/models.py loads; this module only judges.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from experiments.config_checks import ConfigError, show

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")  # accelerate's, by name
TP_PLANS = ("auto",)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets; transformers initialises from them


def _device_map_entry(key: str, device: Any) -> str | None:
    """What is wrong with one explicit device_map entry (`module name: device`), or None."""
    if not isinstance(key, str):
        return f"its module names are strings, not {key!r}"
    if device in ("cpu", "disk"):
        return None
    index = device if isinstance(device, int) and not isinstance(device, bool) else None
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        index = int(device[5:])
    if index is None or index < 0:
        return f"{show(key, device)} is not a device: use an int (a GPU index), 'cpu', 'cuda:<index>' or 'disk'"
    if not torch.cuda.is_available():
        return f"{show(key, device)} asks for a GPU but CUDA is not available: use 'cpu' or 'disk'"
    if index >= torch.cuda.device_count():
        return f"{show(key, device)} names GPU {index} but this machine has {torch.cuda.device_count()}"
    return None


def check_placement(device: Any, device_map: Any = None, tp_plan: Any = None, offload_folder: Any = None,
                    path: str = "model") -> None:
    """The split-model settings, before any work: ConfigError (a ValueError) naming `path.<key>=value`.

    `device` is the single-device setting: with device_map or tp_plan it must be null or auto (they place the
    model themselves), and null alone is refused (it places nothing)."""
    if device_map is not None:
        _check_device_map(device_map, offload_folder, path)
    elif offload_folder is not None:
        raise ConfigError(f"{show(path + '.offload_folder', offload_folder)} is used only for the \"disk\" entries "
                          f"of {path}.device_map, which is null: set {path}.device_map or {path}.offload_folder=null",
                          path + ".offload_folder")
    if tp_plan is not None:
        _check_tp_plan(tp_plan, device_map, path)
    split = device_map is not None or tp_plan is not None
    if split and device not in (None, "auto"):
        chosen, value = (f"{path}.device_map", device_map) if device_map is not None else (f"{path}.tp_plan", tp_plan)
        value = dict(value.items()) if hasattr(value, "items") else value
        raise ConfigError(f"{show(path + '.device', device)} and {show(chosen, value)} both place the model: pass "
                          f"{path}.device=null to split it with {chosen}, or leave {chosen} null", path + ".device")
    if device is None and not split:
        raise ConfigError(f"{path}.device=null places the model nowhere: use auto, cpu, cuda or cuda:<index> (null "
                          f"is for a model split by {path}.device_map or {path}.tp_plan)", path + ".device")


def _check_device_map(device_map: Any, offload_folder: Any, path: str) -> None:
    key = path + ".device_map"
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError(f"{show(key, device_map)} needs the accelerate package, which is not installed: "
                          "pip install accelerate (decodelab's dependencies include it)", key)
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ConfigError(f"{show(key, device_map)} is not known: use one of {', '.join(DEVICE_MAP_STRATEGIES)}, "
                              "a mapping {module name: device}, or null", key)
        return
    if not hasattr(device_map, "items") or not device_map:
        raise ConfigError(f"{show(key, device_map)} is not allowed: use one of {', '.join(DEVICE_MAP_STRATEGIES)}, "
                          "a non-empty mapping {module name: device} (an int, 'cpu', 'cuda:<index>' or 'disk'), or "
                          "null", key)
    for module, device in device_map.items():
        problem = _device_map_entry(module, device)
        if problem:
            raise ConfigError(f"{key}={dict(device_map.items())}: {problem}", key)
    if "disk" in device_map.values():
        if not isinstance(offload_folder, str) or not offload_folder.strip():
            raise ConfigError(f"{key} sends modules to 'disk' but {show(path + '.offload_folder', offload_folder)}: "
                              f"pass {path}.offload_folder=<folder> for their weights", path + ".offload_folder")


def _check_tp_plan(tp_plan: Any, device_map: Any, path: str) -> None:
    key = path + ".tp_plan"
    if tp_plan not in TP_PLANS:
        raise ConfigError(f"{show(key, tp_plan)} is not known: use auto (the model's own tensor-parallel plan) or "
                          "null", key)
    if device_map is not None:
        raise ConfigError(f"{show(key, tp_plan)} and {show(path + '.device_map', device_map)} both split the model "
                          f"(tensor parallel vs. whole layers per device): leave one of them null", key)
    import torch.distributed as dist

    launched = all(name in os.environ for name in TORCHRUN_ENV)
    if not dist.is_available() or not (dist.is_initialized() or launched):
        raise ConfigError(f"{show(key, tp_plan)} needs torch.distributed initialised, one process per GPU: launch "
                          f"with `torchrun --nproc-per-node=<GPUs> -m experiments.run {key}=auto ...` "
                          f"(no torchrun here: {', '.join(TORCHRUN_ENV)} are not all set)", key)


def placement_kwargs(device_map: Any = None, tp_plan: str | None = None,
                     offload_folder: str | None = None) -> dict[str, Any]:
    """from_pretrained's keywords for a split model; {} for a model on one device."""
    out: dict[str, Any] = {}
    if device_map is not None:
        # a Hydra DictConfig is a Mapping, not a dict: from_pretrained tests `isinstance(device_map, dict)`
        out["device_map"] = device_map if isinstance(device_map, str) else dict(device_map.items())
        if offload_folder is not None:
            out["offload_folder"] = offload_folder
    if tp_plan is not None:
        from transformers import DistributedConfig

        out["distributed_config"] = DistributedConfig(tp_plan=tp_plan)  # from_pretrained's own tp_plan= is deprecated
    return out


def check_placement_result(model) -> None:
    """The loop puts prompts on `model.device` (its first parameter's): that must be a device, not the `meta`
    stand-in accelerate leaves for weights offloaded to the CPU or disk."""
    if model.device.type == "meta":
        embeddings = next((n for n, m in model.named_modules() if m is model.get_input_embeddings()), "?")
        where = getattr(model, "hf_device_map", {})
        raise ConfigError(f"model.device_map={where} offloads the model's first weights ({embeddings}) to the CPU or "
                          f"disk, where prompts cannot be put: map {embeddings} to a device that computes (a GPU, or "
                          "'cpu' when no module is on a GPU)", "model.device_map")
