/* Products with int8 and bfloat16 weights on AMX tiles (Sapphire Rapids and later), for any number
 * of rows of x: decode of a batch, short prompts and (int8) prefill alike.
 *
 * Dimension legend: n rows of x and y (tokens), i input width, o output rows of w, g groups of 16
 * outputs (one tile of w), c chunks of 16 rows of x (one tile of x), b blocks of 32 inputs (int8),
 * k steps of 32 inputs (bfloat16), k4 / k2 steps of 4 / 2 inputs within a tile row.
 *
 * Why AMX. A decode step of a batch multiplies every weight by every row: 2 x 124M x B operations
 * for GPT-2 124M. AVX-512 VNNI does ~1000 G int8 operations per second on 2 cores, so B = 32 costs
 * ~8 ms against ~4 ms to stream the int8 weights at 33 GB/s; float32 FMAs on widened bfloat16 cost
 * ~25 ms against ~7.5. One tdpbssd multiplies a 16 x 32 tile of w with a 32 x 16 tile of x (8192
 * products) in ~16 cycles, several times VNNI's rate, so the products fall back under the stream.
 * And w needs no packing: the A tile is 16 rows of w read in place (row stride n_in), x is packed
 * once per call into the B tiles (fg_amx_prep_x_rows) and shared by the threads.
 *
 * int8 arithmetic: exactly csrc/qgemm.c's (fastgpt.quant.linear_ref_int8_activations; fg_qgemm_ref
 * bit for bit): x rounded to int8 per row and block of 32 (same rounding as qgemm.c), each block's
 * dot product an exact int32 (tdpbssd, signed x signed), then per block in ascending order
 *     acc = fma(float(dot) * sw[o, b], sx[n, b], acc);   y = acc + b[o]
 * So int8 products give the same bits here, in qgemm.c and in fg_qgemm_ref, for any N, tile or
 * thread split. A tile pass is one block (K = 32), because the scales change per block: the int32
 * tile is stored and converted and scaled per block (the "epilogue", 3 vector ops per 16 products
 * of 32 inputs), then the next block's tile overwrites it. So the tile work per block (w and x
 * loads, zero, tdpbssd, store: ~9.5 ns for two blocks' worth on two tile sets, nearly independent
 * of the tile's width) and the epilogue bound the kernel, not the multiply. amx_i8_nn therefore
 *   - software-pipelines the blocks on two tile sets (the tiles of block b + 1 are issued before
 *     block b's epilogue, into the other half of the results);
 *   - fits the tiles to the rows: nn = 1, 2, 4, 8 or 16 columns of x per tile, and the epilogue
 *     scales the 16 x nn results as nn vectors (outputs x rows in lanes: sw and sx permuted to the
 *     lanes), so 2-8 rows cost 2-8 vectors per block, not 16 (the old code scaled all 16 columns
 *     below 16 rows, and had a special one-row path);
 *   - above 16 rows, multiplies each w tile with two chunks of x (2 result tiles per set).
 * Measured (bench/step_products.py --threads 2 --dtype int8 --head, ms per step of GPT-2 124M's 49
 * products, old code / this, interleaved): N = 1: 5.9 / 5.8, 2: 7.3 / 5.5, 8: 7.3 / 6.0,
 * 16: 7.7 / 7.7, 32: 12.5 / 10.3, 64: 22.8 / 19.4. Weights in cache (one thread, 768 x 768), ns per
 * 16 outputs x 32 inputs: ~16 at N = 1 (~20 before), ~33 at 16 rows, ~55-60 at 32. What did not
 * pay: issuing the tiles 2-3 blocks ahead of the epilogue (4 result buffers), reading the results
 * of block b before block b + 1's tile store, tiles of two blocks then both epilogues, prefetching
 * w two groups ahead: all within noise or slower. The 16-row case stays ~1.25x N = 1: the stored
 * tile is read back through memory (no tile-to-vector move before AMX-AVX512), and the epilogue's
 * 16 vectors per block do not hide under the weight stream.
 * Later: the 9-16 row variant keeps its 16 accumulators in registers. Compiled with the two-chunk
 * case's (32 accumulators, which cannot) and with the chunk stored through a function taking their
 * address, it kept them on the stack, a load and a store per FMA. 2304 x 768 in L2, one thread,
 * 16 rows: 206 -> 172-181 us per product (1, 8 and 32 rows unchanged); a 16-token prompt's first
 * token 1.50 -> 1.44 decode steps (int8, medians of 6 interleaved runs).
 *
 * bfloat16 arithmetic: x rounded to bfloat16 (to nearest even, as quant.float32_to_bf16_bits: the
 * spec is fastgpt.quant.linear_ref_bf16_activations, as for csrc/hgemm.c's GEMM), tdpbf16ps sums the
 * products into the float32 tile over i in steps of pairs, in the hardware's order, then y = tile +
 * b[o]. An output depends on its row of w and of x only: the same bits for any N or thread split.
 * (This order differs from vdpbf16ps's, so every product of one CPU takes this path, from one row up.)
 * Inputs past n_in and rows past the band's end are zero-padded copies (never read past w's end).
 *
 * Non-goals: no float16 (no AMX-FP16 before Granite Rapids; csrc/skinny.c), no threads, no
 * allocation (a few KB of stack), no fast-math. Linux only: the kernel grants the tile state
 * (ARCH_REQ_XCOMP_PERM) once per process; elsewhere, or when refused, fg_amx_available() is 0 and
 * the callers take the AVX-512 paths.
 */
