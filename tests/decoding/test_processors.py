"""Each logits processor on hand-made logits: which positions become -inf, and the input is left unchanged.

Ramp logits: row scores are log([1, 2, ..., V]) - so softmax probabilities are proportional to 1..V and the
expected cut-offs can be computed by hand.
"""

import math

import pytest
import torch

from decoding import processors as P
from decoding.params import resolve_params


def ramp(vocab=10, rows=1):
    """(rows, vocab) logits with probabilities proportional to 1, 2, ..., vocab."""
    return torch.log(torch.arange(1, vocab + 1, dtype=torch.float32)).repeat(rows, 1)


def kept(scores):
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def apply_checked(processor, scores, input_ids=None):
    """Apply and assert the processor did not modify its inputs in place."""
    input_ids = input_ids if input_ids is not None else torch.zeros((scores.shape[0], 1), dtype=torch.long)
    before_scores, before_ids = scores.clone(), input_ids.clone()
    out = processor(input_ids, scores)
    assert torch.equal(scores, before_scores) and torch.equal(input_ids, before_ids)
    return out


def test_top_k_keeps_k_highest():
    assert kept(apply_checked(P.TopK(3), ramp())) == [7, 8, 9]


def test_top_k_keeps_ties_at_cutoff():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert kept(apply_checked(P.TopK(2), scores)) == [1, 2, 3]


def test_top_p_smallest_set_reaching_mass():
    # probabilities (1..10)/55: the top 3 hold 27/55 = 0.49, the top 4 hold 34/55 = 0.62.
    assert kept(apply_checked(P.TopP(0.5), ramp())) == [6, 7, 8, 9]
    assert kept(apply_checked(P.TopP(0.49), ramp())) == [7, 8, 9]
    assert kept(apply_checked(P.TopP(1.0), ramp())) == list(range(10))


def test_top_p_min_tokens_to_keep():
    assert kept(apply_checked(P.TopP(0.01, min_tokens_to_keep=2), ramp())) == [8, 9]


def test_temperature_scales_logits():
    out = apply_checked(P.Temperature(0.5), ramp())
    assert torch.allclose(out, ramp() * 2)


def test_min_p_relative_to_top_probability():
    # top probability 10/55; min_p 0.35 keeps p >= 3.5/55, i.e. tokens 4..10 (indices 3..9).
    assert kept(apply_checked(P.MinP(0.35), ramp())) == [3, 4, 5, 6, 7, 8, 9]


def test_epsilon_cutoff_absolute_threshold():
    # epsilon 0.06 keeps p = k/55 >= 0.06 -> k >= 3.3 -> indices 3..9
    assert kept(apply_checked(P.EpsilonCutoff(0.06), ramp())) == [3, 4, 5, 6, 7, 8, 9]


def test_eta_cutoff_uses_entropy():
    scores = ramp()
    probs = scores.softmax(-1)[0]
    entropy = -(probs * probs.log()).sum().item()
    eta = min(0.1, math.sqrt(0.1) * math.exp(-entropy))
    expected = [i for i in range(10) if probs[i].item() >= eta]
    assert kept(apply_checked(P.EtaCutoff(0.1), scores)) == expected


def test_typical_keeps_tokens_closest_to_entropy():
    scores = ramp()
    logp = scores.log_softmax(-1)[0]
    entropy = -(logp.exp() * logp).sum()
    order = torch.argsort((-logp - entropy).abs())
    probs = logp.exp()[order]
    # smallest prefix (in typicality order) whose cumulative mass reaches 0.5
    n = int((probs.cumsum(0) < 0.5).sum()) + 1
    assert kept(apply_checked(P.Typical(0.5), scores)) == sorted(order[:n].tolist())


def test_repetition_penalty_divides_positive_multiplies_negative():
    scores = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    out = apply_checked(P.RepetitionPenalty(2.0), scores, torch.tensor([[0, 1, 1]]))
    assert out.tolist() == [[1.0, -4.0, 1.0, 4.0]]


