"""The compiled backend: the reference ops, overridden by kernels where they exist and pay.

Each override receives arrays that the model allocated (float32, C-contiguous) and the
kernels re-check shapes before releasing the GIL. Cases a kernel does not handle fall back
to the NumPy reference via ``super()``.
"""

from __future__ import annotations

import numpy as np

from .backend import NumpyBackend
from .kernels import _attention, _elementwise, _linear

# Up to this many rows the streaming matvec beats BLAS's GEMM: with few rows the product is
# bound by reading w, and our kernel reads each weight row once for all rows of x.
MATVEC_MAX_ROWS = 8


class CythonBackend(NumpyBackend):
    name = "cython"

    def __init__(self, threads):
        super().__init__(threads)
        self._scratch = np.empty((0, 0), np.float32)

    def layer_norm(self, x, g, b, eps, out):
        if not x.flags.c_contiguous:
            return super().layer_norm(x, g, b, eps, out)
        return _elementwise.layer_norm(x, g, b, eps, out, self.threads.num_threads)

    def activation(self, kind, x, out):
        return _elementwise.activation(kind, x, out, self.threads.num_threads)

    def linear(self, x, w, b, out):
        if x.shape[0] > MATVEC_MAX_ROWS or w.dtype != np.float32:
            return super().linear(x, w, b, out)
        return _linear.linear(x, w, b, out, self.threads.num_threads)

    def attention(self, q, k_cache, v_cache, start, pos, out):
        # Four score rows per thread: the prefill kernel scores four queries at once.
        rows, length = 4 * self.threads.num_threads, pos + q.shape[1]
        if self._scratch.shape[0] < rows or self._scratch.shape[1] < length:
            self._scratch = np.empty((rows, k_cache.shape[2]), np.float32)
        return _attention.attention(q, k_cache, v_cache, start, pos, out, self._scratch, self.threads.num_threads)

    def add(self, x, y, out):
        return _elementwise.add(x, y, out)
