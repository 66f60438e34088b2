/* The prefill product y = x @ w.T + b for many rows of x (N > 8): a register-blocked GEMM.
 *
 * Dimension legend: n rows of x and y (tokens), i input width (the K of the product),
 * o output width (rows of w). w is row-major [o, i] as stored by the loader, never copied.
 *
 * Design. In BLAS terms y^T[o, n] = w[o, i] @ x^T[i, n]: w is the "A" matrix used in place
 * (MR = 8 of its rows are read one float at a time and broadcast), and x is the "B" matrix,
 * packed once per call into panels of 16 rows stored i-major (xp[p][i][16]: one zmm holds
 * x[16p .. 16p+15, i]). The microkernel keeps an 8 x 32 block of y^T (two panels) in 16 zmm
 * accumulators; per i it does 2 vector loads of xp, 8 broadcasts of w and 16 FMAs, and at the
 * end transposes the block in registers into rows of y. Nothing of w is packed, so for few
 * rows (N = 16: a 16-token prompt) the cost is only the stream of w, read once per 32 rows.
 *
 * Summation order: every y[n, o] is one lane of one accumulator, summed over i in order
 * 0, 1, ..., I-1 by FMA, then the bias is added. Tiles, blocks and threads only decide which
 * lanes are computed together, so results do not depend on the thread split (or on N).
 *
 * Non-goals: no K blocking (I <= 3072 here: a 2-panel group of x is at most 384 KB and stays
 * in L2; blocking K by 256-512 measured 2-5% slower), no packing of w (see above), no
 * fast-math. The SIMD level is chosen by the caller (fg_simd_level): AVX-512; AVX2, a 6 x 16
 * tile on par with OpenBLAS's Haswell kernel; or a slow portable loop that keeps this function
 * correct (the Python side uses BLAS there).
 */
#include <stdint.h>

#include "fastgpt_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define PANEL 16 /* rows of x per packed panel: one zmm */

/* &p[k] for a prefetch, which may point past the end of p's array: computed on integers,
 * since pointer arithmetic beyond the array is undefined even if never dereferenced. */
static inline const char *ahead(const float *p, ptrdiff_t k) {
    return (const char *)((uintptr_t)p + (uintptr_t)k * sizeof(float));
}

/* The packing in plain C: the reference for the layout. */
static void pack_x_ref(const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p, float *dst) {
    ptrdiff_t n0 = p * PANEL, nv = n_rows - n0 < PANEL ? n_rows - n0 : PANEL;
    for (ptrdiff_t c = 0; c < nv; c++) {  /* row by row: reads x sequentially */
        const float *src = x + (n0 + c) * xs;
        for (ptrdiff_t i = 0; i < n_in; i++) dst[i * PANEL + c] = src[i];
    }
    for (ptrdiff_t c = nv; c < PANEL; c++)  /* padding rows: zeros, so their lanes stay finite */
        for (ptrdiff_t i = 0; i < n_in; i++) dst[i * PANEL + c] = 0.f;
}

/* Portable fallback on the same packed layout, summing i in the same ascending order (with
 * separate multiply and add: -std=c11 does not contract them into FMAs). */
static void gemm_ref(const float *xp, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w, const float *bias, float *y,
                     ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end) {
    for (ptrdiff_t n = 0; n < n_rows; n++) {
        const float *xpn = xp + (n / PANEL) * n_in * PANEL + n % PANEL;
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            const float *wo = w + o * n_in;
            float acc = 0.f;
            for (ptrdiff_t i = 0; i < n_in; i++) acc += wo[i] * xpn[i * PANEL];
            y[n * ys + o] = acc + (bias ? bias[o] : 0.f);
        }
    }
}

#ifdef FG_X86
/* ---- AVX-512 ---------------------------------------------------------------------------- */

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

/* One panel: 16 x 16 blocks of x transposed in registers (masked loads at the row and column
 * edges, zero rows past n_rows). */
__attribute__((target("avx512f"))) static void pack_x_avx512(const float *x, ptrdiff_t xs, ptrdiff_t n_rows,
                                                             ptrdiff_t n_in, ptrdiff_t p, float *dst) {
    ptrdiff_t n0 = p * PANEL, nv = n_rows - n0 < PANEL ? n_rows - n0 : PANEL;
    for (ptrdiff_t i = 0; i < n_in; i += 16) {
        ptrdiff_t ni = n_in - i < 16 ? n_in - i : 16;
        __mmask16 m = (__mmask16)((1u << ni) - 1u);
        __m512 r[16], t[16];
        for (int c = 0; c < 16; c++)
            r[c] = c < nv ? _mm512_maskz_loadu_ps(m, x + (n0 + c) * xs + i) : _mm512_setzero_ps();
        transpose16_avx512(r, t);
        for (int j = 0; j < ni; j++) _mm512_store_ps(dst + (i + j) * PANEL, t[j]);
    }
}

