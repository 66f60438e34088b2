/* Quantized weights (bfloat16, float16, int8 blocks): fused dequantize-and-dot for decoding,
 * and dequantization of row tiles for the prefill GEMM. fastgpt/quant.py is the spec.
 *
 * Dimension legend: n rows of x and y (tokens), i input width, o output rows of w,
 * b blocks of 32 inputs (int8 scales).
 *
 * Design. Decode reads every weight once per token, so these kernels exist to read fewer
 * bytes: a weight becomes float32 in registers right after its load and meets float32
 * activations in an FMA; no float32 copy of w is ever written. The tile structure is
 * simd_dot.c's: TO weight rows against NR input rows, each weight vector loaded once and used by
 * every input row, TO independent FMA chains, a transpose-and-add reduction, and a software
 * prefetch of the next tile's rows (several row streams defeat the hardware prefetchers). x is
 * prepared once per product (see "prepared x" below) so that the per-weight work stays well
 * under what one core can do at DRAM speed.
 *
 * Accuracy against quant.py's "dequantize, then float32 matmul": bfloat16 and float16 are
 * widened exactly, so only the summation order differs (NMSE ~1e-13). int8 rounds x to int16
 * per block of 32 (below), which adds an NMSE of ~1e-9, four orders below the int8 weights' own
 * error. Not used: AVX512_BF16's vdpbf16ps (x rounded to bfloat16 too would double the error of
 * bfloat16 weights) and VNNI's vpdpbusd (x in int8: measured +8e-5 NMSE on a 3072 x 768 product,
 * three times the int8 weights' own error); the issue keeps activations in float32, and the
 * loops below run at ~90-100 GB/s from cache on one core, well above DRAM speed.
 *
 * Non-goals: no threads (the Cython wrapper runs a prange over row blocks), no allocation,
 * no fast-math. Int8 needs n_in % 32 == 0 (checked in Python).
 */
#include <stdint.h>
#include <string.h>

#include "fastgpt_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

int fg_quant_level(void) {
    int level = fg_simd_level();
#ifdef FG_X86
    __builtin_cpu_init();
    /* the vector paths convert float16 with F16C (every AVX2 CPU we know has it; check anyway) */
    if (level >= FG_AVX2 && !__builtin_cpu_supports("f16c")) level = FG_SCALAR;
    /* the AVX-512 loops use AVX512BW/VL (int16 multiply-adds, masked 16-bit loads) */
    if (level >= FG_AVX512 && !(__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")))
        level = FG_AVX2;
#endif
    return level;
}

/* -- portable element conversions (the reference) ------------------------------------------- */
static inline float bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
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

static inline float qvalue(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o, ptrdiff_t i) {
    if (fmt == FG_Q_BF16) return bf16_to_f32(((const uint16_t *)w)[o * n_in + i]);
    if (fmt == FG_Q_F16) return f16_to_f32(((const uint16_t *)w)[o * n_in + i]);
    return (float)((const int8_t *)w)[o * n_in + i] * f16_to_f32(s[o * (n_in / FG_Q8_BLOCK) + i / FG_Q8_BLOCK]);
}

void fg_dequantize_rows_ref(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin,
                            ptrdiff_t o_end, float *out) {
    for (ptrdiff_t o = o_begin; o < o_end; o++)
        for (ptrdiff_t i = 0; i < n_in; i++) out[(o - o_begin) * n_in + i] = qvalue(w, s, fmt, n_in, o, i);
}

void fg_qlinear_rows_ref(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x, ptrdiff_t xs,
                         float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    for (ptrdiff_t r = 0; r < n_rows; r++)
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            float acc = 0.f;
            for (ptrdiff_t i = 0; i < n_in; i++) acc += qvalue(w, s, fmt, n_in, o, i) * x[r * xs + i];
            y[r * ys + o] = acc + (bias ? bias[o] : 0.f);
        }
}

#ifdef FG_X86
/* ---- AVX-512 ------------------------------------------------------------------------------ */
#define TARGET_512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))

/* 16 weights of one row from element k, widened to float32; int8 times its block's scale. */
TARGET_512 __attribute__((always_inline)) static inline __m512 load16_512(const void *w, ptrdiff_t k, const int FMT,
                                                                          const float *scale) {
    if (FMT == FG_Q_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k))), 16));
    if (FMT == FG_Q_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)w + k))));
    return _mm512_mul_ps(q, _mm512_set1_ps(*scale)); /* the broadcast folds into vmulps' memory operand */
}

