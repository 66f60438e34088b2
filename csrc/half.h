/* 16-bit floats (IEEE half, bfloat16) to and from float32, shared by every file that stores or reads
 * them: quantized weights (csrc/quant.c, qgemm.c, hgemm.c, amx.c) and the 16-bit KV cache
 * (csrc/attention.c). Widening is exact; narrowing rounds to nearest, ties to even, as NumPy's
 * astype(np.float16) and fastgpt.quant.float32_to_bf16_bits do (the specs), NaN staying NaN. */
#ifndef FASTGPT_HALF_H
#define FASTGPT_HALF_H

#include <stdint.h>
#include <string.h>

static inline float bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t f32_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static inline float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

/* IEEE half -> float, exact for every pattern (subnormals, inf, NaN payloads). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000u | (man << 13));
    if (exp != 0) return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
    float mag = (float)man * 5.9604644775390625e-8f; /* man * 2^-24: exact */
    return sign ? -mag : mag;
}

/* float -> bfloat16: add 0x7FFF plus the lowest kept bit and drop the low half (a carry into the
 * exponent is the right rounding, up to inf); NaN becomes the canonical quiet 0x7FC0. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t b = f32_to_bits(f);
    if (f != f) return 0x7FC0;
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

/* float -> IEEE half, to nearest even: overflow to inf, gradual underflow to subnormals and zero. */
static inline uint16_t f32_to_f16(float f) {
    uint32_t b = f32_to_bits(f), sign = (b >> 16) & 0x8000u, abs = b & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((abs >> 13) & 0x3FFu)); /* NaN stays NaN */
    if (abs >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  /* >= 65520: rounds to inf */
    if (abs >= 0x38800000u) {                                     /* normal half: >= 2^-14 */
        uint32_t r = abs - 0x38000000u;                           /* rebias the exponent (127 -> 15) */
        return (uint16_t)(sign | ((r + 0xFFFu + ((r >> 13) & 1u)) >> 13));
    }
    if (abs < 0x33000000u) return (uint16_t)sign;                 /* < 2^-25: rounds to zero */
    /* subnormal half: the value in units of 2^-24, rounded to nearest even */
    uint32_t man = (abs & 0x7FFFFFu) | 0x800000u, shift = 126u - (abs >> 23); /* 14..24 */
    uint32_t half = 1u << (shift - 1), q = man >> shift, rem = man & ((1u << shift) - 1u);
    q += rem > half || (rem == half && (q & 1u));
    return (uint16_t)(sign | q);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* bfloat16 bits of 16 floats in the low half of each 32-bit lane, as f32_to_bf16. */
__attribute__((target("avx512f"), always_inline)) static inline __m512i bf16_bits_512(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    return _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
}
#endif

#endif
