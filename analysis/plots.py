"""The report's figures, drawn with matplotlib's Agg backend into PNG files.

One function per figure; each returns the `Plot` it wrote, or None when the runs hold nothing to draw
(a sweep without MAUVE has no MAUVE panel; one run has no curves). An empty axis is never written:
a figure that exists shows data.

- `quality_curves`: generation perplexity, MAUVE, rep-n and distinct-n against one swept parameter,
  the human continuations' value as a dashed reference line of the same colour (human MAUVE does not
  exist: MAUVE compares generations with those very texts).
- `perplexity_vs_generation`: each method's generation perplexity as a bar, beside the dataset's
  teacher-forced perplexity and the human continuations' perplexity as lines.
- `quality_diversity`: each run as a point, diversity against generation perplexity, human as a star.
- `speed_curves`: tokens/s against batch size or beam width (lines), or per cache setting (bars).

Perplexities are drawn on a log axis: decoding methods differ by orders of magnitude. A value a run could
not measure (NaN) is left out of a figure (a gap in a line, no bar, no point), never drawn as a number.

Error bars: every point or bar whose run wrote `<metric>/ci95_low` and `/ci95_high` gets its 95% bootstrap
interval as an error bar; one without them gets none. What was drawn is listed in `Plot.intervals`
(run, metric, low, high), so a test can hold each bar against metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.outputs import replacing  # noqa: E402
from analysis.runs import has_values, safe_name  # noqa: E402
from analysis.sweeps import Curve, human_groups, method_order, run_labels  # noqa: E402
from analysis.tables import context_text, format_value, interval  # noqa: E402

DPI = 110
PARAM_TITLES = {"decoding.top_p": "top-p", "decoding.top_k": "top-k", "decoding.temperature": "temperature",
                "decoding.num_beams": "beam width", "decoding.min_p": "min-p", "decoding.typical_p": "typical-p",
                "decoding.epsilon_cutoff": "epsilon cutoff", "decoding.eta_cutoff": "eta cutoff",
                "prompts.batch_size": "batch size (prompts per generate call)", "cache.setting": "KV cache"}


@dataclass
class Plot:
    file: str  # name of the PNG beside the HTML page
    title: str
    caption: str
    intervals: list[tuple[str, str, float, float]] = field(default_factory=list)  # (run, metric, low, high) drawn


def _error_bars(axis, frame: pd.DataFrame, keys: list[str], metric: str, xs: list, ys: list[float], color,
                horizontal: bool = False) -> list[tuple[str, str, float, float]]:
    """Draw the 95% interval of each point of `keys` that has one (vertical bars; horizontal: along x, the
    value on the x axis and `xs` the positions); return what was drawn as (run, metric, low, high)."""
    drawn = []
    for key, x, y in zip(keys, xs, ys):
        ends = interval(frame, key, metric) if y == y else None
        if ends is None:
            continue
        low, high = ends
        error = [[max(0.0, y - low)], [max(0.0, high - y)]]
        if horizontal:
            axis.errorbar([y], [x], xerr=error, fmt="none", ecolor=color, capsize=3, linewidth=1, zorder=4)
        else:
            axis.errorbar([x], [y], yerr=error, fmt="none", ecolor=color, capsize=3, linewidth=1)
        drawn.append((key, metric, low, high))
    return drawn


def _values(frame: pd.DataFrame, keys: list[str], metric: str) -> list[float]:
    if metric not in frame.columns:
        return [float("nan")] * len(keys)
    return [float(v) for v in pd.to_numeric(frame.loc[keys, metric], errors="coerce")]


def _human(frame: pd.DataFrame, key: str, metric: str) -> float | None:
    """The human continuations' value for the prompts run `key` used (same for every run of its context)."""
    human = f"human/{metric.split('/', 1)[1]}"
    if human not in frame.columns or pd.isna(frame.loc[key, human]):
        return None
    return float(frame.loc[key, human])


def _save(fig, out_dir: Path, file: str) -> None:
    fig.tight_layout()
    with replacing(out_dir / file) as tmp:  # whole or not at all (analysis.outputs)
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def _log_scale(axis, which: str = "y") -> None:
    """A log axis labelled 1, 10, 100 (not 10^0 and crowded minor labels)."""
    (axis.set_yscale if which == "y" else axis.set_xscale)("log")
    ticks = axis.yaxis if which == "y" else axis.xaxis
    ticks.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    ticks.set_minor_formatter(NullFormatter())


