"""A job folder's state: is it finished for this config, is someone working in it, and what it is.

A job folder is finished for a config when three files agree: `metrics.json` parses and carries
`meta/fingerprint`, that fingerprint is the config's (`config_fingerprint`), and `config.yaml` (the
resolved config as written) has the same fingerprint. The fingerprint in metrics.json is the truth: a
hand-edited config.yaml, a truncated metrics.json or results of another config are reported (one line
naming the folder and what is wrong) and the job is recomputed. Files judged wrong are moved aside
(`metrics.json.corrupt-<utc time>`, `config.yaml.edited-<utc time>`, ...), never deleted: they may be all
that is left of hours of work, and a person decides what they were.

A job takes a lock on its folder before working (`wait_for_lock`, `try_lock`; experiments/job_lock.py),
so two sweeps started into the same folder compute each job once: the second waits for the first and
reads its result.

    lock = try_lock(job_dir)              # None: another live process holds it
    metrics = read_finished(job_dir, fp)  # None: not finished for this fingerprint
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from experiments.job_lock import JobLock, JobLockedError, lock_holder, try_lock, wait_for_lock

__all__ = ["NOT_IN_FINGERPRINT", "JobLock", "JobLockedError", "RECORDED_DEFAULTS", "config_fingerprint", "config_differences",
           "lock_holder", "move_aside", "read_finished", "read_json_or_move_aside", "try_lock", "wait_for_lock",
           "with_recorded_defaults"]

log = logging.getLogger(__name__)

# Parts of the config that change where or how results are shown (or how long to wait), not what they are.
NOT_IN_FINGERPRINT = ("paths", "logger", "hydra", "resume", "name", "optimized_metric", "lock_wait_s")


# Settings every config.yaml records even where the config leaves them out (the report shows them per run), with
# the value a run without them used. That value is left out of the fingerprint: configs written before a setting
# was recorded keep their fingerprints, so their folders still resume.
RECORDED_DEFAULTS: dict[str, dict[str, Any]] = {"decoding": {"sampler_order": "transformers"},
                                                 "prompts": {"warmup_batches": 0},
                                                 "model": {"device_map": None, "tp_plan": None, "offload_folder": None,
                                                           "quantization": None, "quantization_group_size": None}}


def with_recorded_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (plain data) with each RECORDED_DEFAULTS setting its section lacks filled in; a section the config
    does not have is not added."""
    out = dict(config)
    for section, defaults in RECORDED_DEFAULTS.items():
        if isinstance(out.get(section), dict):
            out[section] = {**out[section], **{k: v for k, v in defaults.items() if k not in out[section]}}
    return out


def _without_recorded_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the RECORDED_DEFAULTS settings that hold their default value (see there: old fingerprints)."""
    out = dict(config)
    for section, defaults in RECORDED_DEFAULTS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in defaults or v != defaults[k]}
    return out


def sweep_cache_file(output_root: str | Path, kind: str, key_data: Any, suffix: str) -> Path:
    """`<output_root>/cache/<kind>-<key><suffix>`: a file the jobs of a sweep share, named by the first 16 hex
    digits of the sha256 of `key_data` (plain JSON data: everything the cached value depends on) as sorted JSON,
    so a change in any of it names another file."""
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    return Path(output_root) / "cache" / f"{kind}-{key}{suffix}"


def config_fingerprint(config: dict[str, Any]) -> str:
    """The fingerprint of a resolved config as plain data (as `config.yaml` holds it, `yaml.safe_load`ed).

    Equal to `experiments.run.fingerprint(cfg)` for the config a job ran with, so it is what the job's
    metrics.json carries as `meta/fingerprint` unless config.yaml was edited afterwards.
    """
    data = {k: v for k, v in _without_recorded_defaults(config).items() if k not in NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping stays a value."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_differences(left: dict[str, Any], right: dict[str, Any], limit: int = 5) -> list[str]:
    """`key: left -> right` for each fingerprinted key (dotted) that differs; at most `limit`, then a count."""
    a = _flatten({k: v for k, v in with_recorded_defaults(left).items() if k not in NOT_IN_FINGERPRINT})
    b = _flatten({k: v for k, v in with_recorded_defaults(right).items() if k not in NOT_IN_FINGERPRINT})
    absent = "<absent>"
    keys = sorted(k for k in set(a) | set(b) if a.get(k, absent) != b.get(k, absent))
    shown = [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}" for k in keys[:limit]]
    return shown + ([f"and {len(keys) - limit} more"] if len(keys) > limit else [])


def move_aside(path: Path, why: str) -> Path | None:
    """Rename `path` to `<name>.<why>-<utc time>` beside it; None if it is gone already (someone else moved it)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return target


