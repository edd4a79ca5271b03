"""Holtzman et al. 2020's reading of their Table 1, checked on these runs: which orderings hold here and which not.

The paper (GPT-2 Large on WebText) reads its Table 1 as: maximization (greedy, beam search) writes far likelier
and more repetitive text than people, pure sampling less likely text than people (the unreliable tail), and
nucleus sampling comes closest to the human text. `claims_table` restates those orderings as checks on the runs'
numbers, once per set of prompts (study 1: the seen and the held-out speeches):

- *holds* / *does not hold*: the ordering of the runs' point estimates;
- "within the intervals": the deciding comparison's two 95% intervals (as the runs wrote them) overlap, so the
  ordering is not settled by these prompts.

Runs are found by their method label (`method_label`): "Greedy", "Beam search, b=16", "Pure sampling", "Nucleus,
p=0.95" and the paper's other sampling methods. A claim whose runs are missing reads "not checked" with the
labels it needs. Nothing is recomputed: every number in the table is a run's metrics.json value, printed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.methods import decoding_of, method_label
from analysis.sweeps import human_groups
from analysis.tables import Cell, Row, Table, context_text, format_value, interval

GREEDY, BEAM, PURE, NUCLEUS = "Greedy", "Beam search, b=16", "Pure sampling", "Nucleus, p=0.95"
PAPER_SAMPLING = (PURE, "Sampling, t=0.9", "Top-k, k=40", "Top-k, k=640", "Top-k, k=40, t=0.7", NUCLEUS)
MAXIMIZATION = (GREEDY, BEAM)


@dataclass
class Value:
    label: str  # the method, or "Human"
    value: float
    low: float | None
    high: float | None

    def text(self, metric: str) -> str:
        shown = format_value(self.value, metric)
        if self.low is not None and self.high is not None:
            shown += f" [{format_value(self.low, metric)}, {format_value(self.high, metric)}]"
        return f"{self.label} {shown}"


def value_of(frame: pd.DataFrame, key: str, metric: str, label: str) -> Value | None:
    if metric not in frame.columns or pd.isna(frame.loc[key, metric]):
        return None
    ends = interval(frame, key, metric)
    return Value(label, float(frame.loc[key, metric]), *(ends if ends else (None, None)))


def overlap(a: Value, b: Value) -> bool:
    """Whether the two 95% intervals overlap (no interval: treated as a point)."""
    a_low, a_high = (a.low, a.high) if a.low is not None else (a.value, a.value)
    b_low, b_high = (b.low, b.high) if b.low is not None else (b.value, b.value)
    return a_low <= b_high and b_low <= a_high


def verdict(holds: bool, a: Value, b: Value) -> str:
    """The claim's verdict from its deciding pair (a should come out above b, say)."""
    return ("holds" if holds else "does not hold") + (", within the intervals" if overlap(a, b) else "")


def _separates(high_side: list[Value], low_side: list[Value], metric: str) -> tuple[str, str]:
    """Every value of `high_side` above every value of `low_side`: (verdict, the numbers that decide it)."""
    lowest_high = min(high_side, key=lambda v: v.value)
    highest_low = max(low_side, key=lambda v: v.value)
    holds = lowest_high.value > highest_low.value
    return verdict(holds, lowest_high, highest_low), f"{lowest_high.text(metric)} vs {highest_low.text(metric)}"


