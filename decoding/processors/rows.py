"""Per-row logits processors: one batch whose rows use different sampling parameters.

A batched sweep puts several decoding configurations in one batch (rows [c * n, (c + 1) * n) belong to
configuration c). Each processor here holds its parameter as a (R, 1) tensor, one value per row, and
gives each row bit for bit what the scalar processor of the package gives it alone: same operations
in the same dtype (float32 scalars and float32 (R, 1) tensors round identically), and every reduction
(softmax, sort, cumsum, top-k) runs along the row.

A row whose configuration does not use a processor gets a neutral value that changes nothing exactly
(temperature 1, no top-k threshold, a top-p threshold below every cumulative mass, min-p 0), or, for
processors without such a value (top-h, guidance: its log-softmax changes the scores), is left out by a
row mask. Typical, epsilon and eta sampling and the watermark run each configuration's own processor on its
own block of rows (`EachOnItsRows`): one call per configuration that uses them, exact by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from .base import NEG_INF, LogitsProcessor, ProcessorList
from .guidance import row_guidance
from .order import processor_factories
from .temperature import Temperature
from .truncation import MinP, TopH, TopK, TopP, drop_below_min_p, drop_beyond_entropy_share, drop_low_mass

if TYPE_CHECKING:  # params.py imports the package for the order: no runtime import back
    from ..params import GenerationParams

# Parameters that may differ between the configurations of one batched sweep.
ROW_PARAMETERS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "top_h", "guidance_scale",
                  "watermarking_config",
                  # llama.cpp's and vLLM's samplers: their classes build their own per-row versions (`for_rows`)
                  "top_n_sigma", "xtc_probability", "xtc_threshold", "dry_multiplier", "dry_base",
                  "dry_allowed_length", "dry_penalty_last_n", "mirostat", "mirostat_tau", "mirostat_eta",
                  "dynatemp_range", "dynatemp_exponent", "presence_penalty", "frequency_penalty",
                  # truncations without a per-row formula here: each configuration's own on its own rows
                  "typical_p", "epsilon_cutoff", "eta_cutoff")
# Of those, the ones whose configurations each run their own processor on their own block of rows (`EachOnItsRows`).
OWN_ROWS_PARAMETERS = ("typical_p", "epsilon_cutoff", "eta_cutoff", "watermarking_config")


class RowTemperature(LogitsProcessor):
    def __init__(self, temperature: torch.Tensor):
        self.temperature = temperature  # (R, 1) float32; 1.0 where unused

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class RowTopK(LogitsProcessor):
    def __init__(self, top_k: torch.Tensor):
        self.top_k = top_k  # (R,) long; 0 where unused

    def __call__(self, input_ids, scores):
        k = self.top_k.clamp(max=scores.shape[-1])
        values = torch.topk(scores, int(k.max()))[0]  # (R, k_max), descending
        kth = values.gather(1, (k - 1).clamp(min=0)[:, None])  # (R, 1): each row's own k-th value
        kth = kth.masked_fill(k[:, None] == 0, NEG_INF)  # unused rows: nothing is below -inf
        return scores.masked_fill(scores < kth, NEG_INF)


class RowTopP(LogitsProcessor):
    def __init__(self, drop_mass: torch.Tensor, min_tokens_to_keep: int):
        self.drop_mass = drop_mass  # (R, 1) float32: 1 - top_p; -1 where unused (no mass is <= -1)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return drop_low_mass(scores, self.drop_mass, self.min_tokens_to_keep)


class RowMinP(LogitsProcessor):
    def __init__(self, min_p: torch.Tensor, min_tokens_to_keep: int):
        self.min_p = min_p  # (R, 1) float32; 0 where unused
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return drop_below_min_p(scores, self.min_p, self.min_tokens_to_keep)


class RowTopH(LogitsProcessor):
    def __init__(self, top_h: torch.Tensor, rows: torch.Tensor):
        self.top_h = top_h  # (R, 1) float32; 1.0 where unused
        self.rows = rows  # (R,) bool: top-h has no neutral value (it always caps at 100 candidates)

    def __call__(self, input_ids, scores):
        return torch.where(self.rows[:, None], drop_beyond_entropy_share(scores, self.top_h), scores)


class OnRows(LogitsProcessor):
    """Apply `processor` to the rows where `rows` (R,) is True; leave the others as they are."""

    def __init__(self, processor: LogitsProcessor, rows: torch.Tensor):
        self.processor = processor
        self.rows = rows

    def __call__(self, input_ids, scores):
        return torch.where(self.rows[:, None], self.processor(input_ids, scores), scores)


class EachOnItsRows(LogitsProcessor):
    """Configuration c's own processor on its block of rows [c * n, (c + 1) * n); rows of configurations
    without one unchanged.

    Why blocks, not a per-row formula: the block is the batch the configuration has alone (same rows, same
    shape), so each row gets its lone run's scores bit for bit whatever the processor computes (a watermark's
    greenlists, typical sampling's entropy); the cost is one call per configuration that uses it, on its rows.

    Args:
        per_config: one processor or None per configuration.
        rows_per_config: n, adjacent rows per configuration.
    """

    def __init__(self, per_config: Sequence[LogitsProcessor | None], rows_per_config: int):
        self.per_config = list(per_config)
        self.rows_per_config = rows_per_config

    def __repr__(self) -> str:
        return f"EachOnItsRows({self.per_config!r}, rows_per_config={self.rows_per_config})"

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = self.rows_per_config
        parts = []
        for c, processor in enumerate(self.per_config):
            rows = slice(c * n, (c + 1) * n)
            parts.append(scores[rows] if processor is None else processor(input_ids[rows], scores[rows]))
        return torch.cat(parts, dim=0)  # (C * n, V)


RowWatermark = EachOnItsRows  # the name a batched watermark had before the block logic was shared


def _per_row(values: Sequence, rows_per_config: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(C,) values, one per configuration -> (C * rows_per_config,) one per row."""
    return torch.tensor(values, dtype=dtype, device=device).repeat_interleave(rows_per_config)


