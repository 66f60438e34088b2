"""Each backend op at GPT-2 124M shapes, one pytest-benchmark group per op and shape.

The ops are called directly on preallocated arrays, as the model calls them. Weights and KV
caches are read cold (see ``cold_copies`` in conftest.py), as in decode; layer-norm and GELU
inputs are activations that the previous op has just written, so they stay warm here too.

Dimension legend: N rows (1 token, or a 128-token prefill chunk; 2-64 for the skinny products:
a decode step of a serving batch), C 768, F 3072, V 50257, H 12 heads, D 64 head width,
L cached positions.
"""

import numpy as np
import pytest

from fastgpt.config import PRESETS
from fastgpt.quant import QuantizedWeight, aligned, quantize

GPT2 = PRESETS["gpt2"]

C, F, V, H, D = GPT2.n_embd, GPT2.d_ff, GPT2.vocab_size, GPT2.n_head, GPT2.head_dim
EPS = GPT2.layer_norm_epsilon
ROWS = [1, 128]  # one decode token; one prefill chunk


def _normal(rng, *shape):
    return rng.standard_normal(shape, dtype="float32")


@pytest.mark.parametrize("rows", ROWS)
def test_layer_norm(benchmark, backend, rng, rows):
    benchmark.group = f"layer_norm {rows}x{C}"
    x, out = _normal(rng, rows, C), _normal(rng, rows, C)            # (N, C)
    g, b = _normal(rng, C), _normal(rng, C)                          # (C,)
    benchmark(backend.layer_norm, x, g, b, EPS, out)


@pytest.mark.parametrize("rows", ROWS)
def test_gelu(benchmark, backend, rng, rows):
    benchmark.group = f"gelu_new {rows}x{F}"
    x, out = _normal(rng, rows, F), _normal(rng, rows, F)            # (N, F)
    benchmark(backend.activation, GPT2.activation_function, x, out)


@pytest.mark.parametrize("length", [16, 256, 1024])
def test_attention_one_token(benchmark, backend, rng, cold_copies, length):
    # The newest token (cache slot length - 1) attends over all `length` cached positions.
    benchmark.group = f"attention 1 token over {length} positions"
    qkv = _normal(rng, 1, 1, 3 * H * D)                              # (B, T, 3C)
    caches = cold_copies(_normal(rng, 1, H, length, D), _normal(rng, 1, H, length, D))  # (B, H, L, D) each
    rows, start = np.zeros(1, np.int64), np.zeros(1, np.int64)      # one row, no left padding
    slots = np.array([length - 1])                                  # (B,) the new token's slot
    out = _normal(rng, 1, 1, H, D)

    def attend():
        k, v = next(caches)
        return backend.attention(qkv, k, v, rows, start, slots, out)

    benchmark(attend)


LINEARS = {
    # name: (out, in), fastgpt's layout; the weights are block 0's (or the tied head) of the random model
    "attn_qkv": (3 * C, C),
    "attn_proj": (C, C),
    "mlp_fc": (F, C),
    "mlp_proj": (C, F),
    "lm_head": (V, C),
}


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("name", list(LINEARS))
def test_linear(benchmark, backend, rng, cold_copies, gpt2_weights, name, rows):
    n_out, n_in = LINEARS[name]
    benchmark.group = f"linear {name} {rows}x{n_in} -> {n_out}"
    if name == "lm_head":
        w, b = gpt2_weights.lm_head, None                            # tied to wte; no bias
    else:
        blk = gpt2_weights.blocks[0]
        w, b = getattr(blk, f"{name}_w"), getattr(blk, f"{name}_b")  # (out, in), (out,)
    weights = cold_copies(w)
    x, out = _normal(rng, rows, n_in), _normal(rng, rows, n_out)     # (N, in), (N, out)

    def linear():
        (w,) = next(weights)
        return backend.linear(x, w, b, out)

    benchmark(linear)
    if benchmark.enabled:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["weight_GB_per_s"] = round(w.nbytes / seconds / 1e9, 2)


def _cold_weights(cold_copies, w, dtype):
    """Cold copies of w held in dtype (float32: as is), and the bytes of one copy."""
    if dtype == "float32":
        return cold_copies(w, build=lambda copy: copy), w.nbytes
    q = quantize(w, dtype)
    arrays = (q.data,) if q.scales is None else (q.data, q.scales)
    # copies keep the 64-byte alignment (quant.aligned) that loaded weights have
    return cold_copies(*arrays, build=lambda *copy: QuantizedWeight(dtype, *(aligned(a) for a in copy))), q.nbytes


def _bench_product(benchmark, backend, rng, weights, nbytes, b, rows, n_in, n_out):
    """Time backend.linear of `rows` random rows against the next cold copy each call."""
    x, out = _normal(rng, rows, n_in), _normal(rng, rows, n_out)     # (N, in), (N, out)

    def linear():
        return backend.linear(x, next(weights), b, out)

    benchmark(linear)
    if benchmark.enabled:
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["weight_GB_per_s"] = round(nbytes / seconds / 1e9, 2)
        benchmark.extra_info["GFLOP_per_s"] = round(2 * rows * n_out * n_in / seconds / 1e9, 1)


@pytest.mark.parametrize("rows", [1, 16, 128])  # decode; a short prompt (the 16-bit and int8 kernels
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])                # switch there); prefill
@pytest.mark.parametrize("name", ["attn_qkv", "mlp_proj", "lm_head"])
def test_linear_quantized(benchmark, backend, rng, cold_copies, gpt2_weights, name, dtype, rows):
    n_out, n_in = LINEARS[name]
    benchmark.group = f"linear {name} {rows}x{n_in} -> {n_out} {dtype}"
    if name == "lm_head":
        w, b = gpt2_weights.lm_head, None
    else:
        blk = gpt2_weights.blocks[0]
        w, b = getattr(blk, f"{name}_w"), getattr(blk, f"{name}_b")
    weights, nbytes = _cold_weights(cold_copies, w, dtype)
    _bench_product(benchmark, backend, rng, weights, nbytes, b, rows, n_in, n_out)


SKINNY_ROWS = [2, 4, 8, 16, 32, 64]  # a decode step of a serving batch, a short prompt
SKINNY_MATRICES = ["attn_qkv", "attn_proj", "mlp_fc", "mlp_proj"]


@pytest.mark.parametrize("rows", SKINNY_ROWS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int8"])
@pytest.mark.parametrize("name", SKINNY_MATRICES)
def test_skinny(benchmark, backend, rng, cold_copies, gpt2_weights, name, dtype, rows):
    """The skinny products: 2-64 rows against each block matrix, weights cold (as in a decode step
    of a batch). extra_info: GB/s of weights and GFLOP/s, to set against the bandwidth and the
    arithmetic peak of the kernel (fastgpt bench prints both)."""
    n_out, n_in = LINEARS[name]
    benchmark.group = f"skinny {name} {rows}x{n_in} -> {n_out} {dtype}"
    blk = gpt2_weights.blocks[0]
    weights, nbytes = _cold_weights(cold_copies, getattr(blk, f"{name}_w"), dtype)
    _bench_product(benchmark, backend, rng, weights, nbytes, getattr(blk, f"{name}_b"), rows, n_in, n_out)
