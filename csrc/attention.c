/* Attention of one query (or four) of one head over a contiguous run of cached keys, and the
 * stores that append new keys and values to the cache.
 *
 * The cache holds float32, IEEE half or bfloat16 (kv_fmt FG_W_F32, FG_Q_F16, FG_Q_BF16): 16-bit
 * keys and values are widened in registers right after their load (exactly), so a 16-bit cache
 * halves the bytes that decoding at a long context reads, the arithmetic staying float32. Storing
 * rounds to nearest even (csrc/half.h, as NumPy's astype and quant.float32_to_bf16_bits).
 *
 * AVX-512 path for head widths that are a multiple of 16 (64 in every GPT-2 size): the query
 * stays in registers, four keys are scored per step and reduced together, softmax uses the
 * vectorised exp, and the value rows are accumulated into register-resident outputs.
 * The generic path handles any width and is the fallback on other CPUs. Either way a query's
 * result depends only on its own row's keys and values, never on other rows or threads.
 */
#include <math.h>

#include "fastgpt_kernels.h"
#include "half.h"
#include "vmath.h"

#define FG_MAX_D_REGS 8 /* AVX-512 path: head width up to 128 */

static inline float kv_at(const void *kv, ptrdiff_t i, int kv_fmt) {
    if (kv_fmt == FG_Q_F16) return f16_to_f32(((const uint16_t *)kv)[i]);
    if (kv_fmt == FG_Q_BF16) return bf16_to_f32(((const uint16_t *)kv)[i]);
    return ((const float *)kv)[i];
}

static void store_generic(const float *src, void *dst, ptrdiff_t at, int kv_fmt, ptrdiff_t n) {
    for (ptrdiff_t t = 0; t < n; t++) {
        if (kv_fmt == FG_Q_F16) ((uint16_t *)dst)[at + t] = f32_to_f16(src[t]);
        else if (kv_fmt == FG_Q_BF16) ((uint16_t *)dst)[at + t] = f32_to_bf16(src[t]);
        else ((float *)dst)[at + t] = src[t];
    }
}

static void attend_generic(const float *q, const void *k, const void *v, int kv_fmt, ptrdiff_t d, ptrdiff_t first,
                           ptrdiff_t last, float scale, float *scores, float *out, int level) {
    float mx = -INFINITY;
    for (ptrdiff_t j = first; j < last; j++) {
        float s;
        if (kv_fmt == FG_W_F32) s = fg_dot_f32(q, (const float *)k + j * d, d, level);
        else {
            s = 0.f;
            for (ptrdiff_t t = 0; t < d; t++) s += q[t] * kv_at(k, j * d + t, kv_fmt);
        }
        s *= scale;
        scores[j] = s;
        if (s > mx) mx = s;
    }
    float total = 0.f;
    for (ptrdiff_t j = first; j < last; j++) {
        float e = expf(scores[j] - mx);
        scores[j] = e;
        total += e;
    }
    float inv = 1.0f / total;
    for (ptrdiff_t t = 0; t < d; t++) out[t] = 0.f;
    for (ptrdiff_t j = first; j < last; j++) {
        const float p = scores[j] * inv;
        for (ptrdiff_t t = 0; t < d; t++) out[t] += p * kv_at(v, j * d + t, kv_fmt);
    }
}

#if defined(__x86_64__) || defined(__i386__)
#define FG_X86 1
#define TARGET_ATT __attribute__((target("avx512f")))

/* 16 cached values from element i, widened to float32. */
TARGET_ATT __attribute__((always_inline)) static inline __m512 kv_load16(const void *kv, ptrdiff_t i, const int FMT) {
    if (FMT == FG_Q_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)kv + i)));
    if (FMT == FG_Q_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)kv + i))), 16));
    return _mm512_loadu_ps((const float *)kv + i);
}

/* Sums of four vectors as one xmm: [sum(a), sum(b), sum(c), sum(d)]. */
TARGET_ATT static inline __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(c), 1)));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
    __m256 ab = _mm256_hadd_ps(a8, b8);   /* a01 a23 b01 b23 | a45 a67 b45 b67 */
    __m256 cd = _mm256_hadd_ps(c8, d8);
    __m256 abcd = _mm256_hadd_ps(ab, cd); /* a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* sc[0:n] = exp(sc - max), in place; returns 1 / sum so the caller can fold the
 * normalisation into its output (one multiply per output instead of per score). */
