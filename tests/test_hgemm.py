"""The products for 16-bit weights with many rows (csrc/hgemm.c, csrc/skinny.c, csrc/amx.c) against
their NumPy specs.

- bfloat16 on AMX or on AVX512_BF16 (vdpbf16ps: csrc/skinny.c's dot blocks up to 64 rows, the
  GEMM above), any N: x rounded to bfloat16, spec fastgpt.quant.linear_ref_bf16_activations.
  SPEC_NMSE: both multiply the same bfloat16 numbers exactly (a product of two 8-bit significands
  fits float32's 24), so only the summation order differs: measured <= 1e-13 for dots of <= 3072
  terms; 1e-10 leaves room.
- float16 (and bfloat16 without either, or on the AVX2 path): x stays float32, spec
  fastgpt.quant.linear_ref, to the same SPEC_NMSE; float16 up to 128 rows runs csrc/skinny.c's
  dot-product blocks, more rows the GEMM on widened rows of w.
Rounding x is checked bit for bit through identity weights, where every output is one rounded
input. Each output's summation order depends only on the input width, so thread counts and
row subsets give the same bits.
"""

import functools

import numpy as np
import pytest

from fastgpt.backend import kernels_available
from fastgpt.quant import (QuantizationError, bf16_bits_to_float32, float32_to_bf16_bits, linear_ref,
                           linear_ref_bf16_activations, quantize)
from test_qgemm import assert_bitwise
from test_quant import assert_nmse

SPEC_NMSE = 1e-10

needs_kernels = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")


def _bgemm_available():
    if not kernels_available():
        return False
    from fastgpt.kernels import _quant

    return _quant.bgemm_available()


needs_bf16 = pytest.mark.skipif(not _bgemm_available(), reason="no AVX512_BF16 on this CPU (or no kernels)")


@functools.lru_cache(maxsize=None)
def _weight(fmt, O, I):
    rng = np.random.default_rng(O * 10007 + I)
    return quantize((rng.standard_normal((O, I)) * 0.05).astype(np.float32), fmt)


def _x(N, I, seed=0):
    return np.random.default_rng(seed * 1000 + N * 7 + I).standard_normal((N, I)).astype(np.float32)


def _linear(x, w, b, n_threads=2):
    from fastgpt.kernels import _quant

    return _quant.linear(x, w, b, np.full((x.shape[0], w.shape[0]), np.nan, np.float32), n_threads)


def _spec(x, w, b):
    from fastgpt.kernels import _quant

    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    if _quant.activation_rounding(w.format, x.shape[0]) == "bfloat16":
        return linear_ref_bf16_activations(x, w, b, out)
    return linear_ref(x, w, b, out)


@needs_kernels
@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
@pytest.mark.parametrize("I", [1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 65, 100, 768, 3072])
def test_prefill_matches_spec(fmt, I):
    """Every width (odd ones end in a lone input), rows around the 16-row panels, O around the 8-row tiles."""
    for O in ([1, 7, 8, 9, 63, 65] if I <= 768 else [9, 65]):
        w = _weight(fmt, O, I)
        b = np.random.default_rng(O).standard_normal(O).astype(np.float32)
        for N in ([9, 15, 16, 17, 31, 32, 33, 40, 64, 65, 80] if I <= 768 else [9, 33, 65]):
            x = _x(N, I)
            for bias in (b, None):
                assert_nmse(_linear(x, w, bias), _spec(x, w, bias), SPEC_NMSE, f"{fmt} N={N} O={O} I={I}")


