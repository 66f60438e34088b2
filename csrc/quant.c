/* Quantized weights (bfloat16, float16, int8 blocks): the dispatch of the skinny products (decode,
 * short prompts), their int8 loop for AVX512-VNNI without AMX, the AVX2 and scalar fallbacks, and
 * dequantization of row tiles for the prefill GEMM. fastgpt/quant.py is the spec.
 *
 * Dimension legend: n rows of x and y (tokens), i input width, o output rows of w,
 * b blocks of 32 inputs (int8 scales).
 *
 * Which kernel multiplies (fg_qlinear_rows), by level (fg_quant_level):
 * - FG_AMX: int8 and bfloat16 on AMX tiles (csrc/amx.c), float16 by csrc/skinny.c;
 * - FG_AVX512: 16-bit w by csrc/skinny.c (widened exactly; bfloat16 by vdpbf16ps with AVX512_BF16),
 *   int8 by the VNNI loop below;
 * - FG_AVX2: one row of w at a time against up to 4 rows of x (below); scalar: *_ref.
 * Whatever the level, each output's summation order depends on n_in only, so a row of x gives the
 * same bits alone or among others (the serving engine's batches rely on it).
 *
 * The int8 VNNI loop reads every weight once per call: one weight row at a time, front to back (a
 * thread's band is one stream for the hardware prefetcher), each weight line used by every input
 * row (up to 8 per pass; each group of 8 weight rows meets the chunks of 8 input rows while in L1),
 * two chains, a software prefetch ahead in the stream, one transpose-and-add reduction per 8 rows.
 * x is rounded to int8 per block of 32 once per product (as llama.cpp's q8_0) so that vpdpbusd
 * multiplies 64 weights per instruction; this adds an NMSE of ~2e-5 on Gaussian x (about the int8
 * weights' own error) and made the loop 1.8x faster in cache (58 vs 32 GB/s on one core; x rounded
 * to int16 with vpmaddwd, the earlier path, was slower than DRAM on one core).
 * quant.linear_ref_int8_activations is the spec of this arithmetic (shared with qgemm.c and amx.c).
 *
 * Non-goals: no threads (the Cython wrapper runs a prange over row blocks), no allocation,
 * no fast-math. Int8 needs n_in % 32 == 0 (checked in Python).
 */
#include <stdint.h>
#include <string.h>

#include "fastgpt_kernels.h"
#include "half.h"
#include "q8_block.h"
#include "reduce_avx512.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#ifdef FG_X86
/* AVX512-VNNI (vpdpbusd): the int8 decode path needs it; without it int8 takes the AVX2 path. */
static int has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
}
#endif

int fg_quant_level(void) {
    int level = fg_simd_level();
#ifdef FG_X86
    __builtin_cpu_init();
    /* the vector paths convert float16 with F16C (every AVX2 CPU we know has it; check anyway) */
    if (level >= FG_AVX2 && !__builtin_cpu_supports("f16c")) level = FG_SCALAR;
    /* the AVX-512 loops use AVX512BW/VL (int16 multiply-adds, masked 16-bit loads) */
    if (level >= FG_AVX512 && !(__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")))
        level = FG_AVX2;
    if (level >= FG_AVX512 && fg_amx_available()) level = FG_AMX;
#endif
    return level;
}

int fg_q8_activations(int level) {
#ifdef FG_X86
    return level >= FG_AVX512 && fg_quant_level() >= FG_AVX512 && has_vnni();
#else
    (void)level;
    return 0;
#endif
}

/* -- portable element access (the reference) ---------------------------------------------- */
static inline float qvalue(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o, ptrdiff_t i) {
    if (fmt == FG_Q_BF16) return bf16_to_f32(((const uint16_t *)w)[o * n_in + i]);
    if (fmt == FG_Q_F16) return f16_to_f32(((const uint16_t *)w)[o * n_in + i]);
    return (float)((const int8_t *)w)[o * n_in + i] * f16_to_f32(s[o * (n_in / FG_Q8_BLOCK) + i / FG_Q8_BLOCK]);
}

void fg_dequantize_rows_ref(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin,
                            ptrdiff_t o_end, float *out) {
    for (ptrdiff_t o = o_begin; o < o_end; o++)
        for (ptrdiff_t i = 0; i < n_in; i++) out[(o - o_begin) * n_in + i] = qvalue(w, s, fmt, n_in, o, i);
}

void fg_qlinear_rows_ref(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x, ptrdiff_t xs,
                         float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    for (ptrdiff_t r = 0; r < n_rows; r++)
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            float acc = 0.f;
            for (ptrdiff_t i = 0; i < n_in; i++) acc += qvalue(w, s, fmt, n_in, o, i) * x[r * xs + i];
            y[r * ys + o] = acc + (bias ? bias[o] : 0.f);
        }
}

#ifdef FG_X86
/* ---- AVX-512 ------------------------------------------------------------------------------ */
#define TARGET_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))

/* acc += per 32-bit lane, the dot of 4 unsigned bytes of u with 4 signed bytes of s (vpdpbusd).
 * In assembly so that the AVX-512 functions need no "avx512vnni" target: only the int8 path,
 * chosen at run time when the CPU has VNNI (has_vnni), ever executes it. */
#define DPBUSD(acc, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "vm"(s))

/* 16 weights of one row from element k, widened to float32; int8 times its block's scale. */
TARGET_512 __attribute__((always_inline)) static inline __m512 load16_512(const void *w, ptrdiff_t k, const int FMT,
                                                                          const float *scale) {
    if (FMT == FG_Q_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k))), 16));
    if (FMT == FG_Q_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k)));
    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)w + k))));
    return _mm512_mul_ps(q, _mm512_set1_ps(*scale)); /* the broadcast folds into vmulps' memory operand */
}