/* The same for the last n < 16 weights of a 16-bit row (int8 rows have no tail): through a
 * zeroed buffer, so nothing past the row is read. */
TARGET_512 static inline __m512 load_tail_512(const void *w, ptrdiff_t k, ptrdiff_t n, const int FMT) {
    uint16_t buf[16] = {0};
    memcpy(buf, (const uint16_t *)w + k, (size_t)n * sizeof(uint16_t));
    return load16_512(buf, 0, FMT, NULL);
}

/* Per-lane sums of 8 (4) accumulators: simd_dot.c's transpose-and-add tree, same order. */
TARGET_512 static inline __m512 pairsum_ps(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

TARGET_512 static inline __m512 quadsum_ps(__m512 ab, __m512 cd) {
    __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}

TARGET_512 static inline __m256 reduce8_512(const __m512 a[8]) {
    __m512 u = quadsum_ps(pairsum_ps(a[0], a[1]), pairsum_ps(a[2], a[3]));
    __m512 v = quadsum_ps(pairsum_ps(a[4], a[5]), pairsum_ps(a[6], a[7]));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
    s = _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 1, 2, 0));
    return _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
}

TARGET_512 static inline __m128 reduce4_512(const __m512 a[4]) {
    __m512 u = quadsum_ps(pairsum_ps(a[0], a[1]), pairsum_ps(a[2], a[3]));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm_add_ps(_mm512_castps512_ps128(s), _mm512_extractf32x4_ps(s, 1));
}

/* -- prepared x -----------------------------------------------------------------------------
 * The AVX-512 loops read x in a form prepared once per product (fg_qprep_x), so that the
 * per-weight work is as small as possible (at DRAM speed one core has only ~8 cycles per 64-byte
 * line; the plain widening loops measured ~1.6x slower than these in cache):
 * - bfloat16: a 64-byte line of w holds 32 weights; `v << 16` puts the even ones and `v & 0xFFFF0000`
 *   the odd ones in float32 lanes, exactly (1 op per 16 weights instead of a widening shuffle and
 *   a shift). x is stored per chunk of 32 as [x0, x2, .., x30, x1, x3, .., x31] to match. Exact.
 * - int8: each block of 32 inputs of x is rounded to int16 (scale = absmax / 32767), so that one
 *   vpmaddwd multiplies a whole block of w (sign-extended to int16) with it in integers, exactly;
 *   the block's int32 sum is then scaled by w's and x's scales. Rounding x to 16 bits is the only
 *   approximation: |x - x16| <= absmax / 65534 per block, measured NMSE of the product ~1e-9, four
 *   orders below the int8 weights' own (~2e-5). (int8 x with VNNI would add ~8e-5: not used.)
 * - float16: x is used as is (vcvtph2ps widens 16 weights in one op).
 * Layouts, rows of the product r < n_rows:
 *   bfloat16: float xp[r][n32], n32 = n_in rounded down to 32 (the rest of a row uses x itself).
 *   int8:     int16 xq[r][n_in], then (at a 64-byte boundary) float xsc[r][n_in / 32]. */
static ptrdiff_t align64(ptrdiff_t n) { return (n + 63) / 64 * 64; }

ptrdiff_t fg_qprep_bytes(int fmt, ptrdiff_t n_rows, ptrdiff_t n_in, int level) {
    if (level < FG_AVX512) return 0;
    if (fmt == FG_Q_BF16) return align64(n_rows * (n_in / 32 * 32) * (ptrdiff_t)sizeof(float));
    if (fmt == FG_Q_I8)
        return align64(n_rows * n_in * (ptrdiff_t)sizeof(int16_t)) +
               align64(n_rows * (n_in / FG_Q8_BLOCK) * (ptrdiff_t)sizeof(float));
    return 0;
}

