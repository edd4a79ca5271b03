"""Speculative decoding's parameter checks: the ones that need no model (`check_speculation`, from params.py's
validation) and the ones that read the target and the draft (`check_draft`, before any forward pass).

Each names the parameter, the value and what is allowed, like every check in decoding/ (checks.check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..checks import check, is_int, is_plain_number

if TYPE_CHECKING:
    from ..params import GenerationParams

SCHEDULES = ("constant", "heuristic", "heuristic_transient")
PROPOSERS = ("assistant_model", "prompt_lookup_num_tokens", "draft_layers")


def check_speculation(p: GenerationParams) -> None:
    """Types, ranges and combinations of the speculative settings (no model needed)."""
    check(p.prompt_lookup_num_tokens is None or (is_int(p.prompt_lookup_num_tokens) and p.prompt_lookup_num_tokens >= 1),
          "prompt_lookup_num_tokens", p.prompt_lookup_num_tokens, "use an integer >= 1 (tokens proposed per step), "
          "or None for no prompt lookup")
    check(p.max_matching_ngram_size is None or (is_int(p.max_matching_ngram_size) and p.max_matching_ngram_size >= 1),
          "max_matching_ngram_size", p.max_matching_ngram_size, "use an integer >= 1, or None (2, as generate)")
    check(p.draft_layers is None or (is_int(p.draft_layers) and p.draft_layers >= 1), "draft_layers", p.draft_layers,
          "use an integer >= 1 (the target's first L layers propose; transformers' assistant_early_exit), or None")
    check(is_int(p.num_assistant_tokens) and p.num_assistant_tokens >= 1, "num_assistant_tokens",
          p.num_assistant_tokens, "use an integer >= 1 (tokens the draft proposes per step)")
    check(p.num_assistant_tokens_schedule in SCHEDULES, "num_assistant_tokens_schedule",
          p.num_assistant_tokens_schedule, f"use one of {SCHEDULES}")
    check(p.assistant_confidence_threshold is None or (is_plain_number(p.assistant_confidence_threshold)
                                                       and 0 <= p.assistant_confidence_threshold < 1),
          "assistant_confidence_threshold", p.assistant_confidence_threshold,
          "use a number in [0, 1) (0 or None: the draft always proposes num_assistant_tokens)")
    check(p.assistant_model is None or callable(getattr(p.assistant_model, "forward", None)), "assistant_model",
          type(p.assistant_model).__name__, "use a transformers causal LM that shares the target's tokenizer")
    check(p.max_active_rows is None or (is_int(p.max_active_rows) and p.max_active_rows >= 1), "max_active_rows",
          p.max_active_rows, "use an integer >= 1 (rows decoded at once; waiting prompts take finished rows' "
          "places), or None for the whole batch at once")
    given = [name for name in PROPOSERS if getattr(p, name) is not None]
    if p.max_active_rows is not None and not given:
        raise ValueError(f"max_active_rows={p.max_active_rows} is not allowed without speculative decoding (a "
                         "proposer): only the speculative loop refills finished rows so far; leave it None")
    if len(given) > 1:
        raise ValueError(f"{given} are not allowed together: speculative decoding takes one proposer; give one of "
                         f"{list(PROPOSERS)}")
    if p.max_matching_ngram_size is not None and p.prompt_lookup_num_tokens is None:
        raise ValueError(f"max_matching_ngram_size={p.max_matching_ngram_size} is not allowed without "
                         "prompt_lookup_num_tokens: it sets the prompt lookup's n-gram size")
    if not given:
        return
    proposer = f"{given[0]}={_short(getattr(p, given[0]))}"
    refused = {
        "num_beams": (p.num_beams > 1, f"num_beams={p.num_beams}: speculative decoding verifies one sequence per "
                                       "row (greedy or sampling); use num_beams=1"),
        "guidance_scale": (p.guidance_scale not in (None, 1, 1.0), f"guidance_scale={p.guidance_scale}: the "
                           "unconditional rows would need their own speculation; run without a proposer"),
        "prefix_allowed_tokens_fn": (p.prefix_allowed_tokens_fn is not None, "prefix_allowed_tokens_fn: it is "
                                     "called per batch row, and verified blocks mix rows; run without a proposer"),
        "output_scores": (p.output_scores or p.output_logits, "output_scores / output_logits: per-step scores "
                          "are not collected under speculation; run without a proposer to get them"),
        "compile": (p.compile, "compile=True: the compiled step is single-token; verification writes k + 1 slots"),
    }
    for _, (bad, why) in refused.items():
        if bad:
            raise ValueError(f"{proposer} is not allowed with {why}")


def _short(value: Any) -> str:
    return type(value).__name__ if hasattr(value, "forward") else repr(value)


def check_draft(model: Any, p: GenerationParams) -> None:
    """Checks that read the models: a draft with the target's vocabulary, a layer count below the target's."""
    from ..params import vocab_size_of

    if p.draft_layers is not None:
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        check(p.draft_layers < layers, "draft_layers", p.draft_layers,
              f"use 1 <= draft_layers < {layers}, the target's layer count (the draft is its first L layers; "
              "transformers' assistant_early_exit)")
    draft = p.assistant_model
    if draft is None:
        return
    if draft is model:
        raise ValueError("assistant_model=<the target model itself> is not allowed: it would propose exactly what "
                         "it verifies at twice the cost; use draft_layers=L for self-speculation")
    target_vocab, draft_vocab = vocab_size_of(model), vocab_size_of(draft)
    check(target_vocab == draft_vocab, "assistant_model", type(draft).__name__,
          f"the draft's vocabulary has {draft_vocab} tokens, the target's {target_vocab}: use a draft with the "
          "target's tokenizer")
    target_config = model.config.get_text_config(decoder=True)
    draft_config = draft.config.get_text_config(decoder=True)
    for name in ("vocab_size", "bos_token_id", "eos_token_id"):
        a, b = getattr(target_config, name, None), getattr(draft_config, name, None)
        if a is not None and b is not None and a != b:
            raise ValueError(f"assistant_model={type(draft).__name__} is not allowed: its {name}={b!r} differs from "
                             f"the target's {name}={a!r}, so it uses another tokenizer; use a draft with the target's "
                             "tokenizer")
    check(draft.device == model.device, "assistant_model", f"on {draft.device}",
          f"put the draft on the target's device ({model.device})")
