"""fastgpt.compat.picogpt: picoGPT's API on fastgpt, checked against independent references.

- the reference task's DummyBPE model (blocks=[], float64 params) against picoGPT's
  arithmetic written out here in float64 NumPy;
- OpenAI's checkpoint layout (tests/data/tf-gpt2-tiny) against TensorFlow's logits and
  greedy tokens recorded when it was written;
- a Hugging Face folder against transformers (the tests/oracle.py oracle).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oracle import LOGITS_ATOL, hf_greedy, hf_logits
from fastgpt.compat import picogpt
from fastgpt.tokenizer import TokenizerError

DATA = Path(__file__).parent / "data" / "tf-gpt2-tiny"

# fastgpt computes in float32; the reference below in float64. Logits of the dummy model are
# O(1), so float32 rounding (~1e-7 relative) through a LayerNorm and one dot stays far below.
FLOAT32_VS_FLOAT64_ATOL = 1e-5
# TensorFlow's float32 logits of the tiny checkpoint vs fastgpt's: summation order only
# (~3e-6 seen).
TF_LOGITS_ATOL = 1e-4


class DummyBPE:
    """The reference task's encoder."""

    def __init__(self):
        self.encoder_dict = {"hello": 1, "world": 2, "<UNK>": 0}

    def encode(self, text):
        return [self.encoder_dict.get(token, 0) for token in text.split()]

    def decode(self, ids):
        names = {v: k for k, v in self.encoder_dict.items()}
        return " ".join(names.get(i, "<UNK>") for i in ids)


def dummy_model(seed=0):
    rng = np.random.RandomState(seed)
    hparams = {"n_ctx": 1024, "n_head": 2}
    params = {"wte": rng.rand(3, 10), "wpe": rng.rand(1024, 10), "blocks": [],
              "ln_f": {"g": np.ones(10), "b": np.zeros(10)}}
    return DummyBPE(), hparams, params


# picoGPT's arithmetic, float64, recomputing the whole prefix (as picoGPT does).
def ref_layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return g * (x - mean) / np.sqrt(var + eps) + b


def ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def ref_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_gpt2(inputs, wte, wpe, blocks, ln_f, n_head):
    x = wte[inputs] + wpe[range(len(inputs))]                          # (T, C)
    T, C = x.shape
    mask = (1 - np.tri(T)) * -1e10                                     # (T, T)
    for blk in blocks:
        h = ref_layer_norm(x, **blk["ln_1"])
        qkv = h @ blk["attn"]["c_attn"]["w"] + blk["attn"]["c_attn"]["b"]   # (T, 3C)
        heads = [np.split(m, n_head, axis=-1) for m in np.split(qkv, 3, axis=-1)]
        out = [ref_softmax(q @ k.T / np.sqrt(q.shape[-1]) + mask) @ v for q, k, v in zip(*heads)]
        x = x + np.hstack(out) @ blk["attn"]["c_proj"]["w"] + blk["attn"]["c_proj"]["b"]
        h = ref_layer_norm(x, **blk["ln_2"])
        h = ref_gelu(h @ blk["mlp"]["c_fc"]["w"] + blk["mlp"]["c_fc"]["b"])
        x = x + h @ blk["mlp"]["c_proj"]["w"] + blk["mlp"]["c_proj"]["b"]
    return ref_layer_norm(x, **ln_f) @ wte.T                           # (T, V)


def ref_generate(inputs, params, n_head, n):
    inputs = list(inputs)
    for _ in range(n):
        inputs.append(int(np.argmax(ref_gpt2(inputs, **params, n_head=n_head)[-1])))
    return inputs[len(inputs) - n:]


def show(name, got, want):
    diff = np.abs(np.asarray(got, np.float64) - want)
    print(f"{name}: first {np.ravel(got)[:3]} vs {np.ravel(want)[:3]}, max diff {diff.max():.2e}")
    return diff.max()


# --------------------------------------------------------------------------------------
# The reference task: DummyBPE, blocks=[]
# --------------------------------------------------------------------------------------

def test_dummy_gen_text(backend):
    encoder, hparams, params = dummy_model()
    want_ids = ref_generate(encoder.encode("hello"), params, hparams["n_head"], 5)
    text = picogpt.gen_text("hello", 5, encoder, hparams, params, backend=backend)
    print("gen_text:", repr(text), "reference ids:", want_ids)
    assert text == encoder.decode(want_ids)
    assert len(text.split()) == 5


