"""generate's outputs and hooks against `model.generate` itself (transformers 5): output_scores /
output_logits (beam_indices for beam search), user logits_processor / stopping_criteria, max_time, streamer.

Every reference is `model.generate(..., return_dict_in_generate=True, ...)` with the same arguments and the
same `torch.manual_seed`, on the tiny Llama and GPT-2 and a left-padded batch whose rows differ in length.
"""

from __future__ import annotations

import time

import pytest
import torch
from transformers import LogitsProcessor, MinLengthLogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

import decoding

OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)

SAMPLING_CASES = {
    "greedy": dict(do_sample=False),
    "greedy_penalties": dict(do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3),
    "sample_default_top_k": dict(do_sample=True),
    "sample_mixed": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2),
    "sample_return_sequences": dict(do_sample=True, top_k=0, num_return_sequences=2),
}

BEAM_CASES = {
    "beam": dict(num_beams=3),
    "beam_length_penalty": dict(num_beams=4, length_penalty=0.5, num_return_sequences=2),
    "beam_processors": dict(num_beams=2, repetition_penalty=1.4, no_repeat_ngram_size=2),
    "beam_sample": dict(num_beams=3, do_sample=True, top_k=30),
}


def both(model, ids, mask, seed=0, cache="dynamic", **kwargs):
    """generate (dynamic cache: our static slot cache equals it bit for bit; none: use_cache=False) and ours."""
    torch.manual_seed(seed)
    reference = model.generate(ids, attention_mask=mask, **kwargs, **({"use_cache": False} if cache == "none" else {}))
    torch.manual_seed(seed)
    ours = decoding.generate(model, ids, mask, cache=cache, **kwargs)
    return reference, ours


def assert_steps_equal(ours, reference, first_step_atol=0.0):
    """Bit-equal per step. `first_step_atol`: with num_return_sequences > 1 we prefill each prompt once and
    generate prefills every copy; the batch shape moves the prompt's logits by float32 rounding (1e-6)."""
    assert ours is not None and len(ours) == len(reference)
    for step, (a, b) in enumerate(zip(ours, reference)):
        assert a.shape == b.shape and a.dtype == b.dtype, step
        atol = first_step_atol if step == 0 else 0.0
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=f"step {step}")


def early_eos(model, ids, mask, **kwargs):
    """An EOS id that row 0 produces at its 3rd step: rows then end at different steps."""
    torch.manual_seed(0)
    free = decoding.generate(model, ids, mask, eos_token_id=[], **kwargs).new_token_ids
    return [int(free[0, 2])]


@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
def test_scores_and_logits_equal_generate(tiny_model, padded_batch, case, cache):
    ids, mask = padded_batch
    kwargs = dict(SAMPLING_CASES[case], max_new_tokens=8)
    kwargs["eos_token_id"] = early_eos(tiny_model, ids, mask, **kwargs)
    reference, ours = both(tiny_model, ids, mask, cache=cache, **kwargs, **OUTPUTS, pad_token_id=0)
    assert torch.equal(ours.sequences, reference.sequences)
    atol = 1e-5 if kwargs.get("num_return_sequences", 1) > 1 else 0.0
    assert_steps_equal(ours.scores, reference.scores, atol)
    assert_steps_equal(ours.logits, reference.logits, atol)
    assert ours.beam_indices is None


@pytest.mark.parametrize("case", sorted(BEAM_CASES))
def test_beam_scores_logits_and_indices_equal_generate(tiny_model, padded_batch, case):
    ids, mask = padded_batch
    kwargs = dict(BEAM_CASES[case], max_new_tokens=7)
    kwargs["eos_token_id"] = early_eos(tiny_model, ids, mask, **{k: v for k, v in kwargs.items()
                                                                  if k in ("num_beams", "do_sample")})
    reference, ours = both(tiny_model, ids, mask, **kwargs, **OUTPUTS, pad_token_id=0)
    assert torch.equal(ours.sequences, reference.sequences)
    torch.testing.assert_close(ours.sequences_scores, reference.sequences_scores)
    assert_steps_equal(ours.scores, reference.scores)
    assert_steps_equal(ours.logits, reference.logits)
    assert ours.beam_indices.dtype == reference.beam_indices.dtype
    assert torch.equal(ours.beam_indices, reference.beam_indices)
    # transformers' own tool reads our outputs as it reads generate's.
    transition = tiny_model.compute_transition_scores(ours.sequences, ours.scores, ours.beam_indices)
    expected = tiny_model.compute_transition_scores(reference.sequences, reference.scores, reference.beam_indices)
    torch.testing.assert_close(transition, expected)


