"""The API's bad-input table: every bad call fails before the model runs, naming the parameter and its value.

Each case calls `decoding.generate`, `decoding.generate_sweep` or `decoding.resolve_params` on the tiny
Llama (vocabulary 1000, 256 positions, pad = eos = 2) and asserts the exception type, that the message
names the parameter and holds the offending value, and that no forward pass ran (a forward pre-hook on
the real model counts calls). The last tests pin the inputs we accept because transformers' `generate`
accepts them with a defined meaning: there our output equals `model.generate`'s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import (EosTokenCriteria, GenerationConfig, MaxLengthCriteria, MaxTimeCriteria, TextStreamer,
                          TopKLogitsWarper)

import decoding
from experiments.models import build_tiny_model

P = torch.tensor([[5, 6, 7]])  # one prompt of 3 tokens
P2 = torch.tensor([[0, 5, 6], [7, 8, 9]])  # two prompts, the first left-padded
M2 = torch.tensor([[0, 1, 1], [1, 1, 1]])
NAN, INF = float("nan"), float("inf")
SAMPLE = dict(do_sample=True)


def gen(ids=P, mask=None, **kwargs):
    return lambda model: decoding.generate(model, ids, mask, max_new_tokens=kwargs.pop("max_new_tokens", 4),
                                           **kwargs)


def sweep(configs, ids=P2, mask=M2, **kwargs):
    kwargs.setdefault("max_new_tokens", 4)
    return lambda model: decoding.generate_sweep(model, ids, mask, configs=configs, **kwargs)


def resolve(prompt_length=3, **kwargs):
    return lambda model: decoding.resolve_params(None, prompt_length, None, **kwargs)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def case(case_id, call, name, value, exc=ValueError):
    return pytest.param(call, exc, name, value, id=case_id)


CASES = [
    # lengths
    case("max_new_tokens=0", gen(max_new_tokens=0), "max_new_tokens", "0"),
    case("max_new_tokens=-1", gen(max_new_tokens=-1), "max_new_tokens", "-1"),
    case("max_new_tokens=2.5", gen(max_new_tokens=2.5), "max_new_tokens", "2.5"),
    case("max_new_tokens=True", gen(max_new_tokens=True), "max_new_tokens", "True"),
    case("max_new_tokens='5'", gen(max_new_tokens="5"), "max_new_tokens", "'5'"),
    case("max_new_tokens=nan", gen(max_new_tokens=NAN), "max_new_tokens", "nan"),
    case("max_new_tokens=inf", gen(max_new_tokens=INF), "max_new_tokens", "inf"),
    case("max_new_tokens>positions", gen(max_new_tokens=300), "max_new_tokens", "300"),
    case("min_new_tokens=-1", gen(min_new_tokens=-1), "min_new_tokens", "-1"),
    case("min_new_tokens=1.5", gen(min_new_tokens=1.5), "min_new_tokens", "1.5"),
    case("min_new_tokens=True", gen(min_new_tokens=True), "min_new_tokens", "True"),
    case("min_new_tokens>max_new_tokens", gen(min_new_tokens=5, max_new_tokens=3), "min_new_tokens", "5"),
    case("min_length=-1", gen(min_length=-1), "min_length", "-1"),
    case("min_length=True", gen(min_length=True), "min_length", "True"),
    case("min_length>total", gen(min_length=100), "min_length", "100"),
    case("max_length=prompt", lambda m: decoding.generate(m, P, max_length=3), "max_length", "3"),
    case("max_length<prompt", lambda m: decoding.generate(m, P, max_length=2), "max_length", "2"),
    case("max_length='10'", lambda m: decoding.generate(m, P, max_length="10"), "max_length", "'10'"),
    case("max_length=2.5", lambda m: decoding.generate(m, P, max_length=12.5), "max_length", "12.5"),
    # sampling numbers
    case("temperature=nan", gen(temperature=NAN, **SAMPLE), "temperature", "nan"),
    case("temperature=inf", gen(temperature=INF, **SAMPLE), "temperature", "inf"),
    case("temperature=-1", gen(temperature=-1.0, **SAMPLE), "temperature", "-1.0"),
    case("temperature='1.0'", gen(temperature="1.0", **SAMPLE), "temperature", "'1.0'"),
    case("temperature=True", gen(temperature=True, **SAMPLE), "temperature", "True"),
    case("temperature=[1.0]", gen(temperature=[1.0], **SAMPLE), "temperature", "[1.0]"),
    case("temperature=0-sampling", gen(temperature=0.0, **SAMPLE), "temperature", "0"),
    case("top_k=-1", gen(top_k=-1, **SAMPLE), "top_k", "-1"),
    case("top_k=1.5", gen(top_k=1.5, **SAMPLE), "top_k", "1.5"),
    case("top_k=True", gen(top_k=True, **SAMPLE), "top_k", "True"),
    case("top_k='5'", gen(top_k="5", **SAMPLE), "top_k", "'5'"),
    case("top_p=0", gen(top_p=0.0, **SAMPLE), "top_p", "0.0"),
    case("top_p=1.5", gen(top_p=1.5, **SAMPLE), "top_p", "1.5"),
    case("top_p=nan", gen(top_p=NAN, **SAMPLE), "top_p", "nan"),
    case("top_p=-0.1", gen(top_p=-0.1, **SAMPLE), "top_p", "-0.1"),
    case("top_p=True", gen(top_p=True, **SAMPLE), "top_p", "True"),
    case("top_p='0.9'", gen(top_p="0.9", **SAMPLE), "top_p", "'0.9'"),
    case("min_p=nan", gen(min_p=NAN, **SAMPLE), "min_p", "nan"),
    case("min_p=-0.1", gen(min_p=-0.1, **SAMPLE), "min_p", "-0.1"),
    case("min_p=1.2", gen(min_p=1.2, **SAMPLE), "min_p", "1.2"),
    case("min_p=True", gen(min_p=True, **SAMPLE), "min_p", "True"),
    case("min_p='0.1'", gen(min_p="0.1", **SAMPLE), "min_p", "'0.1'"),
    case("typical_p=0", gen(typical_p=0.0, **SAMPLE), "typical_p", "0.0"),
    case("typical_p=nan", gen(typical_p=NAN, **SAMPLE), "typical_p", "nan"),
    case("typical_p=1.5", gen(typical_p=1.5, **SAMPLE), "typical_p", "1.5"),
    case("epsilon_cutoff=1", gen(epsilon_cutoff=1.0, **SAMPLE), "epsilon_cutoff", "1.0"),
    case("epsilon_cutoff=-0.1", gen(epsilon_cutoff=-0.1, **SAMPLE), "epsilon_cutoff", "-0.1"),
    case("epsilon_cutoff=nan", gen(epsilon_cutoff=NAN, **SAMPLE), "epsilon_cutoff", "nan"),
    case("eta_cutoff=nan", gen(eta_cutoff=NAN, **SAMPLE), "eta_cutoff", "nan"),
    case("eta_cutoff=1", gen(eta_cutoff=1.0, **SAMPLE), "eta_cutoff", "1.0"),
    case("eta_cutoff=-1", gen(eta_cutoff=-1, **SAMPLE), "eta_cutoff", "-1"),
    case("repetition_penalty=0", gen(repetition_penalty=0.0), "repetition_penalty", "0.0"),
    case("repetition_penalty=-1", gen(repetition_penalty=-1.0), "repetition_penalty", "-1.0"),
    case("repetition_penalty=nan", gen(repetition_penalty=NAN), "repetition_penalty", "nan"),
    case("repetition_penalty=inf", gen(repetition_penalty=INF), "repetition_penalty", "inf"),
    case("repetition_penalty=True", gen(repetition_penalty=True), "repetition_penalty", "True"),
    case("repetition_penalty='1.2'", gen(repetition_penalty="1.2"), "repetition_penalty", "'1.2'"),
    case("no_repeat_ngram_size=-1", gen(no_repeat_ngram_size=-1), "no_repeat_ngram_size", "-1"),
    case("no_repeat_ngram_size=1.5", gen(no_repeat_ngram_size=1.5), "no_repeat_ngram_size", "1.5"),
    case("no_repeat_ngram_size=True", gen(no_repeat_ngram_size=True), "no_repeat_ngram_size", "True"),
    case("do_sample='yes'", gen(do_sample="yes"), "do_sample", "'yes'"),
    case("do_sample=1", gen(do_sample=1), "do_sample", "1"),
    # sequences and beams
    case("num_return_sequences=0", gen(num_return_sequences=0, **SAMPLE), "num_return_sequences", "0"),
    case("num_return_sequences=True", gen(num_return_sequences=True, **SAMPLE), "num_return_sequences", "True"),
    case("num_return_sequences=1.5", gen(num_return_sequences=1.5, **SAMPLE), "num_return_sequences", "1.5"),
    case("num_return_sequences-greedy", gen(num_return_sequences=2), "num_return_sequences", "2"),
    case("num_return_sequences>num_beams", gen(num_beams=2, num_return_sequences=3), "num_return_sequences", "3"),
    case("num_beams=0", gen(num_beams=0), "num_beams", "0"),
    case("num_beams=-1", gen(num_beams=-1), "num_beams", "-1"),
    case("num_beams=1.5", gen(num_beams=1.5), "num_beams", "1.5"),
    case("num_beams=True", gen(num_beams=True), "num_beams", "True"),
    case("length_penalty=nan", gen(num_beams=2, length_penalty=NAN), "length_penalty", "nan"),
    case("length_penalty=inf", gen(num_beams=2, length_penalty=INF), "length_penalty", "inf"),
    case("length_penalty='1'", gen(num_beams=2, length_penalty="1"), "length_penalty", "'1'"),
    case("length_penalty=True", gen(num_beams=2, length_penalty=True), "length_penalty", "True"),
    case("early_stopping='yes'", gen(num_beams=2, early_stopping="yes"), "early_stopping", "'yes'"),
    case("early_stopping=1", gen(num_beams=2, early_stopping=1), "early_stopping", "1"),
    case("early_stopping=[True]", gen(num_beams=2, early_stopping=[True]), "early_stopping", "[True]"),
    case("num_beam_groups=0", gen(num_beams=4, num_beam_groups=0), "num_beam_groups", "0"),
    case("num_beam_groups-indivisible", gen(num_beams=4, num_beam_groups=3, diversity_penalty=1.0), "num_beams",
         "4"),
    case("num_beam_groups-sampling", gen(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, **SAMPLE),
         "num_beam_groups", "2"),
    case("num_beam_groups-no-diversity", gen(num_beams=4, num_beam_groups=2), "num_beam_groups", "2"),
    case("diversity_penalty=-1", gen(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), "diversity_penalty",
         "-1.0"),
    case("diversity_penalty=nan", gen(num_beams=4, num_beam_groups=2, diversity_penalty=NAN), "diversity_penalty",
         "nan"),
    case("diversity_penalty=inf", gen(num_beams=4, num_beam_groups=2, diversity_penalty=INF), "diversity_penalty",
         "inf"),
    case("diversity_penalty-no-groups", gen(num_beams=4, diversity_penalty=1.0), "diversity_penalty", "1.0"),
    # caches and compile
    case("max_cache_len=0", gen(cache="static", max_cache_len=0), "max_cache_len", "0"),
    case("max_cache_len=-1", gen(cache="static", max_cache_len=-1), "max_cache_len", "-1"),
    case("max_cache_len=2.5", gen(cache="static", max_cache_len=20.5), "max_cache_len", "20.5"),
    case("max_cache_len=True", gen(cache="static", max_cache_len=True), "max_cache_len", "True"),
    case("max_cache_len='8'", gen(cache="static", max_cache_len="8"), "max_cache_len", "'8'"),
    case("max_cache_len-too-small", gen(cache="static", max_cache_len=5), "max_cache_len", "5"),
    case("max_cache_len-dynamic", gen(max_cache_len=16), "max_cache_len", "16"),
    case("cache='paged'", gen(cache="paged"), "cache", "'paged'"),
    case("cache=True", gen(cache=True), "cache", "True"),
    case("cache=0", gen(cache=0), "cache", "0"),
    case("cache-contradicts-use_cache", gen(cache="static", use_cache=False), "cache", "'static'"),
    case("use_cache='no'", gen(use_cache="no"), "use_cache", "'no'"),
    case("cache_implementation='paged'", gen(cache_implementation="paged"), "cache_implementation", "'paged'"),
    case("compile='yes'", gen(cache="static", compile="yes"), "compile", "'yes'"),
    case("compile=1", gen(cache="static", compile=1), "compile", "1"),
    case("compile-dynamic-cache", gen(compile=True), "compile", "'dynamic'"),
    case("beam_prefill='both'", gen(num_beams=2, beam_prefill="both"), "beam_prefill", "'both'"),
    case("beam_prefill=1", gen(num_beams=2, beam_prefill=1), "beam_prefill", "1"),
    # special token ids
    case("eos_token_id=True", gen(eos_token_id=True), "eos_token_id", "True"),
    case("eos_token_id=2.0", gen(eos_token_id=2.0), "eos_token_id", "2.0"),
    case("eos_token_id=-1", gen(eos_token_id=-1), "eos_token_id", "-1"),
    case("eos_token_id=1000", gen(eos_token_id=1000), "eos_token_id", "1000"),
    case("eos_token_id=[2,5000]", gen(eos_token_id=[2, 5000]), "eos_token_id", "5000"),
    case("eos_token_id=[1,'a']", gen(eos_token_id=[1, "a"]), "eos_token_id", "'a'"),
    case("eos_token_id=[[1]]", gen(eos_token_id=[[1]]), "eos_token_id", "[[1]]"),
    case("eos_token_id='2'", gen(eos_token_id="2"), "eos_token_id", "'2'"),
    case("eos_token_id=float-tensor", gen(eos_token_id=torch.tensor([2.0])), "eos_token_id", "tensor([2.])"),
    case("eos_token_id=[2,True]", gen(eos_token_id=[2, True]), "eos_token_id", "[2, True]"),
    case("pad_token_id=True", gen(pad_token_id=True), "pad_token_id", "True"),
    case("pad_token_id=2.0", gen(pad_token_id=2.0), "pad_token_id", "2.0"),
    case("pad_token_id=-1", gen(pad_token_id=-1), "pad_token_id", "-1"),
    case("pad_token_id=1000", gen(pad_token_id=1000), "pad_token_id", "1000"),
    case("pad_token_id='0'", gen(pad_token_id="0"), "pad_token_id", "'0'"),
    case("pad_token_id=[0]", gen(pad_token_id=[0]), "pad_token_id", "[0]"),
    # stop strings, tokenizer, processor order, generator, names
    case("stop_strings=5", gen(stop_strings=5), "stop_strings", "5"),
    case("stop_strings=['']", gen(stop_strings=[""]), "stop_strings", "['']"),
    case("stop_strings=''", gen(stop_strings=""), "stop_strings", "['']"),
    case("stop_strings=[5]", gen(stop_strings=[5]), "stop_strings", "[5]"),
    case("stop_strings=b'x'", gen(stop_strings=b"x"), "stop_strings", "b'x'"),
    case("stop_strings-no-tokenizer", gen(stop_strings=["x"]), "stop_strings", "['x']"),
    case("tokenizer=5", gen(stop_strings=["x"], tokenizer=5), "tokenizer", "5"),
    case("tokenizer='gpt2'", gen(stop_strings=["x"], tokenizer="gpt2"), "tokenizer", "'gpt2'"),
    case("tokenizer=object", gen(tokenizer=object()), "tokenizer", "object"),
    case("processor_order='top_k'", gen(processor_order="top_k"), "processor_order", "'top_k'"),
    case("processor_order=['top_kk']", gen(processor_order=["top_kk"]), "processor_order", "top_kk"),
    case("processor_order-repeated", gen(processor_order=["top_k", "top_k"]), "processor_order", "['top_k', 'top_k']"),
    case("processor_order=[1]", gen(processor_order=[1]), "processor_order", "[1]"),
    # token bans, forced tokens, score conditioning (processors/constraints.py, normalization.py)
    case("suppress_tokens=5", gen(suppress_tokens=5), "suppress_tokens", "5"),
    case("suppress_tokens=[-1]", gen(suppress_tokens=[-1]), "suppress_tokens", "[-1]"),
    case("suppress_tokens=[1.5]", gen(suppress_tokens=[1.5]), "suppress_tokens", "[1.5]"),
    case("suppress_tokens=[True]", gen(suppress_tokens=[True]), "suppress_tokens", "[True]"),
    case("suppress_tokens='ab'", gen(suppress_tokens="ab"), "suppress_tokens", "'ab'"),
    case("suppress_tokens=float-tensor", gen(suppress_tokens=torch.tensor([1.0])), "suppress_tokens", "tensor"),
    case("begin_suppress_tokens=[-2]", gen(begin_suppress_tokens=[-2]), "begin_suppress_tokens", "[-2]"),
    case("begin_suppress_tokens=3", gen(begin_suppress_tokens=3), "begin_suppress_tokens", "3"),
    case("begin_suppress_tokens=[[1]]", gen(begin_suppress_tokens=[[1]]), "begin_suppress_tokens", "[[1]]"),
    case("forced_bos_token_id=-1", gen(forced_bos_token_id=-1), "forced_bos_token_id", "-1"),
    case("forced_bos_token_id=[1]", gen(forced_bos_token_id=[1]), "forced_bos_token_id", "[1]"),
    case("forced_bos_token_id=1.0", gen(forced_bos_token_id=1.0), "forced_bos_token_id", "1.0"),
    case("forced_bos_token_id=True", gen(forced_bos_token_id=True), "forced_bos_token_id", "True"),
    case("forced_eos_token_id=-3", gen(forced_eos_token_id=-3), "forced_eos_token_id", "-3"),
    case("forced_eos_token_id=[1,-1]", gen(forced_eos_token_id=[1, -1]), "forced_eos_token_id", "[1, -1]"),
    case("forced_eos_token_id='2'", gen(forced_eos_token_id="2"), "forced_eos_token_id", "'2'"),
    case("remove_invalid_values=1", gen(remove_invalid_values=1), "remove_invalid_values", "1"),
    case("remove_invalid_values='yes'", gen(remove_invalid_values="yes"), "remove_invalid_values", "'yes'"),
    case("renormalize_logits=1", gen(renormalize_logits=1), "renormalize_logits", "1"),
    case("renormalize_logits='no'", gen(renormalize_logits="no"), "renormalize_logits", "'no'"),
    case("exp_decay=1.5", gen(exponential_decay_length_penalty=1.5), "exponential_decay_length_penalty", "1.5"),
    case("exp_decay=(1,)", gen(exponential_decay_length_penalty=(1,)), "exponential_decay_length_penalty", "(1,)"),
    case("exp_decay=(-1,1.5)", gen(exponential_decay_length_penalty=(-1, 1.5)), "exponential_decay_length_penalty",
         "(-1, 1.5)"),
    case("exp_decay=(1.5,1.5)", gen(exponential_decay_length_penalty=(1.5, 1.5)),
         "exponential_decay_length_penalty", "(1.5, 1.5)"),
    case("exp_decay=(1,0)", gen(exponential_decay_length_penalty=(1, 0)), "exponential_decay_length_penalty",
         "(1, 0)"),
    case("exp_decay=(1,nan)", gen(exponential_decay_length_penalty=(1, NAN)), "exponential_decay_length_penalty",
         "(1, nan)"),
    case("exp_decay=(1,inf)", gen(exponential_decay_length_penalty=(1, INF)), "exponential_decay_length_penalty",
         "(1, inf)"),
    case("exp_decay=(1,'x')", gen(exponential_decay_length_penalty=(1, "x")), "exponential_decay_length_penalty",
         "(1, 'x')"),
    case("exp_decay-without-eos", gen(exponential_decay_length_penalty=(1, 1.5), eos_token_id=[]),
         "exponential_decay_length_penalty", "(1, 1.5)"),
    case("sequence_bias={}", gen(sequence_bias={}), "sequence_bias", "{}"),
    case("sequence_bias=list-key", gen(sequence_bias={(1,): 1}), "sequence_bias", "{(1,): 1}"),
    case("sequence_bias=[1]-key", gen(sequence_bias={1: 1.0}), "sequence_bias", "{1: 1.0}"),
    case("sequence_bias=()-key", gen(sequence_bias={(): 1.0}), "sequence_bias", "{(): 1.0}"),
    case("sequence_bias=negative-id", gen(sequence_bias={(-1,): 1.0}), "sequence_bias", "{(-1,): 1.0}"),
    case("sequence_bias=pair-int-bias", gen(sequence_bias=[[[1], 2]]), "sequence_bias", "[[[1], 2]]"),
    case("sequence_bias=pair-tuple-ids", gen(sequence_bias=[[(1,), 2.0]]), "sequence_bias", "[[(1,), 2.0]]"),
    case("sequence_bias='x'", gen(sequence_bias="x"), "sequence_bias", "'x'"),
    case("sequence_bias=outside-vocab", gen(sequence_bias={(5, 1000): 1.0}), "sequence_bias", "[1000]"),
    case("bad_words_ids=[]", gen(bad_words_ids=[]), "bad_words_ids", "[]"),
    case("bad_words_ids=[1]", gen(bad_words_ids=[1]), "bad_words_ids", "[1]"),
    case("bad_words_ids=[[]]", gen(bad_words_ids=[[]]), "bad_words_ids", "[[]]"),
    case("bad_words_ids=[[-1]]", gen(bad_words_ids=[[-1]]), "bad_words_ids", "[[-1]]"),
    case("bad_words_ids=[(1,)]", gen(bad_words_ids=[(1,)]), "bad_words_ids", "[(1,)]"),
    case("bad_words_ids=outside-vocab", gen(bad_words_ids=[[1000]]), "bad_words_ids", "[1000]"),
    case("top_h=0", gen(top_h=0, **SAMPLE), "top_h", "0"),
    case("top_h=1.5", gen(top_h=1.5, **SAMPLE), "top_h", "1.5"),
    case("top_h=nan", gen(top_h=NAN, **SAMPLE), "top_h", "nan"),
    case("top_h='0.5'", gen(top_h="0.5", **SAMPLE), "top_h", "'0.5'"),
    case("prefix_allowed_tokens_fn=[1]", gen(prefix_allowed_tokens_fn=[1]), "prefix_allowed_tokens_fn", "[1]"),
    case("forced_bos_token_id=outside-vocab", gen(forced_bos_token_id=1000), "forced_bos_token_id", "1000"),
    case("forced_eos_token_id=outside-vocab", gen(forced_eos_token_id=[3, 1000]), "forced_eos_token_id",
         "[3, 1000]"),
    case("generator=5", gen(generator=5, **SAMPLE), "generator", "5"),
    case("generator='seed'", gen(generator="seed", **SAMPLE), "generator", "'seed'"),
    case("generator=[Generator]", gen(generator=[torch.Generator()], **SAMPLE), "generator", "Generator object"),
    case("unknown-name", gen(frobnicate=1), "frobnicate", "frobnicate"),
    case("typo-top_pp", gen(top_pp=0.9), "top_pp", "did you mean 'top_p'"),
    case("configs-to-generate", gen(configs=[{}]), "configs", "configs"),
    # prompt ids
    case("input_ids=list", lambda m: decoding.generate(m, [[1, 2]]), "input_ids", "[[1, 2]]"),
    case("input_ids=numpy", lambda m: decoding.generate(m, np.array([[1, 2]])), "input_ids", "array([[1, 2]])"),
    case("input_ids=float", gen(ids=torch.tensor([[1.0, 2.0]])), "input_ids", "torch.float32"),
    case("input_ids=bool", gen(ids=torch.tensor([[True, False]])), "input_ids", "torch.bool"),
    case("input_ids=int16", gen(ids=torch.tensor([[1, 2]], dtype=torch.int16)), "input_ids", "torch.int16"),
    case("input_ids=complex", gen(ids=torch.tensor([[1 + 0j]])), "input_ids", "torch.complex64"),
    case("input_ids=3-D", gen(ids=torch.zeros((1, 2, 3), dtype=torch.long)), "input_ids", "(1, 2, 3)"),
    case("input_ids=0-D", gen(ids=torch.tensor(5)), "input_ids", "0 dimensions"),
    case("input_ids=(1,0)", gen(ids=torch.zeros((1, 0), dtype=torch.long)), "input_ids", "(1, 0)"),
    case("input_ids=(0,3)", gen(ids=torch.zeros((0, 3), dtype=torch.long)), "input_ids", "(0, 3)"),
    case("input_ids=-1", gen(ids=torch.tensor([[-1, 2]])), "input_ids", "-1"),
    case("input_ids=1000", gen(ids=torch.tensor([[5, 1000]])), "input_ids", "1000"),
    case("input_ids=10**6", gen(ids=torch.tensor([[10**6]])), "input_ids", "1000000"),
    case("input_ids=-100-in-padding", gen(ids=torch.tensor([[-100, 5]]), mask=torch.tensor([[0, 1]])), "input_ids",
         "-100"),
    # attention masks
    case("mask=0.5", gen(mask=torch.tensor([[0.5, 1.0, 1.0]])), "attention_mask", "0.5"),
    case("mask=2", gen(mask=torch.tensor([[1, 2, 1]])), "attention_mask", "holds 2"),
    case("mask=-1", gen(mask=torch.tensor([[-1, 1, 1]])), "attention_mask", "-1"),
    case("mask=nan", gen(mask=torch.tensor([[NAN, 1.0, 1.0]])), "attention_mask", "nan"),
    case("mask-shape", gen(mask=torch.ones((1, 4), dtype=torch.long)), "attention_mask", "(1, 4)"),
    case("mask=list", gen(mask=[[1, 1, 1]]), "attention_mask", "[[1, 1, 1]]"),
    case("mask-empty-row", gen(ids=P2, mask=torch.tensor([[0, 0, 0], [1, 1, 1]])), "attention_mask", "[0]"),
    case("mask-right-padded", gen(ids=P2, mask=torch.tensor([[1, 1, 1], [1, 1, 0]])), "attention_mask", "[1]"),
    case("mask-hole", gen(ids=P2, mask=torch.tensor([[1, 0, 1], [1, 1, 1]])), "attention_mask", "[0]"),
    case("mask=complex", gen(mask=torch.ones((1, 3), dtype=torch.complex64)), "attention_mask", "torch.complex64"),
    case("mask=3-D", gen(mask=torch.ones((1, 1, 3), dtype=torch.long)), "attention_mask", "(1, 1, 3)"),
    case("inferred-mask-right-padded", gen(ids=torch.tensor([[5, 6, 0]]), pad_token_id=0), "attention_mask",
         "pad_token_id=0"),
    # batched sweeps
    case("sweep-configs=[]", sweep([]), "configs", "[]"),
    case("sweep-configs=dict", sweep(dict(top_p=0.9)), "configs", "{'top_p': 0.9}"),
    case("sweep-configs=str", sweep("top_p"), "configs", "'top_p'"),
    case("sweep-configs=[5]", sweep([5]), "configs[0]", "5"),
    case("sweep-configs=[{},5]", sweep([{}, 5]), "configs[1]", "5"),
    case("sweep-differ-max_new_tokens", sweep([dict(max_new_tokens=3), dict(max_new_tokens=5)]), "max_new_tokens",
         "5"),
    case("sweep-differ-repetition_penalty", sweep([{}, dict(repetition_penalty=1.2)]), "repetition_penalty", "1.2"),
    case("sweep-differ-eos", sweep([{}, dict(eos_token_id=3)]), "eos_token_id", "(3,)"),
    case("sweep-differ-cache", sweep([{}, dict(cache="none")]), "cache", "'none'"),
    case("sweep-differ-no_repeat", sweep([{}, dict(no_repeat_ngram_size=2)]), "no_repeat_ngram_size", "2"),
    case("sweep-beam-config", sweep([dict(num_beams=2), dict(num_beams=2)]), "num_beams", "2"),
    case("sweep-bad-value-configs[1]", sweep([{}, dict(do_sample=True, top_p=2.0)]), "configs[1]", "top_p=2.0"),
    case("sweep-unknown-configs[1]", sweep([{}, dict(top_pp=0.9)]), "configs[1]", "top_pp"),
    case("sweep-bad-shared", sweep([{}, {}], max_new_tokens=0), "max_new_tokens", "0"),
    case("sweep-generators-count", sweep([SAMPLE, SAMPLE], generators=[g()]), "generators", "1 entries"),
    case("sweep-generators=Generator", sweep([SAMPLE], generators=g()), "generators", "Generator object"),
    case("sweep-generators=str", sweep([SAMPLE, SAMPLE], generators="ab"), "generators", "'ab'"),
    case("sweep-generators[0]=5", sweep([SAMPLE, SAMPLE], generators=[5, g()]), "generators[0]", "5"),
    case("sweep-generators[0][1]=5", sweep([SAMPLE, SAMPLE], generators=[[g(), 5], g()]), "generators[0][1]", "5"),
    case("sweep-generators-per-row-count", sweep([SAMPLE, SAMPLE], generators=[[g()], g()]), "generators[0]",
         "holds 1 generators"),
    case("sweep-sampling-without-generator", sweep([SAMPLE, SAMPLE], generators=[g(), None]), "generators[1]",
         "None"),
    case("sweep-stop_strings-no-tokenizer", sweep([{}, {}], stop_strings=["x"]), "stop_strings", "['x']"),
    case("sweep-float-ids", sweep([{}], ids=P2.float()), "input_ids", "torch.float32"),
    case("sweep-fractional-mask", sweep([{}], mask=M2 * 0.5), "attention_mask", "0.5"),
    case("sweep-oov-pad", sweep([{}, {}], pad_token_id=1000), "pad_token_id", "1000"),
    # list and string values where a number belongs
    case("max_new_tokens=[4]", gen(max_new_tokens=[4]), "max_new_tokens", "[4]"),
    case("min_length='3'", gen(min_length="3"), "min_length", "'3'"),
    case("max_length=True", lambda m: decoding.generate(m, P, max_length=True), "max_length", "True"),
    case("top_k=[5]", gen(top_k=[5], **SAMPLE), "top_k", "[5]"),
    case("top_p=[0.9]", gen(top_p=[0.9], **SAMPLE), "top_p", "[0.9]"),
    case("typical_p=-0.5", gen(typical_p=-0.5, **SAMPLE), "typical_p", "-0.5"),
    case("typical_p='0.9'", gen(typical_p="0.9", **SAMPLE), "typical_p", "'0.9'"),
    case("epsilon_cutoff=True", gen(epsilon_cutoff=True, **SAMPLE), "epsilon_cutoff", "True"),
    case("repetition_penalty=[1.2]", gen(repetition_penalty=[1.2]), "repetition_penalty", "[1.2]"),
    case("no_repeat_ngram_size='2'", gen(no_repeat_ngram_size="2"), "no_repeat_ngram_size", "'2'"),
    case("num_beams=[2]", gen(num_beams=[2]), "num_beams", "[2]"),
    case("num_beams='2'", gen(num_beams="2"), "num_beams", "'2'"),
    case("length_penalty=[1.0]", gen(num_beams=2, length_penalty=[1.0]), "length_penalty", "[1.0]"),
    case("diversity_penalty='1'", gen(num_beams=4, num_beam_groups=2, diversity_penalty="1"), "diversity_penalty",
         "'1'"),
    case("num_beam_groups=1.5", gen(num_beams=4, num_beam_groups=1.5), "num_beam_groups", "1.5"),
    case("mask-1-D-for-2-D-ids", gen(mask=torch.ones(3, dtype=torch.long)), "attention_mask", "(3,)"),
    # the runner's check without a model
    case("resolve-eos=True", resolve(eos_token_id=True), "eos_token_id", "True"),
    case("resolve-min_new_tokens>max", resolve(max_new_tokens=2, min_new_tokens=3), "min_new_tokens", "3"),
    case("resolve-stop_strings=5", resolve(stop_strings=5), "stop_strings", "5"),
    case("resolve-max_length<=prompt", resolve(prompt_length=32, max_length=32), "max_length", "32"),
    case("resolve-unknown", resolve(temprature=0.7), "temprature", "did you mean 'temperature'"),
    # generation_config= and explicit None (decoding/resolution.py)
    case("generation_config=str", gen(generation_config="top_k=4"), "generation_config", "'top_k=4'"),
    case("generation_config=dict", gen(generation_config={"top_k": 4}), "generation_config", "{'top_k': 4}"),
    case("generation_config-penalty_alpha>1", gen(generation_config=GenerationConfig(penalty_alpha=1.5, top_k=4)),
         "penalty_alpha", "1.5"),
    case("generation_config-max_length<=prompt", gen(max_new_tokens=None, generation_config=GenerationConfig(
        max_length=3)), "max_length", "3"),
    case("generation_config-bad-top_p", gen(generation_config=GenerationConfig(do_sample=True, top_p=1.5)),
         "top_p", "1.5"),
    case("max_length=None-alone", gen(max_new_tokens=None, max_length=None), "max_length", "None"),
    case("num_beams=None", gen(num_beams=None), "num_beams", "None"),
    case("num_return_sequences=None", gen(num_return_sequences=None), "num_return_sequences", "None"),
    case("resolve-max_length=None", resolve(max_length=None), "max_length", "None"),
    # generate's outputs and hooks (decoding/hooks.py)
    case("output_scores='yes'", gen(output_scores="yes"), "output_scores", "'yes'"),
    case("output_logits=1", gen(output_logits=1), "output_logits", "1"),
    case("return_dict_in_generate='no'", gen(return_dict_in_generate="no"), "return_dict_in_generate", "'no'"),
    case("max_time=-1", gen(max_time=-1), "max_time", "-1"),
    case("max_time=0", gen(max_time=0), "max_time", "0"),
    case("max_time=nan", gen(max_time=NAN), "max_time", "nan"),
    case("max_time=inf", gen(max_time=INF), "max_time", "inf"),
    case("max_time='1'", gen(max_time="1"), "max_time", "'1'"),
    case("max_time=True", gen(max_time=True), "max_time", "True"),
    case("logits_processor=not-a-list", gen(logits_processor=lambda ids, s: s), "logits_processor", "<function"),
    case("logits_processor=[5]", gen(logits_processor=[5]), "logits_processor", "[5]"),
    case("logits_processor-extra-arguments", gen(logits_processor=[lambda ids, scores, cur_len: scores]),
         "logits_processor", "'cur_len'"),
    case("logits_processor=[class]", gen(logits_processor=[TopKLogitsWarper]), "logits_processor",
         "TopKLogitsWarper"),
    case("stopping_criteria=['x']", gen(stopping_criteria=["x"]), "stopping_criteria", "['x']"),
    case("stopping_criteria=MaxLengthCriteria", gen(stopping_criteria=[MaxLengthCriteria(5)]), "stopping_criteria",
         "MaxLengthCriteria"),
    case("stopping_criteria=MaxTimeCriteria", gen(stopping_criteria=[MaxTimeCriteria(1.0)]), "stopping_criteria",
         "MaxTimeCriteria"),
    case("stopping_criteria=EosTokenCriteria", gen(stopping_criteria=[EosTokenCriteria(2)]), "stopping_criteria",
         "EosTokenCriteria"),
    case("streamer=object", gen(streamer=object()), "streamer", "<object"),
    case("streamer-without-end", gen(streamer=type("PutOnly", (), {"put": lambda self, v: None})()), "streamer",
         "'end'"),
    case("streamer-batch-2", gen(ids=P2, mask=M2, streamer=TextStreamer(None)), "streamer", "2 rows"),
    case("streamer-return-sequences", gen(do_sample=True, num_return_sequences=2, streamer=TextStreamer(None)),
         "streamer", "2 rows"),
    case("streamer-beam", gen(num_beams=2, streamer=TextStreamer(None)), "streamer", "num_beams=2"),
]


@pytest.fixture(scope="module")
def counted_model(tiny_llama):
    """The tiny Llama with a forward pre-hook counting model calls (the hook is the real nn.Module hook)."""
    calls = []
    handle = tiny_llama.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield tiny_llama, calls
    handle.remove()


def test_the_table_is_large_enough():
    assert len(CASES) >= 85


@pytest.mark.filterwarnings("ignore::UserWarning")  # ignored-setting warnings are not what these cases test
@pytest.mark.parametrize("call, exc, name, value", CASES)
def test_bad_input_is_named_before_any_forward(counted_model, call, exc, name, value):
    model, calls = counted_model
    calls.clear()
    with pytest.raises(exc) as info:
        call(model)
    message = str(info.value)
    assert name in message, f"the message does not name {name!r}: {message}"
    assert value in message, f"the message does not hold the value {value!r}: {message}"
    assert not calls, f"{len(calls)} forward pass(es) ran before the error"


# Accepted, as transformers' generate accepts them: same output as model.generate.

@pytest.fixture(scope="module")
def no_special_tokens():
    """A tiny Llama whose generation_config has neither a pad nor an EOS id (as some checkpoints ship)."""
    model = build_tiny_model("tiny_llama", vocab_size=1000, seed=0)
    model.generation_config.pad_token_id = None
    model.generation_config.eos_token_id = None
    return model


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=2), dict(do_sample=True, num_return_sequences=2)],
                         ids=["greedy", "beam", "sampling"])
def test_padded_batch_without_pad_or_eos_matches_generate(no_special_tokens, kwargs):
    """The mask says where the padding is, and without EOS no row ends early: no pad id is ever needed."""
    torch.manual_seed(0)
    ours = decoding.generate(no_special_tokens, P2, M2, max_new_tokens=5, **kwargs)
    torch.manual_seed(0)
    theirs = no_special_tokens.generate(P2, attention_mask=M2, max_new_tokens=5, **kwargs)
    assert torch.equal(ours.sequences, theirs)


def test_batch_without_mask_or_pad_warns_and_attends_every_slot(no_special_tokens):
    with pytest.warns(UserWarning, match="attention_mask=None and pad_token_id=None with a batch of 2 prompts"):
        ours = decoding.generate(no_special_tokens, P2, max_new_tokens=5)
    theirs = no_special_tokens.generate(P2, max_new_tokens=5)
    assert torch.equal(ours.sequences, theirs)
    # attending the leading 0 differs from masking it: the warning is about a real difference
    masked = decoding.generate(no_special_tokens, P2, M2, max_new_tokens=5)
    assert not torch.equal(ours.sequences[0], masked.sequences[0])


def test_bool_float_and_int_masks_mean_the_same(tiny_llama):
    expected = decoding.generate(tiny_llama, P2, M2, max_new_tokens=6).sequences
    assert torch.equal(tiny_llama.generate(P2, attention_mask=M2, max_new_tokens=6), expected)
    for mask in (M2.bool(), M2.float(), M2.int()):
        assert torch.equal(decoding.generate(tiny_llama, P2, mask, max_new_tokens=6).sequences, expected)


def test_one_dimensional_prompt_is_one_row(tiny_llama):
    row = decoding.generate(tiny_llama, P[0], torch.ones(3, dtype=torch.long), max_new_tokens=5).sequences
    assert torch.equal(row, decoding.generate(tiny_llama, P, max_new_tokens=5).sequences)
    assert torch.equal(decoding.generate(tiny_llama, P.int(), max_new_tokens=5).sequences, row)


def test_mask_inferred_from_the_pad_id_as_generate_infers_it(tiny_llama):
    """pad 0 occurs in the prompt and is not the EOS id (2): its slots are padding, as in generate."""
    ours = decoding.generate(tiny_llama, P2, pad_token_id=0, max_new_tokens=5).sequences
    assert torch.equal(ours, decoding.generate(tiny_llama, P2, M2, pad_token_id=0, max_new_tokens=5).sequences)
    assert torch.equal(ours, tiny_llama.generate(P2, pad_token_id=0, max_new_tokens=5))


@pytest.mark.parametrize("kwargs, ignored", [
    (dict(temperature=0.7, top_p=0.5), "['temperature', 'top_p'] only apply when sampling"),
    (dict(num_beams=2, top_p=0.5), "['top_p'] only apply when sampling"),
    (dict(length_penalty=2.0), "['length_penalty'] only apply to beam search"),
])
def test_ignored_settings_warn_and_change_nothing(tiny_llama, kwargs, ignored):
    with pytest.warns(UserWarning, match=ignored.replace("[", r"\[").replace("]", r"\]")):
        ours = decoding.generate(tiny_llama, P, max_new_tokens=5, **kwargs).sequences
    plain = {k: v for k, v in kwargs.items() if k == "num_beams"}
    assert torch.equal(ours, decoding.generate(tiny_llama, P, max_new_tokens=5, **plain).sequences)
    assert torch.equal(ours, tiny_llama.generate(P, max_new_tokens=5, **kwargs))


def test_vocabulary_is_checked_where_the_model_is_known(tiny_llama):
    """The runner resolves parameters before loading a model: an id's range can only be checked with one."""
    params = decoding.resolve_params(None, 3, None, eos_token_id=5000, pad_token_id=5000)
    assert params.eos_token_id == (5000,) and params.pad_token_id == 5000
    with pytest.raises(ValueError, match=r"eos_token_id=\[5000\] is not allowed: token ids must be in \[0, 1000\)"):
        decoding.resolve_params(tiny_llama, 3, None, eos_token_id=5000)


