"""transformers' tests/generation/test_stopping_criteria.py, ported to decodelab.

Same inputs and expected outputs, run through our `StopStrings` (decoding/stopping.py), `Stops` (hooks.py),
`eos_hits` and `decoding.generate`. The hub tokenizers are replaced by offline ones of the same kind
(tests/decoding/offline_tokenizers.py): openai-community/gpt2 -> `byte_level_bpe()`, Qwen/Qwen2-0.5B-Instruct ->
`byte_level_bpe(chat_tokens=True)`, hf-internal-testing/llama-tokenizer -> `byte_fallback_bpe()`,
hf-internal-testing/tiny-random-bert -> `wordpiece()`. Where an expected value depends on the vocabulary, the
case says so and why it changed.

Not ported: `ConfidenceCriteria` (assisted decoding only), the torch.compile case of StopStringCriteria (ours
is not a tensor program), multi-codebook EOS frames and the StoppingCriteriaList keyword filtering (not in
transformers 5.24, and not our API).
"""

import random
import time

import pytest
import torch
from transformers import StoppingCriteria
from transformers.generation import MaxLengthCriteria, StopStringCriteria

import decoding
from decoding.hooks import Recorder, Stops
from decoding.stopping import BYTE_FALLBACK, BYTE_LEVEL, StopStrings, StopTable, eos_hits, matching_mode
from decoding.stopping import _as_byte, byte_level_alphabet
from tests.decoding.offline_tokenizers import BUILDERS, byte_fallback_bpe, byte_level_bpe, wordpiece

from tests.decoding.reference import reference_and_ours


def left_padded(tokenizer, texts):
    tokenizer = _with_pad(tokenizer)
    return tokenizer(texts, return_tensors="pt", padding="longest", add_special_tokens=False)["input_ids"]


def _with_pad(tokenizer):
    """A copy with pad = eos and left padding, as the ported tests set up GPT-2 (the cached one stays as is)."""
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def hits(matcher: StopStrings, ids: torch.Tensor) -> list[bool]:
    """Per row of ids (B, T): does our matcher stop it (checked as one batch, every row running)?"""
    stopped = set(matcher(ids, range(ids.shape[0])))
    return [r in stopped for r in range(ids.shape[0])]


# test_list_criteria, test_max_length_criteria: MaxLengthCriteria(max_length=10) ends a 5- or 9-token
# sequence at 10 tokens; a 10-token prompt is already done (generate refuses it, and so do we).
@pytest.mark.parametrize("prompt_length", [5, 9])
def test_max_length_criteria(tiny_model, prompt_length):
    ids = torch.arange(10, 10 + prompt_length).repeat(3, 1)
    reference, ours = reference_and_ours(tiny_model, ids, None, max_length=10, eos_token_id=None)
    assert ours.sequences.shape == (3, 10)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons == ["length"] * 3


def test_max_length_reached_by_the_prompt_is_refused(tiny_llama):
    ids = torch.arange(10, 20).repeat(3, 1)
    with pytest.raises(ValueError, match="max_length"):
        tiny_llama.generate(ids, max_length=10)
    with pytest.raises(ValueError, match="max_length=10"):
        decoding.generate(tiny_llama, ids, max_length=10)


def test_max_time_criteria():
    stops = Stops(None, 0.1, Recorder(False, False))
    assert not stops.time_up()
    stops.start = time.time() - 0.2  # MaxTimeCriteria(max_time=0.1, initial_timestamp=time.time() - 0.2)
    assert stops.time_up()


def test_max_time_ends_generation_after_the_first_step(tiny_model):
    ids = torch.arange(10, 15)[None]
    reference, ours = reference_and_ours(tiny_model, ids, None, max_new_tokens=20, max_time=1e-4, eos_token_id=None)
    assert reference.shape == ours.sequences.shape == (1, 6)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons == ["max_time"]


def test_eos_token_criteria():
    # EosTokenCriteria(eos_token_id=0) looks at the last token of each row, as our eos_hits does
    eos = torch.tensor([0])
    ids = torch.randint(1, 250, (3, 5))
    ids[:, -1] = 0
    assert eos_hits(ids[:, -1], eos).tolist() == [True, True, True]
    ids[2, -1] = 1
    assert eos_hits(ids[:, -1], eos).tolist() == [True, True, False]
    ids[:, -1] = 1
    assert eos_hits(ids[:, -1], eos).tolist() == [False, False, False]


