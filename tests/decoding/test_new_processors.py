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
from tests.decoding.reference import reference_and_ours
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
    """The order of GenerationMixin._get_logits_processor (transformers 5.24), names of our settings; the samplers
    transformers lacks (llama.cpp's, vLLM's) sit among them without changing their relative order."""
    engines_own = {"allowed_token_ids", "logit_bias", "frequency_penalty", "presence_penalty", "dry_multiplier",
                   "top_n_sigma", "xtc_probability", "mirostat"}
    assert engines_own < set(P.TRANSFORMERS_PROCESSOR_ORDER)
    assert tuple(n for n in P.TRANSFORMERS_PROCESSOR_ORDER if n not in engines_own) == (
        "guidance_scale",
        "sequence_bias", "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length",
        "min_new_tokens", "prefix_allowed_tokens_fn", "forced_bos_token_id", "forced_eos_token_id",
        "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
        "temperature", "top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
        "watermarking_config", "renormalize_logits")


BIASES = {
    "one-token": {(3,): 2.5, (7,): -1.0},
    "multi-token": {(3,): 2.5, (1, 4): -3.0, (2, 2, 4): 1.5, (9, 4): 0.25, (5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6): 4.0},
    "same-last-token": {(4,): 1.0, (1, 4): 2.0, (2, 1, 4): 4.0},
}


def ids_ending_with(length, seed=0):
    """Rows whose ends match some BIASES prefixes: [.., 1], [.., 2, 1], [.., 9], and a free row."""
    ids = ids_of_length(length, seed=seed)
    ids[0, -1] = 1
    ids[1, -min(2, length):] = torch.tensor([2, 1])[-min(2, length):]
    ids[2, -1] = 9
    return ids


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 2, 5])
@pytest.mark.parametrize("kind", sorted(BIASES))
def test_sequence_bias_equals_transformers(seed, length, kind):
    bias = BIASES[kind]
    scores, ids = random_scores(seed), ids_ending_with(length, seed)
    assert_same(P.SequenceBias(bias), T.SequenceBiasLogitsProcessor(dict(bias)), scores, ids)
    as_list = [[list(k), v] for k, v in bias.items()]  # generate's list spelling means the same
    assert_same(P.SequenceBias(as_list), T.SequenceBiasLogitsProcessor(as_list), scores, ids)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eos", [None, [4], [3, 4]])
def test_bad_words_equal_transformers(seed, eos):
    bad = [[3], [4], [1, 4], [2, 1, 6], [9, 9]]
    scores, ids = random_scores(seed), ids_ending_with(4, seed)
    out = assert_same(P.NoBadWords(bad, eos), T.NoBadWordsLogitsProcessor(bad, eos), scores, ids)
    assert torch.isneginf(out[:, 3]).all() == (eos is None or 3 not in eos)
    assert torch.isneginf(out[1, 6])  # row 1 ends with [2, 1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_h", [0.1, 0.4, 0.9, 1.0])
@pytest.mark.parametrize("vocab", [50, 300])
def test_top_h_equals_transformers(seed, top_h, vocab):
    scores, ids = random_scores(seed, vocab=vocab), ids_of_length(3)
    out = assert_same(P.TopH(top_h), T.TopHLogitsWarper(top_h), scores, ids)
    assert torch.isfinite(out).sum(-1).min() >= 1 and torch.isfinite(out).sum(-1).max() <= 100


def allowed_by_parity(batch_id, row):
    """Even tokens after an even last token, odd ones otherwise; batch 1 gets only tokens the scores ban."""
    if batch_id == 1:
        return [5, 6]
    return list(range(int(row[-1]) % 2, 50, 2))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beams", [1, 2])
