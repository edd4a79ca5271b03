"""DRY's sequence breakers as token sequences of one tokenizer (llama.cpp's get_overlapping_token_sequences).

DRY matches its breakers ("\n", ":", ...) as text, but penalises tokens: `resolve_breakers` turns each breaker
string into the tokens whose text contains it (single-token breakers) and the (head, tail) pairs of a token whose
text ends with the breaker's start and the tokens that complete it. The table is built once per tokenizer and
breaker set (cached, weakly keyed by the tokenizer) at the call's start by `with_breakers`, and turned into device
lookup tensors by DRY on first use (`_BreakerTensors`).
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..params import GenerationParams

MAX_BREAKER_BYTES = 40  # llama.cpp truncates longer breakers (llama_sampler_init_dry's MAX_CHAR_LEN)
MAX_TAIL_TOKENS = 20  # and clamps a breaker's tail to this many tokens (MAX_SEQ_LEN)


@dataclass(frozen=True)
class BreakerTable:
    """The sequence breakers as token sequences of one tokenizer: a head token and the tail that must follow it.

    `single`: the heads with an empty tail (tokens whose text contains a breaker); `tails`: (head, tail) pairs for
    breakers that start inside the head's text and continue over the tail's tokens. What llama.cpp's
    get_overlapping_token_sequences builds, sorted.
    """

    breakers: tuple[str, ...]
    vocab_size: int
    single: tuple[int, ...]
    tails: tuple[tuple[int, tuple[int, ...]], ...]

    def __repr__(self) -> str:  # compact: the sweep compares processors by repr; the digest tells tables apart
        digest = hashlib.sha1(repr((self.single, self.tails)).encode()).hexdigest()[:12]
        return (f"BreakerTable(breakers={self.breakers!r}, single={len(self.single)} tokens, "
                f"tails={len(self.tails)}, digest={digest})")


# Per tokenizer (weakly held), keyed by its size too (added tokens change it): its token bytes and its tables.
_RESOLVED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _memo(tokenizer: Any) -> dict:
    """This tokenizer's cache (a throwaway dict for one that cannot be weakly referenced)."""
    try:
        memo = _RESOLVED.setdefault(tokenizer, {})
    except TypeError:
        return {}
    if memo.get("size") != len(tokenizer):
        memo.clear()
        memo["size"] = len(tokenizer)
    return memo


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character that stands for each byte -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:  # the unprintable bytes are shifted past 255, in order
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel"


def token_bytes(tokenizer: Any) -> list[bytes]:
    """Each token's text as bytes, as llama.cpp's single-token detokenize gives it (special tokens spelled out):
    byte-level BPE through GPT-2's alphabet, otherwise SentencePiece's conventions ("▁" a space, "<0xHH>" a
    byte). Cached per tokenizer."""
    memo = _memo(tokenizer)
    if "bytes" in memo:
        return memo["bytes"]
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    alphabet = _byte_level_alphabet() if _is_byte_level(tokenizer) else None
    out = []
    for i, piece in enumerate(pieces):
        if i in added or piece is None:
            out.append(added.get(i, "").encode())
        elif alphabet is not None:
            out.append(bytes(alphabet[c] for c in piece) if all(c in alphabet for c in piece) else piece.encode())
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("▁", " ").encode())
    memo["bytes"] = out
    return out


def _tokenize_tail(tokenizer: Any, tail: bytes) -> tuple[int, ...]:
    """The tail's tokens (no special tokens added), clamped to MAX_TAIL_TOKENS as llama.cpp clamps them. A tail
    that starts inside a multi-byte character is decoded with replacement characters (llama.cpp tokenizes its
    raw bytes; such breakers are rare)."""
    ids = tokenizer.encode(tail.decode("utf-8", errors="replace"), add_special_tokens=False)
    return tuple(int(t) for t in ids[:MAX_TAIL_TOKENS])


def resolve_breakers(tokenizer: Any, breakers: tuple[str, ...]) -> Any:
    """The breaker strings as token sequences of this tokenizer (what DRY reads); called once per generate call.

    For each breaker (its UTF-8 bytes, cut to MAX_BREAKER_BYTES) and each token: a token whose text contains the
    breaker is a single-token breaker; otherwise, for every place in the token's text where the breaker's start
    runs to the text's end, the token heads a breaker whose tail is the tokenization of the rest of the breaker.
    Returns a `BreakerTable` (cached per tokenizer and breakers: a generate call resolves them again).
    """
    memo = _memo(tokenizer)
    key = ("table", tuple(breakers))
    if key not in memo:
        memo[key] = _overlapping_sequences(tokenizer, tuple(breakers))
    return memo[key]


