"""Speculative decoding's parameters (decoding/speculative/checks.py, decoding/params.py): every bad value or
combination is a ValueError that names the parameter and the value, raised before any forward pass; the
values transformers treats as neutral are accepted and change nothing; a GenerationConfig, a model's
generation_config and the runner's model-free check see the same rules as the keywords.
"""

import contextlib
import warnings

import pytest
import torch
from transformers import GenerationConfig

import decoding
from decoding.params import GLOBAL_DEFAULTS, resolve_params
from decoding.refused_keywords import refusal_reason
from experiments.models import build_tiny_model

PROMPT = torch.tensor([[5, 6, 7, 5, 6]])  # (1, 5)


def kind_of(model) -> str:
    return "tiny_llama" if model.config.model_type == "llama" else "tiny_gpt2"


def layer_count(model) -> int:
    return model.config.get_text_config(decoder=True).num_hidden_layers


@contextlib.contextmanager
def no_forward(*models):
    """Fails the test if any of `models` (or its input embeddings, shared with a first-layers draft) runs."""
    calls = []
    modules = [m for model in models for m in (model, model.get_input_embeddings())]
    hooks = [m.register_forward_pre_hook(lambda module, args: calls.append(type(module).__name__))
             for m in modules]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls, f"a forward pass ran before the refusal: {calls}"


def refused_before_forward(model, match, *models, prompt=PROMPT, **kwargs):
    """decoding.generate(model, prompt, **kwargs) raises ValueError matching `match`, with no forward pass."""
    with no_forward(model, *models), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            decoding.generate(model, prompt, max_new_tokens=4, **kwargs)


