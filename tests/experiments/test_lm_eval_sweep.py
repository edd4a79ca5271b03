"""SweepDecodelabLM: every configuration's answers equal a lone DecodelabLM's with that configuration, while
generation runs once for all of them (one generate_sweep per batch) and log-likelihoods are computed once."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from experiments.lm_eval_model import DecodelabLM  # noqa: E402
from experiments.lm_eval_sweep import SweepDecodelabLM  # noqa: E402
from experiments.models import load_model  # noqa: E402
from tests.experiments.test_lm_eval_model import CONTEXTS, instance, loglikelihood_requests  # noqa: E402

CONFIGS = [{"do_sample": True, "temperature": 0.7, "top_k": 0}, {"do_sample": False},
           {"do_sample": True, "temperature": 1.3, "top_k": 0}, {"do_sample": True, "top_p": 0.8, "top_k": 0}]


def requests(repeats: int) -> list:
    """Two tasks' worth: one stops at a space (rows end early, at different steps per configuration)."""
    out = []
    for task, gen_kwargs in (("spaces", {"until": [" "], "max_gen_toks": 5}), ("lines", {"until": ["\n"], "max_gen_toks": 6})):
        for i, context in enumerate(CONTEXTS):
            request = instance("generate_until", (context.rstrip(), dict(gen_kwargs)), i, task=task, repeats=repeats)
            out.extend([request] * repeats)
    return out


@pytest.mark.parametrize("kind", ["tiny_llama", "tiny_gpt2"])
def test_each_configuration_equals_its_lone_run(kind):
    model, tokenizer = load_model(kind)
    sweep = SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, configs=CONFIGS, seed=3, batch_size=3)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    got = [sweep.use(i).generate_until(requests(2)) for i in range(len(CONFIGS))]
    forwards = len(calls)
    for config, texts in zip(CONFIGS, got):
        alone = DecodelabLM(pretrained=model, tokenizer=tokenizer, seed=3, batch_size=3, **config)
        assert texts == alone.generate_until(requests(2)), config
    assert sweep.shared_batches == 2 * 2 * 2  # 2 tasks x 2 batches of prompts x (greedy group, sampling group)
    assert forwards < len(calls) - forwards  # the sweep ran fewer forwards than the lone runs together
    assert len(set(got[0])) > 1 and got[1][0] == got[1][1]  # sampled draws differ; greedy repeats are copies


def test_loglikelihoods_computed_once():
    model, tokenizer = load_model("tiny_llama")
    sweep = SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, configs=CONFIGS[:2])
    first = sweep.use(0).loglikelihood(loglikelihood_requests())
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    assert sweep.use(1).loglikelihood(loglikelihood_requests()) == first and calls == []


def test_bad_sweep_arguments():
    model, tokenizer = load_model("tiny_llama")
    with pytest.raises(ValueError, match="configs=\\[\\]"):
        SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, configs=[])
    with pytest.raises(ValueError, match="index=2"):
        SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, configs=CONFIGS[:2]).use(2)
