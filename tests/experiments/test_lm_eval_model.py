"""DecodelabLM against lm-eval's own HFLM on the same requests (tiny models fast, SmolLM2 slow).

HFLM (lm_eval/models/huggingface.py) is given our loaded model and tokenizer as `pretrained=` objects, so
both sides see the same weights: loglikelihood within 1e-4 relative, greedy generate_until string for string
(HFLM calls model.generate).
"""

from __future__ import annotations

import math

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from experiments.lm_eval_model import DecodelabLM  # noqa: E402
from experiments.models import load_model  # noqa: E402

CONTEXTS = ["The state of the", "Tonight ", "My fellow Americans, today we", "A"]
CONTINUATIONS = [" Union is strong", "we meet", " gather here to celebrate", " b c d e"]
TEXTS = ["Hello there, my fellow citizens. " * 5, "Short.", "Mr. Speaker, Madam Vice President, our First Lady."]
GEN_KWARGS = {"until": ["\n", "."], "max_gen_toks": 10, "do_sample": False}


def instance(kind: str, args: tuple, index: int, task: str = "t", repeats: int = 1) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=index, metadata=(task, index, repeats))


def loglikelihood_requests() -> list[Instance]:
    pairs = list(zip(CONTEXTS, CONTINUATIONS)) + [("", "Hello world")]
    return [instance("loglikelihood", pair, i) for i, pair in enumerate(pairs)]


def generation_requests(gen_kwargs: dict = GEN_KWARGS) -> list[Instance]:
    return [instance("generate_until", (context.rstrip(), dict(gen_kwargs)), i) for i, context in enumerate(CONTEXTS)]


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2"])
def tiny_pair(request):
    model, tokenizer = load_model(request.param)
    return model, tokenizer


def both(model, tokenizer, batch_size: int = 2, **ours_args):
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **ours_args)
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return ours, reference


def assert_loglikelihoods_equal(ours, reference) -> None:
    got, want = ours.loglikelihood(loglikelihood_requests()), reference.loglikelihood(loglikelihood_requests())
    for (lp, greedy), (ref_lp, ref_greedy) in zip(got, want, strict=True):
        assert math.isclose(lp, ref_lp, rel_tol=1e-4), (lp, ref_lp)
        assert greedy == ref_greedy
    rolling = [instance("loglikelihood_rolling", (text,), i) for i, text in enumerate(TEXTS)]
    for lp, ref_lp in zip(ours.loglikelihood_rolling(rolling), reference.loglikelihood_rolling(rolling), strict=True):
        assert math.isclose(lp, ref_lp, rel_tol=1e-4), (lp, ref_lp)


def test_tiny_loglikelihood_equals_hflm(tiny_pair):
    assert_loglikelihoods_equal(*both(*tiny_pair))


def test_tiny_rolling_windows_equal_hflm_past_max_length(tiny_pair):
    """max_length=8: several disjoint windows per text, the last one re-reading context (lm-eval's layout)."""
    model, tokenizer = tiny_pair
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=3, max_length=8)
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, max_length=8)
    rolling = [instance("loglikelihood_rolling", (text,), i) for i, text in enumerate(TEXTS)]
    for lp, ref_lp in zip(ours.loglikelihood_rolling(rolling), reference.loglikelihood_rolling(rolling), strict=True):
        assert math.isclose(lp, ref_lp, rel_tol=1e-4), (lp, ref_lp)


def test_tiny_greedy_generate_until_equals_hflm(tiny_pair):
    ours, reference = both(*tiny_pair)
    assert ours.generate_until(generation_requests()) == reference.generate_until(generation_requests())


def test_tiny_sampled_generate_until_equals_hflm_on_the_global_rng(tiny_pair):
    """rng="global": our sampling draws from torch's global RNG as model.generate does, so after the same
    torch.manual_seed the sampled strings are HFLM's (temperature 0.8, no top-k, stop strings, a padded batch)."""
    model, tokenizer = tiny_pair
    ours, reference = both(model, tokenizer, rng="global")
    sampled = {"until": ["\n", "."], "max_gen_toks": 8, "do_sample": True, "temperature": 0.8, "top_k": 0}
    torch.manual_seed(0)
    got = ours.generate_until(generation_requests(sampled))
    torch.manual_seed(0)
    assert got == reference.generate_until(generation_requests(sampled))
    torch.manual_seed(1)
    assert ours.generate_until(generation_requests(sampled)) != got  # the seed matters: these are samples


def test_generation_is_recorded_with_the_run_winning(tiny_pair):
    """The run's temperature sweep point wins over the task's greedy request; the merge says so."""
    model, tokenizer = tiny_pair
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer, do_sample=True, temperature=0.7, top_k=0)
    texts = ours.generate_until(generation_requests())
    assert len(texts) == len(CONTEXTS)
    (record,) = ours.get_model_info()["decodelab_generation"]
    assert record["effective"]["do_sample"] is True and record["effective"]["temperature"] == 0.7
    assert record["overridden_by_run"] == ["do_sample"]
    assert record["effective"]["stop_strings"][:2] == ["\n", "."] and record["requests"] == len(CONTEXTS)