# Bad values and combinations that need no model: (keywords, the message's start, naming parameter and value)
MODEL_FREE = {
    "draft_layers=0": (dict(draft_layers=0), r"draft_layers=0 is not allowed: use an integer >= 1"),
    "draft_layers=True": (dict(draft_layers=True), r"draft_layers=True is not allowed: use an integer >= 1"),
    "num_assistant_tokens=0": (dict(draft_layers=1, num_assistant_tokens=0),
                               r"num_assistant_tokens=0 is not allowed: use an integer >= 1"),
    "num_assistant_tokens=-1": (dict(draft_layers=1, num_assistant_tokens=-1),
                                r"num_assistant_tokens=-1 is not allowed: use an integer >= 1"),
    "num_assistant_tokens=1.5": (dict(draft_layers=1, num_assistant_tokens=1.5),
                                 r"num_assistant_tokens=1\.5 is not allowed: use an integer >= 1"),
    "num_assistant_tokens=True": (dict(draft_layers=1, num_assistant_tokens=True),
                                  r"num_assistant_tokens=True is not allowed: use an integer >= 1"),
    "num_assistant_tokens=1.5 without a proposer": (dict(num_assistant_tokens=1.5),
                                                    r"num_assistant_tokens=1\.5 is not allowed"),
    "prompt_lookup_num_tokens=0": (dict(prompt_lookup_num_tokens=0),
                                   r"prompt_lookup_num_tokens=0 is not allowed: use an integer >= 1"),
    "prompt_lookup_num_tokens=2.0": (dict(prompt_lookup_num_tokens=2.0),
                                     r"prompt_lookup_num_tokens=2\.0 is not allowed: use an integer >= 1"),
    "max_matching_ngram_size=0": (dict(prompt_lookup_num_tokens=3, max_matching_ngram_size=0),
                                  r"max_matching_ngram_size=0 is not allowed: use an integer >= 1"),
    "max_matching_ngram_size without lookup": (dict(max_matching_ngram_size=3), r"max_matching_ngram_size=3 is "
                                               r"not allowed without prompt_lookup_num_tokens"),
    "schedule fast": (dict(draft_layers=1, num_assistant_tokens_schedule="fast"),
                      r"num_assistant_tokens_schedule='fast' is not allowed: use one of \('constant', 'heuristic', "
                      r"'heuristic_transient'\)"),
    "threshold 1.5": (dict(draft_layers=1, assistant_confidence_threshold=1.5),
                      r"assistant_confidence_threshold=1\.5 is not allowed: use a number in \[0, 1\)"),
    "threshold -0.1": (dict(draft_layers=1, assistant_confidence_threshold=-0.1),
                       r"assistant_confidence_threshold=-0\.1 is not allowed"),
    "threshold True": (dict(draft_layers=1, assistant_confidence_threshold=True),
                       r"assistant_confidence_threshold=True is not allowed"),
    "assistant_model a string": (dict(assistant_model="HuggingFaceTB/SmolLM2-135M"),
                                 r"assistant_model='str' is not allowed: use a transformers causal LM"),
    "two proposers": (dict(prompt_lookup_num_tokens=3, draft_layers=1),
                      r"\['prompt_lookup_num_tokens', 'draft_layers'\] are not allowed together: speculative "
                      r"decoding takes one proposer"),
    "two proposers, one by its transformers name": (
        dict(prompt_lookup_num_tokens=3, assistant_early_exit=1),
        r"\['prompt_lookup_num_tokens', 'draft_layers'\] are not allowed together"),
    "early exit contradicts draft_layers": (dict(assistant_early_exit=1, draft_layers=2),
                                            r"assistant_early_exit=1 contradicts draft_layers=2"),
    "beam search": (dict(prompt_lookup_num_tokens=3, num_beams=2),
                    r"prompt_lookup_num_tokens=3 is not allowed with num_beams=2"),
    "diverse beams": (dict(draft_layers=1, num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
                      r"draft_layers=1 is not allowed with num_beams=4"),
    "guidance": (dict(prompt_lookup_num_tokens=3, guidance_scale=1.5),
                 r"prompt_lookup_num_tokens=3 is not allowed with guidance_scale=1\.5"),
    "output_scores": (dict(draft_layers=1, output_scores=True, return_dict_in_generate=True),
                      r"draft_layers=1 is not allowed with output_scores"),
    "output_logits": (dict(prompt_lookup_num_tokens=3, output_logits=True, return_dict_in_generate=True),
                      r"prompt_lookup_num_tokens=3 is not allowed with output_scores / output_logits"),
    "compile": (dict(prompt_lookup_num_tokens=3, compile=True, cache="static"),
                r"prompt_lookup_num_tokens=3 is not allowed with compile=True"),
    "prefix_allowed_tokens_fn": (dict(prompt_lookup_num_tokens=3, prefix_allowed_tokens_fn=lambda b, ids: [1, 2]),
                                 r"prompt_lookup_num_tokens=3 is not allowed with prefix_allowed_tokens_fn"),
    "assistant_tokenizer": (dict(assistant_tokenizer=object()),
                            r"\['assistant_tokenizer'\] are not supported.*assistant_tokenizer: assisted generation "
                            r"across different tokenizers \(universal assisted decoding\) is not supported"),
}


@pytest.mark.parametrize("case", MODEL_FREE)
def test_a_bad_value_is_refused_before_any_forward_pass(tiny_model, case):
    kwargs, match = MODEL_FREE[case]
    refused_before_forward(tiny_model, match, **kwargs)


@pytest.mark.parametrize("case", MODEL_FREE)
def test_the_runners_model_free_check_catches_it(case):
    """experiments/validate.py's check_decoding resolves the decoding config with model=None before loading
    anything: every model-free error is already raised there."""
    kwargs, match = MODEL_FREE[case]
    with warnings.catch_warnings(), pytest.raises(ValueError, match=match):
        warnings.simplefilter("ignore")
        resolve_params(None, 5, **kwargs)


def test_a_hydra_run_with_a_bad_speculative_value_fails_before_loading_anything(tmp_path):
    from experiments.run import check_config
    from tests.experiments.runner_helpers import TINY_RUN, compose_config

    cfg = compose_config([*TINY_RUN, "task=generate", "decoding=greedy", "+decoding.prompt_lookup_num_tokens=0"],
                         tmp_path / "job")
    with pytest.raises(ValueError, match=r"decoding=greedy: prompt_lookup_num_tokens=0 is not allowed"):
        check_config(cfg)
    good = compose_config([*TINY_RUN, "task=generate", "decoding=greedy", "+decoding.assistant_early_exit=1"],
                          tmp_path / "job2")
    assert check_config(good).draft_layers == 1  # transformers' name resolves to ours there too


def test_assistant_tokenizer_gives_the_universal_assisted_reason_even_with_a_draft(tiny_model):
    draft = build_tiny_model(kind_of(tiny_model), seed=1)
    reason = refusal_reason("assistant_tokenizer")
    assert "universal assisted decoding" in reason
    with no_forward(tiny_model, draft), pytest.raises(ValueError) as err:
        decoding.generate(tiny_model, PROMPT, max_new_tokens=4, assistant_model=draft, assistant_tokenizer=object())
    assert "assistant_tokenizer" in str(err.value) and reason in str(err.value)


# Checks that read the target and the draft: still before any forward pass of either.

def test_a_draft_with_another_vocabulary_is_refused(tiny_model):
    draft = build_tiny_model(kind_of(tiny_model), vocab_size=500)
    refused_before_forward(tiny_model, r"assistant_model=.*LMHeadModel|assistant_model=.*ForCausalLM", draft,
                           assistant_model=draft)
    refused_before_forward(tiny_model, r"the draft's vocabulary has 500 tokens, the target's 1000", draft,
                           assistant_model=draft)


@pytest.mark.parametrize("name, value", [("eos_token_id", 3), ("bos_token_id", 0)])
def test_a_draft_with_another_special_token_is_refused(tiny_model, name, value):
    draft = build_tiny_model(kind_of(tiny_model), seed=1)
    setattr(draft.config, name, value)
    target_value = getattr(tiny_model.config, name)
    refused_before_forward(tiny_model, rf"assistant_model={type(draft).__name__} is not allowed: its {name}={value} "
                                       rf"differs from the target's {name}={target_value}", draft,
                           assistant_model=draft)


def test_draft_layers_must_be_below_the_layer_count(tiny_model):
    layers = layer_count(tiny_model)
    for bad in (layers, layers + 3):
        refused_before_forward(tiny_model, rf"draft_layers={bad} is not allowed: use 1 <= draft_layers < {layers}",
                               draft_layers=bad)
        refused_before_forward(tiny_model, rf"draft_layers={bad} is not allowed", assistant_early_exit=bad)


def test_a_bad_assistant_early_exit_says_it_is_draft_layers(tiny_model):
    """The check names our field; the message says it is the caller's assistant_early_exit too."""
    refused_before_forward(tiny_model, r"draft_layers=0 is not allowed: .*assistant_early_exit", assistant_early_exit=0)
    refused_before_forward(tiny_model, r"draft_layers=2 is not allowed: .*assistant_early_exit", assistant_early_exit=2)


def test_draft_layers_true_is_refused_beside_an_equal_assistant_early_exit():
    """True == 1 in Python: the alias's contradiction check must not let draft_layers=True through as 1."""
    with pytest.raises(ValueError, match=r"draft_layers=True|assistant_early_exit=1 contradicts draft_layers=True"):
        resolve_params(None, 5, max_new_tokens=4, draft_layers=True, assistant_early_exit=1)


def test_the_forward_guard_sees_a_forward_pass(tiny_model):
    """no_forward is not vacuous: a real call through generate trips it (so the refusals above prove something)."""
    with pytest.raises(AssertionError, match="a forward pass ran"):
        with no_forward(tiny_model):
            decoding.generate(tiny_model, PROMPT, max_new_tokens=2, draft_layers=1)


def test_the_target_as_its_own_draft_is_refused(tiny_model):
    refused_before_forward(tiny_model, r"assistant_model=<the target model itself> is not allowed.*use draft_layers",
                           assistant_model=tiny_model)


def test_a_draft_and_draft_layers_together_are_refused(tiny_model):
    draft = build_tiny_model(kind_of(tiny_model), seed=1)
    refused_before_forward(tiny_model, r"\['assistant_model', 'draft_layers'\] are not allowed together", draft,
                           assistant_model=draft, assistant_early_exit=1)


def test_inputs_embeds_with_a_proposer_is_refused(tiny_model):
    embeds = tiny_model.get_input_embeddings()(PROMPT).detach()  # (1, 5, H)
    with no_forward(tiny_model), pytest.raises(ValueError, match=r"inputs_embeds is not allowed with speculative "
                                                                 r"decoding"):
        decoding.generate(tiny_model, inputs_embeds=embeds, max_new_tokens=4, prompt_lookup_num_tokens=3)


# Accepted values

def run(model, *, seed=None, **kwargs):
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23]])  # (2, 5), left-padded
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return decoding.generate(model, ids, mask, max_new_tokens=8, generator=generator, **kwargs)


