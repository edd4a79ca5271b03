"""The exact distribution of a tiny model's first new tokens under plain sampling, and a chi-square test of
observed samples against it (for tests/decoding/test_speculative_sampling.py).

The reference is computed from plain full forwards (no cache, no decoding/ code): for every prefix of the
new tokens, the next-token distribution after temperature and top-k, multiplied along the prefix. With a
vocabulary of V tokens and n new tokens that is V ** n outcomes, each with its exact probability.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.stats import chisquare

MIN_EXPECTED = 5.0  # chi-square's usual rule: cells expected below this are pooled into one


def _next_token_probs(logits: torch.Tensor, temperature: float | None, top_k: int | None) -> torch.Tensor:
    """(R, V) float64 probabilities from last-position logits (R, V): divide by temperature, keep the top k
    (ties at the k-th value kept, as transformers' top-k does), softmax."""
    scores = logits.double()
    if temperature is not None:
        scores = scores / temperature
    if top_k is not None:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]  # (R, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return torch.softmax(scores, dim=-1)


@torch.no_grad()
def exact_distribution(model, prompt: list[int], new_tokens: int, temperature: float | None = None,
                       top_k: int | None = None) -> torch.Tensor:
    """(V,) * new_tokens float64 tensor: P(first new tokens = t_1..t_n) under plain sampling from `prompt`."""
    vocab = model.config.vocab_size
    joint = torch.ones((), dtype=torch.float64)
    for depth in range(new_tokens):
        prefixes = list(itertools.product(range(vocab), repeat=depth))  # V ** depth prefixes, in row-major order
        ids = torch.tensor([prompt + list(prefix) for prefix in prefixes], dtype=torch.long)  # (V ** depth, T + d)
        probs = _next_token_probs(model(input_ids=ids).logits[:, -1], temperature, top_k)  # (V ** depth, V)
        joint = joint[..., None] * probs.reshape((vocab,) * depth + (vocab,))
    return joint


def outcome_counts(new_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """(V ** n,) how many rows of new_ids (R, n) are each outcome, in exact_distribution's flattened order."""
    n = new_ids.shape[1]
    place = vocab ** torch.arange(n - 1, -1, -1)  # (n,) row-major digit weights
    return torch.bincount((new_ids.cpu().long() * place).sum(dim=1), minlength=vocab ** n)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of chi-square goodness of fit of counts (C,) to probs (C,) (any shape, flattened alike).

    Cells expected below MIN_EXPECTED (zero-probability outcomes included) are pooled into one cell; if that
    pool is itself below MIN_EXPECTED it joins the smallest remaining cell, so every cell meets the rule."""
    observed = counts.flatten().double().numpy()
    expected = probs.flatten().double().numpy()
    expected = expected / expected.sum() * observed.sum()
    small = expected < MIN_EXPECTED
    obs, exp = list(observed[~small]), list(expected[~small])
    if small.any():
        pooled_obs, pooled_exp = observed[small].sum(), expected[small].sum()
        if pooled_exp < MIN_EXPECTED and exp:
            i = int(np.argmin(exp))
            obs[i] += pooled_obs
            exp[i] += pooled_exp
        else:
            obs.append(pooled_obs)
            exp.append(pooled_exp)
    if len(exp) < 2:
        raise ValueError(f"chi-square needs at least 2 cells with expected >= {MIN_EXPECTED}; got {len(exp)} "
                         f"from {int(observed.sum())} draws: draw more")
    return float(chisquare(np.array(obs), np.array(exp)).pvalue)