#define _GNU_SOURCE /* syscall() under -std=c11 */
#include <stdint.h>
#include <string.h>

#include "fastgpt_kernels.h"

#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define FG_AMX_BUILD 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "gemm_tile.h"
#include "q8_block.h"
#endif

static ptrdiff_t align64(ptrdiff_t n) { return (n + 63) / 64 * 64; }
static ptrdiff_t chunks_of(ptrdiff_t n_rows) { return (n_rows + 15) / 16; }
static ptrdiff_t ksteps_of(ptrdiff_t n_in) { return (n_in + 31) / 32; }

int fg_amx_available(void) {
#ifdef FG_AMX_BUILD
    static int available = -1; /* a benign race: every thread computes the same answer */
    if (available < 0) {
        __builtin_cpu_init();
        int cpu = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
                  __builtin_cpu_supports("amx-bf16") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                  __builtin_cpu_supports("avx512bf16");
        /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): without it the first tile
         * instruction kills the process */
        available = cpu && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    }
    return available;
#else
    return 0;
#endif
}

/* Prepared x, per chunk c of 16 rows (the columns of rows past n_rows: zeros or stale values, never stored):
 *   int8:     xq[c][b][k4 = 8][16 rows][4] int8 (one B tile per block, 512 B), then
 *             sx[c][b][16] float (at a 64-byte boundary);
 *   bfloat16: xb[c][k][k2 = 16][16 rows][2] bfloat16 (one B tile per step of 32 inputs, 1 KB),
 *             zero past n_in: csrc/hgemm.c's panels of pairs, with 16 k2 per step. */
ptrdiff_t fg_amx_prep_bytes(int fmt, ptrdiff_t n_rows, ptrdiff_t n_in) {
    ptrdiff_t nc = chunks_of(n_rows);
    if (fmt == FG_Q_I8) return align64(nc * (n_in / FG_Q8_BLOCK) * 512) + nc * (n_in / FG_Q8_BLOCK) * 64;
    if (fmt == FG_Q_BF16) return nc * ksteps_of(n_in) * 1024;
    return 0;
}

#ifdef FG_AMX_BUILD
#define TARGET_AVX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c")))
#define TARGET_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,amx-tile,amx-int8,amx-bf16")))

/* The 64-byte tile configuration (palette 1): rows and bytes per row of tiles 0-7. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tiles: w (A), x (B), results (C) from 2 on. Macros of literal numbers: the intrinsics paste them
 * into register names. */
#define T_W 0
#define T_X 1
#define T_Y0 2
#define T_Y1 3
#define T_Y2 4
#define T_Y3 5

