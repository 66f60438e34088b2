"""Each compiled kernel against the NumPy reference op, over awkward sizes.

Tolerances (float32, inputs of unit scale):
- ELEMENTWISE_ATOL: layer norm and activations differ only in rounding and in exp/erf
  implementations (libm vs NumPy): a few ulps of values of order 1.
- DOT_RTOL: dot products of length n are summed in a different order than BLAS; the error
  grows like sqrt(n) * eps * |x||w|, ~1e-6 relative for n = 3072.
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


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n_in,n_out", [(1, 1), (3, 7), (7, 3), (63, 65), (65, 63), (1023, 5), (768, 2304), (3072, 768)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(cy, rows, n_in, n_out, bias):
    rng = np.random.default_rng(n_in * 7 + n_out + rows)
    x, w = rand(rng, rows, n_in), rand(rng, n_out, n_in)
    b = rand(rng, n_out) if bias else None
    want = (x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b)).astype(np.float32)
    got = cy.linear(x, w, b, np.empty((rows, n_out), np.float32))
    assert_close(got, want, 1e-6, DOT_RTOL, what=f"linear {rows}x{n_in}->{n_out}")


def test_linear_is_bitwise_identical_across_thread_counts():
    from fastgpt.cython_backend import CythonBackend

    rng = np.random.default_rng(0)
    x, w, b = rand(rng, 2, 768), rand(rng, 3072, 768), rand(rng, 3072)
    one = CythonBackend(ThreadSettings(1)).linear(x, w, b, np.empty((2, 3072), np.float32))
    two = CythonBackend(ThreadSettings(2)).linear(x, w, b, np.empty((2, 3072), np.float32))
    np.testing.assert_array_equal(one, two)


def test_linear_rejects_mismatched_shapes(cy):
    from fastgpt.kernels import _linear

    x, w = np.ones((1, 8), np.float32), np.ones((4, 9), np.float32)
    with pytest.raises(ValueError, match="features"):
        _linear.linear(x, w, None, np.empty((1, 4), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _linear.linear(x, np.ones((4, 8), np.float32), None, np.empty((2, 4), np.float32))


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
    qkv = rand(rng, B * T, 3 * H * D)
    q = qkv[:, : H * D].reshape(B, T, H, D)  # strided view, as the model passes it
    k, v = rand(rng, B, H, S, D), rand(rng, B, H, S, D)
    start = np.zeros(B, np.int64)
    if padded:
        start[-1] = min(pos + T - 1, 3)  # last row left-padded; with T > 1 some queries are padding
    want = ref.attention(q, k, v, start, pos, np.empty((B, T, H, D), np.float32))
    got = cy.attention(q, k, v, start, pos, np.empty((B, T, H, D), np.float32))
    assert np.isfinite(got).all()
    assert_close(got, want, 1e-5, DOT_RTOL, what=f"attention B{B} T{T} H{H} D{D} pos{pos}")


def test_attention_rejects_overflowing_cache(cy):
    q = np.ones((1, 2, 1, 4), np.float32)
    k = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        cy.attention(q, k, k, np.zeros(1, np.int64), 3, np.empty_like(q))


def test_numpy_and_cython_backends_expose_the_same_ops():
    from fastgpt.cython_backend import CythonBackend

    ops = ["layer_norm", "activation", "linear", "attention", "add"]
    for op in ops:
        assert callable(getattr(NumpyBackend, op)) and callable(getattr(CythonBackend, op))
