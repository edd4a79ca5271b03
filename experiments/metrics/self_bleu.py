"""Self-BLEU (Zhu et al. 2018, "Texygen: A Benchmarking Platform for Text Generation Models").

Each generation is scored with BLEU-4 against all the *other* generations as its references, and the scores
are averaged: high Self-BLEU means the generations resemble each other (low diversity across texts).

Sentence BLEU exactly as Texygen and Holtzman et al.'s `degen/metrics/self_bleu.py` compute it, i.e. NLTK's
`sentence_bleu` with `SmoothingFunction().method1`: clipped n-gram precisions for n = 1..4 with uniform
weights, a zero precision replaced by 0.1 / (number of hypothesis n-grams), the brevity penalty against the
reference whose length is closest (ties: the shorter), and 0.0 when not even one unigram matches. We count
it ourselves rather than calling NLTK because NLTK rebuilds every reference's n-gram counts for every
hypothesis (quadratic in the sample); here each text's counts are built once, and for each n-gram we keep the
largest and second-largest count over texts, so "the largest count among the others" is one lookup. The tests
check the result against NLTK.

Sample: Self-BLEU grows with the number of references, so values are comparable only at a fixed sample
size. Like Texygen (which takes the first `sample_size` texts, 500 there) we score within a sample of
`sample_size` generations (default 100), drawn here with `random.Random(seed)` so it does not depend on the
order of the list. With fewer generations than `sample_size` all are used; such a value is not comparable
with full-size ones.

`self_bleu_scores` gives the sample's per-text scores (`self_bleu` is their mean), which the 95% interval
resamples with the reference pool fixed (`set_intervals.py`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from experiments.metrics.tokens import Tokens, check_token_lists, ngrams

SMOOTHING_EPSILON = 0.1  # NLTK's method1 default


def _bleu_from_counts(matches: list[int], totals: list[int], hyp_len: int, ref_len: int) -> float:
    """BLEU from per-order clipped matches and hypothesis n-gram counts, with NLTK's method1 smoothing."""
    if matches[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        brevity = 1.0
    else:
        brevity = math.exp(1.0 - ref_len / hyp_len)
    weight = 1.0 / len(matches)
    log_sum = 0.0
    for match, total in zip(matches, totals):
        # NLTK keeps the denominator at least 1, so a hypothesis shorter than n still gets 0.1 / 1.
        denominator = max(1, total)
        precision = match / denominator if match else SMOOTHING_EPSILON / denominator
        log_sum += weight * math.log(precision)
    return brevity * math.exp(log_sum)


def _closest_length(lengths: Sequence[int], hyp_len: int) -> int:
    return min(lengths, key=lambda length: (abs(length - hyp_len), length))


def sentence_bleu(hypothesis: Tokens, references: Sequence[Tokens], *, max_n: int = 4) -> float:
    """BLEU-`max_n` of one hypothesis against several references, smoothed as NLTK's method1."""
    if not references:
        raise ValueError("sentence_bleu needs at least one reference, got none")
    matches, totals = [], []
    for n in range(1, max_n + 1):
        hyp_counts = Counter(ngrams(hypothesis, n))
        ref_max: Counter = Counter()
        for reference in references:
            ref_max |= Counter(ngrams(reference, n))  # `|` keeps the larger count per n-gram
        matches.append(sum(min(count, ref_max[gram]) for gram, count in hyp_counts.items()))
        totals.append(sum(hyp_counts.values()))
    ref_len = _closest_length([len(reference) for reference in references], len(hypothesis))
    return _bleu_from_counts(matches, totals, len(hypothesis), ref_len)


def sample_indices(size: int, sample_size: int, seed: int) -> list[int]:
    """The indices of the Self-BLEU sample: all when `size <= sample_size`, else a seeded draw, sorted."""
    if sample_size < 2:
        raise ValueError(f"sample_size={sample_size} must be at least 2: each text needs another as reference")
    if size <= sample_size:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), sample_size))


def self_bleu(token_lists: Sequence[Tokens], *, max_n: int = 4, sample_size: int = 100, seed: int = 0) -> float:
    """Mean BLEU-`max_n` of each sampled generation against the other sampled generations, in [0, 1]."""
    scores = self_bleu_scores(token_lists, max_n=max_n, sample_size=sample_size, seed=seed)
    return sum(scores) / len(scores)


def self_bleu_scores(token_lists: Sequence[Tokens], *, max_n: int = 4, sample_size: int = 100,
                     seed: int = 0) -> list[float]:
    """BLEU-`max_n` of each sampled generation against the other sampled generations, in sample order (S).

    Their mean is `self_bleu`; kept apart so the interval (`set_intervals.self_bleu_interval`) can resample the
    hypotheses while each score keeps its full reference pool."""
    check_token_lists(token_lists)
    if len(token_lists) < 2:
        raise ValueError(f"self_bleu needs at least two generations, got {len(token_lists)}")
    if max_n < 1:
        raise ValueError(f"max_n={max_n} must be a positive integer")
    texts = [list(token_lists[i]) for i in sample_indices(len(token_lists), sample_size, seed)]

    # counts[n][i]: n-gram counts of text i; best[n][gram] = [largest count, its text, second-largest count].
    counts = [[Counter(ngrams(tokens, n)) for tokens in texts] for n in range(1, max_n + 1)]
    best: list[dict[tuple, list[int]]] = []
    for per_text in counts:
        table: dict[tuple, list[int]] = {}
        for i, text_counts in enumerate(per_text):
            for gram, count in text_counts.items():
                entry = table.setdefault(gram, [0, -1, 0])
                if count > entry[0]:
                    entry[:] = [count, i, entry[0]]
                elif count > entry[2]:
                    entry[2] = count
        best.append(table)

    lengths = [len(tokens) for tokens in texts]
    scores = []
    for i, tokens in enumerate(texts):
        matches, totals = [], []
        for per_text, table in zip(counts, best):
            match = 0
            for gram, count in per_text[i].items():
                top, top_text, second = table[gram]
                match += min(count, second if top_text == i else top)  # leave text i out of its own references
            matches.append(match)
            totals.append(sum(per_text[i].values()))
        ref_len = _closest_length(lengths[:i] + lengths[i + 1 :], len(tokens))
        scores.append(_bleu_from_counts(matches, totals, len(tokens), ref_len))
    return scores
