"""Rolling-window layouts for teacher-forced scoring: pure functions on token lists, no model, no torch.

A `Window` is what one row of a forward pass sees: `input_ids` (at most `max_length` tokens) and the
`target_ids` that its *last* `len(target_ids)` positions predict. This is lm-evaluation-harness's
`(input_tokens, pred_tokens)` pair from `get_rolling_token_windows`, so its golden tests carry over.

Why one function for both modes: a layout is fixed by where each window's predictions *end*.
- The first window conditions on a prefix token (the model's BOS, EOS where it has none) and predicts
  the first `min(max_length, n)` tokens, so the first token of a document is scored too.
- Each later window moves the end of its predictions on by `stride` tokens and predicts only the tokens
  no earlier window predicted; its input is the `max_length` tokens right before each prediction, so
  every window after the first reads as much context as fits.
With `stride == max_length` (the default) the predictions are disjoint blocks of `max_length` tokens:
lm-evaluation-harness's `loglikelihood_rolling` with `context_len=1` (its last window re-reads earlier
tokens as context, exactly as there). With `stride < max_length` it is the overlapping variant of the
transformers guide "Perplexity of fixed-length models": windows start `stride` apart and each scores
only its last `stride` tokens. One difference from the guide, on purpose: the guide's windows hold
`max_length` tokens *including* the token being predicted and never score the first token of a text;
ours are `max_length` model inputs with the prefix token in front, so every token is predicted exactly
once and `stride == max_length` is the disjoint mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Window:
    """One row of a forward pass: the last `len(target_ids)` positions of `input_ids` predict `target_ids`."""

    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.target_ids) <= len(self.input_ids):
            raise ValueError(
                f"a window needs 1 <= len(target_ids) <= len(input_ids); got {len(self.target_ids)} targets "
                f"for {len(self.input_ids)} inputs"
            )


def check_window_args(max_length: int, stride: int | None = None) -> int:
    """Validate `max_length` and `stride`; returns the stride to use (`max_length` when None)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length={max_length!r} must be a positive integer (model inputs per window)")
    if stride is None:
        return max_length
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"stride={stride!r} must be a positive integer; leave it unset for disjoint windows")
    if stride > max_length:
        raise ValueError(
            f"stride={stride} is larger than max_length={max_length}: tokens between windows would never be "
            f"scored. Use 1 <= stride <= max_length (stride == max_length is the disjoint mode)"
        )
    return stride


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_length: int,
                    stride: int | None = None) -> list[Window]:
    """Windows that predict every token of `tokens` exactly once (see the module docstring).

    Args:
        tokens: the document's token ids, without any special token.
        prefix_token: what the first token is conditioned on (BOS, or EOS for models without one).
        max_length: model inputs per window.
        stride: how far each later window moves on; None or `max_length` gives disjoint windows.
    Returns:
        The windows in document order; none for an empty document.
    """
    stride = check_window_args(max_length, stride)
    sequence = [prefix_token, *tokens]  # sequence[i + 1] == tokens[i]
    windows: list[Window] = []
    start, end = 0, min(max_length, len(tokens))  # the window predicts tokens[start:end]
    while start < end:
        # tokens[i] is predicted from sequence[: i + 1], so the inputs end at sequence[end - 1] inclusive.
        inputs = sequence[max(0, end - max_length):end]
        windows.append(Window(tuple(inputs), tuple(tokens[start:end])))
        start, end = end, min(end + stride, len(tokens))
    return windows


def continuation_window(prompt: Sequence[int], continuation: Sequence[int], max_length: int,
                        prefix_token: int) -> Window:
    """The window that scores `continuation` given `prompt` ("generation perplexity").

    The prompt is cut from the left when prompt + continuation does not fit in `max_length` inputs; an
    empty prompt conditions on `prefix_token`, as a document's first token does.
    """
    check_window_args(max_length)
    if not continuation:
        raise ValueError("continuation is empty: there is nothing to score")
    if len(continuation) > max_length:
        raise ValueError(
            f"continuation of {len(continuation)} tokens does not fit in max_length={max_length} inputs; "
            f"raise max_length (up to the model's positions) or generate fewer tokens"
        )
    context = list(prompt) if prompt else [prefix_token]
    sequence = [*context, *continuation]
    inputs = sequence[:-1][-max_length:]
    return Window(tuple(inputs), tuple(continuation))
