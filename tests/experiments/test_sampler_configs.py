"""The runner side of llama.cpp's and vLLM's samplers: their conf/decoding/ files, the sampler order a run records
and its report shows, their sweeps, and bad values.

Each new decoding config runs end to end on SmolLM2 (whose distributions are peaked enough for XTC, DRY and the
penalties to act; the tiny random Llama's are nearly flat) and writes exactly the samples `generate_continuations`
gives for the settings the file names, written out here, and not those of the same file with its sampler turned
off: so every value reaches generate. `decoding.sampler_order` is in every config.yaml (transformers by default,
without changing the fingerprints of configs written before it was recorded) and on the report's page. Each sweep
file expands to the grid it names and its jobs share one batched generation (and a batched pair of each family
gives each configuration's samples alone). A bad value ends the run with a message naming it before any model
loads.
"""

import itertools

import pytest
import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from experiments.batched_sweep import group_jobs
from experiments.jobs import config_fingerprint
from experiments.run import check_config, fingerprint, run
from tests.experiments.runner_helpers import (TINY_RUN, compose_config, direct_generation, run_and_read, run_cli,
                                              sweep_and_alone)

# SmolLM2, one batch of two prompts of 16 tokens, 16 new tokens; no MAUVE, no W&B
RUN = [*TINY_RUN, "model=smollm2", "task=generate", "logger=none", "metrics.mauve=false", "prompts.num_prompts=2",
       "prompts.prompt_tokens=16", "prompts.continuation_tokens=16"]
SAMPLING = dict(do_sample=True, top_k=0, max_new_tokens=16)
LLAMA = dict(SAMPLING, min_p=0.05, sampler_order="llama.cpp")
# Overrides a test run adds to a file (none but DRY's)
EXTRA = {"dry": ["decoding.dry_allowed_length=1", "decoding.dry_multiplier=3.0"],
         "openai_penalties": ["decoding.presence_penalty=2.0", "decoding.frequency_penalty=2.0"]}
# name: (the generate keywords the file (+ EXTRA) stands for, the same with its sampler off)
CONFIGS = {
    "top_n_sigma": (dict(SAMPLING, top_n_sigma=1.0), SAMPLING),
    "xtc": (dict(LLAMA, xtc_probability=0.5, xtc_threshold=0.1), LLAMA),
    # allowed length 1 and multiplier 3 (the file's 2 and 0.8 find no long enough repeat in 32 tokens)
    "dry": (dict(LLAMA, dry_multiplier=3.0, dry_base=1.75, dry_allowed_length=1, dry_penalty_last_n=-1,
                 dry_sequence_breakers=["\n", ":", "\"", "*"]), LLAMA),
    "mirostat": (dict(SAMPLING, mirostat=2, mirostat_tau=5.0, mirostat_eta=0.1, sampler_order="llama.cpp"),
                 dict(SAMPLING, sampler_order="llama.cpp")),
    "dynatemp": (dict(LLAMA, temperature=1.0, dynatemp_range=0.5, dynatemp_exponent=1.0), LLAMA),
    # the largest penalties OpenAI allows (the file's 0.5 change no token of these two 16-token samples)
    "openai_penalties": (dict(SAMPLING, top_p=0.95, presence_penalty=2.0, frequency_penalty=2.0, sampler_order="vllm"),
                         dict(SAMPLING, top_p=0.95, sampler_order="vllm")),
}


def run_job(out, *overrides):
    return run_and_read(RUN, out, *overrides)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """generate(**keywords) on the runner's model and prompts: the token ids of each sample, in order."""
    return direct_generation(RUN, tmp_path_factory.mktemp("direct") / "run")


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_runs_end_to_end_as_generate_with_its_settings(name, direct, tmp_path):
    keywords, off = CONFIGS[name]
    metrics, samples = run_job(tmp_path / name, f"decoding={name}", *EXTRA.get(name, []))
    assert metrics["gen/samples"] == 2.0 and metrics["speed/new_tokens"] > 0
    ids = [s["token_ids"] for s in samples]
    assert ids == direct(keywords)
    assert ids != direct(off), "the sampler left the text unchanged: a value did not reach generate"
    written = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
    assert written["decoding"]["sampler_order"] == keywords.get("sampler_order", "transformers")


# ------------------------------------------------------------------------------------- the sampler order recorded


