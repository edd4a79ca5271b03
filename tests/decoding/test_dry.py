"""DRY (decoding/processors/dry.py) against hand-computed cases, a plain per-row reference of llama.cpp's rule, and
llama.cpp itself (tests/decoding/goldens/llama_dry.json, written by tests/goldens/llama_dry.py).

What must hold:
- hand-computed histories: which token gets which penalty, breakers cutting a repeat (single-token and
  multi-token ones), the window, allowed_length 0, left padding, the exponent cap;
- the processor equals `reference_dry` (llama.cpp's rule written out position by position) on random histories,
  from scratch and through its cache (histories growing one token at a time, and histories it has not seen
  grow: a reordered batch, a shorter prefix), so both paths of the suffix matches are checked;
- never in place; per-row (`for_rows`) rows equal their configuration alone bit for bit, rows without DRY are
  unchanged bit for bit;
- bad values through `decoding.generate` name the parameter; breakers without a tokenizer fail clearly;
- SmolLM2's breaker table equals llama.cpp's (the golden's), and llama.cpp's penalised logits are ours within 1e-6.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import decoding
from decoding.params import resolve_params
from decoding.processors.dry import DRY, build_dry
from decoding.processors.dry_breakers import BreakerTable, resolve_breakers, with_breakers
from tests.goldens.smollm2_logits import fingerprint, next_token_logits, same_fingerprint
from tests.goldens.golden_dir import llama_golden

GOLDEN = json.loads(llama_golden("llama_dry.json").read_text())
TOLERANCE = 1e-6


def table(single=(), tails=(), vocab=64) -> BreakerTable:
    return BreakerTable(("test",), vocab, tuple(sorted(single)), tuple(sorted(tails)))


def reference_dry(history: list[int], logits: np.ndarray, multiplier: float, base: float, allowed: int,
                  last_n: int, single=(), tails=()) -> np.ndarray:
    """llama.cpp's rule for one row, written out plainly (quadratic): the logits after DRY, float32."""
    out = logits.astype(np.float32).copy()
    window = history if last_n < 0 else history[max(0, len(history) - last_n):]
    n = len(window)
    if n <= allowed:
        return out
    limit = n
    for back in range(n):  # the nearest breaker head from the end whose tail follows it
        j = n - 1 - back
        found = [0] if window[j] in single else []
        found += [len(t) for h, t in tails
                  if h == window[j] and len(t) <= back and tuple(window[j + 1:j + 1 + len(t)]) == t]
        if found:
            limit = back - max(found)
            break
    if limit < allowed:
        return out
    longest: dict[int, int] = {}
    for j in range(n - 1):
        run = 0
        while run <= j and window[j - run] == window[n - 1 - run]:
            run += 1
        run = min(run, limit)
        if run >= allowed:
            longest[window[j + 1]] = max(longest.get(window[j + 1], -1), run)
    cap = int(np.float32(88.7228391) / np.log(np.float32(base))) if np.float32(base) > np.float32(1.000001) else 0
    for token, run in longest.items():
        if token in single:
            continue
        exponent = run - allowed
        if cap > 0 and exponent > cap:
            exponent = cap
        penalty = np.float32(float(np.float32(multiplier)) * float(np.float32(base)) ** exponent)
        out[token] = np.float32(out[token] - penalty)
    return out


def apply(dry: DRY, histories, logits) -> torch.Tensor:
    return dry(torch.tensor(histories), torch.as_tensor(np.asarray(logits, dtype=np.float32)))


# ------------------------------------------------------------------------------------------- hand-computed


def test_a_repeat_penalises_the_token_that_would_extend_it():
    # history a b c x a b: "a b" repeats; c follows it (length 2), so c gets 1.0 * 2 ** (2 - 2) = 1
    history = [1, 2, 3, 9, 1, 2]
    out = apply(DRY(1.0, 2.0, 2, -1), [history], np.zeros((1, 16)))[0]
    expected = torch.zeros(16)
    expected[3] = -1.0
    assert torch.equal(out, expected)
    # allowed length 1: the same repeat now costs 2 ** (2 - 1)
    out = apply(DRY(1.0, 2.0, 1, -1), [history], np.zeros((1, 16)))[0]
    assert out[3] == -2.0 and (out != 0).sum() == 1


