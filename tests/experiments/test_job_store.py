"""The job store in process: nothing lost, nothing computed twice (experiments/jobs.py, job_lock.py, logging.py).

Real tiny runs (`run(cfg)` on the tiny random Llama, composed by Hydra as the CLI composes), real files,
real other processes holding locks. The multirun cases (both launchers, two sweeps at once) are in
tests/test_sweeps.py.
"""

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from experiments.job_lock import LOCK_NAME, JobLockedError, lock_holder, try_lock
from experiments.jobs import config_fingerprint, read_finished, sweep_cache_file
from experiments.logging import clean_metrics, find_offline_runs, read_offline_run, write_atomic, write_metrics
from experiments.run import FailedJobsCallback, fingerprint, plain, run
from tests.experiments.runner_helpers import REPO, TINY_RUN, compose_config

FAST = [*TINY_RUN, "decoding=top_p", "metrics.mauve=false", "logger=none"]


def computed(folder: Path, caplog) -> bool:
    """Whether the run logged that it computed the job (not merely that it would recompute it)."""
    return f"{folder}: computing this job" in caplog.text


def compose(folder: Path, *extra: str):
    return compose_config([*FAST, *extra], folder)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished job folder (perplexity + generation); tests copy it and damage the copy."""
    folder = tmp_path_factory.mktemp("store") / "job"
    metrics = run(compose(folder))
    return folder, metrics


@pytest.fixture()
def job(finished, tmp_path):
    """A copy of the finished folder, its perplexity cache beside it as the config expects."""
    folder, metrics = finished
    copy = tmp_path / "job"
    shutil.copytree(folder, copy)
    shutil.copytree(folder.parent / "outputs_root", tmp_path / "outputs_root")
    return copy, metrics


def rerun(folder: Path, caplog, *extra: str) -> dict:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="experiments"):
        return run(compose(folder, *extra))


def aside(folder: Path, name: str, why: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.{why}-*"))


def samples(folder: Path) -> str:
    return (folder / "samples.jsonl").read_text()


# ---------------------------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("extra", [[], ["decoding=beam"], ["decoding.top_p=0.5", "prompts.num_prompts=3"],
                                   ["task=perplexity", "perplexity.stride=64"]])
def test_config_fingerprint_of_the_written_config_equals_the_jobs(extra, tmp_path):
    cfg = compose(tmp_path / "job", *extra)
    written = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.create(plain(cfg))))  # as config.yaml holds it
    assert config_fingerprint(written) == fingerprint(cfg)
    written["prompts"]["num_prompts"] += 1
    assert config_fingerprint(written) != fingerprint(cfg)


def test_a_finished_jobs_files_agree(finished):
    folder, metrics = finished
    stored = json.loads((folder / "metrics.json").read_text())
    assert config_fingerprint(yaml.safe_load((folder / "config.yaml").read_text())) == stored["meta/fingerprint"]
    assert read_finished(folder, stored["meta/fingerprint"])["gen/ppl"] == metrics["gen/ppl"]
    assert not (folder / LOCK_NAME).exists()  # released


# ---------------------------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # truncated: "Unterminated string" or similar
    lambda text: "",
    lambda text: "[1, 2]",
    lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "meta/fingerprint"}),
], ids=["truncated", "empty", "not-an-object", "no-fingerprint"])
def test_a_broken_metrics_json_is_named_moved_aside_and_recomputed(job, caplog, damage):
    folder, metrics = job
    before = samples(folder)
    broken = damage((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(broken)
    again = rerun(folder, caplog)
    assert str(folder / "metrics.json") in caplog.text and "recomputing" in caplog.text
    assert computed(folder, caplog)
    [moved] = aside(folder, "metrics.json", "corrupt")
    assert moved.read_text() == broken  # kept as it was, not deleted
    assert json.loads((folder / "metrics.json").read_text())["meta/fingerprint"] == fingerprint(compose(folder))
    assert samples(folder) == before and again["gen/ppl"] == metrics["gen/ppl"]


def test_a_hand_edited_config_yaml_is_reported_and_recomputed(job, caplog):
    folder, metrics = job
    text = (folder / "config.yaml").read_text()
    edited = text.replace("top_p: 0.95", "top_p: 0.5")
    assert edited != text
    (folder / "config.yaml").write_text(edited)
    assert read_finished(folder, fingerprint(compose(folder))) is None  # not trusted, even read-only
    rerun(folder, caplog)
    line = next(r.getMessage() for r in caplog.records if "was edited" in r.getMessage())
    assert str(folder / "config.yaml") in line and "decoding.top_p: 0.5 -> 0.95" in line
    assert computed(folder, caplog)
    assert aside(folder, "config.yaml", "edited")[0].read_text() == edited
    assert len(aside(folder, "metrics.json", "unverified")) == 1
    stored = json.loads((folder / "metrics.json").read_text())
    assert config_fingerprint(yaml.safe_load((folder / "config.yaml").read_text())) == stored["meta/fingerprint"]


@pytest.mark.parametrize("what", ["corrupt", "missing"])
def test_an_unreadable_or_missing_config_yaml_means_not_finished(job, caplog, what):
    folder, _ = job
    if what == "corrupt":
        (folder / "config.yaml").write_text("model: {name: [unclosed\n")
    else:
        (folder / "config.yaml").unlink()
    rerun(folder, caplog)
    assert ("not valid YAML" if what == "corrupt" else "config.yaml is missing") in caplog.text
    assert computed(folder, caplog) and (folder / "config.yaml").is_file()
    assert len(aside(folder, "config.yaml", "corrupt")) == (what == "corrupt")


def test_results_of_another_config_are_reported_with_what_differs(job, caplog):
    folder, _ = job
    rerun(folder, caplog, "decoding.top_p=0.5")
    line = next(r.getMessage() for r in caplog.records if "another config" in r.getMessage())
    assert str(folder) in line and "decoding.top_p: 0.95 -> 0.5" in line
    assert len(aside(folder, "metrics.json", "outdated")) == 1
    assert json.loads((folder / "metrics.json").read_text())["meta/fingerprint"] == \
        fingerprint(compose(folder, "decoding.top_p=0.5"))


def test_a_corrupt_perplexity_cache_is_moved_aside_and_recomputed(job, caplog):
    folder, metrics = job
    [cache] = (folder.parent / "outputs_root" / "cache").glob("perplexity-*.json")
    good = json.loads(cache.read_text())
    cache.write_text(cache.read_text()[:20])
    (folder / "metrics.json").unlink()  # the job must run again to read the cache
    again = rerun(folder, caplog)
    assert str(cache) in caplog.text and "not valid JSON" in caplog.text
    assert len(aside(cache.parent, cache.name, "corrupt")) == 1
    assert json.loads(cache.read_text()) == good and again["ppl/token"] == metrics["ppl/token"]


def test_resume_false_recomputes_without_judging(job, caplog):
    folder, _ = job
    (folder / "metrics.json").write_text("{")
    rerun(folder, caplog, "resume=false")
    assert computed(folder, caplog) and not aside(folder, "metrics.json", "corrupt")


# ---------------------------------------------------------------------------------------------- not measurable


def test_nan_is_null_with_a_reason_and_meta_notes_kept():
    metrics = clean_metrics({"gen/self_bleu4": float("nan"), "gen/zipf": float("nan"), "ppl/token": float("inf"),
                             "gen/ppl": 3, "gen/rougeL": None, "meta/mauve_features": "tiny_llama",
                             "meta/caveats": {"gen/mauve": "n=4"},
                             "meta/not_measurable": {"gen/self_bleu4": "n=1", "gen/mauve": "metrics.mauve=false",
                                                     "gen/ppl": "stale reason for a number"}})
    assert math.isnan(metrics["gen/self_bleu4"]) and metrics["gen/ppl"] == 3.0  # NaN stays NaN for a sweeper
    assert metrics["meta/not_measurable"] == {
        "gen/self_bleu4": "n=1", "gen/zipf": "not measurable", "ppl/token": "not measurable (infinite)",
        "gen/rougeL": "not measurable", "gen/mauve": "metrics.mauve=false"}
    assert metrics["meta/caveats"] == {"gen/mauve": "n=4"} and metrics["meta/mauve_features"] == "tiny_llama"


def test_metrics_json_is_valid_json_with_nulls(tmp_path):
    write_metrics(tmp_path / "metrics.json", {"gen/zipf": float("nan"), "gen/ppl": 2.5})

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    stored = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_constants)
    assert stored == {"gen/zipf": None, "gen/ppl": 2.5, "meta/not_measurable": {"gen/zipf": "not measurable"}}


def test_a_run_with_one_sample_writes_valid_json_and_resumes_to_nan(tmp_path, caplog):
    one = ["prompts.num_prompts=1", "prompts.pairs_per_document=1", "logger=wandb"]
    metrics = run(compose(tmp_path / "job", *one))
    text = (tmp_path / "job" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text)
    json.dumps(stored, allow_nan=False)
    nulls = sorted(k for k, v in stored.items() if v is None)
    assert "gen/self_bleu4" in nulls  # Self-BLEU of one sample
    assert sorted(stored["meta/not_measurable"]) >= nulls
    assert all(math.isnan(metrics[k]) for k in nulls)
    logged = read_offline_run(find_offline_runs(tmp_path / "job")[0])
    assert not any(k.startswith("meta/") for k in logged["summary"])  # numbers only; dicts did not crash it
    assert logged["summary"]["gen/ppl"] == pytest.approx(metrics["gen/ppl"])
    assert "W&B log failed" not in caplog.text
    again = rerun(tmp_path / "job", caplog, *one)
    assert "already finished" in caplog.text and all(math.isnan(again[k]) for k in nulls)


# ---------------------------------------------------------------------------------------------- umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "metrics.json", "{}\n")
        write_metrics(tmp_path / "other.json", {"a": 1.0})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "other.json").stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "other.json"]  # no temp file left


def test_a_runs_files_have_the_umasks_mode(finished):
    folder, _ = finished
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "config.yaml", "samples.jsonl"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# ---------------------------------------------------------------------------------------------- locks

HOLDER = textwrap.dedent("""
    import os, sys, time
    from experiments.job_lock import try_lock
    lock = try_lock(sys.argv[1])
    print("locked" if lock else "busy", flush=True)
    time.sleep(float(sys.argv[2]))
    if len(sys.argv) > 3:  # finish the job as a real run does: metrics.json renamed into place, then release
        os.replace(sys.argv[3], os.path.join(sys.argv[1], "metrics.json"))
    lock.release()
