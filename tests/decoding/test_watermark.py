"""The Kirchenbauer watermark (`watermarking_config`) and its detector, held to transformers 5.24.

What must hold: our processor gives bit for bit the scores of `WatermarkLogitsProcessor` (both seeding
schemes, context widths 1 and 2, -inf and ties), `decoding.generate(watermarking_config=...)` gives the tokens
of `model.generate(watermarking_config=...)` (left-padded, three caches, greedy, sampling, beam search), our
detector's z is `WatermarkDetector`'s z for the same ids, watermarked text scores high and plain text does not,
batched sweep rows with different watermarks equal their runs alone, and bad values are named errors.
Ported cases: transformers' tests/generation/test_logits_process.py (`test_watermarking_processor`) and
tests/generation/test_watermarking.py (`test_num_tokens_scored`), same inputs and expected outputs.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GenerationConfig, SynthIDTextWatermarkingConfig, WatermarkingConfig
from transformers import WatermarkDetector as TransformersDetector
from transformers.generation.logits_process import WatermarkLogitsProcessor

import decoding
from decoding.processors import TRANSFORMERS_PROCESSOR_ORDER, LogitNormalization, Watermark, WatermarkSettings
from decoding.processors.order import build_processors
from decoding.processors.watermark import SELFHASH_CANDIDATES
from decoding.watermark_detect import WatermarkDetector, p_value
from tests.decoding.reference import reference_and_ours
from tests.decoding.test_processor_properties import PROPERTY, id_tensors, score_tensors

KEY = 15485863
SCHEMES = [("lefthash", 1), ("lefthash", 2), ("selfhash", 1), ("selfhash", 2)]


def theirs_and_ours(vocab, **fields):
    """transformers' processor and ours for the same WatermarkingConfig fields."""
    settings = WatermarkSettings(**fields)
    return WatermarkLogitsProcessor(vocab_size=vocab, device="cpu", **fields), Watermark(settings, vocab)


# --- ported: test_logits_process.py, test_watermarking_processor -------------------------------------------

def test_ported_watermarking_processor():
    batch_size, vocab_size = 3, 20
    torch.manual_seed(0)
    input_ids = torch.randint(0, 20, (batch_size, 5))
    scores = torch.full((batch_size, vocab_size), 1.0 / vocab_size)  # _get_uniform_logits
    input_ids[:, -1] = 10  # fixed last token: its greenlist holds token 1
    watermark = Watermark(WatermarkSettings(), vocab_size)
    scores_wo_bias = scores[:, -1].clone()
    out = watermark(input_ids, scores)
    assert (out[:, 1] == scores_wo_bias + 2.0).all()
    assert torch.equal(scores, torch.full((batch_size, vocab_size), 1.0 / vocab_size))  # not in place
    assert int((out != scores).sum()) == batch_size * int(vocab_size * 0.25)  # 5 green tokens per row


@pytest.mark.parametrize("bad, message", [
    (dict(seeding_scheme="hash"), "watermarking_config.seeding_scheme='hash'"),
    (dict(greenlist_ratio=1.2), "watermarking_config.greenlist_ratio=1.2"),
])
def test_ported_watermarking_processor_errors(tiny_llama, bad, message):
    with pytest.raises(ValueError, match=message):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), watermarking_config=bad, max_new_tokens=2)


# --- ported: test_watermarking.py, test_num_tokens_scored ----------------------------------------------------

NUM_TOKENS_CASES = [
    (scheme, width, tokens, ignore, unique if ignore else windows)
    for scheme, width, windows in [("lefthash", 1, 9), ("lefthash", 2, 8), ("selfhash", 1, 10), ("selfhash", 2, 9)]
    for tokens, unique in [([3] * 10, 1), ([1, 2] * 5, 2), (list(range(1, 11)), windows)]
    for ignore in (True, False)
]