def test_longer_repeats_cost_exponentially_and_the_longest_counts():
    # a b c d a b c: "a b c" (3) -> d gets 3 * 1.5 ** (3 - 2); "c" alone elsewhere would be shorter
    history = [1, 2, 3, 4, 1, 2, 3]
    out = apply(DRY(3.0, 1.5, 2, -1), [history], np.zeros((1, 8)))[0]
    assert out[4] == np.float32(-3.0 * 1.5) and (out != 0).sum() == 1
    # x y z Q y z R x y z: "x y z" (3) is followed by Q, "y z" (2) by R: each token its own repeat's length
    history = [5, 6, 7, 1, 6, 7, 2, 5, 6, 7]
    out = apply(DRY(1.0, 2.0, 2, -1), [history], np.zeros((1, 8)))[0]
    assert out[1] == -2.0 and out[2] == -1.0 and (out != 0).sum() == 2
    # x y z Q y z Q x y z: Q follows both repeats; the longest (3) counts, not the sum
    history = [5, 6, 7, 1, 6, 7, 1, 5, 6, 7]
    out = apply(DRY(1.0, 2.0, 2, -1), [history], np.zeros((1, 8)))[0]
    assert out[1] == -2.0 and (out != 0).sum() == 1


def test_a_single_token_breaker_cuts_the_repeat_and_is_never_penalised():
    history = [1, 2, 3, 4, 1, 2, 3]  # "1 2 3" repeats, 4 extends it
    plain = apply(DRY(1.0, 2.0, 2, -1), [history], np.zeros((1, 8)))[0]
    assert plain[4] == -2.0
    # 2 is a breaker: the repeat may only count the tokens after the last 2 (one token: 3) < allowed: nothing
    cut = apply(DRY(1.0, 2.0, 2, -1, table(single=[2])), [history], np.zeros((1, 8)))[0]
    assert (cut == 0).all()
    # 1 is a breaker: the repeat is cut to "2 3" (2 tokens after the last 1) -> 4 gets 2 ** 0
    cut = apply(DRY(1.0, 2.0, 2, -1, table(single=[1])), [history], np.zeros((1, 8)))[0]
    assert cut[4] == -1.0 and (cut != 0).sum() == 1
    # a breaker token that would extend a repeat is left alone: 4 follows "1 2 3" but is a breaker itself
    history = [4, 7, 1, 2, 3, 4, 1, 2, 3]
    out = apply(DRY(1.0, 2.0, 2, -1, table(single=[4])), [history], np.zeros((1, 8)))[0]
    assert out[4] == 0 and (out == 0).all()


def test_a_multi_token_breaker_needs_its_tail():
    history = [1, 2, 3, 5, 6, 1, 2, 3]  # 5 heads a breaker only when 6 follows it
    tails = [(5, (6,))]
    out = apply(DRY(1.0, 2.0, 2, -1, table(tails=tails)), [history], np.zeros((1, 8)))[0]
    # the breaker "5 6" ends 3 tokens before the end: repeats capped at 3, "1 2 3" still 3 -> 5 gets 2 ** 1
    # (5 heads a multi-token breaker: it is penalised like any token, only single-token breakers are spared)
    assert out[5] == -2.0 and (out != 0).sum() == 1
    tails = [(5, (6, 1, 2))]  # now the breaker ends one token before the end: the cap is 1 < allowed
    out = apply(DRY(1.0, 2.0, 2, -1, table(tails=tails)), [history], np.zeros((1, 8)))[0]
    assert (out == 0).all()
    tails = [(5, (7,))]  # the tail does not follow: no breaker
    out = apply(DRY(1.0, 2.0, 2, -1, table(tails=tails)), [history], np.zeros((1, 8)))[0]
    assert out[5] == -2.0


