"""Decoding: no per-token allocations, thread counts agree, backends agree end to end."""

import tracemalloc

import numpy as np
import pytest

from oracle import BACKENDS
from fastgpt import GPT2Config, Model
from fastgpt.generate import Generator

# 124M widths with two layers: big enough that a per-token copy of the logits (200 KB) or of
# an activation would stand out against the bound below.
WIDE = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=2, n_head=12)
# Bytes a decode step may hold on to or briefly allocate: NumPy array headers and small
# index arrays, nothing proportional to the vocabulary, the width or the cache length.
PER_STEP_BYTES = 16 * 1024


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_decode_step_allocations_do_not_grow(backend_name, dtype):
    model = Model.random(WIDE, seed=0, backend=backend_name, dtype=dtype)
    cache = model.new_cache(batch_size=1, max_len=400)
    model.forward(np.arange(16), cache=cache, last_only=True)
    token = np.zeros(1, np.int64)

    def steps(n):
        tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            model.forward(token, cache=cache, last_only=True)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return current - before, peak - before

    model.forward(token, cache=cache, last_only=True)  # warm-up: workspace, scratch
    kept_10, peak_10 = steps(10)
    kept_200, peak_200 = steps(200)
    print(f"{backend_name} {dtype}: kept {kept_10}/{kept_200} B, peak {peak_10}/{peak_200} B")
    assert kept_200 <= PER_STEP_BYTES, "decode steps keep memory"
    if backend_name == "cython":
        # The compiled path allocates nothing that grows with steps or with the cache length.
        assert peak_200 <= PER_STEP_BYTES
        assert peak_200 <= peak_10 + 1024


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_one_and_two_threads_give_the_same_tokens(backend_name):
    cfg = GPT2Config(vocab_size=1000, n_positions=128, n_embd=128, n_layer=2, n_head=4)
    prompt = list(range(5, 17))
    outs = [Generator(Model.random(cfg, seed=3, backend=backend_name, num_threads=n)).generate_ids(prompt, 64)
            for n in (1, 2)]
    assert outs[0] == outs[1]


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both backends")
def test_backends_agree_end_to_end():
    cfg = GPT2Config(vocab_size=2000, n_positions=256, n_embd=192, n_layer=3, n_head=6)
    ids = np.random.default_rng(0).integers(0, 2000, size=(2, 40))
    numpy_model, cython_model = (Model.random(cfg, seed=5, backend=b) for b in ("numpy", "cython"))
    np.testing.assert_allclose(cython_model.forward(ids), numpy_model.forward(ids), atol=1e-4)
    prompt = list(ids[0, :8])
    assert Generator(cython_model).generate_ids(prompt, 64) == Generator(numpy_model).generate_ids(prompt, 64)
