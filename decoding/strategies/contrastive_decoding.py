"""Contrastive decoding (Li et al. 2023, "Contrastive Decoding: Open-ended Text Generation as Optimization").

An expert and a weaker amateur read the same text; each step scores every token v by how much more the
expert likes it than the amateur, among the tokens the expert itself finds plausible:

    p_exp   = softmax(expert logits)                                   (the expert's raw distribution)
    V_head  = {v : p_exp(v) >= plausibility_alpha * max_w p_exp(w)}     (the plausibility mask)
    score_v = log p_exp(v) - log softmax(amateur logits / amateur_temperature)(v)   for v in V_head
    score_v = -inf                                                                  otherwise

Then generate's usual processors run on that score, in `processor_order` (repetition penalty,
min_new_tokens, bans, ...; when sampling, temperature and top-k / top-p / ... too, with generate's default
top_k=50), and the token is the argmax (greedy) or one draw from softmax(processed score): the plain loop's
sampler, so the RNG is consumed exactly as in plain sampling (one multinomial over the batch per step).
`plausibility_alpha=0` keeps every token (the pure log-ratio), 1 keeps only the expert's argmax (ties
aside), which then is greedy decoding. A token outside V_head is never chosen; if the processors ban every
token of a row's V_head, the call stops with a ValueError rather than pick a banned token.

Outputs, as for plain decoding: `token_logprobs` are log softmax(processed score), the distribution the token
was chosen from; `token_logprobs_raw` the expert's own log-probabilities; `output_scores` the processed
scores; `output_logits` the expert's raw logits.

The amateur (decoding/strategies/amateur.py: another model with the expert's vocabulary, or the expert's
first L layers) is a second set of rows with its own KV cache, kept in step with the expert's: the same
slots, the same attention mask and position ids (`cumsum(mask) - 1`), the same cache kind (none, dynamic,
static). Its prefill runs on the first step, after the expert's; every later step feeds it the token each
row chose (a finished row's pad too, as the expert is fed). It is a processor at the head of the list, so
the loop itself (decode_n_tokens: prefill, stops, streamer, shared prefixes for num_return_sequences) is the
plain loop, unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..cache import KVCache
from ..loop import Forward, batch_sampler, copy_prefix, decode_n_tokens, prepare_decode
from ..params import GenerationParams
from ..processors import ProcessorList
from ..processors.base import LogitsProcessor
from ..result import GenerationResult
from ..state import init_state
from .amateur import build_amateur, check_amateur


def contrastive_scores(expert_logits: torch.Tensor, amateur_logits: torch.Tensor, alpha: float,
                       amateur_temperature: float) -> torch.Tensor:
    """(B, V) log p_exp - log p_ama on the plausible set V_head, -inf elsewhere (module docstring).

    Args:
        expert_logits: (B, V) float32 raw logits of the expert.
        amateur_logits: (B, V) float32 raw logits of the amateur.
    """
    expert_probs = torch.softmax(expert_logits, dim=-1)  # (B, V)
    plausible = expert_probs >= alpha * expert_probs.max(dim=-1, keepdim=True).values  # (B, V) V_head
    amateur_logp = torch.log_softmax(amateur_logits / amateur_temperature, dim=-1)  # (B, V)
    return (torch.log_softmax(expert_logits, dim=-1) - amateur_logp).masked_fill(~plausible, -math.inf)


class AmateurRows:
    """The amateur's rows: token buffer, mask, position ids (decoding/state.py) and KV cache, advanced in step.

    Args:
        amateur: the amateur LM.
        cache: "none" | "dynamic" | "static", the call's cache kind.
        input_ids, attention_mask: (P, T) the distinct prompts, as the expert's state holds them.
        max_new_tokens: steps the rows may run (sizes the buffers and the static cache).
        pad_token_id: the id of pad slots (never attended).
        prompt_rows: (R,) the prompt each decoded row continues (num_return_sequences), or None: R = P.
        prompt_embeds: the prompt's `embeds.PromptEmbeds` (an amateur sharing the expert's embedding), or None.
    """

    def __init__(self, amateur: Any, cache: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: int, pad_token_id: int | None, prompt_rows: torch.Tensor | None = None,
                 prompt_embeds: Any = None):
        self.state = init_state(input_ids, attention_mask, max_new_tokens, pad_token_id)
        if prompt_embeds is not None:
            self.state.prompt_embeds, self.state.visible_start = prompt_embeds.embeds, prompt_embeds.visible_start
        self.kv = KVCache(cache, amateur, input_ids.shape[1] + max_new_tokens)
        self.forward = Forward(amateur, self.kv)
        self.prompt_rows = prompt_rows
        self.start: int | None = None  # cache position of the next forward's first slot; None: not prefilled

    def __call__(self, last_tokens: torch.Tensor | None) -> torch.Tensor:
        """(R, V) float32 amateur logits after the rows' newest tokens `last_tokens` (R,); None on the first call."""
        if self.start is None:  # the prefill: slots [0, T) of the distinct prompts, then copied per row
            logits = self.forward(self.state, 0, self.state.length)
            if self.prompt_rows is not None:
                self.state, logits = copy_prefix(self.state, self.kv, logits, self.prompt_rows)
        else:
            self.state.append(last_tokens)  # slot `length`, one position after the row's last
            logits = self.forward(self.state, self.start, self.state.length)
        self.start = self.state.length
        return logits


