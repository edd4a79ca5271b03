"""Share of generations that end in a repetition loop (Holtzman et al. 2020, "The Curious Case of Neural
Text Degeneration", Section 4 / Table 1 "Repetition %"; their code: `ari-holtzman/degen`,
`metrics/repetition.py`).

Their detector, which we follow step by step on one token sequence:
1. drop one trailing end-of-text token if present (`eos_token_id`);
2. for every phrase length n = 1..90, count how many times the last n tokens occur back to back at the
   end of the sequence (1 = no repeat);
3. take the phrase length with the most repeats (the shortest one on a tie, as Python's `max` does);
4. the generation "repeats" when that phrase occurs more than once and either it is at least 3 tokens
   long or it occurs more than 50 times.
So "a b a b a b" is *not* a loop (a 2-token phrase repeated only 3 times), while 51 copies of one token are.
Step 3 can pick a short phrase over a longer, real loop: "x y x y ... x y" ending in a 2-gram repeated 30
times is reported as not repeating even though a 4-gram also repeats 15 times. That is their rule, kept so
our numbers mean what theirs do.

The sequence is the model tokenizer's tokens by default (degen uses GPT-2 tokens); see `tokens.py`.
An empty generation does not repeat (degen would crash on it). `repetition_pct` is in percent.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from experiments.metrics.tokens import Tokens, check_token_lists

MAX_PHRASE_LENGTH = 90  # degen's max_n
MIN_PHRASE_LENGTH = 3  # shorter phrases count only when repeated more than MANY_REPEATS times
MANY_REPEATS = 50


def trailing_repeats(tokens: Tokens, n: int) -> int:
    """How many times the last n tokens occur back to back at the end of `tokens` (at least 1 if len >= n)."""
    tail = list(tokens[len(tokens) - n :])
    repeats = 1
    end = len(tokens) - n
    while end - n >= 0 and list(tokens[end - n : end]) == tail:
        repeats += 1
        end -= n
    return repeats


def repeating_loop(
    tokens: Tokens, *, eos_token_id: Hashable | None = None, max_phrase_length: int = MAX_PHRASE_LENGTH
) -> tuple[list, int] | None:
    """The (phrase, times) a generation ends repeating, by degen's rule; None when it does not repeat."""
    tokens = list(tokens)
    if tokens and eos_token_id is not None and tokens[-1] == eos_token_id:
        tokens.pop()
    if not tokens:
        return None
    # degen compares slices of the reversed sequence, so a length beyond the text counts as 1 repeat.
    repeats = [trailing_repeats(tokens, n) if n <= len(tokens) else 1 for n in range(1, max_phrase_length + 1)]
    best = max(range(max_phrase_length), key=lambda i: repeats[i])  # first maximum: the shortest phrase
    length, times = best + 1, repeats[best]
    if times > 1 and (length >= MIN_PHRASE_LENGTH or times > MANY_REPEATS):
        return tokens[len(tokens) - length :], times
    return None


def repetition_pct(
    token_lists: Sequence[Tokens], *, eos_token_id: Hashable | None = None, max_phrase_length: int = MAX_PHRASE_LENGTH
) -> float:
    """Percentage of generations that end in a repetition loop (degen's `n_repeated_examples` / count * 100)."""
    check_token_lists(token_lists)
    if not token_lists:
        raise ValueError("repetition_pct needs at least one generation, got an empty list")
    if max_phrase_length < 1:
        raise ValueError(f"max_phrase_length={max_phrase_length} must be a positive integer")
    looping = sum(
        repeating_loop(tokens, eos_token_id=eos_token_id, max_phrase_length=max_phrase_length) is not None
        for tokens in token_lists
    )
    return 100.0 * looping / len(token_lists)