@needs_bf16
@pytest.mark.parametrize("I", [1, 7, 32, 33, 100])
@pytest.mark.parametrize("N", [17, 80])
def test_bf16_rounding_of_x_is_exactly_the_spec(I, N):
    """Identity weights make each output one bfloat16(x): ties to even, carries into the exponent
    and signed zeros, bit for bit; and x past bfloat16's maximum rounds to inf. Denormal inputs
    are left out: vdpbf16ps treats them as zero (they are below 2^-126, far from any activation).
    17 rows take the skinny products, 80 the GEMM (on AMX, its tiles both times)."""
    from fastgpt.kernels import _quant

    if _quant.activation_rounding("bfloat16", N) != "bfloat16":
        pytest.skip(f"{N} rows keep x float32 here (test_activation_rounding_names_the_spec)")
    w = quantize(np.eye(I, dtype=np.float32), "bfloat16")
    specials = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8), 1 - 2.0 ** -9, 3.3e38, -3.3e38,
                         0.0, -0.0, 2.0 ** -126, 1.0009766, 65504.0, -1e-20], np.float32)
    rng = np.random.default_rng(I)
    x = (rng.standard_normal((N, I)) * np.exp(rng.uniform(-20, 20, (N, I)))).astype(np.float32)
    flat = x.reshape(-1)
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    got = _linear(x, w, None)
    want = bf16_bits_to_float32(float32_to_bf16_bits(x))
    assert_bitwise(got + 0.0, want + 0.0, f"I={I}")        # + 0.0: -0.0 and 0.0 sum alike with the zeros
    # 3.3961776e38 is above the halfway point to bfloat16's next binade: it rounds to inf
    big = np.ones((N, I), np.float32)
    big[:3, 0] = [3.3961776e38, -3.3961776e38, 3.3895314e38]
    big[:3, 1:] = 0
    got = _linear(big, quantize(np.ones((1, I), np.float32), "bfloat16"), None)[:, 0]
    assert got[0] == np.inf and got[1] == -np.inf and got[2] == np.float32(3.3895314e38), got[:3]


@needs_bf16
def test_bf16_non_finite_x_poisons_only_its_row():
    w = _weight("bfloat16", 40, 96)
    for bad in (np.nan, np.inf, -np.inf):
        x = _x(20, 96)
        x[3, 50] = bad
        got = _linear(x, w, None)
        assert not np.isfinite(got[3]).any(), f"{bad}: {got[3][:4]}"
        rest = np.delete(np.arange(20), 3)
        assert_bitwise(got[rest], _linear(x[rest].copy(), w, None), f"{bad}: the other rows")


@needs_kernels
@pytest.mark.parametrize("fmt", ["bfloat16", "float16"])
@pytest.mark.parametrize("N,O,I,subsets", [(40, 1023, 768, [(0, 30), (5, 40)]),       # skinny products
                                           (24, 300, 3072, [(0, 9), (5, 22), (11, 24)]),  # k split in slices
                                           (100, 65, 33, [(0, 70), (30, 100)])])          # GEMMs (float16: skinny)
def test_thread_counts_and_row_subsets_give_the_same_bits(fmt, N, O, I, subsets):
    """Row subsets stay on the kernel of the full product (the GEMMs take over above 64 rows; float16
    above 128; bfloat16 on AMX never)."""
    w, x = _weight(fmt, O, I), _x(N, I)
    one = _linear(x, w, None, 1)
    for threads in (2, 3):
        assert_bitwise(_linear(x, w, None, threads), one, f"{fmt} {threads} vs 1 threads")
    for r0, r1 in subsets:
        assert_bitwise(_linear(x[r0:r1].copy(), w, None), one[r0:r1], f"{fmt} rows {r0}:{r1}")


def test_bf16_spec_refuses_other_formats():
    x = np.zeros((2, 32), np.float32)
    with pytest.raises(QuantizationError, match="bfloat16"):
        linear_ref_bf16_activations(x, quantize(np.zeros((4, 32), np.float32), "float16"), None,
                                    np.empty((2, 4), np.float32))


@needs_kernels
def test_activation_rounding_names_the_spec():
    from fastgpt.kernels import _quant

    amx, dot = _quant.amx_available(), _bgemm_available()
    assert _quant.activation_rounding("float16", 64) is None
    # AMX tiles, or vdpbf16ps (skinny dot blocks, then the GEMM), from N = 1; else w widened, x float32
    for n, level in ((1, 3), (64, 2), (65, 3), (200, 2)):
        assert _quant.activation_rounding("bfloat16", n, max_level=level) == ("bfloat16" if amx or dot else None)
    assert _quant.activation_rounding("bfloat16", 64, max_level=1) is None   # the AVX2 path widens w
    with pytest.raises(ValueError, match="unknown quantized format 'int4'"):
        _quant.activation_rounding("int4", 9)