def test_only_output_scores_collects_only_scores(tiny_llama, padded_batch):
    ids, mask = padded_batch
    plain = decoding.generate(tiny_llama, ids, mask, max_new_tokens=4)
    assert plain.scores is None and plain.logits is None and plain.beam_indices is None
    scores_only = decoding.generate(tiny_llama, ids, mask, max_new_tokens=4, output_scores=True)
    assert len(scores_only.scores) == 4 and scores_only.logits is None
    assert torch.equal(scores_only.sequences, plain.sequences)


class BiasToken(LogitsProcessor):
    """Adds `bias` to one token's score: after temperature it is not scaled, before it is."""

    def __init__(self, token: int, bias: float):
        self.token, self.bias = token, bias

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token] += self.bias
        return scores


class EndWhenLastIs(StoppingCriteria):
    """Flags a row once its last token is in `tokens`; records what `scores` it was handed."""

    def __init__(self, tokens):
        self.tokens = torch.tensor(tokens)
        self.seen_scores = []

    def __call__(self, input_ids, scores, **kwargs):
        self.seen_scores.append(None if scores is None else len(scores))
        return torch.isin(input_ids[:, -1], self.tokens)


@pytest.mark.parametrize("kwargs", [
    dict(do_sample=False),
    dict(do_sample=True, temperature=0.5, top_k=10),
    dict(num_beams=3),
    dict(num_beams=2, do_sample=True, temperature=0.7),
], ids=["greedy", "sample_temperature", "beam", "beam_sample"])
def test_user_processor_runs_where_generate_runs_it(tiny_model, padded_batch, kwargs):
    """A bias of 3 on a token: placed before temperature 0.5 it counts double; the scores show where it ran."""
    ids, mask = padded_batch
    torch.manual_seed(0)
    favourite = int(decoding.generate(tiny_model, ids, mask, max_new_tokens=1, **kwargs).new_token_ids[1, 0]) + 1
    reference, ours = both(tiny_model, ids, mask, max_new_tokens=6, logits_processor=[BiasToken(favourite, 3.0)],
                           **kwargs, **OUTPUTS)
    assert torch.equal(ours.sequences, reference.sequences)
    assert_steps_equal(ours.scores, reference.scores)


def test_user_processor_of_a_built_in_type_takes_its_place(tiny_model, padded_batch):
    """transformers 5: a user MinLengthLogitsProcessor replaces the one min_length builds (no error), so the
    user's weaker minimum (1 new token) wins over min_length's 5 and row 0 may end at its 3rd token."""
    ids, mask = padded_batch
    eos = early_eos(tiny_model, ids, mask, do_sample=False)
    user = MinLengthLogitsProcessor(ids.shape[1] + 1, eos)
    common = dict(max_new_tokens=8, eos_token_id=eos, pad_token_id=0, min_length=ids.shape[1] + 5)
    reference, ours = both(tiny_model, ids, mask, logits_processor=[user], **common, **OUTPUTS)
    assert torch.equal(ours.sequences, reference.sequences)
    assert_steps_equal(ours.scores, reference.scores)
    assert ours.finish_reasons[0] == "eos" and int(ours.new_token_mask[0].sum()) == 3
    without = decoding.generate(tiny_model, ids, mask, **common)
    assert int(without.new_token_mask[0].sum()) >= 5  # min_length alone holds EOS back


@pytest.mark.parametrize("kwargs", [
    dict(do_sample=True, top_k=5, renormalize_logits=True, suppress_tokens=[3, 4]),
    dict(num_beams=2, renormalize_logits=True, suppress_tokens=[3, 4], repetition_penalty=1.3),
], ids=["sample", "beam"])
def test_user_processors_between_generates_own(tiny_model, padded_batch, kwargs):
    """A user SuppressTokensLogitsProcessor replaces the suppress_tokens one in its place; the user's bias
    runs after the penalties and before top-k and the final renormalisation, as in generate."""
    from transformers import SuppressTokensLogitsProcessor

    ids, mask = padded_batch
    torch.manual_seed(0)
    favourite = int(decoding.generate(tiny_model, ids, mask, max_new_tokens=1, **kwargs).new_token_ids[0, 0])
    user = [BiasToken(favourite + 1, 2.5), SuppressTokensLogitsProcessor([favourite])]
    reference, ours = both(tiny_model, ids, mask, max_new_tokens=5, logits_processor=user, **kwargs, **OUTPUTS)
    assert torch.equal(ours.sequences, reference.sequences)
    assert_steps_equal(ours.scores, reference.scores)
    assert not (ours.new_token_ids[:, 0] == favourite).any()  # the user's suppression ran


