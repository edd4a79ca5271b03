"""Minimum Bayes risk decoding (Eikema & Aziz 2022; Freitag et al. 2022): sample n, return the consensus.

The mode of a model's distribution over sequences is not its most typical output; MBR instead returns the
candidate that agrees most, under a utility, with what the model would say: it draws n candidates per prompt
and picks the one with the highest expected utility against the others (strategies/mbr_utility.py).

How, with the loop's own pieces:
- the candidates are ONE call of the plain loop (`greedy_or_sample` with num_return_sequences = n): each
  prompt is prefilled once and its n rows share that prefill (`copy_prefix`). So the candidates are exactly
  what `decoding.generate(..., num_return_sequences=n)` draws with the same generator, and any sampling
  configuration (temperature, top-k / top-p / min-p, penalties, guidance, a watermark) applies as it would there;
- the selection is per prompt and reads only that prompt's n candidates. The chosen rows keep what the
  sampling loop recorded for them (tokens, log-probs, finish reasons, per-step scores);
- num_return_sequences = r returns each prompt's r best, best first (adjacent rows, as generate lays them out).

What "a batch row equals that prompt alone" means here: sampling draws one `torch.multinomial` over every row
of the batch per step, so a prompt's candidates depend on which rows share its batch (as for plain sampling).
Given the candidates, everything else is per prompt: the utility matrix, the expected utilities and the
choice for a prompt equal those computed from that prompt's candidates alone (tests/decoding/test_mbr.py).

Timings: `prefill_seconds` is the sampling call's; `decode_seconds` adds the scoring and selection, so
`tokens_per_second` is the returned tokens over the whole cost of the call. The split is in `mbr_seconds`.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..loop import greedy_or_sample, sync_device
from ..params import GenerationParams
from ..result import GenerationResult
from .mbr_checks import check_mbr_call
from .mbr_utility import (cosine_matrix, expected_utility, mean_pooled_embeddings, select_best,
                          text_utility_matrix)


def mbr_decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
               generator: torch.Generator | None = None, tokenizer: Any = None,
               prompt_embeds: Any = None) -> GenerationResult:
    """Draw `p.mbr_candidates` samples per prompt, return the `p.num_return_sequences` with the highest
    expected utility (`p.mbr_utility`) against the prompt's other candidates.

    Args:
        input_ids: (B, T) left-padded prompt ids; attention_mask: (B, T) (as `prepare_call` returns them).
        p: resolved parameters with `mbr_candidates` = n >= 2 and sampling on (checked in `validate`).
        generator: RNG of the candidates' sampling (None: torch's global RNG, as generate).
        tokenizer: decodes the candidates for "chrf" / "bleu" (required there); also used for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds, else None.

    Returns:
        GenerationResult of the chosen rows, (B * r, T + N), plus `mbr_candidates` (the sampling call's result,
        B * n rows), `mbr_expected_utility` (B, n) and `mbr_chosen` (B, r) (candidate index within its prompt).
    """
    check_mbr_call(model, p, tokenizer)
    n, r = p.mbr_candidates, p.num_return_sequences
    candidates = greedy_or_sample(model, input_ids, attention_mask, p.with_(num_return_sequences=n),
                                  generator=generator, tokenizer=tokenizer, prompt_embeds=prompt_embeds)
    sync_device(candidates.sequences.device)
    t0 = time.perf_counter()
    scorer = model if p.mbr_scorer is None else p.mbr_scorer
    u = utility_matrices(candidates, n, p.mbr_utility, scorer, tokenizer)  # (B, n, n)
    expected = expected_utility(u)  # (B, n)
    chosen = select_best(expected, r)  # (B, r)
    sync_device(candidates.sequences.device)
    mbr_seconds = time.perf_counter() - t0
    rows = (torch.arange(chosen.shape[0])[:, None] * n + chosen).flatten()  # (B * r,) rows of `candidates`
    return chosen_rows(candidates, rows, mbr_seconds, expected, chosen)


def utility_matrices(candidates: GenerationResult, n: int, utility: str, scorer: Any, tokenizer: Any
                     ) -> torch.Tensor:
    """(B, n, n) float64 u[b, i, j]: prompt b's candidate i scored against its candidate j.

    Args:
        candidates: the sampling call's result, the n rows of a prompt adjacent (B * n rows).
    """
    tokens, mask = candidates.new_token_ids, candidates.new_token_mask  # (B * n, N) each
    batch = tokens.shape[0] // n
    if utility == "embedding":
        embeddings = mean_pooled_embeddings(scorer, tokens, mask).view(batch, n, -1)  # (B, n, H)
        return torch.stack([cosine_matrix(e) for e in embeddings]).cpu()
    # The text of a candidate is its tokens before it finished, EOS and other special tokens dropped.
    texts = tokenizer.batch_decode([row[keep].tolist() for row, keep in zip(tokens, mask)], skip_special_tokens=True)
    return torch.stack([text_utility_matrix(texts[b * n:(b + 1) * n], utility) for b in range(batch)])


def chosen_rows(candidates: GenerationResult, rows: torch.Tensor, mbr_seconds: float, expected: torch.Tensor,
                chosen: torch.Tensor) -> GenerationResult:
    """The GenerationResult of the candidates' rows `rows` (B * r,), with the MBR extras attached."""
    device = candidates.sequences.device
    rows_on = rows.to(device)
    pick = (lambda steps: None if steps is None else tuple(s.index_select(0, rows_on) for s in steps))
    mask = candidates.new_token_mask.index_select(0, rows_on)
    return GenerationResult(
        sequences=candidates.sequences.index_select(0, rows_on),
        token_logprobs=candidates.token_logprobs.index_select(0, rows_on),
        token_logprobs_raw=candidates.token_logprobs_raw.index_select(0, rows_on),
        new_token_mask=mask,
        finish_reasons=[candidates.finish_reasons[i] for i in rows.tolist()],
        prompt_length=candidates.prompt_length,
        prefill_seconds=candidates.prefill_seconds,
        decode_seconds=candidates.decode_seconds + mbr_seconds,
        new_tokens=int(mask.sum()),
        steps=candidates.steps,
        scores=pick(candidates.scores),
        logits=pick(candidates.logits),
        mbr_candidates=candidates,
        mbr_expected_utility=expected,
        mbr_chosen=chosen,
        mbr_seconds=mbr_seconds,
    )
