/* Attention for one query of one head over a contiguous run of cached keys.
 * Scores are computed, exponentiated and normalised in a scratch row owned by the caller's
 * thread, then the value rows are accumulated with a vectorizable axpy. */
#include <math.h>

#include "fastgpt_kernels.h"

void fg_attend_one_f32(const float *q, const float *k, const float *v, ptrdiff_t d, ptrdiff_t first,
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