/* w tiles of 16 rows x w_cols bytes, x tiles of x_rows x x_cols bytes, n_y result tiles of 16 rows
 * x x_cols bytes. */
TARGET_AMX static void configure(int w_cols, int x_rows, int x_cols, int n_y) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    cfg.rows[T_W] = 16, cfg.colsb[T_W] = (uint16_t)w_cols;
    cfg.rows[T_X] = (uint8_t)x_rows, cfg.colsb[T_X] = (uint16_t)x_cols;
    for (int t = 0; t < n_y; t++) cfg.rows[T_Y0 + t] = 16, cfg.colsb[T_Y0 + t] = (uint16_t)x_cols;
    _tile_loadconfig(&cfg);
}

/* Blocks [b_begin, b_end) of chunk c of x rounded to int8 (q8_round_block, as csrc/qgemm.c): per block, the 16
 * rows' 8 dwords of 4 inputs are transposed in registers into the tile's 8 rows of 16 dwords. A
 * chunk of few rows (a decode step of a small batch) stores its dwords one by one instead; the
 * columns of missing rows then keep whatever they held (their results are never stored). */
TARGET_AVX static void prep_i8_chunk(const float *x, ptrdiff_t xs, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t c,
                                     ptrdiff_t b_begin, ptrdiff_t b_end, int8_t *xq) {
    const ptrdiff_t nb = n_in / FG_Q8_BLOCK, nv = n_rows - 16 * c < 16 ? n_rows - 16 * c : 16;
    float *sx = (float *)(xq + align64(chunks_of(n_rows) * nb * 512));
    for (ptrdiff_t b = b_begin; b < b_end; b++) {
        int8_t *tile = xq + (c * nb + b) * 512;
        __m512 rows[16], t[16];
        _Alignas(64) float d[16] = {0};
        for (ptrdiff_t q = 0; q < (nv < 8 ? nv : 16); q++) {
            __m512i q_lo = _mm512_setzero_si512(), q_hi = _mm512_setzero_si512();
            if (q < nv) d[q] = q8_round_block(x + (16 * c + q) * xs + b * FG_Q8_BLOCK, &q_lo, &q_hi);
            __m256i bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q_lo)),
                                                    _mm512_cvtepi32_epi8(q_hi), 1);
            if (nv < 8) {
                _Alignas(32) int32_t dwords[8];
                _mm256_store_si256((__m256i *)dwords, bytes);
                for (int k4 = 0; k4 < 8; k4++) memcpy(tile + k4 * 64 + q * 4, &dwords[k4], 4);
                sx[(c * nb + b) * 16 + q] = d[q];
            } else {
                rows[q] = _mm512_castsi512_ps(_mm512_castsi256_si512(bytes));
            }
        }
        if (nv < 8) continue;
        transpose16_avx512(rows, t);
        for (int k4 = 0; k4 < 8; k4++) _mm512_store_ps((float *)(tile + k4 * 64), t[k4]);
        _mm512_store_ps(sx + (c * nb + b) * 16, _mm512_load_ps(d));
    }
}
#endif /* FG_AMX_BUILD */

void fg_amx_prep_x_rows(int fmt, const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                        ptrdiff_t r_begin, ptrdiff_t r_end, void *prep) {
#ifdef FG_AMX_BUILD
    const ptrdiff_t c_begin = r_begin / 16, c_end = (r_end + 15) / 16;
    if (fmt == FG_Q_BF16) fg_bf16_pack_x(x__ni, x_stride, n_rows, n_in, c_begin, c_end, ksteps_of(n_in) * 16, prep);
    if (fmt == FG_Q_I8)
        for (ptrdiff_t c = c_begin; c < c_end; c++)
            prep_i8_chunk(x__ni, x_stride, n_rows, n_in, c, 0, n_in / FG_Q8_BLOCK, (int8_t *)prep);
#else
    (void)fmt, (void)x__ni, (void)x_stride, (void)n_rows, (void)n_in, (void)r_begin, (void)r_end, (void)prep;
#endif
}

