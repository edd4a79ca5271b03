"""MAUVE (Pillutla et al. 2021, "MAUVE: Measuring the Gap Between Neural Text and Human Text using
Divergence Frontiers") between the human continuations (P) and the generations (Q), via `mauve-text`.

Features: MAUVE compares the two text distributions in an embedding space. Its default featurizer loads
gpt2-large from the hub, which we cannot reach, so we compute the features ourselves and pass them as
`p_features` / `q_features`: the final-layer hidden state of the last token of each text under
`features_model` (the runner uses the embedded SmolLM2), which is what `mauve.utils.featurize_tokens_from_model`
takes from GPT-2 (`hidden_states[-1]` at the last token). We run the decoder body (`model.base_model`), not the
LM head, so no vocabulary-sized logits are computed; its last hidden state already has the final norm
applied, as `hidden_states[-1]` does. Texts are right-padded in batches: with causal attention the last real
token never sees the padding after it. As MAUVE does, each text is cut to its first `max_text_length`
tokens (1024) and empty texts are dropped before featurizing. Scores from different feature models are not
comparable: the model is part of the metric.

Quantization: MAUVE clusters the pooled features (after PCA keeping 90 % of the variance) with k-means into
`num_buckets` bins. The authors' rule, "auto", is n / 10 buckets for n texts per side (at least 2), so that
each bin holds about ten texts; we keep it and compute it explicitly: `max(2, round(min(|P|, |Q|) / 10))`.
With few texts (tens) the histogram is coarse and the score noisy: compare MAUVE only between runs with the
same number of texts and the same feature model. The k-means and PCA initialisation come from `seed`, so the
same features and seed give the same score.

Caveats (`mauve_caveat`): below `MIN_SAMPLES` texts per side, or on features of a random-weight model (the
tiny test models), the number is not evidence about the text. `measure_mauve` returns the sample size with
the score so the runner records it beside the number (`gen/mauve_samples`), and `mauve_caveat` logs one
warning naming the count and the minimum and returns the text the run records (`meta/caveats`).

Interval (`measure_mauve(..., resamples=R)`): the estimate -/+ 1.96 bootstrap standard errors, prompts resampled
with this quantization held fixed (`set_intervals.py` says how and why not percentiles). The point estimate stays mauve-text's own number; the interval is
used only when our labels rebuild mauve-text's two histograms exactly, so both rest on one quantization.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

MAX_TEXT_LENGTH = 1024  # mauve's max_text_length default
FEATURE_BATCH_SIZE = 16  # texts per featurizing forward; part of what a cached feature matrix is keyed on
# The mauve-text README, "Best Practices for MAUVE", 2. Number of generations: "each distribution must contain
# at least a few thousand samples (we use 5000 each). MAUVE with a smaller number of samples is biased towards
# optimism (...) and exhibits a larger standard deviation between runs." We warn below 1000 per side, the
# most lenient reading of "a few thousand"; the paper's (Pillutla et al. 2021) own runs use 5000.
MIN_SAMPLES = 1000
PAPER_SAMPLES = 5000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MauveResult:
    """A MAUVE score with what it rests on."""

    score: float  # in (0, 1]; NaN when not measurable
    samples: int  # texts per side that entered the score (the smaller side, empty texts dropped)
    not_measurable: str = ""  # why `score` is NaN, else ""
    interval: tuple[float, float] | None = None  # (ci95_low, ci95_high) when resamples were asked for
    no_interval: str = ""  # why `interval` is None although resamples were asked for, else ""


# Why a measurable MAUVE has no interval.
QUANTIZATION_DIFFERS = "our k-means labels do not rebuild mauve-text's histograms: no interval on another quantization"


def auto_num_buckets(num_p: int, num_q: int) -> int:
    """The MAUVE authors' "auto" quantization: about ten texts per bucket, at least two buckets."""
    return max(2, int(round(min(num_p, num_q) / 10)))


def last_token_features(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    batch_size: int = FEATURE_BATCH_SIZE,
    max_text_length: int = MAX_TEXT_LENGTH,
) -> np.ndarray:
    """Final-layer hidden state at the last token of each non-empty text: float32 array (N, hidden size)."""
    features = reference_features(texts, model, tokenizer, batch_size=batch_size, max_text_length=max_text_length)
    if features is None:
        raise ValueError("MAUVE features need at least one non-empty text, got only empty strings or none")
    return features


def token_ids(texts: Sequence[str], tokenizer: Any, *, max_text_length: int = MAX_TEXT_LENGTH) -> list[list[int]]:
    """Each text's token ids cut to `max_text_length`; empty texts are dropped, as MAUVE drops them."""
    return [tokens for _, tokens in _kept_token_ids(texts, tokenizer, max_text_length)]


