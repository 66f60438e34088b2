# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The decode matrix-vector product: y = x @ w.T + b with w [out, in], parallel over output rows.

Each thread streams a contiguous band of weight rows, so the two cores read disjoint memory
and together approach the machine's read bandwidth.
"""
from cython.parallel cimport prange

from ._csrc cimport fg_linear_rows_f32, fg_simd_level

include "_check.pxi"

cdef int SIMD_LEVEL = fg_simd_level()
# Rows of w per scheduling unit: large enough to amortise the loop, small enough to balance.
cdef Py_ssize_t ROW_BLOCK = 64


def linear(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b, float[:, ::1] out,
           int n_threads=1):
    """out (N, O) = x (N, I) @ w (O, I).T + b (O,) [b may be None]."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[0], blk, n_blocks, o0, o1
    cdef const float *bias = NULL
    check_threads(n_threads)
    if w.shape[1] != n_in:
        raise ValueError(f"linear: x has {n_in} features but w has shape ({n_out}, {w.shape[1]})")
    if out.shape[0] != n or out.shape[1] != n_out:
        raise ValueError(f"linear: out must have shape ({n}, {n_out}), got ({out.shape[0]}, {out.shape[1]})")
    if b is not None:
        if b.shape[0] != n_out:
            raise ValueError(f"linear: bias must have shape ({n_out},), got ({b.shape[0]},)")
        bias = &b[0]
    if n == 0 or n_out == 0:
        return out.base
    n_blocks = (n_out + ROW_BLOCK - 1) // ROW_BLOCK
    with nogil:
        for blk in prange(n_blocks, num_threads=n_threads, schedule="static"):
            o0 = blk * ROW_BLOCK
            o1 = min(o0 + ROW_BLOCK, n_out)
            fg_linear_rows_f32(&w[0, 0], bias, &x[0, 0], n_in, &out[0, 0], n_out, n, n_in, o0, o1, SIMD_LEVEL)
    return out.base
