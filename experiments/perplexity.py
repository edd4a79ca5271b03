"""Teacher-forced scoring: rolling-window perplexity of documents, and perplexity of given continuations.

The forward side of "generate versus forward". Each document is scored on its own with the windows of
`experiments.windows` (disjoint, as lm-evaluation-harness does, or overlapping with a stride), every
token predicted exactly once; the first is conditioned on the model's BOS token (EOS where it has none).

Aggregation as lm-evaluation-harness's `weighted_perplexity` / `bits_per_byte`: corpus numbers are
exp(summed NLL / summed units) over tokens, words or bytes, never a mean of per-document perplexities.
Words (`len(re.split(r"\\s+", text))`) and bytes (UTF-8) are counted on the original text: the `text`
column, or `original_text` where a loader changed the text before scoring (wikitext's detokeniser).

Throughput decisions, measured in `bench/perplexity_speed.py`:
- Windows of all documents go into one list sorted by length, so a batch mixes documents and is padded
  only where lengths differ (most windows are exactly `max_length`).
- Rows are padded on the left with position ids `cumsum(mask) - 1`, so the scored positions are the last
  ones of every row and only those are projected onto the vocabulary, which in stride mode skips most
  of the projection.
- Log-probabilities of the targets are `logit[target] - logsumexp(logits)`, and no (B, T, V) logits or
  log-softmax tensor is ever allocated. Where the output head is a plain linear map of the last hidden
  state (`_PLAIN_HEAD_MODELS`, read off their transformers source), the scorer runs the model's body and
  projects the scored positions itself in tiles of (positions x vocabulary slice), a logsumexp per tile:
  on CPU a tile stays in cache from the matmul to the exp-sum, where the model's own head writes (B, T, V)
  logits to memory and the log-probabilities read them back (the gap was about 2.5% of a forward pass at
  windows of 512, now about zero; `bench/perplexity_speed.py`). Other models (Gemma 2's soft-capping,
  Cohere's `logit_scale`, ...) return their logits (`logits_to_keep`), then chunks of a few positions.
  NLL sums are float64.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from experiments.windows import Window, check_window_args, continuation_window, rolling_windows


# Logits per log-probability chunk: about 2 MB on CPU (fits in cache), 1 GiB on an accelerator.
_CHUNK_ELEMENTS = {"cpu": 1 << 19, "accelerator": 1 << 28}

# Tiles of the fused head: (logits per tile, vocabulary columns per tile; None = all). On CPU 1024 x 1024
# float32 logits (4 MB, the L2 of our machine) and a 1024-row weight slice; measured against 256-4096
# columns. On an accelerator, whole-vocabulary tiles of up to 1 GiB: few launches.
_TILE = {"cpu": (1 << 20, 1024), "accelerator": (1 << 28, None)}

# Causal LMs whose forward is `logits = lm_head(last_hidden_state[:, -logits_to_keep:])` and nothing after
# (transformers 5.x source). Exact class names: a subclass may change its forward.
_PLAIN_HEAD_MODELS = frozenset({"LlamaForCausalLM", "GPT2LMHeadModel", "MistralForCausalLM", "Qwen2ForCausalLM",
                                "Qwen3ForCausalLM", "Phi3ForCausalLM", "Olmo2ForCausalLM"})


def prefix_token_id(tokenizer) -> int:
    """The token a document's first token is conditioned on: BOS, or EOS for tokenizers without one."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition the first token on")


