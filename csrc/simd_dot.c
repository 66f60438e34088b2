/* Dot products and the fp32 matrix-vector rows that decoding spends its time in.
 *
 * Decode is bound by reading the weights once per token, so the kernel's job is to keep
 * loads streaming: every path reads one weight row at a time, front to back, and dots it with
 * every input row (up to 8) while it is in L1. The AVX-512 path sums 8 rows' results together
 * by one transpose-and-add tree. No fast-math: sums are reassociated only in the explicit ways written here.
 *
 * Dimension legend: n rows of x (tokens), i input width, o output rows (rows of w [o, i]).
 */
#include <stdint.h>

#include "fastgpt_kernels.h"
#include "reduce_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define FG_ROW_TILE 4 /* input rows per pass of the AVX2 and scalar row kernels */

/* &p[k] for a prefetch, which may point past the end of p's array: computed on integers,
 * since pointer arithmetic beyond the array is undefined even if never dereferenced. */
static inline const char *ahead(const float *p, ptrdiff_t k) {
    return (const char *)((uintptr_t)p + (uintptr_t)k * sizeof(float));
}

int fg_simd_level(void) {
    int level = FG_SCALAR;
#ifdef FG_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = FG_AVX2;
    if (level == FG_AVX2 && __builtin_cpu_supports("avx512f")) level = FG_AVX512;
#endif
#ifdef FASTGPT_SIMD_MAX_LEVEL
    if (level > FASTGPT_SIMD_MAX_LEVEL) level = FASTGPT_SIMD_MAX_LEVEL;
#endif
    return level;
}

float fg_dot_f32_ref(const float *a, const float *b, ptrdiff_t n) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    ptrdiff_t k = 0;
    for (; k + 4 <= n; k += 4)
        for (int j = 0; j < 4; j++) acc[j] += a[k + j] * b[k + j];
    for (; k < n; k++) acc[0] += a[k] * b[k];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

#ifdef FG_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, ptrdiff_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
    }
    for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) sum += a[k] * b[k];
    return sum;
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, ptrdiff_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 64 <= n; k += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 32), _mm512_loadu_ps(b + k + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 48), _mm512_loadu_ps(b + k + 48), s3);
    }
    for (; k + 16 <= n; k += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    if (k < n) {  /* masked tail: no scalar loop, no read past the end */
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/* The decode rows: one weight row at a time against NR input rows (1-8). Each thread's band of
 * rows is one contiguous stretch of memory, and reading it front to back as a single stream is
 * what the hardware prefetcher follows best: against read_sum's bandwidth, one row at a time
 * streamed 99-104% (plus a software prefetch MV_PF floats ahead in the same stream), where
 * tiles of 8 rows read in parallel (8 streams 3 KB apart) reached 70-89% even with software
 * prefetch (2 threads and 1, 3072 x 768 matrices, /tmp microbenchmark of 2026-11-22).
 * Each weight vector is loaded once and used by every input row; two FMA chains per input row
 * (even and odd 16-float chunks). A row's two chains are added, parked in a small buffer, and
 * every 8 rows summed by one transpose-and-add tree (reduce8_avx512), so that y[r, o] has one
 * summation order whatever NR, the band or the thread split. */
#define MV_MAX_ROWS 8
#define MV_PF 2048 /* floats (8 KB) ahead: measured better than 0, 256, 512 and 1024 at 1 thread */

__attribute__((target("avx512f"), always_inline)) static inline void
mv_rows_avx512(const float *w, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, const float *x, ptrdiff_t xs,
               const float *bias, float *y, ptrdiff_t ys, const int NR) {
    __m512 part[MV_MAX_ROWS][8];  /* each (input row, weight row of the group): its row sum, per lane */
    for (ptrdiff_t g = o_begin; g < o_end; g += 8) {
        ptrdiff_t n_o = o_end - g < 8 ? o_end - g : 8;
        for (ptrdiff_t j = 0; j < 8; j++) {
            if (j >= n_o) {  /* spare slots of a last partial group: reduced, then discarded */
                for (int r = 0; r < NR; r++) part[r][j] = _mm512_setzero_ps();
                continue;
            }
            const float *wr = w + (g + j) * n_in;
            __m512 a0[MV_MAX_ROWS], a1[MV_MAX_ROWS];
            for (int r = 0; r < NR; r++) a0[r] = a1[r] = _mm512_setzero_ps();
            ptrdiff_t k = 0;
            for (; k + 32 <= n_in; k += 32) {
                _mm_prefetch(ahead(wr, k + MV_PF), _MM_HINT_T0);
                _mm_prefetch(ahead(wr, k + MV_PF + 16), _MM_HINT_T0);
                __m512 w0 = _mm512_loadu_ps(wr + k), w1 = _mm512_loadu_ps(wr + k + 16);
                /* keep w in registers: otherwise GCC folds the loads into every FMA (NR loads) */
                if (NR > 1) __asm__("" : "+v"(w0), "+v"(w1));
                for (int r = 0; r < NR; r++) {
                    a0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * xs + k), a0[r]);
                    a1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + r * xs + k + 16), a1[r]);
                }
            }
            if (k + 16 <= n_in) {
                __m512 w0 = _mm512_loadu_ps(wr + k);
                for (int r = 0; r < NR; r++) a0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * xs + k), a0[r]);
                k += 16;
            }
            if (k < n_in) {  /* masked tail: no scalar loop, no read past the end of a row */
                __mmask16 m = (__mmask16)((1u << (n_in - k)) - 1u);
                __m512 w1 = _mm512_maskz_loadu_ps(m, wr + k);
                for (int r = 0; r < NR; r++)
                    a1[r] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m, x + r * xs + k), a1[r]);
            }
            for (int r = 0; r < NR; r++) part[r][j] = _mm512_add_ps(a0[r], a1[r]);
        }
        /* 512-bit masked load/store of the low n_o lanes: AVX512F only, no AVX512VL needed */
        __mmask16 keep = (__mmask16)((1u << n_o) - 1u);
        __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias + g) : _mm512_setzero_ps();
        for (int r = 0; r < NR; r++)
            _mm512_mask_storeu_ps(y + r * ys + g, keep, _mm512_add_ps(_mm512_castps256_ps512(reduce8_avx512(part[r])), b));
    }
}