void fg_amx_prep_i8_part(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, int part,
                         int n_parts, void *prep) {
#ifdef FG_AMX_BUILD
    const ptrdiff_t nb = n_in / FG_Q8_BLOCK, items = chunks_of(n_rows) * nb;
    const ptrdiff_t i_begin = items * part / n_parts, i_end = items * (part + 1) / n_parts;
    for (ptrdiff_t i = i_begin; i < i_end;) { /* item i: block i % nb of chunk i / nb */
        const ptrdiff_t c = i / nb, b_end = (c + 1) * nb < i_end ? nb : i_end - c * nb;
        prep_i8_chunk(x__ni, x_stride, n_rows, n_in, c, i - c * nb, b_end, (int8_t *)prep);
        i = c * nb + b_end;
    }
#else
    (void)x__ni, (void)x_stride, (void)n_rows, (void)n_in, (void)part, (void)n_parts, (void)prep;
#endif
}

#ifdef FG_AMX_BUILD
/* y[n0 + q, g + r] = acc[r][q] + b[g + r] for q < nq rows of x, r < mr outputs: a 16 x 16 transpose.
 * The inline versions are for callers whose accumulators should stay in registers: a call that
 * takes their address puts them in memory for the whole loop that sums them. */
TARGET_AVX __attribute__((always_inline)) static inline void store_group_inline(const __m512 acc[16], const float *bias,
                                                                             ptrdiff_t mr, float *y, ptrdiff_t ys,
                                                                             ptrdiff_t nq) {
    __m512 t[16];
    transpose16_avx512(acc, t);
    __mmask16 keep = (__mmask16)(mr >= 16 ? 0xFFFFu : (1u << mr) - 1u);
    __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias) : _mm512_setzero_ps();
    for (ptrdiff_t q = 0; q < nq; q++)
        _mm512_mask_storeu_ps(y + q * ys, keep, bias ? _mm512_add_ps(t[q], b) : t[q]);
}

TARGET_AVX static void store_group(const __m512 acc[16], const float *bias, ptrdiff_t mr, float *y, ptrdiff_t ys,
                                   ptrdiff_t nq) {
    store_group_inline(acc, bias, mr, y, ys, nq);
}

/* The rows [g, g + mr) of w, bytes [at, at + width) of each, as an A tile: in place when the group is
 * whole (stride `row`), else through buf (zero past mr). Returns the stride. */
static const void *w_tile(const char *wg, ptrdiff_t row, ptrdiff_t mr, ptrdiff_t at, ptrdiff_t width, char *buf,
                          ptrdiff_t *stride) {
    if (mr == 16 && at + width <= row) {
        *stride = row;
        return wg + at;
    }
    memset(buf, 0, 16 * 64);
    ptrdiff_t n = row - at < width ? row - at : width;
    for (ptrdiff_t r = 0; r < mr; r++) memcpy(buf + r * 64, wg + r * row + at, (size_t)n);
    *stride = 64;
    return buf;
}

/* Scales of int8 blocks as floats, transposed per group of 16 rows of w: table[b][r] = sw[g + r, b]
 * (rows past mr repeat row mr - 1), built once per group by 16 x 16 transposes. Wider rows than
 * SW_MAX_BLOCKS blocks convert the 16 scales per block instead. Only for callers without the grouped
 * copy (s__gb16, made once per weight): transposing per call cost a one-row int8 decode step of GPT-2
 * 124M ~12% (3.93 against 3.49 ms, 2 threads, medians of 5 interleaved runs; 16 and 32 rows ~2%). */
#define SW_MAX_BLOCKS 256

TARGET_AVX static void scale_table(const uint16_t *s, ptrdiff_t nb, ptrdiff_t mr, float *table) {
    for (ptrdiff_t b0 = 0; b0 < nb; b0 += 16) {
        __mmask16 m = (__mmask16)(nb - b0 >= 16 ? 0xFFFFu : (1u << (nb - b0)) - 1u);
        __m512 rows[16], t[16];
        for (int r = 0; r < 16; r++)
            rows[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + (r < mr ? r : mr - 1) * nb + b0));
        transpose16_avx512(rows, t);
        for (ptrdiff_t j = 0; j < 16 && b0 + j < nb; j++) _mm512_store_ps(table + (b0 + j) * 16, t[j]);
    }
}

