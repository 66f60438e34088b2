/* The prefill product for float16 weights and up to ~128 rows of x (see the numbers):
 *     y[n, o] = b[o] + sum_i f32(w[o, i]) * x[n, i]   for n < n_rows, o in [o_begin, o_end),
 * w IEEE-half bits [out, in] read in place (never widened into memory), x and y float32.
 * fastgpt/quant.py's linear_ref is the spec, up to summation order.
 *
 * Dimension legend: n rows of x and y (tokens), i (k) input width, o output rows of w,
 * q a row of x within a block, r a row of w within a block, j a chunk of 16 inputs.
 *
 * Design. A dot-product register block: per 16 inputs, MR = 4 rows of w are loaded and widened
 * by vcvtph2ps, NR = 6 rows of x loaded, and 4 x 6 = 24 FMAs go into 24 zmm accumulators, each
 * a 16-lane partial sum of one y[n, o]; at the end a transpose-and-add tree (simd_dot.c's)
 * reduces them, two rows of x (8 outputs) per tree. 10 loads per 24 FMAs keeps it FMA-bound,
 * where the broadcast-w GEMM tile of hgemm.c does ~9 loads per 8 FMAs with one 16-row panel
 * and first widens w into scratch. Measured on Zen 5 (GFLOP/s, one core, 2304 x 768 weights
 * from DRAM; the float32 GEMM fg_gemm_f32 / hgemm.c's fg_gemm_w16_f32 / this): N = 9: 118 / 109
 * / 221, N = 16: 209 / 191 / 232, N = 24: 200 / 163 / 235 (two cores: 179 / 196 / 342, 332 /
 * 354 / 427, 371 / 318 / 444). From N = 32, on one matrix at a time, the float32 GEMM's long
 * register tile wins (~265 / ~220-240 / ~240): this block's k loop is only I / 16 steps, and its
 * set-up, reduction and stores are paid per 24 outputs; the block tops out at ~245 in cache,
 * the GEMM at ~275. Through a whole model's 48 matrices in turn, this block still matches the
 * float32 GEMM up to ~128 rows and beats the widening GEMM (kernels/_quant.pyx, HDOT_MAX_ROWS).
 * - x is copied per block of rows into xp[j][q][16] (a stack slice of HD_KC inputs): the 6 rows
 *   read side by side at strides of 3 or 12 KB (I = 768, 3072) collide in L1 (same offsets mod
 *   4 KB): an L1 micro-benchmark of the block ran at 184 GFLOP/s with rows 4 KB apart and 274
 *   with rows 4 KB + 256 B apart; read in place, the block held ~215 hot. The copy is one load
 *   and store per 16 inputs, repeated once per chunk of w (below): ~1/B of the FMAs.
 * - Loop order: chunks of B rows of w (~384 KB of w, at most 128 rows; stay in L2), then groups
 *   of up to 6 rows of x (rows split evenly: 9 = 5 + 4, 16 = 5 + 5 + 6), then slices of
 *   HD_KC = 1024 inputs, then blocks of 4 rows of w. Each x slice stays in L1 while the chunk's
 *   rows of w pass over it from L2; w comes from DRAM once, in the chunk's first group.
 * - Prefetch: each k-step also prefetches (into L1 and L2: T0 measured ~5-15% faster cold than
 *   T1 at N = 9) the next line of the next chunk of w, 2 / groups lines per step, so that the
 *   whole chunk's passes cover the next chunk evenly (prefetching one block of 4 rows ahead
 *   during the first group only ran at ~170 GFLOP/s cold vs ~215 hot, N = 16).
 * - n_in > HD_KC: the 24 accumulators of each block of w are parked in a stack array between
 *   slices (B <= 64 then); each lane's FMA chain simply continues.
 * Shapes (MR x NR) in that micro-benchmark, non-colliding rows: 4 x 6 274, 4 x 5 / 5 x 4 / 5 x 5
 * 271-274, 6 x 4 264, 8 x 3 222 (8 widenings per 24 FMAs), 3 x 8 186, 2 x 12 149 (12 loads of
 * x per step); on the real product (rows in place) 4 x 6 was best for N = 9-12 and on par from
 * N = 16. 4 x 6 also splits small N well (N = 9 is 5 + 4 rows: 20 and 16 accumulators).
 *
 * Summation order: y[n, o] = (lane sums, each an FMA chain over i = l, l + 16, ... in order),
 * then per 128-bit lane (l0 + l2) + (l1 + l3), then (L0 + L1) + (L2 + L3), then + b[o] (no
 * add when b is NULL). It depends only on n_in: not on the band, the chunk, the block of rows or
 * n_rows, so any thread split of o gives the same bits. Masked-off inputs add 0 * 0.
 *
 * Non-goals: no threads (the caller splits [o_begin, o_end) into bands), no allocation (~48 KB
 * of stack), no fast-math, no bfloat16 or int8 (hgemm.c, qgemm.c), no large N (use the GEMMs).
 * The AVX-512 path needs F/BW/VL + F16C (level FG_AVX512 of fg_quant_level); below it the
 * portable fg_qlinear_rows_ref keeps the function correct (in its own summation order).
 */