def _overlapping_sequences(tokenizer: Any, breakers: tuple[str, ...]) -> BreakerTable:
    words = token_bytes(tokenizer)
    single: set[int] = set()
    tails: set[tuple[int, tuple[int, ...]]] = set()
    tail_ids: dict[bytes, tuple[int, ...]] = {}
    for breaker in breakers:
        text = breaker.encode()[:MAX_BREAKER_BYTES]
        first = text[:1]
        for token, word in enumerate(words):
            if text in word:
                single.add(token)
                continue
            pos = word.find(first)
            while pos >= 0:
                rest = word[pos:]
                if text.startswith(rest):  # the breaker starts here and runs past the token's end
                    missing = text[len(rest):]
                    if missing not in tail_ids:
                        tail_ids[missing] = _tokenize_tail(tokenizer, missing)
                    tails.add((token, tail_ids[missing]))
                pos = word.find(first, pos + 1)
    return BreakerTable(tuple(breakers), len(words), tuple(sorted(single)), tuple(sorted(tails)))


def with_breakers(p: "GenerationParams", tokenizer: Any) -> "GenerationParams":
    """`p` with dry_breaker_sequences resolved for `tokenizer` (DRY on with breakers needs one: a clear error)."""
    if p.dry_multiplier == 0 or not p.dry_sequence_breakers:
        return p
    if tokenizer is None:
        raise ValueError(f"dry_sequence_breakers={list(p.dry_sequence_breakers)!r} needs a tokenizer (DRY matches "
                         "the breakers as text): pass tokenizer=... to generate, or dry_sequence_breakers=[]")
    return p.with_(dry_breaker_sequences=resolve_breakers(tokenizer, p.dry_sequence_breakers))


class _BreakerTensors:
    """A BreakerTable as lookup tensors on one device, over a vocabulary of `vocab` ids (the scores' width)."""

    def __init__(self, table: BreakerTable | None, vocab: int, device: torch.device):
        self.device, self.vocab = device, vocab
        self.used_rows: torch.Tensor | None = None  # the processor's `used` on this device, made on first use
        self.longest: torch.Tensor | None = None  # (B, V) int32 scratch of -1s (`longest_buffer`)
        size = max(vocab, table.vocab_size if table else 0)
        self.single = torch.zeros(size, dtype=torch.bool, device=device)  # (V',) empty-tail heads
        self.head_slot = torch.full((size,), -1, dtype=torch.long, device=device)  # (V',) row of `tails`, or -1
        self.tails = self.tail_lengths = None
        if table is None:
            return
        if table.single:
            self.single[list(table.single)] = True
        if table.tails:
            heads = sorted({head for head, _ in table.tails})
            per_head = {head: [tail for h, tail in table.tails if h == head] for head in heads}
            most = max(len(t) for t in per_head.values())
            longest = max(1, max(len(tail) for _, tail in table.tails))
            tails = torch.full((len(heads), most, longest), -1, dtype=torch.long)
            lengths = torch.full((len(heads), most), -1, dtype=torch.long)  # -1: no entry in this slot
            for slot, head in enumerate(heads):
                for k, tail in enumerate(per_head[head]):
                    tails[slot, k, :len(tail)] = torch.tensor(tail, dtype=torch.long)
                    lengths[slot, k] = len(tail)
                self.head_slot[head] = slot
            self.tails, self.tail_lengths = tails.to(device), lengths.to(device)  # (H, M, L), (H, M)

    def match_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) for each position: the longest breaker tail that follows its token there (0 for a single-token
        breaker), or -1 where no breaker starts."""
        ids = ids.clamp(max=self.single.shape[0] - 1)
        found = torch.where(self.single[ids], 0, -1)  # (B, T)
        if self.tails is None:
            return found
        slots = self.head_slot[ids]  # (B, T)
        rows, cols = (slots >= 0).nonzero(as_tuple=True)  # (K,) the positions holding a multi-token head
        if rows.numel() == 0:
            return found
        width = self.tails.shape[-1]
        after = torch.nn.functional.pad(ids, (0, width), value=-1)  # (B, T + L): -1 past the end matches nothing
        offsets = torch.arange(1, width + 1, device=ids.device)
        following = after[rows[:, None], cols[:, None] + offsets]  # (K, L) the tokens after each head
        tails, lengths = self.tails[slots[rows, cols]], self.tail_lengths[slots[rows, cols]]  # (K, M, L), (K, M)
        inside = offsets[None, None, :] <= lengths[:, :, None]  # (K, M, L) the tail's own slots
        whole = ((following[:, None, :] == tails) | ~inside).all(-1) & (lengths >= 0)  # (K, M)
        longest = torch.where(whole, lengths, -1).max(-1).values  # (K,)
        return found.index_put((rows, cols), torch.maximum(found[rows, cols], longest))

    def longest_buffer(self, batch: int) -> torch.Tensor:
        """(B, V) int32 of -1s (a caller that writes into it sets the entries it wrote back to -1)."""
        if self.longest is None or self.longest.shape[0] != batch:
            self.longest = torch.full((batch, self.vocab), -1, dtype=torch.int32, device=self.device)
        return self.longest

    def __repr__(self) -> str:  # constant: device tensors made on first use never tell processors apart
        return "_BreakerTensors()"
