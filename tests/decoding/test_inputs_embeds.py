"""`generate(model, inputs_embeds=...)` against `model.generate(inputs_embeds=...)` (decoding/embeds.py).

Two kinds of call, as generate has them for a decoder-only model: embeddings alone (`sequences` holds the new
tokens only, and every processor sees only the new tokens) and embeddings with the prompt's ids (the embeddings
feed the first forward, the ids are the prompt everywhere else). The embeddings are the model's own
(`model.get_input_embeddings()(ids)`), so both must also give the tokens of the ids-only call.

Partly ported from transformers' tests/generation/test_utils.py (test_generate_from_inputs_embeds,
test_max_length_if_input_embeds, test_min_length_if_input_embeds): the same checks on our tiny models.
"""

import warnings

import pytest
import torch

from transformers import WatermarkingConfig

import decoding
from experiments.models import build_tiny_model
from tests.decoding.offline_tokenizers import BUILDERS

SPECIAL = dict(pad_token_id=0, eos_token_id=None)  # pad id 0 as in padded_batch; no EOS unless a test sets one


def embed(model, ids):
    with torch.no_grad():
        return model.get_input_embeddings()(ids)  # (B, T, H)


def both(model, ids, embeds, mask, *, with_ids, cache="dynamic", seed=0, **kwargs):
    """(model.generate's output, ours) for a prompt given as embeddings (and ids if `with_ids`), same seed."""
    given = dict(input_ids=ids) if with_ids else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generate's "penalty only on new tokens" warnings: under test here
        torch.manual_seed(seed)
        reference = model.generate(**given, inputs_embeds=embeds, attention_mask=mask, **kwargs)
        torch.manual_seed(seed)
        ours = decoding.generate(model, ids if with_ids else None, mask, inputs_embeds=embeds, cache=cache,
                                 **kwargs)
    return reference, ours


def sequences_of(reference):
    return reference if isinstance(reference, torch.Tensor) else reference.sequences


@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("sampling", [dict(), dict(do_sample=True, top_k=20)], ids=["greedy", "sample"])
def test_tokens_equal_generate(tiny_model, padded_batch, cache, with_ids, sampling):
    ids, mask = padded_batch
    embeds = embed(tiny_model, ids)
    reference, ours = both(tiny_model, ids, embeds, mask, with_ids=with_ids, cache=cache, max_new_tokens=6,
                           **sampling, **SPECIAL)
    assert torch.equal(reference, ours.sequences)
    prompt = ids.shape[1] if with_ids else 0
    assert ours.sequences.shape == (3, prompt + 6) and ours.prompt_length == prompt
    if with_ids:
        assert torch.equal(ours.sequences[:, :prompt], ids)


@pytest.mark.parametrize("cache", ["dynamic", "none"])
def test_own_embeddings_give_the_ids_only_tokens(tiny_model, padded_batch, cache):
    """test_generate_from_inputs_embeds: the model's own embeddings are the prompt; other embeddings are not."""
    ids, mask = padded_batch
    embeds = embed(tiny_model, ids)
    plain = decoding.generate(tiny_model, ids, mask, max_new_tokens=6, cache=cache, **SPECIAL)
    both_given = decoding.generate(tiny_model, ids, mask, inputs_embeds=embeds, max_new_tokens=6, cache=cache,
                                   **SPECIAL)
    alone = decoding.generate(tiny_model, None, mask, inputs_embeds=embeds, max_new_tokens=6, cache=cache, **SPECIAL)
    assert torch.equal(plain.sequences, both_given.sequences)
    assert torch.equal(plain.new_token_ids, alone.sequences)
    other = decoding.generate(tiny_model, ids, mask, inputs_embeds=torch.randn_like(embeds) * 5, max_new_tokens=6,
                              cache=cache, **SPECIAL)
    assert not torch.equal(plain.sequences, other.sequences)  # the embeddings, not the ids, fed the prefill


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("settings", [dict(num_beams=3), dict(num_beams=3, num_return_sequences=2),
                                      dict(num_beams=2, do_sample=True)], ids=["beam", "beam-n2", "beam-sample"])
