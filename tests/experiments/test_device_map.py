"""Models too big for one device: `model.device_map` / `model.tp_plan` pass through to from_pretrained, the loop and
its caches work on the split model, and bad values are refused by name before any work.

What a CPU-only machine can test: a tiny Llama split by an explicit device map over "cpu" and "disk" (accelerate
keeps the disk modules' weights on the meta device and loads them from `offload_folder` for each forward, through
the same hooks that move activations between GPUs). Its tokens must equal the unsplit model's, token for token,
greedy and sampled, with every cache; and tp_plan=auto in two CPU processes under torchrun (gloo). Not testable
here: layers on different GPUs (each cache layer on its own device, logits coming back from the last one) and
tensor parallelism on GPUs; see the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import decoding
from experiments.models import load_model
from tests.experiments.runner_helpers import TINY_RUN, compose_config, run_and_read, run_cli

# Layer 0 computes on the CPU, layer 1, the final norm and the 49k-row lm_head are read from disk at each forward.
# The embeddings stay on "cpu": the prompts go to the model's first weights (see test_offloaded_embeddings_...).
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "disk",
         "lm_head": "disk"}


def split_args(device_map: dict) -> list[str]:
    return ["model.device=null", "model.device_map={" + ",".join(f"{k}:{v}" for k, v in device_map.items()) + "}"]


# The runner scores texts with a fused head that reads lm_head.weight itself (experiments/perplexity.py), which is
# a meta stand-in while lm_head is offloaded: its runs keep lm_head computing (test_perplexity_with_the_head_on_disk)
RUN_SPLIT = {**SPLIT, "lm_head": "cpu"}
SPLIT_ARGS = split_args(SPLIT)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(unsplit, split, tokenizer): the same tiny_llama (seed 0) on the CPU, and split over cpu + disk."""
    whole, tokenizer = load_model("tiny_llama")
    offload = tmp_path_factory.mktemp("offload")
    split, _ = load_model("tiny_llama", device_map=SPLIT, offload_folder=str(offload))
    return whole, split, tokenizer


def test_the_split_model_is_really_split(models):
    _, split, _ = models
    assert split.hf_device_map == SPLIT
    offloaded = {name for name, p in split.named_parameters() if p.device.type == "meta"}
    assert "lm_head.weight" in offloaded and any(n.startswith("model.layers.1.") for n in offloaded)
    assert not any(n.startswith(("model.embed_tokens", "model.layers.0.")) for n in offloaded)
    assert split.device == torch.device("cpu")  # where the loop puts the prompts


def prompts(tokenizer):
    batch = tokenizer(["The state of the Union is", "Mr. Speaker, Madam Vice President, our First Lady"],
                      return_tensors="pt", padding=True)  # left-padded: the mask matters
    return batch.input_ids, batch.attention_mask


DECODES = {
    "greedy": {"do_sample": False},
    "sampled": {"do_sample": True, "top_k": 50, "top_p": 0.9, "temperature": 0.8},
    "sampled-n2": {"do_sample": True, "num_return_sequences": 2},  # one prefill, rows copied: KVCache.select_rows
    "beam": {"num_beams": 3},  # rows reordered every step: KVCache.reorder
}


@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
@pytest.mark.parametrize("decode", list(DECODES))
def test_split_model_generates_the_unsplit_tokens(models, decode, cache):
    whole, split, tokenizer = models
    ids, mask = prompts(tokenizer)
    out = {}
    for name, model in (("whole", whole), ("split", split)):
        out[name] = decoding.generate(model, ids, mask, generator=torch.Generator().manual_seed(7), max_new_tokens=12,
                                      cache=cache, **DECODES[decode])
    assert out["split"].sequences.shape[1] > ids.shape[1]
    assert torch.equal(out["split"].sequences, out["whole"].sequences)
    assert torch.allclose(out["split"].token_logprobs_raw, out["whole"].token_logprobs_raw, atol=1e-5)


