"""Golden window layouts on hand-made token lists, for the disjoint and the stride modes.

Tokens are 10, 11, 12, ... so a target's value says its position; P (= -1) is the prefix token.
"""

import pytest

from experiments.windows import Window, check_window_args, continuation_window, rolling_windows

P = -1


def layout(windows):
    return [(list(w.input_ids), list(w.target_ids)) for w in windows]


def test_disjoint_golden_layout():
    # 7 tokens, 3 inputs per window: blocks of 3, 3, 1; the last window re-reads 2 earlier tokens.
    tokens = list(range(10, 17))
    assert layout(rolling_windows(tokens, P, max_length=3)) == [
        ([P, 10, 11], [10, 11, 12]),
        ([12, 13, 14], [13, 14, 15]),
        ([13, 14, 15], [16]),
    ]


def test_disjoint_exact_multiple_and_short_documents():
    assert layout(rolling_windows([10, 11, 12, 13], P, max_length=2)) == [
        ([P, 10], [10, 11]),
        ([11, 12], [12, 13]),
    ]
    assert layout(rolling_windows([10, 11], P, max_length=8)) == [([P, 10], [10, 11])]
    assert layout(rolling_windows([10], P, max_length=1)) == [([P], [10])]
    assert rolling_windows([], P, max_length=4) == []


def test_disjoint_matches_the_harness_layout_for_34_tokens():
    """lm-evaluation-harness's own golden case (max_seq_len=10, context_len=1), recomputed by hand."""
    tokens = list(range(34))
    windows = layout(rolling_windows(tokens, -100, max_length=10))
    assert windows == [
        ([-100, *range(0, 9)], list(range(0, 10))),
        (list(range(9, 19)), list(range(10, 20))),
        (list(range(19, 29)), list(range(20, 30))),
        (list(range(23, 33)), list(range(30, 34))),
    ]


def test_stride_golden_layout():
    # 7 tokens, 4 inputs per window, stride 2: the first window scores 4 tokens, later ones their last 2.
    tokens = list(range(10, 17))
    assert layout(rolling_windows(tokens, P, max_length=4, stride=2)) == [
        ([P, 10, 11, 12], [10, 11, 12, 13]),
        ([11, 12, 13, 14], [14, 15]),
        ([12, 13, 14, 15], [16]),
    ]


def test_stride_one_scores_one_token_per_window_with_full_context():
    tokens = list(range(10, 15))
    assert layout(rolling_windows(tokens, P, max_length=3, stride=1)) == [
        ([P, 10, 11], [10, 11, 12]),
        ([10, 11, 12], [13]),
        ([11, 12, 13], [14]),
    ]


@pytest.mark.parametrize("n, max_length, stride", [(1, 1, 1), (9, 4, 4), (50, 7, 3), (50, 8, 1), (64, 8, 8)])
def test_every_token_is_predicted_once_from_the_tokens_before_it(n, max_length, stride):
    tokens = list(range(100, 100 + n))
    sequence = [P, *tokens]
    predicted = []
    for w in rolling_windows(tokens, P, max_length, stride):
        assert len(w.input_ids) <= max_length
        # Each target is the token that follows its input position in the document.
        offset = len(w.input_ids) - len(w.target_ids)
        for j, target in enumerate(w.target_ids):
            i = tokens.index(target)
            assert list(w.input_ids[: offset + j + 1]) == sequence[i + 1 - (offset + j + 1): i + 1]
        predicted.extend(w.target_ids)
    assert predicted == tokens


def test_stride_equal_to_max_length_is_the_disjoint_mode():
    tokens = list(range(10, 40))
    assert rolling_windows(tokens, P, 6, stride=6) == rolling_windows(tokens, P, 6)


@pytest.mark.parametrize("max_length, stride, message", [
    (0, None, "max_length=0"),
    (4, 5, "stride=5 is larger than max_length=4"),
    (4, 0, "stride=0"),
    (4, -2, "stride=-2"),
])
def test_bad_window_arguments_name_the_parameter(max_length, stride, message):
    with pytest.raises(ValueError, match=message):
        check_window_args(max_length, stride)
    with pytest.raises(ValueError, match=message):
        rolling_windows([1, 2, 3], P, max_length, stride)


def test_continuation_window_cuts_the_prompt_from_the_left():
    assert continuation_window([1, 2, 3], [4, 5], max_length=8, prefix_token=P) == Window((1, 2, 3, 4), (4, 5))
    assert continuation_window([1, 2, 3], [4, 5], max_length=3, prefix_token=P) == Window((2, 3, 4), (4, 5))
    assert continuation_window([], [4, 5], max_length=3, prefix_token=P) == Window((P, 4), (4, 5))
    with pytest.raises(ValueError, match="continuation of 3 tokens does not fit in max_length=2"):
        continuation_window([1], [4, 5, 6], max_length=2, prefix_token=P)
    with pytest.raises(ValueError, match="continuation is empty"):
        continuation_window([1], [], max_length=2, prefix_token=P)
