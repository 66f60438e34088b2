"""16-bit and 8-bit weights: the NumPy reference formats, the compiled kernels against them,
whole models, converted files and the errors.

Tolerances, as NMSE = sum((got - want)^2) / sum(want^2) against the reference
"dequantize, then float32 matmul" (fastgpt.quant.linear_ref):
- SUM_ORDER_NMSE: 16-bit weights are widened exactly, and the GEMM path multiplies exactly
  dequantized tiles, so only the summation order differs from BLAS: float32 dots of length
  <= 3072 measure ~1e-12 at worst; 1e-10 leaves room.
- Q8: on CPUs with AVX512-VNNI every int8 product rounds x to int8 per block of 32, as
  llama.cpp's q8_0 does: the decode matvec (csrc/quant.c) and the prefill GEMM (csrc/qgemm.c;
  tests/test_qgemm.py). fastgpt.quant.linear_ref_int8_activations is the exact spec of that
  arithmetic and the kernels must meet it to SUM_ORDER_NMSE. Against linear_ref the rounding
  adds up to d / 2 per element (d = block absmax / 127); since a lone output near zero has an
  unbounded relative error, that is checked per output against the worst case
  (assert_within_q8_rounding), not as an NMSE.
- Q8_NMSE: linear_ref_int8_activations against linear_ref on Gaussian data: ~2e-5 on average,
  but a product with only 3 outputs measured up to 4.5e-4, hence 2e-3.
- BF16X: bfloat16 products on AMX (any N) and on AVX512_BF16 above 64 rows (csrc/amx.c,
  csrc/hgemm.c) round x to bfloat16; fastgpt.quant.linear_ref_bf16_activations is their spec, to
  SUM_ORDER_NMSE (the products are exact, only the summation order differs). Against linear_ref
  the rounding moves each x by at most 2^-8 of itself (8 significant bits, to nearest: half an ulp
  of 2^-7), so each output by at most 2^-8 * sum |w x| (assert_within_bf16_rounding): a bound per output, since a
  lone output near zero has an unbounded relative error (one output of 32 inputs measured an NMSE
  of 1.7e-4; Gaussian products with many outputs ~1.8e-6).
- MODEL_NMSE: a whole small model against the float32 model on the dequantized weights: the
  per-op bounds above, carried through two layers (measured ~1e-13); MODEL_NMSE_Q8X where the
  kernels round x to int8 (measured ~7e-5 decoding, ~1e-4 prefilling), MODEL_NMSE_BF16X where
  they round it to bfloat16 in prefill (measured 1.0e-5 for the full forward, 8e-7 for the
  token decoded after it).
- QUANT_NMSE: the formats' own error, logits of a random model against float32: bfloat16 keeps
  8 mantissa bits (per-weight NMSE 2^-16 / 3 ~ 5e-6; ~1e-5 measured on logits), float16 11 bits
  (~2e-7), int8 blocks ~ (absmax / 254)^2 / 3 per weight (~1e-4 on logits).
"""

import functools
import json

import numpy as np
import pytest

from fastgpt import GPT2Config, Model
from fastgpt.backend import kernels_available, select_backend
from fastgpt.quant import (DTYPES, FORMATS, INT8_BLOCK, QuantizationError, QuantizedWeight, bf16_bits_to_float32,
                           dequantize_weights, f16_bits_to_float32, float32_to_bf16_bits, linear_ref,
                           linear_ref_bf16_activations, linear_ref_int8_activations, quantize,
                           quantize_activations_int8, quantize_weights)
from fastgpt.weights import random_weights

SUM_ORDER_NMSE = 1e-10
Q8_NMSE = 2e-3
MODEL_NMSE = {"bfloat16": 1e-10, "float16": 1e-10, "int8": 1e-10}
MODEL_NMSE_Q8X = 1e-3
MODEL_NMSE_BF16X = 1e-4
QUANT_NMSE = {"bfloat16": 1e-4, "float16": 2e-6, "int8": 1e-3}

needs_kernels = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")

SMALL = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=64)