/* One instance per NR, so each loop unrolls fully and the accumulators stay in registers. */
#define MV_ROWS_FN(NR)                                                                                      \
    __attribute__((target("avx512f"))) static void mv_rows_##NR(const float *w, ptrdiff_t n_in, ptrdiff_t o0, \
                                                                ptrdiff_t o1, const float *x, ptrdiff_t xs,   \
                                                                const float *bias, float *y, ptrdiff_t ys) {  \
        mv_rows_avx512(w, n_in, o0, o1, x, xs, bias, y, ys, NR);                                            \
    }
MV_ROWS_FN(1) MV_ROWS_FN(2) MV_ROWS_FN(3) MV_ROWS_FN(4) MV_ROWS_FN(5) MV_ROWS_FN(6) MV_ROWS_FN(7) MV_ROWS_FN(8)

typedef void (*mv_rows_fn)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, const float *,
                           float *, ptrdiff_t);
static const mv_rows_fn MV_ROWS[MV_MAX_ROWS + 1] = {NULL,      mv_rows_1, mv_rows_2, mv_rows_3, mv_rows_4,
                                                    mv_rows_5, mv_rows_6, mv_rows_7, mv_rows_8};

/* y[r, o] for o in [o_begin, o_end): input rows in chunks of at most 8, each chunk one pass
 * over the band of w (decoding has at most 8; more re-read w, from L2 for a small band). */
static void linear_rows_avx512(const float *w, const float *bias, const float *x, ptrdiff_t xs, float *y, ptrdiff_t ys,
                               ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    for (ptrdiff_t r = 0; r < n_rows; r += MV_MAX_ROWS) {
        ptrdiff_t nr = n_rows - r < MV_MAX_ROWS ? n_rows - r : MV_MAX_ROWS;
        MV_ROWS[nr](w, n_in, o_begin, o_end, x + r * xs, xs, bias, y + r * ys, ys);
    }
}

__attribute__((target("avx2,fma"))) static void rows_avx2(const float *w, const float *x, ptrdiff_t xs,
                                                           ptrdiff_t nr, ptrdiff_t n, float *out) {
    __m256 s[FG_ROW_TILE];
    for (int r = 0; r < FG_ROW_TILE; r++) s[r] = _mm256_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 wv = _mm256_loadu_ps(w + k);
        for (int r = 0; r < nr; r++) s[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * xs + k), s[r]);
    }
    for (int r = 0; r < nr; r++) {
        float t = hsum256(s[r]);
        for (ptrdiff_t j = k; j < n; j++) t += w[j] * x[r * xs + j];
        out[r] = t;
    }
}

__attribute__((target("avx512f"))) static double read_sum_avx512(const float *x, ptrdiff_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 64 <= n; k += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + k));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + k + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(x + k + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(x + k + 48));
    }
    double sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; k < n; k++) sum += x[k];
    return sum;
}

__attribute__((target("avx2,fma"))) static double read_sum_avx2(const float *x, ptrdiff_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    ptrdiff_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + k));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + k + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + k + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + k + 24));
    }
    double sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) sum += x[k];
    return sum;
}
#endif /* FG_X86 */

float fg_dot_f32(const float *a, const float *b, ptrdiff_t n, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) return dot_avx512(a, b, n);
    if (level >= FG_AVX2) return dot_avx2(a, b, n);
#endif
    (void)level;
    return fg_dot_f32_ref(a, b, n);
}

void fg_linear_rows_f32(const float *w, const float *bias, const float *x, ptrdiff_t xs, float *y, ptrdiff_t ys,
                        ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) {
        linear_rows_avx512(w, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    float tmp[FG_ROW_TILE];
    for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += FG_ROW_TILE) {
        ptrdiff_t nr = n_rows - r0 < FG_ROW_TILE ? n_rows - r0 : FG_ROW_TILE;
        const float *xr = x + r0 * xs;
        float *yr = y + r0 * ys;
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            const float *wo = w + o * n_in;
#ifdef FG_X86
            if (level >= FG_AVX2) rows_avx2(wo, xr, xs, nr, n_in, tmp);
            else
#endif
                for (ptrdiff_t r = 0; r < nr; r++) tmp[r] = fg_dot_f32_ref(wo, xr + r * xs, n_in);
            float b = bias ? bias[o] : 0.f;
            for (ptrdiff_t r = 0; r < nr; r++) yr[r * ys + o] = tmp[r] + b;
        }
    }
}

double fg_read_sum_f32(const float *x, ptrdiff_t n, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) return read_sum_avx512(x, n);
    if (level >= FG_AVX2) return read_sum_avx2(x, n);
#endif
    (void)level;
    double s = 0.0;
    for (ptrdiff_t k = 0; k < n; k++) s += x[k];
    return s;
}