def test_the_last_token_a_breaker_turns_dry_off_unless_allowed_length_is_0():
    history = [1, 2, 1, 2]
    assert (apply(DRY(1.0, 2.0, 1, -1, table(single=[2])), [history], np.zeros((1, 4)))[0] == 0).all()
    # allowed 0: every repeat length is capped at 0 and every following token (not a breaker) costs base ** 0
    out = apply(DRY(0.5, 2.0, 0, -1, table(single=[2])), [history], np.zeros((1, 4)))[0]
    assert out.tolist() == [0.0, -0.5, 0.0, 0.0]


def test_the_window_and_the_left_padding_bound_the_history():
    history = [1, 2, 3, 9, 9, 9, 1, 2]  # "1 2" repeats; c (3) extends it
    assert apply(DRY(1.0, 2.0, 2, -1), [history], np.zeros((1, 10)))[0][3] == -1.0
    # the last 5 tokens only: 9 9 9 1 2 holds no earlier 2, so no repeat ends where the text ends
    assert (apply(DRY(1.0, 2.0, 2, 5), [history], np.zeros((1, 10)))[0] == 0).all()
    # window of 7: 2 3 9 9 9 1 2 -> the earlier "2" matches one token only (its "1" is outside)
    assert (apply(DRY(1.0, 2.0, 1, 7), [history], np.zeros((1, 10)))[0][3] == -1.0)
    assert (apply(DRY(1.0, 2.0, 2, 7), [history], np.zeros((1, 10)))[0] == 0).all()
    # left padding: pad slots (the first two 4s of row 1) are not history, even where their ids repeat the text
    padded = [[1, 2, 3, 7, 1, 2, 9], [4, 4, 1, 2, 3, 4, 4]]
    out = apply(DRY(1.0, 2.0, 1, -1, prompt_start=torch.tensor([0, 2])), padded, np.zeros((2, 10)))
    # row 1's history 1 2 3 4 4: the last 4 repeats the one before it (run 1), so 4 gets 2 ** 0
    assert out[1].tolist() == [0, 0, 0, 0, -1.0, 0, 0, 0, 0, 0] and (out[0] == 0).all()
    # counted as text, the pads would make "4 4" a run of 2 followed by 1: 1 would get 2 ** 1
    unpadded = apply(DRY(1.0, 2.0, 1, -1), padded[1:], np.zeros((1, 10)))[0]
    assert unpadded[1] == -2.0 and unpadded[4] == -1.0


def test_the_exponent_is_capped_so_the_penalty_stays_finite():
    history = [3] * 300  # a repeat of 299 tokens: 1e-30 * 2 ** 297 would overflow float to -inf
    out = apply(DRY(1e-30, 2.0, 2, -1), [history], np.zeros((1, 4)))[0]
    cap = int(np.float32(88.7228391) / np.log(np.float32(2.0)))  # 128
    assert cap == 128 and out[3] == np.float32(-(float(np.float32(1e-30)) * 2.0 ** cap))
    assert (out != 0).sum() == 1 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- reference and cache


def random_history(rng: random.Random, length: int, alphabet: int) -> list[int]:
    """Text with repeats: random tokens with copied spans."""
    out: list[int] = []
    while len(out) < length:
        if out and rng.random() < 0.5:
            start = rng.randrange(len(out))
            out += out[start:start + rng.randint(1, 8)]
        else:
            out.append(rng.randrange(alphabet))
    return out[:length]


SETTINGS = [(1.0, 1.75, 2, -1), (0.8, 1.1, 0, -1), (2.0, 3.0, 1, 12), (1.0, 1.0, 3, 40), (0.3, 1.75, 2, 1)]


