/* fastgpt's C inner loops: one row or one head at a time, no threads, no allocation.
 *
 * Threading (OpenMP prange) and all shape checks live in the Cython wrappers that call
 * these; by the time a pointer reaches here its extent has been checked in Python.
 *
 * SIMD paths are compiled with per-function target attributes and picked at run time by
 * fg_simd_level(), so one build runs on any x86-64 CPU (and builds elsewhere, scalar only).
 * Dimension suffixes: n rows, i input width, o output rows, d head width, l keys.
 */
#ifndef FASTGPT_KERNELS_H
#define FASTGPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* SIMD levels. FG_AMX (AVX-512 plus AMX tiles) is a level of the quantized kernels only
 * (fg_quant_level); every path for FG_AVX512 runs there too unless AMX replaces it. */
enum { FG_SCALAR = 0, FG_AVX2 = 1, FG_AVX512 = 2, FG_AMX = 3 };
/* Formats of weights (and of the KV cache): 16-bit IEEE half / bfloat16 bits, int8 blocks (see the
 * quantized weights below) and float32. */
enum { FG_Q_BF16 = 0, FG_Q_F16 = 1, FG_Q_I8 = 2, FG_W_F32 = 3 };

/* What this CPU supports (capped by FASTGPT_SIMD_MAX_LEVEL when set at build time). */
int fg_simd_level(void);

/* sum_k a[k] * b[k] */
float fg_dot_f32(const float *a__i, const float *b__i, ptrdiff_t n_i, int level);
float fg_dot_f32_ref(const float *a__i, const float *b__i, ptrdiff_t n_i);

/* The skinny products (csrc/skinny.c): y[r, o] = b[o] + dot(w[o, :], x[r, :]) for o in
 * [o_begin, o_end), r < n_rows, w row-major [out, in] read once per call; x rows are `x_stride`
 * apart, y rows `y_stride` apart. Each y[r, o] is summed in an order that depends on n_in and the
 * level only: row r is bitwise the same whatever n_rows, the other rows or the o range.
 * fg_skinny_w16: w bfloat16 or float16 (fmt FG_Q_BF16 / FG_Q_F16), widened exactly; bfloat16 on a CPU with
 * AVX512_BF16 meets x rounded to bfloat16 in vdpbf16ps instead (fg_bgemm_available()). */
void fg_skinny_w16(const uint16_t *w__oi, int fmt, const float *b__o, const float *x__ni, ptrdiff_t x_stride,
                   float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin,
                   ptrdiff_t o_end, int level);
void fg_linear_rows_f32(const float *w__oi, const float *b__o, const float *x__ni, ptrdiff_t x_stride,
                        float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                        ptrdiff_t o_begin, ptrdiff_t o_end, int level);

/* The prefill GEMM (csrc/gemm.c), in two steps so that threads can share the packed x:
 * 1. pack panels [p_begin, p_end) of 16 rows of x into xp__pic[p][i][c] = x[16p + c, i]
 *    (zeros past n_rows); xp holds ceil(n_rows / 16) * 16 * n_in floats, 64-byte aligned.
 * 2. y[n, o] = b[o] + sum_i w[o, i] * x[n, i] for all n < n_rows and o in [o_begin, o_end).
 * Each output is summed over i in order (one FMA chain), whatever the o range: splitting
 * o across threads gives bitwise the same y. */
void fg_gemm_pack_x_f32(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                        ptrdiff_t p_end, float *xp__pic, int level);
void fg_gemm_f32(const float *xp__pic, ptrdiff_t n_rows, ptrdiff_t n_in, const float *w__oi, const float *b__o,
                 float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end, int level);

/* The KV cache holds float32, IEEE half or bfloat16 values: kv_fmt FG_W_F32, FG_Q_F16 or FG_Q_BF16
 * (csrc/attention.c). fg_kv_store: dst[at + t] = src[t] for t < n, rounded to nearest even. */
void fg_kv_store(const float *src__d, void *dst, ptrdiff_t at, int kv_fmt, ptrdiff_t n, int level);

