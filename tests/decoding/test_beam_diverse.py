"""Diverse (group) beam search: hand-computed cases on a model with fixed logits, then real models.

transformers 5 no longer runs group beam search in `model.generate`, so identity is checked against
outputs recorded from transformers 4.55.4's `_group_beam_search` (golden cases below), and the algorithm
against cases small enough to compute by hand: a `TableLM` whose next-token distribution depends only on
the last token, so every score is a sum of logs of numbers written in the test.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import PretrainedConfig

import decoding
from decoding.beam import beam_search
from decoding.beam_diverse import HammingDiversity, diverse_beam_search
from decoding.params import resolve_params


class TableLM(torch.nn.Module):
    """Next-token probabilities `table[last token]`: a model with fixed logits, computable by hand."""

    def __init__(self, table):
        super().__init__()
        self.logits = torch.log(torch.tensor(table, dtype=torch.float32))  # (V, V)
        self.config = PretrainedConfig(num_hidden_layers=1, max_position_embeddings=64)
        self.generation_config = None
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=False):
        return SimpleNamespace(logits=self.logits[input_ids])  # (B, T, V)


def run(model, prompt, **kwargs):
    return decoding.generate(model, torch.tensor([prompt]), cache="none", eos_token_id=[], **kwargs)


# One step from any context: p = (0.4, 0.25, 0.15, 0.1, 0.06, 0.04) for tokens 0..5.
FLAT = [[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]] * 6
LOG = [math.log(p) for p in FLAT[0]]


@pytest.mark.parametrize("penalty, expected", [
    # Group 0 takes the two best tokens, 0 and 1. Group 1 sees them penalised once: with 0.5,
    # log p - 0.5 = (-1.42, -1.89, -1.90, ...) still ranks 0 and 1 first. Group 2 sees 0 and 1 penalised
    # twice: (-1.92, -2.39, -1.90, -2.30, ...) ranks 2 then 0.
    (0.5, [(0, 0), (1, 0), (0, 1), (1, 1), (2, 2), (0, 2)]),
    # With 2: group 1 sees (-2.92, -3.39, -1.90, -2.30, -2.81, -3.22) and takes 2 and 3; group 2 sees
    # 0..3 penalised once: (-2.92, -3.39, -3.90, -4.30, -2.81, -3.22) and takes 4 then 0.
    (2.0, [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (0, 2)]),
])
def test_groups_choose_by_hand_in_one_step(penalty, expected):
    out = run(TableLM(FLAT), [0], num_beams=6, num_beam_groups=3, diversity_penalty=penalty, max_new_tokens=1,
              num_return_sequences=6)
    # (token, number of earlier groups that chose it) -> score log p(token) - penalty * count
    scores = {(token, group): LOG[token] - penalty * sum(1 for t, g in expected if t == token and g < group)
              for token, group in expected}
    ranked = sorted(expected, key=lambda tg: -scores[tg])
    assert out.new_token_ids[:, 0].tolist() == [token for token, _ in ranked]
    assert torch.allclose(out.sequences_scores, torch.tensor([scores[tg] for tg in ranked]), atol=1e-5)
    # The penalty is part of the beam score and of its per-token terms, not of the model's log-probs.
    assert torch.allclose(out.extras["beam_token_scores"][:, 0], out.sequences_scores)
    assert torch.allclose(out.token_logprobs_raw[:, 0], torch.tensor([LOG[t] for t, _ in ranked]), atol=1e-6)


# Two steps, two groups of one beam, from token 0. After 0: token 1 (0.6) or 2 (0.3). After 1: token 3
# (0.65). After 2: token 3 (0.78) or 1 (0.18).
CHAIN = [[0.05, 0.6, 0.3, 0.05], [0.05, 0.05, 0.25, 0.65], [0.02, 0.18, 0.02, 0.78], [0.25] * 4]


def chain_log(*tokens):
    return sum(math.log(CHAIN[a][b]) for a, b in zip((0,) + tokens, tokens))


@pytest.mark.parametrize("penalty, group_1", [
    # Step 1: group 0 takes 1; group 1 sees token 1 at log 0.6 - d < log 0.3 for d > 0.69, takes 2.
    # Step 2: group 0 (after 1) takes 3; group 1 (after 2) sees 3 at log 0.78 - d, above log 0.18 while
    # d < 1.47: it also takes 3 with d = 1, and takes 1 with d = 2.
    (1.0, (2, 3)),
    (2.0, (2, 1)),
])
def test_two_groups_two_steps_by_hand(penalty, group_1):
    out = run(TableLM(CHAIN), [0], num_beams=2, num_beam_groups=2, diversity_penalty=penalty, max_new_tokens=2,
              num_return_sequences=2, length_penalty=1.0)
    group_0 = (1, 3)
    same_step = sum(a == b for a, b in zip(group_0, group_1))  # steps where group 1 took group 0's token
    score_0 = chain_log(*group_0) / 2
    score_1 = (chain_log(*group_1) - penalty * same_step) / 2
    assert out.new_token_ids.tolist() == [list(group_0), list(group_1)]
    assert torch.allclose(out.sequences_scores, torch.tensor([score_0, score_1]), atol=1e-5)


def test_plain_beam_search_on_the_chain_keeps_the_likely_pair():
    # Without groups the two best of {1 3, 2 3, 1 2, 2 1, ...} are 1 3 (0.39) and 2 3 (0.234): beam search
    # spends both beams on the likely continuation of either first token.
    out = run(TableLM(CHAIN), [0], num_beams=2, max_new_tokens=2, num_return_sequences=2, length_penalty=0.0)
    assert out.new_token_ids.tolist() == [[1, 3], [2, 3]]
    assert torch.allclose(out.sequences_scores, torch.tensor([chain_log(1, 3), chain_log(2, 3)]), atol=1e-5)


def test_hamming_diversity_counts_earlier_choices():
    scores = torch.zeros((2, 1, 4))
    earlier = torch.tensor([[1, 1, 3], [2, -1, -1]])  # -1: a slot with no choice
    out = HammingDiversity(0.5, 4)(scores, earlier)
    assert out[:, 0].tolist() == [[0.0, -1.0, 0.0, -0.5], [0.0, 0.0, -0.5, 0.0]]
    assert scores.abs().sum() == 0  # never in place


PADDED = (torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23], [0, 0, 0, 31, 32]]),
          torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]))


def test_one_group_is_plain_beam_search(tiny_model):
    ids, mask = PADDED
    for early_stopping in (True, False, "never"):
        params = resolve_params(tiny_model, 5, 256, num_beams=4, num_return_sequences=4, max_new_tokens=10,
                                eos_token_id=[7, 9], early_stopping=early_stopping)
        with torch.inference_mode():
            plain, grouped = beam_search(tiny_model, ids, mask, params), diverse_beam_search(tiny_model, ids, mask,
                                                                                              params)
        assert torch.equal(grouped.sequences, plain.sequences), early_stopping
        assert torch.allclose(grouped.sequences_scores, plain.sequences_scores, atol=1e-5)


def test_without_diversity_every_group_is_the_same_beam_search(tiny_model):
    """A negligible penalty: each of the 3 groups of 2 beams repeats plain beam search of width 2."""
    ids, mask = PADDED
    kwargs = dict(max_new_tokens=10, eos_token_id=[7, 9], early_stopping=True, pad_token_id=5)
    grouped = decoding.generate(tiny_model, ids, mask, num_beams=6, num_beam_groups=3, diversity_penalty=1e-12,
                                num_return_sequences=6, **kwargs)
    plain = decoding.generate(tiny_model, ids, mask, num_beams=2, num_return_sequences=2, **kwargs)
    width = plain.sequences.shape[1]
    for prompt in range(3):
        hyps = grouped.sequences[6 * prompt:6 * prompt + 6, :width]
        for k in range(2):
            assert (hyps == plain.sequences[2 * prompt + k]).all(-1).sum() == 3


def test_a_large_penalty_makes_the_first_tokens_of_groups_differ(tiny_model):
    ids, mask = PADDED
    out = decoding.generate(tiny_model, ids, mask, num_beams=8, num_beam_groups=8, diversity_penalty=100.0,
                            num_return_sequences=8, max_new_tokens=4, eos_token_id=[])
    first = out.new_token_ids[:, 0].view(3, 8)
    assert all(len(set(row.tolist())) == 8 for row in first)


def test_cache_settings_agree(tiny_model):
    ids, mask = PADDED
    kwargs = dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.7, num_return_sequences=6, max_new_tokens=10,
                  eos_token_id=[7, 9])
    runs = [decoding.generate(tiny_model, ids, mask, cache=c, **kwargs) for c in ("none", "dynamic", "static")]
    for other in runs[1:]:
        assert torch.equal(other.sequences, runs[0].sequences)
        assert torch.allclose(other.sequences_scores, runs[0].sequences_scores, atol=1e-5)


# Recorded from transformers 4.55.4 `model.generate` (its `_group_beam_search`) on the tiny models of
# `experiments.models.build_tiny_model(kind, vocab_size=1000, seed=0)`, prompts PADDED, pad_token_id=5.
# Rows: new tokens of each returned hypothesis, (prompt, rank)-major; then `sequences_scores`.
GOLDEN = [
    ("tiny_llama", dict(num_beams=6, num_beam_groups=3, diversity_penalty=1.0, length_penalty=1.0,
                        early_stopping=False, max_new_tokens=10, num_return_sequences=3, eos_token_id=461),
     [[332, 53, 203, 979, 144, 340, 623, 670, 150, 712], [332, 53, 203, 979, 144, 461, 5, 5, 5, 5],
      [852, 88, 786, 852, 809, 806, 972, 99, 601, 810], [851, 402, 356, 901, 314, 724, 395, 181, 821, 381],
      [851, 402, 356, 901, 314, 724, 395, 823, 442, 684], [28, 41, 794, 548, 671, 236, 519, 678, 236, 635],
      [446, 724, 584, 446, 724, 272, 62, 22, 37, 12], [446, 478, 875, 42, 28, 177, 650, 332, 480, 107],
      [446, 478, 875, 42, 28, 177, 650, 332, 480, 608]],
     [-2.95137, -2.9817, -3.12311, -2.76405, -2.79658, -2.90685, -2.78569, -2.80491, -2.81016]),
    ("tiny_gpt2", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, length_penalty=2.0,
                       early_stopping=True, max_new_tokens=10, num_return_sequences=2, repetition_penalty=1.3,
                       eos_token_id=955),
     [[783, 423, 286, 148, 401, 593, 873, 606, 392, 289], [783, 423, 286, 148, 401, 593, 873, 606, 392, 872],
      [254, 814, 392, 634, 40, 928, 51, 289, 339, 334], [254, 814, 392, 634, 40, 928, 51, 289, 339, 198],
      [12, 369, 745, 390, 753, 286, 401, 181, 855, 369], [12, 369, 745, 390, 753, 286, 401, 181, 445, 873]],
     [-0.29494, -0.29912, -0.32071, -0.32105, -0.30276, -0.30953]),
    ("tiny_llama", dict(num_beams=8, num_beam_groups=4, diversity_penalty=3.0, length_penalty=0.0,
                        early_stopping="never", max_new_tokens=12, num_return_sequences=4, eos_token_id=461),
     [[208, 144, 461, 5, 5, 5, 5, 5, 5, 5, 5, 5], [332, 53, 203, 979, 144, 461, 5, 5, 5, 5, 5, 5],
      [23, 14, 377, 323, 510, 53, 838, 787, 446, 850, 279, 78],
      [23, 14, 377, 323, 510, 53, 838, 787, 446, 850, 279, 144],
      [851, 402, 356, 901, 314, 724, 395, 823, 442, 684, 402, 203],
      [851, 402, 356, 901, 314, 724, 395, 823, 442, 684, 402, 460],
      [28, 41, 794, 548, 671, 236, 519, 678, 702, 519, 872, 180],
      [28, 41, 794, 548, 671, 236, 519, 678, 702, 519, 872, 403],
      [446, 724, 584, 446, 724, 272, 62, 22, 37, 12, 784, 778],
      [446, 724, 584, 446, 724, 272, 62, 22, 37, 12, 784, 500],
      [794, 852, 458, 190, 458, 455, 602, 394, 469, 221, 121, 730],
      [616, 455, 352, 372, 469, 221, 568, 870, 437, 242, 160, 920]],
     [-9.26492, -17.89022, -35.79998, -36.48382, -32.62952, -33.23115, -34.33555, -34.41313, -34.11772,
      -34.22594, -35.45545, -35.49894]),
    ("tiny_gpt2", dict(num_beams=6, num_beam_groups=2, diversity_penalty=2.0, length_penalty=0.5,
                       early_stopping=False, max_new_tokens=12, num_return_sequences=6, no_repeat_ngram_size=2,
                       eos_token_id=955),
     [[783, 401, 955, 5, 5, 5, 5, 5, 5, 5, 5, 5], [783, 401, 555, 816, 549, 351, 351, 606, 351, 754, 188, 215],
      [783, 401, 555, 816, 549, 351, 351, 606, 351, 754, 188, 569],
      [537, 198, 209, 286, 423, 747, 873, 593, 717, 289, 966, 936],
      [537, 198, 209, 286, 423, 747, 873, 593, 569, 30, 423, 936],
      [537, 198, 209, 286, 423, 747, 873, 593, 717, 289, 148, 936],
      [254, 814, 392, 634, 634, 288, 427, 955, 5, 5, 5, 5],
      [254, 177, 392, 872, 962, 789, 401, 823, 339, 334, 334, 351],
      [414, 854, 339, 522, 401, 763, 587, 789, 936, 814, 122, 380],
      [254, 177, 392, 872, 962, 789, 401, 823, 339, 334, 351, 148],
      [414, 854, 339, 522, 575, 763, 587, 76, 40, 401, 392, 401],
      [414, 854, 339, 522, 575, 763, 587, 76, 40, 401, 814, 587],
      [12, 442, 12, 789, 601, 401, 960, 753, 753, 555, 423, 606],
      [12, 442, 12, 789, 601, 401, 960, 753, 442, 717, 549, 547],
      [12, 442, 12, 789, 601, 401, 960, 753, 442, 717, 549, 753],
      [442, 489, 286, 636, 610, 865, 763, 401, 489, 873, 401, 948],
      [442, 489, 286, 636, 610, 865, 763, 401, 489, 873, 401, 188],
      [442, 489, 286, 636, 610, 865, 763, 401, 489, 873, 401, 90]],
     [-5.37106, -10.47369, -10.62491, -11.15007, -11.16564, -11.2527, -8.96539, -10.43396, -10.63007, -10.66639,
      -10.71418, -10.81588, -10.58208, -10.69269, -10.71095, -11.25623, -11.27329, -11.38815]),
]


@pytest.mark.parametrize("kind, kwargs, tokens, scores", GOLDEN, ids=lambda v: v if isinstance(v, str) else "")
def test_matches_transformers_4_group_beam_search(kind, kwargs, tokens, scores, request):
    model = request.getfixturevalue(kind)
    ids, mask = PADDED
    out = decoding.generate(model, ids, mask, pad_token_id=5, **kwargs)
    assert out.new_token_ids.tolist() == tokens
    assert torch.allclose(out.sequences_scores, torch.tensor(scores), atol=1e-5)
    ended = [row[-1] == 5 for row in tokens]
    assert [reason == "eos" for reason in out.finish_reasons] == ended


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, do_sample=True),
     r"num_beam_groups=2 is not allowed with do_sample=True"),
    (dict(num_beams=4, num_beam_groups=2), r"num_beam_groups=2 is not allowed with diversity_penalty=0"),
    (dict(num_beams=4, num_beam_groups=3, diversity_penalty=0.5), r"num_beams=4 is not allowed: it must be "
                                                                  r"divisible by num_beam_groups=3"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=-1.0), r"diversity_penalty=-1\.0 is not allowed"),
    (dict(num_beams=2, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=3),
     r"num_return_sequences=3 is not allowed: it must be <= num_beams=2"),
])
def test_bad_diverse_parameters_are_named(tiny_llama, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), max_new_tokens=4, **kwargs)


@pytest.mark.slow
def test_smollm2_groups_differ_and_caches_agree(smollm2):
    model, tokenizer = smollm2
    batch = tokenizer(["The state of the union is", "Tonight"], return_tensors="pt", padding=True)
    kwargs = dict(num_beams=4, num_beam_groups=4, diversity_penalty=5.0, num_return_sequences=4, max_new_tokens=8)
    runs = [decoding.generate(model, batch.input_ids, batch.attention_mask, cache=c, **kwargs)
            for c in ("dynamic", "static")]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    first = runs[0].new_token_ids[:, 0].view(2, 4)
    assert all(len(set(row.tolist())) == 4 for row in first)