#include <stddef.h>
#include <stdint.h>

#include "fastgpt_kernels.h"
#include "reduce_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define HD_MR 4                     /* rows of w per block (the reduction is written for 4) */
#define HD_NR 6                     /* rows of x per block, at most */
#define HD_KC 1024                  /* inputs per packed slice of x: 6 x 4 KB */
#define HD_CHUNK_BYTES (384 * 1024) /* of w per chunk... */
#define HD_BMAX 128                 /* ...but at most this many rows */
#define HD_BMAX_K 64                /* rows per chunk when n_in > HD_KC (parked accumulators) */
#define HD_PF_HINT _MM_HINT_T0

#ifdef FG_X86
#define TARGET_HD __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))

/* One block: MR rows of w (rows past mr re-read row mr - 1 and are not stored) against NR rows of
 * x packed in xp[j][q][16] (j: chunk of 16 inputs of [k0, k0 + nk), zero past n_in), inputs
 * [k0, k0 + nk) of n_in. The accumulators start from zero (first slice) or from acc_io, and end
 * in y (last slice: reduced, plus bias) or back in acc_io. Every k-step also prefetches PFN lines of the
 * rows the caller uses next (cursor *pfc, up to pf_end). */
TARGET_HD __attribute__((always_inline)) static inline void
hd_block(const uint16_t *w, ptrdiff_t n_in, ptrdiff_t mr, ptrdiff_t k0, ptrdiff_t nk, const float *xp, __m512 *acc_io,
         int first_, int last_, const float *bias, float *y, ptrdiff_t ys, uintptr_t *pfc, uintptr_t pf_end,
         const int MR, const int NR, const int PFN, const int SPLIT, const int TAIL) {
    const int first = SPLIT ? first_ : 1, last = SPLIT ? last_ : 1;
    const uint16_t *wr[HD_MR];
    __m512 acc[HD_MR][HD_NR];
    for (int r = 0; r < MR; r++) wr[r] = w + (r < mr ? r : mr - 1) * n_in + k0;
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR; q++) acc[r][q] = first ? _mm512_setzero_ps() : acc_io[r * NR + q];
    uintptr_t pf = *pfc;
    const ptrdiff_t nk16 = TAIL ? nk & ~(ptrdiff_t)15 : nk;
    for (ptrdiff_t k = 0; k < nk16; k += 16, xp += NR * 16) {
        for (int j = 0; j < PFN; j++)
            if (pf < pf_end) {
                _mm_prefetch((const char *)pf, HD_PF_HINT);
                pf += 64;
            }
        __m512 wv[HD_MR];
        for (int r = 0; r < MR; r++) wv[r] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wr[r] + k)));
        for (int q = 0; q < NR; q++) {
            __m512 xv = _mm512_load_ps(xp + q * 16);
            for (int r = 0; r < MR; r++) acc[r][q] = _mm512_fmadd_ps(wv[r], xv, acc[r][q]);
        }
    }
    if (TAIL && nk16 < nk) { /* the last n_in % 16 inputs: masked w, zero-padded x */
        __mmask16 m = (__mmask16)((1u << (nk - nk16)) - 1u);
        __m512 wv[HD_MR];
        for (int r = 0; r < MR; r++) wv[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, wr[r] + nk16));
        for (int q = 0; q < NR; q++) {
            __m512 xv = _mm512_load_ps(xp + q * 16);
            for (int r = 0; r < MR; r++) acc[r][q] = _mm512_fmadd_ps(wv[r], xv, acc[r][q]);
        }
    }
    *pfc = pf;
    if (!last) {
        for (int r = 0; r < MR; r++)
            for (int q = 0; q < NR; q++) acc_io[r * NR + q] = acc[r][q];
        return;
    }
    /* pairs of x rows: [q: rows r of w | q + 1: rows r of w], the bias added to both halves */
    __mmask8 keep = (__mmask8)((1u << mr) - 1u);
    __m128 b4 = bias ? _mm_maskz_loadu_ps(keep, bias) : _mm_setzero_ps();
    __m256 b = _mm256_insertf128_ps(_mm256_castps128_ps256(b4), b4, 1);
    for (int q = 0; q < NR; q += 2) {
        __m512 a[8];
        for (int r = 0; r < 4; r++) {
            a[r] = acc[r][q];
            a[4 + r] = q + 1 < NR ? acc[r][q + 1] : _mm512_setzero_ps();
        }
        __m256 v = reduce8_avx512(a);
        if (bias) v = _mm256_add_ps(v, b);
        _mm_mask_storeu_ps(y + q * ys, keep, _mm256_castps256_ps128(v));
        if (q + 1 < NR) _mm_mask_storeu_ps(y + (q + 1) * ys, keep, _mm256_extractf128_ps(v, 1));
    }
}