/* Attention of one query over keys [first, last) of one head's cache, into out__d.
 * k__ld / v__ld rows are d elements apart; scores__l is scratch of at least `last` floats. */
void fg_attend_one(const float *q__d, const void *k__ld, const void *v__ld, int kv_fmt, ptrdiff_t d, ptrdiff_t first,
                   ptrdiff_t last, float scale, float *scores__l, float *out__d, int level);

/* Four consecutive queries (q rows q_stride apart; query i sees keys [first, last0 + i)),
 * scores: 4 rows s_stride apart. Returns 0 without touching anything when this CPU / head
 * width has no such path (the caller then does one query at a time). */
int fg_attend_four(const float *q__4d, ptrdiff_t q_stride, const void *k__ld, const void *v__ld, int kv_fmt,
                   ptrdiff_t d, ptrdiff_t first, ptrdiff_t last0, float scale, float *scores__4l, ptrdiff_t s_stride,
                   float *out__4d, ptrdiff_t out_stride, int level);

/* Layer norm of one row (biased variance, as torch.nn.LayerNorm). */
void fg_layer_norm_row_f32(const float *x__i, const float *g__i, const float *b__i, ptrdiff_t n_i,
                           float eps, float *out__i, int level);

/* Activations over a contiguous run, in place allowed (out == x). kind: see FG_ACT_*. An element's
 * result depends only on its value and the level, not on the run it is part of: any split of a
 * row gives the same bits. */
enum { FG_ACT_GELU_TANH = 0, FG_ACT_GELU_ERF = 1, FG_ACT_RELU = 2, FG_ACT_SILU = 3, FG_ACT_QUICK_GELU = 4 };
void fg_activation_f32(const float *x, float *out, ptrdiff_t n, int kind, int level);

/* Sum of a buffer, read with the widest loads available: the memory-bandwidth probe. */
double fg_read_sum_f32(const float *x, ptrdiff_t n, int level);

/* The peak-arithmetic probe (csrc/peak.c): `iters` rounds of independent chains of one kind of
 * instruction in registers on this thread; returns the operations done (a multiply-add counts 2),
 * 0 if this CPU or build lacks the instructions. */
enum { FG_PEAK_F32_FMA = 0, FG_PEAK_I8_VNNI = 1, FG_PEAK_BF16_DOT = 2, FG_PEAK_I8_AMX = 3, FG_PEAK_BF16_AMX = 4 };
double fg_peak(int kind, long iters);

/* ---- Quantized weights (csrc/quant.c; the formats are specified in fastgpt/quant.py) ----
 * fmt FG_Q_BF16 / FG_Q_F16: w__oi is uint16 [out, in] (bfloat16 / IEEE half bits), s__ob NULL.
 * fmt FG_Q_I8: w__oi is int8 [out, in], s__ob uint16 [out, in / 32] (float16 scale bits), and
 * n_in % FG_Q8_BLOCK == 0. A weight's value is float32(w), or float32(q) * float32(scale). */
#define FG_Q8_BLOCK 32

/* Whether int8 products round x to int8 per block of 32 (AVX512-VNNI or AMX:
 * quant.linear_ref_int8_activations). */
int fg_q8_activations(int level);
/* fg_simd_level(), lowered to AVX2 without AVX512BW/VL and to scalar without F16C, raised to FG_AMX
 * when fg_amx_available(). */
int fg_quant_level(void);

/* The skinny products of quantized w read x prepared once per product (csrc/quant.c):
 * fg_qprep_bytes() bytes of 64-byte aligned scratch (0: none needed), filled by fg_qprep_x_rows
 * rows [r_begin, r_end) at a time (the layout is that of all n_rows rows), so that threads can
 * prepare disjoint rows of one x: in whole units of FG_PREP_ROWS rows (r_begin a multiple of it,
 * r_end too or n_rows). */
