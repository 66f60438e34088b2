/* Skinny products: y = x @ w.T + b for a few rows of x (a decode step of a batch of 1 to 64
 * requests, a short prompt, a speculative check), w float32, float16 or bfloat16 [out, in] read in
 * place and widened to float32 in registers. fastgpt/quant.py's linear_ref is the spec for 16-bit
 * w, _numpy_ops.linear for float32, up to summation order. bfloat16 w on a CPU with AVX512_BF16
 * is not widened: its blocks (SK_BF16_DOT) round x to bfloat16 once per call and multiply pairs
 * with vdpbf16ps, 32 inputs per instruction (spec: quant.linear_ref_bf16_activations). Without AMX
 * (which takes bfloat16 first, csrc/amx.c) that halved the arithmetic of many rows: on an AMD
 * EPYC (Zen 4), 2 threads, GPT-2 124M decode steps of 8 / 16 / 32 rows took 10-11 / 18-19 / 33-35
 * ms against 14-18 / 26-27 / 50-51 widened, one row 10.5-12.5 against 16-18 (interleaved, noisy).
 *
 * Dimension legend: n rows of x and y (tokens), i (k) input width, o output rows of w, q a row of x
 * within a block, r a row of w within a block, j a chunk of 16 inputs.
 *
 * The contract this file exists for: every y[n, o] is summed in one order that depends only on
 * n_in, never on n_rows, on the other rows of the call, on the band [o_begin, o_end) or on the
 * thread that computes it, so row n of a product of any number of rows is bitwise the product of
 * row n alone: a request decoded inside a batch gets exactly the tokens it gets alone. The order:
 * 16 lane sums, each one FMA chain over i = l, l + 16, l + 32, ... ascending (the last n_in % 16
 * inputs masked: lanes past n_in add 0 * 0), then per 128-bit lane (l0 + l2) + (l1 + l3), then
 * (L0 + L1) + (L2 + L3) (reduce8_avx512), then + b[o] (no add without a bias). The dot blocks
 * keep the same order over pairs: lane l's chain takes the pair (2l, 2l + 1) of every 32 inputs
 * in turn (the last n_in % 32 masked), one vdpbf16ps each.
 *
 * Design. A dot-product register block: per 16 inputs, MR = 4 rows of w are loaded (and widened),
 * up to NR = 6 rows of x loaded, and MR x NR FMAs go into as many zmm accumulators, each a 16-lane
 * partial sum of one y[n, o]; a transpose-and-add tree reduces them, two rows of x per tree. 10
 * loads per 24 FMAs keep the block FMA-bound (peak ~2 FMAs per cycle), where a matvec that reads
 * one row of w at a time against up to 8 rows of x does ~1 load per FMA and, past 8 rows, reads w
 * again per chunk of 8.
 * - x is copied per block of rows and slice of SK_KC inputs into xp[j][q][16] on the stack: rows of
 *   x 3 or 12 KB apart (I = 768, 3072) collide in L1 (same offsets mod 4 KB); an L1 micro-benchmark
 *   ran at 184 GFLOP/s with rows 4 KB apart and 274 with rows packed (in csrc/hdot.c, which this file
 *   generalises). The copy is one load and store per 16 inputs, once per call (block-major order)
 *   or once per chunk of w (the stack order below).
 * - More than 6 rows (several groups of up to 6 rows of x, split evenly: 9 = 5 + 4, 16 = 5 + 5 + 6):
 *   the rows of x are packed once per call, whole, into a per-thread buffer, and each block of 4
 *   rows of w meets every group before the next block (block-major): w streams from DRAM at an
 *   even pace and is re-read from L1/L2 by the other groups, x from L2. Each k-step also
 *   prefetches (T2, the farthest hint) one line of the block after next, so that DRAM is read
 *   while the FMAs run instead of in bursts. The order it replaced (chunks of 384 KB of w, then
 *   groups, then blocks, prefetching the next chunk in T0) read w in bursts: in a float32 fused
 *   decode step of 16 rows (GPT-2 124M, 2 threads) it took 44.5 ms against ~34 for this order
 *   (medians, interleaved); one line per k-step beat two (36.9-39.8 ms), T2 beat T0 and T1, and
 *   two blocks ahead beat one (34.7 vs 36.9), with no gain from three or from chunks of 8-32 rows.
 *   What did not pay (one thread, C harness calling fg_linear_rows_f32; FMA peak ~230 GFLOP/s per
 *   core, this block ~175 in L1, ~130-140 with w in L2 and x re-read from L2, ~60-90 from DRAM at
 *   16 rows): slices of 128-256 inputs with the accumulators parked between them, so that x and w
 *   both stay in L1 (74-92 against 104 GFLOP/s in L2: the parking costs more than the misses);
 *   an 8 x 3 block (8 rows of w, x held in registers, half the x traffic per FMA): +2-9% with w in
 *   L2 at I = 768, -4-12% at I = 3072 (8 rows of 12 KB spill L1), no change from DRAM at 16 rows;
 *   prefetching 4 or 8 blocks ahead, or two lines per k-step, or a range of two blocks: within
 *   noise or slower.
 * - Up to 6 rows (batch-1 decode, one group): w is read once, in chunks of ~SK_CHUNK_BYTES (at
 *   most SK_BMAX rows), then slices of SK_KC inputs packed on the stack, then blocks, and the
 *   hardware prefetcher alone does it best: with a software prefetch, a batch-1 fused decode step
 *   took 23.0 ms against 21.0 for the one-stream matvec before issue 16; without it 19.1. The same
 *   order serves more rows when the packed buffer cannot be allocated.
 * - n_in > SK_KC in the stack order: the accumulators of each block of w are parked in a stack
 *   array between slices (chunks of at most SK_BMAX_K rows then); each lane's FMA chain simply
 *   continues. The block-major order packs all of n_in and needs no slices.
 *
 * Non-goals: no threads (callers split [o_begin, o_end) into bands), no allocation per call (~48 KB
 * of stack, and the per-thread packed x, grown to the largest call and freed when the thread
 * exits), no fast-math, no int8 (csrc/quant.c, csrc/amx.c). The AVX-512 path needs F/BW/VL + F16C
 * (fg_quant_level() >= FG_AVX512 for 16-bit w; AVX512F alone for float32, which loads no 16-bit
 * data); below it the AVX2 loop (float32 here, 16-bit in csrc/quant.c) and the scalar *_ref keep the
 * product correct, each in a summation order of its own that depends on n_in alone as well.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fastgpt_kernels.h"
#include "half.h"
#include "reduce_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define SK_MR 4                     /* rows of w per block (the reduction is written for 4) */
#define SK_NR 6                     /* rows of x per block, at most */
#define SK_KC 1024                  /* inputs per packed slice of x: 6 x 4 KB */
#define SK_CHUNK_BYTES (384 * 1024) /* of w per chunk... */
#define SK_BMAX 128                 /* ...but at most this many rows */
#define SK_BMAX_K 64                /* rows per chunk when n_in > SK_KC (parked accumulators) */
#define SK_MAX_GROUPS 32            /* groups of rows of x in the block-major order, at most */

