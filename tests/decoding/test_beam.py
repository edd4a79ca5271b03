"""Beam search and beam sampling: token identity with `model.generate`, and the properties behind it.

Covered against transformers' `_beam_search` (same arguments, same `torch.manual_seed`): widths 2 to 8,
length penalties below, at and above 1, every `early_stopping` mode, hypotheses ending with EOS at
different steps (EOS ids chosen from tokens the beams produce), `num_return_sequences` below `num_beams`,
left-padded batches, the logits processors, beam sampling, and the three cache settings. Then: width 1
is greedy, a batch row equals its prompt alone, the scores are what the per-token records sum to, and
bad input is a named ValueError.
"""

import math

import pytest
import torch

import decoding
from decoding.beam import beam_search
from decoding.params import resolve_params

def reference_and_ours(model, ids, mask, cache="dynamic", seed=0, **kwargs):
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True,
                               **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours


def assert_same(reference, ours):
    assert ours.sequences.shape == reference.sequences.shape
    assert torch.equal(ours.sequences, reference.sequences)
    assert torch.allclose(ours.sequences_scores, reference.sequences_scores, atol=1e-5, rtol=0)


def eos_ids_from_beams(model, ids, mask, steps=(2, 5), **kwargs):
    """EOS ids that the beams reach at different steps: tokens the best beams chose, run without EOS.

    With the same seed, the run with these EOS ids is the same as the free run until one of them comes
    up, so prompt 0 has a candidate ending at step `steps[0]` and the last prompt one at `steps[1]`.
    """
    kwargs = dict(kwargs, num_return_sequences=1)
    torch.manual_seed(0)
    free = decoding.generate(model, ids, mask, eos_token_id=[], **kwargs).new_token_ids
    return sorted({int(free[0, steps[0]]), int(free[-1, steps[1]])})


def finished_lengths(out):
    return out.new_token_mask.sum(-1).tolist()


