"""The decoding loop we own: prefill -> decode one token -> decode n tokens (the dispatch is generate.py).

Three things are kept apart, because mixing them up is how batched generation goes wrong:

- **cache position**: the physical slot index where this forward writes keys and values. It counts up
  from 0 for every row alike, padding or not: the prompt fills slots [0, T), new token i goes to slot T + i.
- **position ids**: the logical positions the model's position encoding sees, `cumsum(attention_mask) - 1`,
  so each left-padded row starts at 0 at its first real token (pad slots get 0; nothing attends them).
- **attention mask**: which slots are attended. Pad slots are 0 forever; every generated slot is 1, also
  after a row finished (as in generate; a finished row's tokens are discarded anyway).

For a batch of "a b c" and "d e" left-padded to T = 3, after one new token (x, y):

    slot (cache position)   0   1   2   3
    row 0 tokens            a   b   c   x
    row 0 attention mask    1   1   1   1
    row 0 position ids      0   1   2   3
    row 1 tokens          pad   d   e   y
    row 1 attention mask    0   1   1   1
    row 1 position ids      0   0   1   2

The loop is transformers' `_sample` made explicit: the same forward inputs (2D mask, or none when nothing
is padded; `logits_to_keep=1`), the same processors, one `torch.multinomial` over the whole batch per step
(so the global RNG is consumed exactly as generate consumes it), finished rows fed `pad_token_id`.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import torch

from .cache import KVCache
from .compiled import CompiledDecodeStep
from .inputs import check_attention_mask, check_generator, check_input_ids, check_tokenizer
from .params import GenerationParams, resolve_params
from .processors import ProcessorList, build_processors
from .processors.draws import Draws
from .processors.dry_breakers import with_breakers
from .result import GenerationResult
from .hooks import Recorder, Stops, check_streamer_rows, merge_processors
from .state import DecodeState, init_state
from .stopping import FINISH_CRITERIA, FINISH_EOS, FINISH_LENGTH, FINISH_MAX_TIME, FINISH_STOP_STRING, StopStrings


class Forward:
    """Calls the model on the slots [start, end) and returns the last position's logits as float32 (B, V)."""

    def __init__(self, model: Any, kv: KVCache):
        self.model = model
        self.kv = kv
        params = inspect.signature(model.forward).parameters
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.compiled = None  # compile=True: single-token steps run the fixed-shape compiled step
        # the compiled step's (B,) logsumexp and () any-NaN of the logits it just returned, computed inside its
        # graph; None after an eager forward (the loop computes them itself)
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        if kv.compile:
            self.compiled = CompiledDecodeStep(model, kv, self.extra)

    def __call__(self, state: DecodeState, start: int, end: int) -> torch.Tensor:
        from_embeds = state.prompt_embeds is not None and (start == 0 or not self.kv.enabled)
        self.stats = None
        if self.compiled is not None and end - start == 1 and self.compiled.ready() and not from_embeds:
            logits, *stats = self.compiled(state, start)
            self.stats = tuple(stats)
            return logits
        # On the tokens' device: a model split over devices may return logits from its last one (accelerate's
        # hooks move them back; a tensor-parallel or hand-placed model need not), and the processors index them
        # with the tokens. The copy is made anyway, so one device costs nothing more.
        logits = self.outputs(state, start, end).logits[:, -1]
        return logits.to(device=state.tokens.device, dtype=torch.float32, copy=True)  # (B, V)

    def outputs(self, state: DecodeState, start: int, end: int, **extra: Any) -> Any:
        """The model's eager output on the slots [start, end) (from slot 0 without a cache); `extra` goes to
        the model too (contrastive search asks for `output_hidden_states=True`)."""
        from_embeds = state.prompt_embeds is not None and (start == 0 or not self.kv.enabled)
        if not self.kv.enabled:
            start = 0  # no cache: recompute the whole sequence
        self.kv.before_forward(start)  # cache position of the first slot written
        if from_embeds:
            inputs = {"inputs_embeds": self.embeds_of(state, end)}  # (B, end, H): the prompt, embedded
        else:
            inputs = {"input_ids": state.tokens[:, start:end]}
        return self.model(
            **inputs,
            attention_mask=state.model_mask(end),
            position_ids=state.position_ids[:, start:end],
            cache=self.kv.model_cache,
            use_cache=self.kv.enabled,
            **self.extra,
            **extra,
        )

    def embeds_of(self, state: DecodeState, end: int) -> torch.Tensor:
        """(B, end, H) the slots [0, end) as embeddings: the given prompt's, then the new tokens' own."""
        prompt = state.prompt_embeds
        if end == prompt.shape[1]:
            return prompt
        new = self.model.get_input_embeddings()(state.tokens[:, prompt.shape[1]:end])  # no cache: recompute
        return torch.cat([prompt, new.to(prompt.dtype)], dim=1)


