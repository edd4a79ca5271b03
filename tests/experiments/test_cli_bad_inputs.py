"""The command line's bad-input table: every case is one real `python -m experiments.run` subprocess.

Each must end with exit status 2, name the parameter and its value on stderr, show no traceback and write
nothing under its root (no outputs/ folder at all: no run folder, no perplexity cache, no W&B files).
Values the runner checks itself (experiments/validate.py) give exactly one line; a Hydra composition
error (an unknown group option, a key that does not exist) is Hydra's own message with the valid options.

The cases run on the tiny model and a local corpus (TINY_BASE), so a check that went missing would show
as a run that starts and writes a folder, not as a long wait. The subprocess table is marked slow (about
2-4 s a case, mostly imports); `test_the_checks_in_process` runs the same value cases in this process
(compose_config + the validate functions) in a few seconds, unmarked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.experiments.runner_helpers import CORPUS, TINY_RUN, compose_config, run_cli

DATASET_ARGS = [a for a in TINY_RUN if a.startswith("dataset")]
TINY_BASE = [a for a in TINY_RUN if not a.startswith("dataset")]  # + DATASET_ARGS unless a case picks a dataset
SOTU = ["dataset=sotu", "dataset.limit=1"]
OFFLINE = {"HF_HUB_OFFLINE": "1"}  # a hub id must fail the same way on a machine with network
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def case(case_id: str, args: list[str], *named: str, hydra: bool = False, env: dict | None = None, marks=(),
         cli: bool = True):
    """A row: the arguments, the texts stderr must contain (parameter and value), whether Hydra reports it.

    `cli=False`: a value check like its neighbours, run in process only (keeps the subprocess table to a few
    minutes)."""
    return pytest.param(args, named, hydra, env or {}, cli, id=case_id, marks=marks)


CASES = [
    # the root's own keys
    case("seed-text", ["seed=abc"], "seed='abc'"),
    case("seed-negative", ["seed=-1"], "seed=-1"),
    case("seed-float", ["seed=1.5"], "seed=1.5", cli=False),
    case("name-empty", ["name="], "name=''"),
    case("resume-text", ["resume=maybe"], "resume='maybe'", cli=False),
    case("unknown-root-key", ["+temprature=0.7"], "temprature=0.7"),
    case("lock-wait-negative", ["lock_wait_s=-1"], "lock_wait_s=-1"),
    case("lock-wait-text", ["lock_wait_s=soon"], "lock_wait_s='soon'"),
    # prompts
    case("num-prompts-negative", ["prompts.num_prompts=-1"], "prompts.num_prompts=-1"),
    case("num-prompts-zero", ["prompts.num_prompts=0"], "prompts.num_prompts=0"),
    case("num-prompts-float", ["prompts.num_prompts=2.5"], "prompts.num_prompts=2.5", cli=False),
    case("prompt-tokens-zero", ["prompts.prompt_tokens=0"], "prompts.prompt_tokens=0", cli=False),
    case("continuation-tokens-text", ["prompts.continuation_tokens=abc"], "prompts.continuation_tokens='abc'"),
    case("prompt-mode", ["prompts.mode=sentence"], "prompts.mode='sentence'", "window"),
    case("pairs-per-document", ["prompts.pairs_per_document=-3"], "prompts.pairs_per_document=-3", cli=False),
    case("prompt-batch-size", ["prompts.batch_size=0"], "prompts.batch_size=0", cli=False),
    case("prompts-added-typo", ["+prompts.num_prompt=3"], "prompts.num_prompt=3", "prompts.num_prompts"),
    case("prompts-typo", ["prompts.num_prompt=3"], "prompts.num_prompt", "=3", hydra=True),
    # perplexity
    case("max-length-zero", ["perplexity.max_length=0"], "perplexity.max_length=0"),
    case("stride-zero", ["perplexity.stride=0"], "perplexity.stride=0"),
    case("stride-above-max-length", ["perplexity.stride=1000"], "perplexity.stride=1000", "128"),
    case("ppl-batch-size", ["perplexity.batch_size=-1"], "perplexity.batch_size=-1", cli=False),
    # metrics
    case("tokenization", ["metrics.tokenization=chars"], "metrics.tokenization='chars'", "whitespace"),
    case("mauve-text", ["metrics.mauve=sometimes"], "metrics.mauve='sometimes'", cli=False),
    case("self-bleu-sample", ["metrics.self_bleu_sample_size=1"], "metrics.self_bleu_sample_size=1"),
    # task
    case("task-nothing", ["task.perplexity=false", "task.generate=false"], "task.perplexity=false",
         "task.generate=false"),
    case("task-text", ["task.generate=yes"], "task.generate='yes'", cli=False),
    case("task-unknown-option", ["task=everything"], "task/everything", "perplexity", hydra=True),
    # model
    case("model-misspelled", ["model=tiny_lama"], "model/tiny_lama", "tiny_llama", hydra=True),
    case("model-dtype", ["model.dtype=float8"], "model.dtype='float8'", "bfloat16"),
    case("model-device", ["model.device=gpu"], "model.device='gpu'"),
    case("model-quantization", ["model.quantization=int3"], "model.quantization='int3'", "int8_weight_only"),
    case("model-quantization-int8-group", ["model.quantization=int8_weight_only", "model.quantization_group_size=64"],
         "model.quantization_group_size=64", "int8_weight_only"),
    case("model-quantization-int4-group", ["model.quantization=int4_weight_only", "model.quantization_group_size=48"],
         "model.quantization_group_size=48", "(32, 64, 128)", cli=False),
    case("model-quantization-group-alone", ["model.quantization_group_size=64"], "model.quantization_group_size=64",
         "null", cli=False),
    case("model-quantization-conv1d", ["model=tiny_gpt2", "model.quantization=int8_weight_only"],
         "model.quantization='int8_weight_only'", "Conv1D"),
    case("model-cuda", ["model.device=cuda"], "model.device='cuda'", "CUDA", marks=NO_CUDA),
    case("model-seed", ["model.seed=-1"], "model.seed=-1", cli=False),
    case("hf-without-name", ["model=hf"], "model.name"),
    case("hf-unknown-hub-id", ["model=hf", "model.name=nobody/no-such-model"], "model.name='nobody/no-such-model'",
         "unreachable", env=OFFLINE),
    case("hf-missing-folder", ["model=hf", "model.name=/no/such/model/folder"], "model.name='/no/such/model/folder'"),
    case("tiny-extra-argument", ["+model.revision=main"], "model.revision='main'"),
    case("scorer-not-a-model", ["scorer=5"], "scorer=5"),
    case("scorer-missing-folder", ["scorer={_target_:experiments.models.load_model,name:/no/such/scorer}"],
         "scorer.name='/no/such/scorer'"),
    # dataset
    case("files-without-path", ["dataset=files"], "dataset.path"),
    case("files-missing-path", ["dataset=files", "dataset.path=missing_folder"], "dataset.path='missing_folder'"),
    case("files-not-utf8", ["dataset=files", "dataset.path={root}/latin.txt"], "latin.txt", "UTF-8", "line 1"),
    case("files-truncated-jsonl", ["dataset=files", "dataset.path={root}/truncated.jsonl"], "truncated.jsonl",
         "line 2"),
    case("files-jsonl-no-text-key", ["dataset=files", "dataset.path={root}/body.jsonl"],
         "dataset.text_column='text'", "body.jsonl"),
    case("files-csv-no-text-column", ["dataset=files", "dataset.path={root}/body.csv"],
         "dataset.text_column='text'", "body.csv"),
    case("files-unknown-suffix", ["dataset=files", "dataset.path={root}/notes.xyz"], "dataset.path=", "notes.xyz"),
    case("files-empty-folder", ["dataset=files", "dataset.path={root}/empty"], "dataset.path=", "empty"),
    case("files-format", [*DATASET_ARGS, "dataset.format=xml"], "dataset.format='xml'", "jsonl"),
    case("files-sample-by", [*DATASET_ARGS, "+dataset.sample_by=sentence"], "dataset.sample_by='sentence'"),
    case("sotu-split", [*SOTU, "dataset.split=dev"], "dataset.split='dev'", "validation"),
    case("sotu-limit", [*SOTU, "dataset.limit=-1"], "dataset.limit=-1", cli=False),
    case("sotu-years", [*SOTU, "dataset.validation_from_year=2030"], "dataset.validation_from_year=2030"),
    case("sotu-year-range", ["dataset=sotu_seen", "dataset.last_year=1999"], "dataset.first_year=2000",
         "dataset.last_year=1999"),
    case("sotu-years-no-speech", [*SOTU, "dataset.first_year=2000", "dataset.last_year=2010"],
         "dataset.first_year=2000", "select no speech", "split=all", cli=False),
    case("pairs-per-document", ["prompts.pairs_per_document=0"], "prompts.pairs_per_document=0", "null to spread",
         cli=False),
    case("warmup-batches", ["prompts.warmup_batches=-1"], "prompts.warmup_batches=-1", "integer >= 0", cli=False),
    case("sotu-source", [*SOTU, "dataset.source=web"], "dataset.source='web'", "files"),
    case("dataset-unknown-key", [*SOTU, "+dataset.langauge=en"], "dataset.langauge='en'"),
    case("hub-without-name", ["dataset=hub"], "dataset.name"),
    case("hub-dataset-offline", ["dataset=hub", "dataset.name=nobody/no-such-corpus"], "name='nobody/no-such-corpus'",
         "unreachable", env=OFFLINE),
    case("wikitext2-offline", ["dataset=wikitext2"], "wikitext_document_level", "unreachable", env=OFFLINE),
    case("dataset-unknown-option", ["dataset=sotu2"], "dataset/sotu2", hydra=True),
    # cache
    case("cache-setting", ["cache.setting=paged"], "cache.setting='paged'", "static"),
    case("cache-length", ["cache=static", "cache.max_cache_len=0"], "cache.max_cache_len=0", cli=False),
    case("compile-without-static", ["cache=static_compiled", "cache.setting=dynamic"], "compile=True",
         "cache='dynamic'"),
    case("compile-value", ["cache=static_compiled", "cache.compile=fast"], "cache.compile='fast'",
         "max-autotune", cli=False),
    case("autotune-without-static", ["cache=static_max_autotune", "cache.setting=dynamic"],
         "compile='max-autotune'", "cache='dynamic'", cli=False),
    case("cache-unknown-option", ["cache=huge"], "cache/huge", hydra=True),
    # logger
    case("logger-mode", ["logger.mode=offlne"], "logger.mode='offlne'", "offline"),
    case("logger-tags", ["logger.tags=5"], "logger.tags=5", cli=False),
    case("logger-unknown-option", ["logger=tensorboard"], "logger/tensorboard", hydra=True),
    # decoding
    case("top-p", ["decoding=top_p", "decoding.top_p=1.5"], "top_p=1.5"),
    case("top-k", ["decoding=top_k", "decoding.top_k=-5"], "top_k=-5", cli=False),
    case("max-new-tokens", ["decoding.max_new_tokens=0"], "max_new_tokens=0", cli=False),
    case("stop-strings", ["+decoding.stop_strings=5"], "stop_strings=5", cli=False),
    case("min-above-max-new-tokens", ["+decoding.min_new_tokens=100"], "min_new_tokens=100"),
    case("decoding-unknown-key", ["+decoding.top_q=0.5"], "top_q"),
    case("decoding-unknown-option", ["decoding=nucleus"], "decoding/nucleus", "top_p", hydra=True),
    # studies and sweeps
    case("sweep-misspelled", ["sweep=topp"], "sweep/topp", "top_p", hydra=True),
    case("experiment-misspelled", ["experiment=holtzman_tabel1"], "experiment/holtzman_tabel1", "holtzman_table1",
         hydra=True),
    case("multirun-sweep-misspelled", ["-m", "sweep=topp"], "sweep/topp", "top_p", hydra=True),
    case("max-configurations-zero", ["-m", "hydra.launcher.max_configurations=0", "decoding=top_p",
                                     "decoding.top_p=0.5,0.9"], "hydra.launcher.max_configurations=0"),
    case("max-configurations-text", ["-m", "hydra.launcher.max_configurations=abc", "decoding=top_p",
                                     "decoding.top_p=0.5,0.9"], "hydra.launcher.max_configurations='abc'"),
    case("multirun-bad-fixed-value", ["-m", "prompts.num_prompts=-1", "decoding=top_p", "decoding.top_p=0.5,0.9"],
         "prompts.num_prompts=-1"),
    case("multirun-option-misspelled", ["-m", "decoding=greedy,topp"], "decoding=topp", "top_p"),
    case("multirun-without-m", ["decoding=top_p", "decoding.top_p=0.5,0.9"], "decoding.top_p=0.5,0.9", hydra=True),
]


def write_bad_files(root: Path) -> None:
    (root / "latin.txt").write_bytes("Caf\u00e9 au lait, said the President.\n".encode("latin-1"))
    (root / "truncated.jsonl").write_text('{"text": "The state of the Union is strong."}\n{"text": "We the peo')
    (root / "body.jsonl").write_text('{"body": "The state of the Union is strong."}\n')
    (root / "body.csv").write_text("body,year\nThe state of the Union is strong.,2026\n")
    (root / "notes.xyz").write_text("The state of the Union is strong.\n")
    (root / "empty").mkdir()


def full_args(args: list[str], root: Path) -> list[str]:
    args = [a.replace("{root}", str(root)) for a in args]
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) come before the overrides
    args = [a for a in args if not a.startswith("-")]
    picks_dataset = any(a.startswith(("dataset=", "dataset.")) for a in args)
    return [*flags, *TINY_BASE, *([] if picks_dataset else DATASET_ARGS), *args]


def everything_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


CLI_CASES = [c for c in CASES if c.values[4]]


@pytest.mark.slow
@pytest.mark.parametrize("args, named, hydra, env, cli", CLI_CASES)
def test_bad_command_line_fails_with_exit_2_and_writes_nothing(args, named, hydra, env, cli, tmp_path, monkeypatch):
    write_bad_files(tmp_path)
    before = everything_under(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # run_cli passes os.environ on
    result = run_cli(full_args(args, tmp_path), tmp_path, timeout=120)
    stderr = result.stderr
    assert result.returncode == 2, f"exit {result.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    for text in named:
        assert text in stderr, f"{text!r} not on stderr:\n{stderr[-2000:]}"
    if not hydra:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    assert not (tmp_path / "outputs").exists()
    assert everything_under(tmp_path) == before, "the command wrote files under its root"


def test_the_table_is_large_enough():
    assert len(CLI_CASES) >= 45 and len(CASES) >= 70
    assert sum(not c.values[2] for c in CLI_CASES) >= 35  # most are the runner's own checks, not Hydra's


IN_PROCESS = [c for c in CASES if not c.values[2] and "-m" not in c.values[0]]


@pytest.mark.parametrize("args, named, hydra, env, cli", IN_PROCESS)
def test_the_checks_in_process(args, named, hydra, env, cli, tmp_path, monkeypatch):
    """The same cases through compose_config and the validate functions the CLI's callback calls."""
    import huggingface_hub.constants

    from experiments.validate import INPUT_ERRORS, check_config, check_inputs

    write_bad_files(tmp_path)
    if env.get("HF_HUB_OFFLINE"):
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    cfg = compose_config(full_args(args, tmp_path), tmp_path / "job")
    with pytest.raises(INPUT_ERRORS) as err:
        check_config(cfg)
        check_inputs(cfg)
    for text in named:
        assert text in str(err.value)
    assert not (tmp_path / "job").exists() and not (tmp_path / "outputs_root").exists()


