"""The runner's `task=lm_eval`: lm-evaluation-harness tasks through DecodelabLM, into metrics.json and W&B.

    python -m experiments.run task=lm_eval eval.tasks=[arithmetic_add] eval.limit=50 decoding=min_p
    python -m experiments.run -m task=lm_eval decoding=temperature decoding.temperature=0.5,1.0,1.5

The run's decoding config is the run's side of `experiments.lm_eval_gen_kwargs` (the run wins over each
task's gen_kwargs) without `max_new_tokens`: a task's answers have the task's own length (`max_gen_toks`).

Keys written (README "Experiments" table): `task/<task>/<metric>` and `task/<task>/<metric>_stderr` (lm-eval's
numbers; a filter other than `none` / `first` is named after a colon, `exact_match:strict-match`), each with a
seeded percentile bootstrap over the task's documents (`/ci95_low`, `/ci95_high`; `eval.bootstrap_resamples`
draws), and with `eval.repeats=k > 1` on tasks that ship an `all` filter: `task/<task>/pass@<j>` (unbiased,
Chen et al. 2021) for j in 1, k and `task/<task>/maj@<k>` (lm-eval's majority vote filter `maj`).
lm-eval's per-sample logs go to `lm_eval_samples/<task>.jsonl` in the run folder.

Checked before any work (`check_eval_config`: values; `check_eval_inputs`: task names, network, gen_kwargs):
an unknown task, a hub task while the hub is unreachable, `repeats < 1`, a task's gen_kwargs that conflict
with the run's beam search: one line, nothing written.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.config_checks import ConfigError, check_bool, check_int, check_keys, show
from experiments.lm_eval_stats import bootstrap_ci95, pass_at_k

LOCAL_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
EVAL_KEYS = ("tasks", "num_fewshot", "limit", "repeats", "include_path", "apply_chat_template", "batch_size",
             "bootstrap_resamples")
PRIMARY_FILTERS = ("none", "first")


def eval_tasks(cfg: DictConfig) -> list[str]:
    tasks = cfg.eval.tasks
    return [tasks] if isinstance(tasks, str) else list(tasks)


def include_paths(cfg: DictConfig) -> list[str]:
    """decodelab's local task folder first, then the user's (`eval.include_path`: a folder or a list)."""
    extra = cfg.eval.include_path
    extra = [] if extra is None else [extra] if isinstance(extra, str) else list(extra)
    return [str(LOCAL_TASKS), *[str(Path(p).expanduser()) for p in extra]]


def run_decoding(cfg: DictConfig) -> dict[str, Any]:
    """The run's decoding parameters for lm-eval tasks: without `name` and `max_new_tokens` (the task's length)."""
    params = OmegaConf.to_container(cfg.decoding, resolve=True)
    params.pop("name", None)
    params.pop("max_new_tokens", None)
    return params


def check_eval_config(cfg: DictConfig) -> None:
    """The `eval.*` values (types and ranges); no file is read."""
    node = cfg.eval
    check_keys(node, "eval", EVAL_KEYS)
    tasks = node.tasks
    if not (isinstance(tasks, str) and tasks.strip()) and not (
            isinstance(tasks, (ListConfig, list)) and tasks and all(isinstance(t, str) and t.strip() for t in tasks)):
        raise ConfigError(f"{show('eval.tasks', tasks)} is not allowed: use a task name or a non-empty list of "
                          f"them, e.g. eval.tasks=[sotu_next_sentence,arithmetic_add]", "eval.tasks")
    check_int(node, "num_fewshot", 0, none="null for each task's own", path="eval")
    check_int(node, "limit", 1, none="null for every document", path="eval")
    check_int(node, "repeats", 1, none="null for each task's own", path="eval")
    check_int(node, "batch_size", 1, path="eval")
    check_int(node, "bootstrap_resamples", 0, path="eval")
    check_bool(node, "apply_chat_template", path="eval")
    paths = node.include_path
    for path in [] if paths is None else [paths] if isinstance(paths, str) else list(paths):
        if not isinstance(path, str) or not Path(path).expanduser().is_dir():
            raise ConfigError(f"{show('eval.include_path', path)} is not a folder: use a folder of lm-eval task "
                              f"YAMLs (or null)", "eval.include_path")


def task_manager(cfg: DictConfig):
    """lm-eval's TaskManager over our folders; lm-eval's own 200+ task folders are indexed (seconds) only
    when a task asked for is not in ours."""
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=include_paths(cfg), include_defaults=False)
    if all(name in local.task_index for name in eval_tasks(cfg)):
        return local
    return TaskManager(include_path=include_paths(cfg))


def _needs_hub(entry_cfg: dict[str, Any]) -> str | None:
    """The hub dataset a task reads (None for local data: a custom_dataset function or a local folder)."""
    if entry_cfg.get("custom_dataset") is not None:
        return None
    path = entry_cfg.get("dataset_path")
    if not path or Path(str(path)).expanduser().exists() or str(path) in ("json", "csv", "parquet", "text"):
        return None
    return str(path)


def _in_datasets_cache(name: str) -> bool:
    import os

    root = Path(os.environ.get("HF_DATASETS_CACHE", Path.home() / ".cache" / "huggingface" / "datasets"))
    return (root / name.replace("/", "___")).is_dir()


def _leaf_entries(name: str, index: dict, depth: int = 0) -> list[tuple[str, Any]]:
    """(task name, index entry) of every task a name stands for: itself, or a group's / tag's members."""
    entry = index.get(name)
    if entry is None or depth > 8:
        return []
    kind = getattr(entry.kind, "name", str(entry.kind))
    if kind == "GROUP":
        members = (entry.cfg or {}).get("task") or []
        members = [m if isinstance(m, str) else m.get("task") for m in members]
    elif kind == "TAG":
        members = sorted(entry.tags)
    else:
        return [(name, entry)]
    return [leaf for member in members if isinstance(member, str) for leaf in _leaf_entries(member, index, depth + 1)]


def check_eval_inputs(cfg: DictConfig, manager=None) -> None:
    """Task names known, data reachable, each task's gen_kwargs compatible with the run (before any work)."""
    from experiments.data import hub_reachable
    from experiments.lm_eval_gen_kwargs import merge_gen_kwargs

    manager = manager or task_manager(cfg)
    index = manager.task_index
    run = run_decoding(cfg)
    online = None
    for name in eval_tasks(cfg):
        entry = index.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"eval.tasks: {name!r} is not an lm-eval task{hint}; decodelab's offline tasks: "
                              f"{', '.join(sorted(p.stem for p in LOCAL_TASKS.glob('*.yaml')))}", "eval.tasks")
        for leaf, leaf_entry in _leaf_entries(name, index):
            entry_cfg = leaf_entry.cfg or {}
            hub = _needs_hub(entry_cfg)
            if hub is not None and not _in_datasets_cache(hub):
                online = hub_reachable() if online is None else online
                if not online:
                    via = "" if leaf == name else f" (in {name!r})"
                    raise ConnectionError(f"eval.tasks: {leaf!r}{via} needs the hub dataset {hub!r}, and the hub is "
                                          f"unreachable (no network, or HF_HUB_OFFLINE is set) and it is not in the "
                                          f"local cache; run it with network, or use an offline task "
                                          f"(sotu_next_sentence, sotu_last_word, arithmetic_add)")
            gen_kwargs = entry_cfg.get("generation_kwargs")
            if entry_cfg.get("output_type") == "generate_until" and isinstance(gen_kwargs, dict):
                try:
                    merge_gen_kwargs(gen_kwargs, run, None, task_name=leaf)
                except ValueError as err:
                    raise ConfigError(f"eval.tasks: {err}", "eval.tasks") from None