TARGET_512 static void prep_bf16_512(const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, float *xp) {
    const ptrdiff_t n32 = n_in / 32 * 32;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (ptrdiff_t r = 0; r < n_rows; r++)
        for (ptrdiff_t k = 0; k < n32; k += 32) {
            __m512 a = _mm512_loadu_ps(x + r * xs + k), b = _mm512_loadu_ps(x + r * xs + k + 16);
            _mm512_storeu_ps(xp + r * n32 + k, _mm512_permutex2var_ps(a, even, b));
            _mm512_storeu_ps(xp + r * n32 + k + 16, _mm512_permutex2var_ps(a, odd, b));
        }
}

TARGET_512 static void prep_i8_512(const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, int16_t *xq,
                                   float *xsc) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t r = 0; r < n_rows; r++)
        for (ptrdiff_t b = 0; b < n_b; b++) {
            const float *xb = x + r * xs + b * FG_Q8_BLOCK;
            __m512 a = _mm512_loadu_ps(xb), c = _mm512_loadu_ps(xb + 16);
            float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
            float inv = m > 0.f && m <= 3.4e38f ? 32767.f / m : 0.f;
            __m512 vi = _mm512_set1_ps(inv);
            /* round to nearest even (the default mode), saturate to int16 */
            _mm256_storeu_si256((__m256i *)(xq + r * n_in + b * FG_Q8_BLOCK),
                                _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(a, vi))));
            _mm256_storeu_si256((__m256i *)(xq + r * n_in + b * FG_Q8_BLOCK + 16),
                                _mm512_cvtsepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(c, vi))));
            float scale = m / 32767.f;
            /* a NaN or inf in the block: make the block's contribution NaN / inf, as in float32 */
            if (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q)) scale = __builtin_nanf("");
            else if (!(m <= 3.4e38f)) scale = m;
            xsc[r * n_b + b] = scale;
        }
}

void fg_qprep_x(int fmt, const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, void *prep, int level) {
    if (level < FG_AVX512) return;
    if (fmt == FG_Q_BF16) prep_bf16_512(x, xs, n_rows, n_in, (float *)prep);
    if (fmt == FG_Q_I8)
        prep_i8_512(x, xs, n_rows, n_in, (int16_t *)prep,
                    (float *)((char *)prep + align64(n_rows * n_in * (ptrdiff_t)sizeof(int16_t))));
}

/* Inputs per chunk of a row: the tile's int8 scales for this many inputs (times x's scales) are
 * computed once into a stack buffer (24 rows x 128 blocks x 4 bytes = 12 KB), then broadcast. */
#define QK_CHUNK 4096
#define QMAX_R8 3
#define QMAX_R4 6

/* The decode tile: TO weight rows (8 or 4; n_o valid, the spare slots re-read the last row and
 * are discarded) against NR input rows, one pass over the rows. Registers: TO * NR accumulators
 * + the inputs + the weight vectors. The main loops step one 64-byte line of each weight row,
 * prefetching the same line of the next tile's rows (PF). x: the rows as given; xp / xq, xsc:
 * prepared (see above), with row strides n32 / n_in, n_in / 32. */
