"""The experiment runner: `run(cfg) -> metrics` does the work; `main` is a thin `@hydra.main`.

    python -m experiments.run [overrides]            (or the console script `decodelab-run`)
    python -m experiments.run -m sweep=top_p         a multirun grid (sampling configs batched); rerun to resume

A run does what `cfg.task` asks: teacher-forced perplexity on the dataset, generation from prompt /
human-continuation pairs, or both, and writes into its Hydra run folder:
- `config.yaml`: the resolved config;
- `samples.jsonl`: prompt, continuation, human reference, per-token log-probabilities, finish reason;
- `metrics.json`: flat namespaced keys (`ppl/*`, `gen/*`, `human/*`, `speed/*`, `mem/*`), written last
  and atomically, so its presence means the job finished; valid JSON: a value that could not be measured
  is null, with its reason in `meta/not_measurable`. It carries a fingerprint of the config; a rerun of
  a finished job with the same fingerprint reads it instead of recomputing (`resume=true`). A broken
  metrics.json, a hand-edited config.yaml or another config's results are reported, moved aside and
  recomputed (experiments/jobs.py). A job locks its folder while it works, so a second sweep into the
  same folders waits for it and reads its result instead of computing it again (`lock_wait_s`).

In a multirun the default launcher (experiments/batched_sweep.py) generates for all jobs that differ only in
sampling parameters in one batch before they run; `run` then takes its job's samples from there
(`experiments.generation.precomputed_run`) instead of generating, and does everything else as alone.

Errors in the config or input are found before any work starts and end the run with one clear line and a
non-zero exit. In a multirun a failed job leaves `error.txt` in its folder, the others go on, and the
sweep exits non-zero at the end (`FailedJobsCallback`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import decoding
from experiments.generation import GenerationRun, drop_shared, load_shared, precomputed_run
from experiments.faults import failpoint
from experiments.jobs import (NOT_IN_FINGERPRINT, config_fingerprint, read_finished, read_json_or_move_aside,
                             sweep_cache_file, with_recorded_defaults)
from experiments.job_lock import check_wait, wait_for_lock
from experiments import mauve_cache, validate
from experiments.logging import NullLogger, clean_metrics, write_atomic, write_json, write_jsonl, write_metrics

log = logging.getLogger("experiments.run")  # not __name__: that is "__main__" under `python -m experiments.run`

# How long a run waits for another process working in its job folder (config key `lock_wait_s`).
LOCK_WAIT_S = 6 * 3600.0


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name: its overrides, made filesystem-safe; long ones cut and suffixed by a hash.

    Deterministic, so rerunning a sweep command finds the folders of its finished jobs.
    """
    name = overrides.replace("/", "_") or "default"
    if len(name) <= 120:
        return name
    return f"{name[:100]}-{hashlib.sha256(overrides.encode()).hexdigest()[:12]}"


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)

def build(node: DictConfig) -> Any:
    """`hydra.utils.instantiate`, re-raising the component's own error (not Hydra's wrapper) so it reads clearly."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, Exception):
            raise cause from None
        raise


def plain(cfg: DictConfig, drop: tuple[str, ...] = ("hydra",)) -> dict[str, Any]:
    """The resolved config as plain data, without the `hydra` node (present when tests compose with it), with the
    settings every config.yaml records (`experiments.jobs.RECORDED_DEFAULTS`: decoding.sampler_order)."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in drop])
    return with_recorded_defaults(OmegaConf.to_container(kept, resolve=True))


def fingerprint(cfg: DictConfig) -> str:
    """The job's fingerprint (`experiments.jobs.config_fingerprint` of its resolved config)."""
    return config_fingerprint(plain(cfg, NOT_IN_FINGERPRINT))


def decoding_params(cfg: DictConfig) -> dict[str, Any]:
    params = OmegaConf.to_container(cfg.decoding, resolve=True)
    params.pop("name", None)
    return params


def generation_options(cfg: DictConfig) -> dict[str, Any]:
    """What `generate_continuations(_sweep)` takes besides the model, prompts and decoding parameters."""
    options = {"cache": cfg.cache.setting, "max_cache_len": cfg.cache.max_cache_len,
               "batch_size": cfg.prompts.batch_size, "seed": cfg.seed,
               "warmup_batches": cfg.prompts.get("warmup_batches", 0)}
    return {**options, **validate.compile_option(cfg)}


