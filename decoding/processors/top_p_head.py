"""Top-p without sorting the vocabulary: decide the nucleus from a top-k head, sort only where that is unsure.

transformers' rule (`truncation.drop_low_mass_sorted`) sorts every row ascending, takes the cumulative softmax
and drops the tokens whose cumulative mass is <= 1 - top_p. Sorting 49152 logits costs 4 ms per row on this
CPU (batch 8: 17 ms a step, a fifth of a compiled SmolLM2 step), while at temperature 1 the nucleus of SmolLM2
on State of the Union text holds <= 256 tokens in 91% of positions and <= 4096 in all of 1024 positions
measured (at temperature 1.5: 14% and 83%; at 3, none).

The ascending cumulative mass of the token at descending rank r is everything but the mass ranked above it:
`cum_r = total - sum(head[:r])`, so a top-k head gives the cumulative masses of its own tokens exactly (in
float64; the sorted rule accumulates its cumsum in float64 on CPU too). A row is decided from its head when:

- the first dropped token is in the head, so every token outside it (of lower cumulative mass) is dropped too;
- the boundary is clear: the last kept and the first dropped token are each more than MARGIN from
  `drop_mass` (the kept one only where mass, not min_tokens_to_keep, drew the line), so the sorted rule, whose
  sums differ from ours only in the last bits of float32 (its softmax normalises in another order), decides
  them alike;
- no tie straddles the boundary: the sorted rule keeps one of two equal tokens there by the sort's order
  (common with bfloat16 logits), which a head cannot know.

On CPU only: on CUDA the sort is cheap and the heads' bookkeeping would sync the device each step.
Other rows try the next head size, then the sorted rule itself, so every row's kept set is the sorted rule's.
A head is not tried where it cannot hold the nucleus: k times the top probability, or the previous head's mass
plus its remaining tokens at that head's last probability, or a one-pass count above a threshold
(`counted_bound`), falls short of top_p. So a flat row (high temperature) costs the sort and a little more.
tests/decoding/test_top_p_head.py checks that on real SmolLM2 distributions, ties and per-row masses.
"""

from __future__ import annotations

from typing import Callable

import torch

HEAD_SIZES = (256, 4096)  # top-k sizes tried in turn; a size is used only where it is <= 1/4 of the vocabulary
MARGIN = 1e-5  # the cumulative masses' distance from 1 - top_p below which a row goes to the sorted rule
# (float32 rounding puts ours and the sorted rule's within ~1e-8 of each other on CPU; CUDA's float32 cumsum
# over a 50k vocabulary within ~1e-6)

SortedRule = Callable[[torch.Tensor, object, int], torch.Tensor]


