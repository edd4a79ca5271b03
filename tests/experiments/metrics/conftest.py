"""Fixtures for the metric tests: SmolLM2's tokenizer with a tiny random model (fast)."""

import pytest


@pytest.fixture(scope="session")
def tiny_llama_with_tokenizer():
    from experiments.models import load_model

    return load_model("tiny_llama")


@pytest.fixture(scope="session")
def tokenizer(tiny_llama_with_tokenizer):
    return tiny_llama_with_tokenizer[1]
