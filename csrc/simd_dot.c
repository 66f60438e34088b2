/* The SIMD level of this CPU, float32 dot products (attention's generic path) and the
 * memory-bandwidth probe. The matrix products are in csrc/skinny.c (few rows) and csrc/gemm.c.
 * No fast-math: sums are reassociated only in the explicit ways written here.
 */
#include <stdint.h>

#include "fastgpt_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

int fg_simd_level(void) {
    int level = FG_SCALAR;
#ifdef FG_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = FG_AVX2;
    if (level == FG_AVX2 && __builtin_cpu_supports("avx512f")) level = FG_AVX512;
#endif
#ifdef FASTGPT_SIMD_MAX_LEVEL
    if (level > FASTGPT_SIMD_MAX_LEVEL) level = FASTGPT_SIMD_MAX_LEVEL;
#endif
    return level;
}

float fg_dot_f32_ref(const float *a, const float *b, ptrdiff_t n) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    ptrdiff_t k = 0;
    for (; k + 4 <= n; k += 4)
        for (int j = 0; j < 4; j++) acc[j] += a[k + j] * b[k + j];
    for (; k < n; k++) acc[0] += a[k] * b[k];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

#ifdef FG_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, ptrdiff_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
    }
    for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) sum += a[k] * b[k];
    return sum;
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, ptrdiff_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 64 <= n; k += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 32), _mm512_loadu_ps(b + k + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 48), _mm512_loadu_ps(b + k + 48), s3);
    }
    for (; k + 16 <= n; k += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    if (k < n) {  /* masked tail: no scalar loop, no read past the end */
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx512f"))) static double read_sum_avx512(const float *x, ptrdiff_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 64 <= n; k += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + k));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + k + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(x + k + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(x + k + 48));
    }
    double sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; k < n; k++) sum += x[k];
    return sum;
}

__attribute__((target("avx2,fma"))) static double read_sum_avx2(const float *x, ptrdiff_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + k));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + k + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + k + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + k + 24));
    }
    double sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) sum += x[k];
    return sum;
}
#endif /* FG_X86 */

float fg_dot_f32(const float *a, const float *b, ptrdiff_t n, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) return dot_avx512(a, b, n);
    if (level >= FG_AVX2) return dot_avx2(a, b, n);
#endif
    (void)level;
    return fg_dot_f32_ref(a, b, n);
}

double fg_read_sum_f32(const float *x, ptrdiff_t n, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) return read_sum_avx512(x, n);
    if (level >= FG_AVX2) return read_sum_avx2(x, n);
#endif
    (void)level;
    double s = 0.0;
    for (ptrdiff_t k = 0; k < n; k++) s += x[k];
    return s;
}
