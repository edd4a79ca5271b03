"""The speed study's figures: decode tokens/s of every run that generated alone, and what speculative runs kept.

- `speed_by_run`: one bar per run (decode tokens/s, the loop's own timing), in method order, each labelled with
  its value and its ratio to the baseline run, the plain greedy run whose other settings (cache, dtype,
  quantization, batch size) most runs share: "x1.41" reads "1.41 times greedy's decode rate in this sweep". The
  ratio is the one number here that no run wrote: it divides two runs' `speed/decode_tok_s`, both shown.
- `speculative_acceptance`: acceptance rate and new tokens per target forward of each speculative run.

Runs that shared a batched generation (`speed/sweep_configurations` > 1), or did not record it, are left out:
their speed is a share of a batch, not their own (README, "Speed numbers of a batched job"). Fewer than two
runs left: no figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.methods import decoding_of, method_label, number_text  # noqa: E402
from analysis.plots import Plot, _save, _values  # noqa: E402
from analysis.runs import has_values, is_missing  # noqa: E402
from analysis.sweeps import describe, effective_settings, method_order  # noqa: E402
from analysis.tables import format_value  # noqa: E402

PROPOSER_KEYS = ("assistant_model", "prompt_lookup_num_tokens", "draft_layers", "num_assistant_tokens")


def alone(frame: pd.DataFrame) -> list[str]:
    """Run keys, in method order, that generated alone and have a decode rate."""
    keys = []
    for key in method_order(frame):
        shared = frame.loc[key].get("speed/sweep_configurations")
        rate = frame.loc[key].get("speed/decode_tok_s")
        if pd.notna(rate) and pd.notna(shared) and int(shared) == 1:  # unrecorded: not known to be its own
            keys.append(key)
    return keys


def is_plain_greedy(row: pd.Series) -> bool:
    dec = decoding_of(row)
    searching = any(dec.get(k) not in (None, 0, 0.0, False) for k in
                    ("do_sample", "penalty_alpha", "dola_layers", "mbr_candidates", *PROPOSER_KEYS))
    return not searching and int(dec.get("num_beams") or 1) == 1 and pd.isna(row.get("draft.name", float("nan")))


def baseline(frame: pd.DataFrame, keys: list[str]) -> str | None:
    """The plain greedy run whose non-decoding settings the most runs of `keys` share, or None."""
    settings = effective_settings(frame).loc[keys]
    others = [c for c in settings.columns if not c.startswith("decoding.")]
    signature = pd.Series({k: "|".join(map(str, settings.loc[k, others].tolist())) for k in keys})  # (runs,)
    counts = signature.value_counts()
    greedy = [k for k in keys if is_plain_greedy(frame.loc[k])]
    return max(greedy, key=lambda k: counts[signature[k]], default=None)


def labels_against(frame: pd.DataFrame, keys: list[str], base: str | None) -> dict[str, str]:
    """Each run's method, with the settings outside decoding in which it differs from the baseline run (all
    that vary, without one): "Greedy [model.dtype=bfloat16]" rather than every setting of every run."""
    settings = effective_settings(frame).loc[keys]
    others = [c for c in settings.columns if not c.startswith("decoding.")
              and settings[c].map(str).nunique() > 1]
    labels = {}
    for key in keys:
        differing = [c for c in others if base is None or str(settings.loc[key, c]) != str(settings.loc[base, c])]
        extra = short_settings(settings.loc[key], differing)
        labels[key] = method_label(decoding_of(frame.loc[key])) + (f" [{extra}]" if extra else "")
    return labels


def short_settings(row: pd.Series, columns: list[str]) -> str:
    """The settings of `columns` as a figure's label can hold them: "bfloat16, int4 g32, static cache,
    max-autotune", "draft: smollm2 int4 g32"; any other setting as key=value."""
    value = {c: row[c] for c in columns if not is_missing(row[c]) and not c.endswith("._target_")}
    parts = []
    for prefix in ("model.", "draft."):
        own = []
        if f"{prefix}name" in value and prefix == "draft.":
            own.append(str(value[f"{prefix}name"]))
        if f"{prefix}dtype" in value and prefix == "model.":
            own.append(str(value[f"{prefix}dtype"]))
        if f"{prefix}quantization" in value:
            group = value.get(f"{prefix}quantization_group_size")
            own.append(str(value[f"{prefix}quantization"]).removesuffix("_weight_only")
                       + (f" g{number_text(group)}" if group is not None else ""))
        if own:
            parts.append(("draft: " if prefix == "draft." else "") + " ".join(own))
    if "cache.setting" in value:
        parts.append(f"{value['cache.setting']} cache")
    if "cache.compile" in value:
        parts.append("compiled" if value["cache.compile"] is True else str(value["cache.compile"]))
    shown = {"model.name", "model.dtype", "model.quantization", "model.quantization_group_size", "draft.name",
             "draft.quantization", "draft.quantization_group_size", "draft.device", "draft.dtype", "cache.setting",
             "cache.compile"}
    rest = [c for c in value if c not in shown]
    return ", ".join(parts + ([describe(row, rest)] if rest else []))


