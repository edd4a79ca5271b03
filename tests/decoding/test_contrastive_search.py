"""Contrastive search (decoding/strategies/contrastive.py) against transformers 4.55.4's `_contrastive_search`.

The golden file (tests/decoding/goldens/contrastive_tf4.json, made by tests/goldens/tf4_contrastive.py in a
4.55.4 interpreter; it names the command) holds 4.x's output ids for left-padded batches of three prompts of
different lengths: two (penalty_alpha, top_k) settings per model, one with the loop's processors
(repetition penalty, no-repeat n-grams, min_new_tokens, bad words), one whose EOS id ends the rows at
different steps, and B = 1 with low_memory. Each case must come out token for token under every cache
("none" recomputes everything, "dynamic", "static"), and again with low_memory=True (the candidates one at
a time). The weights fingerprint recorded beside the ids is checked first: a golden is only evidence for
the weights that made it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import decoding
from tests.goldens.fingerprint import weights_fingerprint

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "contrastive_tf4.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}
TINY_CASES = [name for name, case in CASES.items() if case["model"] != "smollm2"]
SMOLLM2_CASES = [name for name, case in CASES.items() if case["model"] == "smollm2"]
CACHES = ("none", "dynamic", "static")
P = torch.tensor([[5, 6, 7, 8]])
CS = dict(penalty_alpha=0.6, top_k=4)


@pytest.fixture(scope="module")
def models(tiny_llama, tiny_gpt2):
    return {"tiny_llama": tiny_llama, "tiny_gpt2": tiny_gpt2}


def _run(model, case, **extra):
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    return decoding.generate(model, ids, mask, **{**case["generate"], **extra})


def _check_golden(model, name, caches=CACHES, low_memory_caches=CACHES):
    case = CASES[name]
    assert weights_fingerprint(model) == GOLDEN["fingerprints"][case["model"]], "the golden came from other weights"
    runs = [(cache, False) for cache in caches] + [(cache, True) for cache in low_memory_caches]
    for cache, low_memory in runs:
        out = _run(model, case, cache=cache, low_memory=low_memory)
        assert out.sequences.tolist() == case["output_ids"], (name, cache, low_memory)


def test_golden_file_names_its_source():
    assert GOLDEN["transformers"] == "4.55.4"
    assert GOLDEN["command"].startswith("/work/ref-tf4/bin/python -m tests.goldens.tf4_contrastive")
    eos_case = CASES["tiny_llama-eos-apart"]
    prompt = len(eos_case["input_ids"][0])
    ends = [row[prompt:].index(eos_case["generate"]["eos_token_id"]) if eos_case["generate"]["eos_token_id"]
            in row[prompt:] else None for row in eos_case["output_ids"]]
    assert len(set(ends)) == 3 and sum(e is not None for e in ends) >= 2  # rows end apart, at least two on EOS


@pytest.mark.parametrize("name", TINY_CASES)
def test_equals_transformers_4_on_tiny_models(models, name):
    _check_golden(models[CASES[name]["model"]], name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOLLM2_CASES)
def test_equals_transformers_4_on_smollm2(smollm2, name):
    """Every cache for the first setting; the second without the slow full recompute ("none", ~13 s)."""
    model = smollm2[0] if isinstance(smollm2, tuple) else smollm2
    first = name == SMOLLM2_CASES[0]
    _check_golden(model, name, CACHES if first else ("dynamic", "static"), ("dynamic",) if first else ())


def test_is_not_greedy(models):
    """The goldens would pass a loop that ignored penalty_alpha only if 4.x's output were greedy's: it is not."""
    differ = 0
    for name in TINY_CASES:
        case = CASES[name]
        greedy = _run(models[case["model"]], case, penalty_alpha=None, low_memory=None)
        differ += greedy.sequences.tolist() != case["output_ids"]
    assert differ >= len(TINY_CASES) - 2


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_gpt2"])
def test_a_batch_row_equals_its_prompt_alone(models, kind):
    case = CASES[f"{kind}-eos-apart"]
    batch = _run(models[kind], case)
    pad, width = case["generate"]["pad_token_id"], len(case["input_ids"][0])
    for row, (ids, mask) in enumerate(zip(case["input_ids"], case["attention_mask"])):
        prompt = torch.tensor([[t for t, m in zip(ids, mask) if m]])
        alone = decoding.generate(models[kind], prompt, **case["generate"]).new_token_ids[0].tolist()
        new = batch.sequences[row, width:].tolist()
        assert new[:len(alone)] == alone and all(t == pad for t in new[len(alone):]), row
        assert batch.finish_reasons[row] == ("eos" if len(alone) < len(new) or alone[-1] ==
                                             case["generate"]["eos_token_id"] else "length")


def test_penalty_alpha_zero_is_greedy(tiny_llama):
    greedy = decoding.generate(tiny_llama, P, max_new_tokens=8, top_k=4)
    zero = decoding.generate(tiny_llama, P, max_new_tokens=8, top_k=4, penalty_alpha=0.0)
    assert torch.equal(greedy.sequences, zero.sequences)


def test_scores_and_logprobs_are_the_candidates_distribution(tiny_llama):
    """output_scores / output_logits are 4.x's (the processed and raw distribution each token came from)."""
    out = decoding.generate(tiny_llama, P, max_new_tokens=6, repetition_penalty=1.5, output_scores=True,
                            output_logits=True, **CS)
    assert len(out.scores) == len(out.logits) == 6
    for step, token in enumerate(out.new_token_ids[0].tolist()):
        scores = out.scores[step][0]
        assert token in torch.topk(torch.softmax(scores, -1), CS["top_k"]).indices.tolist()
        assert torch.allclose(out.token_logprobs[0, step], torch.log_softmax(scores, -1)[token])
        assert torch.allclose(out.token_logprobs_raw[0, step], torch.log_softmax(out.logits[step][0], -1)[token])
    assert not torch.equal(out.scores[1], out.logits[1])  # the penalty changed the processed scores


