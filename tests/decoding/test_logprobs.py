"""Generate versus forward: the per-token log-probabilities the loop records equal one teacher-forced pass.

Also: every row of a left-padded batch equals the same prompt run alone (float32, greedy).
"""

import pytest
import torch

import decoding


def teacher_forced_logprobs(model, sequences, prompt_mask, prompt_len, temperature=1.0):
    """(B, N) log p(token_t | tokens_<t) for the new tokens, from one forward pass over the final sequences."""
    batch, total = sequences.shape
    mask = torch.ones((batch, total), dtype=torch.long)
    mask[:, :prompt_len] = prompt_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits.float()
    logp = torch.log_softmax(logits[:, prompt_len - 1:-1] / temperature, -1)  # (B, N, V)
    return logp.gather(-1, sequences[:, prompt_len:, None]).squeeze(-1)


@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_recorded_logprobs_equal_teacher_forcing(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    torch.manual_seed(0)
    out = decoding.generate(tiny_model, ids, mask, do_sample=True, top_k=0, temperature=0.7, max_new_tokens=12,
                            cache=cache, eos_token_id=[7, 9], pad_token_id=0)
    expected = teacher_forced_logprobs(tiny_model, out.sequences, mask, out.prompt_length)
    alive = out.new_token_mask
    assert torch.allclose(out.token_logprobs_raw[alive], expected[alive], atol=1e-4)
    # the processed distribution here is the temperature-scaled one
    expected_t = teacher_forced_logprobs(tiny_model, out.sequences, mask, out.prompt_length, temperature=0.7)
    assert torch.allclose(out.token_logprobs[alive], expected_t[alive], atol=1e-4)
    assert (out.token_logprobs_raw[~alive] == 0).all()


@pytest.mark.slow
def test_recorded_logprobs_equal_teacher_forcing_smollm2(smollm2):
    model, tokenizer = smollm2
    batch = tokenizer(["In 1862 the President", "We the people"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = decoding.generate(model, batch.input_ids, batch.attention_mask, do_sample=True, top_p=0.9,
                            max_new_tokens=16)
    expected = teacher_forced_logprobs(model, out.sequences, batch.attention_mask, out.prompt_length)
    alive = out.new_token_mask
    assert torch.allclose(out.token_logprobs_raw[alive], expected[alive], atol=1e-4)


def _row_alone(model, ids, mask, row, **kwargs):
    start = int((mask[row] == 0).sum())
    return decoding.generate(model, ids[row:row + 1, start:], **kwargs)


def test_each_row_equals_the_prompt_alone(tiny_model, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(max_new_tokens=10, eos_token_id=[7, 9], pad_token_id=0)
    batch = decoding.generate(tiny_model, ids, mask, **kwargs)
    for row in range(ids.shape[0]):
        alone = _row_alone(tiny_model, ids, mask, row, **kwargs)
        n = alone.new_token_ids.shape[1]
        assert torch.equal(batch.new_token_ids[row, :n], alone.new_token_ids[0])
        assert torch.allclose(batch.token_logprobs_raw[row, :n], alone.token_logprobs_raw[0], atol=1e-4)


@pytest.mark.slow
def test_each_row_equals_the_prompt_alone_smollm2(smollm2):
    model, tokenizer = smollm2
    prompts = ["Fellow citizens of the Senate", "The economy", "Tonight I want to talk about the future of"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = decoding.generate(model, batch.input_ids, batch.attention_mask, max_new_tokens=12)
    for row, prompt in enumerate(prompts):
        alone = decoding.generate(model, tokenizer(prompt, return_tensors="pt").input_ids, max_new_tokens=12)
        n = alone.new_token_ids.shape[1]
        assert torch.equal(out.new_token_ids[row, :n], alone.new_token_ids[0]), prompt


def test_timings_and_counts(tiny_llama, padded_batch):
    ids, mask = padded_batch
    out = decoding.generate(tiny_llama, ids, mask, max_new_tokens=5, eos_token_id=[])
    assert out.new_tokens == 15 and out.steps == 4
    assert out.prefill_seconds > 0 and out.decode_seconds > 0
    assert out.finish_reasons == ["length"] * 3
