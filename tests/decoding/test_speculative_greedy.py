"""Greedy speculative decoding (issue 13) is plain greedy decoding: the same tokens, finish reasons and logprobs.

Covered: every proposer (prompt lookup, the target's first layers, a draft with the target's weights, a draft with
other weights) on tiny Llama and GPT-2 with each cache setting; left-padded batches whose rows end at different
steps (each row also equals itself run alone); transformers' own assisted generation at batch 1; processors and
stop conditions that act inside an accepted block; the embedded SmolLM2 (slow).

A token may only differ at a near tie of plain greedy's logits (speculative_helpers.compare_or_near_tie).
"""

import warnings

import pytest
import torch

import decoding
from experiments.models import build_tiny_model, load_tiny
from tests.decoding.speculative_helpers import (
    LOOKUP_PROMPT, PROPOSER_NAMES, check_counters, compare_or_near_tie, draft_model, kind_of, lookup_must_land, proposer_kwargs,
    padded, row_near_tie, row_new_tokens,
)

CACHES = ("dynamic", "static", "none")
# Four prompts of lengths 16, 10, 7 and 4, left-padded to 16 with pad id 2 (masked)
BATCH_PROMPTS = [LOOKUP_PROMPT, [33, 34, 35, 33, 34, 35, 36, 33, 34, 35], [501, 77, 501, 78, 501, 77, 502], [9, 8, 9, 8]]


def greedy(model, ids, mask, **kwargs):
    return decoding.generate(model, ids, mask, do_sample=False, **kwargs)


def eos_ids_ending_rows_apart(model, ids, mask, **kwargs):
    """EOS ids so rows end at different steps: the tokens row 0 emits at step 3 and row 2 at step 9 (no EOS)."""
    free = greedy(model, ids, mask, eos_token_id=[], **kwargs).new_token_ids
    return sorted({int(free[0, 3]), int(free[2, 9])})


# ---- 1. each proposer, batch 1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("proposer", PROPOSER_NAMES)
def test_each_proposer_equals_plain_greedy(tiny_model, proposer, cache):
    ids = torch.tensor([LOOKUP_PROMPT])
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=24, eos_token_id=[], cache=cache)
    plain = greedy(tiny_model, ids, mask, **kwargs)
    spec = greedy(tiny_model, ids, mask, **kwargs, **proposer_kwargs(proposer, tiny_model))
    ties = compare_or_near_tie(tiny_model, plain, spec, mask, label=f"{proposer}/{cache}")
    assert ties == []  # tiny models: no near tie on these prompts (a tie would be printed above)
    assert spec.finish_reasons == plain.finish_reasons == ["length"]
    check_counters(spec)
    assert int(spec.proposed_tokens.sum()) > 0
    if proposer == "lookup":
        # The plain text repeats what lookup proposes somewhere, so a run must accept at least once
        assert lookup_must_land(LOOKUP_PROMPT, row_new_tokens(plain, 0))
        assert int(spec.accepted_tokens.sum()) > 0
    if proposer == "same_weights_draft":
        assert spec.acceptance_rate == 1.0
        assert int(spec.target_forwards[0]) < 24  # whole blocks accepted: fewer forwards than tokens


# ---- 2. batched, rows ending apart ---------------------------------------------------------------------------

