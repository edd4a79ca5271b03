"""A task's `gen_kwargs` under the run's decoding config: lm-eval's conventions to `decoding.generate`'s.

lm-evaluation-harness gives every generation request a `gen_kwargs` dict written by the task
(`until`, `max_gen_toks`, `do_sample`, `temperature`, ...), in its own conventions: `temperature=0.0`
means greedy, lengths are `max_gen_toks` (or an alias), stop strings are `until`. decodelab's run has
its own decoding config (GenerationConfig names). The rule, recorded for every distinct merge:

- The task's kwargs are normalised as lm-eval's backends normalise them (`normalize_gen_kwargs`, the
  EOS text joins the stop strings as in `handle_stop_sequences`), then renamed: `max_gen_toks ->
  max_new_tokens`, `until -> stop_strings`, `temperature=0.0 -> do_sample=False`.
- The run's keys win over the task's (a temperature sweep samples even where the task asked for
  greedy). What the run replaced is recorded as `overridden`.
- When the merged config does not sample, the task's sampling-only keys (temperature, top_p, ...) are
  dropped (recorded as `dropped`): generate would ignore them with a warning.
- Refused, before any forward pass: a task asking for sampling while the run is beam search (the task
  is scored on samples; beam search or beam *sampling* in their place would be another method, silently),
  and any `num_return_sequences` in a task (repeats are lm-eval's `repeats`, drawn from one prefill).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

# Keys that only matter when sampling: dropped from the task's side when the merged config is greedy/beam.
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")


@dataclass
class MergedGeneration:
    """One distinct (task gen_kwargs, run config) merge: what `decoding.generate` gets, and why."""

    task: dict[str, Any]
    run: dict[str, Any]
    params: dict[str, Any]
    stop_strings: list[str]
    overridden: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def samples(self) -> bool:
        return bool(self.params.get("do_sample"))

    def record(self) -> dict[str, Any]:
        """JSON-ready: the task's kwargs as given, the run's, what was used, what the run replaced or dropped."""
        return {"task_gen_kwargs": self.task, "run_decoding": self.run,
                "effective": {**self.params, "stop_strings": self.stop_strings},
                "overridden_by_run": self.overridden, "dropped": self.dropped}


def gen_kwargs_key(gen_kwargs: dict[str, Any]) -> str:
    """A stable, hashable name for a task's gen_kwargs (requests with equal keys share batches)."""
    return json.dumps(gen_kwargs, sort_keys=True, default=str)


def task_params(gen_kwargs: dict[str, Any], eos_text: str | None,
                default_max_gen_toks: int) -> tuple[dict[str, Any], list[str]]:
    """The task's gen_kwargs in decoding.generate's names, and its stop strings (EOS text included)."""
    if not isinstance(gen_kwargs, dict):
        raise ValueError(f"gen_kwargs={gen_kwargs!r} must be a dict (lm-eval's generation arguments)")
    if "num_return_sequences" in gen_kwargs:
        raise ValueError(f"gen_kwargs num_return_sequences={gen_kwargs['num_return_sequences']!r} is not "
                         f"allowed in a task: use the task's `repeats` (eval.repeats), drawn from one prefill")
    kwargs = normalize_gen_kwargs(dict(gen_kwargs), default_max_gen_toks)
    stops = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
    params = {"max_new_tokens": int(kwargs.pop("max_gen_toks")), **kwargs}
    if not params.get("do_sample") and float(params.get("temperature", 0.0)) == 0.0:
        params["do_sample"] = False
        params.pop("temperature", None)
    return params, [s for s in stops if s]


def merge_gen_kwargs(gen_kwargs: dict[str, Any], run: dict[str, Any], eos_text: str | None,
                     default_max_gen_toks: int = 256, task_name: str | None = None) -> MergedGeneration:
    """Merge a task's gen_kwargs under the run's decoding config (the run wins; see the module docstring).

    Args:
        gen_kwargs: the request's generation arguments, as the task wrote them.
        run: the run's decoding parameters (GenerationConfig names); may be empty.
        eos_text: the tokenizer's EOS token as text (joins the stop strings, as in lm-eval's HFLM).
        default_max_gen_toks: the length when the task gives none.
        task_name: named in errors.
    Returns:
        The merge, with what `decoding.generate` gets in `params` and `stop_strings`.
    """
    where = f"task {task_name!r}: " if task_name else ""
    if "stop_strings" in run:
        raise ValueError(f"{where}decoding.stop_strings={run['stop_strings']!r} is not allowed with lm-eval tasks: "
                         f"the task's `until` gives the stop strings")
    params, stops = task_params(gen_kwargs, eos_text, default_max_gen_toks)
    beams = int(run.get("num_beams", params.get("num_beams", 1)) or 1)
    if beams > 1 and params.get("do_sample"):
        raise ValueError(f"{where}gen_kwargs do_sample=True (temperature={params.get('temperature')}) conflicts with "
                         f"the run's beam search (num_beams={beams}): the task is scored on samples; run it with a "
                         f"sampling or greedy decoding, or beam search on a task that decodes greedily")
    overridden = sorted(k for k in run if k in params and params[k] != run[k])
    merged = {**params, **run}
    dropped = []
    if not merged.get("do_sample"):
        dropped = sorted(k for k in SAMPLING_ONLY if k in params and k not in run)
        for key in dropped:
            merged.pop(key)
    return MergedGeneration(task=dict(gen_kwargs), run=dict(run), params=merged, stop_strings=stops,
                            overridden=overridden, dropped=dropped)
