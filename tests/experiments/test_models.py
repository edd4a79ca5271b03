"""Model loading: the embedded SmolLM2 and its converted-weights cache, hub ids, tiny random models."""

import os

import pytest
import torch

from experiments import models


def test_tiny_models_are_deterministic_by_seed():
    a = models.build_tiny_model("tiny_gpt2", seed=3)
    b = models.build_tiny_model("tiny_gpt2", seed=3)
    c = models.build_tiny_model("tiny_gpt2", seed=4)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
        assert not torch.equal(a(ids).logits, c(ids).logits)


def test_unknown_tiny_kind_and_dtype_are_named():
    with pytest.raises(ValueError, match="tiny model kind='tiny_bert'"):
        models.tiny_config("tiny_bert")
    with pytest.raises(ValueError, match="model dtype='float8'"):
        models.resolve_dtype("float8")


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device='cuda' was asked for but CUDA is not available"):
        models.resolve_device("cuda")


def test_hub_id_without_network_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="neither a local folder nor reachable on the hub"):
        models.load_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.slow
def test_local_folder_loads_through_the_hub_code_path():
    # The converted SmolLM2 folder is an ordinary transformers folder: the path users take with their own models.
    folder = models.convert_embedded_smollm2()
    model, tokenizer = models.load_pretrained(str(folder))
    assert model.config.model_type == "llama" and tokenizer.padding_side == "left"


@pytest.mark.slow
def test_converted_cache_equals_the_gguf_model():
    from transformers import AutoModelForCausalLM

    cached, tokenizer = models.load_smollm2()
    gguf = models.embedded_gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer("Fellow citizens of the Senate", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, direct(ids).logits)


def test_conversion_is_named_by_content_not_install_time(tmp_path, monkeypatch):
    first = tmp_path / "a.gguf"
    first.write_bytes(b"x" * 3_000_000)
    monkeypatch.setenv("DECODELAB_SMOLLM2_GGUF", str(first))
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path / "cache"))
    name = models._converted_dir().name
    os.utime(first, (1, 1))  # a reinstall changes the mtime, not the content
    assert models._converted_dir().name == name
    changed = tmp_path / "b.gguf"
    changed.write_bytes(b"x" * 2_999_999 + b"y")
    monkeypatch.setenv("DECODELAB_SMOLLM2_GGUF", str(changed))
    assert models._converted_dir().name != name


def test_gguf_override_that_is_not_a_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DECODELAB_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="DECODELAB_SMOLLM2_GGUF="):
        models.embedded_gguf_path()


def test_an_unknown_hub_id_fails_at_once_when_the_hub_is_unreachable(monkeypatch):
    """A real probe against a closed local port stands for a machine without network: no retries, no wait."""
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(OSError, match="'nobody/no-such-model'.*neither a local folder nor reachable"):
        models.load_pretrained("nobody/no-such-model")
    with pytest.raises(ConnectionError, match="model.name='nobody/no-such-model'.*hub is unreachable"):
        models.check_model_name("nobody/no-such-model")
    assert time.perf_counter() - start < 10


def test_check_model_name_tells_a_missing_folder_from_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scorer.name='/no/such/folder' is not a folder"):
        models.check_model_name("/no/such/folder", "scorer.name")
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        models.check_model_name(str(tmp_path / "weights.bin"))
    models.check_model_name(str(tmp_path))  # a folder: transformers reads it
    models.check_model_name("tiny_llama")
