"""transformers' tests/generation/test_utils.py (its decoder-only parts), ported to `decoding.generate`.

Source: huggingface/transformers tests/generation/test_utils.py (`GenerationTesterMixin` and
`GenerationIntegrationTests`) and tests/generation/test_framework_agnostic.py (the transition-score cases).
Same settings as there: 3 new tokens, EOS off and pad = the model's EOS (`prepare_config_and_inputs_for_generate`),
`bad_words_ids=[[1, 0]]`, `repetition_penalty=1.2`, `remove_invalid_values=True`, sampling with top_k=10,
top_p=0.7, temperature=0.7, beams with `length_penalty=2.0`, `early_stopping=False`. The same assertions
(`_check_outputs`: sequence length, one (rows, vocab) score and logit tensor per new token), and on top of them
each output equals `model.generate`'s for the same arguments. The hub's tiny checkpoints become the tiny Llama
and GPT-2 of tests/conftest.py.

Not ported, and why:
- encoder-decoder, multimodal and speech cases (encoder_outputs, decoder_start_token_id, head masking, input_values,
  pixel values): decodelab generates with decoder-only models;
- assisted / prompt-lookup decoding (issue 13), contrastive search and low_memory, DoLa (issue 14), constrained
  beam search (a Hub recipe in transformers 5), watermarking and CFG (other parts of issue 12, their own tests);
- output_attentions / output_hidden_states / past_key_values checks, test_generate_continue_from_past_key_values,
  the quantized and offloaded caches: refused keywords (docs/generate_keywords.md; the refusals are tested below
  and in test_generate_keywords.py); test_generate_from_inputs_embeds and the inputs_embeds length tests are
  ported in test_inputs_embeds.py;
- logits_to_keep, the attention-implementation and multi-GPU cases: our loop always keeps one position, on one device;
- test_generate_compile_model_forward: compile=True is tests/decoding/test_compiled.py's;
- cases whose expected values are a hub checkpoint's text (test_return_unprocessed_logit_scores' "y"/"n",
  test_per_row_stopping_criteria): their rules are checked here against generate instead of against strings.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import MaxLengthCriteria, StoppingCriteria, StoppingCriteriaList

import decoding

MAX_NEW_TOKENS = 3  # GenerationTesterMixin.max_new_tokens
PROCESSING = dict(bad_words_ids=[[1, 0]], repetition_penalty=1.2, remove_invalid_values=True)
WARPING = dict(top_k=10, top_p=0.7, temperature=0.7)
DICT_OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


def beam_kwargs(num_return_sequences=1):
    return dict(early_stopping=False, length_penalty=2.0, num_beams=2, num_return_sequences=num_return_sequences)


def diverse_beam_kwargs(num_return_sequences=1):
    return dict(beam_kwargs(num_return_sequences), num_beam_groups=2, diversity_penalty=2.0)


def inputs_for_generate(model, batch_size=2, length=7, seed=0):
    """(ids, mask, settings) as prepare_config_and_inputs_for_generate: random ids, no EOS, pad = the EOS."""
    ids = torch.randint(3, model.config.vocab_size, (batch_size, length), generator=torch.Generator().manual_seed(seed))
    pad = model.generation_config.eos_token_id
    return ids, torch.ones_like(ids), dict(eos_token_id=None, pad_token_id=pad)


def both(model, ids, mask, seed=0, **kwargs):
    """model.generate's output and ours for the same keywords and global seed (use_cache=False: our cache 'none').

    Group beam search left transformers 5's generate (a Hub recipe): there the reference is None and
    test_beam_diverse.py's golden cases from transformers 4.55 stand in for it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        reference = None if kwargs.get("num_beam_groups", 1) > 1 else model.generate(ids, attention_mask=mask,
                                                                                    **kwargs)
        torch.manual_seed(seed)
        ours = decoding.generate(model, ids, mask, **kwargs)
    return reference, ours


def check_outputs(ours, model, prompt_length, num_return_sequences=1, num_beams=1):
    """_check_outputs / _check_scores / _check_logits: one (internal batch, vocab) tensor per generated token."""
    vocab = model.config.vocab_size
    input_batch = ours.sequences.shape[0] // num_return_sequences
    internal_batch = input_batch * num_beams if num_beams > 1 else input_batch * num_return_sequences
    generated = ours.sequences.shape[-1] - prompt_length
    assert isinstance(ours.scores, tuple) and len(ours.scores) == generated
    assert [s.shape for s in ours.scores] == [(internal_batch, vocab)] * generated
    assert isinstance(ours.logits, tuple)
    assert [lg.shape for lg in ours.logits] == [(internal_batch, vocab)] * len(ours.logits)


