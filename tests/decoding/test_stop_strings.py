"""Stop strings: a row stops when a stop string overlaps the token just generated, as in transformers."""

import pytest
import torch

import decoding
from decoding.stopping import StopStrings


class CharTokenizer:
    """Token i decodes to VOCAB[i]; enough to test the overlap rule by hand."""

    VOCAB = ["", "st", "op", "stop", "opera", "sto", "pper", "las", "topper", "s", "to", "pped", "at", "x"]

    def decode(self, ids, **_):
        return "".join(self.VOCAB[i] for i in ids)


def encode(*pieces):
    return [CharTokenizer.VOCAB.index(p) for p in pieces]


@pytest.mark.parametrize("pieces, hit", [
    (("st", "op"), True), (("stop",), True), (("st", "opera"), True), (("sto", "pper"), True),
    (("las", "topper"), True), (("s", "to", "pped"), True),
    (("stop", "at"), False), (("st", "op", "at"), False), (("x", "x"), False),
])
def test_overlap_rule_of_transformers_docs(pieces, hit):
    # The examples of transformers' StopStringCriteria docstring.
    matcher = StopStrings(["stop"], CharTokenizer())
    assert matcher.row_hit(encode(*pieces)) is hit


@pytest.mark.slow
@pytest.mark.parametrize("stop", [["."], [","], [" the", "States"]])
def test_stop_strings_match_generate_on_smollm2(smollm2, stop):
    model, tokenizer = smollm2
    prompts = ["The Congress of the United States", "In my first year in office, we"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(do_sample=True, top_p=0.95, max_new_tokens=25, stop_strings=stop)
    torch.manual_seed(1)
    reference = model.generate(batch.input_ids, attention_mask=batch.attention_mask, tokenizer=tokenizer, **kwargs)
    torch.manual_seed(1)
    ours = decoding.generate(model, batch.input_ids, batch.attention_mask, tokenizer=tokenizer, **kwargs)
    assert torch.equal(reference, ours.sequences)
    for row, reason in enumerate(ours.finish_reasons):
        n = int(ours.new_token_mask[row].sum())
        text = tokenizer.decode(ours.new_token_ids[row, :n])
        if reason == "stop_string":
            assert any(s in text for s in stop)
    assert "stop_string" in ours.finish_reasons