ptrdiff_t fg_qprep_bytes(int fmt, ptrdiff_t n_rows, ptrdiff_t n_in, int level);
#define FG_PREP_ROWS 16
void fg_qprep_x_rows(int fmt, const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                     ptrdiff_t r_begin, ptrdiff_t r_end, void *prep, int level);
/* Part `part` of n_parts of preparing all n_rows rows; the parts together do what fg_qprep_x_rows
 * does for every row, so that n_parts threads share the work even when x has fewer units of
 * FG_PREP_ROWS than there are threads (a 16-row decode step or a 16-token prompt, 2 threads): int8 on
 * AMX splits the (chunk, block) pairs, the other formats whole units. */
void fg_qprep_x_part(int fmt, const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, int part,
                     int n_parts, void *prep, int level);

/* y[r, o] = b[o] + sum_i W[o, i] * x[r, i] for o in [o_begin, o_end), r < n_rows (decode, short
 * prompts). x rows x_stride apart, y rows y_stride apart; prep from fg_qprep_x_rows with the same x. As
 * the skinny products above: each y[r, o] depends on n_in and the level, not on n_rows or the o range.
 * Level FG_AMX: int8 and bfloat16 on AMX (csrc/amx.c); FG_AVX512: int8 by VNNI (below), 16-bit w by
 * fg_skinny_w16. s__gb16 (may be NULL): int8's scales again, grouped for AMX's epilogue:
 * s__gb16[((o / 16) * (n_in / 32) + b) * 16 + o % 16] = s__ob[o, b], rows past n_out repeating the last
 * (quant.QuantizedWeight.scales_by_group); with it the AMX kernel skips transposing them per call. */
void fg_qlinear_rows(const void *w__oi, const uint16_t *s__ob, const uint16_t *s__gb16, int fmt, const float *b__o,
                     const float *x__ni, ptrdiff_t x_stride, const void *prep, float *y__no, ptrdiff_t y_stride,
                     ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end, int level);
void fg_qlinear_rows_ref(const void *w__oi, const uint16_t *s__ob, int fmt, const float *b__o, const float *x__ni,
                         ptrdiff_t x_stride, float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                         ptrdiff_t o_begin, ptrdiff_t o_end);

/* out[o - o_begin, i] = W[o, i] for o in [o_begin, o_end): float32 tiles for the prefill GEMM,
 * rows for the embedding lookup. Exactly quant.py's dequantize. */
void fg_dequantize_rows(const void *w__oi, const uint16_t *s__ob, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin,
                        ptrdiff_t o_end, float *out__oi, int level);
void fg_dequantize_rows_ref(const void *w__oi, const uint16_t *s__ob, int fmt, ptrdiff_t n_in, ptrdiff_t o_begin,
                            ptrdiff_t o_end, float *out__oi);

/* ---- The int8 prefill GEMM in integers (csrc/qgemm.c; spec: quant.linear_ref_int8_activations) ----
 * y[n, o] = b[o] + sum_b sx[n, b] * sw[o, b] * sum_{i in block b} xq[n, i] * wq[o, i], with x rounded
 * to int8 per row and block of 32 (symmetric absmax). Needs AVX512-VNNI + BW (fg_qgemm_available());
 * n_in % FG_Q8_BLOCK == 0. Three steps, so that threads share the packed x:
 * 1. fg_qgemm_pack_x: rows [r_begin, r_end) of x (r_end <= fg_qgemm_rows_padded(n_rows); rows past
 *    n_rows are padding) into xbuf, fg_qgemm_x_bytes(n_rows, n_in) bytes, 64-byte aligned;
 * 2. fg_qgemm_pack_w: rows [o_begin, o_end) of W into a tile of fg_qgemm_tile_bytes(n_in, o_end -
 *    o_begin) bytes, 64-byte aligned (per thread scratch);
 * 3. fg_qgemm: y[n, o] for n < n_rows and the tile's n_o rows (y__no and b__o point at its first).
 * Each output is one fixed sequence of float operations: any tiling or thread split gives the same
 * bits, which are those of fg_qgemm_ref (the portable loop on the unpacked arrays). */