@pytest.mark.parametrize("scheme, width, tokens, ignore, expected_count", NUM_TOKENS_CASES)
def test_ported_num_tokens_scored(scheme, width, tokens, ignore, expected_count):
    settings = WatermarkingConfig(greenlist_ratio=0.25, seeding_scheme=scheme, context_width=width)
    detector = WatermarkDetector(settings, 128, bos_token_id=127, ignore_repeated_ngrams=ignore)  # GPT2Config(128)
    (score,) = detector(torch.tensor([tokens]))
    assert score.num_tokens_scored == expected_count
    if len(set(tokens)) == 1:  # one repeated n-gram: all green or none, as its greenlist says
        n = width + 1 if scheme == "lefthash" else width
        prefix = tokens[:n - 1] if scheme == "lefthash" else tokens[:n]
        reference = WatermarkLogitsProcessor(vocab_size=128, device="cpu", **settings.to_dict())
        green = expected_count if tokens[0] in reference._get_greenlist_ids(torch.tensor(prefix)) else 0
        if scheme == "lefthash" and width == 1:
            assert green == expected_count
        assert score.num_green_tokens == green
        expected_z = (green - 0.25 * expected_count) / math.sqrt(expected_count * 0.25 * 0.75)
        assert score.z_score == pytest.approx(expected_z, abs=1e-7)
        assert score.detected(3.0) == (expected_z > 3.0)


# --- the processor against transformers' --------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scheme, width", SCHEMES)
def test_processor_equals_transformers_bit_for_bit(scheme, width, seed):
    gen = torch.Generator().manual_seed(seed)
    vocab = 300
    ids = torch.randint(0, vocab, (5, 6), generator=gen)
    scores = torch.randn(5, vocab, generator=gen) * 3
    scores[0, :100] = -math.inf  # a truncated row
    scores[1] = 0.5  # all tied
    scores[2, ::3] = scores[2, 0]  # ties across selfhash's 40th place
    for bias in (2.0, 0.1, -1.5):
        theirs, ours = theirs_and_ours(vocab, greenlist_ratio=0.3, bias=bias, seeding_scheme=scheme,
                                       context_width=width, hashing_key=KEY + seed)
        before = scores.clone()
        out = ours(ids, scores)
        assert torch.equal(out, theirs(ids, scores)), bias
        assert torch.equal(scores, before)  # never in place
        assert not torch.equal(out, scores)


@PROPERTY
@given(data=st.data())
def test_property_equals_transformers_on_drawn_scores(data):
    """Drawn scores (-inf, ties, 1e-30..1e30 scales; tests/decoding/test_processor_properties.py), ids, ratios,
    biases and keys (products past int64 wrap): equal to transformers bit for bit, input unchanged. Where
    transformers fails (selfhash with no green candidate: an empty float index) ours leaves the scores as
    they are."""
    scheme = data.draw(st.sampled_from(["lefthash", "selfhash"]))
    scores = data.draw(score_tensors(max_vocab=96))
    if scheme == "selfhash" and scores.shape[1] < SELFHASH_CANDIDATES:  # transformers needs 40 candidates
        scores = torch.cat([scores, scores.new_full((scores.shape[0], SELFHASH_CANDIDATES), -math.inf)], dim=1)
    rows, vocab = scores.shape
    ids = data.draw(id_tensors(rows, vocab, max_length=6))
    fields = dict(seeding_scheme=scheme, context_width=data.draw(st.integers(1, 3)),
                  greenlist_ratio=data.draw(st.sampled_from([0.05, 0.25, 0.5, 0.9])),
                  bias=data.draw(st.sampled_from([2.0, 0.5, -1.0, 1e-3, 30.0])),
                  hashing_key=data.draw(st.sampled_from([KEY, 0, 1, 2**40 + 7, 2**62])))
    theirs, ours = theirs_and_ours(vocab, **fields)
    before, ids_before = scores.clone(), ids.clone()
    out = ours(ids, scores)
    assert torch.equal(scores, before) and torch.equal(ids, ids_before)
    try:
        expected = theirs(ids, scores)
    except IndexError:  # "tensors used as indices must be long": no candidate of some row was green
        assert scheme == "selfhash"
        expected = torch.cat([_rows_alone(theirs, ids[b:b + 1], scores[b:b + 1]) for b in range(rows)])
    assert torch.equal(out, expected)


