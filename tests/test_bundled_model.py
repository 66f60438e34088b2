"""The bundled kjv-tiny model: loads by name, matches transformers, beats a bigram baseline."""

import math
from pathlib import Path

import numpy as np
import pytest

from fastgpt import Model, Tokenizer
from fastgpt.cli import main
from fastgpt.generate import Generator
from fastgpt.perplexity import perplexity_of_ids
from fastgpt.registry import BUNDLED_DIR, ModelNotFoundError, bundled_models
from oracle import hf_greedy

NAME = "kjv-tiny"
FOLDER = BUNDLED_DIR / NAME
TRAIN_IDS = Path(__file__).parent / "data" / "kjv-tiny-train-ids.npz"
STRIDE = 128
# fastgpt and transformers sum the same float32 logits in different orders; over 17k tokens
# the mean NLL agrees to ~1e-6 relative. The bound is 0.1% on perplexity.
PPL_RTOL = 1e-3


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(NAME)


@pytest.fixture(scope="module")
def valid_ids(tok):
    return np.asarray(tok.encode((FOLDER / "valid.txt").read_text(encoding="utf-8"), allowed_special="all"))


def test_bundled_model_is_listed_and_small():
    assert NAME in bundled_models()
    size = sum(p.stat().st_size for p in FOLDER.iterdir())
    assert size <= 8 * 1024 * 1024, f"bundled folder is {size} bytes"


def test_unknown_name_lists_bundled_models_and_mentions_paths():
    with pytest.raises(ModelNotFoundError) as info:
        Model.from_pretrained("kjv-huge")
    assert NAME in str(info.value) and "Hugging Face" in str(info.value)


def test_greedy_continuation_equals_transformers(backend, tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(FOLDER).eval()
    prompt = tok.encode("And God said")
    ours = Generator(Model.from_pretrained(NAME, backend=backend), tok).generate_ids(prompt, 32, eos_token_id=[])
    assert ours == hf_greedy(hf, prompt, 32)
    assert {"thee", "thou", "unto", "LORD", "Israel"} & set(tok.decode(ours).split())  # recognisably KJV


def _hf_sliding_nll(hf, ids, max_length, stride):
    # Hugging Face's documented recipe, written against transformers directly.
    import torch

    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + max_length, len(ids))
        trg_len = end - prev_end
        inp = torch.as_tensor(ids[begin:end])[None]
        labels = inp.clone()
        labels[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf(inp, labels=labels).loss.item()
        n = int((labels[:, 1:] != -100).sum())
        nll += loss * n
        count += n
        prev_end = end
        if end == len(ids):
            break
    return nll / count, count


@pytest.fixture(scope="module")
def hf_validation_nll(valid_ids):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(FOLDER).eval()
    return _hf_sliding_nll(hf, valid_ids, hf.config.n_positions, STRIDE)


def test_validation_perplexity_matches_transformers(backend, valid_ids, hf_validation_nll):
    model = Model.from_pretrained(NAME, backend=backend)
    ours = perplexity_of_ids(model, valid_ids, stride=STRIDE)
    hf_nll, hf_count = hf_validation_nll
    print(f"{backend}: fastgpt ppl {ours.perplexity:.4f}, transformers {math.exp(hf_nll):.4f}")
    assert ours.scored_tokens == hf_count
    assert abs(ours.perplexity / math.exp(hf_nll) - 1) < PPL_RTOL


def test_validation_perplexity_is_well_below_a_bigram_model(valid_ids):
    model = Model.from_pretrained(NAME)
    V = model.config.vocab_size
    train = np.load(TRAIN_IDS)["ids"].astype(np.int64)
    counts = np.bincount(train[:-1] * V + train[1:], minlength=V * V).reshape(V, V).astype(np.float64)
    # add-one smoothing: P(b | a) = (count(a, b) + 1) / (count(a) + V)
    prob = (counts[valid_ids[:-1], valid_ids[1:]] + 1.0) / (counts.sum(axis=1)[valid_ids[:-1]] + V)
    bigram_ppl = math.exp(-np.log(prob).mean())
    model_ppl = perplexity_of_ids(model, valid_ids, stride=STRIDE).perplexity
    print(f"validation perplexity: model {model_ppl:.2f}, add-one bigram {bigram_ppl:.2f}")
    assert model_ppl < 0.6 * bigram_ppl


def test_perplexity_arguments_are_checked(valid_ids):
    model = Model.from_pretrained(NAME, backend="numpy")
    with pytest.raises(ValueError, match="stride"):
        perplexity_of_ids(model, valid_ids, stride=0)
    with pytest.raises(ValueError, match="max_length"):
        perplexity_of_ids(model, valid_ids, max_length=10_000)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity_of_ids(model, valid_ids[:1])


def test_cli_generate_without_model_uses_the_bundled_one(capsys):
    assert main(["generate", "And God said", "-n", "12"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip()) > 10


def test_cli_perplexity(capsys, tmp_path):
    assert main(["perplexity", str(FOLDER / "valid.txt"), "--stride", "128"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["perplexity", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