def check_config(cfg: DictConfig) -> decoding.GenerationParams:
    """Every config value, checked before anything is loaded or written (experiments/validate.py); returns
    the decoding parameters as resolved without a model (its own generation_config is applied later)."""
    return validate.check_config(cfg)


def finished_metrics(out_dir: Path, expected: str, announce: bool = True, config: dict | None = None,
                     repair: bool = False) -> dict | None:
    """The metrics of a job folder finished for fingerprint `expected`, else None (`experiments.jobs.read_finished`:
    with `repair=True`, called holding the folder's lock, what is broken or not this config's is reported and
    moved aside)."""
    done = read_finished(out_dir, expected, config=config, repair=repair)
    if done is not None and announce:
        log.info(f"resume: {out_dir} already finished with this config; reading its metrics.json")
    return done


def peak_memory_metrics(device: torch.device) -> dict[str, float]:
    out = {"mem/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}  # Linux: KiB
    if device.type == "cuda":
        out["mem/peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def perplexity_metrics(cfg: DictConfig, model, tokenizer, documents) -> dict[str, float]:
    """Teacher-forced corpus perplexity, cached on disk across the jobs of a sweep (it does not depend on decoding)."""
    from experiments.perplexity import corpus_perplexity

    key_data = OmegaConf.to_container(OmegaConf.create({"model": cfg.model, "dataset": cfg.dataset,
                                                        "perplexity": cfg.perplexity}), resolve=True)
    cache_file = sweep_cache_file(cfg.paths.output_root, "perplexity", key_data, ".json")
    cached = read_json_or_move_aside(cache_file, "perplexity cache", numbers=True)  # broken: moved aside, redone
    if cached is not None:
        return cached
    report = corpus_perplexity(model, tokenizer, documents, max_length=cfg.perplexity.max_length,
                               stride=cfg.perplexity.stride, batch_size=cfg.perplexity.batch_size)
    metrics = report.metrics(prefix="ppl")
    write_json(cache_file, metrics)
    return metrics


def quality_metrics(cfg: DictConfig, texts, references, prompts, tokenizer, scorer, scorer_tokenizer,
                    prefix: str, with_references: bool) -> dict[str, Any]:
    """`prefix/<metric>` floats (with `prefix/<metric>/ci95_low|high`, a 95% interval over texts), plus
    `meta/not_measurable`, `meta/caveats`, `meta/interval_methods` (how each interval was made) and
    `meta/no_interval` (why a value has none) ({`prefix/<metric>`: text}), `meta/bootstrap_generation` and,
    when MAUVE ran, `meta/mauve_features` (its features model, as the run names it)."""
    from experiments.metrics import intervals, score_generations
    from experiments.models import TINY_KINDS
    from experiments.perplexity import generation_perplexity

    features_node = cfg.scorer if cfg.scorer is not None else cfg.model  # the scorer gives MAUVE's features
    features = str(features_node.get("name") or features_node.get("_target_"))
    random_weights = features in TINY_KINDS
    mauve_on = with_references and cfg.metrics.mauve
    p_features = mauve_cache.reference_features(cfg, list(references), scorer, scorer_tokenizer) if (
        mauve_on and scorer is not None) else None  # the same human side in every job of a sweep: cached
    scores = score_generations(
        list(texts), list(references) if with_references else None, tokenizer,
        features_model=scorer if mauve_on else None,
        features_tokenizer=scorer_tokenizer, seed=cfg.seed, tokenization=cfg.metrics.tokenization,
        self_bleu_sample_size=cfg.metrics.self_bleu_sample_size, features_name=features,
        features_random=random_weights, mauve_reference_features=p_features)
    metrics = dict(scores.values)
    try:
        report = generation_perplexity(scorer, scorer_tokenizer, list(prompts), list(texts))
        metrics["ppl"] = report.metrics(prefix="ppl")["ppl/token"]
        weights = intervals.resample_weights(len(report.texts), intervals.DEFAULT_RESAMPLES, cfg.seed)  # (R, texts)
        log_ppl = intervals.ratio_interval([t.nll for t in report.texts], [t.tokens for t in report.texts], weights)
        scores.intervals["ppl"] = tuple(math.exp(v) for v in intervals.percentile_interval(log_ppl))
    except ValueError:  # every text empty (e.g. EOS at once): nothing to score
        metrics["ppl"] = float("nan")
        scores.not_measurable["ppl"] = "every text empty"
    out: dict[str, Any] = {f"{prefix}/{k}": v for k, v in metrics.items()}
    out["meta/not_measurable"] = {f"{prefix}/{k}": why for k, why in scores.not_measurable.items()}
    out["meta/caveats"] = {f"{prefix}/{k}": text for k, text in scores.caveats.items()}
    for key, (low, high) in scores.intervals.items():
        out[f"{prefix}/{key}/ci95_low"], out[f"{prefix}/{key}/ci95_high"] = low, high
    out["meta/bootstrap_generation"] = {"resamples": intervals.DEFAULT_RESAMPLES, "seed": cfg.seed,
                                        "unit": "texts (prompts x return sequences)",
                                        "interval": "95%, each metric's method in meta/interval_methods"}
    out["meta/interval_methods"] = {f"{prefix}/{k}": how for k, how in intervals.INTERVAL_METHODS.items()
                                    if k in scores.intervals}
    no_interval = {**{k: why for k, why in intervals.NO_INTERVAL.items() if k in metrics}, **scores.no_interval}
    out["meta/no_interval"] = {f"{prefix}/{k}": why for k, why in no_interval.items()}
    if "mauve" in metrics:
        out["meta/mauve_features"] = features + (" (random weights)" if random_weights else "")
    return out


def human_metrics(cfg: DictConfig, unique: list[dict], tokenizer, scorer, scorer_tokenizer) -> dict[str, Any]:
    """`human/*` quality metrics of the human continuations, cached on disk across the jobs of a sweep: they depend
    on the texts, the scorer and the metric settings, not on decoding (every method of a study scores the same
    human rows; the scorer's forward over them is most of the cost). Read back exactly: JSON keeps a float's repr,
    and a NaN (written as null) comes back as NaN."""
    texts, prompts = [u["continuation"] for u in unique], [u["prompt"] for u in unique]
    scorer_node = cfg.scorer if cfg.scorer is not None else cfg.model
    key_data = {"texts": texts, "prompts": prompts, "seed": cfg.seed,
                **OmegaConf.to_container(OmegaConf.create({"scorer": scorer_node, "metrics": cfg.metrics}),
                                         resolve=True)}
    cache_file = sweep_cache_file(cfg.paths.output_root, "human", key_data, ".json")
    cached = read_json_or_move_aside(cache_file, "human metrics cache")  # broken: moved aside, redone
    if cached is not None:
        return {k: (math.nan if v is None and not k.startswith("meta/") else v) for k, v in cached.items()}
    human = quality_metrics(cfg, texts, None, prompts, tokenizer, scorer, scorer_tokenizer, "human", False)
    write_json(cache_file, human)
    return human


def prompt_pairs(cfg: DictConfig, documents, tokenizer) -> list[dict]:
    from experiments.data import make_prompt_pairs

    p = cfg.prompts
    return list(make_prompt_pairs(documents, tokenizer, prompt_tokens=p.prompt_tokens,
                                  continuation_tokens=p.continuation_tokens, mode=p.mode,
                                  pairs_per_document=p.pairs_per_document, seed=cfg.seed, max_pairs=p.num_prompts))


def load_inputs(cfg: DictConfig):
    """(documents, model, tokenizer), after seeding torch as every run does (a tiny random model's weights
    depend on it). The dataset comes first: a missing file should fail in a second, not after 20."""
    torch.manual_seed(cfg.seed)
    documents = build(cfg.dataset)
    model, tokenizer = build(cfg.model)
    return documents, model, tokenizer


def load_second_models(cfg: DictConfig, tokenizer) -> dict[str, Any]:
    """{generate keyword: loaded model} for each second model the run chose (`draft=<option>` as assistant_model,
    `amateur=<option>` as amateur_model; validate.SECOND_MODELS), each checked to share the model's tokenizer."""
    from experiments.models import check_same_tokenizer

    loaded = {}
    for group, second in validate.SECOND_MODELS.items():
        if cfg.get(group) is None:
            continue
        other, other_tokenizer = build(cfg[group])
        check_same_tokenizer(other_tokenizer, tokenizer, cfg[group].name, cfg.model.name, group=group)
        loaded[second.keyword] = other
    return loaded


def run_decoding_params(cfg: DictConfig, second_models: dict[str, Any] | None = None) -> dict[str, Any]:
    """`decoding_params`, with the loaded second models (`load_second_models`) under their generate keywords."""
    return {**decoding_params(cfg), **(second_models or {})}


def generation_metrics(cfg: DictConfig, model, tokenizer, documents, out_dir: Path,
                       precomputed: GenerationRun | None = None, second_models: dict[str, Any] | None = None
                       ) -> tuple[dict[str, Any], list[dict]]:
    """Generate (or take what a batched sweep generated for this config: `precomputed`), write the samples, score.

    The metrics are floats plus three `meta/` entries: `not_measurable` and `caveats` ({key: text}, the union of
    the gen/ and human/ notes) and `mauve_features` (the features model's name, when MAUVE ran)."""
    from experiments.generation import generate_continuations

    pairs = prompt_pairs(cfg, documents, tokenizer)
    if precomputed is not None:
        gen = precomputed
    else:
        gen = generate_continuations(model, tokenizer, pairs, run_decoding_params(cfg, second_models),
                                     **generation_options(cfg))
    write_jsonl(out_dir / "samples.jsonl", gen.samples)
    if cfg.scorer is None:
        scorer, scorer_tokenizer = model, tokenizer
    else:
        scorer, scorer_tokenizer = build(cfg.scorer)
    texts = [s["continuation"] for s in gen.samples]
    humans = [s["human"] for s in gen.samples]
    prompts = [s["prompt"] for s in gen.samples]
    metrics = quality_metrics(cfg, texts, humans, prompts, tokenizer, scorer, scorer_tokenizer, "gen", True)
    unique = {(pair["doc_id"], pair["start"]): pair for pair in pairs}.values()  # one human row per prompt
    human = human_metrics(cfg, list(unique), tokenizer, scorer, scorer_tokenizer)
    for key in ("meta/not_measurable", "meta/caveats", "meta/no_interval", "meta/interval_methods"):  # merged
        human[key] = {**metrics[key], **human[key]}
    metrics.update(human)
    watermark = cfg.decoding.get("watermarking_config")
    if watermark is not None:  # the detector's z beside the quality metrics (experiments/metrics/watermark.py)
        from experiments.metrics.watermark import run_watermark_metrics

        merge_metrics(metrics, run_watermark_metrics(OmegaConf.to_container(watermark, resolve=True), gen.samples,
                                                     [u["continuation_ids"] for u in unique], model, cfg.seed))
    metrics.update(gen.speed_metrics())
    if gen.proposed_tokens == 0:  # speculative, but nothing to accept or reject
        metrics["meta/not_measurable"]["speed/acceptance_rate"] = "no token was proposed (e.g. no n-gram matched)"
    metrics["gen/samples"] = float(len(gen.samples))
    metrics["gen/finish_eos_pct"] = 100.0 * sum(s["finish_reason"] == "eos" for s in gen.samples) / len(gen.samples)
    return metrics, gen.samples


def quiet_third_party_loggers() -> None:
    """Hydra logs at INFO; these libraries chatter there about things a user cannot act on."""
    for name in ("faiss", "faiss.loader", "absl", "datasets", "httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Do the work one config asks for; return its flat metrics (also written to metrics.json).

    Floats (NaN where not measurable; null in metrics.json) and `meta/*` notes. The job holds its folder's
    lock while it works (experiments/job_lock.py): a second process with the same job waits, then reads.
    """
    quiet_third_party_loggers()
    out_dir = Path(cfg.paths.output_dir)
    check_config(cfg)  # first: a `???` or a bad value is named, not met as an OmegaConf error by the fingerprint
    job_fingerprint = fingerprint(cfg)
    if cfg.resume:  # only reads: what is wrong in the folder is judged holding its lock, below
        done = finished_metrics(out_dir, expected=job_fingerprint)
        if done is not None:
            return done
    lock = wait_for_lock(out_dir, check_wait(cfg.get("lock_wait_s", LOCK_WAIT_S)))
    try:
        if cfg.resume:  # finished meanwhile by the process we waited for? broken or foreign files moved aside
            done = finished_metrics(out_dir, expected=job_fingerprint, config=plain(cfg), repair=True)
            if done is not None:
                return done
        return compute_job(cfg, out_dir, job_fingerprint)
    finally:
        lock.release()


def merge_metrics(into: dict[str, Any], new: dict[str, Any]) -> None:
    """`into.update(new)`, except that the `meta/` notes dicts (not_measurable, caveats) are united."""
    for key, value in new.items():
        if key.startswith("meta/") and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def check_with_model(cfg: DictConfig, model: Any, second_models: dict[str, Any] | None = None) -> None:
    """What only the loaded model can tell (token ids inside its vocabulary, its position limit, its own
    generation_config; with speculation, draft_layers below its layer count and a draft like it; the strategies'
    own checks against the model and its second models), checked before perplexity or generation starts: the
    runner's first check has no model."""
    from decoding.speculative.checks import check_draft

    options = validate.compile_option(cfg)
    try:
        params = decoding.resolve_params(model, cfg.prompts.prompt_tokens, decoding.max_positions_of(model),
                                         cache=cfg.cache.setting, max_cache_len=cfg.cache.max_cache_len, **options,
                                         **run_decoding_params(cfg, second_models))
        if params.is_speculative:
            check_draft(model, params)
        if params.is_dola:  # the premature layers inside the model's
            from decoding.strategies.dola_layers import check_dola_model

            check_dola_model(model, params.dola_layers)
        if params.is_contrastive_decoding:  # amateur_layers below the layer count, an amateur of the same width
            from decoding.strategies.amateur import check_amateur

            check_amateur(model, params, cfg.prompts.prompt_tokens + params.max_new_tokens, embeds_given=False)
    except ValueError as err:
        raise ValueError(f"decoding={cfg.decoding.get('name', '?')} with model={cfg.model.name}: {err}") from None


def compute_job(cfg: DictConfig, out_dir: Path, job_fingerprint: str) -> dict[str, Any]:
    """The work of `run`, holding the folder's lock: metrics.json is written last, so it means finished."""
    log.info(f"{out_dir}: computing this job")
    documents, model, tokenizer = load_inputs(cfg)
    # before the work: a wrong draft or amateur fails first
    second_models = load_second_models(cfg, tokenizer) if cfg.task.generate else {}
    if cfg.task.generate:
        check_with_model(cfg, model, second_models)
    metrics: dict[str, Any] = {}
    samples: list[dict] = []
    if cfg.task.perplexity:
        log.info("perplexity of the dataset")
        merge_metrics(metrics, perplexity_metrics(cfg, model, tokenizer, documents))
    if cfg.task.generate:
        log.info("generation and its metrics")
        shared = precomputed_run(job_fingerprint) or load_shared(out_dir, job_fingerprint)  # in memory, or saved
        gen_metrics, samples = generation_metrics(cfg, model, tokenizer, documents, out_dir, shared, second_models)
        merge_metrics(metrics, gen_metrics)
    if cfg.task.get("lm_eval"):
        from experiments.lm_eval_run import lm_eval_metrics

        log.info("lm-eval tasks under this decoding")
        task_metrics, samples = lm_eval_metrics(cfg, model, tokenizer, out_dir, precomputed_run(job_fingerprint))
        merge_metrics(metrics, task_metrics)
    merge_metrics(metrics, peak_memory_metrics(model.device))
    metrics = clean_metrics(metrics)
    write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(plain(cfg))))
    log_to_logger(cfg, metrics, samples)
    failpoint("metrics_writing")  # samples, config and W&B written; metrics.json not yet
    write_metrics(out_dir / "metrics.json", {**metrics, "meta/fingerprint": job_fingerprint})
    drop_shared(out_dir)
    print_summary(cfg, metrics)
    log.info(f"{out_dir}: finished; metrics.json written")
    return {**metrics, "meta/fingerprint": job_fingerprint}  # as a resumed run returns it


def run_name(cfg: DictConfig) -> str:
    try:
        overrides = HydraConfig.get().job.override_dirname
    except ValueError:
        overrides = ""
    return overrides or f"{cfg.decoding.get('name', 'run')}"


def log_to_logger(cfg: DictConfig, metrics: dict[str, Any], samples: list[dict]) -> None:
    """The W&B run of the job (numbers only: `meta/*` notes stay in metrics.json)."""
    logger = build(cfg.logger) if cfg.get("logger") else NullLogger()
    config = plain(cfg)
    logger.start(config, run_name(cfg), tags=[str(cfg.decoding.get("name", ""))])
    try:
        logger.log_metrics(metrics)
        logger.log_charts(metrics)
        logger.log_samples([{k: s[k] for k in ("prompt", "continuation", "human", "finish_reason")}
                            for s in samples[:100]])
    finally:
        logger.finish()


def print_summary(cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The run's numbers on the console; not-measurable values with their reason, caveated ones marked †."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.name}: model={cfg.model.name} dataset={cfg.dataset.source} "
                        f"decoding={cfg.decoding.get('name')} cache={cfg.cache.setting}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    shown = [k for k in metrics if k.split("/")[0] in ("ppl", "gen", "human", "speed", "mem", "task")
             and not k.endswith(("/nll", "/tokens", "/words", "/bytes", "/windows"))]
    reasons = metrics.get("meta/not_measurable") or {}
    caveats = metrics.get("meta/caveats") or {}
    for key in shown:
        value = metrics[key]
        if value is None or math.isnan(value):
            text = f"not measurable ({reasons[key]})" if key in reasons else "not measurable"
        else:
            text = f"{value:.4g}" + (" †" if key in caveats else "")
        table.add_row(key, text)
    console = Console(stderr=True)
    console.print(table)
    for key, caveat in caveats.items():  # the same marks the report puts on these cells
        console.print(f"† {key}: {caveat}")


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _error_files(sweep_dir: Path) -> dict[Path, tuple[int, int]]:
    """Each error.txt under `sweep_dir` with (inode, mtime ns): a rewritten file (atomic: a new inode) differs."""
    found = {}
    for path in sweep_dir.rglob("error.txt"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed meanwhile (a job starting again)
            continue
        found[path] = (stat.st_ino, stat.st_mtime_ns)
    return found


class FailedJobsCallback(Callback):
    """After a multirun: list the jobs of this multirun that failed (their error.txt) and exit non-zero if any did.

    The sweep folder may hold other multiruns' jobs (another grid under the same name, an older attempt):
    only error.txt files written while this multirun ran count, told apart from the ones there at its start
    by a snapshot (no clocks compared, so a file system's skewed time cannot mislead it).
    """

    def __init__(self) -> None:
        self.before: dict[Path, tuple[int, int]] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.before = _error_files(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        now = _error_files(Path(config.hydra.sweep.dir))
        failed = sorted(path for path, seen in now.items() if self.before.get(path) != seen)
        for path in failed:
            first = (path.read_text(errors="replace").strip().splitlines() or ["(empty error.txt)"])[0]
            print(f"failed job: {path.parent}: {first}", file=sys.stderr)
        if failed:
            raise SystemExit(1)


EXPECTED_ERRORS = (ValueError, FileNotFoundError, OSError, ConnectionError, KeyError)


# Absolute: relative to this file also when it runs as the console script `decodelab-run` (imported as a module,
# Hydra would read "../conf" as a python package, which conf/ is not; the project is installed editable).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@validate.exit_2_on_bad_command_line  # Hydra's composition errors (sweep=topp) exit 2, as bad values do
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    out_dir = Path(cfg.paths.output_dir)
    (out_dir / "error.txt").unlink(missing_ok=True)
    try:
        metrics = run(cfg)
    except EXPECTED_ERRORS as err:
        message = validate.error_line(err)  # one line: a multi-line cause would read as a traceback
        log.error(message)  # run.log keeps it too
        if _is_multirun():  # one failing job must not end the sweep
            record_job_failure(out_dir, err, message)
            print(message, file=sys.stderr)
            return float("nan")
        print(message, file=sys.stderr)
        raise SystemExit(2)
    except Exception as err:  # noqa: BLE001 - a bug or the model's own error: in a multirun, confined to this job
        if not _is_multirun():
            raise
        log.exception(record_job_failure(out_dir, err))
        return float("nan")
    return metrics.get(cfg.optimized_metric)


def record_job_failure(out_dir: Path, err: BaseException, message: str | None = None) -> str:
    """A failed sweep job's `error.txt`: its one-line message, then the traceback. Returns the message.

    The one record of a failure, whoever catches it (`main`, or the batched launcher for an error that
    escaped `main`); `FailedJobsCallback` reads its first line."""
    message = message or f"error: {type(err).__name__}: {err}"
    write_atomic(out_dir / "error.txt", message + "\n\n" + "".join(traceback.format_exception(err)))
    return message


if __name__ == "__main__":
    main()
