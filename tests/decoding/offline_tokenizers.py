"""Small tokenizers of the three kinds transformers' tests load from the hub, built offline in a test.

Ported transformers tests use `openai-community/gpt2` (byte-level BPE), a Llama / SentencePiece tokenizer
(byte-fallback BPE) and a BERT tokenizer (WordPiece). The hub is out of reach here, so each kind is trained
with the `tokenizers` library on the fixed corpus below and wrapped in a `PreTrainedTokenizerFast`:

- `byte_level_bpe()`: GPT-2-like. Byte-level pre-tokenizer and decoder, "Ġ" marks a leading space, every
  byte is a token, "<|endoftext|>" is BOS / EOS; "<|im_start|>" and "<|im_end|>" are special tokens only in
  `byte_level_bpe(chat_tokens=True)` (the Qwen2 case of the ported tests).
- `byte_fallback_bpe()`: Llama-like. "▁" marks a space, the 256 tokens "<0x00>" ... "<0xFF>" spell any
  character the merges do not know, ids 0 / 1 / 2 are "<unk>" / "<s>" / "</s>".
- `wordpiece()`: BERT-like. Lower-cased, "##" continues a word, "[CLS] ... [SEP]" around a sequence.

Every vocabulary has at most `MAX_VOCAB` (1000) tokens, so the tiny test models (vocab 1000) can emit every id.
Training is deterministic (same corpus, same trainer settings); each builder takes well under a second and
is cached, so a test session builds each kind once. Callers must not change the returned tokenizer (copy it
with `copy.deepcopy` first).
"""

from __future__ import annotations

import functools
import json

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

MAX_VOCAB = 1000

# The ported tests' sentences are part of the corpus, so their words are whole tokens as often as in GPT-2.
CORPUS = """\
The Congress of the United States met in the spring, and the members spoke of the work ahead of them.
In my first year in office, we built roads and schools, and we opened the doors of opportunity to all.
They completed the challenging puzzle, revealing the hidden image at the end.
Today a dragon flew over France, and the people in the streets stopped to watch it pass.
The aroma of freshly baked pizza filled the kitchen, and the children came running to the table.
We will not stop until the job is done. We stop here, at the end of the road, and we start again.
She stopped the car, stepped out, and said: this is the end of the story, and the start of another.
The quick brown fox jumps over the lazy dog. A stopper keeps the water in the bottle.
Our economy is growing, our families are stronger, and the state of our union is strong.
We must protect the freedom of every citizen, and keep the promise made to every generation.
Let us work together, across the aisle, to make health care affordable and schools better.
The end of the war came at last, and the soldiers returned home to their families and their towns.
abc abc abc abcdef abcdef abc a b c d e f stop stops stopped stopping topper top last plaster
Numbers like 1, 2, 3, 10, 100 and 2024 appear too; so do commas, periods; colons: and dashes - here.
Chat turns are wrapped in <|im_start|> and <|im_end|> markers; under_scores, #tags, questions? yes! <a> >> <<
"""


def _corpus_lines() -> list[str]:
    # Repeated so the merges reach the vocabulary size; the trainer sees the same text every time.
    return CORPUS.splitlines() * 3


@functools.lru_cache(maxsize=None)
def byte_level_bpe(chat_tokens: bool = False) -> PreTrainedTokenizerFast:
    """A GPT-2-like byte-level BPE tokenizer (no pad token, as GPT-2; tests set pad = eos themselves)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<|im_start|>", "<|im_end|>"] if chat_tokens else [])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus_lines(), trainer=trainer)
    extra = {"additional_special_tokens": specials[1:]} if chat_tokens else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>", **extra)


def _byte_token(byte: int) -> str:
    return f"<0x{byte:02X}>"


@functools.lru_cache(maxsize=None)
def _space_marked_bpe() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(tokens by id, merges) of a BPE learned on "▁"-marked words: "▁the" starts a word, "he" goes on one."""
    learner = Tokenizer(models.BPE())
    learner.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    learner.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=MAX_VOCAB - 3 - 256, show_progress=False, limit_alphabet=80)
    learner.train_from_iterator(_corpus_lines(), trainer=trainer)
    state = json.loads(learner.model.__getstate__())
    tokens = tuple(token for token, _ in sorted(state["vocab"].items(), key=lambda item: item[1]))
    merges = tuple(tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"])
    return tokens, merges


@functools.lru_cache(maxsize=None)
def byte_fallback_bpe() -> PreTrainedTokenizerFast:
    """A Llama-like BPE tokenizer with "▁" for spaces and "<0xNN>" byte tokens for unknown characters."""
    # The byte tokens come right after <unk> <s> </s>: they must be ordinary vocabulary entries (not added
    # tokens) for byte fallback to find them.
    learned, merges = _space_marked_bpe()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({_byte_token(b): 3 + b for b in range(256)})
    for token in learned:
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token="<unk>", byte_fallback=True,
                                     fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@functools.lru_cache(maxsize=None)
def wordpiece() -> PreTrainedTokenizerFast:
    """A BERT-like WordPiece tokenizer: lower-cased, "##" continuations, [CLS] / [SEP] / [PAD] / [MASK]."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # WordPiece's own trainer learns a slightly different vocabulary in each process (ties in hash order), so
    # the pieces come from the deterministic BPE above: "▁the" -> "the", "he" -> "##he", lower-cased, plus
    # every corpus character in both forms; numbered specials first, then alphabetically
    learned, _ = _space_marked_bpe()
    pieces = {token[1:].lower() if token.startswith("▁") else "##" + token.lower() for token in learned}
    letters = set(CORPUS.lower()) - set(" \n")
    pieces |= letters | {"##" + c for c in letters}
    vocab = {token: i for i, token in enumerate(specials + sorted(pieces - {"", "##"} - set(specials)))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             pair="[CLS] $A [SEP] $B [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


BUILDERS = {"byte_level_bpe": byte_level_bpe, "byte_fallback_bpe": byte_fallback_bpe, "wordpiece": wordpiece}
