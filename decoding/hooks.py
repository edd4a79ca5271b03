"""What a caller can hand generate besides settings: its own processors, stopping criteria, a time limit,
a streamer, and the per-step outputs it wants back.

transformers 5 semantics, for decoder-only models (`GenerationMixin.generate` / `_sample` / `_beam_search`):

- `logits_processor=[...]`: callables `(input_ids (R, L), scores (R, V)) -> scores`, for example transformers'
  `LogitsProcessor` objects. generate merges them into its own list *before the sampling warpers*
  (temperature, top-k, ...): a user processor of exactly the type of one generate built itself takes that
  one's place, the others follow the built-in penalties and constraints (`_merge_criteria_processor_list`).
  transformers 5 no longer raises for such a duplicate; it lets the user's object win, and so do we.
- `stopping_criteria=[...]`: callables `(input_ids (R, L), scores) -> (R,) bool`, `scores` being the tuple of
  processed scores so far when `output_scores=True` and None otherwise, exactly what generate passes. A row
  they flag ends (finish reason "stopping_criteria"). Types generate builds from a parameter
  (`MaxLengthCriteria`, `MaxTimeCriteria`, `StopStringCriteria`, `EosTokenCriteria`) would replace generate's
  own and change lengths our buffers are sized for: we refuse those and name the parameter to use instead.
- `max_time`: seconds since the call started (before the prompt's forward pass, as `MaxTimeCriteria` counts
  from its creation); once exceeded after a step, every running row ends with finish reason "max_time".
- `streamer`: an object with `put(value)` and `end()`; `put` gets the prompt ids (1, T) first, then each new
  token (1,), and `end()` comes once at the end. Like transformers' text streamers we take one row only, and
  no beam search (generate refuses a streamer there too).
- `output_scores` / `output_logits`: the processed scores and the raw logits of every step, a tuple of (R, V)
  float32 tensors, R the decoded rows (B * num_return_sequences, or B * num_beams for beam search). They are
  only collected when asked for, so the default path keeps its speed.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Sequence

import torch

from .checks import check as _check
from .processors import ProcessorList

# Our processors that generate appends after merging the user's list: the sampling warpers, the watermark and
# the final renormalisation (`_get_logits_processor`). By class name, so that a new class only adds a name.
AFTER_USER = {"Temperature", "TopH", "TopK", "TopP", "MinP", "Typical", "EpsilonCutoff", "EtaCutoff",
              "RowTemperature", "RowTopK", "RowTopP", "RowMinP",  # generate_sweep's per-row warpers
              "Watermark", "WatermarkLogitsProcessor", "LogitNormalization",
              # llama.cpp's sampling-only samplers (processors/sigma.py, xtc.py, dynatemp.py, mirostat.py)
              "TopNSigma", "XTC", "DynamicTemperature", "Mirostat", "RowTopNSigma", "RowDynamicTemperature"}
# transformers' class name -> the name of our class computing the same: a user object of exactly that
# transformers type takes our processor's place, as in `_merge_criteria_processor_list`.
TWINS = {
    "RepetitionPenaltyLogitsProcessor": "RepetitionPenalty",
    "NoRepeatNGramLogitsProcessor": "NoRepeatNGram",
    "MinLengthLogitsProcessor": "MinLength",
    "MinNewTokensLengthLogitsProcessor": "MinNewTokens",
    "ForcedBOSTokenLogitsProcessor": "ForcedBOS",
    "ForcedEOSTokenLogitsProcessor": "ForcedEOS",
    "InfNanRemoveLogitsProcessor": "InfNanRemove",
    "ExponentialDecayLengthPenalty": "ExponentialDecayLengthPenalty",
    "SuppressTokensLogitsProcessor": "SuppressTokens",
    "SuppressTokensAtBeginLogitsProcessor": "SuppressTokensAtBegin",
    "SequenceBiasLogitsProcessor": "SequenceBias",
    "NoBadWordsLogitsProcessor": "NoBadWords",
    "PrefixConstrainedLogitsProcessor": "PrefixAllowedTokens",
}
# Stopping criteria generate builds from a parameter: a user object of that type would replace generate's own.
CRITERIA_FROM_PARAMETERS = {
    "MaxLengthCriteria": "max_new_tokens / max_length",
    "MaxTimeCriteria": "max_time",
    "StopStringCriteria": "stop_strings (with tokenizer=)",
    "EosTokenCriteria": "eos_token_id",
}


def _as_callables(name: str, value: Any, what: str) -> tuple | None:
    if value is None:
        return None
    allowed = f"use a list of {what} (or None)"
    _check(isinstance(value, (list, tuple)), name, value, allowed)
    bad = [item for item in value if not callable(item) or isinstance(item, type)]
    _check(not bad, name, value, f"{allowed}; not callable objects: {bad!r}")
    return tuple(value) or None


def check_logits_processor(value: Any) -> tuple | None:
    processors = _as_callables("logits_processor", value,
                               "callables (input_ids, scores) -> scores, e.g. transformers LogitsProcessor objects")
    for item in processors or ():
        # generate's LogitsProcessorList refuses processors wanting more than (input_ids, scores): it has no
        # extra arguments to give them; we refuse them before the first forward pass
        try:
            wanted = list(inspect.signature(item).parameters)
        except (TypeError, ValueError):
            continue
        _check(len(wanted) <= 2, "logits_processor", value,
               f"each processor is called as processor(input_ids, scores); {item!r} wants {wanted}")
    return processors


def check_stopping_criteria(value: Any) -> tuple | None:
    criteria = _as_callables("stopping_criteria", value,
                             "callables (input_ids, scores) -> (batch,) bool, e.g. transformers StoppingCriteria")
    for item in criteria or ():
        name = type(item).__name__
        if name in CRITERIA_FROM_PARAMETERS and type(item).__module__.startswith("transformers."):
            raise ValueError(f"stopping_criteria=[{name}(...)] is not allowed: generate would put it in place of "
                             f"its own {name}; pass {CRITERIA_FROM_PARAMETERS[name]} instead")
    return criteria


def check_max_time(value: Any) -> float | None:
    _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                             and value == value and value != float("inf")),
           "max_time", value, "use a finite number of seconds > 0, or None for no time limit")
    return None if value is None else float(value)


def check_streamer(value: Any, num_beams: int) -> Any:
    if value is None:
        return None
    missing = [m for m in ("put", "end") if not callable(getattr(value, m, None))]
    _check(not missing, "streamer", value, f"use an object with put(value) and end() methods "
                                           f"(e.g. transformers.TextStreamer); it has no {missing}")
    _check(num_beams == 1, "streamer", value,
           f"a streamer cannot follow beam search (num_beams={num_beams}), as in generate: use num_beams=1")
    return value


def check_streamer_rows(streamer: Any, rows: int) -> None:
    """Before the first forward pass: streamers take one row, as transformers' text streamers do."""
    _check(streamer is None or rows == 1, "streamer", streamer,
           f"a streamer takes one sequence, and this call decodes {rows} rows (batch x num_return_sequences): "
           "pass one prompt and num_return_sequences=1, or no streamer")


