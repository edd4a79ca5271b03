"""When a row stops: EOS ids, stop strings, and the length limit.

Stop strings follow transformers' `StopStringCriteria` (transformers 5) exactly. It never decodes the sequence;
it matches the stop string against *token strings*, the text each vocabulary entry stands for on its own:

- Token strings. Byte-level tokenizers (GPT-2: "Ġ" for a space; the decoder is `ByteLevel`) map every
  token back to its bytes; byte-fallback tokenizers (Llama: "▁" for a space, decoder `ByteFallback`) map
  "<0xNN>" tokens to their byte. In these two modes stop strings and token strings are compared as UTF-8
  bytes, so a character split over several tokens still matches. Every other token (all of them for
  WordPiece and other tokenizers) is spelled by `convert_tokens_to_string(prefix + [token])` with the
  prefix's text cut off: a WordPiece "##x" is "x", a word-initial "x" is " x".
- The rule. A row stops when a stop string ends inside its last token (the token may overshoot it: "stop"
  inside "stopped") and the tokens before it spell the rest, back to the stop string's first unit. Only
  the last `window` tokens are looked at (one per unit of the longest stop string). A stop string that sat
  entirely in earlier tokens (in the prompt, say) never triggers; ids the tokenizer does not know break a
  match.

Per call we build, for each stop string, which tokens can end it (and with how many of its last units) and
at which points each token can continue it backwards; the token strings behind those tables are cached per
vocabulary. A step then costs a dictionary look-up of the last token per running row, and a walk back over
at most `window` tokens for the rare rows whose last token can end a stop string.
"""

from __future__ import annotations

import functools
import json
import weakref
from typing import Any, Sequence

import torch

FINISH_EOS = "eos"
FINISH_STOP_STRING = "stop_string"
FINISH_LENGTH = "length"
FINISH_CRITERIA = "stopping_criteria"  # a user-given stopping criterion flagged the row
FINISH_MAX_TIME = "max_time"  # the call ran past max_time seconds

BYTE_LEVEL = "byte_level"
BYTE_FALLBACK = "byte_fallback"
PREFIX = "abcdef"  # spelled before each token: a tokenizer drops or adds a word's leading space only at the start
TOKENIZER_METHODS = ("get_vocab", "convert_tokens_to_string", "convert_ids_to_tokens")


def _decoder_types(config: Any) -> set[str]:
    """Every "type" named anywhere in a decoder's JSON configuration (Sequence decoders nest them)."""
    if isinstance(config, dict):
        found = {config["type"]} if isinstance(config.get("type"), str) else set()
        return found.union(*(_decoder_types(value) for value in config.values()))
    if isinstance(config, list):
        return set().union(*(_decoder_types(value) for value in config))
    return set()


