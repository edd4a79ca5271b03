"""Method labels and order, swept parameters read off the configs, human rows per context."""

import pytest

from analysis.methods import method_label
from analysis.runs import load_runs, runs_frame
from analysis.sweeps import QUALITY_PARAMS, SPEED_PARAMS, human_groups, method_order, run_labels, swept
from tests.analysis.conftest import HUMAN, config_for, metrics_for, write_job


@pytest.mark.parametrize("decoding, label", [
    ({"do_sample": False}, "Greedy"),
    ({"do_sample": False, "num_beams": 16}, "Beam search, b=16"),
    ({"do_sample": True, "top_k": 0}, "Pure sampling"),
    ({"do_sample": True}, "Top-k, k=50"),  # generate's default top_k=50 when sampling
    ({"do_sample": True, "top_k": 0, "temperature": 0.9}, "Sampling, t=0.9"),
    ({"do_sample": True, "top_k": 40, "temperature": 0.7}, "Top-k, k=40, t=0.7"),
    ({"do_sample": True, "top_k": 0, "top_p": 0.95}, "Nucleus, p=0.95"),
    ({"do_sample": True, "top_k": 0, "top_p": 1.0}, "Pure sampling"),  # p=1 truncates nothing
    ({"do_sample": True, "top_k": 0, "min_p": 0.1}, "Min-p, min_p=0.1"),
    ({"do_sample": True, "num_beams": 4, "top_k": 0}, "Beam sampling, b=4"),
    ({"do_sample": False, "repetition_penalty": 1.2}, "Greedy, repetition penalty=1.2"),
    ({"do_sample": True, "top_k": 0, "top_h": 0.4}, "Top-h, top_h=0.4"),
    ({"do_sample": False, "guidance_scale": 1.5}, "Greedy, CFG scale=1.5"),
    ({"do_sample": False, "guidance_scale": 1.0}, "Greedy"),  # scale 1 is no guidance
    ({"do_sample": True, "top_k": 0, "watermarking_config": {"bias": 4.0}}, "Pure sampling, watermark \u03b4=4, \u03b3=0.25"),
    ({"do_sample": True, "top_k": 0, "watermarking_config.greenlist_ratio": 0.5}, "Pure sampling, watermark \u03b4=2, \u03b3=0.5"),
    # the search strategies read as themselves, not as the greedy or sampling settings under them
    ({"do_sample": False, "penalty_alpha": 0.6, "top_k": 4}, "Contrastive search, \u03b1=0.6, k=4"),
    ({"do_sample": False, "penalty_alpha": 0.6, "top_k": 1}, "Greedy"),  # k=1: no candidates to rank, greedy
    ({"do_sample": False, "dola_layers": "high", "repetition_penalty": 1.2}, "DoLa, layers=high, repetition penalty=1.2"),
    ({"do_sample": True, "top_k": 0, "top_p": 0.9, "dola_layers": [0, 2]}, "DoLa, layers=[0, 2], Nucleus, p=0.9"),
    ({"do_sample": True, "top_k": 0, "epsilon_cutoff": 0.02, "mbr_candidates": 8, "mbr_utility": "chrf"},
     "MBR, n=8, chrF, candidates: Epsilon, \u03b5=0.02"),
    # speculative decoding is exact: the method's own label, and its proposer
    ({"do_sample": False, "prompt_lookup_num_tokens": 5, "max_matching_ngram_size": 2},
     "Greedy, prompt lookup (5 tokens, n-gram 2)"),
    ({"do_sample": False, "draft_layers": 8, "num_assistant_tokens": 4},
     "Greedy, self-speculative (first 8 layers, 4 per step)"),
    ({"do_sample": False, "num_assistant_tokens": 4}, "Greedy, draft model, 4 per step"),
])
def test_method_label_reads_the_parameters_not_the_config_name(decoding, label):
    assert method_label({"name": "whatever", **decoding}) == label


