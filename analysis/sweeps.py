"""What a set of runs varied: labels that tell runs apart, curves along a swept parameter, human rows.

The report is not told which parameter a sweep swept; it reads it off the configs. A *setting* is a
config key that can change a result (not `paths.*`, `logger.*`, the study `name` or `resume`). A
*curve* along parameter P is a group of runs whose settings agree on everything but P (and
`decoding.name`, which only names the file a config came from) and that hold at least two values of P.
So `sweep=top_p` gives one top_p curve, and the eight methods of `experiment=holtzman_table1` give the
short curves hidden in them (top-k 40 and 640; temperature 0.7 and 1 at k=40).

Before comparing, missing decoding keys get generate's defaults (temperature 1, top-p 1, one beam):
pure sampling *is* the top-p=1 and temperature=1 point, though its config names neither. `top_k: 0`
(no top-k) is not a point on a top-k axis, so it stays off top-k curves.

The human continuations depend on the model (as scorer), the data and the prompts, never on decoding:
runs that share those *context* settings share one human row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.methods import decoding_of, method_label, method_sort_key, number_text
from analysis.runs import is_missing
from experiments.jobs import RECORDED_DEFAULTS

# Config keys that say where or how results are shown, not what they are.
NOT_SETTINGS_PREFIXES = ("paths.", "logger.", "hydra.")
NOT_SETTINGS = {"name", "resume", "optimized_metric"}
META_COLUMNS = {"run", "source", "path"}
# The x axes of the quality plots and of the speed plots.
QUALITY_PARAMS = ("decoding.top_p", "decoding.top_k", "decoding.temperature", "decoding.num_beams",
                  "decoding.min_p", "decoding.typical_p", "decoding.epsilon_cutoff", "decoding.eta_cutoff",
                  "decoding.top_h", "decoding.guidance_scale", "decoding.watermarking_config.bias",
                  "decoding.watermarking_config.greenlist_ratio",
                  # llama.cpp's and vLLM's samplers
                  "decoding.top_n_sigma", "decoding.xtc_probability", "decoding.xtc_threshold",
                  "decoding.dry_multiplier", "decoding.dry_allowed_length", "decoding.dry_base", "decoding.mirostat_tau",
                  "decoding.mirostat_eta", "decoding.dynatemp_range", "decoding.presence_penalty",
                  "decoding.frequency_penalty")
SPEED_PARAMS = ("prompts.batch_size", "decoding.num_beams", "cache.setting")
# RECORDED_DEFAULTS (sampler_order): what runs written before config.yaml recorded them used.
DECODING_DEFAULTS = {"decoding.temperature": 1.0, "decoding.top_p": 1.0, "decoding.num_beams": 1,
                     **{f"decoding.{k}": v for k, v in RECORDED_DEFAULTS["decoding"].items()}}
# Settings the human continuations do not depend on.
# Settings that change how a run generates, not which prompts and human texts it is scored against (a speculative
# run's draft model proposes tokens; the scorer and the prompts are the target's).
NOT_CONTEXT_PREFIXES = ("decoding.", "cache.", "task.", "perplexity.", "draft.")
NOT_CONTEXT = {"prompts.batch_size"}


@dataclass
class Curve:
    param: str  # the swept config key, e.g. "decoding.top_p"
    keys: list[str]  # runs, sorted by the parameter
    values: list  # the parameter's value for each run
    fixed: str  # what the curve holds fixed: its method without the swept parameter, other differing settings


def setting_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in META_COLUMNS and "/" not in c and c not in NOT_SETTINGS
            and not c.startswith(NOT_SETTINGS_PREFIXES)]


def _hashable(value):
    return "\x00missing" if is_missing(value) else value


def effective_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """Settings with generate's decoding defaults filled in, and top_k 0 (off) as missing."""
    settings = frame[setting_columns(frame)].copy().astype(object)
    for key, default in DECODING_DEFAULTS.items():
        if key in settings.columns:
            settings[key] = settings[key].map(lambda v, d=default: d if is_missing(v) else v)
        else:
            settings[key] = default
    if "decoding.top_k" in settings.columns:
        settings["decoding.top_k"] = settings["decoding.top_k"].map(lambda v: None if v in (0, None) else v)
    return settings


def varying(settings: pd.DataFrame, columns: list[str] | None = None) -> list[str]:
    """Columns whose value is not the same in every row."""
    columns = list(settings.columns) if columns is None else columns
    return [c for c in columns if settings[c].map(_hashable).nunique() > 1]