def _log_if_wide(axis, values: list[float], which: str = "y") -> None:
    positive = [v for v in values if v == v and v > 0]
    if positive and len(positive) == len([v for v in values if v == v]) and max(positive) / min(positive) > 20:
        _log_scale(axis, which)


QUALITY_PANELS = (
    ("Generation perplexity", ("gen/ppl",), "lower is likelier; human = what people wrote"),
    ("MAUVE", ("gen/mauve",), "closer to 1 = closer to the human distribution"),
    ("rep-n (within-text repetition, %)", ("gen/rep_2", "gen/rep_3", "gen/rep_4"), ""),
    ("distinct-n (across texts)", ("gen/distinct_1", "gen/distinct_2", "gen/distinct_3", "gen/distinct_4"), ""),
)
MARKERS = ("o", "s", "^", "D", "v", "P")
SET_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")  # one per set of prompts (red stays the human's)


@dataclass
class PromptSets:
    """How a figure tells several sets of prompts apart (study 1's seen and held-out speeches): each run's
    colour is its set's, and its label leaves the set out (the legend names it). One set: one colour, the
    runs' own labels."""
    labels: pd.Series  # run key -> label
    color: dict[str, str]  # run key -> colour
    sets: list[tuple[str, str, list[str]]]  # (name, colour, run keys) per set; name "" when there is one set


def prompt_sets(frame: pd.DataFrame) -> PromptSets:
    groups = human_groups(frame)
    if len(groups) < 2:
        return PromptSets(run_labels(frame), {k: SET_COLORS[0] for k in frame.index}, [("", SET_COLORS[0],
                                                                                       list(frame.index))])
    sets = [(context_text(frame, keys[0], groups), SET_COLORS[g % len(SET_COLORS)], keys)
            for g, (_, keys) in enumerate(groups)]
    color = {k: c for _, c, keys in sets for k in keys}
    # Labelled within its set: what tells a set's runs apart, not the set (the colour and legend say it).
    labels = pd.concat([run_labels(frame.loc[keys]) for _, _, keys in sets])
    return PromptSets(labels, color, sets)


def _quality_panel(axis, frame: pd.DataFrame, found: list[Curve],
                   metrics: tuple[str, ...]) -> list[tuple[str, str, float, float]]:
    """One metric: a colour per curve. Several (rep-n, distinct-n): a colour per metric, a marker per curve.
    Human values are dashed lines in the colour of their series. Returns the error bars drawn."""
    bars = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several = len(metrics) > 1
    drawn: list[float] = []
    any_human = False
    for c_index, curve in enumerate(found):
        for m_index, metric in enumerate(metrics):
            color = colors[(m_index if several else c_index) % len(colors)]
            ys = _values(frame, curve.keys, metric)
            axis.plot(curve.values, ys, marker=MARKERS[c_index % len(MARKERS)] if several else "o", color=color)
            new = _error_bars(axis, frame, curve.keys, metric, curve.values, ys, color)
            bars += new
            drawn += ys + [end for bar in new for end in bar[2:]]  # the axis range covers the bars
            human = _human(frame, curve.keys[0], metric)
            if human is not None:
                axis.axhline(human, color=color, linestyle="--", linewidth=1)
                drawn.append(human)
                any_human = True
    handles = [Line2D([], [], color=colors[i % len(colors)], marker="o" if not several else None,
                      label=(metric.split("/", 1)[1] if several else
                             (curve.fixed if len(found) > 1 else "generated")))
               for i, (metric, curve) in enumerate(
                   [(m, found[0]) for m in metrics] if several else [(metrics[0], c) for c in found])]
    if several and len(found) > 1:
        handles += [Line2D([], [], color="gray", marker=MARKERS[i % len(MARKERS)], label=c.fixed)
                    for i, c in enumerate(found)]
    if any_human:  # MAUVE has no human value: no line, no legend entry
        handles.append(Line2D([], [], color="gray", linestyle="--", linewidth=1, label="human"))
    # Below the axis, not on it: a legend inside covers the points and the human lines it explains.
    axis.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    if metrics == ("gen/ppl",):
        _log_if_wide(axis, drawn)
    _pad_if_flat(axis, drawn)
    return bars


def _pad_if_flat(axis, values: list[float]) -> None:
    """Every value equal (rep-n all 0): give the axis a visible range instead of a 1e-17 offset."""
    finite = [v for v in values if v == v]
    if finite and max(finite) == min(finite):
        axis.set_ylim(finite[0] - max(1.0, abs(finite[0])) * 0.5, finite[0] + max(1.0, abs(finite[0])) * 0.5)