static ptrdiff_t esize_of(int fmt) { return fmt == FG_W_F32 ? 4 : 2; }

/* The block's kind for bfloat16 w on AVX512_BF16 (not a weight format: w is FG_Q_BF16): w's pairs
 * meet x rounded to bfloat16 pairs in vdpbf16ps, 32 inputs per instruction (two FMAs' worth). */
#define SK_BF16_DOT 4

#ifdef FG_X86
/* The AVX-512 block also uses BW/VL (masked 16-bit loads, 128-bit masked stores): every AVX-512 CPU
 * but the Xeon Phi has them; there float32 takes the AVX2 loop. */
static int has_bw_vl(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

#define TARGET_SK __attribute__((target("avx512f,avx512bw,avx512vl,f16c")))

/* 16 weights of a row from element k, widened to float32 (m: the lanes to load, the rest 0). */
TARGET_SK __attribute__((always_inline)) static inline __m512 sk_load(const char *w, ptrdiff_t k, __mmask16 m,
                                                                       const int FMT, const int MASKED) {
    if (FMT == FG_W_F32)
        return MASKED ? _mm512_maskz_loadu_ps(m, (const float *)w + k) : _mm512_loadu_ps((const float *)w + k);
    const uint16_t *p = (const uint16_t *)w + k;
    __m256i h = MASKED ? _mm256_maskz_loadu_epi16(m, p) : _mm256_loadu_si256((const __m256i *)p);
    if (FMT == FG_Q_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bfloat16: exact */
}

/* acc += the dot of each 32-bit lane's bfloat16 pair of w with x's (vdpbf16ps). In assembly so that
 * the blocks need no "avx512bf16" target: only CPUs with it (sk_bf16_dot) ever run it. */
#define DPBF16(acc, w, x) __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x))
/* the same on an array's element, through a copy: an asm operand on the element itself keeps the
 * whole array of accumulators on the stack (GCC no longer splits it into registers) */
#define DPBF16_AT(acc_el, w, x)     \
    do {                            \
        __m512 acc_ = (acc_el);     \
        DPBF16(acc_, w, x);         \
        (acc_el) = acc_;            \
    } while (0)

/* One block: MR rows of w (rows past mr re-read row mr - 1 and are not stored) against NR rows of x
 * packed in xp[j][q][16] (j: chunk of 16 inputs of [k0, k0 + nk), zero past n_in). The
 * accumulators start from zero (first slice) or from acc_io, and end in y (last slice: reduced,
 * plus bias) or back in acc_io. Every k-step also prefetches pfn lines of the rows the caller uses
 * next (cursor *pfc, up to pf_end). */
TARGET_SK __attribute__((always_inline)) static inline void
sk_block(const char *w, ptrdiff_t n_in, ptrdiff_t mr, ptrdiff_t k0, ptrdiff_t nk, const float *xp, __m512 *acc_io,
         int first_, int last_, const float *bias, float *y, ptrdiff_t ys, uintptr_t *pfc, uintptr_t pf_end, int pfn,
         const int FMT, const int NR, const int SPLIT, const int TAIL) {
    const int first = SPLIT ? first_ : 1, last = SPLIT ? last_ : 1;
    const ptrdiff_t es = FMT == FG_W_F32 ? 4 : 2, step = FMT == SK_BF16_DOT ? 32 : 16;
    const char *wr[SK_MR];
    __m512 acc[SK_MR][SK_NR];
    for (int r = 0; r < SK_MR; r++) wr[r] = w + ((r < mr ? r : mr - 1) * n_in + k0) * es;
    for (int r = 0; r < SK_MR; r++)
        for (int q = 0; q < NR; q++) acc[r][q] = first ? _mm512_setzero_ps() : acc_io[r * NR + q];
    uintptr_t pf = *pfc;
    const ptrdiff_t nk16 = TAIL ? nk / step * step : nk; /* whole steps (16 inputs, or 32 for the dot) */
    if (FMT == SK_BF16_DOT) {
        for (ptrdiff_t k = 0; k < nk16; k += 32, xp += NR * 16) {
            for (int j = 0; j < pfn && pf < pf_end; j++, pf += 64) _mm_prefetch((const char *)pf, _MM_HINT_T2);
            __m512i wv[SK_MR];
            for (int r = 0; r < SK_MR; r++) wv[r] = _mm512_loadu_si512(wr[r] + 2 * k);
            for (int q = 0; q < NR; q++) {
                __m512 xv = _mm512_load_ps(xp + q * 16);
                for (int r = 0; r < SK_MR; r++) DPBF16_AT(acc[r][q], wv[r], xv);
            }
        }
        if (TAIL && nk16 < nk) { /* the last n_in % 32 inputs: masked w, zero-padded x */
            __mmask32 m = (__mmask32)((1ull << (nk - nk16)) - 1u);
            __m512i wv[SK_MR];
            for (int r = 0; r < SK_MR; r++) wv[r] = _mm512_maskz_loadu_epi16(m, wr[r] + 2 * nk16);
            for (int q = 0; q < NR; q++) {
                __m512 xv = _mm512_load_ps(xp + q * 16);
                for (int r = 0; r < SK_MR; r++) DPBF16_AT(acc[r][q], wv[r], xv);
            }
        }
    } else {
        for (ptrdiff_t k = 0; k < nk16; k += 16, xp += NR * 16) {
            for (int j = 0; j < pfn && pf < pf_end; j++, pf += 64) _mm_prefetch((const char *)pf, _MM_HINT_T2);
            __m512 wv[SK_MR];
            for (int r = 0; r < SK_MR; r++) wv[r] = sk_load(wr[r], k, 0, FMT, 0);
            for (int q = 0; q < NR; q++) {
                __m512 xv = _mm512_load_ps(xp + q * 16);
                for (int r = 0; r < SK_MR; r++) acc[r][q] = _mm512_fmadd_ps(wv[r], xv, acc[r][q]);
            }
        }
        if (TAIL && nk16 < nk) { /* the last n_in % 16 inputs: masked w, zero-padded x */
            __mmask16 m = (__mmask16)((1u << (nk - nk16)) - 1u);
            __m512 wv[SK_MR];
            for (int r = 0; r < SK_MR; r++) wv[r] = sk_load(wr[r], nk16, m, FMT, 1);
            for (int q = 0; q < NR; q++) {
                __m512 xv = _mm512_load_ps(xp + q * 16);
                for (int r = 0; r < SK_MR; r++) acc[r][q] = _mm512_fmadd_ps(wv[r], xv, acc[r][q]);
            }
        }
    }
    *pfc = pf;
    if (!last) {
        for (int r = 0; r < SK_MR; r++)
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

typedef void (*sk_fn)(const char *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *, __m512 *, int, int,
                      const float *, float *, ptrdiff_t, uintptr_t *, uintptr_t, int);

/* One instance per (format, rows of x, k split, tail), so that each keeps its accumulators in
 * registers and carries no dead branches. */
#define SK_FN(FMT, NR, SPLIT, TAIL)                                                                              \
    TARGET_SK static void sk_block_##FMT##_##NR##_##SPLIT##_##TAIL(                                              \
        const char *w, ptrdiff_t n_in, ptrdiff_t mr, ptrdiff_t k0, ptrdiff_t nk, const float *xp,               \
        __m512 *acc_io, int first, int last, const float *bias, float *y, ptrdiff_t ys, uintptr_t *pfc,          \
        uintptr_t pf_end, int pfn) {                                                                             \
        sk_block(w, n_in, mr, k0, nk, xp, acc_io, first, last, bias, y, ys, pfc, pf_end, pfn, FMT, NR, SPLIT,   \
                 TAIL);                                                                                          \
    }
#define SK_FNS2(FMT, NR) SK_FN(FMT, NR, 0, 0) SK_FN(FMT, NR, 0, 1) SK_FN(FMT, NR, 1, 0) SK_FN(FMT, NR, 1, 1)
#define SK_FNS(FMT) SK_FNS2(FMT, 1) SK_FNS2(FMT, 2) SK_FNS2(FMT, 3) SK_FNS2(FMT, 4) SK_FNS2(FMT, 5) SK_FNS2(FMT, 6)
/* FG_Q_BF16 = 0, FG_Q_F16 = 1, FG_W_F32 = 3, SK_BF16_DOT = 4: literal so that the names paste */
SK_FNS(0)
SK_FNS(1)
SK_FNS(3)
SK_FNS(4)
#define SK_ROW(FMT, S, T)                                                                                      \
    {NULL,                         sk_block_##FMT##_1_##S##_##T, sk_block_##FMT##_2_##S##_##T,                  \
     sk_block_##FMT##_3_##S##_##T, sk_block_##FMT##_4_##S##_##T, sk_block_##FMT##_5_##S##_##T,                  \
     sk_block_##FMT##_6_##S##_##T}
#define SK_TABLE(FMT) {{SK_ROW(FMT, 0, 0), SK_ROW(FMT, 0, 1)}, {SK_ROW(FMT, 1, 0), SK_ROW(FMT, 1, 1)}}
/* [kind: bfloat16 widened, float16, float32, bfloat16 dot][k split][tail][rows of x] */
static const sk_fn SK_BLOCKS[4][2][2][SK_NR + 1] = {SK_TABLE(0), SK_TABLE(1), SK_TABLE(3), SK_TABLE(4)};

/* bfloat16 w on a CPU with AVX512_BF16 takes the dot blocks (x rounded to bfloat16, as
 * fg_bgemm above 64 rows and AMX do), at every row count, so that a row's bits never depend on
 * the others'. */
static int sk_bf16_dot(int fmt) {
    static int avail = -1; /* a benign race, as in fg_amx_available: every thread computes the same */
    if (avail < 0) avail = fg_bgemm_available();
    return fmt == FG_Q_BF16 && avail;
}
static int table_of(int fmt) { return sk_bf16_dot(fmt) ? 3 : fmt == FG_W_F32 ? 2 : fmt; }
/* inputs per k-step of fmt's blocks: the k-tail variant is needed when n_in is not a multiple */
static ptrdiff_t step_of(int fmt) { return sk_bf16_dot(fmt) ? 32 : 16; }

/* x rows [0, nr) (rows xs apart), inputs [k0, k0 + nk), into xp[j][q][16], zero past the row */
TARGET_SK static void sk_pack_x(const float *x, ptrdiff_t xs, ptrdiff_t nr, ptrdiff_t k0, ptrdiff_t nk, float *xp) {
    for (ptrdiff_t j = 0; j * 16 < nk; j++) {
        ptrdiff_t left = nk - j * 16;
        __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        for (ptrdiff_t q = 0; q < nr; q++)
            _mm512_store_ps(xp + (j * nr + q) * 16, _mm512_maskz_loadu_ps(m, x + q * xs + k0 + j * 16));
    }
}

/* As sk_pack_x for the dot blocks: per 32 inputs, x rounded to bfloat16 (to nearest even, as
 * quant.float32_to_bf16_bits) in 16 32-bit words of pairs (x[2k], x[2k + 1]), zero past the row. */
TARGET_SK static void sk_pack_x_bf16(const float *x, ptrdiff_t xs, ptrdiff_t nr, ptrdiff_t k0, ptrdiff_t nk, float *xp) {
    const __m512i even_words = _mm512_setr_epi32(0x00020000, 0x00060004, 0x000A0008, 0x000E000C, 0x00120010,
                                                 0x00160014, 0x001A0018, 0x001E001C, 0x00220020, 0x00260024,
                                                 0x002A0028, 0x002E002C, 0x00320030, 0x00360034, 0x003A0038,
                                                 0x003E003C);
    for (ptrdiff_t j = 0; j * 32 < nk; j++) {
        ptrdiff_t left = nk - j * 32;
        __mmask16 m0 = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
        __mmask16 m1 = (__mmask16)(left >= 32 ? 0xFFFFu : left > 16 ? (1u << (left - 16)) - 1u : 0u);
        for (ptrdiff_t q = 0; q < nr; q++) {
            const float *src = x + q * xs + k0 + j * 32;
            __m512i lo = bf16_bits_512(_mm512_maskz_loadu_ps(m0, src));
            __m512i hi = bf16_bits_512(_mm512_maskz_loadu_ps(m1, src + 16));
            _mm512_store_si512((__m512i *)(xp + (j * nr + q) * 16), _mm512_permutex2var_epi16(lo, even_words, hi));
        }
    }
}

static void pack_x_for(int fmt, const float *x, ptrdiff_t xs, ptrdiff_t nr, ptrdiff_t k0, ptrdiff_t nk, float *xp) {
    if (sk_bf16_dot(fmt))
        sk_pack_x_bf16(x, xs, nr, k0, nk, xp);
    else
        sk_pack_x(x, xs, nr, k0, nk, xp);
}

/* The calling thread's buffer of at least n floats (64-byte aligned), or NULL if it cannot have
 * one. Per thread, so concurrent calls never share it; a pthread key frees it when the thread
 * exits (OpenMP pools and Python threads come and go). */
static pthread_key_t xpack_key;
static pthread_once_t xpack_once = PTHREAD_ONCE_INIT;
static int xpack_key_ok;
static _Thread_local float *xpack;
static _Thread_local ptrdiff_t xpack_floats;

static void xpack_key_init(void) { xpack_key_ok = pthread_key_create(&xpack_key, free) == 0; }

static float *xpack_buffer(ptrdiff_t n) {
    if (n <= xpack_floats) return xpack;
    pthread_once(&xpack_once, xpack_key_init);
    if (!xpack_key_ok) return NULL;
    float *p = aligned_alloc(64, ((size_t)n * sizeof(float) + 63) / 64 * 64);
    if (p == NULL || pthread_setspecific(xpack_key, p) != 0) {
        free(p);
        return NULL;
    }
    free(xpack);
    xpack = p;
    xpack_floats = n;
    return p;
}

/* Block-major order for several groups of rows (see Design); 0 if there is no buffer for x. */
TARGET_SK static int skinny_block_major(const void *w, int fmt, const float *bias, const float *x, ptrdiff_t xs,
                                        float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin,
                                        ptrdiff_t o_end) {
    const ptrdiff_t es = esize_of(fmt), n_groups = (n_rows + SK_NR - 1) / SK_NR, n16 = (n_in + 15) / 16 * 16;
    const ptrdiff_t block_bytes = SK_MR * n_in * es;
    sk_fn blk[SK_NR + 1];
    ptrdiff_t g0[SK_MAX_GROUPS + 1];
    float *xp = n_groups <= SK_MAX_GROUPS ? xpack_buffer(n_rows * n16) : NULL;
    if (xp == NULL) return 0;
    for (int q = 1; q <= SK_NR; q++) blk[q] = SK_BLOCKS[table_of(fmt)][0][n_in % step_of(fmt) != 0][q];
    /* lines of the block after next per k-step: one; two for the dot blocks, whose k-steps read
     * twice the bytes of w (with one, 2-3 groups fetched a half to three quarters of the block:
     * bfloat16 steps of 8 rows took 10-11 ms with two, 11-12 with four, 17-20 with one) */
    const int pfn = sk_bf16_dot(fmt) ? 2 : 1;
    for (ptrdiff_t g = 0; g <= n_groups; g++) g0[g] = g * n_rows / n_groups;
    /* group g's rows [g0[g], g0[g + 1]) at xp + g0[g] * n16, as xp[j][q][16] over all of n_in */
    for (ptrdiff_t g = 0; g < n_groups; g++) pack_x_for(fmt, x + g0[g] * xs, xs, g0[g + 1] - g0[g], 0, n_in, xp + g0[g] * n16);
    for (ptrdiff_t o = o_begin; o < o_end; o += SK_MR) {
        const ptrdiff_t mr = o_end - o < SK_MR ? o_end - o : SK_MR;
        const char *wb = (const char *)w + o * n_in * es;
        uintptr_t pfc = (uintptr_t)(wb + 2 * block_bytes), pf_end = pfc + (uintptr_t)block_bytes;
        for (ptrdiff_t g = 0; g < n_groups; g++)
            blk[g0[g + 1] - g0[g]](wb, n_in, mr, 0, n_in, xp + g0[g] * n16, NULL, 1, 1, bias ? bias + o : NULL,
                                   y + g0[g] * ys + o, ys, &pfc, pf_end, pfn);
    }
    return 1;
}

TARGET_SK static void skinny_avx512(const void *w, int fmt, const float *bias, const float *x, ptrdiff_t xs, float *y,
                                    ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    /* the dot blocks take block-major order from 2 rows: its prefetch beat the hardware's alone
     * (bfloat16 steps of 2 / 4 / 6 rows: 9.8-10.5 / 12.5-14.4 / 13.8-13.9 ms against 11.3-11.7 /
     * 13.0-13.7 / 15.8-16.4) */
    if ((n_rows > SK_NR || (n_rows > 1 && sk_bf16_dot(fmt))) &&
        skinny_block_major(w, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end))
        return;
    _Alignas(64) float xp[SK_NR * SK_KC];
    _Alignas(64) __m512 accs[SK_BMAX_K * SK_NR];
    const ptrdiff_t es = esize_of(fmt), n_groups = (n_rows + SK_NR - 1) / SK_NR;
    const int table = table_of(fmt);
    /* chunk of rows of w: about SK_CHUNK_BYTES, at most SK_BMAX_K rows when k is split */
    ptrdiff_t B = SK_CHUNK_BYTES / (n_in * es) / SK_MR * SK_MR;
    if (B > SK_BMAX) B = SK_BMAX;
    if (n_in > SK_KC && B > SK_BMAX_K) B = SK_BMAX_K;
    if (B < SK_MR) B = SK_MR;
    /* lines to prefetch per k-step so that one chunk's passes cover the next chunk; none for a
     * single pass (see Design above) */
    const ptrdiff_t lines = SK_MR * step_of(fmt) * es / 64;
    const int pfn = n_groups > 1 ? (int)((lines + n_groups - 1) / n_groups) : 0;
    for (ptrdiff_t oc = o_begin; oc < o_end; oc += B) {
        ptrdiff_t oc_end = o_end - oc < B ? o_end : oc + B;
        uintptr_t pfc = (uintptr_t)w + (uintptr_t)(oc_end * n_in * es);
        uintptr_t pf_end = pfc + (uintptr_t)((oc_end - oc) * n_in * es);
        ptrdiff_t n0 = 0;
        for (ptrdiff_t g = 0; g < n_groups; g++) {
            ptrdiff_t n1 = (g + 1) * n_rows / n_groups, nr = n1 - n0; /* rows split evenly over the groups */
            sk_fn blk = SK_BLOCKS[table][n_in > SK_KC][n_in % step_of(fmt) != 0][nr];
            for (ptrdiff_t k0 = 0; k0 < n_in; k0 += SK_KC) {
                ptrdiff_t nk = n_in - k0 < SK_KC ? n_in - k0 : SK_KC;
                pack_x_for(fmt, x + n0 * xs, xs, nr, k0, nk, xp);
                for (ptrdiff_t o = oc; o < oc_end; o += SK_MR) {
                    ptrdiff_t mr = oc_end - o < SK_MR ? oc_end - o : SK_MR;
                    blk((const char *)w + o * n_in * es, n_in, mr, k0, nk, xp, accs + (o - oc) * SK_NR, k0 == 0,
                        k0 + nk == n_in, bias ? bias + o : NULL, y + n0 * ys + o, ys, &pfc, pf_end, pfn);
                }
            }
            n0 = n1;
        }
    }
}

/* ---- float32 on AVX2 + FMA: one row of w at a time against up to 4 rows of x (one 8-lane FMA chain
 * per row, then a horizontal sum and the scalar tail), so each row of w is read once per call ---- */
#define ROWS_AVX2 4

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void linear_rows_avx2(const float *w, const float *bias, const float *x,
                                                                  ptrdiff_t xs, float *y, ptrdiff_t ys,
                                                                  ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin,
                                                                  ptrdiff_t o_end) {
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        const float *wo = w + o * n_in;
        const float b = bias ? bias[o] : 0.f;
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += ROWS_AVX2) {
            const ptrdiff_t nr = n_rows - r0 < ROWS_AVX2 ? n_rows - r0 : ROWS_AVX2;
            const float *xr = x + r0 * xs;
            __m256 s[ROWS_AVX2];
            for (int r = 0; r < ROWS_AVX2; r++) s[r] = _mm256_setzero_ps();
            ptrdiff_t k = 0;
            for (; k + 8 <= n_in; k += 8) {
                __m256 wv = _mm256_loadu_ps(wo + k);
                for (int r = 0; r < nr; r++) s[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr + r * xs + k), s[r]);
            }
            for (int r = 0; r < nr; r++) {
                float t = hsum256(s[r]);
                for (ptrdiff_t j = k; j < n_in; j++) t += wo[j] * xr[r * xs + j];
                y[(r0 + r) * ys + o] = t + b;
            }
        }
    }
}
#endif /* FG_X86 */

void fg_skinny_w16(const uint16_t *w__oi, int fmt, const float *b__o, const float *x__ni, ptrdiff_t x_stride,
                   float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin,
                   ptrdiff_t o_end, int level) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_X86
    if (level >= FG_AVX512) {
        skinny_avx512(w__oi, fmt, b__o, x__ni, x_stride, y__no, y_stride, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    (void)level; /* callers use csrc/quant.c's loops there; this keeps the function correct anywhere */
    fg_qlinear_rows_ref(w__oi, NULL, fmt, b__o, x__ni, x_stride, y__no, y_stride, n_rows, n_in, o_begin, o_end);
}

void fg_linear_rows_f32(const float *w, const float *bias, const float *x, ptrdiff_t xs, float *y, ptrdiff_t ys,
                        ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, int level) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_X86
    if (level >= FG_AVX512 && has_bw_vl()) {
        skinny_avx512(w, FG_W_F32, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
    if (level >= FG_AVX2) {
        linear_rows_avx2(w, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    (void)level;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        const float b = bias ? bias[o] : 0.f;
        for (ptrdiff_t r = 0; r < n_rows; r++) y[r * ys + o] = fg_dot_f32_ref(w + o * n_in, x + r * xs, n_in) + b;
    }
}