TARGET_ATT static float softmax_unnormalised_avx512(float *sc, ptrdiff_t n) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(sc + i));
    float mx = _mm512_reduce_max_ps(mv);
    for (; i < n; i++) mx = sc[i] > mx ? sc[i] : mx;
    const __m512 mxv = _mm512_set1_ps(mx);
    __m512 tv = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = fg_exp512(_mm512_sub_ps(_mm512_loadu_ps(sc + i), mxv));
        _mm512_storeu_ps(sc + i, e);
        tv = _mm512_add_ps(tv, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m512 e = fg_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + i), mxv));
        _mm512_mask_storeu_ps(sc + i, m, e);
        tv = _mm512_add_ps(tv, _mm512_maskz_mov_ps(m, e));
    }
    return 1.0f / _mm512_reduce_add_ps(tv);
}

TARGET_ATT __attribute__((always_inline)) static inline void
attend_avx512(const float *q, const void *k, const void *v, ptrdiff_t d, ptrdiff_t first, ptrdiff_t last, float scale,
              float *scores, float *out, const int FMT) {
    const int nv = (int)(d / 16);
    __m512 qv[FG_MAX_D_REGS], acc[FG_MAX_D_REGS];
    for (int c = 0; c < nv; c++) qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));

    /* A 16-bit cache: while scoring keys j..j+3, prefetch their value rows, so that the value pass
     * after the softmax finds them in L1. A (row, head) pair's keys and values are two short runs
     * (80 keys x 128 B each at 80 positions), too short for the hardware prefetcher to ramp up
     * on: an int8 fused decode step of 16 rows at ~80 positions (GPT-2 124M, float16 cache, 2
     * threads) took 10.8 ms with this against 11.8 without (medians of 5, interleaved). A float32
     * cache has twice the lines per key and measured 3% slower with it, so it goes without.
     * The keys eight ahead are prefetched alongside (all but a run's last twelve): int8, 448-token
     * prompts, steps of 1 / 16 / 32 rows 5.43 / 18.45 / 32.86 -> 5.12 / 17.82 / 31.22 ms, 64-token
     * prompts 16 rows 9.39 -> 9.10, bfloat16 448 tokens 16 rows 22.33 -> 22.02 (medians of 3
     * interleaved rounds; every pair lower or within 1%). Sixteen ahead gained less. */
    const ptrdiff_t prefetched_row_bytes = FMT == FG_W_F32 ? 0 : d * 2; /* a key or value row; none for float32 */
    ptrdiff_t j = first;
    for (; j + 4 <= last; j += 4) {
        const ptrdiff_t k0 = j * d;
        for (ptrdiff_t off = 0; off < 4 * prefetched_row_bytes; off += 64) {
            _mm_prefetch((const char *)v + j * prefetched_row_bytes + off, _MM_HINT_T0);
            if (j + 12 <= last) _mm_prefetch((const char *)k + (j + 8) * prefetched_row_bytes + off, _MM_HINT_T0);
        }
        __m512 s0 = _mm512_mul_ps(qv[0], kv_load16(k, k0, FMT));
        __m512 s1 = _mm512_mul_ps(qv[0], kv_load16(k, k0 + d, FMT));
        __m512 s2 = _mm512_mul_ps(qv[0], kv_load16(k, k0 + 2 * d, FMT));
        __m512 s3 = _mm512_mul_ps(qv[0], kv_load16(k, k0 + 3 * d, FMT));
        for (int c = 1; c < nv; c++) {
            s0 = _mm512_fmadd_ps(qv[c], kv_load16(k, k0 + 16 * c, FMT), s0);
            s1 = _mm512_fmadd_ps(qv[c], kv_load16(k, k0 + d + 16 * c, FMT), s1);
            s2 = _mm512_fmadd_ps(qv[c], kv_load16(k, k0 + 2 * d + 16 * c, FMT), s2);
            s3 = _mm512_fmadd_ps(qv[c], kv_load16(k, k0 + 3 * d + 16 * c, FMT), s3);
        }
        _mm_storeu_ps(scores + j, reduce4_512(s0, s1, s2, s3));
    }
    for (; j < last; j++) { /* reduced as in a group of four: a key's score does not depend on where it falls */
        __m512 s = _mm512_mul_ps(qv[0], kv_load16(k, j * d, FMT));
        for (int c = 1; c < nv; c++) s = _mm512_fmadd_ps(qv[c], kv_load16(k, j * d + 16 * c, FMT), s);
        const __m512 zero = _mm512_setzero_ps();
        scores[j] = _mm_cvtss_f32(reduce4_512(s, zero, zero, zero));
    }

    const float inv = softmax_unnormalised_avx512(scores + first, last - first);

    for (int c = 0; c < nv; c++) acc[c] = _mm512_setzero_ps();
    for (j = first; j < last; j++) {
        const __m512 p = _mm512_set1_ps(scores[j]);
        for (int c = 0; c < nv; c++) acc[c] = _mm512_fmadd_ps(p, kv_load16(v, j * d + 16 * c, FMT), acc[c]);
    }
    const __m512 invv = _mm512_set1_ps(inv);
    for (int c = 0; c < nv; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], invv));
}