def runs_whole_and_split(tmp_path, device_map: dict, *args: str):
    base = [*TINY_RUN, "decoding=top_p", "logger=none", "metrics.mauve=false", *args]
    whole = run_and_read(base, tmp_path / "whole")
    split = run_and_read(base, tmp_path / "split", *split_args(device_map),
                         f"model.offload_folder={tmp_path / 'offload'}")
    return whole, split


def test_the_runner_splits_the_model_and_writes_the_same_samples(tmp_path):
    """model.device_map from the command line (a Hydra DictConfig) through validate, instantiate and load_model:
    the same samples, and the same perplexities (teacher-forced scoring runs on the split model too)."""
    (whole_metrics, whole), (split_metrics, split) = runs_whole_and_split(tmp_path, RUN_SPLIT, "task=both")
    assert [s["token_ids"] for s in split] == [s["token_ids"] for s in whole] and len(split) == 4
    for key in ("ppl/token", "gen/ppl", "human/ppl"):
        assert split_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-5), key


def test_perplexity_with_the_head_on_disk(tmp_path):
    """An offloaded lm_head has a meta placeholder weight: the fused scoring head must not read it."""
    (whole_metrics, _), (split_metrics, _) = runs_whole_and_split(tmp_path, SPLIT, "task=both")
    assert split_metrics["ppl/token"] == pytest.approx(whole_metrics["ppl/token"], rel=1e-5)


def test_offloaded_embeddings_are_refused_with_what_to_do(tmp_path):
    """Prompts go to the model's first weights; offloaded, those are on the meta device: a clear error at load."""
    with pytest.raises(ValueError, match=r"model\.embed_tokens.*map model\.embed_tokens to a device"):
        load_model("tiny_llama", device_map={**SPLIT, "model.embed_tokens": "disk"}, offload_folder=str(tmp_path))


@pytest.mark.parametrize("kwargs, named", [
    ({"device_map": "fastest"}, "model.device_map='fastest'"),
    ({"device_map": {"lm_head": "gpu"}}, "lm_head='gpu'"),
    ({"device_map": {"lm_head": "disk"}}, "model.offload_folder=null"),
    ({"device_map": "auto", "device": "cpu"}, "model.device='cpu' and model.device_map='auto'"),
    ({"tp_plan": "colwise"}, "model.tp_plan='colwise'"),
    ({"offload_folder": "/tmp/x"}, "model.offload_folder='/tmp/x'"),
])
def test_load_model_refuses_bad_placement_before_loading(kwargs, named, monkeypatch):
    import experiments.models as models_module

    def no_loading(*args, **kw):
        raise AssertionError("a model was loaded before the check")

    monkeypatch.setattr(models_module, "load_tiny", no_loading)  # the check must come first
    with pytest.raises(ValueError) as err:
        load_model("tiny_llama", **kwargs)
    assert named in str(err.value)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

BAD = [
    pytest.param(["model.device_map=fastest"], ["model.device_map='fastest'", "balanced_low_0"], id="unknown-strategy"),
    pytest.param(["model.device_map=5"], ["model.device_map=5", "mapping"], id="not-a-map"),
    pytest.param(["model.device=null", "model.device_map={lm_head:gpu}"], ["lm_head='gpu'", "cuda:<index>"],
                 id="bad-device-in-map"),
    pytest.param(["model.device=null", "model.device_map={lm_head:cuda:0}"], ["lm_head='cuda:0'", "CUDA"],
                 id="gpu-in-map-without-cuda", marks=NO_CUDA),
    pytest.param(["model.device=null", "model.device_map={lm_head:disk}"],
                 ["model.device_map", "'disk'", "model.offload_folder=null"], id="disk-without-folder"),
    pytest.param(["model.device_map=auto"], ["model.device='cpu'", "model.device_map='auto'", "model.device=null"],
                 id="device-and-device-map"),
    pytest.param(["model.device=null"], ["model.device=null"], id="device-null-alone"),
    pytest.param(["model.offload_folder=/tmp/x"], ["model.offload_folder='/tmp/x'", "model.device_map"],
                 id="folder-without-map"),
    pytest.param(["model.device=null", "model.tp_plan=colwise"], ["model.tp_plan='colwise'", "auto"],
                 id="unknown-tp-plan"),
    pytest.param(["model.device=null", "model.tp_plan=auto"], ["model.tp_plan='auto'", "torchrun"],
                 id="tp-plan-without-torchrun"),
    pytest.param(["model.device=null", "model.tp_plan=auto", "model.device_map=auto"],
                 ["model.tp_plan='auto'", "model.device_map='auto'"], id="tp-plan-and-device-map"),
    pytest.param(["model.device=null", "model.device_map=auto", "draft=tiny_llama", "decoding=speculative_draft"],
                 ["draft=tiny_llama", "split model"], id="draft-with-split-model"),
]


