"""Where results go: files on disk first (written atomically), then Weights & Biases.

Why disk first: `metrics.json` and `samples.jsonl` in the run folder are the record; W&B is a view of
them. A W&B failure (no network in online mode, a broken install) is reported and never costs what is on
disk. W&B runs offline by default and writes real run files under `<run dir>/wandb/`; `wandb sync
<that folder>` uploads them later. `read_offline_run` reads those files back without network.

metrics.json is valid JSON (`write_metrics`): NaN and infinities are null, each with its reason in
`meta/not_measurable`; W&B gets only the numbers. Files are created as `open()` creates them (0o666 less
the umask), so collaborators can read results on a shared machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

from experiments.faults import failpoint

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- disk


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a whole file or nothing: a temporary sibling renamed over the target. `text` is written as
    UTF-8; bytes (an `np.save` buffer, say) as they are.

    The sibling is opened like `open(path, "w")` opens a file (mode 0o666 less the umask), not like
    `tempfile.mkstemp` (0o600), so collaborators on a shared machine can read results as they can read
    any other file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # a name another writer drew: draw again
            continue
    try:
        binary = isinstance(text, bytes)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _finite(data: Any) -> Any:
    """JSON has no NaN or infinity: such floats become None (null), in nested dicts and lists too."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    """Valid JSON (NaN and infinities as null), indented, keys sorted. For metrics use `write_metrics`."""
    write_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=True, default=float, allow_nan=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(row, default=float) + "\n" for row in rows))


NOT_MEASURABLE = "meta/not_measurable"


def clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's metrics as it returns and records them: floats, `meta/*` values as given, and a reason in
    `meta/not_measurable` for every value that is not a finite number.

    NaN stays NaN here (a sweeper reads NaN as "no value"); `write_metrics` turns it into null. Reasons
    given by whoever computed the metrics are kept ("n=1"); a value without one gets "not measurable".
    """
    out = {k: v if k.startswith("meta/") else (math.nan if v is None else float(v)) for k, v in metrics.items()}
    given = dict(out.get(NOT_MEASURABLE) or {})
    reasons = {}
    for key, value in out.items():
        if key.startswith("meta/") or math.isfinite(value):
            continue
        default = "not measurable" if math.isnan(value) else "not measurable (infinite)"
        reasons[key] = str(given.get(key) or default)
    # a reason for a key the run did not produce explains its absence: kept; one for a finite value is wrong
    reasons.update({k: str(v) for k, v in given.items() if k not in out})
    out[NOT_MEASURABLE] = dict(sorted(reasons.items()))
    return out


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """metrics.json: valid JSON, each value that is not a finite number null with its reason (`clean_metrics`)."""
    write_json(path, clean_metrics(metrics))


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers among `metrics` (what W&B charts); `meta/*` dicts and strings left out."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------------------------------------- loggers


class NullLogger:
    """Logs nothing; the same methods as WandbLogger."""

    def start(self, config: dict, run_name: str, tags: Iterable[str] = ()) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass

    def log_samples(self, rows: list[dict]) -> None:
        pass

    def log_charts(self, metrics: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """W&B run per job: config, metrics (summary + one history step), a table of samples.

    Runs of one sweep share `group`; swept values are in the config (and the run name).
    """

    def __init__(self, project: str = "decodelab", mode: str = "offline", group: str | None = None,
                 dir: str | None = None, tags: Iterable[str] = (), entity: str | None = None):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r} is not allowed: use offline, online or disabled")
        self.project, self.mode, self.group, self.dir = project, mode, group, dir
        self.tags, self.entity = list(tags), entity
        self.run = None

    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - W&B must never cost the run its results on disk
            log.warning(f"W&B {what} failed ({type(err).__name__}: {err}); results on disk are complete")
            self.run = None

    def start(self, config: dict, run_name: str, tags: Iterable[str] = ()) -> None:
        def _start():
            import wandb

            if self.dir:
                Path(self.dir).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, group=self.group,
                                  dir=self.dir, name=run_name, config=config, tags=[*self.tags, *tags],
                                  reinit="finish_previous")

        self._guard("init", _start)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Numbers only: NaN is logged (W&B shows no value); `meta/*` notes are in metrics.json."""
        if self.run is not None:
            self._guard("log", self.run.log, numeric(metrics))
        failpoint("wandb_writing")  # after init, before finish: a kill here leaves a half-written W&B run

    def log_samples(self, rows: list[dict]) -> None:
        if self.run is None or not rows:
            return

        def _log():
            import wandb

            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[_cell(row[c]) for c in columns] for row in rows])
            self.run.log({"samples": table})

        self._guard("table", _log)

    def log_charts(self, metrics: dict[str, float]) -> None:
        """The charts W&B shows for one job (generated beside human, the three perplexities)."""
        if self.run is None:
            return

        def _log():
            from experiments.run_charts import run_charts

            self.run.log(run_charts(numeric(metrics)))

        self._guard("charts", _log)

    def finish(self) -> None:
        if self.run is None:
            return

        def _finish():
            import wandb

            self.run.finish()
            wandb.teardown()  # flushes the offline run file; without it wandb 0.31 can leave it empty

        self._guard("finish", _finish)
        self.run = None


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


# ---------------------------------------------------------------------------------------------- reading


_BLOCK = 32768
_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_RECORD = struct.Struct("<IHB")  # masked crc32c, length, type (1 full, 2 first, 3 middle, 4 last)


def _records(path: Path) -> Iterator[bytes]:
    """Payloads of a W&B run file: LevelDB's log format (32 KiB blocks, fragments) after a 7-byte header."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        return
    ident, magic, _ = _HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD.size:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        payload, pos = data[pos:pos + length], pos + length
        if kind == 0:  # zero padding
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            yield pending
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """What an offline W&B run logged: {"config", "history" (list of steps), "summary", "group", "name"}."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "group": None, "name": None}

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    for payload in _records(files[0]):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            out["config"].update({key(i): json.loads(i.value_json) for i in updates if key(i) != "_wandb"})
            if kind == "run":
                out["group"], out["name"] = record.run.run_group, record.run.display_name
    for step in out["history"]:  # the summary is the last value of each key when none was set explicitly
        for k, v in step.items():
            out["summary"].setdefault(k, v)
    return out


def find_offline_runs(folder: str | Path) -> list[Path]:
    """Offline W&B run folders below `folder`."""
    return sorted(p.parent for p in Path(folder).rglob("offline-run-*/run-*.wandb"))