def model_max_positions(model) -> int | None:
    """How many positions the model can attend over (None when its config does not say)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_max_length(model, max_length: int) -> None:
    check_window_args(max_length)
    positions = model_max_positions(model)
    if positions is not None and max_length > positions:
        raise ValueError(f"max_length={max_length} is beyond the model's {positions} positions; "
                         f"use max_length <= {positions}")


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them (an empty string counts one)."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for logits (B, K, V) and targets (B, K) -> (B, K) float32, a few positions at a time.

    Chunks of about `_CHUNK_ELEMENTS` logits: on CPU a chunk stays in cache between the max, the exp-sum
    and the gather (2.4x faster than one logsumexp over a window); on GPU chunks are large, few launches.
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # (B * K, V)
    flat_targets = targets.reshape(-1, 1)  # (B * K, 1)
    out = torch.empty(flat_targets.shape[0], dtype=torch.float32, device=logits.device)  # (B * K,)
    budget = _CHUNK_ELEMENTS["cpu" if logits.device.type == "cpu" else "accelerator"]
    step = max(1, budget // vocab)
    for start in range(0, flat_logits.shape[0], step):
        chunk = flat_logits[start:start + step].float()  # (C, V)
        picked = chunk.gather(-1, flat_targets[start:start + step]).squeeze(-1)  # (C,)
        out[start:start + step] = picked - torch.logsumexp(chunk, dim=-1)
    return out.view(targets.shape)


def _plain_head(model) -> torch.nn.Linear | None:
    """The model's output head where logits are exactly `head(last hidden state)`; None for other models."""
    if type(model).__name__ not in _PLAIN_HEAD_MODELS:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return None
    # An offloaded head (accelerate's hook, a `meta` placeholder weight) has its weights only inside its own
    # forward: reading `head.weight` here would score with the placeholder. The model's forward does it right.
    if hasattr(head, "_hf_hook") or head.weight.device.type == "meta":
        return None
    # A quantized head (a torchao tensor subclass: int8 / packed int4 data) multiplies only through its own
    # F.linear; the tiled path below slices the weight's rows.
    if type(head.weight.data) is not torch.Tensor:
        return None
    return head


def _head_target_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for hidden states (..., H) under a linear head, targets (...) -> (...) float32.

    The logits are made and used one tile at a time (`_TILE`): per tile a logsumexp over its vocabulary
    slice and the target's logit where it falls in the slice; the row's logsumexp is the logsumexp of its
    tiles' (exact, and stable: each tile subtracts its own max).
    """
    weight, bias = head.weight, head.bias  # (V, H), (V,) or None
    vocab = weight.shape[0]
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    flat_targets = targets.reshape(-1)  # (N,)
    budget, width = _TILE["cpu" if hidden.device.type == "cpu" else "accelerator"]
    width = min(width or vocab, vocab)
    rows = max(1, budget // width)
    starts = range(0, vocab, width)
    out = torch.empty(flat_targets.shape[0], dtype=torch.float32, device=hidden.device)  # (N,)
    for row in range(0, flat_hidden.shape[0], rows):
        block, block_targets = flat_hidden[row:row + rows], flat_targets[row:row + rows]  # (R, H), (R,)
        tile_lse = torch.empty(block.shape[0], len(starts), dtype=torch.float32, device=hidden.device)  # (R, tiles)
        picked = torch.zeros(block.shape[0], dtype=torch.float32, device=hidden.device)  # (R,)
        for tile, start in enumerate(starts):
            end = min(start + width, vocab)
            logits = torch.nn.functional.linear(block, weight[start:end],
                                                None if bias is None else bias[start:end]).float()  # (R, W)
            local = block_targets - start  # (R,)
            inside = (local >= 0) & (local < end - start)
            here = logits.gather(-1, local.clamp(0, end - start - 1).unsqueeze(-1)).squeeze(-1)  # (R,)
            picked = torch.where(inside, here, picked)
            # torch.logsumexp's own steps, in place on the tile (one (R, W) buffer fewer; same numbers).
            tile_max = logits.amax(dim=-1, keepdim=True)  # (R, 1)
            tile_max.masked_fill_(tile_max.abs() == math.inf, 0.0)  # as torch.logsumexp: inf logits stay inf
            tile_lse[:, tile] = logits.sub_(tile_max).exp_().sum(dim=-1).log_() + tile_max.squeeze(-1)
        out[row:row + rows] = picked - torch.logsumexp(tile_lse, dim=-1)
    return out.view(targets.shape)


@torch.inference_mode()
def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced log-probability of each next token: (B, T) ids -> (B, T - 1).

    Entry [b, t] is log p(input_ids[b, t + 1] | input_ids[b, :t + 1]). Left or right padding is handled
    with position ids `cumsum(mask) - 1`; entries whose token or next token is padding hold 0.0.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits[:, :-1]  # (B, T - 1, V)
    logprobs = _target_logprobs(logits, input_ids[:, 1:])  # (B, T - 1)
    valid = attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()  # (B, T - 1)
    return logprobs.masked_fill(~valid, 0.0)


def padded_windows(windows: Sequence[Window], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """One batch of windows, left-padded: input ids, mask and position ids (B, T), targets and which of
    them are real (B, K), right-aligned like the inputs (K: the most targets of a window)."""
    width = max(len(w.input_ids) for w in windows)
    keep = max(len(w.target_ids) for w in windows)
    input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(windows), width), dtype=torch.long)  # (B, T)
    targets = torch.zeros((len(windows), keep), dtype=torch.long)  # (B, K)
    scored = torch.zeros((len(windows), keep), dtype=torch.bool)  # (B, K): positions that have a target
    for row, window in enumerate(windows):
        input_ids[row, width - len(window.input_ids):] = torch.tensor(window.input_ids)
        mask[row, width - len(window.input_ids):] = 1
        targets[row, keep - len(window.target_ids):] = torch.tensor(window.target_ids)
        scored[row, keep - len(window.target_ids):] = True
    input_ids, mask, targets = input_ids.to(device), mask.to(device), targets.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return input_ids, mask, position_ids, targets, scored


@torch.inference_mode()
def score_batch(model, windows: Sequence[Window], pad_id: int = 0) -> list[torch.Tensor]:
    """Log-probabilities of each window's targets, in one forward pass. Returns float32 tensors on CPU."""
    device = next(model.parameters()).device
    input_ids, mask, position_ids, targets, scored = padded_windows(windows, pad_id, device)
    keep = targets.shape[1]
    head = _plain_head(model)
    if head is not None:
        # Only the positions with a target are projected: in stride mode a batch holding a document's first
        # window (max_length targets) would otherwise project max_length positions of every row.
        scored = scored.to(device)
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state[:, -keep:]  # (B, K, H)
        logprobs = _head_target_logprobs(hidden[scored], head, targets[scored]).cpu()  # (N,), row by row
        return list(logprobs.split([len(window.target_ids) for window in windows]))
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                   logits_to_keep=keep, use_cache=False).logits  # (B, K, V)
    logprobs = _target_logprobs(logits, targets).cpu()  # (B, K)
    return [logprobs[row, keep - len(window.target_ids):] for row, window in enumerate(windows)]