def test_dummy_gen_text_through_the_loader(backend, monkeypatch):
    """gen_text("hello", 5) with only a prompt: the (patched) loader supplies the model."""
    encoder, hparams, params = dummy_model(seed=3)
    monkeypatch.setattr(picogpt, "load_encoder_hparams_and_params", lambda *a, **k: (encoder, hparams, params))
    text = picogpt.gen_text("hello", n_tokens_to_generate=5, backend=backend)
    assert text == encoder.decode(ref_generate([1], params, 2, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dummy_logits_and_tokens(backend, seed):
    encoder, hparams, params = dummy_model(seed)
    inputs = [1, 2, 0, 1, 1]
    want = ref_gpt2(inputs, **params, n_head=2)
    got = picogpt.gpt2(inputs, **params, n_head=2, backend=backend)
    assert got.shape == (5, 3) and got.dtype == np.float32
    assert show("dummy logits", got, want) < FLOAT32_VS_FLOAT64_ATOL
    ids = list(inputs)
    new = picogpt.generate(ids, params, 2, 6, backend=backend)
    assert new == ref_generate(inputs, params, 2, 6)
    assert ids == inputs + new                     # picoGPT appends to the list it is given


def test_n_head_irrelevant_without_blocks(backend):
    _, _, params = dummy_model()
    a = picogpt.gpt2([1, 2], **params, n_head=3, backend=backend)      # 10 % 3 != 0: unused
    b = picogpt.gpt2([1, 2], **params, n_head=2, backend=backend)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# OpenAI's release layout (TensorFlow checkpoint), against TensorFlow
# --------------------------------------------------------------------------------------

def test_openai_checkpoint(backend):
    expected = np.load(DATA / "expected.npz")
    encoder, hparams, params = picogpt.load_encoder_hparams_and_params("tf-gpt2-tiny", DATA.parent)
    assert hparams == json.loads((DATA / "hparams.json").read_text())
    C, L = hparams["n_embd"], hparams["n_layer"]
    assert len(params["blocks"]) == L
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (C, 3 * C)          # squeezed [in, out]
    np.testing.assert_array_equal(params["blocks"][1]["mlp"]["c_proj"]["w"],
                                  expected["value:model/h1/mlp/c_proj/w"][0])
    np.testing.assert_array_equal(params["ln_f"]["g"], expected["value:model/ln_f/g"])

    prompt = expected["prompt_ids"].tolist()
    logits = picogpt.gpt2(prompt, **params, n_head=hparams["n_head"], backend=backend)
    assert show("TF logits", logits, expected["logits"]) < TF_LOGITS_ATOL
    assert picogpt.generate(prompt, params, hparams["n_head"], 6, backend=backend) == expected["greedy_ids"].tolist()

    text = "the world is"
    assert encoder.decode(encoder.encode(text)) == text
    out = picogpt.gen_text(text, 4, encoder, hparams, params, backend=backend)
    assert isinstance(out, str)


def test_checkpoint_params_match_independent_reference():
    """The checkpoint through picoGPT's float64 arithmetic gives TF's logits too."""
    expected = np.load(DATA / "expected.npz")
    _, hparams, params = picogpt.load_encoder_hparams_and_params(str(DATA), models_dir=None)
    as64 = _map(params, lambda a: np.asarray(a, np.float64))
    ref = ref_gpt2(expected["prompt_ids"].tolist(), **as64, n_head=hparams["n_head"])
    assert np.abs(ref - expected["logits"]).max() < TF_LOGITS_ATOL


def _map(tree, fn):
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map(v, fn) for v in tree]
    return fn(tree)


# --------------------------------------------------------------------------------------
# A Hugging Face folder, against transformers
# --------------------------------------------------------------------------------------

@pytest.fixture
def hf_folder_with_tokenizer(hf_checkpoint, tmp_path):
    folder, hf_model = hf_checkpoint("small")
    copy = tmp_path / "small"
    shutil.copytree(folder, copy)
    for name in ("encoder.json", "vocab.bpe"):           # a 277-token BPE fits the 500-token model
        shutil.copy(DATA / name, copy / name)
    return copy, hf_model


def test_hf_folder(backend, hf_folder_with_tokenizer):
    folder, hf_model = hf_folder_with_tokenizer
    encoder, hparams, params = picogpt.load_encoder_hparams_and_params(folder.name, folder.parent)
    cfg = hf_model.config
    assert hparams == {"n_vocab": cfg.vocab_size, "n_ctx": cfg.n_positions, "n_embd": cfg.n_embd,
                       "n_head": cfg.n_head, "n_layer": cfg.n_layer}
    w = params["blocks"][1]["attn"]["c_attn"]["w"]
    np.testing.assert_array_equal(w, hf_model.transformer.h[1].attn.c_attn.weight.detach().numpy())

    ids = [5, 17, 3, 99, 250, 1]
    logits = picogpt.gpt2(ids, **params, n_head=hparams["n_head"], backend=backend)
    assert show("HF logits", logits, hf_logits(hf_model, [ids])[0]) < LOGITS_ATOL
    assert picogpt.generate(ids, params, hparams["n_head"], 8, backend=backend) == hf_greedy(hf_model, ids, 8)


def test_hf_params_are_views_and_map_back_without_copies(hf_folder_with_tokenizer):
    folder, _ = hf_folder_with_tokenizer
    _, hparams, params = picogpt.load_encoder_hparams_and_params(str(folder), models_dir=None)
    model = picogpt.to_model(params, hparams["n_head"], backend="numpy")
    w = params["blocks"][0]["mlp"]["c_fc"]["w"]                     # (C, F) view of fastgpt's (F, C)
    assert np.shares_memory(w, model.weights.blocks[0].mlp_fc_w)
    assert model.weights.tied_head


def test_hf_folder_without_tokenizer(hf_checkpoint):
    folder, _ = hf_checkpoint("small")
    with pytest.raises(TokenizerError, match="500-token vocabulary"):
        picogpt.load_encoder_hparams_and_params(str(folder), models_dir=None)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

def test_missing_model_says_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        picogpt.load_encoder_hparams_and_params("124M", tmp_path)


def test_bad_params_name_the_path():
    _, _, params = picogpt.load_encoder_hparams_and_params(str(DATA), models_dir=None)
    broken = _map(params, lambda a: a)
    del broken["blocks"][1]["attn"]["c_proj"]["b"]
    with pytest.raises(ValueError, match=r"blocks\[1\]\.attn\.c_proj\.b is missing"):
        picogpt.gpt2([1, 2], **broken, n_head=2)
    broken = _map(params, lambda a: a)
    broken["blocks"][0]["mlp"]["c_fc"]["w"] = broken["blocks"][0]["mlp"]["c_fc"]["w"].T
    with pytest.raises(ValueError, match="c_fc.w has shape"):
        picogpt.gpt2([1, 2], **broken, n_head=2)
    with pytest.raises(ValueError, match="missing ln_f"):
        picogpt.generate([1], {"wte": params["wte"], "wpe": params["wpe"], "blocks": []}, 2, 1)