TARGET_AVX static inline const float *block_scales(const uint16_t *s, ptrdiff_t nb, ptrdiff_t mr, ptrdiff_t b,
                                                   const float *table, float *one) {
    if (nb <= SW_MAX_BLOCKS) return table + b * 16;
    for (int r = 0; r < 16; r++) one[r] = _cvtsh_ss(s[(r < mr ? r : mr - 1) * nb + b]);
    return one;
}

/* A line of the next group of w: into L2 (T1) when x takes one pass over each group (a decode
 * step, a short prompt: up to 32 rows int8, 64 bfloat16), into L1 (T0) when it takes several (a
 * long bfloat16 prompt). Measured, not derived (a guess at why: T1 keeps the stream out of L1,
 * where the tiles' loads of this group and of x work, while the passes after the first of a long
 * prompt want the group in L1). Fused steps of GPT-2 124M (fastgpt bench, 2 threads, interleaved
 * rounds, medians), T0 -> T1: int8 32 rows 15.67 -> 14.72 ms (lower in each of 5 rounds), 16 rows
 * 9.09 / 9.03, 1 row 4.14 / 4.19; bfloat16 1 / 16 / 32 rows 9.67 / 13.54 / 19.96 -> 9.45 / 12.88 /
 * 19.08 (8 of 9 pairs lower); a later run of 2 rounds of both dtypes was mixed (one round lower in
 * every case, the other higher in int8), so the gain is a few per cent at most. T1 for every pass
 * made a bfloat16 prompt of 512 tokens (8 passes) 120-124 -> 138-143 ms; with T0 there, 126-129
 * against 124-129 before. */
TARGET_AMX __attribute__((always_inline)) static inline void prefetch_next(const char *p, int one_pass) {
    if (one_pass)
        _mm_prefetch(p, _MM_HINT_T1);
    else
        _mm_prefetch(p, _MM_HINT_T0);
}

/* Tiles of amx_i8's pipeline: blocks alternate between two sets (w, x, results of 2 chunks), so that
 * the tile work of block b + 1 does not wait for block b's result tiles to be stored. */
#define T_W_EVEN 0
#define T_W_ODD 1
#define T_X_EVEN 2
#define T_X_ODD 3
#define T_Y_EVEN 4
#define T_Y_ODD 5
#define T_Y2_EVEN 6
#define T_Y2_ODD 7

/* Both sets: w tiles of 16 outputs x 32 inputs, x tiles of 8 steps of 4 inputs x nn rows, result
 * tiles of 16 outputs x nn rows. */
TARGET_AMX static void configure_i8(int nn) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = T_W_EVEN; t <= T_W_ODD; t++) cfg.rows[t] = 16, cfg.colsb[t] = 32;
    for (int t = T_X_EVEN; t <= T_X_ODD; t++) cfg.rows[t] = 8, cfg.colsb[t] = (uint16_t)(4 * nn);
    for (int t = T_Y_EVEN; t <= T_Y2_ODD; t++) cfg.rows[t] = 16, cfg.colsb[t] = (uint16_t)(4 * nn);
    _tile_loadconfig(&cfg);
}

/* dots = (w tile already in TW) . x tile of one block, stored as 16 outputs x nn rows (stride 4 nn
 * bytes). */
#define I8_CHUNK_TILES(TW, TX, TY, xt, dots, nn)                                                               \
    do {                                                                                                   \
        _tile_loadd(TX, xt, 64);                                                                           \
        _tile_zero(TY);                                                                                    \
        _tile_dpbssd(TY, TW, TX);                                                                          \
        _tile_stored(TY, dots, 4 * (nn));                                                                  \
    } while (0)

/* y[q, r] = acc + bias[r] for q < nq rows of x, r < mr outputs, from amx_i8_nn's accumulators of
 * one chunk (nn vectors, lane e of vector j: output (16 j + e) / nn, row (16 j + e) % nn). */