def read_json_or_move_aside(path: Path, what: str, numbers: bool = False) -> dict[str, Any] | None:
    """A JSON object from `path` (with `numbers`: of numbers or nulls only); None if absent, or if broken:
    then it is reported and moved aside."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        problem = f"is not valid JSON ({err})"
    else:
        wrong = [k for k, v in data.items() if not (v is None or type(v) in (int, float))] if isinstance(
            data, dict) and numbers else []
        if isinstance(data, dict) and not wrong:
            return data
        problem = (f"holds a {type(data).__name__}, not a JSON object" if not isinstance(data, dict)
                   else f"holds a value that is not a number at {wrong[0]!r}")
    moved = move_aside(path, "corrupt")
    log.warning(f"{what} {path} {problem}; moved aside to {moved.name if moved else '(already gone)'}; "
                "recomputing it")
    return None


@dataclass
class _Verdict:
    """What a job folder holds for one fingerprint: the metrics if finished, else why not and what to move."""

    metrics: dict[str, Any] | None = None
    problem: str | None = None  # None with metrics None: nothing there (never ran, or moved aside)
    move: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) to move aside


def _as_floats(stored: dict[str, Any]) -> dict[str, Any]:
    """metrics.json as the runner returns metrics: null (not measurable) back to NaN, `meta/*` as written."""
    return {k: v if k.startswith("meta/") else (math.nan if v is None else v) for k, v in stored.items()}


def _read_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "config.yaml is missing"
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return None, f"config.yaml is not valid YAML ({str(err).splitlines()[0]})"
    if not isinstance(data, dict):
        return None, f"config.yaml holds a {type(data).__name__}, not a mapping"
    return data, None


def _judge(job_dir: Path, fingerprint: str, config: dict[str, Any] | None) -> _Verdict:
    metrics_path, config_path = job_dir / "metrics.json", job_dir / "config.yaml"
    try:
        stored = json.loads(metrics_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _Verdict()
    except (ValueError, UnicodeDecodeError) as err:
        return _Verdict(problem=f"{metrics_path} is not valid JSON ({err})", move=[(metrics_path, "corrupt")])
    if not isinstance(stored, dict) or not isinstance(stored.get("meta/fingerprint"), str):
        return _Verdict(problem=f"{metrics_path} is not a result file (no meta/fingerprint)",
                        move=[(metrics_path, "corrupt")])
    written, config_problem = _read_config(config_path)
    stored_fp = stored["meta/fingerprint"]
    if stored_fp != fingerprint:
        what = (f"; config.yaml differs from this config in {', '.join(config_differences(written, config))}"
                if written is not None and config is not None else "")
        return _Verdict(problem=f"{job_dir} holds the results of another config (metrics.json fingerprint "
                                f"{stored_fp}, this config's {fingerprint}{what})",
                        move=[(metrics_path, "outdated")])
    if written is None:
        bad_config = [(config_path, "corrupt")] if config_path.exists() else []
        return _Verdict(problem=f"{job_dir}: {config_problem}, so its metrics.json cannot be checked",
                        move=[*bad_config, (metrics_path, "unverified")])
    written_fp = config_fingerprint(written)
    if written_fp != stored_fp:
        what = f"; it differs from this config in {', '.join(config_differences(written, config))}" if config else ""
        return _Verdict(problem=f"{config_path} was edited after the job finished (its fingerprint {written_fp}, "
                                f"metrics.json's {stored_fp}{what})",
                        move=[(config_path, "edited"), (metrics_path, "unverified")])
    return _Verdict(metrics=_as_floats(stored))


def read_finished(job_dir: str | Path, fingerprint: str, config: dict[str, Any] | None = None,
                  repair: bool = False) -> dict[str, Any] | None:
    """The job's stored metrics if its folder holds a finished, untouched result for `fingerprint`, else None.

    `config`: the composed config as plain data (`experiments.run.plain(cfg)`), only to name what differs.
    `repair=True` (call it holding the folder's lock): a folder that holds a result which is not this
    one (corrupt, another config's, config.yaml edited or missing) is reported in one line and the files
    judged are moved aside, so the job recomputes from a clean folder. `repair=False` only reads.
    Null (not measurable) values come back as NaN; `meta/*` values as written.
    """
    job_dir = Path(job_dir)
    verdict = _judge(job_dir, fingerprint, config)
    if verdict.metrics is not None or verdict.problem is None or not repair:
        return verdict.metrics
    moved = [move_aside(path, why) for path, why in verdict.move]
    names = ", ".join(p.name for p in moved if p is not None) or "nothing (already gone)"
    log.warning(f"resume: {verdict.problem}; moved aside: {names}; recomputing this job")
    return None
