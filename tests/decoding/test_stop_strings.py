"""Stop strings: a row stops when a stop string ends inside the token just generated, as in transformers.

The rule itself is checked on the examples of StopStringCriteria's docstring; generation equals
`model.generate(stop_strings=..., tokenizer=...)` for each tokenizer kind (tests/decoding/offline_tokenizers.py)
on tiny Llama and GPT-2 models whose vocabulary is the tokenizer's.
"""

import functools

import pytest
import torch
from transformers.generation import StopStringCriteria

import decoding
from decoding.stopping import StopStrings, StopTable, matching_mode, token_strings_for
from experiments.models import build_tiny_model
from tests.decoding.offline_tokenizers import BUILDERS
from tests.decoding.reference import reference_and_ours

VOCAB = ["", "st", "op", "stop", "opera", "sto", "pper", "las", "topper", "s", "to", "pped", "at", "x"]


@pytest.mark.parametrize("pieces, hit", [
    (("st", "op"), True), (("stop",), True), (("st", "opera"), True), (("sto", "pper"), True),
    (("las", "topper"), True), (("s", "to", "pped"), True), (("st", "", "op"), True),
    (("stop", "at"), False), (("st", "op", "at"), False), (("x", "x"), False), (("s", "x", "op"), False),
])
def test_overlap_rule_of_transformers_docs(pieces, hit):
    # The examples of transformers' StopStringCriteria docstring (plus an empty token, which never breaks a
    # match, and an unrelated one, which does).
    table = StopTable("stop", dict(enumerate(VOCAB)))
    lengths = {i: len(text) for i, text in enumerate(VOCAB)}
    assert table.hit([VOCAB.index(p) for p in pieces], lengths) is hit


@pytest.mark.parametrize("tokens, stop, hit", [
    (["##b"], "#b", False),  # decoded alone the token reads "##b"; its token string is "b"
    (["they"], " the", True),  # a word-initial token's string starts with a space: " they"
    (["the", "end"], "e e", True),
    (["a", "##b", "##b"], "abb", True),
    (["a", "##b"], "a b", False),
])
def test_wordpiece_matches_token_strings_not_decoded_text(tokens, stop, hit):
    # issue 12: decoding the tail made a lone "##x" token match where transformers' rule does not
    tokenizer = BUILDERS["wordpiece"]()
    assert tokenizer.unk_token not in tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(tokens))
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
    assert bool(StopStringCriteria(tokenizer, [stop])(ids, None)[0]) is hit
    assert StopStrings([stop], tokenizer)(ids, [0]) == ([0] if hit else [])


@functools.lru_cache(maxsize=None)
def model_for(kind: str, vocab_size: int):
    """A tiny model that can emit exactly the tokenizer's ids (its EOS / pad id 2 is an ordinary token here)."""
    return build_tiny_model(kind, vocab_size=vocab_size, seed=0)


PROMPTS = ["The state of our union is strong, and", "We will not stop", "In my first year in office, we bu"]
GENERATE = dict(do_sample=True, max_new_tokens=10, seed=3)


def spelled(tokenizer, ids):
    """The token strings of ids (str, or bytes for byte-level and byte-fallback tokenizers)."""
    strings = token_strings_for(tokenizer, matching_mode(tokenizer)).strings
    return [strings[i] for i in ids]


def as_text(piece):
    return piece.decode("utf-8") if isinstance(piece, bytes) else piece


def ascii_piece(piece) -> bool:
    """Printable ASCII (a lone byte of a longer UTF-8 character is not)."""
    text = piece.decode("latin-1") if isinstance(piece, bytes) else piece
    return text.isascii() and text.isprintable()


def joined(before, after):
    """The last unit of `before` and the first of `after` as a stop string, or None (non-ASCII, blank)."""
    if not before or not after or not ascii_piece(before[-1:]) or not ascii_piece(after[:1]):
        return None
    stop = as_text(before[-1:] + after[:1])
    return stop if stop.strip() else None


def spanning_stop(before, after):
    """The last unit of `before` and the first of `after`, where `after` goes on: a stop string that spans
    two tokens and ends inside the second (an overshoot). None when the pair cannot give one."""
    return joined(before, after) if len(after) >= 2 else None


