"""Fixtures for the analysis tests: hand-written run folders (fast) and one real tiny sweep (slow, shared).

Hand-written folders have exactly the files a job writes (`config.yaml` with the runner's layout,
`metrics.json` with its keys), with numbers chosen so that a test can tell every run and every human
row apart. The real sweep runs `python -m experiments.run -m` on the tiny random Llama, once per test
session, for the tests that must see what the runner really writes (including W&B offline files).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.experiments.runner_helpers import CORPUS, run_cli

HUMAN = {"human/ppl": 21.5, "human/self_bleu4": 0.31, "human/zipf": 0.93, "human/repetition_pct": 0.0,
         "human/rep_2": 4.0, "human/rep_3": 1.0, "human/rep_4": 0.5, "human/distinct_1": 0.5,
         "human/distinct_2": 0.8, "human/distinct_3": 0.9, "human/distinct_4": 0.95, "human/diversity": 0.94,
         "human/mean_length": 64.0}


def config_for(decoding: dict, name: str = "study", seed: int = 0, cache: str = "dynamic", batch_size: int = 8,
               model: str = "tiny_llama") -> dict:
    """A resolved config shaped like the runner's `config.yaml`."""
    return {
        "model": {"_target_": "experiments.models.load_model", "name": model, "device": "cpu", "dtype": "float32"},
        "dataset": {"_target_": "experiments.data.load_documents", "source": "sotu", "split": "test", "limit": None},
        "task": {"perplexity": True, "generate": True},
        "decoding": {**decoding, "max_new_tokens": 64},
        "cache": {"setting": cache, "max_cache_len": None},
        "logger": {"_target_": "experiments.logging.NullLogger"},
        "paths": {"root_dir": ".", "output_root": "outputs", "output_dir": "somewhere"},
        "name": name, "seed": seed, "optimized_metric": "gen/ppl", "resume": True,
        "prompts": {"num_prompts": 32, "prompt_tokens": 32, "continuation_tokens": 64, "mode": "window",
                    "pairs_per_document": 16, "batch_size": batch_size},
        "perplexity": {"max_length": 512, "stride": None, "batch_size": 8},
        "metrics": {"mauve": True, "self_bleu_sample_size": 100, "tokenization": "model"},
        "scorer": None,
    }


def metrics_for(ppl: float, mauve: float | None = 0.5, rep: float = 10.0, tok_s: float = 100.0,
                human: dict | None = None) -> dict:
    """A metrics.json whose numbers follow from a few knobs (distinct falls as repetition rises)."""
    out = {"ppl/token": 18.25, "ppl/word": 30.5, "ppl/byte": 1.9, "ppl/bpb": 0.93, "ppl/tokens": 12000.0,
           "gen/ppl": ppl, "gen/self_bleu4": 0.2 + rep / 200, "gen/zipf": 1.0 + rep / 100,
           "gen/repetition_pct": rep, "gen/rep_2": rep * 2, "gen/rep_3": rep * 1.5, "gen/rep_4": rep,
           "gen/distinct_1": 0.6 - rep / 500, "gen/distinct_2": 0.9 - rep / 200, "gen/distinct_3": 0.95 - rep / 300,
           "gen/distinct_4": 0.97 - rep / 400, "gen/diversity": 1 - rep / 100, "gen/mean_length": 64.0,
           "gen/bleu": 1.5, "gen/chrf": 20.0, "gen/rougeL": 0.1, "gen/samples": 32.0,
           "speed/prefill_tok_s": tok_s * 10, "speed/decode_tok_s": tok_s, "speed/tok_s": tok_s * 0.9,
           "speed/ttft_s": 0.05, "mem/peak_rss_mb": 900.0, **(human or HUMAN)}
    if mauve is not None:
        out["gen/mauve"] = mauve
    return out


def write_job(folder: Path, config: dict, metrics: dict | None) -> Path:
    """A job folder as the runner leaves it (metrics.json with the config's fingerprint, unless `metrics`
    names one); metrics=None leaves it unfinished."""
    from experiments.jobs import config_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra").mkdir(exist_ok=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        metrics = {"meta/fingerprint": config_fingerprint(config), **metrics}
        (folder / "metrics.json").write_text(json.dumps(metrics, allow_nan=False))  # valid JSON, as the runner's
    return folder


# Holtzman et al.'s methods, with numbers in the paper's pattern (not the paper's numbers).
HOLTZMAN = {
    "greedy": ({"name": "greedy", "do_sample": False}, metrics_for(1.5, 0.1, rep=70.0, tok_s=200)),
    "beam16": ({"name": "beam16", "do_sample": False, "num_beams": 16, "length_penalty": 1.0,
                "early_stopping": False}, metrics_for(1.4, 0.05, rep=80.0, tok_s=40)),
    "sample": ({"name": "sample", "do_sample": True, "top_k": 0}, metrics_for(60.0, 0.6, rep=0.2)),
    "temperature": ({"name": "temperature", "do_sample": True, "top_k": 0, "temperature": 0.9},
                    metrics_for(30.0, 0.7, rep=0.5)),
    "top_k": ({"name": "top_k", "do_sample": True, "top_k": 40}, metrics_for(9.0, 0.75, rep=1.0)),
    "top_k640": ({"name": "top_k640", "do_sample": True, "top_k": 640}, metrics_for(20.0, 0.8, rep=0.3)),
    "top_k40_t07": ({"name": "top_k40_t07", "do_sample": True, "top_k": 40, "temperature": 0.7},
                    metrics_for(4.0, 0.5, rep=3.0)),
    "top_p": ({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": 0.95}, metrics_for(22.0, 0.9, rep=0.4)),
}


@pytest.fixture()
def holtzman_dir(tmp_path) -> Path:
    """A multirun folder with the eight methods of experiment=holtzman_table1, hand-written."""
    root = tmp_path / "multirun" / "holtzman"
    for name, (decoding, metrics) in HOLTZMAN.items():
        write_job(root / f"decoding={name}", config_for(decoding, name="holtzman"), metrics)
    return root


@pytest.fixture()
def top_p_dir(tmp_path) -> Path:
    """A top-p sweep (three points) plus a batch-size pair and a cache triple at p=0.9, hand-written."""
    root = tmp_path / "multirun" / "sweep"
    for p, ppl, rep in ((0.5, 4.0, 8.0), (0.9, 12.0, 2.0), (1.0, 40.0, 0.5)):
        write_job(root / f"top_p={p}", config_for({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": p},
                                                  name="sweep"), metrics_for(ppl, 0.5 + p / 3, rep=rep))
    return root


TINY_SWEEP = ["-m", "decoding=top_p", "decoding.top_p=0.5,0.9,1.0", "name=tiny", "task=both", "metrics.mauve=false",
              "model=tiny_llama", "dataset=files", "dataset.path=corpus", "prompts.num_prompts=4",
              "prompts.pairs_per_document=2", "prompts.prompt_tokens=8", "prompts.continuation_tokens=8",
              "perplexity.max_length=128"]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """A real three-job top-p multirun on the tiny random Llama (W&B offline on): its multirun folder."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    shutil.copytree(CORPUS, root / "corpus")
    result = run_cli(TINY_SWEEP, root)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = root / "outputs" / "multirun" / "tiny"
    assert len(list(sweep.glob("*/metrics.json"))) == 3
    return sweep
