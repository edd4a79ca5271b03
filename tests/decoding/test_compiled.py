"""The compiled decode step (`compile=True`, decoding/compiled.py): fixed shapes, no per-step recompiles, the
eager static path's tokens (greedy, sampling and beam search), and an honest bound on how far compiled float bits
move the logits.

Two kinds of check. With `BACKEND = "eager"` dynamo traces the fixed-shape step but runs it without code
generation: fast, and it checks the logic (slot tensor, full-buffer mask, fixed-shape cache mode). With the real
inductor backend (a compile of 10-40 s per tiny model on a 2-core CPU) the tests count graphs and recompiles
and measure the logit difference that compiled kernels make.

Measured here (tiny models, 3 left-padded rows, 16 teacher-forced steps, max |logit difference| against the
eager static path): float32 below 1e-5 with every argmax equal; bfloat16 0.14 (Llama) and 0.13 (GPT-2) on logits
of about 7, where bfloat16 itself is 0.15 / 0.09 away from float32; float16 0.02 / 0.01. So in float32 greedy
tokens are tested identical; in bfloat16 / float16 the step's logits are tested against a tolerance of twice
the eager path's own distance from float32, and free-running tokens may part after a near tie.
"""

import copy

import pytest
import torch
from torch._dynamo.utils import counters, guard_failures

import decoding
import decoding.compiled as compiled
from decoding.cache import COMPILED_CACHE_BUCKET, KVCache
from decoding.loop import Forward, init_state