TARGET_AVX __attribute__((always_inline)) static inline void store_chunk_inline(const __m512 *acc, int nn,
                                                                             const float *bias, ptrdiff_t mr, float *y,
                                                                             ptrdiff_t ys, ptrdiff_t nq) {
    if (nn == 16) {
        store_group_inline(acc, bias, mr, y, ys, nq);
        return;
    }
    _Alignas(64) float lanes[256];
    for (int j = 0; j < nn; j++) _mm512_store_ps(lanes + j * 16, acc[j]);
    const __mmask16 keep = (__mmask16)(mr >= 16 ? 0xFFFFu : (1u << mr) - 1u);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(keep, bias) : _mm512_setzero_ps();
    const __m512i outputs = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                               _mm512_set1_epi32(nn));
    for (ptrdiff_t q = 0; q < nq; q++) {
        __m512 row = _mm512_i32gather_ps(_mm512_add_epi32(outputs, _mm512_set1_epi32((int)q)), lanes, 4);
        _mm512_mask_storeu_ps(y + q * ys, keep, bias ? _mm512_add_ps(row, b) : row);
    }
}

TARGET_AVX static void store_chunk(const __m512 *acc, int nn, const float *bias, ptrdiff_t mr, float *y, ptrdiff_t ys,
                                   ptrdiff_t nq) {
    store_chunk_inline(acc, nn, bias, mr, y, ys, nq);
}

/* y for rows [o_begin, o_end) of w, nn rows of x per tile (1, 2, 4, 8 or 16: n_rows rounded up to
 * a power of 2, rows past n_rows computed and dropped). A block's int32 results are 16 outputs x nn
 * rows, which fill nn vectors: lane e of vector j is output (16 j + e) / nn, row (16 j + e) % nn.
 * The epilogue scales them in that layout (sw permuted to the lanes' outputs, sx to their rows), so a
 * few rows cost a few vectors per block, not 16. Blocks are software-pipelined: the tiles of block
 * b + 1 go on the other tile set, into the other half of `dots`, before the epilogue of block b.
 * Above 16 rows, two chunks of x share each w tile (result tiles T_Y and T_Y2). */
