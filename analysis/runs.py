"""Find the runs under some folders (or in W&B) and load them into one tidy table.

A *run* is what one job wrote: its resolved config and its flat metrics. Three places hold one:
- a job folder on disk: `config.yaml` + `metrics.json` (the record: written last and atomically, so its
  presence means the job finished);
- an offline W&B run folder (`wandb/offline-run-*/run-*.wandb`), read without network by
  `experiments.logging.read_offline_run`: the same config and the same metrics in its summary;
- a W&B project online, through the public API (`wandb:ENTITY/PROJECT[/GROUP]`).

Why disk first: a job folder usually holds both `metrics.json` and its offline W&B run; counting both
would show every run twice, and `metrics.json` is the record (W&B is a view of it). `source="auto"`
therefore reads a job folder's `metrics.json` and reads W&B files only where no `metrics.json` stands
above them (a W&B folder copied on its own). `source="wandb"` reads only the W&B files, which is how a
test proves that both routes give the same numbers.

Folders that hold a job but no result (a failed job's `error.txt`, an interrupted one) are listed as
skipped, with the reason, instead of vanishing from the report unnoticed. So are jobs whose files cannot be
trusted: a `metrics.json` or `config.yaml` that does not parse (the reason names the file and the parse
error; the report goes on with the other runs), and a `config.yaml` whose fingerprint
(`experiments.jobs.config_fingerprint`) is not the `meta/fingerprint` its `metrics.json` recorded: the
config was edited after the run, so the settings it shows are not the ones the numbers came from.

Values a run could not measure are `null` in metrics.json (JSON has no NaN) with the reason in
`meta/not_measurable`; they load as NaN, the reasons and the run's `meta/caveats` ride along on the `Run`
(and in the frame's `attrs`) so the tables can say "not measurable (n=1)" and mark a caveated number.

The table (`runs_frame`) has one row per run, indexed by the run's key (its folder as reached from the path
the report was given, or its W&B path; see `paths_as_given`):
config keys flattened with dots (`decoding.top_p`, `cache.setting`), metric keys as the runner wrote
them with slashes (`gen/ppl`, `human/zipf`), and the columns `run`, `source`, `path`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

# Namespaces of result keys; anything else in a W&B summary (`_runtime`, `samples/...`) is bookkeeping.
METRIC_NAMESPACES = ("ppl", "gen", "human", "speed", "mem", "task")
SOURCES = ("auto", "disk", "wandb")
# Packages whose versions the report states, as the run's environment recorded them.
VERSIONED_PACKAGES = ("decodelab", "torch", "transformers", "wandb", "mauve-text", "sacrebleu", "numpy")
WANDB_PREFIX = "wandb:"


@dataclass
class Run:
    """One finished job: where it came from, its resolved config (nested) and its metrics (flat)."""

    key: str  # unique: the job folder or offline W&B folder as reached from the path given, or entity/project/id
    source: str  # "disk" | "wandb-offline" | "wandb-api"
    config: dict[str, Any]
    metrics: dict[str, float]
    versions: dict[str, str] = field(default_factory=dict)  # package -> version, when the run recorded them
    not_measurable: dict[str, str] = field(default_factory=dict)  # metric key -> why it is NaN (meta/not_measurable)
    caveats: dict[str, str] = field(default_factory=dict)  # metric key -> what to know before trusting it
    mauve_features: str | None = None  # the model MAUVE's features came from (meta/mauve_features)

    @property
    def name(self) -> str:
        return Path(self.key).name if self.source != "wandb-api" else self.key


@dataclass
class RunSet:
    runs: list[Run]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)


def is_metric_key(key: str) -> bool:
    return key.split("/", 1)[0] in METRIC_NAMESPACES and "/" in key


def numeric_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The result keys of a metrics dict or W&B summary, as floats (W&B stores 1.0 as 1); `null` (not
    measurable) as NaN, so the run still counts as having written the key."""
    return {k: math.nan if v is None else float(v) for k, v in values.items()
            if is_metric_key(k) and (v is None or isinstance(v, (int, float)) and not isinstance(v, bool))}


