"""The compiled backend: the reference ops, overridden by kernels where they exist and pay.

Each override receives arrays that the model allocated (float32, C-contiguous) and the
kernels re-check shapes before releasing the GIL. Cases a kernel does not handle fall back
to the NumPy reference via ``super()``.

The backend holds settings only. Scratch that kernels write with the GIL released, and the
fused decoder (which points into the cache and its workspace), live in the calling cache's
workspace: threads that share a model never share a buffer.
"""

from __future__ import annotations

import numpy as np

from .numpy_backend import NumpyBackend
from .kernels import _attention, _decode, _elementwise, _linear
from .kernels import _quant
from .quant import QuantizedWeight

# Up to this many rows of x (a decode step of the serving engine's largest batch, a short prompt)
# every product runs a skinny kernel, whose results for a row do not depend on the other rows:
# a request decoded in a batch gets exactly the tokens it gets alone. Above it, _linear.gemm
# (AVX-512 or AVX2; BLAS only on CPUs with neither) and the quantized GEMMs.
SKINNY_MAX_ROWS = _quant.SKINNY_MAX_ROWS


class CythonBackend(NumpyBackend):
    name = "cython"

    def __init__(self, threads):
        super().__init__(threads)
        #: Whether decode steps run as one call (kernels/_decode.pyx); False runs them op by op,
        #: bitwise the same (the tests compare the two).
        self.fuse_decode = True

    def layer_norm(self, x, g, b, eps, out):
        if not x.flags.c_contiguous:
            return super().layer_norm(x, g, b, eps, out)
        return _elementwise.layer_norm(x, g, b, eps, out, self.threads.num_threads)

    def activation(self, kind, x, out):
        return _elementwise.activation(kind, x, out, self.threads.num_threads)

    def linear(self, x, w, b, out, ws=None):
        # x: (N, in); w: (out, in) row-major; b: (out,) or None; out: (N, out).
        if isinstance(w, QuantizedWeight):  # 16/8-bit weights: fused kernels (kernels/_quant.pyx)
            scratch = None                  # without a workspace the kernel allocates its own
            if ws is not None and x.shape[0] <= _quant.skinny_max_rows(w.format):
                need = _quant.scratch_bytes(w.format, x.shape[0], x.shape[1])
                scratch = ws.scratch("quant_prep", (need,), np.uint8)
            return _quant.linear(x, w, b, out, self.threads.num_threads, scratch=scratch)
        if w.dtype != np.float32:
            return super().linear(x, w, b, out)
        if x.shape[0] <= SKINNY_MAX_ROWS:
            return _linear.linear(x, w, b, out, self.threads.num_threads)
        if _linear.gemm_available():
            return _linear.gemm(x, w, b, out, self.threads.num_threads)
        return super().linear(x, w, b, out)

    def attention(self, qkv, k_cache, v_cache, rows, start, slots, out, ws=None, visible=None, head_scale=None,
                  probs=None):
        if visible is not None or head_scale is not None or probs is not None:
            return super().attention(qkv, k_cache, v_cache, rows, start, slots, out, ws, visible, head_scale, probs)
        # Four score rows per thread: the prefill kernel scores four queries at once.
        shape = (4 * self.threads.num_threads, k_cache.shape[2])
        scratch = np.empty(shape, np.float32) if ws is None else ws.scratch("attention", shape, np.float32)
        return _attention.attention(qkv, k_cache, v_cache, rows, start, slots, out, scratch,
                                    self.threads.num_threads)

    def add(self, x, y, out):
        return _elementwise.add(x, y, out)

    @property
    def max_fused_tokens(self) -> int:
        return SKINNY_MAX_ROWS if self.fuse_decode else 0

    def decoder(self, weights, config, cache, ws, n_rows):
        """The fused step for this cache and workspace, built once and kept in the workspace."""
        if not self.fuse_decode:
            return None
        entry = ws.decoder
        n_threads = self.threads.num_threads
        if entry is None or entry[0] is not weights or entry[1].n_threads != n_threads:
            decoder = _decode.Decoder(weights, config, cache.k, cache.v, cache.start, ws, n_threads)
            entry = ws.decoder = (weights, decoder)
        # The fused step runs the skinny kernels that linear picks for up to SKINNY_MAX_ROWS rows;
        # with more rows linear switches to the GEMMs, and op by op is what matches that.
        return entry[1] if n_rows <= SKINNY_MAX_ROWS else None
