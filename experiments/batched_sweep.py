"""The default multirun launcher: jobs that differ only in sampling parameters share one batched generation.

    python -m experiments.run -m sweep=top_p                       batched (hydra/launcher=batched, the default)
    python -m experiments.run -m sweep=top_p hydra/launcher=basic  one generation per job, as before

Hydra's basic launcher runs a sweep's jobs one after another, and each job prefills every prompt again for
its own decoding configuration. This launcher composes every job's config first, then groups the jobs
whose configs are equal except the sampling parameters `decoding.generate_sweep` can vary per row
(`decoding.processors.rows.ROW_PARAMETERS`: do_sample, temperature, top_k, top_p, min_p, top_h, guidance_scale,
watermarking_config) and `decoding.name`. When the first job of a group comes up, the group's generation runs once, all its
configurations in one batch (`experiments.generation.generate_continuations_sweep`), and each job's
`GenerationRun` is left in the process (`experiments.generation.stash_precomputed`, keyed by the job's
config fingerprint). Then every job runs exactly as under the basic launcher (`run_job` -> `main` ->
`run`): `run` finds its precomputed generation instead of generating, and writes its own folder,
config.yaml, samples.jsonl, metrics.json and W&B run. The samples are those of the job run alone (the
tests compare both launchers); the speed numbers are the job's share of the shared batches
(`GenerationRun`).

`task=lm_eval` jobs (lm-eval tasks, no generation) are grouped the same way; their group's shared step is one
evaluation of the tasks for all configurations through `SweepDecodelabLM` (`experiments.lm_eval_batched`:
every generation batch decoded once for all, every log-likelihood scored once), each job's `simple_evaluate`
result stashed the same way; the job's run writes its metrics.json, lm-eval samples and W&B run as alone.

Not batched, run as under the basic launcher: jobs already finished (resume), jobs that neither generate nor
run lm-eval tasks, beam search, speculative decoding (a proposer or a draft), the strategies with a decode loop
of their own (contrastive search, DoLa, contrastive decoding, MBR: `decoding.sweep.own_loop_strategy`), jobs
whose config is invalid (they fail in their own run, with error.txt), and groups of one.
If a group's shared generation fails, whatever the error, its jobs run one by one and each fails or succeeds
on its own (`BatchedLauncher._generate`). A job whose own run raises an unexpected error fails alone, with
its traceback in its error.txt (`confine_failure`); the sweep goes on and exits non-zero at the end.

Hydra instantiates launchers only from the `hydra_plugins` namespace: `hydra_plugins/decodelab_launcher`
names this class there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.faults import failpoint
from experiments.job_lock import JobLock

log = logging.getLogger(__name__)


@dataclass
class Job:
    index: int  # Hydra's job number (hydra.job.num)
    overrides: list[str]
    config: DictConfig  # as BasicLauncher composes it (hydra node included)
    fingerprint: str = ""
    finished: bool = False  # its metrics.json holds this config's results already (resume)


@dataclass
class Group:
    """Jobs that share one batched generation: `jobs[i]` is one distinct configuration each."""

    jobs: list[Job] = field(default_factory=list)
    generated: bool = False


def batch_key(cfg: DictConfig) -> str | None:
    """Jobs whose configs give the same key can share one batched generation; None: run this one alone.

    The key is the fingerprinted config without the sampling parameters a shared batch varies per row
    and without `decoding.name`.
    """
    return _checked_batch_key(cfg)[0]


def _checked_batch_key(cfg: DictConfig):
    """(batch key or None, the decoding parameters the config check resolved, or None): one check per config."""
    from decoding.processors.rows import ROW_PARAMETERS
    from decoding.sweep import own_loop_strategy
    from experiments.run import NOT_IN_FINGERPRINT, check_config, plain

    if not cfg.task.generate and not cfg.task.get("lm_eval"):
        return None, None
    try:
        params = check_config(cfg)
    except ValueError:
        return None, None  # the job's own run reports it
    if params.is_beam or params.num_beam_groups > 1 or params.is_speculative or own_loop_strategy(params):
        return None, params  # generate_sweep runs none of these
    data = plain(cfg, NOT_IN_FINGERPRINT)
    for name in ("name", *ROW_PARAMETERS):
        data["decoding"].pop(name, None)
    return json.dumps(data, sort_keys=True, default=str), params


def group_jobs(configs: Sequence[DictConfig], max_configurations: int | None = None) -> list[list[int]]:
    """Indices of the configs that can share a batched generation, in groups of at least two.

    Configs left out run alone. A config equal to an earlier one (same fingerprint) is left out of the
    groups: it reuses that one's generation. A group larger than `max_configurations` is cut into nearly
    equal parts.
    """
    from decoding.sweep import check_batchable
    from experiments.run import fingerprint
    from experiments.validate import check_max_configurations

    check_max_configurations(max_configurations)
    by_key: dict[str, list[int]] = defaultdict(list)
    params = {}  # config index -> its checked decoding parameters
    seen: set[str] = set()
    for i, cfg in enumerate(configs):
        key, params[i] = _checked_batch_key(cfg)
        fp = fingerprint(cfg)
        if key is None or fp in seen:
            continue
        seen.add(fp)
        by_key[key].append(i)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        try:  # equal configs but for the row parameters should always pass; checked, not assumed
            check_batchable([params[i] for i in members])
        except ValueError as err:
            log.warning(f"jobs {members} are not batched: {err}")
            continue
        parts = 1 if not max_configurations else math.ceil(len(members) / max_configurations)
        size = math.ceil(len(members) / parts)
        groups.extend(part for part in (members[k:k + size] for k in range(0, len(members), size)) if len(part) > 1)
    return groups


def confine_failure(ret: JobReturn) -> JobReturn:
    """A job whose run raised an error `main` does not catch fails alone, as one with an expected error does.

    Its message and traceback go to its folder's error.txt, its result becomes NaN, and the sweep goes on;
    `FailedJobsCallback` lists it and makes the sweep exit non-zero at the end. Left FAILED, Hydra's sweeper
    would re-raise the error after the last job and end the multirun with a traceback and no error.txt.
    """
    from experiments.run import record_job_failure

    if ret.status != JobStatus.FAILED:
        return ret
    err = ret._return_value  # the property re-raises it
    out_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    print(record_job_failure(out_dir, err), file=sys.stderr)
    ret.status = JobStatus.COMPLETED
    ret.return_value = float("nan")
    return ret


class BatchedLauncher(BasicLauncher):
    """BasicLauncher with one shared generation per group of jobs; the groups (and the jobs that run alone) run
    in this process, or as Slurm / submitit / Ray tasks (`executor`, experiments/sweep_executors.py)."""

    def __init__(self, max_configurations: int | None = 16, executor: str = "local", slurm: Any = None,
                 ray: Any = None) -> None:
        from experiments.sweep_executors import EXECUTORS, plain_options
        from experiments.validate import check_max_configurations

        super().__init__()
        self.max_configurations = check_max_configurations(max_configurations)  # ConfigError naming the key
        if executor not in EXECUTORS:  # the config check said so before; a launcher made by hand is checked too
            raise ValueError(f"hydra.launcher.executor={executor!r} is not an executor: use one of {EXECUTORS}")
        self.executor = executor
        self.slurm, self.ray = plain_options(slurm), plain_options(ray)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        where = "locally" if self.executor == "local" else f"through {self.executor}"
        log.info(f"Launching {len(job_overrides)} jobs {where}")
        jobs = [self._compose(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        groups = self._groups(jobs)
        if self.executor == "local":
            return self._run_jobs(jobs, groups)
        return self._launch_units(jobs, groups)

    def _groups(self, jobs: list[Job]) -> list[Group]:
        from experiments.generation import load_shared

        # A job whose folder holds its part of an earlier shared generation (a sweep that died) reuses that.
        pending = [job for job in jobs if not job.finished
                   and load_shared(Path(str(job.config.hydra.runtime.output_dir)), job.fingerprint) is None]
        indices = group_jobs([job.config for job in pending], self.max_configurations)
        return [Group([pending[i] for i in members]) for members in indices]

    def _run_jobs(self, jobs: list[Job], groups: list[Group]) -> list[JobReturn]:
        """Every job in order, in this process; a group's generation runs when its first job comes up."""
        from experiments.generation import drop_precomputed

        group_of = {job.fingerprint: group for group in groups for job in group.jobs}
        remaining = Counter(job.fingerprint for job in jobs)
        held: dict[int, JobLock] = {}  # job index -> its folder's lock, taken for its group's generation
        runs: list[JobReturn] = []
        for job in jobs:
            if runs:
                failpoint("between_jobs")
            log.info(f"\t#{job.index} : {' '.join(filter_overrides(job.overrides))}")
            group = None if job.finished else group_of.get(job.fingerprint)
            if group is not None and not group.generated:
                held.update(self._generate(group))
            try:
                runs.append(confine_failure(run_job(hydra_context=self.hydra_context,
                                                    task_function=self.task_function, config=job.config,
                                                    job_dir_key="hydra.sweep.dir",
                                                    job_subdir_key="hydra.sweep.subdir")))
            finally:
                if job.index in held:  # its run locked the folder again (re-entrant) and is done with it
                    held.pop(job.index).release()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            remaining[job.fingerprint] -= 1
            if remaining[job.fingerprint] == 0:  # no later job has this config: free its samples
                drop_precomputed(job.fingerprint)
        return runs

    def _launch_units(self, jobs: list[Job], groups: list[Group]) -> list[JobReturn]:
        """One task per unit (a group with the later jobs of its configs, or a job alone); finished jobs are
        read here (resume), as locally."""
        from experiments.sweep_executors import run_units

        units: list[list[Job]] = [list(group.jobs) for group in groups]
        unit_of = {job.fingerprint: unit for unit in units for job in unit}
        grouped = {job.index for unit in units for job in unit}
        for job in jobs:
            if job.finished or job.index in grouped:
                continue
            if job.fingerprint in unit_of:
                unit_of[job.fingerprint].append(job)  # the same config again: it reuses that unit's generation
            else:
                unit_of[job.fingerprint] = [job]
                units.append(unit_of[job.fingerprint])
        units = [sorted(unit, key=lambda job: job.index) for unit in units]
        log.info(f"{len(units)} task(s): " + "; ".join(",".join(f"#{job.index}" for job in unit) for unit in units))
        by_index = {run.hydra_cfg.hydra.job.num: run for run in self._run_jobs([j for j in jobs if j.finished], [])}
        work = [[(job.index, job.overrides) for job in unit] for unit in units]
        composed = {job.index: job for job in jobs}
        for unit_runs in run_units(self, work, lambda unit, why: self._lost([composed[i] for i, _ in unit], why)):
            by_index.update((run.hydra_cfg.hydra.job.num, run) for run in unit_runs)
        return [by_index[job.index] for job in jobs]

    def run_unit(self, unit: list[tuple[int, list[str]]]) -> list[JobReturn]:
        """A unit's jobs, in a task's process: composed and grouped here as the sweep process would."""
        jobs = [self._compose(index, list(overrides)) for index, overrides in unit]
        return self._run_jobs(jobs, self._groups(jobs))

    def _lost(self, unit: list[Job], why: str) -> list[JobReturn]:
        """The JobReturns of a unit whose task died: error.txt for each job without a result (as a job that
        failed alone), so that the sweep lists them and exits non-zero; a rerun of the command redoes them."""
        from experiments.run import finished_metrics, record_job_failure

        runs = []
        for job in unit:
            out_dir = Path(str(job.config.hydra.runtime.output_dir))
            if finished_metrics(out_dir, expected=job.fingerprint, announce=False) is None:
                out_dir.mkdir(parents=True, exist_ok=True)
                print(record_job_failure(out_dir, RuntimeError(why), f"error: {why}"), file=sys.stderr)
            run = JobReturn(overrides=list(job.overrides), cfg=job.config, hydra_cfg=job.config,
                            working_dir=str(out_dir), task_name=str(job.config.hydra.job.name), status=JobStatus.COMPLETED)
            run.return_value = float("nan")
            runs.append(run)
        return runs

    def _compose(self, index: int, overrides: list[str]) -> Job:
        """The job's config as BasicLauncher composes it, with its output folder set as `run_job` sets it."""
        from experiments.run import finished_metrics, fingerprint

        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = index
            config.hydra.job.num = index
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # resolves ${hydra:...} in the job's own config
        try:
            output_dir = os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")),
                                      str(OmegaConf.select(config, "hydra.sweep.subdir")))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = os.path.abspath(output_dir)
            job = Job(index, overrides, config, fingerprint(config))
            # Only reads: a broken or foreign result is reported and moved aside by the job's own run, which
            # judges its folder holding the folder's lock (experiments/jobs.py); here it just is not finished.
            job.finished = bool(config.resume) and finished_metrics(
                Path(output_dir), expected=job.fingerprint, announce=False) is not None
        finally:
            if previous is not None:
                HydraConfig.instance().set_config(previous)
        return job

    def _claim(self, group: Group) -> dict[int, JobLock]:
        """Lock the folders of the group's jobs for their shared generation: {job index: lock}.

        A job another process is working on (a second sweep into the same folders) is left out: its own run
        waits for that process and reads its result. So is one that finished since it was composed.
        """
        from experiments.jobs import read_finished, try_lock

        claimed = {}
        for job in group.jobs:
            out_dir = Path(str(job.config.hydra.runtime.output_dir))
            lock = try_lock(out_dir)
            if lock is None:
                log.info(f"#{job.index}: another process works in {out_dir}; left out of the batched generation")
            elif job.config.resume and read_finished(out_dir, job.fingerprint) is not None:
                lock.release()
            else:
                claimed[job.index] = lock
        return claimed

    def _generate(self, group: Group) -> dict[int, JobLock]:
        """The group's one batched generation; each job's GenerationRun is stashed under its fingerprint (for
        task=lm_eval jobs: one shared evaluation, each job's `experiments.lm_eval_batched.SharedEvaluation`).

        Returns the locks taken on the jobs' folders (`_claim`), held until each job's run is done, so that a
        concurrent identical sweep does not generate them again; only the claimed jobs are generated, and
        if fewer than two are left, none (each then generates alone in its run).

        If it fails, whatever the error, nothing is stashed and the group's jobs generate one by one in their
        own runs: an error that only the shared batch meets (out of memory at C x batch_size rows, a float16
        overflow in one configuration's rows) then costs nothing but time, and one that every job meets
        (a model bug) fails each job on its own, with its own error.txt. Unexpected errors are logged with
        their traceback.
        """
        from experiments.generation import GenerationRun, generate_continuations_sweep, save_shared, stash_precomputed
        from experiments.lm_eval_batched import evaluate_shared, shares_evaluation
        from experiments.run import (EXPECTED_ERRORS, decoding_params, generation_options, load_inputs,
                                     prompt_pairs, quiet_third_party_loggers)

        group.generated = True
        locks = self._claim(group)
        members = [job for job in group.jobs if job.index in locks]
        if len(members) < 2:
            return locks
        names = ", ".join(f"#{job.index}" for job in members)
        first = members[0].config
        what = "shared lm-eval evaluation" if shares_evaluation(first) else "batched generation"
        log.info(f"{what} for jobs {names} ({len(members)} configurations)")
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(first)
        try:
            quiet_third_party_loggers()
            documents, model, tokenizer = load_inputs(first)
            if shares_evaluation(first):  # task=lm_eval: each job's simple_evaluate result
                runs = evaluate_shared([job.config for job in members], model, tokenizer)
            else:
                pairs = prompt_pairs(first, documents, tokenizer)
                runs = generate_continuations_sweep(model, tokenizer, pairs,
                                                    [decoding_params(job.config) for job in members],
                                                    **generation_options(first))
        except Exception as err:  # any failure: the jobs run alone, and each one fails or succeeds on its own
            log.warning(f"{what} for jobs {names} failed ({type(err).__name__}: {err}); "
                        "running them one by one", exc_info=not isinstance(err, EXPECTED_ERRORS))
            return locks
        finally:
            if previous is not None:
                HydraConfig.instance().set_config(previous)
        for job, run in zip(members, runs):
            stash_precomputed(job.fingerprint, run)
            if isinstance(run, GenerationRun):  # a generation (not a shared lm-eval evaluation): also on disk
                save_shared(Path(str(job.config.hydra.runtime.output_dir)), job.fingerprint, run)
        return locks

