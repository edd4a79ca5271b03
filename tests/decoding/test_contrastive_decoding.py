"""Contrastive decoding (decoding/strategies/contrastive_decoding.py): hand computations on fixed-logit models,
a plain uncached reference loop on tiny Llama / GPT-2, batch rows against prompts alone, the three caches,
inputs_embeds, and the bad inputs (each refused before any forward pass)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, LlamaConfig

import decoding
from experiments.models import build_tiny_model

CACHES = ("none", "dynamic", "static")


# ---------------------------------------------------------------- fixed-logit models and the hand computation

class FixedLogitsLM(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the position id: row `table[t]` at position t.

    Whatever the tokens, the cache or the batch, so every step's distribution is known in advance.
    """

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        self.table = torch.tensor(probs, dtype=torch.float32).log()  # (P, V) logits = log-probabilities
        vocab = self.table.shape[1]
        self.config = LlamaConfig(vocab_size=vocab, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=64)
        self.generation_config = GenerationConfig()
        self.calls = 0

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                logits_to_keep=0, **kwargs):
        self.calls += 1
        return SimpleNamespace(logits=self.table[position_ids])  # (B, q, V)


# Position 0 is the first prompt token; the prompt [5, 6] (V = 8, only tokens 0-3 ever likely) ends at
# position 1, so step k is scored with row 1 + k.
_TINY = 1e-6  # tokens 4-7: never plausible
EXPERT = [
    [0.25, 0.25, 0.25, 0.25],
    [0.5, 0.3, 0.15, 0.05],   # step 0
    [0.4, 0.1, 0.05, 0.45],   # step 1
    [0.55, 0.3, 0.1, 0.05],   # step 2
]
AMATEUR = [
    [0.25, 0.25, 0.25, 0.25],
    [0.6, 0.1, 0.1, 0.2],
    [0.1, 0.1, 0.01, 0.79],
    [0.78, 0.1, 0.02, 0.1],
]


def _table(rows):
    """Four likely tokens, four at _TINY, normalised: (P, 8) probabilities."""
    full = np.array([r + [_TINY] * 4 for r in rows], dtype=np.float64)
    return (full / full.sum(1, keepdims=True)).tolist()


def hand_scores(step: int, alpha: float, tau: float) -> np.ndarray:
    """(V,) the contrastive score of step `step`, in numpy: log p_e - log softmax(log p_a / tau) on V_head."""
    pe = np.array(_table(EXPERT)[1 + step])
    la = np.log(np.array(_table(AMATEUR)[1 + step])) / tau
    la = la - np.log(np.exp(la).sum())
    score = np.log(pe) - la
    score[pe < alpha * pe.max()] = -np.inf
    return score


@pytest.fixture()
def fixed_models():
    return FixedLogitsLM(_table(EXPERT)), FixedLogitsLM(_table(AMATEUR))


PROMPT = torch.tensor([[5, 6]])


@pytest.mark.parametrize("cache", CACHES)
def test_greedy_by_hand(fixed_models, cache):
    """alpha = 0.2, amateur temperature 1:

    step 0: p_e = (.5, .3, .15, .05); V_head = p_e >= .1 = {0, 1, 2}; log-ratios p_e / p_a = (.5/.6, .3/.1,
            .15/.1) = (.83, 3, 1.5): token 1 (plain greedy would take 0).
    step 1: p_e = (.4, .1, .05, .45); V_head = p_e >= .09 = {0, 1, 3}; ratios (4, 1, .57): token 0. Token 2
            has the largest ratio, .05/.01 = 5, but is implausible (with alpha = 0 it wins: the next test).
    step 2: p_e = (.55, .3, .1, .05); V_head = p_e >= .11 = {0, 1}; ratios (.71, 3): token 1.
    """
    expert, amateur = fixed_models
    out = decoding.generate(expert, PROMPT, max_new_tokens=3, amateur_model=amateur, plausibility_alpha=0.2,
                            cache=cache, eos_token_id=None)
    assert out.new_token_ids.tolist() == [[1, 0, 1]]
    # the logprobs: of softmax(score) (the distribution chosen from) and of the expert alone
    for step, token in enumerate([1, 0, 1]):
        score = hand_scores(step, 0.2, 1.0)
        expected = score[token] - np.log(np.exp(score[np.isfinite(score)]).sum())
        assert out.token_logprobs[0, step].item() == pytest.approx(expected, abs=1e-5)
        assert out.token_logprobs_raw[0, step].item() == pytest.approx(math.log(_table(EXPERT)[1 + step][token]),
                                                                       abs=1e-5)


