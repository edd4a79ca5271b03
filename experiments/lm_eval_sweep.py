"""Several decoding configurations through lm-eval with one prefill: `SweepDecodelabLM`.

lm-eval's evaluator asks one response per request, for one model, so a temperature sweep is one
`simple_evaluate` per configuration. `SweepDecodelabLM` holds every configuration; `use(i)` makes
configuration i the one lm-eval sees. The first time a batch of requests is asked for (under any
configuration), it is generated for all configurations at once with `decoding.generate_sweep` (one
prefill, every configuration's rows in one decode batch) and the answers of the others are kept, so the
later `simple_evaluate` calls read them instead of generating. Log-likelihoods do not depend on decoding:
they are computed once and reused too.

Each configuration draws from its own `torch.Generator`, seeded per batch as a lone `DecodelabLM` seeds that
batch's (`DecodelabLM.batch_generator`): configuration i's answers equal those of
`DecodelabLM(seed=seed, **configs[i])` on the same requests (tests/experiments/test_lm_eval_sweep.py), and
all configurations share their random numbers batch by batch (common random numbers: paired comparisons
between them are less noisy).
Configurations may differ only in what `decoding.generate_sweep` lets differ (do_sample, temperature,
top_k, top_p, min_p, top_h); greedy ones and sampling ones form two groups (their draw counts differ).

    lm = SweepDecodelabLM(pretrained=model, tokenizer=tokenizer, configs=[{"do_sample": True, "temperature": t}
                                                                         for t in (0.5, 1.0, 1.5)])
    scores = [lm_eval.simple_evaluate(model=lm.use(i), tasks=[...]) for i in range(3)]
"""

from __future__ import annotations

from typing import Any, Sequence

import decoding
from experiments.lm_eval_gen_kwargs import MergedGeneration, gen_kwargs_key, merge_gen_kwargs
from experiments.lm_eval_model import DecodelabLM, draw_params


class SweepDecodelabLM(DecodelabLM):
    """DecodelabLM over several run decoding configs sharing every generation batch (module docstring)."""

    def __init__(self, configs: Sequence[dict[str, Any]], **kwargs: Any) -> None:
        """Args: configs, the run decoding configs (GenerationConfig names; `name` dropped); the rest as
        DecodelabLM takes them (no decoding keywords of its own)."""
        if not configs:
            raise ValueError("configs=[] is not allowed: give at least one decoding configuration")
        super().__init__(**kwargs)
        self.configs = [{k: v for k, v in dict(c).items() if k != "name"} for c in configs]
        self.records_by_config: list[dict[str, dict[str, Any]]] = [{} for _ in self.configs]
        self._answers: dict[tuple, list[str]] = {}  # (config, context ids, gen_kwargs key, n) -> n texts
        self._scores: dict[tuple, tuple[float, bool]] = {}  # (context ids, continuation ids) -> loglikelihood
        self.shared_batches = 0
        self.use(0)

    def use(self, index: int) -> "SweepDecodelabLM":
        """Make configuration `index` the one lm-eval's calls answer for; returns self."""
        if not 0 <= index < len(self.configs):
            raise ValueError(f"index={index} is not a configuration: use 0 to {len(self.configs) - 1}")
        self.active = index
        self.run_decoding = self.configs[index]
        self.generation_records = self.records_by_config[index]
        return self

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any):
        missing = [r for r in requests if (tuple(r[1]), tuple(r[2])) not in self._scores]
        if missing:
            for request, result in zip(missing, super()._loglikelihood_tokens(missing, disable_tqdm)):
                self._scores[(tuple(request[1]), tuple(request[2]))] = result
        return [self._scores[(tuple(r[1]), tuple(r[2]))] for r in requests]

    def _generate_batch(self, contexts: Sequence[list[int]], merged: MergedGeneration, n: int) -> list[list[str]]:
        task_key = gen_kwargs_key(merged.task)
        keys = [(tuple(c), task_key, n) for c in contexts]
        if not all((self.active, *key) in self._answers for key in keys):
            self._generate_all(contexts, merged, n, keys)
        return [self._answers[(self.active, *key)] for key in keys]

    def _generate_all(self, contexts: Sequence[list[int]], merged: MergedGeneration, n: int, keys: list[tuple]) -> None:
        """Every configuration's answers for these contexts: one generate_sweep per greedy / sampling group."""
        eos_text = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        merges = [merge_gen_kwargs(merged.task, config, eos_text, self.max_gen_toks) for config in self.configs]
        ids, mask = self._padded_contexts(contexts, int(merged.params["max_new_tokens"]))
        for samples in (False, True):
            members = [i for i, m in enumerate(merges) if m.samples == samples]
            if not members:
                continue
            draws = n if samples else 1
            configs = []
            for i in members:
                params = draw_params(merges[i], draws)
                params.pop("cache", None)
                configs.append(params)
            results = decoding.generate_sweep(
                self.model, ids, mask, configs=configs, tokenizer=self.tokenizer,
                generators=[self.batch_generator(contexts, merged) if samples else None for _ in members],
                stop_strings=merged.stop_strings or None, cache=self.cache)
            self.shared_batches += 1
            for i, out in zip(members, results):
                answers = self._answers_per_context(out, ids.shape[1], merges[i].stop_strings, draws, n)
                for key, drawn in zip(keys, answers):
                    self._answers[(i, *key)] = drawn
