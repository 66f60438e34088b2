/* Dot products and the fp32 matrix-vector rows that decoding spends its time in.
 *
 * Decode is bound by reading the weights once per token, so the kernel's job is to keep
 * loads streaming: the AVX-512 path takes a tile of 8 (or 4) weight rows, dots it with every
 * input row while it is in L1 (up to 3, or 6, rows per pass), and prefetches the next tile.
 * The 8 rows are 8 independent FMA chains even for one input row, and their 8 sums are reduced
 * together by one transpose-and-add tree. AVX2 and scalar fallbacks do one weight row at a
 * time. No fast-math: sums are reassociated only in the explicit ways written here.
 *
 * Dimension legend: n rows of x (tokens), i input width, o output rows (rows of w [o, i]).
 */
#include <stdint.h>

#include "fastgpt_kernels.h"

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

/* Sum each of 8 accumulators over its 16 lanes: out lane j = sum of a[j] (8 sums in one ymm).
 * A transpose-and-add tree: 16 shuffles and 8 adds for 8 rows, where 8 _mm512_reduce_add_ps
 * take 32 and 32.
 * Every row is summed in the same order, whatever its slot: per 128-bit lane (x0+x2)+(x1+x3),
 * then lanes (L0+L1)+(L2+L3). With one accumulator per (input row, weight row), y[r, o] thus
 * does not depend on the tile shape, so not on N or on the thread split either. */
__attribute__((target("avx512f"))) static inline __m512 pairsum_ps(__m512 a, __m512 b) {
    /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

__attribute__((target("avx512f"))) static inline __m512 quadsum_ps(__m512 ab, __m512 cd) {
    /* per 128-bit lane: [a, b, c, d], each (x0+x2)+(x1+x3) of that lane */
    __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}

__attribute__((target("avx512f"))) static inline __m256 reduce8_avx512(const __m512 a[8]) {
    __m512 u = quadsum_ps(pairsum_ps(a[0], a[1]), pairsum_ps(a[2], a[3]));  /* rows 0-3, per lane */
    __m512 v = quadsum_ps(pairsum_ps(a[4], a[5]), pairsum_ps(a[6], a[7]));  /* rows 4-7, per lane */
    /* [u.L0+u.L1, u.L2+u.L3, v.L0+v.L1, v.L2+v.L3] */
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
    s = _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(3, 1, 2, 0));               /* [u01, v01, u23, v23] */
    return _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
}

/* The same tree for 4 accumulators: out lane j = sum of a[j], in the same order as reduce8. */
__attribute__((target("avx512f"))) static inline __m128 reduce4_avx512(const __m512 a[4]) {
    __m512 u = quadsum_ps(pairsum_ps(a[0], a[1]), pairsum_ps(a[2], a[3]));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(3, 1, 3, 1)));  /* [L0+L1, L2+L3, ..] */
    return _mm_add_ps(_mm512_castps512_ps128(s), _mm512_extractf32x4_ps(s, 1));
}

/* The decode tile: TO weight rows (8 or 4) against NR input rows, one pass over the rows.
 * Each weight vector is loaded once and used by every input row; the TO weight rows give N=1
 * TO independent FMA chains and the loads TO sequential streams. Registers: TO * NR
 * accumulators + NR inputs + 1 weight vector <= 32, so NR <= 3 for TO = 8 and <= 6 for TO = 4.
 * A tile with fewer than TO valid rows (n_o) re-reads its last row in the spare slots and
 * discards them. The tile prefetches into L1 as it goes, one line per weight vector: the next
 * tile's rows (the next TO rows of w) if a tile is at most MV_PF_TILE floats, otherwise (rows
 * of 3072) MV_PF_ROW floats ahead in each row, as a whole next tile would evict this one from
 * L1. With 4-8 row streams the hardware prefetchers alone left DRAM bandwidth unused (N = 8,
 * I = 768: 23 -> 28 GB/s; I = 3072: 17 -> 19 GB/s); into L2, or two tiles ahead, was worse. */
#define MV_MAX_R8 3
#define MV_MAX_R4 6
#define MV_PF_TILE 8192 /* floats: 32 KB of the 48 KB L1 */
#define MV_PF_ROW 512

