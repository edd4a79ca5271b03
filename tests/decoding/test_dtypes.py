"""bfloat16 / float16 weights: generation runs, logits reach the processors as float32, greedy and sampling match
`model.generate` in the same dtype, and a float16 overflow stops with our FloatingPointError.

In bfloat16 transformers' own static cache (`cache_implementation="static"`: a masked attention over the whole
preallocated buffer) gives different greedy tokens from its default dynamic cache on the tiny models, because
the longer masked reduction rounds differently. Our static cache attends only the filled slots, so our dynamic and
static settings match generate's default cache bit for bit, and cache="none" matches generate's use_cache=False
(both recompute the whole sequence); those are the references these tests use.
"""

import copy

import pytest
import torch

import decoding
from experiments.models import build_tiny_model

LOW_PRECISION = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2"])
def kind(request):
    return request.param


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_low_precision_greedy_and_sampling_match_generate(kind, padded_batch, dtype, cache):
    model = build_tiny_model(kind, dtype={torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype])
    assert model.dtype == dtype
    ids, mask = padded_batch
    # cache="none" recomputes the whole sequence every step, as generate's use_cache=False does: the same matrix
    # shapes. Against generate's cached steps (one-row products) the low-precision kernels of some CPUs round
    # differently (bfloat16 on an AVX2-only machine, where torch emulates its products).
    same_shapes = dict(use_cache=cache != "none")
    greedy = decoding.generate(model, ids, mask, max_new_tokens=15, cache=cache)
    assert torch.equal(greedy.sequences, model.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False,
                                                        **same_shapes))
    assert greedy.token_logprobs_raw.dtype == torch.float32 and torch.isfinite(greedy.token_logprobs_raw).all()
    kwargs = dict(do_sample=True, top_p=0.9, temperature=0.8, max_new_tokens=15)
    torch.manual_seed(1)
    reference = model.generate(ids, attention_mask=mask, **kwargs, **same_shapes)
    torch.manual_seed(1)
    assert torch.equal(decoding.generate(model, ids, mask, cache=cache, **kwargs).sequences, reference)


def test_float16_overflow_is_a_floating_point_error():
    model = build_tiny_model("tiny_llama")
    with torch.no_grad():  # activations of about 1e6: fine in float32, past float16's 65504
        model.model.layers[0].mlp.up_proj.weight.mul_(3000)
        model.model.layers[0].mlp.gate_proj.weight.mul_(3000)
    prompt = torch.tensor([[5, 6, 7]])
    assert decoding.generate(model, prompt, max_new_tokens=3).sequences.shape == (1, 6)
    half = copy.deepcopy(model).to(torch.float16)
    with pytest.raises(FloatingPointError, match="NaN logits at generation step 0.*float16 overflow"):
        decoding.generate(half, prompt, max_new_tokens=3)


@pytest.mark.slow
def test_smollm2_bfloat16_greedy_matches_generate():
    from experiments.models import load_model

    model, tokenizer = load_model("smollm2", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    batch = tokenizer(["Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:", "Our economy"],
                      return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=32, do_sample=False)
    reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
    for cache in ("dynamic", "static"):
        ours = decoding.generate(model, batch.input_ids, batch.attention_mask, cache=cache, **kwargs)
        assert torch.equal(ours.sequences, reference), cache
