"""The int8 prefill GEMM in integers (csrc/qgemm.c, AVX512-VNNI) against its NumPy spec
fastgpt.quant.linear_ref_int8_activations, and against "dequantize, then matmul".

Tolerances, as NMSE against the named reference:
- SPEC_NMSE (vs linear_ref_int8_activations): the integer block dots are exact in both and the
  per-block products round alike; the kernel sums the <= 96 blocks in float32 (one FMA each),
  the spec in float64. Measured <= 3e-14; 1e-11 leaves room.
- Q8X_NMSE (vs linear_ref, float32 x): rounding x to int8 per block of 32 is an error of up to
  absmax / 254 per element, ~ (absmax / 127)^2 / 12 in variance: for Gaussian blocks (absmax
  ~2.1 sigma) ~2.3e-5 of the signal, on top of which the int8 weights are exact here (the
  reference uses the same dequantized weights). Measured 9e-6 .. 3e-5 over these cases with
  many outputs, up to 6.7e-5 with O = 1 and N <= 17 (a handful of outputs: a noisy estimate);
  2e-4 leaves 3x.
The portable C loop fg_qgemm_ref and the SIMD kernel agree bit for bit, as do 1 and 2 threads.
"""

import functools

import numpy as np
import pytest

from fastgpt.backend import kernels_available
from fastgpt.quant import (INT8_X_TINY, QuantizationError, linear_ref, linear_ref_int8_activations,
                           quantize, quantize_activations_int8)
from test_quant import _qgemm_available, assert_nmse, nmse

SPEC_NMSE = 1e-11
Q8X_NMSE = 2e-4

needs_kernels = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")


needs_vnni = pytest.mark.skipif(not _qgemm_available(), reason="no AVX512-VNNI on this CPU (or no kernels)")


def assert_bitwise(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        bad = np.argwhere(~same)
        pytest.fail(f"{what}: {len(bad)} outputs differ, first at {tuple(bad[0])}: {got[tuple(bad[0])]!r} vs "
                    f"{want[tuple(bad[0])]!r}; max |diff| {np.nanmax(np.abs(got - want)):.3g}")


@functools.lru_cache(maxsize=None)
def _weight(O, I):
    rng = np.random.default_rng(O * 10007 + I)
    return quantize((rng.standard_normal((O, I)) * 0.05).astype(np.float32), "int8")


def _x(N, I, seed=0):
    return np.random.default_rng(seed * 1000 + N * 7 + I).standard_normal((N, I)).astype(np.float32)


def _bias(O):
    return np.random.default_rng(O).standard_normal(O).astype(np.float32)


def _q8x(x, w, b, n_threads=2, **kw):
    from fastgpt.kernels import _quant

    return _quant.linear_q8x(x, w, b, np.full((x.shape[0], w.shape[0]), np.nan, np.float32), n_threads, **kw)


# -- the spec -------------------------------------------------------------------------------------
def test_activation_rounding_is_absmax_per_block():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 96)) * np.array([1e-3, 1.0, 300.0, 1e30, 1.0])[:, None]).astype(np.float32)
    x[4, 32:64] = 0.0                                              # an all-zero block
    x[4, 64:96] = INT8_X_TINY / 2                                  # a block too small to scale
    q, sx = quantize_activations_int8(x)                           # (5, 3, 32), (5, 3)
    blocks = x.reshape(5, 3, 32)
    absmax = np.abs(blocks).max(-1)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    assert np.array_equal(sx[:4], absmax[:4] / np.float32(127)) and sx[4, 1] == 0 and sx[4, 2] == 0
    assert (q[4, 1:] == 0).all()
    assert (np.abs(q).max(-1)[:4] == 127).all()                    # the absmax element maps to +-127
    err = np.abs(q * sx[..., None] - blocks)[:4]                   # rounding: at most half a step
    assert (err <= sx[:4, :, None] * (0.5 + 1e-6)).all()


def test_activation_rounding_of_nan_and_inf():
    x = np.ones((2, 64), np.float32)
    x[0, 3], x[1, 40] = np.nan, -np.inf
    q, sx = quantize_activations_int8(x)
    assert np.isnan(sx[0, 0]) and np.isnan(sx[1, 1]) and sx[0, 1] == sx[1, 0] == np.float32(1 / 127)
    assert (q[0, 0] == 0).all() and (q[1, 1] == 0).all()


def test_spec_needs_int8_weights():
    w = quantize(np.zeros((4, 32), np.float32), "bfloat16")
    with pytest.raises(QuantizationError, match="int8"):
        linear_ref_int8_activations(np.zeros((2, 32), np.float32), w, None, np.empty((2, 4), np.float32))


# -- the kernel against the spec and the float32 reference -------------------------------------------
N_ROWS = [9, 16, 17, 63, 128, 512]
IN = [32, 64, 768, 3072]
OUT = [1, 15, 16, 17, 768, 2304, 3072]
# the whole grid where the float64 reference is quick; the GPT-2 shapes at N = 512 on their own
CASES = [(N, I, O) for N in N_ROWS for I in IN for O in OUT if N * I * O <= 40_000_000]
CASES += [(512, 768, 2304), (512, 768, 3072), (512, 3072, 768)]


