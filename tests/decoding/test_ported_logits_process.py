"""transformers' own logits-processor cases for the new processors, ported to decodelab's classes.

Source: huggingface/transformers `tests/generation/test_logits_process.py` (the tests of NoBadWords,
SequenceBias, PrefixConstrained, ForcedBOS/EOS, InfNanRemove, ExponentialDecayLengthPenalty,
LogitNormalization and TopH): the same inputs and the same expected outputs, written against our API. Random ids
(`ids_tensor` there) are drawn from a seeded generator here: the cases do not depend on their values.
"""

import math

import pytest
import torch

from decoding import processors as P


def uniform(rows, vocab):
    return torch.ones((rows, vocab), dtype=torch.float) / vocab


def random_ids(rows, length, vocab=20, seed=0):
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


ROWS = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])


def test_bad_words_ban_completions_but_never_eos_alone():
    scores = uniform(2, 5)
    out = P.NoBadWords([[1], [4], [1, 0], [0, 1, 2], [1, 3, 1, 3]], eos_token_id=[4])(ROWS, scores)
    # row 0 may not take 0, 1, 3; row 1 may not take 0, 1, 2; 4 is EOS and stays allowed
    assert torch.isinf(out).tolist() == [[True, True, False, True, False], [True, True, True, False, False]]
    assert not torch.equal(scores, out)
    assert torch.equal(P.NoBadWords([[4]], eos_token_id=[4])(ROWS, scores), scores)


def test_sequence_bias_adds_where_the_row_ends_with_the_prefix():
    bias = {(1,): 100.0, (4,): 100.0, (1, 0): -100.0, (0, 1, 2): -100.0, (1, 3, 1, 3): -100.0,
            (1, 3, 1, 3, 1, 3): -100.0}  # the last two end alike: overlapping terminations are handled
    scores = torch.zeros((2, 5))
    out = P.SequenceBias(bias)(ROWS, scores)
    assert out.tolist() == [[-100.0, 100.0, 0.0, -100.0, 100.0], [-100.0, 100.0, -100.0, 0.0, 100.0]]


def test_prefix_constrained_keeps_each_batch_ids_allowed_tokens():
    scores = uniform(2, 5)
    out = P.PrefixAllowedTokens(lambda batch_id, row: [[0, 1], [2, 3]][batch_id], 1)(ROWS, scores)
    assert torch.isinf(out).tolist() == [[False, False, True, True, True], [True, True, False, False, True]]
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn returned no token"):
        P.PrefixAllowedTokens(lambda batch_id, row: [], 1)(ROWS, scores)


def test_forced_bos_at_length_one_only():
    out = P.ForcedBOS(0)(random_ids(4, 1), uniform(4, 20))
    assert torch.isneginf(out[:, 1:]).all() and out[:, 0].tolist() == 4 * [0]
    assert not torch.isinf(P.ForcedBOS(0)(random_ids(4, 4), uniform(4, 20))).any()


def test_forced_eos_one_step_before_max_length():
    processor = P.ForcedEOS(5, [0])
    out = processor(random_ids(4, 4), uniform(4, 20))
    assert torch.isneginf(out[:, 1:]).all() and out[:, 0].tolist() == 4 * [0]
    assert not torch.isinf(processor(random_ids(4, 3), uniform(4, 20))).any()


def test_remove_nan_and_inf():
    scores = torch.tensor([[0.0, 0.7, 0.8, math.nan], [0.1, math.inf, 0.3, -math.inf]])
    out = P.InfNanRemove()(random_ids(2, 4), scores)
    info = torch.finfo(out.dtype)
    expected = torch.tensor([[0.0, 0.7, 0.8, 0.0], [0.1, info.max, 0.3, info.min]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_exponential_decay_raises_eos_after_the_start_also_when_negative():
    processor = P.ExponentialDecayLengthPenalty(5, 1.1, [0], prompt_length=2)
    scores = uniform(4, 20)
    assert processor(random_ids(4, 2), scores)[:, 0].tolist() == scores[:, 0].tolist()
    assert (processor(random_ids(4, 20), scores)[:, 0] > scores[:, 0]).all()
    negative = -uniform(4, 20)
    assert (processor(random_ids(4, 20), negative)[:, 0] > negative[:, 0]).all()


def test_normalization_gives_log_probabilities():
    scores = torch.tensor([[-23.18, -29.96, -43.54, 47.77], [-33.58, -26.87, -32.96, 22.51]])
    probs = P.LogitNormalization()(None, scores).exp()
    assert probs.sum(-1).allclose(torch.ones(2)) and probs.allclose(scores.softmax(-1))


@pytest.mark.parametrize("probs, top_h, expected", [
    ([0.97, 0.01, 0.01, 0.01], 0.3, [0.97, 0.0, 0.0, 0.0]),  # peaked: only the top token
    ([0.4, 0.3, 0.2, 0.1], 0.7, [0.4, 0.3, 0.0, 0.0]),  # the entropy budget holds two tokens
    ([0.25, 0.25, 0.25, 0.25], 1.0, [0.25, 0.25, 0.25, 0.25]),  # uniform, the whole budget: all
    ([0.75, 0.25, 0.0, 0.0], 0.4, [0.75, 0.0, 0.0, 0.0]),  # zero-probability tokens
])
def test_top_h_keeps_the_entropy_budget(probs, top_h, expected):
    scores = torch.log(torch.tensor([probs]))
    before = scores.clone()
    out = P.TopH(top_h)(None, scores).exp()
    torch.testing.assert_close(out, torch.tensor([expected]), rtol=1e-3, atol=1e-3)
    assert torch.equal(scores, before)