def nmse(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(((got - want) ** 2).sum() / max((want ** 2).sum(), 1e-300))


def assert_nmse(got, want, bound, what):
    e = nmse(got, want)
    if not e <= bound:
        diff = np.abs(np.asarray(got, np.float64) - want)
        idx = np.unravel_index(np.argmax(diff), diff.shape)
        pytest.fail(f"{what}: NMSE {e:.3g} > {bound:g}; max |diff| {diff.max():.3g} at {idx} "
                    f"(got {got[idx]}, want {want[idx]}); first values got {np.ravel(got)[:4]}, want {np.ravel(want)[:4]}")


def assert_within_q8_rounding(got, want, x, w, what):
    """|got - want| within the worst case of rounding x to int8: sum over blocks of d / 2 * sum |w|.

    A bound per output, unlike an NMSE, holds for any single product (a lone output near zero
    has an unbounded relative error); the float32 slack covers summation order.
    """
    _, d = quantize_activations_int8(x)
    wd = np.abs(w.dequantize()).astype(np.float64)
    block_abs = wd.reshape(wd.shape[0], -1, INT8_BLOCK).sum(-1)     # (O, blocks)
    bound = (d.astype(np.float64) / 2) @ block_abs.T
    slack = 1e-5 * (np.abs(x).astype(np.float64) @ wd.T) + 1e-6
    excess = np.abs(np.asarray(got, np.float64) - want) - (bound * (1 + 1e-6) + slack)
    if (excess > 0).any():
        idx = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(f"{what}: |got - want| exceeds the int8 rounding bound by {excess[idx]:.3g} at {idx}")


def assert_within_bf16_rounding(got, want, x, w, what):
    """|got - want| <= 2^-8 * sum |w x| per output (x rounded to bfloat16), with float32 slack."""
    mag = np.abs(x).astype(np.float64) @ np.abs(w.dequantize()).astype(np.float64).T
    excess = np.abs(np.asarray(got, np.float64) - want) - (2.0 ** -8 * (1 + 1e-3) * mag + 1e-5 * mag + 1e-6)
    if (excess > 0).any():
        idx = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(f"{what}: |got - want| exceeds the bfloat16 rounding bound by {excess[idx]:.3g} at {idx}")


# -- reference formats ---------------------------------------------------------------------------
def test_bf16_rounding_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint32)
    x = bits.view(np.float32)
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45,
                         1.1754942e-38, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-8 + 2**-20, 65504.0], np.float32)
    x = np.concatenate([x[np.isfinite(x)], specials])  # ties, rounding into inf, subnormals
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = float32_to_bf16_bits(x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} mismatches, first: {x[bad[:3]]} -> {got[bad[:3]]} vs torch {want[bad[:3]]}"
    assert np.array_equal(bf16_bits_to_float32(got), torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy())


def test_bf16_nan_is_canonical_quiet_nan():
    x = np.array([np.nan, -np.nan, np.float32(np.nan) * -1], np.float32)
    x = np.concatenate([x, np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001], np.uint32).view(np.float32)])
    assert (float32_to_bf16_bits(x) == 0x7FC0).all()


def test_float16_matches_numpy_and_rejects_out_of_range():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((8, 40)) * 100).astype(np.float32)
    q = quantize(w, "float16")
    assert np.array_equal(q.data, w.astype(np.float16).view(np.uint16))
    assert np.array_equal(q.dequantize(), w.astype(np.float16).astype(np.float32))
    w[3, 5] = 70000.0
    with pytest.raises(QuantizationError, match=r"70000.*\[3, 5\].*float16's range"):
        quantize(w, "float16", name="blocks.0.mlp_fc_w")


