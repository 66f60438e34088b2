# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Causal attention over the KV cache for rows at different lengths: appends each row's new keys
and values at its own slots, then attends, one (row, head, block of 4 queries) per work item.

qkv: (B, T, 3C) the new queries, keys and values of B rows; the caches are one layer's
(R, H, S, D), R >= B rows, float32 or 16-bit (read as such: see csrc/attention.c); rows: (B,) the
cache row of each; start: (R,) first real slot per cache row (left padding); slots: (B,) each
row's first new slot.

Threads split the work items by cost, not by count: rows at different lengths (a server's batch)
cost in proportion to the keys they read, and each thread takes a contiguous run of items worth
about 1 / n_threads of the total. An item's result does not depend on which thread runs it.
"""
import numpy as np

from cython.parallel cimport prange
from libc.math cimport sqrt

from ._csrc cimport FG_Q_BF16, FG_Q_F16, FG_W_F32, fg_attend_four, fg_attend_one, fg_kv_store, fg_simd_level
from ._openmp cimport fg_thread_id

include "_check.pxi"
include "_kvcache.pxi"

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


cdef inline Py_ssize_t block_cost(Py_ssize_t t0, Py_ssize_t T, Py_ssize_t slot) noexcept nogil:
    """Query-key pairs of the block of queries [t0, t0 + 4) of a row whose first new slot is slot
    (an upper bound: the keys up to its last query, for each of its queries)."""
    cdef Py_ssize_t t1 = min(t0 + 4, T)
    return (t1 - t0) * (slot + t1)


def attention(const float[:, :, ::1] qkv, object k_cache, object v_cache,
              const long long[::1] rows, const long long[::1] start, const long long[::1] slots,
              float[:, :, :, ::1] out, float[:, ::1] scratch, int n_threads=1):
    """out[b, t, h] = softmax(q k^T / sqrt(D)) v over row b's visible slots, after appending its
    new keys and values; scratch: (4 * n_threads, >= the longest row's slots)."""
    cdef Py_ssize_t B = out.shape[0], T = out.shape[1], H = out.shape[2], D = out.shape[3]
    cdef Py_ssize_t C = H * D, R, S, item, n_items, n_blocks, b, t, t0, h, r, slot, first, row, longest = 0
    cdef Py_ssize_t q_stride = 3 * C, s_stride = scratch.shape[1], out_stride = H * D, es, head
    cdef Py_ssize_t tid, total = 0, lo, hi, done, cost
    cdef int kv_fmt
    cdef char *kp
    cdef char *vp
    cdef float scale
    check_threads(n_threads)
    kv_fmt = kv_format("k_cache", k_cache)
    if kv_format("v_cache", v_cache) != kv_fmt:
        raise ValueError(f"attention: k_cache ({k_cache.dtype}) and v_cache ({v_cache.dtype}) differ")
    if (k_cache.ndim != 4 or k_cache.shape != v_cache.shape or k_cache.shape[1] != H or k_cache.shape[3] != D
            or k_cache.shape[2] == 0 or not (k_cache.flags.c_contiguous and v_cache.flags.c_contiguous
                                             and k_cache.flags.writeable and v_cache.flags.writeable)):
        raise ValueError(f"attention: k_cache {k_cache.shape} / v_cache {v_cache.shape} must be writable, "
                         f"C-contiguous and (rows, {H}, slots, {D})")
    R, S = k_cache.shape[0], k_cache.shape[2]
    # Typed comparisons only: this runs once per layer per token.
    if qkv.shape[0] != B or qkv.shape[1] != T or qkv.shape[2] != 3 * C:
        raise ValueError(f"attention: qkv {tuple(qkv.shape)[:3]} does not match out {(B, T, H, D)}")
    if rows.shape[0] != B or slots.shape[0] != B or start.shape[0] != R:
        raise ValueError(f"attention: rows and slots need {B} entries and start {R}")
    check_rows(rows, start, slots, T, R, S)
    for b in range(B):
        longest = max(longest, slots[b] + T)
    if scratch.shape[0] < 4 * n_threads or scratch.shape[1] < longest:
        raise ValueError("attention: scratch too small")
    kp, vp = <char *>kv_data(k_cache), <char *>kv_data(v_cache)
    es = 4 if kv_fmt == FG_W_F32 else 2
    scale = 1.0 / sqrt(<double>D)
    n_blocks = (T + 3) // 4
    n_items = B * H * n_blocks
    for b in range(B):
        for t0 in range(0, T, 4):
            total += H * block_cost(t0, T, slots[b])
    # Small problems (a tiny model, a short cache) are not worth waking a second thread for.
    if B * H * T * longest * D < MIN_PARALLEL_MACS:
        n_threads = 1
    with nogil:
        # Every new key and value first: a query sees the keys of earlier queries in its chunk.
        for item in prange(B * H, num_threads=n_threads, schedule="static"):
            h = item % H
            b = item // H
            head = (rows[b] * H + h) * S * D
            for t in range(T):
                fg_kv_store(&qkv[b, t, C + h * D], kp, head + (slots[b] + t) * D, kv_fmt, D, SIMD_LEVEL)
                fg_kv_store(&qkv[b, t, 2 * C + h * D], vp, head + (slots[b] + t) * D, kv_fmt, D, SIMD_LEVEL)
        for tid in prange(n_threads, num_threads=n_threads, schedule="static"):
            # this thread's items: those that start in its share [lo, hi) of the total cost
            lo = total * tid // n_threads
            hi = total * (tid + 1) // n_threads
            done = 0
            row = 4 * fg_thread_id()
            for item in range(n_items):
                t0 = (item % n_blocks) * 4
                h = (item // n_blocks) % H
                b = item // (n_blocks * H)
                cost = block_cost(t0, T, slots[b])
                done = done + cost
                if done - cost < lo or done - cost >= hi:
                    continue
                r = rows[b]
                head = (r * H + h) * S * D * es
                # A full block of real (non-padding) queries goes through the 4-query kernel.
                if t0 + 4 <= T and slots[b] + t0 >= start[r] and fg_attend_four(
                        &qkv[b, t0, h * D], q_stride, kp + head, vp + head, kv_fmt, D, start[r], slots[b] + t0 + 1,
                        scale, &scratch[row, 0], s_stride, &out[b, t0, h, 0], out_stride, SIMD_LEVEL):
                    continue
                for t in range(t0, min(t0 + 4, T)):
                    slot = slots[b] + t
                    first = start[r] if start[r] <= slot else slot
                    fg_attend_one(&qkv[b, t, h * D], kp + head, vp + head, kv_fmt, D, first, slot + 1, scale,
                                  &scratch[row, 0], &out[b, t, h, 0], SIMD_LEVEL)
    return out.base
