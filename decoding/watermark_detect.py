"""Detecting the Kirchenbauer et al. 2023 watermark: count green tokens, turn the count into a z-score.

Under the null hypothesis (text written without the watermark) each scored token is green with probability
gamma = greenlist_ratio, independently, so the green count |s|_G of T scored tokens has mean gamma T and
variance T gamma (1 - gamma); the paper's test statistic is

    z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma))

and text is called watermarked above a threshold (the paper uses z > 4: one false positive in about 30,000
human texts; transformers' `WatermarkDetector` defaults to 3). The p-value is the normal tail 0.5 erfc(z / sqrt 2).

What equals transformers' `WatermarkDetector` (5.24) for the same token ids, settings and device:
- A leading BOS token (`bos_token_id`) is dropped first (rows must agree on it, as there).
- The first `context_width` tokens only seed: lefthash scores each (context_width + 1)-gram's last token
  against the greenlist its second-to-last token seeds; selfhash scores each context_width-gram's last
  token against the greenlist the whole n-gram seeds. So T = length - context_width (lefthash) or
  length - context_width + 1 (selfhash); fewer than context_width + 1 tokens is a ValueError, as there.
- `ignore_repeated_ngrams=True` scores each distinct n-gram once (T = distinct n-grams).
- The greenlists are drawn on `device` with the generator the processor uses
  (`decoding/processors/watermark.py`): pass the device the text was generated on.
- z is computed in float64 with the same operations, so it is the same number, not a close one.

Beyond transformers: sequences of different lengths may be scored together (a list of id lists: each is
scored alone, as a one-row batch would be), and the counts come back per sequence.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .processors.watermark import Greenlists, as_watermark_settings, check_watermarking_config

DEFAULT_Z_THRESHOLD = 4.0  # Kirchenbauer et al. 2023, section 5: z > 4


@dataclass(frozen=True)
class WatermarkScore:
    """The detector's numbers for one sequence."""

    num_tokens_scored: int
    num_green_tokens: int
    green_fraction: float
    z_score: float
    p_value: float

    def detected(self, z_threshold: float = DEFAULT_Z_THRESHOLD) -> bool:
        return self.z_score > z_threshold


def z_score(green: float, scored: float, greenlist_ratio: float) -> float:
    """The paper's one-proportion z-test (float64, the operations `WatermarkDetector._compute_z_score` uses)."""
    return (green - greenlist_ratio * scored) / math.sqrt(scored * greenlist_ratio * (1 - greenlist_ratio))


def p_value(z: float) -> float:
    """One-sided normal tail of z, through torch's float64 erfc (as WatermarkDetector computes it)."""
    return float(0.5 * torch.special.erfc(torch.tensor(z / math.sqrt(2), dtype=torch.float64)))


def min_length(settings: Any) -> int:
    """Tokens a sequence needs (after a dropped BOS) before it can be scored: context_width + 1."""
    return as_watermark_settings(settings).context_width + 1


class WatermarkDetector:
    """Scores token ids against one watermark.

    Args:
        watermarking_config: a `transformers.WatermarkingConfig`, a dict of its fields or `WatermarkSettings`.
        vocab_size: the model config's vocabulary size (what the processor drew greenlists from).
        bos_token_id: a leading token to drop before scoring (the model config's bos_token_id), or None.
        ignore_repeated_ngrams: score each distinct n-gram once.
        device: where the greenlists are drawn: the device the text was generated on.
    """

    def __init__(self, watermarking_config: Any, vocab_size: int, *, bos_token_id: int | None = None,
                 ignore_repeated_ngrams: bool = False, device: torch.device | str = "cpu"):
        self.settings = as_watermark_settings(watermarking_config)
        check_watermarking_config(self.settings)
        if self.settings is None:
            raise ValueError("watermarking_config=None is not allowed: give the watermark to detect")
        self.bos_token_id = bos_token_id
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.greenlists = Greenlists(self.settings, vocab_size, device)

    def _ngrams(self, ids: list[int]) -> Counter:
        selfhash = self.settings.seeding_scheme == "selfhash"
        n = self.settings.context_width + (0 if selfhash else 1)
        return Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))

    def _is_green(self, ngram: tuple[int, ...]) -> bool:
        g = self.greenlists
        if self.settings.seeding_scheme == "selfhash":
            seed = g.self_seeds(torch.tensor(ngram, dtype=torch.long))
        else:
            seed = g.left_seed(ngram[-2])  # the prefix's last token seeds; the rest of the prefix only waits
        return g.contains(seed, ngram[-1])

    def score_ids(self, ids: Sequence[int]) -> WatermarkScore:
        """The detector's numbers for one sequence of token ids (a list or a 1-D tensor)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(t) for t in ids]
        if ids and self.bos_token_id is not None and ids[0] == self.bos_token_id:
            ids = ids[1:]
        width = self.settings.context_width
        if len(ids) - width < 1:
            raise ValueError(f"token ids of length {len(ids)} are too short to score: the watermark needs at least "
                             f"1 token after the first context_width={width}")
        counts = self._ngrams(ids)
        green_by_ngram = {ngram: self._is_green(ngram) for ngram in counts}
        if self.ignore_repeated_ngrams:
            scored, green = len(counts), sum(green_by_ngram.values())
        else:
            scored = sum(counts.values())
            green = sum(freq for ngram, freq in counts.items() if green_by_ngram[ngram])
        z = z_score(float(green), float(scored), self.settings.greenlist_ratio)
        return WatermarkScore(scored, green, green / scored, z, p_value(z))

    def __call__(self, token_ids: torch.Tensor | Sequence[Sequence[int]]) -> list[WatermarkScore]:
        """Score a (B, T) tensor (transformers' input: a leading BOS column dropped if every row has it) or a
        list of id sequences of any lengths (each scored on its own)."""
        if isinstance(token_ids, torch.Tensor):
            if token_ids.dim() != 2:
                raise ValueError(f"token_ids of shape {tuple(token_ids.shape)} are not allowed: use a (B, T) tensor "
                                 "or a list of id sequences")
            if self.bos_token_id is not None and token_ids.shape[1]:
                has_bos = token_ids[:, 0] == self.bos_token_id
                if bool(has_bos.any()) != bool(has_bos.all()):
                    raise ValueError("token_ids: some rows start with bos_token_id and others do not; tokenize "
                                     "every row the same way")
            token_ids = token_ids.tolist()
        return [self.score_ids(ids) for ids in token_ids]