def _rows_alone(processor, ids, scores):
    """transformers' processor on one row (rows are independent), or the row unchanged where it fails."""
    try:
        return processor(ids, scores)
    except IndexError:
        return scores


@pytest.mark.parametrize("scheme, width", SCHEMES)
def test_processor_equals_transformers_on_logits_wider_than_the_vocabulary(scheme, width):
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 200, (3, 4), generator=gen)
    scores = torch.randn(3, 256, generator=gen)  # a head padded past config.vocab_size = 200
    theirs, ours = theirs_and_ours(200, seeding_scheme=scheme, context_width=width)
    out = ours(ids, scores)
    assert torch.equal(out, theirs(ids, scores))
    assert torch.equal(out[:, 200:], scores[:, 200:])  # ids past the vocabulary are never green


def test_too_short_rows_are_left_unchanged_as_generate_leaves_them():
    theirs, ours = theirs_and_ours(100, context_width=3)
    ids, scores = torch.tensor([[4, 5]]), torch.randn(1, 100)
    assert ours(ids, scores) is scores
    assert torch.equal(theirs(ids, scores), scores)


def test_same_greenlists_on_repeat_calls_with_a_warm_cache():
    """The cache of greenlists by seed must give what a cold processor gives."""
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 50, (6, 3), generator=gen)
    scores = torch.randn(6, 400, generator=gen)
    for scheme in ("lefthash", "selfhash"):
        warm = Watermark(WatermarkSettings(seeding_scheme=scheme), 400)
        first = warm(ids, scores)
        again = warm(ids.flip(0), scores.flip(0))
        assert torch.equal(again, Watermark(WatermarkSettings(seeding_scheme=scheme), 400)(ids.flip(0), scores.flip(0)))
        assert torch.equal(again, first.flip(0))


def test_watermark_sits_after_the_warpers_and_before_renormalize_logits():
    order = TRANSFORMERS_PROCESSOR_ORDER
    assert order.index("eta_cutoff") < order.index("watermarking_config") == order.index("renormalize_logits") - 1


def test_build_processors_places_it_as_generate_does(tiny_llama):
    p = decoding.resolve_params(tiny_llama, 4, max_new_tokens=3, do_sample=True, top_k=5, renormalize_logits=True,
                                watermarking_config=dict(bias=1.0))
    built = build_processors(p, 4, model=tiny_llama)
    assert [type(x).__name__ for x in built][-3:] == ["TopK", "Watermark", "LogitNormalization"]
    assert isinstance(built[-1], LogitNormalization) and built[-2].vocab_size == tiny_llama.config.vocab_size
    theirs = tiny_llama._get_logits_processor(GenerationConfig(do_sample=True, top_k=5, renormalize_logits=True,
                                                               watermarking_config=WatermarkingConfig(bias=1.0)),
                                              device="cpu")
    assert [type(x).__name__ for x in theirs][-3:] == ["TopKLogitsWarper", "WatermarkLogitsProcessor",
                                                      "LogitNormalization"]


# --- generate, token for token -------------------------------------------------------------------------------

MODES = {"greedy": dict(do_sample=False), "sample": dict(do_sample=True, top_k=20)}


