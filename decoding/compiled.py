"""The single-token decode step with fixed shapes, under `torch.compile` (opt-in: `compile=True`, `cache="static"`).

Why fixed shapes: the eager static cache attends only the filled slots, so its key/value length grows by one
every step, and the Python int slot index it is handed would be a constant of a compiled graph. Either one
recompiles the graph at every step. So the compiled step gives the model nothing that changes from step to step
except tensor *contents*:

- the slot cache in fixed-shape mode (`SlotCache.use_fixed_shapes`): it writes at a (1,) slot *tensor* with
  `index_copy_` and returns the whole `max_cache_len` buffer;
- a prepared 4D attention mask (B, 1, 1, max_cache_len): the loop's attention mask (0 on left padding) and the
  slots written so far (slot <= this step's slot). transformers' `create_causal_mask` returns a 4D mask as it is,
  so neither `get_mask_sizes` nor any other Python-int size is read inside the graph;
- explicit position ids (B, 1), so the model never asks the cache `get_seq_length`.

For one batch size and cache length the graph is compiled once; a new batch size, or a cache length in another
`COMPILED_CACHE_BUCKET`, compiles again (after a second shape dynamo marks that dimension dynamic). Tests count
the recompiles (`torch._dynamo.utils.counters`).

What stays eager: the prefill (its length differs for every batch), the logits processors, sampling and the
loop's bookkeeping; for beam search (plain and diverse) also the choice of beams and the cache reorder between
steps, which in fixed-shape mode copies the reordered slots back into the same buffers (decoding/cache.py), so
the graph (and a CUDA graph's recorded addresses) stays valid. On CPU the graph is compiled with inductor's
default mode (`compile="max-autotune"`: with frozen weights and its tuned GEMM templates); on CUDA with
`mode="reduce-overhead"` or `"max-autotune"` (CUDA graphs: the cache buffers are marked as static addresses,
and each step's outputs are copied out of the graph's memory pool before the next replay overwrites them).

Frozen weights (max-autotune on CPU) are copies the graph holds, guarded by each parameter's identity: every
model compiles its own graph, and under `fullgraph=True` dynamo fails hard past its recompile limit (8 per
code object), so after MAX_FROZEN_MODELS models, or when a model changed in place since its last compiled
call, every compiled graph is dropped first (`forget_stale_frozen_graphs`).

Grouped-query attention: for one query token transformers' SDPA path folds the query heads of each key/value head
into one (`pack_gqa`: (B, H, 1, D) -> (B, KV, H / KV, D)) so attention reads the cache as it is, but under dynamo it
repeats the keys and values to every query head instead (`repeat_kv`): a copy of the whole (B, H, L, D) buffer
per layer and step (SmolLM2, 9 query / 3 key-value heads: 18 MB a step per row, 2.3 GB at 16 beams x 8 prompts).
The step is a single query token, where the packed form holds under dynamo too, so it runs with that module's
`is_torchdynamo_compiling` answering False (`packed_gqa`, its one use there). SmolLM2 max-autotune decode,
bench/compiled_overheads.py: 1.07x / 1.12x (float32, batch 1 / 8), 1.22x / 1.50x (bfloat16).

Guards: before each call dynamo checks the graph's guards (every parameter, with frozen weights), about 1 ms
a step on this CPU (skipping them: 1.09x / 1.02x float32 batch 1 / 8, 1.11x / 1.03x bfloat16, same bench).
Within one generate call the step is called with the same model, cache buffers and shapes each time, so after
a call that ran with every guard checked, the next calls with the same buffers (`steady_key`: batch, cache
object and its buffers' addresses) run under `torch.compiler.set_stance(skip_guard_eval_unsafe=True)`, which
checks only the guards that tell the cached graphs apart. A new batch size, cache or buffer goes through the
full check first.

Numerics: compiled kernels (fused RMSNorm, a masked attention over the whole buffer instead of the filled slots)
do not promise the eager path's float bits. Greedy tokens are tested equal to the eager static path on the tiny
models and SmolLM2, and the logit difference is measured and bounded in the tests.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from typing import Any, Callable

import torch

from .cache import KVCache, SlotCache
from .param_checks import COMPILE_AUTOTUNE

BACKEND = "inductor"  # torch.compile backend; tests may set "eager" / "aot_eager" to check the logic without codegen
SUPPORTED_ATTENTION = ("sdpa", "eager")  # the implementations that take our prepared 4D mask
PACK_GQA = True  # `packed_gqa` below; bench/compiled_overheads.py turns these two off to measure them
SKIP_STEADY_GUARDS = True  # `steady_key` below

# compile="max-autotune" on CPU: `max_autotune` benchmarks inductor's C++ GEMM templates against oneDNN / MKL at
# compile time (2-3x the compile time; SmolLM2 batch-1 decode 2.2x faster in float32, 1.8x in bfloat16 on an
# AVX-512 CPU: the README's speed section, bench/decode_bandwidth.py), and those templates take only constant
# weights, hence `freezing`. Dynamo reads `freezing` from the global config while it traces (it then guards on
# each parameter), so that step runs inside `inductor_freezing()` as well. `cpp_wrapper`: the graph's wrapper,
# which calls its ~300 kernels a step, is C++ instead of Python (SmolLM2 bfloat16 batch 1: the compiled call
# 10.4 ms a step against 12.4, medians of 6 readings; more compile time).
# compile=True: no options.
CPU_AUTOTUNE_OPTIONS = {"freezing": True, "max_autotune": True, "cpp_wrapper": True}
MAX_FROZEN_MODELS = 3  # models with frozen graphs at once (each may add graphs for 2 shapes before the limit)

_compiled: dict[tuple[str, str | None, bool], Callable] = {}
# model -> its parameters' version counters when a frozen graph last ran it: a frozen graph holds copies of the
# weights, so a model changed in place since then must be compiled again
_frozen_versions: "weakref.WeakKeyDictionary[Any, tuple[int, ...]]" = weakref.WeakKeyDictionary()


def decode_step(model: Any, cache: SlotCache, input_ids: torch.Tensor, position_ids: torch.Tensor,
                write_index: torch.Tensor, slot_mask: torch.Tensor, additive_dtype: torch.dtype | None,
                extra: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row through the model, writing its keys/values at slot `write_index`.

    Args:
        input_ids: (B, 1) this step's tokens.
        position_ids: (B, 1) their logical positions.
        write_index: (1,) long, the cache position (slot) this step writes.
        slot_mask: (B, L) bool over all `L = max_cache_len` slots: False on left padding and past the buffer.
        additive_dtype: for eager attention, which adds the mask to its scores: the model dtype, and the mask
            becomes 0 / dtype-min floats instead of bools. None for SDPA (bool mask).

    Returns:
        (B, V) float32 logits of this step, their (B,) logsumexp and () whether any is NaN: the loop needs both
        (the chosen token's log-probability, the NaN check), and in the graph they are one fused pass over the
        logits while they are in cache; eagerly, after the step's weights went through the caches, the two cost
        about 0.3 ms a step on CPU in a line profile (bfloat16 SmolLM2 batch 1: 3% of the step).
    """
    slots = torch.arange(slot_mask.shape[1], device=slot_mask.device)
    visible = (slot_mask & (slots <= write_index))[:, None, None, :]  # (B, 1, 1, L)
    if additive_dtype is not None:
        visible = torch.zeros(visible.shape, dtype=additive_dtype, device=visible.device).masked_fill(
            ~visible, torch.finfo(additive_dtype).min)
    out = model(input_ids=input_ids, attention_mask=visible, position_ids=position_ids, cache=cache,
                use_cache=True, **extra)
    logits = out.logits[:, -1].float()  # (B, V)
    return logits, torch.logsumexp(logits, dim=-1), torch.isnan(logits).any()


