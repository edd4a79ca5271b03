"""model.quantization (experiments/quantization.py): torchao weight-only int8 / int4 on the tiny models.

What must hold: every Linear is quantized (none skipped in silence) and stored smaller; greedy tokens equal
`model.generate` with the same quantized model, for both caches; the compiled step's logits equal the eager
step's within the tolerance the README states; the perplexity path scores a quantized head; bad settings are one
clear ConfigError naming the option, before any model loads where the setting alone is wrong.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from torch._dynamo.utils import counters

import decoding
from experiments.config_checks import ConfigError
from experiments.jobs import config_fingerprint
from experiments.models import build_tiny_model, known_model_type, load_model
from experiments.perplexity import corpus_perplexity
from experiments.quantization import (check_quantization, int4_group_size, quantize_model, stored_weight_bytes,
                                      weight_layers)
from experiments.run import run
from tests.decoding.test_compiled import stepwise_logits
from tests.experiments.runner_helpers import TINY_RUN, compose_config

QUANTIZATIONS = ["int8_weight_only", "int4_weight_only"]
# |compiled - eager| logits of the same quantized model, the bound the README states (measured on the tiny models
# and SmolLM2: below 2e-5 in float32 for both; bfloat16 rounds at ~1e-2 of the logit scale).
COMPILED_ATOL = {torch.float32: 1e-4}


@pytest.fixture(scope="module")
def tiny_llama():
    """The tiny Llama with a 1024-token vocabulary: int4's CPU packing takes output widths in multiples of 16."""
    return build_tiny_model("tiny_llama", vocab_size=1024, seed=0)


@pytest.fixture(scope="module", params=QUANTIZATIONS)
def quantized(request, tiny_llama):
    model = quantize_model(copy.deepcopy(tiny_llama), request.param)
    return request.param, model


def test_every_linear_is_quantized_and_the_weights_are_stored_smaller(quantized, tiny_llama):
    name, model = quantized
    linears, others = weight_layers(model)
    assert not others and len(linears) == 7 * tiny_llama.config.num_hidden_layers + 1  # q k v o gate up down + head
    kinds = {type(layer.weight.data).__name__ for _, layer in linears}
    assert kinds == {"Int8Tensor" if name == "int8_weight_only" else "Int4OpaqueTensor"}
    linear_bytes = sum(layer.weight.numel() * 4 for _, layer in linears)
    saved = stored_weight_bytes(tiny_llama) - stored_weight_bytes(model)
    assert saved > (0.70 if name == "int8_weight_only" else 0.80) * linear_bytes


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_tokens_equal_generate_with_the_same_quantized_model(quantized, padded_batch, cache):
    _, model = quantized
    ids, mask = padded_batch
    ours = decoding.generate(model, ids, mask, max_new_tokens=12, do_sample=False, eos_token_id=[], cache=cache)
    theirs = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None,
                            pad_token_id=0)
    assert torch.equal(ours.sequences, theirs)


def test_sampling_with_a_generator_is_reproducible_on_a_quantized_model(quantized, padded_batch):
    _, model = quantized
    ids, mask = padded_batch
    runs = [decoding.generate(model, ids, mask, max_new_tokens=8, do_sample=True, top_k=50, eos_token_id=[],
                              generator=torch.Generator().manual_seed(3)).sequences for _ in range(2)]
    assert torch.equal(*runs)


@pytest.mark.slow
def test_compiled_step_logits_equal_the_eager_steps(quantized, padded_batch):
    _, model = quantized
    ids, mask = padded_batch
    torch._dynamo.reset()
    counters.clear()
    try:
        forced = decoding.generate(model, ids, mask, max_new_tokens=8, cache="static", eos_token_id=[]).new_token_ids
        eager = stepwise_logits(model, ids, mask, forced, compile=False)
        compiled_logits = stepwise_logits(model, ids, mask, forced, compile=True)
        assert counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()
    assert torch.equal(eager[:, 0], compiled_logits[:, 0])  # the prefill stays eager
    assert (eager - compiled_logits).abs().max() < COMPILED_ATOL[torch.float32]
    assert torch.equal(eager.argmax(-1), compiled_logits.argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", QUANTIZATIONS)
def test_compiled_step_in_bfloat16_stays_within_bfloat16s_own_rounding(name, tiny_llama, padded_batch):
    """The README's bfloat16 tolerance: compiled kernels round differently, so the quantized bfloat16 model's
    compiled logits stay within twice the distance its eager logits have from the same weights in float32."""
    ids, mask = padded_batch
    model = quantize_model(copy.deepcopy(tiny_llama).to(torch.bfloat16), name)
    reference = quantize_model(copy.deepcopy(tiny_llama), name)  # the same rounding of the weights, float32 products
    torch._dynamo.reset()
    try:
        forced = decoding.generate(model, ids, mask, max_new_tokens=8, cache="static", eos_token_id=[]).new_token_ids
        eager = stepwise_logits(model, ids, mask, forced, compile=False)
        compiled_logits = stepwise_logits(model, ids, mask, forced, compile=True)
    finally:
        torch._dynamo.reset()
    rounding = (eager - stepwise_logits(reference, ids, mask, forced, compile=False)).abs().max()
    assert 0 < rounding and (eager - compiled_logits).abs().max() <= 2 * rounding


def test_int4_on_bfloat16_weights_matches_generate(tiny_llama, padded_batch):
    model = quantize_model(copy.deepcopy(tiny_llama).to(torch.bfloat16), "int4_weight_only", 32)
    assert {layer.weight.block_size[1] for _, layer in weight_layers(model)[0]} == {32}
    ids, mask = padded_batch
    ours = decoding.generate(model, ids, mask, max_new_tokens=10, do_sample=False, eos_token_id=[], cache="static")
    theirs = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None,
                            pad_token_id=0)
    assert torch.equal(ours.sequences, theirs)


