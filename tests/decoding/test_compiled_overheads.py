"""Two overheads the compiled step avoids (decoding/compiled.py): copying the cache for grouped-query attention,
and checking every guard at every step.

Grouped-query attention: transformers repeats the keys / values to every query head under dynamo (`repeat_kv`), a copy of the whole
cache buffer per layer and step; the compiled step makes it take its single-token packed path instead. Checked
on the graph dynamo hands its backend: every SDPA call gets the packed query (B, KV heads, groups, D) and the
cache's own (B, KV heads, L, D) keys, and the step's logits equal the eager static path's (tiny Llama: 4 query
heads over 2 key / value heads).

Guards: within one generate call, a step whose buffers are those of the previous, fully checked call runs with
only the differentiating guards. Checked by counting the calls made under that stance, and by the tokens when
calls of other batch sizes and caches come in between (each must go through the full check and its own graph).
"""

import pytest
import torch

import decoding
import decoding.compiled as compiled
from decoding.cache import KVCache
from decoding.loop import Forward, init_state
from tests.decoding.test_compiled import eager_backend  # noqa: F401 (a fixture)


class RecordingBackend:
    """A torch.compile backend that keeps the query / key shapes of each SDPA call and runs the graph as is."""

    def __init__(self):
        self.sdpa_shapes = []

    def __call__(self, graph_module, example_inputs):
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and node.target is torch.nn.functional.scaled_dot_product_attention:
                query, key = (arg.meta["example_value"].shape for arg in node.args[:2])
                self.sdpa_shapes.append((tuple(query), tuple(key)))
        return graph_module.forward


@pytest.fixture()
def recording_backend(monkeypatch):
    backend = RecordingBackend()
    monkeypatch.setattr(compiled, "BACKEND", backend)
    torch._dynamo.reset()
    yield backend
    torch._dynamo.reset()


def test_sdpa_reads_the_key_value_heads_without_repeating_them(recording_backend, tiny_llama, padded_batch):
    ids, mask = padded_batch
    config = tiny_llama.config
    kv_heads, groups = config.num_key_value_heads, config.num_attention_heads // config.num_key_value_heads
    assert groups > 1  # the model must use grouped-query attention for this test to mean anything
    with torch.inference_mode():
        compiled_out = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, do_sample=False, cache="static",
                                         compile=True, output_logits=True)
        eager_out = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, do_sample=False, cache="static",
                                      output_logits=True)
    shapes = recording_backend.sdpa_shapes
    assert len(shapes) == config.num_hidden_layers  # one graph, one SDPA per layer
    head_dim = config.hidden_size // config.num_attention_heads
    for query, key in shapes:
        assert query == (ids.shape[0], kv_heads, groups, head_dim)
        assert key[:2] == (ids.shape[0], kv_heads)
    assert torch.equal(compiled_out.sequences, eager_out.sequences)
    for got, expected in zip(compiled_out.logits, eager_out.logits):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_the_switch_is_restored_after_each_step():
    from transformers.integrations import sdpa_attention

    original = sdpa_attention.is_torchdynamo_compiling
    with compiled.packed_gqa():
        assert sdpa_attention.is_torchdynamo_compiling() is False
    assert sdpa_attention.is_torchdynamo_compiling is original


class CountingStance:
    """Counts the steps run with skipped guard evaluation (wraps torch.compiler.set_stance)."""

    def __init__(self, monkeypatch):
        self.skipped = 0
        original = torch.compiler.set_stance

        def stance(*args, **kwargs):
            self.skipped += bool(kwargs.get("skip_guard_eval_unsafe"))
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.compiler, "set_stance", stance)


def test_steps_after_the_first_skip_the_guards_and_keep_the_tokens(eager_backend, tiny_llama, padded_batch,
                                                                   monkeypatch):
    ids, mask = padded_batch
    counting = CountingStance(monkeypatch)
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, cache="static")
    with torch.inference_mode():
        expected = [decoding.generate(tiny_llama, ids[:n], mask[:n], **kwargs).sequences for n in (3, 1, 2, 3)]
        got = [decoding.generate(tiny_llama, ids[:n], mask[:n], compile=True, **kwargs).sequences for n in (3, 1, 2, 3)]
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    # 8 new tokens: the prefill, then 7 compiled steps per call, the first of each checked in full
    assert counting.skipped == 4 * 6


def test_a_new_buffer_is_checked_in_full(eager_backend, tiny_llama, padded_batch):
    """Rows joining a batch (new cache tensors) or a new batch size change the key: the next call is checked."""
    ids, mask = padded_batch
    kv = KVCache("static", tiny_llama, 16, compile=True)
    forward = Forward(tiny_llama, kv)
    state = init_state(ids, mask, 8, pad_token_id=0)
    with torch.inference_mode():
        forward(state, 0, state.length)  # the eager prefill
        step = forward.compiled
        first = step.steady_key(step._buffers(3, ids.device)[0])
        layer = kv.model_cache.layers[0]
        layer.keys = layer.keys.clone()  # what select_rows / append_rows do
        assert step.steady_key(step.buffers[0]) != first
