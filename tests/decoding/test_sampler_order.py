"""`sampler_order`: which engine's processor order a run uses (decoding/processors/order.py).

What must hold:
- "transformers" is the default and is generate's order: a sampling run with temperature, top-k, top-p and
  min-p is token for token `model.generate` after the same seed, with or without the explicit name;
- "llama.cpp" and "vllm" resolve to their engines' chains (the relative places of the samplers each engine
  has), and `build_processors` builds the processors in that order;
- a list reorders only the processors it names, among the places transformers gives them;
- the order is not cosmetic: temperature before min-p / top-p (transformers) keeps other tokens than
  temperature last (llama.cpp), on hand-computed scores and in a seeded run;
- bad values (an unknown name, a repeated one, an empty list, a non-string, both sampler_order and
  processor_order) fail before any forward pass, with the parameter, the value and what is allowed.
"""

from __future__ import annotations

import math

import pytest
import torch

import decoding
from decoding.params import resolve_params
from decoding.processors import MinP, Temperature, TopK, TopP
from decoding.processors.order import (LLAMA_CPP_PROCESSOR_ORDER, TRANSFORMERS_PROCESSOR_ORDER, VLLM_PROCESSOR_ORDER,
                                       build_processors, order_of)
from decoding.processors.truncation import Typical
from tests.decoding.reference import reference_and_ours

SAMPLING = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, max_new_tokens=10)
INF = math.inf


def order(**given) -> tuple[str, ...]:
    return resolve_params(None, 4, max_new_tokens=4, **given).processor_order


def survivors(scores: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in scores]


def places(names: tuple[str, ...], full: tuple[str, ...]) -> list[int]:
    return [full.index(name) for name in names]


# --- transformers: the default, generate's order ---------------------------------------------------------------

