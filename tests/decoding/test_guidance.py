"""Classifier-free guidance (`guidance_scale`, `negative_prompt_ids`, `negative_prompt_attention_mask`).

What must hold:
(a) transformers' own case (tests/generation/test_logits_process.py, `test_classifier_free_guidance`) with
    its inputs and expected outputs; and, on random scores and unconditional logits, our processor equals
    `UnbatchedClassifierFreeGuidanceLogitsProcessor` bit for bit and leaves its inputs as they were.
(b) Token identity with `model.generate(guidance_scale=...)`: tiny Llama and GPT-2, a left-padded batch,
    caches none / dynamic / static, greedy and sampling, with and without an (unpadded) negative prompt,
    num_return_sequences=2, beam search and beam sampling; SmolLM2 (slow).
(c) The unconditional rows are separate: they equal a plain loop written here (both branches recomputed
    from scratch, the unconditional one from the negative prompt and the chosen tokens only), also for a
    left-padded negative prompt, where we use `cumsum(mask) - 1` positions; changing the negative prompt
    changes the tokens; guidance_scale=1 equals no guidance exactly.
(d) generate_sweep rows with different guidance scales equal their configurations run alone.
(e) Bad values fail before any forward pass, naming the parameter and the value.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig
from transformers.generation import UnbatchedClassifierFreeGuidanceLogitsProcessor

import decoding
from decoding.processors import ClassifierFreeGuidance, UnconditionalBranch, build_processors
from decoding.processors.guidance import row_guidance
from tests.decoding.reference import reference_and_ours

NEG = torch.tensor([[41, 42, 43], [51, 52, 53], [61, 62, 63]])  # one unpadded negative prompt per prompt
NEG_OTHER = torch.tensor([[7, 8, 9], [17, 18, 19], [27, 28, 29]])
SHARED = dict(max_new_tokens=6, pad_token_id=0)


def cache_kwargs(cache):
    """generate's spelling of our cache setting."""
    return {"none": {"use_cache": False}, "dynamic": {}, "static": {"cache_implementation": "static"}}[cache]


def both(model, ids, mask, cache, seed=0, **kwargs):
    """(generate's sequences, ours) with generate given the same cache kind."""
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **cache_kwargs(cache), **kwargs)
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours


# (a) transformers' case and random scores ------------------------------------------------------------------

class Output(dict):
    """What both processors read from a forward: `.logits` (and, for transformers', `.get("cache")`)."""


class FixedLogitsModel:
    """A stand-in model whose every forward returns `logits` (R, 1, V); it records the keyword inputs."""

    def __init__(self, logits):
        self.logits = logits
        self.calls = []
        layers = SimpleNamespace(num_hidden_layers=1)
        self.config = SimpleNamespace(get_text_config=lambda decoder=True: layers)

    def __call__(self, input_ids=None, **kwargs):
        self.calls.append(dict(input_ids=input_ids, **kwargs))
        out = Output(cache=None)
        out.logits = self.logits
        return out


def ours_on(model, scale, ids=None, mask=None):
    return ClassifierFreeGuidance(scale, UnconditionalBranch(model, "none", 4, ids, mask))


def log_softmax(x):
    return torch.log_softmax(x, dim=-1)


@pytest.mark.parametrize("variant", ["prompt and mask", "prompt", "all implicit"])
def test_transformers_classifier_free_guidance_case(variant):
    # tests/generation/test_logits_process.py::test_classifier_free_guidance: the same inputs and expectation
    logits_uncond = torch.tensor([[[1.0, 0, 1.5]]])
    logits_cond = torch.tensor([[1.0, 1.0, 1.0]])  # (their (1, 1, 3) scores at the last position)
    input_ids = torch.LongTensor([[0]])
    prompt = {"prompt and mask": (input_ids, torch.ones_like(input_ids)), "prompt": (input_ids, None),
              "all implicit": (None, None)}[variant]
    out = ours_on(FixedLogitsModel(logits_uncond), 1.5, *prompt)(input_ids, logits_cond)[0]
    expected = (log_softmax(logits_uncond) + 1.5 * (log_softmax(logits_cond) - log_softmax(logits_uncond)))[0, -1]
    for ours, theirs in zip(out.tolist(), expected.tolist()):
        assert ours == pytest.approx(theirs, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 4), vocab=st.integers(2, 60),
       scale=st.sampled_from([-2.0, 0.0, 0.3, 1.5, 3.0, 25.0]), steps=st.integers(1, 3))
