import pytest

from experiments.metrics.tokens import check_token_lists, ngrams, tokenize


def test_ngrams_of_a_short_sequence():
    assert ngrams([1, 2, 3], 2) == [(1, 2), (2, 3)]
    assert ngrams([1, 2, 3], 3) == [(1, 2, 3)]
    assert ngrams([1, 2], 3) == []  # shorter than n: none
    assert ngrams([], 1) == []


def test_ngrams_rejects_non_positive_n():
    with pytest.raises(ValueError, match="n=0"):
        ngrams([1, 2], 0)


def test_whitespace_tokenization_splits_words():
    assert tokenize(["a  b\nc", ""], tokenization="whitespace") == [["a", "b", "c"], []]


def test_model_tokenization_adds_no_special_tokens(tokenizer):
    ids = tokenize(["Hello world", ""], tokenizer)
    assert ids[0] == tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    assert ids[1] == []
    assert tokenizer.bos_token_id not in ids[0]


def test_model_tokenization_needs_a_tokenizer():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        tokenize(["a"], None)


def test_unknown_tokenization_is_rejected():
    with pytest.raises(ValueError, match="tokenization='chars'"):
        tokenize(["a"], tokenization="chars")


def test_raw_strings_are_not_token_lists():
    with pytest.raises(TypeError, match="tokenize the texts first"):
        check_token_lists(["a b c"])
    with pytest.raises(TypeError):
        tokenize("a b c", tokenization="whitespace")
