"""Generation for an experiment: prompt pairs in, samples and honest speed numbers out.

Each batch of prompts is left-padded and handed to `decoding.generate` with a `torch.Generator` seeded
from (run seed, batch index), so a run's samples depend only on its config and seed, not on what ran
before it in the process. Timings are the loop's own: prefill (prompt forward + first token) and decode
(every later step), with CUDA synchronised at both ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import decoding


@dataclass
class GenerationRun:
    """Samples (one dict per generated continuation) and summed timings of all batches."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0  # real (unpadded) prompt tokens prefilled
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    new_tokens: int = 0
    decode_tokens: int = 0  # tokens produced by decode steps (the first token of a row belongs to prefill)
    batches: int = 0
    ttft: list[float] = field(default_factory=list)

    def speed_metrics(self) -> dict[str, float]:
        def rate(n: float, seconds: float) -> float:
            return n / seconds if seconds > 0 else float("nan")

        return {
            "speed/prefill_tok_s": rate(self.prompt_tokens, self.prefill_seconds),
            "speed/decode_tok_s": rate(self.decode_tokens, self.decode_seconds),
            "speed/tok_s": rate(self.new_tokens, self.prefill_seconds + self.decode_seconds),
            "speed/ttft_s": sum(self.ttft) / len(self.ttft) if self.ttft else float("nan"),
            "speed/new_tokens": float(self.new_tokens),
        }


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask of token lists, left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def generate_continuations(model: Any, tokenizer: Any, pairs: Sequence[dict], decoding_params: dict[str, Any],
                           cache: str = "dynamic", max_cache_len: int | None = None, batch_size: int = 8,
                           seed: int = 0, progress: bool = True) -> GenerationRun:
    """Generate from every pair's `prompt_ids`; keep each sample beside its human continuation."""
    if batch_size < 1:
        raise ValueError(f"prompts.batch_size={batch_size} is not allowed: use an integer >= 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = dict(decoding_params)
    n_per_prompt = int(params.get("num_return_sequences") or 1)
    result = GenerationRun()
    starts = range(0, len(pairs), batch_size)
    for batch_index, start in enumerate(tqdm(starts, desc="generation", unit="batch", disable=not progress)):
        chunk = pairs[start:start + batch_size]
        ids, mask = left_pad([p["prompt_ids"] for p in chunk], pad_id, model.device)
        generator = torch.Generator(device=model.device).manual_seed(seed * 1_000_003 + batch_index)
        out = decoding.generate(model, ids, mask, generator=generator, tokenizer=tokenizer, cache=cache,
                                max_cache_len=max_cache_len, **params)
        result.batches += 1
        result.prompt_tokens += int(mask.sum())
        result.prefill_seconds += out.prefill_seconds
        result.decode_seconds += out.decode_seconds
        result.new_tokens += out.new_tokens
        result.decode_tokens += max(out.new_tokens - out.sequences.shape[0], 0)
        result.ttft.append(out.prefill_seconds)
        lengths = out.new_token_mask.sum(-1).tolist()
        for row in range(out.sequences.shape[0]):
            pair = chunk[row // n_per_prompt]
            n = int(lengths[row])
            new_ids = out.new_token_ids[row, :n].tolist()
            result.samples.append({
                "doc_id": pair.get("doc_id"),
                "start": pair.get("start"),
                "prompt": pair["prompt"],
                "continuation": tokenizer.decode(new_ids, skip_special_tokens=True),
                "human": pair["continuation"],
                "token_ids": new_ids,
                "token_logprobs": [round(x, 6) for x in out.token_logprobs[row, :n].tolist()],
                "token_logprobs_raw": [round(x, 6) for x in out.token_logprobs_raw[row, :n].tolist()],
                "finish_reason": out.finish_reasons[row],
                "sequence_score": None if out.sequences_scores is None else float(out.sequences_scores[row]),
            })
    return result
