"""The Kirchenbauer et al. 2023 watermark ("A Watermark for Large Language Models"), as generate applies it.

At every step a pseudo-random "green" part of the vocabulary (`int(vocab_size * greenlist_ratio)` tokens)
gets `bias` added to its scores, so that sampled text holds more green tokens than chance would give;
`decoding/watermark_detect.py` counts them and turns the count into a z-score. The greenlist of a row is a
permutation drawn from a generator seeded by the row's last tokens and `hashing_key`:

- "lefthash" (the paper's Algorithm 2): seed = hashing_key * last token, whatever `context_width` is (a
  width above 1 only makes generate skip steps with fewer tokens, and the detector skip more tokens).
- "selfhash" (Algorithm 3): each of the 40 highest-scoring candidates is tried as the next token; its
  seed is min over the window (last context_width - 1 tokens, candidate) of
  hashing_key * (table[t] + 1) * (table[candidate] + 1) in int64 (overflow wraps, as in transformers),
  where `table` is a fixed permutation of 1_000_003 drawn from hashing_key. A candidate in its own
  greenlist gets the bias; the others do not.

What must equal transformers (`WatermarkLogitsProcessor`, `WatermarkingConfig` in transformers 5.24):
- The permutations come from `torch.randperm` with a `torch.Generator` on the scores' device, seeded
  `seed % (2**64 - 1)`, as there: CPU and CUDA generators give different permutations, so a greenlist
  belongs to a device, and so does the detector's z (it takes the device the text was generated on).
- The bias is added where generate adds it: after every warper, before `renormalize_logits`
  (`order.py`), also when not sampling and in beam search, on float32 scores (`scores + bias`).
- A batch whose rows have fewer than `context_width` tokens is left unchanged (generate logs a warning).
- The vocabulary is the model config's `vocab_size` (`config.get_text_config().vocab_size`), not the
  logits' width; ids beyond it are never green.

What is faster here: generate draws a permutation of the vocabulary per row per step (41 per row with
selfhash). A greenlist depends only on its seed, so we keep the greenlists of recent seeds (a bounded
cache of boolean masks) and selfhash's answers per (seed, candidate); the same seeds give the same bits.
Where generate would fail, we do not: no candidate green under selfhash (generate indexes with an empty
float tensor and raises) leaves the row unchanged, and a vocabulary under 40 tokens tries every token.

Shapes: `input_ids` (B, T) with left padding, `scores` (B, V) float32.
"""

from __future__ import annotations

import difflib
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch

from ..checks import is_int as _is_int, is_real as _is_number
from .base import LogitsProcessor

TABLE_SIZE = 1_000_003  # the fixed permutation selfhash hashes tokens through (transformers' table_size)
SELFHASH_CANDIDATES = 40  # candidates selfhash tries per step (transformers, from the original repository)
SEEDING_SCHEMES = ("lefthash", "selfhash")
_SEED_MODULUS = 2**64 - 1
_MASK_CACHE_BYTES = 256 * 2**20  # boolean greenlist masks kept per table (one byte per vocabulary entry)


@dataclass(frozen=True)
class WatermarkSettings:
    """`transformers.WatermarkingConfig`'s fields and defaults, as a frozen value (comparable, hashable)."""

    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863
    seeding_scheme: str = "lefthash"
    context_width: int = 1


WATERMARK_FIELDS = tuple(f.name for f in fields(WatermarkSettings))


def _refuse(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"watermarking_config.{field}={value!r} is not allowed: {allowed}")


def as_watermark_settings(value: Any) -> WatermarkSettings | None:
    """The watermark a caller asked for: a `transformers.WatermarkingConfig`, a mapping of its fields (what a
    Hydra config gives; missing fields take WatermarkingConfig's defaults), a `WatermarkSettings`, or None.

    Field values are checked by `check_watermarking_config`; here only the container and its keys.
    """
    if value is None or isinstance(value, WatermarkSettings):
        return value
    from transformers.generation.configuration_utils import WatermarkingConfig

    if isinstance(value, WatermarkingConfig):
        value = value.to_dict()
    elif not isinstance(value, Mapping):
        raise ValueError(f"watermarking_config={value!r} is not allowed: use a transformers.WatermarkingConfig, a "
                         f"dict of its fields {list(WATERMARK_FIELDS)}, or None (SynthID's config is not supported)")
    unknown = sorted(str(k) for k in value if k not in WATERMARK_FIELDS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], WATERMARK_FIELDS, n=1)
        hint = f" (did you mean watermarking_config.{close[0]}?)" if close else ""
        raise ValueError(f"watermarking_config.{unknown[0]}={value[unknown[0]]!r} is not a watermark setting{hint}: "
                         f"the settings are {list(WATERMARK_FIELDS)}")
    return WatermarkSettings(**dict(value))