def quality_curves(frame: pd.DataFrame, param: str, found: list[Curve], out_dir: Path) -> Plot | None:
    panels = [p for p in QUALITY_PANELS if any(has_values(frame.loc[c.keys], m) for c in found for m in p[1])]
    if not panels:
        return None
    title = PARAM_TITLES.get(param, param)
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    entries = len(found) + 5  # legend rows at most: distinct-1..4, a marker per curve, human
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, (3.8 + 0.14 * entries) * nrows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    bars = []
    for axis, (panel_title, metrics, _) in zip(axes.flat, panels):
        bars += _quality_panel(axis, frame, found, metrics)
        _log_if_wide(axis, [float(v) for c in found for v in c.values], which="x")
        axis.set_title(panel_title, fontsize=10)
        axis.set_xlabel(title)
        axis.grid(alpha=0.3)
    fig.suptitle(f"Quality and diversity against {title}", fontsize=11)
    file = f"quality_vs_{safe_name(param)}.png"
    _save(fig, out_dir, file)
    return Plot(file, f"Quality and diversity against {title}",
                "Each point is one run; dashed lines are the human continuations of the same prompts; error bars "
                "are 95% bootstrap intervals over the prompts, where the run has them. "
                + " ".join(f"{t}: {note}." for t, _, note in panels if note), intervals=bars)


def perplexity_vs_generation(frame: pd.DataFrame, out_dir: Path) -> Plot | None:
    if not has_values(frame, "gen/ppl"):
        return None
    order = method_order(frame)
    by_set = prompt_sets(frame)
    ppl = _values(frame, order, "gen/ppl")
    height = 0.3 * len(order) + 2.2
    fig, axis = plt.subplots(figsize=(7.5, height))
    positions = list(range(len(order)))[::-1]  # first method on top
    axis.barh(positions, ppl, color=[by_set.color[k] for k in order])
    bars = _error_bars(axis, frame, order, "gen/ppl", positions, ppl, "black", horizontal=True)
    axis.set_yticks(positions, [by_set.labels[k] for k in order], fontsize=8)
    references = [v for v in ppl if v == v]
    handles = []
    for name, color, keys in by_set.sets:
        if name:  # several sets: the legend says which colour is which
            handles.append(matplotlib.patches.Patch(color=color, label=f"generations: {name}"))
        human = _human(frame, keys[0], "gen/ppl")
        line_color = "#c44e52" if not name else color
        if human is not None:
            handles.append(axis.axvline(human, color=line_color, linestyle="--",
                                        label="human continuations" + (f": {name}" if name else "")))
            references.append(human)
        if has_values(frame.loc[keys], "ppl/token"):
            tf = float(frame.loc[keys[0], "ppl/token"])
            handles.append(axis.axvline(tf, color="#55a868" if not name else color, linestyle=":",
                                        label="dataset, teacher-forced" + (f": {name}" if name else "")))
            references.append(tf)
    # bar position -> the right end of its error bar: the label goes beyond it
    drawn_high = {key: high for key, _, _, high in bars}
    right = {position: drawn_high[key] for key, position in zip(order, positions) if key in drawn_high}
    for position, value in zip(positions, ppl):
        if value == value:
            axis.annotate(format_value(value, "gen/ppl"), (max(value, right.get(position, value)), position),
                          xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    if references and min(references) > 0:
        _log_scale(axis, "x")
    axis.set_ylim(-0.7, len(order) - 0.3)
    axis.set_xlabel("perplexity per token (log scale)")
    axis.grid(axis="x", alpha=0.3)
    below = -0.6 / (height - 1.2)  # about 0.6 inch under the axis, below the x label, whatever the height
    axis.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, below), frameon=False)
    axis.set_title("Perplexity versus generation", fontsize=11)
    _save(fig, out_dir, "perplexity_vs_generation.png")
    return Plot("perplexity_vs_generation.png", "Perplexity versus generation",
                "Bars: how likely the scorer finds each method's continuations, with its 95% bootstrap interval "
                "over the prompts where the run has one. Lines: the human continuations of the same prompts, and "
                "the model's teacher-forced perplexity on the dataset"
                + ("; one colour per set of prompts." if len(by_set.sets) > 1 else "."), intervals=bars)


