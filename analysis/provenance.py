"""What a report rests on: model, dataset and split, seeds, prompts, MAUVE's features model and sample
size, and the package versions.

Versions come from two places, and the page keeps them apart: the runs' own environment (the
`requirements.txt` W&B records next to each offline run, read in `analysis.runs`) and the environment
that drew the report. Runs logged without W&B recorded no versions; the page says so rather than
passing the report's versions off as theirs.
"""

from __future__ import annotations

import platform
from importlib import metadata

import pandas as pd

from analysis.runs import VERSIONED_PACKAGES, Run, has_values, is_missing

REPORT_PACKAGES = ("decodelab", "pandas", "matplotlib", "numpy", "wandb")


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        return []
    return sorted({str(v) for v in frame[column] if not is_missing(v)})


def _join(values: list[str], missing: str = "not recorded") -> str:
    return ", ".join(values) if values else missing


def dataset_descriptions(frame: pd.DataFrame) -> list[str]:
    out = set()
    for _, row in frame.iterrows():
        source = row.get("dataset.source")
        where = next((f"{k.split('.', 1)[1]}={row[k]}" for k in ("dataset.name", "dataset.path")
                      if k in row and not is_missing(row[k])), "")
        out.add(" ".join(str(p) for p in (source, where) if p and not is_missing(p)))
    return sorted(out)


def run_versions(runs: list[Run]) -> str:
    found: dict[str, set[str]] = {}
    for run in runs:
        for package, version in run.versions.items():
            found.setdefault(package, set()).add(version)
    recorded = sum(bool(run.versions) for run in runs)
    if not found:
        return "not recorded (no W&B requirements.txt beside the runs)"
    shown = ", ".join(f"{p} {' / '.join(sorted(found[p]))}" for p in VERSIONED_PACKAGES if p in found)
    return shown + ("" if recorded == len(runs) else f" ({recorded} of {len(runs)} runs recorded versions)")


def report_versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for package in REPORT_PACKAGES:
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} not installed")
    return ", ".join(parts)


def mauve_basis(frame: pd.DataFrame, runs: list[Run]) -> str:
    """What the MAUVE numbers rest on: the features model and texts per side the runs recorded."""
    features = sorted({run.mauve_features for run in runs if run.mauve_features})
    samples = sorted({int(v) for v in frame.get("gen/mauve_samples", []) if not is_missing(v)})
    return f"features from {_join(features)}; samples per side: {_join([str(n) for n in samples])} (the paper: 5000)"


def provenance(frame: pd.DataFrame, runs: list[Run]) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order the page shows them."""
    sources: dict[str, int] = {}
    for run in runs:
        sources[run.source] = sources.get(run.source, 0) + 1
    prompt_keys = ("num_prompts", "prompt_tokens", "continuation_tokens", "mode")
    prompts = [f"{k}={' / '.join(_distinct(frame, f'prompts.{k}'))}" for k in prompt_keys
               if _distinct(frame, f"prompts.{k}")]
    scorer = _distinct(frame, "scorer.name") or ["the generating model"]
    mauve = [("MAUVE", mauve_basis(frame, runs))] if has_values(frame, "gen/mauve") else []
    return [
        ("Study", _join(_distinct(frame, "name"))),
        ("Model", _join(_distinct(frame, "model.name"))
         + (f" (dtype {_join(_distinct(frame, 'model.dtype'))}, device {_join(_distinct(frame, 'model.device'))})"
            if _distinct(frame, "model.dtype") else "")),
        ("Scorer (generation perplexity, MAUVE features)", _join(scorer)),
        ("Dataset", _join(dataset_descriptions(frame))),
        ("Split", _join(_distinct(frame, "dataset.split"), "none (local files: every document)")),
        ("Seeds", _join(_distinct(frame, "seed"))),
        ("Prompts", _join(prompts)),
        *mauve,
        ("Runs", f"{len(runs)} (" + ", ".join(f"{n} from {s}" for s, n in sorted(sources.items())) + ")"),
        ("Package versions (runs)", run_versions(runs)),
        ("Package versions (this report)", report_versions()),
    ]
