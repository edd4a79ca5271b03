"""The report shows each metric's 95% interval where metrics.json has one, and none where it has none; task
metrics (task=lm_eval jobs) appear in the HTML report with their intervals.

Hand-written job folders (tests/analysis/conftest.py, tests/analysis/test_task_report.py), so every expected
number is one the test wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import plots as figures
from analysis.report import build_report
from analysis.runs import load_runs, runs_frame
from analysis.sweeps import QUALITY_PARAMS, swept
from analysis.tables import format_value
from tests.analysis.conftest import config_for, metrics_for, write_job
from tests.analysis.page import mismatches, parse_page
from tests.analysis.test_task_report import TASK
from tests.analysis.test_task_report import write_job as write_task_job

POINTS = ((0.5, 4.0, 8.0), (0.9, 12.0, 2.0), (1.0, 40.0, 0.5))  # (top_p, gen/ppl, repetition)


def ends(ppl: float) -> tuple[float, float]:
    return ppl * 0.875, ppl * 1.25  # distinct per run, exact in binary


@pytest.fixture()
def sweep_with_intervals(tmp_path) -> Path:
    """A three-point top-p sweep whose runs wrote intervals for gen/ppl and gen/rep_2, none for MAUVE."""
    root = tmp_path / "multirun" / "sweep"
    for p, ppl, rep in POINTS:
        metrics = metrics_for(ppl, 0.5 + p / 3, rep=rep)
        low, high = ends(ppl)
        metrics.update({"gen/ppl/ci95_low": low, "gen/ppl/ci95_high": high,
                        "gen/rep_2/ci95_low": rep * 2 - 1.0, "gen/rep_2/ci95_high": rep * 2 + 1.5})
        write_job(root / f"top_p={p}", config_for({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": p},
                                                  name="sweep"), metrics)
    return root


def test_a_table_cell_shows_the_interval_and_a_cell_without_one_does_not(sweep_with_intervals, tmp_path):
    page = parse_page(build_report([str(sweep_with_intervals)], tmp_path / "report"))
    assert mismatches(page) == []  # data-value is still the point estimate of metrics.json
    ppl_cells = [c for c in page.cells if c["table"] == "table1" and c["data-metric"] == "gen/ppl"]
    assert len(ppl_cells) == len(POINTS)
    for cell in ppl_cells:
        ppl = float(cell["data-value"])
        low, high = ends(ppl)
        assert cell["text"] == (f"{format_value(ppl, 'gen/ppl')} "
                                f"[{format_value(low, 'gen/ppl')}, {format_value(high, 'gen/ppl')}]")
    mauve = [c for c in page.cells if c["table"] == "table1" and c["data-metric"] == "gen/mauve"]
    assert mauve and all("[" not in c["text"] for c in mauve)
    every = page.tables["all-metrics"]
    assert any(row[0] == "gen/ppl" and "[" in row[1] for row in every)
    assert any(row[0] == "gen/ppl/ci95_low" and "[" not in row[1] for row in every)  # every key, as written


def test_plot_points_carry_the_runs_intervals_as_error_bars(sweep_with_intervals, tmp_path):
    frame = runs_frame(load_runs([str(sweep_with_intervals)]).runs)
    found = swept(frame, QUALITY_PARAMS)
    plot = figures.quality_curves(frame, "decoding.top_p", found["decoding.top_p"], tmp_path)
    drawn = {(Path(run).name, metric): (low, high) for run, metric, low, high in plot.intervals}
    expected = {}
    for p, ppl, rep in POINTS:
        expected[(f"top_p={p}", "gen/ppl")] = ends(ppl)
        expected[(f"top_p={p}", "gen/rep_2")] = (rep * 2 - 1.0, rep * 2 + 1.5)
    assert drawn == expected  # MAUVE, rep_3, distinct-n: no interval in metrics.json, no error bar
    bars = figures.perplexity_vs_generation(frame, tmp_path)
    assert sorted(low for _, metric, low, _ in bars.intervals) == sorted(ends(ppl)[0] for _, ppl, _ in POINTS)


def test_task_metrics_appear_in_the_html_report_with_their_intervals(tmp_path):
    root = tmp_path / "multirun" / "tasks"
    docs = 20
    for value, correct in ((0.5, 6), (1.0, 12), (1.5, 4)):
        write_task_job(root, f"temperature={value}", {"name": "temperature", "do_sample": True, "temperature": value},
                       [1.0] * correct + [0.0] * (docs - correct))
    out = tmp_path / "report"
    page = parse_page(build_report([str(root)], out))
    assert mismatches(page) == []
    key = f"task/{TASK}/exact_match"
    best = [c for c in page.cells if c["table"] == f"task-{TASK}"]
    assert len(best) == 1 and float(best[0]["data-value"]) == 12 / 20  # one method: its best configuration
    stored = json.loads((Path(best[0]["data-run"]) / "metrics.json").read_text())
    assert best[0]["data-metric"] == key and best[0]["text"] == (
        f"{format_value(stored[key], key)} [{format_value(stored[key + '/ci95_low'], key)}, "
        f"{format_value(stored[key + '/ci95_high'], key)}]")
    assert f"task_{TASK}_curve.png" in page.images and (out / f"task_{TASK}_curve.png").is_file()
    assert {row[0] for row in page.tables["all-metrics"]} >= {key}  # task/ keys are let through by analysis.runs
