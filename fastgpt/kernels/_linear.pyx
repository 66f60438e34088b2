# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""out (N, O) = x (N, I) @ w (O, I).T + b (O,), w row-major [out, in]: two kernels.

- ``linear``: the skinny product (few rows: a decode step of a batch, a short prompt). Each
  weight is streamed once from memory and meets every row of x in dot-product register blocks
  (csrc/skinny.c). Bound by reading w for few rows, so it is parallel over bands of output rows,
  each thread reading one contiguous band. A row's result does not depend on the other rows.
- ``gemm``: the prefill product (many rows). x is packed into panels of 16 rows, then a
  register-blocked AVX-512 (or AVX2) GEMM broadcasts w in place (csrc/gemm.c). Parallel over
  blocks of output rows sized for L2; every thread reads the shared packed x. A last panel of
  at most 8 rows goes through the matvec instead of being padded to 16.

Both sum each output in an order fixed by N and the SIMD level alone, so any thread count
gives bitwise the same result. Shapes are checked here, before the GIL is released.
"""
import numpy as np

from cython.parallel cimport prange

from ._csrc cimport FG_AVX2, fg_gemm_f32, fg_gemm_pack_x_f32, fg_linear_rows_f32, fg_simd_level

include "_check.pxi"

cdef int SIMD_LEVEL = fg_simd_level()
# Rows of w per scheduling unit of the matvec: large enough to amortise the loop, small enough
# to balance; a multiple of its 8-row tile.
cdef Py_ssize_t ROW_BLOCK = 64
# Below this many multiply-adds (~10 us on one core) a second thread costs more than it saves:
# waking it is a few microseconds when it spins, and a whole scheduler slice when the core is
# busy with another process.
cdef Py_ssize_t MATVEC_MIN_PARALLEL_MACS = 1 << 18
# Rows of x per packed panel (one zmm). A GEMM block of output rows is the unit of work of a
# thread: every panel group of x (in L2) passes over the block's rows of w. Blocks hold
# GEMM_BLOCK_BYTES of w, so that for I = 768 the block stays in L2 beside the x group; but at
# least GEMM_MIN_BLOCK rows, because each block re-reads all of the packed x from L3
# (16-row blocks at I = 3072 ran at 120 GFLOP/s, 64-row blocks at 170).
cdef Py_ssize_t PANEL = 16
cdef Py_ssize_t GEMM_BLOCK_BYTES = 256 * 1024
cdef Py_ssize_t GEMM_MIN_BLOCK = 64
# A last panel with at most this many rows (of x) goes to the matvec instead: padded to 16
# rows it would cost a whole panel of FMAs.
cdef Py_ssize_t GEMM_TAIL_ROWS = 8


cdef const float *check_linear(str name, const float[:, ::1] x, const float[:, ::1] w, const float[::1] b,
                               float[:, ::1] out) except? NULL:
    """The shared shape checks; returns the bias pointer (NULL without bias)."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[0]
    if w.shape[1] != n_in:
        raise ValueError(f"{name}: x has {n_in} features but w has shape ({n_out}, {w.shape[1]}); "
                         "w must be [out, in]")
    return check_out_and_bias(name, n, n_out, b, out)


def gemm_available():
    """Whether `gemm` has a SIMD kernel on this CPU (AVX-512 or AVX2); otherwise use BLAS."""
    return SIMD_LEVEL >= FG_AVX2


def linear(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b, float[:, ::1] out,
           int n_threads=1, int max_level=2):
    """out (N, O) = x (N, I) @ w (O, I).T + b (O,) [b may be None], by the skinny product.

    max_level caps the SIMD level (0 scalar, 1 AVX2, 2 AVX-512): for testing the fallbacks.
    """
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[0], blk, n_blocks, o0, o1
    cdef int level = min(SIMD_LEVEL, max_level)
    cdef const float *bias = check_linear("linear", x, w, b, out)
    check_threads(n_threads)
    if n == 0 or n_out == 0:
        return out.base
    n_blocks = (n_out + ROW_BLOCK - 1) // ROW_BLOCK
    if n * n_in * n_out < MATVEC_MIN_PARALLEL_MACS:
        n_threads = 1
    with nogil:
        for blk in prange(n_blocks, num_threads=n_threads, schedule="static"):
            o0 = blk * ROW_BLOCK
            o1 = min(o0 + ROW_BLOCK, n_out)
            fg_linear_rows_f32(&w[0, 0], bias, &x[0, 0], n_in, &out[0, 0], n_out, n, n_in, o0, o1, level)
    return out.base


def gemm(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b, float[:, ::1] out,
         int n_threads=1, int max_level=2):
    """out (N, O) = x (N, I) @ w (O, I).T + b (O,) [b may be None], by the packed GEMM.

    Allocates the packed copy of x (N rounded up to 16, times I floats) per call. Without
    AVX2 (or with max_level 0) a slow portable loop runs: callers should use BLAS there
    (see gemm_available).
    """
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[0]
    cdef Py_ssize_t tail, n_gemm, n_panels, p, blk, n_blocks, n_tail_blocks, block, o0, o1
    cdef int level = min(SIMD_LEVEL, max_level)
    cdef const float *bias = check_linear("gemm", x, w, b, out)
    cdef float[::1] buf
    cdef float *xp
    check_threads(n_threads)
    if filled_trivially(n, n_in, n_out, b, out):
        return out.base
    tail = n % PANEL if n > PANEL and n % PANEL <= GEMM_TAIL_ROWS else 0
    n_gemm = n - tail
    n_panels = (n_gemm + PANEL - 1) // PANEL
    buf = np.empty(n_panels * PANEL * n_in + PANEL, np.float32)          # xp (panels, I, 16) + alignment
    xp = &buf[((-<size_t>&buf[0]) % 64) // sizeof(float)]                 # the kernel's loads are aligned
    block = max(GEMM_MIN_BLOCK, (GEMM_BLOCK_BYTES // (n_in * sizeof(float))) // 16 * 16)
    n_blocks = (n_out + block - 1) // block
    n_tail_blocks = (n_out + ROW_BLOCK - 1) // ROW_BLOCK if tail else 0
    with nogil:
        for p in prange(n_panels, num_threads=n_threads, schedule="static"):
            fg_gemm_pack_x_f32(&x[0, 0], n_in, n_gemm, n_in, p, p + 1, xp, level)
        for blk in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            o0 = blk * block
            o1 = min(o0 + block, n_out)
            fg_gemm_f32(xp, n_gemm, n_in, &w[0, 0], bias, &out[0, 0], n_out, o0, o1, level)
        for blk in prange(n_tail_blocks, num_threads=n_threads, schedule="static"):
            o0 = blk * ROW_BLOCK
            o1 = min(o0 + ROW_BLOCK, n_out)
            fg_linear_rows_f32(&w[0, 0], bias, &x[n_gemm, 0], n_in, &out[n_gemm, 0], n_out, tail, n_in, o0, o1, level)
    return out.base