def same_run(a, b):
    assert torch.equal(a.sequences, b.sequences)
    for name in ("accepted_tokens", "proposed_tokens", "target_forwards"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), name


@pytest.mark.parametrize("sampling", [False, True])
def test_assistant_early_exit_is_draft_layers(tiny_model, sampling):
    options = dict(do_sample=True, top_k=0, seed=3) if sampling else {}
    ours = run(tiny_model, draft_layers=1, **options)
    theirs = run(tiny_model, assistant_early_exit=1, **options)
    same_run(ours, theirs)
    assert int(ours.proposed_tokens.sum()) > 0  # the first layer really proposed
    both = run(tiny_model, draft_layers=1, assistant_early_exit=1, **options)  # the same value twice: one setting
    same_run(ours, both)
    via_config = run(tiny_model, generation_config=GenerationConfig(assistant_early_exit=1), **options)
    same_run(ours, via_config)


def test_speculative_defaults_are_transformers_defaults():
    theirs = GenerationConfig._get_default_generation_params()
    for name in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"):
        assert GLOBAL_DEFAULTS[name] == theirs[name], name
    params = resolve_params(None, 5, max_new_tokens=4)
    assert (params.num_assistant_tokens, params.num_assistant_tokens_schedule,
            params.assistant_confidence_threshold) == (theirs["num_assistant_tokens"],
                                                       theirs["num_assistant_tokens_schedule"],
                                                       theirs["assistant_confidence_threshold"])
    assert not params.is_speculative