@pytest.fixture()
def eager_backend(monkeypatch):
    """Trace the step with dynamo but run it without inductor's code generation (fast)."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture()
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    guard_failures.clear()
    yield
    torch._dynamo.reset()


def stepwise_logits(model, ids, mask, forced, compile):
    """(B, N, V) logits of each step when the tokens `forced` (B, N) are fed, as the loop feeds them."""
    n = forced.shape[1]
    state = init_state(ids, mask, n, pad_token_id=0)
    kv = KVCache("static", model, ids.shape[1] + n, compile=compile)
    forward = Forward(model, kv)
    out, start = [], 0
    with torch.inference_mode():
        for i in range(n):
            out.append(forward(state, start, state.length))
            slot = state.length
            state.tokens[:, slot] = forced[:, i]
            state.position_ids[:, slot] = state.position_ids[:, slot - 1] + 1
            state.length += 1
            start = slot
    return torch.stack(out, 1)


def graphs_and_recompiles() -> tuple[int, int]:
    """(graphs compiled, recompiles: guard failures that made dynamo compile again)."""
    return counters["stats"]["unique_graphs"], sum(len(reasons) for reasons in guard_failures.values())


# ---------------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(compile=True), r"compile=True is not allowed with cache='dynamic'.*use cache='static', or compile=False"),
    (dict(compile=True, cache="none"), r"compile=True is not allowed with cache='none'"),
    (dict(compile="yes", cache="static"), r"compile='yes' is not allowed: use false, true, or 'max-autotune'"),
    (dict(compile=1, cache="static"), r"compile=1 is not allowed"),
    (dict(compile="max-autotune"), r"compile='max-autotune' is not allowed with cache='dynamic'"),
])
def test_bad_compile_settings_are_named(tiny_llama, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), **kwargs)


def test_compile_is_off_by_default(tiny_llama):
    assert decoding.resolve_params(tiny_llama, 3, cache="static").compile is False
    assert decoding.resolve_params(tiny_llama, 3, cache="static", compile=True).compile is True
    assert decoding.resolve_params(tiny_llama, 3, cache="static", compile="max-autotune").compile == "max-autotune"


def test_inductor_options_per_device_and_autotune(monkeypatch):
    """CPU: default mode (max-autotune: with weight freezing, tuned GEMMs and the C++ wrapper); CUDA: a mode
    (CUDA graphs), as torch.compile takes a mode or options, not both. The eager test backend gets neither."""
    made = []
    monkeypatch.setattr(compiled, "_compiled", {})
    monkeypatch.setattr(compiled.torch, "compile", lambda fn, **kw: made.append(kw) or fn)
    for device, autotune in (("cpu", False), ("cpu", True), ("cuda", False), ("cuda", True)):
        compiled.compiled_decode_step(device, autotune)
    assert [(kw["mode"], kw["options"]) for kw in made] == [
        (None, None), (None, {"freezing": True, "max_autotune": True, "cpp_wrapper": True}),
        ("reduce-overhead", None), ("max-autotune", None)]
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    compiled.compiled_decode_step("cpu")
    assert (made[-1]["backend"], made[-1]["mode"], made[-1]["options"]) == ("eager", None, None)


def test_compiled_cache_length_is_bucketed(tiny_llama):
    assert KVCache("static", tiny_llama, 70, compile=True).max_cache_len == 2 * COMPILED_CACHE_BUCKET
    assert KVCache("static", tiny_llama, 70).max_cache_len == 70
    with pytest.raises(ValueError, match="compile=True needs cache='static'"):
        KVCache("dynamic", tiny_llama, 70, compile=True)


def test_unsupported_attention_is_a_clear_error(tiny_llama, monkeypatch):
    monkeypatch.setattr(tiny_llama.config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(ValueError, match="compile=True is not supported with attn_implementation='flash_attention_2'"):
        Forward(tiny_llama, KVCache("static", tiny_llama, 8, compile=True))


# ------------------------------------------------------------------------------ fixed-shape logic (fast)


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_p=0.9, temperature=0.8)])
def test_fixed_shape_step_gives_the_eager_static_tokens(tiny_model, padded_batch, eager_backend, kwargs):
    ids, mask = padded_batch
    torch.manual_seed(3)
    eager = decoding.generate(tiny_model, ids, mask, max_new_tokens=15, cache="static", **kwargs)
    torch.manual_seed(3)
    fixed = decoding.generate(tiny_model, ids, mask, max_new_tokens=15, cache="static", compile=True, **kwargs)
    assert torch.equal(eager.sequences, fixed.sequences)
    assert torch.allclose(eager.token_logprobs_raw, fixed.token_logprobs_raw, atol=1e-4)
    assert eager.finish_reasons == fixed.finish_reasons


def test_fixed_shape_step_with_eager_attention(tiny_model, padded_batch, eager_backend, monkeypatch):
    """Eager attention adds its mask to the scores: the step hands it 0 / dtype-min floats, not bools."""
    monkeypatch.setattr(tiny_model.config, "_attn_implementation", "eager")
    ids, mask = padded_batch
    eager = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, cache="static", eos_token_id=[])
    fixed = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, cache="static", compile=True, eos_token_id=[])
    assert torch.equal(eager.sequences, fixed.sequences)
    assert torch.allclose(eager.token_logprobs_raw, fixed.token_logprobs_raw, atol=1e-4)


def test_fixed_shape_step_writes_in_place_at_the_slot_tensor(tiny_llama, eager_backend):
    ids = torch.tensor([[0, 5, 6, 7], [9, 10, 11, 12]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    state = init_state(ids, mask, 3, pad_token_id=0)
    kv = KVCache("static", tiny_llama, 7, compile=True)
    forward = Forward(tiny_llama, kv)
    with torch.inference_mode():
        forward(state, 0, 4)  # eager prefill, filled-slots mode
        layer = kv.model_cache.layers[0]
        pointer = layer.keys.data_ptr()
        assert layer.keys.shape[2] == COMPILED_CACHE_BUCKET and layer.write_index is None
        state.tokens[:, 4] = 3
        state.position_ids[:, 4] = state.position_ids[:, 3] + 1
        state.length = 5
        logits = forward(state, 4, 5)  # the compiled step writes slot 4
    assert logits.shape == (2, tiny_llama.config.vocab_size) and logits.dtype == torch.float32
    assert layer.write_index is not None and int(layer.write_index) == 4
    assert layer.keys.data_ptr() == pointer and layer.filled == 5
    assert layer.keys[:, :, 4].abs().sum() > 0 and layer.keys[:, :, 5:].abs().sum() == 0


def test_single_token_prompt_and_stop_at_eos(tiny_llama, eager_backend):
    """A one-token prompt (the prefill is already q = 1) and rows that finish early."""
    ids = torch.tensor([[7]])
    free = decoding.generate(tiny_llama, ids, max_new_tokens=8, cache="static", eos_token_id=[])
    eos = int(free.new_token_ids[0, 3])
    eager = decoding.generate(tiny_llama, ids, max_new_tokens=8, cache="static", eos_token_id=eos)
    fixed = decoding.generate(tiny_llama, ids, max_new_tokens=8, cache="static", compile=True, eos_token_id=eos)
    assert torch.equal(eager.sequences, fixed.sequences) and fixed.finish_reasons == ["eos"]


def test_num_return_sequences_with_compile(tiny_llama, padded_batch, eager_backend):
    ids, mask = padded_batch
    kwargs = dict(do_sample=True, num_return_sequences=3, max_new_tokens=6)
    torch.manual_seed(0)
    eager = decoding.generate(tiny_llama, ids, mask, cache="static", **kwargs)
    torch.manual_seed(0)
    fixed = decoding.generate(tiny_llama, ids, mask, cache="static", compile=True, **kwargs)
    assert torch.equal(eager.sequences, fixed.sequences)


@pytest.mark.parametrize("kwargs", [dict(do_sample=False, repetition_penalty=1.3),
                                    dict(do_sample=True, top_k=20, temperature=0.8)])
def test_compiled_scores_and_logits_equal_the_eager_static_ones(tiny_model, padded_batch, eager_backend, kwargs):
    """output_scores / output_logits with compile=True: the eager static path's, step for step (the prefill
    step bit for bit, the fixed-shape steps within float32 rounding), with the same banned (-inf) entries."""
    ids, mask = padded_batch
    outputs = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, max_new_tokens=8,
                   eos_token_id=[], cache="static", **kwargs)
    torch.manual_seed(5)
    eager = decoding.generate(tiny_model, ids, mask, **outputs)
    torch.manual_seed(5)
    fixed = decoding.generate(tiny_model, ids, mask, compile=True, **outputs)
    assert torch.equal(eager.sequences, fixed.sequences)
    for name in ("scores", "logits"):
        ours, theirs = getattr(fixed, name), getattr(eager, name)
        assert len(ours) == len(theirs) == 8
        assert torch.equal(ours[0], theirs[0]), name  # the prefill stays eager
        for step, (a, b) in enumerate(zip(ours, theirs)):
            assert torch.equal(torch.isinf(a), torch.isinf(b)), (name, step)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"{name} step {step}")


BEAM_SETTINGS = [dict(num_beams=4, num_return_sequences=2), dict(num_beams=3, do_sample=True, top_k=20),
                 dict(num_beams=4, beam_prefill="shared", length_penalty=0.5, num_return_sequences=4),
                 dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2)]
BEAM_IDS = ["beam", "beam-sample", "shared-prefill", "diverse"]


@pytest.mark.parametrize("kwargs", BEAM_SETTINGS, ids=BEAM_IDS)
def test_fixed_shape_beam_search_gives_the_eager_static_tokens(tiny_model, padded_batch, eager_backend, monkeypatch,
                                                              kwargs):
    """Beam search runs its single-token steps through the fixed-shape step; the cache reorder between steps keeps
    the buffers the step writes in place (decoding/cache.py), so the tokens are the eager static path's."""
    ids, mask = padded_batch
    steps = []
    original = compiled.CompiledDecodeStep.__call__
    monkeypatch.setattr(compiled.CompiledDecodeStep, "__call__",
                        lambda self, state, start: steps.append(start) or original(self, state, start))
    torch.manual_seed(3)
    eager = decoding.generate(tiny_model, ids, mask, max_new_tokens=12, cache="static", eos_token_id=[], **kwargs)
    assert steps == []
    torch.manual_seed(3)
    fixed = decoding.generate(tiny_model, ids, mask, max_new_tokens=12, cache="static", compile=True, eos_token_id=[],
                              **kwargs)
    assert steps == list(range(5, 5 + 11))  # every step after the eager prefill
    assert torch.equal(eager.sequences, fixed.sequences)
    assert torch.allclose(eager.sequences_scores, fixed.sequences_scores, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------- inductor (real compile)


def test_inductor_decode_does_not_recompile_per_step(tiny_model, padded_batch, fresh_dynamo):
    ids, mask = padded_batch
    kwargs = dict(max_new_tokens=12, eos_token_id=[])
    eager = decoding.generate(tiny_model, ids, mask, cache="static", **kwargs)
    out = decoding.generate(tiny_model, ids, mask, cache="static", compile=True, **kwargs)
    assert torch.equal(out.sequences, eager.sequences)
    assert graphs_and_recompiles() == (1, 0)  # 11 single-token steps, one graph
    # Another call with a shorter prompt (same batch size, same cache bucket): the same graph, no recompile.
    again = decoding.generate(tiny_model, ids[:, 2:], mask[:, 2:], cache="static", compile=True, max_new_tokens=20,
                              eos_token_id=[])
    assert torch.equal(again.sequences,
                       decoding.generate(tiny_model, ids[:, 2:], mask[:, 2:], cache="static", max_new_tokens=20,
                                         eos_token_id=[]).sequences)
    assert graphs_and_recompiles() == (1, 0)


def test_inductor_beam_search_does_not_recompile_per_step(tiny_model, padded_batch, fresh_dynamo):
    """Greedy beams through the compiled step: the eager static beams' tokens, one graph for the whole call, and
    the same graph for the shared prefill (its steps run the same B * num_beams rows)."""
    ids, mask = padded_batch
    kwargs = dict(num_beams=4, num_return_sequences=2, max_new_tokens=12, eos_token_id=[], cache="static")
    for prefill in ("per_beam", "shared"):
        eager = decoding.generate(tiny_model, ids, mask, beam_prefill=prefill, **kwargs)
        out = decoding.generate(tiny_model, ids, mask, beam_prefill=prefill, compile=True, **kwargs)
        assert torch.equal(out.sequences, eager.sequences), prefill
        assert torch.allclose(out.sequences_scores, eager.sequences_scores, atol=1e-4, rtol=0)
        assert graphs_and_recompiles() == (1, 0), prefill


def test_inductor_logits_float32(tiny_model, padded_batch, fresh_dynamo):
    ids, mask = padded_batch
    forced = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, cache="static", eos_token_id=[]).new_token_ids
    eager = stepwise_logits(tiny_model, ids, mask, forced, compile=False)
    compiled_logits = stepwise_logits(tiny_model, ids, mask, forced, compile=True)
    assert torch.equal(eager[:, 0], compiled_logits[:, 0])  # the prefill stays eager
    assert (eager - compiled_logits).abs().max() < 1e-4
    assert torch.equal(eager.argmax(-1), compiled_logits.argmax(-1))


