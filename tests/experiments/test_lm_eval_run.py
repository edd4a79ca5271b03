"""task=lm_eval end to end on a tiny model (metrics.json, lm-eval samples, W&B offline files), its bad inputs,
simple_evaluate with model="decodelab" on the local tasks, the local tasks' data, pass@k and the bootstrap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from experiments.lm_eval_run import LOCAL_TASKS  # noqa: E402
from experiments.lm_eval_stats import bootstrap_ci95, paired_bootstrap_test, pass_at_k  # noqa: E402
from experiments.logging import find_offline_runs, read_offline_run  # noqa: E402
from experiments.run import run  # noqa: E402
from tests.experiments.runner_helpers import compose_config, run_cli  # noqa: E402

LM_EVAL_RUN = ["task=lm_eval", "model=tiny_llama", "eval.limit=3", "eval.bootstrap_resamples=200", "name=lm_eval_test"]


@pytest.fixture(scope="module")
def finished_lm_eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_eval") / "job"
    cfg = compose_config([*LM_EVAL_RUN, "decoding=temperature", "eval.repeats=2"], out)
    return cfg, out, run(cfg)


def test_lm_eval_run_writes_task_metrics_samples_and_wandb(finished_lm_eval_run):
    cfg, out, metrics = finished_lm_eval_run
    stored = json.loads((out / "metrics.json").read_text())
    for task in ("sotu_last_word", "arithmetic_add"):
        for key in ("exact_match", "exact_match_stderr", "maj@2", "pass@1", "pass@2"):
            assert isinstance(stored[f"task/{task}/{key}"], float), key
        low, high = stored[f"task/{task}/pass@2/ci95_low"], stored[f"task/{task}/pass@2/ci95_high"]
        assert 0.0 <= low <= stored[f"task/{task}/pass@2"] <= high <= 1.0
        assert stored[f"task/{task}/pass@1"] <= stored[f"task/{task}/pass@2"]
    assert 0.0 <= stored["task/sotu_next_sentence/acc"] <= 1.0 and "task/sotu_next_sentence/acc_norm/ci95_low" in stored
    assert stored["meta/bootstrap"]["resamples"] == 200
    (record, *_) = stored["meta/lm_eval_generation"]
    assert record["effective"]["do_sample"] is True and record["overridden_by_run"] == ["do_sample"]
    rows = [json.loads(line) for line in (out / "lm_eval_samples" / "arithmetic_add.jsonl").read_text().splitlines()]
    first = [row for row in rows if row["filter"] == "first"]
    assert len(first) == 3 and all(len(row["resps"][0]) == 2 for row in first)  # 2 repeats per document
    # The stored exact match is the mean of the per-document values lm-eval logged.
    assert math.isclose(stored["task/arithmetic_add/exact_match"], sum(r["exact_match"] for r in first) / 3)
    logged = read_offline_run(find_offline_runs(out / "wandb")[0])
    for key in ("task/arithmetic_add/pass@2", "task/sotu_next_sentence/acc", "task/sotu_next_sentence/acc_stderr"):
        assert math.isclose(logged["summary"][key], stored[key], rel_tol=1e-9)


def test_every_lm_eval_metrics_key_is_documented_in_the_readme(finished_lm_eval_run):
    from fnmatch import fnmatchcase

    from tests.experiments.test_run import documented_key_patterns

    _, out, _ = finished_lm_eval_run
    patterns = documented_key_patterns()
    stored = json.loads((out / "metrics.json").read_text())
    undocumented = [k for k in stored if not any(fnmatchcase(k, p) for p in patterns)]
    assert not undocumented, undocumented


def _sampling_task_folder(tmp_path: Path) -> Path:
    """A local task whose gen_kwargs sample (do_sample true, temperature 0.7): meets the run's beam search."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "What is 1 plus 1?", "answer": "2"}) + "\n")
    (tmp_path / "sampling_task.yaml").write_text(
        "task: sampling_task\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'rows.jsonl'}\n"
        "output_type: generate_until\ntest_split: test\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  do_sample: true\n  temperature: 0.7\n"
        "metric_list:\n  - metric: exact_match\n")
    return tmp_path


@pytest.mark.parametrize("overrides, error, message", [
    (["eval.tasks=[arithmetc_add]"], ValueError, r"'arithmetc_add' is not an lm-eval task \(did you mean arithmetic_add"),
    (["eval.repeats=0"], ValueError, "eval.repeats=0 is not allowed"),
    (["eval.tasks=[]"], ValueError, "eval.tasks=.* is not allowed"),
    (["eval.include_path=/nonexistent/tasks"], ValueError, "eval.include_path='/nonexistent/tasks' is not a folder"),
    (["+eval.shots=3"], ValueError, "eval.shots=3 is not a key of eval"),
])
def test_bad_eval_values_fail_before_anything_is_written(overrides, error, message, tmp_path):
    from experiments import validate

    cfg = compose_config([*LM_EVAL_RUN, *overrides], tmp_path / "job")
    with pytest.raises(error, match=message):
        validate.check_config(cfg)
        validate.check_inputs(cfg)
    with pytest.raises(error, match=message):
        run(cfg)
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