def test_beam_search_equals_generate(tiny_model, padded_batch, with_ids, settings):
    ids, mask = padded_batch
    reference, ours = both(tiny_model, ids, embed(tiny_model, ids), mask, with_ids=with_ids, max_new_tokens=5,
                           **settings, **SPECIAL)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
def test_num_return_sequences_share_one_prefill_from_embeddings(tiny_llama, padded_batch, with_ids):
    ids, mask = padded_batch
    calls = []

    def record(module, args, kwargs):
        calls.append((kwargs.get("inputs_embeds") is not None, kwargs.get("input_ids") is not None))

    hook = tiny_llama.register_forward_pre_hook(record, with_kwargs=True)
    try:
        torch.manual_seed(0)
        ours = decoding.generate(tiny_llama, ids if with_ids else None, mask, inputs_embeds=embed(tiny_llama, ids),
                                 do_sample=True, num_return_sequences=2, max_new_tokens=4, **SPECIAL)
    finally:
        hook.remove()
    assert calls == [(True, False)] + [(False, True)] * 3  # one prefill from embeddings, then token ids
    torch.manual_seed(0)
    reference = tiny_llama.generate(**(dict(input_ids=ids) if with_ids else {}), inputs_embeds=embed(tiny_llama, ids),
                                    attention_mask=mask, do_sample=True, num_return_sequences=2, max_new_tokens=4,
                                    **SPECIAL)
    assert torch.equal(reference, ours.sequences) and ours.sequences.shape[0] == 6


def eos_that_ends_rows_early(model, ids, mask):
    """EOS ids that end every row within its first three greedy tokens, so a minimum length is visible."""
    free = decoding.generate(model, ids, mask, max_new_tokens=3, **SPECIAL)
    return sorted(set(free.new_token_ids[:, 1:].flatten().tolist()))


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("lengths", [dict(min_new_tokens=5, max_new_tokens=7), dict(min_length=8, max_new_tokens=7),
                                     dict(max_length=9), dict(min_length=3, max_length=8)],
                         ids=["min_new_tokens", "min_length", "max_length", "min+max_length"])
def test_lengths_count_as_generate_counts_them(tiny_model, padded_batch, with_ids, lengths):
    """test_max_length_if_input_embeds / test_min_length_if_input_embeds: with embeddings alone max_length still
    counts the embedded prompt, min_length is lowered by it, min_new_tokens counts new tokens."""
    ids, mask = padded_batch
    eos = eos_that_ends_rows_early(tiny_model, ids, mask)
    reference, ours = both(tiny_model, ids, embed(tiny_model, ids), mask, with_ids=with_ids,
                           **lengths, pad_token_id=0, eos_token_id=eos)
    assert torch.equal(reference, ours.sequences)
    if "max_length" in lengths:
        assert ours.sequences.shape[1] - ours.prompt_length <= lengths["max_length"] - ids.shape[1]


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("settings", [dict(repetition_penalty=3.0), dict(no_repeat_ngram_size=1),
                                      dict(repetition_penalty=2.0, do_sample=True), dict(sequence_bias={(7,): -5.0}),
                                      dict(begin_suppress_tokens=[390, 298]), dict(forced_bos_token_id=5),
                                      dict(exponential_decay_length_penalty=(2, 1.5), eos_token_id=[5]),
                                      dict(watermarking_config=WatermarkingConfig(), do_sample=True)],
                         ids=["repetition", "ngram", "repetition-sample", "sequence-bias", "begin-suppress",
                              "forced-bos", "decay-penalty", "watermark"])