/* -- prepared x -----------------------------------------------------------------------------
 * The int8 loop reads x prepared once per product (fg_qprep_x_rows): each block of 32 inputs rounded
 * to int8 (prep_i8_512), to meet w in vpdpbusd. Layout, rows of the product r < n_rows: int8
 * xq[r][n64], then float sx[r][n16], then float cx[r][n16] (each at a 64-byte boundary; n64, n16:
 * inputs and blocks rounded up to 64 and 16, zero-padded). On AMX (level FG_AMX) the layout is
 * csrc/amx.c's. */
static ptrdiff_t align64(ptrdiff_t n) { return (n + 63) / 64 * 64; }
static ptrdiff_t i8_padded_inputs(ptrdiff_t n_in) { return (n_in + 63) / 64 * 64; }
static ptrdiff_t i8_padded_blocks(ptrdiff_t n_in) { return (n_in / FG_Q8_BLOCK + 15) / 16 * 16; }


ptrdiff_t fg_qprep_bytes(int fmt, ptrdiff_t n_rows, ptrdiff_t n_in, int level) {
    if (level >= FG_AMX) return fg_amx_prep_bytes(fmt, n_rows, n_in);
    if (level < FG_AVX512) return 0;
    if (fmt == FG_Q_I8 && has_vnni())
        return align64(n_rows * i8_padded_inputs(n_in)) + 2 * align64(n_rows * i8_padded_blocks(n_in) * (ptrdiff_t)sizeof(float));
    return 0;
}

/* int8 x for vpdpbusd: each block of 32 inputs rounded to int8 (q8_round_block), with
 * cx = 128 * sx * sum(q), the offset correction (see qrow_512). Rows are padded with zeros to
 * n64 inputs and n16 blocks so that the kernel's loads stay whole. */
TARGET_512 static void prep_i8_512(const float *x, ptrdiff_t xs, ptrdiff_t r_begin, ptrdiff_t r_end, ptrdiff_t n_in,
                                   int8_t *xq, float *sx, float *cx) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n64 = i8_padded_inputs(n_in), n16 = i8_padded_blocks(n_in);
    for (ptrdiff_t r = r_begin; r < r_end; r++) {
        memset(xq + r * n64, 0, (size_t)n64);
        for (ptrdiff_t b = n_b; b < n16; b++) sx[r * n16 + b] = cx[r * n16 + b] = 0.f;
        for (ptrdiff_t b = 0; b < n_b; b++) {
            __m512i q_lo, q_hi;
            float d = q8_round_block(x + r * xs + b * FG_Q8_BLOCK, &q_lo, &q_hi);
            _mm_storeu_si128((__m128i *)(xq + r * n64 + b * FG_Q8_BLOCK), _mm512_cvtepi32_epi8(q_lo));
            _mm_storeu_si128((__m128i *)(xq + r * n64 + b * FG_Q8_BLOCK + 16), _mm512_cvtepi32_epi8(q_hi));
            sx[r * n16 + b] = d;
            cx[r * n16 + b] = 128.f * d * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q_lo, q_hi));
        }
    }
}

