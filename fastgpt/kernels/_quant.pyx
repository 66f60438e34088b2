# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""out (N, O) = x (N, I) @ W.T + b with W a QuantizedWeight (bfloat16, float16 or int8 blocks).

- N <= SKINNY_MAX_ROWS (decode of a batch, short prompts; float16 on AVX-512: up to
  F16_SKINNY_MAX_ROWS): the skinny products, parallel over bands of output rows like
  _linear.linear, w streamed once per call: on AMX (Sapphire Rapids on) int8 and bfloat16 on tiles
  (csrc/amx.c), x rounded to int8 blocks / bfloat16; otherwise int8 by AVX512-VNNI with x rounded to
  int8 blocks (csrc/quant.c) and 16-bit w widened in registers (csrc/skinny.c). No float32 copy of W
  exists at any point. Each output's summation order depends on I only, so a row gives the same
  bits alone or in any batch of up to SKINNY_MAX_ROWS rows (see int8_activations).
- More rows, bfloat16 on a CPU with AVX512_BF16: csrc/hgemm.c's GEMM with vdpbf16ps, x rounded
  to bfloat16 and packed once (spec: fastgpt.quant.linear_ref_bf16_activations), w read in place:
  ~1.8x the float32 GEMM.
- More rows, float16 (or bfloat16 without AVX512_BF16) on AVX-512: csrc/hgemm.c widens 8 rows of
  w at a time into each thread's float32 scratch as the first panel group of x reaches them,
  overlapping the widening with the stream, and runs the float32 GEMM tile on them.
- More rows (prefill), int8 on a CPU with AVX512-VNNI: the integer GEMM of csrc/qgemm.c. x is
  rounded to int8 per block of 32 (fastgpt.quant.linear_ref_int8_activations is the spec; it
  adds an NMSE of ~1e-5 to the product) and packed once, shared by the threads; each thread
  packs a tile of W's rows (sized for L2) into its own scratch and multiplies it with vpdpbusd,
  ~3x the float32 GEMM below. Bitwise the AMX skinny product's result.
- More rows otherwise (int8 without VNNI, AVX2): each thread dequantizes a tile of W's rows into its own float32 scratch
  (sized to stay in L2) and runs the float32 GEMM of csrc/gemm.c on it, against x packed once
  and shared. The dequantization is O(O * I) against the GEMM's O(N * O * I). Without AVX2
  the tile goes through NumPy's matmul (BLAS) instead.

