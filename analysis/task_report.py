"""Task accuracy against a swept decoding parameter, and an equal-budget comparison of methods.

    python -m analysis.task_report outputs/multirun/<name> --out report_tasks/ [--task arithmetic_add]

Reads the `task=lm_eval` jobs under a folder (each job's `metrics.json`, `config.yaml`, checked as the main
report checks them, `analysis.runs.load_disk_run`, and `lm_eval_samples/<task>.jsonl` for per-document scores)
and writes, per task:
- `<task>_curve.png`: the task's main score (acc_norm / acc / exact_match, the first the runs have) against
  the parameter each method swept, one line per method (`decoding.name`), 95% bootstrap intervals from
  metrics.json as error bars (the min-p paper's figure);
- `<task>_budget.md` and the `tasks` entry of `task_report.json`: for each method the best score over the same
  number B of tried configurations (B = the smallest grid among the methods; a larger grid contributes B evenly
  spaced points of it, so no method wins by being tried more often), with its interval, and the paired
  difference of every method's best against the overall best on the same documents: a paired bootstrap over
  documents (`experiments.lm_eval_stats.paired_bootstrap_test`) with its 95% interval and two-sided p-value.

Every score and interval in the outputs is the number in its job's metrics.json. The best of B is chosen on
the same documents it is scored on, so it is optimistic for every method alike: compare methods, not a
method with a held-out number.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.lm_eval_stats import paired_bootstrap_test

MAIN_METRICS = ("acc_norm", "acc", "exact_match")
PRIMARY_FILTERS = ("none", "first")


@dataclass
class TaskJob:
    """One finished task=lm_eval job: its method, the value of its swept parameter, its metrics."""

    folder: Path
    method: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    def per_document(self, task: str, metric: str) -> dict[int, float]:
        """{doc_id: score} from the job's lm-eval samples (the primary filter)."""
        path = self.folder / "lm_eval_samples" / f"{task}.jsonl"
        scores = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("filter", "none") in PRIMARY_FILTERS and metric in row:
                scores[int(row["doc_id"])] = float(row[metric])
        return scores


def load_task_jobs(root: Path) -> list[TaskJob]:
    """Every finished job under `root` that ran lm-eval tasks (others are ignored)."""
    from analysis.runs import load_disk_run

    jobs = []
    for metrics_path in sorted(root.rglob("metrics.json")):
        folder = metrics_path.parent
        run = load_disk_run(folder)  # UntrustedJob (a ValueError) when config.yaml was edited after the run
        if not run.config.get("task", {}).get("lm_eval"):
            continue
        metrics = json.loads(metrics_path.read_text())
        jobs.append(TaskJob(folder, method_name(run.config.get("decoding", {})), run.config, metrics))
    if not jobs:
        raise FileNotFoundError(f"no finished task=lm_eval job under {root}")
    return jobs


def method_name(decoding: dict[str, Any]) -> str:
    """A job's method: its decoding config's name, and its sampler order unless transformers' (the default):
    top-p applied in llama.cpp's order (temperature last) is another method than top-p in transformers'."""
    name = str(decoding.get("name", "?"))
    order = decoding.get("sampler_order", "transformers")
    return name if order == "transformers" else f"{name} ({order} order)"


def swept_parameter(jobs: list[TaskJob]) -> str | None:
    """The decoding key whose value differs between a method's jobs (None: one configuration)."""
    keys = sorted({k for job in jobs for k in job.config.get("decoding", {})} - {"name"})
    varying = [k for k in keys if len({json.dumps(job.config["decoding"].get(k)) for job in jobs}) > 1]
    return varying[0] if varying else None


def main_metric(jobs: list[TaskJob], task: str) -> str:
    for metric in MAIN_METRICS:
        if all(f"task/{task}/{metric}" in job.metrics for job in jobs):
            return metric
    raise ValueError(f"task {task!r}: no job has one of {MAIN_METRICS}")


