"""The parity matrix of issue 12: each new processor and each argument-resolution rule gives `model.generate`'s
tokens, on tiny Llama and GPT-2 (the `tiny_model` fixture), a left-padded batch, greedy and sampling, and the
three caches.

Only the cells the other files leave open are here: test_new_processors.py runs the processors with the
dynamic and static caches, test_resolution.py runs each rule with the dynamic cache and greedy decoding
(and all rules at once over the three caches). So: the processors with no cache (`use_cache=False`), each
resolution rule with sampling and with the static and no cache, generate_sweep's per-row top_h with the other
two caches, and one SmolLM2 test (slow) with every processor.
"""

from __future__ import annotations


import pytest
import torch
from transformers import GenerationConfig

import decoding
from tests.decoding.reference import model_config, same_keywords_both

T = 5  # the padded_batch fixture's prompt length
MODES = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=20)}
# how each cache is asked for: the same keyword goes to model.generate and to decoding.generate
CACHES = {"none": dict(use_cache=False), "dynamic": {}, "static": dict(cache_implementation="static")}


both = same_keywords_both


def free_run(model, ids, mask, **kwargs):
    """(B, N) the tokens the rows draw without the setting under test (EOS off), to aim the setting at them."""
    torch.manual_seed(0)
    return decoding.generate(model, ids, mask, **{**kwargs, "eos_token_id": []}).new_token_ids


# --- the new processors, no cache (dynamic / static: test_new_processors.py) ---

def processor_settings(case, free):
    """The keywords of one processor case, aimed at tokens the free run picks so that the setting acts."""
    first = [int(t) for t in free[:, 0]]
    return {
        "suppress_tokens": dict(suppress_tokens=sorted(set(free.flatten().tolist()))[:6]),
        "begin_suppress_tokens": dict(begin_suppress_tokens=sorted(set(first))),
        "forced_eos_token_id": dict(forced_eos_token_id=[5, 6]),
        "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(2, 1.6),
                                                 eos_token_id=[int(free[0, 6])]),
        "remove_invalid_values": dict(remove_invalid_values=True),
        "renormalize_logits": dict(renormalize_logits=True),
        "sequence_bias": dict(sequence_bias={(first[0],): -50.0, (int(free[1, 2]), int(free[1, 3])): -50.0,
                                             (11,): 3.0}),
        "bad_words_ids": dict(bad_words_ids=[[first[1]], [int(free[0, 1]), int(free[0, 2])], [1, 2, 3]]),
        "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=lambda batch_id, row: list(range(
            int(row[-1]) % 2, 1000, 2)) if batch_id != 2 else [7]),
        "top_h": dict(top_h=0.3, top_k=0),
    }[case]


PROCESSOR_CASES = ["suppress_tokens", "begin_suppress_tokens", "forced_eos_token_id",
                   "exponential_decay_length_penalty", "remove_invalid_values", "renormalize_logits",
                   "sequence_bias", "bad_words_ids", "prefix_allowed_tokens_fn", "top_h"]
# top_h is a sampling warper: greedy decoding never applies it
PROCESSOR_CELLS = [(case, mode) for case in PROCESSOR_CASES for mode in MODES if (case, mode) != ("top_h", "greedy")]


