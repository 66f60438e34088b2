"""fastgpt.compat.transformers against transformers itself (random weights, conftest oracle).

Greedy generation must give transformers' exact ids for every length rule, EOS/padding
rule and left-padded batch; sampling can only be checked for its own properties (the draws
come from NumPy, not torch). The tokenizers are compared with transformers' GPT-2 tokenizer
built from the same bundled vocabulary files.
"""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastgpt
from oracle import LOGITS_ATOL, hf_logits
from fastgpt.compat.transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, GPT2TokenizerFast
from fastgpt.config import ConfigError
from fastgpt.registry import ModelNotFoundError

torch = pytest.importorskip("torch", reason="transformers is the oracle")
transformers = pytest.importorskip("transformers", reason="transformers is the oracle")

IDS = [[5, 17, 3, 99, 250, 1], [7, 7, 8, 400, 12, 6]]


@pytest.fixture(scope="module")
def hf_small(hf_checkpoint):
    return hf_checkpoint("small")


@pytest.fixture
def pair(hf_small, backend):
    folder, hf_model = hf_small
    return GPT2LMHeadModel.from_pretrained(folder, backend=backend), hf_model


def hf_generate(hf_model, ids, **kwargs):
    ids = torch.as_tensor(np.asarray(ids))
    kwargs.setdefault("attention_mask", torch.ones_like(ids))
    kwargs.setdefault("pad_token_id", 0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf_model.generate(ids, **kwargs).numpy()


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

def test_logits(pair):
    model, hf_model = pair
    out = model(torch.tensor(IDS))
    want = hf_logits(hf_model, IDS)
    diff = np.abs(out.logits - want).max()
    print(f"logits: first {out.logits.ravel()[:3]} vs {want.ravel()[:3]}, max diff {diff:.2e}")
    assert diff < LOGITS_ATOL
    assert out[0] is out.logits and out["logits"] is out.logits


def test_right_padding_mask_leaves_real_positions(pair):
    model, hf_model = pair
    ids = np.array([[5, 17, 3, 0, 0]])
    mask = np.array([[1, 1, 1, 0, 0]])
    got = model(ids, attention_mask=mask).logits[:, :3]
    want = hf_logits(hf_model, ids[:, :3])
    assert np.abs(got - want).max() < LOGITS_ATOL


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=7),
    dict(max_length=10),                                  # counts the prompt: 4 new tokens
    dict(),                                               # max_length=20 by default, prompt included
    dict(max_new_tokens=6, max_length=8),                 # max_new_tokens wins
    dict(max_new_tokens=8, repetition_penalty=1.5),
], ids=["max_new_tokens", "max_length", "default", "both", "repetition_penalty"])
def test_greedy_matches(pair, kwargs):
    model, hf_model = pair
    got = model.generate(torch.tensor(IDS), **kwargs)
    # The contract is transformers 4.x's default, max_length=20 (prompt included);
    # transformers 5 defaults to 20 new tokens, so the oracle is given it explicitly.
    want = hf_generate(hf_model, IDS, **(kwargs or dict(max_length=20)))
    print("ids:", got.tolist())
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_eos_pads_finished_rows(pair):
    model, hf_model = pair
    free = hf_generate(hf_model, IDS, max_new_tokens=8)
    eos = int(free[0, 6 + 2])                                 # row 0's third new token
    for pad in (None, 2):                                    # 2 is not in IDS (3 would mark padding)
        kwargs = dict(max_new_tokens=8, eos_token_id=eos)
        want = hf_generate(hf_model, IDS, pad_token_id=pad if pad is not None else eos, **kwargs)
        got = model.generate(np.array(IDS), pad_token_id=pad, **kwargs)
        print(f"eos={eos} pad={pad}:", got.tolist())
        np.testing.assert_array_equal(got, want)


def test_left_padded_batch(pair):
    model, hf_model = pair
    ids = np.array([[0, 0, 0, 5, 17, 3], [7, 7, 8, 400, 12, 6]])
    mask = np.array([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    want = hf_generate(hf_model, ids, attention_mask=torch.as_tensor(mask), max_new_tokens=6)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=6)
    np.testing.assert_array_equal(got, want)
    # Each row computes what it computes alone.
    alone = model.generate(np.array([[5, 17, 3]]), max_new_tokens=6)
    np.testing.assert_array_equal(got[0, 3:], alone[0])
    with pytest.raises(ValueError, match="left padding"):
        model.generate(ids, attention_mask=mask[:, ::-1].copy(), max_new_tokens=2)


def test_sampling(pair):
    model, _ = pair
    ids = np.array(IDS)
    a = model.generate(ids, do_sample=True, max_new_tokens=6, seed=1, num_return_sequences=3)
    b = model.generate(ids, do_sample=True, max_new_tokens=6, seed=1, num_return_sequences=3)
    assert a.shape == (6, 12)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:3, :6], np.repeat(ids[:1], 3, axis=0))   # grouped by prompt
    greedy = model.generate(ids, max_new_tokens=6)
    np.testing.assert_array_equal(model.generate(ids, do_sample=True, top_k=1, max_new_tokens=6, seed=0), greedy)
    # Sampling options are ignored without do_sample (transformers' rule).
    np.testing.assert_array_equal(model.generate(ids, temperature=0.3, top_p=0.5, max_new_tokens=6), greedy)


def test_generate_errors(pair):
    model, _ = pair
    with pytest.raises(ValueError, match="max_length"):
        model.generate(np.array(IDS), max_length=6)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(np.array(IDS), num_return_sequences=2, max_new_tokens=2)
    with pytest.raises(TypeError, match="unsupported"):
        model.generate(np.array(IDS), max_new_tokens=2, bogus=1)
    with pytest.raises(ValueError, match="beam"):
        model.generate(np.array(IDS), max_new_tokens=2, num_beams=4)


