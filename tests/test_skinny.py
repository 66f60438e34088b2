"""Skinny products (1 to 64 rows of x: a decode step of a batch, a short prompt): a row's result is
bitwise the same alone or among any other rows.

The serving engine decodes a request inside batches whose size and members change every step and
must give it exactly the tokens it gets alone; the fused decode step and the op-by-op path share
these kernels. So for every dtype, every SIMD level this CPU has (0 scalar, 1 AVX2, 2 AVX-512,
3 AMX), 1 and 2 threads, and random shapes (odd widths included), row r of a product of N rows
(N = 1..64, rows in a shuffled order) must equal the product of row r alone, bit for bit. Each
product is also checked against its NumPy spec (tests/test_quant.py's _check: tolerance by how the
level rounds x), so that "equal" cannot mean "equally wrong".
"""

import numpy as np
import pytest

from fastgpt.backend import kernels_available
from fastgpt.quant import FORMATS, quantize

pytestmark = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")

MAX_ROWS = 64
DTYPES = ("float32",) + FORMATS
#: (out, in): int8 needs in % 32 == 0; the 16-bit and float32 kernels also get widths with a tail.
SHAPES = {"int8": [(37, 96), (131, 768)], "other": [(37, 100), (131, 768), (20, 33)]}
#: float32 products of widths <= 768 against float64: summation order only (measured ~1e-7).
F32_RTOL = 1e-5


def _levels(dtype):
    from fastgpt.kernels import _quant, _system

    top = _system.simd_level() if dtype == "float32" else _quant.quant_level()
    return list(range(top + 1))


def _product(dtype, x, w, b, level, threads):
    """The kernel the backend runs for these rows (capped at `level`), on x (N, I)."""
    from fastgpt.kernels import _linear, _quant

    out = np.full((x.shape[0], w.shape[0]), np.nan, np.float32)
    if dtype == "float32":
        return _linear.linear(x, w, b, out, threads, level)
    return _quant.linear(x, w, b, out, threads, max_level=level)


def _case(dtype, O, I, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((MAX_ROWS, I)).astype(np.float32)
    x[5] *= 1e3                                           # rows of very different scales
    x[9, : I // 2] = 0.0                                  # and zero blocks
    w32 = (rng.standard_normal((O, I)) * 0.05).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    return x, (w32 if dtype == "float32" else quantize(w32, dtype)), b


def _check_spec(dtype, got, x, w, b, level, what):
    if dtype == "float32":
        want = x.astype(np.float64) @ w.T.astype(np.float64) + b
        err = np.abs(got - want) / (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + 1e-30)
        assert err.max() <= F32_RTOL, f"{what}: relative error {err.max():.3g}"
        return
    from test_quant import _check
    from fastgpt.quant import linear_ref

    want = linear_ref(x, w, b, np.empty_like(got))
    _check(got, x, w, b, want, dtype, x.shape[0], what, level)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_gives_the_same_bits_alone_or_in_any_batch(dtype, threads):
    rng = np.random.default_rng(7)
    for O, I in SHAPES["int8" if dtype == "int8" else "other"]:
        x, w, b = _case(dtype, O, I, seed=O + I)
        for level in _levels(dtype):
            what = f"{dtype} {O}x{I} level {level} threads {threads}"
            alone = np.stack([_product(dtype, x[r:r + 1], w, b, level, threads)[0] for r in range(MAX_ROWS)])
            _check_spec(dtype, alone, x, w, b, level, what + " rows alone")
            for n in range(2, MAX_ROWS + 1):
                rows = rng.permutation(MAX_ROWS)[:n]            # any rows, in any order
                got = _product(dtype, x[rows], w, b, level, threads)
                bad = np.flatnonzero((got.view(np.uint32) != alone[rows].view(np.uint32)).any(axis=1))
                if bad.size:
                    r = rows[bad[0]]
                    o = int(np.flatnonzero(got[bad[0]] != alone[r])[0])
                    pytest.fail(f"{what}: with {n} rows, row {r} (position {bad[0]}) differs from row {r} alone "
                                f"at output {o}: {got[bad[0], o]!r} vs {alone[r, o]!r} "
                                f"({bad.size} of {n} rows differ)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_backend_keeps_rows_independent_up_to_64_rows(dtype):
    """Through CythonBackend.linear, which picks the kernel by row count (the GEMMs take over
    above SKINNY_MAX_ROWS): at GPT-2's widths, as the model calls it."""
    from fastgpt.cython_backend import SKINNY_MAX_ROWS, CythonBackend
    from fastgpt.threads import ThreadSettings

    assert SKINNY_MAX_ROWS >= MAX_ROWS
    be = CythonBackend(ThreadSettings(2))
    x, w, b = _case(dtype, 300, 768, seed=3)
    alone = np.stack([be.linear(x[r:r + 1], w, b, np.empty((1, 300), np.float32))[0] for r in range(MAX_ROWS)])
    for n in (2, 3, 8, 9, 16, 17, 31, 32, 33, 48, 63, 64):
        got = be.linear(x[:n], w, b, np.empty((n, 300), np.float32))
        diff = np.flatnonzero((got != alone[:n]).any(axis=1))
        assert diff.size == 0, f"{dtype}: {n} rows: rows {diff[:5]} differ from alone, max {np.abs(got - alone[:n]).max()}"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_threads_calling_at_once_each_get_their_own_bits(dtype):
    """More than 6 rows pack x into a buffer per calling thread (csrc/skinny.c's block-major order),
    grown to the largest call: threads that start, grow theirs at different moments and exit, all
    at once, must each get the bits of the same product run alone."""
    import threading

    cases = []
    for k, (O, I) in enumerate([(131, 768), (37, 100), (64, 3072), (20, 33)]):
        x, w, b = _case(dtype, O, I, seed=11 + k)
        for n in (7, 16, 33, 64):
            cases.append((x[:n], w, b, _product(dtype, x[:n], w, b, 2, 1)))
    failures = []

    def worker(order):
        for i in order:
            x, w, b, want = cases[i]
            got = _product(dtype, x, w, b, 2, 1)
            if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                failures.append((i, x.shape, w.shape))

    rng = np.random.default_rng(5)
    for _ in range(3):                                  # new threads each round: buffers made and freed
        threads = [threading.Thread(target=worker, args=(rng.permutation(len(cases)),)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert not failures, f"{dtype}: {len(failures)} products differ from alone, first {failures[0]}"
