"""Independent cache rows, prefill chunks and one-call-at-a-time caches (fastgpt/kv_cache.py).

A server keeps one cache whose rows are reset and refilled on their own and decodes rows of
different lengths together; each row must compute what it computes alone. The oracle for a row
is the same tokens through a fresh cache of one row.
"""

import numpy as np
import pytest

from fastgpt import CacheBusyError, CacheError, GPT2Config, Model
from oracle import BACKENDS

CFG = GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)
# A row in a batch against the row alone: the NumPy backend's matmuls may round differently
# for different row counts (BLAS), the compiled row kernels do not.
ROW_ATOL = {"numpy": 1e-5, "cython": 0.0}


def alone(model, prompt, tokens):
    """Logits of prompt's last token, then of each of tokens, through a fresh one-row cache."""
    cache = model.new_cache(max_len=40)
    out = [model.forward([prompt], cache=cache, last_only=True)[0].copy()]
    for token in tokens:
        out.append(model.forward([[token]], cache=cache, last_only=True)[0].copy())
    return out


def assert_equal_within(got, want, atol, what):
    diff = float(np.abs(got - want).max())
    assert diff <= atol, f"{what}: max |diff| {diff} > {atol}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_rows_at_different_lengths_each_compute_what_they_compute_alone(backend, dtype):
    model = Model.random(CFG, seed=1, backend=backend, num_threads=2, dtype=dtype)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, CFG.vocab_size, n)) for n in (7, 2, 12)]
    tokens = rng.integers(0, CFG.vocab_size, (3, 4))
    cache = model.new_cache(batch_size=4, max_len=40)            # row 0 stays unused
    got = {r: [] for r in range(3)}
    for r, prompt in enumerate(prompts):
        got[r].append(model.forward([prompt], cache=cache, rows=[r + 1], last_only=True)[0].copy())
    for step in range(4):
        rows = [3, 1] if step == 1 else [1, 2, 3]                # row 2 (prompt 1) sits out a step
        ids = [[tokens[r - 1][len(got[r - 1]) - 1]] for r in rows]
        logits = model.forward(ids, cache=cache, rows=rows, last_only=True)
        for i, r in enumerate(rows):
            got[r - 1].append(logits[i].copy())
    assert cache.lengths.tolist() == [0, 7 + 4, 2 + 3, 12 + 4]
    for r, prompt in enumerate(prompts):
        want = alone(model, prompt, tokens[r][: len(got[r]) - 1])
        for step, (g, w) in enumerate(zip(got[r], want)):
            assert_equal_within(g, w, ROW_ATOL[backend], f"{backend} {dtype} prompt {r} step {step}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reset_row_is_refilled_like_a_fresh_cache(backend):
    model = Model.random(CFG, seed=2, backend=backend)
    cache = model.new_cache(batch_size=2, max_len=30)
    model.forward(np.arange(20).reshape(2, 10), cache=cache)
    cache.reset(rows=[1])
    assert cache.lengths.tolist() == [10, 0]
    got = model.forward([[5, 6, 7]], cache=cache, rows=[1]).copy()
    want = model.forward([5, 6, 7])
    assert_equal_within(got[0], want, ROW_ATOL[backend], "refilled row")
    with pytest.raises(CacheError, match="different lengths"):
        cache.pos
    cache.reset()
    assert cache.pos == 0 and not cache.start.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_chunks_are_the_same_as_forwarding_the_chunks(backend):
    """A long prompt runs as chunks of prefill_chunk: bitwise the same as feeding the chunks."""
    model = Model.random(CFG, seed=3, backend=backend, prefill_chunk=16)
    ids = np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 50))
    whole_cache, parts_cache = model.new_cache(2, 50), model.new_cache(2, 50)
    whole = model.forward(ids, cache=whole_cache)
    parts = np.concatenate([model.forward(ids[:, t:t + 16], cache=parts_cache) for t in range(0, 50, 16)], axis=1)
    assert np.array_equal(whole, parts)
    assert np.array_equal(whole_cache.k, parts_cache.k) and whole_cache.pos == 50
    last = model.forward(ids, cache=model.new_cache(2, 50), last_only=True)
    assert_equal_within(last, whole[:, -1], 1e-5, "last_only against the full logits' last")
    unchunked = Model.random(CFG, seed=3, backend=backend, prefill_chunk=512).forward(ids)
    assert_equal_within(whole, unchunked, 1e-4, "chunked against unchunked prefill")


def test_prefill_chunk_must_be_a_positive_integer():
    model = Model.random(CFG, backend="numpy")
    for bad in (0, -3, 2.5, True, "16"):
        with pytest.raises(ValueError, match="prefill_chunk"):
            model.prefill_chunk = bad
    with pytest.raises(ValueError, match="prefill_chunk"):
        Model.random(CFG, backend="numpy", prefill_chunk=0)


def test_bad_rows_are_refused_before_anything_changes():
    model = Model.random(CFG, backend=BACKENDS[-1])
    cache = model.new_cache(batch_size=3, max_len=8)
    model.forward([[1, 2, 3]], cache=cache, rows=[2])
    cases = {
        "outside the cache's 3 rows": dict(ids=[[1]], rows=[3]),
        "distinct": dict(ids=[[1], [2]], rows=[1, 1]),
        "names 1 cache rows": dict(ids=[[1], [2]], rows=[0]),
        "row indices": dict(ids=[[1]], rows=[0.5]),
        "do not fit": dict(ids=[[1] * 6], rows=[2]),
    }
    for message, kwargs in cases.items():
        with pytest.raises(CacheError, match=message):
            model.forward(kwargs["ids"], cache=cache, rows=kwargs["rows"])
    with pytest.raises(CacheError, match="pass cache="):
        model.forward([[1]], rows=[0])
    assert cache.lengths.tolist() == [0, 0, 3]


def test_a_cache_in_use_is_refused_not_shared():
    model = Model.random(CFG, backend=BACKENDS[-1])
    cache = model.new_cache(max_len=8)
    with cache.in_use():                                 # as another thread's forward holds it
        with pytest.raises(CacheBusyError, match="one call at a time"):
            model.forward([1, 2], cache=cache)
    assert cache.pos == 0
    model.forward([1, 2], cache=cache)                   # free again once released
    assert cache.pos == 2