/* The three arrays of a prepared int8 x, in the order fg_qprep_bytes counted them. */
static void i8_prep_parts(const void *prep, ptrdiff_t n_rows, ptrdiff_t n_in, const int8_t **xq, const float **sx,
                          const float **cx) {
    ptrdiff_t q_bytes = align64(n_rows * i8_padded_inputs(n_in));
    ptrdiff_t s_bytes = align64(n_rows * i8_padded_blocks(n_in) * (ptrdiff_t)sizeof(float));
    *xq = (const int8_t *)prep;
    *sx = (const float *)((const char *)prep + q_bytes);
    *cx = (const float *)((const char *)prep + q_bytes + s_bytes);
}

void fg_qprep_x_rows(int fmt, const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t r_begin,
                     ptrdiff_t r_end, void *prep, int level) {
    if (level >= FG_AMX) {
        fg_amx_prep_x_rows(fmt, x, xs, n_rows, n_in, r_begin, r_end, prep);
        return;
    }
    if (level < FG_AVX512) return;
    if (fmt == FG_Q_I8 && has_vnni()) {
        const int8_t *xq;
        const float *sx, *cx;
        i8_prep_parts(prep, n_rows, n_in, &xq, &sx, &cx);
        prep_i8_512(x, xs, r_begin, r_end, n_in, (int8_t *)xq, (float *)sx, (float *)cx);
    }
}


void fg_qprep_x_part(int fmt, const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, int part, int n_parts,
                     void *prep, int level) {
    if (level >= FG_AMX && fmt == FG_Q_I8) {
        fg_amx_prep_i8_part(x, xs, n_rows, n_in, part, n_parts, prep);
        return;
    }
    for (ptrdiff_t r = (ptrdiff_t)part * FG_PREP_ROWS; r < n_rows; r += (ptrdiff_t)n_parts * FG_PREP_ROWS)
        fg_qprep_x_rows(fmt, x, xs, n_rows, n_in, r, r + FG_PREP_ROWS < n_rows ? r + FG_PREP_ROWS : n_rows, prep, level);
}


#define QMAX_ROWS 8
/* Bytes ahead in the weight stream that the loops prefetch (as simd_dot.c). Decoding GPT-2's 49
 * matrices in turn, 2 threads: 2 KB streamed 6-26% slower than 4-24 KB, which were within 3% of
 * each other; a burst of prefetches over a band's first QPF bytes did not measurably help. */
#define QPF 8192
/* Weights are read once per token: prefetched non-temporally (into L1, not to stay in the outer
 * caches). Against _MM_HINT_T0, interleaved in one process, int8 decode steps took 0-14% less
 * time (6 A/B runs, never more) and 16-bit ones -1% to +10%. */
#define QPREFETCH(p) _mm_prefetch((p), _MM_HINT_NTA)

/* &p[k] for a prefetch, which may point past the end of w: computed on integers, since pointer
 * arithmetic beyond an array is undefined even if never dereferenced. */
static inline const char *qahead(const char *p, ptrdiff_t k) { return (const char *)((uintptr_t)p + (uintptr_t)k); }

/* One int8 weight row (wr, its scales sr) against NR input rows: part[r] = per-lane partial sums
 * of the row's dot with input row r (two chains: even and odd 64-weight steps, added at the end).
 * A thread reads its band of rows front to back as one stream, which the hardware prefetcher
 * follows at ~100% of read_sum (8 rows read side by side, 8 streams, reached 70-89%).
 * x rounded to int8 per block (prep_i8_512) meets w in vpdpbusd, which multiplies unsigned by
 * signed bytes: w is offset to unsigned (w ^ 0x80 = w + 128) and the offset's share, 128 * sum(xq)
 * per block, is taken back out once per row through cx (below). One 64-byte line of w is two
 * blocks: lanes 0-7 sum block 2L, lanes 8-15 block 2L+1; the int32 sums become float32 and meet
 * the blocks' scales (sw * sx, expanded to those lanes by one permute) in one FMA. Exact integers
 * up to there: |sum| < 2^24. xq, sx, cx: prepared (see above), row strides n64, n16. */
