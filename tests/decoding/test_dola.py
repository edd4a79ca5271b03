"""DoLa (decoding/strategies/dola.py) against transformers 4.55.4's `_dola_decoding`, and its own invariants.

Golden outputs: tests/decoding/goldens/dola_tf4.json, made by tests/goldens/tf4_dola.py (its header says how;
the file records the versions, the command and each model's weights fingerprint, re-checked here). Batched
golden cases run `dola_decode(tf4_batch=True)`: 4.x picks one premature layer per step for the whole batch and
counts left padding for the repetition penalty. One-prompt cases run the public `generate`, whose default
keeps rows independent; the two rules agree for one row, and `test_batch_row_equals_prompt_alone` checks the
default's batch independence where 4.x's coupled rule would break it (SmolLM2 "low": rows choose apart).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from decoding import generate
from decoding.loop import prepare_call
from decoding.strategies.dola import dola_decode, js_divergence, relative_top_contrast
from decoding.strategies.dola_layers import candidate_layers
from tests.goldens.fingerprint import weights_fingerprint

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "dola_tf4.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}
TINY_CASES = [name for name, case in CASES.items() if case["model"] != "smollm2"]
SMOLLM2_CASES = [name for name, case in CASES.items() if case["model"] == "smollm2"]
CACHES = ("none", "dynamic", "static")


def run_case(model, case: dict, cache: str) -> torch.Tensor:
    """Our sequences for a golden case: batched ones under 4.x's coupled rules, one prompt through generate."""
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    generator = torch.Generator().manual_seed(case["seed"])
    if ids.shape[0] == 1:
        return generate(model, ids, mask, generator=generator, cache=cache, **case["generate"]).sequences
    ids, mask, (p,) = prepare_call(model, ids, mask, [{**case["generate"], "cache": cache}],
                                   {"generator": generator}, None)
    return dola_decode(model, ids, mask, p, generator=generator, tf4_batch=True).sequences


@pytest.fixture(scope="module")
def tiny_models(tiny_llama, tiny_gpt2):
    return {"tiny_llama": tiny_llama, "tiny_gpt2": tiny_gpt2}


def test_golden_file_names_its_source(tiny_models):
    assert GOLDEN["transformers"] == "4.55.4"
    assert GOLDEN["command"].startswith("/work/ref-tf4/bin/python -m tests.goldens.tf4_dola")
    for name, model in tiny_models.items():
        assert weights_fingerprint(model) == GOLDEN["fingerprints"][name], f"{name}: the fixture's weights changed"


def test_golden_cases_end_rows_apart():
    """The batched cases exercise rows finishing on EOS at different steps (else they would test less)."""
    for name, case in CASES.items():
        if len(case["input_ids"]) == 1:
            continue
        eos, start = case["generate"]["eos_token_id"], len(case["input_ids"][0])
        ends = [row[start:].index(eos) if eos in row[start:] else None for row in case["output_ids"]]
        ended = [e for e in ends if e is not None]
        assert len(ended) >= 2 and len(set(ended)) == len(ended), (name, ends)


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("name", TINY_CASES)
def test_tiny_models_match_transformers_4(tiny_models, name, cache):
    case = CASES[name]
    assert run_case(tiny_models[case["model"]], case, cache).tolist() == case["output_ids"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOLLM2_CASES)
def test_smollm2_matches_transformers_4(smollm2, name):
    model, _ = smollm2
    assert weights_fingerprint(model) == GOLDEN["fingerprints"]["smollm2"]
    case = CASES[name]
    assert run_case(model, case, "dynamic").tolist() == case["output_ids"]


@pytest.mark.slow
def test_smollm2_static_cache_matches_transformers_4(smollm2):
    """The tiny models run every case on all three caches; SmolLM2 once more on the slot cache."""
    case = CASES["smollm2-list"]
    assert run_case(smollm2[0], case, "static").tolist() == case["output_ids"]


def decoded_rows(result) -> list[list[int]]:
    """Each row's generated tokens up to and including its EOS (what a row's own run must reproduce)."""
    return [row[mask].tolist() for row, mask in zip(result.new_token_ids, result.new_token_mask)]


