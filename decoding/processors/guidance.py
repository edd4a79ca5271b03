"""Classifier-free guidance (Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance").

generate's `guidance_scale` (with `negative_prompt_ids` / `negative_prompt_attention_mask`) mixes two
next-token distributions: the conditional one (the batch's own scores) and an unconditional one, from the
same model run on a second prompt. Both are log-softmaxed, then

    guided = guidance_scale * (conditional - unconditional) + unconditional

so 1 is no guidance (generate then adds no processor at all, and neither do we), > 1 pushes away from
the unconditional prompt, < 1 (0 or negative included, which generate allows) towards it. The default
unconditional prompt is the last token of each row's prompt; a negative prompt replaces it.

The unconditional branch is a second set of rows with its own KV cache, owned here (`UnconditionalBranch`),
with the loop's three concepts kept explicit (decoding/loop.py): cache position (the slot written), position
ids (`cumsum(mask) - 1`) and the attention mask. At the first call it prefills its prompt; at every later
call it appends the token each conditional row chose last (`input_ids[:, -1]`) and runs one slot, like
transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor`. Its cache has the call's kind (none /
dynamic / static); transformers uses a dynamic cache whenever `use_cache`, which computes the same.

Where we differ from, or go beyond, transformers (5.24):
- Position ids: transformers passes none to the unconditional forward, so the model counts positions by
  slot. For an unpadded negative prompt that is `cumsum(mask) - 1`, the same; for a left-padded one we use
  `cumsum(mask) - 1`, so each row's first real token is position 0, as for the conditional rows.
- More rows than prompts: generate's negative prompt must have exactly one row per batch row, so with
  `num_return_sequences > 1` or beam search it fails on a shape mismatch. Here each prompt's negative row
  is repeated for that prompt's rows (`repeat_interleave`: the row layout of the expanded batch).
- Beam search: transformers never reorders the unconditional context with the beams: row i of the
  branch keeps its own history and is fed whatever token the beam now in row i chose. This processor holds
  its own state and is never reordered by beam.py, so it reproduces generate's tokens.
- The unconditional logits stay in the model's dtype through their log-softmax, as in transformers (the
  conditional scores are float32); the mixture is float32.

Shapes: `input_ids` (R, T) the conditional rows so far, `scores` (R, V) float32.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from ..cache import KVCache
from ..checks import check as _check, is_finite_real as _is_finite_number
from ..state import DecodeState, init_state
from .base import LogitsProcessor

if TYPE_CHECKING:  # params.py imports the package for the order: no runtime import back
    from ..params import GenerationParams


def guidance_active(guidance_scale: float | None) -> bool:
    """generate adds the guidance processor only for a scale that is set and not 1."""
    return guidance_scale is not None and guidance_scale != 1


class UnconditionalBranch:
    """The unconditional rows: their own token buffer, attention mask, position ids and KV cache.

    Args:
        model: the model (the same one as the conditional rows, as in generate).
        cache: "none" | "dynamic" | "static", the call's cache kind.
        max_new_tokens: how many steps the branch may run (sizes the static cache).
        prompt_ids: (B, L) negative prompt, or None for the last token of each conditional row.
        prompt_mask: (B, L) its attention mask (1 real, 0 left padding), or None for all ones.
        prompt_rows: (R,) the prompt each conditional row continues; row i of the branch starts from
            negative prompt row `prompt_rows[i]`. None: one row per prompt, or the prompt's rows adjacent
            (R = B * k, as generate expands num_return_sequences and beams).
    """

    def __init__(self, model: Any, cache: str, max_new_tokens: int, prompt_ids: torch.Tensor | None = None,
                 prompt_mask: torch.Tensor | None = None, prompt_rows: torch.Tensor | None = None):
        self.model = model
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.prompt_ids = prompt_ids
        self.prompt_mask = prompt_mask
        self.prompt_rows = prompt_rows
        self.kv: KVCache | None = None
        self.state: DecodeState | None = None  # (R, L + N) slots: ids, mask, position ids (decoding/state.py)
        self.start = 0  # cache position of the first slot the next forward writes

    def _rows_of(self, rows: int) -> torch.Tensor:
        """(R,) negative prompt row of each conditional row."""
        if self.prompt_rows is not None:
            return self.prompt_rows
        prompts = self.prompt_ids.shape[0]
        if rows % prompts:
            raise ValueError(f"negative_prompt_ids has {prompts} rows for {rows} rows: give one row per prompt")
        return torch.arange(prompts).repeat_interleave(rows // prompts)

    def _prefill_inputs(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, L) ids and mask of the branch's prompt, one row per conditional row."""
        if self.prompt_ids is None:
            ids = input_ids[:, -1:]  # (R, 1): the last prompt token of each row (never padding: left padding)
            return ids, torch.ones_like(ids)
        rows = self._rows_of(input_ids.shape[0]).to(input_ids.device)
        ids = self.prompt_ids.to(input_ids.device).index_select(0, rows)
        mask = torch.ones_like(ids) if self.prompt_mask is None else self.prompt_mask.to(input_ids.device)
        if self.prompt_mask is not None:
            mask = mask.long().index_select(0, rows)
        return ids, mask

    def _start(self, input_ids: torch.Tensor) -> None:
        ids, mask = self._prefill_inputs(input_ids)
        self.state = init_state(ids, mask, self.max_new_tokens, pad_token_id=0)  # pad slots: id 0, never attended
        self.kv = KVCache(self.cache, self.model, self.state.tokens.shape[1])

    def _append(self, tokens: torch.Tensor) -> None:
        """Slot `length` gets each row's newest conditional token (R,), one position after the last."""
        if self.state.length >= self.state.tokens.shape[1]:
            raise ValueError(f"the unconditional branch ran past its {self.max_new_tokens} steps "
                             f"(max_new_tokens={self.max_new_tokens}); build a new processor for a new call")
        self.state.append(tokens)

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(R, V) the unconditional next-token logits (model dtype) after the conditional rows `input_ids`."""
        if self.state is None:
            self._start(input_ids)
        else:
            self._append(input_ids[:, -1])
        state, end = self.state, self.state.length
        start = self.start if self.kv.enabled else 0  # no cache: the whole sequence again
        self.kv.before_forward(start)
        # No logits_to_keep: generate's unconditional call computes every position's logits, and the same
        # matrix shapes keep the same rounding.
        out = self.model(
            input_ids=state.tokens[:, start:end],
            attention_mask=state.model_mask(end),
            position_ids=state.position_ids[:, start:end],
            cache=self.kv.model_cache,
            use_cache=self.kv.enabled,
        )
        self.start = end
        return out.logits[:, -1]


def guide(scores: torch.Tensor, unconditional_logits: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """scale * (log_softmax(scores) - log_softmax(unconditional)) + log_softmax(unconditional): (R, V)."""
    conditional = torch.log_softmax(scores, dim=-1)
    unconditional = torch.log_softmax(unconditional_logits, dim=-1)
    return scale * (conditional - unconditional) + unconditional


class ClassifierFreeGuidance(LogitsProcessor):
    """generate's `guidance_scale`: the scores mixed with an unconditional branch's (see the module docstring).

    Args:
        guidance_scale: a finite number != 1.
        branch: the unconditional rows (`UnconditionalBranch`), one per conditional row.
    """

    def __init__(self, guidance_scale: float, branch: UnconditionalBranch):
        if not guidance_active(guidance_scale) or not _is_finite_number(guidance_scale):
            raise ValueError(f"guidance_scale={guidance_scale!r} is not allowed here: use a finite number other "
                             "than 1 (1 means no guidance: leave the processor out)")
        self.guidance_scale = guidance_scale
        self.branch = branch

    def __call__(self, input_ids, scores):
        return guide(scores, self.branch(input_ids), self.guidance_scale)

    def __repr__(self) -> str:
        # The branch holds the model: leave it out (repr compares processors across sweep configurations,
        # whose negative prompts check_batchable has already found equal).
        return f"ClassifierFreeGuidance(guidance_scale={self.guidance_scale!r}, cache={self.branch.cache!r})"


class RowGuidance(LogitsProcessor):
    """Per-row guidance for batched sweeps: row r mixed with `guidance_scale[r]`, or left as it is.

    Rows whose configuration has no guidance keep their raw scores exactly (no log-softmax); the
    unconditional branch runs for the guided rows only.

    Args:
        guidance_scale: (R, 1) float32, one scale per row (1.0 where unused).
        rows: (R,) bool, the guided rows.
        branch: the unconditional rows of the guided rows, in row order.
    """

    def __init__(self, guidance_scale: torch.Tensor, rows: torch.Tensor, branch: UnconditionalBranch):
        self.guidance_scale = guidance_scale
        self.rows = rows
        self.index = rows.nonzero().flatten()  # (R_g,) the guided rows
        self.branch = branch

    def __call__(self, input_ids, scores):
        index = self.index.to(scores.device)
        guided = guide(scores.index_select(0, index), self.branch(input_ids.index_select(0, index)),
                       self.guidance_scale.index_select(0, index))
        return scores.index_copy(0, index, guided)


def row_guidance(built: list, rows_per_config: int, prompt_rows: torch.Tensor, device) -> RowGuidance:
    """The per-row version of the configurations' guidance processors (None where a configuration has none).

    Args:
        built: one `ClassifierFreeGuidance` or None per configuration, in batch order.
        prompt_rows: (R,) the prompt of each row of the whole batch (R = configurations * rows_per_config).
    """
    used = [p for p in built if p is not None]
    scales = torch.tensor([p.guidance_scale if p is not None else 1.0 for p in built],
                          dtype=torch.float32, device=device).repeat_interleave(rows_per_config)[:, None]
    rows = torch.tensor([p is not None for p in built], device=device).repeat_interleave(rows_per_config)
    template = used[0].branch
    branch = UnconditionalBranch(template.model, template.cache, template.max_new_tokens, template.prompt_ids,
                                 template.prompt_mask, prompt_rows.to(device)[rows])
    return RowGuidance(scales, rows, branch)


def build_guidance(p: GenerationParams, model: Any, prompt_rows: torch.Tensor | None) -> ClassifierFreeGuidance | None:
    """The processor `p` asks for (None without guidance), checked against the batch before any forward pass.

    Args:
        model: the model the unconditional rows run on.
        prompt_rows: (R,) the prompt each row continues (covering every prompt), or None for one row per prompt.
    """
    if not guidance_active(p.guidance_scale):
        return None
    if model is None:
        raise ValueError(f"guidance_scale={p.guidance_scale!r} needs the model for its unconditional rows: "
                         "pass model= to build_processors")
    ids = p.negative_prompt_ids
    if ids is not None and prompt_rows is not None:
        prompts = int(prompt_rows.max()) + 1
        _check(ids.shape[0] == prompts, "negative_prompt_ids", ids,
               f"give one row per prompt: {prompts} rows (it has {ids.shape[0]})")
    return ClassifierFreeGuidance(p.guidance_scale, UnconditionalBranch(
        model, p.cache, p.max_new_tokens, ids, p.negative_prompt_attention_mask, prompt_rows))


def _is_integer_tensor(value: Any, dims: int) -> bool:
    return (isinstance(value, torch.Tensor) and value.dim() == dims and not value.is_floating_point()
            and not value.is_complex() and value.dtype != torch.bool)


def check_guidance(p: GenerationParams) -> None:
    """guidance_scale, negative_prompt_ids and negative_prompt_attention_mask, before any forward pass.

    transformers accepts any guidance_scale (NaN too, which turns every score into NaN); we allow every finite
    number: 1 is no guidance, < 1 (0 and negative values included) guides towards the negative prompt. The
    number of rows (one per prompt) and the vocabulary are checked where the batch and the model are known
    (`build_guidance`, `param_checks.check_vocabulary`).
    """
    scale, ids, mask = p.guidance_scale, p.negative_prompt_ids, p.negative_prompt_attention_mask
    _check(scale is None or _is_finite_number(scale), "guidance_scale", scale,
           "use a finite number (1 or None: no guidance; > 1 away from the negative prompt, < 1 towards it)")
    _check(ids is None or (_is_integer_tensor(ids, 2) and ids.shape[0] >= 1 and ids.shape[1] >= 1
                           and bool((ids >= 0).all())), "negative_prompt_ids", ids,
           "use a (B, L) integer tensor of token ids (>= 0), one row per prompt, L >= 1, or None")
    if mask is not None:
        _check(ids is not None, "negative_prompt_attention_mask", mask,
               "give it together with negative_prompt_ids (the default unconditional prompt, the last prompt "
               "token, has no mask to give), or None")
        _check(isinstance(mask, torch.Tensor) and mask.dim() == 2 and not mask.is_complex(),
               "negative_prompt_attention_mask", mask, "use a (B, L) tensor of 0 and 1, or None")
        _check(tuple(mask.shape) == tuple(ids.shape), "negative_prompt_attention_mask", mask,
               f"use the shape of negative_prompt_ids, {tuple(ids.shape)} (it has {tuple(mask.shape)})")
        _check(bool(((mask == 0) | (mask == 1)).all()), "negative_prompt_attention_mask", mask,
               "use 0 (padding) and 1 (token) only")
        _check(bool((mask[:, -1] == 1).all()), "negative_prompt_attention_mask", mask,
               "pad on the left: every row's last slot must be a token (1), as for the prompt")
    if (ids is not None or mask is not None) and not guidance_active(scale):
        # generate ignores it silently; a warning, as for the other settings a mode never reads
        warnings.warn(f"negative_prompt_ids is only read by classifier-free guidance; guidance_scale={scale!r} "
                      "ignores it, as generate does", UserWarning, stacklevel=5)