/* Tile: MR = 8 rows of w x NRV = 2 panels (32 rows of x) = 16 accumulators; a lone last panel
 * uses the same 8 rows. 8 x 2 measured best (~210 GFLOP/s) of 8-14 rows x 2-4 panels, all
 * within ~5%; for one panel 8-12 rows ran at 150-180 GFLOP/s and 20-28 rows at 40-100 (28
 * row pointers and streams do not fit the registers or the prefetchers). */
#define GEMM_MR 8
#define GEMM_NRV 2

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
 * past mr re-read row mr - 1 (and are not stored). */
__attribute__((target("avx512f"), always_inline)) static inline void
gemm_tile_avx512(const float *w, ptrdiff_t n_in, ptrdiff_t mr, const float *xp, ptrdiff_t xp_stride, ptrdiff_t nc,
                 const float *bias, float *y, ptrdiff_t ys, const int NRV) {
    const float *wr[GEMM_MR];
    __m512 acc[GEMM_MR][GEMM_NRV];
    for (int r = 0; r < GEMM_MR; r++) wr[r] = w + (r < mr ? r : mr - 1) * n_in;
    for (int r = 0; r < GEMM_MR; r++)
        for (int j = 0; j < NRV; j++) acc[r][j] = _mm512_setzero_ps();
    for (ptrdiff_t i = 0; i < n_in; i++) {
        /* Prefetch the next tile's rows into L2, a line of each per 16 i: with weights coming
         * from DRAM (prefill) the 8 slow row streams defeat the hardware prefetchers, and this
         * took N = 16 from 120 to 170 GFLOP/s (into L1 instead thrashed it at I = 3072). Past
         * the last row of w it prefetches unrelated addresses, which is harmless. */
        if ((i & 15) == 0)
            for (int r = 0; r < GEMM_MR; r++) _mm_prefetch(ahead(w, (GEMM_MR + r) * n_in + i), _MM_HINT_T1);
        __m512 xv[GEMM_NRV];
        for (int j = 0; j < NRV; j++) xv[j] = _mm512_load_ps(xp + j * xp_stride + i * PANEL);
        for (int r = 0; r < GEMM_MR; r++) {
            __m512 wb = _mm512_set1_ps(wr[r][i]);
            for (int j = 0; j < NRV; j++) acc[r][j] = _mm512_fmadd_ps(wb, xv[j], acc[r][j]);
        }
    }
    store_tile_avx512(acc, NRV, mr, nc, bias, y, ys);
}

#define GEMM_TILE_FN(NRV)                                                                                  \
    __attribute__((target("avx512f"))) static void gemm_tile_##NRV(const float *w, ptrdiff_t n_in, ptrdiff_t mr, \
                                                                   const float *xp, ptrdiff_t xp_stride,   \
                                                                   ptrdiff_t nc, const float *bias, float *y, \
                                                                   ptrdiff_t ys) {                         \
        gemm_tile_avx512(w, n_in, mr, xp, xp_stride, nc, bias, y, ys, NRV);                                \
    }
GEMM_TILE_FN(1)
GEMM_TILE_FN(2)

/* Panel groups outer, output tiles inner: the group of x (2 x 16 x I floats) stays in L2 while
 * the block's rows of w stream past it (from L2 when the caller sizes the block for it). */
static void gemm_avx512(const float *xp, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w, const float *bias, float *y,
                        ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end) {
    ptrdiff_t n_panels = (n_rows + PANEL - 1) / PANEL, panel_stride = n_in * PANEL;
    for (ptrdiff_t p = 0; p < n_panels; p += GEMM_NRV) {
        int nrv = n_panels - p >= GEMM_NRV ? GEMM_NRV : (int)(n_panels - p);
        ptrdiff_t n0 = p * PANEL, nc = n_rows - n0 < nrv * PANEL ? n_rows - n0 : nrv * PANEL;
        const float *xpp = xp + p * panel_stride;
        for (ptrdiff_t o = o_begin; o < o_end; o += GEMM_MR) {
            ptrdiff_t mr = o_end - o < GEMM_MR ? o_end - o : GEMM_MR;
            const float *bo = bias ? bias + o : NULL;
            if (nrv == 2) gemm_tile_2(w + o * n_in, n_in, mr, xpp, panel_stride, nc, bo, y + n0 * ys + o, ys);
            else gemm_tile_1(w + o * n_in, n_in, mr, xpp, panel_stride, nc, bo, y + n0 * ys + o, ys);
        }
    }
}

/* ---- AVX2 ------------------------------------------------------------------------------- */