def test_repeats_are_drawn_from_one_prefill(tiny_pair):
    """3 copies of a request (lm-eval's repeats) -> one generate call with num_return_sequences=3; equal to
    decoding.generate's own 3 draws with the same seeded generator."""
    import decoding
    from experiments.generation import left_pad

    model, tokenizer = tiny_pair
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer, seed=5, do_sample=True, top_k=0)
    request = instance("generate_until", ("The state of the", {"until": ["\n"], "max_gen_toks": 6}), 0, repeats=3)
    texts = ours.generate_until([request] * 3)
    from experiments.lm_eval_model import batch_seed

    context = tokenizer.encode("The state of the")
    ids, mask = left_pad([context], tokenizer.pad_token_id, model.device)
    seed = batch_seed(5, request.args[1], [context])
    out = decoding.generate(model, ids, mask, generator=torch.Generator().manual_seed(seed), tokenizer=tokenizer,
                            do_sample=True, top_k=0, max_new_tokens=6, num_return_sequences=3,
                            stop_strings=["\n", tokenizer.eos_token])
    expected = [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True).split("\n")[0]
                for row in out.sequences.tolist()]
    assert texts == expected
    assert len(set(texts)) > 1  # three draws, not one copied


def test_greedy_repeats_are_copies(tiny_pair):
    model, tokenizer = tiny_pair
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer)
    request = instance("generate_until", ("Tonight", dict(GEN_KWARGS)), 0, repeats=2)
    first, second = ours.generate_until([request, request])
    assert first == second == ours.generate_until([instance("generate_until", ("Tonight", dict(GEN_KWARGS)), 0)])[0]


@pytest.mark.parametrize("run, gen_kwargs, message", [
    ({"num_beams": 4}, {"until": ["\n"], "do_sample": True, "temperature": 0.8}, "conflicts with the run's beam search"),
    ({}, {"until": ["\n"], "num_return_sequences": 2}, "num_return_sequences"),
    ({"stop_strings": ["x"]}, {"until": ["\n"]}, "decoding.stop_strings"),
    ({"max_length": 16}, {"until": ["\n"], "max_gen_toks": 16}, "max_new_tokens=16 leaves no room"),
])
def test_bad_gen_kwargs_fail_before_any_forward(tiny_llama, run, gen_kwargs, message):
    from experiments.models import load_tiny

    model, tokenizer = load_tiny("tiny_llama")
    ours = DecodelabLM(pretrained=model, tokenizer=tokenizer, **run)
    good = instance("generate_until", ("Fine", {"until": ["\n"], "max_gen_toks": 2}), 1)  # asked first, not run
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        ours.generate_until([good, instance("generate_until", ("Tonight", gen_kwargs), 0)])
    assert calls == []


@pytest.mark.parametrize("args, message", [
    ({"batch_size": 0}, "batch_size=0"), ({"max_gen_toks": "x"}, "max_gen_toks='x'"),
    ({"pretrained": object()}, "needs tokenizer="), ({"rng": "local"}, "rng='local'"),
])
def test_bad_model_args(args, message):
    with pytest.raises(ValueError, match=message):
        DecodelabLM(**args)


def test_registered_for_simple_evaluate():
    from lm_eval.api.registry import get_model

    assert get_model("decodelab") is DecodelabLM


@pytest.mark.slow
def test_smollm2_equals_hflm(smollm2):
    """SmolLM2: loglikelihood within 1e-4 relative, greedy generate_until string for string (batch of 2)."""
    model, tokenizer = smollm2
    ours, reference = both(model, tokenizer, batch_size=2)
    assert_loglikelihoods_equal(ours, reference)
    gen_kwargs = {"until": ["\n\n", "."], "max_gen_toks": 16, "do_sample": False}
    got = ours.generate_until(generation_requests(gen_kwargs))
    assert got == reference.generate_until(generation_requests(gen_kwargs))
    assert any(len(text.split()) > 2 for text in got)  # real text, not empty strings
    sampled = {**gen_kwargs, "do_sample": True, "temperature": 0.8, "top_k": 0}
    ours_global = DecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=2, rng="global")
    torch.manual_seed(0)
    got = ours_global.generate_until(generation_requests(sampled))
    torch.manual_seed(0)
    assert got == reference.generate_until(generation_requests(sampled))


def test_chat_templated_prompts_equal_hflm(tiny_pair):
    """Prompts that begin with the BOS text (a chat template's) are encoded without another BOS, as HFLM does."""
    model, tokenizer = tiny_pair
    ours, reference = both(model, tokenizer)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == ours.apply_chat_template([{"role": "user", "content": "What is 2 plus 2?"}])
    assert ours.tok_encode(chat) == reference.tok_encode(chat)
    generation = [instance("generate_until", (chat, dict(GEN_KWARGS)), 0)]
    assert ours.generate_until(generation) == reference.generate_until(generation)
    scored = [instance("loglikelihood", (chat, "4"), 0)]
    assert math.isclose(ours.loglikelihood(scored)[0][0], reference.loglikelihood(scored)[0][0], rel_tol=1e-4)
