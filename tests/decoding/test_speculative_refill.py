"""Continuous batching under speculation (`max_active_rows`): waiting prompts take finished rows' places.

A joining row is prefilled on the batch's slots with the slots before its prompt masked, so it must decode
exactly as it does alone: greedy text, finish reasons and log-probs equal plain greedy decoding of the same
batch, for every proposer and cache, whatever the window. A spy on `Builder.start` shows rows really joined a
batch in flight (prompt slots beyond T), so the equality is not the trivial one of a window holding every row.
"""

from __future__ import annotations

import pytest
import torch

import decoding
from decoding.speculative.batch import Builder
from tests.decoding.speculative_helpers import PROPOSER_NAMES, proposer_kwargs

def _prompts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(20, 1000, (5, 8), generator=g)
    ids[:, 4:] = ids[:, :4]  # the prompt repeats itself: lookups land
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[3, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


COMMON = dict(max_new_tokens=24, do_sample=False, pad_token_id=0)


@pytest.fixture(scope="module")
def plain_runs(tiny_model):
    """The prompts, EOS ids that end rows at different steps (so places free up mid-flight), plain greedy."""
    ids, mask = _prompts()
    free = decoding.generate(tiny_model, ids, mask, **COMMON, eos_token_id=None).sequences[:, ids.shape[1]:]
    eos = sorted({int(free[0, 2]), int(free[2, 9])})
    return ids, mask, eos, decoding.generate(tiny_model, ids, mask, **COMMON, eos_token_id=eos)


@pytest.fixture()
def join_slots(monkeypatch):
    """Records the prompt-slot count of every Batch built (T for a fresh batch, more for rows joining)."""
    seen: list[int] = []
    original = Builder.start

    def spy(self, origins, slots):
        seen.append(slots)
        return original(self, origins, slots)

    monkeypatch.setattr(Builder, "start", spy)
    return seen


CASES = [(proposer, cache, 2) for proposer in PROPOSER_NAMES for cache in ("dynamic", "static", "none")]
CASES.append(("lookup", "dynamic", 1))  # one place: every row decodes alone, one after the other


@pytest.mark.parametrize(("proposer", "cache", "window"), CASES)
def test_refilled_rows_decode_as_plain_greedy(tiny_model, plain_runs, join_slots, cache, proposer, window):
    ids, mask, eos, plain = plain_runs
    out = decoding.generate(tiny_model, ids, mask, **COMMON, eos_token_id=eos, **proposer_kwargs(proposer, tiny_model),
                            cache=cache, max_active_rows=window)
    assert torch.equal(out.sequences, plain.sequences)
    assert out.finish_reasons == plain.finish_reasons
    assert torch.equal(out.new_token_mask, plain.new_token_mask)
    torch.testing.assert_close(out.token_logprobs, plain.token_logprobs, atol=1e-5, rtol=0)
    assert len(join_slots) > 1 and join_slots[0] == ids.shape[1]
    if window == 2:  # with two places, some row joined while another was still decoding
        assert max(join_slots) > ids.shape[1]
    assert out.target_forwards.min() >= 1 and out.sequences.shape[0] == ids.shape[0]


def test_the_plain_rows_vary_in_length(plain_runs):
    """The EOS ids above make rows end at different steps (else no place would free up mid-flight)."""
    _, _, _, plain = plain_runs
    lengths = plain.new_token_mask.sum(1)
    assert len(set(lengths.tolist())) > 1


def test_sampling_with_refill_runs_the_same_draws_as_greedy_at_top_k_1(tiny_model, plain_runs):
    ids, mask, eos, plain = plain_runs
    out = decoding.generate(tiny_model, ids, mask, **{**COMMON, "do_sample": True, "top_k": 1}, eos_token_id=eos,
                            prompt_lookup_num_tokens=3, max_active_rows=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.sequences, plain.sequences)


@pytest.mark.parametrize("value", [0, -1, 2.0, "2", True])
def test_a_bad_max_active_rows_is_refused(tiny_model, value):
    ids, mask = _prompts()
    with pytest.raises(ValueError, match=r"max_active_rows=.*integer >= 1"):
        decoding.generate(tiny_model, ids, mask, **COMMON, prompt_lookup_num_tokens=3, max_active_rows=value)


def test_max_active_rows_without_a_proposer_is_refused(tiny_model):
    ids, mask = _prompts()
    with pytest.raises(ValueError, match=r"max_active_rows=2 is not allowed without speculative decoding"):
        decoding.generate(tiny_model, ids, mask, **COMMON, max_active_rows=2)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("proposer", ["lookup", "draft_layers", "other_weights_draft"])
def test_compacting_the_holes_changes_no_token(tiny_model, plain_runs, monkeypatch, cache, proposer):
    """A long-lived batch squeezes its holes (and joined rows' masked slots) out of every cache and buffer;
    the spy shows it happened, the text shows it changed nothing (the draft's cache included)."""
    from decoding.speculative.rows import SpecRows

    ids, mask, eos, _ = plain_runs
    longer = {**COMMON, "max_new_tokens": 60}
    plain = decoding.generate(tiny_model, ids, mask, **longer, eos_token_id=eos)
    squeezed: list[tuple[int, int]] = []
    original = SpecRows.apply_compaction

    def spy(self, index, filler):
        squeezed.append((self.state.length, index.shape[1]))
        return original(self, index, filler)

    monkeypatch.setattr(SpecRows, "apply_compaction", spy)
    out = decoding.generate(tiny_model, ids, mask, **longer, eos_token_id=eos, **proposer_kwargs(proposer, tiny_model),
                            cache=cache, max_active_rows=2)
    assert squeezed and all(kept < length for length, kept in squeezed)
    assert torch.equal(out.sequences, plain.sequences)
    torch.testing.assert_close(out.token_logprobs, plain.token_logprobs, atol=1e-5, rtol=0)