TARGET_512 __attribute__((always_inline)) static inline void
qtile_512(const void *w, const uint16_t *s, ptrdiff_t n_in, ptrdiff_t n_o, const float *x, ptrdiff_t xs,
          const float *xp, const int16_t *xq, const float *xsc, const float *bias, float *y, ptrdiff_t ys,
          const int FMT, const int TO, const int NR, const int PF) {
    const int esize = FMT == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n32 = n_in / 32 * 32;
    const char *wr[8];
    const uint16_t *sr[8];
    float csc[QMAX_R4 * 4 > QMAX_R8 * 8 ? QMAX_R4 * 4 : QMAX_R8 * 8][QK_CHUNK / FG_Q8_BLOCK];
    __m512 acc[QMAX_R4][8];
    for (int j = 0; j < TO; j++) {
        ptrdiff_t row = j < n_o ? j : n_o - 1;
        wr[j] = (const char *)w + row * n_in * esize;
        sr[j] = FMT == FG_Q_I8 ? s + row * n_b : NULL;
    }
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < TO; j++) acc[r][j] = _mm512_setzero_ps();
    if (FMT == FG_Q_I8 && PF) /* the next tile's scales: else its first step waits for DRAM */
        for (ptrdiff_t p = 0; p < TO * n_b; p += 32) _mm_prefetch((const char *)(sr[0] + TO * n_b + p), _MM_HINT_T0);
    for (ptrdiff_t k0 = 0; k0 < n_in; k0 += QK_CHUNK) {
        ptrdiff_t k1 = n_in - k0 < QK_CHUNK ? n_in : k0 + QK_CHUNK, k = k0;
        if (FMT == FG_Q_I8) { /* csc[r * TO + j][b] = scale of w's row j, block b times x's row r, block b */
            ptrdiff_t b0 = k0 / FG_Q8_BLOCK, nb = (k1 - k0) / FG_Q8_BLOCK;
            for (ptrdiff_t b = 0; b < nb; b += 16) {
                __mmask16 m = nb - b >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nb - b)) - 1u);
                for (int j = 0; j < TO; j++) {
                    __m512 ws = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sr[j] + b0 + b));
                    for (int r = 0; r < NR; r++)
                        _mm512_mask_storeu_ps(csc[r * TO + j] + b, m,
                                              _mm512_mul_ps(ws, _mm512_maskz_loadu_ps(m, xsc + r * n_b + b0 + b)));
                }
            }
        }
        if (FMT == FG_Q_BF16) {
            const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
            for (; k + 32 <= k1; k += 32) {
                if (PF)
                    for (int j = 0; j < TO; j++) _mm_prefetch(wr[j] + (TO * n_in + k) * 2, _MM_HINT_T0);
                __m512 xe[QMAX_R4], xo[QMAX_R4];
                for (int r = 0; r < NR; r++) {
                    xe[r] = _mm512_loadu_ps(xp + r * n32 + k);
                    xo[r] = _mm512_loadu_ps(xp + r * n32 + k + 16);
                }
                for (int j = 0; j < TO; j++) {
                    __m512i v = _mm512_loadu_si512(wr[j] + k * 2);
                    __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                    __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                    for (int r = 0; r < NR; r++) {
                        acc[r][j] = _mm512_fmadd_ps(we, xe[r], acc[r][j]);
                        acc[r][j] = _mm512_fmadd_ps(wo, xo[r], acc[r][j]);
                    }
                }
            }
        } else if (FMT == FG_Q_F16) {
            for (; k + 32 <= k1; k += 32) {
                if (PF)
                    for (int j = 0; j < TO; j++) _mm_prefetch(wr[j] + (TO * n_in + k) * 2, _MM_HINT_T0);
                for (int u = 0; u < 32; u += 16) {
                    __m512 xv[QMAX_R4];
                    for (int r = 0; r < NR; r++) xv[r] = _mm512_loadu_ps(x + r * xs + k + u);
                    for (int j = 0; j < TO; j++) {
                        __m512 wv = load16_512(wr[j], k + u, FG_Q_F16, NULL);
                        /* keep wv in a register: otherwise GCC redoes the load and widening per row */
                        if (NR > 1) __asm__("" : "+v"(wv));
                        for (int r = 0; r < NR; r++) acc[r][j] = _mm512_fmadd_ps(wv, xv[r], acc[r][j]);
                    }
                }
            }
        } else {
            for (; k + FG_Q8_BLOCK <= k1; k += FG_Q8_BLOCK) {
                if (PF && ((k - k0) & 63) == 0)
                    for (int j = 0; j < TO; j++) _mm_prefetch(wr[j] + TO * n_in + k, _MM_HINT_T0);
                __m512i xv[QMAX_R4];
                for (int r = 0; r < NR; r++) xv[r] = _mm512_loadu_si512(xq + r * n_in + k);
                ptrdiff_t b = (k - k0) / FG_Q8_BLOCK;
                for (int j = 0; j < TO; j++) {
                    __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(wr[j] + k)));
                    if (NR > 1) __asm__("" : "+v"(wv));
                    for (int r = 0; r < NR; r++) {
                        __m512 d = _mm512_cvtepi32_ps(_mm512_madd_epi16(wv, xv[r]));
                        acc[r][j] = _mm512_fmadd_ps(d, _mm512_set1_ps(csc[r * TO + j][b]), acc[r][j]);
                    }
                }
            }
        }
        /* 16-bit rows: the last n_in % 32 weights, 16 at a time, then masked (int8 has no tail) */
        for (; k + 16 <= k1; k += 16)
            for (int j = 0; j < TO; j++) {
                __m512 wv = load16_512(wr[j], k, FMT, NULL);
                for (int r = 0; r < NR; r++) acc[r][j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * xs + k), acc[r][j]);
            }
        if (k < k1) {
            __mmask16 m = (__mmask16)((1u << (k1 - k)) - 1u);
            for (int j = 0; j < TO; j++) {
                __m512 wv = load_tail_512(wr[j], k, k1 - k, FMT);
                for (int r = 0; r < NR; r++)
                    acc[r][j] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + r * xs + k), acc[r][j]);
            }
        }
    }
    __mmask16 keep = (__mmask16)((1u << n_o) - 1u);
    __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias) : _mm512_setzero_ps();
    for (int r = 0; r < NR; r++) {
        __m512 sum = TO == 8 ? _mm512_castps256_ps512(reduce8_512(acc[r])) : _mm512_castps128_ps512(reduce4_512(acc[r]));
        _mm512_mask_storeu_ps(y + r * ys, keep, _mm512_add_ps(sum, b));
    }
}