def test_repetition_penalty_ignores_left_padding():
    scores = torch.tensor([[2.0, 2.0, 2.0]])
    out = apply_checked(P.RepetitionPenalty(2.0, prompt_start=torch.tensor([2])), scores,
                        torch.tensor([[0, 0, 1]]))
    assert out.tolist() == [[2.0, 1.0, 2.0]]  # token 0 sat in pad slots only


def test_no_repeat_ngram_bans_completing_tokens():
    ids = torch.tensor([[1, 2, 3, 1, 2]])  # bigram (1, 2) seen, followed by 3; trigram prefix (1, 2) -> ban 3
    out = apply_checked(P.NoRepeatNGram(3), torch.zeros((1, 5)), ids)
    assert kept(out) == [0, 1, 2, 4]
    out2 = apply_checked(P.NoRepeatNGram(2), torch.zeros((1, 5)), ids)  # after 2, 3 was seen
    assert kept(out2) == [0, 1, 2, 4]


def test_min_new_tokens_and_min_length_block_eos():
    scores = torch.zeros((1, 5))
    ids = torch.zeros((1, 4), dtype=torch.long)
    assert kept(apply_checked(P.MinNewTokens(3, 2, [4]), scores, ids)) == [0, 1, 2, 3]  # 1 new token < 2
    assert kept(apply_checked(P.MinNewTokens(2, 2, [4]), scores, ids)) == [0, 1, 2, 3, 4]
    assert kept(apply_checked(P.MinLength(5, [1, 4]), scores, ids)) == [0, 2, 3]


@pytest.mark.parametrize("bad", [
    lambda: P.TopK(-1), lambda: P.TopP(0.0), lambda: P.TopP(1.5), lambda: P.Temperature(0.0),
    lambda: P.MinP(1.5), lambda: P.Typical(1.0), lambda: P.EpsilonCutoff(1.0), lambda: P.EtaCutoff(0.0),
    lambda: P.RepetitionPenalty(0.0), lambda: P.NoRepeatNGram(0),
])
def test_processors_validate_their_arguments(bad):
    with pytest.raises(ValueError, match="not allowed"):
        bad()


class _Model:
    class generation_config:  # noqa: N801 - mimics the attribute of a transformers model
        @staticmethod
        def to_dict():
            return {"eos_token_id": 2, "pad_token_id": 2}


def test_builder_order_matches_transformers_and_default_top_k():
    p = resolve_params(_Model(), 4, do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.1,
                       min_new_tokens=2, min_p=0.1, max_new_tokens=5)
    names = [type(proc).__name__ for proc in P.build_processors(p, 4)]
    # min_new_tokens also sets min_length = 2 + 4, so generate builds MinLength beside MinNewTokens, as here
    assert names == ["RepetitionPenalty", "MinLength", "MinNewTokens", "Temperature", "TopK", "TopP", "MinP"]
    assert P.build_processors(p, 4)[4].top_k == 50  # generate's default top_k when sampling


def test_builder_order_comes_from_the_params():
    p = resolve_params(_Model(), 4, do_sample=True, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=5,
                       processor_order=("top_p", "temperature"))
    assert [type(x).__name__ for x in P.build_processors(p, 4)] == ["TopP", "Temperature"]


def test_greedy_builds_no_warpers():
    p = resolve_params(_Model(), 4, max_new_tokens=5)
    assert list(P.build_processors(p, 4)) == []


@pytest.mark.parametrize("ids", [(2,), (0, 49), (-1, 3, 50, 77), (-5, 50), ()])
def test_token_bans_equal_the_vocabulary_mask_they_replace(ids):
    """min_length / min_new_tokens / suppress_tokens write -inf with index_fill_ on a copy (fast); the values
    are those of transformers' where(isin(arange(V), ids), -inf, scores), ids outside [0, V) matching nothing."""
    from decoding.processors.constraints import _forbid

    scores = torch.randn(3, 50)
    scores[1, 4] = float("nan")  # passed through untouched, as by where
    expected = torch.where(torch.isin(torch.arange(50), torch.tensor(ids, dtype=torch.long)), -math.inf, scores)
    out = _forbid(ids, scores)
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(0.0), expected.nan_to_num(0.0))
    assert out.data_ptr() != scores.data_ptr() and scores[0].isfinite().all()  # the input is not written