def batches_by_length(windows: Sequence[Window], batch_size: int) -> list[list[int]]:
    """Window indices grouped into batches of similar length (longest first, stable among equals)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def score_windows(model, windows: Sequence[Window], batch_size: int = 8, pad_id: int = 0,
                  progress: bool = False, desc: str = "scoring", batch_scorer=None) -> list:
    """Target log-probabilities of every window, batched across documents; in the order given.

    `batch_scorer(model, windows, pad_id) -> one result per window` replaces `score_batch` (what is computed
    per batch); the batching by length and the order stay.
    """
    batch_scorer = batch_scorer or score_batch
    scores: list = [None] * len(windows)
    with tqdm(total=len(windows), disable=not progress, desc=desc, unit="window") as bar:
        for batch in batches_by_length(windows, batch_size):
            for index, logprobs in zip(batch, batch_scorer(model, [windows[i] for i in batch], pad_id)):
                scores[index] = logprobs
            bar.update(len(batch))
    return scores


@dataclass
class TextScore:
    """Summed NLL of one scored text (a document, or a continuation) and its units."""

    id: str
    nll: float
    tokens: int
    words: int | None = None
    bytes: int | None = None

    def metrics(self) -> dict[str, float]:
        out = {"ppl/token": math.exp(self.nll / self.tokens)}
        if self.words:
            out["ppl/word"] = math.exp(self.nll / self.words)
        if self.bytes:
            out["ppl/byte"] = math.exp(self.nll / self.bytes)
            out["ppl/bpb"] = self.nll / self.bytes / math.log(2)
        return out


@dataclass
class PerplexityReport:
    """Corpus and per-text numbers. `skipped_empty` counts texts with nothing to score."""

    texts: list[TextScore]
    skipped_empty: int = 0
    windows: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> TextScore:
        texts = self.texts
        words = sum(t.words or 0 for t in texts) if all(t.words is not None for t in texts) else None
        nbytes = sum(t.bytes or 0 for t in texts) if all(t.bytes is not None for t in texts) else None
        return TextScore("corpus", math.fsum(t.nll for t in texts), sum(t.tokens for t in texts), words, nbytes)

    def metrics(self, prefix: str = "ppl") -> dict[str, float | int]:
        """Flat corpus metrics: `<prefix>/token|word|byte|bpb` plus counts."""
        total = self.totals()
        if total.tokens == 0:
            raise ValueError(f"no text had anything to score ({self.skipped_empty} empty ones were skipped)")
        out: dict[str, float | int] = {key.replace("ppl/", f"{prefix}/"): value for key, value in total.metrics().items()}
        out.update({f"{prefix}/nll": total.nll, f"{prefix}/tokens": total.tokens, f"{prefix}/documents": len(self.texts),
                    f"{prefix}/skipped_empty": self.skipped_empty, f"{prefix}/windows": self.windows})
        if total.words is not None:
            out[f"{prefix}/words"] = total.words
        if total.bytes is not None:
            out[f"{prefix}/bytes"] = total.bytes
        return out

    def per_text(self) -> list[dict[str, Any]]:
        return [{"id": t.id, "nll": t.nll, "tokens": t.tokens, "words": t.words, "bytes": t.bytes, **t.metrics()}
                for t in self.texts]


def _documents(documents) -> tuple[list[str], list[str], list[str]]:
    """(ids, texts to score, texts to count words and bytes on) from a Dataset or a list of strings."""
    if isinstance(documents, str):
        raise TypeError("documents must be a sequence of texts or a datasets.Dataset, not one string")
    columns = getattr(documents, "column_names", None)
    if columns is None:
        texts = list(documents)
        return [str(i) for i in range(len(texts))], texts, texts
    if "text" not in columns:
        raise ValueError(f"the documents have no 'text' column (columns: {columns}); load them with "
                         f"experiments.data.load_documents, which names the text column 'text'")
    texts = list(documents["text"])
    ids = [str(i) for i in documents["id"]] if "id" in columns else [str(i) for i in range(len(texts))]
    originals = list(documents["original_text"]) if "original_text" in columns else texts
    return ids, texts, originals


def corpus_perplexity(model, tokenizer, documents, max_length: int, stride: int | None = None,
                      batch_size: int = 8, progress: bool = True) -> PerplexityReport:
    """Rolling-window perplexity of every document (a Dataset with `text`, or a list of strings).

    Empty documents (only whitespace, or no tokens) are skipped and counted in `skipped_empty`.
    """
    check_max_length(model, max_length)
    stride = check_window_args(max_length, stride)
    ids, texts, originals = _documents(documents)
    prefix = prefix_token_id(tokenizer)
    kept = [i for i, text in enumerate(texts) if text.strip()]
    encoded = tokenizer([texts[i] for i in kept], add_special_tokens=False, verbose=False)["input_ids"] if kept else []
    owners: list[int] = []  # which document each window belongs to
    windows: list[Window] = []
    scored = []
    for doc, tokens in zip(kept, encoded):
        if not tokens:
            continue
        doc_windows = rolling_windows(tokens, prefix, max_length, stride)
        windows.extend(doc_windows)
        owners.extend([doc] * len(doc_windows))
        scored.append((doc, len(tokens)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix
    logprobs = score_windows(model, windows, batch_size=batch_size, pad_id=pad_id, progress=progress,
                             desc="perplexity")
    nll = {doc: 0.0 for doc, _ in scored}
    for doc, window_logprobs in zip(owners, logprobs):
        nll[doc] -= window_logprobs.double().sum().item()
    results = [TextScore(ids[doc], nll[doc], n_tokens, count_words(originals[doc]), count_bytes(originals[doc]))
               for doc, n_tokens in scored]
    return PerplexityReport(results, skipped_empty=len(texts) - len(results), windows=len(windows),
                            settings={"max_length": max_length, "stride": stride, "batch_size": batch_size})


def score_continuations(model, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                        prefix_token: int, max_length: int | None = None, batch_size: int = 8, pad_id: int = 0,
                        continuation_texts: Sequence[str] | None = None, progress: bool = False) -> PerplexityReport:
    """Perplexity of each continuation given its prompt, from token ids ("generation perplexity").

    Prompts longer than fits are cut from the left; empty continuations are skipped and counted.
    `continuation_texts` (optional) gives word and byte counts.
    """
    if len(prompt_ids) != len(continuation_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(continuation_ids)} continuations; pass one per prompt")
    if continuation_texts is not None and len(continuation_texts) != len(continuation_ids):
        raise ValueError(f"{len(continuation_texts)} continuation_texts for {len(continuation_ids)} continuations")
    max_length = max_length or model_max_positions(model)
    if max_length is None:
        raise ValueError("the model's config does not give its positions: pass max_length=")
    check_max_length(model, max_length)
    kept = [i for i, cont in enumerate(continuation_ids) if len(cont) > 0]
    windows = [continuation_window(list(prompt_ids[i]), list(continuation_ids[i]), max_length, prefix_token)
               for i in kept]
    logprobs = score_windows(model, windows, batch_size=batch_size, pad_id=pad_id, progress=progress,
                             desc="generation perplexity")
    results = []
    for i, window_logprobs in zip(kept, logprobs):
        text = continuation_texts[i] if continuation_texts is not None else None
        results.append(TextScore(str(i), -window_logprobs.double().sum().item(), len(continuation_ids[i]),
                                 count_words(text) if text is not None else None,
                                 count_bytes(text) if text is not None else None))
    return PerplexityReport(results, skipped_empty=len(continuation_ids) - len(kept), windows=len(windows),
                            settings={"max_length": max_length, "batch_size": batch_size})


def split_continuation_tokens(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt and continuation as lm-evaluation-harness splits them.

    The pair is encoded whole and cut after the prompt's own encoding, so the continuation's first token
    is the one the model sees in context; a prompt's trailing spaces move to the continuation.
    """
    stripped = prompt.rstrip(" ")
    continuation = prompt[len(stripped):] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=False, verbose=False)["input_ids"]
    context = tokenizer(stripped, add_special_tokens=False, verbose=False)["input_ids"] if stripped else []
    return whole[:len(context)], whole[len(context):]


