"""Reference GPT-2 ops in plain NumPy: the specification the compiled kernels are tested against.

Every op writes into a caller-provided ``out`` array and returns it, so that the model can
plan its memory once (activations live in a preallocated workspace). Readability wins over
speed here; the compiled backend is where speed lives.

Dimension legend: N rows (batch * time), C model width, F feed-forward width, B batch,
T new positions, H heads, D head width, S cache capacity, L valid cache length.
"""

from __future__ import annotations

import math

import numpy as np

from .quant import bf16_bits_to_float32, float32_to_bf16_bits

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def layer_norm(x, g, b, eps, out):
    # x, out: (N, C); g, b: (C,). Biased variance, as torch.nn.LayerNorm.
    mean = x.mean(axis=-1, keepdims=True)                      # (N, 1)
    np.subtract(x, mean, out=out)                              # (N, C)
    var = np.mean(np.square(out), axis=-1, keepdims=True)      # (N, 1)
    out *= 1.0 / np.sqrt(var + eps)
    out *= g
    out += b
    return out


def gelu_tanh(x, out):
    # x, out: (N, F). The "gelu_new" form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    inner = x * x
    inner *= 0.044715 * x
    inner += x
    inner *= _SQRT_2_OVER_PI
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= 0.5
    np.multiply(x, inner, out=out)
    return out


def _erf(x):
    # NumPy has no erf and scipy is not a dependency. Abramowitz & Stegun 7.1.26 has an
    # absolute error of 1.5e-7, below float32 resolution of GELU's output; computed in float64.
    x = x.astype(np.float64)
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu_erf(x, out):
    # x, out: (N, F). The exact GELU: 0.5 x (1 + erf(x / sqrt(2))).
    out[...] = 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    return out


def relu(x, out):
    return np.maximum(x, 0.0, out=out)


def silu(x, out):
    out[...] = x / (1.0 + np.exp(-x.astype(np.float64)))
    return out


def quick_gelu(x, out):
    out[...] = x / (1.0 + np.exp(-1.702 * x.astype(np.float64)))
    return out


ACTIVATION_FUNCTIONS = {
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu": gelu_erf,
    "relu": relu,
    "silu": silu,
    "swish": silu,
    "quick_gelu": quick_gelu,
}


def linear(x, w, b, out):
    # x: (N, in); w: (out, in) row-major; b: (out,) or None; out: (N, out).
    np.matmul(x, w.T, out=out)
    if b is not None:
        out += b
    return out


def softmax(x, out):
    # x, out: (..., L), over the last axis; -inf entries get probability 0.
    np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def attention_mask(start, pos, T, L):
    """Which keys each new query may see: (B, 1, T, L) boolean.

    Query t of row b sits at cache slot pos + t. It sees slots j <= pos + t (causal) and
    j >= start[b] (left padding of that row). A padding query (slot < start[b]) sees the
    padding up to itself, so its softmax is never empty; its output is never used.
    """
    slots = pos + np.arange(T)                                 # (T,)
    keys = np.arange(L)                                        # (L,)
    causal = keys[None, :] <= slots[:, None]                   # (T, L)
    first = np.minimum(np.asarray(start)[:, None], slots[None, :])  # (B, T)
    visible = keys[None, None, :] >= first[:, :, None]         # (B, T, L)
    return (causal[None] & visible)[:, None]                   # (B, 1, T, L)


def to_cache(x, cache_dtype):
    # float32 x as the KV cache holds it: float32, float16 (rounded to nearest even) or bfloat16
    # bits in uint16 (rounded to nearest even; fastgpt.kv_cache.KV_DTYPES).
    return float32_to_bf16_bits(x) if cache_dtype == np.uint16 else x.astype(cache_dtype)


def from_cache(c):
    # Cached keys or values as float32: 16-bit ones widened (exactly).
    return bf16_bits_to_float32(c) if c.dtype == np.uint16 else c.astype(np.float32, copy=False)


def attention(qkv, k_cache, v_cache, rows, start, slots, out, visible=None, head_scale=None, probs=None):
    # qkv: (B, T, 3C) the new queries, keys and values of B rows; k_cache, v_cache: (R, H, S, D),
    # one layer's cache of R >= B rows (float32 or 16-bit: see to_cache); rows: (B,) the cache row
    # of each; start: (R,) first real slot per cache row; slots: (B,) each row's first new slot;
    # out: (B, T, H, D). Appends each row's keys and values at its slots, then attends over its
    # visible slots.
    # What the kernels leave to this reference (rows of one length L = slots + T):
    # visible: (B, T, L) bool, which slots each query sees, instead of causal-from-start (a
    # query that sees none gets zero output); head_scale: (H,) multiplies each head's
    # probabilities (transformers' head_mask); probs: (B, H, T, L) receives the probabilities.
    B, T, H, D = out.shape
    qkv = qkv.reshape(B, T, 3, H, D)
    scale = np.float32(1.0 / math.sqrt(D))
    for i, r in enumerate(rows):
        pos = int(slots[i])
        L = pos + T
        k_cache[r, :, pos:L] = to_cache(qkv[i, :, 1].transpose(1, 0, 2), k_cache.dtype)   # (H, T, D)
        v_cache[r, :, pos:L] = to_cache(qkv[i, :, 2].transpose(1, 0, 2), v_cache.dtype)
        q = qkv[i, :, 0].transpose(1, 0, 2)                           # (H, T, D)
        keys, values = from_cache(k_cache[r, :, :L]), from_cache(v_cache[r, :, :L])   # (H, L, D)
        scores = np.matmul(q, keys.transpose(0, 2, 1))                # (H, T, L)
        scores *= scale
        if visible is None:
            sees = attention_mask(start[r:r + 1], pos, T, L)[0]        # (1, T, L)
        else:
            sees = visible[i][None]                                    # (1, T, L)
        blind = ~sees.any(axis=-1, keepdims=True)                      # (1, T, 1) queries seeing nothing
        scores = np.where(sees | blind, scores, np.float32(-np.inf))
        softmax(scores, out=scores)
        if blind.any():
            scores *= ~blind
        if head_scale is not None:
            scores *= head_scale[:, None, None]
        if probs is not None:
            probs[i] = scores
        out[i] = np.matmul(scores, values).transpose(1, 0, 2)         # (T, H, D)
    return out


def add(x, y, out):
    return np.add(x, y, out=out)
