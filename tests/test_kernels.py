"""Each compiled kernel against the NumPy reference op, over awkward sizes.

Tolerances (float32, inputs of unit scale):
- ELEMENTWISE_ATOL: layer norm and activations differ only in rounding and in exp/erf
  implementations (libm vs NumPy): a few ulps of values of order 1.
- DOT_RTOL: dot products of length n are summed in a different order than BLAS (the matvec
  in 16 lane-wise partial sums joined by a tree, the GEMM in one FMA chain per output); the
  error grows like sqrt(n) * eps * |x||w| for random signs (n * eps at worst), ~1e-6 relative
  for n = 3072.
"""

import numpy as np
import pytest

from fastgpt import _numpy_ops as ref
from fastgpt.backend import NumpyBackend, kernels_available
from fastgpt.threads import ThreadSettings

pytestmark = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")

ELEMENTWISE_ATOL = 2e-6
DOT_RTOL = 2e-5
SIZES = [1, 3, 7, 63, 65, 1023, 768, 3072]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def cy(request):
    from fastgpt.cython_backend import CythonBackend

    return CythonBackend(ThreadSettings(request.param))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_close(got, want, atol, rtol=0.0, what=""):
    diff = np.abs(got - want)
    bound = atol + rtol * np.abs(want).max(initial=0.0)
    if not (diff <= bound).all():
        idx = np.unravel_index(np.argmax(diff), diff.shape)
        pytest.fail(f"{what}: max |diff| {diff.max():.3g} at {idx} (got {got[idx]}, want {want[idx]}), bound {bound:.3g}")


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("c", SIZES)
def test_layer_norm(cy, n, c):
    rng = np.random.default_rng(c * 10 + n)
    x, g, b = rand(rng, n, c) + 3.0, rand(rng, c), rand(rng, c)  # non-zero mean on purpose
    want = ref.layer_norm(x, g, b, 1e-5, np.empty_like(x))
    got = cy.layer_norm(x, g, b, 1e-5, np.empty_like(x))
    assert_close(got, want, ELEMENTWISE_ATOL * 4, what=f"layer_norm {n}x{c}")


@pytest.mark.parametrize("kind", sorted(ref.ACTIVATION_FUNCTIONS))
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (3, 7), (2, 63), (1, 65), (1, 1023), (4, 3072), (128, 3072)])
def test_activation(cy, kind, shape):
    rng = np.random.default_rng(sum(shape))
    x = rand(rng, *shape, scale=3.0)
    x.flat[0] = -30.0  # exp overflow region must give -0, not NaN
    want = ref.ACTIVATION_FUNCTIONS[kind](x, np.empty_like(x))
    got = cy.activation(kind, x.copy(), np.empty_like(x))
    assert_close(got, want, ELEMENTWISE_ATOL * 4, what=f"{kind} {shape}")
    inplace = x.copy()
    cy.activation(kind, inplace, inplace)
    np.testing.assert_array_equal(inplace, got)


# Rows: the matvec's tiles (1-3 rows, chunks of <= 6) and the GEMM's 16-row panels and
# 2-panel groups with partial last panels; (in, out): masked K tails and partial output tiles.
LINEAR_ROWS = [1, 2, 3, 5, 8, 16, 17, 64, 129, 512]
LINEAR_SHAPES = [(1, 1), (3, 7), (7, 3), (63, 65), (65, 63), (1023, 5), (768, 2304), (3072, 768)]


def linear_reference(x, w, b):
    want = x.astype(np.float64) @ w.astype(np.float64).T                 # (N, O)
    return (want if b is None else want + b).astype(np.float32)