def generation_perplexity(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                          max_length: int | None = None, batch_size: int = 8,
                          progress: bool = False) -> PerplexityReport:
    """Perplexity of generated texts given their prompts under a scorer (`model`, `tokenizer`).

    The scorer is the generating model by default in experiments, any model by config; texts are
    re-tokenised with the scorer's tokenizer, so a scorer with another vocabulary works too.
    """
    if isinstance(prompts, str) or isinstance(continuations, str):
        raise TypeError("prompts and continuations must be sequences of texts, not single strings")
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations; pass one per prompt")
    pairs = [split_continuation_tokens(tokenizer, p, c) for p, c in zip(prompts, continuations)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)
    return score_continuations(model, [p for p, _ in pairs], [c for _, c in pairs], prefix_token_id(tokenizer),
                               max_length=max_length, batch_size=batch_size, pad_id=pad_id,
                               continuation_texts=list(continuations), progress=progress)


@torch.inference_mode()
def _greedy_scored_batch(model, windows: Sequence[Window], pad_id: int) -> list[tuple[float, bool]]:
    """(summed log p(targets), targets are the argmax at every position) per window, one forward pass."""
    device = next(model.parameters()).device
    input_ids, mask, position_ids, targets, _ = padded_windows(windows, pad_id, device)
    keep = targets.shape[1]
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                   logits_to_keep=keep, use_cache=False).logits  # (B, K, V)
    logprobs = _target_logprobs(logits, targets).cpu()  # (B, K)
    greedy = (logits.argmax(dim=-1) == targets).cpu()  # (B, K)
    out = []
    for row, window in enumerate(windows):
        n = len(window.target_ids)
        out.append((logprobs[row, keep - n:].double().sum().item(), bool(greedy[row, keep - n:].all())))
    return out


def continuation_logprobs(model, contexts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                          max_length: int, prefix_token: int, batch_size: int = 8,
                          pad_id: int = 0) -> list[tuple[float, bool]]:
    """Log-likelihood of each continuation given its context, and whether greedy decoding would produce it.

    lm-evaluation-harness's `loglikelihood` on token ids: the model reads `(context + continuation)[:-1]`,
    cut from the left to `max_length` inputs, and the continuation's tokens are scored at its last
    positions. Requests are batched by length (longest first) and returned in the order given.

    Args:
        model: a causal LM.
        contexts: token ids per request; an empty context conditions on `prefix_token`.
        continuations: token ids per request, each non-empty and at most `max_length` long.
        max_length: model inputs per row.
        prefix_token: what an empty context is replaced by (BOS, or EOS).
        batch_size: rows per forward pass.
        pad_id: the id left padding is filled with (never attended).
    Returns:
        One `(summed log-probability, is_greedy)` per request.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations; pass one per context")
    windows = [continuation_window(list(c), list(t), max_length, prefix_token) for c, t in zip(contexts, continuations)]
    return score_windows(model, windows, batch_size, pad_id, batch_scorer=_greedy_scored_batch)