/* Four consecutive queries of one head (head width 64): each key and value row is loaded once
 * for all four, which halves the load traffic that bounds prefill attention. Query i sees
 * keys [first, last0 + i). scores__4l is 4 rows of at least last0 + 3 floats, s_stride apart. */
TARGET_ATT __attribute__((always_inline)) static inline void
attend4_avx512_d64(const float *q, ptrdiff_t q_stride, const void *k, const void *v, ptrdiff_t first, ptrdiff_t last0,
                   float scale, float *scores, ptrdiff_t s_stride, float *out, ptrdiff_t out_stride, const int FMT) {
    const ptrdiff_t d = 64, last = last0 + 3;
    __m512 qv[4][4];
    const __m512 sv = _mm512_set1_ps(scale);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) qv[i][c] = _mm512_mul_ps(_mm512_loadu_ps(q + i * q_stride + 16 * c), sv);
    for (ptrdiff_t j = first; j < last; j++) {
        const __m512 k0 = kv_load16(k, j * d, FMT), k1 = kv_load16(k, j * d + 16, FMT);
        const __m512 k2 = kv_load16(k, j * d + 32, FMT), k3 = kv_load16(k, j * d + 48, FMT);
        __m512 s[4];
        for (int i = 0; i < 4; i++) {
            s[i] = _mm512_mul_ps(qv[i][0], k0);
            s[i] = _mm512_fmadd_ps(qv[i][1], k1, s[i]);
            s[i] = _mm512_fmadd_ps(qv[i][2], k2, s[i]);
            s[i] = _mm512_fmadd_ps(qv[i][3], k3, s[i]);
        }
        float r[4];
        _mm_storeu_ps(r, reduce4_512(s[0], s[1], s[2], s[3]));
        for (int i = 0; i < 4; i++) scores[i * s_stride + j] = r[i];
    }
    float inv[4];
    for (int i = 0; i < 4; i++) {
        float *sc = scores + i * s_stride + first;
        const ptrdiff_t n = last0 + i - first; /* visible keys of query i */
        inv[i] = softmax_unnormalised_avx512(sc, n);
        for (ptrdiff_t t = n; t < last - first; t++) sc[t] = 0.f; /* keys this query may not see */
    }
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) acc[i][c] = _mm512_setzero_ps();
    for (ptrdiff_t j = first; j < last; j++) {
        const __m512 v0 = kv_load16(v, j * d, FMT), v1 = kv_load16(v, j * d + 16, FMT);
        const __m512 v2 = kv_load16(v, j * d + 32, FMT), v3 = kv_load16(v, j * d + 48, FMT);
        for (int i = 0; i < 4; i++) {
            const __m512 p = _mm512_set1_ps(scores[i * s_stride + j]);
            acc[i][0] = _mm512_fmadd_ps(p, v0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(p, v1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(p, v2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(p, v3, acc[i][3]);
        }
    }
    for (int i = 0; i < 4; i++) {
        const __m512 iv = _mm512_set1_ps(inv[i]);
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + i * out_stride + 16 * c, _mm512_mul_ps(acc[i][c], iv));
    }
}

/* One instance per cache format, so that each loop carries no format test. */
#define ATTEND_FNS(FMT)                                                                                            \
    TARGET_ATT static void attend_##FMT(const float *q, const void *k, const void *v, ptrdiff_t d, ptrdiff_t first, \
                                        ptrdiff_t last, float scale, float *scores, float *out) {                  \
        attend_avx512(q, k, v, d, first, last, scale, scores, out, FMT);                                           \
    }                                                                                                              \
    TARGET_ATT static void attend4_##FMT(const float *q, ptrdiff_t q_stride, const void *k, const void *v,          \
                                         ptrdiff_t first, ptrdiff_t last0, float scale, float *scores,             \
                                         ptrdiff_t s_stride, float *out, ptrdiff_t out_stride) {                   \
        attend4_avx512_d64(q, q_stride, k, v, first, last0, scale, scores, s_stride, out, out_stride, FMT);        \
    }