def chosen_logprob(scores: torch.Tensor, tokens: torch.Tensor, logsumexp: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """(B,) log softmax(scores)[token] without materialising the (B, V) log-softmax; `logsumexp` (B,) of `scores`
    when already known (the compiled step's)."""
    logsumexp = torch.logsumexp(scores, dim=-1) if logsumexp is None else logsumexp
    return scores.gather(1, tokens[:, None]).squeeze(1) - logsumexp


def check_finite(logits: torch.Tensor, step: int, has_nan: torch.Tensor | None = None) -> None:
    """Raise before a token is chosen from NaN logits; `has_nan` () bool, when already known (the compiled step's)."""
    if has_nan is not None:
        if bool(has_nan):
            _raise_nan(logits, step)
        return
    # NaN anywhere makes the sum NaN, so a NaN-free sum clears the row in one vectorised pass (about 6 us for
    # (1, 49152) on CPU, isnan().any() 45 us); a NaN sum without NaN logits (inf - inf) goes to the exact check
    if torch.isnan(logits.sum()) and torch.isnan(logits).any():
        _raise_nan(logits, step)


def _raise_nan(logits: torch.Tensor, step: int) -> None:
    rows = torch.isnan(logits).any(dim=-1).nonzero().flatten().tolist()
    raise FloatingPointError(
        f"the model produced NaN logits at generation step {step} for rows {rows}; refusing to pick a token. "
        "Check the weights and dtype (float16 overflow?), or run in float32"
    )


Sampler = Callable[[torch.Tensor], torch.Tensor]  # processed scores (B, V) -> next tokens (B,)


class BatchSampler:
    """One rule for the whole batch: argmax, or one multinomial over all rows from `generator`.

    `probs` keeps the step's softmax(scores) (None when greedy) for the processors' observe (mirostat's
    update), so a stateful step does not compute the same (B, V) softmax twice.
    """

    def __init__(self, do_sample: bool, generator: torch.Generator | None):
        self.do_sample, self.generator = do_sample, generator
        self.probs: torch.Tensor | None = None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B,)
        if not self.do_sample:
            return torch.argmax(scores, dim=-1)
        self.probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(self.probs, num_samples=1, generator=self.generator).squeeze(1)


def batch_sampler(do_sample: bool, generator: torch.Generator | None) -> Sampler:
    """One rule for the whole batch: argmax, or one multinomial over all rows from `generator`."""
    return BatchSampler(do_sample, generator)


def decode_one_token(forward: Forward, state: DecodeState, processors: ProcessorList, sampler: Sampler,
                     start: int, step: int):
    """Run the model on slots [start, state.length), process the logits, choose one token per row.

    Returns: (tokens (B,), raw logits (B, V), processed scores (B, V)).
    """
    logits = forward(state, start, state.length)
    return choose_tokens(state, logits, processors, sampler, step)


def choose_tokens(state: DecodeState, logits: torch.Tensor, processors: ProcessorList, sampler: Sampler, step: int,
                  has_nan: torch.Tensor | None = None):
    check_finite(logits, step, has_nan)
    scores = processors(state.visible_tokens(), logits)
    return sampler(scores), logits, scores