@pytest.mark.parametrize("model_kind", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("tokenizer_kind", list(BUILDERS))
def test_stop_strings_equal_generate(model_kind, tokenizer_kind):
    tokenizer = BUILDERS[tokenizer_kind]()
    model = model_for(model_kind, len(tokenizer))
    batch = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    width = max(len(ids) for ids in batch)
    ids = torch.tensor([[0] * (width - len(row)) + row for row in batch])  # left-padded, pad id 0
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch])

    # Where the rows go without stop strings (the same seed: stopping a row changes no random draw)
    free = reference_and_ours(model, ids, mask, **GENERATE)[1]
    new = [spelled(tokenizer, row.tolist()) for row in free.new_token_ids]
    prompt_ends = [spelled(tokenizer, row[-1:])[0] for row in batch]
    # row 0: a stop string across two new tokens, ending inside the second (an overshoot)
    across_new = next(s for k in range(1, 8) if (s := spanning_stop(new[0][k - 1], new[0][k])) is not None)
    # row 2 (or 0): one across the prompt's last token and the first new one: it ends the row at step 0
    across_prompt, prompt_row = next(((s, r) for r in (2, 0) if (s := joined(prompt_ends[r], new[r][0]))),
                                     (None, None))
    # row 1: its prompt ends with a stop string, and yet the row runs on: a stop string must end in a new token
    in_prompt = "stop"
    assert PROMPTS[1].endswith(in_prompt)
    stops = [s for s in (across_new, across_prompt, in_prompt) if s]

    reference, ours = reference_and_ours(model, ids, mask, stop_strings=stops, tokenizer=tokenizer, **GENERATE)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons[0] == "stop_string"
    if prompt_row is not None:
        assert ours.finish_reasons[prompt_row] == "stop_string"
        assert int(ours.new_token_mask[prompt_row].sum()) == 1
    assert bool(ours.new_token_mask[1, 1])


@pytest.mark.parametrize("tokenizer_kind", list(BUILDERS))
def test_stop_strings_with_beam_search_equal_generate(tokenizer_kind):
    tokenizer = BUILDERS[tokenizer_kind]()
    model = model_for("tiny_llama", len(tokenizer))
    ids = torch.tensor([tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]])
    free = decoding.generate(model, ids, max_new_tokens=8, num_beams=3)
    new = spelled(tokenizer, free.new_token_ids[0].tolist())
    stop = next(s for k in range(1, 7) if (s := spanning_stop(new[k - 1], new[k])) is not None)
    reference, ours = reference_and_ours(model, ids, None, max_new_tokens=8, num_beams=3, stop_strings=[stop],
                                         tokenizer=tokenizer)
    assert torch.equal(reference, ours.sequences)


def test_stop_strings_need_a_transformers_tokenizer(tiny_llama):
    class DecodeOnly:
        def decode(self, ids, **_):
            return "x" * len(ids)

    with pytest.raises(ValueError, match="tokenizer=DecodeOnly is not allowed with stop_strings"):
        decoding.generate(tiny_llama, torch.tensor([[5, 6]]), max_new_tokens=2, stop_strings=["x"],
                          tokenizer=DecodeOnly())


def test_stop_string_no_token_can_end_is_refused(tiny_llama):
    tokenizer = BUILDERS["wordpiece"]()  # knows no Korean: no token can end "끝"
    with pytest.raises(ValueError, match="stop_strings=\\['끝'\\] is not allowed"):
        decoding.generate(tiny_llama, torch.tensor([[5, 6]]), max_new_tokens=2, stop_strings=["끝"],
                          tokenizer=tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [["."], [","], [" the", "States"]])
def test_stop_strings_match_generate_on_smollm2(smollm2, stop):
    model, tokenizer = smollm2
    prompts = ["The Congress of the United States", "In my first year in office, we"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=True, top_p=0.95, max_new_tokens=25, stop_strings=stop)
    torch.manual_seed(1)
    reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, tokenizer=tokenizer, **kwargs)
    torch.manual_seed(1)
    ours = decoding.generate(model, batch.input_ids, batch.attention_mask, tokenizer=tokenizer, **kwargs)
    assert torch.equal(reference, ours.sequences)
    for row, reason in enumerate(ours.finish_reasons):
        n = int(ours.new_token_mask[row].sum())
        text = tokenizer.decode(ours.new_token_ids[row, :n])
        if reason == "stop_string":
            assert any(s in text for s in stop)
    assert "stop_string" in ours.finish_reasons