TARGET_AMX __attribute__((always_inline)) static inline void
amx_i8_nn(const int8_t *w, const uint16_t *s, const uint16_t *sg, const float *bias, const int8_t *xq,
          ptrdiff_t n_rows, ptrdiff_t n_in, float *y, ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end, const int nn,
          const int two_chunks) {
    const ptrdiff_t nb = n_in / FG_Q8_BLOCK, nc = chunks_of(n_rows);
    const float *sx = (const float *)(xq + align64(nc * nb * 512));
    _Alignas(64) int32_t dots[2][2][256];
    _Alignas(64) char pad[16 * 64];
    _Alignas(64) float table[SW_MAX_BLOCKS * 16], one[16];
    __m512i sw_lanes[8];
    for (int j = 0; j < (nn < 16 ? nn : 0); j++)
        for (int e = 0; e < 16; e++) ((int32_t *)&sw_lanes[j])[e] = (16 * j + e) / nn;
    const __m512i sx_lanes = _mm512_and_si512(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                              _mm512_set1_epi32(nn - 1));
    const int one_pass = nc <= 1 + two_chunks;
    configure_i8(nn);
    for (ptrdiff_t g = o_begin; g < o_end; g += 16) {
        const ptrdiff_t mr = o_end - g < 16 ? o_end - g : 16;
        const int8_t *wg = w + g * n_in;
        /* this group's scales by block, 16 rows each: given, or transposed here */
        const uint16_t *sgg = sg != NULL ? sg + g * nb : NULL;
        if (sgg == NULL && nb <= SW_MAX_BLOCKS) scale_table(s + g * nb, nb, mr, table);
        for (ptrdiff_t c0 = 0; c0 < nc; c0 += 1 + two_chunks) {
            const int pair = two_chunks && c0 + 1 < nc;
            __m512 acc[2][16];
            for (int j = 0; j < nn; j++) acc[0][j] = acc[1][j] = _mm512_setzero_ps();
            for (ptrdiff_t b = 0; b <= nb; b++) {
                if (b < nb) {
                    if (c0 == 0) /* the next group of w: line b / 2 of 8 of its rows per block */
                        for (int p = 0; p < 8; p++)
                            prefetch_next(pf_at((const char *)wg, (16 + (b & 1) * 8 + p) * n_in + b / 2 * 64),
                                          one_pass);
                    ptrdiff_t stride;
                    const void *a = w_tile((const char *)wg, n_in, mr, b * 32, 32, pad, &stride);
                    const int8_t *xt = xq + (c0 * nb + b) * 512;
                    if (b & 1) {
                        _tile_loadd(T_W_ODD, a, stride);
                        I8_CHUNK_TILES(T_W_ODD, T_X_ODD, T_Y_ODD, xt, dots[1][0], nn);
                        if (pair) I8_CHUNK_TILES(T_W_ODD, T_X_ODD, T_Y2_ODD, xt + nb * 512, dots[1][1], nn);
                    } else {
                        _tile_loadd(T_W_EVEN, a, stride);
                        I8_CHUNK_TILES(T_W_EVEN, T_X_EVEN, T_Y_EVEN, xt, dots[0][0], nn);
                        if (pair) I8_CHUNK_TILES(T_W_EVEN, T_X_EVEN, T_Y2_EVEN, xt + nb * 512, dots[0][1], nn);
                    }
                }
                if (b == 0) continue;
                const ptrdiff_t e = b - 1; /* the epilogue of the previous block */
                const float *sw = one;
                __m512 swv;
                if (sgg != NULL) {
                    swv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sgg + e * 16)));
                    if (nn == 16) _mm512_store_ps(one, swv);     /* read back one by one below */
                } else {
                    sw = block_scales(s + g * nb, nb, mr, e, table, one);
                    swv = _mm512_load_ps(sw);
                }
                for (int k = 0; k <= pair; k++) {
                    const __m512 sxv = _mm512_load_ps(sx + ((c0 + k) * nb + e) * 16);
                    const __m512 sx_row = nn == 16 ? sxv : _mm512_permutexvar_ps(sx_lanes, sxv);
                    for (int j = 0; j < nn; j++) {
                        const __m512 sw_row = nn == 1    ? swv
                                              : nn == 16 ? _mm512_set1_ps(sw[j])
                                                         : _mm512_permutexvar_ps(sw_lanes[j], swv);
                        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(dots[e & 1][k] + j * 16)), sw_row);
                        acc[k][j] = _mm512_fmadd_ps(t, sx_row, acc[k][j]);
                    }
                }
            }
            for (ptrdiff_t c = c0; c <= c0 + pair; c++) {
                const ptrdiff_t nq = n_rows - c * 16 < 16 ? n_rows - c * 16 : 16;
                if (two_chunks) /* 32 accumulators do not fit in registers anyway */
                    store_chunk(acc[c - c0], nn, bias ? bias + g : NULL, mr, y + c * 16 * ys + g, ys, nq);
                else
                    store_chunk_inline(acc[0], nn, bias ? bias + g : NULL, mr, y + c * 16 * ys + g, ys, nq);
            }
        }
    }
    _tile_release();
}

TARGET_AMX static void amx_i8(const int8_t *w, const uint16_t *s, const uint16_t *sg, const float *bias,
                              const int8_t *xq, ptrdiff_t n_rows, ptrdiff_t n_in, float *y, ptrdiff_t ys,
                              ptrdiff_t o_begin, ptrdiff_t o_end) {
    if (n_rows == 1) amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 1, 0);
    else if (n_rows == 2) amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 2, 0);
    else if (n_rows <= 4) amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 4, 0);
    else if (n_rows <= 8) amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 8, 0);
    else if (n_rows <= 16) amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 16, 0);
    else amx_i8_nn(w, s, sg, bias, xq, n_rows, n_in, y, ys, o_begin, o_end, 16, 1);
}

/* Up to 4 chunks of x (64 rows) per pass over a group of w: tiles 2-5 hold their sums. */
#define BF_CHUNKS 4

