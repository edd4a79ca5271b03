"""decodelab inside lm-evaluation-harness: an `lm_eval` LM whose scoring and generation are ours.

Registered with lm-eval's model registry as "decodelab" when this module is imported, so
`lm_eval.simple_evaluate(model="decodelab", model_args="model=smollm2,do_sample=True,temperature=0.7")`
works after `import experiments.lm_eval_model`. lm-eval 0.4.x discovers models only through its own
`lm_eval.models` table (no entry points; upstream issue EleutherAI/lm-evaluation-harness#3282), so the
command line is `decodelab-lm-eval` (`experiments/lm_eval_cli.py`): lm-eval's own CLI, with this model
registered first.

What goes where:
- `loglikelihood`: lm-eval's `TemplateLM` tokenises (context, continuation) exactly as HFLM does;
  `experiments.perplexity.continuation_logprobs` scores the token ids, batched, left padded.
- `loglikelihood_rolling`: `experiments.windows.rolling_windows` (lm-eval's disjoint windows) over
  `max_length`, scored by `experiments.perplexity.score_windows`; one float per document.
- `generate_until`: each request's `gen_kwargs` merged under the run's decoding config
  (`experiments.lm_eval_gen_kwargs`, every distinct merge recorded in `generation_records`), requests
  grouped by gen_kwargs, sorted longest first, batched with left padding into `decoding.generate`
  with `until` as stop strings. lm-eval sends a request with `repeats=n` as n copies in a row: they
  are drawn once as `num_return_sequences=n` (one prefill); greedy and beam search draw once and copy.
  Each batch samples from its own generator, seeded by (seed, the task's gen_kwargs, the batch's contexts):
  what one batch draws does not depend on what ran before it.

Args come as lm-eval passes them (`model_args` key=value pairs): `model` (a decodelab model name) or
`pretrained=` a loaded model with `tokenizer=`; `device`, `dtype`, `batch_size`, `max_length`,
`max_gen_toks`, `seed`, `cache`, `rng` ("batch": a generator per batch, seeded from `seed`; "global": torch's global
RNG, so sampling draws what HFLM draws after the same `torch.manual_seed`); every other key is a decoding parameter of the run (GenerationConfig
names), or pass them as one `decoding=` dict.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import has_bos_prefix, postprocess_generated_text
from tqdm.auto import tqdm

import decoding
from experiments.generation import left_pad
from experiments.lm_eval_gen_kwargs import MergedGeneration, gen_kwargs_key, merge_gen_kwargs
from experiments.perplexity import continuation_logprobs, model_max_positions, prefix_token_id, score_windows
from experiments.windows import rolling_windows

# lm-eval's HFLM default when neither the model nor the tokenizer gives a length.
_DEFAULT_MAX_LENGTH = 2048


def batch_seed(seed: int, gen_kwargs: dict[str, Any], contexts: Sequence[Sequence[int]]) -> int:
    """A 63-bit seed from the run seed, a task's gen_kwargs and a batch's context ids (stable across machines)."""
    text = json.dumps([int(seed), gen_kwargs_key(gen_kwargs), [list(c) for c in contexts]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def draw_params(merged: MergedGeneration, draws: int) -> dict[str, Any]:
    """The merged decoding parameters of one batch that draws `draws` answers per context."""
    params = dict(merged.params)
    if draws > 1:
        params["num_return_sequences"] = draws
    return params


def _positive_int(name: str, value: Any) -> int:
    """An int from lm-eval's arg strings (which may hand "8" or 8.0); ValueError naming the key otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number != float(value) or number < 1:
        raise ValueError(f"{name}={value!r} is not allowed: use a positive integer")
    return number


