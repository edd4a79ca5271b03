"""One run end to end, in process: real config, real W&B offline files, tiny model."""

import json
import math

import pytest

from experiments.logging import find_offline_runs, read_offline_run
from experiments.run import run
from tests.experiments.runner_helpers import TINY_RUN, compose_config

GEN_KEYS = ["distinct_1", "distinct_2", "distinct_3", "distinct_4", "rep_2", "rep_3", "rep_4", "diversity",
            "self_bleu4", "zipf", "repetition_pct", "ppl", "mean_length"]
REQUIRED_KEYS = (
    ["ppl/token", "ppl/word", "ppl/byte", "ppl/bpb"]
    + [f"gen/{k}" for k in GEN_KEYS + ["mauve", "bleu", "rougeL", "chrf"]]
    + [f"human/{k}" for k in GEN_KEYS]
    + ["speed/prefill_tok_s", "speed/decode_tok_s", "speed/ttft_s", "mem/peak_rss_mb"]
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "job"
    cfg = compose_config([*TINY_RUN, "decoding=top_p", "name=test_run"], out)
    metrics = run(cfg)
    return cfg, out, metrics


def test_run_writes_config_samples_and_metrics(finished_run):
    cfg, out, metrics = finished_run
    assert (out / "config.yaml").is_file()
    stored = json.loads((out / "metrics.json").read_text())
    missing = [k for k in REQUIRED_KEYS if k not in stored]
    assert not missing, missing
    assert all(isinstance(stored[k], float) for k in REQUIRED_KEYS)
    assert stored["ppl/token"] > 1 and stored["speed/decode_tok_s"] > 0 and 0 <= stored["gen/mauve"] <= 1
    assert stored["gen/ppl"] == metrics["gen/ppl"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and len({s["doc_id"] for s in samples}) >= 2
    for sample in samples:
        assert {"prompt", "continuation", "human", "token_logprobs", "token_logprobs_raw", "finish_reason"} <= set(sample)
        assert len(sample["token_logprobs"]) == len(sample["token_ids"]) <= 8
        assert all(lp <= 0 for lp in sample["token_logprobs_raw"])


def test_wandb_offline_files_hold_the_metrics(finished_run):
    cfg, out, metrics = finished_run
    runs = find_offline_runs(out / "wandb")
    assert len(runs) == 1
    logged = read_offline_run(runs[0])
    assert logged["group"] == "test_run"
    assert logged["config"]["decoding"]["top_p"] == 0.95
    for key in ("ppl/token", "gen/distinct_2", "speed/decode_tok_s"):
        assert math.isclose(logged["summary"][key], metrics[key], rel_tol=1e-9)
    assert logged["summary"]["samples/nrows"] == 4  # the samples table
    assert any(k.startswith("charts/perplexities") for k in logged["summary"])  # the charts W&B shows


def test_rerun_resumes_from_metrics_json(finished_run, caplog):
    cfg, out, metrics = finished_run
    before = (out / "metrics.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="experiments"):  # the resume line is logged (run.log under Hydra)
        again = run(cfg)
    assert (out / "metrics.json").stat().st_mtime_ns == before
    assert again["gen/ppl"] == metrics["gen/ppl"]
    assert "already finished" in caplog.text


def test_same_config_and_seed_give_same_samples(finished_run, tmp_path):
    cfg, out, metrics = finished_run
    cfg2 = compose_config([*TINY_RUN, "decoding=top_p", "name=test_run", "logger=none"], tmp_path / "again")
    metrics2 = run(cfg2)
    assert (tmp_path / "again" / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()
    for key in ("gen/ppl", "gen/distinct_2", "gen/self_bleu4", "gen/mauve", "ppl/token"):
        assert metrics2[key] == metrics[key]


def test_a_changed_config_is_not_taken_for_finished(finished_run):
    cfg, out, _ = finished_run
    from experiments.run import finished_metrics, fingerprint

    changed = compose_config([*TINY_RUN, "decoding=top_p", "decoding.top_p=0.5"], out)
    assert finished_metrics(out, expected=fingerprint(changed)) is None


@pytest.mark.parametrize("overrides, message", [
    (["decoding.top_p=1.5"], "top_p=1.5 is not allowed"),
    (["decoding=greedy", "+decoding.num_return_sequences=2"], "num_return_sequences=2"),
    (["decoding=top_k", "decoding.top_k=-5"], "top_k=-5 is not allowed"),
    (["dataset=files", "dataset.path=/nonexistent/docs.txt"], "/nonexistent/docs.txt"),
    # Known only once the model is loaded (the tiny Llama's vocabulary is SmolLM2's 49152 tokens): still before
    # perplexity runs or its cache is written.
    (["+decoding.eos_token_id=99999"], r"eos_token_id=\[?99999"),
    (["+decoding.pad_token_id=49152"], r"pad_token_id=\[?49152"),
    (["decoding.max_new_tokens=4000"], "max_new_tokens=4000"),
])
def test_bad_input_fails_before_writing_anything(overrides, message, tmp_path):
    cfg = compose_config([*TINY_RUN, "decoding=top_p", *overrides], tmp_path / "job")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(cfg)
    assert not (tmp_path / "job" / "metrics.json").exists() and not (tmp_path / "job" / "samples.jsonl").exists()
    assert not list((tmp_path / "outputs_root").glob("cache/*"))  # no perplexity cache either


def documented_key_patterns() -> list[str]:
    """The keys of the README's metrics table: `a/b`, ranges `a/x_1..4`, globs `human/*`."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| keys | meaning |"):].split("\n\n", 1)[0]
    patterns = []
    for row in table.splitlines()[2:]:
        for key in re.findall(r"`([^`]+)`", row.split("|")[1]):
            ranged = re.fullmatch(r"(.*_)(\d)\.\.(\d)", key)
            if ranged:
                patterns += [f"{ranged[1]}{n}" for n in range(int(ranged[2]), int(ranged[3]) + 1)]
            else:
                patterns.append(key)
    return patterns


def test_every_metrics_key_is_documented_in_the_readme(finished_run):
    from fnmatch import fnmatchcase

    cfg, out, _ = finished_run
    patterns = documented_key_patterns()
    assert "gen/distinct_3" in patterns and "human/*" in patterns  # the parser reads ranges and globs
    stored = json.loads((out / "metrics.json").read_text())
    undocumented = [k for k in stored if not any(fnmatchcase(k, p) for p in patterns)]
    assert not undocumented, f"metrics.json keys missing from the README's metrics table: {undocumented}"


def test_console_summary_names_not_measurable_values_and_marks_caveats(finished_run, capsys):
    from experiments.run import print_summary

    cfg, _, metrics = finished_run
    shown = {**metrics, "gen/self_bleu4": float("nan"), "meta/not_measurable": {"gen/self_bleu4": "n=1"},
             "meta/caveats": {"gen/mauve": "8 samples per side"}}
    print_summary(cfg, shown)
    err = capsys.readouterr().err
    assert "not measurable (n=1)" in err and "nan" not in err.lower().replace("not measurable", "")
    assert "† gen/mauve: 8 samples per side" in err
