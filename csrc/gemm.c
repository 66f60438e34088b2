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
#include "gemm_tile.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

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

#define GEMM_TILE_FN(NRV)                                                                                  \
    __attribute__((target("avx512f"))) static void gemm_tile_##NRV(const float *w, ptrdiff_t n_in, ptrdiff_t mr, \
                                                                   const float *xp, ptrdiff_t xp_stride,   \
                                                                   ptrdiff_t nc, const float *bias, float *y, \
                                                                   ptrdiff_t ys) {                         \
        gemm_tile_avx512(w, n_in, mr, xp, xp_stride, nc, bias, y, ys, pf_at((const char *)w, GEMM_MR * n_in * 4), \
                         n_in * (ptrdiff_t)sizeof(float), sizeof(float), NRV);                                \
    }
GEMM_TILE_FN(1)
GEMM_TILE_FN(2)

typedef struct {
    const float *xp, *w, *bias;
    float *y;
    ptrdiff_t n_in, ys;
} gemm_f32_args;

static void gemm_f32_step(const gemm_step *s, void *ctx) {
    const gemm_f32_args *a = ctx;
    ptrdiff_t panel_stride = a->n_in * PANEL;
    const float *w = a->w + s->o * a->n_in, *xpp = a->xp + s->p * panel_stride, *bo = a->bias ? a->bias + s->o : NULL;
    float *yt = a->y + s->n0 * a->ys + s->o;
    if (s->nrv == 2) gemm_tile_2(w, a->n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys);
    else gemm_tile_1(w, a->n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys);
}

static void gemm_avx512(const float *xp, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w, const float *bias, float *y,
                        ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end) {
    gemm_f32_args a = {.xp = xp, .w = w, .bias = bias, .y = y, .n_in = n_in, .ys = ys};
    gemm_walk(n_rows, o_begin, o_end, gemm_f32_step, &a);
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
            for (int r = 0; r < MR; r++) _mm_prefetch(pf_at((const char *)w, ((MR + r) * n_in + i) * 4), _MM_HINT_T1);
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
