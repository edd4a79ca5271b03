"""Watermark detection over a run's generations (Kirchenbauer et al. 2023): `gen/watermark_*` in metrics.json.

When the run's decoding has a `watermarking_config`, every generated continuation is scored by
`decoding.watermark_detect.WatermarkDetector` (transformers' `WatermarkDetector`, the same z) with that
watermark, the model config's vocabulary and the model's device (greenlists are drawn per device). The
human continuations of the same prompts are scored with the same detector as the control: text written
without the watermark, whose z should be N(0, 1).

| key                        | meaning                                                                    |
|----------------------------|----------------------------------------------------------------------------|
| watermark_z                | mean z-score over the scored texts                                         |
| watermark_detected_pct     | % of scored texts with z > 4 (the paper's threshold: ~3e-5 false positives) |
| watermark_green_fraction   | green tokens / scored tokens, pooled over the texts (chance: greenlist_ratio) |
| watermark_scored           | texts long enough to score (more than context_width tokens)                |

What is scored: the continuation's token ids as generated (EOS included, padding not), without the prompt
(as transformers advises) and without dropping a leading BOS (every generated token was drawn under the
watermark). The first context_width tokens only seed, so they are not counted. The human continuation is
scored as the model's tokenizer cut it from the document (`continuation_ids`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from decoding.processors.watermark import config_vocab_size
from experiments.metrics.intervals import DEFAULT_RESAMPLES, percentile_interval, ratio_interval, resample_weights
from decoding.watermark_detect import DEFAULT_Z_THRESHOLD, WatermarkDetector

__all__ = ["Z_THRESHOLD", "watermark_metrics"]

Z_THRESHOLD = DEFAULT_Z_THRESHOLD  # z > 4, Kirchenbauer et al. 2023 section 5
TOO_SHORT = "every text is too short to score (at most context_width tokens)"


def watermark_metrics(token_ids: Sequence[Sequence[int]], watermarking_config: Any, vocab_size: int,
                      device: torch.device | str = "cpu", prefix: str = "gen", seed: int = 0
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """(`prefix/watermark_*` values, {key: why it is NaN}) of texts given as token id lists.

    Args:
        token_ids: one list of token ids per text (prompt excluded).
        watermarking_config: the watermark the run generated with (WatermarkingConfig or a dict of its fields).
        vocab_size: the model config's vocabulary size (`decoding.processors.watermark.config_vocab_size`).
        device: the device the text was generated on.
        prefix: "gen" or "human".
        seed: seeds the bootstrap over texts behind each key's `/ci95_low`, `/ci95_high` (the run's seed).
    """
    detector = WatermarkDetector(watermarking_config, vocab_size, device=device)
    shortest = detector.settings.context_width + 1
    scores = [detector.score_ids(ids) for ids in token_ids if len(ids) >= shortest]
    keys = [f"{prefix}/watermark_{name}" for name in ("z", "detected_pct", "green_fraction")]
    values = {f"{prefix}/watermark_scored": float(len(scores))}
    if not scores:
        values.update({key: math.nan for key in keys})
        return values, {key: TOO_SHORT for key in keys}
    values[keys[0]] = sum(s.z_score for s in scores) / len(scores)
    values[keys[1]] = 100.0 * sum(s.detected(Z_THRESHOLD) for s in scores) / len(scores)
    values[keys[2]] = sum(s.num_green_tokens for s in scores) / sum(s.num_tokens_scored for s in scores)
    # 95% bootstrap intervals over the scored texts, drawn as the quality metrics' (experiments/metrics/intervals.py)
    weights = resample_weights(len(scores), DEFAULT_RESAMPLES, seed)  # (R, texts)
    ones = [1.0] * len(scores)
    parts = {keys[0]: ([s.z_score for s in scores], ones, 1.0),
             keys[1]: ([float(s.detected(Z_THRESHOLD)) for s in scores], ones, 100.0),
             keys[2]: ([s.num_green_tokens for s in scores], [s.num_tokens_scored for s in scores], 1.0)}
    for key, (numerators, denominators, scale) in parts.items():
        low, high = percentile_interval(ratio_interval(numerators, denominators, weights, scale))
        values[f"{key}/ci95_low"], values[f"{key}/ci95_high"] = low, high
    return values, {}


def run_watermark_metrics(watermarking_config: Any, samples: Sequence[dict], human_ids: Sequence[Sequence[int]],
                          model: Any, seed: int = 0) -> dict[str, Any]:
    """The runner's watermark keys: the generations (`gen/`), the human continuations (`human/`), and
    `meta/not_measurable` for their NaNs."""
    vocab, device = config_vocab_size(model), model.device
    gen, gen_why = watermark_metrics([s["token_ids"] for s in samples], watermarking_config, vocab, device, "gen",
                                     seed)
    human, human_why = watermark_metrics(human_ids, watermarking_config, vocab, device, "human", seed)
    return {**gen, **human, "meta/not_measurable": {**gen_why, **human_why}}
