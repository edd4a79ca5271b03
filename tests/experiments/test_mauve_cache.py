"""MAUVE's human-side features are computed once per sweep, read back by the other jobs, and change nothing."""

from __future__ import annotations

import json

import numpy as np

from experiments.run import run
from tests.experiments.runner_helpers import TINY_RUN, compose_config


def run_job(tmp_path, name: str, decoding: str) -> dict:
    out = tmp_path / name
    run(compose_config([*TINY_RUN, f"decoding={decoding}", "name=mauve_cache", "resume=false", "metrics.mauve=true"],
                       out))
    return json.loads((out / "metrics.json").read_text())


def test_human_features_are_cached_read_back_and_give_the_same_mauve(tmp_path):
    first = run_job(tmp_path, "top_p", "top_p")
    [cache] = (tmp_path / "outputs_root" / "cache").glob("mauve-features-*.npy")
    features = np.load(cache)
    assert features.dtype == np.float32 and features.ndim == 2 and len(features) == first["gen/samples"]
    again = run_job(tmp_path, "top_p_again", "top_p")  # read from the cache: the same MAUVE and interval
    for key in ("gen/mauve", "gen/mauve/ci95_low", "gen/mauve/ci95_high"):
        assert again[key] == first[key], key
    # The file is what the job reads: other features there give another MAUVE.
    np.save(cache, np.random.default_rng(0).normal(size=features.shape).astype(np.float32))
    assert run_job(tmp_path, "top_p_other", "top_p")["gen/mauve"] != first["gen/mauve"]
    # A broken file is moved aside and the features computed again: the first MAUVE.
    cache.write_bytes(b"not an npy file")
    redone = run_job(tmp_path, "top_p_redone", "top_p")
    assert redone["gen/mauve"] == first["gen/mauve"]
    assert np.array_equal(np.load(cache), features)
    assert list(cache.parent.glob("mauve-features-*.npy.corrupt-*"))