def speed_by_run(frame: pd.DataFrame, out_dir: Path) -> Plot | None:
    keys = alone(frame)
    if len(keys) < 2:
        return None
    base = baseline(frame, keys)
    labels = labels_against(frame, keys, base)
    rates = _values(frame, keys, "speed/decode_tok_s")
    base_rate = float(frame.loc[base, "speed/decode_tok_s"]) if base else None
    fig, axis = plt.subplots(figsize=(9.0, 0.34 * len(keys) + 1.8))
    positions = list(range(len(keys)))[::-1]  # first run on top
    colors = ["#c44e52" if k == base else "#4c72b0" for k in keys]
    axis.barh(positions, rates, color=colors)
    axis.set_yticks(positions, [labels[k] for k in keys], fontsize=7)
    for position, key, rate in zip(positions, keys, rates):
        text = format_value(rate, "speed/decode_tok_s")
        if base_rate:
            text += f"  x{rate / base_rate:.2f}"
        axis.annotate(text, (rate, position), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    axis.set_xlim(0, max(rates) * 1.25)
    axis.set_xlabel("decode tokens / second (new tokens after the first, batch as configured)")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title("Decode speed per run" + (" (x: over the red baseline)" if base else ""), fontsize=10)
    _save(fig, out_dir, "speed_by_run.png")
    return Plot("speed_by_run.png", "Decode speed per run",
                "Decode tokens/s of every run that generated alone, as our loop timed them (after any warm-up "
                "batches). x: the run's rate over the red baseline's, the plain greedy run whose other settings most "
                "runs share; a ratio of two numbers the runs wrote, measured one after another in one sweep, so "
                "the machine's drift between jobs is in it.")


def speculative_acceptance(frame: pd.DataFrame, out_dir: Path) -> Plot | None:
    runs = alone(frame)
    keys = [k for k in runs if pd.notna(frame.loc[k].get("speed/acceptance_rate"))]
    if not keys or not has_values(frame, "speed/tokens_per_target_forward"):
        return None
    labels = labels_against(frame, runs, baseline(frame, runs))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 0.45 * len(keys) + 1.8), sharey=True)
    positions = list(range(len(keys)))[::-1]
    for axis, metric, title in ((left, "speed/acceptance_rate", "acceptance rate"),
                                (right, "speed/tokens_per_target_forward", "new tokens per target forward")):
        values = _values(frame, keys, metric)
        axis.barh(positions, values, color="#55a868")
        for position, value in zip(positions, values):
            axis.annotate(format_value(value, metric), (value, position), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=7)
        axis.set_xlim(0, max(values) * 1.3 if max(values) > 0 else 1)
        axis.set_xlabel(title)
        axis.grid(axis="x", alpha=0.3)
    left.set_yticks(positions, [labels[k] for k in keys], fontsize=7)
    fig.suptitle("Speculative decoding: what the target kept", fontsize=10)
    _save(fig, out_dir, "speculative_acceptance.png")
    return Plot("speculative_acceptance.png", "Speculative decoding: acceptance",
                "Acceptance rate: proposed tokens the target kept over those proposed; new tokens per target "
                "forward: how many tokens each pass of the target produced (1 for plain decoding), both summed over "
                "the run's batches.")
