/* The prefill product y = x @ W.T + b for int8 weights, in integers: AVX-512 VNNI (vpdpbusd).
 *
 * Dimension legend: n rows of x and y (tokens), i input width, o output rows of W, b blocks of
 * 32 inputs (one int8 weight scale each), g groups of 16 output rows (one zmm of outputs),
 * k4 steps of 4 inputs within a block (one vpdpbusd).
 *
 * Arithmetic (fastgpt.quant.linear_ref_int8_activations is the spec, fg_qgemm_ref the same in
 * C): each block of 32 inputs of each row of x is rounded to int8, symmetric absmax:
 * sx = absmax / 127, xq = clamp(rint(x * (127 / absmax)), -127, 127) (round to nearest even),
 * and then
 *     y[n, o] = bias[o] + sum over b of  (float(dot_b) * sw[o, b]) * sx[n, b]
 * where dot_b = sum over the block of xq * wq is exact in int32 (|dot| <= 32 * 127 * 127), the
 * first product is rounded and the second is fused into the running sum (one FMA per block, b in
 * ascending order). So the only float rounding is that of the per-block products and sum: any
 * tiling, thread split or N gives bitwise the same y, and equals fg_qgemm_ref bit for bit.
 * Rounding x to int8 adds an NMSE of 4e-6 .. 3e-5 to each product (measured on the bundled
 * model's activations, ~3e-5 on Gaussian x; int8 weights alone give ~2e-5); over a whole model it
 * took kjv-tiny's logits from 2e-5 to 6e-5 NMSE against float32 and its perplexity from +0.001% to
 * +0.03%. The price of the integer product, paid only in prefill (decode keeps x in int16, see
 * quant.c). Blocks of x with absmax below 2^-100 (where 127 / absmax overflows or loses
 * precision) count as zero. A block holding NaN or inf gets sx = NaN and xq = 0, so every output
 * of that row is NaN (float32 would give NaN or +-inf depending on the weights).
 *
 * Design. vpdpbusd multiplies unsigned by signed bytes, so x is stored as u8 = xq + 128 and each
 * block's int32 accumulator starts at -128 * sum(wq over the block) (precomputed when W is
 * packed), which makes it exactly dot_b. A tile of W (rows o_begin..o_end of the caller's choice,
 * sized for L2) is packed per thread as
 *     tile[g][b] = { wq[k4][16 rows][4 bytes] (512 B), corr int32[16] (64 B), sw float[16] (64 B) }
 * so that one 64-byte load gives the next 4 inputs of 16 rows, and x is packed once per call as
 * u8 rows [n][i] plus float sx[n][b] (rows padded to QG_R with u8 128, sx 0). The microkernel
 * keeps QG_G = 2 groups (32 outputs) x QG_R = 6 rows of x: 12 int32 and 12 float accumulators;
 * per k4 it loads 2 vectors of W and broadcasts 6 dwords of x into 12 vpdpbusd, and per block it
 * converts, scales (vmulps by sw) and FMAs (by the broadcast sx) each accumulator, 3 ops per 8
 * vpdpbusd. Loop order: rows of x outer (a 6-row chunk of x stays in L1), groups of the tile
 * inner (the tile streams from L2). Output rows of y are 16 contiguous floats per accumulator:
 * stored directly, masked past o_end, no transpose. Measured at N = 512 on GPT-2 124M's shapes
 * (Zen 5): ~600 G int8 ops/s on one core, ~1100 on two, 2.8-3x the dequantize + float32 GEMM
 * path; 4 rows per kernel ran the same, 7 spill accumulators (~290), tiles of 128-512 KB alike.
 *
 * Non-goals: no K blocking (I <= 3072 here), no threads (the Cython wrapper runs a prange over
 * tiles), no allocation, no fast-math. Callers check fg_qgemm_available(): without VNNI the
 * prefill dequantizes tiles to float32 for csrc/gemm.c instead.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastgpt_kernels.h"
#include "half.h"
#include "q8_block.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define QG_R 6                                  /* rows of x per microkernel */
#define QG_G 2                                  /* groups of 16 outputs per microkernel */
#define QG_BLOCK_BYTES (512 + 64 + 64)          /* one (group, block) of a packed tile */

static ptrdiff_t align64(ptrdiff_t n) { return (n + 63) / 64 * 64; }

ptrdiff_t fg_qgemm_rows_padded(ptrdiff_t n_rows) { return (n_rows + QG_R - 1) / QG_R * QG_R; }