def test_config_yaml_records_the_default_order_and_old_fingerprints_hold(tmp_path):
    cfg = compose_config([*TINY_RUN, "decoding=top_k"], tmp_path / "run")
    assert "sampler_order" not in cfg.decoding  # the file does not name it: the runner records it
    from experiments.run import plain

    recorded = plain(cfg)
    assert recorded["decoding"]["sampler_order"] == "transformers"
    before = {**recorded, "decoding": {k: v for k, v in recorded["decoding"].items() if k != "sampler_order"}}
    assert config_fingerprint(before) == config_fingerprint(recorded) == fingerprint(cfg)  # old folders resume
    other = compose_config([*TINY_RUN, "decoding=top_k", "+decoding.sampler_order=llama.cpp"], tmp_path / "other")
    assert plain(other)["decoding"]["sampler_order"] == "llama.cpp" and fingerprint(other) != fingerprint(cfg)
    listed = compose_config([*TINY_RUN, "decoding=top_k", "+decoding.sampler_order=[top_k,temperature]"],
                            tmp_path / "listed")
    assert plain(listed)["decoding"]["sampler_order"] == ["top_k", "temperature"]
    assert check_config(listed).processor_order.index("top_k") < check_config(listed).processor_order.index(
        "temperature") and check_config(cfg).processor_order.index("temperature") < check_config(
        cfg).processor_order.index("top_k")


def test_the_report_shows_each_runs_sampler_order(tmp_path):
    from analysis.report import build_report
    from tests.analysis.page import parse_page

    tiny = [*TINY_RUN, "task=generate", "logger=none", "metrics.mauve=false", "prompts.num_prompts=2"]
    runs = tmp_path / "runs"
    for folder, overrides in (("plain", ["decoding=min_p"]),
                              ("llama", ["decoding=min_p", "+decoding.sampler_order=llama.cpp"]),
                              ("xtc", ["decoding=xtc"])):
        run(compose_config([*tiny, *overrides], runs / folder))
    # a run written before config.yaml recorded the order: its config without the key, fingerprint unchanged
    old = yaml.safe_load((runs / "plain" / "config.yaml").read_text())
    del old["decoding"]["sampler_order"]
    (runs / "plain" / "config.yaml").write_text(yaml.safe_dump(old))
    page = parse_page(build_report([str(runs)], tmp_path / "report"))
    rows = page.tables["sampler-order"][1:]  # after the header row
    assert sorted(order for _, order in rows) == ["llama.cpp", "llama.cpp", "transformers"]
    labels = {label: order for label, order in rows}
    assert labels["Min-p, min_p=0.1"] == "transformers"
    assert labels["Min-p, min_p=0.1, llama.cpp order"] == "llama.cpp"
    assert labels["Min-p, XTC, min_p=0.05, xtc=0.5@0.1, llama.cpp order"] == "llama.cpp"
    assert "Skipped" not in (tmp_path / "report" / "index.html").read_text()  # the edited-back run was trusted


# ---------------------------------------------------------------------------------------------------- the sweeps

# sweep file: {swept key: its values}, the grid the file names
SWEEPS = {
    "top_n_sigma": {"decoding.top_n_sigma": [0.5, 1.0, 1.5, 2.0], "decoding.temperature": [0.7, 1.0, 1.5, 3.0]},
    "xtc": {"decoding.xtc_probability": [0.0, 0.25, 0.5, 0.75, 1.0], "decoding.xtc_threshold": [0.05, 0.1, 0.2]},
    "dry": {"decoding.dry_multiplier": [0.0, 0.4, 0.8, 1.6], "decoding.dry_allowed_length": [1, 2, 4]},
    "min_p_temperature_llama": {"decoding.min_p": [0.05, 0.1, 0.2, 0.3],
                                "decoding.temperature": [0.7, 1.0, 1.5, 3.0]},
}


