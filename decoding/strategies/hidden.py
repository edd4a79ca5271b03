"""A forward pass on our cache that returns the last layer's hidden states beside the next-token logits.

Why a module of its own: contrastive search compares hidden states (the candidates' with the context's), and
DoLa reads them too; both need the same forward as the plain loop (slots, position ids, mask, cache: loop.py's
`Forward`), only with the hidden states kept. The last entry of `hidden_states` is the model's final,
normalised hidden state (after the last norm, the input of the LM head), as transformers 4.x's contrastive
search reads it.

Contrastive search needs the logits of one candidate per row out of k, so its candidate forward may skip the
LM head (`step(..., logits=False)`: the head gets an empty slice) and apply it to the chosen rows afterwards
(`head_logits`). At the vocabulary sizes of real models the head is a large part of a small model's step
(SmolLM2: 28M of its 135M parameters). That is only the model's own logits when the model does nothing after
its head (no soft-capping, no scaling): `check_head` compares the two on the prompt's forward and keeps the
full forward otherwise.
"""

from __future__ import annotations

import torch

from ..loop import Forward
from ..state import DecodeState


class HiddenForward(Forward):
    """`Forward` that also returns the final hidden states of the slots it was asked for."""

    head_alone = False  # `check_head` found logits == head(final hidden state)

    def step(self, state: DecodeState, start: int, end: int, logits: bool = True
             ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run the model on the slots [start, end) (all of [0, end) again without a cache).

        Args:
            logits: False skips the LM head (only after `check_head` found it alone); the logits are then None.

        Returns:
            (logits (B, V) float32 of the last slot or None, hidden (B, end - start, H) in the model's dtype).
        """
        skip = None
        if not logits:
            skip = self.model.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0][:, :0],))
        try:
            out = self.outputs(state, start, end, output_hidden_states=True)
        finally:
            if skip is not None:
                skip.remove()
        hidden = out.hidden_states[-1][:, -(end - start):]  # no cache: the recomputed prefix is dropped
        return (out.logits[:, -1].to(dtype=torch.float32, copy=True) if logits else None), hidden

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(R, V) float32: the LM head on final hidden states (R, H)."""
        return self.model.get_output_embeddings()(hidden[:, None])[:, -1].to(torch.float32)

    def check_head(self, logits: torch.Tensor, hidden: torch.Tensor) -> bool:
        """Whether the model's logits (R, V) are its LM head on the final hidden states (R, H), and nothing after."""
        head = self.model.get_output_embeddings()
        self.head_alone = isinstance(head, torch.nn.Linear) and torch.allclose(
            self.head_logits(hidden), logits, rtol=1e-5, atol=1e-5)
        return self.head_alone
