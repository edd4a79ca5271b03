"""Cache position, position ids and attention mask kept apart; the three cache settings agree."""

import pytest
import torch

import decoding
from decoding.cache import KVCache, SlotLayer
from decoding.loop import Forward, init_state
from decoding.state import prompt_position_ids


def test_position_ids_skip_left_padding():
    # The README's table: "a b c" and "d e" left-padded to 3.
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert prompt_position_ids(mask).tolist() == [[0, 1, 2], [0, 0, 1]]


def test_decode_state_after_prefill_and_one_token(tiny_gpt2):
    ids = torch.tensor([[4, 5, 6], [0, 7, 8]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    out = decoding.generate(tiny_gpt2, ids, mask, max_new_tokens=1, eos_token_id=[])
    assert out.sequences.shape == (2, 4)
    state = init_state(ids, mask, 2, pad_token_id=0)
    assert state.length == 3 and state.padded
    assert state.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]


def test_static_cache_writes_in_place_at_the_cache_position(tiny_llama):
    ids = torch.tensor([[0, 5, 6, 7], [9, 10, 11, 12]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    state = init_state(ids, mask, 3, pad_token_id=0)
    kv = KVCache("static", tiny_llama, max_cache_len=7)
    forward = Forward(tiny_llama, kv)
    with torch.inference_mode():
        forward(state, 0, 4)  # prefill writes slots 0..3
        layer = kv.model_cache.layers[0]
        pointer, shape = layer.keys.data_ptr(), tuple(layer.keys.shape)
        assert shape[2] == 7 and kv.filled() == 0  # the slot index is the loop's, not a counter of its own
        state.tokens[:, 4] = 3
        state.position_ids[:, 4] = state.position_ids[:, 3] + 1
        state.length = 5
        forward(state, 4, 5)  # decode writes slot 4
    assert layer.keys.data_ptr() == pointer  # never reallocated
    assert kv.filled() == 4 and layer.keys[:, :, 5:].abs().sum() == 0  # nothing beyond the written slots


def test_static_cache_overflow_is_a_clear_error():
    layer = SlotLayer(max_cache_len=4)
    layer.cache_position = 3
    k = torch.zeros((1, 2, 2, 8))
    with pytest.raises(ValueError, match=r"static cache overflow: writing slots \[3, 5\) but max_cache_len=4"):
        layer.update(k, k)


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_p=0.9, temperature=0.8)])
def test_three_cache_settings_give_identical_tokens(tiny_model, padded_batch, kwargs):
    ids, mask = padded_batch
    results = {}
    for cache in ("none", "dynamic", "static"):
        torch.manual_seed(3)
        results[cache] = decoding.generate(tiny_model, ids, mask, max_new_tokens=15, cache=cache, **kwargs)
    assert torch.equal(results["none"].sequences, results["dynamic"].sequences)
    assert torch.equal(results["dynamic"].sequences, results["static"].sequences)
    assert torch.allclose(results["none"].token_logprobs_raw, results["static"].token_logprobs_raw, atol=1e-4)


def test_static_cache_larger_than_needed(tiny_llama, padded_batch):
    ids, mask = padded_batch
    a = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, cache="static", max_cache_len=64)
    b = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, cache="dynamic")
    assert torch.equal(a.sequences, b.sequences)


def test_cache_rows_can_be_reordered(tiny_llama):
    """select_rows (used by beam search) continues row i from old row rows[i] in every cache setting."""
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    for setting in ("dynamic", "static"):
        kv = KVCache(setting, tiny_llama, max_cache_len=8)
        state = init_state(ids, torch.ones_like(ids), 2, pad_token_id=0)
        with torch.inference_mode():
            Forward(tiny_llama, kv)(state, 0, 3)
            before = kv.model_cache.layers[0].keys[:, :, :3].clone()
            kv.select_rows(torch.tensor([1, 1, 0]))
            after = kv.model_cache.layers[0].keys[:, :, :3]
        assert torch.equal(after[0], before[1]) and torch.equal(after[2], before[0])
