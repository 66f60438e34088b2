"""fastgpt's forward pass and greedy decoding against Hugging Face transformers."""

import numpy as np
import pytest

from oracle import LOGITS_ATOL, hf_greedy, hf_logits
from fastgpt import Model
from fastgpt.generate import Generator


def report(name, diff):
    # Evidence in the log, as llm.c's test_gpt2 prints it.
    print(f"{name}: max |diff| = {diff:.3g}")


@pytest.mark.parametrize("name", ["small", "wide"])
def test_logits_match_transformers_at_every_position(hf_checkpoint, backend, name):
    folder, hf = hf_checkpoint(name)
    model = Model.from_pretrained(folder, backend=backend)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, size=(2, 33))
    ours = model.forward(ids)
    ref = hf_logits(hf, ids)
    diff = np.abs(ours - ref).max()
    report(f"{name}/{backend} logits", diff)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert diff < LOGITS_ATOL


def test_one_dimensional_ids_give_seq_by_vocab(hf_checkpoint, backend):
    folder, hf = hf_checkpoint("small")
    model = Model.from_pretrained(folder, backend=backend)
    ids = [1, 2, 3, 4]
    out = model.forward(ids)
    assert out.shape == (4, model.config.vocab_size)
    np.testing.assert_allclose(out, hf_logits(hf, [ids])[0], atol=LOGITS_ATOL)


@pytest.mark.parametrize("name", ["small", "wide"])
def test_cached_decoding_equals_full_recomputation(hf_checkpoint, backend, name):
    folder, _ = hf_checkpoint(name)
    model = Model.from_pretrained(folder, backend=backend)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=(3, 24))
    full = model.forward(ids)
    cache = model.new_cache(batch_size=3)
    first = model.forward(ids[:, :10], cache=cache)
    chunk = model.forward(ids[:, 10:14], cache=cache)            # a second multi-token chunk
    steps = [model.forward(ids[:, t:t + 1], cache=cache, last_only=True).copy() for t in range(14, 24)]
    got = np.concatenate([first, chunk, np.stack(steps, axis=1)], axis=1)
    diff = np.abs(got - full).max()
    report(f"{name}/{backend} cached vs full", diff)
    assert diff < 1e-4
    assert cache.pos == 24


def test_last_only_matches_last_position(hf_checkpoint, backend):
    folder, _ = hf_checkpoint("small")
    model = Model.from_pretrained(folder, backend=backend)
    ids = np.arange(2 * 9).reshape(2, 9)
    full = model.forward(ids)
    last = model.forward(ids, cache=model.new_cache(2), last_only=True)
    assert last.shape == (2, model.config.vocab_size)
    np.testing.assert_allclose(last, full[:, -1], atol=1e-5)
    single = model.forward(ids[0], cache=model.new_cache(1), last_only=True)
    assert single.shape == (model.config.vocab_size,)


@pytest.mark.parametrize("name", ["small", "wide"])
def test_greedy_64_tokens_identical_to_transformers_generate(hf_checkpoint, backend, name):
    folder, hf = hf_checkpoint(name)
    model = Model.from_pretrained(folder, backend=backend)
    prompt = [int(t) for t in np.random.default_rng(2).integers(0, model.config.vocab_size, 7)]
    ours = Generator(model).generate_ids(prompt, max_new_tokens=64)
    ref = hf_greedy(hf, prompt, 64)
    assert ours == ref, f"first difference at {next(i for i, (a, b) in enumerate(zip(ours, ref)) if a != b)}"


def test_float16_checkpoint_loads_and_matches(tmp_path, backend):
    torch = pytest.importorskip("torch")
    from oracle import hf_model, CHECKPOINTS

    hf = hf_model(CHECKPOINTS["small"], seed=7)
    hf.half().save_pretrained(tmp_path)
    hf.float()  # the fp16-rounded weights, computed in fp32 on both sides
    model = Model.from_pretrained(tmp_path, backend=backend)
    ids = np.arange(16)[None]
    np.testing.assert_allclose(model.forward(ids), hf_logits(hf, ids), atol=LOGITS_ATOL)
    assert torch is not None


def test_sharded_checkpoint_loads(tmp_path, hf_checkpoint, backend):
    _, hf = hf_checkpoint("small")
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = Model.from_pretrained(tmp_path, backend=backend)
    ids = np.arange(8)[None]
    np.testing.assert_allclose(model.forward(ids), hf_logits(hf, ids), atol=LOGITS_ATOL)


def test_pytorch_bin_checkpoint_loads(tmp_path, hf_checkpoint):
    torch = pytest.importorskip("torch")
    _, hf = hf_checkpoint("small")
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    hf.config.save_pretrained(tmp_path)
    model = Model.from_pretrained(tmp_path, backend="numpy")
    ids = np.arange(8)[None]
    np.testing.assert_allclose(model.forward(ids), hf_logits(hf, ids), atol=LOGITS_ATOL)