def sweep_jobs(tmp_path, name):
    """Each job's overrides as Hydra's sweeper expands the sweep file's params, and its composed config."""
    study = compose_config([*TINY_RUN, "task=generate", f"sweep={name}"], tmp_path / "study")
    params = [f"{key}={value}" for key, value in study.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    jobs = [job for batch in batches for job in batch]
    cfgs = [compose_config([*TINY_RUN, "task=generate", f"sweep={name}", *job], tmp_path / f"job{i}")
            for i, job in enumerate(jobs)]
    return jobs, cfgs


@pytest.mark.parametrize("name", SWEEPS)
def test_each_sweep_expands_to_its_grid_and_shares_one_generation(name, tmp_path):
    jobs, cfgs = sweep_jobs(tmp_path, name)
    grid = SWEEPS[name]
    expected = {tuple(zip(grid, values)) for values in itertools.product(*grid.values())}
    got = {tuple((k, cfg.decoding[k.split(".", 1)[1]]) for k in grid) for cfg in cfgs}
    assert got == expected and len(jobs) == len(expected) <= 16
    assert group_jobs(cfgs, max_configurations=16) == [list(range(len(cfgs)))]
    assert cfgs[0].hydra.mode.name == "MULTIRUN" and cfgs[0].name == f"sweep_{name}"


def test_the_llama_min_p_sweep_runs_in_llama_cpps_order(tmp_path):
    from decoding.processors.order import LLAMA_CPP_PROCESSOR_ORDER

    _, cfgs = sweep_jobs(tmp_path, "min_p_temperature_llama")
    for cfg in cfgs:
        order = check_config(cfg).processor_order
        assert order == LLAMA_CPP_PROCESSOR_ORDER and order.index("min_p") < order.index("temperature")


# (decoding file, [overrides of each configuration]): families of row parameters, each sharing a batch
ROW_GRIDS = {
    "mirostat": ("mirostat", [["decoding.mirostat=1"], ["decoding.mirostat=2", "decoding.mirostat_tau=3"],
                              ["decoding.mirostat=2", "decoding.mirostat_eta=0.3"], ["decoding.mirostat=0"]]),
    "penalties": ("openai_penalties", [["decoding.presence_penalty=0"], ["decoding.frequency_penalty=1.5"],
                                       ["decoding.presence_penalty=1", "decoding.frequency_penalty=0"]]),
    "dynatemp": ("dynatemp", [["decoding.dynatemp_range=0"], ["decoding.dynatemp_range=0.5",
                                                              "decoding.dynatemp_exponent=2"]]),
    "dry": ("dry", [["decoding.dry_multiplier=0"], ["decoding.dry_base=2", "decoding.dry_penalty_last_n=8"]]),
    "xtc": ("xtc", [["decoding.xtc_probability=1.0", "decoding.xtc_threshold=0.001"], ["decoding.xtc_probability=0"],
                    ["decoding.temperature=0.7"]]),
    "top_n_sigma": ("top_n_sigma", [["decoding.top_n_sigma=0.5"], ["decoding.top_n_sigma=null"],
                                    ["decoding.temperature=1.5", "+decoding.min_p=0.1"]]),
}


@pytest.mark.parametrize("family", ROW_GRIDS)
def test_row_parameter_grids_batch_and_give_each_configuration_alone(family, tmp_path):
    name, grid = ROW_GRIDS[family]
    cfgs = [compose_config([*TINY_RUN, "task=generate", "prompts.num_prompts=2", f"decoding={name}", *overrides],
                           tmp_path / f"job{i}") for i, overrides in enumerate(grid)]
    assert group_jobs(cfgs) == [list(range(len(cfgs)))]
    sweep_and_alone(cfgs)  # the batched samples are each configuration's own (tokens, texts, finish reasons)


@pytest.mark.parametrize("second", [["decoding.sampler_order=transformers"], ["decoding.dry_sequence_breakers=[x]"],
                                    ["decoding.top_k=40", "decoding.sampler_order=[top_k,min_p]"]])
def test_an_order_or_breakers_that_differ_split_the_group(second, tmp_path):
    first = compose_config([*TINY_RUN, "task=generate", "decoding=dry"], tmp_path / "a")
    other = compose_config([*TINY_RUN, "task=generate", "decoding=dry", *second], tmp_path / "b")
    assert group_jobs([first, other]) == []


# ------------------------------------------------------------------------------------------------------ bad values

# A model that cannot be loaded: an error naming a decoding setting shows that the check ran before loading.
UNLOADABLE = ["model=hf", "model.name=/nonexistent/sampler/model", "model.device=cpu"]


@pytest.mark.parametrize("overrides, message", [
    (["decoding=top_n_sigma", "decoding.top_n_sigma=-1"], r"top_n_sigma=-1"),
    (["decoding=xtc", "decoding.xtc_probability=1.5"], r"xtc_probability=1.5.*\[0, 1\]"),
    (["decoding=xtc", "decoding.xtc_threshold=-0.1"], r"xtc_threshold=-0.1"),
    (["decoding=dry", "decoding.dry_multiplier=-1"], r"dry_multiplier=-1"),
    (["decoding=dry", "decoding.dry_base=0.5"], r"dry_base=0.5.*>= 1"),
    (["decoding=dry", "decoding.dry_allowed_length=1.5"], r"dry_allowed_length=1.5"),
    (["decoding=dry", "decoding.dry_penalty_last_n=-2"], r"dry_penalty_last_n=-2"),
    (["decoding=dry", "decoding.dry_sequence_breakers=['']"], r"dry_sequence_breakers"),
    (["decoding=mirostat", "decoding.mirostat=3"], r"mirostat=3.*0 \(off\), 1.*2"),
    (["decoding=mirostat", "decoding.mirostat_tau=0"], r"mirostat_tau=0"),
    (["decoding=mirostat", "decoding.mirostat_eta=-0.1"], r"mirostat_eta=-0.1"),
    (["decoding=dynatemp", "decoding.dynatemp_range=-0.5"], r"dynatemp_range=-0.5"),
    (["decoding=dynatemp", "decoding.dynatemp_exponent=-1"], r"dynatemp_exponent=-1"),
    (["decoding=openai_penalties", "decoding.presence_penalty=3"], r"presence_penalty=3.*\[-2, 2\]"),
    (["decoding=openai_penalties", "decoding.frequency_penalty=-2.5"], r"frequency_penalty=-2.5"),
    (["decoding=openai_penalties", "+decoding.logit_bias={5: 500}"], r"logit_bias=.*\[-100, 100\]"),
    (["decoding=openai_penalties", "+decoding.allowed_token_ids=[-1]"], r"allowed_token_ids=\[-1\]"),
    (["decoding=xtc", "decoding.sampler_order=llama"], r"sampler_order='llama'.*'llama.cpp'"),
    (["decoding=xtc", "decoding.sampler_order=[top_k,nucleus]"], r"sampler_order=.*unknown: \['nucleus'\]"),
])
def test_a_bad_value_fails_before_any_model_loads(overrides, message, tmp_path):
    cfg = compose_config([*TINY_RUN, "task=generate", *UNLOADABLE, *overrides], tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_bad_value_on_the_command_line_is_one_line_and_no_folder(tmp_path):
    done = run_cli([*TINY_RUN, "decoding=xtc", "decoding.xtc_probability=2"], tmp_path, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "xtc_probability=2" in lines[0], done.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_logit_bias_outside_the_vocabulary_fails_after_loading_before_work(tmp_path):
    out = tmp_path / "run"
    cfg = compose_config([*TINY_RUN, "task=both", "logger=none", "decoding=openai_penalties",
                          "+decoding.logit_bias={49152: 1.0}"], out)
    with pytest.raises(ValueError, match=r"logit_bias=.*\[0, 49152\)"):
        run(cfg)
    assert not (out / "samples.jsonl").exists() and not (out / "metrics.json").exists()
    assert not (out.parent / "outputs_root" / "cache").exists()  # the perplexity of task=both did not start


def test_a_multirun_over_the_new_samplers_shares_one_batched_generation(tmp_path):
    # the real command line and the default (batched) launcher: XTC x DRY x presence on the tiny model, 2 x 2 x 1
    # jobs differing in row parameters only, all in one batched generation; each writes its own config and samples
    done = run_cli(["-m", *TINY_RUN, "task=generate", "logger=none", "metrics.mauve=false", "prompts.num_prompts=2",
                    "decoding=xtc", "decoding.xtc_probability=0.5,1.0", "+decoding.dry_multiplier=0,0.8",
                    "+decoding.presence_penalty=0.5", "hydra.sweep.dir=outputs/multirun/xtc_dry"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "batched generation for jobs #0, #1, #2, #3 (4 configurations)" in log, log[-3000:]
    folders = sorted((tmp_path / "outputs" / "multirun" / "xtc_dry").glob("*/metrics.json"))
    assert len(folders) == 4
    settings = set()
    for metrics in folders:
        config = yaml.safe_load((metrics.parent / "config.yaml").read_text())["decoding"]
        assert config["sampler_order"] == "llama.cpp" and config["presence_penalty"] == 0.5
        settings.add((config["xtc_probability"], config["dry_multiplier"]))
        assert (metrics.parent / "samples.jsonl").read_text().count("\n") == 2
    assert settings == {(0.5, 0), (0.5, 0.8), (1.0, 0), (1.0, 0.8)}
