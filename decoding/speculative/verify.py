"""Which proposals a row keeps, and the token after them.

Greedy: the longest prefix of the proposals equal to the target's argmax; the next token is the target's
argmax after it, so the text is plain greedy decoding's.

Sampling (Leviathan et al. 2023; Chen et al. 2023): proposal j, drawn from the draft's processed
distribution q_j, is kept with probability min(1, p_j(x) / q_j(x)), p_j the target's processed distribution
at that position; at the first rejection the next token is drawn from norm(max(0, p_j - q_j)), and after a
fully kept block from p. Every token is then distributed exactly as plain sampling with the same
processors draws it. A deterministic proposer (prompt lookup) has q_j = one-hot(x): keep with p_j(x), else
draw from p_j without x.
"""

from __future__ import annotations

import torch


def _leading_true(ok: torch.Tensor) -> torch.Tensor:
    """(B,) how many leading entries of each row of `ok` (B, K) are True."""
    return ok.long().cumprod(dim=1).sum(dim=1)


def proposal_mask(counts: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) True at row i's first counts[i] positions (its real proposals)."""
    return torch.arange(width, device=counts.device)[None, :] < counts[:, None]


def greedy_accept(scores: torch.Tensor, drafts: torch.Tensor, counts: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """scores: (B, K + 1, V) processed target scores; drafts: (B, K). Returns (kept (B,), next tokens (B,))."""
    targets = scores.argmax(dim=-1)  # (B, K + 1)
    width = drafts.shape[1]
    kept = _leading_true((drafts == targets[:, :width]) & proposal_mask(counts, width))
    return kept, targets.gather(1, kept[:, None]).squeeze(1)


def sample_accept(scores: torch.Tensor, drafts: torch.Tensor, counts: torch.Tensor, q: torch.Tensor | None,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative sampling rule. q: (B, K, V) the draft's distributions, or None for one-hot proposals.

    Returns (kept (B,), next tokens (B,))."""
    batch, width = drafts.shape
    p = torch.softmax(scores, dim=-1)  # (B, K + 1, V)
    p_draft = p[:, :width].gather(2, drafts[..., None]).squeeze(-1)  # (B, K)
    q_draft = q.gather(2, drafts[..., None]).squeeze(-1) if q is not None else torch.ones_like(p_draft)
    ratio = p_draft / q_draft.clamp(min=torch.finfo(q_draft.dtype).tiny)
    draws = torch.rand((batch, width), generator=generator, device=scores.device)
    kept = _leading_true((draws < ratio) & proposal_mask(counts, width))
    after = p.gather(1, kept[:, None, None].expand(batch, 1, p.shape[-1])).squeeze(1)  # (B, V) p at the stop
    rejected = kept < counts
    if bool(rejected.any()):
        at = kept.clamp(max=max(width - 1, 0))
        if q is not None:
            q_at = q.gather(1, at[:, None, None].expand(batch, 1, q.shape[-1])).squeeze(1)
        else:
            q_at = torch.zeros_like(after).scatter_(1, drafts.gather(1, at[:, None]), 1.0)
        residual = (after - q_at).clamp(min=0)
        total = residual.sum(dim=-1, keepdim=True)
        # p == q leaves nothing to draw from, but then no rejection could happen (a float tie): keep p
        residual = torch.where(total > 0, residual / total.clamp(min=torch.finfo(total.dtype).tiny), after)
        after = torch.where(rejected[:, None], residual, after)
    return kept, torch.multinomial(after, 1, generator=generator).squeeze(1)