def test_equals_transformers_processor_on_random_scores(seed, rows, vocab, scale, steps):
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        uncond = torch.randn(rows, 1, vocab, generator=g) * (1e3 if seed % 3 == 0 else 3)
        uncond[torch.rand(rows, 1, vocab, generator=g) < 0.1] = -float("inf")
        uncond[..., 0] = 0.5  # at least one finite entry per row
        scores = torch.randn(rows, vocab, generator=g) * (1e-3 if seed % 2 else 4)
        scores[:, -1] = scores[:, 0]  # a tie
        if step == 0:
            model = FixedLogitsModel(uncond)
            ours, theirs = ours_on(model, scale), UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model)
        model.logits = uncond
        ids = torch.randint(0, vocab, (rows, 3 + step), generator=g)
        before = scores.clone(), ids.clone()
        out = ours(ids, scores)
        assert torch.equal(scores, before[0]) and torch.equal(ids, before[1])  # never in place
        # bit for bit; NaN where both give NaN (scale 0 times an infinite difference at a -inf logit)
        torch.testing.assert_close(out, theirs(ids.clone(), scores.clone()), rtol=0, atol=0, equal_nan=True)


def test_the_branch_feeds_its_own_rows_one_token_per_step():
    """First call: the negative prompt (positions cumsum(mask) - 1, its mask); later calls: one slot, the
    newest conditional token, at the next position. The conditional rows' other tokens never enter."""
    model = FixedLogitsModel(torch.zeros(2, 1, 5))
    neg = torch.tensor([[0, 3, 4], [1, 2, 3]])
    neg_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    branch = UnconditionalBranch(model, "none", 3, neg, neg_mask)
    branch(torch.tensor([[9, 9, 7], [9, 9, 8]]))
    branch(torch.tensor([[9, 9, 7, 4], [9, 9, 8, 1]]))
    first, second = model.calls
    assert first["input_ids"].tolist() == [[0, 3, 4], [1, 2, 3]]
    assert first["position_ids"].tolist() == [[0, 0, 1], [0, 1, 2]]
    assert second["input_ids"].tolist() == [[0, 3, 4, 4], [1, 2, 3, 1]]  # no cache: the whole branch again
    assert second["position_ids"].tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]
    assert second["attention_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]


# (b) token identity with generate --------------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sample"])
@pytest.mark.parametrize("negative", [False, True], ids=["last-token", "negative-prompt"])
def test_tokens_equal_generate(tiny_model, padded_batch, cache, sampling, negative):
    ids, mask = padded_batch
    kwargs = dict(guidance_scale=2.0 if negative else 1.5, do_sample=sampling, **SHARED)
    if negative:
        kwargs.update(negative_prompt_ids=NEG, negative_prompt_attention_mask=torch.ones_like(NEG))
    reference, ours = both(tiny_model, ids, mask, cache, **kwargs)
    assert torch.equal(reference, ours.sequences)
    _, unguided = both(tiny_model, ids, mask, cache, do_sample=sampling, **SHARED)
    assert not torch.equal(unguided.sequences, ours.sequences)  # guidance changed something


def test_scores_equal_generate_bit_for_bit(tiny_model, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(guidance_scale=0.5, negative_prompt_ids=NEG, do_sample=True, top_k=0, output_scores=True,
                  return_dict_in_generate=True, **SHARED)
    reference, ours = both(tiny_model, ids, mask, "dynamic", **kwargs)
    assert torch.equal(reference.sequences, ours.sequences)
    assert all(torch.equal(a, b) for a, b in zip(reference.scores, ours.scores, strict=True))


def test_guidance_scale_from_a_generation_config_equals_generate(tiny_llama, padded_batch):
    ids, mask = padded_batch
    config = GenerationConfig(guidance_scale=1.5, max_new_tokens=6, pad_token_id=0)
    reference = tiny_llama.generate(ids, attention_mask=mask, generation_config=config)
    assert torch.equal(reference, decoding.generate(tiny_llama, ids, mask, generation_config=config).sequences)


@pytest.mark.parametrize("negative", [False, True], ids=["last-token", "negative-prompt"])
def test_num_return_sequences_equals_generate(tiny_model, padded_batch, negative):
    """generate needs the negative prompt repeated for the samples (else a shape error); we repeat it."""
    ids, mask = padded_batch
    kwargs = dict(guidance_scale=1.5, do_sample=True, num_return_sequences=2, **SHARED)
    torch.manual_seed(0)
    reference = tiny_model.generate(ids, attention_mask=mask, **kwargs,
                                    **({"negative_prompt_ids": NEG.repeat_interleave(2, dim=0)} if negative else {}))
    torch.manual_seed(0)
    ours = decoding.generate(tiny_model, ids, mask, **kwargs, **({"negative_prompt_ids": NEG} if negative else {}))
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
@pytest.mark.parametrize("sampling", [False, True], ids=["beam", "beam-sample"])
def test_beam_search_equals_generate(tiny_model, padded_batch, cache, sampling):
    """generate never reorders the unconditional rows with the beams; neither do we."""
    ids, mask = padded_batch
    kwargs = dict(guidance_scale=1.5, num_beams=3, num_return_sequences=2, do_sample=sampling, **SHARED)
    reference, ours = both(tiny_model, ids, mask, cache, **kwargs)
    assert torch.equal(reference, ours.sequences)


def test_beam_search_with_a_negative_prompt_equals_generate_given_it_per_beam(tiny_gpt2, padded_batch):
    ids, mask = padded_batch
    kwargs = dict(guidance_scale=2.0, num_beams=2, **SHARED)
    torch.manual_seed(0)
    reference = tiny_gpt2.generate(ids, attention_mask=mask, negative_prompt_ids=NEG.repeat_interleave(2, dim=0),
                                   **kwargs)
    ours = decoding.generate(tiny_gpt2, ids, mask, negative_prompt_ids=NEG, **kwargs)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.slow
def test_tokens_equal_generate_on_smollm2(smollm2):
    model, tokenizer = smollm2
    batch = tokenizer(["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,"],
                      return_tensors="pt", padding=True)
    negative = tokenizer(["I am sad today", "A boring list of"], return_tensors="pt")
    for kwargs in (dict(guidance_scale=1.5), dict(guidance_scale=2.0, negative_prompt_ids=negative.input_ids)):
        for cache in ("dynamic", "static"):
            reference, ours = both(model, batch.input_ids, batch.attention_mask, cache, max_new_tokens=12, **kwargs)
            assert torch.equal(reference, ours.sequences), (kwargs.keys(), cache)


# (c) the unconditional rows are separate -------------------------------------------------------------------

def plain_guided_loop(model, ids, mask, neg, neg_mask, scale, steps):
    """Greedy CFG with both branches recomputed from scratch each step (no cache), positions cumsum(mask) - 1:
    the unconditional branch sees the negative prompt and the chosen tokens, nothing else."""
    def last_logits(tokens, attention):
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=tokens, attention_mask=attention, position_ids=positions).logits[:, -1]

    chosen = []
    for _ in range(steps):
        conditional = log_softmax(last_logits(ids, mask).float())
        unconditional = log_softmax(last_logits(neg, neg_mask))
        token = (scale * (conditional - unconditional) + unconditional).argmax(-1, keepdim=True)  # (B, 1)
        chosen.append(token)
        ids, neg = torch.cat([ids, token], 1), torch.cat([neg, token], 1)
        mask, neg_mask = torch.cat([mask, torch.ones_like(token)], 1), torch.cat([neg_mask, torch.ones_like(token)], 1)
    return torch.cat(chosen, 1)


@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
def test_left_padded_negative_prompt_equals_a_plain_loop(tiny_model, padded_batch, cache):
    """transformers would count a padded negative row's positions by slot (not tested against it here);
    we count them from its first real token, as for the prompt."""
    ids, mask = padded_batch
    neg = torch.tensor([[0, 0, 41, 42], [51, 52, 53, 54], [0, 61, 62, 63]])
    neg_mask = (neg != 0).long()
    with torch.inference_mode():
        expected = plain_guided_loop(tiny_model, ids, mask, neg, neg_mask, 2.0, 6)
    ours = decoding.generate(tiny_model, ids, mask, cache=cache, guidance_scale=2.0, negative_prompt_ids=neg,
                             negative_prompt_attention_mask=neg_mask, max_new_tokens=6, eos_token_id=None)
    assert torch.equal(ours.sequences[:, ids.shape[1]:], expected)


def test_another_negative_prompt_gives_other_tokens(tiny_llama, padded_batch):
    ids, mask = padded_batch
    first, ours_first = both(tiny_llama, ids, mask, "dynamic", guidance_scale=3.0, negative_prompt_ids=NEG,
                             **SHARED)
    other, ours_other = both(tiny_llama, ids, mask, "dynamic", guidance_scale=3.0, negative_prompt_ids=NEG_OTHER,
                             **SHARED)
    assert torch.equal(first, ours_first.sequences) and torch.equal(other, ours_other.sequences)
    assert not torch.equal(ours_first.sequences, ours_other.sequences)


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sample"])
def test_guidance_scale_one_is_no_guidance_exactly(tiny_model, padded_batch, sampling):
    ids, mask = padded_batch
    runs = []
    for scale in (None, 1.0, 1):
        torch.manual_seed(0)
        runs.append(decoding.generate(tiny_model, ids, mask, guidance_scale=scale, do_sample=sampling, **SHARED))
    for run in runs[1:]:
        assert torch.equal(run.sequences, runs[0].sequences)
        assert torch.equal(run.token_logprobs, runs[0].token_logprobs)
    p = decoding.resolve_params(tiny_model, 5, guidance_scale=1.0, max_new_tokens=4)
    assert not any(isinstance(proc, ClassifierFreeGuidance) for proc in build_processors(p, 5, model=tiny_model))


# (d) batched sweeps ----------------------------------------------------------------------------------------

SWEEP_CONFIGS = [dict(), dict(guidance_scale=1.5), dict(guidance_scale=3.0, do_sample=True, top_k=0),
                 dict(do_sample=True, top_k=0), dict(guidance_scale=0.5, do_sample=True)]


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_sweep_rows_equal_separate_runs(tiny_model, padded_batch, cache):
    ids, mask = padded_batch
    seeds = [21, 22, 23, 24, 25]
    results = decoding.generate_sweep(tiny_model, ids, mask, configs=SWEEP_CONFIGS, cache=cache,
                                      generators=[torch.Generator().manual_seed(s) for s in seeds], **SHARED)
    for config, seed, result in zip(SWEEP_CONFIGS, seeds, results, strict=True):
        alone = decoding.generate(tiny_model, ids, mask, cache=cache, generator=torch.Generator().manual_seed(seed),
                                  **SHARED, **config)
        assert torch.equal(result.sequences, alone.sequences), config
        # (a 5x larger batch may round the logits differently in the last bits: tokens are what must agree)
        torch.testing.assert_close(result.token_logprobs, alone.token_logprobs, rtol=1e-5, atol=1e-5)


def test_row_guidance_equals_the_scalar_processor_row_by_row():
    """Guided rows bit for bit as the configuration's own processor; the others keep their raw scores exactly."""
    g = torch.Generator().manual_seed(0)
    scores, ids = torch.randn(8, 30, generator=g) * 5, torch.randint(0, 30, (8, 4), generator=g)
    uncond = torch.randn(4, 1, 30, generator=g)  # the 4 guided rows' unconditional logits
    scales = [None, 1.5, None, 3.0]  # 4 configurations of 2 rows each
    built = [None if s is None else ours_on(FixedLogitsModel(uncond), s) for s in scales]
    rows = row_guidance(built, 2, torch.arange(2).repeat(4), torch.device("cpu"))
    rows.branch.model = FixedLogitsModel(uncond)
    out = rows(ids, scores)
    for c, scale in enumerate(scales):
        block = slice(2 * c, 2 * c + 2)
        if scale is None:
            assert torch.equal(out[block], scores[block])
        else:
            alone = ours_on(FixedLogitsModel(uncond[[0, 1]] if c == 1 else uncond[[2, 3]]), scale)
            assert torch.equal(out[block], alone(ids[block], scores[block]))


def test_sweep_with_a_shared_negative_prompt_equals_separate_runs(tiny_gpt2, padded_batch):
    ids, mask = padded_batch
    configs = [dict(guidance_scale=1.5), dict(guidance_scale=2.5), dict(guidance_scale=2.5, do_sample=True)]
    generators = [None, None, torch.Generator().manual_seed(4)]
    results = decoding.generate_sweep(tiny_gpt2, ids, mask, configs=configs, generators=generators,
                                      negative_prompt_ids=NEG, num_return_sequences=1, **SHARED)
    for config, result, seed in zip(configs, results, [None, None, 4]):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        alone = decoding.generate(tiny_gpt2, ids, mask, negative_prompt_ids=NEG, generator=generator, **SHARED,
                                  **config)
        assert torch.equal(result.sequences, alone.sequences), config


def test_sweep_refuses_different_negative_prompts(tiny_llama, padded_batch):
    ids, mask = padded_batch
    with pytest.raises(ValueError, match="negative_prompt_ids"):
        decoding.generate_sweep(tiny_llama, ids, mask, configs=[
            dict(guidance_scale=1.5, negative_prompt_ids=NEG), dict(guidance_scale=1.5, negative_prompt_ids=NEG_OTHER)],
            **SHARED)


# (e) bad values --------------------------------------------------------------------------------------------

PROMPT = torch.tensor([[5, 6, 7], [8, 9, 10]])
ROWS2 = torch.tensor([[3, 4], [5, 6]])


def with_mask(mask):
    return dict(guidance_scale=1.5, negative_prompt_ids=ROWS2, negative_prompt_attention_mask=mask)


BAD = [
    (dict(guidance_scale=float("nan")), "guidance_scale", "nan"),
    (dict(guidance_scale=float("inf")), "guidance_scale", "inf"),
    (dict(guidance_scale="1.5"), "guidance_scale", "'1.5'"),
    (dict(guidance_scale=True), "guidance_scale", "True"),
    (dict(guidance_scale=1.5, negative_prompt_ids=ROWS2.float()), "negative_prompt_ids", "tensor"),
    (dict(guidance_scale=1.5, negative_prompt_ids=ROWS2[0]), "negative_prompt_ids", "tensor([3, 4])"),
    (dict(guidance_scale=1.5, negative_prompt_ids=[[3, 4], [5, 6]]), "negative_prompt_ids", "[[3, 4], [5, 6]]"),
    (dict(guidance_scale=1.5, negative_prompt_ids=torch.tensor([[3, -4], [5, 6]])), "negative_prompt_ids", "-4"),
    (dict(guidance_scale=1.5, negative_prompt_ids=torch.tensor([[3, 1000], [5, 6]])), "negative_prompt_ids", "1000"),
    (dict(guidance_scale=1.5, negative_prompt_ids=ROWS2[:1]), "negative_prompt_ids", "2 rows"),
    (dict(guidance_scale=1.5, negative_prompt_attention_mask=torch.ones(2, 2, dtype=torch.long)),
     "negative_prompt_attention_mask", "tensor"),
    (with_mask(torch.ones(2, 3, dtype=torch.long)), "negative_prompt_attention_mask", "(2, 2)"),
    (with_mask(torch.tensor([[1, 2], [1, 1]])), "negative_prompt_attention_mask", "0 (padding) and 1"),
    (with_mask(torch.tensor([[1, 0], [1, 1]])), "negative_prompt_attention_mask", "pad on the left"),
]


@pytest.fixture()
def counted_llama(tiny_llama):
    calls = []
    handle = tiny_llama.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield tiny_llama, calls
    handle.remove()


@pytest.mark.parametrize("kwargs, name, shown", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
@pytest.mark.parametrize("beam", [False, True], ids=["sample", "beam"])
def test_bad_values_are_named_before_any_forward(counted_llama, kwargs, name, shown, beam):
    model, calls = counted_llama
    with pytest.raises(ValueError) as info:
        decoding.generate(model, PROMPT, max_new_tokens=3, **kwargs, **({"num_beams": 2} if beam else {}))
    message = str(info.value)
    assert name in message and shown in message, message
    assert not calls, "a forward pass ran before the error"


def test_a_negative_prompt_without_guidance_is_ignored_with_a_warning(tiny_llama):
    with pytest.warns(UserWarning, match="negative_prompt_ids"):
        ours = decoding.generate(tiny_llama, PROMPT, max_new_tokens=3, negative_prompt_ids=ROWS2)
    reference = tiny_llama.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=3,
                                    negative_prompt_ids=ROWS2)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("scale", [0, 0.0, -1.5, 2])
def test_scales_transformers_allows_are_allowed(tiny_llama, padded_batch, scale):
    """0 and negative scales guide towards the unconditional prompt; an int works as generate takes it."""
    ids, mask = padded_batch
    reference, ours = reference_and_ours(tiny_llama, ids, mask, guidance_scale=scale, **SHARED)
    assert torch.equal(reference, ours.sequences)
