"""MBR decoding: the utilities against sacrebleu, the selection on hand cases, the whole call end to end.

The selection is tested apart from the sampling (hand utility matrices and texts given to the utility and
selection functions directly); end to end, the candidates must be exactly what plain sampling with
num_return_sequences = n draws from the same seed, and the choice the argmax of expected utilities the test
recomputes itself (sacrebleu called directly; hidden states of each candidate run alone).

"A batch row equals that prompt alone" for a sampling strategy: the batch draws one multinomial over all its
rows per step, so a prompt's candidates depend on its batch-mates (as in plain sampling, where the candidates
are checked against generate's). What must not depend on them is the rest: a prompt's utilities, expected
utilities and choice computed from its candidates inside the batch equal those computed from the same
candidates on their own, unpadded (`test_prompt_alone_scores_as_in_the_batch`).
"""

import dataclasses

import pytest
import sacrebleu
import torch

import decoding
from decoding.params import resolve_params
from decoding.strategies.mbr import chosen_rows, utility_matrices
from decoding.strategies.mbr_utility import (cosine_matrix, expected_utility, mean_pooled_embeddings, select_best,
                                             text_utility_matrix)

N = 6  # candidates per prompt in the end-to-end tests
# Many EOS ids, so the tiny random model's candidates end at different lengths (EOS, padding after it).
EOS = list(range(3, 49152, 53))


@pytest.fixture(scope="module")
def tiny_smol():
    from experiments.models import load_tiny

    return load_tiny("tiny_llama")


@pytest.fixture(scope="module")
def prompts(tiny_smol):
    _, tok = tiny_smol
    enc = tok(["The cat sat on the mat and", "Hello"], return_tensors="pt", padding=True, padding_side="left")
    assert enc.attention_mask[1, 0] == 0  # the second prompt is left-padded
    return enc.input_ids, enc.attention_mask


def sampling(**extra):
    return dict(do_sample=True, max_new_tokens=10, eos_token_id=EOS, **extra)


def texts_of(result, tok):
    return [tok.decode(row[keep].tolist(), skip_special_tokens=True)
            for row, keep in zip(result.new_token_ids, result.new_token_mask)]