def _kept_token_ids(texts: Sequence[str], tokenizer: Any, max_text_length: int) -> list[tuple[int, list[int]]]:
    """(position in `texts`, token ids cut to `max_text_length`) of each non-empty text: the position is the
    text's prompt, which the bootstrap over prompts needs."""
    if max_text_length < 1:
        raise ValueError(f"max_text_length={max_text_length} must be a positive integer")
    ids = [tokens[:max_text_length] for tokens in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return [(i, tokens) for i, tokens in enumerate(ids) if tokens]


def reference_features(references: Sequence[str], model: Any, tokenizer: Any, *,
                       batch_size: int = FEATURE_BATCH_SIZE,
                       max_text_length: int = MAX_TEXT_LENGTH) -> np.ndarray | None:
    """The features `measure_mauve` computes for `references` (P), to compute once and pass back as its
    `reference_features`: (N kept, H) float32, or None when every reference is empty."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    kept = _kept_token_ids(references, tokenizer, max_text_length)
    return _features_of([ids for _, ids in kept], model, tokenizer, batch_size) if kept else None


@torch.inference_mode()
def _features_of(ids: list[list[int]], model: Any, tokenizer: Any, batch_size: int) -> np.ndarray:
    """Last-token final hidden states of non-empty token lists, right-padded in batches: (N, H) float32."""
    body = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out, any id works
    features = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        width = max(len(tokens) for tokens in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, tokens in enumerate(batch):
            input_ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        hidden = body(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, H)
        last = mask.sum(dim=1).to(device) - 1  # (B,) index of each text's last real token
        features.append(hidden[torch.arange(len(batch), device=device), last].float().cpu())  # (B, H)
    return torch.cat(features).numpy()


def mauve_from_features(
    p_features: np.ndarray, q_features: np.ndarray, *, seed: int = 0, num_buckets: int | str = "auto"
) -> float:
    """MAUVE of P (human) against Q (generated) features, each (N, D); `num_buckets` an int or "auto"."""
    return float(_compute_mauve(p_features, q_features, seed=seed, num_buckets=num_buckets).mauve)


def _compute_mauve(p_features: np.ndarray, q_features: np.ndarray, *, seed: int,
                   num_buckets: int | str) -> SimpleNamespace:
    """mauve-text's result (`mauve`, `p_hist`, `q_hist`, `num_buckets`, ...) after checking the arguments."""
    import mauve

    p_features, q_features = np.asarray(p_features), np.asarray(q_features)
    for name, array in (("p_features", p_features), ("q_features", q_features)):
        if array.ndim != 2 or array.shape[0] < 1:
            raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {array.shape}")
    if p_features.shape[1] != q_features.shape[1]:
        raise ValueError(f"p_features and q_features differ in width: {p_features.shape[1]} vs {q_features.shape[1]}")
    if num_buckets == "auto":
        num_buckets = auto_num_buckets(len(p_features), len(q_features))
    elif not isinstance(num_buckets, int) or num_buckets < 2:
        raise ValueError(f'num_buckets={num_buckets!r} must be "auto" or an integer of at least 2')
    if num_buckets > len(p_features) + len(q_features):
        raise ValueError(
            f"num_buckets={num_buckets} exceeds the {len(p_features) + len(q_features)} texts to cluster: "
            "use fewer buckets"
        )
    return mauve.compute_mauve(
        p_features=p_features, q_features=q_features, num_buckets=num_buckets, seed=seed, verbose=False
    )


def mauve_interval(p_features: np.ndarray, q_features: np.ndarray, p_prompts: Sequence[int],
                   q_prompts: Sequence[int], num_prompts: int, result: SimpleNamespace, *, seed: int,
                   resamples: int) -> tuple[tuple[float, float] | None, str]:
    """(interval, "") of MAUVE by a bootstrap over prompts on `result`'s quantization, or (None, why not).

    Args:
        p_features, q_features: the features `result` was computed from, (Np, D) and (Nq, D).
        p_prompts, q_prompts: the prompt (position among `num_prompts`) of each feature row, (Np,) and (Nq,).
        num_prompts: prompts, empty texts included: the bootstrap draws them.
        result: `mauve.compute_mauve` on these features with `seed`.
        seed: MAUVE's seed (the clustering) and the bootstrap's (`intervals.resample_weights`).
        resamples: bootstrap resamples (R), at least 1.
    """
    from experiments.metrics import intervals, set_intervals

    if resamples < 1:
        raise ValueError(f"resamples={resamples} must be a positive integer")
    p_prompts, q_prompts = np.asarray(p_prompts, dtype=np.int64), np.asarray(q_prompts, dtype=np.int64)
    for name, rows, prompts in (("p_prompts", p_features, p_prompts), ("q_prompts", q_features, q_prompts)):
        if prompts.shape != (len(rows),) or prompts.min() < 0 or prompts.max() >= num_prompts:
            raise ValueError(f"{name} must give each of the {len(rows)} feature rows a prompt in [0, {num_prompts})")
    buckets = int(result.num_buckets)
    p_labels, q_labels = set_intervals.mauve_labels(np.asarray(p_features), np.asarray(q_features),
                                                    num_buckets=buckets, seed=seed)
    everyone = np.ones((1, num_prompts))  # (1, prompts): the un-resampled set
    p_hist = set_intervals.bucket_histograms(p_labels, p_prompts, everyone, buckets)[0]  # (K,)
    q_hist = set_intervals.bucket_histograms(q_labels, q_prompts, everyone, buckets)[0]  # (K,)
    if not (np.allclose(p_hist, result.p_hist, rtol=0, atol=1e-12)
            and np.allclose(q_hist, result.q_hist, rtol=0, atol=1e-12)):
        log.warning("MAUVE interval skipped: %s", QUANTIZATION_DIFFERS)
        return None, QUANTIZATION_DIFFERS
    weights = intervals.resample_weights(num_prompts, resamples, seed)  # (R, prompts)
    values = set_intervals.mauve_resamples(p_labels, q_labels, p_prompts, q_prompts, weights, buckets)  # (R,)
    return set_intervals.standard_error_interval(float(result.mauve), values, lower=0.0, upper=1.0), ""


def mauve_score(
    texts: Sequence[str],
    references: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    seed: int = 0,
    num_buckets: int | str = "auto",
    batch_size: int = FEATURE_BATCH_SIZE,
    max_text_length: int = MAX_TEXT_LENGTH,
) -> float:
    """MAUVE between human `references` (P) and generated `texts` (Q), featurized by `model`. In (0, 1]."""
    p = last_token_features(references, model, tokenizer, batch_size=batch_size, max_text_length=max_text_length)
    q = last_token_features(texts, model, tokenizer, batch_size=batch_size, max_text_length=max_text_length)
    return mauve_from_features(p, q, seed=seed, num_buckets=num_buckets)


def measure_mauve(
    texts: Sequence[str],
    references: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    seed: int = 0,
    num_buckets: int | str = "auto",
    batch_size: int = FEATURE_BATCH_SIZE,
    max_text_length: int = MAX_TEXT_LENGTH,
    resamples: int = 0,
    reference_features: np.ndarray | None = None,
) -> MauveResult:
    """`mauve_score` with its sample size; NaN with the reason (not an error) when one side has only empty texts,
    so a run whose generations all stopped at once still reports its other metrics. `resamples` > 0 adds the
    95% interval over prompts (`mauve_interval`; texts[i] and references[i] are prompt i), seeded by `seed`.
    `reference_features`: `reference_features(references, ...)` computed earlier with the same settings (the
    human side of a sweep is the same for every job), used instead of featurizing the references again."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    if resamples < 0:
        raise ValueError(f"resamples={resamples} must be 0 (no interval) or positive")
    if resamples and len(texts) != len(references):  # the bootstrap draws prompts: a text and its reference
        raise ValueError(f"with resamples, texts and references must pair up by prompt: got {len(texts)} texts "
                         f"and {len(references)} references")
    q_kept = _kept_token_ids(texts, tokenizer, max_text_length)
    p_kept = _kept_token_ids(references, tokenizer, max_text_length)
    if not q_kept or not p_kept:
        side = "generated" if not q_kept else "human"
        return MauveResult(math.nan, 0, f"every {side} text empty")
    if reference_features is not None and len(reference_features) != len(p_kept):
        raise ValueError(f"reference_features has {len(reference_features)} rows but {len(p_kept)} of the "
                         f"{len(references)} references are non-empty: pass reference_features(references, ...)")
    p = reference_features if reference_features is not None else _features_of([ids for _, ids in p_kept], model,
                                                                                tokenizer, batch_size)
    q = _features_of([ids for _, ids in q_kept], model, tokenizer, batch_size)
    result = _compute_mauve(p, q, seed=seed, num_buckets=num_buckets)
    interval, why_not = None, ""
    if resamples:
        interval, why_not = mauve_interval(p, q, [i for i, _ in p_kept], [i for i, _ in q_kept], len(texts), result,
                                           seed=seed, resamples=resamples)
    return MauveResult(float(result.mauve), min(len(p), len(q)), interval=interval, no_interval=why_not)


def mauve_caveat(samples: int, features: str, random_weights: bool) -> str | None:
    """What a reader must know before trusting a MAUVE score, or None; logs it once as a warning.

    Args:
        samples: texts per side the score rests on (`MauveResult.samples`).
        features: the features model, as the run names it (e.g. "smollm2").
        random_weights: whether that model has random weights (a tiny test model).
    """
    parts = []
    if samples < MIN_SAMPLES:
        texts = f"{samples} sample{'s' if samples != 1 else ''}"
        parts.append(f"{texts} per side, below the minimum of {MIN_SAMPLES} (the mauve-text authors ask for a few "
                     f"thousand, the paper uses {PAPER_SAMPLES}): biased upwards and noisy, compare only runs with "
                     "the same sample size")
    if random_weights:
        parts.append(f"features from {features}, a model with random weights: the score says nothing about the text")
    if not parts:
        return None
    caveat = "; ".join(parts)
    log.warning("MAUVE caveat: %s", caveat)
    return caveat
