"""fastgpt.compat.transformers' models and generate against transformers itself (random
weights, conftest oracle), on both backends.

Greedy generation must give transformers' exact ids for every length rule, EOS/padding
rule and left-padded batch; sampling can only be checked for its own properties (the draws
come from NumPy, not torch) and for repeating under ``torch.manual_seed``. Results must come
back as the kind of array that went in.
"""

import warnings

import numpy as np
import pytest

from oracle import LOGITS_ATOL, hf_logits
from fastgpt.compat.transformers import (GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, OutOfScopeError, set_seed)
from fastgpt.config import ConfigError

torch = pytest.importorskip("torch", reason="transformers is the oracle")
transformers = pytest.importorskip("transformers", reason="transformers is the oracle")

IDS = [[5, 17, 3, 99, 250, 1], [7, 7, 8, 400, 12, 6]]
# Mean token cross-entropy in float64 (ours) vs torch's float32 reduction.
LOSS_ATOL = 1e-4
# TensorFlow's float32 logits of the tiny OpenAI-layout checkpoint: summation order only.
TF_LOGITS_ATOL = 1e-4


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
# Forward: logits, loss, array kinds
# --------------------------------------------------------------------------------------

def test_logits_and_tensor_kinds(pair):
    model, hf_model = pair
    want = hf_logits(hf_model, IDS)
    with torch.no_grad():
        out = model(torch.tensor(IDS))
    assert isinstance(out.logits, torch.Tensor) and out.logits.size() == (2, 6, 500)
    diff = (out.logits.cpu().detach().numpy() - want).__abs__().max()
    print(f"logits: first {out.logits.flatten()[:3].tolist()} vs {want.ravel()[:3]}, max diff {diff:.2e}")
    assert diff < LOGITS_ATOL
    assert out[0] is out.logits and out["logits"] is out.logits and list(out.keys()) == ["logits", "cache"]
    for given in (np.array(IDS), IDS):                       # NumPy or lists in: NumPy out
        logits = model(input_ids=given).logits
        assert isinstance(logits, np.ndarray) and np.abs(logits - want).max() < LOGITS_ATOL
    assert model.eval() is model and model.to("cpu") is model and model.to(torch.device("cpu")) is model
    assert model.cpu() is model and model.device == torch.device("cpu") and model.dtype == torch.float32


def test_loss_matches(pair):
    model, hf_model = pair
    ids = torch.tensor(IDS)
    labels = ids.clone()
    labels[0, 2] = labels[1, 5] = -100
    with torch.no_grad():
        want = hf_model(ids, labels=labels).loss.item()
        out = model(ids, labels=labels)
    print(f"loss {out.loss.item():.6f} vs {want:.6f}")
    assert out.loss.dim() == 0 and abs(out.loss.item() - want) < LOSS_ATOL
    assert list(out.keys()) == ["loss", "logits", "cache"] and out[0] is out.loss
    as_tuple = model(ids, labels=labels, return_dict=False, use_cache=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2 and abs(as_tuple[0].item() - want) < LOSS_ATOL
    np_loss = model(np.array(IDS), labels=labels.numpy()).loss
    assert isinstance(np_loss, np.ndarray) and abs(float(np_loss) - want) < LOSS_ATOL
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=torch.full_like(ids, 500))


def test_out_of_scope_is_one_clear_error(pair):
    model, _ = pair
    loss = model(torch.tensor(IDS), labels=torch.tensor(IDS)).loss     # grad mode on, as in training code
    with pytest.raises(OutOfScopeError, match="backward"):
        loss.backward()
    for call in (model.train, model.cuda, model.half, lambda: model.to("cuda"), lambda: model.to(torch.float16),
                 lambda: model.requires_grad_(True), lambda: model.resize_token_embeddings(600)):
        with pytest.raises(OutOfScopeError, match="out of scope"):
            call()
    assert model.train(False) is model and model.requires_grad_(False) is model and not model.training


# --------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=7),
    dict(max_length=10),                                  # counts the prompt: 4 new tokens
    dict(),                                               # transformers 5: 20 new tokens
    dict(max_new_tokens=6, max_length=8),                 # max_new_tokens wins
    dict(max_new_tokens=8, repetition_penalty=1.5),
    dict(max_new_tokens=8, no_repeat_ngram_size=2),
    dict(max_new_tokens=8, min_length=12, eos_token_id=3),
], ids=["max_new_tokens", "max_length", "default", "both", "repetition_penalty", "no_repeat_ngram", "min_length"])
def test_greedy_matches(pair, kwargs):
    model, hf_model = pair
    got = model.generate(torch.tensor(IDS), **kwargs)
    want = hf_generate(hf_model, IDS, **kwargs)
    print("ids:", got.tolist())
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    assert isinstance(model.generate(np.array(IDS), **kwargs), np.ndarray)