def test_eos_token_ends_generation_as_generate(tiny_model):
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    free = decoding.generate(tiny_model, ids, mask, max_new_tokens=6, eos_token_id=None)
    eos = int(free.new_token_ids[0, 2])  # row 0's third new token: it ends there
    reference, ours = reference_and_ours(tiny_model, ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons[0] == "eos"


class EndsRowZero(StoppingCriteria):
    """A user criterion without an eos_token_id: row 0 ends once the sequence has 7 tokens."""

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        done[0] = input_ids.shape[1] >= 7
        return done


BATCH = (torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23]]), torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]))


def test_user_criterion_without_eos_leaves_finished_rows_unpadded(tiny_model):
    # eos_token_id=None: generate builds no EosTokenCriteria, so a row the user's criterion ended goes on
    # with real tokens (they are not pad), and so do we
    reference, ours = reference_and_ours(tiny_model, *BATCH, max_new_tokens=5, eos_token_id=None, pad_token_id=5,
                                         stopping_criteria=[EndsRowZero()])
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons[0] == "stopping_criteria"


# generate keeps an empty EOS tensor, builds an EosTokenCriteria from it and so pads the rows a user's criterion
# ended; params.py keeps eos_token_id=[] as () (not None) and the loop pads whenever it is not None
@pytest.mark.parametrize("pad", [{"pad_token_id": 5}, {}], ids=["pad_5", "model_pad"])
def test_empty_eos_list_with_a_user_criterion_pads_finished_rows(tiny_llama, pad):
    reference, ours = reference_and_ours(tiny_llama, *BATCH, max_new_tokens=5, eos_token_id=[],
                                         stopping_criteria=[EndsRowZero()], **pad)
    assert torch.equal(reference, ours.sequences)


def test_validate_stopping_criteria_is_a_refusal():
    # validate_stopping_criteria warns when a MaxLengthCriteria disagrees with max_length, then uses it; we
    # refuse a user MaxLengthCriteria outright, before any forward pass, and name the parameter to use
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoding.hooks.check_stopping_criteria([MaxLengthCriteria(10)])


TRUE_STRINGS = ["<|im_start|><|im_end|>", "<|im_start|><|im_end|<|im_end|>", ">><|im_start|>>stop", "stop", "e nd"]
FALSE_STRINGS = ["<|im_start|><|im_end|", "<|im_start|><|im_end|<|im_end|", "<|im_end|><|im_start|>",
                 "<|im_end|<>stop<|im_end|", "end", "en d", "eNd", "<|im_end|", "|im_end|>", "s"]


@pytest.mark.parametrize("chat_tokens", [False, True], ids=["gpt2_like", "qwen2_like_special_tokens"])
def test_stop_string_criteria(chat_tokens):
    tokenizer = byte_level_bpe(chat_tokens=chat_tokens)
    matcher = StopStrings(["<|im_end|>", "stop", "e nd"], tokenizer)
    true_ids, false_ids = left_padded(tokenizer, TRUE_STRINGS), left_padded(tokenizer, FALSE_STRINGS)
    for i in range(len(TRUE_STRINGS)):
        assert hits(matcher, true_ids[i:i + 1]) == [True]
    for i in range(len(FALSE_STRINGS)):
        assert hits(matcher, false_ids[i:i + 1]) == [False]
    # and all rows of each padded batch at once
    assert hits(matcher, true_ids) == [True] * len(TRUE_STRINGS)
    assert hits(matcher, false_ids) == [False] * len(FALSE_STRINGS)


