"""A group of `task=lm_eval` sweep jobs evaluated once: the batched launcher's lm-eval side.

    python -m experiments.run -m task=lm_eval decoding=temperature decoding.temperature=0.5,1.0,1.5

The batched launcher (experiments/batched_sweep.py) groups jobs whose configs are equal but for the per-row
sampling parameters (`decoding.processors.rows.ROW_PARAMETERS`) and `decoding.name`. For a group of lm-eval jobs
(`task.lm_eval` without `task.generate`) it calls `evaluate_shared` once, before the group's first job runs: one
`SweepDecodelabLM` holds every job's decoding config, and one `simple_evaluate` per job (`lm.use(i)`) reads the
answers that the first one generated for all of them (one `decoding.generate_sweep` per batch: one prefill) and
the log-likelihoods it scored once. Each job's `SharedEvaluation` is left in the process
(`experiments.generation.stash_precomputed`, under the job's fingerprint); the job's own run
(`experiments.lm_eval_run.lm_eval_metrics`) takes it instead of evaluating and writes its folder, metrics.json,
lm-eval samples and W&B run as alone. Configuration i's answers are those of a lone `DecodelabLM` with config i
(tests/experiments/test_lm_eval_sweep.py), so its metrics are the lone run's
(tests/experiments/test_lm_eval_batched.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import DictConfig


@dataclass
class SharedEvaluation:
    """One job's part of a shared evaluation: what its own `simple_evaluate` returned, and its merges."""

    results: dict[str, Any]  # simple_evaluate's output for this configuration ("results", "samples", ...)
    generation_records: list[dict[str, Any]]  # as `DecodelabLM.get_model_info()["decodelab_generation"]`
    configurations: int  # how many configurations shared the evaluation


def shares_evaluation(cfg: DictConfig) -> bool:
    """A job whose batched group shares an lm-eval evaluation (not a generation): lm-eval tasks, no generation."""
    return bool(cfg.task.get("lm_eval")) and not cfg.task.generate


def evaluate_shared(cfgs: Sequence[DictConfig], model: Any, tokenizer: Any) -> list[SharedEvaluation]:
    """Every config's lm-eval tasks through one SweepDecodelabLM; one SharedEvaluation per config, in order.

    Args:
        cfgs: job configs equal but for the row parameters and `decoding.name` (the launcher's batch key);
            the first one's eval.*, seed and cache settings are everyone's.
        model, tokenizer: loaded as the first job's run loads them (`experiments.run.load_inputs`).
    """
    from experiments.lm_eval_run import check_eval_inputs, evaluate_tasks, run_decoding, task_manager
    from experiments.lm_eval_sweep import SweepDecodelabLM

    if not cfgs:
        raise ValueError("cfgs=[] is not allowed: give at least one job config")
    first = cfgs[0]
    manager = task_manager(first)
    for cfg in cfgs:  # every job's gen_kwargs merge checked before any forward pass
        check_eval_inputs(cfg, manager)
    lm = SweepDecodelabLM(configs=[run_decoding(cfg) for cfg in cfgs], pretrained=model, tokenizer=tokenizer,
                          batch_size=first.eval.batch_size, seed=first.seed, cache=first.cache.setting)
    evaluations = []
    for i, cfg in enumerate(cfgs):
        results = evaluate_tasks(cfg, lm.use(i), manager)
        evaluations.append(SharedEvaluation(results, list(lm.records_by_config[i].values()), len(cfgs)))
    return evaluations