def text_notes(values: dict[str, Any], key: str) -> dict[str, str]:
    """A `meta/` dict of {metric key: text} (`meta/not_measurable`, `meta/caveats`); {} when absent."""
    notes = values.get(key)
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}


def read_requirements(path: Path) -> dict[str, str]:
    """`name==version` lines of a W&B `requirements.txt`, for the packages the report states."""
    found: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name.lower() in VERSIONED_PACKAGES:
            found[name.lower()] = version
    return found


def recorded_versions(folder: Path) -> dict[str, str]:
    """Versions from the newest offline W&B run at or below `folder` (the runner's environment), if any."""
    for req in sorted(folder.glob("**/offline-run-*/files/requirements.txt"), reverse=True):
        return read_requirements(req)
    req = folder / "files" / "requirements.txt"
    return read_requirements(req) if req.is_file() else {}


# ---------------------------------------------------------------------------------------------- disk


def config_fingerprint(config: dict[str, Any]) -> str:
    """The runner's fingerprint of a resolved config as written to config.yaml (imported when first needed:
    the job store lives in experiments/, and the report never needs more of it)."""
    from experiments.jobs import config_fingerprint as fingerprint

    return fingerprint(config)


class UntrustedJob(ValueError):
    """A finished job folder whose files cannot be read or do not belong together; the message says which."""