def assert_isolated_token_decode_loses_stop_string(tokenizer, text, stop_string):
    """The stop string is in the decoded text but in no token decoded alone: only bytes can match it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    isolated = "".join(tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids))
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith(stop_string)
    assert stop_string not in isolated


def test_stop_string_criteria_byte_fragments():
    tokenizer = byte_level_bpe(chat_tokens=True)
    assert matching_mode(tokenizer) == BYTE_LEVEL
    assert_isolated_token_decode_loses_stop_string(tokenizer, "대화 끝", "끝")
    assert_isolated_token_decode_loses_stop_string(tokenizer, "작업 완료", "완료")
    for text, stop_string, expected in [("대화 끝", "끝", True), ("작업 완료", "완료", True),
                                        ("대화 끝 다음", "끝", False)]:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert hits(StopStrings([stop_string], tokenizer), ids) == [expected]


def test_stop_string_criteria_byte_fallback_fragments():
    tokenizer = byte_fallback_bpe()
    assert matching_mode(tokenizer) == BYTE_FALLBACK
    assert_isolated_token_decode_loses_stop_string(tokenizer, "대화 끝", "끝")
    assert_isolated_token_decode_loses_stop_string(tokenizer, "abc 끝!", "끝!")
    for text, stop_string, expected in [("대화 끝", "끝", True), ("abc 끝!", "끝!", True),
                                        ("대화 끝 다음", "끝", False), ("완료 후속", "완료", False)]:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert hits(StopStrings([stop_string], tokenizer), ids) == [expected]


@pytest.mark.parametrize("kind", ["byte_level_ascii", "non_byte_level_tokenizer"])
def test_stop_string_criteria_the_end(kind):
    # GPT-2 (byte-level) and tiny-random-bert (WordPiece: no byte mode, token strings from the text)
    tokenizer = byte_level_bpe() if kind == "byte_level_ascii" else wordpiece()
    assert matching_mode(tokenizer) == (BYTE_LEVEL if kind == "byte_level_ascii" else None)
    matcher = StopStrings(["end"], tokenizer)
    for text, expected in [("the end", True), ("end of", False)]:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert hits(matcher, ids) == [expected]


class FakeDecoder:
    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state


class FakeTokenizer:
    def __init__(self, decoder):
        self.backend_tokenizer = type("Backend", (), {"decoder": decoder})()


def test_stop_string_matching_mode_helpers():
    def mode(state):
        return matching_mode(FakeTokenizer(FakeDecoder(state)))

    assert mode(b'{"type":"Sequence","decoders":[{"type":"ByteLevel"}]}') == BYTE_LEVEL
    assert mode(b'{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"ByteLevel"}]}') == BYTE_FALLBACK
    assert mode(b'{"type":"Replace","content":"ByteFallback"}') is None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert byte_level_alphabet() == {char: byte for byte, char in bytes_to_unicode().items()}
    assert _as_byte("<0xEB>") == b"\xeb"
    assert _as_byte("<0xeb>") == b"\xeb"
    for token in ["<0x+1>", "<0xG1>", "<0x 1>", "<0x1>", "<0x100>", "<0xeb", "hello"]:
        assert _as_byte(token) is None


def test_stop_string_criteria_vocab_size_mismatch():
    # ids the tokenizer does not know (the model's vocabulary is larger) match nothing and raise nothing
    tokenizer = byte_level_bpe()
    ids = torch.tensor([[len(tokenizer) + 1024, 1, 2]])
    assert hits(StopStrings(["test"], tokenizer), ids) == [False]


def test_stop_string_matching_positions_and_embedding_vecs():
    # transformers' _stop_string_get_matching_positions / _stop_string_create_embedding_vec case: "stop" over
    # the tokens last / top / topper / s / p. Their "valid positions" are our `continues`, their "end
    # overlaps" our `ends`, their last column the token lengths.
    token_list = ["last", "top", "topper", "s", "p"]
    table = StopTable("stop", dict(enumerate(token_list)))
    assert {token_list[i]: sorted(c) for i, c in table.continues.items()} == {"s": [3], "last": [2]}
    assert {token_list[i]: list(e) for i, e in table.ends.items()} == {"top": [3], "topper": [3], "p": [1]}
    # the embedding's columns, row per token id (and a last row for unknown ids: -1, nothing)
    valid = [min(table.continues.get(i, {-1})) for i in range(6)]
    ends = [table.ends.get(i, (-1,))[0] for i in range(6)]
    assert valid == [2, -1, -1, 3, -1, -1]
    assert ends == [-1, 3, 3, -1, 1, -1]


def test_single_letter_stop_string():
    # GPT-2 with add_prefix_space=False: "abc" is one token, "abbbbbbb" several (so the last one lacks "a");
    # the same holds for byte_level_bpe(): ["abc"] and ["ab", "b", "b", ...]
    tokenizer = byte_level_bpe()
    assert tokenizer.convert_ids_to_tokens(tokenizer("abc")["input_ids"]) == ["abc"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("abbbbbbb")["input_ids"])[-1] == "b"
    matcher = StopStrings(["a"], tokenizer)
    for ids in left_padded(tokenizer, ["a", "baa", "abc"]):
        assert hits(matcher, ids[None]) == [True]
    for ids in left_padded(tokenizer, ["abbbbbbb", "b"]):
        assert hits(matcher, ids[None]) == [False]


PER_ROW_TEXTS = ["They completed the challenging puzzle, revealing the hidden image at the end",
                 "Today a dragon flew over France", "The aroma of freshly baked pizza filled the kitchen"]
# transformers uses MaxLengthCriteria(max_length=20): GPT-2 spells the longest text in fewer than 20 tokens,
# byte_level_bpe() in 23, so the limit moves to 30 to keep the case "the stop string, not the length, ends it"
MAX_LENGTH = 30


def stops_per_row(matcher, ids):
    """StoppingCriteriaList([MaxLengthCriteria(MAX_LENGTH), StopStringCriteria(...)]) as our loop decides."""
    return [hit or ids.shape[1] >= MAX_LENGTH for hit in hits(matcher, ids)]


def test_criteria_per_row():
    tokenizer = byte_level_bpe()
    ids = tokenizer(PER_ROW_TEXTS[0], return_tensors="pt", add_special_tokens=False)["input_ids"]
    matcher = StopStrings(["end"], tokenizer)
    assert stops_per_row(matcher, ids) == [True]
    assert stops_per_row(matcher, ids[:, :-1]) == [False]


def test_criteria_per_row_batched():
    tokenizer = byte_level_bpe()
    ids = left_padded(tokenizer, PER_ROW_TEXTS)
    assert ids.shape[1] < MAX_LENGTH
    matcher = StopStrings(["end"], tokenizer)
    assert stops_per_row(matcher, ids) == [True, False, False]
    assert stops_per_row(matcher, ids[:, :-1]) == [False, False, False]


def test_stopping_criteria_accepts_plain_callables(tiny_llama):
    # test_stopping_criteria_list_accepts_plain_callables: functions, lambdas and StoppingCriteria subclasses
    # called as (input_ids, scores); generate and we end the rows they flag
    seen = []

    def legacy_function(input_ids, scores):
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def context_function(input_ids, scores, state=None, **kwargs):
        seen.append(state)
        return input_ids.shape[1] >= torch.tensor([8, 99])

    class Legacy(StoppingCriteria):
        def __call__(self, input_ids, scores):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    criteria = [legacy_function, lambda input_ids, scores: torch.zeros(1, dtype=torch.bool), context_function,
                Legacy()]
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    reference, ours = reference_and_ours(tiny_llama, ids, mask, max_new_tokens=5, stopping_criteria=criteria)
    assert torch.equal(reference, ours.sequences)
    assert ours.finish_reasons[0] == "stopping_criteria"
    assert seen and all(state is None for state in seen)


# Beyond the ported cases: our matcher equals StopStringCriteria on random id sequences, each tokenizer kind,
# stop strings that span tokens, end inside one, repeat letters, and a byte sequence of one character.
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_equals_stop_string_criteria_on_random_sequences(kind):
    tokenizer = BUILDERS[kind]()
    stops = ["end", "e nd", " the", "a", "stop", "s, t", "abc", "."]
    reference = StopStringCriteria(tokenizer, stops)
    ours = StopStrings(stops, tokenizer)
    rng = random.Random(0)
    enders = sorted(ours.enders)
    rows = []
    for _ in range(400):
        ids = [rng.randrange(len(tokenizer) + 5) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.7:
            ids[-1] = rng.choice(enders)  # most random rows would end in a token that ends nothing
        rows.append(ids)
    for ids in rows:
        assert ours.row_hit(ids) == bool(reference(torch.tensor([ids]), None)[0]), (ids, kind)
    assert 20 < sum(ours.row_hit(ids) for ids in rows) < 380  # both outcomes are well represented