int fg_qgemm_available(void);
ptrdiff_t fg_qgemm_rows_padded(ptrdiff_t n_rows);
ptrdiff_t fg_qgemm_x_bytes(ptrdiff_t n_rows, ptrdiff_t n_in);
ptrdiff_t fg_qgemm_tile_bytes(ptrdiff_t n_in, ptrdiff_t n_o);
void fg_qgemm_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t r_begin,
                     ptrdiff_t r_end, void *xbuf);
void fg_qgemm_pack_w(const int8_t *w__oi, const uint16_t *s__ob, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end,
                     void *tile);
void fg_qgemm(const void *tile, ptrdiff_t n_o, const void *xbuf, ptrdiff_t n_rows, ptrdiff_t n_in, const float *b__o,
              float *y__no, ptrdiff_t y_stride);
void fg_qgemm_ref(const int8_t *w__oi, const uint16_t *s__ob, const float *b__o, const float *x__ni,
                  ptrdiff_t x_stride, float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                  ptrdiff_t o_begin, ptrdiff_t o_end);

/* ---- Prefill GEMMs with 16-bit weights (csrc/hgemm.c) -------------------------------------------
 * fg_bgemm: bfloat16 w [out, in] with x rounded to bfloat16 (spec: quant.linear_ref_bf16_activations),
 * by AVX512_BF16 (fg_bgemm_available()). 1. fg_bgemm_pack_x packs panels [p_begin, p_end) of 16 rows
 * of x into xb (fg_bgemm_x_bytes(n_rows, n_in) bytes, 64-byte aligned); 2. fg_bgemm computes y[n, o]
 * for every n < n_rows and o in [o_begin, o_end). Each output is summed over pairs of inputs in
 * order, whatever the o range: any thread split gives the same bits.
 * fg_gemm_w16_f32: bfloat16 or float16 w with float32 x packed by fg_gemm_pack_x_f32: y[n, o] for
 * o in [o_begin, o_end), using wide__oi (ceil((o_end - o_begin) / 8) * 8 * n_in floats, 64-byte
 * aligned, per thread) for w widened to float32. Exactly linear_ref up to summation order. */
int fg_bgemm_available(void);
ptrdiff_t fg_bgemm_x_bytes(ptrdiff_t n_rows, ptrdiff_t n_in);
void fg_bgemm_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                     ptrdiff_t p_end, void *xb__pjc);
/* The packing of fg_bgemm_pack_x with panels of n_pairs >= ceil(n_in / 2) pairs (zero past n_in). */
void fg_bf16_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t p_begin,
                    ptrdiff_t p_end, ptrdiff_t n_pairs, void *xb__pjc);
void fg_bgemm(const void *xb__pjc, ptrdiff_t n_rows, ptrdiff_t n_in, const uint16_t *w__oi, const float *b__o,
              float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end);
void fg_gemm_w16_f32(const float *xp__pic, ptrdiff_t n_rows, ptrdiff_t n_in, const uint16_t *w__oi, int fmt,
                     const float *b__o, float *y__no, ptrdiff_t y_stride, ptrdiff_t o_begin, ptrdiff_t o_end,
                     float *wide__oi, int level);

/* ---- int8 and bfloat16 products on AMX tiles (csrc/amx.c) ----------------------------------------
 * fg_amx_available(): the CPU has AMX-INT8/BF16 (and AVX512-VNNI/BW/VL/BF16) and the OS granted the
 * tile state. x is prepared once per product, rows [r_begin, r_end) at a time (whole units of
 * FG_PREP_ROWS; threads take disjoint units), into fg_amx_prep_bytes() bytes, 64-byte aligned;
 * then fg_amx_rows computes y[r, o] for
 * r < n_rows, o in [o_begin, o_end). int8: bitwise fg_qgemm_ref (x rounded to int8 blocks);
 * bfloat16: x rounded to bfloat16 (quant.linear_ref_bf16_activations up to summation order). Each
 * output depends on its rows of w and x only (not on n_rows or the o range). */
