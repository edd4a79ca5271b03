"""Data of decodelab's offline lm-eval tasks (experiments/lm_eval_tasks/), built deterministically from what we ship.

Three tasks, each a `test` split to score and a `train` split that few-shot examples are drawn from:
- `sotu_next_sentence` (multiple choice, 4 options, chance 25%): two consecutive sentences of a State of the
  Union address, then the sentence that followed, against three sentences of similar length from other
  addresses. Test rows from the validation years (2016-2024), few-shot rows from before 2016.
- `sotu_last_word` (short-answer generation, exact match): a sentence without its last word; the answer is
  that word (LAMBADA's idea on sotu).
- `arithmetic_add` (generation, exact match): "Question: What is 37 plus 48?\\nAnswer:" -> "85", operands
  0-99.

Why built, not downloaded: everything runs offline. Each row comes from `random.Random(seed)` over the
corpus in its fixed order, so the same seed gives the same rows on every machine; the rows are written as
jsonl under `$DECODELAB_CACHE/lm_eval_tasks/<task>-<seed>/` at first use (about 100 KB), then read back
into a `datasets.DatasetDict` (no `datasets` cache files written).
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Callable

TASKS = ("sotu_next_sentence", "sotu_last_word", "arithmetic_add")
TEST_ROWS, TRAIN_ROWS = 200, 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_LAST_WORD = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]{3,})\.$")


def sentences(text: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """The text's sentences (split after . ! ? before a capital), whitespace collapsed; None for odd lengths."""
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        out.append(sentence if min_words <= len(sentence.split()) <= max_words else None)
    return out


def _speech_sentences(split: str) -> list[list[str | None]]:
    from experiments.data import load_sotu

    return [sentences(text) for text in load_sotu(split)["text"]]


def next_sentence_rows(speeches: list[list[str | None]], count: int, rng: random.Random) -> list[dict]:
    """Rows {context, choices, label}: context = 2 sentences, choices = the next one and 3 from other speeches."""
    candidates = [(s, i) for s, sents in enumerate(speeches) for i in range(len(sents) - 2)
                  if all(sents[i + k] for k in range(3))]
    pool = [(s, sent) for s, sents in enumerate(speeches) for sent in sents if sent]
    rows = []
    for s, i in rng.sample(candidates, min(count, len(candidates))):
        sents = speeches[s]
        answer = sents[i + 2]
        distractors: list[str] = []
        while len(distractors) < 3:
            other, sent = pool[rng.randrange(len(pool))]
            if other != s and sent not in distractors and abs(len(sent.split()) - len(answer.split())) <= 8:
                distractors.append(sent)
        label = rng.randrange(4)
        choices = distractors[:label] + [answer] + distractors[label:]
        rows.append({"context": f"{sents[i]} {sents[i + 1]}", "choices": choices, "label": label})
    return rows


def last_word_rows(speeches: list[list[str | None]], count: int, rng: random.Random) -> list[dict]:
    """Rows {context, answer}: a sentence of 10+ words ending in a plain word and a period, cut before the word."""
    candidates = []
    for sents in speeches:
        for i in range(1, len(sents)):
            match = _LAST_WORD.match(sents[i] or "")
            if match and sents[i - 1] and len(sents[i].split()) >= 10:
                candidates.append({"context": f"{sents[i - 1]} {match['context']}", "answer": match["word"]})
    return rng.sample(candidates, min(count, len(candidates)))


def arithmetic_rows(count: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(count):
        a, b = rng.randrange(100), rng.randrange(100)
        rows.append({"question": f"What is {a} plus {b}?", "answer": str(a + b)})
    return rows


def build_rows(task: str, seed: int = 0) -> dict[str, list[dict]]:
    """{"test": rows, "train": rows} of one task, the same for the same seed."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of decodelab's local tasks; use one of {TASKS}")
    rng = random.Random(f"{task}-{seed}")
    if task == "arithmetic_add":
        return {"test": arithmetic_rows(TEST_ROWS, rng), "train": arithmetic_rows(TRAIN_ROWS, rng)}
    make: Callable = next_sentence_rows if task == "sotu_next_sentence" else last_word_rows
    return {"test": make(_speech_sentences("validation"), TEST_ROWS, rng),
            "train": make(_speech_sentences("train"), TRAIN_ROWS, rng)}


def task_folder(task: str, seed: int = 0) -> Path:
    """The folder of a task's jsonl files, written on first use (atomically: a folder is whole or absent)."""
    from experiments.models import cache_root

    folder = cache_root() / "lm_eval_tasks" / f"{task}-{seed}"
    if (folder / "test.jsonl").is_file():
        return folder
    rows = build_rows(task, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=folder.parent))
    for split, split_rows in rows.items():
        with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in split_rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    try:
        os.rename(staging, folder)
    except OSError:  # another process wrote it first: theirs is the same
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()
    return folder


def load_task_dataset(task: str, seed: int = 0):
    """The task's DatasetDict (`test`, `train`) from its jsonl files: what the YAMLs' `custom_dataset` returns."""
    import datasets

    folder = task_folder(task, seed)
    splits = {}
    for split in ("test", "train"):
        with open(folder / f"{split}.jsonl", encoding="utf-8") as handle:
            splits[split] = datasets.Dataset.from_list([json.loads(line) for line in handle])
    return datasets.DatasetDict(splits)
