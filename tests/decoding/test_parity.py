"""Token identity with `model.generate`: same arguments, same `torch.manual_seed`, same tokens.

Covered: greedy and sampling, every processor alone and mixed, left-padded batches of prompts of
different lengths, rows finishing at different steps, all three cache settings, tiny Llama and GPT-2
(absolute positions: any position-id slip changes the tokens) and the embedded SmolLM2.
"""

import pytest
import torch

import decoding
from tests.decoding.reference import reference_and_ours

PROCESSOR_CASES = {
    "greedy": dict(do_sample=False),
    "greedy_repetition_penalty": dict(do_sample=False, repetition_penalty=1.5),
    "greedy_no_repeat_ngram": dict(do_sample=False, no_repeat_ngram_size=2),
    "greedy_min_new_tokens": dict(do_sample=False, min_new_tokens=6),
    "sample_default_top_k": dict(do_sample=True),
    "sample_pure": dict(do_sample=True, top_k=0),
    "temperature": dict(do_sample=True, temperature=0.7, top_k=0),
    "top_k": dict(do_sample=True, top_k=5),
    "top_p": dict(do_sample=True, top_p=0.8, top_k=0),
    "min_p": dict(do_sample=True, min_p=0.2, top_k=0),
    "typical": dict(do_sample=True, typical_p=0.9, top_k=0),
    "epsilon": dict(do_sample=True, epsilon_cutoff=2e-3, top_k=0),
    "eta": dict(do_sample=True, eta_cutoff=2e-3, top_k=0),
    "mix_temp_topk_topp_penalty": dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.9, repetition_penalty=1.2),
    "mix_minp_ngram_min_new": dict(do_sample=True, temperature=0.8, min_p=0.05, no_repeat_ngram_size=3,
                                   min_new_tokens=4),
    "mix_typical_eps_eta": dict(do_sample=True, typical_p=0.95, epsilon_cutoff=1e-3, eta_cutoff=1e-3),
}


def eos_ids_finishing_rows_early(model, ids, mask, **kwargs):
    """EOS ids chosen so rows end at different steps: the token row 0 draws at step 2 and row 2 at step 6.

    With the same seed the run is identical up to the first EOS, so those rows must end by then.
    """
    torch.manual_seed(0)
    free = decoding.generate(model, ids, mask, eos_token_id=[], **kwargs).new_token_ids
    return sorted({int(free[0, 2]), int(free[2, 6])})


@pytest.mark.parametrize("case", sorted(PROCESSOR_CASES))
@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
def test_tokens_equal_generate_on_tiny_models(tiny_model, padded_batch, case, cache):
    ids, mask = padded_batch
    kwargs = dict(PROCESSOR_CASES[case], max_new_tokens=10)
    reference, ours = reference_and_ours(tiny_model, ids, mask, cache=cache, **kwargs)
    assert torch.equal(reference, ours.sequences), case


@pytest.mark.parametrize("case", ["greedy", "top_p", "mix_temp_topk_topp_penalty", "typical"])
def test_rows_finishing_at_different_steps_match_generate(tiny_model, padded_batch, case):
    ids, mask = padded_batch
    kwargs = dict(PROCESSOR_CASES[case], max_new_tokens=12)
    eos = eos_ids_finishing_rows_early(tiny_model, ids, mask, **kwargs)
    reference, ours = reference_and_ours(tiny_model, ids, mask, eos_token_id=eos, pad_token_id=0, **kwargs)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons[0] == "eos" and ours.finish_reasons[2] == "eos"
    lengths = ours.new_token_mask.sum(-1).tolist()
    assert lengths[0] <= 3 and lengths[2] <= 7 and lengths[1] > min(lengths[0], lengths[2])
    # After a row finished, generate and we both write pad_token_id.
    assert (ours.new_token_ids[0, lengths[0]:] == 0).all()


@pytest.mark.parametrize("do_sample", [False, True])
def test_min_new_tokens_holds_eos_back_like_generate(tiny_model, padded_batch, do_sample):
    ids, mask = padded_batch
    torch.manual_seed(0)
    free = decoding.generate(tiny_model, ids, mask, eos_token_id=[], do_sample=do_sample, max_new_tokens=3)
    eos = sorted(set(free.new_token_ids[:, :2].flatten().tolist()))  # tokens the rows want early
    kwargs = dict(do_sample=do_sample, max_new_tokens=10, min_new_tokens=5, eos_token_id=eos, pad_token_id=0)
    reference, ours = reference_and_ours(tiny_model, ids, mask, **kwargs)
    assert torch.equal(reference, ours.sequences)
    assert (ours.new_token_mask.sum(-1) >= 5).all()


def test_single_eos_id_int_and_num_return_sequences(tiny_model, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(do_sample=True, top_p=0.9, num_return_sequences=3, max_new_tokens=8, eos_token_id=7)
    reference, ours = reference_and_ours(tiny_model, ids, mask, **kwargs)
    assert ours.sequences.shape[0] == 9
    assert torch.equal(reference, ours.sequences)


def test_no_padding_batch_matches(tiny_model):
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    reference, ours = reference_and_ours(tiny_model, ids, torch.ones_like(ids), do_sample=True, max_new_tokens=8)
    assert torch.equal(reference, ours.sequences)


def test_seeded_generator_is_reproducible_and_independent_of_global_rng(tiny_llama, padded_batch):
    ids, mask = padded_batch
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(123)
        runs.append(decoding.generate(tiny_llama, ids, mask, do_sample=True, max_new_tokens=8, generator=gen))
    assert torch.equal(runs[0].sequences, runs[1].sequences)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["greedy", "top_p", "mix_temp_topk_topp_penalty", "mix_typical_eps_eta",
                                  "min_p", "greedy_no_repeat_ngram"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_tokens_equal_generate_on_smollm2(smollm2, case, cache):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,",
               "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(PROCESSOR_CASES[case], max_new_tokens=12)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, cache=cache, **kwargs)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.slow
def test_smollm2_rows_finish_at_different_steps(smollm2):
    model, tokenizer = smollm2
    prompts = ["<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nList three US presidents.<|im_end|>\n<|im_start|>assistant\n"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, do_sample=False,
                                         max_new_tokens=40)
    assert torch.equal(reference, ours.sequences)
    lengths = ours.new_token_mask.sum(-1).tolist()
    assert ours.finish_reasons[0] == "eos" and lengths[0] < lengths[1]
