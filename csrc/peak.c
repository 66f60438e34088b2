/* Peak arithmetic probes: how many operations per second one core does of the arithmetic each
 * product kernel uses, measured rather than read off a datasheet (fastgpt bench sets a batch's
 * time against max(weight bytes / bandwidth, operations / this peak)).
 *
 * Each probe runs independent chains in registers (no memory traffic), long enough to hide the
 * instructions' latency: 12 accumulators for the vector ones (latency 4-5 cycles x 2 ports), the 4
 * result tiles of AMX. An operation is a multiply or an add (a multiply-add is 2), as for GFLOP/s.
 * Kinds (FG_PEAK_*): float32 FMA (the float32 and float16 kernels, and bfloat16 without AMX),
 * AVX512-VNNI vpdpbusd (int8 without AMX), AVX512_BF16 vdpbf16ps (the bfloat16 GEMM), and AMX's
 * tdpbssd / tdpbf16ps (int8 and bfloat16 on AMX). fg_peak returns the operations done, or 0 when
 * this CPU (or build) lacks the instructions.
 */
#include "fastgpt_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FG_X86 1
#endif

#define CHAINS 12

#ifdef FG_X86
__attribute__((target("avx512f"))) static double peak_fma(long iters) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    volatile float sink = 0.f;
    for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
    return (double)iters * CHAINS * 16 * 2;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double peak_vnni(long iters) {
    __m512i acc[CHAINS];
    const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_epi32(c);
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], u, s);
    volatile int sink = 0;
    for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_epi32(acc[c]);
    return (double)iters * CHAINS * 64 * 2;
}

/* AVX512_BF16 intrinsics: GCC 10 and clang 9 on (as csrc/hgemm.c) */
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define FG_BF16_INTRINSICS 1
__attribute__((target("avx512f,avx512bf16"))) static double peak_dpbf16(long iters) {
    __m512 acc[CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80), b = (__m512bh)_mm512_set1_epi32(0x3A803A80);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < iters; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    volatile float sink = 0.f;
    for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
    return (double)iters * CHAINS * 32 * 2;
}
#endif

#if defined(__linux__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                           (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define FG_AMX_BUILD 1
#include <stdint.h>
#include <string.h>

/* Full tiles (16 rows x 64 bytes): results in tiles 0-3, two w tiles (4, 5), one x tile (6). */
__attribute__((target("amx-tile,amx-int8,amx-bf16"))) static double peak_amx(long iters, int bf16) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } __attribute__((packed, aligned(64))) cfg;
    _Alignas(64) uint8_t tile[16 * 64];
    memset(&cfg, 0, sizeof cfg);
    memset(tile, 0, sizeof tile);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, tile, 64);
    _tile_loadd(5, tile, 64);
    _tile_loadd(6, tile, 64);
    for (long i = 0; i < iters; i++) {
        if (bf16) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 5, 6);
            _tile_dpbf16ps(2, 4, 6);
            _tile_dpbf16ps(3, 5, 6);
        } else {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 5, 6);
            _tile_dpbssd(2, 4, 6);
            _tile_dpbssd(3, 5, 6);
        }
    }
    _tile_stored(0, tile, 64);
    _tile_release();
    /* per instruction: 16 x 16 outputs, each a dot of 64 int8 or 32 bfloat16 pairs */
    return (double)iters * 4 * 16 * 16 * (bf16 ? 32 : 64) * 2;
}
#endif
#endif /* FG_X86 */

double fg_peak(int kind, long iters) {
#ifdef FG_X86
    __builtin_cpu_init();
    if (kind == FG_PEAK_F32_FMA && fg_simd_level() >= FG_AVX512) return peak_fma(iters);
    if (kind == FG_PEAK_I8_VNNI && fg_q8_activations(FG_AVX512)) return peak_vnni(iters);
#ifdef FG_BF16_INTRINSICS
    if (kind == FG_PEAK_BF16_DOT && fg_bgemm_available()) return peak_dpbf16(iters);
#endif
#ifdef FG_AMX_BUILD
    if (kind == FG_PEAK_I8_AMX && fg_amx_available()) return peak_amx(iters, 0);
    if (kind == FG_PEAK_BF16_AMX && fg_amx_available()) return peak_amx(iters, 1);
#endif
#endif
    (void)kind, (void)iters;
    return 0.0;
}