@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("proposer", PROPOSER_NAMES)
def test_batched_rows_equal_plain_batch_and_each_row_alone(tiny_model, proposer, cache):
    ids, mask = padded(BATCH_PROMPTS)
    eos = eos_ids_ending_rows_apart(tiny_model, ids, mask, max_new_tokens=16, cache=cache)
    kwargs = dict(max_new_tokens=16, eos_token_id=eos, cache=cache)
    spec_kwargs = proposer_kwargs(proposer, tiny_model)
    plain = greedy(tiny_model, ids, mask, **kwargs)
    spec = greedy(tiny_model, ids, mask, **kwargs, **spec_kwargs)

    lengths = plain.new_token_mask.sum(dim=1)
    assert len(set(lengths.tolist())) > 1 and "eos" in plain.finish_reasons  # the batch really ends apart
    assert compare_or_near_tie(tiny_model, plain, spec, mask, label=f"batched {proposer}/{cache}") == []
    assert spec.finish_reasons == plain.finish_reasons
    assert torch.equal(spec.new_token_mask, plain.new_token_mask)
    torch.testing.assert_close(spec.token_logprobs, plain.token_logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(spec.token_logprobs_raw, plain.token_logprobs_raw, atol=1e-4, rtol=0)
    check_counters(spec)

    pad = tiny_model.generation_config.pad_token_id
    for row in range(ids.shape[0]):
        new, row_mask = spec.new_token_ids[row], spec.new_token_mask[row]
        assert bool((new[~row_mask] == pad).all())  # nothing written after a row's end
        emitted = new[row_mask].tolist()
        if spec.finish_reasons[row] == "eos":  # ended at its first EOS, not later
            assert emitted[-1] in eos and not set(emitted[:-1]) & set(eos)
        else:
            assert not set(emitted) & set(eos)

        alone_ids = torch.tensor([BATCH_PROMPTS[row]])
        alone_mask = torch.ones_like(alone_ids)
        alone = greedy(tiny_model, alone_ids, alone_mask, **kwargs, **spec_kwargs)
        alone_plain = greedy(tiny_model, alone_ids, alone_mask, **kwargs)
        assert compare_or_near_tie(tiny_model, alone_plain, alone, alone_mask, label=f"alone row {row}") == []
        assert row_new_tokens(spec, row) == row_new_tokens(alone, 0)
        assert spec.finish_reasons[row] == alone.finish_reasons[0]
        torch.testing.assert_close(spec.token_logprobs[row, :len(emitted)], alone.token_logprobs[0, :len(emitted)],
                                   atol=1e-4, rtol=0)


# ---- 3. transformers' assisted generation at batch 1 ---------------------------------------------------------

def _transformers_and_ours(model, ids, mask, max_new_tokens, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generate's notes on assisted-generation defaults: not under test
        reference = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                   **kwargs)
    ours = greedy(model, ids, mask, max_new_tokens=max_new_tokens, **kwargs)
    return reference, ours


@pytest.mark.parametrize("proposer", ["prompt_lookup", "assistant_model", "assistant_early_exit"])
def test_tiny_equals_transformers_assisted_generation(tiny_model, proposer):
    ids = torch.tensor([LOOKUP_PROMPT])
    mask = torch.ones_like(ids)
    kwargs = {"prompt_lookup": dict(prompt_lookup_num_tokens=3),
              "assistant_model": dict(assistant_model=draft_model(kind_of(tiny_model), 1)),
              "assistant_early_exit": dict(assistant_early_exit=1)}[proposer]
    plain = greedy(tiny_model, ids, mask, max_new_tokens=20)
    ours = greedy(tiny_model, ids, mask, max_new_tokens=20, **kwargs)
    assert torch.equal(ours.sequences, plain.sequences)
    # A fresh copy for transformers: its failed early exit on GPT-2 leaves the model broken (shared fixture)
    model = build_tiny_model(kind_of(tiny_model), vocab_size=1000, seed=0)
    try:
        reference, ours = _transformers_and_ours(model, ids, mask, 20, **kwargs)
    except (IndexError, AttributeError, ValueError, TypeError) as error:
        if proposer == "assistant_early_exit" and kind_of(tiny_model) == "tiny_gpt2":
            pytest.skip(f"transformers' assistant_early_exit does not run on GPT-2: {type(error).__name__}: {error}")
        raise
    assert torch.equal(ours.sequences, reference)


SOTU_PROMPTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: the state of our Union is",
    "Tonight I want to talk about the economy, about jobs, and about the work we must do together so that",
]
MORE_PROMPTS = ["We will rebuild our roads and bridges, and we will", "The budget I send"]


@pytest.mark.slow
def test_smollm2_lookup_equals_transformers_and_batched_rows_equal_alone(smollm2):
    model, tokenizer = smollm2
    kwargs = dict(prompt_lookup_num_tokens=5, max_new_tokens=48)
    prompts = SOTU_PROMPTS + MORE_PROMPTS
    alone = []
    for i, text in enumerate(prompts):
        batch = tokenizer([text], return_tensors="pt")
        alone.append(greedy(model, batch.input_ids, batch.attention_mask, **kwargs))
        if i < len(SOTU_PROMPTS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                           **kwargs)
            assert torch.equal(alone[i].sequences, reference), text
            assert int(alone[i].accepted_tokens.sum()) > 0
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    spec = greedy(model, batch.input_ids, batch.attention_mask, **kwargs)
    check_counters(spec)
    ties = []
    for row, text in enumerate(prompts):  # padding changes the float sums: only a near tie may flip a token
        mask = tokenizer([text], return_tensors="pt").attention_mask[0]
        tie = row_near_tie(model, alone[row], 0, mask, spec, row, f"smollm2 lookup row {row}")
        ties += [tie] if tie is not None else []
    assert len(ties) <= 1, ties