@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_k=0), dict(num_beams=3)], ids=["sample", "beam"])
@pytest.mark.parametrize("output_scores", [False, True])
def test_user_stopping_criteria_end_rows_as_in_generate(tiny_model, padded_batch, kwargs, output_scores):
    ids, mask = padded_batch
    torch.manual_seed(0)
    free = decoding.generate(tiny_model, ids, mask, max_new_tokens=8, eos_token_id=[], **kwargs).new_token_ids
    stop_on = [int(free[0, 1]), int(free[-1, 3])]
    theirs, mine = EndWhenLastIs(stop_on), EndWhenLastIs(stop_on)
    extra = dict(return_dict_in_generate=True, output_scores=True) if output_scores else {}
    torch.manual_seed(0)
    reference = tiny_model.generate(ids, attention_mask=mask, max_new_tokens=8, stopping_criteria=[theirs],
                                    **kwargs, **extra)
    torch.manual_seed(0)
    ours = decoding.generate(tiny_model, ids, mask, max_new_tokens=8, stopping_criteria=[mine], **kwargs, **extra)
    expected = reference.sequences if output_scores else reference
    assert torch.equal(ours.sequences, expected)
    assert mine.seen_scores == theirs.seen_scores  # None, or the number of steps' scores so far
    assert "stopping_criteria" in ours.finish_reasons


class SlowDown(LogitsProcessor):
    def __call__(self, input_ids, scores):
        time.sleep(0.02)
        return scores


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(num_beams=2)], ids=["greedy", "beam"])
def test_max_time_stops_a_long_generation(tiny_llama, kwargs):
    ids = torch.tensor([[5, 6, 7]])
    free = decoding.generate(tiny_llama, ids, max_new_tokens=40, eos_token_id=[], **kwargs)
    # Each step sleeps 0.02 s, so 40 steps take 0.8 s at least: a limit of 0.1 s must end the call early.
    ours = decoding.generate(tiny_llama, ids, max_new_tokens=40, eos_token_id=[], max_time=0.1,
                             logits_processor=[SlowDown()], **kwargs)
    generated = ours.new_token_ids.shape[1]
    assert 1 <= generated < 40 and ours.finish_reasons == ["max_time"]
    if "num_beams" not in kwargs:  # the tokens so far are the tokens of the unlimited run
        assert torch.equal(ours.sequences, free.sequences[:, : ids.shape[1] + generated])
    reference = tiny_llama.generate(ids, max_new_tokens=40, eos_token_id=None, max_time=0.1,
                                    logits_processor=[SlowDown()], **kwargs)
    assert reference.shape[1] - ids.shape[1] < 40  # generate stops too


def test_max_time_stops_diverse_beam_search(tiny_llama):
    ids = torch.tensor([[5, 6, 7]])
    ours = decoding.generate(tiny_llama, ids, max_new_tokens=40, eos_token_id=[], max_time=0.1, num_beams=4,
                             num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2,
                             logits_processor=[SlowDown()])
    assert ours.new_token_ids.shape[1] < 40 and ours.finish_reasons == ["max_time", "max_time"]


class Recording(BaseStreamer):
    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(("put", value.clone()))

    def end(self):
        self.calls.append(("end", None))


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_p=0.9)], ids=["greedy", "sample"])
def test_streamer_gets_what_generate_sends(tiny_model, kwargs):
    ids = torch.tensor([[5, 6, 7, 8]])
    theirs, mine = Recording(), Recording()
    torch.manual_seed(0)
    reference = tiny_model.generate(ids, max_new_tokens=6, streamer=theirs, **kwargs)
    torch.manual_seed(0)
    ours = decoding.generate(tiny_model, ids, max_new_tokens=6, streamer=mine, **kwargs)
    assert torch.equal(ours.sequences, reference)
    assert [kind for kind, _ in mine.calls] == [kind for kind, _ in theirs.calls]
    for (_, a), (_, b) in zip(mine.calls, theirs.calls):
        assert (a is None and b is None) or (torch.equal(a, b) and a.device.type == "cpu")


def test_text_iterator_streamer_yields_the_generated_text(tiny_llama):
    from transformers import TextIteratorStreamer

    class Digits:  # the smallest tokenizer a text streamer can decode with
        def decode(self, ids, **kwargs):
            return "".join(f"<{i}>" for i in ids)

    streamer = TextIteratorStreamer(Digits(), skip_prompt=True)
    out = decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), max_new_tokens=5, eos_token_id=[],
                            streamer=streamer)
    text = "".join(streamer)  # end() put the stop signal in the queue, so iterating finishes
    assert text == "".join(f"<{i}>" for i in out.new_token_ids[0].tolist())


