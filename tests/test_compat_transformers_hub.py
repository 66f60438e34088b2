"""Model names through the local Hugging Face cache, and the Auto classes.

The cache layouts are built here from a random checkpoint (oracle.hf_cache_layout), the
way huggingface_hub leaves a download; the cache folder is found from the same settings as
huggingface_hub's (checked against huggingface_hub itself when it is installed).
"""

import json
import shutil

import numpy as np
import pytest

from oracle import LOGITS_ATOL, SNAPSHOT, hf_cache_layout, hf_logits
from fastgpt.compat.transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, GPT2Config,
                                         GPT2LMHeadModel, GPT2Model, GPT2Tokenizer)
from fastgpt.compat.transformers.hub import hub_cache_dir
from fastgpt.config import ConfigError
from fastgpt.registry import ModelNotFoundError

IDS = [[5, 17, 3, 99, 250, 1]]
_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in _CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.fixture(scope="module")
def small(hf_checkpoint):
    return hf_checkpoint("small")


@pytest.mark.parametrize("setting, where", [
    ("HF_HUB_CACHE", "{v}"),
    ("HUGGINGFACE_HUB_CACHE", "{v}"),
    ("HF_HOME", "{v}/hub"),
    ("XDG_CACHE_HOME", "{v}/huggingface/hub"),
    (None, "{home}/.cache/huggingface/hub"),
])
def test_cache_folder_as_huggingface_hub_finds_it(clean_env, tmp_path, setting, where):
    value = tmp_path / "x"
    if setting:
        clean_env.setenv(setting, str(value))
    expected = where.format(v=value, home=tmp_path / "home")
    assert str(hub_cache_dir()) == expected
    assert str(hub_cache_dir(cache_dir=tmp_path / "given")) == str(tmp_path / "given")


def test_huggingface_hub_agrees(tmp_path):
    """huggingface_hub's own constants, computed in a fresh interpreter from the same settings."""
    import os
    import subprocess
    import sys

    pytest.importorskip("huggingface_hub")
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARS}
    env["HF_HOME"] = str(tmp_path / "home-hf")
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    theirs = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    ours = subprocess.run([sys.executable, "-c", "from fastgpt.compat.transformers.hub import hub_cache_dir; "
                           "print(hub_cache_dir())"], env=env, capture_output=True, text=True, check=True)
    assert theirs.stdout.strip() == ours.stdout.strip()


@pytest.mark.parametrize("cached_as, asked_as", [
    ("distilgpt2", "distilgpt2"),
    ("distilbert/distilgpt2", "distilgpt2"),          # the Hub's new name, asked by the old one
    ("gpt2", "openai-community/gpt2"),
    ("someone/my-gpt2", "someone/my-gpt2"),
])
def test_names_resolve_through_the_cache(clean_env, tmp_path, small, backend, cached_as, asked_as):
    folder, hf_model = small
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    hf_cache_layout(folder, tmp_path / "cache", cached_as)
    for cls in (AutoModelForCausalLM, GPT2LMHeadModel):
        model = cls.from_pretrained(asked_as, backend=backend)
        assert isinstance(model, GPT2LMHeadModel) and model.name_or_path == asked_as
        assert np.abs(model(np.array(IDS)).logits - hf_logits(hf_model, IDS)).max() < LOGITS_ATOL
    assert isinstance(AutoModel.from_pretrained(asked_as, backend=backend), GPT2Model)
    assert AutoConfig.from_pretrained(asked_as).n_embd == hf_model.config.n_embd


def test_revision_and_cache_dir(clean_env, tmp_path, small):
    folder, _ = small
    cache = tmp_path / "elsewhere"
    snapshot = hf_cache_layout(folder, cache, "org/name")
    (snapshot.parent.parent / "refs" / "v1").write_text(SNAPSHOT)
    for revision in (None, "v1", SNAPSHOT):
        assert GPT2Config.from_pretrained("org/name", cache_dir=cache, revision=revision).n_layer == 2
    with pytest.raises(ModelNotFoundError, match="'v2'"):
        GPT2Config.from_pretrained("org/name", cache_dir=cache, revision="v2")


def test_missing_name_says_where_it_looked(clean_env, tmp_path, small):
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError) as err:
        GPT2LMHeadModel.from_pretrained("gpt2")
    msg = str(err.value)
    print(msg)
    for part in ("never downloads", "huggingface-cli download gpt2", str(tmp_path / "cache" / "models--gpt2"),
                 "models--openai-community--gpt2", "folder"):
        assert part in msg
    # A snapshot whose refs/main names a missing commit is not a checkpoint either.
    snapshot = hf_cache_layout(small[0], tmp_path / "cache", "broken/model")
    shutil.rmtree(snapshot)
    with pytest.raises(ModelNotFoundError, match="models--broken--model"):
        GPT2LMHeadModel.from_pretrained("broken/model")


def test_tokenizer_names_keep_the_bundled_vocabulary(clean_env, tmp_path):
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    for name in ("gpt2", "distilgpt2", "openai-community/gpt2-xl"):
        tok = AutoTokenizer.from_pretrained(name)
        assert isinstance(tok, GPT2Tokenizer) and tok.encode("Hello world") == [15496, 995]


def test_other_model_types_are_refused_by_name(tmp_path, small):
    folder = tmp_path / "llama"
    shutil.copytree(small[0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    for load in (AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained, AutoModel.from_pretrained,
                 AutoTokenizer.from_pretrained):
        with pytest.raises(ConfigError, match="'llama'"):
            load(folder)
    with pytest.raises(ConfigError, match="'bert'"):
        AutoConfig.for_model("bert")