typedef void (*qtile_fn)(const void *, const uint16_t *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, const float *,
                         const int16_t *, const float *, const float *, float *, ptrdiff_t);

/* One instance per (format, TO, NR, PF) so that each tile's loops unroll and stay in registers. */
#define QTILE_FN(FMT, TO, NR, PF)                                                                                    \
    TARGET_512 static void qtile_##FMT##_##TO##_##NR##_##PF(                                                        \
        const void *w, const uint16_t *s, ptrdiff_t n_in, ptrdiff_t n_o, const float *x, ptrdiff_t xs,             \
        const float *xp, const int16_t *xq, const float *xsc, const float *bias, float *y, ptrdiff_t ys) {         \
        qtile_512(w, s, n_in, n_o, x, xs, xp, xq, xsc, bias, y, ys, FMT, TO, NR, PF);                               \
    }
#define QTILE_FNS(FMT)                                                                                               \
    QTILE_FN(FMT, 8, 1, 1) QTILE_FN(FMT, 8, 2, 1) QTILE_FN(FMT, 8, 3, 1)                                             \
    QTILE_FN(FMT, 4, 1, 0) QTILE_FN(FMT, 4, 2, 0) QTILE_FN(FMT, 4, 3, 0) QTILE_FN(FMT, 4, 4, 0) QTILE_FN(FMT, 4, 5, 0) \
    QTILE_FN(FMT, 4, 6, 0) QTILE_FN(FMT, 4, 1, 1) QTILE_FN(FMT, 4, 2, 1) QTILE_FN(FMT, 4, 3, 1) QTILE_FN(FMT, 4, 4, 1) \
    QTILE_FN(FMT, 4, 5, 1) QTILE_FN(FMT, 4, 6, 1)                                                                    \
    static const qtile_fn QTILE8_##FMT[QMAX_R8 + 1] = {NULL, qtile_##FMT##_8_1_1, qtile_##FMT##_8_2_1,             \
                                                       qtile_##FMT##_8_3_1};                                       \
    static const qtile_fn QTILE4_##FMT[2][QMAX_R4 + 1] = {                                                         \
        {NULL, qtile_##FMT##_4_1_0, qtile_##FMT##_4_2_0, qtile_##FMT##_4_3_0, qtile_##FMT##_4_4_0,                 \
         qtile_##FMT##_4_5_0, qtile_##FMT##_4_6_0},                                                                \
        {NULL, qtile_##FMT##_4_1_1, qtile_##FMT##_4_2_1, qtile_##FMT##_4_3_1, qtile_##FMT##_4_4_1,                 \
         qtile_##FMT##_4_5_1, qtile_##FMT##_4_6_1}};
/* FG_Q_BF16 = 0, FG_Q_F16 = 1, FG_Q_I8 = 2: literal so that the names paste */
QTILE_FNS(0)
QTILE_FNS(1)
QTILE_FNS(2)
static const qtile_fn *const QTILE8[3] = {QTILE8_0, QTILE8_1, QTILE8_2};
static const qtile_fn (*const QTILE4[3])[QMAX_R4 + 1] = {QTILE4_0, QTILE4_1, QTILE4_2};

/* Rows o in [o_begin, o_end). Up to 3 input rows: tiles of 8 weight rows, one pass. More: tiles
 * of 4, the input rows in near-equal chunks of at most 6; the first chunk streams the tile from
 * memory (and prefetches the next), the others re-read it from L1. */
static void qlinear_rows_512(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x,
                             ptrdiff_t xs, const void *prep, float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in,
                             ptrdiff_t o_begin, ptrdiff_t o_end) {
    const int esize = fmt == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n32 = n_in / 32 * 32;
    const float *xp = fmt == FG_Q_BF16 ? (const float *)prep : NULL;
    const int16_t *xq = fmt == FG_Q_I8 ? (const int16_t *)prep : NULL;
    const float *xsc = fmt == FG_Q_I8
                           ? (const float *)((const char *)prep + align64(n_rows * n_in * (ptrdiff_t)sizeof(int16_t)))
                           : NULL;
#define QROW(o) ((const char *)w + (o) * n_in * esize), (fmt == FG_Q_I8 ? s + (o) * n_b : NULL)
#define QX(r) x + (r) * xs, xs, xp ? xp + (r) * n32 : NULL, xq ? xq + (r) * n_in : NULL, xsc ? xsc + (r) * n_b : NULL
    if (n_rows <= QMAX_R8) {
        for (ptrdiff_t o = o_begin; o < o_end; o += 8) {
            ptrdiff_t n_o = o_end - o < 8 ? o_end - o : 8;
            QTILE8[fmt][n_rows](QROW(o), n_in, n_o, QX(0), bias ? bias + o : NULL, y + o, ys);
        }
        return;
    }
    ptrdiff_t n_chunks = (n_rows + QMAX_R4 - 1) / QMAX_R4;
    for (ptrdiff_t o = o_begin; o < o_end; o += 4) {
        ptrdiff_t n_o = o_end - o < 4 ? o_end - o : 4;
        for (ptrdiff_t c = 0, r = 0; c < n_chunks; c++) {
            ptrdiff_t nr = (n_rows - r) / (n_chunks - c);
            QTILE4[fmt][c == 0][nr](QROW(o), n_in, n_o, QX(r), bias ? bias + o : NULL, y + r * ys + o, ys);
            r += nr;
        }
    }
#undef QROW
#undef QX
}

TARGET_512 static void dequantize_rows_512(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in,
                                           ptrdiff_t o_begin, ptrdiff_t o_end, float *out) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        float *dst = out + (o - o_begin) * n_in;
        ptrdiff_t k = 0;
        if (fmt == FG_Q_I8) {
            const int8_t *wo = (const int8_t *)w + o * n_in;
            for (ptrdiff_t b = 0; b < n_b; b++) {
                float sb = _cvtsh_ss(s[o * n_b + b]);
                _mm512_storeu_ps(dst + 32 * b, load16_512(wo, 32 * b, FG_Q_I8, &sb));
                _mm512_storeu_ps(dst + 32 * b + 16, load16_512(wo, 32 * b + 16, FG_Q_I8, &sb));
            }
            continue;
        }
        const uint16_t *wo = (const uint16_t *)w + o * n_in;
        if (fmt == FG_Q_BF16)
            for (; k + 16 <= n_in; k += 16) _mm512_storeu_ps(dst + k, load16_512(wo, k, FG_Q_BF16, NULL));
        else
            for (; k + 16 <= n_in; k += 16) _mm512_storeu_ps(dst + k, load16_512(wo, k, FG_Q_F16, NULL));
        for (; k < n_in; k++) dst[k] = fmt == FG_Q_BF16 ? bf16_to_f32(wo[k]) : f16_to_f32(wo[k]);
    }
}