def test_processors_see_the_input_ids_generate_gives_them(tiny_model, padded_batch, with_ids, settings):
    """With embeddings alone, generate's input_ids hold only new tokens: the penalties never see the prompt (and,
    on a padded batch, the repetition penalty skips each row's first `padding` new tokens, as generate does)."""
    ids, mask = padded_batch
    reference, ours = both(tiny_model, ids, embed(tiny_model, ids), mask, with_ids=with_ids, max_new_tokens=8,
                           **{**SPECIAL, **settings})
    assert torch.equal(reference, ours.sequences)


def test_prompt_tokens_are_not_penalised_without_ids(tiny_llama, padded_batch):
    """The hand check behind the parity above: a prompt whose free next token is one of its own tokens; a huge
    repetition penalty bans that token only when the ids are given (with embeddings alone nothing was seen)."""
    ids = padded_batch[0][:1]
    run = decoding.generate(tiny_llama, ids, max_new_tokens=30, **SPECIAL).sequences[0].tolist()
    cut = next(k for k in range(ids.shape[1], len(run)) if run[k] in run[:k])  # greedy repeats a seen token
    prompt, free = torch.tensor([run[:cut]]), run[cut]
    embeds = embed(tiny_llama, prompt)
    kwargs = dict(max_new_tokens=1, repetition_penalty=1e6, **SPECIAL)
    mask = torch.ones_like(prompt)  # the run holds id 0, the pad id: not padding here
    alone = decoding.generate(tiny_llama, None, mask, inputs_embeds=embeds, **kwargs).sequences[0, 0]
    with_ids = decoding.generate(tiny_llama, prompt, mask, inputs_embeds=embeds, **kwargs).sequences[0, -1]
    assert int(alone) == free
    assert int(with_ids) != free and int(with_ids) not in prompt[0].tolist()


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_output_scores_and_logits_as_generate_lays_them_out(tiny_llama, padded_batch, with_ids, num_beams):
    ids, mask = padded_batch
    reference, ours = both(tiny_llama, ids, embed(tiny_llama, ids), mask, with_ids=with_ids, max_new_tokens=4,
                           num_beams=num_beams, repetition_penalty=1.5, output_scores=True, output_logits=True,
                           return_dict_in_generate=True, **SPECIAL)
    assert torch.equal(reference.sequences, ours.sequences)
    assert len(ours.scores) == len(reference.scores) == 4
    for mine, theirs in zip(ours.scores + ours.logits, reference.scores + reference.logits):
        assert mine.shape == theirs.shape == (3 * num_beams, tiny_llama.config.vocab_size)
        assert torch.allclose(mine, theirs.float(), atol=1e-5)


def test_no_mask_with_embeddings_alone_attends_every_slot(tiny_model):
    ids = torch.tensor([[11, 12, 13], [21, 22, 23]])
    reference, ours = both(tiny_model, ids, embed(tiny_model, ids), None, with_ids=False, max_new_tokens=4, **SPECIAL)
    assert torch.equal(reference, ours.sequences)


def test_no_mask_with_ids_is_inferred_from_the_pad_id(tiny_model, padded_batch):
    ids, _ = padded_batch
    reference, ours = both(tiny_model, ids, embed(tiny_model, ids), None, with_ids=True, max_new_tokens=4, **SPECIAL)
    assert torch.equal(reference, ours.sequences)
    plain = decoding.generate(tiny_model, ids, padded_batch[1], max_new_tokens=4, **SPECIAL)
    assert torch.equal(plain.sequences, ours.sequences)  # the pad id 0 marked the padding