def test_boundaries_are_allowed(tiny_llama):
    out = decoding.generate(tiny_llama, P, max_new_tokens=4, min_new_tokens=4)
    assert out.new_token_ids.shape == (1, 4)
    out = decoding.generate(tiny_llama, P, max_new_tokens=253, eos_token_id=[])  # 3 + 253 = the 256 positions
    assert out.sequences.shape == (1, 256)
    assert math.isclose(decoding.resolve_params(None, 3, None, top_p=1.0, do_sample=True).top_p, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
def test_generator_on_another_device_is_named():
    model = build_tiny_model("tiny_llama", vocab_size=1000, device="cuda")
    with pytest.raises(ValueError, match=r"generator is a torch.Generator on cpu but the model runs on cuda"):
        decoding.generate(model, P, do_sample=True, max_new_tokens=2, generator=torch.Generator())


def test_numpy_integers_are_integers(tiny_llama):
    """Ids read from numpy arrays are ints to generate too (it builds tensors from them); numpy bools are not."""
    ours = decoding.generate(tiny_llama, P, max_new_tokens=np.int64(5), eos_token_id=np.int64(7)).sequences
    assert torch.equal(ours, decoding.generate(tiny_llama, P, max_new_tokens=5, eos_token_id=7).sequences)
    with pytest.raises(ValueError, match=r"eos_token_id=(np\.)?True_? is not allowed"):
        decoding.generate(tiny_llama, P, eos_token_id=np.bool_(True))
