# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Causal attention over the KV cache, one (row, head, query) per parallel work item.

q: (B, T, H, D) may be a strided view into the fused qkv buffer; the caches are
(B, H, S, D) contiguous; start: (B,) first real slot per row (left padding).
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

from ._csrc cimport fg_attend_one_f32, fg_simd_level
from ._openmp cimport fg_thread_id

include "_check.pxi"

cdef int SIMD_LEVEL = fg_simd_level()


def attention(const float[:, :, :, :] q, const float[:, :, :, ::1] k_cache,
              const float[:, :, :, ::1] v_cache, const long long[::1] start, Py_ssize_t pos,
              float[:, :, :, ::1] out, float[:, ::1] scratch, int n_threads=1):
    """out[b, t, h] = softmax(q k^T / sqrt(D)) v over visible slots; scratch: (n_threads, S)."""
    cdef Py_ssize_t B = q.shape[0], T = q.shape[1], H = q.shape[2], D = q.shape[3]
    cdef Py_ssize_t S = k_cache.shape[2], item, n_items, b, t, h, slot, first
    cdef float scale
    check_threads(n_threads)
    if q.strides[3] != 4:
        raise ValueError("attention: q's last axis must be contiguous")
    for name, arr in (("k_cache", k_cache), ("v_cache", v_cache)):
        if arr.shape[0] != B or arr.shape[1] != H or arr.shape[3] != D:
            raise ValueError(f"attention: {name} shape {tuple(arr.shape)[:4]} does not match q {(B, T, H, D)}")
    if out.shape[0] != B or out.shape[1] != T or out.shape[2] != H or out.shape[3] != D:
        raise ValueError("attention: out must have q's shape")
    if start.shape[0] != B:
        raise ValueError(f"attention: start must have {B} entries")
    if pos < 0 or pos + T > S:
        raise ValueError(f"attention: slots [{pos}, {pos + T}) do not fit a cache of {S}")
    if scratch.shape[0] < n_threads or scratch.shape[1] < pos + T:
        raise ValueError("attention: scratch too small")
    for b in range(B):
        if start[b] < 0 or start[b] >= S:
            raise ValueError(f"attention: start[{b}]={start[b]} outside [0, {S})")
    scale = 1.0 / sqrt(<double>D)
    n_items = B * H * T
    with nogil:
        for item in prange(n_items, num_threads=n_threads, schedule="static"):
            t = item % T
            h = (item // T) % H
            b = item // (T * H)
            slot = pos + t
            first = start[b] if start[b] <= slot else slot
            fg_attend_one_f32(&q[b, t, h, 0], &k_cache[b, h, 0, 0], &v_cache[b, h, 0, 0], D,
                              first, slot + 1, scale, &scratch[fg_thread_id(), 0], &out[b, t, h, 0],
                              SIMD_LEVEL)
    return out.base