@pytest.mark.parametrize("setting", SETTINGS)
def test_equals_the_reference_from_scratch_and_through_the_cache(setting):
    rng = random.Random(hash(setting) % 1000)
    vocab, batch = 12, 4
    single, tails = {3}, [(5, (6,)), (5, (6, 7)), (8, (1, 2, 3))]
    histories = [random_history(rng, 60, vocab) for _ in range(batch)]
    logits = np.random.default_rng(0).normal(size=(batch, vocab)).astype(np.float32)
    grown = DRY(*setting, table(single, tails, vocab))  # one processor called on a growing history: the cache
    for length in range(1, 61):
        expected = np.stack([reference_dry(h[:length], logits[b], *setting, single, tails)
                             for b, h in enumerate(histories)])
        fresh = DRY(*setting, table(single, tails, vocab))
        prefix = [h[:length] for h in histories]
        assert torch.equal(apply(fresh, prefix, logits), torch.from_numpy(expected)), length
        assert torch.equal(apply(grown, prefix, logits), torch.from_numpy(expected)), length
    # a history the cache has not seen grow: reordered rows, then a shorter prefix, then two tokens at once
    for prefix in ([h[:60] for h in histories[::-1]], [h[:30] for h in histories], [h[:32] for h in histories]):
        expected = np.stack([reference_dry(h, logits[0], *setting, single, tails) for h in prefix])
        assert torch.equal(apply(grown, prefix, np.repeat(logits[:1], batch, 0)), torch.from_numpy(expected))


def test_the_cache_is_used_only_for_a_history_it_saw_grow(monkeypatch):
    import decoding.processors.dry as dry_module

    full = []
    compute = dry_module.suffix_matches
    monkeypatch.setattr(dry_module, "suffix_matches", lambda *args: full.append(1) or compute(*args))
    rng = random.Random(3)
    histories = [random_history(rng, 40, 9) for _ in range(3)]
    dry, logits = DRY(1.0, 1.5, 1, -1), np.zeros((3, 9))
    for end in range(20, 41):  # one full computation, then one token at a time
        apply(dry, [h[:end] for h in histories], logits)
    assert len(full) == 1
    apply(dry, [h[:40] for h in histories], logits)  # the same history again: cached
    apply(dry, [h[:40] for h in histories[::-1]], logits)  # a beam reorder: recomputed
    apply(dry, [h[:38] for h in histories], logits)  # a shorter prefix: recomputed
    apply(dry, [h[:38] + [1] * 9 for h in histories], logits)  # 9 new tokens: past MAX_INCREMENT, recomputed
    assert len(full) == 4


def test_both_full_computations_agree():
    from decoding.processors.dry import suffix_matches, suffix_matches_by_ranks

    rng = random.Random(11)
    for _ in range(60):
        length, batch, alphabet = rng.randint(1, 70), rng.randint(1, 4), rng.choice([2, 3, 10])
        ids = torch.tensor([random_history(rng, length, alphabet) for _ in range(batch)])
        start = torch.tensor([rng.randrange(length) for _ in range(batch)])
        cap = torch.tensor([[rng.choice([length, 3, 1, 10 ** 9])] for _ in range(batch)])
        assert torch.equal(suffix_matches(ids, start, cap), suffix_matches_by_ranks(ids, start, cap))


def test_looping_text_hands_over_to_the_ranks(monkeypatch):
    import decoding.processors.dry as dry_module

    calls = []
    by_ranks = dry_module.suffix_matches_by_ranks
    monkeypatch.setattr(dry_module, "suffix_matches_by_ranks", lambda *args: calls.append(1) or by_ranks(*args))
    loop = torch.tensor([[7, 8] * 40, [1] * 80])  # quadratic for the candidates' path
    matches = dry_module.suffix_matches(loop, torch.tensor([0, 5]), torch.tensor([[10 ** 9], [10 ** 9]]))
    assert calls == [1] and matches[0, 77] == 78 and matches[1, 78] == 74 and matches[1, 4] == 0
    text = torch.tensor([random_history(random.Random(2), 80, 50)])
    dry_module.suffix_matches(text, torch.tensor([0]), torch.tensor([[10 ** 9]]))
    assert calls == [1]  # ordinary text stays on the candidates' path


def test_degenerate_repetition_from_scratch_and_cached():
    history = [7, 8] * 100 + [7]
    logits = np.zeros((1, 10), dtype=np.float32)
    expected = reference_dry(history, logits[0], 0.01, 1.75, 2, -1)
    assert expected[8] < 0
    assert torch.equal(apply(DRY(0.01, 1.75, 2, -1), [history], logits)[0], torch.from_numpy(expected))
    dry = DRY(0.01, 1.75, 2, -1)
    for end in range(1, len(history) + 1):
        out = apply(dry, [history[:end]], logits)[0]
    assert torch.equal(out, torch.from_numpy(expected))


