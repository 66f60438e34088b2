# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Layer norm, activations and the residual add, parallel over rows (or chunks of a row)."""
from cython.parallel cimport prange

from ._csrc cimport fg_activation_f32, fg_layer_norm_row_f32, fg_simd_level

include "_check.pxi"

ACTIVATION_KINDS = {"gelu_new": 0, "gelu_pytorch_tanh": 0, "gelu_fast": 0, "gelu": 1,
                    "relu": 2, "silu": 3, "swish": 3, "quick_gelu": 4}

cdef int SIMD_LEVEL = fg_simd_level()
# Below this many elements a parallel region costs more than it saves. One thread runs a plain
# loop: even a one-thread region costs ~0.6 us to enter (GOMP's team set-up), more than a
# 768-wide layer norm itself, and decoding a GPT-2 token makes ~40 such calls.
cdef Py_ssize_t MIN_PARALLEL = 16384


def layer_norm(const float[:, ::1] x, const float[::1] g, const float[::1] b, float eps,
               float[:, ::1] out, int n_threads=1):
    """out[r] = layer_norm(x[r]) * g + b for every row r; x, out: (N, C)."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], r
    check_threads(n_threads)
    if g.shape[0] != c or b.shape[0] != c or out.shape[0] != n or out.shape[1] != c:
        raise ValueError(f"layer_norm: x {(n, c)}, g {g.shape[0]}, b {b.shape[0]}, out {(out.shape[0], out.shape[1])} disagree")
    with nogil:
        if n_threads == 1 or n * c < MIN_PARALLEL:
            for r in range(n):
                fg_layer_norm_row_f32(&x[r, 0], &g[0], &b[0], c, eps, &out[r, 0], SIMD_LEVEL)
        else:
            for r in prange(n, num_threads=n_threads, schedule="static"):
                fg_layer_norm_row_f32(&x[r, 0], &g[0], &b[0], c, eps, &out[r, 0], SIMD_LEVEL)
    return out.base


def activation(str kind, const float[:, ::1] x, float[:, ::1] out, int n_threads=1):
    """Elementwise activation of x (N, F) into out (may be x itself)."""
    cdef Py_ssize_t n = x.shape[0], f = x.shape[1], total = n * f, chunk, start, stop, i, n_chunks
    cdef int code
    check_threads(n_threads)
    if kind not in ACTIVATION_KINDS:
        raise ValueError(f"unknown activation {kind!r}")
    code = ACTIVATION_KINDS[kind]
    if out.shape[0] != n or out.shape[1] != f:
        raise ValueError(f"activation: out shape {(out.shape[0], out.shape[1])} != x shape {(n, f)}")
    if total < MIN_PARALLEL:
        n_threads = 1
    chunk = (total + n_threads - 1) // n_threads
    n_chunks = n_threads
    with nogil:
        if n_threads == 1:
            if total > 0:
                fg_activation_f32(&x[0, 0], &out[0, 0], total, code, SIMD_LEVEL)
        else:
            for i in prange(n_chunks, num_threads=n_threads, schedule="static"):
                start = i * chunk
                stop = min(start + chunk, total)
                if start < stop:
                    fg_activation_f32(&x[0, 0] + start, &out[0, 0] + start, stop - start, code, SIMD_LEVEL)
    return out.base


def add(const float[:, ::1] x, const float[:, ::1] y, float[:, ::1] out):
    """out = x + y for (N, C) arrays; out may alias x."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], r, k
    if y.shape[0] != n or y.shape[1] != c or out.shape[0] != n or out.shape[1] != c:
        raise ValueError("add: shapes of x, y and out differ")
    with nogil:
        for r in range(n):
            for k in range(c):
                out[r, k] = x[r, k] + y[r, k]
    return out.base
