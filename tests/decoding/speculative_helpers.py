"""Shared pieces of the speculative-decoding tests: the proposers, a prompt where prompt lookup lands, an
independent "must lookup land?" check, and the near-tie comparison of a speculative run with plain greedy.

Why near ties: the verification forward runs k + 1 positions at once, plain greedy one, so the logits can differ
in the last float bits; where the top-2 gap of plain greedy's logits is below that, either token is greedy.
"""

from __future__ import annotations

import functools

import torch

from experiments.models import build_tiny_model

NEAR_TIE_GAP = 1e-4  # a differing token is only excused when plain greedy's top-2 logit gap is below this

# A prompt on which lookup proposes tokens the tiny models (seed 0) really emit (checked by `lookup_must_land`)
LOOKUP_PROMPT = [467, 847, 465, 14] * 3 + [124, 799, 467, 847]

PROPOSER_NAMES = ("lookup", "draft_layers", "same_weights_draft", "other_weights_draft")


@functools.lru_cache(maxsize=None)
def draft_model(kind: str, seed: int):
    """A tiny model of `kind`; seed 0 has the conftest fixtures' weights (every proposal accepted)."""
    return build_tiny_model(kind, vocab_size=1000, seed=seed)


def kind_of(model) -> str:
    return "tiny_llama" if model.config.model_type == "llama" else "tiny_gpt2"


def proposer_kwargs(name: str, model) -> dict:
    """generate keywords of one proposer for a tiny `model` (tiny Llama or GPT-2)."""
    if name == "lookup":
        return dict(prompt_lookup_num_tokens=3)
    if name == "draft_layers":
        return dict(draft_layers=1)
    if name == "same_weights_draft":  # threshold 0: the draft always proposes its full k, all of it accepted
        return dict(assistant_model=draft_model(kind_of(model), 0), assistant_confidence_threshold=0)
    if name == "other_weights_draft":
        return dict(assistant_model=draft_model(kind_of(model), 1))
    raise ValueError(f"proposer name={name!r} is not known; use one of {PROPOSER_NAMES}")


def _lookup_first_token(text: list[int], ngram_size: int) -> int | None:
    """The first token n-gram lookup proposes after `text` (largest n first, first earlier match), or None."""
    for n in range(min(ngram_size, len(text) - 1), 0, -1):
        tail = text[-n:]
        for start in range(len(text) - n):  # a match ending at the last token has no follower
            if text[start:start + n] == tail:
                return text[start + n]
    return None


def lookup_must_land(prompt: list[int], new_tokens: list[int], ngram_size: int = 2) -> bool:
    """True when a speculative run with prompt lookup must accept at least one proposal.

    If some prefix of the plain greedy text (pending token included, a proposal still allowed by the length
    budget) makes lookup's first proposal the token greedy emits next, a run that never accepted would visit
    that prefix and accept it."""
    for g in range(1, len(new_tokens) - 1):  # g emitted tokens, room for at least one proposal
        if _lookup_first_token(prompt + new_tokens[:g], ngram_size) == new_tokens[g]:
            return True
    return False


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids of a left-padded mask: cumsum - 1, 0 on padding (as decoding/state.py's rule)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def next_token_gap(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Top-2 gap of the raw next-token logits after (L,) `ids` with (L,) `mask`, one plain full forward."""
    logits = model(input_ids=ids[None], attention_mask=mask[None], position_ids=positions_of(mask[None])).logits
    top = logits[0, -1].float().topk(2).values
    return float(top[0] - top[1])


def row_new_tokens(result, row: int) -> list[int]:
    """The tokens row `row` generated (up to and including its EOS), without the pad after its end."""
    return result.new_token_ids[row][result.new_token_mask[row]].tolist()


def row_near_tie(model, plain, plain_row: int, prompt_mask: torch.Tensor, spec, spec_row: int, label: str = ""):
    """None if row `spec_row` of `spec` equals row `plain_row` of `plain` (GenerationResults), else the near tie
    (step, gap) where they first differ; prompt_mask (T,) is that plain row's prompt mask. At the first differing
    step the plain text's logits are recomputed with a plain forward; a gap >= NEAR_TIE_GAP fails."""
    ours, ref = row_new_tokens(spec, spec_row), row_new_tokens(plain, plain_row)
    if ours == ref:
        return None
    step = next(j for j in range(min(len(ours), len(ref)) + 1)
                if j == len(ours) or j == len(ref) or ours[j] != ref[j])
    prompt = plain.sequences[plain_row, :plain.prompt_length]
    ids = torch.cat([prompt, torch.tensor(ref[:step], dtype=prompt.dtype)])
    mask = torch.cat([prompt_mask.long(), torch.ones(step, dtype=torch.long)])
    gap = next_token_gap(model, ids, mask)
    assert gap < NEAR_TIE_GAP, (f"{label}: speculative tokens differ from plain greedy at step {step} and it is "
                                f"no near tie (top-2 gap {gap:.3g}); spec {ours} plain {ref}")
    print(f"near tie {label}: step {step}, top-2 gap {gap:.3g}")
    return step, gap


def compare_or_near_tie(model, plain, spec, prompt_mask: torch.Tensor, label: str = ""):
    """Every row of `spec` equals the same row of `plain`, or differs first at a near tie (`row_near_tie`).

    prompt_mask: (B, T) the prompts' attention mask. Returns the near ties [(row, step, gap)]."""
    ties = []
    for row in range(spec.sequences.shape[0]):
        tie = row_near_tie(model, plain, row, prompt_mask[row], spec, row, f"{label} row {row}")
        if tie is not None:
            ties.append((row, *tie))
    return ties


def padded(prompts, pad=2):
    """(B, T) left-padded ids (pad id 2, the tiny models' pad) and their mask, for prompts of different lengths."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


def check_counters(result):
    """accepted <= proposed; every target forward emits one token more than it accepted (the cut included)."""
    assert bool((result.accepted_tokens <= result.proposed_tokens).all())
    assert bool((result.accepted_tokens >= 0).all())
    emitted = result.new_token_mask.sum(dim=1)
    assert torch.equal(result.target_forwards + result.accepted_tokens, emitted)
    assert int(result.target_forwards.max()) == result.steps + 1