# (num_beams, length_penalty, early_stopping): every width with several penalties, every mode with every
# penalty below, at and above 1 (0 too: the sum of log-probs, which favours short hypotheses).
BEAM_CASES = [(2, 0.5, False), (2, 2.0, "never"), (4, 0.5, True), (4, 1.0, False), (4, 1.0, "never"),
              (4, 2.0, True), (4, 0.0, False), (8, 1.0, True), (8, 2.0, False), (8, 0.5, "never"), (3, 0.0, True)]


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", BEAM_CASES)
def test_beam_search_matches_generate(tiny_model, padded_batch, num_beams, length_penalty, early_stopping):
    ids, mask = padded_batch
    kwargs = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                  max_new_tokens=10, num_return_sequences=max(1, num_beams // 2))
    eos = eos_ids_from_beams(tiny_model, ids, mask, **kwargs)
    reference, ours = reference_and_ours(tiny_model, ids, mask, eos_token_id=eos, pad_token_id=5, **kwargs)
    assert_same(reference, ours)
    assert ours.sequences.shape[0] == 3 * kwargs["num_return_sequences"]


@pytest.mark.parametrize("case", [
    dict(num_beams=2),  # generate's default top_k=50 applies to beam sampling too
    dict(num_beams=4, top_k=0, early_stopping=True, num_return_sequences=2),
    dict(num_beams=4, temperature=0.7, top_p=0.9, early_stopping="never", length_penalty=0.5),
    dict(num_beams=3, temperature=1.3, top_k=20, length_penalty=2.0, num_return_sequences=3),
])
def test_beam_sampling_matches_generate(tiny_model, padded_batch, case):
    ids, mask = padded_batch
    kwargs = dict(case, do_sample=True, max_new_tokens=10)
    eos = eos_ids_from_beams(tiny_model, ids, mask, **kwargs)
    for seed in (0, 1):
        reference, ours = reference_and_ours(tiny_model, ids, mask, seed=seed, eos_token_id=eos, **kwargs)
        assert_same(reference, ours)


@pytest.mark.parametrize("case", [
    dict(repetition_penalty=1.5),
    dict(no_repeat_ngram_size=2),
    dict(min_new_tokens=6),
    dict(min_length=9),
    dict(repetition_penalty=1.2, no_repeat_ngram_size=3, length_penalty=0.5),
    dict(do_sample=True, typical_p=0.9, min_p=0.05, repetition_penalty=1.3),
])
def test_logits_processors_in_beam_search_match_generate(tiny_model, padded_batch, case):
    ids, mask = padded_batch
    kwargs = dict(case, num_beams=3, max_new_tokens=12)
    eos = eos_ids_from_beams(tiny_model, ids, mask, steps=(1, 3), **kwargs)
    reference, ours = reference_and_ours(tiny_model, ids, mask, eos_token_id=eos, **kwargs)
    assert_same(reference, ours)


@pytest.mark.parametrize("kwargs", [dict(), dict(do_sample=True, top_p=0.9)])
@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_every_cache_setting_matches_generate(tiny_model, padded_batch, cache, kwargs):
    """Reordering the cache when beams are selected works in every setting: same tokens as generate."""
    ids, mask = padded_batch
    kwargs = dict(kwargs, num_beams=4, max_new_tokens=12, num_return_sequences=2)
    eos = eos_ids_from_beams(tiny_model, ids, mask, steps=(3, 6), **kwargs)
    reference, ours = reference_and_ours(tiny_model, ids, mask, cache=cache, eos_token_id=eos, **kwargs)
    assert_same(reference, ours)


def test_cache_settings_give_identical_results(tiny_model, padded_batch):
    ids, mask = padded_batch
    runs = {cache: decoding.generate(tiny_model, ids, mask, cache=cache, num_beams=5, max_new_tokens=14,
                                     num_return_sequences=5) for cache in ("none", "dynamic", "static")}
    for cache in ("dynamic", "static"):
        assert torch.equal(runs[cache].sequences, runs["none"].sequences)
        assert torch.allclose(runs[cache].sequences_scores, runs["none"].sequences_scores, atol=1e-5)
        assert torch.allclose(runs[cache].token_logprobs_raw, runs["none"].token_logprobs_raw, atol=1e-4)


def test_hypotheses_end_with_eos_at_different_steps(tiny_model, padded_batch):
    ids, mask = padded_batch
    # length_penalty=0 scores a hypothesis by its sum of log-probs, so short (EOS) ones make the final cut.
    kwargs = dict(num_beams=4, max_new_tokens=12, num_return_sequences=4, pad_token_id=5, length_penalty=0.0)
    eos = eos_ids_from_beams(tiny_model, ids, mask, steps=(2, 6), **kwargs)
    reference, ours = reference_and_ours(tiny_model, ids, mask, eos_token_id=eos, **kwargs)
    assert_same(reference, ours)
    lengths = finished_lengths(ours)
    assert "eos" in ours.finish_reasons and len(set(lengths)) > 1
    for row, (length, reason) in enumerate(zip(lengths, ours.finish_reasons)):
        tokens = ours.new_token_ids[row]
        if reason == "eos":
            assert int(tokens[length - 1]) in eos
        else:
            assert reason == "length" and length == 12
        assert (tokens[length:] == 5).all()  # generate's fill after a hypothesis ends


def test_one_eos_id_as_an_int(tiny_model, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(num_beams=3, max_new_tokens=10, num_return_sequences=2)
    eos = eos_ids_from_beams(tiny_model, ids, mask, steps=(1, 4), **kwargs)[0]
    reference, ours = reference_and_ours(tiny_model, ids, mask, eos_token_id=eos, **kwargs)
    assert_same(reference, ours)


def test_num_return_sequences_below_num_beams(tiny_llama, padded_batch):
    ids, mask = padded_batch
    full = decoding.generate(tiny_llama, ids, mask, num_beams=4, num_return_sequences=4, max_new_tokens=8)
    part = decoding.generate(tiny_llama, ids, mask, num_beams=4, num_return_sequences=2, max_new_tokens=8)
    assert part.sequences.shape[0] == 6 and part.sequences_scores.shape == (6,)
    # The n best of each prompt, adjacent and best first: the first n of the K.
    keep = torch.tensor([0, 1, 4, 5, 8, 9])
    width = part.sequences.shape[1]
    assert torch.equal(part.sequences, full.sequences[keep, :width])
    assert torch.equal(part.sequences_scores, full.sequences_scores[keep])
    scores = full.sequences_scores.view(3, 4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_width_one_is_greedy(tiny_model, padded_batch):
    ids, mask = padded_batch
    eos = eos_ids_from_beams(tiny_model, ids, mask, num_beams=1, max_new_tokens=12)
    kwargs = dict(max_new_tokens=12, eos_token_id=eos, pad_token_id=5)
    greedy = decoding.generate(tiny_model, ids, mask, **kwargs)
    # Through generate num_beams=1 is greedy, as in model.generate.
    assert torch.equal(decoding.generate(tiny_model, ids, mask, num_beams=1, **kwargs).sequences, greedy.sequences)
    # The beam machinery itself at width 1 (one running beam, C = 2 candidates, early_stopping=True so a
    # finished hypothesis ends the search as EOS ends a greedy row) gives the greedy tokens too.
    with pytest.warns(UserWarning, match="early_stopping"):  # as generate warns: it means nothing at width 1
        params = resolve_params(tiny_model, ids.shape[1], 256, num_beams=1, early_stopping=True, **kwargs)
    with torch.inference_mode():
        beam = beam_search(tiny_model, ids, mask, params)
    assert "eos" in greedy.finish_reasons
    assert torch.equal(beam.sequences, greedy.sequences)
    assert beam.finish_reasons == greedy.finish_reasons
    assert torch.allclose(beam.token_logprobs_raw, greedy.token_logprobs_raw, atol=1e-6)


def test_each_prompt_equals_the_prompt_alone(tiny_model, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(num_beams=4, max_new_tokens=10, num_return_sequences=2, pad_token_id=5)
    eos = eos_ids_from_beams(tiny_model, ids, mask, steps=(2, 5), **kwargs)
    batch = decoding.generate(tiny_model, ids, mask, eos_token_id=eos, **kwargs)
    for prompt in range(3):
        start = int((mask[prompt] == 0).sum())
        alone = decoding.generate(tiny_model, ids[prompt:prompt + 1, start:], eos_token_id=eos, **kwargs)
        rows = slice(2 * prompt, 2 * prompt + 2)
        width = alone.new_token_ids.shape[1]
        assert torch.equal(batch.new_token_ids[rows, :width], alone.new_token_ids)
        assert (batch.new_token_ids[rows, width:] == 5).all()
        assert torch.allclose(batch.sequences_scores[rows], alone.sequences_scores, atol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.5, 2.0])
def test_scores_are_the_length_penalised_sum_of_token_scores(tiny_gpt2, padded_batch, length_penalty):
    ids, mask = padded_batch
    out = decoding.generate(tiny_gpt2, ids, mask, num_beams=4, num_return_sequences=4, max_new_tokens=10,
                            length_penalty=length_penalty, repetition_penalty=1.3, eos_token_id=[7, 9])
    lengths = out.new_token_mask.sum(-1).double()
    terms = out.extras["beam_token_scores"]
    assert (terms[~out.new_token_mask] == 0).all()
    expected = terms.double().sum(-1) / lengths ** length_penalty
    assert torch.allclose(out.sequences_scores.double(), expected, atol=1e-5)


def test_token_logprobs_equal_teacher_forcing(tiny_llama, padded_batch):
    ids, mask = padded_batch
    out = decoding.generate(tiny_llama, ids, mask, num_beams=3, num_return_sequences=3, max_new_tokens=8,
                            eos_token_id=[7, 9])
    prompt_mask = mask.repeat_interleave(3, dim=0)
    batch, total = out.sequences.shape
    full_mask = torch.ones((batch, total), dtype=torch.long)
    full_mask[:, :out.prompt_length] = prompt_mask
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = tiny_llama(input_ids=out.sequences, attention_mask=full_mask, position_ids=positions).logits
    logp = torch.log_softmax(logits[:, out.prompt_length - 1:-1].float(), -1)
    expected = logp.gather(-1, out.new_token_ids.clamp(min=0)[..., None]).squeeze(-1)
    alive = out.new_token_mask
    assert torch.allclose(out.token_logprobs_raw[alive], expected[alive], atol=1e-4)
    # No processors: the processed distribution is the model's.
    assert torch.allclose(out.token_logprobs[alive], expected[alive], atol=1e-4)
    assert out.new_tokens == int(alive.sum())


def test_stop_strings_end_a_hypothesis_like_generate():
    from experiments.models import load_model

    model, tokenizer = load_model("tiny_llama")
    batch = tokenizer(["The state of the union", "Hello"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    free = decoding.generate(model, batch.input_ids, batch.attention_mask, num_beams=4, max_new_tokens=12,
                             eos_token_id=[])
    texts = [tokenizer.decode(row) for row in free.new_token_ids]
    stops = [texts[0][len(texts[0]) // 2:len(texts[0]) // 2 + 3], texts[1][-5:-2]]
    for do_sample in (False, True):
        kwargs = dict(num_beams=4, max_new_tokens=12, stop_strings=stops, do_sample=do_sample,
                      num_return_sequences=2)
        torch.manual_seed(0)
        reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, tokenizer=tokenizer,
                                   return_dict_in_generate=True, output_scores=True, **kwargs)
        torch.manual_seed(0)
        ours = decoding.generate(model, batch.input_ids, batch.attention_mask, tokenizer=tokenizer, **kwargs)
        assert_same(reference, ours)
    assert "stop_string" in decoding.generate(model, batch.input_ids, batch.attention_mask, tokenizer=tokenizer,
                                              num_beams=4, max_new_tokens=12, stop_strings=stops,
                                              num_return_sequences=4).finish_reasons


PROMPT = torch.tensor([[5, 6, 7]])


@pytest.mark.parametrize("kwargs", [dict(num_beams=3), dict(num_beams=3, do_sample=True),
                                    dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0)])
def test_nan_logits_raise_instead_of_a_garbage_beam(kwargs):
    from experiments.models import build_tiny_model

    model = build_tiny_model("tiny_llama", vocab_size=100)
    with torch.no_grad():
        model.lm_head.weight[5] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN logits at generation step 0"):
        decoding.generate(model, PROMPT, max_new_tokens=3, **kwargs)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences=3 is not allowed: it must be <= num_beams=2"),
    (dict(num_beams=2, num_return_sequences=3, do_sample=True), r"num_return_sequences=3 is not allowed"),
    (dict(num_beams=6, num_beam_groups=4, diversity_penalty=1.0),
     r"num_beams=6 is not allowed: it must be divisible by num_beam_groups=4"),
    (dict(num_beams=4, diversity_penalty=0.5), r"diversity_penalty=0\.5 is not allowed without groups"),
    (dict(num_beams=4, length_penalty=float("nan")), r"length_penalty=nan is not allowed: use a finite number"),
    (dict(num_beams=4, length_penalty=float("-inf")), r"length_penalty=-inf is not allowed: use a finite number"),
    (dict(num_beams=4, early_stopping="sometimes"), r"early_stopping='sometimes' is not allowed"),
    (dict(num_beams=0), r"num_beams=0 is not allowed: use an integer >= 1"),
])
def test_bad_beam_parameters_are_named(tiny_llama, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        decoding.generate(tiny_llama, PROMPT, max_new_tokens=4, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [
    dict(num_beams=4, length_penalty=1.0, early_stopping=False, num_return_sequences=2),
    dict(num_beams=8, length_penalty=2.0, early_stopping=True, num_return_sequences=3),
    dict(num_beams=4, length_penalty=0.5, early_stopping="never"),
    dict(num_beams=4, do_sample=True, top_p=0.9, num_return_sequences=2),
    dict(num_beams=3, do_sample=True, temperature=0.8, early_stopping=True, cache="static"),
])
def test_smollm2_matches_generate(smollm2, kwargs):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,", "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(kwargs, max_new_tokens=8)
    cache = kwargs.pop("cache", "dynamic")
    eos = eos_ids_from_beams(model, batch.input_ids, batch.attention_mask, steps=(2, 5), **kwargs)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, cache=cache,
                                         eos_token_id=eos, **kwargs)
    assert_same(reference, ours)


@pytest.mark.slow
def test_smollm2_hypotheses_end_with_eos_at_different_steps(smollm2):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,", "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(num_beams=4, num_return_sequences=4, length_penalty=0.0, max_new_tokens=8)
    eos = eos_ids_from_beams(model, batch.input_ids, batch.attention_mask, steps=(2, 5), **kwargs)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, eos_token_id=eos, **kwargs)
    assert_same(reference, ours)
    ended = [length for length, reason in zip(finished_lengths(ours), ours.finish_reasons) if reason == "eos"]
    assert len(set(ended)) > 1


@pytest.mark.slow
def test_smollm2_prompt_alone_and_length_penalty_arithmetic(smollm2):
    model, tokenizer = smollm2
    prompts = ["Fellow citizens of the Senate", "The economy"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = decoding.generate(model, batch.input_ids, batch.attention_mask, num_beams=4, max_new_tokens=8)
    for row, prompt in enumerate(prompts):
        alone = decoding.generate(model, tokenizer(prompt, return_tensors="pt").input_ids, num_beams=4,
                                  max_new_tokens=8)
        assert torch.equal(out.new_token_ids[row], alone.new_token_ids[0]), prompt
        assert math.isclose(float(out.sequences_scores[row]), float(alone.sequences_scores[0]), abs_tol=1e-5)