def matching_mode(tokenizer: Any) -> str | None:
    """"byte_fallback", "byte_level" or None (plain text), from the fast tokenizer's decoder."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return None
    if type(decoder).__name__ == "ByteLevel":
        return BYTE_LEVEL
    state = getattr(decoder, "__getstate__", lambda: None)()
    try:
        types = _decoder_types(json.loads(state)) if isinstance(state, (str, bytes)) else set()
    except json.JSONDecodeError:
        types = set()
    # a decoder with both byte tokens and byte-level characters spells bytes with "<0xNN>" tokens
    if "ByteFallback" in types:
        return BYTE_FALLBACK
    return BYTE_LEVEL if "ByteLevel" in types else None


@functools.lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level character -> byte: printable Latin-1 bytes stand for themselves, the other 68 bytes
    for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


def _as_byte(token: str) -> bytes | None:
    """The byte of a byte-fallback token "<0xNN>" (hex digits in either case), else None."""
    digits = token[3:5]
    is_byte = len(token) == 6 and token.startswith("<0x") and token.endswith(">")
    if is_byte and all(c in "0123456789abcdefABCDEF" for c in digits):
        return bytes([int(digits, 16)])
    return None


def _spell(tokenizer: Any, prefix_tokens: list[str], token: str) -> str:
    text = tokenizer.convert_tokens_to_string(prefix_tokens + [token])
    at = text.find(PREFIX)
    if at < 0:
        raise ValueError(f"tokenizer={type(tokenizer).__name__} is not allowed with stop_strings: its tokens for "
                         f"{PREFIX!r} do not spell {PREFIX!r} again (got {text!r}), so token strings cannot be read")
    return text[at + len(PREFIX):]


class TokenStrings:
    """A vocabulary's token strings (token id -> text, bytes in the byte modes) and the stop tables built on them.

    Built once per vocabulary (`token_strings_for`), since spelling every token costs a tokenizer call each.
    """

    def __init__(self, tokenizer: Any, mode: str | None, items: tuple):
        alphabet = byte_level_alphabet() if mode == BYTE_LEVEL else None
        prefix_tokens = tokenizer.convert_ids_to_tokens(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
        self.strings: dict[int, str | bytes] = {}
        for token, token_id in items:
            spelled: str | bytes | None = None
            if alphabet is not None and all(c in alphabet for c in token):
                spelled = bytes(alphabet[c] for c in token)
            elif mode == BYTE_FALLBACK:
                spelled = _as_byte(token)
            if spelled is None:
                text = _spell(tokenizer, prefix_tokens, token)
                spelled = text if mode is None else text.encode("utf-8")
            self.strings[token_id] = spelled
        self.lengths = {token_id: len(text) for token_id, text in self.strings.items()}
        self._tables: dict[str | bytes, StopTable] = {}
        self._enders: dict[tuple, frozenset[int]] = {}

    def table(self, stop: str | bytes) -> "StopTable":
        if stop not in self._tables:
            self._tables[stop] = StopTable(stop, self.strings)
        return self._tables[stop]

    def enders(self, stops: Sequence[str | bytes]) -> frozenset[int]:
        """Ids that can end one of `stops` (the first check of every row, every step)."""
        key = tuple(stops)
        if key not in self._enders:
            self._enders[key] = frozenset().union(*(self.table(stop).ends for stop in stops))
        return self._enders[key]


class _ByKey:
    """An lru_cache argument that hashes and compares on `key` only (the tokenizer rides along)."""

    def __init__(self, key: tuple, tokenizer: Any):
        self.key, self.tokenizer = key, tokenizer

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _ByKey) and self.key == other.key


@functools.lru_cache(maxsize=8)
def _token_strings_of(entry: _ByKey) -> TokenStrings:
    mode, items, _ = entry.key
    return TokenStrings(entry.tokenizer, mode, items)


# tokenizer -> (its fingerprint, its TokenStrings): a second call with the same, unchanged tokenizer skips
# reading and sorting the whole vocabulary (a fifth of a second for a 49k vocabulary)
_BY_TOKENIZER: "weakref.WeakKeyDictionary[Any, tuple[tuple, TokenStrings]]" = weakref.WeakKeyDictionary()


def _decoder_state(tokenizer: Any) -> str | bytes | None:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    state = getattr(decoder, "__getstate__", lambda: None)() if decoder is not None else None
    return state if isinstance(state, (str, bytes)) else None


def token_strings_for(tokenizer: Any, mode: str | None) -> TokenStrings:
    """The (cached) token strings of this tokenizer's vocabulary. The cache key is the vocabulary itself, the
    mode and the decoder's configuration; a tokenizer seen before is recognised by its size and decoder."""
    state = _decoder_state(tokenizer)
    fingerprint = (mode, len(tokenizer) if hasattr(tokenizer, "__len__") else None, state)
    try:
        seen = _BY_TOKENIZER.get(tokenizer)
    except TypeError:  # not weakly referenceable
        seen = None
    if seen is not None and seen[0] == fingerprint:
        return seen[1]
    key = (mode, tuple(sorted(tokenizer.get_vocab().items())), state)
    vocabulary = _token_strings_of(_ByKey(key, tokenizer))
    try:
        _BY_TOKENIZER[tokenizer] = (fingerprint, vocabulary)
    except TypeError:
        pass
    return vocabulary


