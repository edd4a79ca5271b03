"""The charts W&B shows for one job, built from that job's metrics alone.

They live in experiments/ because the runner logs them (`experiments.logging.WandbLogger.log_charts`) and
experiments/ never imports analysis/ (analysis reads what runs wrote, and imports from here). The charts
that need every job of a sweep stay in `analysis.wandb_charts`.
"""

from __future__ import annotations

import math
from typing import Any

RUN_BARS = ("distinct_2", "distinct_4", "diversity", "self_bleu4", "zipf", "repetition_pct")


def finite_or_none(value: Any) -> float | None:
    """A metric value as a float, or None where it is missing or NaN (a chart has no bar for it)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def run_charts(metrics: dict[str, float]) -> dict[str, Any]:
    """Per-run charts: this run's generations beside the human continuations, and its perplexities."""
    import wandb  # only when logging: the runner works without W&B installed

    charts: dict[str, Any] = {}
    rows = [[name, who, metrics[f"{who}/{name}"]] for name in RUN_BARS for who in ("gen", "human")
            if finite_or_none(metrics.get(f"{who}/{name}")) is not None]
    if rows:
        table = wandb.Table(columns=["metric", "text", "value"], data=rows)
        bars = wandb.Table(columns=["label", "value"], data=[[f"{m} ({who})", v] for m, who, v in rows])
        charts["charts/generated_vs_human"] = wandb.plot.bar(bars, "label", "value",
                                                             title="Generated vs human continuations")
        charts["charts/generated_vs_human_table"] = table
    ppl = [[label, metrics[key]] for key, label in (("ppl/token", "dataset (teacher-forced)"),
                                                     ("gen/ppl", "generations"), ("human/ppl", "human continuations"))
           if finite_or_none(metrics.get(key)) is not None]
    if ppl:
        charts["charts/perplexities"] = wandb.plot.bar(wandb.Table(columns=["label", "value"], data=ppl),
                                                       "label", "value", title="Perplexity per token")
    return charts
