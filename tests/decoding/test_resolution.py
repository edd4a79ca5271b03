"""Argument resolution as `model.generate` does it (transformers 5.x `_prepare_generation_config`,
`_prepare_generated_length`, `_prepare_special_tokens`); decoding/resolution.py lists the rules.

Each rule is tested twice: on `resolve_params` (the values we resolve) and as token identity with
`model.generate` on tiny Llama and GPT-2 over a left-padded batch, with the model's own `generation_config`
set up in the test so the rule matters (a total `max_length`, sampling settings, EOS lists).
"""

import warnings

import pytest
import torch
from transformers import GenerationConfig

import decoding
from tests.decoding.reference import model_config, same_keywords_both
from decoding.params import resolve_params

T = 5  # the padded_batch fixture's prompt length



both = same_keywords_both


def early_tokens(model, ids, mask, **kwargs):
    """Two tokens the free-running greedy/sampled rows draw early (row 0 at step 1, row 2 at step 3), so an EOS
    list made of them ends rows early and makes min-length and EOS rules visible in the tokens."""
    torch.manual_seed(0)
    free = decoding.generate(model, ids, mask, eos_token_id=[], max_new_tokens=6, **kwargs).new_token_ids
    return sorted({int(free[0, 1]), int(free[2, 3])})