@contextlib.contextmanager
def inductor_freezing():
    """inductor's global `freezing` on (see CPU_AUTOTUNE_OPTIONS); `config.patch` does the same at 3x the cost."""
    config = torch._inductor.config
    before = config.freezing
    config.freezing = True
    try:
        yield
    finally:
        config.freezing = before


def _not_compiling() -> bool:
    return False


@contextlib.contextmanager
def packed_gqa():
    """transformers' SDPA takes its single-query-token path (`pack_gqa`) under dynamo as well (see above).

    Active around every call of the compiled step, not only while it traces: dynamo guards the graph on the
    function object it read, so it must find the same one each time."""
    module = _sdpa_module() if PACK_GQA else None
    if module is None:
        yield
        return
    original = module.is_torchdynamo_compiling
    module.is_torchdynamo_compiling = _not_compiling
    try:
        yield
    finally:
        module.is_torchdynamo_compiling = original


def _sdpa_module():
    """transformers' SDPA integration, if it has the switch `packed_gqa` turns (None: another version)."""
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:  # pragma: no cover - a transformers without it
        return None
    has_switch = callable(getattr(sdpa_attention, "is_torchdynamo_compiling", None)) and hasattr(
        sdpa_attention, "pack_gqa")
    return sdpa_attention if has_switch else None


def compiled_decode_step(device_type: str, autotune: bool = False) -> Callable:
    """`decode_step` under torch.compile, one wrapper per (backend, mode, autotune) for the process.

    CUDA: `reduce-overhead` (CUDA graphs), or `max-autotune` (CUDA graphs and tuned kernels). Elsewhere inductor's
    default mode, with CPU_AUTOTUNE_OPTIONS for autotune; torch.compile takes a mode or options, not both."""
    inductor = BACKEND == "inductor"
    mode = ("max-autotune" if autotune else "reduce-overhead") if device_type == "cuda" and inductor else None
    options = CPU_AUTOTUNE_OPTIONS if autotune and inductor and mode is None else None
    key = (BACKEND, mode, autotune)
    if key not in _compiled:
        # dynamo keeps compiled graphs on the code object, so each setting gets a copy of decode_step's own
        # (else an autotuned wrapper would run the graph another setting compiled first)
        name = "decode_step_" + "_".join(str(part) for part in key).replace("-", "_")
        step = types.FunctionType(decode_step.__code__.replace(co_name=name, co_qualname=name), globals(), name)
        _compiled[key] = torch.compile(step, backend=BACKEND, mode=mode,
                                       options=dict(options) if options else None, fullgraph=True)
    return _compiled[key]