def assert_same_outputs(reference, ours, first_step_atol=0.0):
    """Sequences bit-equal; scores and logits bit-equal per step (step 0 within `first_step_atol`: with
    num_return_sequences > 1 we prefill each prompt once where generate prefills every copy)."""
    assert torch.equal(reference.sequences, ours.sequences)
    for name in ("scores", "logits"):
        for step, (a, b) in enumerate(zip(getattr(ours, name), getattr(reference, name))):
            torch.testing.assert_close(a, b, rtol=0, atol=first_step_atol if step == 0 else 0.0, msg=f"{name} {step}")
    if getattr(reference, "beam_indices", None) is not None:
        assert torch.equal(reference.beam_indices.to(ours.beam_indices.dtype), ours.beam_indices)


# --- GenerationTesterMixin: greedy, sampling, beam search, beam sampling, group beam search ---

@pytest.mark.parametrize("use_cache", [False, True])
def test_greedy_generate_dict_outputs(tiny_model, use_cache):
    ids, mask, special = inputs_for_generate(tiny_model)
    reference, ours = both(tiny_model, ids, mask, do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
                           use_cache=use_cache, **DICT_OUTPUTS, **PROCESSING, **special)
    assert ours.sequences.shape[-1] == MAX_NEW_TOKENS + ids.shape[-1]
    check_outputs(ours, tiny_model, ids.shape[-1])
    assert_same_outputs(reference, ours)


def test_sample_generate_dict_output(tiny_model):
    ids, mask, special = inputs_for_generate(tiny_model)
    reference, ours = both(tiny_model, ids, mask, do_sample=True, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
                           num_return_sequences=2, use_cache=False, **DICT_OUTPUTS, **PROCESSING, **WARPING, **special)
    assert ours.sequences.shape[-1] == MAX_NEW_TOKENS + ids.shape[-1]
    check_outputs(ours, tiny_model, ids.shape[-1], num_return_sequences=2)
    assert_same_outputs(reference, ours, first_step_atol=1e-5)


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("mode, settings", [
    ("beam_search", dict(do_sample=False, **beam_kwargs())),
    ("beam_sample", dict(do_sample=True, **WARPING, **beam_kwargs())),
    ("beam_search_2_sequences", dict(do_sample=False, **beam_kwargs(num_return_sequences=2))),
    ("group_beam_search", dict(do_sample=False, **diverse_beam_kwargs())),
    ("group_beam_search_2_sequences", dict(do_sample=False, **diverse_beam_kwargs(num_return_sequences=2))),
])
def test_beam_generate_dict_output(tiny_model, mode, settings, use_cache):
    ids, mask, special = inputs_for_generate(tiny_model)
    reference, ours = both(tiny_model, ids, mask, max_new_tokens=MAX_NEW_TOKENS, use_cache=use_cache,
                           **DICT_OUTPUTS, **PROCESSING, **settings, **special)
    assert ours.sequences.shape[-1] == MAX_NEW_TOKENS + ids.shape[-1]
    check_outputs(ours, tiny_model, ids.shape[-1], num_return_sequences=settings["num_return_sequences"],
                  num_beams=settings["num_beams"])
    assert ours.beam_indices.shape == (ids.shape[0] * settings["num_return_sequences"], MAX_NEW_TOKENS)
    if reference is not None:
        assert_same_outputs(reference, ours)


# --- left padding, static cache ---

@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_left_padding_compatibility(tiny_model, cache):
    """32 pad slots in front of every row leave the next-token logits as they were (1e-5), as in
    test_left_padding_compatibility; here through generate's first-step logits."""
    ids, mask, special = inputs_for_generate(tiny_model)
    pad = special["pad_token_id"]
    padded_ids = torch.cat([torch.full((ids.shape[0], 32), pad), ids], dim=1)
    padded_mask = torch.cat([torch.zeros(ids.shape[0], 32, dtype=mask.dtype), mask], dim=1)
    settings = dict(max_new_tokens=1, return_dict_in_generate=True, output_logits=True, cache=cache, **special)
    plain = decoding.generate(tiny_model, ids, mask, **settings)
    padded = decoding.generate(tiny_model, padded_ids, padded_mask, **settings)
    torch.testing.assert_close(plain.logits[0], padded.logits[0], rtol=1e-5, atol=1e-5)
    reference = tiny_model(ids, attention_mask=mask).logits[:, -1]
    torch.testing.assert_close(plain.logits[0], reference, rtol=1e-5, atol=1e-5)


