"""The OpenAI / vLLM parameters (decoding/processors/openai_penalties.py): presence_penalty, frequency_penalty,
logit_bias, allowed_token_ids, and vLLM's min_tokens (our min_new_tokens).

What must hold: the processors give vLLM's logits on the golden cases (tests/goldens/vllm_penalties_cases.py, a
numpy transcription of vLLM's sampler, vLLM's order, left-padded batches); hand-computed values; they never
change their input, count only the generated tokens (never the prompt or its left padding), keep -inf, leave
at least one token; a sweep row equals its configuration alone bit for bit; through generate they do what their
name says; bad values are refused with the parameter named, before any forward pass.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import decoding
from decoding.params import resolve_params
from decoding.processors import build_processors
from decoding.processors.openai_penalties import (AllowedTokenIds, LogitBias, PresenceFrequencyPenalty,
                                                  RowPresenceFrequencyPenalty)
from decoding.sweep import generate_sweep

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "vllm_penalties.json").read_text())
NEG_INF = -math.inf


def as_tensor(values: list) -> torch.Tensor:
    return torch.tensor([NEG_INF if v is None else v for v in values], dtype=torch.float32)


def golden_batch(batch: dict, pad: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """(input_ids (B, T + n) left-padded with `pad`, prompt_start (B,), T, logits (B, V), expected (B, V))."""
    rows = batch["rows"]
    width = max(len(r["prompt"]) for r in rows)
    ids = [[pad] * (width - len(r["prompt"])) + r["prompt"] + r["output"] for r in rows]
    start = [width - len(r["prompt"]) for r in rows]
    logits = torch.stack([as_tensor(r["logits"]) for r in rows])
    expected = torch.stack([as_tensor(r["expected"]) for r in rows])
    return torch.tensor(ids), torch.tensor(start), width, logits, expected


def golden_params(settings: dict, prompt_length: int, new_tokens: int):
    given = dict(settings)
    if "logit_bias" in given:  # stored as [key, bias] pairs: the keys keep their spelling (ints and "3" strings)
        given["logit_bias"] = {key: bias for key, bias in given["logit_bias"]}
    given.setdefault("eos_token_id", [GOLDEN["vocab_size"] - 1])
    return resolve_params(None, prompt_length, do_sample=False, sampler_order="vllm",
                          max_new_tokens=new_tokens + 4, pad_token_id=GOLDEN["pad_token_id"], **given)


@pytest.mark.parametrize("index", range(len(GOLDEN["batches"])))
def test_matches_vllm_golden_cases(index):
    batch = GOLDEN["batches"][index]
    ids, start, width, logits, expected = golden_batch(batch, GOLDEN["pad_token_id"])
    assert not torch.equal(logits, expected)  # every batch's settings change something
    params = golden_params(batch["settings"], width, ids.shape[1] - width)
    out = build_processors(params, width, start)(ids, logits)
    assert torch.equal(torch.isinf(out), torch.isinf(expected)), batch["settings"]
    finite = torch.isfinite(expected)
    assert (out[finite] - expected[finite]).abs().max() <= 1e-6, batch["settings"]


def test_repetition_penalty_is_vllms_on_a_left_padded_batch_only_with_the_padding_skipped():
    """vLLM penalises the tokens of the unpadded prompt and the output (csrc/sampler.cu: x > 0 ? x / p : x * p),
    ours the same tokens once it is told each row's left padding (prompt_start, as generate passes it); counting
    the pad slots (pad id 0, a real token here) as seen text would penalise token 0 in rows without it."""
    batch = next(b for b in GOLDEN["batches"] if b["settings"] == {"repetition_penalty": 1.5})
    ids, start, width, logits, expected = golden_batch(batch, GOLDEN["pad_token_id"])
    assert start.tolist() == [0, 1, 2]
    params = golden_params(batch["settings"], width, ids.shape[1] - width)
    assert torch.equal(build_processors(params, width, start)(ids, logits), expected)  # bit for bit
    with_padding = build_processors(params, width, None)(ids, logits)
    assert not torch.equal(with_padding[2], expected[2]) and with_padding[2, 0] != expected[2, 0]


def test_golden_file_records_how_it_was_made():
    assert GOLDEN["command"] == ".venv/bin/python -m tests.goldens.vllm_penalties_cases"
    assert "vllm/model_executor/layers/utils.py" in GOLDEN["sources"] and GOLDEN["versions"]["numpy"]


# -- hand-computed -------------------------------------------------------------------------------------------


def test_presence_and_frequency_by_hand():
    ids = torch.tensor([[2, 2, 1, 1, 3]])  # prompt [2, 2], generated [1, 1, 3]
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, NEG_INF]])
    out = PresenceFrequencyPenalty(frequency=0.5, presence=1.0, prompt_length=2)(ids, scores)
    # token 1: 1 - 0.5 * 2 - 1 = -1; token 3: 1 - 0.5 - 1 = -0.5; token 2 only in the prompt: untouched
    assert out.tolist() == [[0.0, -1.0, 1.0, -0.5, NEG_INF]]


def test_negative_weights_reward_repeats_by_hand():
    ids = torch.tensor([[0, 4, 4]])
    out = PresenceFrequencyPenalty(frequency=-0.25, presence=-2.0, prompt_length=1)(ids, torch.zeros(1, 5))
    assert out.tolist() == [[0.0, 0.0, 0.0, 0.0, 2.5]]


def test_logit_bias_by_hand_with_string_and_int_keys():
    scores = torch.tensor([[0.5, -1.0, 2.0, NEG_INF]])
    out = LogitBias({"2": 1.5, 0: -3, 3: 100})(torch.zeros(1, 1, dtype=torch.long), scores)
    assert out.tolist() == [[-2.5, -1.0, 3.5, NEG_INF]]  # -inf plus a finite bias stays -inf


def test_allowed_token_ids_by_hand():
    out = AllowedTokenIds([3, 1, 3])(torch.zeros(1, 1, dtype=torch.long), torch.arange(5.0)[None])
    assert out.tolist() == [[NEG_INF, 1.0, NEG_INF, 3.0, NEG_INF]]


# -- properties ----------------------------------------------------------------------------------------------


def processors():
    return [PresenceFrequencyPenalty(0.7, 0.3, 3), PresenceFrequencyPenalty(0.0, -1.1, 3),
            LogitBias({1: 2.0, "5": -7.5}), AllowedTokenIds([0, 6, 7])]


@pytest.mark.parametrize("processor", processors(), ids=lambda p: type(p).__name__)
def test_never_in_place(processor):
    ids = torch.tensor([[1, 2, 3, 4, 4, 6], [0, 0, 5, 5, 1, 6]])
    scores = torch.randn(2, 9, generator=torch.Generator().manual_seed(0))
    before = scores.clone()
    out = processor(ids, scores)
    assert torch.equal(scores, before) and out is not scores and not torch.equal(out, scores)


def test_at_least_one_token_survives_allowed_token_ids():
    gen = torch.Generator().manual_seed(1)
    for trial in range(20):
        vocab = int(torch.randint(2, 50, (1,), generator=gen))
        allowed = torch.randint(0, vocab, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
        scores = torch.randn(3, vocab, generator=gen) * 10
        out = AllowedTokenIds(allowed)(torch.zeros(3, 1, dtype=torch.long), scores)
        assert torch.isfinite(out).any(-1).all()
        assert set(torch.isfinite(out).nonzero()[:, 1].tolist()) == set(allowed)


def test_logit_bias_leaves_every_other_logit_bit_for_bit():
    scores = torch.tensor([[-0.0, 1e-30, NEG_INF, 3.25, float("nan")]])
    out = LogitBias({3: 0.5})(torch.zeros(1, 1, dtype=torch.long), scores)
    others = [0, 1, 2, 4]
    assert torch.equal(out[:, others].view(torch.int32), scores[:, others].view(torch.int32))
    assert out[0, 3].item() == 3.75


def test_prompt_and_left_padding_are_never_counted():
    pad = 7
    ids = torch.tensor([[pad, pad, 2, 3, 2], [1, 2, 3, 4, 9]])  # prompt length 4; row 0 has 2 padding slots
    penalty = PresenceFrequencyPenalty(1.0, 1.0, prompt_length=4)
    scores = torch.zeros(2, 10)
    out = penalty(ids, scores)
    expected = torch.zeros(2, 10)
    expected[0, 2] = -2.0  # the one generated 2 (the prompt's 2 does not count), pad 7 untouched
    expected[1, 9] = -2.0
    assert torch.equal(out, expected)
    assert torch.equal(penalty(ids[:, :4], scores), scores)  # nothing generated yet: nothing changes


def test_minus_infinity_stays_minus_infinity():
    ids = torch.tensor([[0, 1, 1, 2]])
    scores = torch.tensor([[0.0, NEG_INF, NEG_INF, 0.0]])
    for frequency, presence in ((2.0, 2.0), (-2.0, -2.0)):
        out = PresenceFrequencyPenalty(frequency, presence, 1)(ids, scores)
        assert out[0, 1] == NEG_INF and out[0, 2] == NEG_INF


def test_rows_equal_each_configuration_alone_bit_for_bit():
    gen = torch.Generator().manual_seed(2)
    built = [PresenceFrequencyPenalty(0.5, 0.0, 3), None, PresenceFrequencyPenalty(-1.3, 0.0, 3),
             PresenceFrequencyPenalty(0.1, 1.7, 3)]
    n = 2
    ids = torch.randint(0, 12, (len(built) * n, 9), generator=gen)
    scores = torch.randn(len(built) * n, 12, generator=gen)
    scores[0, 3] = scores[3, 5] = NEG_INF
    rows = PresenceFrequencyPenalty.for_rows(built, n, torch.device("cpu"))
    assert isinstance(rows, RowPresenceFrequencyPenalty)
    out = rows(ids, scores)
    for c, processor in enumerate(built):
        block = slice(c * n, (c + 1) * n)
        alone = scores[block] if processor is None else processor(ids[block], scores[block])
        assert torch.equal(out[block].view(torch.int32), alone.view(torch.int32)), c


def test_repr_shows_the_weights_so_sweeps_can_compare():
    assert repr(PresenceFrequencyPenalty(0.5, 0.0, 3)) != repr(PresenceFrequencyPenalty(0.25, 0.0, 3))
    assert repr(LogitBias({"3": 1.0})) == repr(LogitBias({3: 1.0}))


# -- through generate ------------------------------------------------------------------------------------------

PROMPT = torch.tensor([[7, 8, 9, 10, 7, 8]])


@pytest.mark.parametrize("do_sample", [False, True])
def test_allowed_token_ids_restrict_every_generated_token(tiny_llama, do_sample):
    allowed = [5, 17, 99, 300, 640]
    out = decoding.generate(tiny_llama, PROMPT, max_new_tokens=12, do_sample=do_sample, allowed_token_ids=allowed,
                            generator=torch.Generator().manual_seed(3), eos_token_id=None, pad_token_id=0)
    new = out.new_token_ids[0].tolist()
    assert len(new) == 12 and set(new) <= set(allowed)


def test_logit_bias_of_100_makes_greedy_pick_the_token(tiny_llama):
    plain = decoding.generate(tiny_llama, PROMPT, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    target = next(t for t in range(1, 1000) if t not in plain.new_token_ids[0].tolist())
    out = decoding.generate(tiny_llama, PROMPT, max_new_tokens=6, eos_token_id=None, pad_token_id=0,
                            logit_bias={str(target): 100.0})
    assert out.new_token_ids[0].tolist() == [target] * 6


def repeats(tokens: list[int]) -> int:
    return len(tokens) - len(set(tokens))


def test_presence_penalty_lowers_repeats(tiny_llama):
    common = dict(max_new_tokens=24, eos_token_id=None, pad_token_id=0)
    plain = decoding.generate(tiny_llama, PROMPT, **common).new_token_ids[0].tolist()
    penalised = decoding.generate(tiny_llama, PROMPT, presence_penalty=2.0, **common).new_token_ids[0].tolist()
    assert repeats(plain) > 0, plain  # greedy on the tiny model loops: something to lower
    assert repeats(penalised) < repeats(plain), (plain, penalised)


def test_a_sweep_over_presence_and_frequency_equals_each_configuration_alone(tiny_llama, padded_batch):
    ids, mask = padded_batch
    shared = dict(max_new_tokens=10, eos_token_id=[5], pad_token_id=0, top_k=0, logit_bias={"3": 2.0})
    configs = [dict(do_sample=True, presence_penalty=1.5), dict(do_sample=True, frequency_penalty=-0.8),
               dict(do_sample=True), dict(do_sample=True, presence_penalty=0.4, frequency_penalty=1.1),
               dict(do_sample=False, frequency_penalty=2.0)]
    seeds = [31, 32, 33, 34, None]
    gens = [torch.Generator().manual_seed(s) if s is not None else None for s in seeds]
    results = generate_sweep(tiny_llama, ids, mask, configs=configs, generators=gens, **shared)
    for config, seed, result in zip(configs, seeds, results):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        alone = decoding.generate(tiny_llama, ids, mask, generator=generator, **shared, **config)
        assert torch.equal(result.sequences, alone.sequences), config
    greedy_plain = decoding.generate(tiny_llama, ids, mask, **{**shared, "do_sample": False})
    assert not torch.equal(results[-1].sequences, greedy_plain.sequences)  # the penalty changed that run


@pytest.mark.parametrize("setting", [dict(presence_penalty=1.0, frequency_penalty=0.5),
                                     dict(logit_bias={"3": 1.0}, allowed_token_ids=list(range(0, 1000, 2)))])
def test_speculative_greedy_with_them_is_greedy(tiny_llama, setting):
    ids = torch.tensor([[11, 12, 13, 14, 11, 12, 13], [0, 0, 21, 22, 23, 21, 22]])  # the verify pass sees each
    common = dict(max_new_tokens=12, eos_token_id=None, pad_token_id=0, **setting)  # row's own history
    plain = decoding.generate(tiny_llama, ids, (ids != 0).long(), **common)
    lookup = decoding.generate(tiny_llama, ids, (ids != 0).long(), prompt_lookup_num_tokens=3, **common)
    assert torch.equal(plain.sequences, lookup.sequences)


def test_min_tokens_is_min_new_tokens(tiny_llama):
    first = decoding.generate(tiny_llama, PROMPT, max_new_tokens=1, pad_token_id=0).new_token_ids[0, 0].item()
    common = dict(max_new_tokens=8, eos_token_id=[first], pad_token_id=0)
    assert decoding.generate(tiny_llama, PROMPT, **common).new_token_ids.shape[1] == 1  # EOS at once without it
    vllm = decoding.generate(tiny_llama, PROMPT, min_tokens=4, **common)
    ours = decoding.generate(tiny_llama, PROMPT, min_new_tokens=4, **common)
    assert torch.equal(vllm.sequences, ours.sequences)
    assert first not in vllm.new_token_ids[0, :4].tolist()
    with pytest.raises(ValueError, match="min_tokens=4 contradicts min_new_tokens=3"):
        decoding.generate(tiny_llama, PROMPT, min_tokens=4, min_new_tokens=3, **common)


def test_hydra_containers_are_accepted():
    from omegaconf import OmegaConf

    config = OmegaConf.create({"logit_bias": {"42": 100.0}, "allowed_token_ids": [42, 43]})
    p = resolve_params(None, 4, max_new_tokens=2, logit_bias=config.logit_bias,
                       allowed_token_ids=config.allowed_token_ids)
    assert [repr(x) for x in build_processors(p, 4)] == [repr(AllowedTokenIds([42, 43])), repr(LogitBias({42: 100.0}))]


# -- bad input -----------------------------------------------------------------------------------------------

BAD = [
    ("presence_penalty", 2.5), ("presence_penalty", -3), ("presence_penalty", True), ("presence_penalty", "0.5"),
    ("presence_penalty", float("nan")), ("frequency_penalty", float("inf")), ("frequency_penalty", -2.01),
    ("logit_bias", {}), ("logit_bias", {"a": 1.0}), ("logit_bias", {1.5: 1.0}), ("logit_bias", {True: 1.0}),
    ("logit_bias", {-1: 1.0}), ("logit_bias", {1: 101.0}), ("logit_bias", {1: NEG_INF}), ("logit_bias", {1: "x"}),
    ("logit_bias", {1: float("nan")}), ("logit_bias", {"\u00b2": 1.0}), ("logit_bias", {"3": 1.0, 3: 2.0}),
    ("logit_bias", [[1, 2.0]]),
    ("allowed_token_ids", []), ("allowed_token_ids", [-1]), ("allowed_token_ids", [1.0]),
    ("allowed_token_ids", "12"), ("allowed_token_ids", [True]), ("allowed_token_ids", 5),
]


@pytest.mark.parametrize("name, value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_bad_values_are_named(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        resolve_params(None, 4, max_new_tokens=4, **{name: value})


@pytest.mark.parametrize("name, value", [("logit_bias", {1000: 1.0}), ("logit_bias", {"4000": 1.0}),
                                         ("allowed_token_ids", [3, 1000])])
def test_ids_outside_the_vocabulary_are_refused_before_the_forward_pass(tiny_llama, monkeypatch, name, value):
    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran before the check")

    monkeypatch.setattr(tiny_llama, "forward", no_forward)  # restored after the test
    with pytest.raises(ValueError, match=f"^{name}=.*\\[0, 1000\\)"):
        decoding.generate(tiny_llama, PROMPT, max_new_tokens=2, **{name: value})