def _row_version(name: str, built: list[LogitsProcessor | None], rows_per_config: int, device,
                 prompt_rows: torch.Tensor | None = None) -> LogitsProcessor | None:
    """The per-row processor for a parameter that differs between configurations (None: not one of those)."""
    def col(values, dtype=torch.float32):
        return _per_row(values, rows_per_config, dtype, device)[:, None]

    used = [p for p in built if p is not None]
    # A class that knows its per-row version (the llama.cpp / vLLM samplers): configuration c's parameters on
    # its rows, rows of configurations without it unchanged. Dynamic temperature also takes plain Temperature.
    row_class = next((type(p) for p in used if hasattr(type(p), "for_rows")), None)
    if row_class is not None:
        return row_class.for_rows(built, rows_per_config, device)
    if name == "temperature":
        return RowTemperature(col([p.temperature if isinstance(p, Temperature) else 1.0 for p in built]))
    if name == "top_k":
        k = [p.top_k if isinstance(p, TopK) else 0 for p in built]
        return RowTopK(_per_row(k, rows_per_config, torch.long, device))
    if name == "top_p":
        mass = [1 - p.top_p if isinstance(p, TopP) else -1.0 for p in built]  # 1 - p in float64, as TopP
        return RowTopP(col(mass), used[0].min_tokens_to_keep)
    if name == "min_p":
        return RowMinP(col([p.min_p if isinstance(p, MinP) else 0.0 for p in built]), used[0].min_tokens_to_keep)
    if name == "top_h":
        rows = _per_row([isinstance(p, TopH) for p in built], rows_per_config, torch.bool, device)
        return RowTopH(col([p.top_h if isinstance(p, TopH) else 1.0 for p in built]), rows)
    if name in OWN_ROWS_PARAMETERS:
        return EachOnItsRows(built, rows_per_config)
    if name == "guidance_scale":  # unconditional rows for the guided rows only
        return row_guidance(built, rows_per_config, prompt_rows, device)
    return None


def build_row_processors(params: Sequence[GenerationParams], rows_per_config: int, prompt_length: int,
                         prompt_start: torch.Tensor | None, device, model=None,
                         prompt_rows: torch.Tensor | None = None) -> ProcessorList:
    """Processors for a batch of `len(params)` configurations, `rows_per_config` adjacent rows each.

    Each configuration's own processors are built as `build_processors` would build them (so invalid
    values fail the same way); where they differ, the per-row version takes their place.

    Args:
        prompt_start: (R,) left-padding slots of every row (already expanded), or None.
        model, prompt_rows: for guidance, the model and (R,) the prompt of every row (`build_processors`).
    """
    if any(p.prefix_allowed_tokens_fn is not None for p in params):
        # Its batch ids would count the configurations' copies of the prompts too.
        raise ValueError(f"prefix_allowed_tokens_fn={params[0].prefix_allowed_tokens_fn!r} is not allowed in a "
                         "batched sweep: call generate once per configuration instead")
    order = params[0].processor_order
    keep = 1  # min_tokens_to_keep: beam search is not batched here
    per_config = [processor_factories(p, prompt_length, prompt_start, keep, model, prompt_rows) for p in params]
    out = ProcessorList()
    for name in order:
        built = [factories[name]() for factories in per_config]
        used = [p for p in built if p is not None]
        if not used:
            continue
        if all(repr(p) == repr(built[0]) for p in built):  # the same processor on every row
            out.append(built[0])
        elif name in ROW_PARAMETERS or any(hasattr(type(p), "for_rows") for p in used):
            out.append(_row_version(name, built, rows_per_config, device, prompt_rows))
        else:  # the same processor, used by some configurations only (a sampling warper beside greedy rows)
            if any(repr(p) != repr(used[0]) for p in used):
                raise ValueError(f"{name} differs between the configurations ({[repr(p) for p in used]}): only "
                                 f"{', '.join(ROW_PARAMETERS)} may differ within one batched sweep")
            rows = _per_row([p is not None for p in built], rows_per_config, torch.bool, device)
            out.append(OnRows(used[0], rows))
    return out
