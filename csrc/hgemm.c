/* Prefill GEMMs with 16-bit weights: y = x @ w.T + b for many rows of x, w bfloat16 or float16
 * [out, in], read in place. fastgpt/quant.py is the spec (linear_ref, linear_ref_bf16_activations).
 *
 * Dimension legend: n rows of x and y (tokens), i input width, o output rows of w, j pairs of
 * inputs (i = 2j, 2j + 1), p panels of 16 rows of x.
 *
 * Design. Prefill is a weight stream for short prompts and compute-bound from ~32 rows on; 16-bit
 * weights halve the stream, and bfloat16 on AVX512_BF16 halves the compute as well:
 * - fg_bgemm (bfloat16 weights, AVX512_BF16): x is rounded to bfloat16 once (to nearest even, as
 *   quant.float32_to_bf16_bits) and packed in panels of pairs, xb[p][j][c] = the 32-bit word
 *   (x[16p + c, 2j], x[16p + c, 2j + 1]). vdpbf16ps multiplies a broadcast pair of w with the pairs
 *   of 16 rows: 32 products per instruction against an FMA's 16. The register tile is gemm.c's (8
 *   rows of w x 2 panels), with half the steps. Products of two bfloat16 are exact in float32 and
 *   every output is summed in float32 over j in order, so the result is linear_ref on bfloat16(x)
 *   up to summation order; rounding x adds an NMSE of ~4e-6 to the product (Gaussian x).
 * - fg_gemm_w16_f32 (float16 weights; bfloat16 without AVX512_BF16): x stays float32 and gemm.c's
 *   float32 tile runs on 8 rows of w at a time, widened into per-thread scratch just before the
 *   first panel group needs them, while the tile prefetches the next 8 rows of 16-bit w. The
 *   widening thus overlaps the stream (widening a whole L2 tile before multiplying, the earlier
 *   path, did not: 0.82x the float32 GEMM for a 16-token prompt); later panel groups reuse the
 *   widened rows from L2. Exactly linear_ref up to summation order.
 *
 * Non-goals: no threads (the Cython wrapper splits o), no allocation, no fast-math. Below AVX-512
 * fg_gemm_w16_f32 widens the whole range first and runs fg_gemm_f32 (the portable route).
 */
#include <stdint.h>
#include <string.h>

#include "fastgpt_kernels.h"
#include "gemm_tile.h"
#include "half.h"

#if defined(__x86_64__) || defined(__i386__)
#define FG_X86 1
/* AVX512_BF16 intrinsics: GCC 10 and clang 9 on; an older compiler builds the rest without them */
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define FG_BF16_INTRINSICS 1
#endif
#endif

static ptrdiff_t pairs_of(ptrdiff_t n_in) { return (n_in + 1) / 2; }

ptrdiff_t fg_bgemm_x_bytes(ptrdiff_t n_rows, ptrdiff_t n_in) {
    return (n_rows + PANEL - 1) / PANEL * pairs_of(n_in) * PANEL * (ptrdiff_t)sizeof(uint32_t);
}

int fg_bgemm_available(void) {
#ifdef FG_BF16_INTRINSICS
    __builtin_cpu_init();
    return fg_quant_level() >= FG_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#ifdef FG_BF16_INTRINSICS
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* One panel: per 32 inputs, each row's 32 bfloat16 (16 pairs, one zmm) are gathered by a 16 x 16
 * transpose of 32-bit words into the 16 rows' pairs j. Zero rows past n_rows, zero inputs past
 * n_in (so that an odd last pair holds (x, 0)), and zero pairs from pairs_of(n_in) up to the
 * panel's n_pairs (AMX's tiles take 16 pairs at a time). */
TARGET_BF16 static void bgemm_pack_panel(const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p,
                                         ptrdiff_t n_pairs, uint32_t *dst) {
    const ptrdiff_t n0 = p * PANEL, nv = n_rows - n0 < PANEL ? n_rows - n0 : PANEL;
    const __m512i even_words = _mm512_setr_epi32(0x00020000, 0x00060004, 0x000A0008, 0x000E000C, 0x00120010,
                                                 0x00160014, 0x001A0018, 0x001E001C, 0x00220020, 0x00260024,
                                                 0x002A0028, 0x002E002C, 0x00320030, 0x00360034, 0x003A0038,
                                                 0x003E003C);
    for (ptrdiff_t i = 0; i < n_in; i += 32) {
        ptrdiff_t ni = n_in - i < 32 ? n_in - i : 32, nj = n_pairs - i / 2 < 16 ? n_pairs - i / 2 : 16;
        __mmask16 m0 = (__mmask16)(ni >= 16 ? 0xFFFFu : (1u << ni) - 1u);
        __mmask16 m1 = (__mmask16)(ni >= 32 ? 0xFFFFu : ni > 16 ? (1u << (ni - 16)) - 1u : 0u);
        __m512 r[16], t[16];
        for (int c = 0; c < 16; c++) {
            if (c >= nv) {
                r[c] = _mm512_setzero_ps();
                continue;
            }
            const float *src = x + (n0 + c) * xs + i;
            __m512i lo = bf16_bits_512(_mm512_maskz_loadu_ps(m0, src));
            __m512i hi = bf16_bits_512(_mm512_maskz_loadu_ps(m1, src + 16));
            r[c] = _mm512_castsi512_ps(_mm512_permutex2var_epi16(lo, even_words, hi));  /* 32 words in order */
        }
        transpose16_avx512(r, t);
        for (ptrdiff_t j = 0; j < nj; j++) _mm512_store_ps((float *)(dst + (i / 2 + j) * PANEL), t[j]);
    }
}