/* ---- AVX2 + FMA + F16C: one weight row at a time, up to 4 input rows, two chains each ------- */
#define TARGET_256 __attribute__((target("avx2,fma,f16c")))

TARGET_256 __attribute__((always_inline)) static inline __m256 load8_256(const void *w, ptrdiff_t k, int fmt, float scale) {
    if (fmt == FG_Q_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k))), 16));
    if (fmt == FG_Q_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + k))));
    return _mm256_mul_ps(q, _mm256_set1_ps(scale));
}

TARGET_256 static inline float hsum_256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TARGET_256 static void qlinear_rows_256(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x,
                                        ptrdiff_t xs, float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in,
                                        ptrdiff_t o_begin, ptrdiff_t o_end) {
    const int esize = fmt == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += 4) {
        int nr = n_rows - r0 < 4 ? (int)(n_rows - r0) : 4;
        const float *xr = x + r0 * xs;
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            const char *wo = (const char *)w + o * n_in * esize;
            __m256 a0[4], a1[4];
            for (int r = 0; r < 4; r++) a0[r] = a1[r] = _mm256_setzero_ps();
            ptrdiff_t k = 0;
            for (; k + 16 <= n_in; k += 16) { /* 16 never straddles an int8 block of 32 */
                float sc = fmt == FG_Q_I8 ? _cvtsh_ss(s[o * n_b + k / FG_Q8_BLOCK]) : 0.f;
                __m256 w0 = load8_256(wo, k, fmt, sc), w1 = load8_256(wo, k + 8, fmt, sc);
                for (int r = 0; r < nr; r++) {
                    a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + r * xs + k), a0[r]);
                    a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + r * xs + k + 8), a1[r]);
                }
            }
            for (int r = 0; r < nr; r++) {
                float t = hsum_256(_mm256_add_ps(a0[r], a1[r]));
                for (ptrdiff_t i = k; i < n_in; i++) t += qvalue(w, s, fmt, n_in, o, i) * xr[r * xs + i];
                y[(r0 + r) * ys + o] = t + (bias ? bias[o] : 0.f);
            }
        }
    }
}

