"""The fast paths of the llama.cpp samplers equal their plain definitions (issue 15's speed work).

bench/processor_cost.py made top-nσ, XTC, dynamic temperature and mirostat cheaper per step by computing
less: XTC finds its top choices with a top-k, mirostat v1 rebuilds a row from a top-k of its head, dynamic
temperature takes the entropy from float32 passes, mirostat's observe reuses the sampler's softmax. What must
hold: each gives what the straightforward formulation (written out here, as the processors computed it
before) gives, bit for bit where the arithmetic is the same, on hypothesis-drawn rows with ties, removed
tokens and extreme scales, at vocabulary sizes where the fast paths are taken.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from decoding.loop import BatchSampler
from decoding.processors.dynatemp import DynamicTemperature, entropy_temperature, row_entropy
from decoding.processors.mirostat import HEAD, Mirostat, zipf_cut, zipf_exponent, zipf_top_k
from decoding.processors.xtc import MOST_FOR_TOPK, exclude_top_choices, most_top_choices
from decoding.sweep import GroupedSampler
from tests.decoding.test_processor_properties import PROPERTY, score_tensors

NEG_INF = -math.inf


# --- the plain definitions -----------------------------------------------------------------------------------

def plain_xtc(scores, threshold, apply_rows, min_keep):
    """Every top choice (p >= threshold, finite) but the least likely (of tied ones the highest id) goes, on
    applied rows with >= 2 top choices that leave >= min_keep candidates."""
    probs = torch.softmax(scores, -1)
    finite = scores != NEG_INF
    top = finite & (probs >= threshold)
    n_top, n_candidates = top.sum(-1, keepdim=True), finite.sum(-1, keepdim=True)
    allowed = (n_top >= 2) & (n_candidates - (n_top - 1) >= min_keep) & apply_rows[:, None]
    least = torch.where(top, probs, torch.inf).min(-1, keepdim=True).values
    index = torch.arange(scores.shape[-1])
    kept = torch.where(top & (probs == least), index, -1).max(-1, keepdim=True).values
    return scores.masked_fill(allowed & top & (index != kept), NEG_INF)


def plain_zipf_cut(scores, mu, n_vocab):
    """v1 from a stable sort of the whole row: the fit over its sorted softmax, the first k kept."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    finite = scores != NEG_INF
    probs = torch.softmax(scores, -1).gather(1, order)
    k = zipf_top_k(zipf_exponent(probs, finite.sum(-1, keepdim=True)), mu, n_vocab, scores.shape[-1])
    kept_sorted = torch.arange(scores.shape[-1], dtype=torch.float32)[None, :] < k
    keep = torch.zeros_like(kept_sorted).scatter_(1, order, kept_sorted) & finite
    return scores.masked_fill(~keep, NEG_INF)


def exact_entropy(scores):
    return torch.special.entr(torch.softmax(scores.double(), -1)).sum(-1, keepdim=True)


# --- XTC -----------------------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data())
def test_xtc_top_k_path_and_mask_path_equal_the_plain_rule(data):
    scores = data.draw(score_tensors(max_vocab=600))
    threshold = data.draw(st.sampled_from([0.0, 0.004, 0.01, 0.05, 0.1, 0.2, 0.34, 0.5]))
    min_keep = data.draw(st.sampled_from([1, 2, 5]))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    apply_rows = torch.rand(scores.shape[0], generator=g) < 0.8
    t = torch.tensor([[threshold]])
    expected = plain_xtc(scores, t, apply_rows, min_keep)
    assert torch.equal(exclude_top_choices(scores, t, apply_rows, min_keep), expected)
    most = most_top_choices(float(t))
    assert torch.equal(exclude_top_choices(scores, t, apply_rows, min_keep, most), expected)


def test_most_top_choices_bounds_every_row_and_leaves_small_thresholds_to_the_masks():
    assert most_top_choices(0.0) is None and most_top_choices(1 / (MOST_FOR_TOPK + 5)) is None
    for threshold in (0.1, 0.2, 0.25, 1 / 3, 0.5):
        most = most_top_choices(threshold)
        for v in (2, 3, 4, 5, 10, 11, 100):  # uniform rows: every token at 1 / v, the most that can tie
            probs = torch.softmax(torch.zeros(1, v), -1)
            assert int((probs >= torch.tensor(threshold)).sum()) <= most, (threshold, v)


