"""Mirostat v1 and v2 (decoding/processors/mirostat.py).

What must hold:
- hand-computed steps (the arithmetic is in the comments): v2's surprise cut, v1's Zipf exponent and k, and mu
  after `observe`;
- properties on hypothesis-drawn scores: never in place, a token always survives, and the per-row version
  (`for_rows`) gives every row bit for bit what the scalar processor gives it alone over several steps, its mu
  included; rows without mirostat unchanged and their mu untouched;
- bad values are refused by name before anything runs; beam search and speculative decoding refuse mirostat;
- real runs: a seeded run repeats; a batched sweep equals each configuration run alone; with SmolLM2 the mean
  surprise of the sampled tokens stays near tau (below what plain sampling gives);
- llama.cpp's own runs (tests/decoding/goldens/llama_mirostat.json, made by tests/goldens/llama_mirostat.py):
  replaying llama.cpp's selected tokens through `observe`, each step keeps the same ids with the same
  renormalised probabilities (within 1e-6) and mu follows llama.cpp's, on random logits and on SmolLM2's.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import decoding
from decoding.params import GenerationParams
from decoding.processors.mirostat import Mirostat, build_mirostat, zipf_exponent, zipf_top_k
from decoding.processors.temperature import Temperature
from decoding.sweep import generate_sweep
from tests.decoding.test_processor_properties import PROPERTY, score_tensors
from tests.goldens.smollm2_logits import next_token_logits, same_fingerprint, fingerprint
from tests.goldens.golden_dir import llama_golden

INF = math.inf
GOLDEN_PATH = llama_golden("llama_mirostat.json")
GOLDEN = json.loads(GOLDEN_PATH.read_text())


def survivors(scores: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in scores]


def fresh(version: int, tau: float, eta: float, n_vocab: int | None = None) -> Mirostat:
    processor = Mirostat(version, tau, eta, n_vocab)
    processor.bind(None)  # what the loop does before a run's first step
    return processor


# --- hand-computed cases -------------------------------------------------------------------------------------

def test_v2_keeps_the_tokens_whose_surprise_is_at_most_mu_and_observe_moves_mu():
    scores = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()  # surprises 1, 2, 3, 3 bits
    processor = fresh(2, tau=1.0, eta=0.5)  # mu starts at 2 * tau = 2
    out = processor(None, scores)
    assert survivors(out) == [[0, 1]] and processor.mu.item() == 2.0
    assert torch.equal(out[0, :2], scores[0, :2])  # survivors keep their logits
    # token 1 drawn: renormalised p = 0.25 / 0.75 = 1/3, surprise log2 3 = 1.58496; mu = 2 - 0.5 * 0.58496
    processor.observe(torch.tensor([1]), out)
    assert processor.mu.item() == pytest.approx(1.70752, abs=1e-5)
    # mu 1.70752 < 2 bits: only token 0 (1 bit) stays; p = 1, surprise 0: mu = 1.70752 + 0.5 * 1 = 2.20752
    out = processor(None, scores)
    assert survivors(out) == [[0]]
    processor.observe(torch.tensor([0]), out)
    assert processor.mu.item() == pytest.approx(2.20752, abs=1e-5)
    assert survivors(processor(None, scores)) == [[0, 1]]


def test_v2_keeps_the_most_likely_token_when_every_surprise_exceeds_mu_and_ignores_removed_ones():
    scores = torch.cat([torch.tensor([[0.3, 0.4, 0.3]]).log(), torch.tensor([[-INF]])], -1)
    # tau 0.25: mu 0.5 < the best surprise -log2 0.4 = 1.32: the most likely token stays alone
    assert survivors(fresh(2, 0.25, 0.1)(None, scores)) == [[1]]
    # tau 1: mu 2 keeps 0.4 (1.32 bits) and both 0.3 (1.74 bits); the removed token stays removed
    assert survivors(fresh(2, 1.0, 0.1)(None, scores)) == [[0, 1, 2]]


def test_v1_fits_the_zipf_exponent_and_keeps_its_k_most_likely():
    # p_i proportional to 1 / rank ** 2 on tokens (2, 0, 3, 1): log(p_i / p_i+1) = 2 log((i + 2) / (i + 1)),
    # so the fit gives s_hat = 2 exactly, e = 1
    ranked = torch.tensor([1.0, 1 / 4, 1 / 9, 1 / 16])
    scores = torch.empty(1, 4)
    scores[0, torch.tensor([2, 0, 3, 1])] = ranked.log()
    sorted_probs = torch.softmax(scores, -1).sort(descending=True).values
    assert zipf_exponent(sorted_probs, torch.tensor([[4]])).item() == pytest.approx(2.0, abs=1e-5)
    # tau 1.5: mu 3. n_vocab 4: k = (1 * 2 ** 3 / (1 - 4 ** -1)) ** (1 / 2) = (8 / 0.75) ** 0.5 = 3.266 -> 3
    assert survivors(fresh(1, 1.5, 0.1)(None, scores)) == [[0, 2, 3]]
    # n_vocab 100 (the model's): k = (8 / 0.99) ** 0.5 = 2.843 -> 2, the two most likely
    assert survivors(fresh(1, 1.5, 0.1, n_vocab=100)(None, scores)) == [[0, 2]]
    # tau 0.5: mu 1: k = (2 / 0.75) ** 0.5 = 1.633 -> 1
    assert survivors(fresh(1, 0.5, 0.1)(None, scores)) == [[2]]


def test_v1_observe_follows_the_same_update():
    scores = torch.tensor([[1.0, 1 / 4, 1 / 9, 1 / 16]]).log()
    processor = fresh(1, 1.5, 0.2)
    out = processor(None, scores)  # keeps tokens 0, 1, 2 (above): renormalised p(1) = (1/4) / (1 + 1/4 + 1/9)
    p = (1 / 4) / (1 + 1 / 4 + 1 / 9)
    processor.observe(torch.tensor([1]), out)
    assert processor.mu.item() == pytest.approx(3.0 - 0.2 * (-math.log2(p) - 1.5), abs=1e-5)


def test_v1_edge_cases_of_k():
    # a flat row, tau 5 (mu 10): s_hat 0, e = -1, (-1 * 2 ** 10) / (1 - 8 ** 1) = 146.3, ** (1 / 0) = +inf: all
    # (llama.cpp's int(inf) is undefined: x86 keeps one token, ARM all; the module docstring)
    assert survivors(fresh(1, 5.0, 0.1)(None, torch.zeros(1, 8))) == [list(range(8))]
    assert zipf_top_k(torch.tensor([[0.0]]), torch.tensor([[10.0]]), 8, 8).item() == 8.0
    # the base below 1 sends k to 0, and max(int(k), 1) keeps one
    assert zipf_top_k(torch.tensor([[0.0]]), torch.tensor([[1.0]]), 8, 8).item() == 1.0
    # one candidate: 0 / 0 = NaN keeps one, the candidate
    assert survivors(fresh(1, 5.0, 0.1)(None, torch.tensor([[-INF, 2.0, -INF]]))) == [[1]]
    assert zipf_top_k(torch.tensor([[math.nan]]), torch.tensor([[10.0]]), 8, 8).item() == 1.0


def test_state_is_per_row_and_bind_resets_it():
    scores = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.5, 0.25, 0.125, 0.125]]).log()
    processor = fresh(2, 1.0, 0.5)
    out = processor(None, scores)
    processor.observe(torch.tensor([1, 0]), out)  # row 0: 1.70752 (above); row 1: p = 2/3, 0.58496 bits
    assert processor.mu[:, 0].tolist() == pytest.approx([1.70752, 2 - 0.5 * (0.58496 - 1)], abs=1e-5)
    processor.bind(None)
    processor(None, scores)
    assert processor.mu[:, 0].tolist() == [2.0, 2.0]
    with pytest.raises(RuntimeError, match="rows"):
        processor(None, scores[:1])
    with pytest.raises(RuntimeError, match="observe"):
        fresh(2, 1.0, 0.5).observe(torch.tensor([0]), scores[:1])


def test_builder_reads_the_model_vocabulary_and_repr_shows_the_values(tiny_llama):
    def params(**given):
        return GenerationParams(max_new_tokens=4, do_sample=True, **given)

    assert build_mirostat(params(), tiny_llama) is None
    v1 = build_mirostat(params(mirostat=1, mirostat_tau=3.0, mirostat_eta=0.2), None)
    assert isinstance(v1, Mirostat) and v1.stateful and v1.n_vocab is None  # no model: the scores' width
    assert build_mirostat(params(mirostat=1), tiny_llama).n_vocab == 1000
    assert "tau=[[3.0]]" in repr(v1) and repr(v1) != repr(Mirostat(1, 4.0, 0.2)) != repr(Mirostat(2, 3.0, 0.2))


# --- properties ----------------------------------------------------------------------------------------------

def _mirostat(data) -> Mirostat:
    return Mirostat(data.draw(st.sampled_from([1, 2])), data.draw(st.sampled_from([0.5, 2.0, 5.0, 9.0])),
                    data.draw(st.sampled_from([0.05, 0.5, 2.0])), data.draw(st.sampled_from([None, 1000])))


@PROPERTY
@given(data=st.data())
def test_never_in_place_and_a_token_survives(data):
    scores = data.draw(score_tensors())
    before = scores.clone()
    processor = _mirostat(data)
    for _ in range(3):
        out = processor(None, scores)
        assert torch.equal(scores, before)
        assert out.shape == scores.shape and out.dtype == torch.float32
        assert torch.isfinite(out).any(-1).all()
        assert not (torch.isfinite(out) & ~torch.isfinite(scores)).any()  # nothing removed comes back
        kept = torch.isfinite(out)
        assert torch.equal(out[kept], scores[kept])  # survivors keep their logits
        processor.observe(torch.softmax(out, -1).argmax(-1), out)


@PROPERTY
@given(data=st.data())
def test_for_rows_equals_each_configuration_alone_bit_for_bit_over_steps(data):
    n = data.draw(st.integers(1, 3))
    configs = data.draw(st.integers(2, 4))
    n_vocab = data.draw(st.sampled_from([None, 1000]))
    built = [None if data.draw(st.booleans()) else
             Mirostat(data.draw(st.sampled_from([1, 2])), data.draw(st.sampled_from([0.5, 3.0, 7.0])),
                      data.draw(st.sampled_from([0.1, 1.0])), n_vocab) for _ in range(configs)]
    if all(p is None for p in built):
        built[0] = Mirostat(1, 3.0, 0.1, n_vocab)
    row = Mirostat.for_rows(built, n, "cpu")
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    for step in range(3):
        scores = data.draw(score_tensors(rows=n * configs))
        out = row(None, scores)
        tokens = torch.multinomial(torch.softmax(out, -1), 1, generator=generator)[:, 0]  # (R,)
        row.observe(tokens, out)
        for c, processor in enumerate(built):
            rows = slice(c * n, (c + 1) * n)
            if processor is None:
                assert torch.equal(out[rows], scores[rows])
                assert torch.equal(row.mu[rows], torch.ones(n, 1) * 2)  # tau 1 placeholder: never moved
                continue
            alone = processor(None, scores[rows])
            processor.observe(tokens[rows], alone)
            assert torch.equal(out[rows], alone), (step, c, processor)
            assert torch.equal(row.mu[rows], processor.mu), (step, c, processor)


# --- bad values ----------------------------------------------------------------------------------------------

BAD = [
    ("mirostat", 3), ("mirostat", -1), ("mirostat", True), ("mirostat", 1.0), ("mirostat", "2"),
    ("mirostat_tau", 0.0), ("mirostat_tau", -1.0), ("mirostat_tau", math.nan), ("mirostat_tau", math.inf),
    ("mirostat_tau", True), ("mirostat_tau", "5"),
    ("mirostat_eta", 0.0), ("mirostat_eta", -0.1), ("mirostat_eta", math.nan), ("mirostat_eta", math.inf),
    ("mirostat_eta", False),
]


@pytest.mark.parametrize("name, value", BAD)
def test_bad_values_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"{name}="):
        decoding.resolve_params(None, 3, None, do_sample=True, max_new_tokens=4, **{"mirostat": 2, name: value})


def test_bad_values_are_refused_by_generate_and_the_class(tiny_llama):
    with pytest.raises(ValueError, match="mirostat_tau="):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), do_sample=True, max_new_tokens=2, mirostat=2,
                          mirostat_tau=-1.0)
    with pytest.raises(ValueError, match="mirostat=0"):
        Mirostat(0, 5.0, 0.1)


@pytest.mark.parametrize("mode, expected", [(dict(num_beams=2), "num_beams=2"),
                                            (dict(prompt_lookup_num_tokens=2), "speculative decoding")])
def test_beam_search_and_speculative_decoding_refuse_mirostat(tiny_llama, mode, expected):
    with pytest.raises(ValueError, match=rf"mirostat=2 is not allowed with {expected}: .*carries state"):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), do_sample=True, max_new_tokens=2, mirostat=2,
                          **mode)


# --- real runs -----------------------------------------------------------------------------------------------

RUN = dict(do_sample=True, top_k=0, max_new_tokens=12, pad_token_id=0, eos_token_id=None)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_run_repeats_with_a_seed_and_truncates(tiny_llama, padded_batch):
    ids, mask = padded_batch
    config = dict(mirostat=2, mirostat_tau=6.0)  # below the tiny model's ~log2(1000) bits: it must cut
    first = decoding.generate(tiny_llama, ids, mask, generator=seeded(5), output_scores=True, output_logits=True,
                              **RUN, **config)
    again = decoding.generate(tiny_llama, ids, mask, generator=seeded(5), **RUN, **config)
    assert torch.equal(first.sequences, again.sequences)
    kept = torch.stack([torch.isfinite(s).sum(-1) for s in first.scores])  # (steps, B)
    assert (kept < 1000).all() and (kept >= 1).all()


def test_llama_cpp_order_warns_when_other_samplers_still_apply(tiny_llama, padded_batch):
    # llama.cpp drops its other samplers under mirostat; here generate's top_k=50 would still cut: say so
    ids, mask = padded_batch
    run = dict(do_sample=True, max_new_tokens=2, mirostat=2, sampler_order="llama.cpp", generator=seeded(1))
    with pytest.warns(UserWarning, match=r"mirostat=2 with sampler_order='llama.cpp' still applies \['top_k', "
                                         r"'min_p'\] \(top_k=50, min_p=0.1\).*top_k=0"):
        decoding.generate(tiny_llama, ids, mask, min_p=0.1, **run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # llama.cpp's own chain: nothing to say
        decoding.generate(tiny_llama, ids, mask, top_k=0, **run)
        decoding.generate(tiny_llama, ids, mask, **{**run, "sampler_order": "transformers"})


def test_sweep_equals_each_configuration_alone(tiny_llama, padded_batch):
    ids, mask = padded_batch
    configs = [dict(mirostat=2, mirostat_tau=4.0), dict(mirostat=2, mirostat_tau=7.0, mirostat_eta=0.5),
               dict(mirostat=1, mirostat_tau=5.0), dict()]
    seeds = [31, 32, 33, 34]
    results = generate_sweep(tiny_llama, ids, mask, configs=configs, generators=[seeded(s) for s in seeds], **RUN)
    for config, seed, result in zip(configs, seeds, results):
        alone = decoding.generate(tiny_llama, ids, mask, generator=seeded(seed), **RUN, **config)
        assert torch.equal(result.sequences, alone.sequences), config
        # the same truncations: the processed log-probabilities agree (to the batch's float32 matmul noise)
        torch.testing.assert_close(result.token_logprobs, alone.token_logprobs, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_surprise_tracks_tau_with_smollm2(smollm2):
    """mu's rule makes sum(surprise - tau) = (mu_0 - mu_T) / eta: the mean surprise is near tau exactly when mu
    settles. After 16 steps of eta 0.5 it has (seeds 7, 8, 9 and v1 / v2 gave means 2.54 to 3.10 over the next
    48 steps of 2 rows); tau 3 bits is below SmolLM2's own surprise at temperature 1, which plain sampling shows."""
    model, tokenizer = smollm2
    prompts = tokenizer(["The history of the printing press", "Once upon a time, a small fox"],
                        return_tensors="pt", padding=True)
    run = dict(do_sample=True, top_k=0, max_new_tokens=64, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    tau = 3.0
    steered = decoding.generate(model, prompts.input_ids, prompts.attention_mask, generator=seeded(7), mirostat=2,
                                mirostat_tau=tau, mirostat_eta=0.5, **run)
    plain = decoding.generate(model, prompts.input_ids, prompts.attention_mask, generator=seeded(7), **run)
    bits = -steered.token_logprobs[:, 16:] / math.log(2)  # (B, 48): surprise under the truncated distribution
    mean = float(bits.mean())
    plain_mean = float((-plain.token_logprobs[:, 16:] / math.log(2)).mean())
    assert abs(mean - tau) < 0.6, (mean, plain_mean)
    assert plain_mean > tau + 1.0, plain_mean  # the model alone is more surprising: mirostat did the steering


# --- llama.cpp's goldens -------------------------------------------------------------------------------------

def replay(case: dict, table: np.ndarray) -> None:
    """Run our processor through llama.cpp's steps, forcing its selected tokens; compare every step."""
    processor = fresh(case["version"], case["tau"], case["eta"], case["n_vocab"])
    label = (case["source"], case["version"], case["tau"], case["eta"], case["temperature"])
    for t, step in enumerate(case["steps"]):
        scores = torch.from_numpy(table[step["row"]].astype(np.float32))[None]  # (1, V)
        if case["temperature"] is not None:
            scores = Temperature(case["temperature"])(None, scores)
        if t:  # mu before this step: llama.cpp's, moved by the same tokens
            assert processor.mu.item() == pytest.approx(step["mu"], abs=1e-4), (label, t)
        out = processor(None, scores)
        ids = torch.isfinite(out[0]).nonzero().flatten()
        probs = dict(zip(ids.tolist(), torch.softmax(out[0, ids].double(), -1).tolist()))
        if "ids" in step:
            assert sorted(probs) == step["ids"], (label, t)
            expected = dict(zip(step["ids"], step["probs"]))
        else:
            assert len(probs) == step["n_ids"], (label, t)
            expected = dict(zip(step["top_ids"], step["top_probs"]))
        assert max(abs(probs[i] - p) for i, p in expected.items()) <= 1e-6, (label, t)
        processor.observe(torch.tensor([step["selected"]]), out)


def test_golden_file_is_small_and_says_how_it_was_made():
    assert GOLDEN["versions"]["llama_cpp_python"] and "llama_mirostat" in GOLDEN["command"]
    assert {(c["source"], c["version"]) for c in GOLDEN["cases"]} == {(s, v) for s in ("random", "smollm2")
                                                                     for v in (1, 2)}
    assert GOLDEN_PATH.stat().st_size < 1_500_000
    # the runs exercise the cut: some steps keep a few tokens, some keep all of a row
    sizes = [len(s["ids"]) for c in GOLDEN["cases"] if c["source"] == "random" for s in c["steps"]]
    assert min(sizes) == 1 and max(sizes) == 256


@pytest.mark.parametrize("index", [i for i, c in enumerate(GOLDEN["cases"]) if c["source"] == "random"])
def test_equals_llama_cpp_on_random_logits(index):
    table = [np.asarray(row, dtype=np.float32) for row in GOLDEN["random_logits"]]
    replay(GOLDEN["cases"][index], table)


@pytest.mark.slow
def test_equals_llama_cpp_on_smollm2_logits(smollm2):
    _, logits = next_token_logits(*smollm2)
    assert same_fingerprint(fingerprint(logits), GOLDEN["smollm2_fingerprint"])
    # the golden's own highest logits in place of ours (which differ in their last bits with the thread count);
    # every stored survivor is among them, and the stored values must be ours to float32 noise
    exact = logits.copy()
    for row, top in enumerate(GOLDEN["smollm2_top_logits"]):
        np.testing.assert_allclose(logits[row, top["ids"]], top["logits"], rtol=0, atol=1e-3)
        exact[row, top["ids"]] = top["logits"]
    cases = [c for c in GOLDEN["cases"] if c["source"] == "smollm2"]
    assert len(cases) == 6
    for case in cases:
        replay(case, exact)
