"""The processors for token bans, forced tokens and score conditioning, against transformers' own.

(a) Each class equals the transformers processor of the same name on random score tensors (with -inf, ties
and extreme scales), at the steps where it acts and where it does not, and never changes its input.
(b) The generate keyword gives the tokens `model.generate` gives, on a left-padded batch, tiny Llama and
GPT-2, dynamic and static cache; each case also checks that the setting changed something where it should.
"""

import math

import pytest
import torch
from transformers.generation import logits_process as T

import decoding
from decoding import processors as P


def random_scores(seed, rows=4, vocab=50):
    """(rows, vocab) float32 scores: normal, with -inf entries, a tied pair, and one row at an extreme scale."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=g) * 3
    scores[torch.rand(rows, vocab, generator=g) < 0.2] = -math.inf
    scores[:, 1] = scores[:, 2]  # ties
    scores[-1] *= 1e4 if seed % 2 else 1e-4
    return scores


def ids_of_length(length, rows=4, seed=0):
    return torch.randint(0, 50, (rows, length), generator=torch.Generator().manual_seed(seed))


def assert_same(ours, theirs, scores, input_ids):
    """Ours equals theirs bit for bit (NaN-free inputs), and our call left both inputs as they were."""
    before_scores, before_ids = scores.clone(), input_ids.clone()
    out = ours(input_ids, scores)
    assert torch.equal(scores, before_scores) and torch.equal(input_ids, before_ids)
    expected = theirs(input_ids.clone(), scores.clone())
    assert torch.equal(out, expected)
    return out


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_suppress_tokens_equals_transformers(seed):
    tokens = [0, 2, 17, 49, 75]  # 75 lies outside the vocabulary: it matches nothing, in both
    scores, ids = random_scores(seed), ids_of_length(3)
    out = assert_same(P.SuppressTokens(tokens), T.SuppressTokensLogitsProcessor(tokens), scores, ids)
    assert torch.isneginf(out[:, [0, 2, 17, 49]]).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [4, 5, 6])
def test_begin_suppress_tokens_equals_transformers_only_at_the_begin_index(seed, length):
    tokens = [3, 1]
    scores, ids = random_scores(seed), ids_of_length(length)
    out = assert_same(P.SuppressTokensAtBegin(tokens, 5), T.SuppressTokensAtBeginLogitsProcessor(tokens, 5),
                      scores, ids)
    assert torch.isneginf(out[:, tokens]).all() == (length == 5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 2])
def test_forced_bos_equals_transformers(seed, length):
    scores, ids = random_scores(seed), ids_of_length(length)
    out = assert_same(P.ForcedBOS(7), T.ForcedBOSTokenLogitsProcessor(7), scores, ids)
    assert (out.argmax(-1) == 7).all() == (length == 1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [8, 9, 10])
@pytest.mark.parametrize("eos", [[4], [4, 30]])
def test_forced_eos_equals_transformers_one_step_before_max_length(seed, length, eos):
    scores, ids = random_scores(seed), ids_of_length(length)
    out = assert_same(P.ForcedEOS(10, eos), T.ForcedEOSTokenLogitsProcessor(10, eos), scores, ids)
    if length == 9:
        assert (out[:, eos] == 0).all() and torch.isneginf(out).sum() == out.numel() - len(eos) * out.shape[0]
    else:
        assert torch.equal(out, scores)


@pytest.mark.parametrize("seed", SEEDS)
def test_remove_invalid_values_equals_transformers(seed):
    scores = random_scores(seed)
    scores[0, :3] = torch.tensor([math.nan, math.inf, -math.inf])
    ids = ids_of_length(3)
    before = scores.clone()
    out = P.InfNanRemove()(ids, scores)
    assert torch.equal(scores.isnan(), before.isnan()) and torch.equal(scores.nan_to_num(), before.nan_to_num())
    assert torch.equal(out, T.InfNanRemoveLogitsProcessor()(ids, scores.clone())) and torch.isfinite(out).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_renormalize_logits_equals_transformers(seed):
    scores, ids = random_scores(seed), ids_of_length(3)
    out = assert_same(P.LogitNormalization(), T.LogitNormalization(), scores, ids)
    assert torch.allclose(out.exp().sum(-1), torch.ones(out.shape[0]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [6, 7, 9, 12])
@pytest.mark.parametrize("decay, eos", [((1, 1.5), [4]), ((0, 0.8), [4, 9]), ((2, 3.0), [1, 2])])
def test_exponential_decay_length_penalty_equals_transformers(seed, length, decay, eos):
    scores, ids = random_scores(seed), ids_of_length(length)
    out = assert_same(P.ExponentialDecayLengthPenalty(*decay, eos, 5),
                      T.ExponentialDecayLengthPenalty(decay, eos, 5), scores, ids)
    others = [t for t in range(scores.shape[1]) if t not in eos]
    assert torch.equal(out[:, others], scores[:, others])
    finite = torch.isfinite(scores[:, eos]) & (scores[:, eos] != 0)
    changed = out[:, eos] != scores[:, eos]
    assert torch.equal(changed, finite & (length > 5 + decay[0]))


def reference_and_ours(model, ids, mask, cache, seed=0, **kwargs):
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours


def free_run(model, ids, mask, **kwargs):
    torch.manual_seed(0)
    return decoding.generate(model, ids, mask, **kwargs).new_token_ids  # (B, N)


SETTINGS = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=20)}


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("mode", sorted(SETTINGS))
@pytest.mark.parametrize("case", ["suppress_tokens", "begin_suppress_tokens", "forced_eos_token_id",
                                  "exponential_decay_length_penalty", "remove_invalid_values", "renormalize_logits"])
def test_tokens_equal_generate(tiny_model, padded_batch, case, mode, cache):
    ids, mask = padded_batch
    base = dict(SETTINGS[mode], max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    free = free_run(tiny_model, ids, mask, **base)
    wanted = sorted(set(free[:, 0].tolist()))  # the tokens the rows pick first
    kwargs = {
        "suppress_tokens": dict(suppress_tokens=sorted(set(free.flatten().tolist()))[:6]),
        "begin_suppress_tokens": dict(begin_suppress_tokens=wanted),
        "forced_eos_token_id": dict(forced_eos_token_id=[5, 6]),
        "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(2, 1.6),
                                                 eos_token_id=[int(free[0, 6])]),
        "remove_invalid_values": dict(remove_invalid_values=True),
        "renormalize_logits": dict(renormalize_logits=True),
    }[case]
    reference, ours = reference_and_ours(tiny_model, ids, mask, cache, **{**base, **kwargs})
    assert torch.equal(reference, ours.sequences), case
    new = ours.new_token_ids
    if case == "suppress_tokens":
        assert not torch.isin(new, torch.tensor(kwargs["suppress_tokens"])).any()
    elif case == "begin_suppress_tokens":
        assert not torch.isin(new[:, 0], torch.tensor(wanted)).any()
    elif case == "forced_eos_token_id":
        assert torch.isin(new[:, -1], torch.tensor([5, 6])).all() and torch.equal(new[:, :-1], free[:, :-1])
        if mode == "greedy":
            assert (new[:, -1] == 5).all()  # both score 0: argmax takes the lower id


def test_exponential_decay_ends_rows_earlier_than_without(tiny_model, padded_batch):
    ids, mask = padded_batch
    base = dict(do_sample=False, max_new_tokens=12, pad_token_id=0)
    eos = int(free_run(tiny_model, ids, mask, eos_token_id=[], **base)[0, 10])
    without = decoding.generate(tiny_model, ids, mask, eos_token_id=[eos], **base)
    reference, ours = reference_and_ours(tiny_model, ids, mask, "dynamic", eos_token_id=[eos],
                                         exponential_decay_length_penalty=(1, 4.0), **base)
    assert torch.equal(reference, ours.sequences)
    assert ours.new_token_mask.sum() < without.new_token_mask.sum()


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_forced_bos_on_one_token_prompts_equals_generate(tiny_model, cache):
    ids = torch.tensor([[11], [21], [31]])
    mask = torch.ones_like(ids)
    base = dict(do_sample=False, max_new_tokens=4, eos_token_id=[], pad_token_id=0)
    reference, ours = reference_and_ours(tiny_model, ids, mask, cache, forced_bos_token_id=9,
                                         begin_suppress_tokens=[9], **base)
    assert torch.equal(reference, ours.sequences)
    assert (ours.new_token_ids[:, 0] == 9).all()  # forced; begin_suppress_tokens then acts one step later
    assert not (ours.new_token_ids[:, 1] == 9).any()


def test_new_processors_sit_where_generate_puts_them():
    order = P.TRANSFORMERS_PROCESSOR_ORDER
    expected = ["min_new_tokens", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
                "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "temperature"]
    assert list(order[order.index("min_new_tokens"):order.index("temperature") + 1]) == expected
    assert order[-1] == "renormalize_logits"
