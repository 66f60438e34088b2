"""The 16-bit KV cache: kv_dtype "float16" | "bfloat16" | "float32" on Model and its caches.

A 16-bit cache stores each new key and value rounded to nearest even and attention reads them
widened exactly (csrc/attention.c; the NumPy reference upcasts them, _numpy_ops.from_cache). So:
- the stored bits are exactly NumPy's astype(float16) / quant.float32_to_bf16_bits of the keys and
  values (checked bit for bit through the attention op, where both backends store the same qkv);
- the compiled backend and the reference attend over the same stored values, so they agree to the
  summation-order tolerance ATTN_RTOL whatever the cache dtype;
- the fused decode step and the op-by-op path are bitwise the same, and a row decoded among others
  is bitwise the row alone, with 16-bit caches too;
- against a float32 cache, logits move by the rounding of keys and values: KV_NMSE bounds it.
"""

import numpy as np
import pytest

from fastgpt import GPT2Config, Model
from fastgpt.backend import kernels_available
from fastgpt.kv_cache import KV_DTYPES, CacheError, KVCache
from fastgpt.quant import DTYPES, bf16_bits_to_float32, float32_to_bf16_bits
from fastgpt import _numpy_ops as ref

needs_kernels = pytest.mark.skipif(not kernels_available(), reason="compiled kernels not built")

SMALL = GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4)
#: float32 attention over the same cached values, compiled vs NumPy: summation order only.
ATTN_RTOL = 1e-5
#: Logits of a 16-bit cache against a float32 one (random 2-layer model, 20 positions): keys and
#: values rounded to 11 (float16) or 8 (bfloat16) significant bits, relative error up to 2^-11 /
#: 2^-8 each. Measured 1.3e-8 (float16) and 8.8e-7 (bfloat16) on both backends; ~50x room.
KV_NMSE = {"float16": 5e-7, "bfloat16": 5e-5}