def test_transformers_is_the_default_and_is_generates_order():
    assert order() == order(sampler_order="transformers") == TRANSFORMERS_PROCESSOR_ORDER
    assert resolve_params(None, 4, max_new_tokens=4).sampler_order == "transformers"
    # generate's own: penalties, then temperature before the truncation warpers top-k, top-p, min-p, typical
    assert places(("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "typical_p"),
                  TRANSFORMERS_PROCESSOR_ORDER) == sorted(places(
                      ("repetition_penalty", "temperature", "top_k", "top_p", "min_p", "typical_p"),
                      TRANSFORMERS_PROCESSOR_ORDER))


@pytest.mark.parametrize("sampler_order", [None, "transformers"])
def test_transformers_order_is_token_identical_to_generate(tiny_llama, padded_batch, sampler_order):
    ids, mask = padded_batch
    given = {} if sampler_order is None else dict(sampler_order=sampler_order)
    torch.manual_seed(0)
    reference = tiny_llama.generate(ids, attention_mask=mask, **SAMPLING)
    torch.manual_seed(0)
    ours = decoding.generate(tiny_llama, ids, mask, **SAMPLING, **given)
    assert torch.equal(reference, ours.sequences)
    if sampler_order is None:  # and through the parity tests' helper (generate knows no sampler_order keyword)
        reference, ours = reference_and_ours(tiny_llama, ids, mask, seed=3, **SAMPLING)
        assert torch.equal(reference, ours.sequences)


# --- llama.cpp and vLLM ----------------------------------------------------------------------------------------

def test_llama_cpp_order_is_its_default_chain():
    assert order(sampler_order="llama.cpp") == LLAMA_CPP_PROCESSOR_ORDER
    # common/common.h: penalties, DRY, top-n-sigma, top-k, typical, top-p, min-p, XTC, temperature; then mirostat
    chain = ("repetition_penalty", "frequency_penalty", "presence_penalty", "dry_multiplier", "top_n_sigma", "top_k",
             "typical_p", "top_p", "min_p", "xtc_probability", "temperature", "mirostat")
    assert places(chain, LLAMA_CPP_PROCESSOR_ORDER) == sorted(places(chain, LLAMA_CPP_PROCESSOR_ORDER))
    # common/sampling.cpp adds logit_bias before the chain
    assert LLAMA_CPP_PROCESSOR_ORDER.index("logit_bias") < LLAMA_CPP_PROCESSOR_ORDER.index("repetition_penalty")
    assert resolve_params(None, 4, max_new_tokens=4, sampler_order="llama.cpp").sampler_order == "llama.cpp"


def test_vllm_order_is_its_samplers_order():
    assert order(sampler_order="vllm") == VLLM_PROCESSOR_ORDER
    # v1 sampler: allowed ids / logit_bias, penalties (repetition, frequency, presence), temperature, min-p,
    # then top-k and top-p
    chain = ("allowed_token_ids", "logit_bias", "repetition_penalty", "frequency_penalty", "presence_penalty",
             "temperature", "min_p", "top_k", "top_p")
    assert places(chain, VLLM_PROCESSOR_ORDER) == sorted(places(chain, VLLM_PROCESSOR_ORDER))


@pytest.mark.parametrize("name", ["transformers", "llama.cpp", "vllm"])
def test_every_order_names_every_processor_once(name):
    full = order(sampler_order=name)
    assert sorted(full) == sorted(TRANSFORMERS_PROCESSOR_ORDER) and len(set(full)) == len(full)


@pytest.mark.parametrize("name, expected", [
    ("transformers", [Temperature, TopK, TopP, MinP, Typical]),
    ("llama.cpp", [TopK, Typical, TopP, MinP, Temperature]),
    ("vllm", [Temperature, MinP, TopK, TopP, Typical]),
])
def test_build_processors_follows_the_order(name, expected):
    p = resolve_params(None, 4, max_new_tokens=4, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, min_p=0.05,
                       typical_p=0.95, sampler_order=name)
    assert [type(proc) for proc in build_processors(p, 4)] == expected


# --- a list: reorder the named processors among themselves ----------------------------------------------------

def test_a_list_reorders_only_the_listed_processors():
    listed = ["top_k", "top_p", "temperature"]
    full = order(sampler_order=listed)
    assert full == order_of(listed)
    # the three take the places transformers gives them, in the list's order: temperature moves after top-p
    slots = sorted(places(tuple(listed), TRANSFORMERS_PROCESSOR_ORDER))
    assert [full[i] for i in slots] == listed
    unlisted = [i for i in range(len(full)) if i not in slots]
    assert [full[i] for i in unlisted] == [TRANSFORMERS_PROCESSOR_ORDER[i] for i in unlisted]
    # a tuple works as a list, and the resolved params record the list given
    p = resolve_params(None, 4, max_new_tokens=4, sampler_order=tuple(listed))
    assert p.processor_order == full and p.sampler_order == tuple(listed)
    # the one-name list and the transformers order itself change nothing
    assert order(sampler_order=["min_p"]) == TRANSFORMERS_PROCESSOR_ORDER
    assert order(sampler_order=list(TRANSFORMERS_PROCESSOR_ORDER)) == TRANSFORMERS_PROCESSOR_ORDER


def test_a_list_changes_the_built_processors_order():
    p = resolve_params(None, 4, max_new_tokens=4, do_sample=True, temperature=0.7, top_k=20, top_p=0.9,
                       sampler_order=["top_p", "top_k", "temperature"])
    assert [type(proc) for proc in build_processors(p, 4)] == [TopP, TopK, Temperature]


# --- the order matters ---------------------------------------------------------------------------------------

def test_temperature_before_min_p_keeps_other_tokens_than_temperature_last():
    # probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1; min_p 0.2 keeps p >= 0.1: tokens 0, 1, 2.
    # Temperature 3 first (transformers) flattens them: p ~ exp(log(p) / 3), ratios to the top
    # (0.6, 0.3, 0.1) ** (1/3) = 0.843, 0.669, 0.464, all >= 0.2: token 3 survives too.
    scores = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = {}
    for name in ("transformers", "llama.cpp"):
        p = resolve_params(None, 4, max_new_tokens=4, do_sample=True, temperature=3.0, top_k=0, min_p=0.2,
                           sampler_order=name)
        kept[name] = survivors(build_processors(p, 4)(None, scores))
    assert kept == {"transformers": [[0, 1, 2, 3]], "llama.cpp": [[0, 1, 2]]}


def test_temperature_before_top_p_keeps_other_tokens_than_temperature_last():
    # top_p 0.75 on 0.5, 0.3, 0.15, 0.05: 0.5 < 0.75 <= 0.8, tokens 0 and 1 (llama.cpp: temperature last).
    # Temperature 0.5 first sharpens them to p ~ p^2: 0.25, 0.09, 0.0225, 0.0025 over 0.365 = 0.685, 0.247, ...:
    # 0.685 < 0.75 <= 0.932, still tokens 0 and 1. Temperature 3 first flattens them: 0.794, 0.669, 0.531, 0.368
    # over 2.362 = 0.336, 0.283, 0.225, 0.156: 0.336, 0.619 < 0.75 <= 0.844, tokens 0, 1 and 2.
    scores = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    for temperature, transformers_kept in ((0.5, [[0, 1]]), (3.0, [[0, 1, 2]])):
        kept = {}
        for name in ("transformers", "llama.cpp"):
            p = resolve_params(None, 4, max_new_tokens=4, do_sample=True, temperature=temperature, top_k=0,
                               top_p=0.75, sampler_order=name)
            kept[name] = survivors(build_processors(p, 4)(None, scores))
        assert kept == {"transformers": transformers_kept, "llama.cpp": [[0, 1]]}, temperature


def test_temperature_last_changes_a_seeded_run_and_temperature_one_does_not(tiny_llama, padded_batch):
    ids, mask = padded_batch
    runs = {}
    for temperature in (1.0, 3.0):
        for name in ("transformers", "llama.cpp"):
            kwargs = dict(do_sample=True, temperature=temperature, top_k=0, min_p=0.3, max_new_tokens=12)
            runs[temperature, name] = decoding.generate(tiny_llama, ids, mask, generator=torch.Generator().manual_seed(5),
                                                        sampler_order=name, **kwargs).sequences
    # at temperature 1 the two orders build the same processors (min-p only): the same tokens
    assert torch.equal(runs[1.0, "transformers"], runs[1.0, "llama.cpp"])
    # at temperature 3 min-p keeps more tokens when it sees the flattened distribution: the run differs
    assert not torch.equal(runs[3.0, "transformers"], runs[3.0, "llama.cpp"])


# --- bad values ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    ("llamacpp", "'llamacpp'"),
    ("Transformers", "'Transformers'"),
    (["top_k", "top_kk"], "unknown: ['top_kk']"),
    (["top_k", "top_p", "top_k"], "['top_k'] repeat"),
    ([], "[]"),
    ((), "()"),
    ([1, "top_k"], "[1, 'top_k']"),
    (3, "3"),
    ({"top_k": 1}, "{'top_k': 1}"),
])
def test_bad_sampler_order_is_refused_before_any_forward(tiny_llama, padded_batch, value, shown, monkeypatch):
    ids, mask = padded_batch

    def no_forward(*args, **kwargs):  # pragma: no cover - reached only if validation failed to stop the call
        raise AssertionError("the model ran before the bad value was refused")

    monkeypatch.setattr(tiny_llama, "forward", no_forward)
    with pytest.raises(ValueError) as err:
        decoding.generate(tiny_llama, ids, mask, do_sample=True, max_new_tokens=3, sampler_order=value)
    message = str(err.value)
    assert message.startswith("sampler_order=") and shown in message, message
    # what is allowed: the engines' names (a repeat says to name each processor once instead)
    assert ("'transformers', 'llama.cpp', 'vllm'" in message) != ("name each processor once" in message), message


def test_sampler_order_none_is_the_default():
    # None is "not given", as for generate's own keywords resolved from defaults: transformers' order
    p = resolve_params(None, 4, max_new_tokens=4, sampler_order=None)
    assert p.sampler_order == "transformers" and p.processor_order == TRANSFORMERS_PROCESSOR_ORDER


def test_sampler_order_and_processor_order_together_are_refused():
    with pytest.raises(ValueError, match=r"processor_order and sampler_order='llama.cpp' are both given"):
        resolve_params(None, 4, max_new_tokens=4, sampler_order="llama.cpp",
                       processor_order=list(TRANSFORMERS_PROCESSOR_ORDER))
    with pytest.raises(ValueError, match=r"both given"):
        resolve_params(None, 4, max_new_tokens=4, sampler_order=["top_p", "top_k"], processor_order=["top_k"])
    # processor_order alone still spells out a full order
    assert order(processor_order=["top_p", "temperature"]) == ("top_p", "temperature")