class ContrastiveScore(LogitsProcessor):
    """The expert's raw logits in, the contrastive score out (module docstring); runs the amateur one step.

    Args:
        amateur: the amateur's rows, one per decoded row.
        alpha: plausibility_alpha in [0, 1].
        amateur_temperature: > 0.
    """

    def __init__(self, amateur: AmateurRows, alpha: float, amateur_temperature: float):
        self.amateur = amateur
        self.alpha = alpha
        self.amateur_temperature = amateur_temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # input_ids (R, L) what the rows hold so far; its last column is the token each row chose last step
        last = None if self.amateur.start is None else input_ids[:, -1]
        return contrastive_scores(scores, self.amateur(last), self.alpha, self.amateur_temperature)

    def __repr__(self) -> str:  # the amateur holds a model: left out
        return f"ContrastiveScore(alpha={self.alpha!r}, amateur_temperature={self.amateur_temperature!r})"


def _checked_sampler(do_sample: bool, generator: torch.Generator | None):
    """The plain loop's sampler, refusing a row whose every score is -inf (its whole V_head banned)."""
    choose = batch_sampler(do_sample, generator)

    def sample(scores: torch.Tensor) -> torch.Tensor:
        empty = torch.isneginf(scores).all(dim=-1)  # (B,)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"contrastive decoding: for rows {rows} the processors banned every token of the "
                             "plausible set (p_expert >= plausibility_alpha * max p_expert), so no token can be "
                             "chosen; lower plausibility_alpha, or drop the ban (min_new_tokens, bad_words_ids, "
                             "suppress_tokens, ...)")
        return choose(scores)

    return sample


def contrastive_decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
                       generator: torch.Generator | None = None, tokenizer: Any = None,
                       prompt_embeds: Any = None) -> GenerationResult:
    """Greedy or sampled contrastive decoding of `model` (the expert) against `p`'s amateur (module docstring).

    Args:
        input_ids: (B, T) checked, left-padded prompt ids; attention_mask: (B, T) (as `prepare_call` returns them).
        p: resolved parameters with `amateur_model` or `amateur_layers` set.
        generator: RNG for sampling (None: torch's global RNG).
        tokenizer: needed only for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds (amateur_layers only).

    Returns:
        GenerationResult; `sequences` is (B * num_return_sequences, T + N), or (.., N) for embeddings only.
    """
    prompt_len = input_ids.shape[1]
    check_amateur(model, p, prompt_len + p.max_new_tokens, prompt_embeds is not None)
    amateur = build_amateur(model, p)
    # The n samples of a prompt are adjacent rows, as in generate; both models prefill each prompt once.
    prefix_rows = None
    if p.num_return_sequences > 1:
        prefix_rows = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(
            p.num_return_sequences)
    state, kv, processors = prepare_decode(model, input_ids, attention_mask, p, prompt_embeds, prefix_rows)
    rows = AmateurRows(amateur, p.cache, input_ids, attention_mask, p.max_new_tokens, p.pad_token_id, prefix_rows,
                       prompt_embeds)
    score = ContrastiveScore(rows, p.plausibility_alpha, p.amateur_temperature)
    return decode_n_tokens(model, state, kv, p, ProcessorList([score, *processors]), generator, tokenizer,
                           sampler=_checked_sampler(p.do_sample, generator), prefix_rows=prefix_rows)