TARGET_256 static void dequantize_rows_256(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in,
                                           ptrdiff_t o_begin, ptrdiff_t o_end, float *out) {
    const int esize = fmt == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        const char *wo = (const char *)w + o * n_in * esize;
        float *dst = out + (o - o_begin) * n_in;
        ptrdiff_t k = 0;
        for (; k + 8 <= n_in; k += 8)
            _mm256_storeu_ps(dst + k, load8_256(wo, k, fmt, fmt == FG_Q_I8 ? _cvtsh_ss(s[o * n_b + k / FG_Q8_BLOCK]) : 0.f));
        for (; k < n_in; k++) dst[k] = qvalue(w, s, fmt, n_in, o, k);
    }
}
#endif /* FG_X86 */

void fg_qlinear_rows(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x, ptrdiff_t xs,
                     const void *prep, float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin,
                     ptrdiff_t o_end, int level) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_X86
    if (level >= FG_AVX512) {
        qlinear_rows_512(w, s, fmt, bias, x, xs, prep, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
    if (level >= FG_AVX2) {
        qlinear_rows_256(w, s, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    (void)level, (void)prep;
    fg_qlinear_rows_ref(w, s, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
}

void fg_dequantize_rows(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end,
                        float *out, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) {
        dequantize_rows_512(w, s, fmt, n_in, o_begin, o_end, out);
        return;
    }
    if (level >= FG_AVX2) {
        dequantize_rows_256(w, s, fmt, n_in, o_begin, o_end, out);
        return;
    }
#endif
    (void)level;
    fg_dequantize_rows_ref(w, s, fmt, n_in, o_begin, o_end, out);
}