def test_alpha_and_amateur_temperature_by_hand(fixed_models):
    """alpha = 0 keeps every token: step 1 takes token 2 (ratio .05/.01 = 5 over .4/.1 = 4), step 2 token 2
    too (.1/.02 = 5 over .3/.1 = 3). alpha = 0.1 does the same: its thresholds, .045 and .055, admit token 2.
    amateur_temperature = 2 flattens the amateur: the score is log p_e - log p_a / 2 + const, at step 1
    (.24, -1.15, -.69, -.68) + const (token 0), at step 2 (-.47, -.05, -.35) + const on V_head {0, 1, 2}
    (token 1 instead of 2). alpha = 1 keeps only the expert's argmax: plain greedy (0, 3, 0)."""
    expert, amateur = fixed_models
    run = lambda **kw: decoding.generate(expert, PROMPT, max_new_tokens=3, amateur_model=amateur,
                                         eos_token_id=None, **kw).new_token_ids.tolist()[0]
    cases = [(0.0, 1.0, [1, 2, 2]), (0.1, 1.0, [1, 2, 2]), (0.1, 2.0, [1, 0, 1]), (1.0, 1.0, [0, 3, 0])]
    for alpha, tau, tokens in cases:
        assert run(plausibility_alpha=alpha, amateur_temperature=tau) == tokens
        assert [int(np.argmax(hand_scores(s, alpha, tau))) for s in range(3)] == tokens  # numpy agrees