def test_frozen_graphs_are_dropped_for_a_changed_model_and_past_the_model_limit(tiny_llama, monkeypatch):
    """The bookkeeping behind max-autotune's frozen weights: an in-place change, or one model more than
    MAX_FROZEN_MODELS, drops every graph (dynamo would fail hard past its recompile limit under fullgraph)."""
    resets = []
    monkeypatch.setattr(compiled.torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(compiled, "_frozen_versions", compiled.weakref.WeakKeyDictionary())
    monkeypatch.setattr(compiled, "_frozen_models_since_reset", 0)
    models = [copy.deepcopy(tiny_llama) for _ in range(compiled.MAX_FROZEN_MODELS + 1)]
    for model in models[:-1] + models[:1]:  # each new model once, then the first again: nothing dropped
        compiled.forget_stale_frozen_graphs(model)
    assert not resets
    with torch.no_grad():
        models[0].lm_head.weight.add_(1.0)
    compiled.forget_stale_frozen_graphs(models[0])
    assert len(resets) == 1
    for model in models[1:]:  # the first again counts 1; then MAX_FROZEN_MODELS - 1 more fit, the last does not
        compiled.forget_stale_frozen_graphs(model)
    assert len(resets) == 2 and compiled._frozen_models_since_reset == 1


def test_compile_true_freezes_nothing_and_max_autotune_on_cpu_does():
    assert not compiled.freezes("cpu", autotune=False)
    assert compiled.freezes("cpu", autotune=True) and not compiled.freezes("cuda", autotune=True)


@pytest.mark.slow
def test_inductor_frozen_weights_are_each_models_own(tiny_llama, padded_batch, fresh_dynamo):
    """Weight freezing (compile="max-autotune" on CPU) must not bake one model's weights into the graph another
    model of the same shape runs: a second tiny Llama with other weights, then the first again after its
    weights changed in place, each give their own eager static logits."""
    ids, mask = padded_batch
    first, other = copy.deepcopy(tiny_llama), copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(-1.5)
    forced = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, cache="static", eos_token_id=[]).new_token_ids
    gaps, eagers = [], []
    for model in (first, other, first):
        if gaps and model is first:
            with torch.no_grad():
                first.model.layers[0].mlp.down_proj.weight.mul_(3.0)
        eagers.append(stepwise_logits(model, ids, mask, forced, compile=False))
        tuned = stepwise_logits(model, ids, mask, forced, compile="max-autotune")
        gaps.append((eagers[-1] - tuned).abs().max().item())
    assert max(gaps) < 1e-4, gaps  # the README's float32 tolerance for the compiled step
    # and the check can fail: a graph that kept the first weights would be this far off
    assert min((eagers[0] - e).abs().max().item() for e in eagers[1:]) > 0.1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_inductor_logits_low_precision(tiny_model, padded_batch, fresh_dynamo, dtype):
    """Compiled kernels round differently: the logits stay within twice eager's own distance from float32."""
    ids, mask = padded_batch
    model = copy.deepcopy(tiny_model).to(dtype)
    forced = decoding.generate(model, ids, mask, max_new_tokens=10, cache="static", eos_token_id=[]).new_token_ids
    eager = stepwise_logits(model, ids, mask, forced, compile=False)
    compiled_logits = stepwise_logits(model, ids, mask, forced, compile=True)
    reference = stepwise_logits(tiny_model, ids, mask, forced, compile=False)
    rounding = (eager - reference).abs().max()
    assert torch.equal(eager[:, 0], compiled_logits[:, 0])
    assert (eager - compiled_logits).abs().max() <= 2 * rounding


