"""The compiled backend: the reference ops, overridden by kernels where they exist and pay.

Each override receives arrays that the model allocated (float32, C-contiguous) and the
kernels re-check shapes before releasing the GIL. Cases a kernel does not handle fall back
to the NumPy reference via ``super()``.
"""

from __future__ import annotations

import numpy as np

from .backend import NumpyBackend
from .kernels import _attention, _elementwise, _linear
from .kernels import _quant
from .quant import QuantizedWeight

# Up to this many rows of x the streaming matvec beats the packed GEMM: with few rows the
# product is bound by reading w, and the matvec reads each weight tile once for all rows with
# no packing. Above it, _linear.gemm (AVX-512 or AVX2); BLAS only on CPUs with neither.
MATVEC_MAX_ROWS = 8


class CythonBackend(NumpyBackend):
    name = "cython"

    def __init__(self, threads):
        super().__init__(threads)
        self._scratch = np.empty((0, 0), np.float32)
        self._quant_scratch = np.empty(0, np.uint8)  # decoding's prepared x, grown once

    def layer_norm(self, x, g, b, eps, out):
        if not x.flags.c_contiguous:
            return super().layer_norm(x, g, b, eps, out)
        return _elementwise.layer_norm(x, g, b, eps, out, self.threads.num_threads)

    def activation(self, kind, x, out):
        return _elementwise.activation(kind, x, out, self.threads.num_threads)

    def linear(self, x, w, b, out):
        # x: (N, in); w: (out, in) row-major; b: (out,) or None; out: (N, out).
        if isinstance(w, QuantizedWeight):  # 16/8-bit weights: fused kernels (kernels/_quant.pyx)
            if x.shape[0] <= _quant.DECODE_MAX_ROWS:
                need = _quant.scratch_bytes(w.format, x.shape[0], x.shape[1])
                if self._quant_scratch.shape[0] < need:
                    self._quant_scratch = np.empty(need, np.uint8)
            return _quant.linear(x, w, b, out, self.threads.num_threads, scratch=self._quant_scratch)
        if w.dtype != np.float32:
            return super().linear(x, w, b, out)
        if x.shape[0] <= MATVEC_MAX_ROWS:
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
