"""W&B without network: chart objects from metrics, a sweep-summary run logged offline, the dashboard built."""

import json

import pytest

from analysis.dashboard import PARAMS, QUALITY, build_report, build_workspace
from analysis.runs import load_runs, runs_frame
from analysis.wandb_charts import curve_history, log_sweep_summary, sweep_charts
from experiments.logging import read_offline_run
from experiments.run_charts import run_charts
from tests.analysis.conftest import HUMAN, metrics_for


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_run_charts_put_generations_beside_the_human_continuations():
    import wandb

    metrics = metrics_for(12.0, rep=5.0)
    charts = run_charts(metrics)
    assert isinstance(charts["charts/generated_vs_human"], wandb.plot.CustomChart)
    rows = {(m, who): v for m, who, v in charts["charts/generated_vs_human_table"].data}
    assert rows[("zipf", "gen")] == metrics["gen/zipf"] and rows[("zipf", "human")] == HUMAN["human/zipf"]
    ppl = dict(charts["charts/perplexities"].table.data)
    assert ppl == {"dataset (teacher-forced)": 18.25, "generations": 12.0, "human continuations": 21.5}


def test_sweep_charts_hold_the_runs_numbers(top_p_dir):
    frame = runs_frame(load_runs([top_p_dir]).runs)
    charts = sweep_charts(frame)
    line = charts["sweep/top_p/gen_ppl"]
    assert line.spec.spec_name == "wandb/line/v0"
    assert [(x, y) for x, y, *_ in line.table.data] == [(0.5, 4.0), (0.9, 12.0), (1.0, 40.0)]
    table1 = charts["sweep/table1"]
    assert table1.data[0][0] == "Human" and table1.data[0][1] == HUMAN["human/ppl"]
    assert charts["sweep/quality_vs_diversity"].spec.spec_name == "wandb/scatter/v0"
    assert [step["curve/top_p"] for step in curve_history(frame)] == [0.5, 0.9, 1.0]


def test_sweep_summary_is_logged_offline_and_the_report_skips_it(top_p_dir, tmp_path):
    run_dir = log_sweep_summary([top_p_dir], group="sweep", dir=tmp_path / "wandb_summary")
    logged = read_offline_run(run_dir)
    assert logged["group"] == "sweep"
    points = [(s["curve/top_p"], s["curve/top_p/gen_ppl"]) for s in logged["history"] if "curve/top_p" in s]
    assert points == [(0.5, 4.0), (0.9, 12.0), (1.0, 40.0)]
    assert logged["summary"]["sweep/table1/nrows"] == 4  # human + three runs
    found = load_runs([top_p_dir, tmp_path / "wandb_summary"])
    assert len(found.runs) == 3 and any("without ppl/gen" in why for _, why in found.skipped)


def test_workspace_definition_builds_and_serializes_without_network():
    workspace = build_workspace("someone", "decodelab", "sweep_top_p")
    assert workspace.name == "decodelab: sweep_top_p"
    view = json.dumps(workspace._to_model().model_dump(by_alias=True, exclude_none=True), default=str)
    assert '"section": "run", "name": "group"}, "op": "=", "value": "sweep_top_p"' in view  # runset filter
    for param in PARAMS:
        assert f'"xAxis": "config:{param.replace(".", ".value.", 1)}"' in view
    for metric in QUALITY:
        assert f'"yAxis": "summary:{metric}"' in view
    assert '"curve/top_p/gen_ppl"' in view  # line panels over the sweep-summary run


def test_report_definition_builds_without_network():
    import wandb_workspaces.reports.v2 as wr

    report = build_report("someone", "decodelab", "holtzman_table1")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) >= 5
    assert all(g.runsets[0].filters == "Metric('Group') == 'holtzman_table1'" for g in grids)
    kinds = {type(p).__name__ for g in grids for p in g.panels}
    assert {"ScatterPlot", "LinePlot"} <= kinds
