"""MBR's utilities and its selection rule, apart from the sampling, so each can be tested on hand-made candidates.

A utility u(i, j) scores candidate i as a hypothesis against candidate j as a pseudo-reference. With n candidates
drawn from the model, the expected utility of candidate i is the Monte Carlo estimate of E_{y ~ model}[u(i, y)]:
the mean of u(i, j) over the other candidates j != i (Eikema & Aziz 2022). Duplicates are kept: a sequence the
model draws often is, by that, more probable, and counts as often as it was drawn.

- "chrf", "bleu": sacrebleu's sentence-level chrF and BLEU (their defaults: chrF char order 6, beta 2; BLEU with
  effective order and exp smoothing, as `sacrebleu.sentence_bleu`) on the decoded new text, on sacrebleu's
  0-100 scale. Both are asymmetric, which is why the matrix is filled in full.
- "embedding": the cosine of two candidates' embeddings, each the mean of the scorer's last hidden states over
  the candidate's generated tokens (EOS included, padding after it not), the candidate's tokens fed alone
  (without the prompt), so two candidates are compared as texts and any model with the vocabulary can score.

Ties go to the lowest candidate index: the expected utility is a row sum minus the diagonal, so identical
candidates (identical rows) get bit-identical values, and a stable sort keeps them in index order.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch


def _metric(utility: str):
    import sacrebleu  # only MBR needs it; imported on first use

    if utility == "chrf":
        return sacrebleu.CHRF()
    if utility == "bleu":
        return sacrebleu.BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses
    raise ValueError(f"mbr_utility={utility!r} is not allowed here: text utilities are 'chrf' and 'bleu'")


def text_utility_matrix(texts: Sequence[str], utility: str) -> torch.Tensor:
    """(n, n) float64 u[i, j] = sacrebleu sentence score of hypothesis texts[i] against reference texts[j]."""
    metric = _metric(utility)
    n = len(texts)
    u = torch.empty((n, n), dtype=torch.float64)
    for i, hyp in enumerate(texts):
        for j, ref in enumerate(texts):
            u[i, j] = metric.sentence_score(hyp, [ref]).score
    return u


@torch.inference_mode()
def mean_pooled_embeddings(scorer: Any, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(R, H) float32: the scorer's last hidden states, averaged over each row's tokens where mask is True.

    Args:
        scorer: a transformers causal LM (hidden states via `output_hidden_states`).
        tokens: (R, N) token ids, right-padded (each row's tokens start at column 0).
        mask: (R, N) bool, True for a row's tokens; every row has at least one.
    """
    device = scorer.device if hasattr(scorer, "device") else tokens.device
    tokens, mask = tokens.to(device), mask.to(device)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(scorer.forward).parameters else {}
    # Right padding: the tokens sit at positions 0..len-1, the default position ids; padding is never attended.
    out = scorer(input_ids=tokens, attention_mask=mask.long(), output_hidden_states=True, use_cache=False, **extra)
    hidden = out.hidden_states[-1].float()  # (R, N, H), after the final norm
    weights = mask.float()[..., None]  # (R, N, 1)
    return (hidden * weights).sum(1) / weights.sum(1)


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 cosine similarities of the rows of (n, H) embeddings."""
    e = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    return e @ e.T


def expected_utility(u: torch.Tensor) -> torch.Tensor:
    """(..., n) the mean of u[..., i, j] over j != i, from (..., n, n) utilities (n >= 2)."""
    n = u.shape[-1]
    return (u.sum(-1) - torch.diagonal(u, dim1=-2, dim2=-1)) / (n - 1)


def select_best(expected: torch.Tensor, r: int = 1) -> torch.Tensor:
    """(B, r) long: each row's r highest expected utilities' indices, best first; ties to the lowest index."""
    order = torch.sort(expected, dim=-1, descending=True, stable=True).indices  # (B, n)
    return order[:, :r]
