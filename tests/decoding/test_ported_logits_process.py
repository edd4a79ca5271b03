"""transformers' own logits-processor cases, ported to decodelab's classes.

Source: huggingface/transformers `tests/generation/test_logits_process.py` (read at commit 019af3ac; the cases of
the processors that transformers 5.24, as installed, has): the same inputs and the same expected outputs, written
against our API. Random ids (`ids_tensor` there) are drawn from a seeded generator here: the cases do not depend
on their values. transformers' `filter_value=0.0` variants count the filtered entries; ours always filter with
-inf, so the same entries are counted as -inf. `prompt_ignore_length=n` is our `prompt_start` of n on every row.
The suppress_tokens / begin_suppress_tokens cases come from `tests/generation/test_configuration_utils.py`
(test_logits_process.py has none).
"""

# Not ported: Encoder* (enc-dec), Whisper, Bark, Dia, SynthID, normalized rep. penalty (post-5.24), CFG, watermark

import math

import pytest
import torch

from decoding import processors as P


def uniform(rows, vocab):
    return torch.ones((rows, vocab), dtype=torch.float) / vocab


def random_ids(rows, length, vocab=20, seed=0):
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


def ramp(rows, vocab, offset=0.0):
    """(rows, vocab) logits 0, 1, ..., vocab - 1 (minus `offset`), transformers' ramp_logits."""
    return torch.arange(vocab, dtype=torch.float).unsqueeze(0).repeat(rows, 1) - offset