@register_model("decodelab")
class DecodelabLM(TemplateLM):
    """lm-eval's LM interface on decodelab's teacher-forced scorer and generation loop."""

    def __init__(self, model: Any = "smollm2", pretrained: Any = None, tokenizer: Any = None, device: str = "cpu",
                 dtype: str = "float32", batch_size: Any = 8, max_batch_size: Any = None,
                 max_length: Any = None, max_gen_toks: Any = 256, seed: Any = 0, cache: str = "dynamic",
                 rng: str = "batch", decoding: dict | None = None, **decoding_params: Any) -> None:
        """Args: see the module docstring; `max_batch_size` is accepted (lm-eval passes it) and unused."""
        super().__init__()
        self.batch_size = 8 if batch_size in (None, "auto") else _positive_int("batch_size", batch_size)
        self._max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.seed = int(seed)
        self.cache = str(cache)
        if rng not in ("batch", "global"):
            raise ValueError(f"rng={rng!r} is not allowed: use batch (a generator per batch, seeded from seed) or "
                             f"global (torch's global RNG, as HFLM's model.generate draws)")
        self.rng = rng
        self.run_decoding = {**(dict(decoding) if decoding else {}), **decoding_params}
        self.run_decoding.pop("name", None)  # a decodelab config's label, not a parameter
        if pretrained is not None and not isinstance(pretrained, str):
            if tokenizer is None:
                raise ValueError("pretrained= a loaded model needs tokenizer= its tokenizer")
            self.model, self.tokenizer = pretrained, tokenizer
        else:
            from experiments.models import load_model  # heavy: only when we load ourselves

            self.model, self.tokenizer = load_model(str(pretrained or model), device=device, dtype=dtype)
        self.model.eval()
        self._device = next(self.model.parameters()).device
        self._max_length = (_positive_int("max_length", max_length) if max_length is not None
                            else model_max_positions(self.model) or _DEFAULT_MAX_LENGTH)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        self.generation_records: dict[str, dict[str, Any]] = {}

    # -- what TemplateLM and lm-eval's evaluator ask of a model -------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return prefix_token_id(self.tokenizer)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "tokenizer").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The tokenizer's own default for special tokens unless told, and none for a text that already begins
        with the prefix token (a chat template's), as HFLM encodes for causal models."""
        options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            options = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **options)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def get_model_info(self) -> dict[str, Any]:
        """What simple_evaluate puts into results["config"]: the model, the run's decoding, every merge."""
        return {"decodelab_model": getattr(self.model.config, "_name_or_path", type(self.model).__name__),
                "decodelab_run_decoding": self.run_decoding,
                "decodelab_generation": list(self.generation_records.values())}

    # -- scoring --------------------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context ids, continuation ids) as TemplateLM builds them."""
        results = continuation_logprobs(self.model, [r[1] for r in requests], [r[2] for r in requests],
                                        self.max_length, self.prefix_token_id, self.batch_size, self.pad_id)
        for request, result in zip(requests, results):
            if request[0] is not None:
                self.cache_hook.add_partial("loglikelihood", request[0], result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Summed log-likelihood of each whole text, over disjoint windows of `max_length` inputs."""
        owners, windows = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            doc_windows = rolling_windows(self.tok_encode(text), self.prefix_token_id, self.max_length)
            windows.extend(doc_windows)
            owners.extend([index] * len(doc_windows))
        scores = score_windows(self.model, windows, batch_size=self.batch_size, pad_id=self.pad_id,
                               progress=not disable_tqdm, desc="loglikelihood_rolling")
        totals = [0.0] * len(requests)
        for owner, logprobs in zip(owners, scores):
            totals[owner] += logprobs.double().sum().item()
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation -----------------------------------------------------------------------------------------
    def _merge(self, gen_kwargs: dict[str, Any], task_name: str | None) -> MergedGeneration:
        """The merge for one task's gen_kwargs, recorded once in `generation_records` (requests counted)."""
        eos_text = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        merged = merge_gen_kwargs(gen_kwargs, self.run_decoding, eos_text, self.max_gen_toks, task_name)
        if int(merged.params["max_new_tokens"]) >= self.max_length:
            raise ValueError(f"task {task_name!r}: max_new_tokens={merged.params['max_new_tokens']} leaves no room "
                             f"for a context in the model's {self.max_length} positions; lower the task's max_gen_toks")
        key = gen_kwargs_key({"task": task_name, **gen_kwargs})
        self.generation_records.setdefault(key, {"task": task_name, **merged.record(), "requests": 0})
        return merged

    def _count_request(self, request: Any) -> None:
        self.generation_records[gen_kwargs_key({"task": request.task_name, **request.args[1]})]["requests"] += 1

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One string per request (lm-eval's repeated copies included), in the order given."""
        # lm-eval sends a request with repeats=n as n copies in a row: one unique request, n draws.
        unique: list[tuple[Any, int]] = []
        for request in requests:
            if unique and unique[-1][0] is request:
                unique[-1] = (request, unique[-1][1] + 1)
            else:
                unique.append((request, 1))
        groups: dict[tuple[str, int], list[int]] = {}
        merges: dict[tuple[str, int], MergedGeneration] = {}
        for index, (request, n) in enumerate(unique):
            context, gen_kwargs = request.args
            key = (gen_kwargs_key({"task": request.task_name, **gen_kwargs}), n)
            if key not in merges:  # every group's merge is checked before any forward pass
                merges[key] = self._merge(gen_kwargs, request.task_name)
            self._count_request(request)
            groups.setdefault(key, []).append(index)
        encoded = [self.tok_encode(request.args[0]) for request, _ in unique]
        outputs: list[list[str] | None] = [None] * len(unique)
        with tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until (decodelab)") as bar:
            for key, members in groups.items():
                merged, n = merges[key], key[1]
                # HFLM's order: longest context first, then by text (equal batches give equal numerics).
                members = sorted(members, key=lambda i: (-len(encoded[i]), unique[i][0].args[0]))
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    texts = self._generate_batch([encoded[i] for i in chunk], merged, n)
                    for i, drawn in zip(chunk, texts):
                        outputs[i] = drawn
                        for text in drawn:
                            self.cache_hook.add_partial("generate_until", unique[i][0].args, text)
                    bar.update(sum(unique[i][1] for i in chunk))
        return [text for drawn in outputs for text in drawn]  # type: ignore[union-attr]

    def _generate_batch(self, contexts: Sequence[list[int]], merged: MergedGeneration, n: int) -> list[list[str]]:
        """n continuations per context (left-truncated to leave room for max_new_tokens), stop strings cut."""
        ids, mask = self._padded_contexts(contexts, int(merged.params["max_new_tokens"]))
        draws = n if merged.samples else 1  # greedy and beam search give the same answer every time
        params = draw_params(merged, draws)
        cache = params.pop("cache", self.cache)
        out = decoding.generate(self.model, ids, mask, generator=self.batch_generator(contexts, merged),
                                tokenizer=self.tokenizer,
                                stop_strings=merged.stop_strings or None, cache=cache, **params)
        return self._answers_per_context(out, ids.shape[1], merged.stop_strings, draws, n)

    def _padded_contexts(self, contexts: Sequence[list[int]], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) left-padded ids and mask of the contexts, each cut from the left to leave max_new_tokens."""
        return left_pad([c[-(self.max_length - max_new_tokens):] for c in contexts], self.pad_id, self._device)

    def _answers_per_context(self, out: decoding.GenerationResult, prompt_length: int, stop_strings: list[str],
                             draws: int, n: int) -> list[list[str]]:
        """n answers per context from a result of `draws` adjacent rows per context (1 draw is repeated n times)."""
        texts = self._decode_rows(out.sequences[:, prompt_length:].tolist(), stop_strings)  # B * draws
        per_context = [texts[b * draws:(b + 1) * draws] for b in range(len(texts) // draws)]
        return [drawn if draws == n else drawn * n for drawn in per_context]

    def batch_generator(self, contexts: Sequence[list[int]], merged: MergedGeneration) -> torch.Generator | None:
        """The random stream of one generation batch: seeded by (seed, the task's gen_kwargs, the batch's
        contexts), so a batch draws the same whatever ran before it (another task, a batch that ended early);
        None with rng="global" (torch's global RNG: HFLM's draws after the same torch.manual_seed)."""
        if self.rng == "global":
            return None
        return torch.Generator(device=self._device).manual_seed(batch_seed(self.seed, merged.task, contexts))

    def _decode_rows(self, rows: list[list[int]], stop_strings: list[str]) -> list[str]:
        """New tokens -> text, cut at the first stop string (lm-eval's `postprocess_generated_text`)."""
        return [postprocess_generated_text(self.tokenizer.decode(row, skip_special_tokens=True), stop_strings, None)
                for row in rows]