def _task_specs(cfg: DictConfig, manager) -> list[Any]:
    """Task names, or the loaded Task objects with `repeats` set when `eval.repeats` is."""
    repeats = cfg.eval.repeats
    if repeats is None:
        return eval_tasks(cfg)
    tasks = list(manager.load(eval_tasks(cfg))["tasks"].values())
    for task in tasks:
        task.set_config("repeats", int(repeats))
    return tasks


def metric_key(task: str, metric: str, filter_name: str) -> str:
    base = metric if filter_name in PRIMARY_FILTERS else f"{metric}:{filter_name}"
    return f"task/{task}/{base}"


def _per_doc_values(samples: list[dict], metric: str) -> list[float]:
    return [float(s[metric]) for s in samples if isinstance(s.get(metric), (int, float, bool))]


def _pass_counts(samples: list[dict]) -> list[tuple[int, int]]:
    """(draws n, correct c) per document from the `all` filter's responses: equal to the target after strip
    and lower-casing (the local tasks' exact match; a hub task's own metric options are not applied)."""
    counts = []
    for sample in samples:
        target = str(sample["target"]).strip().lower()
        answers = sample["filtered_resps"]
        answers = answers[0] if answers and isinstance(answers[0], list) else answers
        counts.append((len(answers), sum(str(a).strip().lower() == target for a in answers)))
    return counts


