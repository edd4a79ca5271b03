"""The charts W&B shows for decodelab runs: built from metrics; the per-job ones live in experiments/.

Two kinds, because a W&B run only knows itself:
- `run_charts(metrics)`: for one job, bar charts of its generations beside the human continuations
  (quality and diversity) and of the three perplexities. The runner logs them with the job's metrics, so
  they live in `experiments.run_charts` (experiments never imports analysis) and are re-exported here.
- `sweep_charts(frame)`: for a finished sweep, the charts that need every job: Table 1 as a W&B table,
  line charts of each quality metric against each swept parameter (one stroke per curve, see
  `analysis.sweeps`), a quality-versus-diversity scatter, and a table of runs. `log_sweep_summary`
  loads a sweep folder and logs them as one extra run in the sweep's group (job type `sweep-summary`),
  plus one history step per curve point (`curve/<param>` and `curve/<param>/<metric>`) so that the
  dashboard's native line panels (`analysis.dashboard`) can draw the same curves.

Nothing here needs network: the chart objects are plain `wandb.plot` custom charts over `wandb.Table`s,
and `log_sweep_summary` honours the logger's mode (offline by default), so a test can build and log
them and read the run file back. The summary run has no `ppl/`, `gen/` ... metrics, so the report's
loader skips it (`analysis.runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.runs import has_values, load_runs, runs_frame
from analysis.sweeps import QUALITY_PARAMS, human_groups, method_order, run_labels, swept
from analysis.tables import holtzman_table
from experiments.run_charts import RUN_BARS, finite_or_none as _finite, run_charts  # noqa: F401 (re-exported)

CURVE_METRICS = ("gen/ppl", "gen/mauve", "gen/self_bleu4", "gen/zipf", "gen/repetition_pct", "gen/rep_2",
                 "gen/rep_4", "gen/distinct_2", "gen/distinct_4", "gen/diversity", "speed/tok_s")
CURVE_PARAMS = (*QUALITY_PARAMS, "prompts.batch_size")


def short(key: str) -> str:
    """`decoding.top_p` -> `top_p`, `gen/ppl` -> `gen_ppl`: W&B keys without dots (dots nest keys in W&B)."""
    return key.split(".")[-1].replace("/", "_")


def runs_table(frame: pd.DataFrame) -> "Any":
    """A W&B table with one row per run: label, swept settings, curve metrics (NaN/missing as None)."""
    import wandb

    labels = run_labels(frame)
    params = [p for p in CURVE_PARAMS if p in frame.columns]
    metrics = [m for m in CURVE_METRICS if m in frame.columns]
    data = [[labels[key], *[_finite(frame.loc[key, p]) if not isinstance(frame.loc[key, p], str) else None
                            for p in params], *[_finite(frame.loc[key, m]) for m in metrics]]
            for key in method_order(frame)]
    return wandb.Table(columns=["method", *params, *metrics], data=data)


def table1(frame: pd.DataFrame) -> "Any":
    import wandb

    table = holtzman_table(frame)
    data = [[row.label, *[_finite(c.value) if not isinstance(c.value, str) else None for c in row.cells]]
            for row in table.rows]
    return wandb.Table(columns=table.columns, data=data)


def sweep_charts(frame: pd.DataFrame) -> dict[str, Any]:
    """Charts across the runs of a sweep: Table 1, curves against each swept parameter, a scatter."""
    import wandb

    charts: dict[str, Any] = {"sweep/table1": table1(frame), "sweep/runs": runs_table(frame)}
    labels = run_labels(frame)
    for param, found in swept(frame, CURVE_PARAMS).items():
        for metric in CURVE_METRICS:
            if not has_values(frame, metric):
                continue
            data = [[float(value), _finite(frame.loc[key, metric]), curve.fixed or "sweep", labels[key]]
                    for curve in found for key, value in zip(curve.keys, curve.values)]
            table = wandb.Table(columns=[short(param), short(metric), "curve", "method"], data=data)
            charts[f"sweep/{short(param)}/{short(metric)}"] = wandb.plot.line(
                table, short(param), short(metric), stroke="curve", title=f"{metric} against {param}")
    if has_values(frame, "gen/diversity") and has_values(frame, "gen/ppl"):
        data = [[labels[key], _finite(frame.loc[key, "gen/diversity"]), _finite(frame.loc[key, "gen/ppl"])]
                for key in frame.index]
        for human_label, keys in human_groups(frame):
            if "human/diversity" in frame.columns and "human/ppl" in frame.columns:
                data.append([human_label, _finite(frame.loc[keys[0], "human/diversity"]),
                             _finite(frame.loc[keys[0], "human/ppl"])])
        table = wandb.Table(columns=["method", "diversity", "ppl"], data=data)
        charts["sweep/quality_vs_diversity"] = wandb.plot.scatter(table, "diversity", "ppl",
                                                                  title="Generation perplexity vs diversity")
    return charts


def curve_history(frame: pd.DataFrame) -> list[dict[str, float]]:
    """One history step per curve point, for native W&B line panels: {"curve/top_p": x, "curve/top_p/gen_ppl": y}."""
    steps = []
    for param, found in swept(frame, CURVE_PARAMS).items():
        for curve in found:
            for key, value in zip(curve.keys, curve.values):
                step = {f"curve/{short(param)}": float(value)}
                for metric in CURVE_METRICS:
                    if has_values(frame, metric) and _finite(frame.loc[key, metric]) is not None:
                        step[f"curve/{short(param)}/{short(metric)}"] = float(frame.loc[key, metric])
                steps.append(step)
    return steps


def log_sweep_summary(paths: list[str | Path], project: str = "decodelab", group: str | None = None,
                      mode: str = "offline", dir: str | Path | None = None, entity: str | None = None) -> str:
    """Log the sweep charts of the runs under `paths` as one `sweep-summary` run; return its W&B folder.

    The runner calls this after a multirun (e.g. from a Hydra `on_multirun_end` callback) with its logger
    settings; `group` defaults to the study name the runs share.
    """
    import wandb

    found = load_runs(paths)
    frame = runs_frame(found.runs)
    names = sorted({str(v) for v in frame.get("name", []) if isinstance(v, str)})
    group = group or (names[0] if len(names) == 1 else None)
    dir = Path(dir) if dir is not None else Path(paths[0]) / "summary"
    dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=group, job_type="sweep-summary", mode=mode,
                     dir=str(dir), name=f"{group or 'runs'}: summary", reinit="finish_previous",
                     config={"summary_of": [str(p) for p in paths], "runs": len(found.runs)})
    try:
        for step in curve_history(frame):
            run.log(step)
        run.log(sweep_charts(frame))
        return str(Path(run.dir).parent)
    finally:
        run.finish()
        wandb.teardown()  # flush the offline run file (see experiments.logging)