def test_holtzman_methods_in_table_order(holtzman_dir):
    frame = runs_frame(load_runs([holtzman_dir]).runs)
    labels = run_labels(frame)
    assert [labels[k] for k in method_order(frame)] == [
        "Greedy", "Beam search, b=16", "Pure sampling", "Sampling, t=0.9",
        "Top-k, k=40", "Top-k, k=640", "Top-k, k=40, t=0.7", "Nucleus, p=0.95"]  # the paper's order


def test_a_top_p_sweep_is_one_curve_sorted_by_p(top_p_dir):
    frame = runs_frame(load_runs([top_p_dir]).runs)
    found = swept(frame, QUALITY_PARAMS)
    assert list(found) == ["decoding.top_p"]
    (curve,) = found["decoding.top_p"]
    assert curve.values == [0.5, 0.9, 1.0]
    assert [frame.loc[k, "gen/ppl"] for k in curve.keys] == [4.0, 12.0, 40.0]
    assert swept(frame, SPEED_PARAMS) == {}  # nothing but top_p varied


def test_curves_hidden_in_the_holtzman_methods(holtzman_dir):
    """Pure sampling is the top-p=1, t=1 point; top_k 0 (off) is no point on a top-k axis."""
    frame = runs_frame(load_runs([holtzman_dir]).runs)
    found = swept(frame, QUALITY_PARAMS)
    names = {p: [[frame.loc[k, "decoding.name"] for k in c.keys] for c in curves] for p, curves in found.items()}
    assert names["decoding.top_p"] == [["top_p", "sample"]]
    assert names["decoding.top_k"] == [["top_k", "top_k640"]]
    assert sorted(names["decoding.temperature"]) == [["temperature", "sample"], ["top_k40_t07", "top_k"]]
    assert "decoding.num_beams" not in found  # greedy and beam16 differ in more than the width


def test_speed_settings_make_speed_curves_and_labels_name_them(tmp_path):
    decoding = {"name": "greedy", "do_sample": False}
    for cache in ("none", "dynamic", "static"):
        write_job(tmp_path / f"cache={cache}", config_for(decoding, cache=cache), metrics_for(2.0))
    for batch in (1, 4):
        write_job(tmp_path / f"batch={batch}", config_for(decoding, batch_size=batch), metrics_for(2.0))
    frame = runs_frame(load_runs([tmp_path]).runs)
    found = swept(frame, SPEED_PARAMS)
    assert sorted(found) == ["cache.setting", "prompts.batch_size"]
    assert [c.values for c in found["prompts.batch_size"]] == [[1, 4, 8]]  # the cache=dynamic run has batch 8
    assert sorted(found["cache.setting"][0].values) == ["dynamic", "none", "static"]
    labels = set(run_labels(frame))
    assert "Greedy [cache.setting=static, prompts.batch_size=8]" in labels and len(labels) == len(frame)


def test_runs_with_different_prompts_get_their_own_human_row(tmp_path):
    decoding = {"name": "greedy", "do_sample": False}
    other_human = {k: v * 2 for k, v in HUMAN.items()}
    write_job(tmp_path / "seed0", config_for(decoding, seed=0), metrics_for(2.0))
    write_job(tmp_path / "seed0b", config_for({**decoding, "num_beams": 4}, seed=0), metrics_for(1.5))
    write_job(tmp_path / "seed1", config_for(decoding, seed=1), metrics_for(2.5, human=other_human))
    frame = runs_frame(load_runs([tmp_path]).runs)
    groups = dict(human_groups(frame))
    assert set(groups) == {"Human [seed=0]", "Human [seed=1]"}
    assert len(groups["Human [seed=0]"]) == 2  # decoding does not change the human continuations


