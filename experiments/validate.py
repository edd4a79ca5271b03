"""Every config value checked before any work: one place, called first by the runner and by the CLI.

Why before Hydra's run folder: `python -m experiments.run` with a bad value must write nothing, but Hydra
creates the run folder (and `.hydra/`, `run.log`) before it calls the task function. So the CLI checks in
a Hydra callback (`ValidateConfigCallback`, conf/hydra/default.yaml), whose `on_run_start` and
`on_multirun_start` see the composed config before any folder exists. There a bad value ends the command
with one line on stderr and exit status 2. `run(cfg)` calls `check_config` again: it is also the API that
tests and sweep jobs call, and a swept value (`-m decoding.top_p=0.5,1.5`) is known only per job.

Two levels:
- `check_config(cfg)`: the values themselves (types, ranges, names, contradictions, unknown keys, `???`
  left unset, paths that do not exist). No file is read, no model loaded.
- `check_inputs(cfg)`: what the command reads, read as it will be (each data file decoded and parsed, the
  model's folder or hub id reachable), so a non-UTF-8 file or a hub id that cannot be reached offline
  fails in a second, with its name, instead of inside the run.

A message names `group.key=value` and what is allowed. Hydra's own composition errors (an unknown
group option such as `sweep=topp`, a key that does not exist) are reported by Hydra with the valid
options; `exit_2_on_bad_command_line` gives them exit status 2 as well.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.config_checks import (ConfigError, check_bool, check_choice, check_int, check_keys, check_string,
                                       show)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BATCHED_LAUNCHER = "hydra_plugins.decodelab_launcher.BatchedLauncher"
__all__ = ["ConfigError", "check_config", "check_inputs", "check_max_configurations", "ValidateConfigCallback",
           "exit_2_on_bad_command_line", "error_line"]


@functools.lru_cache(maxsize=None)
def root_sections() -> dict[str, Any]:
    """conf/config.yaml's own values (without `defaults`): the root keys and sections a config may have."""
    data = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    data.pop("defaults", None)
    return data


@functools.lru_cache(maxsize=None)
def group_keys(group: str) -> frozenset[str]:
    """Every key some option of a config group sets (task/*.yaml, cache/*.yaml): the keys that group takes."""
    keys: set[str] = set()
    for path in (CONF_DIR / group).glob("*.yaml"):
        keys.update(yaml.safe_load(path.read_text()) or {})
    return frozenset(keys)


def check_missing(cfg: DictConfig, prefix: str = "") -> None:
    """A `???` left unset (dataset=files without dataset.path, model=hf without model.name) names the key."""
    for key in cfg:
        if prefix == "" and key == "hydra":
            continue
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{path} is required here and was not given (it is ???): pass {path}=<value>", path)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_missing(node, f"{path}.")


def check_root(cfg: DictConfig) -> None:
    allowed = set(root_sections()) | {"hydra", "model", "dataset", "task", "decoding", "cache", "logger", "paths"}
    allowed.update(SECOND_MODELS)  # draft, amateur: only with an option other than none
    allowed.add("lock_wait_s")  # optional: how long a run waits for a job folder another process holds
    check_keys(cfg, "", allowed, what="a top-level key")
    if "lock_wait_s" in cfg:
        wait = cfg.lock_wait_s
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
            raise ConfigError(f"{show('lock_wait_s', wait)} is not allowed: use a number of seconds >= 0",
                              "lock_wait_s")
    name = cfg.get("name")
    if isinstance(name, bool) or not isinstance(name, (str, int)) or str(name).strip() in ("", ".", ".."):
        raise ConfigError(f"{show('name', name)} is not allowed: use a non-empty study name (it names the "
                          "sweep folder and the W&B group)", "name")
    check_int(cfg, "seed", 0, 2**63 - 1)
    check_bool(cfg, "resume")
    check_string(cfg, "optimized_metric")