def test_sweep_gives_each_configuration_its_own_scores(tiny_llama, padded_batch):
    ids, mask = padded_batch
    configs = [dict(do_sample=True, top_k=0, top_p=p) for p in (0.6, 0.9)]
    results = decoding.generate_sweep(tiny_llama, ids, mask, configs=configs, max_new_tokens=5,
                                      generators=[torch.Generator().manual_seed(s) for s in (0, 1)],
                                      output_scores=True, output_logits=True)
    for seed, config, swept in zip((0, 1), configs, results):
        alone = decoding.generate(tiny_llama, ids, mask, max_new_tokens=5, generator=torch.Generator().manual_seed(seed),
                                  output_scores=True, output_logits=True, **config)
        assert torch.equal(swept.sequences, alone.sequences)
        assert len(swept.scores) == len(alone.scores) and len(swept.logits) == len(alone.logits)
        for a, b in zip(swept.scores + swept.logits, alone.scores + alone.logits):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # the batch's kernels may round differently


def test_diverse_beam_scores_and_indices_explain_the_beam_scores(tiny_llama, padded_batch):
    """No transformers 5 reference (group search left its core): the recorded scores at beam_indices, summed
    over each hypothesis, are its beam score before the length penalty."""
    ids, mask = padded_batch
    out = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, num_beams=4, num_beam_groups=2,
                            diversity_penalty=1.0, num_return_sequences=2, length_penalty=0.0, **OUTPUTS)
    assert len(out.scores) == len(out.logits) >= out.new_token_ids.shape[1]  # steps run >= longest returned
    assert all(s.shape == (ids.shape[0] * 4, 1000) for s in out.scores)
    tokens = out.new_token_ids
    for h in range(tokens.shape[0]):
        picked = [out.scores[t][out.beam_indices[h, t], tokens[h, t]] for t in range(tokens.shape[1])
                  if out.beam_indices[h, t] >= 0]
        torch.testing.assert_close(torch.stack(picked).sum(), out.sequences_scores[h], rtol=1e-5, atol=1e-5)


def test_sweep_places_user_processors_as_each_run_alone(tiny_llama, padded_batch):
    """A greedy and a sampling configuration in one batch: the user's bias runs before the (per-row) warpers,
    so each configuration's scores are generate's."""
    ids, mask = padded_batch
    configs = [dict(do_sample=False), dict(do_sample=True, temperature=0.5, top_k=0)]
    user = [BiasToken(7, 3.0)]
    results = decoding.generate_sweep(tiny_llama, ids, mask, configs=configs, max_new_tokens=5, logits_processor=user,
                                      generators=[torch.Generator().manual_seed(s) for s in (0, 1)], **OUTPUTS)
    for seed, config, swept in zip((0, 1), configs, results):
        torch.manual_seed(seed)  # a seeded generator draws what the global RNG draws after manual_seed
        reference = tiny_llama.generate(ids, attention_mask=mask, max_new_tokens=5, logits_processor=user,
                                        **config, **OUTPUTS)
        assert torch.equal(swept.sequences, reference.sequences)
        for a, b in zip(swept.scores, reference.scores):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # the batch's kernels may round differently


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_p=0.9), dict(num_beams=3)], ids=["top_p", "beam"])
def test_smollm2_outputs_and_text_streamer_equal_generate(smollm2, kwargs):
    from transformers import TextIteratorStreamer

    model, tokenizer = smollm2
    batch = tokenizer(["The state of the union is", "Tonight"], return_tensors="pt", padding=True)
    reference, ours = both(model, batch.input_ids, batch.attention_mask, max_new_tokens=10, **kwargs, **OUTPUTS)
    assert torch.equal(ours.sequences, reference.sequences)
    assert_steps_equal(ours.scores, reference.scores)
    assert_steps_equal(ours.logits, reference.logits)
    if "num_beams" in kwargs:
        assert torch.equal(ours.beam_indices, reference.beam_indices)
        return
    one = tokenizer(["Tonight"], return_tensors="pt")
    texts = []
    for run in (model.generate, lambda ids, **kw: decoding.generate(model, ids, **kw)):
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        torch.manual_seed(0)
        run(one.input_ids, max_new_tokens=10, streamer=streamer, **kwargs)
        texts.append(list(streamer))
    assert texts[0] == texts[1] and "".join(texts[1])


def test_a_user_criterion_with_an_eos_attribute_pads_finished_rows_as_generate(tiny_llama, padded_batch):
    """generate pads ended rows when any criterion has `eos_token_id`, even with no EOS id (explicit None)."""
    ids, mask = padded_batch
    free = decoding.generate(tiny_llama, ids, mask, max_new_tokens=6, eos_token_id=[]).new_token_ids
    for has_attribute in (False, True):
        criterion = EndWhenLastIs([int(free[0, 1])])
        if has_attribute:
            criterion.eos_token_id = None  # only its presence counts
        common = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=0, stopping_criteria=[criterion])
        reference = tiny_llama.generate(ids, attention_mask=mask, **common)
        ours = decoding.generate(tiny_llama, ids, mask, **common)
        assert torch.equal(ours.sequences, reference)
        assert ours.finish_reasons[0] == "stopping_criteria"
        assert bool((ours.new_token_ids[0, 2:] == 0).all()) == has_attribute
