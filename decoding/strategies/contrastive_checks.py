"""Contrastive search's parameter checks (penalty_alpha, low_memory and what they combine with), no model needed.

Why refuse what transformers 4.x accepts: its `get_generation_mode` picks contrastive search only for
`penalty_alpha > 0`, `top_k > 1`, `do_sample=False` and `num_beams=1`, and otherwise drops penalty_alpha
without a word (sampling, beam search or greedy run instead). Here such a call fails and says which setting
to change. A leaf module (it imports decoding/checks.py and the guidance predicate only), so param_checks.py
calls it without an import cycle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..checks import check, is_plain_number
from ..processors.guidance import guidance_active

if TYPE_CHECKING:
    from ..params import GenerationParams


def check_contrastive_search(p: GenerationParams) -> None:
    """penalty_alpha in [0, 1] (None: off), low_memory a bool (None: off), and the combinations they need."""
    alpha = p.penalty_alpha
    check(alpha is None or (is_plain_number(alpha) and math.isfinite(alpha) and 0 <= alpha <= 1), "penalty_alpha",
          alpha, "use a number in [0, 1] (the weight of the degeneration penalty; 0 or None: no contrastive search)")
    check(p.low_memory is None or isinstance(p.low_memory, bool), "low_memory", p.low_memory,
          "use true, false or None (true: contrastive search runs its top_k candidates one at a time)")
    searching = alpha is not None and alpha > 0
    if p.low_memory and not searching:
        raise ValueError(f"low_memory={p.low_memory!r} is not allowed without contrastive search: only contrastive "
                         "search reads it (transformers 4.x's beam search refuses it too); set penalty_alpha in "
                         "(0, 1] with top_k >= 2, or low_memory=None")
    if not searching:
        return
    name = f"penalty_alpha={alpha!r}"
    if p.top_k is None or p.top_k < 2:
        raise ValueError(f"top_k={p.top_k!r} is not allowed with {name}: contrastive search needs top_k >= 2 "
                         "candidates to rank (transformers would run greedy decoding instead); set top_k >= 2, "
                         "or penalty_alpha=None for greedy decoding")
    refused = (
        (p.do_sample, "do_sample=True: transformers would sample and ignore penalty_alpha; contrastive search is "
                      "deterministic, so set do_sample=False, or penalty_alpha=None to sample"),
        (p.num_beams > 1, f"num_beams={p.num_beams}: transformers would run beam search and ignore penalty_alpha; "
                          "set num_beams=1 for contrastive search, or penalty_alpha=None for beam search"),
        (p.assistant_model is not None or p.prompt_lookup_num_tokens is not None or p.draft_layers is not None,
         "speculative decoding (assistant_model / prompt_lookup_num_tokens / draft_layers): contrastive search "
         "ranks k candidates per step and proposes nothing; run without a proposer"),
        (guidance_active(p.guidance_scale), f"guidance_scale={p.guidance_scale!r}: classifier-free guidance's "
                                            "unconditional rows are not advanced by contrastive search; set "
                                            "guidance_scale=None"),
        (p.compile, "compile=True: only the greedy / sampling decode step is compiled; set compile=False"),
    )
    for bad, why in refused:
        if bad:
            raise ValueError(f"{name} is not allowed with {why}")
