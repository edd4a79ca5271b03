"""KV cache settings behind one interface; the only module that knows transformers' Cache API.

Three settings:
- `none`: no cache. Every step runs the whole sequence again: the plain forward loop that a cache replaces.
- `dynamic`: transformers' `DynamicCache`, which grows by concatenation at each step.
- `static`: our `SlotCache`, preallocated to `max_cache_len` slots. The loop tells it the *cache position*
  (the physical slot index where this step's keys and values go) before each forward; it writes there in
  place and hands attention the filled slots `[0, cache_position + q)`. It never counts on its own, so the
  loop owns the slot index, and writing past the end is a clear error, not a silent wrap.

Why attention over the filled slots only: the buffer never moves (no reallocation, no copy per step), yet
each step costs what the dynamic cache costs, not a full `max_cache_len` attention.

transformers 5.x no longer passes `cache_position` to `forward`; the model asks its cache
`get_seq_length()` (the query offset) and `get_mask_sizes()` to build the causal + padding mask, so
`SlotCache` answers both from the slot index the loop set.

The compiled decode step (`compile=True`, decoding/compiled.py) needs the opposite trade: shapes that never
change. There the slot cache runs in *fixed-shape* mode: the write slot is a tensor (`write_index`, written with
`index_copy_`), attention sees the whole `max_cache_len` buffer, and the step's own 4D mask hides the slots not
yet written. A Python int that changed every step would be baked into the graph and recompile it each step.
The prefill stays eager, in the filled-slots mode. The compiled path rounds `max_cache_len` up to a multiple of
`COMPILED_CACHE_BUCKET` so batches with different prompt lengths share one compiled graph.

Beam search reorders the rows after every step (`reorder`). The slot cache copies the filled slots into a spare
buffer pair, which then becomes the live one: one copy, no allocation after the first. In fixed-shape mode the
live buffers must keep their addresses (CUDA graphs replay reads and writes them by address, and the compiled
graph was handed them as static inputs), so the reordered slots are copied back into them: a second copy, the
same code on every device. When the permutation is the identity nothing is copied, in any setting (the dynamic
cache too, whose `reorder_cache` would copy every layer). Knowing that it is the identity takes a look at the
indices on the host: on the CPU that look is free; for device tensors `reorder` does not look (a device sync per
step) unless the caller passes what it already read on the host (beam search reads it in the same transfer as
its stopping flags, `beam.keep_going`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache

COMPILED_CACHE_BUCKET = 64  # the compiled path's max_cache_len is a multiple of this (one graph for many prompts)


class SlotLayer(CacheLayerMixin):
    """One layer's preallocated keys/values, (B, H, max_cache_len, D), written at the loop's cache position."""

    is_sliding = False
    is_compileable = False  # keeps transformers' SDPA `is_causal` fast path (we attend over filled slots only)

    def __init__(self, max_cache_len: int):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.cache_position = 0
        self.filled = 0  # slots [0, filled) were written
        self.write_index: torch.Tensor | None = None  # fixed-shape mode (compiled step): (q,) slots to write
        self.spare: tuple[torch.Tensor, torch.Tensor] | None = None  # second buffer pair for `reorder`

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, k_dim = key_states.shape
        self.device = key_states.device
        self.keys = key_states.new_zeros((batch, heads, self.max_cache_len, k_dim))
        self.values = value_states.new_zeros((batch, heads, self.max_cache_len, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.write_index is not None:  # fixed shapes: write at tensor slots, attend the whole buffer (masked)
            self.keys.index_copy_(2, self.write_index, key_states)
            self.values.index_copy_(2, self.write_index, value_states)
            return self.keys, self.values
        start, q = self.cache_position, key_states.shape[-2]
        end = start + q
        if end > self.max_cache_len:
            raise ValueError(f"static cache overflow: writing slots [{start}, {end}) but max_cache_len="
                             f"{self.max_cache_len}; raise max_cache_len")
        self.keys[:, :, start:end] = key_states
        self.values[:, :, start:end] = value_states
        self.filled = max(self.filled, end)
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.write_index is not None:
            return self.max_cache_len, 0  # fixed shapes: the whole buffer
        return self.cache_position + query_length, 0  # (kv_length, kv_offset)

    def get_seq_length(self) -> int:
        return self.cache_position

    def get_max_length(self) -> int:
        return self.max_cache_len

    def grow(self, max_cache_len: int) -> None:
        """Reallocate to `max_cache_len` slots, keeping the filled ones (speculative decoding's holes need room)."""
        if self.is_initialized and max_cache_len > self.max_cache_len:
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = old.new_zeros((*old.shape[:2], max_cache_len, old.shape[-1]))
                new[:, :, :self.filled] = old[:, :, :self.filled]
                setattr(self, name, new)
            self.spare = None
        self.max_cache_len = max(self.max_cache_len, max_cache_len)

    def select_rows(self, rows: torch.LongTensor) -> None:
        """Keep (and reorder / repeat) batch rows: the new batch is `rows` of the old one."""
        if self.is_initialized:
            self.keys = self.keys.index_select(0, rows.to(self.keys.device))
            self.values = self.values.index_select(0, rows.to(self.values.device))
            self.spare = None

    def append_rows(self, other: "SlotLayer") -> None:
        """Add `other`'s rows after this layer's (rows joining a batch in flight; same slot layout and length)."""
        if not other.is_initialized:
            return
        if not self.is_initialized:
            self.keys, self.values, self.device, self.is_initialized = other.keys, other.values, other.device, True
        else:
            self.keys = torch.cat([self.keys, other.keys], dim=0)
            self.values = torch.cat([self.values, other.values], dim=0)
        self.filled = max(self.filled, other.filled)
        self.spare = None

    def reorder(self, rows: torch.LongTensor, identity: bool | None = None) -> None:
        """Beam search: same batch size, row i continues old row rows[i]. Copies only the filled slots, into a
        spare buffer pair that then becomes the live one (one copy per step, no allocation after the first); in
        fixed-shape mode copied back into the live pair, whose addresses the compiled step holds. Nothing is
        copied for the identity (`identity`: known on the host; None: `is_identity` decides)."""
        if not self.is_initialized or self.filled == 0:
            return
        if rows.shape[0] != self.keys.shape[0]:
            self.select_rows(rows)
            return
        if identity if identity is not None else is_identity(rows):
            return
        if self.spare is None:  # slots past `filled` are never read here (use_fixed_shapes zeroes them there)
            self.spare = (torch.empty_like(self.keys), torch.empty_like(self.values))
        rows = rows.to(self.keys.device)
        end = self.filled
        keys, values = self.spare
        torch.index_select(self.keys[:, :, :end], 0, rows, out=keys[:, :, :end])
        torch.index_select(self.values[:, :, :end], 0, rows, out=values[:, :, :end])
        if self.write_index is not None:  # fixed shapes: keep the live addresses (and the spare a scratch pair)
            self.keys[:, :, :end].copy_(keys[:, :, :end])
            self.values[:, :, :end].copy_(values[:, :, :end])
            return
        self.spare = (self.keys, self.values)
        self.keys, self.values = keys, values


def is_identity(rows: torch.Tensor) -> bool:
    """rows == arange(len(rows)), where telling costs no device sync (CPU indices); False (copy) elsewhere."""
    if rows.device.type != "cpu":
        return False
    return torch.equal(rows, torch.arange(rows.shape[0], dtype=rows.dtype))


class SlotCache(Cache):
    """Static cache whose write slot is set by the decoding loop (`set_cache_position`)."""

    def __init__(self, num_layers: int, max_cache_len: int):
        super().__init__(layers=[SlotLayer(max_cache_len) for _ in range(num_layers)])
        self.max_cache_len = max_cache_len

    def set_cache_position(self, position: int) -> None:
        for layer in self.layers:
            layer.cache_position = position

    def use_fixed_shapes(self, write_index: torch.Tensor | None) -> None:
        """Fixed-shape mode for the compiled step (`write_index`: (q,) long slots), or back to filled-slots (None).

        On CUDA, marks the buffers as static addresses so CUDA graphs write them in place instead of copying
        them (not on CPU: there inductor freezes the weights, and would fold static-address inputs as constants
        too, dropping the cache's writes). Zeroes the slots not written yet: the fixed-shape step attends them,
        masked, and a masked NaN (left by an uninitialised spare buffer swapped in by a reorder) would still
        poison the output (NaN * 0 is NaN).
        """
        for layer in self.layers:
            layer.write_index = write_index
            if write_index is not None and layer.is_initialized:
                layer.keys[:, :, layer.filled:].zero_()
                layer.values[:, :, layer.filled:].zero_()
                if layer.keys.device.type == "cuda":
                    torch._dynamo.mark_static_address(layer.keys)
                    torch._dynamo.mark_static_address(layer.values)

    def note_written(self, end: int) -> None:
        """The compiled step wrote slots below `end` (kept outside the graph: a Python int would recompile it)."""
        for layer in self.layers:
            layer.filled = max(layer.filled, end)


class KVCache:
    """What the loop sees: a model-facing cache object (or None) and the operations a decoding loop needs."""

    def __init__(self, setting: str, model: Any, max_cache_len: int, compile: bool | str = False):
        if compile and setting != "static":
            raise ValueError(f"compile={compile!r} needs cache='static' (fixed shapes), not cache={setting!r}")
        if compile:
            max_cache_len = math.ceil(max_cache_len / COMPILED_CACHE_BUCKET) * COMPILED_CACHE_BUCKET
        self.setting = setting
        self.compile = compile  # True / "max-autotune": Forward runs single-token steps through decoding.compiled
        self.max_cache_len = max_cache_len
        config = model.config.get_text_config(decoder=True)
        if setting == "none":
            self.model_cache = None
        elif setting == "dynamic":
            self.model_cache = DynamicCache(config=config)
        elif setting == "static":
            self.model_cache = SlotCache(config.num_hidden_layers, max_cache_len)
        else:
            raise ValueError(f"cache={setting!r} is not known: use one of ('none', 'dynamic', 'static')")

    @property
    def enabled(self) -> bool:
        return self.model_cache is not None

    def before_forward(self, cache_position: int) -> None:
        """Tell the cache which slot this forward writes first (only the static cache needs it)."""
        if isinstance(self.model_cache, SlotCache):
            self.model_cache.set_cache_position(cache_position)

    def filled(self) -> int:
        return 0 if self.model_cache is None else int(self.model_cache.get_seq_length())

    def slots_held(self) -> int:
        """Slots [0, n) whose keys/values the cache holds (the slot cache's write slot may lie below them)."""
        if isinstance(self.model_cache, SlotCache):
            return self.model_cache.layers[0].filled
        return self.filled()

    def crop(self, end: int) -> None:
        """Forget every slot from `end` on (speculative decoding's rejected proposals): the dynamic cache drops
        them; the slot cache keeps the buffer and writes there next (attention only sees slots below the write)."""
        if self.model_cache is None:
            return
        if isinstance(self.model_cache, SlotCache):
            for layer in self.model_cache.layers:
                layer.filled = min(layer.filled, end)
                layer.cache_position = min(layer.cache_position, end)
        elif self.filled() > end:
            self.model_cache.crop(end - self.filled())  # transformers 5 takes minus the slots to drop

    def ensure_capacity(self, slots: int) -> None:
        """The static cache grows (doubling) when a forward would write past its end; the others need nothing."""
        if isinstance(self.model_cache, SlotCache) and slots > self.model_cache.max_cache_len:
            size = max(slots, 2 * self.model_cache.max_cache_len)
            for layer in self.model_cache.layers:
                layer.grow(size)
            self.model_cache.max_cache_len = size
            self.max_cache_len = size

    def select_rows(self, rows: torch.LongTensor) -> None:
        """Reorder / repeat / drop batch rows (beam search reordering, shared prefixes)."""
        if self.model_cache is None:
            return
        if isinstance(self.model_cache, SlotCache):
            for layer in self.model_cache.layers:
                layer.select_rows(rows)
        else:
            # Layer by layer with `rows` on that layer's device: in a model split over GPUs (device_map) each layer's
            # keys live on its own GPU, and indexing a cuda:1 tensor with cuda:0 indices is an error.
            for layer in self.model_cache.layers:
                keys = getattr(layer, "keys", None)
                layer.batch_select_indices(rows if keys is None else rows.to(keys.device))

    def append_rows(self, other: "KVCache") -> None:
        """Rows joining a batch in flight: `other` (the same setting and capacity) holds their slots below the
        same filled length as this cache; afterwards this cache holds this batch's rows, then other's."""
        if self.model_cache is None:
            return
        if other.slots_held() != self.slots_held():
            raise ValueError(f"rows joining a batch must hold the same slots: {other.slots_held()} != "
                             f"{self.slots_held()}")
        if isinstance(self.model_cache, SlotCache):
            size = max(self.max_cache_len, other.max_cache_len)  # equal buffers, to concatenate rows
            for cache in (self, other):
                for layer in cache.model_cache.layers:
                    layer.grow(size)
                cache.model_cache.max_cache_len = cache.max_cache_len = size
            for mine, theirs in zip(self.model_cache.layers, other.model_cache.layers):
                mine.append_rows(theirs)
        else:
            for mine, theirs in zip(self.model_cache.layers, other.model_cache.layers):
                mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
                mine.values = torch.cat([mine.values, theirs.values], dim=0)

    def gather_slots(self, index: torch.LongTensor) -> None:
        """Row b keeps its slots `index[b]` (B, S'), in that order, as slots [0, S') (speculative compaction)."""
        if self.model_cache is None:
            return
        keep = index.shape[1]
        for layer in self.model_cache.layers:
            if not layer.is_initialized:
                continue
            for name in ("keys", "values"):
                old = getattr(layer, name)  # (B, H, S, D)
                rows = index.to(old.device)[:, None, :, None].expand(old.shape[0], old.shape[1], keep, old.shape[3])
                picked = old.gather(2, rows)
                if isinstance(layer, SlotLayer):
                    old[:, :, :keep] = picked
                else:
                    setattr(layer, name, picked)
            if isinstance(layer, SlotLayer):
                layer.filled = layer.cache_position = keep
                layer.spare = None

    def reorder(self, beam_idx: torch.LongTensor, identity: bool | None = None) -> None:
        """Beam search: row i of the new batch continues row beam_idx[i] of the old one (same batch size).

        The dynamic cache uses transformers' own `reorder_cache` (index_select, as generate does); the slot
        cache copies only its filled slots, into a spare buffer (`SlotLayer.reorder`). Neither copies when the
        permutation is the identity: `identity` says so from what the caller read on the host; None: decided here
        for CPU indices (free), and taken as False for device indices (no sync per step).
        """
        if self.model_cache is None:
            return
        if identity is None:
            identity = is_identity(beam_idx)
        if identity and beam_idx.shape[0] == self.batch_rows():
            return
        if isinstance(self.model_cache, SlotCache):
            for layer in self.model_cache.layers:
                layer.reorder(beam_idx, identity=False)
        else:
            self.model_cache.reorder_cache(beam_idx)

    def batch_rows(self) -> int | None:
        """Rows the cache holds (None before the first forward)."""
        for layer in self.model_cache.layers if self.model_cache is not None else ():
            keys = getattr(layer, "keys", None)
            if isinstance(keys, torch.Tensor) and keys.dim() == 4:
                return keys.shape[0]
        return None
