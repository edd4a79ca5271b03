"""Where a batched sweep's units run: in the launching process (`local`), as Slurm array tasks (`slurm`, through
submitit), as submitit's local processes (`submitit_local`: the Slurm path without Slurm), or as Ray tasks (`ray`).

    python -m experiments.run -m sweep=top_p hydra.launcher.executor=slurm hydra.launcher.slurm.partition=gpu
    python -m experiments.run -m sweep=top_p hydra.launcher.executor=ray hydra.launcher.ray.address=auto

A *unit* is what has to run in one process: a group of jobs that share one batched generation (with any later
job of the same config, which reuses it), or one job alone. Each unit becomes one Slurm array task or one Ray
task; in it, the launcher's own code runs (`BatchedLauncher.run_unit`): the group's generation once, then every
job exactly as locally, writing its own folder, config.yaml, samples.jsonl, metrics.json and W&B run. So the
executors differ only in where a unit's process lives, and the same sweep gives the same samples everywhere.

Failures: a job that raises fails alone inside its unit (error.txt, as locally). A unit whose process dies
(a preempted or `scancel`ed array task, a killed Ray worker, a Slurm time limit) cannot say so itself: the
launcher writes error.txt for each of its jobs that has no result, the other units go on, and the sweep exits
non-zero with the list (`experiments.run.FailedJobsCallback`). Rerunning the same command resumes: finished jobs
are skipped, and a group with some finished jobs regenerates only the others (the launcher composes pending
jobs only).

The options and their defaults are in conf/hydra/launcher/batched.yaml; they are checked before anything is
written (`check_executor`, called from experiments/validate.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from experiments.config_checks import ConfigError, check_int, check_keys, show

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "submitit_local", "ray")
SLURM_KEYS = {"timeout_min", "partition", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism",
              "additional_parameters", "folder"}
RAY_KEYS = {"address", "num_cpus", "num_gpus"}
FORWARDED_ENV = ("DECODELAB_", "WANDB_", "HF_", "TRANSFORMERS_", "HYDRA_", "OMP_NUM_THREADS")  # to Ray tasks
RAY_PROBE_S = 5.0  # a Ray address must take a TCP connection within this (the whole check stays under 10 s)

UnitJobs = list[tuple[int, list[str]]]  # (Hydra job number, its overrides) per job of a unit


def check_executor(launcher: DictConfig) -> None:
    """hydra.launcher.executor and its options: one ConfigError naming the key, before anything is written."""
    executor = launcher.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(f"{show('hydra.launcher.executor', executor)} is not an executor: use one of "
                          f"{', '.join(EXECUTORS)}", "hydra.launcher.executor")
    slurm = launcher.get("slurm") or {}
    ray = launcher.get("ray") or {}
    _check_keys(slurm, "hydra.launcher.slurm", SLURM_KEYS)
    _check_keys(ray, "hydra.launcher.ray", RAY_KEYS)
    for key, minimum in (("timeout_min", 1), ("cpus_per_task", 1), ("array_parallelism", 1), ("gpus_per_node", 0)):
        check_int(slurm, key, minimum, none="null (the default)", path="hydra.launcher.slurm")
    _check_number(slurm.get("mem_gb"), "hydra.launcher.slurm.mem_gb", minimum=0)
    _check_number(ray.get("num_cpus"), "hydra.launcher.ray.num_cpus", minimum=0)
    _check_number(ray.get("num_gpus"), "hydra.launcher.ray.num_gpus", minimum=0)
    extra = slurm.get("additional_parameters")
    if extra is not None and not isinstance(extra, (dict, DictConfig)):
        raise ConfigError(f"{show('hydra.launcher.slurm.additional_parameters', extra)} is not allowed: use a "
                          "mapping of sbatch option -> value (e.g. {constraint: a100})",
                          "hydra.launcher.slurm.additional_parameters")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("hydra.launcher.executor=slurm needs Slurm, but `sbatch` is not on PATH: install Slurm's "
                          "client (or run on the cluster's login node), or use executor=submitit_local for the "
                          "same tasks as local processes", "hydra.launcher.executor")
    if executor == "ray":
        check_ray(ray.get("address"))


def check_ray(address: Any) -> None:
    """Ray is importable, and a given address takes a connection within RAY_PROBE_S (ray.init would wait long)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("hydra.launcher.executor=ray needs Ray: `pip install ray`", "hydra.launcher.executor")
    if address is None or address == "auto":
        return  # None: a local Ray instance for this sweep; "auto": the cluster `ray start` left on this machine
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(f"{show('hydra.launcher.ray.address', address)} is not allowed: use host:port, "
                          "ray://host:port, auto, or null (a local Ray instance)", "hydra.launcher.ray.address")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_PROBE_S).close()
    except (OSError, ValueError) as err:
        raise ConfigError(f"{show('hydra.launcher.ray.address', address)} does not answer ({err}): start the "
                          "cluster (`ray start --head`), or use null for a local Ray instance",
                          "hydra.launcher.ray.address")


