"""DoLa (Chuang et al. 2024): contrast the final layer's next-token distribution with a premature layer's.

Each step, the LM head reads the hidden state entering each candidate premature layer (dola_layers.py says
which) at the last position, without the final norm, as transformers 4.55's `_dola_decoding` does. The
candidate whose distribution is farthest from the final one by Jensen-Shannon divergence is the premature
layer; the next-token scores are then

    log p_final - log p_premature   over the plausible tokens: log p_final >= max log p_final + log(0.1),
    -inf                            elsewhere (the relative-top filter),

and generate's processors (the repetition penalty the paper recommends, 1.2; sampling's warpers) run on
them. The model runs through the plain loop (loop.py) unchanged: forward pre-hooks on the candidate layers
keep the last position's hidden state (`PrematureTaps`), and the contrast is the first processor
(`DolaContrast`), so the raw logits the loop records are the final layer's, as 4.x's `output_logits`.

Two rules of 4.x couple the rows of a batch, so that a row's tokens depend on its batch-mates: one premature
layer per step for the whole batch (the JS divergence averaged over rows, finished rows included), and the
repetition penalty counting left-padding tokens as seen text. By default each row chooses its own premature
layer and padding is not text, so a batch row equals that prompt alone (and equals 4.x for one prompt, or
whenever 4.x's coupled choice agrees); `tf4_batch=True` applies 4.x's coupled rules, token-identical to
4.55's batched generate (tests/decoding/test_dola.py checks both).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..cache import KVCache
from ..loop import decode_n_tokens
from ..params import GenerationParams
from ..processors import LogitsProcessor, ProcessorList, build_processors
from ..result import GenerationResult
from ..state import init_state
from .dola_layers import check_dola_model, decoder_layers

RELATIVE_TOP = 0.1  # 4.x's fixed plausibility ratio: keep tokens within a factor 10 of the best final probability
BASE_FILTER_VALUE = -1e-3  # what 4.x writes into the premature log-probs of filtered tokens


class PrematureTaps:
    """Forward pre-hooks that keep, per candidate layer, the last position's hidden state entering it.

    Index i is the input of decoder layer i (0: the embedding output), exactly `hidden_states[i]` of a
    4.x forward with `output_hidden_states=True`; the views are (B, H) slices of this forward's activations.
    """

    def __init__(self, layers: torch.nn.ModuleList, indices: list[int]):
        self.hidden: dict[int, torch.Tensor] = {}
        self.handles = [layers[i].register_forward_pre_hook(self._tap(i), with_kwargs=True)
                        for i in sorted(set(indices))]

    def _tap(self, index: int):
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            states = args[0] if args else kwargs["hidden_states"]  # (B, q, H)
            self.hidden[index] = states[:, -1, :]  # (B, H)
        return hook

    def __enter__(self) -> "PrematureTaps":
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def js_divergence(final_logits: torch.Tensor, premature_logits: torch.Tensor) -> torch.Tensor:
    """(L, B) Jensen-Shannon divergence between each premature distribution and the final one, as 4.x computes
    it: each KL term is averaged over the vocabulary (a mean, not a sum; it only ranks the layers).

    Args:
        final_logits: (B, V); premature_logits: (L, B, V).
    """
    mean_dist = 0.5 * (F.softmax(final_logits, dim=-1)[None] + F.softmax(premature_logits, dim=-1))  # (L, B, V)
    # F.kl_div(log q, p) = p (log p - log q): KL(mean || q), zero where the mean is zero
    kl_final = F.kl_div(F.log_softmax(final_logits, dim=-1)[None], mean_dist, reduction="none").mean(-1)
    kl_premature = F.kl_div(F.log_softmax(premature_logits, dim=-1), mean_dist, reduction="none").mean(-1)
    return 0.5 * (kl_final + kl_premature)  # (L, B)


def relative_top_contrast(final_logits: torch.Tensor, base_logits: torch.Tensor,
                          relative_top: float = RELATIVE_TOP) -> torch.Tensor:
    """(B, V) log p_final - log p_base over the tokens with p_final >= relative_top * max p_final, -inf elsewhere.

    4.x's threshold is min(best log-prob, best + log(relative_top)) with one token kept at least; the second
    is always the smaller, so no sort is needed.
    """
    final = final_logits.log_softmax(dim=-1)
    base = base_logits.log_softmax(dim=-1)
    threshold = final.max(dim=-1, keepdim=True).values + math.log(relative_top)  # (B, 1)
    implausible = final < threshold
    return final.masked_fill(implausible, -math.inf) - base.masked_fill(implausible, BASE_FILTER_VALUE)


class DolaContrast(LogitsProcessor):
    """The first processor: final-layer logits (B, V) in, the DoLa contrast out; records each step's layers."""

    def __init__(self, lm_head: torch.nn.Module, taps: PrematureTaps, candidates: list[int], couple_batch: bool):
        self.lm_head = lm_head
        self.taps = taps
        self.candidates = candidates
        self.couple_batch = couple_batch  # 4.x: one premature layer for the whole batch per step
        self.chosen: list[torch.Tensor] = []  # per step, (B,) the premature layer of each row

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # 4.x keeps the LM head's dtype for the premature logits (float32 only for the final ones)
        premature = [self.lm_head(self.taps.hidden[i]).to(scores.device) for i in self.candidates]  # L x (B, V)
        rows = scores.shape[0]
        if len(premature) == 1:
            pick = torch.zeros(rows, dtype=torch.long, device=scores.device)
            base = premature[0]
        else:
            stacked = torch.stack(premature, dim=0)  # (L, B, V)
            divergence = js_divergence(scores, stacked)  # (L, B)
            if self.couple_batch:
                pick = divergence.mean(-1).argmax().expand(rows)  # 4.x: the batch mean decides for every row
            else:
                pick = divergence.argmax(0)  # (B,) each row its own farthest layer
            base = stacked[pick, torch.arange(rows, device=scores.device)]  # (B, V)
        self.chosen.append(torch.tensor(self.candidates, device=pick.device)[pick])
        return relative_top_contrast(scores, base)

    def __repr__(self) -> str:
        return f"DolaContrast(candidates={self.candidates}, couple_batch={self.couple_batch})"

    def chosen_layers(self) -> torch.Tensor:
        """(B, N) the premature layer each row contrasted with at each step."""
        return torch.stack(self.chosen, dim=1)