def freezes(device_type: str, autotune: bool) -> bool:
    """The compiled step freezes the weights: max-autotune with inductor off CUDA."""
    return autotune and BACKEND == "inductor" and device_type != "cuda"


_frozen_models_since_reset = 0


def forget_stale_frozen_graphs(model: Any) -> None:
    """Drop every compiled graph when `model`'s weights changed in place since a frozen graph last ran it, or
    when it would be the MAX_FROZEN_MODELS + 1-th model compiled with frozen weights since the last drop."""
    global _frozen_models_since_reset
    versions = tuple(param._version for param in model.parameters())
    seen = _frozen_versions.get(model)
    if (seen is not None and seen != versions) or (seen is None and _frozen_models_since_reset >= MAX_FROZEN_MODELS):
        torch._dynamo.reset()
        _frozen_versions.clear()
        _frozen_models_since_reset = 0
    if model not in _frozen_versions:
        _frozen_models_since_reset += 1
    _frozen_versions[model] = versions


class CompiledDecodeStep:
    """Runs the single-token forwards of one generate call through the compiled `decode_step`.

    Owns the step's input buffers, so every call hands the graph tensors of the same shapes and strides
    (a slice of the loop's (B, T + N) token buffer would carry T + N in its strides).
    """

    def __init__(self, model: Any, kv: KVCache, extra: dict[str, Any]):
        if not isinstance(kv.model_cache, SlotCache):
            raise ValueError(f"compile=True needs the static slot cache, got cache={kv.setting!r}")
        attention = getattr(model.config, "_attn_implementation", "eager")
        if attention not in SUPPORTED_ATTENTION:
            raise ValueError(f"compile=True is not supported with attn_implementation={attention!r}: "
                             f"use one of {SUPPORTED_ATTENTION}, or compile=False")
        self.model = model
        self.kv = kv
        self.extra = dict(extra)
        self.additive_dtype = model.dtype if attention == "eager" else None
        self.initialized = False
        self.cuda_graphs = model.device.type == "cuda" and BACKEND == "inductor"
        autotune = kv.compile == COMPILE_AUTOTUNE
        self.step = compiled_decode_step(model.device.type, autotune)
        self.freeze = freezes(model.device.type, autotune)
        if self.freeze:
            forget_stale_frozen_graphs(model)
        self.buffers: tuple[torch.Tensor, ...] | None = None
        self.checked_key: tuple | None = None  # steady_key of the last call that ran with every guard checked

    def ready(self) -> bool:
        """The cache buffers exist (the eager prefill allocated them)."""
        self.initialized = self.initialized or all(layer.is_initialized for layer in self.kv.model_cache.layers)
        return self.initialized

    def _buffers(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        if self.buffers is None or self.buffers[0].shape[0] != batch:
            write_index = torch.zeros(1, dtype=torch.long, device=device)
            slot_mask = torch.zeros((batch, self.kv.max_cache_len), dtype=torch.bool, device=device)
            input_ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
            position_ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
            self.buffers = (input_ids, position_ids, write_index, slot_mask)
            self.kv.model_cache.use_fixed_shapes(write_index)
        return self.buffers

    def steady_key(self, input_ids: torch.Tensor) -> tuple:
        """What the guards of a call with these buffers depend on that can change within one generate call."""
        cache = self.kv.model_cache
        return (id(cache), input_ids.data_ptr(), input_ids.shape[0],
                *(t.data_ptr() for layer in cache.layers for t in (layer.keys, layer.values)))

    def __call__(self, state: Any, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, V) float32 logits of the token in slot `start` (`state` is the loop's DecodeState), their (B,)
        logsumexp and () any-NaN flag."""
        input_ids, position_ids, write_index, slot_mask = self._buffers(state.tokens.shape[0], state.tokens.device)
        input_ids.copy_(state.tokens[:, start:start + 1])
        position_ids.copy_(state.position_ids[:, start:start + 1])
        write_index.fill_(start)
        slot_mask[:, : state.attention_mask.shape[1]].copy_(state.attention_mask)
        self.kv.before_forward(start)  # the int slot, for anything eager that asks the cache
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        key = self.steady_key(input_ids)
        steady = SKIP_STEADY_GUARDS and key == self.checked_key  # ran last with every guard checked, nothing changed
        with inductor_freezing() if self.freeze else contextlib.nullcontext(), packed_gqa(), \
                torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if steady \
                else contextlib.nullcontext():
            outputs = self.step(self.model, self.kv.model_cache, input_ids, position_ids, write_index, slot_mask,
                                self.additive_dtype, self.extra)
        self.checked_key = key
        self.kv.model_cache.note_written(start + 1)
        # a CUDA graph's outputs are overwritten by the next replay
        return tuple(t.clone() for t in outputs) if self.cuda_graphs else outputs
