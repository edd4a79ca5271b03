"""MBR decoding's parameter checks: the ones that need no model (`check_mbr`, from param_checks.validate) and
the ones that read the call (`check_mbr_call`: the tokenizer, the scorer's vocabulary), before any forward pass.

A leaf module (it imports only decoding/checks.py), so param_checks.py can call it without an import cycle.
Each error names the parameter, the value and what is allowed, like every check in decoding/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..checks import check, is_int

if TYPE_CHECKING:
    from ..params import GenerationParams

UTILITIES = ("chrf", "bleu", "embedding")
TEXT_UTILITIES = ("chrf", "bleu")  # scored on decoded text: they need the tokenizer


def check_mbr(p: GenerationParams) -> None:
    """Types, ranges and combinations of mbr_candidates / mbr_utility / mbr_scorer (no model needed)."""
    check(p.mbr_utility in UTILITIES, "mbr_utility", p.mbr_utility, f"use one of {list(UTILITIES)}")
    if p.mbr_candidates is None:
        if p.mbr_scorer is not None:
            raise ValueError(f"mbr_scorer={_short(p.mbr_scorer)} is not allowed without mbr_candidates: only MBR "
                             "decoding reads it; set mbr_candidates=n (>= 2), or mbr_scorer=None")
        return
    n = p.mbr_candidates
    check(is_int(n) and n >= 2, "mbr_candidates", n,
          "use an integer >= 2 (candidates drawn per prompt; each is scored against the others)")
    if p.mbr_scorer is not None:
        _check_scorer(p.mbr_utility == "embedding", p.mbr_scorer,
                      f"only mbr_utility='embedding' reads a scorer (mbr_utility={p.mbr_utility!r} scores text); "
                      "set mbr_utility='embedding', or mbr_scorer=None")
        _check_scorer(callable(getattr(p.mbr_scorer, "forward", None)), p.mbr_scorer,
                      "use a transformers causal LM with the generating model's vocabulary, or None (the model "
                      "itself)")
    strategy = f"mbr_candidates={n}"
    # MBR draws its candidates with the plain sampling loop; a second strategy would be silently dropped.
    refused = (
        (p.num_beams > 1 or p.num_beam_groups > 1,
         f"num_beams={p.num_beams} / num_beam_groups={p.num_beam_groups}: MBR draws its candidates by sampling; "
         "use num_beams=1"),
        (p.assistant_model is not None or p.prompt_lookup_num_tokens is not None or p.draft_layers is not None,
         "speculative decoding (assistant_model / prompt_lookup_num_tokens / draft_layers): MBR draws its "
         "candidates with the plain sampling loop; run without a proposer"),
        (p.penalty_alpha is not None and p.penalty_alpha > 0,
         f"penalty_alpha={p.penalty_alpha} (contrastive search): contrastive search is deterministic, MBR samples; "
         "set penalty_alpha=None"),
        (p.dola_layers is not None, f"dola_layers={p.dola_layers!r} (DoLa): MBR draws its candidates with the plain "
                                    "sampling loop; set dola_layers=None"),
        (p.amateur_model is not None or p.amateur_layers is not None,
         "amateur_model / amateur_layers (contrastive decoding): MBR draws its candidates with the plain sampling "
         "loop; set both to None"),
        (p.streamer is not None, "a streamer: it would stream the n candidates, not the chosen sequence; "
                                 "run without a streamer"),
    )
    for bad, why in refused:
        if bad:
            raise ValueError(f"{strategy} is not allowed with {why}")
    if not p.do_sample:
        raise ValueError(f"{strategy} is not allowed with do_sample=False: greedy decoding would draw the same "
                         f"candidate {n} times, so there would be nothing to choose from; set do_sample=True "
                         "(any sampling configuration)")
    if p.num_return_sequences > n:
        raise ValueError(f"num_return_sequences={p.num_return_sequences} is not allowed with {strategy}: MBR "
                         f"returns the best of the {n} candidates, so at most {n}; lower num_return_sequences "
                         "or raise mbr_candidates")


def check_mbr_call(model: Any, p: GenerationParams, tokenizer: Any) -> None:
    """Checks that read the call: a tokenizer for the text utilities, a scorer with the model's vocabulary."""
    from ..params import vocab_size_of

    if p.mbr_utility in TEXT_UTILITIES and tokenizer is None:
        raise ValueError(f"tokenizer=None is not allowed with mbr_utility={p.mbr_utility!r}: the candidates are "
                         "scored on their decoded text; pass the model's tokenizer, or use mbr_utility='embedding'")
    if p.mbr_utility in TEXT_UTILITIES:
        check(callable(getattr(tokenizer, "batch_decode", None)), "tokenizer", type(tokenizer).__name__,
              "use a transformers tokenizer (it needs batch_decode)")
    scorer = p.mbr_scorer
    if scorer is not None and scorer is not model:
        ours, theirs = vocab_size_of(model), vocab_size_of(scorer)
        _check_scorer(ours == theirs, scorer,
                      f"its vocabulary ({theirs} tokens) differs from the generating model's ({ours}); use a "
                      "scorer that shares the model's tokenizer, or mbr_scorer=None (the model itself)")


def _check_scorer(condition: bool, scorer: Any, allowed: str) -> None:
    if not condition:  # a model is named by its class, not its repr (pages of modules)
        raise ValueError(f"mbr_scorer={_short(scorer)} is not allowed: {allowed}")


def _short(value: Any) -> str:
    return type(value).__name__ if hasattr(value, "forward") else repr(value)
