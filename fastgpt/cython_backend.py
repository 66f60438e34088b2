"""The compiled backend: the reference ops, overridden by kernels where they exist and pay.

Each override receives arrays that the model allocated (float32, C-contiguous) and the
kernels re-check shapes before releasing the GIL. Cases a kernel does not handle fall back
to the NumPy reference via ``super()``.
"""

from __future__ import annotations

import weakref

import numpy as np

from .backend import NumpyBackend
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
        self._scratch = np.empty((0, 0), np.float32)
        self._quant_scratch = np.empty(0, np.uint8)  # decoding's prepared x, grown once
        #: Whether decode steps run as one call (kernels/_decode.pyx); False runs them op by op,
        #: bitwise the same (the tests compare the two).
        self.fuse_decode = True
        self._decoders = weakref.WeakKeyDictionary()  # cache -> (weights, workspace, Decoder)

    def layer_norm(self, x, g, b, eps, out):
        if not x.flags.c_contiguous:
            return super().layer_norm(x, g, b, eps, out)
        return _elementwise.layer_norm(x, g, b, eps, out, self.threads.num_threads)

    def activation(self, kind, x, out):
        return _elementwise.activation(kind, x, out, self.threads.num_threads)

    def linear(self, x, w, b, out):
        # x: (N, in); w: (out, in) row-major; b: (out,) or None; out: (N, out).
        if isinstance(w, QuantizedWeight):  # 16/8-bit weights: fused kernels (kernels/_quant.pyx)
            if x.shape[0] <= _quant.skinny_max_rows(w.format):
                need = _quant.scratch_bytes(w.format, x.shape[0], x.shape[1])
                if self._quant_scratch.shape[0] < need:
                    self._quant_scratch = np.empty(need, np.uint8)
            return _quant.linear(x, w, b, out, self.threads.num_threads, scratch=self._quant_scratch)
        if w.dtype != np.float32:
            return super().linear(x, w, b, out)
        if x.shape[0] <= SKINNY_MAX_ROWS:
            return _linear.linear(x, w, b, out, self.threads.num_threads)
        if _linear.gemm_available():
            return _linear.gemm(x, w, b, out, self.threads.num_threads)
        return super().linear(x, w, b, out)

    def attention(self, q, k_cache, v_cache, start, pos, out):
        # Four score rows per thread: the prefill kernel scores four queries at once.
        rows, length = 4 * self.threads.num_threads, pos + q.shape[1]
        if self._scratch.shape[0] < rows or self._scratch.shape[1] < length:
            self._scratch = np.empty((rows, k_cache.shape[2]), np.float32)
        return _attention.attention(q, k_cache, v_cache, start, pos, out, self._scratch, self.threads.num_threads)

    def add(self, x, y, out):
        return _elementwise.add(x, y, out)

    def decoder(self, weights, config, cache):
        if not self.fuse_decode:
            return None
        ws = cache.workspace(cache.batch_size)
        entry = self._decoders.get(cache)
        if entry is None or entry[0] is not weights or entry[1] is not ws or entry[2].n_threads != self.threads.num_threads:
            # The fused step runs the skinny kernels that linear picks for up to SKINNY_MAX_ROWS rows;
            # with more rows linear switches to the GEMMs, and op by op is what matches that.
            if cache.batch_size > SKINNY_MAX_ROWS:
                return None
            decoder = _decode.Decoder(weights, config, cache.k, cache.v, cache.start, ws, self.threads.num_threads)
            entry = self._decoders[cache] = (weights, ws, decoder)
        return entry[2]