# ------------------------------------------------------------------------------------------- properties


def test_never_in_place_and_nothing_is_removed():
    scores = torch.randn(2, 16)
    before = scores.clone()
    out = DRY(5.0, 2.0, 1, -1)(torch.tensor([[1, 2, 1, 2, 1], [3, 3, 3, 3, 3]]), scores)
    assert torch.equal(scores, before) and not torch.equal(out, scores)
    assert torch.isfinite(out).all()


def test_per_row_equals_each_configuration_alone_bit_for_bit():
    rng = random.Random(5)
    configs = [(1.0, 1.75, 2, -1), None, (0.5, 2.5, 1, 20), (2.0, 1.0, 0, 6)]
    n = 3
    histories = [random_history(rng, 50, 10) for _ in range(len(configs) * n)]
    start = torch.tensor([0, 2, 5] * len(configs))
    ids = torch.tensor(histories)
    scores = torch.randn(len(histories), 10)
    scores[0, 4] = float("-inf")
    scores[4, 1] = float("nan")
    brk = table({3}, [(5, (6,))], 10)
    built = [DRY(*c, brk, start) if c else None for c in configs]
    rows = DRY.for_rows(built, n, torch.device("cpu"))
    out = rows(ids, scores)
    for c, dry in enumerate(built):
        part = slice(c * n, (c + 1) * n)
        if dry is None:  # rows without DRY: their input, bit for bit (NaN included)
            assert torch.equal(out[part].view(torch.int32), scores[part].view(torch.int32))
        else:
            alone = DRY(*configs[c], brk, start[part])(ids[part], scores[part])
            assert torch.equal(out[part].view(torch.int32), alone.view(torch.int32)), c
            assert not torch.equal(alone, scores[part])  # DRY did something on these rows
    # twice (the cache) gives the same
    assert torch.equal(rows(ids, scores).view(torch.int32), out.view(torch.int32))


def test_per_row_refuses_different_breakers():
    a = DRY(1.0, 2.0, 2, -1, table({3}))
    b = DRY(1.0, 2.0, 2, -1, table({4}))
    with pytest.raises(ValueError, match="dry_sequence_breakers"):
        DRY.for_rows([a, b], 2, torch.device("cpu"))


# ------------------------------------------------------------------------------------------- parameters


@pytest.fixture()
def forward_calls(tiny_llama):
    """A list that grows with each forward pass of the tiny model (bad values must fail before the first)."""
    calls: list = []
    handle = tiny_llama.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


@pytest.mark.parametrize("name, value", [("dry_multiplier", -1.0), ("dry_multiplier", float("inf")),
                                         ("dry_base", 0.5), ("dry_base", float("nan")), ("dry_allowed_length", -1),
                                         ("dry_allowed_length", 1.5), ("dry_penalty_last_n", -2),
                                         ("dry_penalty_last_n", True), ("dry_sequence_breakers", "\n"),
                                         ("dry_sequence_breakers", ["a", ""]), ("dry_sequence_breakers", [3])])
def test_bad_values_are_refused_naming_the_parameter(tiny_llama, forward_calls, name, value):
    settings = {"dry_multiplier": 1.0, "dry_sequence_breakers": [], name: value}
    with pytest.raises(ValueError, match=name):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), max_new_tokens=2, **settings)
    assert forward_calls == []


def test_breakers_need_a_tokenizer(tiny_llama):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), max_new_tokens=2, dry_multiplier=1.0)
    # no breakers, or DRY off: no tokenizer needed
    decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), max_new_tokens=2, dry_multiplier=1.0,
                      dry_sequence_breakers=[])
    decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), max_new_tokens=2)


def test_off_settings_build_nothing():
    assert build_dry(resolve_params(None, 3, max_new_tokens=1), 3, None) is None
    p = resolve_params(None, 3, max_new_tokens=1, dry_multiplier=1.0, dry_penalty_last_n=0, dry_sequence_breakers=[])
    assert build_dry(p, 3, None) is None


# ------------------------------------------------------------------------------------------- in generate