def test_default_length_is_capped_by_the_context(pair):
    model, hf_model = pair
    long = [[int(i) for i in np.arange(120) % 500]]      # n_positions 128: 8 new tokens fit
    np.testing.assert_array_equal(model.generate(np.array(long)), hf_generate(hf_model, long))


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
    np.testing.assert_array_equal(model.generate(ids, do_sample=True, top_k=1, max_new_tokens=6), greedy)
    # Sampling options are ignored without do_sample (transformers' rule).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(model.generate(ids, temperature=0.3, top_p=0.5, max_new_tokens=6), greedy)


def test_torch_manual_seed_repeats_sampling(pair):
    model, _ = pair
    ids = torch.tensor(IDS)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(model.generate(ids, do_sample=True, max_new_tokens=12, num_return_sequences=2))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    set_seed(5)
    first = model.generate(ids, do_sample=True, max_new_tokens=12)
    set_seed(5)
    assert torch.equal(first, model.generate(ids, do_sample=True, max_new_tokens=12))


def test_stop_strings_may_begin_in_the_prompt(pair, tmp_path):
    """transformers' StopStringCriteria ends on a string that starts in the prompt and ends in
    the newest token; the OpenAI-style `stop` of Generator would not (it sees generated text)."""
    import json
    from pathlib import Path

    import fastgpt
    from fastgpt.compat.transformers import GPT2Tokenizer as OurTokenizer

    model, hf_model = pair
    data = Path(fastgpt.__file__).parent / "data" / "gpt2"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if line]
    transformers.GPT2Tokenizer(vocab=vocab, merges=merges).save_pretrained(tmp_path)  # GPT-2's ids 0-499 fit
    hf_tok, our_tok = transformers.GPT2Tokenizer.from_pretrained(tmp_path), OurTokenizer.from_pretrained(tmp_path)
    # prompts of plain letters (GPT-2 id = code point - 33 for '!'..'~'), so their text is whole
    for word in ("hello", "world", "stop", "the", "and", "quiet"):
        prompt = [ord(c) - 33 for c in word]
        full = hf_generate(hf_model, [prompt], max_new_tokens=6)[0]
        text, first, rest = hf_tok.decode(prompt), hf_tok.decode(full[len(prompt):len(prompt) + 1]), hf_tok.decode(full[len(prompt):])
        stop = text[-2:] + first[:1]
        if first and "\ufffd" not in stop and stop not in rest:
            break
    else:
        pytest.skip("no prompt whose first token continues its text into a fresh stop string")
    kwargs = dict(max_new_tokens=6, stop_strings=[stop])
    want = hf_generate(hf_model, [prompt], tokenizer=hf_tok, **kwargs)
    assert want.shape[1] == len(prompt) + 1                       # it does end on the first token
    got = model.generate(torch.tensor([prompt]), tokenizer=our_tok, **kwargs)
    np.testing.assert_array_equal(got.numpy(), want)


def test_generate_errors(pair):
    model, _ = pair
    with pytest.raises(ValueError, match="max_length"):
        model.generate(np.array(IDS), max_length=6)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(np.array(IDS), num_return_sequences=2, max_new_tokens=2)
    with pytest.raises(TypeError, match="unsupported"):
        model.generate(np.array(IDS), max_new_tokens=2, bogus=1)
    with pytest.raises(ValueError, match="typical_p"):
        model.generate(np.array(IDS), max_new_tokens=2, typical_p=0.5)
    with pytest.raises(ValueError, match="output_attentions"):       # per-step attentions: not produced
        model.generate(np.array(IDS), max_new_tokens=2, return_dict_in_generate=True, output_attentions=True)


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
    np.testing.assert_array_equal(got.numpy(), want)
    texts = tok.batch_decode(got, skip_special_tokens=True)
    assert texts[1].startswith("a b c")


# --------------------------------------------------------------------------------------
# Config and module surface
# --------------------------------------------------------------------------------------

