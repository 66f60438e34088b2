"""Bad input gets a clear ValueError naming what is wrong, never a crash or silent garbage."""

import json

import numpy as np
import pytest

from fastgpt import GPT2Config, Model
from fastgpt.config import ConfigError
from fastgpt.generate import Generator
from fastgpt.kv_cache import CacheError
from fastgpt.model import TokenIdError

TINY = GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2)


@pytest.fixture
def model(backend):
    return Model.random(TINY, seed=0, backend=backend)


@pytest.mark.parametrize("bad", [-1, 50, 10**12])
def test_out_of_range_token_id_is_named(model, bad):
    with pytest.raises(TokenIdError, match=f"token id {bad} at position 2"):
        model.forward([1, 2, bad])


def test_non_integer_ids_rejected(model):
    with pytest.raises(TokenIdError, match="integers"):
        model.forward(np.array([1.0, 2.0]))
    with pytest.raises(TokenIdError, match="shape"):
        model.forward(np.zeros((1, 2, 3), np.int64))
    with pytest.raises(TokenIdError, match="shape"):
        model.forward(np.zeros((1, 0), np.int64))


def test_sequence_longer_than_context_is_an_error(model):
    with pytest.raises(CacheError, match="n_positions=16"):
        model.forward(np.zeros(17, np.int64))
    cache = model.new_cache()
    model.forward(np.zeros(10, np.int64), cache=cache)
    with pytest.raises(CacheError, match="do not fit"):
        model.forward(np.zeros(7, np.int64), cache=cache)
    assert cache.pos == 10  # the failed call changed nothing


@pytest.mark.parametrize("field,value", [("start", 10**6), ("start", -1), ("lengths", -5), ("lengths", 10**6)])
def test_cache_state_set_out_of_range_is_refused(model, field, value):
    cache = model.new_cache()
    getattr(cache, field)[0] = value
    with pytest.raises(CacheError, match=f"{field}={value}"):
        model.forward([1, 2], cache=cache)


def test_cache_batch_mismatch(model):
    with pytest.raises(CacheError, match="batch size 2"):
        model.forward(np.zeros((2, 3), np.int64), cache=model.new_cache(batch_size=1))


def test_generate_rejects_prompt_plus_new_tokens_beyond_context(model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        Generator(model).generate_ids([1] * 10, max_new_tokens=7)


@pytest.mark.parametrize("field,value,message", [
    ("n_embd", 10, "divisible by n_head"),
    ("n_layer", -1, "non-negative integer"),
    ("n_head", 0, "positive integer"),
    ("activation_function", "tanh", "not supported"),
    ("layer_norm_epsilon", -1.0, "positive number"),
    ("vocab_size", "big", "positive integer"),
    ("scale_attn_weights", False, "scale_attn_weights=False is not implemented"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True is not implemented"),
])
def test_config_validation(tmp_path, field, value, message):
    d = GPT2Config().to_dict()
    d[field] = value
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=message) as info:
        GPT2Config.from_pretrained(tmp_path)
    assert "config.json" in str(info.value)


def test_config_file_problems_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="GPT-2"):
        GPT2Config.from_pretrained(tmp_path)


def test_mis_shaped_and_missing_tensors_listed_together(tmp_path):
    from fastgpt.loaders import write_safetensors
    from fastgpt.loaders.gpt2 import CheckpointMismatchError

    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    tensors = {"wte.weight": np.zeros((50, 8), np.float32), "wpe.weight": np.zeros((15, 8), np.float32),
               "h.0.extra": np.zeros(3, np.float32)}
    write_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(CheckpointMismatchError) as info:
        Model.from_pretrained(tmp_path, backend="numpy")
    text = str(info.value)
    assert "wpe.weight has shape (15, 8), expected (16, 8)" in text
    assert "missing tensor ln_f.weight" in text and "missing tensor h.0.attn.c_attn.weight" in text
    assert "unexpected tensor h.0.extra" in text


def test_git_lfs_pointer_in_place_of_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    (tmp_path / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        Model.from_pretrained(tmp_path, backend="numpy")


def test_unknown_backend_and_bad_threads():
    from fastgpt.backend import BackendError

    with pytest.raises(BackendError, match="backend must be one of"):
        Model.random(TINY, backend="gpu")
    with pytest.raises(ValueError, match="num_threads"):
        Model.random(TINY, backend="numpy", num_threads=0)


def test_backend_env_override(monkeypatch):
    from fastgpt.backend import BackendError

    monkeypatch.setenv("FASTGPT_BACKEND", "numpy")
    assert Model.random(TINY).backend.name == "numpy"
    monkeypatch.setenv("FASTGPT_BACKEND", "tpu")
    with pytest.raises(BackendError, match="FASTGPT_BACKEND"):
        Model.random(TINY)


def test_cython_requested_but_not_built_is_a_clear_error(monkeypatch):
    import fastgpt.backend as backend_module
    from fastgpt.backend import BackendError

    monkeypatch.setattr(backend_module, "kernels_available", lambda: False)
    with pytest.raises(BackendError, match="not built"):
        Model.random(TINY, backend="cython")
    assert Model.random(TINY, backend="auto").backend.name == "numpy"