def test_prefix_allowed_tokens_equals_transformers(seed, beams):
    scores, ids = random_scores(seed), ids_of_length(3)
    scores[2 // beams * beams:(2 // beams + 1) * beams, 5:7] = -math.inf  # batch 1 (beams=2) / row 2 stuck
    out = assert_same(P.PrefixAllowedTokens(allowed_by_parity, beams),
                      T.PrefixConstrainedLogitsProcessor(allowed_by_parity, beams), scores, ids)
    assert torch.isfinite(out).any(-1).all()


def test_prefix_allowed_tokens_without_any_token_is_named():
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn returned no token for batch id 0"):
        P.PrefixAllowedTokens(lambda b, row: [], 1)(ids_of_length(2), random_scores(0))


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("case, mode", [(case, mode) for case in ("sequence_bias", "bad_words_ids",
                                                                  "prefix_allowed_tokens_fn") for mode in SETTINGS]
                         + [("top_h", "sample")])  # top_h is a sampling warper: greedy never applies it
def test_tokens_equal_generate_for_bias_and_constraints(tiny_model, padded_batch, case, mode, cache):
    ids, mask = padded_batch
    base = dict(SETTINGS[mode], max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    free = free_run(tiny_model, ids, mask, **base)
    first = [int(t) for t in free[:, 0]]
    kwargs = {
        "sequence_bias": dict(sequence_bias={(first[0],): -50.0, (int(free[1, 2]), int(free[1, 3])): -50.0,
                                             (11,): 3.0}),
        "bad_words_ids": dict(bad_words_ids=[[first[1]], [int(free[0, 1]), int(free[0, 2])], [1, 2, 3]]),
        "top_h": dict(top_h=0.3, top_k=0),
        "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=lambda batch_id, row: list(range(
            int(row[-1]) % 2, 1000, 2)) if batch_id != 2 else [7]),
    }[case]
    reference, ours = reference_and_ours(tiny_model, ids, mask, cache, **{**base, **kwargs})
    assert torch.equal(reference, ours.sequences), case
    new = ours.new_token_ids
    if case == "sequence_bias":
        assert new[0, 0] != first[0] and not torch.equal(new, free)
    elif case == "bad_words_ids":
        assert new[1, 0] != first[1]
    elif case == "prefix_allowed_tokens_fn":
        assert (new[2] == 7).all()
        rows = torch.cat([ids[:2, -1:], new[:2]], dim=1)  # (2, 1 + N)
        assert ((rows[:, 1:] - rows[:, :-1]) % 2 == 0).all()  # each token has its predecessor's parity


@pytest.mark.parametrize("kwargs", [dict(num_beams=3), dict(num_beams=2, do_sample=True)])
def test_prefix_allowed_tokens_and_bad_words_in_beam_search_equal_generate(tiny_model, padded_batch, kwargs):
    ids, mask = padded_batch
    base = dict(kwargs, max_new_tokens=6, eos_token_id=[], pad_token_id=1, num_return_sequences=2,
                bad_words_ids=[[3], [4, 5]], prefix_allowed_tokens_fn=lambda batch_id, row: list(range(
                    batch_id, 1000, 3)))
    reference, ours = reference_and_ours(tiny_model, ids, mask, "dynamic", **base)
    assert torch.equal(reference, ours.sequences)
    assert ((ours.new_token_ids % 3) == torch.arange(3).repeat_interleave(2)[:, None]).all()


def test_sweep_rows_equal_separate_runs_with_the_new_processors(tiny_model, padded_batch):
    ids, mask = padded_batch
    shared = dict(max_new_tokens=6, eos_token_id=[14], pad_token_id=0, sequence_bias={(11,): 4.0, (3, 4): -2.0},
                  bad_words_ids=[[7], [8, 9]], suppress_tokens=[12], begin_suppress_tokens=[13],
                  forced_eos_token_id=5, exponential_decay_length_penalty=(1, 1.2), renormalize_logits=True,
                  top_h=0.5)  # top_h has no per-row version yet: one value for the whole sweep
    configs = [dict(do_sample=False), dict(do_sample=True, top_k=0), dict(do_sample=True, top_p=0.8)]
    seeds = [None, 1, 2]
    generators = [None if s is None else torch.Generator().manual_seed(s) for s in seeds]
    swept = decoding.generate_sweep(tiny_model, ids, mask, configs=configs, generators=generators, **shared)
    for config, seed, result in zip(configs, seeds, swept):
        alone = decoding.generate(tiny_model, ids, mask, generator=None if seed is None else
                                  torch.Generator().manual_seed(seed), **shared, **config)
        assert torch.equal(result.sequences, alone.sequences)


