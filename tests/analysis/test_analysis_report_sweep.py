"""A report of a real multirun (tiny random Llama, three top-p jobs): what the runner wrote is what the page says.

The sweep runs once per session (`tiny_sweep` in conftest), with W&B offline on, so the same jobs can be
read from `metrics.json` and from their W&B run files.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import build_report
from tests.analysis.page import mismatches, parse_page
from tests.analysis.test_analysis_plots import assert_real_png

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory) -> Path:
    return build_report([str(tiny_sweep)], tmp_path_factory.mktemp("report") / "out")


def test_every_number_on_the_page_equals_metrics_json(tiny_sweep, report):
    page = parse_page(report)
    assert mismatches(page) == []
    jobs = sorted(tiny_sweep.glob("*/metrics.json"))
    shown = {(c["data-run"], c["data-metric"]) for c in page.cells}
    for path in jobs:
        metrics = json.loads(path.read_text())
        expected = {(str(path.parent.resolve()), k) for k, v in metrics.items() if not k.startswith("meta/")}
        assert expected <= shown, sorted(expected - shown)[:5]


def test_table1_rows_are_the_three_top_p_runs_under_the_human_row(tiny_sweep, report):
    rows = parse_page(report).tables["table1"]
    # top_p=1 with top_k=0 truncates nothing: it is pure sampling, listed before nucleus as in the paper
    assert [r[0] for r in rows] == ["Method", "Human", "Pure sampling", "Nucleus, p=0.5", "Nucleus, p=0.9"]
    job = next(p for p in tiny_sweep.iterdir() if "top_p=0.9" in p.name)
    gen_ppl = json.loads((job / "metrics.json").read_text())["gen/ppl"]
    cell = next(c for c in parse_page(report).cells
                if c["table"] == "table1" and c["data-metric"] == "gen/ppl" and c["data-run"] == str(job.resolve()))
    assert float(cell["data-value"]) == gen_ppl


def test_page_states_model_dataset_seeds_and_the_runs_versions(report):
    facts = parse_page(report).facts
    assert facts["Model"].startswith("tiny_llama") and facts["Dataset"] == "files path=corpus"
    assert facts["Seeds"] == "0" and facts["Study"] == "tiny"
    import torch
    import transformers

    assert f"torch {torch.__version__}" in facts["Package versions (runs)"]  # as W&B recorded them
    assert f"transformers {transformers.__version__}" in facts["Package versions (runs)"]


def test_sweep_figures_exist_and_are_not_blank(report):
    names = sorted(p.name for p in report.parent.glob("*.png"))
    assert "quality_vs_decoding_top_p.png" in names and "perplexity_vs_generation.png" in names
    for name in names:
        assert_real_png(report.parent / name)


def test_the_wandb_route_gives_the_same_numbers(tiny_sweep, report, tmp_path):
    """The offline W&B run files hold the same metrics: a report read only from them matches metrics.json."""
    from_wandb = build_report([str(tiny_sweep)], tmp_path / "wandb", source="wandb")
    page = parse_page(from_wandb)
    assert "3 from wandb-offline" in page.facts["Runs"]
    disk_cells = {(c["data-metric"], c["text"]) for c in parse_page(report).cells if c["table"] == "table1"}
    wandb_cells = {(c["data-metric"], c["text"]) for c in page.cells if c["table"] == "table1"}
    assert wandb_cells == disk_cells
    for cell in page.cells:  # each W&B run folder lies inside its job folder, next to metrics.json
        job = next(p for p in Path(cell["data-run"]).parents if (p / "metrics.json").is_file())
        stored = json.loads((job / "metrics.json").read_text())[cell["data-metric"]]
        assert float(cell["data-value"]) == stored or (stored is None and cell["text"].startswith("not measurable"))


def test_cli_writes_the_report_and_fails_clearly_on_a_bad_path(tiny_sweep, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    ok = subprocess.run([sys.executable, "-m", "analysis.report", str(tiny_sweep), "--out", str(tmp_path / "r")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip() == str(tmp_path / "r" / "index.html") and (tmp_path / "r" / "index.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "r2")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_a_report_of_a_relative_path_names_no_folder_of_the_machine(tiny_sweep, tmp_path, monkeypatch):
    """Made in the project root from `outputs/multirun/<name>`, the page and runs.csv can be checked in: the jobs'
    absolute folders (`paths.output_dir`, `logger.dir`, the run keys) are spelled from the argument instead."""
    import pandas as pd

    project = tiny_sweep.parents[2]  # <project>/outputs/multirun/tiny
    monkeypatch.chdir(project)
    index = build_report(["outputs/multirun/tiny"], tmp_path / "portable")
    machine = str(project.resolve().parent)
    for path in (index, index.parent / "runs.csv"):
        assert machine not in path.read_text(), path.name
    page = parse_page(index)
    assert mismatches(page) == []  # the relative keys still lead to each job's metrics.json
    jobs = sorted(f"outputs/multirun/tiny/{p.parent.name}" for p in tiny_sweep.glob("*/metrics.json"))
    assert sorted({c["data-run"] for c in page.cells if c["table"] == "table1"}) == jobs
    frame = pd.read_csv(index.parent / "runs.csv")
    assert sorted(frame["paths.output_dir"]) == jobs and sorted(frame["logger.dir"]) == jobs
    assert "runs from outputs/multirun/tiny;" in index.read_text()
