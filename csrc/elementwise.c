/* Row-wise layer norm and the activation functions: cheap next to the weight stream, so
 * they are plain C that the compiler vectorizes where it can (no fast-math: GELU's
 * x / (1 + exp(-2u)) form relies on exp overflowing to inf for very negative inputs). */
#include <math.h>

#include "fastgpt_kernels.h"

void fg_layer_norm_row_f32(const float *x, const float *g, const float *b, ptrdiff_t n, float eps, float *out) {
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

void fg_activation_f32(const float *x, float *out, ptrdiff_t n, int kind) {
    const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
    switch (kind) {
    case FG_ACT_GELU_TANH:
        /* 0.5 x (1 + tanh(u)) == x * sigmoid(2u): one exp instead of a tanh. */
        for (ptrdiff_t k = 0; k < n; k++) {
            float v = x[k];
            float u = c * (v + 0.044715f * v * v * v);
            out[k] = v / (1.0f + expf(-2.0f * u));
        }
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
}