def test_a_watermark_bias_sweep_is_one_curve_and_a_guidance_sweep_another(tmp_path):
    watermark = {"name": "watermark", "do_sample": True, "top_k": 0}
    for bias in (4.0, 1.0, 2.0):
        write_job(tmp_path / f"bias={bias}", config_for({**watermark, "watermarking_config": {"bias": bias}}),
                  metrics_for(2.0 + bias))
    for scale in (1.5, 3.0):
        write_job(tmp_path / f"cfg={scale}", config_for({"name": "cfg", "do_sample": False, "guidance_scale": scale}),
                  metrics_for(2.0))
    frame = runs_frame(load_runs([tmp_path]).runs)
    found = swept(frame, QUALITY_PARAMS)
    (bias_curve,) = found["decoding.watermarking_config.bias"]
    assert bias_curve.values == [1.0, 2.0, 4.0]
    (scale_curve,) = found["decoding.guidance_scale"]
    assert scale_curve.values == [1.5, 3.0] and scale_curve.fixed == "Greedy"


def test_holtzman_tables_give_each_set_of_prompts_its_own_table1(tmp_path):
    from analysis.tables import holtzman_tables

    for split, seen in (("all", True), ("test", False)):
        for name, decoding in (("greedy", {"do_sample": False}), ("top_p", {"do_sample": True, "top_k": 0, "top_p": 0.95})):
            config = config_for({"name": name, **decoding})
            config["dataset"].update(split=split, first_year=2000 if seen else None, last_year=2023 if seen else None)
            human = {k: v * (2 if seen else 1) for k, v in HUMAN.items()}
            write_job(tmp_path / f"{split}-{name}", config, metrics_for(3.0 if seen else 2.0, human=human))
    frame = runs_frame(load_runs([tmp_path]).runs)
    tables = holtzman_tables(frame)
    titles = {t.title for t in tables}  # the context in the config's key order (config.yaml sorts them)
    assert titles == {"Table 1, prompts from first_year=2000, last_year=2023, split=all (32 prompts)",
                      "Table 1, prompts from split=test (32 prompts)"}
    for table in tables:
        assert [row.label for row in table.rows] == ["Human", "Greedy", "Nucleus, p=0.95"]  # no dataset suffix
        seen = "2000" in table.title
        assert table.rows[1].cells[0].value == (3.0 if seen else 2.0)  # each table holds its own side's runs
        assert table.rows[0].cells[0].value == HUMAN["human/ppl"] * (2 if seen else 1)
    from analysis.side_by_side import table1_side_by_side

    (tmp_path / "out").mkdir()
    plot = table1_side_by_side(frame, tmp_path / "out")
    assert plot.file == "table1_side_by_side.png" and (tmp_path / "out" / plot.file).stat().st_size > 0
    one_side = frame[frame["dataset.split"] == "test"]
    assert table1_side_by_side(one_side, tmp_path / "out") is None  # one set of prompts: Table 1 says it all


def test_the_speed_figure_compares_each_run_with_the_plain_greedy_run_most_runs_share(tmp_path):
    from analysis.speed_plots import baseline, labels_against, speed_by_run

    runs = {"greedy": ({"do_sample": False}, {}, 100.0), "top_p": ({"do_sample": True, "top_k": 0, "top_p": 0.9}, {}, 80.0),
            "lookup": ({"do_sample": False, "prompt_lookup_num_tokens": 5}, {}, 150.0),
            "bf16": ({"do_sample": False}, {"dtype": "bfloat16"}, 200.0)}
    for name, (decoding, model, rate) in runs.items():
        config = config_for({"name": name, **decoding})
        config["model"].update(model)
        write_job(tmp_path / name, config, {**metrics_for(2.0, tok_s=rate), "speed/sweep_configurations": 1.0})
    frame = runs_frame(load_runs([tmp_path]).runs)
    keys = list(frame.index)
    base = baseline(frame, keys)
    assert frame.loc[base, "decoding.name"] == "greedy"  # float32, as three of the four runs: not the bfloat16 one
    labels = labels_against(frame, keys, base)
    assert sorted(labels.values()) == ["Greedy", "Greedy [bfloat16]", "Greedy, prompt lookup (5 tokens, n-gram 2)",
                                       "Nucleus, p=0.9"]
    (tmp_path / "out").mkdir()
    plot = speed_by_run(frame, tmp_path / "out")
    assert plot.file == "speed_by_run.png" and (tmp_path / "out" / plot.file).stat().st_size > 0