/* acc[r][q] = sum over pairs j of w[r, 2j..2j+1] . xb[q][j][:], then stored with the bias. Rows past
 * mr re-read row mr - 1. The next 8 rows of w are prefetched as in gemm_tile_avx512. */
TARGET_BF16 __attribute__((always_inline)) static inline void bgemm_tile(const uint16_t *w, ptrdiff_t n_in,
                                                                         ptrdiff_t mr, const uint32_t *xb,
                                                                         ptrdiff_t xb_stride, ptrdiff_t nc,
                                                                         const float *bias, float *y, ptrdiff_t ys,
                                                                         const int NRV) {
    const ptrdiff_t n_pairs = n_in / 2;
    const uint16_t *wr[GEMM_MR];
    __m512 acc[GEMM_MR][GEMM_NRV];
    for (int r = 0; r < GEMM_MR; r++) wr[r] = w + (r < mr ? r : mr - 1) * n_in;
    for (int r = 0; r < GEMM_MR; r++)
        for (int q = 0; q < NRV; q++) acc[r][q] = _mm512_setzero_ps();
    for (ptrdiff_t j = 0; j < n_pairs; j++) {
        if ((j & 15) == 0)
            for (int r = 0; r < GEMM_MR; r++)
                _mm_prefetch(pf_at((const char *)w, ((GEMM_MR + r) * n_in + 2 * j) * 2), _MM_HINT_T1);
        __m512i xv[GEMM_NRV];
        for (int q = 0; q < NRV; q++) xv[q] = _mm512_load_si512(xb + q * xb_stride + j * PANEL);
        for (int r = 0; r < GEMM_MR; r++) {
            uint32_t pair;
            memcpy(&pair, wr[r] + 2 * j, sizeof pair); /* rows of odd width start at odd words */
            __m512bh wb = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int q = 0; q < NRV; q++) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], wb, (__m512bh)xv[q]);
        }
    }
    if (n_in & 1) { /* the last input alone: (w, 0) meets (x, 0), nothing is read past the row */
        __m512i xv[GEMM_NRV];
        for (int q = 0; q < NRV; q++) xv[q] = _mm512_load_si512(xb + q * xb_stride + n_pairs * PANEL);
        for (int r = 0; r < GEMM_MR; r++) {
            __m512bh wb = (__m512bh)_mm512_set1_epi32((int)wr[r][n_in - 1]);
            for (int q = 0; q < NRV; q++) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], wb, (__m512bh)xv[q]);
        }
    }
    store_tile_avx512(acc, NRV, mr, nc, bias, y, ys);
}

#define BGEMM_TILE_FN(NRV)                                                                                        \
    TARGET_BF16 static void bgemm_tile_##NRV(const uint16_t *w, ptrdiff_t n_in, ptrdiff_t mr, const uint32_t *xb, \
                                             ptrdiff_t xb_stride, ptrdiff_t nc, const float *bias, float *y,       \
                                             ptrdiff_t ys) {                                                       \
        bgemm_tile(w, n_in, mr, xb, xb_stride, nc, bias, y, ys, NRV);                                              \
    }
BGEMM_TILE_FN(1)
BGEMM_TILE_FN(2)

typedef struct {
    const uint32_t *xb;
    const uint16_t *w;
    const float *bias;
    float *y;
    ptrdiff_t n_in, ys;
} bgemm_args;

static void bgemm_step(const gemm_step *s, void *ctx) {
    const bgemm_args *a = ctx;
    ptrdiff_t panel_stride = pairs_of(a->n_in) * PANEL;
    const uint16_t *w = a->w + s->o * a->n_in;
    const uint32_t *xbp = a->xb + s->p * panel_stride;
    const float *bo = a->bias ? a->bias + s->o : NULL;
    float *yt = a->y + s->n0 * a->ys + s->o;
    if (s->nrv == 2) bgemm_tile_2(w, a->n_in, s->mr, xbp, panel_stride, s->nc, bo, yt, a->ys);
    else bgemm_tile_1(w, a->n_in, s->mr, xbp, panel_stride, s->nc, bo, yt, a->ys);
}
#endif /* FG_BF16_INTRINSICS */

#ifdef FG_X86

/* The float32 tile on widened rows (see the Design): PF = 2 prefetches the next 8 rows of the
 * 16-bit w (first panel group), PF = 4 those of the widened scratch (later groups, as gemm.c). */