TARGET_512 __attribute__((always_inline)) static inline void
qrow_512(const char *wr, const uint16_t *sr, ptrdiff_t n_in, const int8_t *xq, const float *sx, const float *cx,
         __m512 part[QMAX_ROWS], const int NR) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n64 = i8_padded_inputs(n_in), n16 = i8_padded_blocks(n_in);
    const __m512i offset = _mm512_set1_epi8((char)0x80);
    const __m512i lanes_of_block = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 a0[QMAX_ROWS], a1[QMAX_ROWS], corr[QMAX_ROWS];
    for (int r = 0; r < NR; r++) a0[r] = a1[r] = corr[r] = _mm512_setzero_ps();
    for (ptrdiff_t g = 0; g < n_b; g += 16) { /* 16 blocks: 8 lines */
        ptrdiff_t nbg = n_b - g < 16 ? n_b - g : 16;
        __mmask16 m = (__mmask16)((1u << nbg) - 1u);
        /* the scales are a second stream, 1/16 the bytes of w: prefetched as far ahead as w.
         * A group's 32 bytes are less than a line, so every line of scales gets one. */
        QPREFETCH(qahead((const char *)(sr + g), QPF / 16));
        __m512 ws = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sr + g)), cs[QMAX_ROWS];
        for (int r = 0; r < NR; r++) {
            cs[r] = _mm512_mul_ps(ws, _mm512_loadu_ps(sx + r * n16 + g));
            corr[r] = _mm512_fmadd_ps(ws, _mm512_loadu_ps(cx + r * n16 + g), corr[r]);
        }
        __m512i idx = lanes_of_block;
        for (ptrdiff_t L = 0; L < (nbg + 1) / 2; L++) {
            ptrdiff_t kk = (g + 2 * L) * FG_Q8_BLOCK;
            QPREFETCH(qahead(wr, kk + QPF));
            __m512i wv = kk + 64 <= n_in ? _mm512_loadu_si512(wr + kk)
                                         : _mm512_maskz_loadu_epi8((__mmask64)0xFFFFFFFFull, wr + kk);
            __m512i wu = _mm512_xor_si512(wv, offset);
            for (int r = 0; r < NR; r++) {
                __m512i dot = _mm512_setzero_si512();
                DPBUSD(dot, wu, *(const __m512i *)(xq + r * n64 + kk));
                __m512 sc = _mm512_permutexvar_ps(idx, cs[r]);
                if (L & 1) a1[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, a1[r]);
                else a0[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, a0[r]);
            }
            idx = _mm512_add_epi32(idx, _mm512_set1_epi32(2));
        }
    }
    for (int r = 0; r < NR; r++) part[r] = _mm512_add_ps(a0[r], _mm512_sub_ps(a1[r], corr[r]));
}

/* Rows o in [o_begin, o_end) of y against NR input rows: groups of 8 weight rows, each row
 * streamed once (qrow_512), the group's 8 sums per input row reduced by one transpose-and-add
 * tree, so that y[r, o] has one summation order whatever NR, the band or the thread split. */
TARGET_512 __attribute__((always_inline)) static inline void
qrows_512(const int8_t *w, const uint16_t *s, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, const int8_t *xq,
          const float *sx, const float *cx, const float *bias, float *y, ptrdiff_t ys, const int NR) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    __m512 part[8][QMAX_ROWS], sums[QMAX_ROWS][8];
    for (ptrdiff_t g = o_begin; g < o_end; g += 8) {
        ptrdiff_t n_o = o_end - g < 8 ? o_end - g : 8;
        for (ptrdiff_t j = 0; j < 8; j++) {
            if (j < n_o) qrow_512((const char *)(w + (g + j) * n_in), s + (g + j) * n_b, n_in, xq, sx, cx, part[j], NR);
            for (int r = 0; r < NR; r++) sums[r][j] = j < n_o ? part[j][r] : _mm512_setzero_ps();
        }
        __mmask16 keep = (__mmask16)((1u << n_o) - 1u);
        __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias + g) : _mm512_setzero_ps();
        for (int r = 0; r < NR; r++)
            _mm512_mask_storeu_ps(y + r * ys + g, keep, _mm512_add_ps(_mm512_castps256_ps512(reduce8_avx512(sums[r])), b));
    }
}