def extreme_ramp(rows=2, vocab=10):
    """The ramp centred on 0, the second row 100 times steeper: one token holds all of its mass."""
    logits = ramp(rows, vocab, offset=vocab // 2)
    logits[1] = logits[1] * 100.0
    return logits


def finite_count(scores):
    return torch.isfinite(scores).sum(dim=-1).tolist()


def unchanged_input(processor, input_ids, scores):
    """Apply, and check that neither input changed (transformers' 'should not change logits in-place')."""
    before_ids = None if input_ids is None else input_ids.clone()
    before = scores.clone()
    out = processor(input_ids, scores)
    assert torch.equal(scores, before) and (input_ids is None or torch.equal(input_ids, before_ids))
    return out


def test_min_length():
    processor = P.MinLength(10, [0])
    out = processor(random_ids(4, 5), uniform(4, 20))
    assert out[:, 0].tolist() == 4 * [-math.inf]
    assert not torch.isinf(processor(random_ids(4, 15), uniform(4, 20))).any()


@pytest.mark.parametrize("eos", [[0], [0, 18]])
def test_min_new_tokens(eos):
    processor = P.MinNewTokens(prompt_length=5, min_new_tokens=3, eos_token_id=eos)
    assert processor.prompt_length == 5
    for length in (5, 2, 6, 7):  # fewer than 3 new tokens after the 5-token prompt (or not even the prompt)
        out = processor(random_ids(4, length), uniform(4, 20))
        assert out[:, eos].flatten().tolist() == 4 * len(eos) * [-math.inf]
    for length in (8, 15):
        assert not torch.isinf(processor(random_ids(4, length), uniform(4, 20))).any()


def test_temperature_sharpens_below_one_and_smooths_above():
    scores = uniform(2, 20)
    scores[1, 5] = 1 / 20 + 0.1  # peak
    scores[1, 10] = 1 / 20 - 0.4  # valley
    probs = scores.softmax(-1)
    sharp = unchanged_input(P.Temperature(0.5), None, scores).softmax(-1)
    smooth = unchanged_input(P.Temperature(1.3), None, scores).softmax(-1)
    torch.testing.assert_close(probs[0], sharp[0], rtol=1e-3, atol=1e-3)  # uniform stays uniform
    torch.testing.assert_close(probs[0], smooth[0], rtol=1e-3, atol=1e-3)
    assert probs[1].max() < sharp[1].max() and probs[1].min() > sharp[1].min()
    assert probs[1].max() > smooth[1].max() and probs[1].min() < smooth[1].min()
    assert not torch.equal(P.Temperature(1.3)(None, scores), scores)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_not_above_zero_is_refused(temperature):
    # transformers raises ValueError and, for 0, points to greedy decoding (do_sample=False)
    with pytest.raises(ValueError, match=r"temperature=.*do_sample=False"):
        P.Temperature(temperature)


def repetition_scores():
    scores = uniform(2, 10)
    scores[0, 0] = -(1 / 10)
    scores[1, 5] = 4 / 10
    return scores


def assert_penalized_by_two(out):
    assert out[0, 0].item() == pytest.approx(-(1 / 10) * 2)
    assert out[0, 1].item() == pytest.approx((1 / 10) / 2)
    assert out[1, 0].item() == pytest.approx((1 / 10) / 2)
    assert out[1, 5].item() == pytest.approx((4 / 10) / 2)


def test_repetition_penalty():
    ids = torch.tensor([[0, 1], [5, 0]])
    scores = repetition_scores()
    out = unchanged_input(P.RepetitionPenalty(2.0), ids, scores)
    assert_penalized_by_two(out)
    assert not torch.equal(out, scores)


def test_repetition_penalty_ignoring_the_whole_input_changes_nothing():
    ids = torch.tensor([[0, 1], [5, 0]])
    scores = repetition_scores()
    assert torch.equal(P.RepetitionPenalty(2.0, prompt_start=torch.tensor([2, 2]))(ids, scores), scores)


def test_repetition_penalty_counts_only_the_ids_after_the_ignored_prompt():
    ids = torch.tensor([[0, 1, 0, 1], [5, 0, 5, 0]])  # the same tokens again, after the 2 ignored ones
    scores = repetition_scores()
    out = unchanged_input(P.RepetitionPenalty(2.0, prompt_start=torch.tensor([2, 2])), ids, scores)
    assert_penalized_by_two(out)


def test_top_k():
    logits = ramp(2, 10)
    logits[1:, :5] = logits[1:, :5] + 10
    out = unchanged_input(P.TopK(3), None, logits)
    assert torch.isinf(out[0]).tolist() == 7 * [True] + 3 * [False]
    assert torch.isinf(out[1]).tolist() == 2 * [True] + 3 * [False] + 5 * [True]
    safety = P.TopK(1, min_tokens_to_keep=3)
    assert torch.isinf(safety(None, uniform(2, 5))).sum(-1).tolist() == [0, 0]  # uniform: nothing filtered
    assert torch.isinf(safety(None, ramp(2, 5))).sum(-1).tolist() == [2, 2]  # min_tokens_to_keep overrides k


def test_top_p():
    dist = torch.log(torch.tensor([[0.3, 0.1, 0.1, 0.5], [0.15, 0.3, 0.3, 0.25]]))
    out = unchanged_input(P.TopP(0.8), None, dist)
    torch.testing.assert_close(out.exp(), torch.tensor([[0.3, 0.0, 0.0, 0.5], [0.0, 0.3, 0.3, 0.25]]),
                               rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, dist)
    # the steep row would keep one token; min_tokens_to_keep=2 keeps two
    assert finite_count(P.TopP(0.9, min_tokens_to_keep=2)(None, extreme_ramp())) == [3, 2]


def test_min_p():
    dist = torch.log(torch.tensor([
        [0.9, 0.0274, 0.047, 0.0274],  # 0.047 > 0.9 * 0.05: two tokens stay
        [0.15, 0.3, 0.3, 0.25],  # no dominant token: all stay
        [0.97, 0.01, 0.01, 0.01],  # only the first
    ]))
    out = unchanged_input(P.MinP(0.05), None, dist)
    expected = torch.tensor([[0.9, 0.0, 0.047, 0.0], [0.15, 0.3, 0.3, 0.25], [0.97, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out.exp(), expected, rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, dist)
    assert finite_count(P.MinP(0.9, min_tokens_to_keep=2)(None, extreme_ramp())) == [2, 2]


def test_typical():
    dist = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.4, 0.2, 0.2, 0.2]]))
    out = unchanged_input(P.Typical(0.5), None, dist)
    torch.testing.assert_close(out.exp(), torch.tensor([[0.97, 0.0, 0.0, 0.0], [0.0, 0.2, 0.2, 0.2]]),
                               rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, dist)
    assert torch.isinf(P.Typical(0.5, min_tokens_to_keep=3)(None, uniform(2, 5))).sum(-1).tolist() == [0, 0]
    assert finite_count(P.Typical(0.7, min_tokens_to_keep=2)(None, extreme_ramp())) == [2, 2]