@pytest.mark.parametrize("cache", ["none", "dynamic", "static"])
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scheme, width", [("lefthash", 1), ("selfhash", 2)])
def test_tokens_equal_generate(tiny_model, padded_batch, scheme, width, mode, cache):
    ids, mask = padded_batch
    fields = dict(bias=3.0, seeding_scheme=scheme, context_width=width)
    base = dict(MODES[mode], max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    torch.manual_seed(0)
    reference = tiny_model.generate(ids, attention_mask=mask, watermarking_config=WatermarkingConfig(**fields), **base)
    torch.manual_seed(0)
    ours = decoding.generate(tiny_model, ids, mask, cache=cache, watermarking_config=fields, **base)  # a dict
    assert torch.equal(reference, ours.sequences)
    torch.manual_seed(0)
    plain = decoding.generate(tiny_model, ids, mask, cache=cache, **base)
    assert not torch.equal(plain.sequences, ours.sequences)  # the watermark changed the tokens


def test_tokens_equal_generate_when_the_prompt_is_shorter_than_the_context(tiny_gpt2):
    ids = torch.tensor([[7, 8], [9, 10]])
    config = WatermarkingConfig(bias=4.0, context_width=4)  # generate skips the first two steps
    reference, ours = reference_and_ours(tiny_gpt2, ids, None, watermarking_config=config, max_new_tokens=6,
                                         do_sample=True, pad_token_id=0, eos_token_id=[])
    assert torch.equal(reference, ours.sequences)


@pytest.mark.parametrize("do_sample", [False, True])
def test_beam_search_tokens_equal_generate(tiny_llama, padded_batch, do_sample):
    ids, mask = padded_batch
    reference, ours = reference_and_ours(tiny_llama, ids, mask, watermarking_config=WatermarkingConfig(bias=2.5),
                                         num_beams=3, do_sample=do_sample, max_new_tokens=6, pad_token_id=0,
                                         eos_token_id=[5])
    assert torch.equal(reference, ours.sequences)


def test_a_passed_generation_config_carries_the_watermark(tiny_gpt2, padded_batch):
    ids, mask = padded_batch
    config = GenerationConfig(watermarking_config=WatermarkingConfig(bias=5.0, seeding_scheme="selfhash"),
                              do_sample=True, max_new_tokens=6, pad_token_id=0, eos_token_id=[])
    torch.manual_seed(1)
    reference = tiny_gpt2.generate(ids, attention_mask=mask, generation_config=config)
    torch.manual_seed(1)
    ours = decoding.generate(tiny_gpt2, ids, mask, generation_config=config)
    assert torch.equal(reference, ours.sequences)


# --- the detector ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("scheme, width", SCHEMES)
def test_detector_z_equals_transformers(tiny_llama, scheme, width, ignore):
    config = WatermarkingConfig(bias=2.0, seeding_scheme=scheme, context_width=width, greenlist_ratio=0.3)
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(2, 60, (4, 25), generator=gen)  # small ids: repeated n-grams
    ids[:, 0] = tiny_llama.config.bos_token_id  # a BOS column, dropped by both
    theirs = TransformersDetector(tiny_llama.config, "cpu", config, ignore_repeated_ngrams=ignore)(ids,
                                                                                                   return_dict=True)
    ours = WatermarkDetector(config, tiny_llama.config.vocab_size, bos_token_id=tiny_llama.config.bos_token_id,
                             ignore_repeated_ngrams=ignore)(ids)
    assert [s.z_score for s in ours] == theirs.z_score.tolist()  # the same float64 operations: equal, not close
    assert [s.num_green_tokens for s in ours] == theirs.num_green_tokens.tolist()
    assert [s.num_tokens_scored for s in ours] == theirs.num_tokens_scored.tolist()
    assert [s.p_value for s in ours] == theirs.p_value.tolist()
    assert [s.detected(3.0) for s in ours] == theirs.prediction.tolist()


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_watermarked_text_scores_high_and_plain_text_does_not(tiny_model, scheme):
    """With bias 2 a green token is e^2 times as likely as before: on the tiny random model's flat distribution
    about 70% of sampled tokens are green instead of 25%, so 120 tokens give z near 10; without the
    watermark green is chance, z ~ N(0, 1)."""
    config = dict(bias=2.0, seeding_scheme=scheme)
    ids = torch.tensor([[11, 12, 13], [21, 22, 23], [31, 32, 33], [41, 42, 43]])
    common = dict(do_sample=True, top_k=0, max_new_tokens=120, eos_token_id=[], pad_token_id=0)
    marked = decoding.generate(tiny_model, ids, generator=torch.Generator().manual_seed(0),
                               watermarking_config=config, **common)
    plain = decoding.generate(tiny_model, ids, generator=torch.Generator().manual_seed(0), **common)
    detector = WatermarkDetector(config, tiny_model.config.vocab_size)
    marked_z = [s.z_score for s in detector(marked.new_token_ids)]
    plain_z = [s.z_score for s in detector(plain.new_token_ids)]
    assert min(marked_z) > 4, marked_z
    assert max(abs(z) for z in plain_z) < 4, plain_z
    assert all(s.p_value < 1e-4 for s in detector(marked.new_token_ids))


def test_detector_scores_sequences_of_different_lengths_each_alone():
    detector = WatermarkDetector(WatermarkingConfig(), 100)
    rows = [[5, 6, 7, 8, 9], [5, 6, 7]]
    scores = detector(rows)
    assert [s.num_tokens_scored for s in scores] == [4, 2]
    assert scores[1] == detector(torch.tensor([[5, 6, 7]]))[0]
    assert p_value(0.0) == 0.5


@pytest.mark.parametrize("ids, message", [
    ([[5]], "too short"),
    (torch.tensor([[0, 5, 6], [5, 6, 7]]), "some rows start with bos_token_id"),
    (torch.tensor([5, 6, 7]), "use a \\(B, T\\) tensor"),
])
def test_detector_bad_input(ids, message):
    with pytest.raises(ValueError, match=message):
        WatermarkDetector(WatermarkingConfig(), 100, bos_token_id=0)(ids)


# --- batched sweeps --------------------------------------------------------------------------------------------

def test_sweep_rows_with_different_watermarks_equal_their_runs_alone(tiny_model, padded_batch):
    ids, mask = padded_batch
    shared = dict(do_sample=True, top_k=0, max_new_tokens=8, eos_token_id=[5], pad_token_id=0)
    configs = [dict(watermarking_config=dict(bias=1.0)), dict(watermarking_config=dict(bias=4.0)), dict(),
               dict(watermarking_config=dict(seeding_scheme="selfhash", greenlist_ratio=0.5)),
               dict(watermarking_config=dict(bias=4.0), top_p=0.8)]
    seeds = [3, 4, 5, 6, 7]
    results = decoding.generate_sweep(tiny_model, ids, mask, configs=configs,
                                      generators=[torch.Generator().manual_seed(s) for s in seeds], **shared)
    for config, seed, result in zip(configs, seeds, results):
        alone = decoding.generate(tiny_model, ids, mask, generator=torch.Generator().manual_seed(seed),
                                  **shared, **config)
        assert torch.equal(result.sequences, alone.sequences), config


# --- bad values -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    (dict(greenlist_ratio=0.0), r"watermarking_config.greenlist_ratio=0.0 is not allowed: use a number in \(0, 1\)"),
    (dict(greenlist_ratio=1), r"watermarking_config.greenlist_ratio=1 is not allowed"),
    (dict(greenlist_ratio="0.5"), r"watermarking_config.greenlist_ratio='0.5'"),
    (dict(bias=math.nan), r"watermarking_config.bias=nan is not allowed: use a finite number"),
    (dict(bias=math.inf), r"watermarking_config.bias=inf"),
    (dict(bias=True), r"watermarking_config.bias=True"),
    (dict(hashing_key=1.5), r"watermarking_config.hashing_key=1.5 is not allowed: use an integer in \[0, 2\*\*63\)"),
    (dict(hashing_key=-1), r"watermarking_config.hashing_key=-1"),
    (dict(hashing_key=2**63), r"watermarking_config.hashing_key=9223372036854775808"),
    (dict(seeding_scheme="LeftHash"), r"watermarking_config.seeding_scheme='LeftHash' is not allowed: use one of "
                                      r"\['lefthash', 'selfhash'\]"),
    (dict(context_width=0), r"watermarking_config.context_width=0 is not allowed: use an integer >= 1"),
    (dict(context_width=1.0), r"watermarking_config.context_width=1.0"),
    (dict(bais=2.0), r"watermarking_config.bais=2.0 is not a watermark setting \(did you mean "
                     r"watermarking_config.bias\?\)"),
    ("lefthash", r"watermarking_config='lefthash' is not allowed: use a transformers.WatermarkingConfig"),
    (SynthIDTextWatermarkingConfig(ngram_len=5, keys=[1, 2]), r"(?s)watermarking_config=.* is not allowed: .*"
                                                              r"SynthID's config is not supported"),
])
def test_bad_values_are_named(tiny_llama, value, message):
    with pytest.raises(ValueError, match=message):
        decoding.generate(tiny_llama, torch.tensor([[1, 2, 3]]), watermarking_config=value, max_new_tokens=2)
    with pytest.raises(ValueError, match=message):  # the runner's check, without a model
        decoding.resolve_params(None, 3, max_new_tokens=2, watermarking_config=value)