typedef void (*hd_fn)(const uint16_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, __m512 *, int, int,
                      const float *, float *, ptrdiff_t, uintptr_t *, uintptr_t);

/* One instance per (rows of x, prefetch lines per step, k split, tail), so that each keeps its
 * 24 accumulators in registers and carries no dead branches. */
#define HD_FN(NR, PF, SPLIT, TAIL)                                                                               \
    TARGET_HD static void hd_block_##NR##_##PF##_##SPLIT##_##TAIL(                                               \
        const uint16_t *w, ptrdiff_t n_in, ptrdiff_t mr, ptrdiff_t k0, ptrdiff_t nk, const float *xp,           \
        __m512 *acc_io, int first, int last, const float *bias, float *y, ptrdiff_t ys, uintptr_t *pfc,          \
        uintptr_t pf_end) {                                                                                      \
        hd_block(w, n_in, mr, k0, nk, xp, acc_io, first, last, bias, y, ys, pfc, pf_end, HD_MR, NR, PF, SPLIT,  \
                 TAIL);                                                                                          \
    }
#define HD_FNS2(NR, S, T) HD_FN(NR, 1, S, T) HD_FN(NR, 2, S, T) HD_FN(NR, 4, S, T)
#define HD_FNS(NR) HD_FNS2(NR, 0, 0) HD_FNS2(NR, 0, 1) HD_FNS2(NR, 1, 0) HD_FNS2(NR, 1, 1)
HD_FNS(1) HD_FNS(2) HD_FNS(3) HD_FNS(4) HD_FNS(5) HD_FNS(6)
#define HD_ROW(P, S, T)                                                                                             \
    {NULL,                      hd_block_1_##P##_##S##_##T, hd_block_2_##P##_##S##_##T, hd_block_3_##P##_##S##_##T, \
     hd_block_4_##P##_##S##_##T, hd_block_5_##P##_##S##_##T, hd_block_6_##P##_##S##_##T}
#define HD_ROWS(S, T) {HD_ROW(1, S, T), HD_ROW(2, S, T), HD_ROW(4, S, T)}
/* [k split][tail][prefetch lines per step][rows of x] */
static const hd_fn HD_BLOCKS[2][2][3][HD_NR + 1] = {{HD_ROWS(0, 0), HD_ROWS(0, 1)}, {HD_ROWS(1, 0), HD_ROWS(1, 1)}};

/* x rows [0, nr) (rows xs apart), inputs [k0, k0 + nk), into xp[j][q][16], zero past the row */
TARGET_HD static void hd_pack_x(const float *x, ptrdiff_t xs, ptrdiff_t nr, ptrdiff_t k0, ptrdiff_t nk, float *xp) {
    for (ptrdiff_t j = 0; j * 16 < nk; j++) {
        ptrdiff_t left = nk - j * 16;
        __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        for (ptrdiff_t q = 0; q < nr; q++)
            _mm512_store_ps(xp + (j * nr + q) * 16, _mm512_maskz_loadu_ps(m, x + q * xs + k0 + j * 16));
    }
}

TARGET_HD static void hdot_avx512(const uint16_t *w, const float *bias, const float *x, ptrdiff_t xs, float *y,
                                  ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    _Alignas(64) float xp[HD_NR * HD_KC];
    _Alignas(64) __m512 accs[HD_BMAX_K * HD_NR];
    const ptrdiff_t n_groups = (n_rows + HD_NR - 1) / HD_NR;
    /* chunk of rows of w: about HD_CHUNK_BYTES, at most HD_BMAX_K rows when k is split */
    ptrdiff_t B = HD_CHUNK_BYTES / (n_in * 2) / HD_MR * HD_MR;
    if (B > HD_BMAX) B = HD_BMAX;
    if (n_in > HD_KC && B > HD_BMAX_K) B = HD_BMAX_K;
    if (B < HD_MR) B = HD_MR;
    /* lines to prefetch per k-step so that one chunk's passes cover the next chunk */
    ptrdiff_t need = (HD_MR + 2 * n_groups - 1) / (2 * n_groups);
    int pfi = need <= 1 ? 0 : need <= 2 ? 1 : 2;
    for (ptrdiff_t oc = o_begin; oc < o_end; oc += B) {
        ptrdiff_t oc_end = o_end - oc < B ? o_end : oc + B;
        uintptr_t pfc = (uintptr_t)(w + oc_end * n_in);
        uintptr_t pf_end = pfc + (uintptr_t)((oc_end - oc) * n_in * 2);
        ptrdiff_t n0 = 0;
        for (ptrdiff_t g = 0; g < n_groups; g++) {
            ptrdiff_t n1 = (g + 1) * n_rows / n_groups, nr = n1 - n0; /* rows split evenly over the groups */
            hd_fn blk = HD_BLOCKS[n_in > HD_KC][n_in % 16 != 0][pfi][nr];
            for (ptrdiff_t k0 = 0; k0 < n_in; k0 += HD_KC) {
                ptrdiff_t nk = n_in - k0 < HD_KC ? n_in - k0 : HD_KC;
                hd_pack_x(x + n0 * xs, xs, nr, k0, nk, xp);
                for (ptrdiff_t o = oc; o < oc_end; o += HD_MR) {
                    ptrdiff_t mr = oc_end - o < HD_MR ? oc_end - o : HD_MR;
                    blk(w + o * n_in, n_in, mr, k0, nk, xp, accs + (o - oc) * HD_NR, k0 == 0, k0 + nk == n_in,
                        bias ? bias + o : NULL, y + n0 * ys + o, ys, &pfc, pf_end);
                }
            }
            n0 = n1;
        }
    }
}
#endif

void fg_hdot_f16(const uint16_t *w__oi, const float *b__o, const float *x__ni, ptrdiff_t x_stride, float *y__no,
                 ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, int level) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_X86
    if (level >= FG_AVX512) {
        hdot_avx512(w__oi, b__o, x__ni, x_stride, y__no, y_stride, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    (void)level; /* callers use the GEMMs there; this keeps the function correct anywhere */
    fg_qlinear_rows_ref(w__oi, NULL, FG_Q_F16, b__o, x__ni, x_stride, y__no, y_stride, n_rows, n_in, o_begin, o_end);
}
