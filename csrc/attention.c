/* Attention for one query of one head over a contiguous run of cached keys.
 *
 * AVX-512 path for head widths that are a multiple of 16 (64 in every GPT-2 size): the query
 * stays in registers, four keys are scored per step and reduced together, softmax uses the
 * vectorised exp, and the value rows are accumulated into register-resident outputs.
 * The generic path handles any width and is the fallback on other CPUs.
 */
#include <math.h>

#include "fastgpt_kernels.h"
#include "vmath.h"

#define FG_MAX_D_REGS 8 /* AVX-512 path: head width up to 128 */

static void attend_generic(const float *q, const float *k, const float *v, ptrdiff_t d, ptrdiff_t first,
                           ptrdiff_t last, float scale, float *scores, float *out, int level) {
    float mx = -INFINITY;
    for (ptrdiff_t j = first; j < last; j++) {
        float s = fg_dot_f32(q, k + j * d, d, level) * scale;
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
        const float *vj = v + j * d;
        for (ptrdiff_t t = 0; t < d; t++) out[t] += p * vj[t];
    }
}

#if defined(__x86_64__) || defined(__i386__)
/* Sums of four vectors as one xmm: [sum(a), sum(b), sum(c), sum(d)]. */
__attribute__((target("avx512f"))) static inline __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d) {
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
__attribute__((target("avx512f"))) static float softmax_unnormalised_avx512(float *sc, ptrdiff_t n) {
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

__attribute__((target("avx512f"))) static void attend_avx512(const float *q, const float *k, const float *v,
                                                                       ptrdiff_t d, ptrdiff_t first, ptrdiff_t last,
                                                                       float scale, float *scores, float *out) {
    const int nv = (int)(d / 16);
    __m512 qv[FG_MAX_D_REGS], acc[FG_MAX_D_REGS];
    for (int c = 0; c < nv; c++) qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));

    ptrdiff_t j = first;
    for (; j + 4 <= last; j += 4) {
        const float *k0 = k + j * d;
        __m512 s0 = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k0));
        __m512 s1 = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k0 + d));
        __m512 s2 = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k0 + 2 * d));
        __m512 s3 = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k0 + 3 * d));
        for (int c = 1; c < nv; c++) {
            s0 = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k0 + 16 * c), s0);
            s1 = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k0 + d + 16 * c), s1);
            s2 = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k0 + 2 * d + 16 * c), s2);
            s3 = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k0 + 3 * d + 16 * c), s3);
        }
        _mm_storeu_ps(scores + j, reduce4_512(s0, s1, s2, s3));
    }
    for (; j < last; j++) {
        __m512 s = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k + j * d));
        for (int c = 1; c < nv; c++) s = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k + j * d + 16 * c), s);
        scores[j] = _mm512_reduce_add_ps(s);
    }

    const float inv = softmax_unnormalised_avx512(scores + first, last - first);

    for (int c = 0; c < nv; c++) acc[c] = _mm512_setzero_ps();
    for (j = first; j < last; j++) {
        const __m512 p = _mm512_set1_ps(scores[j]);
        const float *vj = v + j * d;
        for (int c = 0; c < nv; c++) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vj + 16 * c), acc[c]);
    }
    const __m512 invv = _mm512_set1_ps(inv);
    for (int c = 0; c < nv; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], invv));
}

/* Four consecutive queries of one head (head width 64): each key and value row is loaded once
 * for all four, which halves the load traffic that bounds prefill attention. Query i sees
 * keys [first, last0 + i). scores__4l is 4 rows of at least last0 + 3 floats, s_stride apart. */
__attribute__((target("avx512f"))) static void attend4_avx512_d64(const float *q, ptrdiff_t q_stride, const float *k,
                                                                   const float *v, ptrdiff_t first, ptrdiff_t last0,
                                                                   float scale, float *scores, ptrdiff_t s_stride,
                                                                   float *out, ptrdiff_t out_stride) {
    const ptrdiff_t d = 64, last = last0 + 3;
    __m512 qv[4][4];
    const __m512 sv = _mm512_set1_ps(scale);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) qv[i][c] = _mm512_mul_ps(_mm512_loadu_ps(q + i * q_stride + 16 * c), sv);
    for (ptrdiff_t j = first; j < last; j++) {
        const float *kj = k + j * d;
        const __m512 k0 = _mm512_loadu_ps(kj), k1 = _mm512_loadu_ps(kj + 16);
        const __m512 k2 = _mm512_loadu_ps(kj + 32), k3 = _mm512_loadu_ps(kj + 48);
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
        const float *vj = v + j * d;
        const __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_loadu_ps(vj + 16);
        const __m512 v2 = _mm512_loadu_ps(vj + 32), v3 = _mm512_loadu_ps(vj + 48);
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
#endif

void fg_attend_one_f32(const float *q, const float *k, const float *v, ptrdiff_t d, ptrdiff_t first, ptrdiff_t last,
                       float scale, float *scores, float *out, int level) {
#if defined(__x86_64__) || defined(__i386__)
    if (level >= FG_AVX512 && d % 16 == 0 && d <= 16 * FG_MAX_D_REGS) {
        attend_avx512(q, k, v, d, first, last, scale, scores, out);
        return;
    }
#endif
    attend_generic(q, k, v, d, first, last, scale, scores, out, level);
}

int fg_attend_four_f32(const float *q, ptrdiff_t q_stride, const float *k, const float *v, ptrdiff_t d,
                       ptrdiff_t first, ptrdiff_t last0, float scale, float *scores, ptrdiff_t s_stride,
                       float *out, ptrdiff_t out_stride, int level) {
#if defined(__x86_64__) || defined(__i386__)
    if (level >= FG_AVX512 && d == 64) {
        attend4_avx512_d64(q, q_stride, k, v, first, last0, scale, scores, s_stride, out, out_stride);
        return 1;
    }
#endif
    (void)q; (void)q_stride; (void)k; (void)v; (void)d; (void)first; (void)last0; (void)scale;
    (void)scores; (void)s_stride; (void)out; (void)out_stride; (void)level;
    return 0;
}
