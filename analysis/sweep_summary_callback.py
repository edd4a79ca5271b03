"""At the end of every multirun, one `sweep-summary` W&B run with the charts that need every job.

A W&B run only knows its own job, so Table 1, the curves against the swept parameter and the runs table are
logged once the sweep is over, by `analysis.wandb_charts.log_sweep_summary`, as one more run in the sweep's
group. Hydra runs this callback in the sweep's own process (registered in conf/hydra/default.yaml by
`_target_`: it lives in analysis/ because it reads what the jobs wrote, and experiments/ never imports
analysis/).

What it honours, and why:
- the sweep's logger settings (`logger.project`, `logger.mode`, `logger.entity`, `logger.group`, which is
  `name` unless set): the summary goes where the jobs' runs went, offline unless the logger says otherwise.
  No W&B (`logger=none`, `logger.mode=disabled`) means no summary, and a sweep with no finished job (no
  `metrics.json` under its folder) has nothing to summarise: both do nothing, silently.
- the sweep's exit code is not its business: after a partial failure it still summarises the jobs that
  finished, then `FailedJobsCallback` (which runs after it, see conf/hydra/default.yaml) exits non-zero.
  A failure of the summary itself is one line on stderr and never an exception, so a good sweep stays good
  and a failed one keeps its own exit code and message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# The folder under the sweep's folder that holds the summary's W&B files (`wandb/offline-run-*`).
SUMMARY_SUBDIR = "summary"


def summary_settings(config: DictConfig) -> dict[str, Any] | None:
    """`log_sweep_summary`'s W&B keywords from the sweep's logger, or None when the sweep logs nothing to W&B.

    Only these keys are read: `logger.dir` resolves through `hydra:runtime.output_dir`, a job's folder, which
    the sweep's own config does not have.
    """
    logger = config.get("logger")
    if logger is None or not str(logger.get("_target_", "")).endswith(".WandbLogger"):
        return None  # logger=none (NullLogger) or no logger at all
    mode = logger.get("mode") or "offline"  # WandbLogger's own default
    if mode == "disabled":
        return None
    return {"project": logger.get("project") or "decodelab", "mode": str(mode), "entity": logger.get("entity"),
            "group": logger.get("group") or config.get("name")}


def has_finished_job(sweep_dir: Path) -> bool:
    """Whether any job under `sweep_dir` finished: `metrics.json` is written last (experiments/run.py)."""
    return sweep_dir.is_dir() and next(sweep_dir.rglob("metrics.json"), None) is not None


def one_line(err: BaseException) -> str:
    """`Type: first line of the message`: a multi-line message on stderr would read as a traceback."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class SweepSummaryCallback(Callback):
    """Hydra callback: `on_multirun_end` logs the sweep's `sweep-summary` W&B run (see the module docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            folder = self.log_summary(config)
        except Exception as err:  # noqa: BLE001 - the summary must never change how the sweep ends
            print(f"sweep summary failed, not logged to W&B ({one_line(err)}); the jobs' results are unchanged",
                  file=sys.stderr)
            return
        if folder is not None:
            print(f"sweep summary: W&B run in {folder}", file=sys.stderr)

    @staticmethod
    def log_summary(config: DictConfig) -> str | None:
        """Log the summary of the sweep `config` describes; its W&B run folder, or None when there is nothing to do."""
        settings = summary_settings(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        if settings is None or not has_finished_job(sweep_dir):
            return None
        from analysis.wandb_charts import log_sweep_summary  # here: pandas and wandb only when a sweep ends

        return log_sweep_summary([sweep_dir], dir=sweep_dir / SUMMARY_SUBDIR, **settings)
