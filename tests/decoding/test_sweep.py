"""Batched sweeps (`decoding.generate_sweep`): per-row sampling parameters and one shared prefill.

What must hold: every configuration's rows equal that configuration run alone, token for token, with the
same seed (and equal `model.generate` with `torch.manual_seed`); a copied prefix cache equals a fresh
prefill; per-row processors equal the scalar ones row by row, bit for bit; bad input is a named error.
"""

import pytest
import torch

import decoding
from decoding.cache import KVCache
from decoding.loop import Forward, copy_prefix, init_state
from decoding.processors import MinP, Temperature, TopK, TopP
from decoding.processors.rows import RowMinP, RowTemperature, RowTopK, RowTopP
from decoding.sweep import generate_sweep

SHARED = dict(max_new_tokens=10, eos_token_id=[5], pad_token_id=0)
CONFIGS = [
    dict(do_sample=True, top_k=0, top_p=0.5),
    dict(do_sample=True, top_k=0, top_p=0.9),
    dict(do_sample=True, temperature=0.7, top_k=20),
    dict(do_sample=True, top_k=0, min_p=0.05, temperature=1.3),
    dict(do_sample=False),
    dict(do_sample=True),  # generate's defaults: top_k=50
]
SEEDS = [11, 12, 13, 14, 15, 16]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_each_configuration_equals_its_run_alone(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    results = generate_sweep(tiny_model, ids, mask, configs=CONFIGS, generators=[seeded(s) for s in SEEDS],
                             cache=cache, **SHARED)
    assert len(results) == len(CONFIGS)
    for config, seed, result in zip(CONFIGS, SEEDS, results):
        alone = decoding.generate(tiny_model, ids, mask, generator=seeded(seed), cache=cache, **SHARED, **config)
        assert torch.equal(result.sequences, alone.sequences), config
        assert torch.equal(result.new_token_mask, alone.new_token_mask)
        assert result.finish_reasons == alone.finish_reasons
        torch.testing.assert_close(result.token_logprobs, alone.token_logprobs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.token_logprobs_raw, alone.token_logprobs_raw, rtol=1e-5, atol=1e-5)


def test_each_configuration_equals_model_generate(tiny_model, padded_batch):
    ids, mask = padded_batch
    configs = [dict(c, num_return_sequences=2) for c in CONFIGS if c["do_sample"]]
    seeds = SEEDS[: len(configs)]
    results = generate_sweep(tiny_model, ids, mask, configs=configs, generators=[seeded(s) for s in seeds], **SHARED)
    for config, seed, result in zip(configs, seeds, results):
        torch.manual_seed(seed)  # generate draws from the global RNG; a Generator seeded alike gives the same stream
        reference = tiny_model.generate(ids, attention_mask=mask, **SHARED, **config)
        assert torch.equal(result.sequences, reference), config


def test_rows_with_their_own_generators_equal_each_row_alone(tiny_llama):
    prompts = torch.tensor([[7, 8, 9, 10], [20, 21, 22, 23], [30, 31, 32, 33]])  # unpadded: a row alone is a batch
    configs = [dict(do_sample=True, top_k=0, top_p=0.8), dict(do_sample=True, temperature=0.5)]
    row_seeds = [[1, 2, 3], [4, 5, 6]]
    results = generate_sweep(tiny_llama, prompts, torch.ones_like(prompts), configs=configs,
                             generators=[[seeded(s) for s in seeds] for seeds in row_seeds], **SHARED)
    for config, seeds, result in zip(configs, row_seeds, results):
        for row, seed in enumerate(seeds):
            alone = decoding.generate(tiny_llama, prompts[row:row + 1], generator=seeded(seed), **SHARED, **config)
            width = alone.sequences.shape[1]
            assert torch.equal(result.sequences[row, :width], alone.sequences[0])
            assert (result.sequences[row, width:] == SHARED["pad_token_id"]).all()  # only pad after it ended


def test_a_configuration_ends_where_its_own_rows_end(tiny_llama):
    prompt = torch.tensor([[7, 8, 9, 10]])
    greedy = decoding.generate(tiny_llama, prompt, max_new_tokens=6).new_token_ids[0].tolist()
    eos = greedy[2]  # greedy stops at its third token, sampling goes on
    shared = dict(max_new_tokens=6, eos_token_id=[eos], pad_token_id=0)
    configs = [dict(do_sample=False), dict(do_sample=True, top_k=0, temperature=2.0)]
    results = generate_sweep(tiny_llama, prompt, configs=configs, generators=[None, seeded(3)], **shared)
    alone = decoding.generate(tiny_llama, prompt, **shared, **configs[0])
    assert torch.equal(results[0].sequences, alone.sequences)
    assert results[0].steps == alone.steps == greedy.index(eos)
    assert results[0].extras["sweep"]["configurations"] == 2


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_copied_prefix_cache_equals_a_fresh_prefill(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    with torch.inference_mode():
        state = init_state(ids, mask, 2, pad_token_id=0)
        kv = KVCache(cache, tiny_model, ids.shape[1] + 2)
        logits = Forward(tiny_model, kv)(state, 0, state.length)
        copied_state, copied_logits = copy_prefix(state, kv, logits, rows)

        fresh_state = init_state(ids[rows], mask[rows], 2, pad_token_id=0)
        fresh_kv = KVCache(cache, tiny_model, ids.shape[1] + 2)
        fresh_logits = Forward(tiny_model, fresh_kv)(fresh_state, 0, fresh_state.length)
    assert torch.equal(copied_state.tokens, fresh_state.tokens)
    assert torch.equal(copied_state.position_ids, fresh_state.position_ids)
    assert torch.equal(copied_state.attention_mask, fresh_state.attention_mask)
    torch.testing.assert_close(copied_logits, fresh_logits, rtol=0, atol=1e-5)
    for copied, fresh in zip(kv.model_cache.layers, fresh_kv.model_cache.layers):
        torch.testing.assert_close(copied.keys[:, :, : ids.shape[1]], fresh.keys[:, :, : ids.shape[1]], rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(copied.values[:, :, : ids.shape[1]], fresh.values[:, :, : ids.shape[1]],
                                   rtol=0, atol=1e-5)


def test_num_return_sequences_prefills_each_prompt_once(tiny_llama, padded_batch):
    ids, mask = padded_batch
    calls = []
    hook = tiny_llama.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                                with_kwargs=True)
    try:
        decoding.generate(tiny_llama, ids, mask, do_sample=True, num_return_sequences=4, max_new_tokens=3,
                          generator=seeded(0))
    finally:
        hook.remove()
    assert calls[0] == (3, 5)  # the prefill: each prompt once
    assert calls[1] == (12, 1)  # then 3 prompts x 4 samples decode


def per_row_scores(rows=6, vocab=300, seed=0):
    generator = seeded(seed)
    scores = torch.randn(rows, vocab, generator=generator) * 4
    scores[0, :50] = float("-inf")  # already filtered tokens stay filtered
    scores[1, 10:20] = scores[1, 9]  # ties
    return scores


@pytest.mark.parametrize("kind", ["temperature", "top_k", "top_p", "min_p"])
def test_row_processors_equal_scalar_processors_bit_for_bit(kind):
    values = {"temperature": [0.3, 0.7, 1.0, 1.5, 2.0 / 3, 0.9], "top_k": [1, 5, 0, 50, 299, 1000],
              "top_p": [0.1, 0.5, 0.9, 0.95, 1.0, 0.999], "min_p": [0.0, 0.01, 0.1, 0.5, 1.0, 0.2]}[kind]
    scores = per_row_scores()
    if kind == "temperature":
        row = RowTemperature(torch.tensor(values)[:, None])
        scalar = [Temperature(v) for v in values]
    elif kind == "top_k":
        row = RowTopK(torch.tensor(values))
        scalar = [TopK(v) if v else None for v in values]
    elif kind == "top_p":
        row = RowTopP(torch.tensor([1 - v if v < 1 else -1.0 for v in values])[:, None], 1)
        scalar = [TopP(v) if v < 1 else None for v in values]
    else:
        row = RowMinP(torch.tensor(values)[:, None], 1)
        scalar = [MinP(v) for v in values]
    out = row(None, scores)
    for r, processor in enumerate(scalar):
        expected = scores[r:r + 1] if processor is None else processor(None, scores[r:r + 1])
        assert torch.equal(out[r:r + 1], expected), (kind, values[r])


def test_only_sampling_parameters_may_differ(tiny_llama, padded_batch):
    ids, mask = padded_batch
    configs = [dict(do_sample=True, max_new_tokens=4), dict(do_sample=True, max_new_tokens=5)]
    with pytest.raises(ValueError, match=r"configs\[1\] has max_new_tokens=5 but configs\[0\] has max_new_tokens=4"):
        generate_sweep(tiny_llama, ids, mask, configs=configs, generators=[seeded(0), seeded(1)])
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate_sweep(tiny_llama, ids, mask, configs=[dict(repetition_penalty=1.2), dict(do_sample=True)],
                       generators=[None, seeded(1)], max_new_tokens=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(configs=[]), r"configs=\[\] is not allowed"),
    (dict(configs=[dict(do_sample=True), dict(do_sample=True)], generators=[seeded(0), None]),
     r"generators\[1\] is None but that configuration samples"),
    (dict(configs=[dict(do_sample=True)], generators=[seeded(0), seeded(1)]), "generators has 2 entries for 1"),
    (dict(configs=[dict(do_sample=True)], generators=[[seeded(0)]]), r"generators\[0\] holds 1 generators"),
    (dict(configs=[dict(do_sample=True, top_p=1.5)], generators=[seeded(0)]), r"configs\[0\]: top_p=1.5"),
    (dict(configs=[dict(num_beams=2)]), "num_beams=2"),
])
def test_bad_input_names_the_parameter(tiny_llama, padded_batch, kwargs, message):
    ids, mask = padded_batch
    with pytest.raises(ValueError, match=message):
        generate_sweep(tiny_llama, ids, mask, max_new_tokens=3, **kwargs)


def test_sweep_runs_the_compiled_step_and_keeps_the_tokens(tiny_llama, padded_batch, monkeypatch):
    from decoding import compiled

    monkeypatch.setattr(compiled, "BACKEND", "eager")  # dynamo traces the fixed-shape step; no codegen in a unit test
    torch._dynamo.reset()
    ids, mask = padded_batch
    configs, seeds = CONFIGS[:3], SEEDS[:3]
    calls = []
    step = compiled.CompiledDecodeStep.__call__
    monkeypatch.setattr(compiled.CompiledDecodeStep, "__call__", lambda self, *a: calls.append(1) or step(self, *a))
    results = generate_sweep(tiny_llama, ids, mask, configs=configs, generators=[seeded(s) for s in seeds],
                             cache="static", compile=True, **SHARED)
    assert calls  # decode steps went through the compiled step
    for config, seed, result in zip(configs, seeds, results):
        alone = decoding.generate(tiny_llama, ids, mask, generator=seeded(seed), cache="static", **SHARED, **config)
        assert torch.equal(result.sequences, alone.sequences), config
    torch._dynamo.reset()