def test_epsilon_cutoff():
    dist = torch.log(torch.tensor([[0.87, 0.099, 0.001, 0.03], [0.4, 0.299, 0.101, 0.2]]))
    out = unchanged_input(P.EpsilonCutoff(0.1), None, dist)
    torch.testing.assert_close(out.exp(), torch.tensor([[0.87, 0, 0, 0], [0.4, 0.299, 0.101, 0.2]]),
                               rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, dist)
    assert finite_count(P.EpsilonCutoff(5e-2, min_tokens_to_keep=2)(None, extreme_ramp())) == [3, 2]


def test_eta_cutoff():
    dist = torch.log(torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.01, 0.04, 0.9, 0.05]]))
    out = unchanged_input(P.EtaCutoff(0.0625), None, dist)
    # cutoffs min(0.0625, sqrt(0.0625) * exp(-H)): 0.0625 on both rows (0.1320 and 0.1644 are larger)
    torch.testing.assert_close(out.exp(), torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.9, 0.0]]),
                               rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, dist)
    assert finite_count(P.EtaCutoff(0.1, min_tokens_to_keep=2)(None, extreme_ramp())) == [2, 2]


def test_no_repeat_ngram():
    ids = torch.tensor([[1, 1, 2, 1], [0, 1, 0, 1]])
    scores = uniform(2, 3)
    two = unchanged_input(P.NoRepeatNGram(2), ids, scores)
    three = unchanged_input(P.NoRepeatNGram(3), ids, scores)
    assert torch.isinf(two).tolist() == [[False, True, True], [True, False, False]]  # (1, 1), (1, 2); (1, 0)
    assert torch.isinf(three).tolist() == [[False, False, False], [True, False, False]]  # -; (0, 1, 0)


def test_no_repeat_ngram_ban_survives_a_later_ngram_ending_in_the_same_token():
    # (1, 2, 5) repeats the (1, 2) suffix and bans 5; (7, 8, 5) ends in 5 too and must not lift the ban
    out = P.NoRepeatNGram(3)(torch.tensor([[1, 2, 5, 7, 8, 5, 1, 2]]), uniform(1, 10))
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [5]


def test_no_repeat_ngram_on_rows_shorter_than_the_ngram():
    out = P.NoRepeatNGram(3)(torch.tensor([[1, 2], [0, 1]]), uniform(2, 3))
    assert not torch.isinf(out).any()


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
    assert not torch.equal(out, scores)


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


def test_processor_list_equals_the_processors_one_after_another():
    ids = random_ids(4, 10, vocab=15)
    ids_before = ids.clone()
    steps = [P.MinLength(10, [0]), P.Temperature(0.5), P.RepetitionPenalty(2.0), P.TopK(3), P.TopP(0.8),
             P.NoRepeatNGram(2), P.NoBadWords([[1]], eos_token_id=[0])]
    one_by_one = uniform(4, 15)
    for step in steps:
        one_by_one = step(ids, one_by_one)
    torch.testing.assert_close(P.ProcessorList(steps)(ids, uniform(4, 15)), one_by_one, rtol=1e-3, atol=1e-3)
    assert ids.tolist() == ids_before.tolist()


def test_suppress_tokens_keep_their_ids():
    # test_configuration_utils.py: test_serialize_generation_suppress_tokens
    processor = P.SuppressTokens([220, 50256])
    assert list(processor.suppress_tokens) == [220, 50256]
    out = processor(random_ids(2, 3), uniform(2, 50257))
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [220, 50256, 220, 50256]


def test_begin_suppress_tokens_keep_their_ids_and_begin_index():
    # test_configuration_utils.py: test_serialize_generation_begin_suppress_tokens
    processor = P.SuppressTokensAtBegin([220, 50256], begin_index=0)
    assert list(processor.begin_suppress_tokens) == [220, 50256] and processor.begin_index == 0
    assert torch.isinf(processor(random_ids(2, 0), uniform(2, 50257))).sum().item() == 4  # at the begin index
    assert not torch.isinf(processor(random_ids(2, 1), uniform(2, 50257))).any()  # and only there