def _twin(user: Any) -> str | None:
    """The name of our class that a transformers processor of exactly this type stands in for, if any."""
    kind = type(user)
    if kind.__name__ not in TWINS or not kind.__module__.startswith("transformers."):
        return None
    from transformers.generation import logits_process

    return TWINS[kind.__name__] if kind is getattr(logits_process, kind.__name__, None) else None


def _kind(proc: Any) -> str:
    """Our processor's class name (generate_sweep's OnRows wrapper: the class it applies on some rows)."""
    return type(proc.processor if type(proc).__name__ == "OnRows" else proc).__name__


def merge_processors(built: ProcessorList, user: Sequence | None) -> ProcessorList:
    """generate's merge: user processors after our penalties / constraints (a twin replacing ours), before
    the sampling warpers."""
    if not user:
        return built
    split = next((i for i, proc in enumerate(built) if _kind(proc) in AFTER_USER), len(built))
    merged = []
    for ours in built[:split]:
        twin = next((u for u in user if _twin(u) == type(ours).__name__), None)
        merged.append(ours if twin is None else twin)
    merged += [u for u in user if not any(u is m for m in merged)]
    return ProcessorList(merged + list(built[split:]))


class Recorder:
    """The per-step (R, V) processed scores and raw logits generate returns with output_scores / output_logits."""

    def __init__(self, scores: bool, logits: bool):
        self.scores: list | None = [] if scores else None
        self.logits: list | None = [] if logits else None

    def add(self, scores: torch.Tensor, logits: torch.Tensor) -> None:
        if self.scores is not None:
            self.scores.append(scores)
        if self.logits is not None:
            self.logits.append(logits)

    def scores_so_far(self) -> tuple | None:
        """What generate hands stopping criteria as `scores`: the tuple so far, or None when not collected."""
        return None if self.scores is None else tuple(self.scores)

    def outputs(self) -> dict[str, tuple | None]:
        return {"scores": None if self.scores is None else tuple(self.scores),
                "logits": None if self.logits is None else tuple(self.logits)}


class Stops:
    """User stopping criteria and the time limit of one call; the clock starts when this is built."""

    def __init__(self, criteria: Sequence | None, max_time: float | None, recorder: Recorder):
        self.criteria = tuple(criteria or ())
        self.max_time = max_time
        self.recorder = recorder
        self.start = time.time()  # MaxTimeCriteria's clock: wall time, not perf_counter
        self.expired = False  # beam search reads the clock once per step (`tick`), for all its candidates
        self.has_eos_criterion = any(hasattr(c, "eos_token_id") for c in self.criteria)

    def __bool__(self) -> bool:
        return bool(self.criteria) or self.max_time is not None

    def time_up(self) -> bool:
        return self.max_time is not None and time.time() - self.start > self.max_time

    def tick(self) -> bool:
        self.expired = self.time_up()
        return self.expired

    def user_hits(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """(R,) bool: rows any user criterion flags, for input_ids (R, L); None without user criteria."""
        if not self.criteria:
            return None
        scores = self.recorder.scores_so_far()
        hit = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self.criteria:
            hit = hit | torch.as_tensor(criterion(input_ids, scores), device=input_ids.device).bool()
        return hit


HOOK_NAMES = ("max_time", "return_dict_in_generate", "output_scores", "output_logits", "logits_processor",
              "stopping_criteria", "streamer")


def resolve_hooks(values: dict[str, Any]) -> dict[str, Any]:
    """The validated hook parameters among generate's merged keywords (`values`), for GenerationParams."""
    for name in ("return_dict_in_generate", "output_scores", "output_logits"):
        _check(isinstance(values.get(name, False), bool), name, values.get(name), "use true or false")
    num_beams = values.get("num_beams", 1)
    return {
        "max_time": check_max_time(values.get("max_time")),
        "return_dict_in_generate": values.get("return_dict_in_generate", False),
        "output_scores": values.get("output_scores", False),
        "output_logits": values.get("output_logits", False),
        "logits_processor": check_logits_processor(values.get("logits_processor")),
        "stopping_criteria": check_stopping_criteria(values.get("stopping_criteria")),
        "streamer": check_streamer(values.get("streamer"), num_beams if isinstance(num_beams, int) else 1),
    }
