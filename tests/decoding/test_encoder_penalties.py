"""generate's prompt-side processors for a decoder-only model: `encoder_repetition_penalty` (scores of the
prompt's tokens raised, a "hallucination" penalty) and `encoder_no_repeat_ngram_size` (no n-gram of the
prompt repeated). generate takes the padded prompt as the "encoder input"; the tokens must be generate's.

The class-level equality with transformers' processors is in test_processor_properties.py.
"""

import pytest
import torch

import decoding
from tests.decoding.reference import same_keywords_both

CACHES = {"none": dict(use_cache=False), "dynamic": {}, "static": dict(cache_implementation="static")}
MODES = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=0)}
# A prompt that repeats itself, so that its n-grams can come back (rows left-padded with pad id 0)
IDS = torch.tensor([[11, 12, 13, 11, 12, 13, 11, 12], [0, 0, 21, 22, 21, 22, 21, 22], [0, 0, 0, 0, 0, 31, 32, 31]])
MASK = (torch.arange(8)[None, :] >= torch.tensor([0, 2, 5])[:, None]).long()


def free_tokens(model, **kwargs):
    torch.manual_seed(0)
    return decoding.generate(model, IDS, MASK, max_new_tokens=8, eos_token_id=[], pad_token_id=0,
                             **kwargs).new_token_ids


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("setting", [dict(encoder_repetition_penalty=4.0), dict(encoder_repetition_penalty=0.5),
                                     dict(encoder_no_repeat_ngram_size=1), dict(encoder_no_repeat_ngram_size=2)],
                         ids=["enc_rep_4", "enc_rep_0.5", "enc_ngram_1", "enc_ngram_2"])
def test_prompt_side_processors_equal_generate(tiny_model, cache, mode, setting):
    kwargs = dict(MODES[mode], max_new_tokens=8, eos_token_id=[], pad_token_id=0, **CACHES[cache], **setting)
    reference, ours = same_keywords_both(tiny_model, IDS, MASK, **kwargs)
    assert torch.equal(reference, ours.sequences)  # (what each setting does to the tokens: the tests below)


def prompt_share(tokens):
    """Share of the new tokens that are tokens of the row's (padded) prompt."""
    hits = [sum(t in set(prompt.tolist()) for t in row.tolist()) for row, prompt in zip(tokens, IDS)]
    return sum(hits) / tokens.numel()


def test_a_strong_encoder_repetition_penalty_draws_the_prompt_back(tiny_model):
    # positive scores of prompt tokens x50, negative ones / 50: the random models rarely pick prompt tokens on their own
    free = prompt_share(free_tokens(tiny_model, do_sample=False))
    pulled = prompt_share(free_tokens(tiny_model, do_sample=False, encoder_repetition_penalty=50.0))
    assert pulled >= 0.5 > free


def test_encoder_no_repeat_unigram_bans_every_prompt_token(tiny_llama):
    tokens = free_tokens(tiny_llama, do_sample=False, encoder_no_repeat_ngram_size=1)
    for row, prompt in zip(tokens, IDS):
        assert not set(row.tolist()) & set(prompt.tolist())  # pad id 0 included, as generate builds it


@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_k=0, num_return_sequences=2),
                                    dict(num_beams=3, num_return_sequences=2),
                                    dict(num_beams=2, do_sample=True, top_k=0)], ids=["n2", "beam", "beam_sample"])
def test_expanded_rows_read_their_own_prompt_as_generate(tiny_model, kwargs):
    # (beam search needs an EOS id: generate's beam fill value is `pad_token_id or eos[0]`)
    setting = dict(kwargs, max_new_tokens=6, eos_token_id=[999], pad_token_id=0, encoder_repetition_penalty=3.0,
                   encoder_no_repeat_ngram_size=2)
    reference, ours = same_keywords_both(tiny_model, IDS, MASK, **setting)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("name, value", [("encoder_repetition_penalty", 0), ("encoder_repetition_penalty", -1.0),
                                         ("encoder_repetition_penalty", float("inf")),
                                         ("encoder_repetition_penalty", "2"),
                                         ("encoder_no_repeat_ngram_size", -1), ("encoder_no_repeat_ngram_size", 1.5),
                                         ("encoder_no_repeat_ngram_size", True)])
def test_bad_values_are_named(tiny_llama, name, value):
    with pytest.raises(ValueError, match=name):
        decoding.generate(tiny_llama, IDS, MASK, max_new_tokens=2, **{name: value})


@pytest.mark.slow
def test_smollm2_equals_generate(smollm2):
    model, tokenizer = smollm2
    tokenizer.padding_side = "left"
    batch = tokenizer(["The State of the Union is strong, the State of the", "Congress shall"],
                      return_tensors="pt", padding=True)
    kwargs = dict(do_sample=False, max_new_tokens=8, encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=3)
    reference, ours = same_keywords_both(model, batch.input_ids, batch.attention_mask, **kwargs)
    assert torch.equal(reference, ours.sequences)