def test_sampling_by_hand(fixed_models):
    """Four rows sampled for three steps draw, per step, one multinomial over the (4, V) softmax of the hand
    scores from the seeded generator, as the plain loop's sampler does; tokens outside V_head never come."""
    expert, amateur = fixed_models
    ids = PROMPT.repeat(4, 1)
    out = decoding.generate(expert, ids, torch.ones_like(ids), max_new_tokens=3, amateur_model=amateur,
                            plausibility_alpha=0.2, do_sample=True, top_k=0, eos_token_id=None,
                            generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    expected = []
    for step in range(3):
        score = torch.tensor(hand_scores(step, 0.2, 1.0), dtype=torch.float32)
        probs = torch.softmax(score, -1).expand(4, -1)
        expected.append(torch.multinomial(probs, 1, generator=g).squeeze(1))
    assert out.new_token_ids.tolist() == torch.stack(expected, 1).tolist()
    plausible = [set(np.flatnonzero(np.isfinite(hand_scores(s, 0.2, 1.0))).tolist()) for s in range(3)]
    assert all(t in plausible[s] for row in out.new_token_ids.tolist() for s, t in enumerate(row))


def test_banned_plausible_set_is_an_error(fixed_models):
    """alpha = 1 leaves only token 0 at step 0; min_new_tokens bans it as EOS: no token is left to choose."""
    expert, amateur = fixed_models
    with pytest.raises(ValueError, match="banned every token of the plausible set"):
        decoding.generate(expert, PROMPT, max_new_tokens=3, amateur_model=amateur, plausibility_alpha=1.0,
                          eos_token_id=0, min_new_tokens=2)


# ---------------------------------------------------------------- a plain reference loop on tiny models

def _final_norm(model):
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def _reference_logits(model, amateur, layers, tokens, mask):
    """(B, V) expert and amateur logits of the last slot, the whole sequence recomputed (no cache)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, output_hidden_states=layers is not None)
    if layers is not None:  # the expert's first L layers, then its final norm and head
        amateur_logits = model.lm_head(_final_norm(model)(out.hidden_states[layers]))[:, -1]
    else:
        amateur_logits = amateur(input_ids=tokens, attention_mask=mask, position_ids=positions).logits[:, -1]
    return out.logits[:, -1].float(), amateur_logits.float()


@torch.inference_mode()
def reference_cd(model, ids, mask, steps, *, amateur=None, layers=None, alpha=0.1, tau=1.0, penalty=1.0,
                 temperature=1.0, top_k=None, generator=None):
    """Contrastive decoding written out: mask, log-ratio, repetition penalty, then (sampling) temperature and
    top-k, argmax or one multinomial over the batch per step."""
    tokens, mask = ids.clone(), mask.clone()
    for _ in range(steps):
        e, a = _reference_logits(model, amateur, layers, tokens, mask)
        pe = torch.softmax(e, -1)
        score = torch.log_softmax(e, -1) - torch.log_softmax(a / tau, -1)
        score[pe < alpha * pe.max(-1, keepdim=True).values] = -math.inf
        if penalty != 1.0:
            for r in range(tokens.shape[0]):
                seen = tokens[r][mask[r] == 1].unique()
                s = score[r, seen]
                score[r, seen] = torch.where(s < 0, s * penalty, s / penalty)
        if generator is None:
            nxt = score.argmax(-1)
        else:
            score = score / temperature
            if top_k:
                kth = torch.topk(score, top_k).values[:, -1:]
                score = score.masked_fill(score < kth, -math.inf)
            nxt = torch.multinomial(torch.softmax(score, -1), 1, generator=generator).squeeze(1)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return tokens[:, ids.shape[1]:]


@pytest.fixture(scope="module")
def amateurs():
    """kind -> a second tiny model of the same kind and vocabulary, other weights."""
    return {kind: build_tiny_model(kind, vocab_size=1000, seed=1) for kind in ("tiny_llama", "tiny_gpt2")}


def _amateur_kwargs(tiny_model, amateurs, which):
    """`amateur_model=` a tiny model of the expert's kind (other weights), or `amateur_layers=1` of its 2."""
    if which == "layers":
        return {"amateur_layers": 1}
    return {"amateur_model": amateurs[{"llama": "tiny_llama", "gpt2": "tiny_gpt2"}[tiny_model.config.model_type]]}


@pytest.mark.parametrize("which", ["model", "layers"])
def test_greedy_equals_reference(tiny_model, amateurs, padded_batch, which):
    ids, mask = padded_batch
    kw = _amateur_kwargs(tiny_model, amateurs, which)
    ref_kw = {"amateur": kw.get("amateur_model"), "layers": kw.get("amateur_layers")}
    out = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, eos_token_id=None, **kw)
    assert out.new_token_ids.tolist() == reference_cd(tiny_model, ids, mask, 10, **ref_kw).tolist()
    plain = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, eos_token_id=None)
    assert out.new_token_ids.tolist() != plain.new_token_ids.tolist()  # the amateur changes the text
    # the amateur's temperature, the plausibility mask and the repetition penalty, written out too
    out = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, eos_token_id=None, plausibility_alpha=0.3,
                            amateur_temperature=0.5, repetition_penalty=1.3, **kw)
    ref = reference_cd(tiny_model, ids, mask, 10, alpha=0.3, tau=0.5, penalty=1.3, **ref_kw)
    assert out.new_token_ids.tolist() == ref.tolist()


@pytest.mark.parametrize("which", ["model", "layers"])
def test_sampling_equals_reference(tiny_model, amateurs, padded_batch, which):
    """Seeded sampling with temperature 0.8 and generate's default top_k = 50, after the contrastive score."""
    ids, mask = padded_batch
    kw = _amateur_kwargs(tiny_model, amateurs, which)
    out = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, eos_token_id=None, do_sample=True,
                            temperature=0.8, plausibility_alpha=0.01, generator=torch.Generator().manual_seed(7),
                            **kw)
    ref = reference_cd(tiny_model, ids, mask, 10, amateur=kw.get("amateur_model"), layers=kw.get("amateur_layers"),
                       alpha=0.01, temperature=0.8, top_k=50, generator=torch.Generator().manual_seed(7))
    assert out.new_token_ids.tolist() == ref.tolist()


# ---------------------------------------------------------------- batch rows, caches, shared prefixes, embeddings

