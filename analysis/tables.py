"""The report's tables as data: every cell keeps the raw number and the metric key it came from.

Why cells carry the raw value: the HTML prints a rounded number for people and the exact float
(`repr`, which round-trips) in a `data-value` attribute beside the run key and metric key, so a test can
read the page back and compare every cell with the run's `metrics.json`. No table computes a number of
its own (no ratios, no means): what is shown is what a run wrote.

Tables:
- `holtzman_table`: Holtzman et al. 2020, Table 1: method, generation perplexity, Self-BLEU-4, Zipf
  coefficient, repetition %, MAUVE, with the human continuations first as the reference row. Human
  MAUVE is not measured (MAUVE compares generations against the human texts), so that cell says so.
  `holtzman_tables` gives one per set of prompts (seen and held-out speeches side by side).
- `sampler_order_table`: each run's sampler order (`decoding.sampler_order`; transformers for runs that predate it).
- `perplexity_table`: teacher-forced perplexity of the dataset beside the perplexity of generations.
- `speed_table`: throughput and memory with the settings that drive them, and whether the run generated
  alone or batched with other configurations (`speed/sweep_configurations`): a batched job's speed is its
  share of a shared batch, not comparable with a lone run's.
- `all_metrics_table`: every metric of every run, so nothing a run measured is hidden.

Honest cells: a value the run could not measure (`null` in metrics.json, NaN here) reads "not measurable
(<reason>)" with the reason from `meta/not_measurable`, never a number or "nan". A number with a caveat
(`meta/caveats`, e.g. MAUVE on a handful of samples or on a random model's features) is marked with a
dagger, and the table lists the caveats under it with the sample size and features model the run recorded.

Intervals: where a run wrote `<metric>/ci95_low` and `<metric>/ci95_high` (its 95% bootstrap interval), the
metric's cell carries them and reads "0.43 [0.38, 0.48]"; a metric without them reads as its number alone.
Only `all_metrics_table` lists the interval ends as rows of their own (it holds every key a run wrote).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.methods import number_text
from analysis.runs import has_values, is_missing, metric_columns, runs_subset
from analysis.sweeps import context_columns, effective_settings, human_groups, method_order, run_labels


@dataclass
class Cell:
    value: float | str | None  # a number from metrics.json, a setting, or None (not measured)
    run: str | None = None  # the run key the number belongs to
    metric: str | None = None  # its key in metrics.json
    note: str = ""  # why a cell is empty, or why its number is not measurable
    caveat: str = ""  # what to know before trusting the number (marked in the page)
    low: float | None = None  # the run's `<metric>/ci95_low`, when it wrote one
    high: float | None = None  # the run's `<metric>/ci95_high`


@dataclass
class Row:
    label: str
    cells: list[Cell]
    kind: str = "run"  # "run" | "human"


@dataclass
class Table:
    id: str
    title: str
    caption: str
    columns: list[str]  # the first column holds the row labels
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown under the table: the caveats of marked cells


CAVEAT_MARK = "\u2020"  # dagger
INTERVAL_SUFFIXES = ("/ci95_low", "/ci95_high")


def interval(frame: pd.DataFrame, key: str, metric: str) -> tuple[float, float] | None:
    """Run `key`'s 95% interval of `metric` as it wrote it, or None (no interval, or a NaN end)."""
    ends = []
    for suffix in INTERVAL_SUFFIXES:
        column = metric + suffix
        if column not in frame.columns or pd.isna(frame.loc[key, column]):
            return None
        ends.append(float(frame.loc[key, column]))
    return ends[0], ends[1]


