"""docs/generate_keywords.md, the survey of what `model.generate` accepts, cannot go stale: every field of the
installed transformers' `GenerationConfig` and every named argument of `generate` has a row, and each row's
status is what the code does (supported: accepted; refused: a ValueError with its reason; ignored: accepted
and dropped; issue-14: refused with that reason until that issue adds it).
"""

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.utils import GenerationMixin

import decoding
from decoding.params import ACCEPTED_NAMES, resolve_params
from decoding.refused_keywords import IGNORED, REFUSED, drop_neutral
from decoding.resolution import IGNORED_CONFIG_NAMES

SURVEY = Path(__file__).resolve().parents[2] / "docs" / "generate_keywords.md"
STATUSES = {"supported", "refused", "ignored", "issue-14", "in-progress"}
# decoding.generate's own named arguments (generate's `inputs` is our positional input_ids)
OUR_ARGUMENTS = {"input_ids", "inputs", "attention_mask", "generator", "tokenizer", "generation_config",
                 "inputs_embeds"}


def survey_rows() -> dict[str, str]:
    """keyword -> status word, from every table row `| `name` [/ `name`] | status | note |`."""
    rows = {}
    for line in SURVEY.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        status = cells[1].split()[0]
        for name in re.findall(r"`([A-Za-z_]+)`", cells[0]):
            assert name not in rows, f"{name} has two rows in {SURVEY.name}"
            rows[name] = status
    return rows


ROWS = survey_rows()


def by_status(*statuses):
    return sorted(name for name, status in ROWS.items() if status in statuses)


def resolve(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve_params(None, 5, None, **kwargs)


def test_every_status_is_known():
    assert set(ROWS.values()) <= STATUSES, set(ROWS.values()) - STATUSES


def test_every_generation_config_field_has_a_row():
    fields = {name for name in GenerationConfig().to_dict() if not name.startswith("_")}
    missing = sorted(fields - set(ROWS))
    assert not missing, f"GenerationConfig fields missing from {SURVEY.name}: {missing}"


def test_every_named_generate_argument_has_a_row():
    named = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
    missing = sorted(named - set(ROWS))
    assert not missing, f"generate arguments missing from {SURVEY.name}: {missing}"


@pytest.mark.parametrize("name", by_status("supported"))
def test_supported_names_are_accepted(name):
    assert name in ACCEPTED_NAMES or name in OUR_ARGUMENTS, f"{name} is marked supported but generate refuses it"


@pytest.mark.parametrize("name", by_status("refused", "issue-14"))
def test_refused_names_say_why_and_accept_their_neutral_value(name):
    if name in ACCEPTED_NAMES:  # another issue added it since the survey: the row must say supported
        pytest.fail(f"{name} is accepted now: mark it supported in {SURVEY.name}")
    assert name in REFUSED, f"{name} has no reason in decoding/refused_keywords.py"
    neutral, reason = REFUSED[name]
    with pytest.raises(ValueError) as err:
        resolve(**{name: object()})
    assert name in str(err.value) and reason in str(err.value) and "did you mean" not in str(err.value)
    if ROWS[name].startswith("issue-"):
        assert ROWS[name].replace("-", " ") in reason
    for value in neutral:
        resolve(**{name: value})  # generate's default: changes nothing, accepted


@pytest.mark.parametrize("name", by_status("ignored"))
def test_ignored_names_are_dropped(name):
    assert name in IGNORED or name in IGNORED_CONFIG_NAMES
    if name in IGNORED:
        assert drop_neutral({name: 3}) == {}
        resolve(**{name: 3})


def test_refusal_comes_before_any_forward_pass(tiny_llama):
    calls = []
    hook = tiny_llama.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="output_attentions: collecting every layer's attention"):
            decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), output_attentions=True, max_new_tokens=2)
        with pytest.raises(ValueError, match=r"inputs_embeds has shape \(1, 3, 8\): its last dimension 8 must be"):
            decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), inputs_embeds=torch.zeros(1, 3, 8))
    finally:
        hook.remove()
    assert not calls


def test_neutral_refused_keywords_change_nothing(tiny_llama):
    ids = torch.tensor([[5, 6, 7]])
    plain = decoding.generate(tiny_llama, ids, max_new_tokens=4)
    neutral = decoding.generate(tiny_llama, ids, max_new_tokens=4, output_attentions=False, low_memory=None,
                                penalty_alpha=0.0, bos_token_id=1, token_healing=False)
    assert torch.equal(plain.sequences, neutral.sequences)


def test_a_typo_still_names_the_closest_valid_name():
    with pytest.raises(ValueError, match="did you mean 'top_p'"):
        resolve(top_pp=0.9)


def test_top_h_without_sampling_warns_as_generate_validate_does(tiny_llama):
    with pytest.warns(UserWarning, match=r"\['top_h'\] only apply when sampling"):
        decoding.generate(tiny_llama, torch.tensor([[5, 6, 7]]), top_h=0.5, max_new_tokens=2)


def test_a_cache_object_is_refused_as_past_key_values_is():
    from transformers import DynamicCache

    with pytest.raises(ValueError, match=r"cache=DynamicCache\(...\) is not allowed: decodelab builds and owns"):
        resolve(cache=DynamicCache())