def claims_for(frame: pd.DataFrame, keys: list[str]) -> list[tuple[str, str, str]]:
    """[(claim, verdict, deciding numbers)] for the runs `keys` of one set of prompts."""
    by_label = {method_label(decoding_of(frame.loc[k])): k for k in keys}
    first = keys[0]

    def values(labels, metric):
        found = [value_of(frame, by_label[l], metric, l) for l in labels if l in by_label]
        return [v for v in found if v is not None]

    human_ppl = value_of(frame, first, "human/ppl", "Human")
    out = []

    def check(claim, needs, decide):
        missing = [l for l in needs if l not in by_label]
        out.append((claim, *(("not checked", f"no run labelled {', '.join(missing)}") if missing else decide())))

    check("Greedy and beam search write likelier text than people and than every sampling method (lower "
          "generation perplexity)", (*MAXIMIZATION, *PAPER_SAMPLING),
          lambda: _separates([human_ppl, *values(PAPER_SAMPLING, "gen/ppl")], values(MAXIMIZATION, "gen/ppl"),
                             "gen/ppl"))
    check("Pure sampling writes less likely text than people (the unreliable tail)", (PURE,),
          lambda: _separates(values((PURE,), "gen/ppl"), [human_ppl], "gen/ppl"))

    def closest():
        candidates = values((*MAXIMIZATION, *PAPER_SAMPLING), "gen/ppl")
        best = min(candidates, key=lambda v: abs(v.value - human_ppl.value))
        nucleus = next(v for v in candidates if v.label == NUCLEUS)
        others = [v for v in candidates if v.label != NUCLEUS]
        runner_up = min(others, key=lambda v: abs(v.value - human_ppl.value))
        return ((verdict(best.label == NUCLEUS, nucleus, runner_up)),
                f"{human_ppl.text('gen/ppl')}; {nucleus.text('gen/ppl')}; closest other: {runner_up.text('gen/ppl')}")

    check("Nucleus sampling (p=0.95) comes closest to the human text's perplexity among the paper's methods",
          (*MAXIMIZATION, *PAPER_SAMPLING), closest)
    check("Greedy and beam search repeat themselves more than any sampling method (repetition %)",
          (*MAXIMIZATION, *PAPER_SAMPLING),
          lambda: _separates(values(MAXIMIZATION, "gen/repetition_pct"), values(PAPER_SAMPLING, "gen/repetition_pct"),
                             "gen/repetition_pct"))
    check("Greedy and beam search write the least diverse sets of texts (highest Self-BLEU-4)",
          (*MAXIMIZATION, *PAPER_SAMPLING),
          lambda: _separates(values(MAXIMIZATION, "gen/self_bleu4"), values(PAPER_SAMPLING, "gen/self_bleu4"),
                             "gen/self_bleu4"))

    def zipf():
        human = value_of(frame, first, "human/zipf", "Human")
        nucleus = values((NUCLEUS,), "gen/zipf")[0]
        nearest_max = min(values(MAXIMIZATION, "gen/zipf"), key=lambda v: abs(v.value - human.value))
        holds = abs(nucleus.value - human.value) < abs(nearest_max.value - human.value)
        return (verdict(holds, nucleus, nearest_max),
                f"{human.text('gen/zipf')}; {nucleus.text('gen/zipf')}; {nearest_max.text('gen/zipf')}")

    check("Nucleus sampling's Zipf coefficient is nearer the human text's than greedy's and beam search's",
          (*MAXIMIZATION, NUCLEUS), zipf)
    return out


def claims_table(frame: pd.DataFrame) -> Table | None:
    """The paper's orderings checked per set of prompts; None when no set has a greedy run and a nucleus run."""
    groups = human_groups(frame)
    table = Table("paper-claims", "Holtzman et al.'s reading of Table 1, checked here",
                  "Each ordering the paper reads off its Table 1, on these runs' point estimates; \"within the "
                  "intervals\": the two deciding numbers' 95% intervals overlap, so these prompts do not settle it. "
                  "The numbers are the runs' own (value [95% interval]).",
                  ["Set of prompts", "Claim", "Here", "Deciding numbers"])
    for _, keys in groups:
        labels = {method_label(decoding_of(frame.loc[k])) for k in keys}
        if not {GREEDY, NUCLEUS} <= labels:
            continue
        context = context_text(frame, keys[0], groups) if len(groups) > 1 else "all runs"
        for claim, result, numbers in claims_for(frame, keys):
            table.rows.append(Row(context, [Cell(claim), Cell(result), Cell(numbers)]))
    return table if table.rows else None