/* Write a GEMM_MR_AVX2 x 16 tile of y^T (tile[r][c] = output o0 + r, row n0 + c) into y. */
static void store_tile(const float *tile, ptrdiff_t mr, ptrdiff_t nc, const float *bias, float *y, ptrdiff_t ys) {
    for (ptrdiff_t c = 0; c < nc; c++)
        for (ptrdiff_t r = 0; r < mr; r++) y[c * ys + r] = tile[r * PANEL + c] + (bias ? bias[r] : 0.f);
}

/* One panel is two ymm; 6 rows of w x 16 rows of x = 12 accumulators + 2 x vectors +
 * 1 broadcast of the 16 ymm registers (the classic Haswell 6x16 shape). Same summation order.
 * (The broadcast is written _mm256_set1_ps(v) on purpose: with _mm256_broadcast_ss(ptr) GCC 12
 * kept the accumulators in memory.) */
#define GEMM_MR_AVX2 6
__attribute__((target("avx2,fma"), always_inline)) static inline void
gemm_tile_avx2_(const float *w, ptrdiff_t n_in, ptrdiff_t mr, const float *xp, float *tile, const int MR) {
    const float *wr[GEMM_MR_AVX2];
    __m256 acc[GEMM_MR_AVX2][2];
    for (int r = 0; r < MR; r++) wr[r] = w + (r < mr ? r : mr - 1) * n_in;
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 2; j++) acc[r][j] = _mm256_setzero_ps();
    for (ptrdiff_t i = 0; i < n_in; i++) {
        if ((i & 15) == 0)  /* the next tile's rows into L2, as in the AVX-512 tile */
            for (int r = 0; r < MR; r++) _mm_prefetch(ahead(w, (MR + r) * n_in + i), _MM_HINT_T1);
        __m256 xv[2];
        for (int j = 0; j < 2; j++) xv[j] = _mm256_load_ps(xp + i * PANEL + 8 * j);
        for (int r = 0; r < MR; r++) {
            __m256 wb = _mm256_set1_ps(wr[r][i]);
            for (int j = 0; j < 2; j++) acc[r][j] = _mm256_fmadd_ps(wb, xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 2; j++) _mm256_store_ps(tile + r * PANEL + 8 * j, acc[r][j]);
}

__attribute__((target("avx2,fma"))) static void gemm_tile_avx2(const float *w, ptrdiff_t n_in, ptrdiff_t mr,
                                                               const float *xp, float *tile) {
    gemm_tile_avx2_(w, n_in, mr, xp, tile, GEMM_MR_AVX2);
}

static void gemm_avx2(const float *xp, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w, const float *bias, float *y,
                      ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end) {
    _Alignas(64) float tile[GEMM_MR_AVX2 * PANEL];
    ptrdiff_t n_panels = (n_rows + PANEL - 1) / PANEL;
    for (ptrdiff_t p = 0; p < n_panels; p++) {
        ptrdiff_t n0 = p * PANEL, nc = n_rows - n0 < PANEL ? n_rows - n0 : PANEL;
        for (ptrdiff_t o = o_begin; o < o_end; o += GEMM_MR_AVX2) {
            ptrdiff_t mr = o_end - o < GEMM_MR_AVX2 ? o_end - o : GEMM_MR_AVX2;
            gemm_tile_avx2(w + o * n_in, n_in, mr, xp + p * n_in * PANEL, tile);
            store_tile(tile, mr, nc, bias ? bias + o : NULL, y + n0 * ys + o, ys);
        }
    }
}
#endif /* FG_X86 */

void fg_gemm_pack_x_f32(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                        ptrdiff_t p_end, float *xp__pic, int level) {
    for (ptrdiff_t p = p_begin; p < p_end; p++) {
#ifdef FG_X86
        if (level >= FG_AVX512) {
            pack_x_avx512(x__ni, x_stride, n_rows, n_in, p, xp__pic + p * n_in * PANEL);
            continue;
        }
#endif
        pack_x_ref(x__ni, x_stride, n_rows, n_in, p, xp__pic + p * n_in * PANEL);
    }
    (void)level;
}

void fg_gemm_f32(const float *xp__pic, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w__oi, const float *b__o,
                 float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) {
        gemm_avx512(xp__pic, n_rows, n_in, w__oi, b__o, y__no, y_stride, o_begin, o_end);
        return;
    }
    if (level >= FG_AVX2) {
        gemm_avx2(xp__pic, n_rows, n_in, w__oi, b__o, y__no, y_stride, o_begin, o_end);
        return;
    }
#endif
    (void)level;
    gemm_ref(xp__pic, n_rows, n_in, w__oi, b__o, y__no, y_stride, o_begin, o_end);
}
