"""A forward pass on our cache that returns the last layer's hidden states beside the next-token logits.

Why a module of its own: contrastive search compares hidden states (the candidates' with the context's), and
DoLa reads them too; both need the same forward as the plain loop (slots, position ids, mask, cache: loop.py's
`Forward`), only with the hidden states kept. The last entry of `hidden_states` is the model's final,
normalised hidden state (after the last norm, the input of the LM head), as transformers 4.x's contrastive
search reads it.
"""

from __future__ import annotations

import torch

from ..loop import Forward
from ..state import DecodeState


class HiddenForward(Forward):
    """`Forward` that also returns the final hidden states of the slots it was asked for."""

    def step(self, state: DecodeState, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model on the slots [start, end) (all of [0, end) again without a cache).

        Returns:
            (logits (B, V) float32 of the last slot, hidden (B, end - start, H) in the model's dtype).
        """
        out = self.outputs(state, start, end, output_hidden_states=True)
        hidden = out.hidden_states[-1][:, -(end - start):]  # no cache: the recomputed prefix is dropped
        return out.logits[:, -1].to(dtype=torch.float32, copy=True), hidden