def check_watermarking_config(settings: WatermarkSettings | None) -> None:
    """Each field's type and range, before any forward pass (ValueError naming `watermarking_config.<field>`).

    Stricter than `WatermarkingConfig.validate`, which lets greenlist_ratio 0 and 1 through (the processor then
    refuses them) and checks neither bias nor hashing_key: a NaN bias would turn every green score into NaN,
    and selfhash multiplies hashing_key in int64.
    """
    if settings is None:
        return
    s = settings
    if not (_is_number(s.greenlist_ratio) and 0 < s.greenlist_ratio < 1):
        raise _refuse("greenlist_ratio", s.greenlist_ratio, "use a number in (0, 1), the green share of the vocabulary")
    if not (_is_number(s.bias) and math.isfinite(s.bias)):
        raise _refuse("bias", s.bias, "use a finite number (added to the green tokens' scores; 0 marks nothing)")
    if not (_is_int(s.hashing_key) and 0 <= s.hashing_key < 2**63):
        raise _refuse("hashing_key", s.hashing_key, "use an integer in [0, 2**63)")
    if s.seeding_scheme not in SEEDING_SCHEMES:
        raise _refuse("seeding_scheme", s.seeding_scheme, f"use one of {list(SEEDING_SCHEMES)}")
    if not (_is_int(s.context_width) and s.context_width >= 1):
        raise _refuse("context_width", s.context_width, "use an integer >= 1 (the tokens a seed is made from)")


def config_vocab_size(model: Any) -> int:
    """The vocabulary generate gives the watermark: `model.config.get_text_config().vocab_size`."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.vocab_size)


class Greenlists:
    """The greenlists of one (vocabulary, ratio, hashing key) on one device, by seed.

    Args:
        settings: the watermark.
        vocab_size: the model config's vocabulary size.
        device: where the permutations are drawn (the scores' device): it decides the permutation.
    """

    def __init__(self, settings: WatermarkSettings, vocab_size: int, device: torch.device | str):
        self.settings = settings
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * settings.greenlist_ratio)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self._table: torch.Tensor | None = None  # (TABLE_SIZE,) int64 on the CPU, drawn on `device`
        self._masks: OrderedDict[int, torch.Tensor] = OrderedDict()  # seed -> (vocab_size,) bool, CPU
        self._max_masks = max(16, _MASK_CACHE_BYTES // max(vocab_size, 1))
        self._members: dict[tuple[int, int], bool] = {}  # (seed, token) -> token is green under seed

    def left_seed(self, last_token: int) -> int:
        """lefthash: the seed of the greenlist that follows `last_token`."""
        return (self.settings.hashing_key * last_token) % _SEED_MODULUS

    def table(self) -> torch.Tensor:
        """selfhash's fixed permutation, drawn on the device from hashing_key, kept on the CPU for the hashes."""
        if self._table is None:
            self.generator.manual_seed(self.settings.hashing_key)
            self._table = torch.randperm(TABLE_SIZE, generator=self.generator, device=self.device).cpu()
        return self._table

    def self_seeds(self, windows: torch.Tensor) -> list:
        """selfhash: the seed of each window (..., context_width) of CPU token ids whose last token is the
        candidate; nested lists shaped like `windows` without its last dimension."""
        table = self.table()
        a = table[windows % TABLE_SIZE] + 1  # (..., W)
        b = table[windows[..., -1:] % TABLE_SIZE] + 1  # (..., 1)
        products = self.settings.hashing_key * a * b  # int64, wrapping on overflow as transformers' does
        seeds = products.min(dim=-1).values.tolist()

        def reduce(x):
            return [reduce(v) for v in x] if isinstance(x, list) else x % _SEED_MODULUS
        return reduce(seeds)

    def mask(self, seed: int) -> torch.Tensor:
        """(vocab_size,) bool on the CPU: the greenlist drawn from `seed`."""
        cached = self._masks.get(seed)
        if cached is not None:
            self._masks.move_to_end(seed)
            return cached
        self.generator.manual_seed(seed)
        permutation = torch.randperm(self.vocab_size, device=self.device, generator=self.generator)
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[permutation[: self.greenlist_size].cpu()] = True
        self._masks[seed] = mask
        if len(self._masks) > self._max_masks:
            self._masks.popitem(last=False)
        return mask

    def contains(self, seed: int, token: int) -> bool:
        """Whether `token` is in the greenlist drawn from `seed` (a token beyond the vocabulary never is)."""
        key = (seed, token)
        member = self._members.get(key)
        if member is None:
            member = 0 <= token < self.vocab_size and bool(self.mask(seed)[token])
            if len(self._members) > 1_000_000:
                self._members.clear()
            self._members[key] = member
        return member


class Watermark(LogitsProcessor):
    """Add `bias` to each row's green tokens (transformers' `WatermarkLogitsProcessor`).

    Args:
        settings: the watermark (checked).
        vocab_size: the model config's vocabulary size (`config_vocab_size`).
    """

    def __init__(self, settings: WatermarkSettings, vocab_size: int):
        self.settings = settings
        self.vocab_size = vocab_size
        self._greenlists: dict[torch.device, Greenlists] = {}

    def __repr__(self) -> str:  # compared across sweep configurations: the settings, not the caches
        return f"Watermark({self.settings!r}, vocab_size={self.vocab_size})"

    def greenlists(self, device: torch.device) -> Greenlists:
        if device not in self._greenlists:
            self._greenlists[device] = Greenlists(self.settings, self.vocab_size, device)
        return self._greenlists[device]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] < self.settings.context_width:
            return scores  # generate skips the whole batch (with a warning) until the rows are long enough
        greens = self.greenlists(scores.device)
        if self.settings.seeding_scheme == "lefthash":
            return self._lefthash(input_ids, scores, greens)
        return self._selfhash(input_ids, scores, greens)

    def _lefthash(self, input_ids: torch.Tensor, scores: torch.Tensor, greens: Greenlists) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        mask = torch.stack([greens.mask(greens.left_seed(t)) for t in last])  # (B, vocab_size)
        mask = _fit_width(mask, scores.shape[-1]).to(scores.device, non_blocking=True)
        return torch.where(mask, scores + self.settings.bias, scores)

    def _selfhash(self, input_ids: torch.Tensor, scores: torch.Tensor, greens: Greenlists) -> torch.Tensor:
        candidates = top_candidates(scores, min(SELFHASH_CANDIDATES, scores.shape[-1])).cpu()  # (B, K)
        width = self.settings.context_width
        context = input_ids[:, input_ids.shape[-1] - (width - 1):].cpu()  # (B, W - 1)
        windows = torch.cat([context[:, None, :].expand(-1, candidates.shape[1], -1), candidates[..., None]], -1)
        seeds = greens.self_seeds(windows)  # (B, K) nested lists
        rows, cols = [], []
        for b, (row_seeds, row_candidates) in enumerate(zip(seeds, candidates.tolist())):
            for seed, token in zip(row_seeds, row_candidates):
                if greens.contains(seed, token):
                    rows.append(b)
                    cols.append(token)
        if not rows:
            return scores
        out = scores.clone()
        index = (torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device))
        out[index] = out[index] + self.settings.bias
        return out