def _parse(path: Path, parse, kind: str) -> dict:
    """`path` parsed as a mapping, or UntrustedJob naming the file and the parse error."""
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        detail = str(err).replace("\n", " ")
        raise UntrustedJob(f"corrupt {kind}: {path}: {type(err).__name__}: {detail}") from None
    if not isinstance(data, dict):
        raise UntrustedJob(f"corrupt {kind}: {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def load_disk_run(job: Path) -> Run:
    """The run of a finished job folder; UntrustedJob when a file does not parse or config.yaml was edited."""
    metrics = _parse(job / "metrics.json", json.loads, "metrics.json")
    config_path = job / "config.yaml"
    if not config_path.is_file():
        raise UntrustedJob(f"no config.yaml beside {job / 'metrics.json'}: the settings of these numbers are unknown")
    config = _parse(config_path, yaml.safe_load, "config.yaml")
    recorded, actual = metrics.get("meta/fingerprint"), config_fingerprint(config)
    if recorded is None:
        raise UntrustedJob(f"{job / 'metrics.json'} records no meta/fingerprint, so nothing shows that {config_path} "
                           "is the config its numbers came from; rerun the job")
    if recorded != actual:
        raise UntrustedJob(f"{config_path} (fingerprint {actual}) does not match the meta/fingerprint {recorded} "
                           f"recorded in {job / 'metrics.json'}: config.yaml was changed after the run; rerun the "
                           "job to get numbers for this config, or restore the config it ran with")
    return recorded_run(str(job), "disk", config, metrics, recorded_versions(job / "wandb"))


def load_offline_wandb_run(folder: Path) -> Run:
    from experiments.logging import read_offline_run

    logged = read_offline_run(folder)
    return recorded_run(str(folder), "wandb-offline", logged["config"], logged["summary"],
                        recorded_versions(folder))


def recorded_run(key: str, source: str, config: dict, values: dict[str, Any], versions: dict[str, str]) -> Run:
    """A Run from what a job recorded (metrics.json or a W&B summary): its metrics and its `meta/` notes."""
    from experiments.jobs import with_recorded_defaults

    features = values.get("meta/mauve_features")
    # A config written before a setting was recorded shows the value its run used (prompts.warmup_batches=0),
    # so it is grouped with newer runs of the same experiment instead of looking like another one.
    return Run(key=key, source=source, config=with_recorded_defaults(config or {}), metrics=numeric_metrics(values),
               versions=versions,
               not_measurable=text_notes(values, "meta/not_measurable"), caveats=text_notes(values, "meta/caveats"),
               mauve_features=features if isinstance(features, str) else None)


def _job_folders(root: Path) -> Iterable[Path]:
    """Folders that a job wrote into: they hold metrics.json, error.txt or a `.hydra/` folder."""
    markers = ("metrics.json", "error.txt", ".hydra/config.yaml")
    seen = {p.parent if p.name != "config.yaml" else p.parent.parent
            for m in markers for p in root.glob(f"**/{m}") if "wandb" not in p.parts[len(root.parts):]}
    if any((root / m).is_file() for m in markers):
        seen.add(root)
    return sorted(seen)


def _why_unfinished(job: Path) -> str:
    error = job / "error.txt"
    if error.is_file():
        first = next((line for line in error.read_text(errors="replace").splitlines() if line.strip()), "")
        return f"failed: {first}"
    aside = sorted(job.glob("metrics.json.corrupt*"))
    if aside:  # the runner moves a corrupt result aside before recomputing it
        return f"unfinished: no metrics.json; a corrupt one was moved aside to {aside[-1]} (rerun the job to recompute)"
    return "unfinished: no metrics.json (interrupted, or still running)"


def load_folder(root: Path, source: str = "auto") -> RunSet:
    """Every run at or below `root` (a job folder, a multirun folder, a W&B folder)."""
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not allowed: use one of {', '.join(SOURCES)}")
    if not root.exists():
        raise FileNotFoundError(f"run path {str(root)!r} does not exist: give a run folder, a multirun folder, "
                                f"an offline W&B run folder, or {WANDB_PREFIX}ENTITY/PROJECT[/GROUP]")
    found = RunSet(runs=[])
    jobs = list(_job_folders(root))
    finished = [job for job in jobs if (job / "metrics.json").is_file()]
    offline = sorted(p.parent for p in root.glob("**/offline-run-*/run-*.wandb"))
    if root.name.startswith("offline-run-") and list(root.glob("run-*.wandb")):
        offline = [root]
    if source in ("auto", "disk"):
        for job in finished:
            try:
                found.runs.append(load_disk_run(job))
            except UntrustedJob as err:  # one broken job must not cost the report of the others
                found.skipped.append((str(job), str(err)))
    if source == "wandb" or source == "auto":
        claimed = set(finished) if source == "auto" else set()
        newest: dict[Path, Path] = {}  # owner folder -> newest offline run (a rerun job may hold several)
        for run_dir in offline:
            owner = next((job for job in jobs if job in run_dir.parents), run_dir)
            if owner not in claimed:
                newest[owner] = max(newest.get(owner, run_dir), run_dir)
        for run_dir in sorted(newest.values()):
            try:
                run = load_offline_wandb_run(run_dir)
            except (ValueError, OSError) as err:
                found.skipped.append((str(run_dir), f"unreadable W&B run file: {err}"))
                continue
            if run.metrics:
                found.runs.append(run)
            else:  # e.g. the sweep-summary run of analysis.wandb_charts: charts, no results of its own
                found.skipped.append((str(run_dir), "W&B run without ppl/gen/human/speed metrics"))
    for job in jobs:
        if job not in finished and not any(job in Path(r.key).parents for r in found.runs):
            found.skipped.append((str(job), _why_unfinished(job)))
    for run in found.runs:
        run.config = paths_as_given(run.config, root)
    return found


def paths_as_given(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """`config` with each absolute path at or under the working folder written relative to it, when the
    runs were named by a relative `root`.

    Why: a job records its folders absolutely (`paths.root_dir`, `paths.output_dir`, `logger.dir`), so a
    report of `outputs/multirun/x` would print the machine's directories. Named relatively, the report made
    in the project root says `.`, `outputs` and `outputs/multirun/x/<job>`, and can be checked in; the run
    keys are the folders as reached from `root` (`load_disk_run`), so they agree. Runs named absolutely keep
    their absolute paths: the page names runs the way its caller did.
    """
    if root.is_absolute():
        return config
    here = str(Path.cwd().resolve())

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, str) and value == here:
            return "."
        if isinstance(value, str) and value.startswith(here + "/"):
            return value[len(here) + 1:]
        return value

    return rename(config)


# ---------------------------------------------------------------------------------------------- W&B API


def parse_wandb_spec(spec: str) -> tuple[str, str, str | None]:
    """`wandb:ENTITY/PROJECT[/GROUP]` -> (entity, project, group or None)."""
    parts = spec[len(WANDB_PREFIX):].strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"W&B source {spec!r} is not allowed: use {WANDB_PREFIX}ENTITY/PROJECT or "
                         f"{WANDB_PREFIX}ENTITY/PROJECT/GROUP")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def load_wandb_api(spec: str) -> RunSet:  # pragma: no cover - needs network and a W&B key; no test can reach it
    """Finished runs of a W&B project (optionally one group) through the public API.

    Untested here: the test machines have no network. It asks the API for exactly what the offline route
    reads from run files (config, summary), so the rest of the report is the same code either way.
    """
    entity, project, group = parse_wandb_spec(spec)
    try:
        import wandb

        api = wandb.Api(timeout=60)
        filters = {"group": group} if group else {}
        remote = list(api.runs(f"{entity}/{project}", filters=filters))
    except Exception as err:  # noqa: BLE001 - one clear line instead of a network stack trace
        raise RuntimeError(f"could not read W&B runs from {spec!r} ({type(err).__name__}: {err}); this needs "
                           f"network and `wandb login`. Offline, pass the run folders or their wandb/offline-run-* "
                           f"folders instead") from None
    found = RunSet(runs=[])
    for run in remote:
        if run.state != "finished":
            found.skipped.append((f"{entity}/{project}/{run.id}", f"W&B state {run.state}"))
            continue
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        found.runs.append(recorded_run(f"{entity}/{project}/{run.id}", "wandb-api", config,
                                       dict(run.summary._json_dict), {}))
    return found


