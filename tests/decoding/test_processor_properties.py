"""Property tests (hypothesis): every processor equals transformers' processor of the same name, bit for bit.

For each class in decoding/processors (the per-row versions of rows.py included), on score tensors that
hypothesis draws (shapes (1..6, 2..64), -inf entries, ties, scales from 1e-30 to 1e30, rows that are -inf
but for one entry), random input_ids and parameters in their valid ranges:
- the output equals transformers' output (`torch.equal`; inputs NaN-free, except for remove_invalid_values);
- neither `scores` nor `input_ids` is changed in place;
- the truncation warpers keep at least `min_tokens_to_keep` finite entries (where the row has that many).
The per-row processors are checked row by row against transformers' scalar processor applied to that row
alone, and with one value on every row against transformers on the whole batch.

Examples are derandomized (the same ones on every run, no example database) so that CI is reproducible.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.generation import logits_process as T

from decoding import processors as P
from decoding.processors import bias, constraints, normalization, penalties, rows, temperature, truncation
from decoding.processors.base import LogitsProcessor

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALES = (1.0, 3.0, 1e-30, 1e-4, 1e4, 1e30)  # float32 holds all of them (max 3.4e38, smallest normal 1.2e-38)


@st.composite
def score_tensors(draw, rows=None, max_rows=6, max_vocab=64, invalid=False):
    """(B, V) float32 scores, some -inf, each row with a finite entry: normal, tied (few distinct values),
    uniform or ramp rows at one scale from SCALES, or every entry at its own scale.

    Args:
        rows: a fixed B (else drawn in 1..max_rows).
        invalid: also put NaN and +inf entries (for remove_invalid_values).
    """
    b = rows if rows is not None else draw(st.integers(1, max_rows))
    v = draw(st.integers(2, max_vocab))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "ramp", "mixed", "uniform"]))
    if kind == "normal":
        scores = torch.randn(b, v, generator=g) * 3
    elif kind == "ties":  # few distinct values: ties at every cutoff
        scores = torch.randint(-2, 3, (b, v), generator=g).float()
    elif kind == "uniform":  # cumulative masses k / V: top-p's threshold 1 - p falls on them (float32 rounding)
        scores = torch.ones(b, v)
    elif kind == "ramp":
        scores = torch.log(torch.arange(1, v + 1, dtype=torch.float32)).repeat(b, 1)
    else:  # every entry at its own scale: 1e30 beside 1e-30 in one row
        scales = torch.tensor(SCALES)[torch.randint(0, len(SCALES), (b, v), generator=g)]
        scores = torch.randn(b, v, generator=g) * scales
    scores = scores * draw(st.sampled_from(SCALES if kind != "mixed" else (1.0,)))
    share = draw(st.sampled_from([0.0, 0.0, 0.3, 0.7]))
    scores[torch.rand(b, v, generator=g) < share] = -math.inf
    if draw(st.booleans()) and draw(st.booleans()):  # every entry -inf but one per row
        kept = torch.randint(0, v, (b, 1), generator=g)
        scores = torch.full_like(scores, -math.inf).scatter(1, kept, scores.gather(1, kept).nan_to_num(neginf=1.0))
    dead = torch.isneginf(scores).all(dim=-1)  # a row of -inf only has no distribution: give it one entry
    scores[dead, 0] = 0.5
    if invalid:
        scores[torch.rand(b, v, generator=g) < 0.15] = math.nan
        scores[torch.rand(b, v, generator=g) < 0.15] = math.inf
    return scores


@st.composite
def id_tensors(draw, rows, vocab, max_length=12, min_length=1, beyond_vocab=False):
    """(B, L) long ids; often from a few ids only, so that n-grams and biased sequences repeat."""
    length = draw(st.integers(min_length, max_length))
    top = draw(st.sampled_from([min(3, vocab), vocab] + ([vocab + 3] if beyond_vocab else [])))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.randint(0, top, (rows, length), generator=g)


def token_lists(vocab, min_size=1, max_size=4):
    return st.lists(st.integers(0, vocab - 1), min_size=min_size, max_size=max_size)


def check(ours, theirs, input_ids, scores):
    """ours(input_ids, scores) equals theirs bit for bit and changed neither input; returns our output."""
    before_ids = input_ids.clone()
    before_bits = scores.view(torch.int32).clone()  # bits: NaN inputs compare too
    out = ours(input_ids, scores)
    assert torch.equal(input_ids, before_ids), "input_ids changed in place"
    assert torch.equal(scores.view(torch.int32), before_bits), "scores changed in place"
    expected = theirs(input_ids.clone(), scores.clone())
    assert out.dtype == expected.dtype and out.shape == expected.shape
    assert torch.equal(out, expected), (out, expected)
    assert not out.isnan().any()
    return out


def assert_keeps(out, scores, min_tokens_to_keep, by_probability=False):
    """Each row keeps min_tokens_to_keep finite entries, or all it had when it had fewer.

    by_probability: count only the entries of nonzero probability as candidates. Min-p ranks by softmax
    probability, where far-below-the-top entries underflow to 0 and tie with -inf ones: transformers may
    keep a -inf entry among them, which is no loss (it could never be sampled either way).
    """
    candidates = scores.softmax(dim=-1) > 0 if by_probability else torch.isfinite(scores)
    have = candidates.sum(dim=-1)
    kept = torch.isfinite(out).sum(dim=-1)
    assert (kept >= have.clamp(max=min_tokens_to_keep)).all(), (kept, have)


# ---- penalties --------------------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data(), penalty=st.one_of(st.floats(0.05, 10.0), st.sampled_from([0.5, 1.0, 1.3, 2.0])))
def test_repetition_penalty(data, penalty):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], beyond_vocab=True))
    start = None
    if data.draw(st.booleans()):  # left padding per row, as generate passes it
        start = torch.tensor(data.draw(st.lists(st.integers(0, ids.shape[1]), min_size=ids.shape[0],
                                                max_size=ids.shape[0])))
    check(P.RepetitionPenalty(penalty, start),
          T.RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=None if start is None else start.clone()),
          ids, scores)


@PROPERTY
@given(data=st.data(), ngram_size=st.integers(1, 5))
def test_no_repeat_ngram(data, ngram_size):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], beyond_vocab=True))
    check(P.NoRepeatNGram(ngram_size), T.NoRepeatNGramLogitsProcessor(ngram_size), ids, scores)


def prompt_rows_scores(data):
    """A (B0, T) prompt, (B0 * k, T + L) rows continuing it (k rows per prompt adjacent, as generate expands
    samples and beams) and their (B0 * k, V) scores: transformers takes the prompt, ours reads it from each
    row's first T slots. Prompt ids lie in the scores' vocabulary (both index the scores with them)."""
    prompts, k = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    scores = data.draw(score_tensors(rows=prompts * k))
    prompt = data.draw(id_tensors(prompts, scores.shape[1], max_length=8))
    tail = data.draw(id_tensors(prompts * k, scores.shape[1], max_length=6, min_length=0))
    return prompt, torch.cat([prompt.repeat_interleave(k, dim=0), tail], dim=1), scores


@PROPERTY
@given(data=st.data(), penalty=st.one_of(st.floats(0.05, 10.0), st.sampled_from([0.5, 1.3, 2.0])))
def test_encoder_repetition_penalty(data, penalty):
    prompt, ids, scores = prompt_rows_scores(data)
    check(P.EncoderRepetitionPenalty(penalty, prompt.shape[1]),
          T.EncoderRepetitionPenaltyLogitsProcessor(penalty, encoder_input_ids=prompt.clone()), ids, scores)


@PROPERTY
@given(data=st.data(), ngram_size=st.integers(1, 4))
def test_encoder_no_repeat_ngram(data, ngram_size):
    prompt, ids, scores = prompt_rows_scores(data)
    check(P.EncoderNoRepeatNGram(ngram_size, prompt.shape[1]),
          T.EncoderNoRepeatNGramLogitsProcessor(ngram_size, prompt.clone()), ids, scores)


@PROPERTY
@given(data=st.data(), start=st.integers(0, 6), factor=st.floats(0.5, 3.0))
def test_exponential_decay_length_penalty(data, start, factor):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], max_length=20))
    eos = data.draw(token_lists(scores.shape[1], max_size=3))
    prompt_length = data.draw(st.integers(0, ids.shape[1]))
    check(P.ExponentialDecayLengthPenalty(start, factor, eos, prompt_length),
          T.ExponentialDecayLengthPenalty((start, factor), eos, prompt_length), ids, scores)


# ---- constraints ------------------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data(), min_length=st.integers(0, 15))
def test_min_length(data, min_length):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1]))
    eos = data.draw(token_lists(scores.shape[1] + 3, max_size=3))  # an id past the vocabulary matches nothing
    check(P.MinLength(min_length, eos), T.MinLengthLogitsProcessor(min_length, eos), ids, scores)


@PROPERTY
@given(data=st.data(), min_new_tokens=st.integers(0, 6))
def test_min_new_tokens(data, min_new_tokens):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1]))
    eos = data.draw(token_lists(scores.shape[1] + 3, max_size=3))
    prompt_length = data.draw(st.integers(0, ids.shape[1]))
    check(P.MinNewTokens(prompt_length, min_new_tokens, eos),
          T.MinNewTokensLengthLogitsProcessor(prompt_length, min_new_tokens, eos), ids, scores)


def test_min_length_ignores_eos_ids_past_the_vocabulary():
    # Found by test_min_length: ours raised IndexError where transformers' isin mask leaves such an id out.
    scores, ids = torch.zeros((1, 4)), torch.zeros((1, 2), dtype=torch.long)
    for ours, theirs in [(P.MinLength(5, [1, 4]), T.MinLengthLogitsProcessor(5, [1, 4])),
                         (P.MinNewTokens(1, 3, [1, 4]), T.MinNewTokensLengthLogitsProcessor(1, 3, [1, 4]))]:
        out = check(ours, theirs, ids, scores)
        assert torch.isinf(out).tolist() == [[False, True, False, False]]


@PROPERTY
@given(data=st.data())
def test_suppress_tokens(data):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1]))
    tokens = data.draw(token_lists(scores.shape[1] + 5, max_size=6))  # ids past the vocabulary match nothing
    check(P.SuppressTokens(tokens), T.SuppressTokensLogitsProcessor(tokens), ids, scores)


@PROPERTY
@given(data=st.data())
def test_suppress_tokens_at_begin(data):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], max_length=5))
    tokens = data.draw(token_lists(scores.shape[1] + 5, max_size=6))
    begin = data.draw(st.integers(0, 6))
    check(P.SuppressTokensAtBegin(tokens, begin), T.SuppressTokensAtBeginLogitsProcessor(tokens, begin), ids, scores)


@PROPERTY
@given(data=st.data())
def test_forced_bos(data):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], max_length=3))
    bos = data.draw(st.integers(0, scores.shape[1] - 1))
    check(P.ForcedBOS(bos), T.ForcedBOSTokenLogitsProcessor(bos), ids, scores)


@PROPERTY
@given(data=st.data())
def test_forced_eos(data):
    scores = data.draw(score_tensors())
    ids = data.draw(id_tensors(scores.shape[0], scores.shape[1], max_length=6))
    eos = data.draw(token_lists(scores.shape[1], max_size=3))
    max_length = data.draw(st.integers(1, 8))
    check(P.ForcedEOS(max_length, eos), T.ForcedEOSTokenLogitsProcessor(max_length, eos), ids, scores)


@PROPERTY
@given(data=st.data(), prompts=st.integers(1, 3), beams=st.integers(1, 2))
def test_prefix_allowed_tokens(data, prompts, beams):
    scores = data.draw(score_tensors(rows=prompts * beams))
    vocab = scores.shape[1]
    ids = data.draw(id_tensors(prompts * beams, vocab))
    # allowed tokens depend on the batch id and on the row's ids, as a constraint function's do
    table = data.draw(st.lists(st.lists(token_lists(vocab), min_size=2, max_size=2), min_size=prompts,
                               max_size=prompts))

    def allowed(batch_id, row_ids):
        return table[batch_id][int(row_ids.sum()) % 2]

    check(P.PrefixAllowedTokens(allowed, beams), T.PrefixConstrainedLogitsProcessor(allowed, beams), ids, scores)


# ---- bias -------------------------------------------------------------------------------------------------------

def sequences(vocab):
    return st.lists(st.integers(0, min(vocab, 4) - 1), min_size=1, max_size=4).map(tuple)


@PROPERTY
@given(data=st.data(), as_list=st.booleans())
def test_sequence_bias(data, as_list):
    scores = data.draw(score_tensors())
    vocab = scores.shape[1]
    ids = data.draw(id_tensors(scores.shape[0], vocab, max_length=6, beyond_vocab=True))
    biases = data.draw(st.dictionaries(sequences(vocab), st.floats(-100.0, 100.0), min_size=1, max_size=6))
    if as_list:  # generate's other spelling: [[ids], bias] pairs
        biases = [[list(seq), value] for seq, value in biases.items()]
    check(P.SequenceBias(biases), T.SequenceBiasLogitsProcessor(biases), ids, scores)


@PROPERTY
@given(data=st.data())
def test_no_bad_words(data):
    scores = data.draw(score_tensors())
    vocab = scores.shape[1]
    ids = data.draw(id_tensors(scores.shape[0], vocab, max_length=6))
    bad = [list(seq) for seq in data.draw(st.lists(sequences(vocab), min_size=1, max_size=5))]
    eos = data.draw(st.one_of(st.none(), token_lists(min(vocab, 4), max_size=2)))
    check(P.NoBadWords(bad, eos), T.NoBadWordsLogitsProcessor(bad, eos), ids, scores)


# ---- temperature and normalization ------------------------------------------------------------------------------

TEMPERATURES = st.one_of(st.floats(1e-3, 100.0), st.sampled_from([0.5, 0.7, 1.0, 1.5, 3.0]))


@PROPERTY
@given(data=st.data(), value=TEMPERATURES)
def test_temperature(data, value):
    scores = data.draw(score_tensors())
    check(P.Temperature(value), T.TemperatureLogitsWarper(value), torch.zeros((scores.shape[0], 1), dtype=torch.long),
          scores)


@PROPERTY
@given(data=st.data())
def test_remove_invalid_values(data):
    scores = data.draw(score_tensors(invalid=True))
    out = check(P.InfNanRemove(), T.InfNanRemoveLogitsProcessor(), torch.zeros((scores.shape[0], 1), dtype=torch.long),
                scores)
    assert torch.isfinite(out).all()


@PROPERTY
@given(data=st.data())
def test_logit_normalization(data):
    scores = data.draw(score_tensors())
    check(P.LogitNormalization(), T.LogitNormalization(), torch.zeros((scores.shape[0], 1), dtype=torch.long), scores)


# ---- truncation -------------------------------------------------------------------------------------------------

KEEP = st.integers(1, 5)


def ids_for(scores):
    return torch.zeros((scores.shape[0], 1), dtype=torch.long)


@PROPERTY
@given(data=st.data(), top_k=st.integers(1, 80), keep=KEEP)
def test_top_k(data, top_k, keep):
    scores = data.draw(score_tensors())
    out = check(P.TopK(top_k, keep), T.TopKLogitsWarper(top_k, min_tokens_to_keep=keep), ids_for(scores), scores)
    assert_keeps(out, scores, keep)


def top_p_values(vocab):
    """Top-p values, often 1 - k / V: the threshold then falls on a uniform row's cumulative mass, where
    comparing in float32 (as transformers does) or in float64 keeps a different number of tokens."""
    return st.one_of(st.floats(1e-6, 1.0), st.sampled_from([0.1, 0.5, 0.8, 0.9, 0.95, 1.0]),
                     st.integers(1, vocab - 1).map(lambda k: 1 - k / vocab))


@PROPERTY
@given(data=st.data(), keep=KEEP)
def test_top_p(data, keep):
    scores = data.draw(score_tensors())
    top_p = data.draw(top_p_values(scores.shape[1]))
    out = check(P.TopP(top_p, keep), T.TopPLogitsWarper(top_p, min_tokens_to_keep=keep), ids_for(scores), scores)
    assert_keeps(out, scores, keep)


@PROPERTY
@given(data=st.data(), min_p=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0])), keep=KEEP)
def test_min_p(data, min_p, keep):
    scores = data.draw(score_tensors())
    out = check(P.MinP(min_p, keep), T.MinPLogitsWarper(min_p, min_tokens_to_keep=keep), ids_for(scores), scores)
    assert_keeps(out, scores, keep, by_probability=True)


OPEN_UNIT = st.floats(1e-6, 1.0, exclude_max=True)


@PROPERTY
@given(data=st.data(), mass=st.one_of(OPEN_UNIT, st.sampled_from([0.2, 0.5, 0.9, 0.95])), keep=KEEP)
def test_typical(data, mass, keep):
    scores = data.draw(score_tensors())
    out = check(P.Typical(mass, keep), T.TypicalLogitsWarper(mass, min_tokens_to_keep=keep), ids_for(scores), scores)
    assert_keeps(out, scores, keep)


@PROPERTY
@given(data=st.data(), epsilon=st.one_of(OPEN_UNIT, st.sampled_from([3e-4, 1e-3, 0.02, 0.1])), keep=KEEP)
def test_epsilon_cutoff(data, epsilon, keep):
    scores = data.draw(score_tensors())
    out = check(P.EpsilonCutoff(epsilon, keep), T.EpsilonLogitsWarper(epsilon, min_tokens_to_keep=keep),
                ids_for(scores), scores)
    assert_keeps(out, scores, keep)


@PROPERTY
@given(data=st.data(), epsilon=st.one_of(OPEN_UNIT, st.sampled_from([3e-4, 1e-3, 0.02, 0.1])), keep=KEEP)
def test_eta_cutoff(data, epsilon, keep):
    scores = data.draw(score_tensors())
    out = check(P.EtaCutoff(epsilon, keep), T.EtaLogitsWarper(epsilon, min_tokens_to_keep=keep), ids_for(scores),
                scores)
    assert_keeps(out, scores, keep)


TOP_H = st.one_of(st.floats(1e-6, 1.0, exclude_min=True), st.sampled_from([0.1, 0.4, 0.9, 1.0]))


@PROPERTY
@given(data=st.data(), top_h=TOP_H)
def test_top_h(data, top_h):
    scores = data.draw(score_tensors(max_vocab=150))  # past 100 entries: transformers' cap on the candidates
    out = check(P.TopH(top_h), T.TopHLogitsWarper(top_h), ids_for(scores), scores)
    assert_keeps(out, scores, 1)


# ---- per-row versions (rows.py) ---------------------------------------------------------------------------------

# name -> (strategy of one row's value, or a function of V giving it; our scalar processor; transformers'
# processor), each processor built from (value, min_tokens_to_keep shared by the rows)
ROW_WARPERS = {
    "temperature": (TEMPERATURES, lambda v, keep: P.Temperature(v), lambda v, keep: T.TemperatureLogitsWarper(v)),
    "top_k": (st.integers(1, 80), lambda v, keep: P.TopK(v, keep),
              lambda v, keep: T.TopKLogitsWarper(v, min_tokens_to_keep=keep)),
    "top_p": (top_p_values, lambda v, keep: P.TopP(v, keep),
              lambda v, keep: T.TopPLogitsWarper(v, min_tokens_to_keep=keep)),
    "min_p": (st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.05, 0.1])), lambda v, keep: P.MinP(v, keep),
              lambda v, keep: T.MinPLogitsWarper(v, min_tokens_to_keep=keep)),
    "top_h": (TOP_H, lambda v, keep: P.TopH(v), lambda v, keep: T.TopHLogitsWarper(v)),
}


def value_strategy(name, scores):
    values = ROW_WARPERS[name][0]
    return values if isinstance(values, st.SearchStrategy) else values(scores.shape[1])


def row_processor(name, values, keep, device="cpu"):
    """The per-row processor generate_sweep builds: one configuration per row, None where a row does not use it."""
    built = [None if v is None else ROW_WARPERS[name][1](v, keep) for v in values]
    return rows._row_version(name, built, 1, device)


@pytest.mark.parametrize("name", sorted(ROW_WARPERS))
def test_row_warpers_equal_transformers_per_row(name):
    _, ours, theirs = ROW_WARPERS[name]

    @PROPERTY
    @given(data=st.data(), keep=KEEP if name not in ("temperature", "top_h") else st.just(1))
    def run(data, keep):
        scores = data.draw(score_tensors(max_vocab=150 if name == "top_h" else 64))
        b = scores.shape[0]
        values = data.draw(st.lists(st.one_of(st.none(), value_strategy(name, scores)), min_size=b, max_size=b)
                           .filter(lambda vs: any(v is not None for v in vs)))
        before = scores.clone()
        out = row_processor(name, values, keep)(ids_for(scores), scores)
        assert torch.equal(scores, before)
        for i, v in enumerate(values):
            row = scores[i:i + 1]
            expected = row if v is None else theirs(v, keep)(ids_for(row), row.clone())
            assert torch.equal(out[i:i + 1], expected), (i, v, out[i], expected)
            if v is not None:  # and our scalar processor on the row alone
                assert torch.equal(out[i:i + 1], ours(v, keep)(ids_for(row), row))
        assert_keeps(out, scores, keep, by_probability=name == "min_p")

    run()


@pytest.mark.parametrize("name", sorted(ROW_WARPERS))
def test_row_warpers_with_one_value_equal_transformers_on_the_batch(name):
    theirs = ROW_WARPERS[name][2]

    @PROPERTY
    @given(data=st.data(), keep=KEEP if name not in ("temperature", "top_h") else st.just(1))
    def run(data, keep):
        scores = data.draw(score_tensors(max_vocab=150 if name == "top_h" else 64))
        value = data.draw(value_strategy(name, scores))
        check(row_processor(name, [value] * scores.shape[0], keep), theirs(value, keep), ids_for(scores), scores)

    run()


@PROPERTY
@given(data=st.data(), top_k=st.integers(1, 10))
def test_on_rows_applies_the_processor_to_its_rows_only(data, top_k):
    scores = data.draw(score_tensors())
    chosen = torch.tensor(data.draw(st.lists(st.booleans(), min_size=scores.shape[0], max_size=scores.shape[0])))
    before = scores.clone()
    out = rows.OnRows(P.TopK(top_k), chosen)(ids_for(scores), scores)
    assert torch.equal(scores, before)
    expected = torch.where(chosen[:, None], T.TopKLogitsWarper(top_k)(None, scores.clone()), scores)
    assert torch.equal(out, expected)


@PROPERTY
@given(data=st.data(), configs=st.integers(1, 3), rows_per_config=st.integers(1, 2))
def test_each_on_its_rows_gives_every_block_its_lone_run(data, configs, rows_per_config):
    scores = data.draw(score_tensors(rows=configs * rows_per_config))
    choices = st.one_of(st.none(), st.builds(P.Typical, st.floats(0.2, 0.99)), st.builds(P.EtaCutoff, st.floats(1e-4, 0.2)))
    per_config = data.draw(st.lists(choices, min_size=configs, max_size=configs))
    before = scores.clone()
    out = rows.EachOnItsRows(per_config, rows_per_config)(ids_for(scores), scores)
    assert torch.equal(scores, before) and out.shape == scores.shape
    for c, processor in enumerate(per_config):
        block = slice(c * rows_per_config, (c + 1) * rows_per_config)
        alone = scores[block] if processor is None else processor(ids_for(scores[block]), scores[block].clone())
        assert torch.equal(out[block], alone), (c, processor)  # bit for bit what the block gets alone


# ---- every class has a property test ----------------------------------------------------------------------------

COVERED = {
    "RepetitionPenalty", "NoRepeatNGram", "ExponentialDecayLengthPenalty", "EncoderRepetitionPenalty",
    "EncoderNoRepeatNGram",
    "MinLength", "MinNewTokens", "SuppressTokens", "SuppressTokensAtBegin", "ForcedBOS", "ForcedEOS",
    "PrefixAllowedTokens", "SequenceBias", "NoBadWords", "Temperature", "InfNanRemove", "LogitNormalization",
    "TopK", "TopP", "MinP", "Typical", "EpsilonCutoff", "EtaCutoff", "TopH",
    "RowTemperature", "RowTopK", "RowTopP", "RowMinP", "RowTopH", "OnRows",
    "EachOnItsRows", "RowWatermark",  # one class: RowWatermark is its older name
}


def test_every_processor_class_has_a_property_test():
    modules = (penalties, constraints, bias, temperature, normalization, truncation, rows)
    defined = {name for module in modules for name, obj in vars(module).items()
               if isinstance(obj, type) and issubclass(obj, LogitsProcessor) and obj.__module__ == module.__name__}
    assert defined == COVERED, f"add a property test for {sorted(defined - COVERED)}"