def assert_rows_equal_alone(model, ids, mask, **kwargs):
    batched = generate(model, ids, mask, **kwargs)
    for r in range(ids.shape[0]):
        alone = generate(model, ids[r:r + 1, mask[r].bool()], **kwargs)
        assert decoded_rows(batched)[r] == decoded_rows(alone)[0], f"row {r}"
    return batched


def test_batch_row_equals_prompt_alone_tiny(tiny_model, padded_batch):
    ids, mask = padded_batch
    for dola_layers in ("low", [0, 1]):
        assert_rows_equal_alone(tiny_model, ids, mask, dola_layers=dola_layers, repetition_penalty=1.2,
                                max_new_tokens=10, eos_token_id=None)


@pytest.mark.slow
def test_batch_row_equals_prompt_alone_smollm2(smollm2):
    """SmolLM2 "low": the rows choose different premature layers, so 4.x's batch-mean choice would change them."""
    model, _ = smollm2
    case = CASES["smollm2-low"]
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    args = {"dola_layers": "low", "repetition_penalty": 1.2, "max_new_tokens": 6, "pad_token_id": 2}
    batched = assert_rows_equal_alone(model, ids, mask, **args)
    layers = batched.extras["dola_premature_layers"]  # (B, N)
    assert (layers != layers[:1]).any(), "the rows never chose apart: this case would not tell the rules apart"
    ids4, mask4, (p,) = prepare_call(model, ids, mask, [args], {"generator": None}, None)
    coupled = dola_decode(model, ids4, mask4, p, tf4_batch=True).extras["dola_premature_layers"]
    assert (coupled == coupled[:1]).all()  # 4.x: one layer per step for every row


def test_candidate_layers_follow_transformers_4():
    """4.55's mapping (dola_layers.py's docstring), written out for the depths that take each branch."""
    assert candidate_layers("low", 30, tied=True) == [2, 4, 6, 8, 10, 12, 14]
    assert candidate_layers("high", 30, tied=True) == [15, 17, 19, 21, 23, 25, 27, 29]
    assert candidate_layers("low", 30, tied=False) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert candidate_layers("low", 2, tied=True) == [1]  # start layer 1 is N // 2 itself
    assert candidate_layers("high", 2, tied=True) == [1]
    assert candidate_layers("low", 2, tied=False) == [0]
    assert candidate_layers("high", 2, tied=False) == [1]
    assert candidate_layers("low", 48, tied=False) == list(range(0, 20, 2))
    assert candidate_layers("high", 48, tied=False) == list(range(28, 48, 2))
    assert candidate_layers("low", 1, tied=True) == [0]
    assert candidate_layers([3, 1, 3], 30, tied=True) == [3, 1, 3]


def test_js_divergence_by_hand():
    """JS(P, Q) = (KL(P || M) + KL(Q || M)) / 2 with M their mean, each KL averaged over the V tokens."""
    final = torch.tensor([[2.0, 0.0, -1.0, 0.5]])  # (B=1, V=4)
    premature = torch.tensor([[[2.0, 0.0, -1.0, 0.5]], [[0.0, 3.0, 0.0, 0.0]]])  # (L=2, 1, 4): a copy, a far one
    got = js_divergence(final, premature)
    p = final.double().softmax(-1)[0]
    for layer, expected_zero in ((0, True), (1, False)):
        q = premature[layer].double().softmax(-1)[0]
        m = (p + q) / 2
        js = 0.5 * ((m * (m / p).log()).mean() + (m * (m / q).log()).mean())
        assert math.isclose(float(got[layer, 0]), float(js), rel_tol=1e-5, abs_tol=1e-7)
        assert (float(got[layer, 0]) < 1e-7) == expected_zero


def test_relative_top_contrast_by_hand():
    """Tokens with p_final below 0.1 * max p_final get -inf; the others log p_final - log p_base."""
    final = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.04), math.log(0.16)]])
    base = torch.tensor([[math.log(0.25)] * 4])
    out = relative_top_contrast(final, base)
    assert out[0, 2] == -math.inf  # 0.04 < 0.1 * 0.5
    expected = [math.log(0.5 / 0.25), math.log(0.3 / 0.25), math.log(0.16 / 0.25)]
    assert torch.allclose(out[0, [0, 1, 3]], torch.tensor(expected), atol=1e-6)
    assert torch.equal(final, torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.04), math.log(0.16)]]))


