"""The OpenAI / vLLM sampling parameters: presence and frequency penalties over the generated tokens, logit_bias,
allowed_token_ids (vLLM's `min_tokens` is our `min_new_tokens`, an alias resolved in params.py).

Semantics, as vLLM computes them (vllm/v1/sample/sampler.py, vllm/model_executor/layers/utils.py
`apply_penalties`, vllm/v1/sample/logits_processor/builtin.py) and OpenAI documents them:
- presence / frequency: with c[v] the number of times token v occurs among the tokens generated so far (the
  prompt is never counted, nor its left padding), `logits - frequency * c - presence * (c > 0)`, the two
  subtractions in that order, in float32. Both in [-2, 2]; negative values encourage repeats.
- logit_bias: {token id: bias}, the bias added to that token's logit (only there: other logits keep their bits).
  OpenAI allows biases in [-100, 100]; vLLM clamps anything outside to that range. Here a value outside it is
  refused rather than silently changed (a bias of +-100 already gives what vLLM gives for a larger one), and so
  is -inf: to forbid a token use suppress_tokens or bad_words_ids. Keys may be ints or strings of digits
  ("42", as JSON and Hydra give them): vLLM converts them with int().
- allowed_token_ids: a non-empty list of ids; every other token's logit becomes -inf (vLLM applies this first).

The penalties hold their weights as float32 (1, 1) tensors, or (R, 1) in a batched sweep (`for_rows`), and use
only elementwise ops with them, so a sweep row equals its configuration alone bit for bit; 0 is an exact neutral
weight (x - 0 * c is x, -inf included), which is what rows of configurations without the penalty get.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..checks import check, is_int, is_real
from .base import NEG_INF, LogitsProcessor, ValueRepr

if TYPE_CHECKING:
    from ..params import GenerationParams

PENALTY_RANGE = (-2.0, 2.0)  # vLLM's SamplingParams and OpenAI's documented range
BIAS_RANGE = (-100.0, 100.0)  # OpenAI's documented range, vLLM's clamp


def _token_key(key: Any) -> int | None:
    """A logit_bias key as a token id: an int >= 0 (not a bool) or a string of decimal digits; None otherwise."""
    if is_int(key):
        return int(key) if key >= 0 else None
    if isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():  # "42", not "²"
        return int(key.strip())
    return None


def bias_items(logit_bias: Mapping) -> tuple[tuple[int, float], ...]:
    """A validated logit_bias as ((token id, bias), ...) sorted by id."""
    return tuple(sorted((_token_key(key), float(bias)) for key, bias in logit_bias.items()))


def penalise_generated(input_ids: torch.Tensor, scores: torch.Tensor, prompt_length: int, frequency: torch.Tensor,
                       presence: torch.Tensor) -> torch.Tensor:
    """scores - frequency * c - presence * (c > 0), c each token's count after the first `prompt_length` slots.

    vLLM subtracts over the whole (B, V) row, where c = 0 changes nothing (x - 0 is x); only the generated tokens'
    columns can change, so only those are computed: one scatter_add counts the generated tokens (B, n) (no loop
    over tokens), and the same two subtractions, in vLLM's order, run on their gathered (B, n) scores. A token
    generated twice is written twice with the same value.

    Args:
        input_ids: (B, T + n); scores: (B, V) float32; frequency, presence: (1, 1) or (B, 1) float32.
    Returns:
        (B, V) new scores; `scores` is not changed.
    """
    generated = input_ids[:, prompt_length:]  # (B, n): the prompt and its left padding are never counted
    if generated.shape[1] == 0:  # the first step: nothing generated yet
        return scores
    counts = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
    counts.scatter_add_(1, generated, torch.ones(generated.shape, dtype=torch.float32, device=scores.device))
    count = counts.gather(1, generated)  # (B, n) >= 1: how often each generated token occurs in its row
    penalised = scores.gather(1, generated) - frequency * count
    penalised = penalised - presence * (count > 0).to(scores.dtype)
    return scores.scatter(1, generated, penalised)


class PresenceFrequencyPenalty(ValueRepr, LogitsProcessor):
    """OpenAI's presence and frequency penalties over the tokens after the (padded) prompt of length T.

    One class for both: `build_frequency_penalty` gives it presence 0, `build_presence_penalty` frequency 0 (each
    a name of its own in the processor orders); 0 changes no bit.
    """

    def __init__(self, frequency: float, presence: float, prompt_length: int):
        for name, value in (("frequency_penalty", frequency), ("presence_penalty", presence)):
            check(is_real(value) and PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1], name, value,
                  "use a number in [-2, 2] (0: off)")
        self.frequency = torch.tensor([[float(frequency)]], dtype=torch.float32)  # (1, 1)
        self.presence = torch.tensor([[float(presence)]], dtype=torch.float32)  # (1, 1)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.frequency.device != scores.device:
            self.frequency, self.presence = self.frequency.to(scores.device), self.presence.to(scores.device)
        return penalise_generated(input_ids, scores, self.prompt_length, self.frequency, self.presence)

    @classmethod
    def for_rows(cls, built: list["PresenceFrequencyPenalty | None"], rows_per_config: int,
                 device) -> LogitsProcessor:
        """One processor for a batched sweep: configuration c's weights on its rows, 0 (no change) on the rows of
        configurations without this penalty."""
        return RowPresenceFrequencyPenalty(built, rows_per_config, device)


class RowPresenceFrequencyPenalty(ValueRepr, LogitsProcessor):
    """PresenceFrequencyPenalty with one (frequency, presence) pair per row of a batched sweep."""

    def __init__(self, built: list[PresenceFrequencyPenalty | None], rows_per_config: int, device):
        lengths = {p.prompt_length for p in built if p is not None}
        check(len(lengths) == 1, "prompt_length", sorted(lengths), "one padded prompt length for the whole sweep")
        self.prompt_length = lengths.pop()

        def per_row(values: list[float]) -> torch.Tensor:  # (C,) -> (R, 1)
            column = torch.tensor(values, dtype=torch.float32, device=device)
            return column.repeat_interleave(rows_per_config)[:, None]

        self.frequency = per_row([float(p.frequency.reshape(())) if p is not None else 0.0 for p in built])
        self.presence = per_row([float(p.presence.reshape(())) if p is not None else 0.0 for p in built])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return penalise_generated(input_ids, scores, self.prompt_length, self.frequency, self.presence)  # (R, V)


class LogitBias(ValueRepr, LogitsProcessor):
    """Add `logit_bias[v]` to token v's logit; every other logit is left exactly as it is (as vLLM's `+=`)."""

    def __init__(self, logit_bias: Mapping):
        check_logit_bias(logit_bias)
        self.logit_bias = bias_items(logit_bias)  # ((id, bias), ...): what the repr shows and sweeps compare
        self.ids = torch.tensor([token for token, _ in self.logit_bias], dtype=torch.long)  # (K,)
        self.biases = torch.tensor([bias for _, bias in self.logit_bias], dtype=torch.float32)  # (K,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.ids.device != scores.device:
            self.ids, self.biases = self.ids.to(scores.device), self.biases.to(scores.device)
        _check_ids_fit("logit_bias", self.logit_bias[-1][0], scores.shape[-1])  # sorted: the last id is the largest
        biased = scores.index_select(1, self.ids) + self.biases  # (B, K)
        return scores.index_copy(1, self.ids, biased)


class AllowedTokenIds(ValueRepr, LogitsProcessor):
    """Only `allowed_token_ids` may be generated: every other token's logit becomes -inf."""

    def __init__(self, allowed_token_ids: Sequence[int]):
        check_allowed_token_ids(allowed_token_ids)
        self.allowed_token_ids = tuple(sorted({int(t) for t in allowed_token_ids}))
        self.ids = torch.tensor(self.allowed_token_ids, dtype=torch.long)  # (K,)
        self.banned: torch.Tensor | None = None  # (V,) bool, built at the first call for the scores' width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        if self.banned is None or self.banned.shape[0] != vocab or self.banned.device != scores.device:
            _check_ids_fit("allowed_token_ids", self.allowed_token_ids[-1], vocab)
            self.banned = torch.ones(vocab, dtype=torch.bool, device=scores.device)
            self.banned[self.ids.to(scores.device)] = False
        return scores.masked_fill(self.banned, NEG_INF)


