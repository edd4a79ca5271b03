"""`python -m analysis.report <run or multirun dirs...> --out DIR`: an HTML report of what runs wrote.

    python -m analysis.report outputs/multirun/holtzman_table1 --out reports/holtzman
    python -m analysis.report outputs/multirun/sweep_top_p outputs/multirun/sweep_top_k --out reports/sweeps
    python -m analysis.report outputs/multirun/sweep_top_p --source wandb --out reports/from-wandb
    python -m analysis.report wandb:ENTITY/decodelab/sweep_top_p --out reports/online   (network + W&B key)

DIR gets `index.html` (self-contained: inline CSS, no script), the PNG figures beside it and
`runs.csv`, the tidy table of every run (settings and metrics) the page was drawn from.

The report never loads a model and never recomputes a metric: it arranges what runs wrote (see
`analysis.runs` for where that is read from). Sections appear only when the runs hold their data: a
sweep over top-p gets curves against top-p, a Holtzman-style set of methods gets Table 1, runs that
differ in cache setting or batch size get speed plots against them, task=lm_eval jobs get a "Task accuracy"
section (`analysis.task_report.task_section`: curves and equal-budget tables). Every number with a 95%
interval in metrics.json (`<key>/ci95_low`, `/ci95_high`) shows it: "0.43 [0.38, 0.48]" in a table cell, an
error bar in a figure. Job folders it cannot trust (a
failed or interrupted job, a corrupt metrics.json or config.yaml, a config.yaml edited after the run) are
listed under "Skipped folders" with the file and the reason, and the report goes on with the rest.

Outputs are written whole or not at all (`analysis.outputs`): the figures, then runs.csv, then
index.html, each renamed into place; figures of an earlier report that this one did not redraw are
removed last. A report killed half-way and run again ends with the same files as one never interrupted.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import plots as figures
from analysis import speed_plots as speed_figures
from analysis.html import Section, render_page
from analysis.outputs import remove_leftovers, replacing, write_text
from analysis.provenance import provenance
from analysis.runs import SOURCES, load_runs, runs_frame, runs_subset
from analysis.paper_claims import claims_table
from analysis.side_by_side import table1_side_by_side
from analysis.sweeps import QUALITY_PARAMS, SPEED_PARAMS, swept
from analysis.tables import (Cell, Row, Table, all_metrics_table, holtzman_tables, perplexity_table,
                             sampler_order_table, speed_table)
from analysis.task_report import task_section
from experiments.faults import failpoint


def generating_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs that generated (they have `gen/samples`), or all runs if none did. Why: a study that also scores
    tasks (study 2: task=lm_eval beside task=generate) would otherwise fill Table 1 and the generation figures
    with rows of dashes, and label every method by its task setting."""
    if "gen/samples" not in frame.columns or not frame["gen/samples"].notna().any():
        return frame
    return runs_subset(frame, frame["gen/samples"].notna())


def build_sections(frame, out_dir: Path, skipped: list[tuple[str, str]],
                   paths: list[str] | None = None) -> list[Section]:
    everything, frame = frame, generating_runs(frame)
    sections = [Section("methods", "Decoding methods against human text",
                        tables=[*holtzman_tables(frame), *[t for t in [claims_table(frame)] if t],
                                sampler_order_table(frame)],
                        plots=[p for p in [table1_side_by_side(frame, out_dir)] if p])]

    ppl = Section("perplexity", "Perplexity versus generation")
    ppl.tables += [t for t in [perplexity_table(everything)] if t]
    ppl.plots += [p for p in (figures.perplexity_vs_generation(frame, out_dir),
                              figures.quality_diversity(frame, out_dir)) if p]
    if ppl.tables or ppl.plots:
        sections.append(ppl)

    quality = Section("sweeps", "Quality and diversity across the sweep")
    found = swept(frame, QUALITY_PARAMS)
    quality.plots += [p for p in (figures.quality_curves(frame, param, c, out_dir) for param, c in found.items()) if p]
    if not quality.plots:
        quality.intro = ("No curve: no two runs differ in just one of top-p, top-k, temperature, beam width, "
                         "min-p, typical-p, epsilon or eta.")
    sections.append(quality)

    speed = Section("speed", "Speed")
    speed.tables += [t for t in [speed_table(frame)] if t]
    found = swept(frame, SPEED_PARAMS)
    speed.plots += [p for p in (figures.speed_curves(frame, param, c, out_dir) for param, c in found.items()) if p]
    speed.plots += [p for p in (speed_figures.speed_by_run(frame, out_dir),
                                speed_figures.speculative_acceptance(frame, out_dir)) if p]
    if speed.tables and not speed.plots:
        speed.intro = "No speed figure: fewer than two runs generated alone."
    if speed.tables or speed.plots:
        sections.append(speed)

    tasks = task_section(paths, out_dir) if paths else None  # runs with task/ metrics (task=lm_eval)
    if tasks is not None:
        sections.append(tasks)

    sections.append(Section("all-metrics", "Every number", tables=[all_metrics_table(everything)], collapsed=True))
    if skipped:
        sections.append(Section("skipped", "Skipped folders", tables=[skipped_table(skipped)]))
    return sections


def skipped_table(skipped: list[tuple[str, str]]) -> Table:
    table = Table("skipped", "Folders whose results are not in this report",
                  "Failed or unfinished jobs, and finished ones whose files cannot be read or do not belong "
                  "together; each reason names the file.", ["Folder", "Why it was skipped"])
    table.rows = [Row(folder, [Cell(why)]) for folder, why in skipped]
    return table


def build_report(paths: list[str], out_dir: str | Path, source: str = "auto", title: str | None = None) -> Path:
    """Write the report for the runs under `paths` into `out_dir`; return the path of index.html."""
    found = load_runs(paths, source=source)
    frame = runs_frame(found.runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    sections = build_sections(frame, out_dir, found.skipped, [str(p) for p in paths])  # writes the figures
    studies = sorted({str(v) for v in frame.get("name", []) if isinstance(v, str)})
    title = title or f"decodelab report: {', '.join(studies) or 'runs'}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{len(found.runs)} runs from {', '.join(map(str, paths))}; drawn {stamp}"
    page = render_page(title, subtitle, provenance(frame, found.runs), sections, out_dir)
    with replacing(out_dir / "runs.csv") as tmp:
        frame.to_csv(tmp)
    failpoint("report_writing")  # between two outputs: tests kill the report here and rerun it
    write_text(out_dir / "index.html", page)
    drawn = {plot.file for section in sections for plot in section.plots}
    for old in out_dir.glob("*.png"):  # figures of an earlier report that this one did not redraw
        if old.name not in drawn:
            old.unlink()
    return out_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, multirun folders, W&B offline-run folders, "
                        "or wandb:ENTITY/PROJECT[/GROUP]")
    parser.add_argument("--out", required=True, help="folder for index.html, the PNG figures and runs.csv")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="auto: metrics.json where present, else W&B run files; disk or wandb: only those")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        page = build_report(args.paths, args.out, source=args.source, title=args.title)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
