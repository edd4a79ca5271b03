"""MAUVE's features of the human continuations, computed once per sweep and read back by its other jobs.

Why: every job of a study scores its generations against the same human continuations with the same scorer,
so MAUVE's P side (one scorer forward per human text) is the same matrix in every job; on study 1 it is about
half of each job's MAUVE time. The cache file is keyed on the texts, the scorer's config and the featurizing
settings, and holds the float32 matrix as `np.save` wrote it, so a job that reads it gets the same features,
and so the same MAUVE, as one that computes them. A file that does not load is moved aside and redone.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.jobs import move_aside, sweep_cache_file
from experiments.logging import write_atomic

log = logging.getLogger(__name__)


def cache_path(cfg: DictConfig, references: Sequence[str]) -> Path:
    from experiments.metrics import mauve_score

    scorer_node = cfg.scorer if cfg.scorer is not None else cfg.model
    key_data = {"references": list(references),
                "scorer": OmegaConf.to_container(OmegaConf.create({"node": scorer_node}), resolve=True)["node"],
                "batch_size": mauve_score.FEATURE_BATCH_SIZE, "max_text_length": mauve_score.MAX_TEXT_LENGTH}
    return sweep_cache_file(cfg.paths.output_root, "mauve-features", key_data, ".npy")


def reference_features(cfg: DictConfig, references: Sequence[str], scorer: Any, scorer_tokenizer: Any):
    """(N kept, H) float32 features of the non-empty `references` under `scorer`, or None if all are empty."""
    from experiments.metrics import mauve_score

    path = cache_path(cfg, references)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        pass
    except (ValueError, OSError, EOFError) as err:  # truncated or not an .npy file
        moved = move_aside(path, "corrupt")
        log.warning(f"MAUVE features cache {path} does not load ({err}); moved aside to {moved}, computing again")
    features = mauve_score.reference_features(references, scorer, scorer_tokenizer)
    if features is not None:
        buffer = io.BytesIO()
        np.save(buffer, features, allow_pickle=False)
        write_atomic(path, buffer.getvalue())  # whole or not at all: a reader never sees half a matrix
    return features
