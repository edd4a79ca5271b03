"""The batch of a speculative decode: slot buffers with holes, and each row's text in order.

Rows accept different numbers of proposals at each step, so two views of a row no longer coincide:

- **slots** (`state`, a DecodeState; columns are cache positions): every forward writes the same slots for
  all rows, from the common write slot `state.length - 1` (the pending token) on. A row that accepted fewer
  proposals than another keeps the slots of its rejected ones as *holes*: attention mask 0, never attended,
  and its next token goes to the common slot after the best row's last accepted one. Slots past that are
  rolled back (the dynamic cache crops them; the slot cache writes over them next).
- **text** (`text`, (B, T + N + 1)): the prompt's T columns, then the row's own generated tokens, without holes.
  Processors, stop strings and prompt lookup read this view, so a row sees exactly what it would see alone in
  a batch without speculation (its left padding included, as generate passes it).

Position ids stay `cumsum(attention_mask) - 1` along the slots: a hole does not advance them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..state import DecodeState


@dataclass
class SpecRows:
    state: DecodeState  # slots; state.length - 1 is the pending token's slot (chosen, not yet in the caches)
    text: torch.Tensor  # (B, T + N + 1) prompt, then each row's generated tokens; pad after `generated`
    generated: torch.Tensor  # (B,) long: tokens each row emitted so far (the pending one included)
    prompt_length: int  # T
    pad: int  # the token id written in holes and after a row's end

    @property
    def batch(self) -> int:
        return self.text.shape[0]

    def history(self, row: int, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(1, T + g [+ j]) what a processor sees for `row`: its prompt and text, then the block tokens `extra`."""
        ids = self.text[row, : self.prompt_length + int(self.generated[row])]
        if extra is not None and extra.numel():
            ids = torch.cat([ids, extra])
        return ids[None]

    def last_positions(self) -> torch.Tensor:
        """(B,) the position id of each row's pending token (at slot state.length - 1)."""
        return self.state.position_ids[:, self.state.length - 1]

    def ensure_slots(self, slots: int) -> None:
        """Grow the slot buffers (doubling) to hold `slots` columns: holes make a row's slots outnumber its tokens."""
        have = self.state.tokens.shape[1]
        if slots <= have:
            return
        grow = max(slots, 2 * have) - have
        st = self.state
        st.tokens = torch.cat([st.tokens, st.tokens.new_full((self.batch, grow), self.pad)], dim=1)
        st.attention_mask = torch.cat([st.attention_mask, st.attention_mask.new_ones((self.batch, grow))], dim=1)
        st.position_ids = torch.cat([st.position_ids, st.position_ids.new_zeros((self.batch, grow))], dim=1)

    def write_block(self, tokens: torch.Tensor, attended: torch.Tensor) -> int:
        """Write (B, J) tokens at the slots after the last filled one; `attended` (B, J) bool sets their mask.

        Each row's positions continue from its own last position, counting attended slots only. Returns the
        first slot written."""
        start, width = self.state.length, tokens.shape[1]
        self.ensure_slots(start + width)
        st = self.state
        st.tokens[:, start:start + width] = tokens
        mask = attended.long()
        st.attention_mask[:, start:start + width] = mask
        st.position_ids[:, start:start + width] = self.last_positions()[:, None] + mask.cumsum(1)
        if not bool(attended.all()):
            st.padded = True
        st.length = start + width
        return start

    def settle(self, block_start: int, accepted: torch.Tensor, alive: torch.Tensor, pending: torch.Tensor) -> int:
        """After verifying the block written at `block_start` (the pending token, then proposals).

        Row i keeps the pending slot and its first `accepted[i]` proposals; the rest of its block becomes holes.
        The next pending token of each live row goes to the common slot after the longest kept run. Returns
        that slot (every cache keeps the slots below it)."""
        st = self.state
        keep = int(accepted[alive].max()) + 1 if bool(alive.any()) else 1
        frontier = block_start + keep
        width = st.length - block_start
        offsets = torch.arange(width, device=accepted.device)
        kept = offsets[None, :] <= accepted[:, None]  # (B, width)
        mask = st.attention_mask[:, block_start:st.length]
        st.attention_mask[:, block_start:st.length] = mask * kept.long()
        if not bool(kept[:, :keep].all()):
            st.padded = True
        st.length = frontier
        last = st.position_ids[:, block_start] + accepted  # (B,) position of each row's last kept token
        self.write_pending(pending, alive, last)
        return frontier

    def write_pending(self, pending: torch.Tensor, alive: torch.Tensor, last_position: torch.Tensor) -> None:
        """Append each row's next token (B,) at the next slot; finished rows get pad there, masked."""
        st = self.state
        slot = st.length
        self.ensure_slots(slot + 1)
        st.tokens[:, slot] = torch.where(alive, pending, self.pad)
        st.attention_mask[:, slot] = alive.long()
        st.position_ids[:, slot] = last_position + 1
        if not bool(alive.all()):
            st.padded = True
        st.length = slot + 1

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` (B',) only: finished rows leave the batch, so the forwards stop computing them."""
        self.state = self.state.select_rows(keep)
        self.text = self.text.index_select(0, keep)
        self.generated = self.generated.index_select(0, keep)

    def widen(self, slots: int) -> None:
        """Slot buffers exactly `slots` columns wide (or wider already): two batches must match to be joined."""
        grow = slots - self.state.tokens.shape[1]
        if grow > 0:
            st = self.state
            st.tokens = torch.cat([st.tokens, st.tokens.new_full((self.batch, grow), self.pad)], dim=1)
            st.attention_mask = torch.cat([st.attention_mask, st.attention_mask.new_ones((self.batch, grow))], dim=1)
            st.position_ids = torch.cat([st.position_ids, st.position_ids.new_zeros((self.batch, grow))], dim=1)

    def append_rows(self, other: "SpecRows") -> None:
        """Rows joining the batch in flight: `other` has the same slot length, its prompts ending where this
        batch's pending slot begins (batch.py lays them out); afterwards its rows follow this batch's."""
        if other.state.length != self.state.length:
            raise ValueError(f"joining rows fill {other.state.length} slots, the batch {self.state.length}")
        width = max(self.state.tokens.shape[1], other.state.tokens.shape[1])
        self.widen(width)
        other.widen(width)
        a, b = self.state, other.state
        a.tokens = torch.cat([a.tokens, b.tokens])
        a.attention_mask = torch.cat([a.attention_mask, b.attention_mask])
        a.position_ids = torch.cat([a.position_ids, b.position_ids])
        a.padded = a.padded or b.padded
        self.text = torch.cat([self.text, other.text])
        self.generated = torch.cat([self.generated, other.generated])

    def compaction(self) -> torch.Tensor | None:
        """(B, S') the slots each row keeps when the holes are squeezed out, or None when there is nothing to gain.

        The cached slots [0, length - 1) are re-laid out per row: its attended slots, in order, right-aligned
        to S' = the most any row has, after masked filler (as left padding). The math of attention is unchanged
        (the same keys and values, in the same order, are attended); only the masked work goes. Worth it once
        the holes (and the masked slots before joined rows' prompts) are a third of the slots.
        """
        cached = self.state.length - 1  # the pending token's slot is not in the caches yet
        attended = self.state.attention_mask[:, :cached].bool()  # (B, cached)
        counts = attended.sum(1)
        keep = int(counts.max()) if counts.numel() else 0
        if cached < 16 or keep * 3 > cached * 2:
            return None
        slots = torch.arange(cached, device=attended.device).expand_as(attended)
        # attended slots sort after masked ones, each group in slot order: the last `keep` columns are the kept ones
        order = torch.argsort(attended.long() * cached + slots, dim=1)[:, cached - keep:]  # (B, keep)
        filler = torch.arange(keep, device=attended.device)[None, :] < (keep - counts)[:, None]  # (B, keep)
        return torch.where(filler, torch.zeros_like(order), order), filler

    def apply_compaction(self, index: torch.Tensor, filler: torch.Tensor) -> None:
        """Re-lay the slots out by `index` (B, S') from `compaction`, the pending slot after them."""
        st, pending = self.state, self.state.length - 1
        keep = index.shape[1]
        full = torch.cat([index, index.new_full((index.shape[0], 1), pending)], dim=1)  # (B, S' + 1)
        tokens = st.tokens.gather(1, full)
        mask = st.attention_mask.gather(1, full)
        mask[:, :keep].masked_fill_(filler, 0)
        positions = st.position_ids.gather(1, full).masked_fill(mask == 0, 0)
        positions[:, keep] = st.position_ids[:, pending]
        st.tokens[:, :keep + 1], st.attention_mask[:, :keep + 1], st.position_ids[:, :keep + 1] = tokens, mask, positions
        st.attention_mask[:, keep + 1:] = 1
        st.length = keep + 1
        st.padded = st.padded or bool((mask[:, :keep] == 0).any())

    def emit(self, row: int, tokens: list[int]) -> None:
        """Append a row's accepted tokens to its text."""
        g = self.prompt_length + int(self.generated[row])
        self.text[row, g:g + len(tokens)] = torch.tensor(tokens, dtype=self.text.dtype, device=self.text.device)
        self.generated[row] += len(tokens)