@needs_vnni
@pytest.mark.parametrize("N, I, O", CASES)
def test_kernel_matches_spec_and_reference(N, I, O):
    x, w, b = _x(N, I), _weight(O, I), _bias(O)
    spec = linear_ref_int8_activations(x, w, None, np.empty((N, O), np.float32))
    ref = linear_ref(x, w, None, np.empty((N, O), np.float32))
    got = _q8x(x, w, None)
    assert_nmse(got, spec, SPEC_NMSE, f"N={N} I={I} O={O} vs spec")
    assert_nmse(got, ref, Q8X_NMSE, f"N={N} I={I} O={O} vs dequantize+matmul")
    e_spec, e_ref = nmse(got, spec), nmse(got, ref)
    print(f"N={N} I={I} O={O}: NMSE vs spec {e_spec:.2g}, vs float32 x {e_ref:.2g}; first {got.ravel()[:3]}")
    with_bias = _q8x(x, w, b)
    assert_bitwise(with_bias, got + b, f"N={N} I={I} O={O} bias")  # the bias is added last


@needs_kernels
@pytest.mark.parametrize("N, I, O", [(9, 32, 1), (17, 64, 17), (20, 768, 33), (3, 96, 40)])
def test_portable_loop_matches_spec_and_kernel_bitwise(N, I, O):
    x, w, b = _x(N, I, seed=1), _weight(O, I), _bias(O)
    ref = _q8x(x, w, b, reference=True)
    assert_nmse(ref, linear_ref_int8_activations(x, w, b, np.empty((N, O), np.float32)), SPEC_NMSE,
                f"fg_qgemm_ref N={N} I={I} O={O}")
    if _qgemm_available():
        assert_bitwise(_q8x(x, w, b), ref, f"kernel vs fg_qgemm_ref N={N} I={I} O={O}")


@needs_vnni
@pytest.mark.parametrize("N, I, O", [(9, 768, 2304), (40, 3072, 768), (513, 768, 3072), (100, 64, 1000)])
def test_one_and_two_threads_agree_bitwise(N, I, O):
    x, w, b = _x(N, I, seed=2), _weight(O, I), _bias(O)
    one, two = _q8x(x, w, b, 1), _q8x(x, w, b, 2)
    assert_bitwise(two, one, f"2 vs 1 threads N={N} I={I} O={O}")
    assert_bitwise(_q8x(x, w, b, 3), one, f"3 vs 1 threads N={N} I={I} O={O}")


@needs_vnni
def test_rows_are_independent_of_their_neighbours():
    # a row's result does not depend on N or on where the row falls in a 6-row chunk
    x, w = _x(23, 768, seed=3), _weight(100, 768)
    full = _q8x(x, w, None)
    for r0, r1 in [(0, 1), (5, 14), (7, 23)]:
        assert_bitwise(_q8x(x[r0:r1].copy(), w, None), full[r0:r1], f"rows {r0}:{r1}")


@needs_vnni
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_x_makes_its_row_nan(bad):
    x, w, b = _x(20, 768, seed=4), _weight(300, 768), _bias(300)
    clean = _q8x(x, w, b)
    x[7, 100] = bad
    x[12, 767] = bad
    got = _q8x(x, w, b)
    assert np.isnan(got[[7, 12]]).all()
    keep = np.setdiff1d(np.arange(20), [7, 12])
    assert_bitwise(got[keep], clean[keep], "rows without NaN / inf")
    spec = linear_ref_int8_activations(x, w, b, np.empty((20, 300), np.float32))
    assert np.isnan(spec[[7, 12]]).all()


@needs_vnni
def test_zero_tiny_and_huge_blocks():
    x = _x(12, 128, seed=5)
    x[0] = 0.0                                                     # all-zero row: bias only
    x[1, :32] = INT8_X_TINY / 4                                    # counts as zero
    x[2] *= np.float32(1e30)                                       # scales near float32's top stay finite
    x[3, 32:64] = np.float32(3e38)
    w, b = _weight(40, 128), _bias(40)
    got = _q8x(x, w, b)
    assert np.array_equal(got[0], b)
    spec = linear_ref_int8_activations(x, w, b, np.empty((12, 40), np.float32))
    assert_nmse(got[[1, 2] + list(range(4, 12))], spec[[1, 2] + list(range(4, 12))], SPEC_NMSE, "tiny / huge blocks")
    assert np.isfinite(got[2]).all()
    assert_bitwise(got[3], _q8x(x, w, b, reference=True)[3], "a block near float32's maximum")


# -- dispatch ----------------------------------------------------------------------------------------
@needs_vnni
def test_int8_prefill_runs_the_integer_gemm():
    from fastgpt.kernels import _quant

    x, w, b = _x(80, 768, seed=6), _weight(200, 768), _bias(200)
    got = _quant.linear(x, w, b, np.empty((80, 200), np.float32), 2)
    assert_bitwise(got, _q8x(x, w, b), "linear() with N > SKINNY_MAX_ROWS")
    # lower SIMD levels keep float32 activations
    ref = linear_ref(x, w, b, np.empty((80, 200), np.float32))
    old = _quant.linear(x, w, b, np.empty((80, 200), np.float32), 2, max_level=1)
    assert nmse(old, ref) < 1e-10 < nmse(got, ref)


@needs_kernels
def test_errors():
    from fastgpt.kernels import _quant

    x = np.zeros((10, 64), np.float32)
    with pytest.raises(ValueError, match="int8"):
        _quant.linear_q8x(x, quantize(np.zeros((4, 64), np.float32), "float16"), None,
                          np.empty((10, 4), np.float32), reference=True)
    with pytest.raises(ValueError, match="out must have shape"):
        _quant.linear_q8x(x, _weight(4, 64), None, np.empty((10, 5), np.float32), reference=True)
    with pytest.raises(ValueError, match="features"):
        _quant.linear_q8x(x, _weight(4, 32), None, np.empty((10, 4), np.float32), reference=True)