/* FG_Q_BF16 = 0, FG_Q_F16 = 1, FG_W_F32 = 3: literal so that the names paste */
ATTEND_FNS(0)
ATTEND_FNS(1)
ATTEND_FNS(3)

TARGET_ATT static void store_avx512(const float *src, void *dst, ptrdiff_t at, int kv_fmt, ptrdiff_t n) {
    ptrdiff_t t = 0;
    for (; t + 16 <= n; t += 16) {
        __m512 x = _mm512_loadu_ps(src + t);
        uint16_t *d16 = (uint16_t *)dst + at + t;
        if (kv_fmt == FG_Q_F16)
            _mm256_storeu_si256((__m256i *)d16, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        else if (kv_fmt == FG_Q_BF16) _mm256_storeu_si256((__m256i *)d16, _mm512_cvtepi32_epi16(bf16_bits_512(x)));
        else _mm512_storeu_ps((float *)dst + at + t, x);
    }
    store_generic(src + t, dst, at + t, kv_fmt, n - t);
}
#endif

void fg_kv_store(const float *src__d, void *dst, ptrdiff_t at, int kv_fmt, ptrdiff_t n, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) {
        store_avx512(src__d, dst, at, kv_fmt, n);
        return;
    }
#endif
    (void)level;
    store_generic(src__d, dst, at, kv_fmt, n);
}

void fg_attend_one(const float *q, const void *k, const void *v, int kv_fmt, ptrdiff_t d, ptrdiff_t first,
                   ptrdiff_t last, float scale, float *scores, float *out, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512 && d % 16 == 0 && d <= 16 * FG_MAX_D_REGS) {
        if (kv_fmt == FG_Q_F16) attend_1(q, k, v, d, first, last, scale, scores, out);
        else if (kv_fmt == FG_Q_BF16) attend_0(q, k, v, d, first, last, scale, scores, out);
        else attend_3(q, k, v, d, first, last, scale, scores, out);
        return;
    }
#endif
    attend_generic(q, k, v, kv_fmt, d, first, last, scale, scores, out, level);
}

int fg_attend_four(const float *q, ptrdiff_t q_stride, const void *k, const void *v, int kv_fmt, ptrdiff_t d,
                   ptrdiff_t first, ptrdiff_t last0, float scale, float *scores, ptrdiff_t s_stride, float *out,
                   ptrdiff_t out_stride, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512 && d == 64) {
        if (kv_fmt == FG_Q_F16) attend4_1(q, q_stride, k, v, first, last0, scale, scores, s_stride, out, out_stride);
        else if (kv_fmt == FG_Q_BF16)
            attend4_0(q, q_stride, k, v, first, last0, scale, scores, s_stride, out, out_stride);
        else attend4_3(q, q_stride, k, v, first, last0, scale, scores, s_stride, out, out_stride);
        return 1;
    }
#endif
    (void)q; (void)q_stride; (void)k; (void)v; (void)kv_fmt; (void)d; (void)first; (void)last0; (void)scale;
    (void)scores; (void)s_stride; (void)out; (void)out_stride; (void)level;
    return 0;
}