def test_raw_logits_are_the_final_layers(tiny_llama, padded_batch):
    """output_logits gives the final layer's logits (4.x's), output_scores the processed contrast."""
    ids, mask = padded_batch
    dola = generate(tiny_llama, ids, mask, dola_layers=[0, 1], max_new_tokens=1, output_logits=True,
                    output_scores=True, eos_token_id=None)
    plain = generate(tiny_llama, ids, mask, max_new_tokens=1, output_logits=True, eos_token_id=None)
    assert torch.equal(dola.logits[0], plain.logits[0])
    assert torch.isinf(dola.scores[0]).any() and not torch.isinf(plain.logits[0]).any()


def test_return_sequences_are_independent_rows(tiny_gpt2):
    ids = torch.tensor([[5, 6, 7]])
    args = {"dola_layers": "high", "do_sample": True, "repetition_penalty": 1.2, "max_new_tokens": 8,
            "eos_token_id": None}
    n = generate(tiny_gpt2, ids, num_return_sequences=3, generator=torch.Generator().manual_seed(1), **args)
    repeated = generate(tiny_gpt2, ids.repeat(3, 1), generator=torch.Generator().manual_seed(1), **args)
    assert torch.equal(n.sequences, repeated.sequences)
    assert len({tuple(row) for row in n.new_token_ids.tolist()}) > 1


@pytest.mark.parametrize("cache", ("none", "dynamic"))
def test_inputs_embeds_equal_token_ids(tiny_llama, padded_batch, cache):
    """The prompt as embeddings taps the same layer inputs as the prompt as ids (decoding/embeds.py)."""
    ids, mask = padded_batch
    args = {"dola_layers": [0, 1], "repetition_penalty": 1.2, "max_new_tokens": 6, "eos_token_id": None,
            "cache": cache}
    embeds = tiny_llama.get_input_embeddings()(ids)
    from_embeds = generate(tiny_llama, None, mask, inputs_embeds=embeds, **args)
    from_ids = generate(tiny_llama, ids, mask, **args)
    assert torch.equal(from_embeds.sequences, from_ids.new_token_ids)


class NoForward:
    """A pre-hook that fails the test if the model runs: errors must come before any forward pass."""

    def __call__(self, *args):
        raise AssertionError("the model ran before the bad input was refused")


@pytest.mark.parametrize("kwargs, match", [
    ({"dola_layers": "middle"}, r"dola_layers='middle' is not allowed: use 'low', 'high'"),
    ({"dola_layers": 1}, r"dola_layers=1 is not allowed"),
    ({"dola_layers": []}, r"dola_layers=\[\] is not allowed"),
    ({"dola_layers": [0.5]}, r"dola_layers=\[0.5\] is not allowed"),
    ({"dola_layers": [True]}, r"dola_layers=\[True\] is not allowed"),
    ({"dola_layers": [2]}, r"dola_layers=\[2\] is not allowed: layer indices must lie in \[0, 2\): the model has 2"),
    ({"dola_layers": [0, -1]}, r"must lie in \[0, 2\).*\[-1\] lie outside"),
    ({"dola_layers": "low", "num_beams": 2}, r"dola_layers='low' is not allowed with num_beams=2"),
    ({"dola_layers": "low", "prompt_lookup_num_tokens": 2}, r"dola_layers='low' is not allowed with a speculative"),
    ({"dola_layers": "low", "penalty_alpha": 0.5, "top_k": 4}, r"penalty_alpha"),
    ({"dola_layers": "low", "guidance_scale": 2.0}, r"dola_layers='low' is not allowed with guidance_scale=2.0"),
    ({"dola_layers": "low", "compile": True, "cache": "static"}, r"dola_layers='low' is not allowed with compile"),
])
def test_bad_inputs_refused_before_any_forward(tiny_llama, kwargs, match):
    handle = tiny_llama.register_forward_pre_hook(NoForward())
    try:
        with pytest.raises(ValueError, match=match):
            generate(tiny_llama, torch.tensor([[5, 6, 7]]), max_new_tokens=3, **kwargs)
    finally:
        handle.remove()
