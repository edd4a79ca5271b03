"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation"), token-identical
to transformers 4.55.4's `_contrastive_search`.

Each step, for every row:
1. the top_k candidates of the processed next-token distribution p (every processor of the plain loop ran);
2. one forward of all B * k candidates in one batch, on a cache whose rows were expanded k times;
3. score(v) = (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j), h_v the candidate's final hidden state and
   h_j the hidden states of the row's slots so far (prompt and chosen tokens; left-padding slots excluded);
4. the best candidate is the token; its cache row, its hidden state and its logits (the next step's
   distribution) are kept.

How it sits on the plain loop: `decode_n_tokens` runs unchanged (processors, EOS / pad for finished rows,
stop strings, criteria, streamer, scores, log-probs, finish reasons). `ContrastiveStep` is both its forward
(the prefill; afterwards the chosen candidates' logits, which the look-ahead already computed) and its sampler
(steps 1-4). Like 4.x, the last step also runs a candidate forward: the one that chooses the last token.

The cache stays at B * k rows after the prefill: where 4.x selects the chosen rows (B) and repeats them k times
again each step, we `reorder` once (row b * k + i continues candidate b * k + selected[b]). The context's
hidden states are normalised once, when they are computed, rather than every step. `low_memory=True` runs the
k candidates one at a time on a B-row cache (each forward writes the same slot), then writes the chosen
tokens' keys and values with one more forward, as 4.x does (its own low_memory path indexes the candidates
wrongly for B > 1; ours gives the batched tokens at every B).
"""

from __future__ import annotations

from typing import Any

import torch

from ..cache import KVCache
from ..loop import decode_n_tokens, prepare_decode
from ..params import GenerationParams
from ..result import GenerationResult
from ..state import DecodeState
from .hidden import HiddenForward


def _unit(hidden: torch.Tensor) -> torch.Tensor:
    """Each vector of the last dimension divided by its norm (the cosine's normalisation, as 4.x computes it)."""
    return hidden / hidden.norm(dim=-1, keepdim=True)


class ContrastiveStep:
    """The forward and the sampler `decode_n_tokens` calls; one object per generate call."""

    def __init__(self, model: Any, kv: KVCache, penalty_alpha: float, top_k: int, low_memory: bool):
        self.forward = HiddenForward(model, kv)
        self.kv = kv
        self.alpha = float(penalty_alpha)
        self.k = top_k
        self.low_memory = low_memory
        self.state: DecodeState | None = None  # the batch (B rows), as decode_n_tokens advances it
        self.rows: DecodeState | None = None  # the candidates' rows: B * k (B with low_memory)
        self.context: torch.Tensor | None = None  # (B, T + N, H) unit hidden states of the slots so far
        self.next_logits: torch.Tensor | None = None  # (B, V) the chosen candidates' logits

    def __call__(self, state: DecodeState, start: int, end: int) -> torch.Tensor:
        """(B, V) logits of the next token: the prompt's forward first, then what the last step kept."""
        if self.next_logits is not None:
            return self.next_logits
        logits, hidden = self.forward.step(state, start, end)  # (B, V), (B, T, H)
        batch, _, width = hidden.shape
        self.state = state
        self.context = hidden.new_zeros((batch, state.tokens.shape[1], width))
        self.context[:, :end] = _unit(hidden)
        expand = torch.arange(batch, device=state.tokens.device)
        if not self.low_memory:
            expand = expand.repeat_interleave(self.k)  # row b * k + i: candidate i of row b
        self.kv.select_rows(expand)
        self.rows = state.select_rows(expand)
        self.forward.check_head(logits, hidden[:, -1])
        return logits

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """(B,) tokens: the best of each row's top_k candidates of `scores` (B, V), by the contrastive score."""
        state, rows = self.state, self.rows
        slot = state.length  # the candidates' slot
        batch = scores.shape[0]
        top_probs, top_ids = torch.topk(torch.softmax(scores, dim=-1), k=self.k, dim=-1)  # (B, k) each
        # the token chosen last step, as the batch holds it (pad for a finished row): the no-cache forward
        # reads the whole row
        width = 1 if self.low_memory else self.k
        rows.tokens[:, slot - 1] = state.tokens[:, slot - 1].repeat_interleave(width)
        if self.low_memory:
            logits, hidden = self._one_by_one(top_ids, slot)
        else:
            rows.length = slot
            rows.append(top_ids.reshape(-1))
            # the head only for the chosen rows, when it is the whole of the logits (hidden.py)
            logits, hidden = self.forward.step(rows, slot, slot + 1, logits=not self.forward.head_alone)
            hidden = hidden.view(batch, self.k, -1)  # (B, k, H)
            if logits is not None:
                logits = logits.view(batch, self.k, -1)  # (B, k, V)
        selected = self._rank(top_probs, hidden, slot)  # (B,)
        every = torch.arange(batch, device=scores.device)
        tokens = top_ids[every, selected]
        chosen = hidden[every, selected]  # (B, H)
        self.next_logits = self.forward.head_logits(chosen) if logits is None else logits[every, selected]
        self.context[:, slot] = _unit(chosen)
        if self.low_memory:
            self._write_chosen(tokens, selected, slot)
        else:
            self.kv.reorder((every * self.k + selected).repeat_interleave(self.k))
        return tokens

    def _rank(self, top_probs: torch.Tensor, hidden: torch.Tensor, slot: int) -> torch.Tensor:
        """(B,) index of the best candidate: (1 - alpha) p - alpha * max cosine to the slots [0, slot)."""
        cosine = torch.matmul(self.context[:, :slot], _unit(hidden).transpose(1, 2))  # (B, slot, k)
        padding = self.state.attention_mask[:, :slot, None] == 0  # (B, slot, 1): never a context token
        cosine = cosine.masked_fill(padding, torch.finfo(cosine.dtype).min)
        penalty = cosine.max(dim=1).values  # (B, k)
        score = (1.0 - self.alpha) * top_probs - self.alpha * penalty  # (B, k)
        return score.max(dim=-1).indices

    def _one_by_one(self, top_ids: torch.Tensor, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """low_memory: candidate i of every row in forward i, each writing the slot `slot` of a B-row cache.

        Returns: (logits (B, k, V), or None when the head is applied to the chosen rows only; hidden (B, k, H)).
        """
        logits, hidden = [], []
        for i in range(self.k):
            self.kv.crop(slot)  # forget the previous candidate's keys and values
            self.rows.length = slot
            self.rows.append(top_ids[:, i])
            step_logits, step_hidden = self.forward.step(self.rows, slot, slot + 1,
                                                         logits=not self.forward.head_alone)  # (B, V), (B, 1, H)
            logits.append(step_logits)
            hidden.append(step_hidden[:, 0])
        return None if logits[0] is None else torch.stack(logits, dim=1), torch.stack(hidden, dim=1)

    def _write_chosen(self, tokens: torch.Tensor, selected: torch.Tensor, slot: int) -> None:
        """low_memory: the cache's slot `slot` holds the last candidate's keys and values; write the chosen's."""
        if not self.kv.enabled or bool((selected == self.k - 1).all()):
            return
        self.kv.crop(slot)
        self.rows.tokens[:, slot] = tokens
        self.forward.outputs(self.rows, slot, slot + 1)


def contrastive_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
                       generator: torch.Generator | None = None, tokenizer: Any = None,
                       prompt_embeds: Any = None) -> GenerationResult:
    """Contrastive search (`penalty_alpha` > 0, `top_k` >= 2, greedy) on checked, left-padded prompts.

    Args:
        input_ids: (B, T) prompt ids; attention_mask: (B, T) (as `prepare_call` returns them).
        p: resolved parameters with `p.is_contrastive_search` (decoding/strategies/contrastive_checks.py
            refused what this strategy does not support); `p.low_memory` runs the candidates one at a time.
        generator: unused (contrastive search draws nothing); accepted for the dispatch's one signature.
        tokenizer: needed only for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds, else None.

    Returns:
        GenerationResult; `sequences` is (B, T + N). `token_logprobs` are under the processed distribution
        the candidates came from, `scores` / `logits` (when asked for) are 4.x's.
    """
    state, kv, processors = prepare_decode(model, input_ids, attention_mask, p, prompt_embeds)
    step = ContrastiveStep(model, kv, p.penalty_alpha, p.top_k, bool(p.low_memory))
    return decode_n_tokens(model, state, kv, p, processors, generator, tokenizer, sampler=step.choose,
                           forward=step)