def check_sections(cfg: DictConfig) -> None:
    """prompts, perplexity, metrics: the root's own sections."""
    for section in ("prompts", "perplexity", "metrics"):
        check_keys(cfg[section], section, set(root_sections()[section]))
    p = cfg.prompts
    check_int(p, "num_prompts", 1, none="null for every pair", path="prompts")
    for key in ("prompt_tokens", "continuation_tokens", "batch_size"):
        check_int(p, key, 1, path="prompts")
    check_int(p, "pairs_per_document", 1, none="null to spread num_prompts evenly over the documents", path="prompts")
    check_int(p, "warmup_batches", 0, path="prompts")
    from experiments.data import PROMPT_MODES

    check_choice(p, "mode", PROMPT_MODES, path="prompts")
    ppl = cfg.perplexity
    check_int(ppl, "max_length", 1, path="perplexity")  # beyond the model's positions: checked when it is loaded
    check_int(ppl, "stride", 1, ppl.max_length, none="null for disjoint windows", path="perplexity")
    check_int(ppl, "batch_size", 1, path="perplexity")
    from experiments.metrics.tokens import TOKENIZATIONS

    m = cfg.metrics
    check_bool(m, "mauve", path="metrics")
    check_int(m, "self_bleu_sample_size", 2, path="metrics")
    check_choice(m, "tokenization", TOKENIZATIONS, path="metrics")


def check_task(task: DictConfig) -> None:
    check_keys(task, "task", group_keys("task"))
    check_bool(task, "perplexity", path="task")
    check_bool(task, "generate", path="task")
    lm_eval = check_bool(task, "lm_eval", path="task") if "lm_eval" in task else False
    if not (task.perplexity or task.generate or lm_eval):
        raise ConfigError("task.perplexity=false and task.generate=false ask for nothing: set one of them to true "
                          "(or task=both|perplexity|generate|lm_eval)", "task")


def check_target_keys(node: DictConfig, path: str) -> None:
    """The keys of a `_target_` node must be arguments of the function it names (else a TypeError later)."""
    import inspect

    from hydra.utils import get_method

    target = node.get("_target_")
    if not isinstance(target, str):
        raise ConfigError(f"{path}._target_ is missing: {path} must name what builds it", path)
    try:
        function = get_method(target)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import errors in several types
        raise ConfigError(f"{show(path + '._target_', target)} cannot be imported ({err})", path) from None
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    check_keys(node, path, {p.name for p in parameters} | {"_target_"})


def check_model(node: Any, path: str) -> None:
    from experiments.models import DTYPES, TINY_KINDS, known_model_type, resolve_device
    from experiments.placement import check_placement
    from experiments.quantization import check_model_type, check_quantization

    if not isinstance(node, DictConfig):
        raise ConfigError(f"{show(path, node)} is not allowed: {path} must be a model config "
                          f"(_target_: experiments.models.load_model, name: ...), or null", path)
    check_target_keys(node, path)
    check_string(node, "name", path=path)
    if "dtype" in node:  # absent: load_model's default
        check_choice(node, "dtype", tuple(DTYPES), path=path)
    placement = {key: node.get(key) for key in ("device_map", "tp_plan", "offload_folder")}
    split = placement["device_map"] is not None or placement["tp_plan"] is not None
    device = node.get("device", None if split else "cpu")  # absent: load_model's default
    check_placement(device, **placement, path=path)  # a split model (device_map / tp_plan): experiments/placement.py
    try:
        if device is not None:
            resolve_device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(f"{show(path + '.device', device)} is not allowed: use auto, cpu, cuda or cuda:<index> "
                          f"({err})", path + ".device") from None
    quantization = {key: node.get(key) for key in ("quantization", "quantization_group_size")}
    if any(value is not None for value in quantization.values()):  # experiments/quantization.py
        check_quantization(quantization["quantization"], quantization["quantization_group_size"],
                           "cpu" if split else resolve_device(device), node.get("dtype", "float32"), split=split,
                           path=path)
        check_model_type(quantization["quantization"], known_model_type(node.name), node.name, path)
    if node.name in ("smollm2", *TINY_KINDS):
        check_keys(node, path, {"_target_", "name", "device", "dtype", "seed", *placement, *quantization},
                   what=f"an argument of {path}={node.name}")
    if "seed" in node:
        check_int(node, "seed", 0, 2**63 - 1, path=path)


