/* One block of 32 inputs of x rounded to int8 as fastgpt.quant.quantize_activations_int8 specifies:
 * the rounding that every int8 product with int8 activations shares (csrc/quant.c's VNNI loop,
 * csrc/qgemm.c's GEMM, csrc/amx.c's tiles), so that they all multiply the same integers. */
#ifndef FASTGPT_Q8_BLOCK_H
#define FASTGPT_Q8_BLOCK_H

/* below this absmax a block counts as zero: 127 / absmax stays finite with room to spare */
#define Q8_TINY 0x1p-100f

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Symmetric absmax: returns sx = absmax / 127 and sets q_lo, q_hi (inputs 0-15, 16-31) to
 * rint(x * (127 / absmax)) in int32 lanes, |q| <= 127, ties to even (the default rounding mode).
 * A block with absmax < Q8_TINY: q = 0, sx = 0. A block holding NaN or inf: q = 0, sx = NaN, which
 * makes every output of its row NaN. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline float q8_round_block(const float *x,
                                                                                          __m512i *q_lo,
                                                                                          __m512i *q_hi) {
    __m512 a = _mm512_loadu_ps(x), c = _mm512_loadu_ps(x + 16);
    float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
    /* x - x is 0 for finite x and NaN for NaN and inf: one test for both */
    __mmask16 bad = _mm512_cmp_ps_mask(_mm512_sub_ps(a, a), _mm512_sub_ps(c, c), _CMP_UNORD_Q);
    if (bad || !(m >= Q8_TINY)) { /* NaN * 0 is NaN, whose conversion is not 0: no multiply here */
        *q_lo = *q_hi = _mm512_setzero_si512();
        return bad ? __builtin_nanf("") : 0.f;
    }
    const __m512 inv = _mm512_set1_ps(127.f / m);
    const __m512i lim = _mm512_set1_epi32(127);
    /* |x * inv| <= 127 up to rounding; the clamp is a guard */
    *q_lo = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
    *q_hi = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(c, inv)), lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
    return m / 127.f;
}

#endif /* x86 */
#endif
