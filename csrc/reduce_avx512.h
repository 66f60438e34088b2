/* The transpose-and-add reduction of the AVX-512 dot-product kernels (simd_dot.c, quant.c,
 * skinny.c), shared so that every one of them sums a row's 16 lanes in the same order. */
#ifndef FASTGPT_REDUCE_AVX512_H
#define FASTGPT_REDUCE_AVX512_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Sum each of 8 accumulators over its 16 lanes: out lane j = sum of a[j] (8 sums in one ymm).
 * A transpose-and-add tree: 16 shuffles and 8 adds for 8 rows, where 8 _mm512_reduce_add_ps
 * take 32 and 32.
 * Every row is summed in the same order, whatever its slot: per 128-bit lane (x0+x2)+(x1+x3),
 * then lanes (L0+L1)+(L2+L3). With one accumulator per (input row, weight row), y[r, o] thus
 * does not depend on the tile shape, so not on N or on the thread split either. */
__attribute__((target("avx512f"))) static inline __m512 pairsum_ps(__m512 a, __m512 b) {
    /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

__attribute__((target("avx512f"))) static inline __m512 quadsum_ps(__m512 ab, __m512 cd) {
    /* per 128-bit lane: [a, b, c, d], each (x0+x2)+(x1+x3) of that lane */
    __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}

__attribute__((target("avx512f"))) static inline __m256 reduce8_avx512(const __m512 a[8]) {
    __m512 u = quadsum_ps(pairsum_ps(a[0], a[1]), pairsum_ps(a[2], a[3]));  /* rows 0-3, per lane */
    __m512 v = quadsum_ps(pairsum_ps(a[4], a[5]), pairsum_ps(a[6], a[7]));  /* rows 4-7, per lane */
    /* [u.L0+u.L1, u.L2+u.L3, v.L0+v.L1, v.L2+v.L3] */
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
    s = _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 1, 2, 0));               /* [u01, v01, u23, v23] */
    return _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
}

#endif /* x86 */
#endif