def test_hub_task_offline_is_one_clear_error(tmp_path, monkeypatch):
    from experiments import data, lm_eval_run, validate

    monkeypatch.setattr(data, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(lm_eval_run, "_in_datasets_cache", lambda name: False)
    cfg = compose_config([*LM_EVAL_RUN, "eval.tasks=[gsm8k]"], tmp_path / "job")
    with pytest.raises(ConnectionError, match="'gsm8k' needs the hub dataset 'openai/gsm8k', and the hub is unreachable"):
        validate.check_inputs(cfg)


def test_hub_group_offline_names_a_member(tmp_path, monkeypatch):
    """A group (mmlu) or a tag (ai2_arc) stands for hub tasks: the check looks through it."""
    from experiments import data, lm_eval_run, validate

    monkeypatch.setattr(data, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(lm_eval_run, "_in_datasets_cache", lambda name: False)
    cfg = compose_config([*LM_EVAL_RUN, "eval.tasks=[sotu_last_word,ai2_arc]"], tmp_path / "job")
    with pytest.raises(ConnectionError, match=r"'arc_\w+' \(in 'ai2_arc'\) needs the hub dataset"):
        validate.check_inputs(cfg)


def test_task_gen_kwargs_conflicting_with_beam_search(tmp_path):
    from experiments import validate

    folder = _sampling_task_folder(tmp_path / "tasks")
    cfg = compose_config([*LM_EVAL_RUN, "decoding=beam", "eval.tasks=[sampling_task]", f"eval.include_path={folder}"],
                         tmp_path / "job")
    with pytest.raises(ValueError, match="do_sample=True .* conflicts with the run's beam search"):
        validate.check_inputs(cfg)


def test_simple_evaluate_with_decodelab_on_the_local_tasks():
    import lm_eval
    from lm_eval.tasks import TaskManager

    import experiments.lm_eval_model  # noqa: F401  (registers "decodelab")

    results = lm_eval.simple_evaluate(model="decodelab", model_args="model=tiny_gpt2,max_gen_toks=4",
                                      tasks=["sotu_next_sentence", "arithmetic_add"], limit=2,
                                      task_manager=TaskManager(include_path=str(LOCAL_TASKS)), bootstrap_iters=0)
    assert results["results"]["sotu_next_sentence"]["acc,none"] in (0.0, 0.5, 1.0)
    assert len(results["samples"]["arithmetic_add"]) == 2 * 3  # 2 documents x 3 filters
    assert results["config"]["decodelab_generation"][0]["effective"]["max_new_tokens"] == 6  # the task's own


def test_local_task_data_is_deterministic_and_right():
    from experiments.lm_eval_task_data import build_rows

    rows = build_rows("arithmetic_add", seed=3)
    assert rows == build_rows("arithmetic_add", seed=3) and rows != build_rows("arithmetic_add", seed=4)
    for row in rows["test"]:
        a, b = (int(x) for x in row["question"].removeprefix("What is ").removesuffix("?").split(" plus "))
        assert row["answer"] == str(a + b)
    mc = build_rows("sotu_next_sentence")
    assert len(mc["test"]) == 200 and len(mc["train"]) == 20
    assert all(len(r["choices"]) == 4 and 0 <= r["label"] < 4 and len(set(r["choices"])) == 4 for r in mc["test"])
    words = build_rows("sotu_last_word")["test"]
    assert all(w["answer"].isalpha() and not w["context"].endswith(w["answer"]) for w in words)


@pytest.mark.parametrize("n, c, k", [(5, 0, 1), (5, 2, 1), (5, 2, 2), (5, 2, 4), (10, 3, 5), (3, 3, 2), (1, 1, 1)])
def test_pass_at_k_is_chen_et_al_estimator(n, c, k):
    """1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1), by exact binomials."""
    assert math.isclose(pass_at_k(n, c, k), 1 - math.comb(n - c, k) / math.comb(n, k), abs_tol=1e-12)


def test_pass_at_k_bad_input():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(2, 1, 3)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci95(values, 2000, seed=1)
    assert (low, high) == bootstrap_ci95(values, 2000, seed=1)
    assert low < 0.3 < high and 0.18 < low and high < 0.42  # binomial sd ~0.046: about 0.3 +- 0.09
    same = paired_bootstrap_test(values, values, 500, seed=0)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    better = paired_bootstrap_test([1.0] * 60 + [0.0] * 40, values, 500, seed=0)
    assert better["diff"] == pytest.approx(0.3) and better["p_value"] < 0.01 and better["ci95_low"] > 0


@pytest.mark.slow
def test_cli_unknown_task_is_one_line_exit_2_and_no_folder(tmp_path):
    result = run_cli([*LM_EVAL_RUN, "eval.tasks=[arithmetc_add]"], tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "arithmetc_add" in errors[0]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_decodelab_lm_eval_cli_runs_a_local_task(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "experiments.lm_eval_cli", "run", "--model", "decodelab",
                          "--model_args", "model=tiny_llama", "--tasks", "arithmetic_add", "--include_path",
                          str(LOCAL_TASKS), "--limit", "2", "--output_path", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "arithmetic_add" in out.stdout and "exact_match" in out.stdout
