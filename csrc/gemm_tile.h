/* The AVX-512 register tile of the prefill GEMMs with float32 products (csrc/gemm.c for float32
 * weights, csrc/hgemm.c for 16-bit weights widened to float32), shared as static inline code:
 * each including file compiles its own instances with its own target attributes.
 *
 * Layout: x packed into panels of PANEL = 16 rows stored i-major (xp[p][i][16]); w row-major
 * [o, i], GEMM_MR = 8 rows per tile read one float at a time and broadcast; a tile of y^T of
 * 8 x (16 * NRV) in accumulators, transposed into rows of y at the end (see gemm.c's Design).
 */
#ifndef FASTGPT_GEMM_TILE_H
#define FASTGPT_GEMM_TILE_H

#include <stdint.h>

#define PANEL 16 /* rows of x per packed panel: one zmm */

/* Tile: MR = 8 rows of w x NRV = 2 panels (32 rows of x) = 16 accumulators; a lone last panel
 * uses the same 8 rows. 8 x 2 measured best (~210 GFLOP/s) of 8-14 rows x 2-4 panels, all
 * within ~5%; for one panel 8-12 rows ran at 150-180 GFLOP/s and 20-28 rows at 40-100 (28
 * row pointers and streams do not fit the registers or the prefetchers). */
#define GEMM_MR 8
#define GEMM_NRV 2

/* One step of the GEMMs' walk: rows [o, o + mr) of w against panels [p, p + nrv) of x, which are
 * rows [n0, n0 + nc) of y. */
typedef struct {
    ptrdiff_t p, n0, nc, o, mr;
    int nrv;
} gemm_step;

/* Panel groups of GEMM_NRV outer, tiles of GEMM_MR rows of w inner: the group of x stays in L2
 * while the rows of w stream past it (from L2 when the caller sizes the o range for it). */