def test_sweep_refuses_prefix_allowed_tokens_fn(tiny_llama, padded_batch):
    ids, mask = padded_batch
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn=.* is not allowed in a batched sweep"):
        decoding.generate_sweep(tiny_llama, ids, mask, configs=[dict(do_sample=False)], max_new_tokens=2,
                                prefix_allowed_tokens_fn=lambda b, row: [1])


def test_row_top_h_equals_top_h_on_each_row_bit_for_bit():
    from decoding.processors.rows import RowTopH

    scores = torch.cat([random_scores(seed, rows=2, vocab=300) for seed in range(3)])  # (6, V)
    values = [0.2, 0.2, 0.7, 0.7, 1.0, 1.0]
    used = torch.tensor([True, True, True, True, False, False])
    out = RowTopH(torch.tensor(values, dtype=torch.float32)[:, None], used)(ids_of_length(2, rows=6), scores)
    for r, (value, on) in enumerate(zip(values, used)):
        expected = P.TopH(value)(None, scores[r:r + 1]) if on else scores[r:r + 1]
        assert torch.equal(out[r:r + 1], expected), r


def test_sweep_varying_top_h_equals_separate_runs(tiny_model, padded_batch):
    ids, mask = padded_batch
    shared = dict(max_new_tokens=6, eos_token_id=[], pad_token_id=0, do_sample=True, top_k=0)
    configs = [dict(top_h=0.2), dict(top_h=0.9, temperature=1.5), dict(top_p=0.9), dict(do_sample=False)]
    seeds = [3, 4, 5, None]
    generators = [None if s is None else torch.Generator().manual_seed(s) for s in seeds]
    swept = decoding.generate_sweep(tiny_model, ids, mask, configs=configs, generators=generators, **shared)
    for config, seed, result in zip(configs, seeds, swept):
        alone = decoding.generate(tiny_model, ids, mask, generator=None if seed is None else
                                  torch.Generator().manual_seed(seed), **{**shared, **config})
        assert torch.equal(result.sequences, alone.sequences)


@pytest.mark.parametrize("kwargs", [dict(num_beams=3), dict(num_beams=2, do_sample=True, top_k=10)])
def test_beam_search_with_bans_forced_eos_and_renormalized_scores_equals_generate(tiny_model, padded_batch,
                                                                                    kwargs):
    ids, mask = padded_batch
    base = dict(kwargs, max_new_tokens=6, eos_token_id=[9], pad_token_id=1, suppress_tokens=[3, 4],
                begin_suppress_tokens=[5], forced_eos_token_id=9, renormalize_logits=True,
                sequence_bias={(6,): 1.5}, exponential_decay_length_penalty=(2, 1.3), remove_invalid_values=True)
    reference, ours = reference_and_ours(tiny_model, ids, mask, "dynamic", **base)
    assert torch.equal(reference, ours.sequences)
    assert not torch.isin(ours.new_token_ids, torch.tensor([3, 4])).any()


SMOLLM2_CASES = {
    "bans_and_bias": dict(do_sample=False, suppress_tokens=[28, 30], begin_suppress_tokens=[253],
                          bad_words_ids=[[260], [314, 1196]], sequence_bias={(30,): -5.0, (11,): 2.0}),
    "sample_top_h_decay": dict(do_sample=True, top_k=0, top_h=0.6, exponential_decay_length_penalty=(3, 1.3),
                               renormalize_logits=True, forced_eos_token_id=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SMOLLM2_CASES))
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_tokens_equal_generate_on_smollm2(smollm2, case, cache):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,", "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, cache,
                                         max_new_tokens=12, **SMOLLM2_CASES[case])
    assert torch.equal(reference, ours.sequences)