def copy_prefix(state: DecodeState, kv: KVCache, logits: torch.Tensor, rows: torch.Tensor
                ) -> tuple[DecodeState, torch.Tensor]:
    """After one prefill of the distinct prompts: row i of the batch continues prompt `rows[i]`.

    Copies the prompt's slots, its KV cache and its last logits, so n samples of a prompt (and every
    configuration of a sweep) share one prefill instead of recomputing it.
    """
    kv.select_rows(rows)
    return state.select_rows(rows), logits.index_select(0, rows)


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings count it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_n_tokens(model: Any, state: DecodeState, kv: KVCache, params: GenerationParams,
                    processors: ProcessorList, generator: torch.Generator | None, tokenizer: Any = None, *,
                    sampler: Sampler | None = None, prefix_rows: torch.Tensor | None = None,
                    forward: Callable[[DecodeState, int, int], torch.Tensor] | None = None,
                    draws: Draws | None = None) -> GenerationResult:
    """Prefill the prompt, then decode until every row finished or `max_new_tokens` were generated.

    Args:
        sampler: chooses tokens from processed scores; default: `params.do_sample` with `generator`.
        forward: `(state, start, end) -> (B, V)` float32 next-token logits; default: `Forward(model, kv)`
            (contrastive search passes its own, which returns the chosen candidate's logits after the prefill).
        prefix_rows: (R,) when given, `state` holds the distinct prompts only; they are prefilled once and
            row i of the decoded batch starts from prompt `prefix_rows[i]` (`copy_prefix`).
        draws: the random stream of processors that draw (XTC); default: `generator` for every row.
    """
    device = state.tokens.device
    sampler = sampler or batch_sampler(params.do_sample, generator)
    batch = state.tokens.shape[0] if prefix_rows is None else prefix_rows.shape[0]
    prompt_len = state.length
    n_max = params.max_new_tokens
    eos = torch.tensor(params.eos_token_id, device=device) if params.eos_token_id else None
    pad = params.pad_token_id
    stop_strings = StopStrings(params.stop_strings, tokenizer) if params.stop_strings else None
    streamer = params.streamer
    check_streamer_rows(streamer, batch)
    processors = merge_processors(processors, params.logits_processor)
    recorder = Recorder(params.output_scores, params.output_logits)  # collects nothing unless asked
    stops = Stops(params.stopping_criteria, params.max_time, recorder)  # max_time's clock starts here
    # generate writes pad after a row ends when any criterion has an `eos_token_id`: its EosTokenCriteria
    # (built for any eos_token_id but None, an empty list too) or a user's
    pads_finished = pad is not None and (params.eos_token_id is not None or stops.has_eos_criterion)
    forward = forward or Forward(model, kv)
    stateful = processors.stateful  # XTC's draws, mirostat's per-row state
    if stateful:
        processors.bind(draws or Draws.single(generator, batch))

    logprobs = torch.zeros((batch, n_max), device=device)
    logprobs_raw = torch.zeros((batch, n_max), device=device)
    alive_mask = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    reasons: list[str | None] = [None] * batch

    if streamer is not None:
        streamer.put(state.tokens[:, state.visible_start:prompt_len].cpu())  # (1, T): the prompt first, as generate
    sync_device(device)
    t0 = time.perf_counter()
    prefill_seconds = 0.0
    start = 0  # cache position of the first slot this forward writes
    step = 0
    for step in range(n_max):
        logits = forward(state, start, state.length)
        logsumexp, has_nan = getattr(forward, "stats", None) or (None, None)  # a custom forward has none
        if step == 0 and prefix_rows is not None:
            state, logits = copy_prefix(state, kv, logits, prefix_rows)
            logsumexp = has_nan = None  # of the distinct prompts' rows
        next_tokens, logits, scores = choose_tokens(state, logits, processors, sampler, step, has_nan)
        if stateful:  # the sampler's own softmax where it drew from one (the same bits observe would compute)
            processors.observe(next_tokens, scores, getattr(sampler, "probs", None))
        if getattr(sampler, "probs", None) is not None:
            sampler.probs = None  # not held into the next step's forward
        recorder.add(scores, logits)
        if pads_finished:
            next_tokens = torch.where(unfinished, next_tokens, pad)
        if streamer is not None:
            streamer.put(next_tokens.cpu())  # (1,)
        slot = state.append(next_tokens)
        raw = chosen_logprob(logits, next_tokens, logsumexp).masked_fill(~unfinished, 0)
        logprobs_raw[:, step] = raw
        # Without processors the processed distribution is the raw one: skip a second pass over (B, V).
        logprobs[:, step] = raw if scores is logits else chosen_logprob(scores, next_tokens).masked_fill(~unfinished, 0)
        alive_mask[:, step] = unfinished
        start = slot

        finished_now = torch.zeros_like(unfinished)
        if eos is not None:
            finished_now = torch.isin(next_tokens, eos) & unfinished
        alive = unfinished & ~finished_now
        if stop_strings is not None:
            rows = alive.nonzero().flatten().tolist()
            for r in stop_strings(state.visible_tokens(), rows):
                alive[r] = False
                reasons[r] = FINISH_STOP_STRING
        for r in finished_now.nonzero().flatten().tolist():
            reasons[r] = FINISH_EOS
        if stops:
            alive = user_stops(stops, state.visible_tokens(), alive, reasons)
        unfinished = alive
        if step == 0:
            sync_device(device)
            prefill_seconds = time.perf_counter() - t0
        if not bool(unfinished.any()):
            break
    sync_device(device)
    total = time.perf_counter() - t0
    if streamer is not None:
        streamer.end()
    generated = step + 1
    reasons = [r if r is not None else FINISH_LENGTH for r in reasons]
    return GenerationResult(
        sequences=state.tokens[:, state.visible_start: prompt_len + generated],
        token_logprobs=logprobs[:, :generated],
        token_logprobs_raw=logprobs_raw[:, :generated],
        new_token_mask=alive_mask[:, :generated],
        finish_reasons=reasons,
        prompt_length=prompt_len - state.visible_start,
        prefill_seconds=prefill_seconds,
        decode_seconds=total - prefill_seconds,
        new_tokens=int(alive_mask.sum()),
        steps=generated - 1,
        **recorder.outputs(),
    )


