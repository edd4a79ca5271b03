"""Holtzman et al.'s loop detector on hand-made token sequences, quirks included."""

import pytest

from experiments.metrics.repetition import repeating_loop, repetition_pct, trailing_repeats


def test_trailing_repeats_counts_back_to_back_copies_at_the_end():
    assert trailing_repeats([9, 1, 2, 1, 2, 1, 2], 2) == 3
    assert trailing_repeats([1, 2, 3], 1) == 1
    assert trailing_repeats([5, 5, 5], 1) == 3


def test_a_three_token_phrase_twice_is_a_loop():
    assert repeating_loop([1, 2, 3, 1, 2, 3]) == ([1, 2, 3], 2)
    assert repeating_loop([9, 8, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == ([1, 2, 3], 3)


def test_short_phrases_need_more_than_fifty_repeats():
    assert repeating_loop([1, 2] * 3) is None  # 2-token phrase, 3 times
    assert repeating_loop([7] * 50) is None  # 1 token 50 times: not more than 50
    assert repeating_loop([7] * 51) == ([7], 51)


def test_the_shortest_most_repeated_phrase_decides():
    # "1 2" repeats 30 times, "1 2 1 2" 15 times: the 2-token phrase wins the max and is too short to count.
    assert repeating_loop([1, 2] * 30) is None
    assert repeating_loop([1, 2] * 51) == ([1, 2], 51)


def test_a_trailing_end_of_text_token_is_ignored():
    tokens = [1, 2, 3, 1, 2, 3, 0]
    assert repeating_loop(tokens) is None
    assert repeating_loop(tokens, eos_token_id=0) == ([1, 2, 3], 2)


def test_non_repeating_and_empty_sequences():
    assert repeating_loop([1, 2, 3, 4, 5]) is None
    assert repeating_loop([]) is None
    assert repeating_loop([0], eos_token_id=0) is None


def test_phrases_longer_than_the_limit_are_not_seen():
    phrase = list(range(10))
    assert repeating_loop(phrase * 2) == (phrase, 2)
    assert repeating_loop(phrase * 2, max_phrase_length=9) is None


def test_repetition_pct_is_the_share_of_looping_generations():
    texts = [[1, 2, 3, 1, 2, 3], [1, 2, 1, 2], [], [5] * 60]
    assert repetition_pct(texts) == pytest.approx(50.0)


def test_repetition_pct_rejects_an_empty_set():
    with pytest.raises(ValueError, match="at least one generation"):
        repetition_pct([])