@pytest.mark.parametrize("scale", [1e-7, 1e-3, 0.02, 3.0, 1e4])
def test_int8_blocks_absmax_scales_and_error_bound(scale):
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((17, 96)) * scale).astype(np.float32)
    w[0, :32] = 0.0                                               # an all-zero block
    w[1, 40] = 50 * scale                                         # an outlier
    q = quantize(w, "int8")
    assert q.data.dtype == np.int8 and q.scales.shape == (17, 3) and q.scales.dtype == np.uint16
    s = f16_bits_to_float32(q.scales)                             # (17, 3)
    absmax = np.abs(w.reshape(17, 3, 32)).max(-1)
    exact = absmax / np.float32(127)
    # the scale is absmax / 127 rounded up to a float16 (so nothing is ever clipped)
    assert (s >= exact).all()
    below = np.nextafter(s.astype(np.float16), np.float16(0)).astype(np.float32)
    assert (below < exact)[absmax > 0].all()
    assert s[0, 0] == 0 and (q.data[0, :32] == 0).all()
    assert np.abs(q.data).max() <= 127
    err = np.abs(q.dequantize() - w).reshape(17, 3, 32)
    bound = s[..., None] / 2 * (1 + 1e-6) + 1e-30
    assert (err <= bound).all(), f"max err/scale {np.max(err / np.maximum(s[..., None], 1e-30)):.4f}"


def test_int8_needs_width_multiple_of_32():
    with pytest.raises(QuantizationError, match="multiple of 32"):
        quantize(np.zeros((4, 48), np.float32), "int8", name="wte")


def test_non_finite_weights_are_refused():
    w = np.zeros((2, 32), np.float32)
    w[1, 7] = np.nan
    for fmt in FORMATS:
        with pytest.raises(QuantizationError, match=r"nan at \[1, 7\] is not finite"):
            quantize(w, fmt)


def test_unknown_dtype_lists_the_supported_ones():
    for call in (lambda: quantize(np.zeros((2, 32), np.float32), "int4"),
                 lambda: Model.random(SMALL, dtype="fp8"),
                 lambda: Model(SMALL, random_weights(SMALL), dtype="q8_0")):
        with pytest.raises(ValueError, match="'float32', 'bfloat16', 'float16', 'int8'"):
            call()


def test_dequantize_rows_is_the_embedding_lookup():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((50, 64)).astype(np.float32)
    ids = np.array([3, 3, 49, 0, 17])
    for fmt in FORMATS:
        q = quantize(w, fmt)
        full = q.dequantize()
        assert np.array_equal(q.dequantize_rows(ids), full[ids])
        out = np.empty((5, 64), np.float32)
        assert q.dequantize_rows(ids, out=out) is out and np.array_equal(out, full[ids])
        if kernels_available():
            from fastgpt.kernels import _quant

            for level in (0, 1, 2):
                got = _quant.dequantize_rows(q, ids.astype(np.int64), np.empty((5, 64), np.float32), max_level=level)
                assert np.array_equal(got, full[ids]), f"{fmt} level {level}"


def test_activation_rounding_q8_bounds_and_zero_blocks():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 96)).astype(np.float32) * np.float32(5)
    x[0, :32] = 0.0                                               # an all-zero block
    x[1, 33] = 400.0                                              # an outlier sets its block's step
    q, d = quantize_activations_int8(x)
    assert q.dtype == np.int8 and q.shape == (3, 3, 32) and d.shape == (3, 3) and d.dtype == np.float32
    assert d[0, 0] == 0 and (q[0, 0] == 0).all()
    blocks = x.reshape(3, 3, 32)
    assert np.allclose(d, np.abs(blocks).max(-1) / 127, rtol=1e-6)
    assert (np.abs(q).max(-1)[d > 0] == 127).all()                # the absmax element maps to +-127
    err = np.abs(q * d[..., None] - blocks)
    assert (err <= d[..., None] * (0.5 + 1e-6)).all()


def test_q8_reference_is_close_to_the_float_reference():
    """linear_ref_int8_activations only rounds x on top of linear_ref's int8 weights: within Q8_NMSE of it."""
    rng = np.random.default_rng(6)
    w = quantize((rng.standard_normal((300, 768)) * 0.05).astype(np.float32), "int8")
    x = rng.standard_normal((4, 768)).astype(np.float32)
    want = linear_ref(x, w, None, np.empty((4, 300), np.float32))
    got = linear_ref_int8_activations(x, w, None, np.empty((4, 300), np.float32))
    e = nmse(got, want)
    assert 1e-7 < e <= Q8_NMSE, e                                 # x really was rounded, and not badly


# -- compiled kernels against the reference ---------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _weight(fmt, O, I):
    rng = np.random.default_rng(O * 10007 + I)
    return quantize((rng.standard_normal((O, I)) * 0.05).astype(np.float32), fmt)


