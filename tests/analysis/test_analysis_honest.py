"""Honest numbers in the report: broken or edited job files are skipped with their path, not-measurable
values say so and why, caveated MAUVE is marked, the speed table says which jobs shared a batch, and a
report killed while writing ends, once rerun, as one never interrupted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.report import build_report
from analysis.runs import load_runs, runs_frame
from analysis.tables import speed_table
from tests.analysis.conftest import HOLTZMAN, config_for, metrics_for, write_job
from tests.analysis.page import mismatches, parse_page

REPO = Path(__file__).resolve().parents[2]
GREEDY = {"name": "greedy", "do_sample": False}


def report_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg", **env))


def test_a_truncated_metrics_json_is_skipped_with_its_path_and_the_report_goes_on(holtzman_dir, tmp_path):
    broken = holtzman_dir / "decoding=top_k" / "metrics.json"
    text = broken.read_text()
    broken.write_text(text[: text.index('"gen/ppl"') + 4])  # cut inside a key, as a writer killed mid-file leaves it
    found = load_runs([holtzman_dir])
    assert len(found.runs) == len(HOLTZMAN) - 1
    reasons = dict(found.skipped)
    why = reasons[str(broken.parent)]
    assert why.startswith(f"corrupt metrics.json: {broken}: JSONDecodeError: Unterminated string")
    # the command line: exit 0, the other seven runs reported, the broken file named on the page
    result = report_cli([str(holtzman_dir), "--out", str(tmp_path / "report")])
    assert result.returncode == 0, result.stderr[-2000:]
    page = parse_page(tmp_path / "report" / "index.html")
    assert len(page.tables["table1"]) == 1 + 1 + len(HOLTZMAN) - 1  # header, human row, the seven others
    assert [str(broken.parent), why] in page.tables["skipped"]
    assert mismatches(page) == []


def test_a_corrupt_config_yaml_is_skipped_with_its_path(holtzman_dir):
    config = holtzman_dir / "decoding=greedy" / "config.yaml"
    config.write_text("model: {name: [tiny_llama\n")
    found = load_runs([holtzman_dir])
    why = dict(found.skipped)[str(config.parent)]
    assert why.startswith(f"corrupt config.yaml: {config}: ") and "flow sequence" in why
    assert len(found.runs) == len(HOLTZMAN) - 1


def test_a_config_yaml_edited_after_the_run_is_not_trusted(holtzman_dir):
    """The fingerprint in metrics.json is the truth: an edited config.yaml would put the numbers of top-p
    0.95 under a label of top-p 0.5."""
    job = holtzman_dir / "decoding=top_p"
    config = yaml.safe_load((job / "config.yaml").read_text())
    config["decoding"]["top_p"] = 0.5
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    found = load_runs([holtzman_dir])
    why = dict(found.skipped)[str(job)]
    assert f"{job / 'config.yaml'} (fingerprint " in why and f"recorded in {job / 'metrics.json'}" in why
    assert "changed after the run" in why
    assert all(r.config["decoding"].get("top_p") != 0.5 for r in found.runs)
    # a comment or a reordering is not a change: the fingerprint is of the config's values
    untouched = holtzman_dir / "decoding=greedy" / "config.yaml"
    untouched.write_text("# looked at by hand\n" + yaml.safe_dump(yaml.safe_load(untouched.read_text()),
                                                                    sort_keys=False))
    assert str(untouched.parent) not in dict(load_runs([holtzman_dir]).skipped)
    unsigned = holtzman_dir / "decoding=sample" / "metrics.json"
    unsigned.write_text(json.dumps({k: v for k, v in json.loads(unsigned.read_text()).items()
                                    if k != "meta/fingerprint"}))
    assert "records no meta/fingerprint" in dict(load_runs([holtzman_dir]).skipped)[str(unsigned.parent)]


def test_only_broken_jobs_left_is_a_clear_error_naming_the_file(tmp_path):
    job = write_job(tmp_path / "runs" / "job", config_for(GREEDY), metrics_for(3.0))
    (job / "metrics.json").write_text('{"gen/ppl": 3.0, "gen/')
    with pytest.raises(ValueError, match=f"no finished runs .*corrupt metrics.json: {job / 'metrics.json'}"):
        load_runs([tmp_path / "runs"])


def test_caveated_mauve_is_marked_and_the_caveat_shown_with_samples_and_features(tmp_path):
    caveat = "16 samples per side, below the minimum of 1000"
    metrics = metrics_for(3.0, mauve=0.87)
    metrics.update({"gen/mauve_samples": 16.0, "meta/caveats": {"gen/mauve": caveat},
                    "meta/mauve_features": "tiny_llama (random weights)"})
    write_job(tmp_path / "runs" / "a", config_for(GREEDY), metrics)
    write_job(tmp_path / "runs" / "b", config_for({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": 0.9}),
              metrics_for(9.0, mauve=0.5))  # no caveat recorded: no mark
    page = parse_page(build_report([str(tmp_path / "runs")], tmp_path / "report"))
    rows = {r[0]: r for r in page.tables["table1"]}
    assert rows["Greedy"][5] == "0.870\u2020" and rows["Nucleus, p=0.9"][5] == "0.500"
    html = (tmp_path / "report" / "index.html").read_text()
    notes = html.split('id="table1-caveats">', 1)[1].split("</ul>", 1)[0]
    assert (f"\u2020 gen/mauve of Greedy: {caveat}; samples per side: 16; features model: tiny_llama "
            "(random weights)") in notes
    assert "Nucleus" not in notes
    cell = next(c for c in page.cells if c["table"] == "table1" and c["data-metric"] == "gen/mauve"
                and c["data-run"].endswith("/a"))
    assert cell["data-caveat"] == caveat and float(cell["data-value"]) == 0.87  # the number itself untouched


def test_speed_table_says_which_jobs_shared_a_batch_and_that_rss_is_the_process_peak(tmp_path):
    for name, configurations in (("alone", 1.0), ("batched", 3.0)):
        metrics = metrics_for(3.0, tok_s=100.0 * configurations)
        metrics.update({"speed/sweep_configurations": configurations, "speed/sweep_tok_s": 300.0})
        write_job(tmp_path / "runs" / name, config_for({"name": "top_p", "do_sample": True, "top_k": 0,
                                                        "top_p": 0.5 if name == "alone" else 0.9}), metrics)
    table = speed_table(runs_frame(load_runs([tmp_path / "runs"]).runs))
    assert "Generated" in table.columns and "Peak RSS of the process, MB" in table.columns
    column = table.columns.index("Generated") - 1
    assert [r.cells[column].value for r in table.rows] == ["alone", "batched with 3 configurations"]
    assert "share one process" in table.caption and "compare speeds only between" in table.caption
    page = parse_page(build_report([str(tmp_path / "runs")], tmp_path / "report"))
    header, *rows = page.tables["speed"]
    assert [r[header.index("Generated")] for r in rows] == ["alone", "batched with 3 configurations"]


@pytest.mark.slow
def test_a_report_killed_while_writing_and_rerun_equals_an_uninterrupted_one(holtzman_dir, tmp_path):
    whole = tmp_path / "whole"
    build_report([str(holtzman_dir)], whole)
    out = tmp_path / "killed"
    killed = report_cli([str(holtzman_dir), "--out", str(out)], DECODELAB_FAILPOINT="report_writing")
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL at the fail point
    assert not (out / "index.html").exists()  # not half a page: no page yet
    assert (out / "runs.csv").read_bytes() == (whole / "runs.csv").read_bytes()  # written whole, before the kill
    rerun = report_cli([str(holtzman_dir), "--out", str(out)])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())  # no temp files left

    def page_without_stamp(folder: Path) -> str:
        return "\n".join(line for line in (folder / "index.html").read_text().splitlines() if "drawn " not in line)

    assert page_without_stamp(out) == page_without_stamp(whole)
    assert (out / "runs.csv").read_bytes() == (whole / "runs.csv").read_bytes()


def test_figures_of_an_earlier_report_are_removed_only_after_the_new_page_is_written(holtzman_dir, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "speed_vs_old_param.png").write_bytes(b"old")
    (out / ".index.html.123.report-tmp").write_text("left by a killed report")
    build_report([str(holtzman_dir)], out)
    names = {p.name for p in out.iterdir()}
    assert "speed_vs_old_param.png" not in names and ".index.html.123.report-tmp" not in names
    assert set(parse_page(out / "index.html").images) <= names


@pytest.mark.slow
def test_a_real_sweep_on_one_prompt_reports_null_with_reason_caveated_mauve_and_batching(tmp_path):
    """What the runner really writes, end to end: one prompt (Self-BLEU of one sample is not measurable),
    MAUVE on one sample of a random model's features, two top-p jobs sharing one batch."""
    from tests.experiments.runner_helpers import TINY_RUN, run_cli

    result = run_cli(["-m", *TINY_RUN, "prompts.num_prompts=1", "task=generate", "metrics.mauve=true",
                      "logger=none", "name=honest", "decoding=top_p", "decoding.top_p=0.5,0.9"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs" / "multirun" / "honest"
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 2
    stored = json.loads((jobs[0] / "metrics.json").read_text())  # valid JSON: no bare NaN
    assert stored["gen/self_bleu4"] is None and stored["meta/not_measurable"]["gen/self_bleu4"] == "n=1"
    assert stored["gen/mauve_samples"] == 1.0 and stored["meta/mauve_features"] == "tiny_llama (random weights)"
    assert "1 sample per side, below the minimum" in stored["meta/caveats"]["gen/mauve"]
    assert stored["speed/sweep_configurations"] == 2.0
    for job in jobs:  # progress and the warning (once per job) in the job's log
        log = (job / "run.log").read_text()
        assert log.count("MAUVE caveat: 1 sample per side") == 1
        assert "MAUVE: features of 1 human and 1 generated texts from tiny_llama" in log

    page = parse_page(build_report([str(sweep)], tmp_path / "report"))
    header, human, *rows = page.tables["table1"]
    assert [r[header.index("Self-BLEU-4")] for r in [human, *rows]] == ["not measurable (n=1)"] * 3
    assert all(r[header.index("MAUVE")].endswith("\u2020") for r in rows)
    notes = (tmp_path / "report" / "index.html").read_text().split('id="table1-caveats">', 1)[1]
    assert "samples per side: 1; features model: tiny_llama (random weights)" in notes.split("</ul>")[0]
    assert page.facts["MAUVE"] == "features from tiny_llama (random weights); samples per side: 1 (the paper: 5000)"
    speed_header, *speed_rows = page.tables["speed"]
    assert [r[speed_header.index("Generated")] for r in speed_rows] == ["batched with 2 configurations"] * 2
    assert mismatches(page) == []