def test_figures_colour_runs_by_their_set_of_prompts_and_label_them_by_method(tmp_path):
    from analysis.plots import perplexity_vs_generation, prompt_sets, quality_diversity

    for split, seen in (("all", True), ("test", False)):
        for name, decoding in (("greedy", {"do_sample": False}), ("top_p", {"do_sample": True, "top_k": 0, "top_p": 0.95})):
            config = config_for({"name": name, **decoding})
            config["dataset"].update(split=split, first_year=2000 if seen else None, last_year=2023 if seen else None)
            write_job(tmp_path / f"{split}-{name}", config, metrics_for(3.0 if seen else 2.0))
    frame = runs_frame(load_runs([tmp_path]).runs)
    sets = prompt_sets(frame)
    # The set is the colour and the legend's; the label says the method alone, and runs of one set share a colour.
    assert sorted(sets.labels[k] for k in frame.index) == ["Greedy", "Greedy", "Nucleus, p=0.95", "Nucleus, p=0.95"]
    assert sorted(name for name, _, _ in sets.sets) == ["first_year=2000, last_year=2023, split=all", "split=test"]
    for _, color, keys in sets.sets:
        assert {sets.color[k] for k in keys} == {color} and len(keys) == 2
    assert len({color for _, color, _ in sets.sets}) == 2
    one_set = prompt_sets(frame[frame["dataset.split"] == "test"])
    assert [name for name, _, _ in one_set.sets] == [""]
    (tmp_path / "out").mkdir()
    for draw in (perplexity_vs_generation, quality_diversity):
        plot = draw(frame, tmp_path / "out")
        assert (tmp_path / "out" / plot.file).stat().st_size > 0 and "one colour per set of prompts" in plot.caption


def test_table1_and_the_generation_figures_leave_out_runs_that_only_scored_tasks(tmp_path):
    from analysis.report import build_sections

    for name, task in (("top_p-generate", {"perplexity": True, "generate": True}),
                       ("top_p-lm_eval", {"perplexity": False, "generate": False, "lm_eval": True})):
        config = config_for({"name": "top_p", "do_sample": True, "top_k": 0, "top_p": 0.95})
        config["task"] = task
        metrics = metrics_for(3.0) if task["generate"] else {"task/sotu_last_word/exact_match": 0.4}
        write_job(tmp_path / name, config, metrics)
    frame = runs_frame(load_runs([tmp_path]).runs)
    assert len(frame) == 2
    (tmp_path / "out").mkdir()
    sections = build_sections(frame, tmp_path / "out", [])
    table1 = sections[0].tables[0]
    # One method row, named by its method alone (not by its task setting), and the human row.
    assert [row.label for row in table1.rows] == ["Human", "Nucleus, p=0.95"]
    every_number = next(s for s in sections if s.id == "all-metrics").tables[0]
    assert len(every_number.columns) == 3  # both runs still in "Every number"


def test_a_draft_model_does_not_make_another_set_of_prompts(tmp_path):
    plain = config_for({"name": "greedy", "do_sample": False})
    drafted = config_for({"name": "speculative_draft", "do_sample": False, "assistant": "draft"})
    drafted["draft"] = {"_target_": "experiments.models.load_model", "name": "smollm2", "quantization": "int4_weight_only"}
    write_job(tmp_path / "greedy", plain, metrics_for(2.0))
    write_job(tmp_path / "speculative_draft", drafted, metrics_for(2.0))
    frame = runs_frame(load_runs([tmp_path]).runs)
    assert [len(keys) for _, keys in human_groups(frame)] == [2]  # one Table 1: same prompts, same scorer
