"""Generation for an experiment: prompt pairs in, samples and honest speed numbers out.

Each batch of prompts is left-padded and handed to `decoding.generate` with a `torch.Generator` seeded
from (run seed, batch index), so a run's samples depend only on its config and seed, not on what ran
before it in the process. Timings are the loop's own: prefill (prompt forward + first token) and decode
(every later step), with CUDA synchronised at both ends. `prompts.warmup_batches` first batches run once
untimed before (compilation and autotuning then stay out of tokens/s; experiment=speed warms up one).

`generate_continuations_sweep` does the same for several decoding configurations at once, through
`decoding.generate_sweep`: one batch, one prefill of each prompt, each configuration with the generator its
run alone would get, so each returned `GenerationRun` holds exactly the samples `generate_continuations`
gives for that configuration. Its speed numbers are shares of the shared batch (see `GenerationRun`).
The batched sweep launcher (experiments/batched_sweep.py) runs it ahead of a sweep's jobs and leaves each
job's result here (`stash_precomputed`), where the job's `run` finds it instead of generating, and in the job's
folder (`save_shared`, until the job has finished), so that a rerun after a crash finds it there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

import decoding
from experiments.faults import failpoint

log = logging.getLogger(__name__)


@dataclass
class GenerationRun:
    """Samples (one dict per generated continuation) and summed timings of all batches.

    A configuration generated alone owns its timings. One of a batched sweep of C configurations
    (`sweep_configurations` = C) gets 1/C of each shared batch's prefill and decode seconds, so its
    tokens/s is the shared batch's throughput; its time to first token is the shared prefill's whole time
    (every configuration waited for it); `sweep_*` hold the whole shared batches' tokens and seconds.
    """

    samples: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0  # real (unpadded) prompt tokens prefilled
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    new_tokens: int = 0
    decode_tokens: int = 0  # tokens produced by decode steps (the first token of a row belongs to prefill)
    batches: int = 0
    ttft: list[float] = field(default_factory=list)
    sweep_configurations: int = 1  # configurations that shared each batch (1: generated alone)
    sweep_new_tokens: int = 0  # all configurations' new tokens in the shared batches
    sweep_seconds: float = 0.0  # the shared batches' whole prefill + decode seconds
    # speculative decoding only (None otherwise): proposals kept / offered and target forwards (row-passes),
    # summed over rows and batches, so the rates below are over the whole run, not a mean of batch rates
    accepted_tokens: int | None = None
    proposed_tokens: int | None = None
    target_forwards: int | None = None

    def speed_metrics(self) -> dict[str, float]:
        def rate(n: float, seconds: float) -> float:
            return n / seconds if seconds > 0 else float("nan")

        metrics = {
            "speed/prefill_tok_s": rate(self.prompt_tokens, self.prefill_seconds),
            "speed/decode_tok_s": rate(self.decode_tokens, self.decode_seconds),
            "speed/tok_s": rate(self.new_tokens, self.prefill_seconds + self.decode_seconds),
            "speed/ttft_s": sum(self.ttft) / len(self.ttft) if self.ttft else float("nan"),
            "speed/new_tokens": float(self.new_tokens),
            "speed/sweep_configurations": float(self.sweep_configurations),
        }
        if self.sweep_configurations > 1:
            metrics["speed/sweep_tok_s"] = rate(self.sweep_new_tokens, self.sweep_seconds)
        if self.proposed_tokens is not None:  # NaN (null, "not measurable") when nothing was proposed
            metrics["speed/acceptance_rate"] = rate(self.accepted_tokens, self.proposed_tokens)
            metrics["speed/tokens_per_target_forward"] = rate(self.new_tokens, self.target_forwards)
        return metrics

    def add_batch(self, out: decoding.GenerationResult, chunk: Sequence[dict], mask: torch.Tensor, tokenizer: Any,
                  ttft: float) -> None:
        """Record one batch's result: its timings and one sample per row (a prompt's n samples are adjacent)."""
        n_per_prompt = out.sequences.shape[0] // len(chunk)
        self.batches += 1
        self.prompt_tokens += int(mask.sum())
        self.prefill_seconds += out.prefill_seconds
        self.decode_seconds += out.decode_seconds
        self.new_tokens += out.new_tokens
        self.decode_tokens += max(out.new_tokens - out.sequences.shape[0], 0)
        self.ttft.append(ttft)
        if out.proposed_tokens is not None:
            self.accepted_tokens = (self.accepted_tokens or 0) + int(out.accepted_tokens.sum())
            self.proposed_tokens = (self.proposed_tokens or 0) + int(out.proposed_tokens.sum())
            self.target_forwards = (self.target_forwards or 0) + int(out.target_forwards.sum())
        lengths = out.new_token_mask.sum(-1).tolist()
        for row in range(out.sequences.shape[0]):
            pair = chunk[row // n_per_prompt]
            n = int(lengths[row])
            new_ids = out.new_token_ids[row, :n].tolist()
            self.samples.append({
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


def batch_generator(device: torch.device, seed: int, batch_index: int) -> torch.Generator:
    """The random stream of one prompt batch of a run: (run seed, batch index), whatever ran before."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_index)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"prompts.batch_size={batch_size} is not allowed: use an integer >= 1")