@pytest.mark.slow
def test_smollm2_first_layers_equal_plain_greedy(smollm2):
    """draft_layers=8 (transformers' assistant_early_exit=8; its own run takes ~30 s on CPU, so the tiny-Llama
    test compares with it): one prompt, 5 proposals per step to keep the draft's cost down."""
    model, tokenizer = smollm2
    batch = tokenizer(SOTU_PROMPTS[:1], return_tensors="pt")
    plain = greedy(model, batch.input_ids, batch.attention_mask, max_new_tokens=48)
    spec = greedy(model, batch.input_ids, batch.attention_mask, max_new_tokens=48, draft_layers=8,
                  num_assistant_tokens=5)
    assert row_near_tie(model, plain, 0, batch.attention_mask[0], spec, 0, "smollm2 draft_layers") is None
    assert int(spec.accepted_tokens.sum()) > 0
    check_counters(spec)


def test_near_tie_helper_fails_on_a_real_difference(tiny_llama):
    """The near-tie excuse can fail: a run whose first token is suppressed differs at a clear gap."""
    ids = torch.tensor([LOOKUP_PROMPT])
    mask = torch.ones_like(ids)
    plain = greedy(tiny_llama, ids, mask, max_new_tokens=12)
    other = greedy(tiny_llama, ids, mask, max_new_tokens=12, suppress_tokens=row_new_tokens(plain, 0)[:1])
    assert row_new_tokens(plain, 0) != row_new_tokens(other, 0)
    with pytest.raises(AssertionError, match="no near tie"):
        compare_or_near_tie(tiny_llama, plain, other, mask)


# ---- 4. processors and stops acting inside an accepted block -------------------------------------------------

PROCESSOR_CASES = {
    "repetition_penalty": dict(repetition_penalty=1.3),
    "no_repeat_ngram": dict(no_repeat_ngram_size=3),  # acts on GPT-2 (it loops); tiny Llama repeats no 3-gram
    "no_repeat_unigram": dict(no_repeat_ngram_size=1),  # acts everywhere: every emitted token is banned after
    "penalty_and_ngram": dict(repetition_penalty=1.3, no_repeat_ngram_size=3),
}
BLOCK_PROPOSERS = ("lookup", "draft_layers", "same_weights_draft", "other_weights_draft")


def assert_batched_equal(model, plain, spec, mask, label):
    assert compare_or_near_tie(model, plain, spec, mask, label=label) == []
    assert spec.finish_reasons == plain.finish_reasons
    assert torch.equal(spec.new_token_mask, plain.new_token_mask)
    torch.testing.assert_close(spec.token_logprobs, plain.token_logprobs, atol=1e-4, rtol=0)
    check_counters(spec)


@pytest.mark.parametrize("proposer", BLOCK_PROPOSERS)
@pytest.mark.parametrize("case, cache", [(case, "dynamic") for case in sorted(PROCESSOR_CASES)]
                         + [("penalty_and_ngram", "static")])
def test_processors_inside_blocks_equal_plain_greedy(tiny_model, case, proposer, cache):
    ids, mask = padded(BATCH_PROMPTS)
    kwargs = dict(PROCESSOR_CASES[case], max_new_tokens=20, eos_token_id=[], cache=cache)
    plain = greedy(tiny_model, ids, mask, **kwargs)
    unprocessed = greedy(tiny_model, ids, mask, max_new_tokens=20, eos_token_id=[], cache=cache)
    if case != "no_repeat_ngram" or kind_of(tiny_model) == "tiny_gpt2":
        assert not torch.equal(plain.sequences, unprocessed.sequences)  # the processor acts in this run
    spec = greedy(tiny_model, ids, mask, **kwargs, **proposer_kwargs(proposer, tiny_model))
    assert_batched_equal(tiny_model, plain, spec, mask, f"{case} {proposer}/{cache}")
    if proposer == "same_weights_draft":  # the draft sees the same processors: blocks of several tokens kept
        assert int(spec.accepted_tokens.sum()) > 0


