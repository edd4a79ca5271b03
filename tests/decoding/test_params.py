"""Bad input gets a ValueError that names the parameter, its value and what is allowed."""

import pytest
import torch

import decoding

PROMPT = torch.tensor([[5, 6, 7]])


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(do_sample=True, top_p=0.0), r"top_p=0\.0 is not allowed: use a number in \(0, 1\]"),
    (dict(do_sample=True, top_p=1.5), r"top_p=1\.5"),
    (dict(do_sample=True, top_k=-1), r"top_k=-1 is not allowed"),
    (dict(do_sample=True, temperature=-0.5), r"temperature=-0\.5 is not allowed"),
    (dict(do_sample=True, temperature=0.0), r"temperature=0 is not allowed while sampling.*do_sample=False"),
    (dict(do_sample=True, min_p=1.2), r"min_p=1\.2 is not allowed: use a number in \[0, 1\]"),
    (dict(do_sample=True, min_p=-0.1), r"min_p=-0\.1"),
    (dict(num_return_sequences=2), r"num_return_sequences=2 is not allowed with greedy"),
    (dict(typical_p=0.0, do_sample=True), r"typical_p=0\.0"),
    (dict(epsilon_cutoff=1.0, do_sample=True), r"epsilon_cutoff=1\.0"),
    (dict(eta_cutoff=-1.0, do_sample=True), r"eta_cutoff=-1\.0"),
    (dict(repetition_penalty=0.0), r"repetition_penalty=0\.0"),
    (dict(no_repeat_ngram_size=-2), r"no_repeat_ngram_size=-2"),
    (dict(max_new_tokens=0), r"max_new_tokens=0 is not allowed: use a positive integer"),
    (dict(max_new_tokens=300), r"max_new_tokens=300 is not allowed: prompt length 3 \+ max_new_tokens = 303 "
                               r"exceeds the model's maximum positions \(256\)"),
    (dict(cache="static", max_cache_len=8, max_new_tokens=10), r"max_cache_len=8 is too small"),
    (dict(cache="paged"), r"cache='paged' is not allowed: use one of"),
    (dict(frobnicate=1), r"unknown or unsupported generation parameter\(s\) \['frobnicate'\]"),
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences=3 is not allowed: it must be <= num_beams"),
    (dict(num_beams=4, num_beam_groups=3), r"num_beams=4 is not allowed: it must be divisible by num_beam_groups"),
    (dict(num_beams=4, diversity_penalty=1.0), r"diversity_penalty=1\.0 is not allowed without groups"),
    (dict(num_beams=4, length_penalty=float("inf")), r"length_penalty=inf"),
    (dict(stop_strings=["x"]), r"stop_strings=\['x'\] needs a tokenizer"),
])
def test_bad_parameters_are_named(tiny_llama, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        decoding.generate(tiny_llama, PROMPT, **kwargs)


@pytest.mark.parametrize("ids, mask, pattern", [
    (torch.zeros((1, 0), dtype=torch.long), None, "empty prompt"),
    (torch.tensor([[3, 4]]), torch.tensor([[0, 0]]), r"prompt rows \[0\] are empty"),
    (torch.tensor([[3, 4]]), torch.tensor([[1, 0]]), "right-padded"),
    (torch.tensor([[3, 4]]), torch.tensor([[1, 1, 1]]), "attention_mask has shape"),
])
def test_bad_prompts(tiny_llama, ids, mask, pattern):
    with pytest.raises(ValueError, match=pattern):
        decoding.generate(tiny_llama, ids, mask)


def test_nan_logits_raise_instead_of_a_garbage_token():
    from experiments.models import build_tiny_model

    model = build_tiny_model("tiny_llama", vocab_size=100)
    with torch.no_grad():
        model.lm_head.weight[5] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN logits at generation step 0"):
        decoding.generate(model, PROMPT, max_new_tokens=3)


def test_defaults_follow_generate(tiny_llama):
    # no max_new_tokens: generate's default of 20 new tokens
    out = decoding.generate(tiny_llama, PROMPT, eos_token_id=[])
    assert out.new_token_ids.shape == (1, 20)
    out = decoding.generate(tiny_llama, PROMPT, max_length=8, eos_token_id=[])
    assert out.sequences.shape == (1, 8)


def test_transformers_cache_names_map_to_ours(tiny_llama):
    a = decoding.generate(tiny_llama, PROMPT, max_new_tokens=5, use_cache=False)
    b = decoding.generate(tiny_llama, PROMPT, max_new_tokens=5, cache_implementation="static")
    c = decoding.generate(tiny_llama, PROMPT, max_new_tokens=5)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(b.sequences, c.sequences)
    with pytest.raises(ValueError, match="contradicts"):
        decoding.generate(tiny_llama, PROMPT, cache="static", use_cache=False)


def test_nan_check_sums_first_but_stays_exact():
    """check_finite clears logits by their sum; a NaN sum from +inf and -inf without a NaN is no error."""
    from decoding.loop import check_finite

    logits = torch.zeros(2, 10)
    logits[0, 1], logits[1, 2] = float("inf"), float("-inf")
    logits[1, 3] = float("inf")  # row 1 sums to NaN (inf - inf) but holds no NaN
    check_finite(logits, 4)
    logits[1, 7] = float("nan")
    with pytest.raises(FloatingPointError, match=r"step 4 for rows \[1\]"):
        check_finite(logits, 4)
    check_finite(logits, 4, has_nan=torch.tensor(False))  # the compiled step's own flag decides when given
    with pytest.raises(FloatingPointError, match=r"step 4 for rows \[1\]"):
        check_finite(logits, 4, has_nan=torch.tensor(True))
