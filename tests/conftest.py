"""Shared fixtures: tiny random models (fast) and the embedded SmolLM2 (slow, loaded once per session)."""

import pytest
import torch

from experiments.models import build_tiny_model

TINY_KINDS = ("tiny_llama", "tiny_gpt2")


@pytest.fixture(scope="session", params=TINY_KINDS)
def tiny_model(request):
    return build_tiny_model(request.param, vocab_size=1000, seed=0)


@pytest.fixture(scope="session")
def tiny_llama():
    return build_tiny_model("tiny_llama", vocab_size=1000, seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2():
    return build_tiny_model("tiny_gpt2", vocab_size=1000, seed=0)


@pytest.fixture(scope="session")
def smollm2():
    from experiments.models import load_model

    return load_model("smollm2")


@pytest.fixture()
def padded_batch():
    """Three prompts of lengths 5, 3 and 2, left-padded to 5 (pad id 0 is an ordinary token here)."""
    ids = torch.tensor([[11, 12, 13, 14, 15], [0, 0, 21, 22, 23], [0, 0, 0, 31, 32]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    return ids, mask