def _eos_ending_rows_apart(tokens: list[list[int]]) -> tuple[list[int], list[int]]:
    """Two EOS ids (one from row 0, one from row 1) that end rows 0 and 1 at different steps, row 2 not at all.

    Returns (eos ids, each row's finishing step, or len(row) for one that never ends)."""
    n = len(tokens[0])
    for i in range(1, n - 1):
        for j in range(1, n - 1):
            eos = [tokens[0][i], tokens[1][j]]
            ends = [next((s for s, t in enumerate(row) if t in eos), n) for row in tokens]
            if len(set(ends)) == 3 and ends[2] == n:
                return eos, ends
    raise AssertionError(f"no EOS pair ends the rows apart in {tokens}: pick other prompts")


@pytest.mark.parametrize("which", ["model", "layers"])
def test_batch_row_equals_prompt_alone(tiny_model, amateurs, padded_batch, which):
    """Greedy rows (B = 3, left-padded) finishing at three different steps; each equals its prompt alone."""
    ids, mask = padded_batch
    kw = _amateur_kwargs(tiny_model, amateurs, which)
    free = decoding.generate(tiny_model, ids, mask, max_new_tokens=8, eos_token_id=None, **kw)
    eos, ends = _eos_ending_rows_apart(free.new_token_ids.tolist())
    batch = decoding.generate(tiny_model, ids, mask, max_new_tokens=8, eos_token_id=eos, pad_token_id=0, **kw)
    assert batch.finish_reasons == ["eos", "eos", "length"]
    for r in range(3):
        alone = decoding.generate(tiny_model, ids[r:r + 1, mask[r] == 1], max_new_tokens=8, eos_token_id=eos,
                                  pad_token_id=0, **kw)
        n = ends[r] + 1 if ends[r] < 8 else 8
        assert alone.new_token_ids[0].tolist() == batch.new_token_ids[r, :n].tolist()
        assert batch.new_token_ids[r, n:].eq(0).all()  # pad after the row ended


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("which", ["model", "layers"])
def test_three_caches_identical(tiny_model, amateurs, padded_batch, which, do_sample):
    ids, mask = padded_batch
    kw = _amateur_kwargs(tiny_model, amateurs, which)
    outs = [decoding.generate(tiny_model, ids, mask, max_new_tokens=8, eos_token_id=None, cache=cache,
                              do_sample=do_sample, generator=torch.Generator().manual_seed(5), **kw)
            for cache in CACHES]
    for out in outs[1:]:
        assert out.sequences.tolist() == outs[0].sequences.tolist()
        torch.testing.assert_close(out.token_logprobs, outs[0].token_logprobs, atol=1e-4, rtol=0)


def test_num_return_sequences_share_the_prefill(tiny_llama, amateurs, padded_batch):
    """Two samples per prompt (one prefill of each prompt, copied) equal the prompts repeated by hand."""
    ids, mask = padded_batch
    kw = {"amateur_model": amateurs["tiny_llama"], "do_sample": True, "max_new_tokens": 6, "eos_token_id": None}
    shared = decoding.generate(tiny_llama, ids, mask, num_return_sequences=2,
                               generator=torch.Generator().manual_seed(2), **kw)
    repeated = decoding.generate(tiny_llama, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0),
                                 generator=torch.Generator().manual_seed(2), **kw)
    assert shared.sequences.tolist() == repeated.sequences.tolist()


@pytest.mark.parametrize("cache", ["none", "dynamic"])
def test_inputs_embeds_with_amateur_layers(tiny_llama, padded_batch, cache):
    """The first-layers amateur shares the expert's embedding, so the prompt may come as embeddings."""
    ids, mask = padded_batch
    kw = {"amateur_layers": 1, "max_new_tokens": 6, "eos_token_id": None, "cache": cache}
    by_ids = decoding.generate(tiny_llama, ids, mask, **kw)
    embeds = tiny_llama.get_input_embeddings()(ids).detach()
    both = decoding.generate(tiny_llama, ids, mask, inputs_embeds=embeds, **kw)
    only = decoding.generate(tiny_llama, attention_mask=mask, inputs_embeds=embeds, **kw)
    assert both.sequences.tolist() == by_ids.sequences.tolist()
    assert only.sequences.tolist() == by_ids.new_token_ids.tolist()