def _fit_width(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(B, vocab_size) -> (B, width): logits wider than the config's vocabulary have no green columns."""
    if mask.shape[1] == width:
        return mask
    if mask.shape[1] > width:
        return mask[:, :width]
    return torch.cat([mask, mask.new_zeros((mask.shape[0], width - mask.shape[1]))], dim=1)


def top_candidates(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) the first k tokens of each row's `scores[b].sort(descending=True)`, as a set per row.

    transformers sorts every row on its own; a batched top-k picks the same set unless a finite score ties
    across the k-th place (or a row has NaN), and only then is that row sorted as transformers sorts it.
    Tied -inf candidates are interchangeable: -inf plus the bias stays -inf.
    """
    if k >= scores.shape[-1]:
        return torch.stack([row.sort(descending=True)[1] for row in scores])
    values, indices = torch.topk(scores, k + 1, dim=-1)  # (B, k + 1), descending
    boundary_tie = (values[:, k - 1] == values[:, k]) & torch.isfinite(values[:, k])
    unsure = (boundary_tie | torch.isnan(scores).any(dim=-1)).nonzero().flatten().tolist()
    indices = indices[:, :k].clone()
    for b in unsure:
        indices[b] = scores[b].sort(descending=True)[1][:k]
    return indices


def build_watermark(settings: WatermarkSettings | None, model: Any) -> Watermark | None:
    """The watermark processor of resolved parameters (None: no watermark)."""
    if settings is None:
        return None
    if model is None:
        raise ValueError("watermarking_config needs the model (its config's vocab_size): pass model to "
                         "build_processors")
    return Watermark(settings, config_vocab_size(model))


def settings_dict(settings: WatermarkSettings) -> dict[str, Any]:
    """The settings as a plain dict of WatermarkingConfig's fields (for `WatermarkingConfig(**...)`)."""
    return asdict(settings)
