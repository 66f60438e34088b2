# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Causal attention over the KV cache for rows at different lengths: appends each row's new keys
and values at its own slots, then attends, one (row, head, block of 4 queries) per work item.

qkv: (B, T, 3C) the new queries, keys and values of B rows; the caches are one layer's
(R, H, S, D), R >= B rows; rows: (B,) the cache row of each; start: (R,) first real slot per
cache row (left padding); slots: (B,) each row's first new slot.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.string cimport memcpy

from ._csrc cimport fg_attend_four_f32, fg_attend_one_f32, fg_simd_level
from ._openmp cimport fg_thread_id

include "_check.pxi"

cdef int SIMD_LEVEL = fg_simd_level()
cdef Py_ssize_t MIN_PARALLEL_MACS = 1 << 16


cdef int check_rows(const long long[::1] rows, const long long[::1] start, const long long[::1] slots,
                    Py_ssize_t T, Py_ssize_t R, Py_ssize_t S) except -1:
    """Every row a distinct cache row whose new slots fit and whose padding is inside the cache."""
    cdef Py_ssize_t b, c, B = rows.shape[0]
    for b in range(B):
        if rows[b] < 0 or rows[b] >= R:
            raise ValueError(f"attention: rows[{b}]={rows[b]} outside the cache's {R} rows")
        if slots[b] < 0 or slots[b] + T > S:
            raise ValueError(f"attention: slots [{slots[b]}, {slots[b] + T}) of row {rows[b]} do not fit a cache of {S}")
        if start[rows[b]] < 0 or start[rows[b]] >= S:
            raise ValueError(f"attention: start[{rows[b]}]={start[rows[b]]} outside [0, {S})")
        for c in range(b):
            if rows[c] == rows[b]:
                raise ValueError(f"attention: cache row {rows[b]} named twice")
    return 0


def attention(const float[:, :, ::1] qkv, float[:, :, :, ::1] k_cache, float[:, :, :, ::1] v_cache,
              const long long[::1] rows, const long long[::1] start, const long long[::1] slots,
              float[:, :, :, ::1] out, float[:, ::1] scratch, int n_threads=1):
    """out[b, t, h] = softmax(q k^T / sqrt(D)) v over row b's visible slots, after appending its
    new keys and values; scratch: (4 * n_threads, >= the longest row's slots)."""
    cdef Py_ssize_t B = out.shape[0], T = out.shape[1], H = out.shape[2], D = out.shape[3]
    cdef Py_ssize_t C = H * D, R = k_cache.shape[0], S = k_cache.shape[2]
    cdef Py_ssize_t item, n_items, n_blocks, b, t, t0, h, r, slot, first, row, longest = 0
    cdef Py_ssize_t q_stride = 3 * C, s_stride = scratch.shape[1], out_stride = H * D
    cdef size_t row_bytes = D * sizeof(float)
    cdef float scale
    check_threads(n_threads)
    # Typed comparisons only: this runs once per layer per token.
    if qkv.shape[0] != B or qkv.shape[1] != T or qkv.shape[2] != 3 * C:
        raise ValueError(f"attention: qkv {tuple(qkv.shape)[:3]} does not match out {(B, T, H, D)}")
    if (k_cache.shape[1] != H or k_cache.shape[3] != D or v_cache.shape[0] != R or v_cache.shape[1] != H
            or v_cache.shape[2] != S or v_cache.shape[3] != D):
        raise ValueError(f"attention: k_cache {tuple(k_cache.shape)[:4]} / v_cache {tuple(v_cache.shape)[:4]} "
                         f"do not match heads {H} x {D}")
    if rows.shape[0] != B or slots.shape[0] != B or start.shape[0] != R:
        raise ValueError(f"attention: rows and slots need {B} entries and start {R}")
    check_rows(rows, start, slots, T, R, S)
    for b in range(B):
        longest = max(longest, slots[b] + T)
    if scratch.shape[0] < 4 * n_threads or scratch.shape[1] < longest:
        raise ValueError("attention: scratch too small")
    scale = 1.0 / sqrt(<double>D)
    n_blocks = (T + 3) // 4
    n_items = B * H * n_blocks
    # Small problems (a tiny model, a short cache) are not worth waking a second thread for.
    if B * H * T * longest * D < MIN_PARALLEL_MACS:
        n_threads = 1
    with nogil:
        # Every new key and value first: a query sees the keys of earlier queries in its chunk.
        for item in prange(B * H, num_threads=n_threads, schedule="static"):
            h = item % H
            b = item // H
            r = rows[b]
            for t in range(T):
                memcpy(&k_cache[r, h, slots[b] + t, 0], &qkv[b, t, C + h * D], row_bytes)
                memcpy(&v_cache[r, h, slots[b] + t, 0], &qkv[b, t, 2 * C + h * D], row_bytes)
        for item in prange(n_items, num_threads=n_threads, schedule="static"):
            t0 = (item % n_blocks) * 4
            h = (item // n_blocks) % H
            b = item // (n_blocks * H)
            r = rows[b]
            row = 4 * fg_thread_id()
            # A full block of real (non-padding) queries goes through the 4-query kernel.
            if t0 + 4 <= T and slots[b] + t0 >= start[r] and fg_attend_four_f32(
                    &qkv[b, t0, h * D], q_stride, &k_cache[r, h, 0, 0], &v_cache[r, h, 0, 0], D,
                    start[r], slots[b] + t0 + 1, scale, &scratch[row, 0], s_stride, &out[b, t0, h, 0],
                    out_stride, SIMD_LEVEL):
                continue
            for t in range(t0, min(t0 + 4, T)):
                slot = slots[b] + t
                first = start[r] if start[r] <= slot else slot
                fg_attend_one_f32(&qkv[b, t, h * D], &k_cache[r, h, 0, 0], &v_cache[r, h, 0, 0], D,
                                  first, slot + 1, scale, &scratch[row, 0], &out[b, t, h, 0], SIMD_LEVEL)
    return out.base
