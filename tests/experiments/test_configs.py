"""Every config file composes, every `_target_` in it instantiates, and a study file's (experiment/, sweep/)
own values survive composition and show in `--cfg job`."""

from enum import Enum
from pathlib import Path

import pytest
import yaml
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from experiments.run import build as instantiate
from tests.experiments.runner_helpers import CONF_DIR, compose_config, run_cli

GROUPS = ["model", "draft", "amateur", "dataset", "task", "decoding", "cache", "logger", "sweep", "experiment"]
# Options that need a value the user must give (???): what a user would pass.
REQUIRED = {
    "model=hf": ["model.name=/nonexistent/local/model"],
    "draft=hf": ["draft.name=/nonexistent/local/draft"],
    "amateur=hf": ["amateur.name=/nonexistent/local/amateur"],
    "dataset=files": ["dataset.path=PLACEHOLDER"],
    "dataset=hub": ["dataset.name=some/dataset"],
}


def options():
    for group in GROUPS:
        for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            yield f"{group}={path.stem}"


@pytest.mark.parametrize("choice", list(options()))
def test_every_config_composes(choice, tmp_path):
    overrides = [choice, *[o.replace("PLACEHOLDER", str(tmp_path / "docs.txt")) for o in REQUIRED.get(choice, [])]]
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.model._target_ and cfg.dataset._target_ and cfg.logger._target_
    assert cfg.decoding.max_new_tokens == cfg.prompts.continuation_tokens
    if choice.startswith("decoding="):
        assert cfg.decoding.name == choice.split("=")[1]


@pytest.mark.parametrize("choice", [c for c in options() if c.split("=")[0] in ("logger", "dataset", "model")])
def test_every_target_instantiates(choice, tmp_path):
    (tmp_path / "docs.txt").write_text("Fellow citizens, the state of the Union is strong.\n")
    overrides = [choice, *[o.replace("PLACEHOLDER", str(tmp_path / "docs.txt")) for o in REQUIRED.get(choice, [])]]
    cfg = compose_config(overrides, tmp_path / "run")
    group = choice.split("=")[0]
    node = cfg[group]
    if choice in ("dataset=wikitext2", "dataset=hub", "model=hf"):
        # Real hub code paths: here (no network) they fail with an error that says so.
        with pytest.raises((ConnectionError, OSError, ValueError), match="(?i)hub|network|reach|local folder"):
            instantiate(node)
        return
    obj = instantiate(node)
    assert obj is not None
    if group == "model":
        model, tokenizer = obj
        assert model.config.vocab_size == len(tokenizer)
    if group == "dataset":
        assert len(obj) >= 1 and "text" in obj.column_names


def test_the_batched_launcher_is_the_default(tmp_path):
    cfg = compose_config(["sweep=top_p"], tmp_path / "run")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.decodelab_launcher.BatchedLauncher"


@pytest.mark.parametrize("launcher", ["batched", "basic", "joblib", "submitit_local", "submitit_slurm"])
def test_launchers_compose(launcher, tmp_path):
    cfg = compose_config([f"hydra/launcher={launcher}", "sweep=top_k"], tmp_path / "run")
    target = cfg.hydra.launcher._target_
    assert launcher.split("_")[0] in target.lower()
    assert cfg.hydra.sweeper.params["decoding.top_k"] == "1,10,40,100,640"


def test_holtzman_experiment_sweeps_the_papers_methods(tmp_path):
    cfg = compose_config(["experiment=holtzman_table1"], tmp_path / "run")
    methods = cfg.hydra.sweeper.params["decoding"].split(",")
    assert methods == ["greedy", "beam16", "sample", "temperature", "top_k", "top_k640", "top_k40_t07", "top_p",
                       "min_p", "typical", "eta", "top_n_sigma", "contrastive_search", "dola", "mbr"]
    assert cfg.hydra.sweeper.params["dataset"] == "sotu_seen,sotu"  # seen and held-out speeches side by side
    assert (cfg.prompts.prompt_tokens, cfg.prompts.continuation_tokens, cfg.prompts.mode) == (40, 128, "paragraph")
    for method in methods:
        decoding = compose_config(["experiment=holtzman_table1", f"decoding={method}"], tmp_path / "r").decoding
        assert decoding.name == method


# ------------------------------------------------------------------ experiment/ and sweep/ values survive

def own_values(path: Path) -> tuple[dict, dict]:
    """A config file's own leaf values ({key path (a tuple): value}) and its group overrides ({group: option}).

    Key paths are tuples: a sweeper's params have dotted keys of their own (`decoding.top_p`)."""
    data = yaml.safe_load(path.read_text())
    overrides = {}
    for entry in data.pop("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                if key.startswith("override /"):
                    overrides[key.removeprefix("override /")] = option
    leaves = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, (*prefix, key))
            else:
                leaves[(*prefix, key)] = value

    walk(data, ())
    return leaves, overrides