def evenly_spaced(items: list, count: int) -> list:
    """`count` items spread over the sorted list, both ends included (all of them when count >= len)."""
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def curves(jobs: list[TaskJob], task: str, metric: str) -> dict[str, dict[str, Any]]:
    """{method: {param, points: [(x, score, low, high, folder)]}} sorted by the swept value."""
    out = {}
    for method in sorted({job.method for job in jobs}):
        members = [job for job in jobs if job.method == method]
        param = swept_parameter(members)
        key = f"task/{task}/{metric}"
        points = []
        for job in members:
            x = job.config["decoding"].get(param) if param else None
            points.append((x, job.metrics[key], job.metrics.get(f"{key}/ci95_low"), job.metrics.get(f"{key}/ci95_high"),
                           str(job.folder)))
        points.sort(key=lambda p: (p[0] is None, p[0] if isinstance(p[0], (int, float)) else str(p[0])))
        out[method] = {"param": param, "points": points}
    return out


def tasks_of(jobs: list[TaskJob]) -> list[str]:
    """Every task a job has a `task/<task>/...` metric of."""
    return sorted({key.split("/")[1] for job in jobs for key in job.metrics if key.startswith("task/")})


def equal_budget(jobs: list[TaskJob], task: str, metric: str, resamples: int = 1000, seed: int = 0,
                 by_method: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each method's best of B configurations, and paired tests against the overall best (module docstring).

    `by_method`: the task's `curves`, when the caller has them already.
    """
    by_method = by_method or curves(jobs, task, metric)
    budget = min(len(c["points"]) for c in by_method.values())
    best = {}
    for method, curve in by_method.items():
        tried = evenly_spaced(curve["points"], budget)
        x, score, low, high, folder = max(tried, key=lambda p: p[1])
        best[method] = {"param": curve["param"], "value": x, "score": score, "ci95_low": low, "ci95_high": high,
                        "folder": folder, "tried": [p[0] for p in tried]}
    leader = max(best, key=lambda m: best[m]["score"])
    folders = {str(job.folder): job for job in jobs}
    lead_scores = folders[best[leader]["folder"]].per_document(task, metric)
    for method, row in best.items():
        scores = folders[row["folder"]].per_document(task, metric)
        docs = sorted(set(scores) & set(lead_scores))
        row["paired_vs_best"] = (None if method == leader else
                                 paired_bootstrap_test([scores[d] for d in docs], [lead_scores[d] for d in docs],
                                                       resamples, seed))
    return {"task": task, "metric": metric, "budget": budget, "best_method": leader, "methods": best,
            "bootstrap": {"resamples": resamples, "seed": seed, "unit": "documents"}}


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _value_text(value: Any) -> str:
    """The swept parameter's value where a method did best: a number formatted, anything else as it is."""
    return _fmt(value) if isinstance(value, (int, float)) else str(value)


def budget_markdown(table: dict[str, Any]) -> str:
    lines = [f"### {table['task']}: best {table['metric']} of {table['budget']} configurations per method",
             "", "| method | swept | best at | score | 95% interval | difference vs best | 95% interval | p (paired) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, row in sorted(table["methods"].items(), key=lambda kv: -kv[1]["score"]):
        paired = row["paired_vs_best"]
        diff = ("(best)", "", "") if paired is None else (
            _fmt(paired["diff"]), f"[{_fmt(paired['ci95_low'])}, {_fmt(paired['ci95_high'])}]", _fmt(paired["p_value"]))
        lines.append(f"| {method} | {row['param'] or '-'} | {_value_text(row['value'])} "
                     f"| {_fmt(row['score'])} | [{_fmt(row['ci95_low'])}, {_fmt(row['ci95_high'])}] | {diff[0]} | {diff[1]} | {diff[2]} |")
    lines.append("")
    lines.append(f"Intervals: {table['bootstrap']['resamples']} bootstrap resamples over documents (seed "
                 f"{table['bootstrap']['seed']}); the best of {table['budget']} is picked on the scored documents.")
    return "\n".join(lines) + "\n"


def plot_curves(task_curves: dict[str, dict[str, Any]], task: str, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.8))
    for method, curve in task_curves.items():
        points = [p for p in curve["points"] if isinstance(p[0], (int, float))]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        lows = [p[1] - p[2] if p[2] is not None else 0.0 for p in points]
        highs = [p[3] - p[1] if p[3] is not None else 0.0 for p in points]
        ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=3, label=f"{method} ({curve['param']})")
    params = {curve["param"] for curve in task_curves.values() if curve["param"]}
    ax.set_xlabel(f"decoding.{params.pop()}" if len(params) == 1 else "swept parameter (per method, in the legend)")
    ax.set_ylabel(f"{metric} (95% bootstrap interval)")
    ax.set_title(task)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)  # off the data
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_task_report(root: Path, out: Path, tasks: list[str] | None = None, resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Curves, equal-budget tables and `task_report.json` for every task the jobs ran (or `tasks`)."""
    jobs = load_task_jobs(root)
    found = tasks_of(jobs)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"root": str(root), "jobs": len(jobs), "tasks": {}}
    for task in tasks or found:
        metric = main_metric(jobs, task)
        task_curves = curves(jobs, task, metric)
        table = equal_budget(jobs, task, metric, resamples, seed, task_curves)
        plot_curves(task_curves, task, metric, out / f"{task}_curve.png")
        (out / f"{task}_budget.md").write_text(budget_markdown(table))
        report["tasks"][task] = {"metric": metric, "curves": task_curves, "equal_budget": table}
    (out / "task_report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def task_section(paths: list[str | Path], out_dir: Path):
    """The HTML report's "Task accuracy" section for the task=lm_eval jobs under `paths`, or None without any:
    per task its curve (`task_<task>_curve.png` in `out_dir`) and its equal-budget table, every score a cell
    holding its job's metrics.json value and interval."""
    from analysis.html import Section
    from analysis.plots import Plot
    from analysis.tables import Cell, Row, Table

    jobs = []
    for path in paths:
        try:
            jobs += load_task_jobs(Path(path))
        except (FileNotFoundError, ValueError):  # no task jobs there (an untrusted job is the main report's to list)
            continue
    if not jobs:
        return None
    section = Section("tasks", "Task accuracy (lm-evaluation-harness)")
    for task in tasks_of(jobs):
        metric = main_metric(jobs, task)
        key = f"task/{task}/{metric}"
        task_curves = curves(jobs, task, metric)
        file = f"task_{task}_curve.png"
        plot_curves(task_curves, task, metric, out_dir / file)
        drawn = [(str(p[4]), key, p[2], p[3]) for c in task_curves.values() for p in c["points"]
                 if p[2] is not None and p[3] is not None]
        section.plots.append(Plot(file, f"{task}: {metric} against the swept parameter",
                                  "One line per method; error bars are each job's 95% bootstrap interval over "
                                  "documents (metrics.json).", intervals=drawn))
        table = Table(f"task-{task}", f"{task}: best {metric} per method over the same number of configurations",
                      "Each method's best of B tried configurations (B: the smallest grid; a larger one gives B "
                      "evenly spaced points), its 95% interval, and the paired bootstrap difference to the overall "
                      "best on the same documents.",
                      ["Method", "Swept", "Best at", f"{metric} [95% interval]", "Difference vs best [95%], p"])
        try:
            budget = equal_budget(jobs, task, metric, by_method=task_curves)
        except (FileNotFoundError, ValueError) as err:  # no per-document samples: the curve alone
            table.notes.append(f"no equal-budget table: {err}")
            budget = {"methods": {}}
        for method, row in sorted(budget["methods"].items(), key=lambda kv: -kv[1]["score"]):
            folder = str(row["folder"])  # named as the main report names runs: relative stays relative
            paired = row["paired_vs_best"]
            diff = ("(best)" if paired is None else f"{_fmt(paired['diff'])} [{_fmt(paired['ci95_low'])}, "
                    f"{_fmt(paired['ci95_high'])}], p = {_fmt(paired['p_value'])}")
            table.rows.append(Row(method, [Cell(row["param"] or "-"), Cell(_value_text(row["value"])),
                                           Cell(float(row["score"]), run=folder, metric=key, low=row["ci95_low"],
                                                high=row["ci95_high"]), Cell(diff)]))
        section.tables.append(table)
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun folder (or any folder) of task=lm_eval jobs")
    parser.add_argument("--out", type=Path, default=Path("report_tasks"))
    parser.add_argument("--task", action="append", help="only this task (repeatable)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = write_task_report(args.root, args.out, args.task, args.resamples, args.seed)
    for task in report["tasks"]:
        print((args.out / f"{task}_budget.md").read_text())


if __name__ == "__main__":
    main()