#define W16_TILE_FN(NRV, PF)                                                                                     \
    __attribute__((target("avx512f"))) static void w16_tile_##NRV##_##PF(                                        \
        const float *w, ptrdiff_t n_in, ptrdiff_t mr, const float *xp, ptrdiff_t xp_stride, ptrdiff_t nc,          \
        const float *bias, float *y, ptrdiff_t ys, const char *pf) {                                             \
        gemm_tile_avx512(w, n_in, mr, xp, xp_stride, nc, bias, y, ys, pf, n_in * PF, PF, NRV);                   \
    }
W16_TILE_FN(1, 2)
W16_TILE_FN(2, 2)
W16_TILE_FN(1, 4)
W16_TILE_FN(2, 4)

typedef struct {
    const float *xp, *bias;
    const void *w;
    float *y, *wide;
    ptrdiff_t n_in, ys, o_begin;
    int fmt;
} w16_args;

/* The first panel group widens each tile's rows into wide[o - o_begin] just before using them
 * and prefetches the next rows of the 16-bit w; later groups reuse the widened rows. */
static void gemm_w16_step(const gemm_step *s, void *ctx) {
    const w16_args *a = ctx;
    ptrdiff_t n_in = a->n_in, panel_stride = n_in * PANEL;
    const float *xpp = a->xp + s->p * panel_stride, *bo = a->bias ? a->bias + s->o : NULL;
    float *wt = a->wide + (s->o - a->o_begin) * n_in, *yt = a->y + s->n0 * a->ys + s->o;
    if (s->p == 0) {
        fg_dequantize_rows(a->w, NULL, a->fmt, n_in, s->o, s->o + s->mr, wt, FG_AVX512);
        const char *pf = pf_at((const char *)a->w, (s->o + GEMM_MR) * n_in * 2);
        if (s->nrv == 2) w16_tile_2_2(wt, n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys, pf);
        else w16_tile_1_2(wt, n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys, pf);
    } else {
        const char *pf = pf_at((const char *)wt, GEMM_MR * n_in * 4);
        if (s->nrv == 2) w16_tile_2_4(wt, n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys, pf);
        else w16_tile_1_4(wt, n_in, s->mr, xpp, panel_stride, s->nc, bo, yt, a->ys, pf);
    }
}

#endif /* FG_X86 */

void fg_bf16_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                    ptrdiff_t p_end, ptrdiff_t n_pairs, void *xb__pjc) {
#ifdef FG_BF16_INTRINSICS
    for (ptrdiff_t p = p_begin; p < p_end; p++)
        bgemm_pack_panel(x__ni, x_stride, n_rows, n_in, p, n_pairs, (uint32_t *)xb__pjc + p * n_pairs * PANEL);
#else
    (void)x__ni, (void)x_stride, (void)n_rows, (void)n_in, (void)p_begin, (void)p_end, (void)n_pairs, (void)xb__pjc;
#endif
}

void fg_bgemm_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                     ptrdiff_t p_end, void *xb__pjc) {
    fg_bf16_pack_x(x__ni, x_stride, n_rows, n_in, p_begin, p_end, pairs_of(n_in), xb__pjc);
}

void fg_bgemm(const void *xb__pjc, ptrdiff_t n_rows, ptrdiff_t n_in, const uint16_t *w__oi, const float *b__o,
              float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end) {
#ifdef FG_BF16_INTRINSICS
    bgemm_args a = {.xb = xb__pjc, .w = w__oi, .bias = b__o, .y = y__no, .n_in = n_in, .ys = y_stride};
    gemm_walk(n_rows, o_begin, o_end, bgemm_step, &a);
#else
    (void)xb__pjc, (void)n_rows, (void)n_in, (void)w__oi, (void)b__o, (void)y__no, (void)y_stride, (void)o_begin,
        (void)o_end;
#endif
}

void fg_gemm_w16_f32(const float *xp__pic, ptrdiff_t n_rows, ptrdiff_t n_in, const uint16_t *w__oi, int fmt,
                     const float *b__o, float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end,
                     float *wide__oi, int level) {
    if (o_end <= o_begin || n_rows <= 0) return;
#ifdef FG_X86
    if (level >= FG_AVX512) {
        w16_args a = {.xp = xp__pic, .bias = b__o, .w = w__oi, .y = y__no, .wide = wide__oi, .n_in = n_in,
                      .ys = y_stride, .o_begin = o_begin, .fmt = fmt};
        gemm_walk(n_rows, o_begin, o_end, gemm_w16_step, &a);
        return;
    }
#endif
    fg_dequantize_rows(w__oi, NULL, fmt, n_in, o_begin, o_end, wide__oi, level);
    fg_gemm_f32(xp__pic, n_rows, n_in, wide__oi, b__o ? b__o + o_begin : NULL, y__no + o_begin, y_stride, 0,
                o_end - o_begin, level);
}