STUDY_FILES = sorted([*(Path(CONF_DIR) / "experiment").glob("*.yaml"), *(Path(CONF_DIR) / "sweep").glob("*.yaml")])


def composed_value(cfg, key: tuple):
    value = cfg
    for part in key:
        value = value[part]
    return value.name if isinstance(value, Enum) else value  # hydra.mode is a RunMode


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: f"{p.parent.name}={p.stem}")
def test_a_study_files_own_values_survive_composition(path, tmp_path):
    leaves, overrides = own_values(path)
    name = leaves[("name",)]
    assert name == path.stem if path.parent.name == "experiment" else name.endswith(path.stem)
    cfg = compose_config([f"{path.parent.name}={path.stem}"], tmp_path / "run")
    for key, value in leaves.items():
        assert composed_value(cfg, key) == value, f"{key}: the file sets {value!r}"
    for group, option in overrides.items():
        assert cfg.hydra.runtime.choices[group] == option
    # The name reaches the sweep folder and the W&B group.
    assert Path(cfg.hydra.sweep.dir).name == name and cfg.logger.group == name


def test_the_command_line_still_beats_a_study_file(tmp_path):
    cfg = compose_config(["experiment=holtzman_table1", "name=mine", "prompts.num_prompts=3"], tmp_path / "run")
    assert cfg.name == "mine" and cfg.prompts.num_prompts == 3 and cfg.prompts.continuation_tokens == 128


def test_the_root_config_still_beats_the_group_defaults(tmp_path):
    # _self_ sits after model/dataset/...: the root's interpolation decides decoding.max_new_tokens.
    cfg = compose_config(["prompts.continuation_tokens=7"], tmp_path / "run")
    assert cfg.decoding.max_new_tokens == 7 and cfg.name == "default"


@pytest.mark.parametrize("choice, valid", [("sweep=topp", "top_p"), ("experiment=holtzman_tabel1", "holtzman_table1")])
def test_a_misspelled_study_is_an_error_listing_the_options(choice, valid, tmp_path):
    group, wrong = choice.split("=")
    with pytest.raises(MissingConfigException, match=f"Could not find '{group}/{wrong}'") as err:
        compose_config([choice], tmp_path / "run")
    assert valid in str(err.value)


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: f"{p.parent.name}={p.stem}")
def test_cfg_job_on_the_command_line_shows_a_study_files_values(path, tmp_path):
    result = run_cli(["--cfg", "job", f"{path.parent.name}={path.stem}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = OmegaConf.create(yaml.safe_load(result.stdout))
    leaves, overrides = own_values(path)
    job_keys = {k: v for k, v in leaves.items() if k[0] != "hydra"}
    assert job_keys, "a study file sets job values (at least its name)"
    for key, value in job_keys.items():
        assert composed_value(shown, key) == value, f"--cfg job shows {key}={composed_value(shown, key)!r}"
    if "decoding" in overrides:
        assert shown.decoding.name == overrides["decoding"]
    assert not (tmp_path / "outputs").exists()  # --cfg only prints


DECODING_FILES = sorted((Path(CONF_DIR) / "decoding").glob("*.yaml"))


@pytest.mark.parametrize("path", DECODING_FILES, ids=lambda p: f"decoding={p.stem}")
def test_a_decoding_files_own_values_survive_composition(path, tmp_path):
    """Every value a decoding/ file sets (guidance_scale, watermarking_config's fields, top_h, ...) reaches the
    composed config as written; interpolations resolve to the root's values (max_new_tokens)."""
    leaves, _ = own_values(path)
    cfg = compose_config([f"decoding={path.stem}"], tmp_path / "run")
    for key, value in leaves.items():
        if isinstance(value, str) and value.startswith("${"):
            continue
        assert composed_value(cfg.decoding, key) == value, f"decoding.{'.'.join(key)}: the file sets {value!r}"


@pytest.mark.parametrize("choice, expected", [
    ("cache=static_compiled", True), ("cache=static_max_autotune", "max-autotune"), ("cache=static", None)])
def test_the_compile_setting_survives_cfg_job_and_reaches_generate(choice, expected, tmp_path):
    """cache.compile as `--cfg job` shows it, and as the runner hands it to generation (absent when off)."""
    from experiments.run import generation_options

    result = run_cli(["--cfg", "job", choice], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = yaml.safe_load(result.stdout)["cache"]
    assert shown["setting"] == "static" and shown.get("compile") == expected
    options = generation_options(compose_config([choice], tmp_path / "run"))
    assert options.get("compile") == expected and ("compile" in options) == bool(expected)
