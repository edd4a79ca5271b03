"""The paper's reading of Table 1 as checks on the runs: each verdict follows from the runs' numbers."""

from __future__ import annotations

import json

from analysis.paper_claims import claims_table
from analysis.runs import load_runs, runs_frame


def verdicts(root) -> dict[str, str]:
    table = claims_table(runs_frame(load_runs([root]).runs))
    return {row.cells[0].value: row.cells[1].value for row in table.rows}


def test_numbers_in_the_papers_pattern_reproduce_every_claim(holtzman_dir):
    found = verdicts(holtzman_dir)
    assert len(found) == 6 and set(found.values()) == {"holds"}, found


def test_a_claim_the_numbers_contradict_does_not_hold_and_overlapping_intervals_say_so(holtzman_dir):
    path = holtzman_dir / "decoding=sample" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["gen/ppl"] = 21.4  # pure sampling now likelier than the human text (21.5)
    metrics["gen/ppl/ci95_low"], metrics["gen/ppl/ci95_high"] = 15.0, 25.0  # and its interval covers it
    path.write_text(json.dumps(metrics))
    found = verdicts(holtzman_dir)
    [pure] = [v for claim, v in found.items() if claim.startswith("Pure sampling")]
    assert pure == "does not hold, within the intervals"
    [closest] = [v for claim, v in found.items() if claim.startswith("Nucleus sampling (p=0.95)")]
    assert closest == "does not hold, within the intervals"  # 21.4 is nearer 21.5 than nucleus's 22.0


def test_runs_without_the_papers_methods_get_no_claims_table(top_p_dir):
    assert claims_table(runs_frame(load_runs([top_p_dir]).runs)) is None