# --- mirostat ------------------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data())
def test_mirostat_v1_top_k_paths_equal_a_stable_sort_of_the_row(data):
    """V = 2048: k within the head, past it (the second top-k), a tie at the cut and most of the row (sorts)."""
    scores = data.draw(score_tensors(max_vocab=2048))
    mu = torch.tensor([[data.draw(st.sampled_from([0.5, 3.0, 8.0, 11.0, 14.0, 20.0]))]]).expand(scores.shape[0], 1)
    head = data.draw(st.sampled_from([HEAD, 192, 512]))
    n_vocab = data.draw(st.sampled_from([scores.shape[-1], 49152]))
    out, k_max = zipf_cut(scores, mu, n_vocab, torch.ones(scores.shape[0], 1, dtype=torch.bool), head)
    assert torch.equal(out, plain_zipf_cut(scores, mu, n_vocab))
    assert k_max >= 1


def test_mirostat_v1_takes_each_path_and_keeps_the_lower_ids_of_a_tie():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 4096, generator=g) * 2
    tied = (scores * 2).round() / 2  # many equal scores: the cut falls inside a tie
    for rows in (scores, tied):
        for mu in (3.0, 10.0, 13.0, 30.0):  # k within the head, past it, and most of the row
            m = torch.full((3, 1), mu)
            out, k_max = zipf_cut(rows, m, 49152, torch.ones(3, 1, dtype=torch.bool))
            assert torch.equal(out, plain_zipf_cut(rows, m, 49152)), mu
    assert zipf_cut(scores, torch.full((3, 1), 3.0), 49152, torch.ones(3, 1, dtype=torch.bool))[1] < HEAD
    assert zipf_cut(scores, torch.full((3, 1), 13.0), 49152, torch.ones(3, 1, dtype=torch.bool))[1] > HEAD


@PROPERTY
@given(data=st.data())
def test_mirostat_observe_with_the_samplers_softmax_equals_its_own(data):
    scores = data.draw(score_tensors(max_vocab=300))
    a, b = Mirostat(data.draw(st.sampled_from([1, 2])), 4.0, 0.3), None
    b = Mirostat(int(a.version), 4.0, 0.3)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    for _ in range(3):
        out_a, out_b = a(None, scores), b(None, scores)
        assert torch.equal(out_a, out_b)
        probs = torch.softmax(out_a, -1)
        tokens = torch.multinomial(probs, 1, generator=g)[:, 0]
        a.observe(tokens, out_a)
        b.observe(tokens, out_b, probs)
        assert torch.equal(a.mu, b.mu)


def test_samplers_keep_the_softmax_they_drew_from_and_none_when_greedy():
    scores = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    sampler = BatchSampler(True, torch.Generator().manual_seed(2))
    sampler(scores)
    assert torch.equal(sampler.probs, torch.softmax(scores, -1))
    greedy = BatchSampler(False, None)
    assert torch.equal(greedy(scores), scores.argmax(-1)) and greedy.probs is None
    grouped = GroupedSampler([(0, 2, True, torch.Generator().manual_seed(3)), (2, 4, False, None)])
    grouped(scores)
    assert torch.equal(grouped.probs, torch.softmax(scores, -1))
    assert GroupedSampler([(0, 4, False, None)]).probs is None


# --- dynamic temperature -------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data())
def test_row_entropy_is_the_float64_entropy_to_float32_precision(data):
    scores = data.draw(score_tensors(max_vocab=2048))
    exact = exact_entropy(scores)
    ours = row_entropy(scores)
    assert ours.dtype == torch.float64 and ours.shape == exact.shape
    # relative 1e-6, and absolute 1e-9 for rows whose entropy is ~0 (one token holds all the mass)
    assert torch.all((ours - exact).abs() <= 1e-6 * exact + 1e-9), (ours - exact).abs().max()


def test_row_entropy_keeps_its_precision_on_confident_rows_and_the_whole_vocabulary():
    logits = torch.randn(2, 49152, generator=torch.Generator().manual_seed(4)) * 3
    for scale in (1.0, 3.0, 10.0):  # H from ~8 nats down to ~1e-4: relative precision either way
        rows = logits * scale
        exact = exact_entropy(rows)
        assert torch.all((row_entropy(rows) - exact).abs() <= 3e-7 * exact), scale


@PROPERTY
@given(data=st.data())
def test_dynamic_temperature_without_the_zero_branch_equals_it_when_low_is_positive(data):
    scores = data.draw(score_tensors(max_vocab=300))
    processor = DynamicTemperature(data.draw(st.sampled_from([0.6, 1.0, 1.7])), data.draw(st.sampled_from([0.1, 0.5])),
                                   data.draw(st.sampled_from([0.0, 1.0, 2.5])))
    assert not processor.may_reach_zero  # temperature > range: low > 0
    args = (scores, processor.low, processor.high, processor.exponent)
    assert torch.equal(entropy_temperature(*args, False), entropy_temperature(*args, True))
    assert DynamicTemperature(0.3, 0.5).may_reach_zero  # low = max(0, -0.2) = 0
