"""Each flagship study (conf/experiment/*.yaml) end to end at a tiny size, so the configs cannot rot: the README's
multirun command on the tiny random Llama and a handful of prompts, then the study's report command, read back.

A new experiment file without an entry in TINY fails `test_every_study_has_a_tiny_run`: each study gets a run here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.analysis.page import mismatches, parse_page
from tests.experiments.runner_helpers import CONF_DIR, REPO, run_cli

pytestmark = pytest.mark.slow

# The study's own command plus what makes it tiny: the tiny model, few and short prompts, little data.
TINY = {
    "holtzman_table1": ["model=tiny_llama", "prompts.num_prompts=3", "prompts.prompt_tokens=8",
                        "prompts.continuation_tokens=8", "dataset.limit=2", "perplexity.max_length=128"],
    "minp_tasks": ["model=tiny_llama", "eval.limit=2", "eval.bootstrap_resamples=50"],
    "minp_vs_top_p": ["model=tiny_llama", "eval.limit=2", "eval.bootstrap_resamples=50", "prompts.num_prompts=3",
                      "prompts.prompt_tokens=8", "prompts.continuation_tokens=8"],
    # Every case but self-speculation, whose 8 draft layers the 2-layer tiny model lacks: run after with 1.
    "speed": ["model=tiny_llama", "prompts.num_prompts=2", "prompts.prompt_tokens=8", "prompts.continuation_tokens=8",
              "dataset.limit=1"],
}
SPEED_CASES = [path.stem for path in (Path(CONF_DIR) / "speed_case").glob("*.yaml")]


def test_every_study_has_a_tiny_run():
    assert set(TINY) == {path.stem for path in (Path(CONF_DIR) / "experiment").glob("*.yaml")}


def run_study(name: str, root: Path, *extra: str) -> Path:
    result = run_cli(["-m", f"experiment={name}", *TINY[name], "logger=none", *extra], root, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return root / "outputs" / "multirun" / name


def report(sweep: Path, out: Path) -> Path:
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep), "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "index.html"


def finished_jobs(sweep: Path) -> dict[str, float]:
    """{job folder name: metrics.json's modification time} of every finished job."""
    return {path.parent.name: path.stat().st_mtime for path in sweep.glob("*/metrics.json")}


def test_holtzman_table1_runs_both_sides_resumes_and_reports_every_interval(tmp_path):
    sweep = run_study("holtzman_table1", tmp_path)
    jobs = finished_jobs(sweep)
    assert len(jobs) == 2 * 15  # seen and held-out speeches x 15 methods
    assert not list(sweep.rglob("error.txt"))
    held_out = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json") if "dataset=sotu," in p.parent.name]
    assert len(held_out) == 15 and {m["gen/samples"] for m in held_out} == {3.0}
    # Rerunning the command finds every job finished and recomputes none.
    assert finished_jobs(run_study("holtzman_table1", tmp_path)) == jobs

    page = parse_page(report(sweep, tmp_path / "report"))
    assert mismatches(page) == []
    tables = {key: rows for key, rows in page.tables.items() if key.startswith("table1-")}
    assert len(tables) == 2  # one Table 1 per side, each a human row and the 15 methods
    for rows in tables.values():
        body = rows[1:]
        assert [row[0] for row in body][0] == "Human" and len(body) == 16
        labels = [row[0] for row in body]
        for method in ("Greedy", "Beam search, b=16", "Contrastive search, \u03b1=0.6, k=4", "Min-p, min_p=0.1",
                       "Top-n\u03c3, n\u03c3=1", "DoLa, layers=high, repetition penalty=1.2"):
            assert method in labels
        assert any(label.startswith("MBR, n=8, chrF") for label in labels)
    # Every metric of Table 1 shows its 95% interval, human MAUVE (not a thing) aside.
    cells = [cell for cell in page.cells if cell["table"].startswith("table1-")]
    assert len(cells) == 2 * (16 * 5 - 1)
    without = [c for c in cells if "[" not in c["text"] and "not measurable" not in c["text"]]
    assert without == [], without[:3]


def test_minp_tasks_runs_and_reports_its_task_curves(tmp_path):
    sweep = run_study("minp_tasks", tmp_path)
    assert len(finished_jobs(sweep)) == 12  # three methods x four temperatures
    page = parse_page(report(sweep, tmp_path / "report"))
    assert mismatches(page) == []
    assert {"task_sotu_last_word_curve.png", "task_arithmetic_add_curve.png"} <= set(page.images)


def test_minp_vs_top_p_runs_tasks_and_continuations_in_both_sampler_orders(tmp_path):
    sweep = run_study("minp_vs_top_p", tmp_path)
    jobs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(jobs) == 2 * 2 * 2 * 6  # task x sampler order x method x temperature
    assert sum("gen/mauve" in m for m in jobs) == sum("task/arithmetic_add/exact_match" in m for m in jobs) == 24
    index = report(sweep, tmp_path / "report")
    page = parse_page(index)
    assert mismatches(page) == []
    assert "quality_vs_decoding_temperature.png" in page.images and "task_sotu_last_word_curve.png" in page.images
    methods = [row[0] for row in page.tables["task-arithmetic_add"][1:]]  # the equal-budget table
    assert sorted(methods) == ["min_p", "min_p (llama.cpp order)", "top_p", "top_p (llama.cpp order)"]
    from analysis.task_report import equal_budget, load_task_jobs

    assert equal_budget(load_task_jobs(sweep), "arithmetic_add", "exact_match")["budget"] == 6  # six temperatures


def test_speed_runs_every_case_alone_and_draws_its_figures(tmp_path):
    cases = [case for case in SPEED_CASES if case != "speculative_self"]
    sweep = run_study("speed", tmp_path, f"speed_case={','.join(sorted(cases))}")
    run_study("speed", tmp_path, "speed_case=speculative_self", "decoding.draft_layers=1")
    jobs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(jobs) == len(SPEED_CASES) == 23
    assert {m["speed/sweep_configurations"] for m in jobs} == {1.0}  # every job generated alone
    speculative = [m for m in jobs if m.get("speed/acceptance_rate") is not None]
    assert len(speculative) >= 2 and all(m["speed/tokens_per_target_forward"] >= 1 for m in speculative)
    page = parse_page(report(sweep, tmp_path / "report"))
    assert mismatches(page) == []
    assert {"speed_by_run.png", "speculative_acceptance.png"} <= set(page.images)
    assert "Acceptance rate" in page.tables["speed"][0]