def check_dataset(node: DictConfig) -> None:
    from experiments.data import FILE_FORMATS, SOTU_SPLITS, SOURCES, file_list, format_of

    check_target_keys(node, "dataset")
    source = check_choice(node, "source", SOURCES, path="dataset")
    check_int(node, "limit", 0, none="null for every document", path="dataset")
    for key in ("text_column", "split", "name"):
        if key in node and not (key == "split" and source == "files"):
            check_string(node, key, path="dataset")
    if source == "sotu":
        check_choice(node, "split", SOTU_SPLITS, path="dataset")
        validation, test = (check_int(node, key, 1, path="dataset")
                            for key in ("validation_from_year", "test_from_year"))
        if validation > test:
            raise ConfigError(f"dataset.validation_from_year={validation} > dataset.test_from_year={test}: the "
                              "validation years must come before the test years", "dataset.validation_from_year")
        check_sotu_years(node, validation, test)
    if source == "files":
        path = check_string(node, "path", path="dataset")
        fmt = check_choice(node, "format", tuple(FILE_FORMATS), path="dataset", none=True)
        if "sample_by" in node:
            check_choice(node, "sample_by", ("document", "paragraph", "line"), path="dataset")
        try:  # a stat, not a read; a ConfigError (a ValueError) like every other check here
            files = file_list(path)
            if fmt is None:
                format_of(files, path)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(str(err), "dataset.path") from None


def check_sotu_years(node: DictConfig, validation: int, test: int) -> None:
    """`dataset.first_year` / `last_year` (inclusive, null: no bound) in order and leaving at least one speech."""
    from experiments.data import sotu_years

    first, last = (check_int(node, key, 1, none="null for no bound", path="dataset")
                   for key in ("first_year", "last_year"))
    if first is not None and last is not None and first > last:
        raise ConfigError(f"dataset.first_year={first} > dataset.last_year={last}: the first year of the range must "
                          "not come after its last", "dataset.first_year")
    if (first is not None or last is not None) and not sotu_years(node.split, validation, test, first, last):
        raise ConfigError(f"dataset.first_year={first}, dataset.last_year={last} select no speech of split="
                          f"{node.split!r} (test is {test} on, validation {validation}-{test - 1}, train before "
                          f"{validation}; the corpus holds 1790-2026): use split=all for years across splits",
                          "dataset.first_year")


def check_cache(node: DictConfig) -> None:
    from decoding.params import CACHE_SETTINGS

    check_keys(node, "cache", group_keys("cache"))
    check_choice(node, "setting", CACHE_SETTINGS, path="cache")
    check_int(node, "max_cache_len", 1, none="null for prompt + max_new_tokens", path="cache")
    from decoding.param_checks import is_compile_setting

    compile_value = node.get("compile", False)  # without the static cache: decoding.resolve_params says so
    if not is_compile_setting(compile_value):
        raise ConfigError(f"{show('cache.compile', compile_value)} is not allowed: use true, false or max-autotune "
                          "(inductor tunes its matmul kernels: a longer compile, faster steps)", "cache.compile")


def compile_option(cfg: DictConfig) -> dict[str, Any]:
    """`{"compile": cache.compile}` when the config asks for the compiled step (true or max-autotune), else {}:
    the keyword is passed only when asked for."""
    return {"compile": cfg.cache.compile} if cfg.cache.get("compile") else {}


def check_logger(node: Any) -> None:
    if node is None:
        return
    check_target_keys(node, "logger")
    if node.get("_target_", "").endswith("WandbLogger"):
        check_choice(node, "mode", ("offline", "online", "disabled"), path="logger")
        check_string(node, "project", path="logger")
        tags = node.get("tags")
        if not isinstance(tags, (ListConfig, list)) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{show('logger.tags', tags)} is not allowed: use a list of strings, e.g. "
                              "logger.tags=[a,b]", "logger.tags")