typedef void (*qrows_fn)(const int8_t *, const uint16_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const int8_t *,
                         const float *, const float *, const float *, float *, ptrdiff_t);

/* One instance per NR so that each loop unrolls and stays in registers. */
#define QROWS_FN(NR)                                                                                              \
    TARGET_512 static void qrows_##NR(const int8_t *w, const uint16_t *s, ptrdiff_t n_in, ptrdiff_t o0,           \
                                      ptrdiff_t o1, const int8_t *xq, const float *sx, const float *cx,           \
                                      const float *bias, float *y, ptrdiff_t ys) {                                \
        qrows_512(w, s, n_in, o0, o1, xq, sx, cx, bias, y, ys, NR);                                               \
    }
QROWS_FN(1) QROWS_FN(2) QROWS_FN(3) QROWS_FN(4) QROWS_FN(5) QROWS_FN(6) QROWS_FN(7) QROWS_FN(8)
static const qrows_fn QROWS[QMAX_ROWS + 1] = {NULL,    qrows_1, qrows_2, qrows_3, qrows_4,
                                              qrows_5, qrows_6, qrows_7, qrows_8};

/* int8 rows o in [o_begin, o_end): more than 8 input rows meet each group of 8 weight rows in
 * chunks of 8 while it is in L1, so w still streams from memory once. */
static void qlinear_rows_512(const int8_t *w, const uint16_t *s, const float *bias, const void *prep, float *y,
                             ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end) {
    const ptrdiff_t n64 = i8_padded_inputs(n_in), n16 = i8_padded_blocks(n_in);
    const int8_t *xq;
    const float *sx, *cx;
    i8_prep_parts(prep, n_rows, n_in, &xq, &sx, &cx);
    ptrdiff_t step = n_rows > QMAX_ROWS ? 8 : o_end - o_begin;
    for (ptrdiff_t g = o_begin; g < o_end; g += step) {
        ptrdiff_t g_end = o_end - g < step ? o_end : g + step;
        for (ptrdiff_t r = 0; r < n_rows; r += QMAX_ROWS) {
            int nr = n_rows - r < QMAX_ROWS ? (int)(n_rows - r) : QMAX_ROWS;
            QROWS[nr](w, s, n_in, g, g_end, xq + r * n64, sx + r * n16, cx + r * n16, bias, y + r * ys, ys);
        }
    }
}

TARGET_512 static void dequantize_rows_512(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in,
                                           ptrdiff_t o_begin, ptrdiff_t o_end, float *out) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        float *dst = out + (o - o_begin) * n_in;
        ptrdiff_t k = 0;
        if (fmt == FG_Q_I8) {
            const int8_t *wo = (const int8_t *)w + o * n_in;
            for (ptrdiff_t b = 0; b < n_b; b++) {
                float sb = _cvtsh_ss(s[o * n_b + b]);
                _mm512_storeu_ps(dst + 32 * b, load16_512(wo, 32 * b, FG_Q_I8, &sb));
                _mm512_storeu_ps(dst + 32 * b + 16, load16_512(wo, 32 * b + 16, FG_Q_I8, &sb));
            }
            continue;
        }
        const uint16_t *wo = (const uint16_t *)w + o * n_in;
        if (fmt == FG_Q_BF16)
            for (; k + 16 <= n_in; k += 16) _mm512_storeu_ps(dst + k, load16_512(wo, k, FG_Q_BF16, NULL));
        else
            for (; k + 16 <= n_in; k += 16) _mm512_storeu_ps(dst + k, load16_512(wo, k, FG_Q_F16, NULL));
        for (; k < n_in; k++) dst[k] = fmt == FG_Q_BF16 ? bf16_to_f32(wo[k]) : f16_to_f32(wo[k]);
    }
}

/* ---- AVX2 + FMA + F16C: one weight row at a time (read once per call) against up to 4 input rows
 * at a time, two chains each ---- */
#define TARGET_256 __attribute__((target("avx2,fma,f16c")))

TARGET_256 __attribute__((always_inline)) static inline __m256 load8_256(const void *w, ptrdiff_t k, int fmt, float scale) {
    if (fmt == FG_Q_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k))), 16));
    if (fmt == FG_Q_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + k)));
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + k))));
    return _mm256_mul_ps(q, _mm256_set1_ps(scale));
}

