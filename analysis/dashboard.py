"""The W&B dashboard as code: a saved workspace (and a report) for one sweep group, with `wandb-workspaces`.

    python -m analysis.dashboard --entity ENTITY --project decodelab --group sweep_top_p
    python -m analysis.dashboard --entity ENTITY --project decodelab --group holtzman_table1 --report

Saving needs network and a W&B key (`wandb login`); building does not, and the tests build both
definitions without saving them. (`Workspace._to_model()` also serializes offline, so a test checks the
wire form; a report's serialization asks the server for the project id, so a report is only built.)

What the dashboard shows, for runs filtered by group (a sweep's runs share `group = name`):
- *Quality against the swept parameter*: scatter panels, x = the config key (`decoding.top_p`, ...),
  y = a summary metric (gen/ppl, gen/mauve, rep-n, distinct-n, ...). W&B draws these from every run's
  config and summary, so they need nothing beyond what each job logs.
- *Sweep curves*: line panels over the history of the `sweep-summary` run that
  `analysis.wandb_charts.log_sweep_summary` logs, x = `curve/<param>`: the same curves, joined by lines.
- *Human reference*: the human continuations' values (`human/*`) beside the generated ones.
- *Speed*: tokens/s against batch size and beam width, and by cache setting.
- *Samples*: the samples table each job logs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

PARAMS = ("decoding.top_p", "decoding.top_k", "decoding.temperature", "decoding.num_beams")
QUALITY = ("gen/ppl", "gen/mauve", "gen/self_bleu4", "gen/zipf", "gen/repetition_pct", "gen/rep_2", "gen/rep_4",
           "gen/distinct_2", "gen/distinct_4", "gen/diversity")
HUMAN = ("gen/ppl", "gen/self_bleu4", "gen/zipf", "gen/repetition_pct", "gen/rep_2", "gen/distinct_2")
SPEED = ("speed/tok_s", "speed/decode_tok_s", "speed/prefill_tok_s")
SPEED_PARAMS = ("prompts.batch_size", "decoding.num_beams", "cache.setting")


def _short(key: str) -> str:
    return key.split(".")[-1].replace("/", "_")


def panels(params: tuple[str, ...] = PARAMS) -> dict[str, list[Any]]:
    """{section title: panels}; shared by the workspace and the report."""
    import wandb_workspaces.reports.v2 as wr

    out: dict[str, list[Any]] = {}
    for param in params:
        out[f"Quality against {param}"] = [
            wr.ScatterPlot(title=f"{metric} vs {param}", x=wr.Config(param), y=wr.SummaryMetric(metric),
                           log_y=metric == "gen/ppl")
            for metric in QUALITY]
    out["Sweep curves (sweep-summary run)"] = [
        wr.LinePlot(title=f"{metric} against {param}", x=f"curve/{_short(param)}",
                    y=[f"curve/{_short(param)}/{_short(metric)}"], log_y=metric == "gen/ppl")
        for param in params for metric in ("gen/ppl", "gen/mauve", "gen/rep_4", "gen/distinct_4")]
    out["Human reference"] = [
        wr.ScatterPlot(title=f"{metric}: generated vs human", x=wr.SummaryMetric(f"human/{metric.split('/')[1]}"),
                       y=wr.SummaryMetric(metric))
        for metric in HUMAN]
    out["Perplexity versus generation"] = [
        wr.ScatterPlot(title="generation ppl vs dataset ppl (teacher-forced)", x=wr.SummaryMetric("ppl/token"),
                       y=wr.SummaryMetric("gen/ppl"), log_x=True, log_y=True),
        wr.ScatterPlot(title="generation ppl vs diversity", x=wr.SummaryMetric("gen/diversity"),
                       y=wr.SummaryMetric("gen/ppl"), log_y=True),
    ]
    out["Speed"] = [wr.ScatterPlot(title=f"{metric} vs {param}", x=wr.Config(param), y=wr.SummaryMetric(metric))
                    for param in SPEED_PARAMS for metric in SPEED]
    out["Samples"] = [wr.WeavePanelSummaryTable(table_name="samples")]
    return out


def build_workspace(entity: str, project: str, group: str, params: tuple[str, ...] = PARAMS):
    """A saved-workspace definition for the runs of one group (built offline; `.save()` needs network)."""
    import wandb_workspaces.workspaces as ws

    sections = [ws.Section(name=title, panels=items, is_open=True) for title, items in panels(params).items()]
    return ws.Workspace(
        entity=entity, project=project, name=f"decodelab: {group}", sections=sections,
        settings=ws.WorkspaceSettings(x_axis="Step", remove_legends_from_panels=False),
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == group],
                                          groupby=[ws.Config("decoding.name")]),
    )


def build_report(entity: str, project: str, group: str, params: tuple[str, ...] = PARAMS):
    """The same panels as a W&B report (built offline; `.save()` needs network)."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(entity=entity, project=project, name=group, filters=f"Metric('Group') == '{group}'")
    blocks: list[Any] = [
        wr.H1(f"decodelab: {group}"),
        wr.P("How decoding changes what the model writes: quality and diversity against the swept parameter, "
             "the human continuations as the reference, perplexity versus generation, and speed. "
             "Made by `python -m analysis.dashboard`."),
    ]
    for title, items in panels(params).items():
        blocks += [wr.H2(title), wr.PanelGrid(runsets=[runset], panels=items)]
    return wr.Report(entity=entity, project=project, title=f"decodelab: {group}", blocks=blocks,
                     description=f"Runs of group {group}")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - saving needs network and a W&B key
    parser = argparse.ArgumentParser(prog="python -m analysis.dashboard",
                                     description="Save the decodelab W&B workspace (and report) for one group.")
    parser.add_argument("--entity", required=True)
    parser.add_argument("--project", default="decodelab")
    parser.add_argument("--group", required=True, help="the sweep's name (its runs' W&B group)")
    parser.add_argument("--report", action="store_true", help="also save a W&B report with the same panels")
    args = parser.parse_args(argv)
    try:
        workspace = build_workspace(args.entity, args.project, args.group).save()
        print(f"workspace: {workspace.url}")
        if args.report:
            report = build_report(args.entity, args.project, args.group).save()
            print(f"report: {report.url}")
    except Exception as err:  # noqa: BLE001 - one clear line: this is where network and keys fail
        print(f"error: could not save to W&B ({type(err).__name__}: {err}); this needs network and `wandb login`",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