def drop_low_mass_from_heads(scores: torch.Tensor, drop_mass, min_tokens_to_keep: int,
                             sorted_rule: SortedRule) -> torch.Tensor:
    """`sorted_rule(scores, drop_mass, min_tokens_to_keep)`, computed from top-k heads where they decide it.

    Args:
        scores: (B, V) float32.
        drop_mass: 1 - top_p, a float or a (B, 1) tensor (< 0 on rows that drop nothing).
    """
    batch, vocab = scores.shape
    # On CUDA a sort of the vocabulary is cheap and each head's bookkeeping would sync the device: sort there.
    heads = [k for k in HEAD_SIZES if 4 * k <= vocab and k > min_tokens_to_keep] if scores.device.type == "cpu" \
        else []
    if not heads:
        return sorted_rule(scores, drop_mass, min_tokens_to_keep)
    # (B, 1) float32: the sorted rule compares its float32 sums with a float drop mass in float32 too
    mass = torch.as_tensor(drop_mass, dtype=torch.float32, device=scores.device).reshape(-1, 1).expand(batch, 1)
    out = scores.clone()
    todo = (mass[:, 0] >= 0).nonzero().flatten()  # (R,) undecided rows; a negative mass drops nothing
    probs = torch.softmax(scores.index_select(0, todo), dim=-1)  # (R, V), rows of `todo`
    # A head of k holds at most k times the top probability: rows short of the nucleus skip the top-k
    sizes = torch.tensor([heads], dtype=torch.float64, device=scores.device)  # (1, H)
    bound = probs.amax(dim=-1, keepdim=True).double() * sizes  # (R, H)
    for h, k in enumerate(heads):
        needed = 1 - mass.index_select(0, todo).double() + MARGIN  # (R, 1) the nucleus's mass, with margin
        tried = (bound[:, h:h + 1] > needed).squeeze(1)
        if h and tried.any():  # a larger top-k costs several small ones: first a one-pass bound of its mass
            tried[tried.clone()] = (counted_bound(probs[tried], needed[tried], k) > needed[tried]).squeeze(1)
        if tried.any():
            decided, keep, index, values = decide_from_head(probs[tried], mass.index_select(0, todo[tried]), k,
                                                            min_tokens_to_keep)
            rows = todo[tried][decided]
            if rows.numel():
                drop = torch.ones((rows.numel(), vocab), dtype=torch.bool, device=scores.device)
                drop.scatter_(1, index[decided], ~keep[decided])
                out.index_copy_(0, rows, scores.index_select(0, rows).masked_fill(drop, float("-inf")))
            # the larger heads hold at most this one's mass plus their other tokens at its last probability
            head = values.double()
            bound[tried] = torch.minimum(bound[tried], head.sum(dim=-1, keepdim=True) + (sizes - k) * head[:, -1:])
            left = torch.ones_like(tried)
            left[tried] = ~decided
            todo, probs, bound = todo[left], probs[left], bound[left]
    if todo.numel():
        out.index_copy_(0, todo, sorted_rule(scores.index_select(0, todo), mass.index_select(0, todo),
                                             min_tokens_to_keep))
    return out


def counted_bound(probs: torch.Tensor, needed: torch.Tensor, k: int) -> torch.Tensor:
    """(R, 1) at most the top-k mass: with c tokens of probability >= tau (mass m), the top k hold at most
    m + (k - c) tau if c <= k (else m). tau = needed / 2k: the bound misses the nucleus when m < needed / 2."""
    tau = (needed / (2 * k)).float()  # (R, 1)
    above = probs >= tau
    count = above.sum(dim=-1, keepdim=True)
    mass = torch.where(above, probs, 0).sum(dim=-1, keepdim=True, dtype=torch.float64)
    return torch.where(count <= k, mass + (k - count) * tau.double(), mass)


def decide_from_head(probs: torch.Tensor, mass: torch.Tensor, k: int, min_tokens_to_keep: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which rows a top-k head decides, and their kept head tokens.

    Args:
        probs: (R, V) float32 softmax of the rows' scores; mass: (R, 1) float32 drop mass.

    Returns:
        decided (R,) bool; keep (R, k) bool over the head, by rank; index (R, k) the head's token ids;
        values (R, k) their probabilities.
    """
    values, index = torch.topk(probs, k, dim=-1)  # (R, k), descending
    head = values.double()
    total = probs.sum(dim=-1, keepdim=True, dtype=torch.float64)  # (R, 1)
    cum = total - (head.cumsum(dim=-1) - head)  # (R, k): each rank's ascending cumulative mass, falling
    threshold = mass.double()
    by_mass = (cum.float().double() > threshold).sum(dim=-1, keepdim=True)  # (R, 1): a float32 compare, as sorted
    count = by_mass.clamp(min=min_tokens_to_keep)  # kept tokens: a prefix of the head
    keep = torch.arange(k, device=probs.device) < count  # (R, k)
    first_dropped, last_kept = count.clamp(max=k - 1), (count - 1).clamp(min=0)
    inside = count < k  # the first dropped token is in the head, so all outside it are dropped too
    clear = (cum.gather(1, first_dropped) < threshold - MARGIN) & (
        (count > by_mass) | (cum.gather(1, last_kept) > threshold + MARGIN))  # min_tokens_to_keep drew it, or mass
    untied = values.gather(1, last_kept) != values.gather(1, first_dropped)
    return (inside & clear & untied).squeeze(1), keep, index, values