def test_config(hf_small):
    folder, hf_model = hf_small
    config = GPT2Config.from_pretrained(folder)
    assert config.n_embd == hf_model.config.n_embd and config.n_ctx == hf_model.config.n_positions
    assert config.hidden_size == config.n_embd and config.num_hidden_layers == config.n_layer
    assert config.resid_pdrop == hf_model.config.resid_pdrop          # kept, ignored
    made = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16, resid_pdrop=0.0, use_cache=True)
    assert GPT2LMHeadModel(made, backend="numpy").model.config.n_layer == 1
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        GPT2Config(scale_attn_by_inverse_layer_idx=True)


def test_hub_name_without_weights_says_no_download():
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        GPT2LMHeadModel.from_pretrained("gpt2")


# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------

TEXTS = ["Hello world", "hi", " leading space and\nnewline", "a<|endoftext|>b", "", "naïve café 😀"]


@pytest.fixture(scope="module")
def hf_tok_folder(tmp_path_factory):
    """The bundled GPT-2 files (what Tokenizer.gpt2 reads) under transformers' file names."""
    folder = tmp_path_factory.mktemp("gpt2-tok")
    data = Path(fastgpt.__file__).parent / "data" / "gpt2"
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    return folder


def hf_tokenizer(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2Tokenizer.from_pretrained(folder, **kwargs)


@pytest.mark.parametrize("add_prefix_space", [False, True])
def test_encode_tokenize_decode(hf_tok_folder, add_prefix_space):
    ours = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=add_prefix_space)
    theirs = hf_tokenizer(hf_tok_folder, add_prefix_space=add_prefix_space)
    assert ours.add_prefix_space == add_prefix_space
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.tokenize(text) == theirs.tokenize(text), text
        assert ours.decode(ids) == theirs.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text
    tokens = ["Hello", "Ġworld", "not-a-token-zz"]
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("Hello") == theirs.convert_tokens_to_ids("Hello")
    assert ours.eos_token == theirs.eos_token and ours.eos_token_id == theirs.eos_token_id
    assert ours.pad_token is None and theirs.pad_token is None
    assert ours.decode(np.array([15496, 995])) == "Hello world"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kwargs", [
    dict(padding=True),
    dict(padding="max_length", max_length=8),
    dict(padding=True, truncation=True, max_length=2),
    dict(truncation=True, max_length=3),
], ids=["longest", "max_length", "pad+truncate", "truncate"])
def test_call_matches(hf_tok_folder, side, kwargs):
    ours = GPT2Tokenizer.from_pretrained("gpt2")
    theirs = hf_tokenizer(hf_tok_folder)
    for tok in (ours, theirs):
        tok.pad_token = tok.eos_token
        tok.padding_side = side
    texts = TEXTS[:3]
    want = theirs(texts, **kwargs)
    # fastgpt's defaults are the (padding=True, truncation=True, return_tensors="np");
    # transformers' defaults are given explicitly to compare like with like.
    got = ours(texts, **{"padding": False, "truncation": None, "return_tensors": None, **kwargs})
    assert got["input_ids"] == want["input_ids"] and got.attention_mask == want["attention_mask"]
    if kwargs.get("padding"):
        arr = ours(texts, return_tensors="np", **kwargs)
        np.testing.assert_array_equal(arr["input_ids"], np.asarray(want["input_ids"]))
        pt = ours(texts, return_tensors="pt", **kwargs)
        assert torch.equal(pt["input_ids"], theirs(texts, return_tensors="pt", **kwargs)["input_ids"])


def test_call_defaults_pad_truncate_and_return_numpy(hf_tok_folder):
    ours = GPT2Tokenizer.from_pretrained("gpt2")
    theirs = hf_tokenizer(hf_tok_folder)
    for tok in (ours, theirs):
        tok.pad_token = tok.eos_token
    got = ours(TEXTS[:3])
    want = theirs(TEXTS[:3], padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])


def test_call_single_and_errors():
    tok = GPT2TokenizerFast.from_pretrained("distilgpt2")
    assert tok.model_max_length == 1024
    single = tok("Hello world")
    assert single["input_ids"].tolist() == [[15496, 995]] and single["attention_mask"].tolist() == [[1, 1]]
    assert tok("Hello world", return_tensors=None) == {"input_ids": [15496, 995], "attention_mask": [1, 1]}
    with pytest.raises(ValueError, match="padding token"):
        tok(["Hello world", "hi"])
    with pytest.raises(ValueError, match="different lengths"):
        tok(["Hello world", "hi"], padding=False)
    tok.pad_token_id = 50256
    assert tok.pad_token == "<|endoftext|>"
    assert tok.batch_decode([[15496, 995, 50256], [5303]], skip_special_tokens=True) == ["Hello world", "hi"]


def test_end_to_end_left_padded_generation(pair):
    """The usual transformers batch-generation script, with only the import changed."""
    model, hf_model = pair
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    tok.padding_side = "left"
    # The 500-token test model only knows ids < 500 (GPT-2's byte and early merge tokens), so
    # pad with "!" (id 0) rather than the usual tok.eos_token (50256).
    tok.pad_token = "!"
    prompts = ["x", "a b c"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert int(enc["input_ids"].max()) < 500 and int(enc["attention_mask"].sum()) == 4
    got = model.generate(**enc, max_new_tokens=5, pad_token_id=tok.pad_token_id)
    want = hf_generate(hf_model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=5,
                       pad_token_id=tok.pad_token_id)
    np.testing.assert_array_equal(got, want)
    texts = tok.batch_decode(got, skip_special_tokens=True)
    assert texts[1].startswith("a b c")