__attribute__((target("avx512f"), always_inline)) static inline void
mv_tile_avx512(const float *w, ptrdiff_t n_in, ptrdiff_t n_o, const float *x, ptrdiff_t xs, const float *bias,
               float *y, ptrdiff_t ys, const int TO, const int NR) {
    const float *wr[8];
    __m512 acc[MV_MAX_R4][8];
    for (int j = 0; j < TO; j++) wr[j] = w + (j < n_o ? j : n_o - 1) * n_in;
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < TO; j++) acc[r][j] = _mm512_setzero_ps();
    ptrdiff_t pf = TO * n_in <= MV_PF_TILE ? TO * n_in : MV_PF_ROW;  /* prefetch distance, floats */
    ptrdiff_t k = 0;
    for (; k + 16 <= n_in; k += 16) {
        __m512 xv[MV_MAX_R4];
        for (int r = 0; r < NR; r++) xv[r] = _mm512_loadu_ps(x + r * xs + k);
        for (int j = 0; j < TO; j++) {
            _mm_prefetch(ahead(wr[j], pf + k), _MM_HINT_T0);
            __m512 wv = _mm512_loadu_ps(wr[j] + k);
            /* keep wv in a register: otherwise GCC folds the load into every FMA (NR loads) */
            if (NR > 1) __asm__("" : "+v"(wv));
            for (int r = 0; r < NR; r++) acc[r][j] = _mm512_fmadd_ps(wv, xv[r], acc[r][j]);
        }
    }
    if (k < n_in) {  /* masked tail: no scalar loop, no read past the end of a row */
        __mmask16 m = (__mmask16)((1u << (n_in - k)) - 1u);
        __m512 xv[MV_MAX_R4];
        for (int r = 0; r < NR; r++) xv[r] = _mm512_maskz_loadu_ps(m, x + r * xs + k);
        for (int j = 0; j < TO; j++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, wr[j] + k);
            for (int r = 0; r < NR; r++) acc[r][j] = _mm512_fmadd_ps(wv, xv[r], acc[r][j]);
        }
    }
    /* 512-bit masked load/store of the low TO lanes: AVX512F only, no AVX512VL needed */
    __mmask16 keep = (__mmask16)((1u << n_o) - 1u);
    __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias) : _mm512_setzero_ps();
    for (int r = 0; r < NR; r++) {
        __m512 sum = TO == 8 ? _mm512_castps256_ps512(reduce8_avx512(acc[r]))
                             : _mm512_castps128_ps512(reduce4_avx512(acc[r]));
        _mm512_mask_storeu_ps(y + r * ys, keep, _mm512_add_ps(sum, b));
    }
}

/* One instance per (TO, NR), so each tile's loops unroll fully and stay in registers. */
#define MV_TILE_FN(TO, NR)                                                                                 \
    __attribute__((target("avx512f"))) static void mv_tile_##TO##_##NR(                                    \
        const float *w, ptrdiff_t n_in, ptrdiff_t n_o, const float *x, ptrdiff_t xs, const float *bias,    \
        float *y, ptrdiff_t ys) {                                                                          \
        mv_tile_avx512(w, n_in, n_o, x, xs, bias, y, ys, TO, NR);                                          \
    }
MV_TILE_FN(8, 1) MV_TILE_FN(8, 2) MV_TILE_FN(8, 3)
MV_TILE_FN(4, 1) MV_TILE_FN(4, 2) MV_TILE_FN(4, 3) MV_TILE_FN(4, 4) MV_TILE_FN(4, 5) MV_TILE_FN(4, 6)

typedef void (*mv_tile_fn)(const float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, const float *, float *, ptrdiff_t);
static const mv_tile_fn MV_TILE8[MV_MAX_R8 + 1] = {NULL, mv_tile_8_1, mv_tile_8_2, mv_tile_8_3};
static const mv_tile_fn MV_TILE4[MV_MAX_R4 + 1] = {NULL,        mv_tile_4_1, mv_tile_4_2, mv_tile_4_3,
                                                   mv_tile_4_4, mv_tile_4_5, mv_tile_4_6};

/* y[r, o] for o in [o_begin, o_end). Up to 3 input rows: tiles of 8 weight rows, one pass.
 * More: tiles of 4 weight rows, the input rows in near-equal chunks of at most 6 (8 = 4 + 4);
 * the first chunk streams the tile from memory, the others re-read it from L1/L2. */
__attribute__((target("avx512f"))) static void linear_rows_avx512(const float *w, const float *bias, const float *x,
                                                                  ptrdiff_t xs, float *y, ptrdiff_t ys, ptrdiff_t n_rows,
                                                                  ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    if (n_rows <= 0) return;
    if (n_rows <= MV_MAX_R8) {
        for (ptrdiff_t o = o_begin; o < o_end; o += 8) {
            ptrdiff_t n_o = o_end - o < 8 ? o_end - o : 8;
            MV_TILE8[n_rows](w + o * n_in, n_in, n_o, x, xs, bias ? bias + o : NULL, y + o, ys);
        }
        return;
    }
    ptrdiff_t n_chunks = (n_rows + MV_MAX_R4 - 1) / MV_MAX_R4;
    for (ptrdiff_t o = o_begin; o < o_end; o += 4) {
        ptrdiff_t n_o = o_end - o < 4 ? o_end - o : 4;
        for (ptrdiff_t c = 0, r = 0; c < n_chunks; c++) {
            ptrdiff_t nr = (n_rows - r) / (n_chunks - c);  /* near-equal chunks, the larger last */
            MV_TILE4[nr](w + o * n_in, n_in, n_o, x + r * xs, xs, bias ? bias + o : NULL, y + r * ys + o, ys);
            r += nr;
        }
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