def dola_decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
                generator: torch.Generator | None = None, tokenizer: Any = None, prompt_embeds: Any = None,
                tf4_batch: bool = False) -> GenerationResult:
    """DoLa decoding, greedy or sampled (`p.do_sample`), on checked, left-padded prompts.

    Args:
        input_ids: (B, T) prompt ids; attention_mask: (B, T) (as `loop.prepare_call` returns them).
        p: resolved parameters with `dola_layers` set (checked by `dola_layers.check_dola`).
        generator: RNG for sampling (None: torch's global RNG, consumed as 4.x's generate consumes it).
        tokenizer: needed only for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds, else None.
        tf4_batch: apply transformers 4.x's batch-coupled rules (module docstring); False: rows independent.

    Returns:
        GenerationResult; `extras["dola_premature_layers"]` is (B * n, N) the premature layer of each step.

    Raises:
        ValueError: before any forward, for layer indices outside the model or a model DoLa cannot read.
    """
    candidates = check_dola_model(model, p.dola_layers)
    prompt_len = input_ids.shape[1]
    state = init_state(input_ids, attention_mask, p.max_new_tokens, p.pad_token_id)
    if prompt_embeds is not None:
        state.prompt_embeds, state.visible_start = prompt_embeds.embeds, prompt_embeds.visible_start
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(p.num_return_sequences)
    if p.num_return_sequences > 1:  # 4.x expands the prompts first: every copy is its own row from the prefill on
        state = state.select_rows(rows)
        attention_mask = attention_mask.index_select(0, rows)
    kv = KVCache(p.cache, model, p.max_cache_len or prompt_len + p.max_new_tokens)
    prompt_start = (attention_mask == 0).sum(-1)  # (B,) left-padding slots per row
    skip_padding = state.padded and not tf4_batch  # 4.x's repetition penalty counts the pad tokens
    built = build_processors(p, prompt_len - state.visible_start, prompt_start if skip_padding else None, model,
                             torch.arange(rows.shape[0], device=rows.device))
    with PrematureTaps(decoder_layers(model), candidates) as taps:
        contrast = DolaContrast(model.get_output_embeddings(), taps, candidates, couple_batch=tf4_batch)
        result = decode_n_tokens(model, state, kv, p, ProcessorList([contrast, *built]), generator, tokenizer)
    result.extras["dola_premature_layers"] = contrast.chosen_layers()
    return result