@pytest.mark.parametrize("proposer", BLOCK_PROPOSERS)
def test_min_new_tokens_holds_an_early_eos_back(tiny_model, proposer):
    ids, mask = padded(BATCH_PROMPTS)
    free = greedy(tiny_model, ids, mask, max_new_tokens=16, eos_token_id=[]).new_token_ids
    eos = sorted({int(free[0, 1]), int(free[3, 2])})  # would end rows 0 and 3 before 5 tokens
    early = greedy(tiny_model, ids, mask, max_new_tokens=16, eos_token_id=eos)
    assert int(early.new_token_mask.sum(dim=1).min()) < 5
    kwargs = dict(max_new_tokens=16, eos_token_id=eos, min_new_tokens=5)
    plain = greedy(tiny_model, ids, mask, **kwargs)
    assert int(plain.new_token_mask.sum(dim=1).min()) >= 5
    spec = greedy(tiny_model, ids, mask, **kwargs, **proposer_kwargs(proposer, tiny_model))
    assert_batched_equal(tiny_model, plain, spec, mask, f"min_new_tokens {proposer}")


@pytest.mark.parametrize("max_new_tokens", [7, 8, 10])
@pytest.mark.parametrize("proposer", BLOCK_PROPOSERS)
def test_max_new_tokens_not_a_multiple_of_the_block(tiny_model, proposer, max_new_tokens):
    """Blocks of up to 4 proposals + 1: the budget ends inside what a full block would emit."""
    ids, mask = padded(BATCH_PROMPTS)
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=[])
    plain = greedy(tiny_model, ids, mask, **kwargs)
    spec_kwargs = proposer_kwargs(proposer, tiny_model)
    spec_kwargs.update(prompt_lookup_num_tokens=4) if proposer == "lookup" else spec_kwargs.update(
        num_assistant_tokens=4)
    spec = greedy(tiny_model, ids, mask, **kwargs, **spec_kwargs)
    assert_batched_equal(tiny_model, plain, spec, mask, f"max_new_tokens={max_new_tokens} {proposer}")
    assert spec.new_token_ids.shape[1] == max_new_tokens and spec.finish_reasons == ["length"] * 4


@pytest.fixture(scope="module")
def tiny_llama_with_tokenizer():
    model, tokenizer = load_tiny("tiny_llama")
    assert callable(getattr(tokenizer, "decode", None)) and model.config.vocab_size == len(tokenizer)
    return model, tokenizer


@pytest.mark.parametrize("proposer", ["lookup", "draft_layers", "other_weights_draft"])
def test_stop_strings_inside_blocks_equal_plain_greedy(tiny_llama_with_tokenizer, proposer):
    model, tokenizer = tiny_llama_with_tokenizer
    batch = tokenizer(["the cat sat on the mat, the cat sat on the", "one two three one two", "hello world",
                       "a b a b a b a"], return_tensors="pt", padding=True)
    ids, mask = batch.input_ids, batch.attention_mask
    free = greedy(model, ids, mask, max_new_tokens=16, eos_token_id=[])
    # A stop string spanning two tokens that row 0 emits at steps 5 and 6 (its end inside a token's text)
    stop = tokenizer.decode(free.new_token_ids[0, 5:7])[1:] or tokenizer.decode(free.new_token_ids[0, 5:7])
    kwargs = dict(max_new_tokens=16, eos_token_id=[], stop_strings=[stop], tokenizer=tokenizer)
    plain = greedy(model, ids, mask, **kwargs)
    assert plain.finish_reasons[0] == "stop_string"
    if proposer == "lookup":
        spec_kwargs = dict(prompt_lookup_num_tokens=3)
    elif proposer == "draft_layers":
        spec_kwargs = dict(draft_layers=1)
    else:
        spec_kwargs = dict(assistant_model=load_tiny("tiny_llama", seed=1)[0])
    spec = greedy(model, ids, mask, **kwargs, **spec_kwargs)
    assert_batched_equal(model, plain, spec, mask, f"stop_strings {proposer}")


@pytest.mark.slow
def test_smollm2_assistant_model_equals_transformers_assisted_generation(smollm2):
    """A draft model on SmolLM2's tokenizer that needs no download: SmolLM2's own first 15 layers as a separate
    causal LM object (decoding.speculative.first_layers), given to both as `assistant_model`."""
    from decoding.speculative.first_layers import first_layers

    model, tokenizer = smollm2
    draft = first_layers(model, 15)
    batch = tokenizer(SOTU_PROMPTS[:1], return_tensors="pt")
    kwargs = dict(max_new_tokens=32, num_assistant_tokens=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                   assistant_model=draft, **kwargs)
    spec = greedy(model, batch.input_ids, batch.attention_mask, assistant_model=draft, **kwargs)
    assert torch.equal(spec.sequences, reference)
    assert int(spec.proposed_tokens.sum()) > 0
    check_counters(spec)
