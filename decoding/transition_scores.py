"""The score of each chosen token, from a call's per-step scores: `model.compute_transition_scores`'s numbers.

Why a function of its own: with `output_scores=True` a result holds one (R, V) tensor per step, R the decoded
rows (B * num_beams for beam search), but a returned hypothesis of beam search may have continued a different
row at every step. `beam_indices` (N columns, -1 after the hypothesis ended) names that row, so the score of
hypothesis h's token at step t is `scores[t][beam_indices[h, t], token]`. Greedy and sampling rows continue
themselves. Steps after a hypothesis ended score 0, and columns after the longest hypothesis are cut, as
generate's helper does.

`normalize_logits=True` takes the log-softmax of each step's scores first (for example of raw `logits`).
"""

from __future__ import annotations

import torch


def transition_scores(sequences: torch.Tensor, scores: tuple[torch.Tensor, ...] | list[torch.Tensor],
                      beam_indices: torch.Tensor | None = None, normalize_logits: bool = False) -> torch.Tensor:
    """(H, N') the score of each generated token under the step's scores.

    Args:
        sequences: (H, T + N) prompt + generated ids (a result's `sequences`, or generate's).
        scores: N tensors (R, V), one per step (`output_scores=True`, or `output_logits=True` with
            `normalize_logits=True` for log-probabilities).
        beam_indices: (H, N) the row of `scores[t]` hypothesis h continued at step t, -1 after it ended;
            None for greedy / sampling, where row h continues row h.
        normalize_logits: log-softmax each step's scores over the vocabulary before picking.

    Returns:
        (H, N') float, N' = the longest hypothesis' number of steps (N without beam search); 0 where a
        hypothesis had already ended.
    """
    if not scores:
        raise ValueError("scores=() is not allowed: pass the per-step scores of a call made with "
                         "output_scores=True (or output_logits=True)")
    stacked = torch.stack(tuple(scores), dim=0)  # (N, R, V)
    steps, rows, vocab = stacked.shape
    if normalize_logits:
        # over V in generate's layout, (R, V, N) with N innermost, so the sums round as generate's do
        by_step_last = stacked.reshape(steps, -1).transpose(0, 1).reshape(rows, vocab, steps)
        stacked = torch.log_softmax(by_step_last, dim=1).permute(2, 0, 1)  # (N, R, V)
    if beam_indices is None:
        if rows != sequences.shape[0]:
            raise ValueError(f"scores have {rows} rows per step but sequences has {sequences.shape[0]}: pass the "
                             "result's beam_indices for beam search")
        beam_indices = torch.arange(rows, device=sequences.device)[:, None].expand(rows, steps)
    ended = beam_indices < 0  # (H, N)
    length = int((~ended).sum(-1).max())  # the longest hypothesis' steps
    ended = ended[:, :length]
    source_rows = beam_indices[:, :length].clamp(min=0)  # (H, N'); ended steps read row 0, masked below
    tokens = sequences[:, sequences.shape[1] - length:]  # (H, N') the last N' columns are the generated ones
    step_index = torch.arange(length, device=sequences.device)[None, :].expand_as(tokens)
    picked = stacked[step_index, source_rows, tokens]  # (H, N')
    return picked.masked_fill(ended, 0.0)