ptrdiff_t fg_qgemm_x_bytes(ptrdiff_t n_rows, ptrdiff_t n_in) {
    ptrdiff_t n_pad = fg_qgemm_rows_padded(n_rows);
    return align64(n_pad * n_in) + align64(n_pad * (n_in / FG_Q8_BLOCK) * (ptrdiff_t)sizeof(float));
}

ptrdiff_t fg_qgemm_tile_bytes(ptrdiff_t n_in, ptrdiff_t n_o) {
    return (n_o + 15) / 16 * (n_in / FG_Q8_BLOCK) * QG_BLOCK_BYTES;
}

/* One block of 32 inputs of x: the int8 values and the scale (see the header). */
static void quantize_block_ref(const float *x, int8_t q[FG_Q8_BLOCK], float *sx) {
    float m = 0.f;
    int finite = 1;
    for (int k = 0; k < FG_Q8_BLOCK; k++) {
        finite &= isfinite(x[k]) != 0;
        m = fabsf(x[k]) > m ? fabsf(x[k]) : m;
    }
    if (!finite || !(m >= Q8_TINY)) {
        memset(q, 0, FG_Q8_BLOCK);
        *sx = finite ? 0.f : NAN;
        return;
    }
    float inv = 127.f / m;
    for (int k = 0; k < FG_Q8_BLOCK; k++) {
        float r = rintf(x[k] * inv);
        q[k] = (int8_t)(r > 127.f ? 127.f : r < -127.f ? -127.f : r);
    }
    *sx = m / 127.f;
}

void fg_qgemm_ref(const int8_t *w__oi, const uint16_t *s__ob, const float *b__o, const float *x__ni,
                  ptrdiff_t x_stride, float *y__no, ptrdiff_t y_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                  ptrdiff_t o_begin, ptrdiff_t o_end) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK;
    for (ptrdiff_t n = 0; n < n_rows; n++) {
        for (ptrdiff_t o = o_begin; o < o_end; o++) {
            float acc = 0.f;
            for (ptrdiff_t b = 0; b < n_b; b++) {
                int8_t q[FG_Q8_BLOCK];
                float sx;   /* recomputed per output: this is the slow reference */
                quantize_block_ref(x__ni + n * x_stride + b * FG_Q8_BLOCK, q, &sx);
                int32_t dot = 0;
                for (int k = 0; k < FG_Q8_BLOCK; k++) dot += (int32_t)q[k] * w__oi[o * n_in + b * FG_Q8_BLOCK + k];
                float t = (float)dot * f16_to_f32(s__ob[o * n_b + b]);
                acc = fmaf(t, sx, acc);
            }
            y__no[n * y_stride + o] = acc + (b__o ? b__o[o] : 0.f);
        }
    }
}

int fg_qgemm_available(void) {
#ifdef FG_X86
    __builtin_cpu_init();
    return fg_quant_level() >= FG_AVX512 && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#ifdef FG_X86
#define TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")))

/* Rows [r_begin, r_end) of the packed x (rows past n_rows are padding: u8 128, sx 0). */
TARGET_VNNI void fg_qgemm_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in,
                                 ptrdiff_t r_begin, ptrdiff_t r_end, void *xbuf) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n_pad = fg_qgemm_rows_padded(n_rows);
    uint8_t *xq = (uint8_t *)xbuf;
    float *xsc = (float *)((char *)xbuf + align64(n_pad * n_in));
    const __m512i off = _mm512_set1_epi32(128);
    for (ptrdiff_t r = r_begin; r < r_end; r++) {
        if (r >= n_rows) {
            memset(xq + r * n_in, 128, (size_t)n_in);
            memset(xsc + r * n_b, 0, (size_t)n_b * sizeof(float));
            continue;
        }
        for (ptrdiff_t b = 0; b < n_b; b++) {
            __m512i q_lo, q_hi;
            xsc[r * n_b + b] = q8_round_block(x__ni + r * x_stride + b * FG_Q8_BLOCK, &q_lo, &q_hi);
            _mm_storeu_si128((__m128i *)(xq + r * n_in + b * FG_Q8_BLOCK), _mm512_cvtepi32_epi8(_mm512_add_epi32(q_lo, off)));
            _mm_storeu_si128((__m128i *)(xq + r * n_in + b * FG_Q8_BLOCK + 16),
                             _mm512_cvtepi32_epi8(_mm512_add_epi32(q_hi, off)));
        }
    }
}

