/* Row-wise layer norm and the activation functions. Layer norm is plain C (25 rows of 768
 * per token: negligible); the tanh-GELU runs 3072 wide per layer per token and is vectorised
 * with fg_exp512/fg_exp256 (vmath.h). No fast-math: the x / (1 + exp(-2u)) form relies on
 * IEEE division by a huge number giving -0 for very negative inputs. */
#include <math.h>

#include "fastgpt_kernels.h"
#include "vmath.h"

#define FG_SQRT_2_OVER_PI 0.7978845608028654f

static void layer_norm_row_ref(const float *x, const float *g, const float *b, ptrdiff_t n, float eps, float *out) {
    /* Two passes in double: mean, then the variance of the centred values, as torch does,
     * so rows with a large mean do not lose the variance to cancellation. */
    double sum = 0.0;
    for (ptrdiff_t k = 0; k < n; k++) sum += x[k];
    float mean = (float)(sum / (double)n);
    double sq = 0.0;
    for (ptrdiff_t k = 0; k < n; k++) {
        float c = x[k] - mean;
        sq += (double)c * c;
    }
    float rstd = (float)(1.0 / sqrt(sq / (double)n + (double)eps));
    for (ptrdiff_t k = 0; k < n; k++) out[k] = (x[k] - mean) * rstd * g[k] + b[k];
}

#if defined(__x86_64__) || defined(__i386__)
/* The same two passes with 16 float lanes (sums of at most n/16 terms per lane), then the
 * lanes added in double: within a few ulps of the double reference for GPT-2 widths. */
__attribute__((target("avx512f"))) static void layer_norm_row_avx512(const float *x, const float *g, const float *b,
                                                                      ptrdiff_t n, float eps, float *out) {
    __m512 s = _mm512_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 16 <= n; k += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + k));
    double sum = _mm512_reduce_add_ps(s);
    for (; k < n; k++) sum += x[k];
    const float mean = (float)(sum / (double)n);
    const __m512 mv = _mm512_set1_ps(mean);
    __m512 q = _mm512_setzero_ps();
    for (k = 0; k + 16 <= n; k += 16) {
        __m512 c = _mm512_sub_ps(_mm512_loadu_ps(x + k), mv);
        q = _mm512_fmadd_ps(c, c, q);
    }
    double sq = _mm512_reduce_add_ps(q);
    for (; k < n; k++) sq += (double)(x[k] - mean) * (x[k] - mean);
    const float rstd = (float)(1.0 / sqrt(sq / (double)n + (double)eps));
    const __m512 rv = _mm512_set1_ps(rstd);
    for (k = 0; k + 16 <= n; k += 16) {
        __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + k), mv), rv);
        _mm512_storeu_ps(out + k, _mm512_fmadd_ps(c, _mm512_loadu_ps(g + k), _mm512_loadu_ps(b + k)));
    }
    for (; k < n; k++) out[k] = (x[k] - mean) * rstd * g[k] + b[k];
}
#endif

void fg_layer_norm_row_f32(const float *x, const float *g, const float *b, ptrdiff_t n, float eps, float *out,
                           int level) {
#if defined(__x86_64__) || defined(__i386__)
    if (level >= FG_AVX512) {
        layer_norm_row_avx512(x, g, b, n, eps, out);
        return;
    }
#endif
    (void)level;
    layer_norm_row_ref(x, g, b, n, eps, out);
}

static inline float gelu_tanh_one(float v) {
    /* 0.5 v (1 + tanh(u)) == v * sigmoid(2u): one exp instead of a tanh. */
    float u = FG_SQRT_2_OVER_PI * (v + 0.044715f * v * v * v);
    return v / (1.0f + expf(-2.0f * u));
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static ptrdiff_t gelu_tanh_avx512(const float *x, float *out, ptrdiff_t n) {
    const __m512 c = _mm512_set1_ps(-2.0f * FG_SQRT_2_OVER_PI), a = _mm512_set1_ps(0.044715f), one = _mm512_set1_ps(1.f);
    ptrdiff_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 v = _mm512_loadu_ps(x + k);
        __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), _mm512_mul_ps(v, v), v));
        _mm512_storeu_ps(out + k, _mm512_div_ps(v, _mm512_add_ps(one, fg_exp512(u))));
    }
    if (k < n) { /* masked, not scalar: an element's value must not depend on where a run ends */
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + k);
        __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, v), _mm512_mul_ps(v, v), v));
        _mm512_mask_storeu_ps(out + k, m, _mm512_div_ps(v, _mm512_add_ps(one, fg_exp512(u))));
    }
    return n;
}

__attribute__((target("avx2,fma"))) static ptrdiff_t gelu_tanh_avx2(const float *x, float *out, ptrdiff_t n) {
    const __m256 c = _mm256_set1_ps(-2.0f * FG_SQRT_2_OVER_PI), a = _mm256_set1_ps(0.044715f), one = _mm256_set1_ps(1.f);
    ptrdiff_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(a, v), _mm256_mul_ps(v, v), v));
        _mm256_storeu_ps(out + k, _mm256_div_ps(v, _mm256_add_ps(one, fg_exp256(u))));
    }
    if (k < n) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 v = _mm256_maskload_ps(x + k, m);
        __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(a, v), _mm256_mul_ps(v, v), v));
        _mm256_maskstore_ps(out + k, m, _mm256_div_ps(v, _mm256_add_ps(one, fg_exp256(u))));
    }
    return n;
}
#endif

void fg_activation_f32(const float *x, float *out, ptrdiff_t n, int kind, int level) {
    ptrdiff_t done = 0;
    switch (kind) {
    case FG_ACT_GELU_TANH:
#if defined(__x86_64__) || defined(__i386__)
        if (level >= FG_AVX512) done = gelu_tanh_avx512(x, out, n);
        else if (level >= FG_AVX2) done = gelu_tanh_avx2(x, out, n);
#endif
        for (ptrdiff_t k = done; k < n; k++) out[k] = gelu_tanh_one(x[k]);
        break;
    case FG_ACT_GELU_ERF:
        for (ptrdiff_t k = 0; k < n; k++) out[k] = 0.5f * x[k] * (1.0f + erff(x[k] * 0.7071067811865476f));
        break;
    case FG_ACT_RELU:
        for (ptrdiff_t k = 0; k < n; k++) out[k] = x[k] > 0.f ? x[k] : 0.f;
        break;
    case FG_ACT_SILU:
        for (ptrdiff_t k = 0; k < n; k++) out[k] = x[k] / (1.0f + expf(-x[k]));
        break;
    case FG_ACT_QUICK_GELU:
        for (ptrdiff_t k = 0; k < n; k++) out[k] = x[k] / (1.0f + expf(-1.702f * x[k]));
        break;
    default:
        break;
    }
    (void)level;
}