def test_a_good_config_passes_the_checks(tmp_path):
    from experiments.validate import check_config, check_inputs

    cfg = compose_config([*TINY_RUN, "decoding=top_p"], tmp_path / "job")
    assert check_config(cfg).top_p == 0.95
    check_inputs(cfg)
    assert CORPUS.is_dir()


@pytest.mark.slow
def test_a_sweep_over_a_required_key_is_not_stopped_by_the_primary_config(tmp_path):
    """`dataset.path` is `???` in the config a multirun starts from; every job sets it. The check before the
    sweep leaves swept keys to the jobs: the good jobs finish, the bad one fails alone with its error.txt."""
    files = sorted(CORPUS.glob("*.txt"))[:2]
    paths = ",".join([*map(str, files), str(tmp_path / "nothere.txt")])
    result = run_cli(["-m", *TINY_BASE, "dataset=files", f"dataset.path={paths}", "task=perplexity",
                      "perplexity.max_length=64", "logger=none", "name=swept"], tmp_path, timeout=300)
    assert result.returncode not in (0, 2), result.stderr[-3000:]  # a failed job, not a bad command line
    sweep = tmp_path / "outputs" / "multirun" / "swept"
    assert len(list(sweep.rglob("metrics.json"))) == 2
    [error] = sweep.rglob("error.txt")
    assert "nothere.txt" in error.read_text() and "does not exist" in error.read_text()


@pytest.mark.parametrize("study", ["experiment=holtzman_table1", "sweep=top_p", "sweep=num_beams"])
def test_the_studies_pass_the_check_before_a_multirun(study, tmp_path):
    """Their sweeper params name group options (holtzman_table1: decoding=greedy,beam16,...) that exist."""
    from experiments.validate import check_before_work, check_swept_options

    cfg = compose_config([*TINY_RUN, study], tmp_path / "job")
    check_swept_options(cfg)
    check_before_work(cfg, multirun=True)  # SystemExit(2) on any error