# --- the device the text is generated on -------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: greenlists are drawn on the scores' device")
@pytest.mark.parametrize("scheme, width", SCHEMES)
def test_cuda_greenlists_equal_transformers_on_cuda(scheme, width):
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(0, 500, (4, 5), generator=gen).cuda()
    scores = torch.randn(4, 500, generator=gen).cuda()
    theirs = WatermarkLogitsProcessor(vocab_size=500, device="cuda", seeding_scheme=scheme, context_width=width)
    ours = Watermark(WatermarkSettings(seeding_scheme=scheme, context_width=width), 500)
    assert torch.equal(ours(ids, scores), theirs(ids, scores))
    cpu = Watermark(WatermarkSettings(seeding_scheme=scheme, context_width=width), 500)(ids.cpu(), scores.cpu())
    assert not torch.equal(cpu, theirs(ids, scores).cpu())  # another device, other greenlists
    config = WatermarkingConfig(seeding_scheme=scheme, context_width=width)
    text = torch.randint(2, 500, (3, 30), generator=gen).cuda()
    model_config = type("C", (), dict(bos_token_id=1, is_encoder_decoder=False, vocab_size=500))()
    reference = TransformersDetector(model_config, "cuda", config)(text, return_dict=True)
    detected = WatermarkDetector(config, 500, bos_token_id=1, device="cuda")(text)
    assert [s.z_score for s in detected] == reference.z_score.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("mode, fields", [("sample", dict(bias=2.0)),
                                          ("greedy", dict(bias=4.0, seeding_scheme="selfhash", context_width=2))])
def test_tokens_equal_generate_on_smollm2(smollm2, mode, fields, cache):
    model, tokenizer = smollm2
    prompts = ["The state of the union is", "Mr. Speaker, Mr. Vice President, Members of Congress,", "Tonight"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    reference, ours = reference_and_ours(model, batch.input_ids, batch.attention_mask, cache, max_new_tokens=12,
                                         watermarking_config=WatermarkingConfig(**fields), **MODES[mode])
    assert torch.equal(reference, ours.sequences)
    plain = decoding.generate(model, batch.input_ids, batch.attention_mask, cache=cache, max_new_tokens=12,
                              **MODES[mode], **({"generator": torch.Generator().manual_seed(0)} if mode == "sample"
                                                else {}))
    assert not torch.equal(plain.sequences, ours.sequences)