def metric_cell(frame: pd.DataFrame, key: str, metric: str) -> Cell:
    """The number run `key` wrote for `metric`; NaN with the run's reason when it was not measurable, empty
    when the run wrote nothing; with the run's caveat for it, if any."""
    written = frame.attrs.get("written", {}).get(key)
    if metric not in frame.columns or (metric not in written if written is not None
                                       else pd.isna(frame.loc[key, metric])):
        return Cell(None, note="not measured")
    value = float(frame.loc[key, metric])  # float: not numpy's float64
    if math.isnan(value):
        return Cell(value, run=key, metric=metric, note=run_note(frame, "not_measurable", key, metric))
    ends = interval(frame, key, metric)
    return Cell(value, run=key, metric=metric, caveat=run_note(frame, "caveats", key, metric),
                low=ends[0] if ends else None, high=ends[1] if ends else None)


def run_note(frame: pd.DataFrame, kind: str, key: str, metric: str) -> str:
    """Run `key`'s note of `kind` ("not_measurable" or "caveats", see `runs_frame`) for `metric`, or ""."""
    return frame.attrs.get(kind, {}).get(key, {}).get(metric, "")


def cell_text(cell: Cell) -> str:
    """What a cell reads in the page (without its caveat mark)."""
    if isinstance(cell.value, float) and math.isnan(cell.value):
        return f"not measurable ({cell.note})" if cell.note else "not measurable"
    if cell.low is not None and cell.high is not None:
        return (f"{format_value(cell.value, cell.metric)} "
                f"[{format_value(cell.low, cell.metric)}, {format_value(cell.high, cell.metric)}]")
    return format_value(cell.value, cell.metric)


def note_caveats(table: Table, frame: pd.DataFrame) -> Table:
    """List under `table` the caveat of every marked cell, once per distinct caveat, naming the runs and the
    sample size and features model they recorded (`<metric>_samples`, `meta/mauve_features`)."""
    labels = run_labels(frame)
    features = frame.attrs.get("mauve_features", {})
    grouped: dict[tuple[str, str], list[str]] = {}
    for row in table.rows:
        for cell in row.cells:
            if not cell.caveat:
                continue
            facts = [cell.caveat]
            samples = metric_cell(frame, cell.run, f"{cell.metric}_samples")
            if samples.value is not None:
                facts.append(f"samples per side: {cell_text(samples)}")
            if cell.metric.endswith("/mauve") and features.get(cell.run):
                facts.append(f"features model: {features[cell.run]}")
            runs = grouped.setdefault((cell.metric, "; ".join(facts)), [])
            if labels[cell.run] not in runs:
                runs.append(labels[cell.run])
    table.notes += [f"{CAVEAT_MARK} {metric} of {', '.join(runs)}: {facts}"
                    for (metric, facts), runs in grouped.items()]
    return table


HOLTZMAN_COLUMNS = (
    ("ppl", "Perplexity (generations)"),
    ("self_bleu4", "Self-BLEU-4"),
    ("zipf", "Zipf coefficient"),
    ("repetition_pct", "Repetition %"),
    ("mauve", "MAUVE"),
)


def holtzman_table(frame: pd.DataFrame) -> Table:
    labels = run_labels(frame)
    table = Table("table1", "Decoding methods against the human continuations (Holtzman et al. 2020, Table 1)",
                  "Perplexity is the scorer's per-token perplexity of each method's continuations (given the prompt); "
                  "Self-BLEU-4 and Zipf are over all continuations of a run; repetition % counts continuations "
                  "that end in a repetition loop; MAUVE compares the continuations with the human ones. "
                  "Human rows score the human continuations of the same prompts in the same way.",
                  ["Method", *(title for _, title in HOLTZMAN_COLUMNS)])
    for label, keys in human_groups(frame):
        first = keys[0]
        cells = [metric_cell(frame, first, f"human/{m}") if m != "mauve" else
                 Cell(None, note="MAUVE compares generations with these texts") for m, _ in HOLTZMAN_COLUMNS]
        table.rows.append(Row(label, cells, kind="human"))
    for key in method_order(frame):
        table.rows.append(Row(labels[key], [metric_cell(frame, key, f"gen/{m}") for m, _ in HOLTZMAN_COLUMNS]))
    return note_caveats(table, frame)


