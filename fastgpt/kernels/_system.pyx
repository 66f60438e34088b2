# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What this build and CPU offer (SIMD level, OpenMP) and the memory-bandwidth probe."""
from cython.parallel cimport prange

from ._csrc cimport fg_read_sum_f32, fg_simd_level
from ._openmp cimport FG_OPENMP_ENABLED

include "_check.pxi"

SIMD_NAMES = {0: "scalar", 1: "avx2+fma", 2: "avx512"}


def simd_level():
    return fg_simd_level()


def simd_name():
    return SIMD_NAMES[fg_simd_level()]


def openmp_enabled():
    return bool(FG_OPENMP_ENABLED)


def read_sum(const float[::1] buf, int n_threads=1):
    """Sum of buf, read by n_threads threads each streaming its own contiguous part."""
    cdef Py_ssize_t n = buf.shape[0], chunk, i, lo, hi
    cdef double total = 0.0
    cdef int level = fg_simd_level()
    check_threads(n_threads)
    chunk = (n + n_threads - 1) // n_threads
    with nogil:
        for i in prange(n_threads, num_threads=n_threads, schedule="static"):
            lo = i * chunk
            hi = min(lo + chunk, n)
            if lo < hi:
                total += fg_read_sum_f32(&buf[0] + lo, hi - lo, level)
    return total