/* Rows [o_begin, o_end) of W into a tile (fg_qgemm_tile_bytes(n_in, o_end - o_begin) bytes, 64-byte
 * aligned); rows past o_end within the last group are zeros (weights, sums and scales).
 * Per (group, block) the 16 rows x 8 dwords of weights are transposed in registers: rows j and
 * j + 8 share a zmm, and an 8 x 8 dword transpose of both halves at once (unpack 32, unpack 64,
 * then one two-source permute per output) gives dword k4 of all 16 rows in order. (Gathers ran
 * at ~7 GB/s of W per core, ~7% of a 512-row product.) */
TARGET_VNNI void fg_qgemm_pack_w(const int8_t *w__oi, const uint16_t *s__ob, ptrdiff_t n_in, ptrdiff_t o_begin,
                                 ptrdiff_t o_end, void *tile) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n_g = (o_end - o_begin + 15) / 16;
    const __m512i ones = _mm512_set1_epi8(1);
    /* out[k4] from u (rows 0-3 | 8-11 per 128-bit lane pair) and v (rows 4-7 | 12-15): k4 < 4 takes
     * the even 128-bit lanes of u_k4 and v_k4, k4 >= 4 the odd ones */
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(4));
    for (ptrdiff_t g = 0; g < n_g; g++) {
        ptrdiff_t o0 = o_begin + 16 * g, nv = o_end - o0 < 16 ? o_end - o0 : 16;
        const int8_t *wg = w__oi + o0 * n_in;
        for (ptrdiff_t b = 0; b < n_b; b++) {
            char *dst = (char *)tile + (g * n_b + b) * QG_BLOCK_BYTES;
            __m512i z[8], t[8], u[8];
            for (int j = 0; j < 8; j++) {
                const int8_t *r0 = wg + j * n_in + b * FG_Q8_BLOCK, *r1 = r0 + 8 * n_in;
                __m256i a = _mm256_maskz_loadu_epi32(j < nv ? 0xFF : 0, r0);
                __m256i c = _mm256_maskz_loadu_epi32(j + 8 < nv ? 0xFF : 0, r1);
                z[j] = _mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1);
            }
            for (int j = 0; j < 8; j += 2) {
                t[j] = _mm512_unpacklo_epi32(z[j], z[j + 1]);
                t[j + 1] = _mm512_unpackhi_epi32(z[j], z[j + 1]);
            }
            for (int j = 0; j < 8; j += 4) { /* u[j + k] lane: 4 rows of dwords k and k + 4 */
                u[j + 0] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
                u[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
                u[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
                u[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
            }
            __m512i sum = _mm512_setzero_si512();
            for (int k4 = 0; k4 < 8; k4++) {
                __m512i v = _mm512_permutex2var_epi32(u[k4 & 3], k4 < 4 ? lo : hi, u[4 + (k4 & 3)]);
                _mm512_store_si512((__m512i *)(dst + 64 * k4), v);
                sum = _mm512_dpbusd_epi32(sum, ones, v);
            }
            _mm512_store_si512((__m512i *)(dst + 512), _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
            uint16_t sh[16] = {0};
            for (ptrdiff_t j = 0; j < nv; j++) sh[j] = s__ob[(o0 + j) * n_b + b];
            _mm512_store_ps((float *)(dst + 576), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sh)));
        }
    }
}

/* y[r, 16 G outputs] for R rows of x (the first nr stored) against G groups of the tile from
 * wt (groups g_stride bytes apart); no_valid outputs stored (masked), bias added last. */
TARGET_VNNI __attribute__((always_inline)) static inline void
qgemm_kernel(const char *wt, ptrdiff_t g_stride, ptrdiff_t n_b, const uint8_t *xq, const float *xsc, ptrdiff_t n_in,
             ptrdiff_t nr, ptrdiff_t no_valid, const float *bias, float *y, ptrdiff_t ys, const int G, const int R) {
    __m512 accf[QG_R][QG_G];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) accf[r][g] = _mm512_setzero_ps();
    for (ptrdiff_t b = 0; b < n_b; b++) {
        const char *wb = wt + b * QG_BLOCK_BYTES;
        __m512i acci[QG_R][QG_G];
        for (int g = 0; g < G; g++) {
            __m512i corr = _mm512_load_si512((const __m512i *)(wb + g * g_stride + 512));
            for (int r = 0; r < R; r++) acci[r][g] = corr;
        }
        const uint8_t *xb = xq + b * FG_Q8_BLOCK;
        for (int k4 = 0; k4 < 8; k4++) {
            __m512i wv[QG_G];
            for (int g = 0; g < G; g++) wv[g] = _mm512_load_si512((const __m512i *)(wb + g * g_stride + 64 * k4));
            for (int r = 0; r < R; r++) {
                int32_t d;
                memcpy(&d, xb + r * n_in + 4 * k4, 4);
                __m512i xv = _mm512_set1_epi32(d);
                for (int g = 0; g < G; g++) acci[r][g] = _mm512_dpbusd_epi32(acci[r][g], xv, wv[g]);
            }
        }
        for (int g = 0; g < G; g++) {
            __m512 sw = _mm512_load_ps((const float *)(wb + g * g_stride + 576));
            for (int r = 0; r < R; r++)
                accf[r][g] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acci[r][g]), sw),
                                             _mm512_set1_ps(xsc[r * n_b + b]), accf[r][g]);
        }
    }
    for (int g = 0; g < G; g++) {
        ptrdiff_t nv = no_valid - 16 * g;
        if (nv <= 0) break;
        __mmask16 keep = nv >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nv) - 1u);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(keep, bias + 16 * g) : _mm512_setzero_ps();
        for (int r = 0; r < R; r++)
            if (r < nr) _mm512_mask_storeu_ps(y + r * ys + 16 * g, keep, _mm512_add_ps(accf[r][g], bv));
    }
}

