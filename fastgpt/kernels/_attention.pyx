# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Causal attention over the KV cache, one (row, head, block of 4 queries) per parallel work item.

q: (B, T, H, D) may be a strided view into the fused qkv buffer; the caches are
(B, H, S, D) contiguous; start: (B,) first real slot per row (left padding).
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

from ._csrc cimport fg_attend_four_f32, fg_attend_one_f32, fg_simd_level
from ._openmp cimport fg_thread_id

include "_check.pxi"

cdef int SIMD_LEVEL = fg_simd_level()
cdef Py_ssize_t MIN_PARALLEL_MACS = 1 << 16


def attention(const float[:, :, :, :] q, const float[:, :, :, ::1] k_cache,
              const float[:, :, :, ::1] v_cache, const long long[::1] start, Py_ssize_t pos,
              float[:, :, :, ::1] out, float[:, ::1] scratch, int n_threads=1):
    """out[b, t, h] = softmax(q k^T / sqrt(D)) v over visible slots; scratch: (4 * n_threads, S)."""
    cdef Py_ssize_t B = q.shape[0], T = q.shape[1], H = q.shape[2], D = q.shape[3]
    cdef Py_ssize_t S = k_cache.shape[2], item, n_items, n_blocks, b, t, t0, h, slot, first, row
    cdef Py_ssize_t q_stride, s_stride = scratch.shape[1], out_stride = H * D
    cdef float scale
    check_threads(n_threads)
    if q.strides[3] != 4 or q.strides[1] % 4:
        raise ValueError("attention: q's last axis must be contiguous")
    q_stride = q.strides[1] // 4
    # Typed comparisons only: this runs once per layer per token.
    if (k_cache.shape[0] != B or k_cache.shape[1] != H or k_cache.shape[3] != D
            or v_cache.shape[0] != B or v_cache.shape[1] != H or v_cache.shape[2] != S or v_cache.shape[3] != D):
        raise ValueError(f"attention: k_cache {tuple(k_cache.shape)[:4]} / v_cache {tuple(v_cache.shape)[:4]} "
                         f"do not match q {(B, T, H, D)}")
    if out.shape[0] != B or out.shape[1] != T or out.shape[2] != H or out.shape[3] != D:
        raise ValueError("attention: out must have q's shape")
    if start.shape[0] != B:
        raise ValueError(f"attention: start must have {B} entries")
    if pos < 0 or pos + T > S:
        raise ValueError(f"attention: slots [{pos}, {pos + T}) do not fit a cache of {S}")
    if scratch.shape[0] < 4 * n_threads or scratch.shape[1] < pos + T:
        raise ValueError("attention: scratch too small")
    for b in range(B):
        if start[b] < 0 or start[b] >= S:
            raise ValueError(f"attention: start[{b}]={start[b]} outside [0, {S})")
    scale = 1.0 / sqrt(<double>D)
    n_blocks = (T + 3) // 4
    n_items = B * H * n_blocks
    # Small problems (a tiny model, a short cache) are not worth waking a second thread for.
    if B * H * T * (pos + T) * D < MIN_PARALLEL_MACS:
        n_threads = 1
    with nogil:
        for item in prange(n_items, num_threads=n_threads, schedule="static"):
            t0 = (item % n_blocks) * 4
            h = (item // n_blocks) % H
            b = item // (n_blocks * H)
            row = 4 * fg_thread_id()
            # A full block of real (non-padding) queries goes through the 4-query kernel.
            if t0 + 4 <= T and pos + t0 >= start[b] and fg_attend_four_f32(
                    &q[b, t0, h, 0], q_stride, &k_cache[b, h, 0, 0], &v_cache[b, h, 0, 0], D,
                    start[b], pos + t0 + 1, scale, &scratch[row, 0], s_stride, &out[b, t0, h, 0],
                    out_stride, SIMD_LEVEL):
                continue
            for t in range(t0, min(t0 + 4, T)):
                slot = pos + t
                first = start[b] if start[b] <= slot else slot
                fg_attend_one_f32(&q[b, t, h, 0], &k_cache[b, h, 0, 0], &v_cache[b, h, 0, 0], D,
                                  first, slot + 1, scale, &scratch[row, 0], &out[b, t, h, 0],
                                  SIMD_LEVEL)
    return out.base
