"""`custom_dataset` functions of the YAMLs in this folder (lm-eval loads this file by path via `!function`).

Each returns the task's DatasetDict, built by `experiments.lm_eval_task_data` at first use. lm-eval passes
the task's `metadata` (and `dataset_kwargs`) as keywords; `seed` among them picks another deterministic draw.
"""

from experiments.lm_eval_task_data import load_task_dataset


def sotu_next_sentence(seed: int = 0, **metadata):
    return load_task_dataset("sotu_next_sentence", int(seed))


def sotu_last_word(seed: int = 0, **metadata):
    return load_task_dataset("sotu_last_word", int(seed))


def arithmetic_add(seed: int = 0, **metadata):
    return load_task_dataset("arithmetic_add", int(seed))