""")


def hold(folder: Path, seconds: float, finish_from: Path | None = None) -> subprocess.Popen:
    """Another process that holds `folder`'s lock for `seconds` (then optionally finishes the job)."""
    args = [sys.executable, "-c", HOLDER, str(folder), str(seconds), *([str(finish_from)] if finish_from else [])]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_is_atomic_reentrant_and_released(tmp_path):
    lock = try_lock(tmp_path / "job")
    holder = lock_holder(tmp_path / "job")
    assert holder.info["pid"] == os.getpid() and holder.info["host"] == socket.gethostname() and holder.stale is None
    assert try_lock(tmp_path / "job") is lock  # this process again: counted
    lock.release()
    assert (tmp_path / "job" / LOCK_NAME).exists()
    lock.release()
    assert not (tmp_path / "job" / LOCK_NAME).exists()


def test_a_live_lock_of_another_process_holds_off_the_run(job, caplog):
    folder, _ = job
    (folder / "metrics.json").unlink()
    proc = hold(folder, 30)
    try:
        assert try_lock(folder) is None
        with pytest.raises(JobLockedError, match=rf"locked by pid {proc.pid} on .*lock_wait_s=1"):
            rerun(folder, caplog, "++lock_wait_s=1")
        assert f"waiting for {folder}" in caplog.text and not computed(folder, caplog)
        assert not (folder / "metrics.json").exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_run_waits_for_the_other_process_and_reads_its_result(job, caplog):
    folder, metrics = job
    stash = folder.parent / "metrics.json.elsewhere"
    os.replace(folder / "metrics.json", stash)
    proc = hold(folder, 4, finish_from=stash)  # long enough that a loaded machine still sees it wait
    again = rerun(folder, caplog, "++lock_wait_s=60")
    proc.wait()
    assert "waiting for" in caplog.text and "already finished" in caplog.text and not computed(folder, caplog)
    assert again["gen/ppl"] == metrics["gen/ppl"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def zombie_pid() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()  # killed, not yet reaped: /proc still lists it, as state Z
    return proc


@pytest.mark.parametrize("kind", ["dead", "zombie", "reused-pid", "unreadable"])
def test_a_stale_lock_is_reported_and_taken_over(job, caplog, kind):
    folder, _ = job
    (folder / "metrics.json").unlink()
    lock = folder / LOCK_NAME
    zombie = None
    info = {"host": socket.gethostname(), "since": "2020-01-01T00:00:00+00:00", "pid_start": None}
    if kind == "dead":
        info["pid"] = dead_pid()
    elif kind == "zombie":
        zombie = zombie_pid()
        info["pid"] = zombie.pid
    elif kind == "reused-pid":  # a live pid whose process started at another time than the lock's owner
        info.update(pid=os.getppid(), pid_start="1")
    lock.write_text("garbage{" if kind == "unreadable" else json.dumps(info))
    os.utime(lock, (1e9, 1e9))
    try:
        rerun(folder, caplog)
    finally:
        if zombie:
            zombie.wait()
    assert f"{lock}: stale lock" in caplog.text and computed(folder, caplog)
    assert (folder / "metrics.json").is_file() and not lock.exists()


RACER = textwrap.dedent("""
    import sys, time
    from experiments.job_lock import try_lock
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
    lock = try_lock(sys.argv[1])
    print("locked" if lock else "busy", flush=True)
    time.sleep(1.0)  # hold it while the others try
    if lock:
        lock.release()
""")


def test_processes_racing_for_a_stale_lock_end_with_one_owner(tmp_path):
    import time

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": "x"}))
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = sorted(proc.communicate(timeout=60)[0].strip() for proc in procs)
    assert results == ["busy", "busy", "busy", "locked"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_counts_as_held(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host.example", "since": "x"}))
    assert lock_holder(tmp_path).stale is None and try_lock(tmp_path) is None


def test_bad_lock_wait_is_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"lock_wait_s=-1 is not allowed"):
        run(compose(tmp_path / "job", "++lock_wait_s=-1"))
    assert not (tmp_path / "job").exists()


# ---------------------------------------------------------------------------------------------- callback


def test_the_failed_jobs_callback_judges_only_this_multiruns_jobs(tmp_path, capsys):
    cfg = compose(tmp_path / "job", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    old, rewritten, new = (tmp_path / "sweep" / name / "error.txt" for name in ("old", "rewritten", "new"))
    for path in (old, rewritten):
        write_atomic(path, f"error: {path.parent.name} before\n")
    callback = FailedJobsCallback()
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)  # nothing written meanwhile: the old failures are not this multirun's
    assert "failed job" not in capsys.readouterr().err
    callback.on_multirun_start(cfg)
    write_atomic(rewritten, "error: rewritten again\n")
    write_atomic(new, "error: new\n")
    with pytest.raises(SystemExit):
        callback.on_multirun_end(cfg)
    err = capsys.readouterr().err
    assert "rewritten again" in err and "error: new" in err and "old" not in err


def test_write_atomic_writes_bytes_as_they_are(tmp_path):
    data = bytes(range(256)) + "é\n".encode()
    write_atomic(tmp_path / "features.npy", data)
    write_atomic(tmp_path / "text.txt", "é\n")
    assert (tmp_path / "features.npy").read_bytes() == data
    assert (tmp_path / "text.txt").read_bytes() == "é\n".encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy", "text.txt"]  # no temp file left


def test_sweep_cache_files_keep_their_names(tmp_path):
    # The name is a sha256 of the sorted JSON of what the value depends on: caches written before stay found.
    path = sweep_cache_file(tmp_path, "human", {"texts": ["a"], "seed": 0}, ".json")
    assert path == tmp_path / "cache" / "human-29037f197c7cdc50.json"
    assert sweep_cache_file(tmp_path, "human", {"seed": 0, "texts": ["a"]}, ".json") == path  # key order: same
    assert sweep_cache_file(tmp_path, "human", {"texts": ["b"], "seed": 0}, ".json") != path