@pytest.mark.parametrize("knobs", [
    dict(num_assistant_tokens=20),
    dict(num_assistant_tokens=5, num_assistant_tokens_schedule="heuristic", assistant_confidence_threshold=0.1),
    dict(assistant_confidence_threshold=None, assistant_early_exit=None, prompt_lookup_num_tokens=None,
         assistant_model=None, draft_layers=None),
    dict(assistant_lookbehind=10, target_lookbehind=10, is_assistant=False, assistant_tokenizer=None),
])
def test_draft_knobs_without_a_proposer_change_nothing(tiny_model, knobs):
    """generate reads num_assistant_tokens & co. only with a proposer; without one they are accepted, unused."""
    plain = run(tiny_model)
    with_knobs = run(tiny_model, **knobs)
    same_run(plain, with_knobs)
    assert with_knobs.accepted_tokens is None  # no speculation ran


def test_a_model_generation_config_carrying_draft_knobs_is_fine():
    model = build_tiny_model("tiny_llama")  # its own: the session fixtures' configs stay untouched
    plain = run(model)
    model.generation_config.num_assistant_tokens = 5
    model.generation_config.num_assistant_tokens_schedule = "heuristic"
    same_run(plain, run(model))
    assert resolve_params(model, 5, max_new_tokens=4, draft_layers=1).num_assistant_tokens == 5
    assert resolve_params(model, 5, max_new_tokens=4, draft_layers=1, num_assistant_tokens=2).num_assistant_tokens == 2
    model.generation_config.num_assistant_tokens = 0
    with no_forward(model), pytest.raises(ValueError, match=r"num_assistant_tokens=0 is not allowed.*comes from the "
                                                            r"model's generation_config"):
        run(model)


def test_a_generation_config_works_like_the_keyword(tiny_model):
    keyword = run(tiny_model, prompt_lookup_num_tokens=3)
    config = run(tiny_model, generation_config=GenerationConfig(prompt_lookup_num_tokens=3))
    assert keyword.accepted_tokens is not None  # the speculative loop ran (plain decoding leaves it None)
    same_run(keyword, config)
    assert torch.equal(run(tiny_model).sequences, keyword.sequences)  # greedy: plain greedy's tokens
    with no_forward(tiny_model), pytest.raises(ValueError, match=r"prompt_lookup_num_tokens=0 is not allowed"):
        run(tiny_model, generation_config=GenerationConfig(prompt_lookup_num_tokens=0))
    # the keyword wins over the passed config, as in generate (None switches the proposer off)
    same_run(run(tiny_model), run(tiny_model, prompt_lookup_num_tokens=None,
                                  generation_config=GenerationConfig(prompt_lookup_num_tokens=3)))