def nmse(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(((got - want) ** 2).sum() / (want ** 2).sum())


def test_cache_dtypes_and_sizes():
    per_position = {"float32": 4, "float16": 2, "bfloat16": 2}
    for kv_dtype in KV_DTYPES:
        cache = KVCache(SMALL, batch_size=3, max_len=10, kv_dtype=kv_dtype)
        assert cache.kv_dtype == kv_dtype
        assert cache.k.dtype == {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[kv_dtype]
        assert cache.k.shape == cache.v.shape == (2, 3, 4, 10, 16)
        assert cache.bytes_per_position() == 2 * 2 * 64 * per_position[kv_dtype]
        assert cache.nbytes() == 3 * 10 * cache.bytes_per_position()
    with pytest.raises(CacheError, match=r"kv_dtype must be one of 'float16', 'bfloat16', 'float32', got 'int8'"):
        KVCache(SMALL, kv_dtype="int8")


def test_model_default_and_overrides(tmp_path):
    from fastgpt.convert import write_converted

    assert Model.random(SMALL, backend="numpy").kv_dtype == "float32"           # exact float32 stays exact
    for dtype in ("bfloat16", "float16", "int8"):
        assert Model.random(SMALL, backend="numpy", dtype=dtype).kv_dtype == "float16"
    model = Model.random(SMALL, backend="numpy", kv_dtype="bfloat16")
    assert model.kv_dtype == "bfloat16" and model.new_cache().kv_dtype == "bfloat16"
    assert model.new_cache(kv_dtype="float32").kv_dtype == "float32"
    write_converted(tmp_path, SMALL, model.weights)
    assert Model.from_pretrained(tmp_path, backend="numpy", kv_dtype="float16").new_cache().k.dtype == np.float16
    for bad in (lambda: Model.random(SMALL, kv_dtype="fp8"),
                lambda: Model.from_pretrained(tmp_path, kv_dtype="half"),
                lambda: model.new_cache(kv_dtype="float64")):
        with pytest.raises(ValueError, match="kv_dtype must be one of"):
            bad()


@needs_kernels
@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
@pytest.mark.parametrize("D", [16, 64, 65])        # AVX-512 paths (one and four queries) and the generic one
def test_attention_stores_rounded_values_and_reads_them(kv_dtype, D):
    from fastgpt.kernels import _attention

    rng = np.random.default_rng(D)
    B, T, H, S, R = 2, 6, 3, 24, 3
    qkv = (rng.standard_normal((B, T, 3 * H * D)) * 3).astype(np.float32)
    qkv[0, 0, H * D] = 70000.0 if kv_dtype == "bfloat16" else 3.0        # past float16's range: bfloat16 only
    rows, slots, start = np.array([2, 0]), np.array([5, 0]), np.array([0, 0, 2])
    caches, np_dtype = {}, {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[kv_dtype]
    filler = rng.standard_normal((R, H, S, D)).astype(np.float32)              # earlier positions
    for name in ("cython", "numpy"):
        k, v = np.zeros((R, H, S, D), np_dtype), np.zeros((R, H, S, D), np_dtype)   # one layer's cache
        k[...] = ref.to_cache(filler, k.dtype)
        v[...] = ref.to_cache(-filler, v.dtype)
        out = np.empty((B, T, H, D), np.float32)
        if name == "cython":
            _attention.attention(qkv, k, v, rows, start, slots, out, np.empty((8, S), np.float32), 2)
        else:
            ref.attention(qkv, k, v, rows, start, slots, out)
        caches[name] = (k, v, out)
    (k, v, out), (k_ref, v_ref, out_ref) = caches["cython"], caches["numpy"]
    assert np.array_equal(k.view(np.uint8), k_ref.view(np.uint8)) and np.array_equal(v.view(np.uint8), v_ref.view(np.uint8))
    new_k = qkv.reshape(B, T, 3, H, D)[:, :, 1]                                  # (B, T, H, D)
    stored = k[rows[0], :, slots[0]:slots[0] + T].transpose(1, 0, 2)             # (T, H, D)
    want = new_k[0] if kv_dtype == "float32" else (
        new_k[0].astype(np.float16) if kv_dtype == "float16" else float32_to_bf16_bits(new_k[0]))
    assert np.array_equal(stored, want)
    err = np.abs(out - out_ref).max() / np.abs(out_ref).max()
    assert err <= ATTN_RTOL, f"{kv_dtype} D={D}: attention differs from the reference by {err:.3g} (relative)"


def _decode_steps(model, ids, steps, kv_dtype, fuse):
    model.backend.fuse_decode = fuse
    cache = model.new_cache(batch_size=ids.shape[0], max_len=40, kv_dtype=kv_dtype)
    logits = [model.forward(ids, cache=cache, last_only=True).copy()]
    for _ in range(steps):
        logits.append(model.forward(np.argmax(logits[-1], -1)[:, None], cache=cache, last_only=True).copy())
    return np.array(logits), cache


@needs_kernels
@pytest.mark.parametrize("kv_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_is_bitwise_op_by_op_with_16bit_caches(kv_dtype, dtype):
    model = Model.random(SMALL, seed=4, backend="cython", num_threads=2, dtype=dtype)
    ids = np.random.default_rng(1).integers(0, SMALL.vocab_size, (3, 5))
    fused, cache_f = _decode_steps(model, ids, 4, kv_dtype, True)
    plain, cache_p = _decode_steps(model, ids, 4, kv_dtype, False)
    assert np.array_equal(fused, plain), f"logits differ by up to {np.abs(fused - plain).max()}"
    assert np.array_equal(cache_f.k.view(np.uint16), cache_p.k.view(np.uint16))


@needs_kernels
@pytest.mark.parametrize("kv_dtype", ["float16", "bfloat16"])
def test_a_row_among_others_is_bitwise_alone_with_16bit_caches(kv_dtype):
    model = Model.random(SMALL, seed=5, backend="cython", num_threads=2, dtype="int8")
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    together = model.new_cache(batch_size=4, max_len=20, kv_dtype=kv_dtype)
    for row, prompt in enumerate(prompts):
        model.forward([prompt], cache=together, rows=[row])
    tokens = np.array([[40], [41], [42], [43]])
    batched = model.forward(tokens, cache=together, last_only=True).copy()
    for row, prompt in enumerate(prompts):
        alone = model.new_cache(max_len=20, kv_dtype=kv_dtype)
        model.forward([prompt], cache=alone)
        single = model.forward(tokens[row:row + 1], cache=alone, last_only=True)
        assert np.array_equal(batched[row], single[0]), f"row {row} differs by {np.abs(batched[row] - single[0]).max()}"


@pytest.mark.parametrize("kv_dtype", ["float16", "bfloat16"])
def test_16bit_cache_is_close_to_float32_and_backends_agree(backend, kv_dtype):
    model = Model.random(SMALL, seed=6, backend=backend, num_threads=2)
    ids = np.random.default_rng(2).integers(0, SMALL.vocab_size, (2, 20))
    want = model(ids)                                                   # float32 cache (float32 weights)
    cache = model.new_cache(batch_size=2, kv_dtype=kv_dtype)
    got = model(ids, cache=cache)
    e = nmse(got, want)
    assert 0 < e <= KV_NMSE[kv_dtype], f"{backend} {kv_dtype}: logits NMSE {e:.3g} against the float32 cache"
    reference = Model(SMALL, model.weights, backend="numpy")
    spec = reference(ids, cache=reference.new_cache(batch_size=2, kv_dtype=kv_dtype))
    assert nmse(got, spec) <= 1e-10, f"{backend} {kv_dtype}: differs from the NumPy reference"
    widened = ref.from_cache(cache.k)
    assert widened.dtype == np.float32 and (
        np.array_equal(widened, cache.k.astype(np.float32)) if kv_dtype == "float16"
        else np.array_equal(widened, bf16_bits_to_float32(cache.k)))