TARGET_VNNI static void qgemm_kernel_2(const char *wt, ptrdiff_t g_stride, ptrdiff_t n_b, const uint8_t *xq,
                                       const float *xsc, ptrdiff_t n_in, ptrdiff_t nr, ptrdiff_t no_valid,
                                       const float *bias, float *y, ptrdiff_t ys) {
    qgemm_kernel(wt, g_stride, n_b, xq, xsc, n_in, nr, no_valid, bias, y, ys, 2, QG_R);
}

TARGET_VNNI static void qgemm_kernel_1(const char *wt, ptrdiff_t g_stride, ptrdiff_t n_b, const uint8_t *xq,
                                       const float *xsc, ptrdiff_t n_in, ptrdiff_t nr, ptrdiff_t no_valid,
                                       const float *bias, float *y, ptrdiff_t ys) {
    qgemm_kernel(wt, g_stride, n_b, xq, xsc, n_in, nr, no_valid, bias, y, ys, 1, QG_R);
}

void fg_qgemm(const void *tile, ptrdiff_t n_o, const void *xbuf, ptrdiff_t n_rows, ptrdiff_t n_in,
              const float *b__o, float *y__no, ptrdiff_t y_stride) {
    const ptrdiff_t n_b = n_in / FG_Q8_BLOCK, n_g = (n_o + 15) / 16, g_stride = n_b * QG_BLOCK_BYTES;
    const uint8_t *xq = (const uint8_t *)xbuf;
    const float *xsc = (const float *)((const char *)xbuf + align64(fg_qgemm_rows_padded(n_rows) * n_in));
    for (ptrdiff_t r = 0; r < n_rows; r += QG_R) {
        ptrdiff_t nr = n_rows - r < QG_R ? n_rows - r : QG_R;
        for (ptrdiff_t g = 0; g < n_g; g += QG_G) {
            const char *wt = (const char *)tile + g * g_stride;
            const float *bg = b__o ? b__o + 16 * g : NULL;
            float *yg = y__no + r * y_stride + 16 * g;
            if (n_g - g >= 2)
                qgemm_kernel_2(wt, g_stride, n_b, xq + r * n_in, xsc + r * n_b, n_in, nr, n_o - 16 * g, bg, yg, y_stride);
            else
                qgemm_kernel_1(wt, g_stride, n_b, xq + r * n_in, xsc + r * n_b, n_in, nr, n_o - 16 * g, bg, yg, y_stride);
        }
    }
}
#else
void fg_qgemm_pack_x(const float *x__ni, ptrdiff_t x_stride, ptrdiff_t n_rows, ptrdiff_t n_in, ptrdiff_t r_begin,
                     ptrdiff_t r_end, void *xbuf) {
    (void)x__ni, (void)x_stride, (void)n_rows, (void)n_in, (void)r_begin, (void)r_end, (void)xbuf;
}
void fg_qgemm_pack_w(const int8_t *w__oi, const uint16_t *s__ob, ptrdiff_t n_in, ptrdiff_t o_begin, ptrdiff_t o_end,
                     void *tile) {
    (void)w__oi, (void)s__ob, (void)n_in, (void)o_begin, (void)o_end, (void)tile;
}
void fg_qgemm(const void *tile, ptrdiff_t n_o, const void *xbuf, ptrdiff_t n_rows, ptrdiff_t n_in,
              const float *b__o, float *y__no, ptrdiff_t y_stride) {
    (void)tile, (void)n_o, (void)xbuf, (void)n_rows, (void)n_in, (void)b__o, (void)y__no, (void)y_stride;
}
#endif /* FG_X86 */