def similar_outputs(first, second, atol=1e-5):
    """_check_similar_generate_outputs: the same tokens, or scores equal up to the first differing token."""
    prompt_length = first.sequences.shape[1] - len(first.scores)
    matches = first.sequences == second.sequences
    for row in range(first.sequences.shape[0]):
        if matches[row].all():
            continue
        step = int(matches[row].int().argmin()) - prompt_length
        return torch.allclose(first.scores[step][row], second.scores[step][row], rtol=atol, atol=atol)
    return True


def test_generate_with_static_cache(tiny_model):
    """Static and dynamic cache give similar outputs over 20 tokens (float32 only: float16 on CPU is
    tests/decoding/test_dtypes.py's business); and ours equal generate's with cache_implementation='static'."""
    ids, mask, special = inputs_for_generate(tiny_model)
    settings = dict(max_new_tokens=20, return_dict_in_generate=True, output_scores=True, use_cache=True, **special)
    static = decoding.generate(tiny_model, ids, mask, cache_implementation="static", **settings)
    dynamic = decoding.generate(tiny_model, ids, mask, **settings)
    assert similar_outputs(dynamic, static)
    reference, ours = both(tiny_model, ids, mask, cache_implementation="static", **settings)
    assert torch.equal(reference.sequences, ours.sequences)


# --- GenerationIntegrationTests ---

@pytest.mark.filterwarnings("ignore:no max_new_tokens")
def test_custom_stopping_criteria_overload_error(tiny_model):
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    criteria = StoppingCriteriaList([MaxLengthCriteria(max_length=42)])
    for extra in ({}, {"max_length": 32}):
        with pytest.raises(ValueError, match="stopping_criteria=.*MaxLengthCriteria.*max_new_tokens / max_length"):
            decoding.generate(tiny_model, ids, mask, stopping_criteria=criteria, **extra, **special)


class StopAtLength20(StoppingCriteria):
    """test_custom_stopping_criteria's DummyCriteria: a plain bool for the whole batch."""

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids.shape[-1] >= 20


@pytest.mark.parametrize("max_length, expected", [(22, 20), (18, 18)])
def test_custom_stopping_criteria(tiny_model, max_length, expected):
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    reference, ours = both(tiny_model, ids, mask, stopping_criteria=StoppingCriteriaList([StopAtLength20()]),
                           max_length=max_length, **special)
    assert list(ours.sequences.shape) == [1, expected]
    assert torch.equal(reference, ours.sequences)


def test_logits_processor_not_inplace(tiny_model):
    """Without processors the scores are the logits; temperature changes the scores and not the logits."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    _, plain = both(tiny_model, ids, mask, max_new_tokens=MAX_NEW_TOKENS, **DICT_OUTPUTS, **special)
    assert plain.logits[-1].tolist() == plain.scores[-1].tolist()
    reference, warmed = both(tiny_model, ids, mask, max_new_tokens=MAX_NEW_TOKENS, temperature=0.5, do_sample=True,
                             **DICT_OUTPUTS, **special)
    assert warmed.logits[-1].tolist() != warmed.scores[-1].tolist()
    assert_same_outputs(reference, warmed)


def test_compare_unprocessed_logit_scores(tiny_model):
    """output_logits holds the model's own next-token logits (computed for the last position only, as generate
    computes them: `logits_to_keep=1`)."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    with torch.no_grad():
        forward = tiny_model(ids, logits_to_keep=1).logits[:, -1, :][0]
    reference, ours = both(tiny_model, ids, mask, return_dict_in_generate=True, output_logits=True,
                           max_new_tokens=1, do_sample=True, **special)
    assert forward.tolist() == ours.logits[0][0].tolist() == reference.logits[0][0].tolist()


