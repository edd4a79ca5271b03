"""Speculative sampling draws exactly what plain sampling draws (issue 13).

On a tiny model with 8 tokens, the first 3 new tokens of many sampled rows (one prompt repeated) are tested
by chi-square at p = 0.001 against their exact plain-sampling distribution, enumerated over all 8 ** 3
outcomes (tests/decoding/speculative_distribution.py), for each proposer: the target's first layer, a
second tiny model and prompt lookup. Blocks of 2-3 proposals cover those tokens, and kept and rejected
proposals both occur (asserted through the acceptance rate).

The test is tested: the same draws with a deliberately wrong acceptance rule (monkeypatched in place of the
name the strategy calls) must fail the same chi-square. Fixed seeds make every p-value reproducible.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import decoding
from decoding.speculative.verify import sample_accept
from experiments.models import build_tiny_model
from tests.decoding.speculative_distribution import chi_square_pvalue, exact_distribution, outcome_counts

strategy = importlib.import_module("decoding.speculative.strategy")  # the module, not a same-named attribute

VOCAB = 8
DRAWS = 3000  # rows per call: the wrong rules below fail by far at this size (p < 1e-40), a call takes ~1 s
NEW = 3  # tokens whose joint distribution is tested (8 ** 3 = 512 outcomes)
MAX_NEW = 4  # one more, so that after the first token a block of 2 proposals lands inside the tested 3
ALPHA = 1e-3
# Every token once, 7 followed by 0: prompt lookup finds any last token earlier in the text and proposes
PROMPT = [0, 1, 2, 3, 4, 5, 6, 7, 0]
PROCESSED = {"temperature": 0.8, "top_k": 5}  # top_k = 5 of 8: zero-probability outcomes exist
NO_EOS = {"eos_token_id": None}  # the models' EOS (2) would end rows inside the tested tokens


@pytest.fixture(scope="module")
def target():
    return build_tiny_model("tiny_llama", vocab_size=VOCAB, seed=3)


@pytest.fixture(scope="module")
def draft():
    return build_tiny_model("tiny_llama", vocab_size=VOCAB, seed=4)


@pytest.fixture(scope="module")
def exact(target):
    """processors name -> (8, 8, 8) exact probabilities of the first 3 new tokens."""
    return {"processed": exact_distribution(target, PROMPT, NEW, **PROCESSED),
            "raw": exact_distribution(target, PROMPT, NEW)}


def proposer_params(name: str, draft_model) -> dict:
    # threshold 0: a draft always proposes its num_assistant_tokens, however unsure
    drafting = {"num_assistant_tokens": 3, "assistant_confidence_threshold": 0}
    if name == "draft_layers":
        return {"draft_layers": 1, **drafting}
    if name == "assistant_model":
        return {"assistant_model": draft_model, **drafting}
    if name == "prompt_lookup":
        return {"prompt_lookup_num_tokens": 2}
    if name == "none":
        return {}
    raise ValueError(f"proposer name={name!r} is not known")


def draw(target, params: dict, processors: dict, seed: int = 0, rows: int = DRAWS):
    ids = torch.tensor([PROMPT]).repeat(rows, 1)  # (rows, T)
    return decoding.generate(target, ids, torch.ones_like(ids), do_sample=True, max_new_tokens=MAX_NEW,
                             generator=torch.Generator().manual_seed(seed), **NO_EOS, **processors, **params)


def pvalue(result, probs: torch.Tensor) -> float:
    assert set(result.finish_reasons) == {"length"}  # no row ended early: every row has NEW tokens
    return chi_square_pvalue(outcome_counts(result.new_token_ids[:, :NEW], VOCAB), probs)


def assert_both_outcomes(result) -> None:
    """Proposals were made, and some kept and some rejected."""
    assert int(result.proposed_tokens.sum()) > 0
    assert 0 < result.acceptance_rate < 1


# --- the real rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("proposer", ["draft_layers", "assistant_model", "prompt_lookup"])
def test_speculative_sampling_matches_plain_distribution(target, draft, exact, proposer):
    result = draw(target, proposer_params(proposer, draft), PROCESSED)
    assert_both_outcomes(result)
    counts = outcome_counts(result.new_token_ids[:, :NEW], VOCAB)
    assert int(counts[exact["processed"].flatten() == 0].sum()) == 0  # top-k's impossible outcomes never drawn
    assert pvalue(result, exact["processed"]) > ALPHA


def test_speculative_sampling_without_processors_matches(target, draft, exact):
    result = draw(target, proposer_params("assistant_model", draft), {})
    assert_both_outcomes(result)
    assert pvalue(result, exact["raw"]) > ALPHA


def test_plain_sampling_matches_the_enumeration(target, exact):
    # the reference itself: a distribution, and plain sampling (no proposer) passes the same test
    assert torch.isclose(exact["processed"].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert pvalue(draw(target, {}, PROCESSED), exact["processed"]) > ALPHA


# --- the test of the test: wrong rules must fail -----------------------------------------------------------

def _target_at(scores: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """(B, V) the target's processed distribution at block position at (B,), from scores (B, K + 1, V)."""
    return torch.softmax(scores, dim=-1)[torch.arange(scores.shape[0]), at]


def accept_everything(scores, drafts, counts, q, generator):
    """Wrong: keeps every proposal, as if the draft were the target."""
    return counts, torch.multinomial(_target_at(scores, counts), 1, generator=generator).squeeze(1)


def resample_from_target(scores, drafts, counts, q, generator):
    """Wrong: the right acceptance, but a rejected proposal is replaced by a draw from p, not max(0, p - q)."""
    kept, _ = sample_accept(scores, drafts, counts, q, generator)
    return kept, torch.multinomial(_target_at(scores, kept), 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("wrong_rule", [accept_everything, resample_from_target])
@pytest.mark.parametrize("proposer", ["assistant_model", "prompt_lookup"])
def test_a_wrong_acceptance_rule_fails(target, draft, exact, monkeypatch, wrong_rule, proposer):
    monkeypatch.setattr(strategy, "sample_accept", wrong_rule)
    result = draw(target, proposer_params(proposer, draft), PROCESSED)
    assert int(result.proposed_tokens.sum()) > 0
    assert pvalue(result, exact["processed"]) < ALPHA


# --- seeds ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("proposer", ["draft_layers", "assistant_model", "prompt_lookup"])
def test_a_fixed_seed_repeats_its_samples(target, draft, proposer):
    params = proposer_params(proposer, draft)
    first, again = (draw(target, params, PROCESSED, seed=7, rows=64) for _ in range(2))
    other = draw(target, params, PROCESSED, seed=8, rows=64)
    assert torch.equal(first.sequences, again.sequences)
    assert torch.equal(first.accepted_tokens, again.accepted_tokens)
    assert not torch.equal(first.sequences, other.sequences)  # the seed is used at all


@pytest.mark.parametrize("proposer", ["draft_layers", "assistant_model", "prompt_lookup"])
def test_greedy_ignores_the_generator(target, draft, proposer):
    ids = torch.tensor([PROMPT, PROMPT[::-1]])  # (2, T)
    mask = torch.ones_like(ids)
    plain = decoding.generate(target, ids, mask, do_sample=False, max_new_tokens=6, **NO_EOS)
    for seed in (0, 1):
        result = decoding.generate(target, ids, mask, do_sample=False, max_new_tokens=6, **NO_EOS,
                                   generator=torch.Generator().manual_seed(seed), **proposer_params(proposer, draft))
        assert torch.equal(result.sequences, plain.sequences)