def resolve(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve_params(model, T, decoding.max_positions_of(model), **kwargs)


# --- max_length: a total length wherever it was set; generate's default alone counts new tokens ---

def test_model_max_length_is_a_total_length(tiny_model, padded_batch):
    ids, mask = padded_batch
    with model_config(tiny_model, max_length=12, eos_token_id=[], pad_token_id=0):
        assert resolve(tiny_model).max_new_tokens == 12 - T
        reference, ours = both(tiny_model, ids, mask)
    assert reference.shape[1] == 12
    assert torch.equal(reference, ours.sequences)


def test_passed_config_max_length_is_a_total_length(tiny_model, padded_batch):
    ids, mask = padded_batch
    config = GenerationConfig(max_length=9)
    assert resolve(tiny_model, generation_config=config).max_new_tokens == 9 - T
    reference, ours = both(tiny_model, ids, mask, generation_config=config, eos_token_id=None)
    assert reference.shape[1] == 9
    assert torch.equal(reference, ours.sequences)


def test_no_max_length_anywhere_means_20_new_tokens_within_the_positions(tiny_llama):
    assert resolve(tiny_llama).max_new_tokens == 20
    assert resolve_params(tiny_llama, 250, 256).max_new_tokens == 6  # 20 new tokens capped at 256 positions
    with pytest.raises(ValueError, match="input_ids has 256 tokens per row.*256 positions"):
        resolve_params(tiny_llama, 256, 256)


def test_model_max_new_tokens_wins_over_a_keyword_max_length(tiny_model, padded_batch):
    ids, mask = padded_batch
    with model_config(tiny_model, max_new_tokens=3, eos_token_id=[], pad_token_id=0):
        assert resolve(tiny_model, max_length=14).max_new_tokens == 3
        reference, ours = both(tiny_model, ids, mask, max_length=14)
    assert reference.shape[1] == T + 3
    assert torch.equal(reference, ours.sequences)


def test_explicit_max_new_tokens_none_falls_back_to_max_length(tiny_llama):
    with model_config(tiny_llama, max_new_tokens=3, max_length=11):
        assert resolve(tiny_llama, max_new_tokens=None).max_new_tokens == 11 - T


def test_model_max_length_not_above_the_prompt_is_refused(tiny_llama):
    with model_config(tiny_llama, max_length=T):
        with pytest.raises(ValueError, match=r"max_length=5 \(from the model's generation_config\)"):
            resolve(tiny_llama)


def test_a_bad_value_from_a_config_says_where_it_came_from(tiny_llama):
    with model_config(tiny_llama, do_sample=True, temperature=0.0):
        with pytest.raises(ValueError, match=r"temperature=0.* comes from the model's generation_config"):
            resolve(tiny_llama)
        assert resolve(tiny_llama, temperature=0.5).temperature == 0.5
    with pytest.raises(ValueError, match=r"top_p=1.5.* comes from the generation_config"):
        resolve(tiny_llama, generation_config=GenerationConfig(do_sample=True, top_p=1.5))


def test_explicit_max_length_none_without_max_new_tokens_is_refused(tiny_llama):
    # generate fails adding None to the prompt length; we say which argument is missing
    with pytest.raises(ValueError, match="max_length=None.*max_new_tokens"):
        resolve(tiny_llama, max_length=None)
    assert resolve(tiny_llama, max_length=None, max_new_tokens=4).max_new_tokens == 4


# --- min_new_tokens replaces min_length, from any source, 0 included ---

@pytest.mark.parametrize("min_new_tokens", [0, 2])
def test_min_new_tokens_replaces_min_length(tiny_model, padded_batch, min_new_tokens):
    ids, mask = padded_batch
    eos = early_tokens(tiny_model, ids, mask)
    kwargs = dict(max_new_tokens=8, min_length=T + 6, min_new_tokens=min_new_tokens, eos_token_id=eos,
                  pad_token_id=0)
    p = resolve(tiny_model, **kwargs)
    assert (p.min_new_tokens, p.min_length) == (min_new_tokens, T + min_new_tokens)
    reference, ours = both(tiny_model, ids, mask, **kwargs)
    assert torch.equal(reference, ours.sequences)
    # min_length=T+6 alone would hold EOS back for 6 new tokens; with min_new_tokens row 0 ends before that
    assert (ours.new_token_mask.sum(-1) < 6).any()


def test_model_min_length_is_a_total_length_and_min_new_tokens_replaces_it(tiny_model, padded_batch):
    ids, mask = padded_batch
    eos = early_tokens(tiny_model, ids, mask)
    with model_config(tiny_model, min_length=T + 4, eos_token_id=eos, pad_token_id=0):
        assert resolve(tiny_model).min_length == T + 4
        assert resolve(tiny_model, min_new_tokens=1).min_length == T + 1
        for kwargs in ({}, {"min_new_tokens": 1}):
            reference, ours = both(tiny_model, ids, mask, max_new_tokens=8, **kwargs)
            assert torch.equal(reference, ours.sequences), kwargs


# --- special tokens: an explicit None overrides the model's id ---

def test_explicit_eos_none_means_no_eos(tiny_model, padded_batch):
    ids, mask = padded_batch
    eos = early_tokens(tiny_model, ids, mask)
    with model_config(tiny_model, eos_token_id=eos, pad_token_id=0):
        assert resolve(tiny_model).eos_token_id == tuple(eos)
        p = resolve(tiny_model, eos_token_id=None)
        assert (p.eos_token_id, p.pad_token_id) == (None, 0)
        reference, ours = both(tiny_model, ids, mask, max_new_tokens=8, eos_token_id=None)
        ended_early = both(tiny_model, ids, mask, max_new_tokens=8)[1]
    assert torch.equal(reference, ours.sequences)
    assert ours.sequences.shape[1] == T + 8 and "eos" in ended_early.finish_reasons


def test_explicit_pad_none_pads_with_the_first_eos(tiny_model, padded_batch):
    ids, mask = padded_batch
    eos = early_tokens(tiny_model, ids, mask)
    with model_config(tiny_model, eos_token_id=eos, pad_token_id=0):
        assert resolve(tiny_model, pad_token_id=None).pad_token_id == eos[0]
        reference, ours = both(tiny_model, ids, mask, max_new_tokens=8, pad_token_id=None)
    assert torch.equal(reference, ours.sequences)
    finished = ours.new_token_mask.sum(-1).tolist()
    row = min(range(len(finished)), key=finished.__getitem__)
    assert (ours.new_token_ids[row, finished[row]:] == eos[0]).all() and finished[row] < 8


# --- sampling settings from the model's config; an explicit None switches a warper off ---

MODEL_SAMPLING = dict(do_sample=True, top_k=5, temperature=0.7, repetition_penalty=1.3, eos_token_id=[],
                      pad_token_id=0)


@pytest.mark.parametrize("kwargs", [{}, {"temperature": None}, {"top_k": None}, {"repetition_penalty": None},
                                    {"do_sample": None}, {"top_k": 0, "top_p": 0.8}], ids=str)
def test_model_sampling_config_and_explicit_none(tiny_model, padded_batch, kwargs):
    ids, mask = padded_batch
    with model_config(tiny_model, **MODEL_SAMPLING):
        p = resolve(tiny_model, **kwargs)
        reference, ours = both(tiny_model, ids, mask, max_new_tokens=8, **kwargs)
    assert torch.equal(reference, ours.sequences)
    expected = {"do_sample": True, "top_k": 5, "temperature": 0.7, "repetition_penalty": 1.3, "top_p": 1.0}
    neutral = {"temperature": 1.0, "repetition_penalty": 1.0, "do_sample": False, "top_k": None}
    for name, value in kwargs.items():
        expected[name] = neutral[name] if value is None else value
    assert {name: getattr(p, name) for name in expected} == expected


# --- generation_config=: keywords > passed config > model's config > defaults ---

def test_passed_config_wins_over_the_model_and_keywords_over_both(tiny_model, padded_batch):
    ids, mask = padded_batch
    passed = GenerationConfig(top_k=3, repetition_penalty=1.2, max_new_tokens=6)
    with model_config(tiny_model, **MODEL_SAMPLING):
        p = resolve(tiny_model, generation_config=passed, temperature=1.5)
        assert (p.do_sample, p.top_k, p.temperature, p.repetition_penalty, p.max_new_tokens) == (True, 3, 1.5, 1.2, 6)
        reference, ours = both(tiny_model, ids, mask, generation_config=passed, temperature=1.5)
    assert torch.equal(reference, ours.sequences)
    assert passed.top_k == 3 and passed.temperature is None  # the caller's config is not changed


def test_passed_config_equal_to_the_models_changes_nothing(tiny_model, padded_batch):
    ids, mask = padded_batch
    with model_config(tiny_model, **MODEL_SAMPLING):
        copy = GenerationConfig(**tiny_model.generation_config.to_dict())
        assert resolve(tiny_model, generation_config=copy) == resolve(tiny_model)
        reference, ours = both(tiny_model, ids, mask, generation_config=copy, max_new_tokens=6)
    assert torch.equal(reference, ours.sequences)


def test_passed_config_in_a_sweep_is_shared_by_every_configuration(tiny_llama, padded_batch):
    ids, mask = padded_batch
    passed = GenerationConfig(do_sample=True, top_k=4, max_new_tokens=5, eos_token_id=[], pad_token_id=0)
    results = decoding.generate_sweep(tiny_llama, ids, mask, generation_config=passed,
                                      configs=[{}, {"top_k": 8}], generators=[torch.Generator().manual_seed(1),
                                                                              torch.Generator().manual_seed(2)])
    for result, top_k, seed in zip(results, (4, 8), (1, 2)):
        alone = decoding.generate(tiny_llama, ids, mask, generation_config=passed, top_k=top_k,
                                  generator=torch.Generator().manual_seed(seed))
        assert torch.equal(result.sequences, alone.sequences)


def test_explicit_none_in_a_sweep_configuration_means_what_it_means_alone(tiny_llama, padded_batch):
    ids, mask = padded_batch
    shared = dict(do_sample=True, temperature=0.7, top_k=5, max_new_tokens=6, eos_token_id=[], pad_token_id=0)
    configs = [{"temperature": None}, {"top_k": None}, {}]
    results = decoding.generate_sweep(tiny_llama, ids, mask, configs=configs, **shared,
                                      generators=[torch.Generator().manual_seed(s) for s in range(3)])
    for seed, (config, result) in enumerate(zip(configs, results)):
        alone = decoding.generate(tiny_llama, ids, mask, **{**shared, **config},
                                  generator=torch.Generator().manual_seed(seed))
        assert torch.equal(result.sequences, alone.sequences), config
    p = resolve(tiny_llama, **{**shared, "temperature": None})
    assert (p.temperature, p.top_k) == (1.0, 5)


def test_passed_config_setting_what_we_do_not_support_is_refused(tiny_llama):
    with pytest.raises(ValueError, match="generation_config sets token_healing=True"):
        resolve(tiny_llama, generation_config=GenerationConfig(token_healing=True))
    with pytest.raises(ValueError, match=r"penalty_alpha=1.5 .*comes from the generation_config"):
        resolve(tiny_llama, generation_config=GenerationConfig(penalty_alpha=1.5, top_k=4))
    with pytest.raises(ValueError, match="generation_config=.*GenerationConfig"):
        resolve(tiny_llama, generation_config={"top_k": 4})


def test_runner_precheck_without_a_model_keeps_working():
    p = resolve_params(None, 3, None, cache="dynamic", max_cache_len=None, do_sample=True, top_k=0,
                       max_new_tokens=4)
    assert (p.cache, p.max_cache_len, p.top_k, p.max_new_tokens) == ("dynamic", None, 0, 4)


# --- the rules together, over the three caches, and on SmolLM2 ---

CACHES = {"dynamic": {}, "static": {"cache_implementation": "static"}, "none": {"use_cache": False}}


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_rules_together_over_the_three_caches(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    eos = early_tokens(tiny_model, ids, mask)
    passed = GenerationConfig(top_k=4, min_new_tokens=1)
    with model_config(tiny_model, do_sample=True, temperature=0.8, max_length=T + 9, min_length=T + 7,
                      eos_token_id=eos, pad_token_id=0):
        p = resolve(tiny_model, generation_config=passed, temperature=None, **CACHES[cache])
        assert (p.max_new_tokens, p.min_length, p.top_k, p.temperature, p.cache) == (9, T + 1, 4, 1.0, cache)
        reference, ours = both(tiny_model, ids, mask, generation_config=passed, temperature=None, **CACHES[cache])
    assert torch.equal(reference, ours.sequences)


def test_model_config_beam_search(tiny_model, padded_batch):
    ids, mask = padded_batch
    with model_config(tiny_model, num_beams=3, num_return_sequences=2, max_length=T + 6, eos_token_id=2,
                      pad_token_id=0):
        p = resolve(tiny_model)
        assert (p.num_beams, p.num_return_sequences, p.max_new_tokens) == (3, 2, 6)
        reference, ours = both(tiny_model, ids, mask)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.slow
def test_rules_on_smollm2_with_a_chat_checkpoints_config(smollm2):
    model, tokenizer = smollm2
    prompts = ["<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nList three US presidents.<|im_end|>\n<|im_start|>assistant\n"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    length = batch.input_ids.shape[1]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with model_config(model, do_sample=True, temperature=0.6, top_p=0.9, max_length=length + 16,
                      eos_token_id=[im_end, 2], pad_token_id=2):
        for kwargs in ({}, {"eos_token_id": None}, {"temperature": None, "min_new_tokens": 6},
                       {"generation_config": GenerationConfig(do_sample=False, max_new_tokens=10)}):
            reference, ours = both(model, batch.input_ids, batch.attention_mask, **kwargs)
            assert torch.equal(reference, ours.sequences), kwargs