class StopTable:
    """One stop string against a vocabulary's token strings.

    ends[id]: how many of the stop string's last units the token can end with (the token holds them, then
    possibly more: an overshoot); `len(stop)` when the whole stop string lies inside the token.
    continues[id]: the counts `covered` of last units, 0 < covered < len(stop), already matched by later
    tokens at which this token spells the units just before them (running off the stop string's start is
    fine: the token may begin with unrelated text).
    """

    def __init__(self, stop: str | bytes, strings: dict[int, str | bytes]):
        self.size = len(stop)
        self.ends: dict[int, tuple[int, ...]] = {}
        self.continues: dict[int, frozenset[int]] = {}
        last, reversed_stop, units = stop[-1:], stop[::-1], set(stop)
        for token_id, text in strings.items():
            overlaps = []
            at = text.find(last)
            while at >= 0:
                covered = min(at + 1, self.size)
                if text[at + 1 - covered: at + 1] == stop[-covered:]:
                    overlaps.append(covered)
                at = text.find(last, at + 1)
            if overlaps:
                self.ends[token_id] = tuple(overlaps)
            if text and text[-1] not in units:
                continue  # cheap exit: a token continuing the match ends with a unit of the stop string
            reversed_text = text[::-1]
            fits = frozenset(c for c in range(1, self.size)
                             if reversed_text.startswith(reversed_stop[c:c + len(text)]))
            if fits:
                self.continues[token_id] = fits

    def hit(self, ids: list[int], lengths: dict[int, int]) -> bool:
        """Does the stop string end in the last of `ids` and run back through the ones before it?"""
        for covered in self.ends.get(ids[-1], ()):
            j = len(ids) - 2
            while covered < self.size and j >= 0 and covered in self.continues.get(ids[j], ()):
                covered += lengths[ids[j]]
                j -= 1
            if covered >= self.size:
                return True
        return False


class StopStrings:
    """Per-row stop-string check with transformers' token-string rule (see the module docstring)."""

    def __init__(self, stop_strings: Sequence[str], tokenizer: Any):
        if tokenizer is None:
            raise ValueError(f"stop_strings={list(stop_strings)!r} needs a tokenizer: pass tokenizer=... to generate")
        missing = [m for m in TOKENIZER_METHODS if not callable(getattr(tokenizer, m, None))]
        if missing or not callable(tokenizer):
            raise ValueError(f"tokenizer={type(tokenizer).__name__} is not allowed with stop_strings="
                             f"{list(stop_strings)!r}: pass the model's transformers tokenizer (it lacks "
                             f"{missing or ['__call__']}), e.g. AutoTokenizer.from_pretrained(...)")
        self.stop_strings = tuple(stop_strings)
        self.tokenizer = tokenizer
        self.mode = matching_mode(tokenizer)
        matched = [s.encode("utf-8") for s in self.stop_strings] if self.mode else list(self.stop_strings)
        vocabulary = token_strings_for(tokenizer, self.mode)
        self.lengths = vocabulary.lengths
        self.tables = [vocabulary.table(stop) for stop in matched]
        if not any(table.ends for table in self.tables):
            raise ValueError(f"stop_strings={list(self.stop_strings)!r} is not allowed: no token of the tokenizer "
                             "can end any of them (characters the vocabulary lacks?), as transformers refuses")
        # one token per unit of the longest stop string: every token spells at least one unit
        self.window = max(table.size for table in self.tables)
        self.enders = vocabulary.enders(matched)  # ids that can end some stop string

    def row_hit(self, ids: list[int]) -> bool:
        """Does the sequence `ids` (its tail is enough) end a stop string in its last token?"""
        if not ids or ids[-1] not in self.enders:
            return False
        tail = ids[-self.window:]
        return any(table.hit(tail, self.lengths) for table in self.tables)

    def __call__(self, sequences: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Rows (among `rows`) whose last token completes a stop string. `sequences` is (B, T)."""
        last = sequences[:, -1].tolist()
        candidates = [r for r in rows if last[r] in self.enders]
        if not candidates:
            return []
        window = sequences[candidates, -self.window:].tolist()
        return [r for r, ids in zip(candidates, window) if any(t.hit(ids, self.lengths) for t in self.tables)]


def eos_hits(tokens: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: the token just chosen is one of the EOS ids."""
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, eos)