TARGET_AMX static void amx_bf16(const uint16_t *w, const float *bias, const uint32_t *xb, ptrdiff_t n_rows,
                                ptrdiff_t n_in, float *y, ptrdiff_t ys, ptrdiff_t o_begin, ptrdiff_t o_end) {
    const ptrdiff_t nk = ksteps_of(n_in), nc = chunks_of(n_rows), row = n_in * 2;
    _Alignas(64) char pad[16 * 64];
    _Alignas(64) float out[256];
    const int one_pass = nc <= BF_CHUNKS;
    configure(64, 16, 64, BF_CHUNKS);
    for (ptrdiff_t g = o_begin; g < o_end; g += 16) {
        const ptrdiff_t mr = o_end - g < 16 ? o_end - g : 16;
        const char *wg = (const char *)(w + g * n_in);
        for (ptrdiff_t c0 = 0; c0 < nc; c0 += BF_CHUNKS) {
            const ptrdiff_t ncp = nc - c0 < BF_CHUNKS ? nc - c0 : BF_CHUNKS;
            _tile_zero(T_Y0);
            if (ncp > 1) _tile_zero(T_Y1);
            if (ncp > 2) _tile_zero(T_Y2);
            if (ncp > 3) _tile_zero(T_Y3);
            for (ptrdiff_t k = 0; k < nk; k++) {
                if (c0 == 0) /* the next group of w, a line of each row per step */
                    for (int p = 0; p < 16; p++) prefetch_next(pf_at(wg, (16 + p) * row + k * 64), one_pass);
                ptrdiff_t stride;
                const void *a = w_tile(wg, row, mr, k * 64, 64, pad, &stride);
                _tile_loadd(T_W, a, stride);
                const uint32_t *xk = xb + (c0 * nk + k) * 256;
                _tile_loadd(T_X, xk, 64);
                _tile_dpbf16ps(T_Y0, T_W, T_X);
                if (ncp > 1) {
                    _tile_loadd(T_X, xk + nk * 256, 64);
                    _tile_dpbf16ps(T_Y1, T_W, T_X);
                }
                if (ncp > 2) {
                    _tile_loadd(T_X, xk + 2 * nk * 256, 64);
                    _tile_dpbf16ps(T_Y2, T_W, T_X);
                }
                if (ncp > 3) {
                    _tile_loadd(T_X, xk + 3 * nk * 256, 64);
                    _tile_dpbf16ps(T_Y3, T_W, T_X);
                }
            }
            for (ptrdiff_t c = c0; c < c0 + ncp; c++) {
                switch (c - c0) {
                case 0: _tile_stored(T_Y0, out, 64); break;
                case 1: _tile_stored(T_Y1, out, 64); break;
                case 2: _tile_stored(T_Y2, out, 64); break;
                default: _tile_stored(T_Y3, out, 64); break;
                }
                __m512 acc[16];
                for (int r = 0; r < 16; r++) acc[r] = _mm512_load_ps(out + r * 16);
                store_group(acc, bias ? bias + g : NULL, mr, y + c * 16 * ys + g, ys,
                            n_rows - c * 16 < 16 ? n_rows - c * 16 : 16);
            }
        }
    }
    _tile_release();
}
#endif /* FG_AMX_BUILD */

void fg_amx_rows(const void *w__oi, const uint16_t *s__ob, const uint16_t *s__gb16, int fmt, const float *b__o,
                 const void *prep, float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                 ptrdiff_t o_begin, ptrdiff_t o_end) {
    if (n_rows <= 0 || o_end <= o_begin) return;
#ifdef FG_AMX_BUILD
    /* the grouped scales start at whole groups: a band that does not is served from s__ob */
    if (fmt == FG_Q_I8)
        amx_i8(w__oi, s__ob, o_begin % 16 == 0 ? s__gb16 : NULL, b__o, prep, n_rows, n_in, y__no, y_stride, o_begin,
               o_end);
    if (fmt == FG_Q_BF16) amx_bf16(w__oi, b__o, prep, n_rows, n_in, y__no, y_stride, o_begin, o_end);
#else
    (void)w__oi, (void)s__ob, (void)s__gb16, (void)fmt, (void)b__o, (void)prep, (void)y__no, (void)y_stride,
        (void)n_in;
#endif
}