Weights arrive as the arrays of a fastgpt.quant.QuantizedWeight; every extent is checked here
before the GIL is released.
"""
import numpy as np

from cython.parallel cimport parallel, prange
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free

from ._csrc cimport (FG_AMX, FG_AVX2, FG_AVX512, FG_Q8_BLOCK, FG_Q_BF16, FG_Q_F16, FG_Q_I8, fg_amx_available,
                     fg_bgemm, fg_bgemm_available, fg_bgemm_pack_x, fg_bgemm_x_bytes, fg_dequantize_rows,
                     fg_gemm_f32, fg_gemm_pack_x_f32, fg_gemm_w16_f32, fg_q8_activations, fg_qgemm,
                     fg_qgemm_available, fg_qgemm_pack_w, fg_qgemm_pack_x, fg_qgemm_ref, fg_qgemm_rows_padded,
                     fg_qgemm_tile_bytes, fg_qgemm_x_bytes, fg_qlinear_rows, fg_qlinear_rows_ref, fg_qprep_bytes,
                     fg_qprep_x_rows, fg_quant_level, FG_PREP_ROWS)

from ._openmp cimport fg_thread_id

cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

include "_check.pxi"
include "_qweight.pxi"


cdef int QUANT_LEVEL = fg_quant_level()
#: Up to this many rows of x every format runs the skinny products (the serving engine's largest
#: batch): a row's result does not depend on the rest of the batch there. Above, the GEMMs.
SKINNY_MAX_ROWS = 64
#: float16 on AVX-512 keeps the skinny product (csrc/skinny.c, dot-product register blocks) up to
#: here: through a GPT-2 124M model's 48 matrices in turn, weights from DRAM, 2 threads, against
#: the float32 GEMM (interleaved medians): 1.6-2.0x at 9-12 rows, 1.2x at 16, 1.8x at 24,
#: 0.99-1.06x at 32-128 (where the GEMM on widened w ran 0.87-0.93x), 0.96-0.99x at 256-512.
cdef Py_ssize_t F16_SKINNY_MAX_ROWS = 128
# Rows of w per scheduling unit of the band split: a multiple of every skinny kernel's group of
# output rows (16 on AMX, 8 for VNNI, 4 in csrc/skinny.c).
cdef Py_ssize_t ROW_BLOCK = 64
cdef Py_ssize_t BAND_ALIGN = 16
# Rows of x per packed panel (csrc/gemm.c) and the float32 bytes of one dequantized tile of w:
# it stays in L2 while every panel group of x passes over it; at least TILE_MIN_ROWS rows, since
# each tile re-reads all of the packed x from L3 (as _linear.gemm's blocks).
cdef Py_ssize_t PANEL = 16
cdef Py_ssize_t TILE_BYTES = 256 * 1024
cdef Py_ssize_t TILE_MIN_ROWS = 64
# The int8 GEMM's tile of W (csrc/qgemm.c): rows a multiple of its 32-output microkernel, about
# this many packed bytes (1.25 per weight), so that it stays in L2 while every 6-row chunk of x
# passes over it. Small tiles cost little: each re-reads the packed x (N * I bytes) from L3,
# against 2 * N * I * rows operations.
cdef bint QGEMM = fg_qgemm_available()
cdef Py_ssize_t QG_TILE_BYTES = 256 * 1024
cdef Py_ssize_t QG_TILE_ALIGN = 32
# bfloat16 prefill on AVX512_BF16 (csrc/hgemm.c): blocks of about this many bytes of w, at least
# BG_MIN_BLOCK rows (as _linear.gemm's blocks: each block re-reads the packed x from L3).
cdef bint BGEMM = fg_bgemm_available()
cdef Py_ssize_t BG_BLOCK_BYTES = 256 * 1024
cdef Py_ssize_t BG_MIN_BLOCK = 64
# Rows per tile on the BLAS fallback (no AVX2): big enough for BLAS to be efficient.
cdef Py_ssize_t BLAS_TILE_ROWS = 1024



def quant_level():
    """The SIMD level the quantized kernels use (0 scalar, 1 AVX2+FMA+F16C, 2 AVX-512, 3 AVX-512 + AMX)."""
    return QUANT_LEVEL


def amx_available():
    """Whether this CPU and OS run AMX tiles (then quant_level() is 3)."""
    return bool(fg_amx_available())


def int8_activations(int max_level=3):
    """Whether int8 skinny products (N <= SKINNY_MAX_ROWS) round x to int8 per block of 32, as
    fastgpt.quant.linear_ref_int8_activations specifies (AVX-512 with VNNI, or AMX); otherwise x
    stays float32."""
    return bool(fg_q8_activations(min(QUANT_LEVEL, max_level)))


def bgemm_available():
    """Whether bfloat16 products run vdpbf16ps (AVX512_BF16) where AMX does not take them: above
    SKINNY_MAX_ROWS rows the GEMM, below csrc/skinny.c's dot blocks; both round x to bfloat16 (see
    activation_rounding)."""
    return BGEMM


# The kernel a product runs (choose_path): `linear` dispatches on it and activation_rounding
# reads the rounding of x off it, so the two cannot disagree.
cdef enum Path:
    PATH_SKINNY     # the skinny products (csrc/amx.c, csrc/quant.c, csrc/skinny.c)
    PATH_Q8GEMM     # int8 GEMM in integers (csrc/qgemm.c)
    PATH_BGEMM      # bfloat16 GEMM with vdpbf16ps (csrc/hgemm.c)
    PATH_TILES      # float32 GEMM on widened or dequantized rows of w (csrc/hgemm.c, csrc/gemm.c)
    PATH_BLAS       # dequantized tiles through NumPy's matmul (no AVX2)


cdef Py_ssize_t skinny_rows(int fmt, int level) noexcept:
    if fmt == FG_Q_BF16 and level >= FG_AMX:
        return PY_SSIZE_T_MAX       # AMX tiles for every N: faster than vdpbf16ps, whose order differs
    return F16_SKINNY_MAX_ROWS if fmt == FG_Q_F16 and level >= FG_AVX512 else SKINNY_MAX_ROWS


def skinny_max_rows(str fmt, int max_level=3):
    """The most rows of x for which `linear` runs the skinny product on weights in fmt."""
    code = FORMAT_CODES.get(fmt)
    if code is None:
        raise ValueError(f"unknown quantized format {fmt!r}; expected one of {', '.join(FORMAT_CODES)}")
    return skinny_rows(code, min(QUANT_LEVEL, max_level))


cdef Path choose_path(int fmt, Py_ssize_t n, int level) noexcept:
    if n <= skinny_rows(fmt, level):
        return PATH_SKINNY
    if fmt == FG_Q_I8 and QGEMM and level >= FG_AVX512:
        return PATH_Q8GEMM
    if fmt == FG_Q_BF16 and BGEMM and level >= FG_AVX512:
        return PATH_BGEMM
    return PATH_BLAS if level < FG_AVX2 else PATH_TILES


cdef bint rounds_x_to_int8(Path path, int code, int level) noexcept:
    return path == PATH_Q8GEMM or (path == PATH_SKINNY and code == FG_Q_I8 and fg_q8_activations(level))


cdef bint rounds_x_to_bf16(Path path, int code, int level) noexcept:
    """The bfloat16 GEMM, and skinny products on AMX tiles or in csrc/skinny.c's vdpbf16ps blocks
    (AVX-512 with AVX512_BF16); the AVX2 path widens w and keeps x float32."""
    return path == PATH_BGEMM or (path == PATH_SKINNY and code == FG_Q_BF16 and
                                  (level >= FG_AMX or (level >= FG_AVX512 and BGEMM)))


def activation_rounding(str fmt, Py_ssize_t n_rows, int max_level=3):
    """How `linear` rounds x for a product of n_rows rows of x with weights in fmt: None (x stays
    float32: fastgpt.quant.linear_ref is the spec), "bfloat16" (linear_ref_bf16_activations) or
    "int8" (linear_ref_int8_activations)."""
    code = FORMAT_CODES.get(fmt)
    if code is None:
        raise ValueError(f"unknown quantized format {fmt!r}; expected one of {', '.join(FORMAT_CODES)}")
    level = min(QUANT_LEVEL, max_level)
    path = choose_path(code, n_rows, level)
    if rounds_x_to_int8(path, code, level):
        return "int8"
    if rounds_x_to_bf16(path, code, level):
        return "bfloat16"
    return None


def arithmetic(str fmt, Py_ssize_t n_rows, int max_level=3):
    """The arithmetic `linear` multiplies with for n_rows rows of x and weights in fmt, named as
    kernels._system.PEAK_KINDS: "i8_amx", "bf16_amx", "i8_vnni", "bf16_dot" or "f32_fma"."""
    code = FORMAT_CODES.get(fmt)
    if code is None:
        raise ValueError(f"unknown quantized format {fmt!r}; expected one of {', '.join(FORMAT_CODES)}")
    level = min(QUANT_LEVEL, max_level)
    path = choose_path(code, n_rows, level)
    if path == PATH_SKINNY and level >= FG_AMX and code != FG_Q_F16:
        return "i8_amx" if code == FG_Q_I8 else "bf16_amx"
    if rounds_x_to_int8(path, code, level):
        return "i8_vnni"
    if rounds_x_to_bf16(path, code, level):
        return "bf16_dot"
    return "f32_fma"


def qgemm_available():
    """Whether int8 prefill runs the integer GEMM (AVX512-VNNI), i.e. rounds x to int8 blocks."""
    return QGEMM


def scratch_bytes(str fmt, Py_ssize_t n_rows, Py_ssize_t n_in, int max_level=3):
    """Bytes of `scratch` that `linear` needs to decode n_rows rows of width n_in without allocating."""
    code = FORMAT_CODES.get(fmt)
    if code is None:
        raise ValueError(f"unknown quantized format {fmt!r}; expected one of {', '.join(FORMAT_CODES)}")
    if n_rows < 0 or n_in < 0:
        raise ValueError(f"n_rows and n_in must be >= 0, got {n_rows} and {n_in}")
    return fg_qprep_bytes(code, n_rows, n_in, min(QUANT_LEVEL, max_level)) + 64


def linear(const float[:, ::1] x, object w, const float[::1] b, float[:, ::1] out, int n_threads=1,
           int max_level=3, bint reference=False, unsigned char[::1] scratch=None):
    """out (N, O) = x (N, I) @ w.dequantize().T + b (O,) [b may be None]; returns out.

    scratch: a buffer of at least scratch_bytes(...) bytes for decoding's prepared x, so that
    a decode step allocates nothing (the model's backend keeps one); without it, or if it is
    too small, linear allocates its own.

    w: a fastgpt.quant.QuantizedWeight (anything with .format, .data, .scales). max_level caps
    the SIMD level (0 scalar, 1 AVX2, 2 AVX-512, 3 AMX) and reference=True runs the scalar *_ref
    loop: both for testing the fallbacks. activation_rounding says how each case rounds x.
    """
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.data.shape[0]
    cdef Py_ssize_t xs = x.strides[0] // sizeof(float), ys = out.strides[0] // sizeof(float)
    cdef Py_ssize_t blk, n_bands, band, o0, o1, prep_bytes, n_units, u
    cdef void *prep = NULL              # owned: freed below
    cdef void *prep_in_scratch = NULL   # where the prepared x goes
    cdef const void *wp = NULL
    cdef const unsigned short *sp = NULL
    cdef int fmt = check_weight(w, n_in, &wp, &sp)
    cdef int level = min(QUANT_LEVEL, max_level)
    cdef const unsigned short *sgp = grouped_scales(w, fmt, level, None)
    cdef const float *bias = check_out_and_bias("quantized linear", x.shape[0], n_out, b, out)
    check_threads(n_threads)
    if filled_trivially(n, n_in, n_out, b, out):
        return out.base
    cdef Path path = choose_path(fmt, n, level)
    if path != PATH_SKINNY and not reference:
        return _prefill(x, w, b, out, n_threads, level, fmt, wp, sp, bias, path)
    n_bands = n_threads
    band = ((n_out + n_bands - 1) // n_bands + BAND_ALIGN - 1) // BAND_ALIGN * BAND_ALIGN
    # x prepared once for all threads (csrc/quant.c), in the caller's scratch when it fits
    prep_bytes = 0 if reference else fg_qprep_bytes(fmt, n, n_in, level)
    if prep_bytes > 0 and scratch is not None and scratch.shape[0] >= prep_bytes + 64:
        prep_in_scratch = &scratch[((-<uintptr_t>&scratch[0]) % 64)]
    elif prep_bytes > 0:
        prep = aligned_alloc(64, prep_bytes)
        if prep == NULL:
            raise MemoryError(f"could not allocate {prep_bytes} bytes for the prepared x")
        prep_in_scratch = prep
    n_units = (n + FG_PREP_ROWS - 1) // FG_PREP_ROWS
    try:
        with nogil:
            if prep_in_scratch != NULL and n_units == 1:
                fg_qprep_x_rows(fmt, &x[0, 0], xs, n, n_in, 0, n, prep_in_scratch, level)
            elif prep_in_scratch != NULL:
                for u in prange(n_units, num_threads=n_threads, schedule="static"):
                    fg_qprep_x_rows(fmt, &x[0, 0], xs, n, n_in, u * FG_PREP_ROWS, min(n, (u + 1) * FG_PREP_ROWS),
                                    prep_in_scratch, level)
            # one band of rows per thread, each read front to back
            for blk in prange(n_bands, num_threads=n_threads, schedule="static"):
                o0 = blk * band
                o1 = min(o0 + band, n_out)
                if o0 >= o1:
                    continue
                if reference:
                    fg_qlinear_rows_ref(wp, sp, fmt, bias, &x[0, 0], xs, &out[0, 0], ys, n, n_in, o0, o1)
                else:
                    fg_qlinear_rows(wp, sp, sgp, fmt, bias, &x[0, 0], xs, prep_in_scratch, &out[0, 0], ys, n, n_in, o0, o1,
                                    level)
    finally:
        free(prep)
    return out.base


cdef object _prefill(const float[:, ::1] x, object w, const float[::1] b, float[:, ::1] out, int n_threads,
                     int level, int fmt, const void *wp, const unsigned short *sp, const float *bias, Path path):
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = out.shape[1]
    cdef Py_ssize_t xs = x.strides[0] // sizeof(float), ys = out.strides[0] // sizeof(float)
    cdef Py_ssize_t n_panels, p, t, n_tiles, tile_rows, tile_floats, o0, o1, band
    cdef float[::1] buf
    cdef float *xp
    cdef float *tiles
    cdef float *tile
    if path == PATH_Q8GEMM:
        return _prefill_q8x(x, out, n_threads, <const signed char *>wp, sp, bias)
    if path == PATH_BGEMM:
        return _prefill_bf16x(x, out, n_threads, <const unsigned short *>wp, bias)
    if path == PATH_BLAS:
        return _prefill_blas(x, w, b, out, n_threads, level, fmt, wp, sp)
    n_panels = (n + PANEL - 1) // PANEL
    tile_rows = max(TILE_MIN_ROWS, (TILE_BYTES // (n_in * sizeof(float))) // PANEL * PANEL)
    tile_floats = (tile_rows * n_in + PANEL - 1) // PANEL * PANEL            # keeps each tile 64-byte aligned
    n_tiles = (n_out + tile_rows - 1) // tile_rows
    # xp (panels, I, 16), then one float32 tile of w per thread; the GEMM's loads of xp are aligned
    # (allocated per call: a module-level buffer would be shared by concurrent callers)
    buf = np.empty(n_panels * PANEL * n_in + n_threads * tile_floats + PANEL, np.float32)
    xp = &buf[((-<uintptr_t>&buf[0]) % 64) // sizeof(float)]
    tiles = xp + n_panels * PANEL * n_in
    with nogil:
        for p in prange(n_panels, num_threads=n_threads, schedule="static"):
            fg_gemm_pack_x_f32(&x[0, 0], xs, n, n_in, p, p + 1, xp, level)
        for t in prange(n_tiles, num_threads=n_threads, schedule="dynamic"):
            tile = tiles + fg_thread_id() * tile_floats
            o0 = t * tile_rows
            o1 = min(o0 + tile_rows, n_out)
            if fmt == FG_Q_I8:
                fg_dequantize_rows(wp, sp, fmt, n_in, o0, o1, tile, level)
                fg_gemm_f32(xp, n, n_in, tile, bias + o0 if bias != NULL else NULL, &out[0, 0] + o0, ys,
                            0, o1 - o0, level)
            else:
                fg_gemm_w16_f32(xp, n, n_in, <const unsigned short *>wp, fmt, bias, &out[0, 0], ys, o0, o1, tile,
                                level)
    return out.base


cdef object _prefill_bf16x(const float[:, ::1] x, float[:, ::1] out, int n_threads, const unsigned short *wp,
                           const float *bias):
    """bfloat16 w with x rounded to bfloat16 (csrc/hgemm.c): x packed once and shared, w read in place."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = out.shape[1]
    cdef Py_ssize_t xs = x.strides[0] // sizeof(float), ys = out.strides[0] // sizeof(float)
    cdef Py_ssize_t n_panels = (n + PANEL - 1) // PANEL, p, blk, o0, o1
    cdef Py_ssize_t block = max(BG_MIN_BLOCK, (BG_BLOCK_BYTES // (n_in * 2)) // PANEL * PANEL)
    cdef Py_ssize_t n_blocks = (n_out + block - 1) // block, xb_bytes = (fg_bgemm_x_bytes(n, n_in) + 63) // 64 * 64
    cdef void *xb = aligned_alloc(64, xb_bytes)
    if xb == NULL:
        raise MemoryError(f"could not allocate {xb_bytes} bytes for the packed x")
    try:
        with nogil:
            for p in prange(n_panels, num_threads=n_threads, schedule="static"):
                fg_bgemm_pack_x(&x[0, 0], xs, n, n_in, p, p + 1, xb)
            for blk in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                o0 = blk * block
                o1 = min(o0 + block, n_out)
                fg_bgemm(xb, n, n_in, wp, bias, &out[0, 0], ys, o0, o1)
    finally:
        free(xb)
    return out.base


cdef object _prefill_q8x(const float[:, ::1] x, float[:, ::1] out, int n_threads, const signed char *wp,
                         const unsigned short *sp, const float *bias):
    """The int8 GEMM in integers (csrc/qgemm.c): x packed once, a tile of W packed per thread."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = out.shape[1]
    cdef Py_ssize_t xs = x.strides[0] // sizeof(float), ys = out.strides[0] // sizeof(float)
    cdef Py_ssize_t n_pad = fg_qgemm_rows_padded(n), chunk = 16, n_chunks, c, t, o0, o1
    cdef Py_ssize_t x_bytes = (fg_qgemm_x_bytes(n, n_in) + 63) // 64 * 64, tile_bytes
    cdef Py_ssize_t n_units = (n_out + QG_TILE_ALIGN - 1) // QG_TILE_ALIGN, max_units, n_tiles
    cdef char *buf
    # Tiles of near-equal whole units of 32 rows, as many as the L2 budget needs, rounded up to
    # a multiple of the threads: 256-row tiles of a 768-row matrix on 2 threads (3 tiles) ran
    # at 800 GOP/s, 4 tiles of 192 at 1000. Results do not depend on the tiling.
    max_units = max(1, QG_TILE_BYTES * 4 // (5 * n_in * QG_TILE_ALIGN))
    n_tiles = (n_units + max_units - 1) // max_units
    n_tiles = min(n_units, (n_tiles + n_threads - 1) // n_threads * n_threads)
    tile_bytes = (fg_qgemm_tile_bytes(n_in, (n_units + n_tiles - 1) // n_tiles * QG_TILE_ALIGN) + 63) // 64 * 64
    n_chunks = (n_pad + chunk - 1) // chunk
    # the packed x, then one tile per thread (allocated per call: shared buffers would race
    # between concurrent callers)
    buf = <char *>aligned_alloc(64, x_bytes + n_threads * tile_bytes)
    if buf == NULL:
        raise MemoryError(f"could not allocate {x_bytes + n_threads * tile_bytes} bytes for the int8 GEMM")
    try:
        with nogil:
            for c in prange(n_chunks, num_threads=n_threads, schedule="static"):
                fg_qgemm_pack_x(&x[0, 0], xs, n, n_in, c * chunk, min(c * chunk + chunk, n_pad), buf)
            for t in prange(n_tiles, num_threads=n_threads, schedule="dynamic"):
                o0 = t * n_units // n_tiles * QG_TILE_ALIGN
                o1 = min((t + 1) * n_units // n_tiles * QG_TILE_ALIGN, n_out)
                fg_qgemm_pack_w(wp, sp, n_in, o0, o1, buf + x_bytes + fg_thread_id() * tile_bytes)
                fg_qgemm(buf + x_bytes + fg_thread_id() * tile_bytes, o1 - o0, buf, n, n_in,
                         bias + o0 if bias != NULL else NULL, &out[0, 0] + o0, ys)
    finally:
        free(buf)
    return out.base


def linear_q8x(const float[:, ::1] x, object w, const float[::1] b, float[:, ::1] out, int n_threads=1,
               bint reference=False):
    """out (N, O) = x @ w.T + b for int8 w, with x rounded to int8 blocks: the integer GEMM that
    int8 prefill uses (for any N here), or with reference=True its portable C loop
    (fg_qgemm_ref, bitwise the same). Spec: fastgpt.quant.linear_ref_int8_activations."""
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.data.shape[0], blk, n_blocks, o0, o1
    cdef Py_ssize_t xs = x.strides[0] // sizeof(float), ys = out.strides[0] // sizeof(float)
    cdef const void *wp = NULL
    cdef const unsigned short *sp = NULL
    cdef int fmt = check_weight(w, n_in, &wp, &sp)
    cdef const float *bias = check_out_and_bias("int8 GEMM", n, n_out, b, out)
    check_threads(n_threads)
    if fmt != FG_Q_I8:
        raise ValueError(f"linear_q8x needs int8 weights, got {w.format!r}")
    if not (QGEMM or reference):
        raise RuntimeError("this CPU has no AVX512-VNNI: the int8 GEMM can only run with reference=True")
    if filled_trivially(n, n_in, n_out, b, out):
        return out.base
    if not reference:
        return _prefill_q8x(x, out, n_threads, <const signed char *>wp, sp, bias)
    n_blocks = (n_out + ROW_BLOCK - 1) // ROW_BLOCK
    with nogil:
        for blk in prange(n_blocks, num_threads=n_threads, schedule="static"):
            o0 = blk * ROW_BLOCK
            o1 = min(o0 + ROW_BLOCK, n_out)
            fg_qgemm_ref(<const signed char *>wp, sp, bias, &x[0, 0], xs, &out[0, 0], ys, n, n_in, o0, o1)
    return out.base


cdef object _prefill_blas(const float[:, ::1] x, object w, const float[::1] b, float[:, ::1] out, int n_threads,
                          int level, int fmt, const void *wp, const unsigned short *sp):
    """Without AVX2: dequantize tiles of rows (in parallel) and let BLAS multiply them."""
    cdef Py_ssize_t n_in = x.shape[1], n_out = out.shape[1], tile_rows = min(BLAS_TILE_ROWS, n_out)
    cdef Py_ssize_t o0, o1, blk, n_blocks, r0, r1
    cdef float[:, ::1] tile = np.empty((tile_rows, n_in), np.float32)
    xa, outa = np.asarray(x), np.asarray(out)
    for o0 in range(0, n_out, tile_rows):
        o1 = min(o0 + tile_rows, n_out)
        n_blocks = (o1 - o0 + ROW_BLOCK - 1) // ROW_BLOCK
        with nogil:
            for blk in prange(n_blocks, num_threads=n_threads, schedule="static"):
                r0 = o0 + blk * ROW_BLOCK
                r1 = min(r0 + ROW_BLOCK, o1)
                fg_dequantize_rows(wp, sp, fmt, n_in, r0, r1, &tile[r0 - o0, 0], level)
        np.matmul(xa, np.asarray(tile)[: o1 - o0].T, out=outa[:, o0:o1])
    if b is not None:
        outa += np.asarray(b)
    return out.base


def dequantize_rows(object w, const long long[::1] ids, float[:, ::1] out, int max_level=2):
    """out[r] = row ids[r] of w, in float32: the embedding lookup. ids must be in range."""
    cdef Py_ssize_t n = ids.shape[0], n_in = w.data.shape[1], n_rows = w.data.shape[0], r, i
    cdef const void *wp = NULL
    cdef const unsigned short *sp = NULL
    cdef int fmt = check_weight(w, n_in, &wp, &sp)
    cdef int level = min(QUANT_LEVEL, max_level)
    if out.shape[0] != n or out.shape[1] != n_in:
        raise ValueError(f"out must have shape ({n}, {n_in}), got ({out.shape[0]}, {out.shape[1]})")
    for r in range(n):
        if ids[r] < 0 or ids[r] >= n_rows:
            raise IndexError(f"row {ids[r]} is out of range for a weight with {n_rows} rows")
    if n_in == 0:
        return out.base
    with nogil:
        for r in range(n):
            i = ids[r]
            fg_dequantize_rows(wp, sp, fmt, n_in, i, i + 1, &out[r, 0], level)
    return out.base
