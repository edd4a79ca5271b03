"""Teacher-forced scoring: windows against the model's own loss, batching against one-at-a-time,
an independent straightforward implementation on SmolLM2, and generate-versus-forward log-probabilities.
"""

import json
import math
import re

import datasets
import pytest
import torch

import decoding
from experiments import perplexity, perplexity_cli
from experiments.data import load_documents
from experiments.models import load_model
from experiments.perplexity import (
    corpus_perplexity,
    generation_perplexity,
    prefix_token_id,
    score_batch,
    score_continuations,
    token_logprobs,
)
from experiments.windows import Window

TEXTS = [
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans: tonight we meet again.",
    "The state of our Union is strong. We have work to do, and we will do it together, as we always have.",
]


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2"])
def tiny(request):
    """A tiny random model that speaks SmolLM2's tokenizer: (model, tokenizer)."""
    return load_model(request.param)


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_one_window_equals_the_models_own_loss(tiny):
    model, tokenizer = tiny
    report = corpus_perplexity(model, tokenizer, TEXTS[:1], max_length=64, progress=False)
    ids = torch.tensor([[prefix_token_id(tokenizer), *encode(tokenizer, TEXTS[0])]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    doc = report.texts[0]
    assert report.windows == 1 and doc.tokens == ids.shape[1] - 1
    assert doc.nll / doc.tokens == pytest.approx(loss, rel=1e-5)
    assert report.metrics()["ppl/token"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_stride_equal_to_max_length_is_disjoint_and_batching_changes_nothing(tiny):
    model, tokenizer = tiny
    disjoint = corpus_perplexity(model, tokenizer, TEXTS, max_length=8, batch_size=1, progress=False)
    same = corpus_perplexity(model, tokenizer, TEXTS, max_length=8, stride=8, batch_size=5, progress=False)
    strided = corpus_perplexity(model, tokenizer, TEXTS, max_length=8, stride=3, batch_size=4, progress=False)
    assert same.windows == disjoint.windows
    assert same.metrics()["ppl/nll"] == pytest.approx(disjoint.metrics()["ppl/nll"], rel=1e-6)
    assert strided.windows > disjoint.windows
    assert strided.metrics()["ppl/tokens"] == disjoint.metrics()["ppl/tokens"]  # each token scored once
    assert strided.metrics()["ppl/nll"] != pytest.approx(disjoint.metrics()["ppl/nll"], rel=1e-6)


def test_left_padded_batch_equals_each_window_alone(tiny_model):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 1000, (40,), generator=g).tolist()
    windows = [Window(tuple(tokens[:30]), tuple(tokens[11:31])), Window(tuple(tokens[5:12]), tuple(tokens[10:13])),
               Window((tokens[0],), (tokens[1],))]
    together = score_batch(tiny_model, windows, pad_id=0)
    for window, batched in zip(windows, together):
        alone = score_batch(tiny_model, [window])[0]
        with torch.no_grad():
            logits = tiny_model(torch.tensor([window.input_ids])).logits[0]
        k = len(window.target_ids)
        reference = torch.log_softmax(logits, -1)[-k:].gather(-1, torch.tensor(window.target_ids)[:, None])[:, 0]
        assert torch.allclose(batched, alone, atol=1e-5)
        assert torch.allclose(alone, reference, atol=1e-5)


def test_fused_head_tiles_equal_the_log_softmax_of_full_logits(monkeypatch):
    """Tiles of 3 positions x 7 columns over a vocabulary of 50 (the last tile is narrower), with a bias."""
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 16, generator=g) * 3)
        head.bias.copy_(torch.randn(50, generator=g))
    hidden = torch.randn(2, 5, 16, generator=g)  # (B, K, H)
    targets = torch.tensor([[0, 6, 7, 49, 48], [13, 14, 20, 21, 35]])  # tile edges and the last column
    monkeypatch.setitem(perplexity._TILE, "cpu", (21, 7))
    with torch.no_grad():
        fused = perplexity._head_target_logprobs(hidden, head, targets)
        reference = torch.log_softmax(head(hidden), -1).gather(-1, targets[..., None])[..., 0]
    assert fused.shape == (2, 5) and fused.dtype == torch.float32
    assert torch.allclose(fused, reference, atol=1e-5)


def test_score_batch_fused_head_equals_the_models_own_logits(tiny_model):
    """The plain-head path (tiny Llama and GPT-2 are in _PLAIN_HEAD_MODELS) against the logits path."""
    assert perplexity._plain_head(tiny_model) is tiny_model.get_output_embeddings()
    windows = [Window(tuple(range(10, 40)), tuple(range(21, 41))), Window((5, 6, 7), (6, 7, 8))]
    fused = score_batch(tiny_model, windows)
    with torch.no_grad():
        logits = tiny_model(torch.tensor([windows[0].input_ids])).logits[0, -20:]  # (K, V)
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(windows[0].target_ids)[:, None])[:, 0]
    assert torch.allclose(fused[0], expected, atol=1e-5)