@pytest.mark.parametrize("name", QUANTIZATIONS)
def test_quantized_perplexity_scores_through_the_models_own_head(name):
    """The tiled head path slices the head's rows, which a torchao weight does not offer: the model's own forward
    scores instead. One document in one window: the perplexity is exp of the model's own loss on it."""
    model, tokenizer = load_model("tiny_llama", quantization=name)
    text = "The state of the union is strong, and we will keep it so."
    ids = tokenizer(text).input_ids
    report = corpus_perplexity(model, tokenizer, [text], max_length=64, batch_size=1, progress=False)
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    inputs = torch.tensor([[prefix, *ids]])
    with torch.no_grad():
        loss = model(input_ids=inputs, labels=inputs).loss  # mean NLL of the len(ids) predicted tokens
    assert report.metrics("ppl")["ppl/token"] == pytest.approx(torch.exp(loss).item(), rel=1e-4)


# ------------------------------------------------------------------------------------------------- bad input


def test_a_model_built_from_conv1d_layers_is_refused_whole(tiny_gpt2):
    with pytest.raises(ConfigError, match=r"model.quantization='int8_weight_only' cannot quantize GPT2LMHeadModel.*"
                                          r"Conv1D"):
        quantize_model(copy.deepcopy(tiny_gpt2), "int8_weight_only")
    with pytest.raises(ConfigError, match=r"cannot quantize model.name='tiny_gpt2'.*Conv1D"):
        load_model("tiny_gpt2", quantization="int8_weight_only")  # refused before loading: its type is known


def test_a_group_size_that_does_not_divide_a_layer_names_the_layer_and_one_that_fits(tiny_llama):
    with pytest.raises(ConfigError, match=r"quantization_group_size=128 does not divide the 64 inputs of "
                                          r"model.layers.0.self_attn.q_proj.*use 32"):
        quantize_model(copy.deepcopy(tiny_llama), "int4_weight_only", 128)
    assert int4_group_size(weight_layers(tiny_llama)[0], (32, 64, 128)) == 32
    assert int4_group_size(weight_layers(tiny_llama)[0], (48, 64, 128)) == 64


def test_int4_on_cpu_refuses_an_output_width_its_packing_cannot_take():
    model = build_tiny_model("tiny_llama", vocab_size=1000, seed=0)  # the head's 1000 outputs: not a multiple of 16
    with pytest.raises(ConfigError, match=r"outputs in multiples of 16.*lm_head has 1000.*int8_weight_only"):
        quantize_model(model, "int4_weight_only")
    assert type(model.lm_head.weight.data) is torch.Tensor  # refused before torchao touched anything


@pytest.mark.parametrize("settings, pattern", [
    (dict(quantization="int3"), r"model.quantization='int3' is not allowed: use one of int8_weight_only, "
                                r"int4_weight_only, or null"),
    (dict(quantization="int8_weight_only", group_size=64), r"quantization_group_size=64 is not allowed with "
                                                            r"model.quantization=int8_weight_only"),
    (dict(quantization="int4_weight_only", group_size=48), r"quantization_group_size=48.*use one of \(32, 64, 128\)"),
    (dict(quantization="int4_weight_only", group_size=True), r"quantization_group_size=true is not allowed"),
    (dict(quantization=None, group_size=64), r"quantization_group_size=64 is used only with"),
    (dict(quantization="int8_weight_only", split=True), r"not supported with a model split by model.device_map"),
    (dict(quantization="int4_weight_only", device="meta"), r"int4_weight_only has no kernel on meta.*int4 runs on"),
    (dict(quantization="int4_weight_only", device="cuda", dtype="float32"), r"on cuda needs model.dtype=bfloat16"),
])
def test_bad_settings_are_refused_before_loading(settings, pattern):
    settings = {"device": "cpu", "dtype": "float32", **settings}
    with pytest.raises(ConfigError, match=pattern):
        check_quantization(settings.pop("quantization"), settings.pop("group_size", None), **settings)


def test_the_model_type_is_known_without_loading(tmp_path):
    assert known_model_type("tiny_gpt2") == "gpt2" and known_model_type("smollm2") == "llama"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert known_model_type(str(tmp_path)) == "gpt2"
    assert known_model_type("some-org/some-model") is None


@pytest.mark.slow
@pytest.mark.parametrize("name", QUANTIZATIONS)
def test_smollm2_quantized_greedy_equals_generate(name):
    model, tokenizer = load_model("smollm2", dtype="bfloat16", quantization=name)
    batch = tokenizer(["Mr. Speaker, Mr. Vice President, Members of Congress:", "Our economy"], return_tensors="pt",
                      padding=True)
    kwargs = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False)
    ours = decoding.generate(model, batch.input_ids, batch.attention_mask, cache="static", **kwargs)
    theirs = model.generate(batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
    assert torch.equal(ours.sequences, theirs)


def test_the_runner_generates_and_scores_with_a_quantized_model_and_records_it(tmp_path):
    """model.quantization through the runner: perplexity and generation run, config.yaml records the setting,
    and the fingerprint differs from the unquantized run's (a rerun never reuses float results)."""
    out = tmp_path / "int8"
    cfg = compose_config([*TINY_RUN, "decoding=greedy", "logger=none", "model.quantization=int8_weight_only"], out)
    metrics = run(cfg)
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["model"]["quantization"] == "int8_weight_only"
    assert metrics["ppl/token"] > 1 and metrics["speed/decode_tok_s"] > 0
    plain = yaml.safe_load(yaml.safe_dump(recorded))
    plain["model"]["quantization"] = None
    assert config_fingerprint(recorded) != config_fingerprint(plain)
