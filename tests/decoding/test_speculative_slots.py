"""Rejected and hole slots are never attended (decoding/speculative/rows.py's layout), seen from the outside.

Right after every verification's cache crop, the keys and values of every slot the attention mask hides (left
padding, holes of rows that accepted fewer proposals, and for the slot cache every slot from the frontier on)
are overwritten with large random values: the output must not change. A positive control corrupts one attended
slot and must change it, so the corruption really reaches the attention. After the run, each row's position ids
over its attended slots are 0, 1, 2, ... and those slots hold the row's text in order.
"""

import pytest
import torch

import decoding
from decoding.cache import KVCache, SlotCache
from decoding.speculative.rows import SpecRows
from tests.decoding.speculative_helpers import check_counters, padded, proposer_kwargs, row_new_tokens

PROMPTS = [[467, 847, 465, 14, 467, 847, 465, 14, 124, 799, 467, 847], [33, 34, 35, 33, 34, 35, 36],
           [501, 77, 501, 78, 501], [9, 8, 9, 8, 9, 8, 9, 8, 9, 8]]
GARBAGE_SCALE = 1e3


class SlotSpy:
    """Wraps SpecRows.settle (to see the slot state and each step's accepted counts) and KVCache.crop (to write
    garbage into slots right after a crop) for one generate call."""

    def __init__(self, monkeypatch, corrupt: str | None):
        self.rows: SpecRows | None = None
        self.accepted_alive: list[list[int]] = []  # per verification: proposals kept by the rows still decoding
        self.corrupt = corrupt  # None, "hidden" (masked slots) or "attended" (the control)
        self.corrupted_slots = 0
        self.broken: list[str] = []  # rows whose attended slots are not their text at positions 0, 1, 2, ...
        self.generator = torch.Generator().manual_seed(0)
        settle, crop = SpecRows.settle, KVCache.crop
        spy = self

        def spying_settle(rows, block_start, accepted, alive, pending):
            spy.rows = rows
            spy.accepted_alive.append(accepted[alive].tolist())
            frontier = settle(rows, block_start, accepted, alive, pending)
            spy.check_layout(alive)
            return frontier

        def corrupting_crop(kv, end):
            crop(kv, end)
            if spy.corrupt is not None and spy.rows is not None and kv.model_cache is not None:
                spy.write_garbage(kv, end)

        monkeypatch.setattr(SpecRows, "settle", spying_settle)
        monkeypatch.setattr(KVCache, "crop", corrupting_crop)

    def check_layout(self, alive: torch.Tensor) -> None:
        """Each live row's attended slots (pending token included) hold its text, left padding excluded, at
        position ids 0, 1, 2, ...: cumsum(mask) - 1 over attended slots, holes skipped."""
        rows, st = self.rows, self.rows.state
        for row in alive.nonzero().flatten().tolist():
            attended = st.attention_mask[row, :st.length] == 1
            text = rows.history(row)[0][-int(attended.sum()):].tolist()
            # the row's real prompt length from its prompt slots (finished rows leave the batch: row != caller's row)
            real = int(st.attention_mask[row, :rows.prompt_length].sum()) + int(rows.generated[row])
            if st.tokens[row, :st.length][attended].tolist() != text or len(text) != real:
                self.broken.append(f"row {row}: slots {st.tokens[row, :st.length][attended].tolist()} text {text}")
            if not torch.equal(st.position_ids[row, :st.length][attended], torch.arange(real)):
                self.broken.append(f"row {row}: positions {st.position_ids[row, :st.length][attended].tolist()}")

    def write_garbage(self, kv: KVCache, end: int) -> None:
        mask = self.rows.state.attention_mask  # (B, S): the slots of this decode (a draft's cache mirrors them)
        slot_cache = isinstance(kv.model_cache, SlotCache)
        for layer in kv.model_cache.layers:
            if not getattr(layer, "is_initialized", False):
                continue
            width = layer.keys.shape[2]  # dynamic: the kept slots; slot cache: the whole buffer
            hit = torch.zeros((mask.shape[0], width), dtype=torch.bool)
            if self.corrupt == "hidden":
                below = min(end, width, mask.shape[1])
                hit[:, :below] = mask[:, :below] == 0
                if slot_cache:
                    hit[:, end:] = True  # not yet written (or rolled back): written over before it is attended
            else:  # the control: row 0's last prompt token, attended at every step
                hit[0, self.rows.prompt_length - 1] = True
            self.corrupted_slots += int(hit.sum())
            where = hit[:, None, :, None]  # (B, 1, S, 1) over (B, H, S, D)
            for name in ("keys", "values"):
                buffer = getattr(layer, name)
                noise = torch.randn(buffer.shape, generator=self.generator, dtype=buffer.dtype) * GARBAGE_SCALE
                buffer.copy_(torch.where(where, noise, buffer))


def run(model, proposer, cache, monkeypatch=None, corrupt=None):
    ids, mask = padded(PROMPTS)
    spy = SlotSpy(monkeypatch, corrupt) if monkeypatch is not None else None
    result = decoding.generate(model, ids, mask, do_sample=False, max_new_tokens=20, eos_token_id=[], cache=cache,
                               **proposer_kwargs(proposer, model))
    return result, spy


@pytest.mark.parametrize("cache", ["static", "dynamic"])
@pytest.mark.parametrize("proposer", ["draft_layers", "lookup", "other_weights_draft"])
def test_hidden_slots_are_never_attended(tiny_model, proposer, cache, monkeypatch):
    clean, _ = run(tiny_model, proposer, cache)
    corrupted, spy = run(tiny_model, proposer, cache, monkeypatch, corrupt="hidden")
    assert spy.corrupted_slots > 0
    assert torch.equal(corrupted.sequences, clean.sequences)
    torch.testing.assert_close(corrupted.token_logprobs, clean.token_logprobs, atol=1e-5, rtol=0)
    if proposer == "draft_layers":  # rows kept different numbers of proposals in one step: holes were made
        assert any(len(set(step)) > 1 for step in spy.accepted_alive), spy.accepted_alive


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_corrupting_an_attended_slot_changes_the_output(tiny_model, cache, monkeypatch):
    clean, _ = run(tiny_model, "draft_layers", cache)
    corrupted, spy = run(tiny_model, "draft_layers", cache, monkeypatch, corrupt="attended")
    assert spy.corrupted_slots > 0
    assert row_new_tokens(corrupted, 0) != row_new_tokens(clean, 0)


@pytest.mark.parametrize("cache", ["static", "dynamic", "none"])
@pytest.mark.parametrize("proposer", ["draft_layers", "lookup", "same_weights_draft"])
def test_attended_slots_hold_each_row_text_at_consecutive_positions(tiny_model, proposer, cache, monkeypatch):
    result, spy = run(tiny_model, proposer, cache, monkeypatch)
    check_counters(result)
    assert spy.accepted_alive, "no verification step ran"
    assert spy.broken == []