def quality_diversity(frame: pd.DataFrame, out_dir: Path) -> Plot | None:
    if not (has_values(frame, "gen/ppl") and has_values(frame, "gen/diversity")) or len(frame) < 2:
        return None
    by_set = prompt_sets(frame)
    fig, axis = plt.subplots(figsize=(8.5, 6.0))
    keys = list(frame.index)
    xs, ys = _values(frame, keys, "gen/diversity"), _values(frame, keys, "gen/ppl")
    all_xs, all_ys = list(xs), list(ys)  # the runs' and the human stars' values: the axes' extent
    bars = []
    for name, color, set_keys in by_set.sets:
        sx, sy = _values(frame, set_keys, "gen/diversity"), _values(frame, set_keys, "gen/ppl")
        axis.scatter(sx, sy, color=color, s=18, zorder=3, label=f"generations: {name}" if name else None)
        bars += _error_bars(axis, frame, set_keys, "gen/ppl", sx, sy, color)  # ppl along y
        bars += _error_bars(axis, frame, set_keys, "gen/diversity", sy, sx, color, horizontal=True)  # along x
        hx, hy = _human(frame, set_keys[0], "gen/diversity"), _human(frame, set_keys[0], "gen/ppl")
        if hx is not None and hy is not None:
            axis.scatter([hx], [hy], marker="*", s=160, color="#c44e52" if not name else color, edgecolor="black",
                         linewidth=0.5, zorder=4, label="Human" + (f": {name}" if name else ""))
            all_xs.append(hx)
            all_ys.append(hy)
    for key, x, y in zip(keys, xs, ys):
        if x == x and y == y:
            axis.annotate(by_set.labels[key], (x, y), fontsize=6, xytext=(4, 2), textcoords="offset points",
                          color=by_set.color[key])
    _log_if_wide(axis, all_ys)
    axis.set_xlabel("diversity = \u220f(1 - rep-n/100), n=2..4  (1 = no repeated n-grams)")
    axis.set_ylabel("generation perplexity")
    axis.grid(alpha=0.3)
    shown = [v for v in all_xs if v == v]
    span = (max(shown) - min(shown)) or 1.0
    axis.set_xlim(min(shown) - 0.05 * span, max(shown) + 0.4 * span)  # room on the right for the labels
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    axis.set_title("Quality versus diversity, every run", fontsize=11)
    _save(fig, out_dir, "quality_vs_diversity.png")
    return Plot("quality_vs_diversity.png", "Quality versus diversity",
                "Each run as one point, with 95% bootstrap intervals over the prompts where the run has them; the "
                "star is the human continuations" + (" (one colour per set of prompts)" if len(by_set.sets) > 1
                                                    else "") + ". Degenerate decoding sits low and left (likely, "
                "repetitive text); human text is diverse at a moderate perplexity.", intervals=bars)


SPEED_SERIES = (("speed/prefill_tok_s", "prefill"), ("speed/decode_tok_s", "decode"), ("speed/tok_s", "end to end"))


def speed_curves(frame: pd.DataFrame, param: str, found: list[Curve], out_dir: Path) -> Plot | None:
    if not any(has_values(frame.loc[c.keys], m) for c in found for m, _ in SPEED_SERIES):
        return None
    title = PARAM_TITLES.get(param, param)
    fig, axis = plt.subplots(figsize=(6.5, 4.0))
    categorical = any(isinstance(v, str) for c in found for v in c.values)
    width = 0.8 / max(1, len(found) * len(SPEED_SERIES))
    for c_index, curve in enumerate(found):
        for s_index, (metric, name) in enumerate(SPEED_SERIES):
            ys = _values(frame, curve.keys, metric)
            label = f"{name} ({curve.fixed})" if len(found) > 1 and curve.fixed else name
            if categorical:
                slot = c_index * len(SPEED_SERIES) + s_index
                axis.bar([i + (slot + 0.5) * width - 0.4 for i in range(len(ys))], ys, width=width, label=label)
                axis.set_xticks(range(len(curve.values)), [str(v) for v in curve.values])
            else:
                axis.plot(curve.values, ys, marker="o", label=label)
    if not categorical:
        _log_if_wide(axis, [float(v) for c in found for v in c.values], which="x")
    axis.set_xlabel(title)
    axis.set_ylabel("tokens / second")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Speed against {title}", fontsize=11)
    file = f"speed_vs_{safe_name(param)}.png"
    _save(fig, out_dir, file)
    return Plot(file, f"Speed against {title}", "Tokens per second as the decoding loop timed them: prefill "
                "(prompt tokens), decode (tokens after the first) and end to end (all new tokens).")