def run_units(launcher: Any, units: Sequence[UnitJobs], on_lost: Callable[[UnitJobs, str], list]) -> list[list]:
    """Each unit's JobReturns, the units run by the launcher's executor; `on_lost(unit, why)` gives the ones of
    a unit whose process died."""
    executor = launcher.executor
    if executor in ("slurm", "submitit_local"):
        return _run_submitit(launcher, units, on_lost, "slurm" if executor == "slurm" else "local")
    if executor == "ray":
        return _run_ray(launcher, units, on_lost)
    raise AssertionError(executor)  # local units run in the launcher itself


def run_unit_in_worker(launcher: Any, unit: UnitJobs, singleton_state: dict, cwd: str) -> list:
    """A unit in its task's process: Hydra's globals as the sweep process had them, then the launcher's code."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    os.chdir(cwd)  # relative output paths resolve as in the sweep process
    Singleton.set_state(singleton_state)
    setup_globals()
    return launcher.run_unit(unit)


def _run_submitit(launcher: Any, units: Sequence[UnitJobs], on_lost, cluster: str) -> list[list]:
    import submitit
    from hydra.core.singleton import Singleton

    options = dict(launcher.slurm)
    folder = options.pop("folder", None) or str(Path(str(launcher.config.hydra.sweep.dir)) / ".submitit" / "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": options.get("timeout_min", 60),
                              "cpus_per_task": options.get("cpus_per_task", 1),
                              "gpus_per_node": options.get("gpus_per_node", 0),
                              "mem_gb": options.get("mem_gb", 4), "name": str(launcher.config.get("name", "sweep"))}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=options.get("array_parallelism", 256),
                      slurm_additional_parameters=dict(options.get("additional_parameters") or {}))
        if options.get("partition"):
            params["slurm_partition"] = options["partition"]
    executor.update_parameters(**params)
    state, cwd = Singleton.get_state(), os.getcwd()
    jobs = executor.map_array(run_unit_in_worker, [launcher] * len(units), list(units), [state] * len(units),
                              [cwd] * len(units))
    log.info(f"submitted {len(jobs)} {cluster} task(s): {', '.join(str(job.job_id) for job in jobs)}")
    results = []
    for unit, job in zip(units, jobs):
        try:
            results.append(job.result())
        except Exception as err:  # the task's process died: killed, preempted, out of time or memory
            results.append(on_lost(unit, f"{cluster} task {job.job_id} ended without results ({_first_line(err)})"))
    return results


def _run_ray(launcher: Any, units: Sequence[UnitJobs], on_lost) -> list[list]:
    import ray
    from hydra.core.singleton import Singleton

    options = dict(launcher.ray)
    started = not ray.is_initialized()
    if started:  # None: a local instance for this sweep, shut down after it
        try:
            ray.init(address=options.get("address"), include_dashboard=False)
        except Exception as err:  # e.g. the cluster wants an auth token this process lacks: say so in one line
            first = str(err).strip().splitlines()[-1][:400] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{show('hydra.launcher.ray.address', options.get('address'))}: Ray did not connect "
                              f"({type(err).__name__}: {first})", "hydra.launcher.ray.address") from None
    try:
        # Ray's workers belong to the cluster, not to this process: hand them the settings a run reads from the
        # environment (output root, W&B, hub caches, fail points), as Slurm's sbatch exports the submitter's
        runtime_env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}}
        task = ray.remote(run_unit_in_worker).options(num_cpus=options.get("num_cpus", 1),
                                                      num_gpus=options.get("num_gpus", 0), max_retries=0,
                                                      runtime_env=runtime_env)
        state, cwd = Singleton.get_state(), os.getcwd()
        refs = [task.remote(launcher, unit, state, cwd) for unit in units]
        where = options.get("address") or "a local instance"
        log.info(f"submitted {len(refs)} Ray task(s) to {where} (GCS {ray.get_runtime_context().gcs_address})")
        results = []
        for unit, ref in zip(units, refs):
            try:
                results.append(ray.get(ref))
            except Exception as err:  # a worker that died (killed, out of memory) or a task cancelled
                results.append(on_lost(unit, f"Ray task ended without results ({_first_line(err)})"))
        return results
    finally:
        if started:
            ray.shutdown()


def _first_line(err: BaseException) -> str:
    """`Type: first line of the message` (a task's error can carry a whole remote traceback)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _check_keys(options: Any, where: str, allowed: set[str]) -> None:
    if not isinstance(options, (dict, DictConfig)):
        raise ConfigError(f"{show(where, options)} is not allowed: use a mapping of {', '.join(sorted(allowed))}",
                          where)
    check_keys(options, where, allowed)


def _check_number(value: Any, key: str, minimum: float) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum):
        raise ConfigError(f"{show(key, value)} is not allowed: use a number >= {minimum}", key)


def plain_options(options: Any) -> dict:
    """A launcher option group as a plain dict (picklable into a task)."""
    return OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options or {})