def test_compiled_step_after_an_embedded_prefill(tiny_model, padded_batch, monkeypatch):
    import decoding.compiled as compiled

    monkeypatch.setattr(compiled, "BACKEND", "eager")  # dynamo traces, no code generation: fast
    torch._dynamo.reset()
    ids, mask = padded_batch
    embeds = embed(tiny_model, ids)
    try:
        eager = decoding.generate(tiny_model, None, mask, inputs_embeds=embeds, max_new_tokens=6, cache="static",
                                  **SPECIAL)
        fixed = decoding.generate(tiny_model, None, mask, inputs_embeds=embeds, max_new_tokens=6, cache="static",
                                  compile=True, **SPECIAL)
    finally:
        torch._dynamo.reset()
    assert torch.equal(eager.sequences, fixed.sequences)


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
def test_stop_strings_see_only_generate_input_ids(with_ids):
    """A stop string spanning the prompt's last token and the first new one ends the row only when the ids are
    given: with embeddings alone generate's input_ids (and so its stop-string check) start at the new tokens."""
    tokenizer = BUILDERS["byte_level_bpe"]()
    model = build_tiny_model("tiny_llama", vocab_size=len(tokenizer), seed=0)
    ids = torch.tensor([tokenizer("The state of our union is strong, and", add_special_tokens=False)["input_ids"]])
    free = decoding.generate(model, ids, max_new_tokens=6, pad_token_id=0, eos_token_id=None)
    last = tokenizer.decode(ids[0, -1:])
    first = tokenizer.decode(free.new_token_ids[0, :1])
    later = tokenizer.decode(free.new_token_ids[0, 3:4])
    stops = [s for s in (last[-1:] + first[:1], later.strip()) if s.strip()]
    reference, ours = both(model, ids, embed(model, ids), None, with_ids=with_ids, max_new_tokens=6,
                           stop_strings=stops, tokenizer=tokenizer, pad_token_id=0, eos_token_id=None)
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
@pytest.mark.parametrize("settings", [dict(encoder_repetition_penalty=3.0), dict(encoder_no_repeat_ngram_size=1)])
def test_encoder_input_processors_are_ignored_as_generate_ignores_them(tiny_llama, padded_batch, with_ids, settings):
    """generate's encoder input is the embeddings here, not ids: it warns and skips these processors."""
    from decoding.params import ACCEPTED_NAMES

    if not set(settings) <= ACCEPTED_NAMES:
        pytest.skip(f"{sorted(settings)} not supported by decodelab yet")
    ids, mask = padded_batch
    reference, ours = both(tiny_llama, ids, embed(tiny_llama, ids), mask, with_ids=with_ids, max_new_tokens=6,
                           **settings, **SPECIAL)
    assert torch.equal(reference, ours.sequences)
    with pytest.warns(UserWarning, match=f"{next(iter(settings))}=.* is ignored with inputs_embeds"):
        first = decoding.generate(tiny_llama, ids if with_ids else None, mask, inputs_embeds=embed(tiny_llama, ids),
                                  max_new_tokens=1, output_scores=True, **settings, **SPECIAL)
    plain = decoding.generate(tiny_llama, ids, mask, max_new_tokens=1, output_scores=True, **settings, **SPECIAL)
    prompt_token = ids[0, 0]  # row 0 is not padded: the processor changes its score with ids alone
    assert plain.scores[0][0, prompt_token] != first.scores[0][0, prompt_token]


class PutRecorder:
    """transformers' streamer protocol, recording what each put() was given."""

    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
def test_streamer_gets_what_generate_sends(tiny_llama, with_ids):
    """First the prompt's ids (none with embeddings alone: generate sends an empty (1, 0)), then each token."""
    ids = torch.tensor([[11, 12, 13]])
    streams = PutRecorder(), PutRecorder()
    for streamer, call in zip(streams, ("reference", "ours")):
        kwargs = dict(inputs_embeds=embed(tiny_llama, ids), max_new_tokens=3, streamer=streamer, **SPECIAL)
        if call == "reference":
            tiny_llama.generate(**(dict(input_ids=ids) if with_ids else {}), **kwargs)
        else:
            decoding.generate(tiny_llama, ids if with_ids else None, **kwargs)
    assert streams[0].puts == streams[1].puts and streams[1].ended
    assert streams[1].puts[0] == ([[11, 12, 13]] if with_ids else [[]])


# --- bad inputs: each a ValueError naming the parameter and what is allowed, before any forward pass ---