def warm_up(batches: int, pairs: Sequence[dict], batch_size: int, pad_id: int, model: Any, run_batch) -> None:
    """Run the first `batches` prompt batches once, untimed and thrown away, before the timed run: compilation,
    autotuning and first-touch allocation then land here, not in the run's tokens/s. `run_batch(ids, mask,
    generator)` generates one batch; its generator is not any timed batch's, so the samples stay the same."""
    if batches < 0:
        raise ValueError(f"prompts.warmup_batches={batches} is not allowed: use an integer >= 0")
    for start in list(range(0, len(pairs), batch_size))[:batches]:
        ids, mask = left_pad([p["prompt_ids"] for p in pairs[start:start + batch_size]], pad_id, model.device)
        run_batch(ids, mask, torch.Generator(device=model.device).manual_seed(0))


def generate_continuations(model: Any, tokenizer: Any, pairs: Sequence[dict], decoding_params: dict[str, Any],
                           cache: str = "dynamic", max_cache_len: int | None = None, batch_size: int = 8,
                           seed: int = 0, compile: bool | str = False, progress: bool = True,
                           warmup_batches: int = 0) -> GenerationRun:
    """Generate from every pair's `prompt_ids`; keep each sample beside its human continuation.

    `compile=True` (or "max-autotune") runs the decode step under torch.compile (needs cache="static").
    `warmup_batches` runs that many first batches once untimed before the timed run (`warm_up`).
    """
    _check_batch_size(batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    options = {"compile": compile} if compile else {}
    warm_up(warmup_batches, pairs, batch_size, pad_id, model, lambda ids, mask, generator: decoding.generate(
        model, ids, mask, generator=generator, tokenizer=tokenizer, cache=cache, max_cache_len=max_cache_len,
        **options, **decoding_params))
    result = GenerationRun()
    starts = range(0, len(pairs), batch_size)
    for batch_index, start in enumerate(tqdm(starts, desc="generation", unit="batch", disable=not progress)):
        chunk = pairs[start:start + batch_size]
        ids, mask = left_pad([p["prompt_ids"] for p in chunk], pad_id, model.device)
        out = decoding.generate(model, ids, mask, generator=batch_generator(model.device, seed, batch_index),
                                tokenizer=tokenizer, cache=cache, max_cache_len=max_cache_len, **options,
                                **decoding_params)
        result.add_batch(out, chunk, mask, tokenizer, ttft=out.prefill_seconds)
        failpoint("generation")
    return result


def generate_continuations_sweep(model: Any, tokenizer: Any, pairs: Sequence[dict],
                                 configs: Sequence[dict[str, Any]], cache: str = "dynamic",
                                 max_cache_len: int | None = None, batch_size: int = 8, seed: int = 0,
                                 compile: bool | str = False, progress: bool = True,
                                 warmup_batches: int = 0) -> list[GenerationRun]:
    """`generate_continuations` for several decoding configurations in one batch per prompt batch.

    The configurations may differ only in `decoding.processors.rows.ROW_PARAMETERS` (do_sample,
    temperature, top_k, top_p, min_p, top_h, guidance_scale, watermarking_config, top_n_sigma, xtc_*, dry_*
    but the breakers, mirostat*, dynatemp_*, presence / frequency penalties, typical_p, epsilon_cutoff,
    eta_cutoff); otherwise
    `decoding.generate_sweep` raises ValueError. Returns one
    GenerationRun per configuration, in order; run c's samples equal
    `generate_continuations(..., configs[c], ...)`'s, its timings are its shares of the shared batches.
    """
    _check_batch_size(batch_size)
    if not configs:
        raise ValueError("configs=[] is not allowed: give at least one decoding configuration")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    options = {"compile": compile} if compile else {}
    warm_up(warmup_batches, pairs, batch_size, pad_id, model, lambda ids, mask, generator: decoding.generate_sweep(
        model, ids, mask, configs=[dict(c) for c in configs], generators=[generator] * len(configs),
        tokenizer=tokenizer, cache=cache, max_cache_len=max_cache_len, **options))
    runs = [GenerationRun(sweep_configurations=len(configs)) for _ in configs]
    starts = range(0, len(pairs), batch_size)
    desc = f"batched generation ({len(configs)} configurations)"
    for batch_index, start in enumerate(tqdm(starts, desc=desc, unit="batch", disable=not progress)):
        chunk = pairs[start:start + batch_size]
        ids, mask = left_pad([p["prompt_ids"] for p in chunk], pad_id, model.device)
        generators = [batch_generator(model.device, seed, batch_index) for _ in configs]  # each as if alone
        outs = decoding.generate_sweep(model, ids, mask, configs=[dict(c) for c in configs], generators=generators,
                                       tokenizer=tokenizer, cache=cache, max_cache_len=max_cache_len, **options)
        for run, out in zip(runs, outs):
            shared = out.extras["sweep"]
            run.add_batch(out, chunk, mask, tokenizer, ttft=shared["prefill_seconds"])
            run.sweep_new_tokens += shared["new_tokens"]
            run.sweep_seconds += shared["prefill_seconds"] + shared["decode_seconds"]
        failpoint("shared_generation")
        failpoint("generation")
    return runs


# A shared generation also goes to disk, one file in each job's folder, until that job has finished: a sweep
# killed after a long shared batch (or a job of it) then reuses the batch on rerun instead of generating again.
SHARED_FILE = "shared_generation.json"


def save_shared(folder: Path, fingerprint: str, run: GenerationRun) -> None:
    """`run` (one job's part of a shared generation) into `folder`, written whole or not at all."""
    from experiments.logging import write_atomic

    write_atomic(folder / SHARED_FILE, json.dumps({"fingerprint": fingerprint, "run": asdict(run)}))


def load_shared(folder: Path, fingerprint: str) -> GenerationRun | None:
    """The job's saved part of a shared generation, if `folder` holds one for this config; else None (a file of
    another config, or one that cannot be read, is ignored: the job then generates as it would alone)."""
    try:
        data = json.loads((folder / SHARED_FILE).read_text(encoding="utf-8"))
        if data.get("fingerprint") != fingerprint:
            return None
        return GenerationRun(**data["run"])
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # a broken or foreign file
        log.warning(f"{folder / SHARED_FILE} is not a shared generation of this job ({err}); generating instead")
        return None


def drop_shared(folder: Path) -> None:
    """The job finished: its samples are in samples.jsonl, the saved shared part is no longer needed."""
    (folder / SHARED_FILE).unlink(missing_ok=True)


# Generation done ahead of a sweep's jobs by the batched launcher, keyed by each job's config fingerprint
# (experiments.run.fingerprint); the job's `run` uses it instead of generating. In-process only. A task=lm_eval
# job's entry is its part of a shared evaluation (experiments.lm_eval_batched.SharedEvaluation).
_precomputed: dict[str, Any] = {}


def stash_precomputed(key: str, run: Any) -> None:
    _precomputed[key] = run


def precomputed_run(key: str) -> Any:
    return _precomputed.get(key)


def drop_precomputed(key: str) -> None:
    _precomputed.pop(key, None)
