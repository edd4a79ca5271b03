"""What `generate` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class GenerationResult:
    """Outputs of one generate call.

    Attributes:
        sequences: (B * n, T + N) prompt + new tokens, laid out as `model.generate` lays them out: the
            `num_return_sequences` rows of a prompt adjacent, `pad_token_id` after a row finishes.
        token_logprobs: (B * n, N) log-probability of each chosen token under the processed distribution
            (after temperature / truncation / penalties): the distribution it was drawn from. 0 after a row ends.
        token_logprobs_raw: (B * n, N) the same under the raw model distribution (softmax of the logits).
        new_token_mask: (B * n, N) True where the token was generated before the row finished (EOS included).
        finish_reasons: one of "eos", "stop_string", "stopping_criteria" (a user criterion), "max_time", "length"
            per row.
        prompt_length: T, the padded prompt length (new tokens start at this column).
        prefill_seconds: wall time of the prompt's forward pass and first token.
        decode_seconds: wall time of the remaining steps.
        new_tokens: number of generated tokens, summed over rows (EOS counted, padding after it not).
        steps: forward passes after prefill.
        sequences_scores: (B * n,) beam scores (beam search only).
        scores: with `output_scores=True`, one (R, V) float32 tensor per step: the processed scores the token
            was chosen from (beam search: the processed log-probabilities of every beam), R the decoded rows
            (B * n; B * num_beams for beam search), laid out as `model.generate(..., output_scores=True)`.
        logits: with `output_logits=True`, the raw logits of every step, (R, V) each, as generate's `logits`.
        beam_indices: (B * n, N) int32, beam search with `output_scores` or `output_logits`: the row of
            `scores[t]` each returned hypothesis continued at step t, -1 after it ended (generate's).
        accepted_tokens, proposed_tokens, target_forwards: (B * n,) long, speculative decoding only: proposals
            each row kept, proposals it was offered, and the target forward passes it took part in (prefill
            included) before it finished.
        mbr_candidates, mbr_expected_utility, mbr_chosen, mbr_seconds: MBR decoding only
            (decoding/strategies/mbr.py): the sampling call's result with all B * mbr_candidates candidates,
            (B, mbr_candidates) float64 expected utility of each, (B, r) long index of each returned row among
            its prompt's candidates (best first), and the wall time of scoring and selection.
    """

    sequences: torch.Tensor
    token_logprobs: torch.Tensor
    token_logprobs_raw: torch.Tensor
    new_token_mask: torch.Tensor
    finish_reasons: list[str]
    prompt_length: int
    prefill_seconds: float
    decode_seconds: float
    new_tokens: int
    steps: int
    sequences_scores: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    beam_indices: torch.Tensor | None = None
    accepted_tokens: torch.Tensor | None = None
    proposed_tokens: torch.Tensor | None = None
    target_forwards: torch.Tensor | None = None
    mbr_candidates: "GenerationResult | None" = None
    mbr_expected_utility: torch.Tensor | None = None
    mbr_chosen: torch.Tensor | None = None
    mbr_seconds: float | None = None
    extras: dict = field(default_factory=dict)

    @property
    def new_token_ids(self) -> torch.Tensor:
        """(B * n, N) only the generated part of `sequences`."""
        return self.sequences[:, self.prompt_length:]

    def transition_scores(self, normalize_logits: bool = False) -> torch.Tensor:
        """(B * n, N') each generated token's score, as `model.compute_transition_scores(sequences, scores,
        beam_indices, normalize_logits)` gives it (decoding/transition_scores.py). Needs `output_scores=True`."""
        if self.scores is None:
            raise ValueError("transition_scores() needs the per-step scores: call generate with output_scores=True")
        from .transition_scores import transition_scores

        return transition_scores(self.sequences, self.scores, self.beam_indices, normalize_logits)

    @property
    def acceptance_rate(self) -> float:
        """Kept proposals over offered ones, all rows together (speculative decoding; NaN when none was offered)."""
        if self.proposed_tokens is None:
            raise ValueError("acceptance_rate is defined for speculative decoding only (a proposer was not given)")
        proposed = int(self.proposed_tokens.sum())
        return int(self.accepted_tokens.sum()) / proposed if proposed else float("nan")

    @property
    def tokens_per_target_forward(self) -> float:
        """Generated tokens per target forward pass, all rows together (speculative decoding only)."""
        if self.target_forwards is None:
            raise ValueError("tokens_per_target_forward is defined for speculative decoding only")
        forwards = int(self.target_forwards.sum())
        return self.new_tokens / forwards if forwards else float("nan")

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens generated after the first one, per second of decode time."""
        rows = self.sequences.shape[0]
        return max(self.new_tokens - rows, 0) / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        total = self.prefill_seconds + self.decode_seconds
        return self.new_tokens / total if total > 0 else float("nan")