def _check_ids_fit(name: str, largest_id: int, vocab_size: int) -> None:
    """Ids past the scores' width (a caller who skipped check_openai_vocabulary) get a named error, not an
    IndexError; a Python int, so no device sync."""
    check(largest_id < vocab_size, name, largest_id, f"token ids must be in [0, {vocab_size}), the scores' "
                                                     "vocabulary")


def build_allowed_token_ids(p: "GenerationParams") -> LogitsProcessor | None:
    """AllowedTokenIds(p.allowed_token_ids), or None when it is None (every token allowed)."""
    if p.allowed_token_ids is None:
        return None
    return AllowedTokenIds(p.allowed_token_ids)


def build_logit_bias(p: "GenerationParams") -> LogitsProcessor | None:
    """LogitBias(p.logit_bias), or None when it is None."""
    if p.logit_bias is None:
        return None
    return LogitBias(p.logit_bias)


def build_frequency_penalty(p: "GenerationParams", prompt_length: int) -> LogitsProcessor | None:
    """The frequency penalty over the tokens after the padded prompt of length `prompt_length`; None when 0."""
    if p.frequency_penalty == 0:
        return None
    return PresenceFrequencyPenalty(p.frequency_penalty, 0.0, prompt_length)


def build_presence_penalty(p: "GenerationParams", prompt_length: int) -> LogitsProcessor | None:
    """The presence penalty over the tokens after the padded prompt of length `prompt_length`; None when 0."""
    if p.presence_penalty == 0:
        return None
    return PresenceFrequencyPenalty(0.0, p.presence_penalty, prompt_length)


