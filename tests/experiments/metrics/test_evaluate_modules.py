"""The local `evaluate` modules load with no network and give the plain functions' numbers."""

import socket

import pytest

from experiments.metrics.diversity import diversity_metrics
from experiments.metrics.evaluate_modules import MODULES, module_path
from experiments.metrics.repetition import repetition_pct
from experiments.metrics.self_bleu import self_bleu
from experiments.metrics.tokens import tokenize
from experiments.metrics.zipf import zipf_coefficient

evaluate = pytest.importorskip("evaluate")

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "go go go go go go go go", "a b c a b c", ""]


def _plain(name, tokens):
    if name == "diversity":
        return diversity_metrics(tokens)
    if name == "self_bleu":
        return {"self_bleu4": self_bleu(tokens)}
    if name == "zipf":
        return {"zipf": zipf_coefficient(tokens)}
    return {"repetition_pct": repetition_pct(tokens)}


@pytest.fixture(scope="module")
def loaded():
    # Any connection attempt while loading fails the test: the modules must not need the hub.
    with pytest.MonkeyPatch.context() as patch:
        def refuse(*args, **kwargs):
            raise AssertionError("evaluate.load tried to open a network connection")

        patch.setattr(socket.socket, "connect", refuse)
        return {name: evaluate.load(module_path(name), keep_in_memory=True) for name in MODULES}


@pytest.mark.parametrize("name", MODULES)
def test_module_matches_plain_function_on_words(loaded, name):
    result = loaded[name].compute(predictions=TEXTS)
    assert result == pytest.approx(_plain(name, tokenize(TEXTS, tokenization="whitespace")))


@pytest.mark.parametrize("name", MODULES)
def test_module_matches_plain_function_on_model_tokens(loaded, name, tokenizer):
    result = loaded[name].compute(predictions=TEXTS, tokenizer=tokenizer)
    assert result == pytest.approx(_plain(name, tokenize(TEXTS, tokenizer)))


def test_module_passes_options_through(loaded):
    result = loaded["diversity"].compute(predictions=["a b a b"], simctg_last_ngram_dropped=True)
    assert result["rep_2"] == 0.0  # their script sees only "a b", "b a"


def test_unknown_module_name():
    with pytest.raises(ValueError, match="no local evaluate module named 'bleurt'"):
        module_path("bleurt")