def check_max_configurations(value: Any) -> int | None:
    """hydra.launcher.max_configurations: configurations in one shared batch (BatchedLauncher)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{show('hydra.launcher.max_configurations', value)} is not allowed: use an integer "
                          ">= 1, or null for no limit", "hydra.launcher.max_configurations")
    return value


def check_launcher(cfg: DictConfig) -> None:
    launcher = OmegaConf.select(cfg, "hydra.launcher")
    if isinstance(launcher, DictConfig) and launcher.get("_target_") == BATCHED_LAUNCHER:
        from experiments.sweep_executors import check_executor

        check_keys(launcher, "hydra.launcher", {"_target_", "max_configurations", "executor", "slurm", "ray"})
        check_max_configurations(launcher.get("max_configurations"))
        check_executor(launcher)


class ModelToLoad:
    """Stands for a second model (`draft=<option>`, `amateur=<option>`) in the config check, which loads no model:
    the core's checks of the strategy that uses it (one proposer, no beams, ...) then judge the run's combination
    before any model loads."""

    def __init__(self, group: str) -> None:
        self.group = group

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"ModelToLoad is a placeholder for the {self.group} in the config check; the run loads "
                           "the real model")


@dataclass(frozen=True)
class SecondModel:
    """A config group whose option is a model the run loads beside its own and hands to generate."""

    keyword: str  # the generate keyword that takes the loaded model
    noun: str  # "a draft": what the messages call it
    knobs: tuple[str, ...]  # decoding keys only this model (or its layers_key stand-in) reads
    layers_key: str  # the decoding key that uses the model's own first layers instead
    without: str  # how the lm-eval refusal says to get the strategy without a second model


SECOND_MODELS = {
    "draft": SecondModel("assistant_model", "a draft",
                         ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"),
                         "draft_layers", "decoding.prompt_lookup_num_tokens / decoding.draft_layers for speculation "
                                         "without one"),
    "amateur": SecondModel("amateur_model", "an amateur", ("amateur_temperature", "plausibility_alpha"),
                           "amateur_layers", "decoding.amateur_layers for the model's own first layers as amateur"),
}
OPTIONS = "tiny_llama, tiny_gpt2, smollm2, hf {group}.name=..."


def check_second_models_config(cfg: DictConfig) -> None:
    """Each second-model group against the decoding config: the model is given only as `<group>=<option>`, runs on
    the model's device, is used by generation (not by lm-eval tasks), knobs that only it reads need it, and it is
    not asked for twice (the group and the model's own first layers)."""
    for group, second in SECOND_MODELS.items():
        _check_second_model(cfg, group, second)


def _check_second_model(cfg: DictConfig, group: str, second: SecondModel) -> None:
    from experiments.models import resolve_device

    decoding_node, node = cfg.decoding, cfg.get(group)
    name, options = decoding_node.get("name", "?"), OPTIONS.format(group=group)
    key = "decoding." + second.keyword
    if second.keyword in decoding_node:
        raise ConfigError(f"{show(key, decoding_node[second.keyword])} is not allowed: the {group} model is a "
                          f"config group, pass {group}=<option> ({options})", key)
    layers = decoding_node.get(second.layers_key)
    if node is None:
        knobs = [k for k in second.knobs if k in decoding_node]
        if knobs and layers is None and (group != "draft" or decoding_node.get("assistant_early_exit") is None):
            raise ConfigError(f"decoding={name} sets {show('decoding.' + knobs[0], decoding_node[knobs[0]])}, which "
                              f"only {second.noun} reads, but no {group} was given: pass {group}=<option> "
                              f"({options}) or decoding.{second.layers_key}=L", group)
        return
    split = [k for k in ("device_map", "tp_plan") for n in (cfg.model, node) if n.get(k) is not None]
    if split:  # "runs on the model's device" has no meaning for a split model; untested, so refused
        raise ConfigError(f"{group}={node.name} is not allowed with a split model ({group} or model sets {split[0]}): "
                          f"a {group} runs on the model's one device; use {second.without}", group)
    check_model(node, group)
    if group != "draft" and layers is not None:  # speculation's own check names both (draft_layers, assistant_model)
        raise ConfigError(f"{group}={node.name} and {show('decoding.' + second.layers_key, layers)} both choose the "
                          f"{group}: pass decoding.{second.layers_key}=null to use {group}={node.name}, or leave "
                          f"out {group}= for the model's own first {layers} layers", "decoding." + second.layers_key)
    if resolve_device(node.get("device", "cpu")) != resolve_device(cfg.model.get("device", "cpu")):
        raise ConfigError(f"{show(group + '.device', node.get('device', 'cpu'))} is not allowed with "
                          f"{show('model.device', cfg.model.get('device', 'cpu'))}: the {group} runs on the model's "
                          "device", group + ".device")
    if cfg.task.get("lm_eval"):
        raise ConfigError(f"{group}={node.name} is not allowed with task.lm_eval=true: lm-eval tasks generate "
                          f"without {second.noun} model; use task=generate, or {second.without}", group)


def check_decoding(cfg: DictConfig):
    """The decoding parameters as `decoding.resolve_params` sees them without a model (a second model as
    ModelToLoad)."""
    import decoding

    params = OmegaConf.to_container(cfg.decoding, resolve=True)
    name = params.pop("name", None)
    for group, second in SECOND_MODELS.items():
        if cfg.get(group) is not None:
            params[second.keyword] = ModelToLoad(group)
            name = f"{name or '?'} with {group}={cfg[group].name}"
    try:
        return decoding.resolve_params(None, cfg.prompts.prompt_tokens, None, cache=cfg.cache.setting,
                                       max_cache_len=cfg.cache.max_cache_len, **compile_option(cfg), **params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"decoding={name or '?'}: {err}", "decoding") from None


def check_config(cfg: DictConfig):
    """Validate every value of a composed run config; returns the decoding parameters as resolved without a
    model (the model's own generation_config is applied later). Raises ConfigError (a ValueError)."""
    try:
        return _check_all(cfg)
    except OmegaConfBaseException as err:  # e.g. an interpolation to a key that does not exist
        key = getattr(err, "full_key", None) or None
        raise ConfigError(f"{key or 'the config'}: {getattr(err, 'msg', err)}", key) from None


def _check_all(cfg: DictConfig):
    check_missing(cfg)
    check_root(cfg)
    check_sections(cfg)
    check_task(cfg.task)
    check_model(cfg.model, "model")
    if cfg.scorer is not None:
        check_model(cfg.scorer, "scorer")
    check_second_models_config(cfg)
    check_dataset(cfg.dataset)
    check_cache(cfg.cache)
    check_logger(cfg.get("logger"))
    check_launcher(cfg)
    if cfg.task.get("lm_eval"):  # the eval.* values; task names and data in check_inputs
        from experiments.lm_eval_run import check_eval_config

        check_eval_config(cfg)
    return check_decoding(cfg)


def check_inputs(cfg: DictConfig) -> None:
    """Read what the run will read, as it will read it: the data files, the model's folder or hub id."""
    from experiments.data import WIKITEXT2, check_data_files, check_hub_dataset, file_list, format_of
    from experiments.models import check_model_name

    d = cfg.dataset
    if d.source == "files":
        files = file_list(d.path)
        check_data_files(files, d.format or format_of(files, d.path), d.get("text_column", "text"))
    elif d.source in ("hub", "wikitext2"):
        hub = WIKITEXT2 if d.source == "wikitext2" else {"name": d.name, "config": d.get("config")}
        check_hub_dataset(hub["name"], hub["config"], d.get("split") or "test", d.get("cache_dir"))
    check_model_name(cfg.model.name, "model.name")
    if cfg.scorer is not None:
        check_model_name(cfg.scorer.name, "scorer.name")
    for group in SECOND_MODELS:
        if cfg.get(group) is not None:
            check_model_name(cfg[group].name, f"{group}.name")
    if cfg.task.get("lm_eval"):  # task names known, hub data reachable, gen_kwargs compatible with the run
        from experiments.lm_eval_run import check_eval_inputs

        check_eval_inputs(cfg)


def error_line(err: BaseException) -> str:
    """One line for stderr: the error's type and message, its own line breaks folded."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"error: {type(err).__name__}: {text}"


# Set when Hydra has composed the primary config (the callback ran). Hydra reports every error it catches
# with exit status 1; one raised before composition finished is a bad command line, so it becomes 2.
_composed = False
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ConnectionError,
                PermissionError)


def swept_keys(config: DictConfig) -> set[str]:
    """Keys and groups a multirun's jobs set themselves (`decoding.top_p=0.5,0.9`, `decoding=a,b`, sweeper params).

    The primary config a multirun starts with keeps their base values, which no job uses (a `???`
    `dataset.path` swept over files stays `???` there): a check that fails on them is left to the jobs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or []
    keys = {o.key_or_group.lstrip("+~") for o in OverridesParser.create().parse_overrides(list(task))
            if o.is_sweep_override()}
    params = OmegaConf.select(config, "hydra.sweeper.params")
    keys.update(str(k) for k in (params or {}))
    return keys


def check_swept_options(config: DictConfig) -> None:
    """Each option a multirun sweeps a config group over (`decoding=greedy,topp`) must be a file of that group:
    Hydra would find out only when it composes that job, after the sweep folder exists."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or [])
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}  # a study file's sweep (experiment=...)
    task += [f"{key}={value}" for key, value in params.items()]
    for override in OverridesParser.create().parse_overrides(task):
        group = override.key_or_group
        folder = CONF_DIR / group
        if not override.is_sweep_override() or group.startswith("hydra") or not folder.is_dir():
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - glob() sweeps need Hydra's config loader: left to Hydra
            continue
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        for value in values:
            if value not in options:
                raise ConfigError(f"{group}={value} (in the sweep {override.input_line}) is not an option of "
                                  f"{group}/: use one of {', '.join(options)}", group)


def _is_swept(key: str | None, swept: set[str]) -> bool:
    """Whether `key` (or its group, or a key inside it) is set per job."""
    if key is None:
        return bool(swept)
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in swept)


def check_before_work(config: DictConfig, multirun: bool = False) -> None:
    """The callback's check: any error ends the command here, before Hydra writes anything."""
    global _composed
    _composed = True
    swept = swept_keys(config) if multirun else set()
    try:
        if multirun:
            check_swept_options(config)
        try:
            check_config(config)
        except ConfigError as err:
            if not _is_swept(err.key, swept):
                raise
            return  # each job checks its own config (and reads its own inputs) in `run`
        if not any(_is_swept(k, swept) for k in ("dataset", "model", "scorer", *SECOND_MODELS)):
            check_inputs(config)
    except INPUT_ERRORS as err:
        print(error_line(err), file=sys.stderr)
        raise SystemExit(2) from None


class ValidateConfigCallback(Callback):
    """Checks the composed config before Hydra creates a run or sweep folder (see the module docstring)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_before_work(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_before_work(config, multirun=True)


def exit_2_on_bad_command_line(hydra_main: Callable) -> Callable:
    """Wrap a `@hydra.main` function: a Hydra error before the config was composed (unknown group option,
    unknown key, bad override syntax: Hydra has printed it with the valid options) exits 2, not 1."""

    @functools.wraps(hydra_main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _composed
        _composed = False
        try:
            return hydra_main(*args, **kwargs)
        except SystemExit as exit_:
            if exit_.code == 1 and not _composed:
                raise SystemExit(2) from None
            raise

    return wrapper