@pytest.mark.parametrize("case, mode", PROCESSOR_CELLS)
def test_processor_without_a_cache_equals_generate(tiny_model, padded_batch, case, mode):
    ids, mask = padded_batch
    base = dict(MODES[mode], max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    free = free_run(tiny_model, ids, mask, **base)
    settings = {**base, **processor_settings(case, free)}
    reference, ours = both(tiny_model, ids, mask, use_cache=False, **settings)
    assert torch.equal(reference, ours.sequences), case
    if case not in ("remove_invalid_values", "renormalize_logits", "top_h"):  # these may keep the free tokens
        assert not torch.equal(ours.new_token_ids[:, :free.shape[1]], free), f"{case} changed nothing"


def test_forced_bos_without_a_cache_equals_generate(tiny_model):
    ids = torch.tensor([[11], [21], [31]])  # forced BOS acts when the sequence is one token long
    reference, ours = both(tiny_model, ids, torch.ones_like(ids), use_cache=False, do_sample=False, max_new_tokens=4,
                           eos_token_id=[], pad_token_id=0, forced_bos_token_id=9)
    assert torch.equal(reference, ours.sequences) and (ours.new_token_ids[:, 0] == 9).all()


# --- argument resolution, sampling and the three caches (dynamic greedy: test_resolution.py) ---

def early_tokens(model, ids, mask, **kwargs):
    """Two tokens rows draw early, as an EOS list that ends rows at different steps."""
    free = free_run(model, ids, mask, max_new_tokens=6, **kwargs)
    return sorted({int(free[0, 1]), int(free[2, 3])})


def run_min_new_tokens(model, ids, mask, mode, cache, min_new_tokens):
    eos = early_tokens(model, ids, mask, **MODES[mode])
    return both(model, ids, mask, max_new_tokens=8, min_length=T + 6, min_new_tokens=min_new_tokens,
                eos_token_id=eos, pad_token_id=0, **MODES[mode], **CACHES[cache])


def run_model_max_length(model, ids, mask, mode, cache):
    with model_config(model, max_length=T + 6, eos_token_id=[], pad_token_id=0):
        reference, ours = both(model, ids, mask, **MODES[mode], **CACHES[cache])
    assert ours.sequences.shape[1] == T + 6  # a total length: 6 new tokens, not T + 6
    return reference, ours


def run_explicit_eos_none(model, ids, mask, mode, cache):
    eos = early_tokens(model, ids, mask, **MODES[mode])
    with model_config(model, eos_token_id=eos, pad_token_id=0):
        reference, ours = both(model, ids, mask, max_new_tokens=8, eos_token_id=None, **MODES[mode], **CACHES[cache])
    assert ours.sequences.shape[1] == T + 8 and "eos" not in ours.finish_reasons
    return reference, ours


def run_explicit_pad_none(model, ids, mask, mode, cache):
    eos = early_tokens(model, ids, mask, **MODES[mode])
    with model_config(model, eos_token_id=eos, pad_token_id=0):
        return both(model, ids, mask, max_new_tokens=8, pad_token_id=None, **MODES[mode], **CACHES[cache])


def run_generation_config_merge(model, ids, mask, mode, cache):
    passed = GenerationConfig(top_k=3, repetition_penalty=1.2, max_new_tokens=6, min_new_tokens=2)
    with model_config(model, temperature=0.7, top_p=0.9, eos_token_id=[], pad_token_id=0):
        return both(model, ids, mask, generation_config=passed, top_p=None, **MODES[mode], **CACHES[cache])


RESOLUTION_CASES = {
    "min_new_tokens_0_beside_min_length": lambda *a: run_min_new_tokens(*a, min_new_tokens=0),
    "min_new_tokens_2_beside_min_length": lambda *a: run_min_new_tokens(*a, min_new_tokens=2),
    "model_max_length_is_total": run_model_max_length,
    "explicit_eos_none": run_explicit_eos_none,
    "explicit_pad_none": run_explicit_pad_none,
    "generation_config_merge": run_generation_config_merge,
}
RESOLUTION_CELLS = [(case, mode, cache) for case in RESOLUTION_CASES for mode in MODES for cache in CACHES
                    if (mode, cache) != ("greedy", "dynamic")]


@pytest.mark.parametrize("case, mode, cache", RESOLUTION_CELLS)
def test_resolution_rule_equals_generate(tiny_model, padded_batch, case, mode, cache):
    ids, mask = padded_batch
    reference, ours = RESOLUTION_CASES[case](tiny_model, ids, mask, mode, cache)
    assert torch.equal(reference, ours.sequences), (case, mode, cache)


# --- generate_sweep: per-row top_h, rows equal separate runs with the other caches ---

@pytest.mark.parametrize("cache", ["none", "static"])
def test_sweep_varying_top_h_equals_separate_runs(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    shared = dict(max_new_tokens=6, eos_token_id=[], pad_token_id=0, do_sample=True, top_k=0, cache=cache)
    configs = [dict(top_h=0.2), dict(top_h=0.6, temperature=1.5), dict(top_h=1.0), dict(top_p=0.9)]
    seeds = [3, 4, 5, 6]
    swept = decoding.generate_sweep(tiny_model, ids, mask, configs=configs,
                                    generators=[torch.Generator().manual_seed(s) for s in seeds], **shared)
    for config, seed, result in zip(configs, seeds, swept):
        alone = decoding.generate(tiny_model, ids, mask, generator=torch.Generator().manual_seed(seed),
                                  **{**shared, **config})
        assert torch.equal(result.sequences, alone.sequences), config
    assert not torch.equal(swept[0].sequences, swept[2].sequences)  # top_h=0.2 truncates: the rows differ


# --- SmolLM2: every processor, one left-padded batch, few tokens ---

SMOLLM2_CASES = {
    "suppress_tokens": dict(suppress_tokens=[28, 30, 253]),
    "begin_suppress_tokens": dict(begin_suppress_tokens=[253, 314]),
    "forced_bos_token_id": dict(forced_bos_token_id=30),  # acts only on one-token prompts: must change nothing
    "forced_eos_token_id": dict(forced_eos_token_id=2),
    "remove_invalid_values": dict(remove_invalid_values=True),
    "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(2, 1.5), eos_token_id=[30, 2]),
    "renormalize_logits": dict(renormalize_logits=True, repetition_penalty=1.3),
    "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=lambda batch_id, row: list(range(
        batch_id, 49152, 3))),
    # aimed at the plain greedy tokens: row 0 starts 253 1784, row 1 starts 339 5248
    "sequence_bias": dict(sequence_bias={(253,): -5.0, (339, 5248): -10.0, (11,): 2.0}),
    "bad_words_ids": dict(bad_words_ids=[[339], [253, 1784]]),
    "top_h": dict(do_sample=True, top_k=0, top_h=0.6),
}
# cases that leave greedy tokens as they are here: forced BOS acts on one-token prompts only, the logits hold no
# inf / NaN to remove, and renormalizing keeps the argmax
SMOLLM2_NEUTRAL = {"forced_bos_token_id", "remove_invalid_values", "renormalize_logits"}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SMOLLM2_CASES))
def test_every_processor_on_smollm2_equals_generate(smollm2, case):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President,", "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    settings = dict(do_sample=False, max_new_tokens=5, eos_token_id=[], pad_token_id=tokenizer.pad_token_id or 0)
    plain = decoding.generate(model, batch.input_ids, batch.attention_mask, **settings).sequences
    settings.update(SMOLLM2_CASES[case])
    reference, ours = both(model, batch.input_ids, batch.attention_mask, **settings)
    assert torch.equal(reference, ours.sequences), case
    assert torch.equal(ours.sequences, plain) == (case in SMOLLM2_NEUTRAL), case
