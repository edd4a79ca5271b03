"""Lexical diversity of a set of generations: distinct-n, rep-n and SimCTG's diversity.

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models")
is corpus-level: the number of distinct n-grams in the whole set of generations divided by the number of
n-grams in it, so an n-gram that every generation repeats counts once. Li et al. divide by the number of
generated tokens; we divide by the number of n-grams (the common reading, and the two agree for n = 1),
which keeps the value in [0, 1] for every n. Holtzman et al.'s `degen/metrics/distinct_n.py` counts
n-grams seen exactly once instead of distinct ones; we follow Li et al.

rep-n and diversity (Su et al. 2022, "A Contrastive Framework for Neural Text Generation", Eq. 5, and
`yxuansu/SimCTG` `simctg/evaluation.py`): rep-n = 100 * (1 - U_n / T_n), where U_n sums over generations the
number of distinct n-grams *within* each generation and T_n sums their n-gram counts. So rep-n measures
repetition inside a text (a loop), while distinct-n also sees two texts that say the same thing.
diversity = prod_{n=2..4} (1 - rep-n / 100).

Two deliberate differences from SimCTG's script, both about numbers, not the idea:
- their n-gram loop stops one n-gram early (`while end_idx < len(tokens)`), dropping each text's last
  n-gram; we count all n-grams. `simctg_last_ngram_dropped=True` reproduces their count for comparison
  with published tables.
- they round rep-n to two decimals before multiplying; we do not round.

Zero n-grams (empty generations, or all shorter than n): distinct-n and rep-n are defined as 0.0, since
nothing was repeated and nothing distinct was said; diversity is then 1.0. Never a ZeroDivisionError.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.metrics.tokens import Tokens, check_token_lists, ngrams

DIVERSITY_ORDERS = (2, 3, 4)


def _check(token_lists: Sequence[Tokens], n: int) -> None:
    check_token_lists(token_lists)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer")


def distinct_n(token_lists: Sequence[Tokens], n: int) -> float:
    """Distinct n-grams / all n-grams over the whole set of generations; 0.0 when there are no n-grams."""
    _check(token_lists, n)
    seen: set[tuple] = set()
    total = 0
    for tokens in token_lists:
        grams = ngrams(tokens, n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def rep_n(token_lists: Sequence[Tokens], n: int, *, simctg_last_ngram_dropped: bool = False) -> float:
    """SimCTG's rep-n in percent: 100 * (1 - sum of per-text distinct n-grams / sum of n-gram counts)."""
    _check(token_lists, n)
    unique = total = 0
    for tokens in token_lists:
        grams = ngrams(tokens, n)
        if simctg_last_ngram_dropped:
            grams = grams[:-1]
        unique += len(set(grams))
        total += len(grams)
    return 100.0 * (1.0 - unique / total) if total else 0.0


def diversity(token_lists: Sequence[Tokens], *, simctg_last_ngram_dropped: bool = False) -> float:
    """SimCTG's diversity: the product over n = 2, 3, 4 of (1 - rep-n / 100), in [0, 1]."""
    result = 1.0
    for n in DIVERSITY_ORDERS:
        result *= 1.0 - rep_n(token_lists, n, simctg_last_ngram_dropped=simctg_last_ngram_dropped) / 100.0
    return result


def diversity_metrics(token_lists: Sequence[Tokens], *, simctg_last_ngram_dropped: bool = False) -> dict[str, float]:
    """distinct_1..distinct_4, rep_2..rep_4 and diversity in one dict, keyed as the runner logs them."""
    out = {f"distinct_{n}": distinct_n(token_lists, n) for n in (1, 2, 3, 4)}
    reps = {n: rep_n(token_lists, n, simctg_last_ngram_dropped=simctg_last_ngram_dropped) for n in DIVERSITY_ORDERS}
    out.update({f"rep_{n}": value for n, value in reps.items()})
    product = 1.0
    for value in reps.values():
        product *= 1.0 - value / 100.0
    out["diversity"] = product
    return out