def test_config_matches_transformers(hf_small, tmp_path):
    folder, hf_model = hf_small
    config = GPT2Config.from_pretrained(folder)
    theirs = hf_model.config.to_dict()
    ours = config.to_dict()
    skipped = {"transformers_version", "_name_or_path", "dtype", "architectures", "loss_type"}
    diff = {k: (ours.get(k), v) for k, v in theirs.items() if k not in skipped and ours.get(k) != v}
    print("differing fields:", diff)
    assert not diff
    assert config.hidden_size == config.n_embd == 64 and config.n_ctx == config.n_positions == 128
    config.pad_token_id = 0                                       # mutable, as transformers'
    config.save_pretrained(tmp_path)
    back = transformers.GPT2Config.from_pretrained(tmp_path)
    assert back.pad_token_id == 0 and back.n_embd == 64 and back.resid_pdrop == config.resid_pdrop
    made = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16, resid_pdrop=0.0, use_cache=True)
    assert GPT2LMHeadModel(made, backend="numpy").model.config.n_layer == 1
    for bad in (dict(scale_attn_by_inverse_layer_idx=True), dict(add_cross_attention=True), dict(n_ctx=512)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            GPT2Config(**bad)


def test_state_dict_parameters_and_save_pretrained(pair, tmp_path):
    model, hf_model = pair
    ours, theirs = model.state_dict(), hf_model.state_dict()
    assert list(ours) == list(theirs)
    worst = max(float((ours[k] - v).abs().max()) for k, v in theirs.items())
    print(f"state_dict max diff {worst:.2e}")
    assert worst == 0.0
    assert model.num_parameters() == hf_model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters(exclude_embeddings=True) == hf_model.num_parameters(exclude_embeddings=True)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    diff = np.abs(hf_logits(back, IDS) - hf_logits(hf_model, IDS)).max()
    assert diff == 0.0, f"saved model's logits differ by {diff}"
    again = GPT2LMHeadModel.from_pretrained(tmp_path, backend="numpy")
    assert np.abs(again(np.array(IDS)).logits - hf_logits(hf_model, IDS)).max() < LOGITS_ATOL


def test_generation_config_from_the_folder(hf_small, tmp_path, backend):
    """A checkpoint's generation_config.json sets generate's defaults, as in transformers."""
    import shutil

    from fastgpt.compat.transformers import GenerationConfig

    folder, hf_model = hf_small
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    GenerationConfig(max_length=11, no_repeat_ngram_size=2, pad_token_id=0).save_pretrained(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path, backend=backend)
    assert model.generation_config.max_length == 11
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert theirs.generation_config.max_length == 11
    ids = torch.tensor(IDS)
    with torch.no_grad():
        want = theirs.generate(ids, attention_mask=torch.ones_like(ids))
    got = model.generate(ids)
    assert got.shape == (2, 11) and torch.equal(got, want)
    assert torch.equal(model.generate(ids, max_new_tokens=3), want[:, :9])   # the call's options win


@pytest.mark.parametrize("kwargs", [dict(), dict(repetition_penalty=1.4, no_repeat_ngram_size=2)],
                         ids=["plain", "processors"])
def test_return_dict_in_generate(pair, kwargs):
    model, hf_model = pair
    ids = torch.tensor(IDS)
    eos = int(hf_generate(hf_model, IDS, max_new_tokens=6, **kwargs)[0, 6 + 3])   # ends row 0 early
    common = dict(max_new_tokens=6, return_dict_in_generate=True, output_scores=True, output_logits=True,
                  eos_token_id=eos, pad_token_id=0, **kwargs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = hf_model.generate(ids, attention_mask=torch.ones_like(ids), **common)
    got = model.generate(ids, **common)
    assert list(got.keys()) == ["sequences", "scores", "logits"]
    assert torch.equal(got.sequences, want.sequences)
    assert len(got.scores) == len(want.scores) == len(got.logits)
    ended = (got.sequences[:, 6:] == eos).int().cumsum(-1)                  # rows done before each step
    for step, (s, w, lg, wl) in enumerate(zip(got.scores, want.scores, got.logits, want.logits)):
        live = ended[:, step - 1] == 0 if step else torch.ones(2, dtype=torch.bool)
        np.testing.assert_allclose(s[live].numpy(), w[live].numpy(), rtol=0, atol=LOGITS_ATOL)
        np.testing.assert_allclose(lg[live].numpy(), wl[live].numpy(), rtol=0, atol=LOGITS_ATOL)


def test_load_tf_weights_in_gpt2(backend):
    """OpenAI's TensorFlow checkpoint layout, against TensorFlow's own logits (tests/data/tf-gpt2-tiny)."""
    from pathlib import Path

    from fastgpt.compat.transformers import load_tf_weights_in_gpt2

    data = Path(__file__).parent / "data" / "tf-gpt2-tiny"
    expected = np.load(data / "expected.npz")
    config = GPT2Config(vocab_size=277, n_positions=32, n_embd=16, n_head=2, n_layer=2)
    for args in ((data,), (config, data)):                 # the reference's spelling, then transformers 4's
        model = GPT2LMHeadModel(config, backend=backend)
        assert load_tf_weights_in_gpt2(model, *args) is model
        logits = model(expected["prompt_ids"][None]).logits[0]
        diff = np.abs(logits - expected["logits"]).max()
        print(f"TF logits max diff {diff:.2e}")
        assert diff < TF_LOGITS_ATOL
    with pytest.raises(ValueError, match="n_embd|shape"):
        load_tf_weights_in_gpt2(GPT2LMHeadModel(GPT2Config(vocab_size=277, n_positions=32, n_embd=32, n_head=2,
                                                           n_layer=2), backend=backend), data)