@pytest.mark.parametrize("rows", LINEAR_ROWS)
@pytest.mark.parametrize("n_in,n_out", LINEAR_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear(cy, rows, n_in, n_out, bias):
    if rows * n_in * n_out > 2e8 and cy.threads.num_threads == 1:
        pytest.skip("largest products run with 2 threads only, to keep the suite fast")
    rng = np.random.default_rng(n_in * 7 + n_out + rows)
    x, w = rand(rng, rows, n_in), rand(rng, n_out, n_in)
    b = rand(rng, n_out) if bias else None
    want = linear_reference(x, w, b)
    got = cy.linear(x, w, b, np.empty((rows, n_out), np.float32))
    assert_close(got, want, 1e-6, DOT_RTOL, what=f"linear {rows}x{n_in}->{n_out}")


@pytest.mark.parametrize("kernel", ["linear", "gemm"])
@pytest.mark.parametrize("level", [0, 1, 2], ids=["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("rows", [1, 3, 8, 17, 40, 47])
@pytest.mark.parametrize("n_in,n_out", [(7, 3), (65, 63), (1023, 17), (768, 40)])
def test_linear_kernels_at_every_simd_level(kernel, level, rows, n_in, n_out):
    """Both kernels at any N (whichever the backend picks), and the AVX2/scalar fallbacks.
    gemm rows: 17 and 40 = panels + a matvec tail; 47 = a 2-panel group, a lone padded panel."""
    from fastgpt.kernels import _linear, _system

    if level > _system.simd_level():
        pytest.skip(f"this CPU has no {_system.SIMD_NAMES[level]}")
    rng = np.random.default_rng(rows * 1000 + n_in + n_out)
    x, w, b = rand(rng, rows, n_in), rand(rng, n_out, n_in), rand(rng, n_out)
    got = getattr(_linear, kernel)(x, w, b, np.empty((rows, n_out), np.float32), 2, level)
    assert_close(got, linear_reference(x, w, b), 1e-6, DOT_RTOL, what=f"{kernel} level {level} {rows}x{n_in}->{n_out}")


@pytest.mark.parametrize("rows,n_in,n_out", [(2, 768, 3072), (8, 65, 1023), (16, 768, 2304), (129, 3072, 777)])
def test_linear_is_bitwise_identical_across_thread_counts(rows, n_in, n_out):
    from fastgpt.cython_backend import CythonBackend

    rng = np.random.default_rng(rows)
    x, w, b = rand(rng, rows, n_in), rand(rng, n_out, n_in), rand(rng, n_out)
    one = CythonBackend(ThreadSettings(1)).linear(x, w, b, np.empty((rows, n_out), np.float32))
    two = CythonBackend(ThreadSettings(2)).linear(x, w, b, np.empty((rows, n_out), np.float32))
    np.testing.assert_array_equal(one, two)


def test_linear_accepts_read_only_weights(cy, tmp_path):
    """Weights may be a read-only memory map (the loaders map safetensors files)."""
    rng = np.random.default_rng(5)
    w, b = rand(rng, 65, 63), rand(rng, 65)
    path = tmp_path / "w.npy"
    np.save(path, w)
    w_map = np.load(path, mmap_mode="r")
    assert not w_map.flags.writeable
    for rows in (1, 8, 17):
        x = rand(rng, rows, 63)
        got = cy.linear(x, w_map, b, np.empty((rows, 65), np.float32))
        assert_close(got, linear_reference(x, w, b), 1e-6, DOT_RTOL, what=f"read-only w, {rows} rows")


def test_linear_rejects_mismatched_shapes(cy):
    from fastgpt.kernels import _linear

    x, w = np.ones((1, 8), np.float32), np.ones((4, 9), np.float32)
    with pytest.raises(ValueError, match="features"):
        _linear.linear(x, w, None, np.empty((1, 4), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _linear.linear(x, np.ones((4, 8), np.float32), None, np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="features"):
        _linear.gemm(np.ones((20, 8), np.float32), w, None, np.empty((20, 4), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        _linear.gemm(np.ones((20, 8), np.float32), np.ones((4, 8), np.float32), np.ones(5, np.float32),
                     np.empty((20, 4), np.float32))


# (B, T, H, D, pos, S): cache empty (pos 0), partly filled, and filled to capacity by this call.
ATTENTION_CASES = [
    (1, 1, 1, 1, 0, 1),
    (1, 1, 2, 3, 5, 16),
    (2, 1, 3, 7, 15, 16),
    (1, 7, 2, 63, 0, 7),
    (2, 3, 2, 65, 4, 7),
    (1, 1, 12, 64, 1023, 1024),
    (2, 5, 12, 64, 100, 128),
]


@pytest.mark.parametrize("B,T,H,D,pos,S", ATTENTION_CASES)
@pytest.mark.parametrize("padded", [False, True])
def test_attention(cy, B, T, H, D, pos, S, padded):
    rng = np.random.default_rng(B + T + H + D + pos)
    qkv = rand(rng, B, T, 3 * H * D)
    # B of B + 1 cache rows, in reverse order, each at its own length (the first at pos)
    R = B + 1
    rows = np.arange(B, dtype=np.int64)[::-1] + 1
    slots = np.maximum(pos - 2 * np.arange(B), 0).astype(np.int64)
    k, v = rand(rng, R, H, S, D), rand(rng, R, H, S, D)
    start = np.zeros(R, np.int64)
    if padded:
        start[rows[-1]] = min(slots[-1] + T - 1, 3)  # a left-padded row; with T > 1 some queries are padding
    k_ref, v_ref = k.copy(), v.copy()
    want = ref.attention(qkv, k_ref, v_ref, rows, start, slots, np.empty((B, T, H, D), np.float32))
    got = cy.attention(qkv, k, v, rows, start, slots, np.empty((B, T, H, D), np.float32))
    assert np.isfinite(got).all()
    assert_close(got, want, 1e-5, DOT_RTOL, what=f"attention B{B} T{T} H{H} D{D} pos{pos}")
    assert np.array_equal(k, k_ref) and np.array_equal(v, v_ref), "the new keys and values were not appended alike"


def test_attention_rejects_bad_rows_and_overflowing_slots(cy):
    qkv = np.ones((1, 2, 12), np.float32)
    k = np.ones((2, 1, 4, 4), np.float32)
    out = np.empty((1, 2, 1, 4), np.float32)
    start, one = np.zeros(2, np.int64), np.ones(1, np.int64)
    with pytest.raises(ValueError, match="do not fit"):
        cy.attention(qkv, k, k.copy(), np.zeros(1, np.int64), start, 3 * one, out)
    with pytest.raises(ValueError, match="outside the cache's 2 rows"):
        cy.attention(qkv, k, k.copy(), 2 * one, start, one, out)
    two = np.ones((2, 2, 12), np.float32)
    with pytest.raises(ValueError, match="named twice"):
        cy.attention(two, k, k.copy(), np.zeros(2, np.int64), start, np.zeros(2, np.int64),
                     np.empty((2, 2, 1, 4), np.float32))


def test_numpy_and_cython_backends_expose_the_same_ops():
    from fastgpt.cython_backend import CythonBackend

    ops = ["layer_norm", "activation", "linear", "attention", "add"]
    for op in ops:
        assert callable(getattr(NumpyBackend, op)) and callable(getattr(CythonBackend, op))
