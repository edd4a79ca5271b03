"""Table 1 drawn side by side: each metric of Holtzman et al.'s Table 1 per method, one marker per set of prompts.

When the runs hold several sets of prompts (the study's speeches the model may have seen and the held-out
one), `table1_side_by_side` draws, per metric, every method on one row and each set's value as a marker with
its 95% interval, and each set's human value as a dashed line of its colour: where a method lands relative to
the human text on seen and on unseen speeches reads at a glance. Methods are matched across sets by their label
(`method_label`); a method only one set ran is drawn for that set alone. One set of prompts: no figure (Table 1
says it all).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.methods import decoding_of, method_label  # noqa: E402
from analysis.plots import SET_COLORS as COLORS, Plot, _error_bars, _log_scale, _save  # noqa: E402
from analysis.sweeps import human_groups, method_order  # noqa: E402
from analysis.tables import HOLTZMAN_COLUMNS, context_text  # noqa: E402

LOG_METRICS = ("ppl",)  # perplexities differ by orders of magnitude between methods


def table1_side_by_side(frame: pd.DataFrame, out_dir: Path) -> Plot | None:
    groups = human_groups(frame)
    if len(groups) < 2:
        return None
    labels = {key: method_label(decoding_of(frame.loc[key])) for key in frame.index}
    methods: list[str] = []
    for key in method_order(frame):  # the paper's order, each method once
        if labels[key] not in methods:
            methods.append(labels[key])
    metrics = [(m, title) for m, title in HOLTZMAN_COLUMNS if f"gen/{m}" in frame.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics) + 2.5, 0.32 * len(methods) + 2.0),
                             sharey=True)
    axes = list(axes) if len(metrics) > 1 else [axes]
    rows = {method: len(methods) - 1 - i for i, method in enumerate(methods)}  # first method on top
    drawn = []
    for g, (_, keys) in enumerate(groups):
        color = COLORS[g % len(COLORS)]
        offset = 0.15 * (g - (len(groups) - 1) / 2)  # the sets' markers side by side on a method's row
        name = context_text(frame, keys[0], groups)
        runs = [k for k in keys if pd.notna(frame.loc[k].get("gen/samples"))]
        for axis, (metric, title) in zip(axes, metrics):
            column = f"gen/{metric}"
            values = [float(frame.loc[k, column]) if pd.notna(frame.loc[k, column]) else float("nan") for k in runs]
            ys = [rows[labels[k]] + offset for k in runs]
            axis.scatter(values, ys, color=color, s=18, zorder=5, label=name if axis is axes[0] else None)
            drawn += _error_bars(axis, frame, runs, column, ys, values, color, horizontal=True)
            human = frame.loc[keys[0]].get(f"human/{metric}") if metric != "mauve" else None
            if human is not None and pd.notna(human):
                axis.axvline(float(human), color=color, linestyle="--", linewidth=1)
    for axis, (metric, title) in zip(axes, metrics):
        if metric in LOG_METRICS:
            _log_scale(axis, "x")
        axis.set_title(title, fontsize=9)
        axis.grid(axis="x", alpha=0.3)
        axis.tick_params(axis="x", labelsize=7)
    axes[0].set_yticks(list(rows.values()), list(rows), fontsize=7)
    fig.legend(loc="lower center", ncol=len(groups), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Table 1 side by side: each set of prompts (dashed: its human continuations)", fontsize=10)
    fig.subplots_adjust(bottom=0.12)
    _save(fig, out_dir, "table1_side_by_side.png")
    return Plot("table1_side_by_side.png", "Table 1 side by side",
                "Each metric of Table 1 per method, one colour per set of prompts, with the run's 95% interval over "
                "its prompts; dashed lines: that set's human continuations (MAUVE has none: it compares with them).",
                intervals=drawn)