def test_a_subclass_that_changes_its_logits_is_scored_on_them(tiny_llama):
    """Only exact classes take the fused head: a subclass may do more after lm_head (here: logits x 2)."""

    class DoubledLlama(type(tiny_llama)):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    doubled = DoubledLlama(tiny_llama.config).eval()
    doubled.load_state_dict(tiny_llama.state_dict())
    assert perplexity._plain_head(doubled) is None
    window = Window(tuple(range(10, 30)), tuple(range(11, 31)))
    with torch.no_grad():
        logits = doubled(torch.tensor([window.input_ids])).logits[0]  # (T, V), already doubled
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(window.target_ids)[:, None])[:, 0]
    assert torch.allclose(score_batch(doubled, [window])[0], expected, atol=1e-5)
    assert not torch.allclose(score_batch(tiny_llama, [window])[0], expected, atol=1e-3)


def test_token_logprobs_handle_left_and_right_padding(tiny_model):
    ids = torch.tensor([[11, 12, 13, 14, 15, 16], [0, 0, 11, 12, 13, 14], [11, 12, 13, 14, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    logprobs = token_logprobs(tiny_model, ids, mask)  # (3, 5)
    assert logprobs.shape == (3, 5)
    assert torch.allclose(logprobs[1, 2:], logprobs[0, :3], atol=1e-5)
    assert torch.allclose(logprobs[2, :3], logprobs[0, :3], atol=1e-5)
    assert (logprobs[1, :2] == 0).all() and (logprobs[2, 3:] == 0).all()


def test_empty_documents_are_skipped_and_counted(tiny):
    model, tokenizer = tiny
    report = corpus_perplexity(model, tokenizer, ["", TEXTS[0], "  \n\t "], max_length=32, progress=False)
    metrics = report.metrics()
    assert metrics["ppl/documents"] == 1 and metrics["ppl/skipped_empty"] == 2
    assert [t.id for t in report.texts] == ["1"]
    with pytest.raises(ValueError, match="no text had anything to score"):
        corpus_perplexity(model, tokenizer, [""], max_length=32, progress=False).metrics()


def test_bad_arguments_are_clear_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="max_length=4096 is beyond the model's 2048 positions"):
        corpus_perplexity(model, tokenizer, TEXTS, max_length=4096, progress=False)
    with pytest.raises(ValueError, match="stride=9 is larger than max_length=8"):
        corpus_perplexity(model, tokenizer, TEXTS, max_length=8, stride=9, progress=False)
    for stride in (0, -1):
        with pytest.raises(ValueError, match=f"stride={stride} must be a positive integer"):
            corpus_perplexity(model, tokenizer, TEXTS, max_length=8, stride=stride, progress=False)
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        corpus_perplexity(model, tokenizer, TEXTS, max_length=8, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="no 'text' column"):
        corpus_perplexity(model, tokenizer, datasets.Dataset.from_dict({"body": TEXTS}), max_length=8)


def test_corpus_numbers_sum_units_and_count_words_and_bytes_on_the_original(tiny):
    model, tokenizer = tiny
    originals = ["  Caf\u00e9 , au lait .", "One two  three\nfour"]
    documents = datasets.Dataset.from_dict({"id": ["a", "b"], "text": ["Caf\u00e9, au lait.", originals[1]],
                                            "original_text": originals})
    report = corpus_perplexity(model, tokenizer, documents, max_length=4, progress=False)
    words = [len(re.split(r"\s+", t)) for t in originals]
    nbytes = [len(t.encode("utf-8")) for t in originals]
    assert [t.words for t in report.texts] == words == [6, 4]  # a leading space counts a word, as in lm-eval
    assert [t.bytes for t in report.texts] == nbytes
    nll = sum(t.nll for t in report.texts)
    tokens = sum(t.tokens for t in report.texts)
    metrics = report.metrics()
    assert metrics["ppl/token"] == pytest.approx(math.exp(nll / tokens))
    assert metrics["ppl/word"] == pytest.approx(math.exp(nll / sum(words)))
    assert metrics["ppl/byte"] == pytest.approx(math.exp(nll / sum(nbytes)))
    assert metrics["ppl/bpb"] == pytest.approx(nll / sum(nbytes) / math.log(2))
    per_doc_mean = sum(t.metrics()["ppl/token"] for t in report.texts) / 2
    assert metrics["ppl/token"] != pytest.approx(per_doc_mean)  # never a mean of per-document perplexities
    assert [row["id"] for row in report.per_text()] == ["a", "b"]


def test_generation_perplexity_is_the_teacher_forced_continuation(tiny):
    model, tokenizer = tiny
    prompts, continuations = ["The state of our Union", ""], [" is strong.", " Tonight we meet."]
    report = generation_perplexity(model, tokenizer, prompts, continuations, max_length=64)
    for i, (prompt, continuation) in enumerate(zip(prompts, continuations)):
        context = encode(tokenizer, prompt) or [prefix_token_id(tokenizer)]
        whole = encode(tokenizer, prompt + continuation)
        n = len(whole) - len(encode(tokenizer, prompt))
        ids = torch.tensor([context + whole[len(whole) - n:]])
        expected = -token_logprobs(model, ids)[0, -n:].double().sum().item()
        assert report.texts[i].nll == pytest.approx(expected, rel=1e-5)
        assert report.texts[i].tokens == n
    assert set(report.metrics("gen_ppl")) >= {"gen_ppl/token", "gen_ppl/word", "gen_ppl/byte", "gen_ppl/bpb"}
    skipped = score_continuations(model, [[5, 6], [7]], [[8, 9], []], prefix_token=1, max_length=16)
    assert skipped.skipped_empty == 1 and len(skipped.texts) == 1


def test_teacher_forced_logprobs_equal_those_recorded_by_generate(tiny_model):
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23], [0, 0, 0, 31, 32]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    out = decoding.generate(tiny_model, ids, mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    full_mask = torch.cat([mask, out.new_token_mask.long()], dim=1)  # (B, T + N)
    forward = token_logprobs(tiny_model, out.sequences, full_mask)[:, ids.shape[1] - 1:]  # (B, N)
    alive = out.new_token_mask
    assert torch.allclose(forward[alive], out.token_logprobs_raw[alive], atol=1e-4)


def test_cli_writes_flat_metrics_atomically(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    for i, text in enumerate(TEXTS + [""]):
        (tmp_path / "docs" / f"{i}.txt").write_text(text)
    out = tmp_path / "run"
    metrics = perplexity_cli.main(["--dataset", "files", "--path", str(tmp_path / "docs"), "--model", "tiny_llama",
                                   "--max-length", "16", "--stride", "8", "--out", str(out), "--no-progress"])
    written = json.loads((out / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    assert {"ppl/token", "ppl/word", "ppl/byte", "ppl/bpb", "ppl/tokens", "ppl/words", "ppl/bytes",
            "ppl/documents", "ppl/skipped_empty"} <= set(written)
    assert written["ppl/skipped_empty"] == 1 and written["stride"] == 8
    assert len((out / "documents.jsonl").read_text().splitlines()) == 2
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert "ppl/token" in capsys.readouterr().out


def straightforward_nll(model, tokens, prefix, max_length, stride):
    """Summed NLL of one document, one unbatched window at a time, with the model's own loss.

    Window k scores the tokens no earlier window scored, up to `max_length` + k * `stride`, reading the
    `max_length` tokens before each; labels of already scored tokens are -100.
    """
    sequence = [prefix, *tokens]
    total, scored, end = 0.0, 0, min(max_length, len(tokens))
    while scored < len(tokens):
        window = sequence[max(0, end - max_length):end + 1]  # inputs plus the last target
        labels = list(window)
        new = end - scored
        labels[:len(window) - new] = [-100] * (len(window) - new)
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([window]), labels=torch.tensor([labels])).loss.item()
        total += loss * new
        scored, end = end, min(end + stride, len(tokens))
    return total


@pytest.mark.slow
@pytest.mark.parametrize("stride", [None, 16])
def test_agrees_with_a_straightforward_implementation_on_smollm2(smollm2, stride):
    model, tokenizer = smollm2
    docs = TEXTS + [load_documents("sotu", "validation", limit=1)[0]["text"][:300]]
    report = corpus_perplexity(model, tokenizer, docs, max_length=24, stride=stride, batch_size=3, progress=False)
    prefix = prefix_token_id(tokenizer)
    assert prefix == 1  # SmolLM2's BOS, <|im_start|>
    expected = [straightforward_nll(model, encode(tokenizer, d), prefix, 24, stride or 24) for d in docs]
    assert report.windows > len(docs)  # the documents span several windows
    for doc, nll in zip(report.texts, expected):
        assert doc.nll == pytest.approx(nll, rel=1e-4)
    assert report.metrics()["ppl/nll"] == pytest.approx(sum(expected), rel=1e-4)


@pytest.mark.slow
def test_generate_logprobs_equal_teacher_forcing_on_smollm2(smollm2):
    model, tokenizer = smollm2
    batch = tokenizer(["The state of our Union is", "My fellow Americans,"], return_tensors="pt", padding=True)
    out = decoding.generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=6, do_sample=False)
    full_mask = torch.cat([batch["attention_mask"], out.new_token_mask.long()], dim=1)
    forward = token_logprobs(model, out.sequences, full_mask)[:, batch["input_ids"].shape[1] - 1:]
    alive = out.new_token_mask
    assert torch.allclose(forward[alive], out.token_logprobs_raw[alive], atol=1e-4)
    # Generation perplexity of the same continuation, from its ids, is the same sum.
    prompts = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]
    continuations = [row[a].tolist() for row, a in zip(out.new_token_ids, alive)]
    report = score_continuations(model, prompts, continuations, prefix_token=prefix_token_id(tokenizer))
    for i, text in enumerate(report.texts):
        assert text.nll == pytest.approx(-out.token_logprobs_raw[i][alive[i]].double().sum().item(), rel=1e-4)