TARGET_256 static inline float hsum_256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TARGET_256 static void qlinear_rows_256(const void *w, const uint16_t *s, int fmt, const float *bias, const float *x,
                                        ptrdiff_t xs, float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in,
                                        ptrdiff_t o_begin, ptrdiff_t o_end) {
    const int esize = fmt == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        const char *wo = (const char *)w + o * n_in * esize;
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += 4) {
            int nr = n_rows - r0 < 4 ? (int)(n_rows - r0) : 4;
            const float *xr = x + r0 * xs;
            __m256 a0[4], a1[4];
            for (int r = 0; r < 4; r++) a0[r] = a1[r] = _mm256_setzero_ps();
            ptrdiff_t k = 0;
            for (; k + 16 <= n_in; k += 16) { /* 16 never straddles an int8 block of 32 */
                float sc = fmt == FG_Q_I8 ? _cvtsh_ss(s[o * n_b + k / FG_Q8_BLOCK]) : 0.f;
                __m256 w0 = load8_256(wo, k, fmt, sc), w1 = load8_256(wo, k + 8, fmt, sc);
                for (int r = 0; r < nr; r++) {
                    a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + r * xs + k), a0[r]);
                    a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + r * xs + k + 8), a1[r]);
                }
            }
            for (int r = 0; r < nr; r++) {
                float t = hsum_256(_mm256_add_ps(a0[r], a1[r]));
                for (ptrdiff_t i = k; i < n_in; i++) t += qvalue(w, s, fmt, n_in, o, i) * xr[r * xs + i];
                y[(r0 + r) * ys + o] = t + (bias ? bias[o] : 0.f);
            }
        }
    }
}

TARGET_256 static void dequantize_rows_256(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in,
                                           ptrdiff_t o_begin, ptrdiff_t o_end, float *out) {
    const int esize = fmt == FG_Q_I8 ? 1 : 2;
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t o = o_begin; o < o_end; o++) {
        const char *wo = (const char *)w + o * n_in * esize;
        float *dst = out + (o - o_begin) * n_in;
        ptrdiff_t k = 0;
        for (; k + 8 <= n_in; k += 8)
            _mm256_storeu_ps(dst + k, load8_256(wo, k, fmt, fmt == FG_Q_I8 ? _cvtsh_ss(s[o * n_b + k / FG_Q8_BLOCK]) : 0.f));
        for (; k < n_in; k++) dst[k] = qvalue(w, s, fmt, n_in, o, k);
    }
}
#endif /* FG_X86 */

void fg_qlinear_rows(const void *w, const uint16_t *s, const uint16_t *sg, int fmt, const float *bias, const float *x,
                     ptrdiff_t xs, const void *prep, float *y, ptrdiff_t ys, ptrdiff_t n_rows, ptrdiff_t n_in,
                     ptrdiff_t o_begin, ptrdiff_t o_end, int level) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_X86
    if (level >= FG_AMX && fmt != FG_Q_F16) {
        fg_amx_rows(w, s, sg, fmt, bias, prep, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
    if (level >= FG_AVX512 && fmt != FG_Q_I8) {
        fg_skinny_w16(w, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end, level);
        return;
    }
    if (level >= FG_AVX512 && has_vnni()) {
        qlinear_rows_512(w, s, bias, prep, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
    if (level >= FG_AVX2) {
        qlinear_rows_256(w, s, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
        return;
    }
#endif
    (void)level, (void)prep, (void)sg;
    fg_qlinear_rows_ref(w, s, fmt, bias, x, xs, y, ys, n_rows, n_in, o_begin, o_end);
}

void fg_dequantize_rows(const void *w, const uint16_t *s, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end,
                        float *out, int level) {
#ifdef FG_X86
    if (level >= FG_AVX512) {
        dequantize_rows_512(w, s, fmt, n_in, o_begin, o_end, out);
        return;
    }
    if (level >= FG_AVX2) {
        dequantize_rows_256(w, s, fmt, n_in, o_begin, o_end, out);
        return;
    }
#endif
    (void)level;
    fg_dequantize_rows_ref(w, s, fmt, n_in, o_begin, o_end, out);
}