def test_inputs_embeds_give_the_ids_tokens(tiny_llama):
    ids = CASES["tiny_llama-a0.6-k4"]
    with torch.no_grad():
        embeds = tiny_llama.get_input_embeddings()(torch.tensor(ids["input_ids"]))
    for cache in CACHES:
        out = decoding.generate(tiny_llama, inputs_embeds=embeds, attention_mask=torch.tensor(ids["attention_mask"]),
                                cache=cache, **ids["generate"])
        width = len(ids["input_ids"][0])
        assert out.sequences.tolist() == [row[width:] for row in ids["output_ids"]], cache


def test_stop_strings_end_the_row_on_the_full_runs_prefix(tiny_gpt2):
    from tests.decoding.offline_tokenizers import byte_level_bpe

    tokenizer = copy.deepcopy(byte_level_bpe())
    full = decoding.generate(tiny_gpt2, P, max_new_tokens=12, eos_token_id=None, **CS)
    new = full.new_token_ids[0].tolist()
    stop = tokenizer.decode(new[4:6])
    assert stop.strip(), "pick other positions: the stop string must be visible text"
    out = decoding.generate(tiny_gpt2, P, max_new_tokens=12, eos_token_id=None, stop_strings=[stop],
                            tokenizer=tokenizer, **CS)
    got = out.new_token_ids[0].tolist()
    assert out.finish_reasons == ["stop_string"] and len(got) <= 6 and new[:len(got)] == got
    assert stop in tokenizer.decode(got)


# bad inputs: each is refused before any forward pass, naming the parameter and the value
BAD = [
    pytest.param(dict(penalty_alpha=-0.1, top_k=4), "penalty_alpha", "-0.1", id="alpha<0"),
    pytest.param(dict(penalty_alpha=1.5, top_k=4), "penalty_alpha", "1.5", id="alpha>1"),
    pytest.param(dict(penalty_alpha=float("nan"), top_k=4), "penalty_alpha", "nan", id="alpha=nan"),
    pytest.param(dict(penalty_alpha="0.6", top_k=4), "penalty_alpha", "'0.6'", id="alpha=str"),
    pytest.param(dict(penalty_alpha=True, top_k=4), "penalty_alpha", "True", id="alpha=True"),
    pytest.param(dict(penalty_alpha=0.6, top_k=1), "top_k", "contrastive search needs top_k >= 2", id="top_k=1"),
    pytest.param(dict(penalty_alpha=0.6, top_k=None), "top_k", "None", id="top_k=None"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, do_sample=True), "do_sample=True", "penalty_alpha=0.6",
                 id="sampling"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, num_beams=2), "num_beams=2", "penalty_alpha=0.6", id="beams"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, prompt_lookup_num_tokens=2), "prompt_lookup_num_tokens",
                 "penalty_alpha=0.6", id="speculation"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, guidance_scale=1.5), "guidance_scale=1.5", "penalty_alpha=0.6",
                 id="guidance"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, cache="static", compile=True), "compile=True",
                 "penalty_alpha=0.6", id="compile"),
    pytest.param(dict(penalty_alpha=0.6, top_k=4, low_memory="yes"), "low_memory", "'yes'", id="low_memory=str"),
    pytest.param(dict(low_memory=True), "low_memory=True", "without contrastive search", id="low_memory-alone"),
]


@pytest.mark.parametrize("kwargs, name, value", BAD)
def test_bad_input_is_refused_before_any_forward(tiny_llama, kwargs, name, value):
    calls = []
    handle = tiny_llama.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError) as err:
            decoding.generate(tiny_llama, P, max_new_tokens=4, **kwargs)
    finally:
        handle.remove()
    assert name in str(err.value) and value in str(err.value), str(err.value)
    assert not calls