@pytest.fixture()
def no_forward(tiny_llama):
    calls = []
    hook = tiny_llama.register_forward_pre_hook(lambda *a: calls.append(1))
    yield tiny_llama
    hook.remove()
    assert not calls


def test_bad_inputs_are_refused_before_any_forward(no_forward, padded_batch):
    model = no_forward
    ids, mask = padded_batch
    embeds = embed(model, ids)
    hidden = embeds.shape[-1]
    cases = [
        (dict(inputs_embeds=[[0.0]]), r"inputs_embeds=\[\[0.0\]\] \(list\) is not allowed: pass a float tensor"),
        (dict(inputs_embeds=ids), r"inputs_embeds is a torch.int64 tensor .*must be a floating tensor"),
        (dict(inputs_embeds=embeds[0]), r"inputs_embeds has shape \(5, %d\) \(2 dimensions\): use \(B, T, hidden\)"
         % hidden),
        (dict(inputs_embeds=embeds[:, :0]), r"inputs_embeds has shape \(3, 0, %d\): an empty prompt" % hidden),
        (dict(inputs_embeds=torch.zeros(3, 5, hidden + 1)), r"last dimension %d must be the model's embedding "
         r"width %d" % (hidden + 1, hidden)),
        (dict(inputs_embeds=embeds.double()), r"inputs_embeds is a torch.float64 tensor .* model runs in "
         r"torch.float32: convert"),
        (dict(inputs_embeds=embeds.clone().index_fill_(1, torch.tensor([2]), float("nan"))),
         r"non-finite value \(NaN or inf\) at \(row, slot, feature\) \(0, 2, 0\)"),
        (dict(input_ids=ids[:, 1:], inputs_embeds=embeds), r"input_ids has shape \(3, 4\) but inputs_embeds has "
         r"\(3, 5, %d\): with both" % hidden),
        (dict(inputs_embeds=embeds, attention_mask=mask[:, 1:]), r"attention_mask has shape \(3, 4\) but "
         r"inputs_embeds has \(3, 5, %d\)" % hidden),
        (dict(inputs_embeds=embeds, attention_mask=mask.flip(1)), r"attention_mask rows \[1, 2\] end in 0"),
        (dict(inputs_embeds=embeds, guidance_scale=1.5), r"guidance_scale=1.5 is not allowed with inputs_embeds"),
        (dict(inputs_embeds=embeds, num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
         r"num_beam_groups=2 is not allowed with inputs_embeds"),
        (dict(input_ids=None), r"input_ids=None is not allowed without inputs_embeds"),
    ]
    for kwargs, message in cases:
        kwargs = {"input_ids": None, "attention_mask": mask, **kwargs}
        with pytest.raises(ValueError, match=message):
            decoding.generate(model, kwargs.pop("input_ids"), kwargs.pop("attention_mask"), max_new_tokens=3,
                              **kwargs, **SPECIAL)


def test_generate_sweep_refuses_inputs_embeds(no_forward, padded_batch):
    ids, mask = padded_batch
    with pytest.raises(ValueError, match=r"configs\[0\]: .*\['inputs_embeds'\].*only decoding.generate\(model, "
                                         r"inputs_embeds=...\) takes it"):
        decoding.generate_sweep(no_forward, ids, mask, configs=[dict(inputs_embeds=embed(no_forward, ids))],
                                max_new_tokens=3)


@pytest.mark.slow
@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "ids+embeds"])
def test_smollm2_tokens_equal_generate(smollm2, with_ids):
    model, tokenizer = smollm2
    batch = tokenizer(["The state of the union is", "Mr. Speaker, Mr. Vice President,"], return_tensors="pt",
                      padding=True)
    assert bool((batch.attention_mask == 0).any())  # left-padded
    reference, ours = both(model, batch.input_ids, embed(model, batch.input_ids), batch.attention_mask,
                           with_ids=with_ids, max_new_tokens=8, do_sample=True, repetition_penalty=1.3)
    assert torch.equal(reference, ours.sequences)