static inline void gemm_walk(ptrdiff_t n_rows, ptrdiff_t o_begin, ptrdiff_t o_end,
                             void (*tile)(const gemm_step *, void *), void *ctx) {
    ptrdiff_t n_panels = (n_rows + PANEL - 1) / PANEL;
    for (ptrdiff_t p = 0; p < n_panels; p += GEMM_NRV) {
        gemm_step s = {.p = p, .n0 = p * PANEL, .nrv = n_panels - p >= GEMM_NRV ? GEMM_NRV : (int)(n_panels - p)};
        s.nc = n_rows - s.n0 < s.nrv * PANEL ? n_rows - s.n0 : s.nrv * PANEL;
        for (s.o = o_begin; s.o < o_end; s.o += GEMM_MR) {
            s.mr = o_end - s.o < GEMM_MR ? o_end - s.o : GEMM_MR;
            tile(&s, ctx);
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* p + k bytes for a prefetch, which may point past the end of p's array: computed on integers,
 * since pointer arithmetic beyond the array is undefined even if never dereferenced. */
static inline const char *pf_at(const char *p, ptrdiff_t k) { return (const char *)((uintptr_t)p + (uintptr_t)k); }

/* t[j] = column j of the 16 x 16 block r (r[c] = row c): three rounds of 2-input shuffles. */
__attribute__((target("avx512f"), always_inline)) static inline void transpose16_avx512(const __m512 r[16], __m512 t[16]) {
    __m512 a[16], b[16];
    for (int i = 0; i < 8; i++) {  /* per 128-bit lane L: rows 2i, 2i+1 of columns 4L..4L+3, interleaved */
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {  /* b[4i + c], lane L: rows 4i..4i+3 of column 4L + c */
        __m512d lo = _mm512_castps_pd(a[4 * i]), hi = _mm512_castps_pd(a[4 * i + 1]);
        __m512d lo2 = _mm512_castps_pd(a[4 * i + 2]), hi2 = _mm512_castps_pd(a[4 * i + 3]);
        b[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    for (int c = 0; c < 4; c++) {  /* gather lane L of the four row groups: column 4L + c */
        __m512 s0 = _mm512_shuffle_f32x4(b[c], b[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 s1 = _mm512_shuffle_f32x4(b[c], b[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
        __m512 s2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 s3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
        t[c] = _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(2, 0, 2, 0));
        t[8 + c] = _mm512_shuffle_f32x4(s0, s2, _MM_SHUFFLE(3, 1, 3, 1));
        t[4 + c] = _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + c] = _mm512_shuffle_f32x4(s1, s3, _MM_SHUFFLE(3, 1, 3, 1));
    }
}


/* y[n0 + c, o0 + r] = bias[r] + acc[r][c] for the valid mr x nc part: the 8 x 16 block of each
 * panel is transposed in registers so that each row of y gets one 8-float masked store. */
__attribute__((target("avx512f"), always_inline)) static inline void
store_tile_avx512(const __m512 acc[GEMM_MR][GEMM_NRV], const int NRV, ptrdiff_t mr, ptrdiff_t nc, const float *bias,
                  float *y, ptrdiff_t ys) {
    __mmask16 keep = (__mmask16)((1u << mr) - 1u);
    __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias) : _mm512_setzero_ps();
    b = _mm512_shuffle_f32x4(b, b, _MM_SHUFFLE(1, 0, 1, 0));  /* bias[0:8] in both halves */
    for (int j = 0; j < NRV; j++) {
        __m512 a[8], u[8];
        for (int i = 0; i < 4; i++) {
            a[2 * i] = _mm512_unpacklo_ps(acc[2 * i][j], acc[2 * i + 1][j]);
            a[2 * i + 1] = _mm512_unpackhi_ps(acc[2 * i][j], acc[2 * i + 1][j]);
        }
        for (int i = 0; i < 2; i++) {  /* u[4i + c], lane L: rows 4i..4i+3 of column 4L + c */
            __m512d lo = _mm512_castps_pd(a[4 * i]), hi = _mm512_castps_pd(a[4 * i + 1]);
            __m512d lo2 = _mm512_castps_pd(a[4 * i + 2]), hi2 = _mm512_castps_pd(a[4 * i + 3]);
            u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
        }
        for (int c = 0; c < 4; c++) {
            /* [col c | col 8+c] and [col 4+c | col 12+c], each half = rows 0..7 */
            __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
            __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
            v0 = _mm512_add_ps(_mm512_shuffle_f32x4(v0, v0, _MM_SHUFFLE(3, 1, 2, 0)), b);
            v1 = _mm512_add_ps(_mm512_shuffle_f32x4(v1, v1, _MM_SHUFFLE(3, 1, 2, 0)), b);
            const __m512 cols[4] = {v0, v1, _mm512_shuffle_f32x4(v0, v0, _MM_SHUFFLE(3, 2, 3, 2)),
                                    _mm512_shuffle_f32x4(v1, v1, _MM_SHUFFLE(3, 2, 3, 2))};
            const int col[4] = {c, 4 + c, 8 + c, 12 + c};
            for (int q = 0; q < 4; q++) {
                ptrdiff_t n = 16 * j + col[q];
                if (n < nc) _mm512_mask_storeu_ps(y + n * ys, keep, cols[q]);
            }
        }
    }
}

/* acc[r][j] = sum over i of w[r, i] * xp[j][i][:], then stored into y with the bias. Rows
 * past mr re-read row mr - 1 (and are not stored). Meanwhile the rows that the caller computes
 * next are prefetched: GEMM_MR rows pf_row bytes apart from pf, of PF_ESIZE-byte elements. */
__attribute__((target("avx512f"), always_inline)) static inline void
gemm_tile_avx512(const float *w, ptrdiff_t n_in, ptrdiff_t mr, const float *xp, ptrdiff_t xp_stride, ptrdiff_t nc,
                 const float *bias, float *y, ptrdiff_t ys, const char *pf, ptrdiff_t pf_row, const int PF_ESIZE,
                 const int NRV) {
    const float *wr[GEMM_MR];
    __m512 acc[GEMM_MR][GEMM_NRV];
    for (int r = 0; r < GEMM_MR; r++) wr[r] = w + (r < mr ? r : mr - 1) * n_in;
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < NRV; j++) acc[r][j] = _mm512_setzero_ps();
    for (ptrdiff_t i = 0; i < n_in; i++) {
        /* Prefetch the next tile's rows into L2, a line of each per 64 bytes of a row: with
         * weights coming from DRAM (prefill) the 8 slow row streams defeat the hardware
         * prefetchers, and this took N = 16 from 120 to 170 GFLOP/s (into L1 instead thrashed it
         * at I = 3072). Past the last row of w it prefetches unrelated addresses, harmlessly. */
        if ((i & (64 / PF_ESIZE - 1)) == 0)
            for (int r = 0; r < GEMM_MR; r++) _mm_prefetch(pf_at(pf, r * pf_row + i * PF_ESIZE), _MM_HINT_T1);
        __m512 xv[GEMM_NRV];
        for (int j = 0; j < NRV; j++) xv[j] = _mm512_load_ps(xp + j * xp_stride + i * PANEL);
        for (int r = 0; r < GEMM_MR; r++) {
            __m512 wb = _mm512_set1_ps(wr[r][i]);
            for (int j = 0; j < NRV; j++) acc[r][j] = _mm512_fmadd_ps(wb, xv[j], acc[r][j]);
        }
    }
    store_tile_avx512(acc, NRV, mr, nc, bias, y, ys);
}

#endif /* x86 */
#endif