# ---------------------------------------------------------------------------------------------- all


def load_runs(paths: Iterable[str | Path], source: str = "auto") -> RunSet:
    """Runs from every path (folders, or `wandb:ENTITY/PROJECT[/GROUP]`), each run once."""
    found = RunSet(runs=[])
    for path in paths:
        part = load_wandb_api(str(path)) if str(path).startswith(WANDB_PREFIX) else load_folder(Path(path), source)
        found.runs += part.runs
        found.skipped += part.skipped
    unique: dict[str, Run] = {}  # the same folder given twice, or spelled two ways, is one run
    for run in found.runs:
        unique.setdefault(run.key if run.source == "wandb-api" else str(Path(run.key).resolve()), run)
    found.runs = list(unique.values())
    if not found.runs:
        shown = ", ".join(map(str, paths))
        reasons = "; ".join(f"{p}: {why}" for p, why in found.skipped[:3])
        raise ValueError(f"no finished runs under {shown} (source={source})" + (f"; skipped {reasons}" if reasons else
                         ": expected job folders with metrics.json or W&B offline-run-* folders"))
    return found


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"decoding.top_p": 0.9, ...}; lists become JSON text so they can be compared."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: `run`, `source`, `path`, dotted config keys, slashed metric keys."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "source": run.source, "path": run.key}
        row.update(flatten(run.config))
        row.update(run.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.index = pd.Index([run.key for run in runs], name="key")
    # Which keys each run wrote: a NaN it wrote (undefined) is not the same as a metric it never measured.
    frame.attrs["written"] = {run.key: sorted(run.metrics) for run in runs}
    frame.attrs["not_measurable"] = {run.key: run.not_measurable for run in runs}
    frame.attrs["caveats"] = {run.key: run.caveats for run in runs}
    frame.attrs["mauve_features"] = {run.key: run.mauve_features for run in runs}
    return frame


def runs_subset(frame: pd.DataFrame, rows) -> pd.DataFrame:
    """`frame.loc[rows]` (run keys or a boolean mask) with the runs' notes (`attrs`: written, not_measurable,
    caveats, mauve_features), which pandas does not carry through every selection."""
    part = frame.loc[rows]
    part.attrs = frame.attrs
    return part


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if is_metric_key(c)]


def has_values(frame: pd.DataFrame, key: str) -> bool:
    """Whether any run has a number (not NaN) for `key`."""
    return key in frame.columns and bool(pd.to_numeric(frame[key], errors="coerce").notna().any())


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def safe_name(text: str) -> str:
    """A file-name-safe version of a key (`decoding.top_p` -> `decoding_top_p`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