def _case(fmt, O, I, N, seed=0):
    rng = np.random.default_rng(seed + N)
    x = rng.standard_normal((N, I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    w = _weight(fmt, O, I)
    return x, w, b, linear_ref(x, w, b, np.empty((N, O), np.float32))


def _qgemm_available():
    if not kernels_available():
        return False
    from fastgpt.kernels import _quant

    return _quant.qgemm_available()


def _rounds_x(fmt, N, level=3):
    """How the compiled kernel at this level rounds x for this product: None, "bfloat16" or "int8"."""
    if fmt is None or not kernels_available():
        return None
    from fastgpt.kernels import _quant

    return _quant.activation_rounding(fmt, N, level)


def _check(got, x, w, b, want, fmt, N, what, level=3):
    """got against the float reference; a product that rounds x also against its spec."""
    rounding = _rounds_x(fmt, N, level)
    if rounding == "int8":
        assert_nmse(got, linear_ref_int8_activations(x, w, b, np.empty_like(got)), SUM_ORDER_NMSE,
                    f"{what} vs linear_ref_int8_activations")
        assert_within_q8_rounding(got, want, x, w, what)
    elif rounding == "bfloat16":
        assert_nmse(got, linear_ref_bf16_activations(x, w, b, np.empty_like(got)), SUM_ORDER_NMSE,
                    f"{what} vs linear_ref_bf16_activations")
        assert_within_bf16_rounding(got, want, x, w, what)
    else:
        assert_nmse(got, want, SUM_ORDER_NMSE, what)


ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 64]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("O", [1, 3, 7, 63, 65, 1023])
@pytest.mark.parametrize("I", [32, 64, 768, 3072])
def test_backend_linear_matches_reference(backend, fmt, O, I):
    be = select_backend(backend, 2)
    for N in ROWS if I <= 64 else [1, 2, 3, 5, 8, 9, 40] if O * I < 1_000_000 else [1, 3, 8, 17]:
        x, w, b, want = _case(fmt, O, I, N)
        for bias in (b, None):
            got = be.linear(x, w, bias, np.full((N, O), np.nan, np.float32))
            _check(got, x, w, bias, want - (0 if bias is not None else b), fmt if backend == "cython" else None, N,
                   f"{backend} {fmt} N={N} O={O} I={I} bias={bias is not None}")


@needs_kernels
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("level", [0, 1, 2, 3, "ref"])
def test_every_simd_level_matches_reference(fmt, level):
    from fastgpt.kernels import _quant

    for (O, I) in [(7, 32), (65, 768), (33, 3072)]:
        for N in ROWS:
            x, w, b, want = _case(fmt, O, I, N)
            kw = {"reference": True} if level == "ref" else {"max_level": level}
            got = _quant.linear(x, w, b, np.empty((N, O), np.float32), 2, **kw)
            _check(got, x, w, b, want, fmt if level != "ref" else None, N, f"{fmt} level {level} N={N} O={O} I={I}",
                   level if level != "ref" else 0)


@needs_kernels
@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
@pytest.mark.parametrize("I", [1, 3, 15, 17, 31, 33, 63, 65, 100])
def test_16bit_widths_that_are_not_multiples_of_32(fmt, I):
    from fastgpt.kernels import _quant

    rng = np.random.default_rng(I)
    w = quantize(rng.standard_normal((9, I)).astype(np.float32), fmt)
    for N in (1, 3, 5, 12):
        x = rng.standard_normal((N, I)).astype(np.float32)
        want = linear_ref(x, w, None, np.empty((N, 9), np.float32))
        for level in (0, 1, 2, 3):
            got = _quant.linear(x, w, None, np.empty((N, 9), np.float32), 1, max_level=level)
            _check(got, x, w, None, want, fmt, N, f"{fmt} I={I} N={N} level {level}", level)


@needs_kernels
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("N", [1, 3, 8, 40])
def test_one_and_two_threads_agree_bitwise(fmt, N):
    from fastgpt.kernels import _quant

    x, w, b, _ = _case(fmt, 1023, 768, N)
    one = _quant.linear(x, w, b, np.empty((N, 1023), np.float32), 1)
    two = _quant.linear(x, w, b, np.empty((N, 1023), np.float32), 2)
    assert np.array_equal(one, two)


def test_scales_by_group_is_the_scales_transposed_per_16_rows():
    w = _weight("int8", 37, 96)                                   # a last group of 5 rows
    g = w.scales_by_group()
    assert g.shape == (3, 3, 16) and g.dtype == np.uint16 and g.flags.c_contiguous
    for o in range(48):
        for b in range(3):
            assert g[o // 16, b, o % 16] == w.scales[min(o, 36), b]
    assert w.scales_by_group() is g                               # made once


@needs_kernels
@pytest.mark.parametrize("N", [1, 5, 16, 40])
def test_int8_grouped_scales_give_bitwise_what_the_kernel_groups_itself(N):
    """The AMX kernel takes the weight's grouped scales (made once) or groups them per call (a
    weight without them): the same floats, so the same outputs, bit for bit, for any band."""
    from types import SimpleNamespace

    from fastgpt.kernels import _quant

    x, w, b, _ = _case("int8", 1023, 768, N)
    plain = SimpleNamespace(format=w.format, data=w.data, scales=w.scales)      # no scales_by_group
    for threads in (1, 2, 3):
        want = _quant.linear(x, plain, b, np.empty((N, 1023), np.float32), threads)
        got = _quant.linear(x, w, b, np.empty((N, 1023), np.float32), threads)
        assert np.array_equal(got, want), threads
    if _quant.quant_level() >= 3:                                # only AMX reads them
        bad = SimpleNamespace(format=w.format, data=w.data, scales=w.scales, scales_by_group=lambda: w.scales)
        with pytest.raises(ValueError, match="grouped scales"):
            _quant.linear(x, bad, b, np.empty((N, 1023), np.float32), 1)
        zero = np.zeros_like(w.scales_by_group())                # read, not ignored: all scales 0
        unscaled = SimpleNamespace(format=w.format, data=w.data, scales=w.scales, scales_by_group=lambda: zero)
        got = _quant.linear(x, unscaled, b, np.empty((N, 1023), np.float32), 1)
        assert np.array_equal(got, np.broadcast_to(b, got.shape))


@needs_kernels
@pytest.mark.parametrize("N", [1, 3])
def test_int8_decode_propagates_nan_and_inf_in_x(N):
    """A non-finite input poisons only the outputs that use it; it never becomes a finite garbage value."""
    from fastgpt.kernels import _quant

    w = _weight("int8", 20, 96)
    for bad in (np.nan, np.inf):
        x = np.ones((N, 96), np.float32)
        x[0, 40] = bad
        got = _quant.linear(x, w, None, np.empty((N, 20), np.float32), 2)
        assert not np.isfinite(got[0]).any(), f"{bad}: {got[0][:4]}"
        assert np.isfinite(got[1:]).all()


@needs_kernels
@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_scratch_gives_the_same_result(fmt):
    """With the caller's scratch (how the backend decodes without allocating), too small, or none."""
    from fastgpt.kernels import _quant

    x, w, b, _ = _case(fmt, 65, 768, 3)
    need = _quant.scratch_bytes(fmt, 3, 768)
    want = _quant.linear(x, w, b, np.empty((3, 65), np.float32), 2)
    for size in (need, need + 7, max(need - 64, 0)):
        scratch = np.full(size + 1, 0xAB, np.uint8)[1:]          # also misaligned on purpose
        got = _quant.linear(x, w, b, np.empty((3, 65), np.float32), 2, scratch=scratch)
        assert np.array_equal(got, want), f"{fmt} scratch of {size} bytes (need {need})"
    with pytest.raises(ValueError, match="unknown quantized format"):
        _quant.scratch_bytes("int4", 1, 768)


@needs_kernels
def test_kernel_checks_shapes_before_running():
    from fastgpt.kernels import _quant

    w = _weight("int8", 7, 64)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="features"):
        _quant.linear(np.zeros((2, 32), np.float32), w, None, np.empty((2, 7), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        _quant.linear(x, w, None, np.empty((2, 8), np.float32))
    with pytest.raises(ValueError, match="bias"):
        _quant.linear(x, w, np.zeros(6, np.float32), np.empty((2, 7), np.float32))
    bad = QuantizedWeight("int8", w.data, w.scales)
    bad.scales = w.scales[:, :1].copy()                            # bypass __post_init__ on purpose
    with pytest.raises(ValueError, match="scales"):
        _quant.linear(x, bad, None, np.empty((2, 7), np.float32))
    with pytest.raises(IndexError):
        _quant.dequantize_rows(w, np.array([7], np.int64), np.empty((1, 64), np.float32))
    with pytest.raises(ValueError, match="contiguous"):  # views with strided rows are refused, not misread
        _quant.linear(np.zeros((2, 128), np.float32)[:, :64], w, None, np.empty((2, 7), np.float32))


# -- whole models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FORMATS)
def test_model_matches_float32_model_on_dequantized_weights(backend, dtype):
    ids = np.random.default_rng(4).integers(0, SMALL.vocab_size, (2, 11))
    # a float32 KV cache, as the spec's: this compares the weights' arithmetic (test_kv_cache.py the cache's)
    model = Model.random(SMALL, seed=1, backend=backend, num_threads=2, dtype=dtype, kv_dtype="float32")
    assert model.dtype == dtype
    spec = Model(SMALL, dequantize_weights(model.weights), backend="numpy")
    q8x = backend != "numpy" and _rounds_x(dtype, 1) and _rounds_x(dtype, 9)   # x rounded to int8 throughout
    bf16x = backend != "numpy" and _rounds_x(dtype, 22) == "bfloat16"             # x rounded to bfloat16 in prefill
    bound = MODEL_NMSE_Q8X if q8x else MODEL_NMSE_BF16X if bf16x else MODEL_NMSE[dtype]
    assert_nmse(model(ids), spec(ids), bound, f"{backend} {dtype} full forward")
    # decoding one token at a time (the fused matvec path) gives the same logits
    cache = model.new_cache(batch_size=2)
    model(ids[:, :-1], cache=cache)
    last = model(ids[:, -1:], cache=cache, last_only=True)
    assert_nmse(last, spec(ids)[:, -1], bound, f"{backend} {dtype} incremental decode")


@pytest.mark.parametrize("dtype", FORMATS)
def test_quantized_model_is_close_to_float32(backend, dtype):
    ids = np.random.default_rng(5).integers(0, SMALL.vocab_size, 16)
    want = Model.random(SMALL, seed=2, backend="numpy")(ids)
    got = Model.random(SMALL, seed=2, backend=backend, dtype=dtype)(ids)
    e = nmse(got, want)
    assert e <= QUANT_NMSE[dtype], f"{dtype}: logits NMSE {e:.3g} vs float32"
    assert e > 0  # the weights really changed


def test_quantized_weights_hold_fewer_bytes_and_keep_the_tie():
    w = random_weights(SMALL)
    n32 = w.nbytes()
    for dtype in FORMATS:
        q = quantize_weights(w, dtype)
        assert q.tied_head and q.lm_head is q.wte
        assert q.wpe is w.wpe and q.blocks[0].ln_1_g is w.blocks[0].ln_1_g  # float32 parts shared
        matrices = sum(a.size for a in [w.wte] + [getattr(b, f) for b in w.blocks
                                                   for f in ("attn_qkv_w", "attn_proj_w", "mlp_fc_w", "mlp_proj_w")])
        per_weight = 2.0 if dtype != "int8" else 1 + 2 / INT8_BLOCK
        assert q.nbytes() == n32 - matrices * 4 + int(matrices * per_weight)
    assert quantize_weights(w, "float32") is w


def test_requantizing_is_refused_but_dequantizing_works():
    q = quantize_weights(random_weights(SMALL), "int8")
    with pytest.raises(QuantizationError, match="round twice"):
        quantize_weights(q, "bfloat16")
    assert Model(SMALL, q, backend="numpy", dtype="float32").dtype == "float32"
    assert Model(SMALL, q, backend="numpy").dtype == "int8"  # dtype=None keeps them as given


def test_validate_rejects_quantized_norms_and_wrong_shapes():
    w = random_weights(SMALL)
    w.blocks[0].ln_1_g = quantize(np.ones((1, 64), np.float32), "bfloat16")
    w.blocks[1].mlp_fc_w = quantize(np.zeros((100, 64), np.float32), "int8")
    with pytest.raises(ValueError) as exc:
        w.validate(SMALL)
    assert "blocks.0.ln_1_g: must stay float32" in str(exc.value)
    assert "blocks.1.mlp_fc_w: shape (100, 64), expected (256, 64)" in str(exc.value)


# -- converted files --------------------------------------------------------------------------------
def _logits(model):
    return model(np.arange(12) % SMALL.vocab_size)


@pytest.mark.parametrize("dtype", DTYPES)
def test_write_and_load_converted_round_trip(tmp_path, backend, dtype):
    from fastgpt.convert import write_converted

    model = Model.random(SMALL, seed=3, backend=backend, dtype=dtype)
    write_converted(tmp_path, SMALL, model.weights)
    loaded = Model.from_pretrained(tmp_path, backend=backend)
    assert loaded.dtype == dtype and loaded.weights.tied_head
    assert np.array_equal(_logits(loaded), _logits(model))
    mapped = loaded.weights.blocks[0].mlp_fc_w
    data = mapped if dtype == "float32" else mapped.data
    assert not data.flags.writeable and not data.flags.owndata  # a view of the file's map
    assert data.ctypes.data % 64 == 0                             # aligned in the file


def test_convert_command_from_a_hugging_face_folder(tmp_path, hf_checkpoint):
    from fastgpt.convert import add_convert_parser, convert

    folder, _ = hf_checkpoint("small")
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    for dtype in ("int8", "bfloat16"):
        out = tmp_path / dtype
        convert(folder, out, dtype)
        assert (out / "config.json").read_text() == (folder / "config.json").read_text()
        assert (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
        direct = Model.from_pretrained(folder, backend="numpy", dtype=dtype)
        loaded = Model.from_pretrained(out, backend="numpy")
        assert loaded.dtype == dtype
        ids = np.arange(10)
        assert np.array_equal(loaded(ids), direct(ids))
    # the CLI entry point parses its arguments (cli.py registers it)
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_convert_parser(sub)
    args = p.parse_args([str(folder), str(tmp_path / "cli"), "--dtype", "float16"])
    assert args.func(args) == 0 and Model.from_pretrained(tmp_path / "cli", backend="numpy").dtype == "float16"
    with pytest.raises(SystemExit):
        p.parse_args([str(folder), str(tmp_path / "x"), "--dtype", "int4"])


def _tamper(folder, tensors=None, metadata=None, dtypes=None):
    """Rewrite folder/model.safetensors with changed tensors / metadata."""
    from fastgpt.convert import _read_raw
    from fastgpt.loaders.safetensors import read_metadata, write_safetensors

    path = folder / "model.safetensors"
    raw = _read_raw(path)
    meta = read_metadata(path)
    arrays = {n: a.copy() for n, (_, a) in raw.items()}
    st_dtypes = {n: "BF16" for n, (d, _) in raw.items() if d == "BF16"}
    tensors = tensors(arrays) if tensors else arrays
    st_dtypes = {n: d for n, d in {**st_dtypes, **(dtypes or {})}.items() if n in tensors}
    write_safetensors(path, tensors, metadata={**meta, **(metadata or {})}, dtypes=st_dtypes)


@pytest.fixture
def converted_int8(tmp_path):
    from fastgpt.convert import write_converted

    write_converted(tmp_path, SMALL, quantize_weights(random_weights(SMALL), "int8"))
    return tmp_path


@pytest.mark.parametrize("change, message", [
    (dict(metadata={"fastgpt_format": "2"}), "fastgpt_format is '2'"),
    (dict(metadata={"fastgpt_dtype": "int4"}), "fastgpt_dtype is 'int4'"),
    (dict(metadata={"fastgpt_dtype": "bfloat16"}), "tensor 'wte': missing"),
    (dict(metadata={"fastgpt_tied_head": "0"}), "tensor 'lm_head.q': missing"),
    (dict(metadata={"config": json.dumps({**SMALL.to_dict(), "n_layer": 3})}), "n_layer=3 in the file, 2 in config.json"),
    (dict(tensors=lambda t: {n: a for n, a in t.items() if n != "blocks.1.attn_proj_w.scales"}),
     "tensor 'blocks.1.attn_proj_w.scales': missing"),
    (dict(tensors=lambda t: {**t, "blocks.0.mlp_fc_w.q": t["blocks.0.mlp_fc_w.q"].astype(np.float32)}),
     "tensor 'blocks.0.mlp_fc_w.q': dtype F32, expected I8"),
    (dict(tensors=lambda t: {**t, "wte.scales": t["wte.scales"][:, :1].copy()}),
     r"tensor 'wte.scales': shape \(500, 1\), expected \(500, 2\)"),
    (dict(tensors=lambda t: {**t, "extra": np.zeros(3, np.float32)}), "tensor 'extra': unexpected"),
    (dict(tensors=lambda t: {**t, "wte.scales": np.full_like(t["wte.scales"], -1.0)}), "not a finite non-negative"),
])
def test_converted_file_that_disagrees_with_its_metadata_is_a_clear_error(converted_int8, change, message):
    from fastgpt.convert import ConvertedFileError

    _tamper(converted_int8, **change)
    with pytest.raises(ConvertedFileError, match=message) as exc:
        Model.from_pretrained(converted_int8, backend="numpy")
    assert "model.safetensors" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_convert_never_replaces_a_folder_by_accident(tmp_path, hf_checkpoint, monkeypatch):
    from fastgpt import convert as conv

    folder, _ = hf_checkpoint("small")
    out = tmp_path / "out"
    conv.convert(folder, out, "int8")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="not empty.*--force"):          # swapped arguments, a rerun
        conv.convert(folder, out, "bfloat16")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "tokenizer.json").write_text("{}")                            # a stale file of another model
    # a failure while writing (a full disk) leaves OUT as it was, names it, and cleans up
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(conv, "write_converted", full_disk)
        with pytest.raises(OSError, match=f"No space left on device.*{out}"):
            conv.convert(folder, out, "bfloat16", force=True)
    assert (out / "tokenizer.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the swap itself failing (after OUT was moved aside) puts OUT back
    real_rename = type(out).rename
    def rename(self, target):
        if ".tmp-" in self.name:
            raise OSError(18, "Invalid cross-device link")
        return real_rename(self, target)
    with monkeypatch.context() as m:
        m.setattr(type(out), "rename", rename)
        with pytest.raises(OSError, match=f"cross-device.*{out}"):
            conv.convert(folder, out, "bfloat16", force=True)
    assert (out / "tokenizer.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    conv.convert(folder, out, "bfloat16", force=True)                    # replaced whole
    assert not (out / "tokenizer.json").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert Model.from_pretrained(out, backend="numpy").dtype == "bfloat16"
    empty = tmp_path / "empty"
    empty.mkdir()
    conv.convert(folder, empty, "int8")                                  # an empty folder is fine


def test_convert_cleans_up_when_terminated(tmp_path, hf_checkpoint, monkeypatch):
    import os
    import signal

    from fastgpt import convert as conv
    from fastgpt.cli import main

    folder, _ = hf_checkpoint("small")
    def killed_mid_write(staging, *args, **kwargs):
        (staging / "model.safetensors").write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)                    # as `kill PID` would
        raise AssertionError("SIGTERM did not interrupt the conversion")
    monkeypatch.setattr(conv, "write_converted", killed_mid_write)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        main(["convert", str(folder), str(tmp_path / "out"), "--dtype", "int8"])
    assert info.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []                       # no staging folder, no OUT
    assert signal.getsignal(signal.SIGTERM) is before


def test_converted_folder_takes_edited_special_token_ids(converted_int8):
    path = converted_int8 / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "bos_token_id": 11, "eos_token_id": [11, 12]}))
    model = Model.from_pretrained(converted_int8, backend="numpy")
    assert model.config.eos_token_id == [11, 12]


def test_convert_refuses_its_own_source_folder(converted_int8):
    from fastgpt.convert import convert

    with pytest.raises(ValueError, match="source folder"):
        convert(converted_int8, converted_int8, "int8")
    with pytest.raises(ValueError, match="supported"):
        convert(converted_int8, converted_int8 / "out", "int3")