# ------------------------------------------------------------------------------------------ SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_compiled_greedy_equals_eager_static(smollm2, fresh_dynamo):
    model, tokenizer = smollm2
    batch = tokenizer(["Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:", "Our economy",
                       "Tonight"], return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False)
    eager = decoding.generate(model, batch.input_ids, batch.attention_mask, cache="static", **kwargs)
    out = decoding.generate(model, batch.input_ids, batch.attention_mask, cache="static", compile=True, **kwargs)
    assert torch.equal(out.sequences, eager.sequences)
    assert torch.allclose(out.token_logprobs_raw, eager.token_logprobs_raw, atol=1e-4)
    assert graphs_and_recompiles() == (1, 0)


@pytest.mark.parametrize("compile", [False, True])
def test_nan_logits_of_a_decode_step_raise(tiny_llama, eager_backend, compile):
    """NaN logits in a single-token step: eager the loop finds them, compiled the step's in-graph flag does."""
    prompt = torch.tensor([[5, 6, 7]])
    first = decoding.generate(tiny_llama, prompt, max_new_tokens=1, eos_token_id=[]).sequences[0, -1].item()
    assert first not in prompt  # the embedding of the first new token turns NaN: step 1's logits, not the prefill's
    hook = tiny_llama.get_input_embeddings().register_forward_hook(
        lambda module, args, out: torch.where((args[0] == first)[..., None], float("nan"), out))
    try:
        with pytest.raises(FloatingPointError, match="NaN logits at generation step 1 for rows \\[0\\]"):
            decoding.generate(tiny_llama, prompt, max_new_tokens=4, cache="static", compile=compile, eos_token_id=[])
    finally:
        hook.remove()