def test_generate_applies_dry_to_each_rows_own_history(tiny_llama):
    # row 1 is left-padded with id 9, which its text repeats: padding must not count as history
    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6], [9, 9, 9, 8, 9, 8, 9, 8]])
    mask = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])
    out = decoding.generate(tiny_llama, ids, mask, max_new_tokens=8, do_sample=False, dry_multiplier=2.0,
                            dry_allowed_length=1, dry_sequence_breakers=[], output_scores=True, output_logits=True,
                            eos_token_id=[], pad_token_id=9)
    starts = [0, 2]
    changed = 0
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        for row in range(2):
            history = out.sequences[row, starts[row]:ids.shape[1] + step].tolist()
            expected = reference_dry(history, logits[row].numpy(), 2.0, 1.75, 1, -1)
            assert torch.equal(scores[row], torch.from_numpy(expected)), (step, row)
            changed += int((scores[row] != logits[row]).sum())
    assert changed > 0


def test_speculative_greedy_with_dry_is_greedy_with_dry(tiny_llama):
    # text, its greedy continuation, the text again: prompt lookup proposes the continuation, DRY penalises it
    ids = torch.tensor([[461, 982, 513, 970, 965, 835, 298, 969, 248, 439, 513, 38, 461, 982, 513, 970, 965, 835, 298,
                         969]])
    kwargs = dict(max_new_tokens=16, do_sample=False, eos_token_id=[], dry_sequence_breakers=[])
    dry = dict(dry_multiplier=1.0, dry_allowed_length=2)
    plain = decoding.generate(tiny_llama, ids, torch.ones_like(ids), **kwargs, **dry)
    spec = decoding.generate(tiny_llama, ids, torch.ones_like(ids), prompt_lookup_num_tokens=4, **kwargs, **dry)
    assert torch.equal(spec.sequences, plain.sequences)
    # blocks were proposed and verified (DRY ran on each position's own prefix), and one proposal was accepted
    assert int(spec.proposed_tokens.sum()) > 0 and int(spec.accepted_tokens.sum()) > 0
    without = decoding.generate(tiny_llama, ids, torch.ones_like(ids), **kwargs)
    assert not torch.equal(without.sequences, plain.sequences)  # DRY changed the run


def test_beam_search_reorders_rows_and_the_cache_stays_transparent(tiny_llama, monkeypatch):
    import decoding.processors.dry as dry_module

    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]])
    kwargs = dict(max_new_tokens=10, num_beams=3, num_return_sequences=3, do_sample=False, eos_token_id=[],
                  dry_multiplier=1.5, dry_allowed_length=1, dry_sequence_breakers=[], output_scores=True)
    cached = decoding.generate(tiny_llama, ids, torch.ones_like(ids), **kwargs)
    monkeypatch.setattr(dry_module, "MAX_INCREMENT", -1)  # never extend: every call computes from scratch
    fresh = decoding.generate(tiny_llama, ids, torch.ones_like(ids), **kwargs)
    assert torch.equal(cached.sequences, fresh.sequences)
    assert all(torch.equal(a, b) for a, b in zip(cached.scores, fresh.scores))


def test_a_sweep_over_dry_settings_equals_each_run_alone(tiny_llama):
    from decoding.sweep import generate_sweep

    # two prompts, the second left-padded; each repeats itself so DRY acts from the first step
    ids = torch.tensor([[461, 982, 513, 970, 965, 835, 298, 969, 248, 439, 513, 38, 461, 982, 513, 970, 965, 835, 298,
                         969], [0] * 8 + [31, 32, 33, 34, 35, 36, 31, 32, 33, 34, 35, 36]])
    mask = (torch.arange(20)[None, :] >= torch.tensor([[0], [8]])).long()
    configs = [dict(dry_multiplier=1.0), dict(), dict(dry_multiplier=0.5, dry_allowed_length=3),
               dict(dry_multiplier=3.0, dry_base=1.2, dry_allowed_length=1, dry_penalty_last_n=8)]
    shared = dict(max_new_tokens=12, do_sample=False, eos_token_id=[], pad_token_id=0, dry_sequence_breakers=[])
    results = generate_sweep(tiny_llama, ids, mask, configs=configs, **shared)
    runs = [decoding.generate(tiny_llama, ids, mask, **shared, **config) for config in configs]
    for config, result, run in zip(configs, results, runs):
        assert torch.equal(result.sequences, run.sequences), config
    assert len({tuple(run.sequences.flatten().tolist()) for run in runs}) >= 3  # the settings change the runs