def task_metrics(results: dict[str, Any], samples: dict[str, list[dict]], repeats: int | None, seed: int,
                 resamples: int) -> dict[str, Any]:
    """Flat `task/...` metrics from simple_evaluate's results and samples (see the module docstring)."""
    out: dict[str, Any] = {}
    for task, values in results.items():
        task_samples = samples.get(task, [])
        by_filter: dict[str, list[dict]] = {}
        for sample in task_samples:
            by_filter.setdefault(sample.get("filter", "none"), []).append(sample)
        for name, value in values.items():
            if "," not in name or not isinstance(value, (int, float)):
                continue
            metric, filter_name = name.split(",", 1)
            if filter_name == "all" or (filter_name == "maj" and not (repeats and repeats > 1)):
                continue  # `all` only feeds pass@k; `maj` over one draw is `first`
            stderr = metric.endswith("_stderr")
            metric = metric[: -len("_stderr")] if stderr else metric
            key = f"task/{task}/maj@{repeats}" if filter_name == "maj" else metric_key(task, metric, filter_name)
            if stderr:
                out[f"{key}_stderr"] = float(value)
                continue
            out[key] = float(value)
            per_doc = _per_doc_values(by_filter.get(filter_name, []), metric)
            if per_doc and resamples > 0:
                out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = bootstrap_ci95(per_doc, resamples, seed)
        if repeats and repeats > 1 and "all" in by_filter:
            counts = _pass_counts(by_filter["all"])
            for k in sorted({1, repeats}):
                per_doc = [pass_at_k(n, c, k) for n, c in counts]
                key = f"task/{task}/pass@{k}"
                out[key] = sum(per_doc) / len(per_doc)
                if resamples > 0:
                    out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = bootstrap_ci95(per_doc, resamples, seed)
    if resamples > 0:
        out["meta/bootstrap"] = {"resamples": resamples, "seed": seed, "unit": "documents", "interval": "percentile 95%"}
    return out


def write_samples(out_dir: Path, samples: dict[str, list[dict]]) -> None:
    from experiments.logging import write_jsonl

    for task, rows in samples.items():
        write_jsonl(out_dir / "lm_eval_samples" / f"{task}.jsonl",
                    [json.loads(json.dumps(row, default=str)) for row in rows])


def logger_rows(samples: dict[str, list[dict]], limit: int = 100) -> list[dict]:
    """A few samples in the runner's table shape (prompt, continuation, human, finish_reason)."""
    rows = []
    for task, task_samples in samples.items():
        for sample in task_samples[:limit]:
            if sample.get("filter", "none") not in PRIMARY_FILTERS:
                continue
            args = sample.get("arguments") or [[""]]
            resps = sample.get("resps") or [[""]]
            rows.append({"prompt": f"[{task}] {args[0][0]}", "continuation": str(resps[0][0]),
                         "human": str(sample.get("target")), "finish_reason": ""})
    return rows[:limit]


def evaluate_tasks(cfg: DictConfig, lm, manager) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` of the configured tasks with `lm` (a DecodelabLM, or one configuration of a
    SweepDecodelabLM), seeded by the run's seed, samples logged."""
    import lm_eval

    return lm_eval.simple_evaluate(
        model=lm, tasks=_task_specs(cfg, manager), num_fewshot=cfg.eval.num_fewshot, limit=cfg.eval.limit,
        task_manager=manager, log_samples=True, apply_chat_template=cfg.eval.apply_chat_template,
        bootstrap_iters=cfg.eval.bootstrap_resamples, random_seed=cfg.seed, numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)


def lm_eval_metrics(cfg: DictConfig, model, tokenizer, out_dir: Path,
                    precomputed: Any = None) -> tuple[dict[str, Any], list[dict]]:
    """Run the configured tasks on the loaded model; (metrics, rows for the logger's sample table).

    `precomputed`: what the batched launcher evaluated for this config in a shared evaluation
    (`experiments.lm_eval_batched.SharedEvaluation`), used instead of evaluating; anything else is ignored."""
    from experiments.lm_eval_batched import SharedEvaluation
    from experiments.lm_eval_model import DecodelabLM

    manager = task_manager(cfg)
    check_eval_inputs(cfg, manager)
    if isinstance(precomputed, SharedEvaluation):
        results, records = precomputed.results, precomputed.generation_records
    else:
        lm = DecodelabLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.eval.batch_size, seed=cfg.seed,
                         cache=cfg.cache.setting, **run_decoding(cfg))
        results = evaluate_tasks(cfg, lm, manager)
        records = lm.get_model_info()["decodelab_generation"]
    samples = results.get("samples", {})
    write_samples(out_dir, samples)
    metrics = task_metrics(results["results"], samples, cfg.eval.repeats, cfg.seed, cfg.eval.bootstrap_resamples)
    metrics["meta/lm_eval_generation"] = records
    return metrics, logger_rows(samples)