def describe(row: pd.Series, keys: list[str]) -> str:
    """"key=value, ..." of the settings that are set (a missing value, or a loader's `_target_`, says nothing);
    whole numbers without ".0"."""
    shown = []
    for key in keys:
        value = row[key]
        if is_missing(value) or key.endswith("._target_"):
            continue
        shown.append(f"{key}={number_text(value)}")
    return ", ".join(shown)


def run_labels(frame: pd.DataFrame) -> pd.Series:
    """A unique, readable label per run: the method, plus any other setting that varies across runs."""
    settings = effective_settings(frame)
    others = [c for c in varying(settings) if not c.startswith("decoding.")]
    labels = {}
    for key, row in frame.iterrows():
        label = method_label(decoding_of(row))
        extra = describe(settings.loc[key], others) if others else ""
        if extra:
            label += f" [{extra}]"
        labels[key] = label
    series = pd.Series(labels)
    duplicated = series.duplicated(keep=False)
    series[duplicated] = [f"{series[k]} ({frame.loc[k, 'run']})" for k in series.index[duplicated]]
    return series


def method_order(frame: pd.DataFrame) -> list[str]:
    """Run keys in Table 1 order (see `analysis.methods`), then by label."""
    labels = run_labels(frame)
    return sorted(frame.index, key=lambda k: (method_sort_key(decoding_of(frame.loc[k])), labels[k]))


def curves(frame: pd.DataFrame, param: str) -> list[Curve]:
    """Groups of runs that differ only in `param`, each with two or more values of it."""
    settings = effective_settings(frame)
    if param not in settings.columns:
        return []
    rest = [c for c in settings.columns if c not in (param, "decoding.name")]
    found = []
    if rest:
        grouped = settings.assign(**{c: settings[c].map(_hashable) for c in rest}).groupby(rest, sort=False,
                                                                                          dropna=False)
        groups = [list(index) for _, index in grouped.groups.items()]
    else:
        groups = [list(settings.index)]
    differing = [c for c in varying(settings, rest) if not c.startswith("decoding.")]
    for keys in groups:
        keys = [k for k in keys if not is_missing(settings.loc[k, param])]
        values = [settings.loc[k, param] for k in keys]
        if len(set(values)) < 2:
            continue
        order = sorted(range(len(keys)), key=lambda i: (str(type(values[i])), values[i]))
        found.append(Curve(param, [keys[i] for i in order], [values[i] for i in order],
                           curve_label(frame.loc[keys[0]], settings.loc[keys[0]], param, differing)))
    return found


# What a parameter is set to when it does nothing, to name the rest of a curve's method.
NEUTRAL = {"decoding.top_k": 0, "decoding.top_p": 1.0, "decoding.temperature": 1.0, "decoding.num_beams": 1}


def curve_label(row: pd.Series, settings: pd.Series, param: str, differing: list[str]) -> str:
    """What a curve holds fixed: its method without the swept parameter, plus other settings that differ
    between curves ("Top-k, k=40" for a temperature curve at k=40)."""
    decoding = decoding_of(row)
    name = param[len("decoding."):] if param.startswith("decoding.") else None
    if name:
        if param in NEUTRAL:
            decoding[name] = NEUTRAL[param]
        else:
            decoding.pop(name, None)
    label = method_label(decoding)
    if differing:
        label += f" [{describe(settings, differing)}]"
    return label


def swept(frame: pd.DataFrame, params: tuple[str, ...]) -> dict[str, list[Curve]]:
    """{param: its curves} for each of `params` along which the runs make at least one curve."""
    out = {}
    for param in params:
        found = curves(frame, param)
        if found:
            out[param] = found
    return out


def context_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in setting_columns(frame) if not c.startswith(NOT_CONTEXT_PREFIXES) and c not in NOT_CONTEXT]


def human_groups(frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """[(label, run keys)] of runs that share prompts and human continuations; label "Human" (+ context)."""
    columns = context_columns(frame)
    if not columns:
        return [("Human", list(frame.index))]
    keyed = frame[columns].astype(object).map(_hashable)
    differing = varying(frame[columns].astype(object))
    out = []
    for _, index in keyed.groupby(columns, sort=False, dropna=False).groups.items():
        keys = list(index)
        label = "Human" + (f" [{describe(frame.loc[keys[0]], differing)}]" if differing else "")
        out.append((label, keys))
    return out