def user_stops(stops: Stops, sequences: torch.Tensor, alive: torch.Tensor, reasons: list) -> torch.Tensor:
    """Rows of `alive` (B,) that the user's criteria or max_time end after this step; records their reasons."""
    alive = alive.clone()
    hits = stops.user_hits(sequences)
    if hits is not None:
        for r in (hits & alive).nonzero().flatten().tolist():
            alive[r] = False
            reasons[r] = FINISH_CRITERIA
    if stops.time_up():
        for r in alive.nonzero().flatten().tolist():
            reasons[r] = FINISH_MAX_TIME
        alive[:] = False
    return alive


def max_positions_of(model: Any) -> int | None:
    config = model.config.get_text_config(decoder=True)
    return getattr(config, "max_position_embeddings", None)


def prepare_call(model: Any, input_ids: Any, attention_mask: Any, configs: list[dict[str, Any]],
                 generators: dict[str, Any], tokenizer: Any, sweep: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, list[GenerationParams]]:
    """Check everything a call was given, before any forward pass; infer the mask as generate does.

    Args:
        configs: the generate keywords of each configuration (one for `generate`, C for `generate_sweep`).
        generators: argument name -> the torch.Generator (or None) given under that name.
        sweep: errors in a configuration are prefixed with `configs[i]:`.

    Returns:
        (B, T) prompt ids and attention mask on the model's device, and each configuration's parameters.
    """
    was_1d = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1
    input_ids = check_input_ids(model, input_ids)
    for name, generator in generators.items():
        check_generator(name, generator, model.device)
    params = []
    for i, config in enumerate(configs):
        try:
            params.append(resolve_params(model, input_ids.shape[1], max_positions_of(model), **config))
        except ValueError as err:
            if not sweep:
                raise
            raise ValueError(f"configs[{i}]: {err}") from None
    p = params[0]
    check_tokenizer(tokenizer, p.stop_strings)
    params = [with_breakers(q, tokenizer) for q in params]  # DRY's breaker strings as this tokenizer's tokens
    attention_mask = check_attention_mask(input_ids, attention_mask, p.pad_token_id, p.eos_token_id, was_1d)
    return input_ids, attention_mask, params


def greedy_or_sample(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams, *,
                     generator: torch.Generator | None = None, tokenizer: Any = None,
                     prompt_embeds: Any = None) -> GenerationResult:
    """Greedy decoding or multinomial sampling (generate's `_sample`) on checked, left-padded prompts.

    Args:
        input_ids: (B, T) prompt ids; attention_mask: (B, T) (as `prepare_call` returns them).
        p: resolved parameters with `num_beams == 1`.
        generator: RNG for sampling (None: torch's global RNG, as generate).
        tokenizer: needed only for `stop_strings`.
        prompt_embeds: an `embeds.PromptEmbeds` when the prompt came as inputs_embeds, else None.

    Returns:
        GenerationResult; `sequences` is (B * num_return_sequences, T + N), or (.., N) for embeddings only.
    """
    # The n samples of a prompt are adjacent rows, as in generate; they share one prefill of the prompt.
    prefix_rows = None
    if p.num_return_sequences > 1:
        prefix_rows = torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(
            p.num_return_sequences)
    state, kv, processors = prepare_decode(model, input_ids, attention_mask, p, prompt_embeds, prefix_rows)
    return decode_n_tokens(model, state, kv, p, processors, generator, tokenizer, prefix_rows=prefix_rows)


def prepare_decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, p: GenerationParams,
                   prompt_embeds: Any = None, prefix_rows: torch.Tensor | None = None
                   ) -> tuple[DecodeState, KVCache, ProcessorList]:
    """The state, cache and processors of a one-token-per-step decode (greedy / sampling, contrastive search).

    Args:
        prefix_rows: (R,) the prompt each decoded row continues (`decode_n_tokens`), or None: one row per prompt.
    """
    prompt_len = input_ids.shape[1]
    state = init_state(input_ids, attention_mask, p.max_new_tokens, p.pad_token_id)
    if prompt_embeds is not None:
        state.prompt_embeds, state.visible_start = prompt_embeds.embeds, prompt_embeds.visible_start
    kv = KVCache(p.cache, model, p.max_cache_len or prompt_len + p.max_new_tokens, compile=p.compile)
    prompt_start = (attention_mask == 0).sum(-1)  # (B,) left-padding slots per row
    if prefix_rows is not None:
        prompt_start = prompt_start.index_select(0, prefix_rows)
    processors = build_processors(p, prompt_len - state.visible_start, prompt_start if state.padded else None, model,
                                  prefix_rows if prefix_rows is not None else torch.arange(input_ids.shape[0]))
    return state, kv, processors