def argsort_by_hand(scores):
    """Indices of `scores` from highest to lowest, ties to the lowest index, by plain Python."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


# --- utilities against sacrebleu, on hand texts ---

HAND_TEXTS = ["stock prices fell sharply today", "the cat sat on a mat", "the cat sat on the mat",
              "the cat lay on the mat", "", "the cat sat"]


@pytest.mark.parametrize("utility, direct", [("chrf", sacrebleu.sentence_chrf), ("bleu", sacrebleu.sentence_bleu)])
def test_text_utility_is_sacrebleu_sentence_score(utility, direct):
    u = text_utility_matrix(HAND_TEXTS, utility)
    expected = torch.tensor([[direct(h, [r]).score for r in HAND_TEXTS] for h in HAND_TEXTS], dtype=torch.float64)
    assert torch.equal(u, expected)
    assert not torch.equal(u, u.T)  # hypothesis and reference are not interchangeable: the matrix is filled in full


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
def test_the_consensus_text_is_chosen(utility):
    """"the cat sat on the mat" is one edit from each of the other two cat sentences; they are two edits apart and
    the stock sentence shares nothing: the medoid wins, the outlier comes last."""
    texts = HAND_TEXTS[:4]
    order = select_best(expected_utility(text_utility_matrix(texts, utility))[None], 4)
    assert order[0, 0].item() == 2
    assert order[0, -1].item() == 0


# --- the selection rule, on hand matrices ---

def test_expected_utility_is_the_mean_over_the_others():
    u = torch.tensor([[9.0, 1.0, 2.0], [4.0, 9.0, 6.0], [0.0, 3.0, 9.0]], dtype=torch.float64)  # diagonal ignored
    assert expected_utility(u).tolist() == [1.5, 5.0, 1.5]
    assert expected_utility(torch.stack([u, u.T])).tolist() == [[1.5, 5.0, 1.5], [2.0, 2.0, 4.0]]


def test_selection_best_first_ties_to_the_lowest_index():
    expected = torch.tensor([[1.0, 3.0, 2.0, 3.0], [5.0, 5.0, 5.0, 0.0]])
    assert select_best(expected, 1).tolist() == [[1], [0]]
    assert select_best(expected, 3).tolist() == [[1, 3, 2], [0, 1, 2]]


def test_identical_candidates_tie_exactly():
    """Candidates 0 and 2 are the same text: their rows of the matrix are equal, so their expected utilities are
    bit-identical and the tie goes to 0 (a sum in another order could break it by one ulp)."""
    texts = ["a b c d", "a b x d", "a b c d", "q r s"]
    expected = expected_utility(text_utility_matrix(texts, "chrf"))
    assert expected[0] == expected[2]
    assert select_best(expected[None], 2).tolist() == [[0, 2]]


def test_cosine_consensus_on_hand_vectors():
    # three vectors near the x axis, one opposite: the middle of the three is the consensus
    e = torch.tensor([[1.0, 0.3], [1.0, 0.0], [1.0, -0.3], [-1.0, 0.0]])
    u = cosine_matrix(e)
    assert torch.allclose(torch.diagonal(u), torch.ones(4, dtype=torch.float64))
    assert u[1, 3].item() == pytest.approx(-1.0)
    assert select_best(expected_utility(u)[None], 4).tolist() == [[1, 0, 2, 3]]


# --- the embedding utility's pooling ---

@torch.no_grad()
def test_mean_pooling_ignores_padding(tiny_smol):
    model, _ = tiny_smol
    tokens = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    pooled = mean_pooled_embeddings(model, tokens, mask)
    for row in range(3):
        alone = tokens[row, mask[row]][None]
        hidden = model(input_ids=alone, output_hidden_states=True).hidden_states[-1][0]  # (len, H)
        torch.testing.assert_close(pooled[row], hidden.mean(0), rtol=1e-5, atol=1e-5)
    different = mean_pooled_embeddings(model, tokens, torch.ones_like(mask))  # the padding counted: not the same
    assert not torch.allclose(different[1], pooled[1], atol=1e-3)


# --- end to end on a tiny Llama with SmolLM2's tokenizer ---

@pytest.fixture(scope="module")
def plain_candidates(tiny_smol, prompts):
    model, _ = tiny_smol
    return decoding.generate(model, *prompts, generator=torch.Generator().manual_seed(7),
                             num_return_sequences=N, **sampling())


@pytest.mark.parametrize("utility", ["chrf", "bleu", "embedding"])
@torch.no_grad()
def test_choice_is_the_argmax_of_recomputed_expected_utilities(tiny_smol, prompts, plain_candidates, utility):
    model, tok = tiny_smol
    result = decoding.generate(model, *prompts, generator=torch.Generator().manual_seed(7), tokenizer=tok,
                               mbr_candidates=N, mbr_utility=utility, num_return_sequences=2, **sampling())
    plain = plain_candidates
    assert torch.equal(result.mbr_candidates.sequences, plain.sequences)  # the same draws as plain sampling
    assert len({t for t in texts_of(plain, tok)}) > 2  # the candidates differ: the choice is not trivial
    assert len(set(plain.finish_reasons)) == 2  # some end on EOS, some run to the length limit
    if utility == "embedding":
        embeddings = []
        for row, keep in zip(plain.new_token_ids, plain.new_token_mask):  # each candidate alone, unpadded
            hidden = model(input_ids=row[keep][None], output_hidden_states=True).hidden_states[-1][0]
            embeddings.append(hidden.mean(0))
        embeddings = torch.stack(embeddings)
    else:
        texts = texts_of(plain, tok)
        direct = sacrebleu.sentence_chrf if utility == "chrf" else sacrebleu.sentence_bleu
    for b in range(2):
        rows = range(b * N, (b + 1) * N)
        if utility == "embedding":
            e = torch.nn.functional.normalize(embeddings[b * N:(b + 1) * N], dim=-1)
            scores = [sum(float(e[i] @ e[j]) for j in range(N) if j != i) / (N - 1) for i in range(N)]
            assert result.mbr_expected_utility[b].tolist() == pytest.approx(scores, abs=1e-5)
        else:
            scores = [sum(direct(texts[i], [texts[j]]).score for j in rows if j != i) / (N - 1) for i in rows]
            assert result.mbr_expected_utility[b].tolist() == pytest.approx(scores, rel=1e-12)
        best = argsort_by_hand(scores)[:2]
        assert result.mbr_chosen[b].tolist() == best
        for k, i in enumerate(best):  # the returned rows are those candidates, with what sampling recorded
            out, src = 2 * b + k, b * N + i
            assert torch.equal(result.sequences[out], plain.sequences[src])
            assert torch.equal(result.token_logprobs[out], plain.token_logprobs[src])
            assert torch.equal(result.new_token_mask[out], plain.new_token_mask[src])
            assert result.finish_reasons[out] == plain.finish_reasons[src]
    assert result.new_tokens == int(result.new_token_mask.sum())
    assert result.decode_seconds >= result.mbr_seconds > 0


def test_one_return_sequence_and_scores_of_the_chosen_rows(tiny_smol, prompts, plain_candidates):
    model, tok = tiny_smol
    result = decoding.generate(model, *prompts, generator=torch.Generator().manual_seed(7), tokenizer=tok,
                               mbr_candidates=N, output_scores=True, **sampling())
    assert result.sequences.shape[0] == 2 and result.mbr_chosen.shape == (2, 1)
    rows = torch.arange(2) * N + result.mbr_chosen[:, 0]
    assert torch.equal(result.sequences, plain_candidates.sequences[rows])
    assert len(result.scores) == len(result.mbr_candidates.scores)
    assert all(torch.equal(s, c[rows]) for s, c in zip(result.scores, result.mbr_candidates.scores))


@pytest.mark.parametrize("utility", ["chrf", "embedding"])
def test_prompt_alone_scores_as_in_the_batch(tiny_smol, prompts, plain_candidates, utility):
    """Prompt b's candidates cut out of the batch and trimmed to their own length (so the scorer sees other
    padding) give the same utility matrix, expected utilities and choice as inside the batch."""
    model, tok = tiny_smol
    together = utility_matrices(plain_candidates, N, utility, model, tok)  # (2, N, N)
    for b in range(2):
        alone = chosen_rows(plain_candidates, torch.arange(b * N, (b + 1) * N), 0.0, None, None)
        width = int(alone.new_token_mask.sum(1).max())
        alone = dataclasses.replace(alone, sequences=alone.sequences[:, :alone.prompt_length + width],
                                    new_token_mask=alone.new_token_mask[:, :width])
        own = utility_matrices(alone, N, utility, model, tok)[0]
        torch.testing.assert_close(own, together[b], rtol=0, atol=1e-6)
        order = select_best(expected_utility(together[b:b + 1]), N)
        assert torch.equal(select_best(expected_utility(own)[None], N), order)


def test_embedding_utility_under_another_scorer(tiny_smol, prompts):
    """A scorer with the vocabulary but other weights changes the utilities (it is the one read), not the draws."""
    from experiments.models import build_tiny_model

    model, tok = tiny_smol
    scorer = build_tiny_model("tiny_llama", vocab_size=len(tok), seed=1, max_positions=2048)
    own = decoding.generate(model, *prompts, generator=torch.Generator().manual_seed(3), mbr_candidates=N,
                            mbr_utility="embedding", **sampling())
    other = decoding.generate(model, *prompts, generator=torch.Generator().manual_seed(3), mbr_candidates=N,
                              mbr_utility="embedding", mbr_scorer=scorer, **sampling())
    assert torch.equal(own.mbr_candidates.sequences, other.mbr_candidates.sequences)
    u = utility_matrices(own.mbr_candidates, N, "embedding", scorer, None)
    torch.testing.assert_close(other.mbr_expected_utility, expected_utility(u))
    assert not torch.allclose(own.mbr_expected_utility, other.mbr_expected_utility, atol=1e-3)


# --- bad inputs: a ValueError before any forward pass ---

@pytest.mark.parametrize("given, match", [
    (dict(mbr_candidates=1), r"mbr_candidates=1 is not allowed: use an integer >= 2"),
    (dict(mbr_candidates=0), r"mbr_candidates=0 is not allowed"),
    (dict(mbr_candidates=4.0), r"mbr_candidates=4.0 is not allowed"),
    (dict(mbr_candidates=True), r"mbr_candidates=True is not allowed"),
    (dict(mbr_candidates=4, mbr_utility="rouge"),
     r"mbr_utility='rouge' is not allowed: use one of \['chrf', 'bleu', 'embedding'\]"),
    (dict(mbr_candidates=4, do_sample=False),
     r"do_sample=False: greedy decoding would draw the same candidate 4 times"),
    (dict(mbr_candidates=4, num_return_sequences=5), r"num_return_sequences=5 is not allowed with mbr_candidates=4"),
    (dict(mbr_candidates=4, num_beams=2), r"mbr_candidates=4 is not allowed with num_beams=2"),
    (dict(mbr_candidates=4, prompt_lookup_num_tokens=3), r"not allowed with speculative decoding"),
    # contrastive search's own check may refuse sampling first; either way penalty_alpha is named
    (dict(mbr_candidates=4, penalty_alpha=0.6), r"penalty_alpha=0.6 (is not allowed|\(contrastive search\))"),
    (dict(mbr_candidates=4, dola_layers="high"), r"not allowed with dola_layers='high' \(DoLa\)"),
    (dict(mbr_candidates=4, amateur_layers=1), r"amateur_layers \(contrastive decoding\)"),
    (dict(mbr_scorer="x"), r"mbr_scorer='x' is not allowed without mbr_candidates"),
    (dict(mbr_candidates=4, mbr_scorer="x"), r"only mbr_utility='embedding' reads a scorer"),
    (dict(mbr_candidates=4, mbr_utility="embedding", mbr_scorer="x"),
     r"mbr_scorer='x' is not allowed: use a transformers causal LM"),
])
def test_bad_parameters_refused_without_a_model(given, match):
    """The runner validates before loading a model (model=None): every MBR setting is checked there already."""
    params = dict(do_sample=True, max_new_tokens=4)
    params.update(given)
    with pytest.raises(ValueError, match=match):
        resolve_params(None, 3, **params)


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self.count)

    def count(self, *_):
        self.calls += 1


def test_bad_calls_refused_before_any_forward(tiny_smol, tiny_llama, prompts):
    model, tok = tiny_smol
    counter = ForwardCounter(model)
    try:
        with pytest.raises(ValueError, match=r"tokenizer=None is not allowed with mbr_utility='chrf'"):
            decoding.generate(model, *prompts, mbr_candidates=4, **sampling())
        with pytest.raises(ValueError, match=r"tokenizer=None is not allowed with mbr_utility='bleu'"):
            decoding.generate(model, *prompts, mbr_candidates=4, mbr_utility="bleu", **sampling())
        with pytest.raises(ValueError, match=r"mbr_scorer=LlamaForCausalLM is not allowed: its vocabulary \(1000 "):
            decoding.generate(model, *prompts, mbr_candidates=4, mbr_utility="embedding", mbr_scorer=tiny_llama,
                              **sampling())
        with pytest.raises(ValueError, match=r"mbr_candidates=4 is not allowed with do_sample=False"):
            decoding.generate(model, *prompts, tokenizer=tok, mbr_candidates=4, max_new_tokens=4)
    finally:
        counter.handle.remove()
    assert counter.calls == 0