def context_text(frame: pd.DataFrame, key: str, groups: list[tuple[str, list[str]]]) -> str:
    """What sets run `key`'s prompts apart from the other groups': "dataset=sotu_seen: split=all, first_year=2000,
    last_year=2023" (unset settings left out, whole numbers without ".0")."""
    columns = [c for c in context_columns(frame) if frame.loc[[k[0] for _, k in groups], c].map(str).nunique() > 1]
    shown = [f"{c.removeprefix('dataset.')}={number_text(frame.loc[key, c])}" for c in columns
             if not is_missing(frame.loc[key, c])]
    return ", ".join(shown) or "the same prompts"


def holtzman_tables(frame: pd.DataFrame) -> list[Table]:
    """Table 1 once per set of prompts (runs sharing prompts and human continuations, `human_groups`): the
    study's seen and held-out speeches side by side, each with its own human row and its methods in the
    paper's order, labelled by method alone. One set of prompts: the one table of `holtzman_table`."""
    groups = human_groups(frame)
    if len(groups) == 1:
        return [holtzman_table(frame)]
    tables = []
    for index, (label, keys) in enumerate(groups, start=1):
        part = runs_subset(frame, keys)
        table = holtzman_table(part)
        context = context_text(frame, keys[0], groups)
        samples = metric_cell(frame, keys[0], "gen/samples").value
        table.id = f"table1-{index}"
        table.title = f"Table 1, prompts from {context}" + (f" ({int(samples)} prompts)" if samples else "")
        table.rows[0].label = "Human"
        tables.append(table)
    return tables


def sampler_order_table(frame: pd.DataFrame) -> Table:
    """Each run's sampler order: the order its logits processors ran in (`decoding.sampler_order`)."""
    labels = run_labels(frame)
    orders = effective_settings(frame)["decoding.sampler_order"]  # runs that predate the key: transformers
    table = Table("sampler-order", "Sampler order per run",
                  "The order each run applied its logits processors in (decoding.sampler_order): transformers "
                  "(penalties, temperature, then the truncations), llama.cpp (penalties, DRY, top-n\u03c3, top-k, "
                  "typical, top-p, min-p, XTC, temperature last), vllm (penalties, temperature, min-p, top-k, top-p), "
                  "or a list of processor names reordered among themselves. The same settings in another order are "
                  "another method.", ["Method", "Sampler order"])
    table.rows = [Row(labels[key], [Cell(orders[key])]) for key in method_order(frame)]
    return table


def perplexity_table(frame: pd.DataFrame) -> Table | None:
    """Teacher-forced perplexity of the dataset (per token, word, byte) beside generation perplexity."""
    if not (has_values(frame, "ppl/token") or has_values(frame, "gen/ppl")):
        return None
    labels = run_labels(frame)
    columns = (("ppl/token", "Dataset ppl/token (teacher-forced)"), ("ppl/word", "Dataset ppl/word"),
               ("ppl/bpb", "Dataset bits/byte"), ("gen/ppl", "Generations ppl/token"),
               ("human/ppl", "Human ppl/token"))
    table = Table("perplexity", "Teacher-forced and generation perplexity",
                  "Teacher-forced perplexity measures the model on the dataset's own text; generation perplexity "
                  "is how likely the scorer finds what a decoding method wrote, and human ppl is the same measure "
                  "of the human continuations. Low generation perplexity is not quality: in Holtzman et al. greedy "
                  "and beam search fall far below the human value by repeating themselves.",
                  ["Method", *(title for _, title in columns)])
    for key in method_order(frame):
        table.rows.append(Row(labels[key], [metric_cell(frame, key, m) for m, _ in columns]))
    return table


SPEED_METRICS = (("speed/prefill_tok_s", "Prefill tok/s"), ("speed/decode_tok_s", "Decode tok/s"),
                 ("speed/tok_s", "tok/s (end to end)"), ("speed/ttft_s", "Time to first token, s"),
                 ("mem/peak_rss_mb", "Peak RSS of the process, MB"))