# ---------------------------------------------------------------- bad inputs, refused before any forward pass

@pytest.fixture(scope="module")
def counted(amateurs):
    """A tiny Llama expert whose forward passes (and the amateur's) are counted."""
    expert = build_tiny_model("tiny_llama", vocab_size=1000, seed=0)
    other_vocab = build_tiny_model("tiny_llama", vocab_size=500, seed=1)
    calls = []
    for model in (expert, amateurs["tiny_llama"], other_vocab):
        model.register_forward_pre_hook(lambda *args: calls.append(1))
    return SimpleNamespace(expert=expert, amateur=amateurs["tiny_llama"], other_vocab=other_vocab, calls=calls)


BAD = [
    (lambda c: {"amateur_model": c.amateur, "amateur_layers": 1}, "are not allowed together"),
    (lambda c: {"amateur_layers": 0}, "amateur_layers=0"),
    (lambda c: {"amateur_layers": 2}, r"amateur_layers=2 .*1 <= amateur_layers <= 1"),
    (lambda c: {"amateur_layers": True}, "amateur_layers=True"),
    (lambda c: {"amateur_layers": 1.5}, "amateur_layers=1.5"),
    (lambda c: {"amateur_model": c.other_vocab}, "logits have 500 tokens and the expert's 1000"),
    (lambda c: {"amateur_model": c.expert}, "the expert model itself"),
    (lambda c: {"amateur_model": "gpt2"}, "amateur_model='str'"),
    (lambda c: {"amateur_layers": 1, "plausibility_alpha": -0.1}, "plausibility_alpha=-0.1"),
    (lambda c: {"amateur_layers": 1, "plausibility_alpha": 1.5}, "plausibility_alpha=1.5"),
    (lambda c: {"amateur_layers": 1, "amateur_temperature": 0}, "amateur_temperature=0"),
    (lambda c: {"amateur_layers": 1, "amateur_temperature": -1.0}, "amateur_temperature=-1.0"),
    (lambda c: {"amateur_layers": 1, "amateur_temperature": float("inf")}, "amateur_temperature=inf"),
    (lambda c: {"amateur_layers": 1, "num_beams": 2}, "not allowed with num_beams=2"),
    (lambda c: {"amateur_layers": 1, "prompt_lookup_num_tokens": 3}, "not allowed with speculative decoding"),
    (lambda c: {"amateur_model": c.amateur, "draft_layers": 1}, "not allowed with speculative decoding"),
    (lambda c: {"amateur_layers": 1, "penalty_alpha": 0.6, "top_k": 4}, "penalty_alpha=0.6"),
    (lambda c: {"amateur_layers": 1, "dola_layers": "low"}, "dola_layers='low'"),
    (lambda c: {"amateur_layers": 1, "guidance_scale": 1.5}, "guidance_scale=1.5"),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_inputs_refused_before_any_forward(counted, padded_batch, index):
    make, match = BAD[index]
    ids, mask = padded_batch
    counted.calls.clear()
    with pytest.raises(ValueError, match=match):
        decoding.generate(counted.expert, ids, mask, max_new_tokens=4, **make(counted))
    assert not counted.calls


def test_amateur_model_refuses_inputs_embeds(counted, padded_batch):
    ids, mask = padded_batch
    embeds = counted.expert.get_input_embeddings()(ids).detach()
    counted.calls.clear()
    with pytest.raises(ValueError, match="amateur_model=LlamaForCausalLM is not allowed with inputs_embeds"):
        decoding.generate(counted.expert, ids, mask, inputs_embeds=embeds, amateur_model=counted.amateur,
                          max_new_tokens=4)
    assert not counted.calls


def test_amateur_settings_without_amateur_warn(tiny_llama, padded_batch):
    ids, mask = padded_batch
    with pytest.warns(UserWarning, match="only apply to contrastive decoding"):
        decoding.generate(tiny_llama, ids, mask, max_new_tokens=2, plausibility_alpha=0.3)