# ------------------------------------------------------------------------------------------- llama.cpp


def test_smollm2_breakers_are_llama_cpps(smollm2):
    _, tokenizer = smollm2
    for expected in GOLDEN["breaker_tables"]:
        got = resolve_breakers(tokenizer, tuple(expected["breakers"]))
        assert list(got.single) == expected["single"]
        assert [[h, list(t)] for h, t in got.tails] == expected["tails"]
        assert resolve_breakers(tokenizer, tuple(expected["breakers"])) is got  # resolved once per tokenizer
    assert any(GOLDEN["breaker_tables"][2]["tails"]) and len(GOLDEN["breaker_tables"][0]["single"]) > 100


def test_breakers_of_byte_level_and_sentencepiece_tokenizers():
    from tests.decoding.offline_tokenizers import byte_fallback_bpe, byte_level_bpe

    for tokenizer, newline in ((byte_level_bpe(), "Ċ"), (byte_fallback_bpe(), "<0x0A>")):
        found = resolve_breakers(tokenizer, ("\n",))
        assert tokenizer.convert_tokens_to_ids(newline) in found.single
        # "the end" starts inside " the" (or "the") and ends in the next word's tokens: a tail
        tails = resolve_breakers(tokenizer, ("the end",)).tails
        assert tails and all(0 < len(tail) <= 20 for _, tail in tails)


@pytest.fixture(scope="module")
def golden_rows(smollm2):
    """{"smollm2": SmolLM2's 6 recomputed rows, "random": the golden's seeded random rows} (each (n, V) float32)."""
    model, tokenizer = smollm2
    _, logits = next_token_logits(model, tokenizer)
    rng = np.random.default_rng(GOLDEN["random_seed"])
    random_rows = rng.standard_normal((GOLDEN["random_rows"], logits.shape[1])).astype(np.float32) * 3
    return {"smollm2": logits, "random": random_rows}


def test_llama_cpps_dry_on_smollm2_vocabulary(smollm2, golden_rows):
    _, tokenizer = smollm2
    assert same_fingerprint(fingerprint(golden_rows["smollm2"]), GOLDEN["smollm2_fingerprint"])
    penalised = 0
    for case in GOLDEN["cases"]:
        source = golden_rows[case["logits"]][case["row"]].copy()
        exact = GOLDEN["exact_logits"][f"{case['logits']}:{case['row']}"]
        source[exact["ids"]] = np.asarray(exact["logits"], dtype=np.float32)  # the golden's own inputs there
        p = resolve_params(None, len(case["history"]), max_new_tokens=1, dry_multiplier=case["multiplier"],
                           dry_base=case["base"], dry_allowed_length=case["allowed_length"],
                           dry_penalty_last_n=case["penalty_last_n"], dry_sequence_breakers=case["breakers"])
        dry = build_dry(with_breakers(p, tokenizer), 0, None)
        out = dry(torch.tensor([case["history"]]), torch.from_numpy(source)[None])[0].numpy()
        changed = np.nonzero(out != source)[0].tolist()
        assert changed == case["changed_ids"], (case["name"], sorted(set(changed) ^ set(case["changed_ids"]))[:10])
        got, expected = out[changed].astype(np.float64), np.asarray(case["changed_logits"])
        finite = np.isfinite(expected)  # a penalty past float's range leaves -inf, in llama.cpp too
        assert (got[~finite] == expected[~finite]).all(), case["name"]
        error = np.abs(got[finite] - expected[finite]).max(initial=0.0)
        assert error <= TOLERANCE, (case["name"], error)
        penalised += bool(changed)
    assert penalised >= 0.9 * len(GOLDEN["cases"])  # the histories repeat themselves: almost every case penalises