int fg_amx_available(void);
ptrdiff_t fg_amx_prep_bytes(int fmt, ptrdiff_t n_rows, ptrdiff_t n_in);
void fg_amx_prep_x_rows(int fmt, const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                        ptrdiff_t r_begin, ptrdiff_t r_end, void *prep);
/* int8: the blocks of items [n * part / n_parts, n * (part + 1) / n_parts) of the n (chunk, block)
 * pairs of x, each written to its own tile and scales (no two parts share a cache line). */
void fg_amx_prep_i8_part(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, int part,
                         int n_parts, void *prep);
void fg_amx_rows(const void *w__oi, const uint16_t *s__ob, const uint16_t *s__gb16, int fmt, const float *b__o,
                 const void *prep, float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                 ptrdiff_t o_begin, ptrdiff_t o_end);

/* ---- One decode step of a GPT-2 stack in one parallel region (csrc/decode.c) --------------------
 * Every extent below is checked by the caller (fastgpt/kernels/_decode.pyx) before the call. */
typedef struct {
    const void *w;       /* [n_out, n_in] row-major: float32, or fmt's 16/8-bit data */
    const uint16_t *s;   /* int8's scales [n_out, n_in / 32], else NULL */
    const uint16_t *sg;  /* int8 on AMX: the same scales by groups of 16 rows (fg_qlinear_rows), or NULL */
    const float *b;      /* [n_out] or NULL */
    ptrdiff_t n_out, n_in;
    int fmt;
} fg_matrix;

typedef struct {
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
    fg_matrix qkv, attn_proj, fc, proj;
    void *k, *v; /* this layer's cache [cache rows, n_head, n_slots, head_dim], in the decoder's kv_fmt */
} fg_block;

/* Rows of the workspace are contiguous: x, h, attn [n_items, n_embd], qkv [n_items, 3 n_embd],
 * ff [n_items, n_ff], last [n_logits, n_embd], logits [n_logits, head.n_out]. prep:
 * fg_decode_prep_bytes() for the most items, 64-byte aligned. scores: four rows of n_slots floats
 * per thread (n_slots apart), scores_stride >= 4 n_slots apart. */
typedef struct {
    ptrdiff_t n_layer, n_embd, n_head, head_dim, n_ff, n_slots;
    float eps;
    int act_kind, level, qlevel; /* level: fg_simd_level(); qlevel: fg_quant_level() (or lower) */
    int kv_fmt;                  /* the cache's FG_W_F32, FG_Q_F16 or FG_Q_BF16 */
    const fg_block *blocks;
    const float *lnf_g, *lnf_b;
    fg_matrix head;
    const int64_t *start;        /* first real slot of each cache row (left padding) */
    /* set by fg_decode_step: workspace row b is a token of cache row rows[b], at slot slots[b];
     * last[j] = ln_f(x[logit_items[j]]) (x[j] when logit_items is NULL) */
    ptrdiff_t n_items, n_logits;
    const int64_t *rows, *slots, *logit_items;
    float *x, *h, *qkv, *attn, *ff, *last, *logits;
    void *prep;
    float *scores;
    ptrdiff_t scores_stride;
} fg_decoder;

/* n_items new tokens through every block: item b is a token of cache row rows[b] at slot slots[b]
 * (the caller checks: slots in range, and the items of one cache row at consecutive slots after
 * that row's cached ones, so that each attends over keys that are stored: a decode step of many
 * rows, a prompt's tokens, or both at once). x's first n_items rows hold their embeddings on entry
 * and the last block's output on return; every block's keys and values are appended at the items'
 * slots; last = ln_f of the n_logits items in logit_items (all items, in order, when NULL);
 * logits = head(last). Bitwise the result of running the same kernels op by op (csrc/decode.c). */
ptrdiff_t fg_decode_prep_bytes(ptrdiff_t n_rows, ptrdiff_t n_embd, ptrdiff_t n_ff, int qlevel);
void fg_decode_step(const fg_decoder *dec, ptrdiff_t n_items, const int64_t *rows, const int64_t *slots,
                    ptrdiff_t n_logits, const int64_t *logit_items, int n_threads);

#endif
