# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What this build and CPU offer (SIMD level, OpenMP), the memory-bandwidth probe and the
peak-arithmetic probes."""
import time

from cython.parallel cimport prange

from ._csrc cimport (FG_PEAK_BF16_AMX, FG_PEAK_BF16_DOT, FG_PEAK_F32_FMA, FG_PEAK_I8_AMX, FG_PEAK_I8_VNNI, fg_peak,
                     fg_read_sum_f32, fg_simd_level)
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


#: The arithmetic of each product kernel (csrc/peak.c): float32 FMA, AVX512-VNNI int8 dot,
#: AVX512_BF16 dot, and AMX's int8 and bfloat16 tiles.
PEAK_KINDS = {"f32_fma": FG_PEAK_F32_FMA, "i8_vnni": FG_PEAK_I8_VNNI, "bf16_dot": FG_PEAK_BF16_DOT,
              "i8_amx": FG_PEAK_I8_AMX, "bf16_amx": FG_PEAK_BF16_AMX}


def peak_ops(str kind, int n_threads=1, double seconds=0.05):
    """Operations per second (a multiply-add counts 2) of kind's instructions in registers on
    n_threads threads at once, over about `seconds`; 0.0 if this CPU or build lacks them."""
    cdef int code
    cdef long iters = 1000
    cdef Py_ssize_t t
    cdef double ops = 0.0, one
    if kind not in PEAK_KINDS:
        raise ValueError(f"unknown arithmetic {kind!r}; expected one of {', '.join(PEAK_KINDS)}")
    check_threads(n_threads)
    code = PEAK_KINDS[kind]
    with nogil:
        one = fg_peak(code, iters)
    if one == 0.0:
        return 0.0
    while True:  # grow the run until it takes long enough to time
        t0 = time.perf_counter()
        ops = 0.0
        with nogil:
            for t in prange(n_threads, num_threads=n_threads, schedule="static"):
                ops += fg_peak(code, iters)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return ops / elapsed
        iters = iters * 2 if elapsed < seconds / 16 else <long>(iters * seconds / elapsed * 1.1) + 1