def check_logit_bias(value: Any) -> None:
    """A non-empty {token id: bias} mapping: ids ints >= 0 or digit strings, each id once, biases in [-100, 100]."""
    allowed = ("use a non-empty {token id: bias} dict, ids integers >= 0 (or strings of digits, '42'), biases "
               "finite numbers in [-100, 100] (OpenAI's range; vLLM clamps to it), or None")
    check(isinstance(value, Mapping) and len(value) > 0, "logit_bias", value, allowed)
    bad_keys = [key for key in value if _token_key(key) is None]
    check(not bad_keys, "logit_bias", value, f"{allowed}; not token ids: {bad_keys}")
    ids = [_token_key(key) for key in value]
    repeated = sorted({t for t in ids if ids.count(t) > 1})
    check(not repeated, "logit_bias", value, f"{allowed}; ids {repeated} are given twice (e.g. 42 and '42')")
    bad_values = {key: bias for key, bias in value.items()
                  if not (is_real(bias) and math.isfinite(bias) and BIAS_RANGE[0] <= bias <= BIAS_RANGE[1])}
    check(not bad_values, "logit_bias", value, f"{allowed}; out of range or not numbers: {bad_values} (to forbid "
                                               "a token use suppress_tokens or bad_words_ids)")


def check_allowed_token_ids(value: Any) -> None:
    """A non-empty list of token ids (integers >= 0, not bools)."""
    check(isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0
          and all(is_int(t) and t >= 0 for t in value), "allowed_token_ids", value,
          "use a non-empty list of token ids (integers >= 0), or None (every token allowed)")


def check_openai_penalties(p: "GenerationParams") -> None:
    """Types and ranges of presence_penalty, frequency_penalty, logit_bias, allowed_token_ids."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(p, name)
        check(is_real(value) and math.isfinite(value) and PENALTY_RANGE[0] <= value <= PENALTY_RANGE[1], name,
              value, "use a number in [-2, 2] (OpenAI's and vLLM's range; 0: off)")
    if p.logit_bias is not None:
        check_logit_bias(p.logit_bias)
    if p.allowed_token_ids is not None:
        check_allowed_token_ids(p.allowed_token_ids)


def check_openai_vocabulary(p: "GenerationParams", vocab_size: int) -> None:
    """logit_bias and allowed_token_ids ids inside the model's vocabulary."""
    if vocab_size is None:
        return
    for name, ids in (("logit_bias", [_token_key(k) for k in p.logit_bias or {}]),
                      ("allowed_token_ids", [int(t) for t in p.allowed_token_ids or ()])):
        outside = [t for t in ids if t >= vocab_size]
        check(not outside, name, getattr(p, name),
              f"token ids must be in [0, {vocab_size}), the model's vocabulary ({outside} lie outside it)")
