"""The human continuations' metrics are computed once per sweep and read back exactly by the other jobs."""

from __future__ import annotations

import json

from experiments.run import run
from tests.experiments.runner_helpers import TINY_RUN, compose_config

MEASURED_EACH_TIME = ("speed/", "mem/", "meta/fingerprint")


def run_job(tmp_path, name: str, decoding: str) -> dict:
    out = tmp_path / name
    run(compose_config([*TINY_RUN, f"decoding={decoding}", "name=human_cache", "resume=false"], out))
    return json.loads((out / "metrics.json").read_text())


def test_human_metrics_are_cached_across_jobs_and_read_back_exactly(tmp_path):
    computed = run_job(tmp_path, "greedy", "greedy")
    [cache] = (tmp_path / "outputs_root" / "cache").glob("human-*.json")
    sampled = run_job(tmp_path, "top_p", "top_p")  # another method: the same human rows, read from the cache
    again = run_job(tmp_path, "greedy_again", "greedy")
    human = {k: v for k, v in computed.items() if k.startswith("human/")}
    assert len(human) > 30 and all(sampled[k] == v and again[k] == v for k, v in human.items())
    assert {k for k in computed if not k.startswith(MEASURED_EACH_TIME) and computed[k] != again[k]} == set()
    # A broken cache file is moved aside and the metrics computed again, the same.
    cache.write_text("{not json")
    redone = run_job(tmp_path, "greedy_redone", "greedy")
    assert all(redone[k] == v for k, v in human.items())
    assert json.loads(cache.read_text())["human/ppl"] == computed["human/ppl"]
    assert list(cache.parent.glob("human-*.json.corrupt-*"))
