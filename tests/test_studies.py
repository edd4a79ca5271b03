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
}


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