def test_eos_token_id_int_and_list_top_k_top_sampling(tiny_model):
    """An EOS id given as an int or inside a list ends the rows at the same length, as in generate."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    settings = dict(do_sample=True, num_beams=1, top_p=0.7, top_k=10, temperature=0.7, pad_token_id=0)
    torch.manual_seed(1)
    free = decoding.generate(tiny_model, ids, mask, eos_token_id=[], max_new_tokens=20, **settings).new_token_ids
    eos = int(free[0, 4])  # a token the row draws at its 5th step: an EOS that matters
    lengths = []
    for eos_token_id in (eos, [eos, 998]):
        reference, ours = both(tiny_model, ids, mask, seed=1, eos_token_id=eos_token_id, **settings)
        assert torch.equal(reference, ours.sequences)
        lengths.append(ours.sequences.shape[-1])
    assert lengths[0] == lengths[1] <= ids.shape[-1] + 5


def test_default_max_length_warning(tiny_model):
    """Only generate's default max_length deciding the length warns; an explicit max_length (even 20), a
    max_new_tokens or a model generation_config max_length does not."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    with pytest.warns(UserWarning, match="default of 20 new tokens"):
        decoding.generate(tiny_model, ids, mask, **special)
    for extra in ({"max_length": 20}, {"max_new_tokens": 4}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            decoding.generate(tiny_model, ids, mask, **extra, **special)
    original = tiny_model.generation_config.max_length
    tiny_model.generation_config.max_length = 10
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            decoding.generate(tiny_model, ids, mask, **special)
    finally:
        tiny_model.generation_config.max_length = original


@pytest.mark.parametrize("extra", [dict(max_new_tokens=3), dict(max_new_tokens=3, max_length=20)])
def test_max_new_tokens_decoder_only(tiny_model, extra):
    """test_max_new_tokens_decoder_only: max_new_tokens counts new tokens and wins over max_length."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    reference, ours = both(tiny_model, ids, mask, **extra, **special)
    assert ours.sequences.shape == (1, ids.shape[-1] + 3) and torch.equal(reference, ours.sequences)


def test_past_key_values_are_refused_before_any_forward(tiny_model):
    """test_generate_continue_from_past_key_values: refused, with the reason."""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    with pytest.raises(ValueError, match="past_key_values: decodelab builds and owns the cache"):
        decoding.generate(tiny_model, ids, mask, past_key_values=object(), **special)


# --- transition scores (test_framework_agnostic.py: test_transition_scores_*) ---

@pytest.mark.parametrize("settings", [
    dict(do_sample=False),
    dict(do_sample=True, top_k=10),
    dict(num_beams=3, num_return_sequences=2),
    dict(num_beams=3, do_sample=True, num_return_sequences=2),
    dict(num_beams=2, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2),
])
@pytest.mark.parametrize("normalize_logits", [False, True])
def test_transition_scores_equal_compute_transition_scores(tiny_model, padded_batch, settings, normalize_logits):
    ids, mask = padded_batch
    reference, ours = both(tiny_model, ids, mask, max_new_tokens=6, eos_token_id=[7, 8, 9, 10], pad_token_id=0,
                           **DICT_OUTPUTS, **settings)
    if reference is None:  # group beam search: generate's helper on our outputs (it is a pure function of them)
        reference = ours
    assert torch.equal(reference.sequences, ours.sequences)
    expected = tiny_model.compute_transition_scores(reference.sequences, reference.scores,
                                                    getattr(reference, "beam_indices", None), normalize_logits)
    assert torch.equal(ours.transition_scores(normalize_logits), expected)
    assert torch.equal(decoding.transition_scores(ours.sequences, ours.scores, ours.beam_indices, normalize_logits),
                       expected)


@pytest.mark.parametrize("settings", [dict(num_beams=4), dict(num_beams=4, do_sample=True),
                                      dict(num_beams=2, num_beam_groups=2, diversity_penalty=1.0)])
def test_transition_scores_beam_search_sum_to_the_sequence_scores(tiny_model, settings):
    """test_transition_scores_beam_search_decoder_only: with length_penalty=0 and no EOS the transition scores
    of a hypothesis add up to its sequences_scores."""
    ids, mask, _ = inputs_for_generate(tiny_model)
    ours = decoding.generate(tiny_model, ids, mask, max_length=ids.shape[-1] + 3, num_return_sequences=2,
                             eos_token_id=None, length_penalty=0.0, **DICT_OUTPUTS, **settings)
    torch.testing.assert_close(ours.transition_scores().sum(-1), ours.sequences_scores, rtol=1e-3, atol=1e-3)


def test_transition_scores_without_scores_are_refused(tiny_llama):
    ours = decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="output_scores=True"):
        ours.transition_scores()


# --- test_framework_agnostic.py's decoder-only cases ---

def test_validate_generation_inputs(tiny_model):
    """A typo and an argument nothing uses are errors naming them. (The original then passes an all-zero
    attention_mask, which generate accepts; decodelab refuses rows without a real token on purpose,
    decoding/inputs.py, so a mask of ones stands in for it.)"""
    ids, mask, special = inputs_for_generate(tiny_model, batch_size=1)
    with pytest.raises(ValueError, match="do_samples.*did you mean 'do_sample'"):
        decoding.generate(tiny_model, ids, do_samples=True, max_new_tokens=2, **special)
    with pytest.raises(ValueError, match="foo"):
        decoding.generate(tiny_model, ids, foo="bar", max_new_tokens=2, **special)
    decoding.generate(tiny_model, ids, attention_mask=mask, max_new_tokens=2, **special)


def test_generate_input_ids_as_kwarg(tiny_model):
    ids, _, special = inputs_for_generate(tiny_model, batch_size=1)
    by_keyword = decoding.generate(tiny_model, input_ids=ids, max_length=15, **special).sequences
    by_position = decoding.generate(tiny_model, ids, max_length=15, **special).sequences
    assert torch.equal(by_keyword, by_position) and by_position.shape == (1, 15)


def test_generate_inputs_and_input_ids_keyword_together_is_an_error(tiny_model):
    """test_generate_inputs_and_encoder_kwargs: the prompt given twice (a TypeError here: Python refuses it)."""
    ids, _, special = inputs_for_generate(tiny_model, batch_size=1)
    with pytest.raises(TypeError, match="input_ids"):
        decoding.generate(tiny_model, ids, input_ids=ids, max_length=10, **special)


@pytest.mark.parametrize("settings", [dict(do_sample=False, num_beams=1), dict(do_sample=False, num_beams=3)])
def test_eos_token_id_int_and_list(tiny_model, settings):
    """test_eos_token_id_int_and_list_greedy_search / _beam_search: one EOS id alone or first in a list gives
    the same length (beam search: or the same tokens then padding), and generate's tokens."""
    ids, mask, _ = inputs_for_generate(tiny_model, batch_size=1)
    free = decoding.generate(tiny_model, ids, mask, eos_token_id=[], pad_token_id=0, max_new_tokens=20,
                             **settings).new_token_ids
    eos = int(free[0, 5])
    outs = []
    for eos_token_id in (eos, [eos, 998]):
        reference, ours = both(tiny_model, ids, mask, eos_token_id=eos_token_id, pad_token_id=0, max_new_tokens=20,
                               **settings)
        assert torch.equal(reference, ours.sequences)
        outs.append(ours.sequences)
    length = min(o.shape[-1] for o in outs)
    assert all(torch.equal(o[:, :length], outs[0][:, :length]) and (o[:, length:] == 0).all() for o in outs)
    if settings["num_beams"] == 1:  # greedy follows the free run, so its EOS at step 6 ends the row
        assert length == ids.shape[-1] + 6


def test_transition_scores_early_stopping(tiny_model):
    """Beam search with forced EOS, num_return_sequences=3 of 4 beams, a batch of 2, length_penalty=0: each
    hypothesis' transition scores sum to its sequences_scores."""
    ids, mask, _ = inputs_for_generate(tiny_model, length=16)
    settings = dict(max_length=24, return_dict_in_generate=True, output_scores=True, forced_eos_token_id=2,
                    eos_token_id=2, pad_token_id=0, num_beams=4, do_sample=False, num_return_sequences=3,
                    length_penalty=0.0)
    reference, ours = both(tiny_model, ids, mask, **settings)
    assert torch.equal(reference.sequences, ours.sequences)
    torch.testing.assert_close(ours.transition_scores().sum(-1), ours.sequences_scores)


def test_beam_search_attention_mask(tiny_model, padded_batch):
    """test_encoder_decoder_generate_attention_mask, decoder-only: a prompt in a left-padded batch gets the beam
    scores it gets alone (5 beams, 5 sequences, no EOS)."""
    ids, mask = padded_batch
    settings = dict(max_new_tokens=10, num_beams=5, num_return_sequences=5, eos_token_id=None, pad_token_id=0,
                    return_dict_in_generate=True, output_scores=True)
    batched = decoding.generate(tiny_model, ids, mask, **settings)
    alone = decoding.generate(tiny_model, ids[2:, 3:], mask[2:, 3:], **settings)  # row 2 without its padding
    assert abs(float(batched.sequences_scores[10:].sum() - alone.sequences_scores.sum())) < 1e-4
