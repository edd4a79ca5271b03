"""Helpers shared by the runner tests: compose the real config, run real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
REPO = Path(__file__).resolve().parents[2]

# A run small enough for a test: tiny random Llama, one document, a handful of short prompts.
CORPUS = REPO / "tests" / "experiments" / "data" / "corpus"
TINY_RUN = [
    "model=tiny_llama",
    "dataset=files",
    f"dataset.path={CORPUS}",
    "prompts.num_prompts=4",
    "prompts.pairs_per_document=2",
    "prompts.batch_size=2",
    "prompts.prompt_tokens=8",
    "prompts.continuation_tokens=8",
    "perplexity.max_length=128",
    "perplexity.batch_size=16",
]


def compose_config(overrides: list[str], output_dir: Path):
    """The config exactly as `python -m experiments.run <overrides>` would see it, writing to output_dir."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.output_root = str(output_dir.parent / "outputs_root")
    return cfg


def run_cli(args: list[str], root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m experiments.run <args>` in a subprocess whose outputs go under `root`."""
    env = dict(os.environ, DECODELAB_ROOT=str(root), WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_same_samples(batched: list[dict], alone: list[dict]) -> None:
    """A batched sweep's samples against the same configuration run alone: the same tokens, texts and
    finish reasons; log-probabilities to float32 rounding.

    A decode step over a bigger batch may sum a matrix product in another order (decoding/sweep.py), so
    raw log-probs may differ in their last float32 digits (tolerance as tests/decoding/test_sweep.py's;
    seen: 4e-6 on the tiny Llama, 1.6e-5 on SmolLM2). The processed ones may differ more: such rounding
    can move a near-tied token across the top-p cut, which changes the processed distribution's
    normaliser by that token's small mass (seen: 1.5e-4 on the tiny Llama, whose 49k-token distribution
    is nearly flat). The chosen tokens do not change.
    """
    assert len(batched) == len(alone) > 0
    for b, a in zip(batched, alone):
        b, a = dict(b), dict(a)
        assert b.pop("token_logprobs_raw") == pytest.approx(a.pop("token_logprobs_raw"), rel=1e-5, abs=1e-5)
        assert b.pop("token_logprobs") == pytest.approx(a.pop("token_logprobs"), abs=5e-3)
        assert b == a


def sweep_and_alone(cfgs: list) -> list:
    """Generate the configurations as one batched sweep (one model, the first config's prompts), check each
    configuration's samples equal the same configuration generated alone; returns (batched, alone) run pairs."""
    from experiments.generation import generate_continuations, generate_continuations_sweep
    from experiments.run import build, decoding_params, generation_options, prompt_pairs

    first = cfgs[0]
    model, tokenizer = build(first.model)
    pairs = prompt_pairs(first, build(first.dataset), tokenizer)
    options = generation_options(first)
    runs = generate_continuations_sweep(model, tokenizer, pairs, [decoding_params(c) for c in cfgs], **options,
                                        progress=False)
    alones = [generate_continuations(model, tokenizer, pairs, decoding_params(cfg), **options, progress=False)
              for cfg in cfgs]
    for batched, alone in zip(runs, alones):
        assert len(batched.samples) == len(pairs)
        assert_same_samples(batched.samples, alone.samples)
    return list(zip(runs, alones))


def run_and_read(base: list[str], out: Path, *overrides: str) -> tuple[dict, list[dict]]:
    """Run the runner in-process on `base` + `overrides` into `out`: (its metrics.json, its samples.jsonl rows)."""
    import json

    from experiments.run import run

    run(compose_config([*base, *overrides], out))
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def direct_generation(base: list[str], out: Path, extra=lambda keywords: {}):
    """A function keywords -> the token ids of each sample `generate_continuations(keywords)` writes, on the
    runner's model and prompts for `base` (cached per keywords); `extra(keywords)` adds objects (a model)."""
    import torch

    from experiments.generation import generate_continuations
    from experiments.run import build, prompt_pairs

    cfg = compose_config(base, out)
    torch.manual_seed(cfg.seed)
    model, tokenizer = build(cfg.model)
    pairs = prompt_pairs(cfg, build(cfg.dataset), tokenizer)
    done: dict[str, list] = {}

    def generate(keywords):
        key = repr(sorted(keywords.items()))
        if key not in done:
            gen = generate_continuations(model, tokenizer, pairs, {**keywords, **extra(keywords)},
                                         batch_size=cfg.prompts.batch_size, seed=cfg.seed, progress=False)
            done[key] = [s["token_ids"] for s in gen.samples]
        return done[key]

    return generate
