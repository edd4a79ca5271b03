"""analysis/task_report.py: curves and the equal-budget table from task=lm_eval jobs; every number = metrics.json.

Fast: hand-written job folders (two methods, grids of 4 and 3, per-document scores chosen by hand). Slow: a
real 3-point temperature multirun through the CLI on the tiny Llama, then the report on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from analysis.runs import config_fingerprint
from analysis.task_report import evenly_spaced, write_task_report
from experiments.lm_eval_stats import bootstrap_ci95, paired_bootstrap_test
from tests.experiments.runner_helpers import run_cli

TASK = "arithmetic_add"


def write_job(root: Path, name: str, decoding: dict, per_doc: list[float]) -> Path:
    """A job folder as task=lm_eval writes it: config.yaml, metrics.json (with its fingerprint), samples."""
    folder = root / name
    (folder / "lm_eval_samples").mkdir(parents=True)
    config = {"task": {"perplexity": False, "generate": False, "lm_eval": True}, "decoding": decoding,
              "model": {"name": "tiny_llama"}, "seed": 0, "name": "study"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    score = sum(per_doc) / len(per_doc)
    low, high = bootstrap_ci95(per_doc, 200, 0)
    metrics = {f"task/{TASK}/exact_match": score, f"task/{TASK}/exact_match/ci95_low": low,
               f"task/{TASK}/exact_match/ci95_high": high, "meta/fingerprint": config_fingerprint(config)}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"doc_id": i, "filter": "first", "exact_match": v} for i, v in enumerate(per_doc)]
    (folder / "lm_eval_samples" / f"{TASK}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_equal_budget_table_and_curves_from_hand_written_jobs(tmp_path):
    root = tmp_path / "sweep"
    docs = 40
    # min_p: 4 configurations (0.05 is best: 30/40); temperature: 3 configurations (best 1.0: 20/40).
    min_p = {0.02: 10, 0.05: 30, 0.1: 25, 0.3: 5}
    temperature = {0.5: 12, 1.0: 20, 1.5: 8}
    for value, correct in min_p.items():
        write_job(root, f"min_p={value}", {"name": "min_p", "do_sample": True, "min_p": value},
                  [1.0] * correct + [0.0] * (docs - correct))
    for value, correct in temperature.items():
        write_job(root, f"temperature={value}", {"name": "temperature", "do_sample": True, "temperature": value},
                  [1.0] * correct + [0.0] * (docs - correct))
    report = write_task_report(root, tmp_path / "out", resamples=300)
    table = report["tasks"][TASK]["equal_budget"]
    assert table["budget"] == 3
    # min_p tries 3 of its 4 values, evenly spaced: indices 0, round(1.5) = 2, 3 -> 0.02, 0.1, 0.3; its overall
    # best, 0.05, is not among them: the equal budget at work.
    tried = evenly_spaced(sorted(min_p), 3)
    assert table["methods"]["min_p"]["tried"] == tried
    assert tried == [0.02, 0.1, 0.3]
    best_min_p = max(tried, key=lambda v: min_p[v])
    assert table["methods"]["min_p"]["value"] == best_min_p
    assert table["methods"]["temperature"]["value"] == 1.0
    stored = json.loads((root / f"min_p={best_min_p}" / "metrics.json").read_text())
    assert table["methods"]["min_p"]["score"] == stored[f"task/{TASK}/exact_match"]
    assert table["methods"]["min_p"]["ci95_low"] == stored[f"task/{TASK}/exact_match/ci95_low"]
    leader = table["best_method"]
    other = "temperature" if leader == "min_p" else "min_p"
    paired = table["methods"][other]["paired_vs_best"]
    a = [1.0] * (temperature[1.0] if other == "temperature" else min_p[best_min_p])
    expected = paired_bootstrap_test(
        a + [0.0] * (docs - len(a)),
        [1.0] * (min_p[best_min_p] if leader == "min_p" else temperature[1.0])
        + [0.0] * (docs - (min_p[best_min_p] if leader == "min_p" else temperature[1.0])), 300, 0)
    assert paired == expected
    curve = report["tasks"][TASK]["curves"]["temperature"]
    assert curve["param"] == "temperature" and [p[0] for p in curve["points"]] == [0.5, 1.0, 1.5]
    assert (tmp_path / "out" / f"{TASK}_curve.png").stat().st_size > 1000
    text = (tmp_path / "out" / f"{TASK}_budget.md").read_text()
    assert f"{table['methods']['temperature']['score']:.4g}" in text and "p (paired)" in text


def test_evenly_spaced_keeps_both_ends():
    assert evenly_spaced([1, 2, 3, 4, 5], 3) == [1, 3, 5]
    assert evenly_spaced([1, 2], 5) == [1, 2]
    assert evenly_spaced([1, 2, 3], 1) == [2]


def test_edited_config_is_refused(tmp_path):
    root = tmp_path / "sweep"
    folder = write_job(root, "a", {"name": "temperature", "temperature": 1.0}, [1.0, 0.0])
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace("1.0", "2.0"))
    with pytest.raises(ValueError, match="does not match the meta/fingerprint"):
        write_task_report(root, tmp_path / "out")


@pytest.mark.slow
def test_three_point_temperature_multirun_and_its_report(tmp_path):
    result = run_cli(["-m", "task=lm_eval", "model=tiny_llama", "eval.limit=4", "eval.tasks=[arithmetic_add]",
                      "eval.bootstrap_resamples=100", "decoding=temperature", "decoding.temperature=0.5,1.0,1.5",
                      "name=lm_sweep", "logger=none"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "outputs" / "multirun" / "lm_sweep"
    report = write_task_report(root, tmp_path / "report", resamples=100)
    curve = report["tasks"][TASK]["curves"]["temperature"]
    assert [p[0] for p in curve["points"]] == [0.5, 1.0, 1.5]
    for x, score, low, high, folder in curve["points"]:
        stored = json.loads((Path(folder) / "metrics.json").read_text())
        assert (score, low, high) == (stored[f"task/{TASK}/exact_match"], stored[f"task/{TASK}/exact_match/ci95_low"],
                                      stored[f"task/{TASK}/exact_match/ci95_high"])
    assert report["tasks"][TASK]["equal_budget"]["budget"] == 3
