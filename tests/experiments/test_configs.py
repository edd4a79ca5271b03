"""Every config file composes, and every `_target_` in it instantiates."""

from pathlib import Path

import pytest
from experiments.run import build as instantiate

from tests.experiments.runner_helpers import CONF_DIR, compose_config

GROUPS = ["model", "dataset", "task", "decoding", "cache", "logger", "sweep", "experiment"]
# Options that need a value the user must give (???): what a user would pass.
REQUIRED = {
    "model=hf": ["model.name=/nonexistent/local/model"],
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