SPEED_SETTINGS = (("cache.setting", "Cache"), ("prompts.batch_size", "Batch size"), ("decoding.num_beams", "Beams"))
SPECULATIVE_METRICS = (("speed/acceptance_rate", "Acceptance rate"),
                       ("speed/tokens_per_target_forward", "Tokens per target forward"))
SHARING_COLUMN = "Generated"


def sharing_cell(frame: pd.DataFrame, key: str) -> Cell:
    """How run `key` generated: alone, or in one batch with other configurations (`speed/sweep_configurations`)."""
    cell = metric_cell(frame, key, "speed/sweep_configurations")
    if cell.value is None or math.isnan(cell.value):
        return Cell(None, note="speed/sweep_configurations not recorded")
    count = int(cell.value)
    return Cell("alone" if count == 1 else f"batched with {count} configurations")


def speed_table(frame: pd.DataFrame) -> Table | None:
    if not has_values(frame, "speed/tok_s"):
        return None
    labels = run_labels(frame)
    settings = effective_settings(frame)
    present = [(k, t) for k, t in SPEED_SETTINGS if k in settings.columns]
    table = Table("speed", "Throughput and memory per run",
                  "Tokens per second measured by the decoding loop (prefill: prompt tokens; decode: new tokens "
                  "after the first). Generated: a run batched with C configurations was given 1/C of each shared "
                  "batch's time, so its speeds are the batch's throughput, not its own: compare speeds only between "
                  "rows that say the same there, and measure one method's speed alone (hydra/launcher=basic). Peak "
                  "RSS is the peak resident memory of the process the run ran in: the jobs of one batched or basic "
                  "sweep share one process, so each shows the sweep's peak up to its end, not its own.",
                  ["Method", *(t for _, t in present), SHARING_COLUMN, *(t for _, t in SPEED_METRICS)])
    speculative = [(m, t) for m, t in SPECULATIVE_METRICS if has_values(frame, m)]  # runs with a proposer
    if speculative:
        table.columns += [t for _, t in speculative]
        table.caption += (" Acceptance rate: proposed tokens the target kept over those proposed; tokens per target "
                          "forward: new tokens per row pass of the target, prefill included (speculative runs only).")
    for key in method_order(frame):
        cells = [Cell(settings.loc[key, k]) for k, _ in present]
        cells.append(sharing_cell(frame, key))
        cells += [metric_cell(frame, key, m) for m, _ in (*SPEED_METRICS, *speculative)]
        table.rows.append(Row(labels[key], cells))
    return table


def all_metrics_table(frame: pd.DataFrame) -> Table:
    order = method_order(frame)
    labels = run_labels(frame)
    table = Table("all-metrics", "Every metric of every run", "Exactly as each run's metrics.json holds it; "
                  "[low, high] is the run's 95% bootstrap interval where it wrote one.",
                  ["Metric", *(labels[k] for k in order)])
    for metric in sorted(metric_columns(frame)):  # interval ends too: this table holds every number as written
        table.rows.append(Row(metric, [metric_cell(frame, key, metric) for key in order]))
    return note_caveats(table, frame)


COUNT_SUFFIXES = ("/samples", "_samples", "/tokens", "/words", "/bytes", "/documents", "/windows", "/new_tokens",
                  "/sweep_configurations")


def format_value(value: float | str | None, metric: str | None = None) -> str:
    """How a value reads in the page; the exact number stays in the cell's data attribute."""
    if value is None:
        return "\u2014"
    if isinstance(value, str):
        return value
    number = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0
    if math.isnan(number):
        return "not measurable"  # with its reason: `cell_text`
    if number.is_integer() and (metric is None or metric.endswith(COUNT_SUFFIXES)) and abs(number) < 1e9:
        return f"{number:,.0f}"
    magnitude = abs(number)
    if magnitude >= 1e6:
        return f"{number:.3e}"
    if magnitude >= 100:
        return f"{number:,.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{number:.2f}"
    return f"{number:.3f}" if magnitude >= 0.01 else f"{number:.2e}"