@pytest.mark.parametrize("args, named", BAD)
def test_bad_placement_is_refused_by_the_config_check(args, named, tmp_path, monkeypatch):
    from experiments.validate import ConfigError, check_config

    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    cfg = compose_config([*TINY_RUN, *args], tmp_path / "job")
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    for text in named:
        assert text in str(err.value), str(err.value)


def test_good_placements_pass_the_config_check(tmp_path, monkeypatch):
    from experiments.validate import check_config

    for args in (["model.device=null", "model.device_map=auto"],
                 ["model=hf", "model.name=x", "model.device_map=balanced"],  # hf's device: auto goes with a map
                 [*SPLIT_ARGS, "model.offload_folder=/tmp/offload"]):
        check_config(compose_config([*TINY_RUN, *args], tmp_path / "job"))
    for name, value in zip(TORCHRUN_ENV, ("0", "2", "0")):  # as torchrun sets them; nothing is loaded here
        monkeypatch.setenv(name, value)
    check_config(compose_config([*TINY_RUN, "model.device=null", "model.tp_plan=auto"], tmp_path / "job"))


@pytest.mark.slow
@pytest.mark.parametrize("args, named", [BAD[0], BAD[4], BAD[9]])
def test_bad_placement_on_the_command_line_exits_2_and_writes_nothing(args, named, tmp_path, monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    result = run_cli([*TINY_RUN, *args], tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for text in named:
        assert text in lines[0]
    assert not any(tmp_path.iterdir()), "the command wrote files"


TP_SCRIPT = '''
import json, os, sys
import torch
import decoding
from experiments.models import load_model

split, tokenizer = load_model("tiny_llama", tp_plan="auto")
whole, _ = load_model("tiny_llama")
ids = tokenizer(["The state of the Union is", "Mr. Speaker"], return_tensors="pt", padding=True)
sharded = type(split.model.layers[0].self_attn.q_proj.weight).__name__
same = {}
for name, keywords in {"greedy": {}, "sampled": {"do_sample": True}}.items():
    for cache in ("dynamic", "static"):
        out = [decoding.generate(m, ids.input_ids, ids.attention_mask, generator=torch.Generator().manual_seed(3),
                                 max_new_tokens=8, cache=cache, **keywords).sequences for m in (split, whole)]
        same[f"{name}-{cache}"] = torch.equal(*out)
# a file per rank, not stdout: two workers share torchrun's stdout pipe, and one run lost a rank's line there
with open(f"rank{os.environ['RANK']}.json", "w") as out:
    json.dump({"rank": os.environ["RANK"], "sharded": sharded, "same": same}, out)
'''


@pytest.mark.slow
def test_tensor_parallel_under_torchrun_on_cpu(tmp_path):
    """tp_plan=auto in two CPU processes (torchrun, gloo): the weights are sharded DTensors, the tokens are the
    unsplit model's. What a GPU run adds (NCCL, one GPU per rank) is not tested here."""
    import json
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "tp.py"
    script.write_text(TP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # --standalone: a free rendezvous port; its own session, so a timeout ends the workers too, not only torchrun
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{stderr[-3000:]}")
    assert launcher.returncode == 0, stderr[-3000:]
    rows = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in rows) == ["0", "1"], f"stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-2000:]}"
    for row in rows:
        assert row["sharded"] == "DTensor" and all(row["same"].values()), row
