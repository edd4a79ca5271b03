"""Finding and loading runs: job folders, failed and unfinished jobs, bad paths, the tidy table."""

import math

import pytest

from analysis.runs import flatten, load_runs, parse_wandb_spec, runs_frame
from tests.analysis.conftest import HOLTZMAN, config_for, metrics_for, write_job


def test_a_multirun_folder_gives_one_run_per_finished_job(holtzman_dir):
    found = load_runs([holtzman_dir])
    assert len(found.runs) == len(HOLTZMAN) and not found.skipped
    assert {r.source for r in found.runs} == {"disk"}
    by_name = {r.config["decoding"]["name"]: r for r in found.runs}
    assert by_name["top_p"].metrics["gen/ppl"] == 22.0
    assert "meta/fingerprint" not in by_name["top_p"].metrics  # text, not a metric


def test_a_single_job_folder_and_the_same_folder_twice(holtzman_dir):
    job = holtzman_dir / "decoding=greedy"
    assert len(load_runs([job]).runs) == 1
    assert len(load_runs([job, holtzman_dir]).runs) == len(HOLTZMAN)  # each run once


def test_failed_and_unfinished_jobs_are_skipped_with_the_reason(holtzman_dir):
    failed = write_job(holtzman_dir / "decoding=bad", config_for({"name": "top_p", "top_p": 1.5}), None)
    (failed / "error.txt").write_text("error: ValueError: top_p=1.5 is not allowed\n\nTraceback ...")
    write_job(holtzman_dir / "decoding=running", config_for({"name": "top_p"}), None)
    found = load_runs([holtzman_dir])
    assert len(found.runs) == len(HOLTZMAN)
    reasons = dict(found.skipped)
    assert reasons[str(failed)] == "failed: error: ValueError: top_p=1.5 is not allowed"
    assert reasons[str(holtzman_dir / "decoding=running")].startswith("unfinished")


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: give a run folder"):
        load_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished runs under .*empty.*metrics.json"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(ValueError, match="source='cloud' is not allowed"):
        load_runs([tmp_path / "empty"], source="cloud")


def test_wandb_spec_is_parsed_or_rejected():
    assert parse_wandb_spec("wandb:me/decodelab") == ("me", "decodelab", None)
    assert parse_wandb_spec("wandb:me/decodelab/sweep_top_p") == ("me", "decodelab", "sweep_top_p")
    with pytest.raises(ValueError, match="wandb:ENTITY/PROJECT"):
        parse_wandb_spec("wandb:justone")


def test_tidy_frame_has_dotted_settings_and_slashed_metrics(holtzman_dir):
    frame = runs_frame(load_runs([holtzman_dir]).runs)
    assert len(frame) == len(HOLTZMAN)
    row = frame[frame["decoding.name"] == "top_k40_t07"].iloc[0]
    assert row["decoding.top_k"] == 40 and row["decoding.temperature"] == 0.7
    assert row["prompts.batch_size"] == 8 and row["dataset.split"] == "test"
    assert row["gen/ppl"] == 4.0 and row["human/zipf"] == 0.93
    greedy = frame[frame["decoding.name"] == "greedy"].iloc[0]
    assert math.isnan(greedy["decoding.temperature"])  # not in its config: missing, not invented


def test_a_null_the_run_wrote_is_kept_apart_from_a_metric_it_never_wrote(tmp_path):
    metrics = metrics_for(5.0, mauve=None)
    metrics["gen/zipf"] = None  # not measurable: the runner writes null, with the reason beside it
    metrics["meta/not_measurable"] = {"gen/zipf": "fewer than 2 distinct tokens"}
    write_job(tmp_path / "job", config_for({"name": "greedy", "do_sample": False}), metrics)
    frame = runs_frame(load_runs([tmp_path / "job"]).runs)
    written = frame.attrs["written"][frame.index[0]]
    assert "gen/zipf" in written and "gen/mauve" not in written
    assert math.isnan(frame.iloc[0]["gen/zipf"])
    assert frame.attrs["not_measurable"][frame.index[0]] == {"gen/zipf": "fewer than 2 distinct tokens"}


def test_flatten_nests_with_dots_and_keeps_lists_comparable():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": None, "e": "[1, 2]"}


def test_a_config_older_than_a_recorded_setting_is_grouped_with_newer_runs(tmp_path):
    """A job composed before `prompts.warmup_batches` was recorded ran with its default (0): it shows that value
    and shares the newer jobs' Table 1 instead of getting a "Human" row of its own."""
    from analysis.sweeps import human_groups

    old = config_for({"name": "greedy", "do_sample": False}, name="study")
    new = config_for({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": 0.95}, name="study")
    new["prompts"]["warmup_batches"] = 0
    assert "warmup_batches" not in old["prompts"]
    write_job(tmp_path / "runs" / "old", old, metrics_for(1.5))
    write_job(tmp_path / "runs" / "new", new, metrics_for(20.0))
    frame = runs_frame(load_runs([tmp_path / "runs"]).runs)
    assert list(frame["prompts.warmup_batches"]) == [0, 0]
    assert [label for label, _ in human_groups(frame)] == ["Human"]
