"""The reference backend: every op the model calls, in NumPy (fastgpt/_numpy_ops.py).

It is the spec the compiled backend (cython_backend.py) is tested against and the fallback
for whatever a kernel does not handle. Ops write into the ``out`` arrays the model passes;
scratch they reuse comes from the calling cache's workspace, so one backend serves many
threads at once.
"""

from __future__ import annotations

from . import _numpy_ops as ref
from . import quant
from .quant import QuantizedWeight
from .threads import ThreadSettings


class NumpyBackend:
    name = "numpy"

    def __init__(self, threads: ThreadSettings):
        self.threads = threads

    def layer_norm(self, x, g, b, eps, out):
        return ref.layer_norm(x, g, b, eps, out)

    def activation(self, kind, x, out):
        return ref.ACTIVATION_FUNCTIONS[kind](x, out)

    # ``ws``: the calling cache's Workspace, for scratch the op may reuse (None: allocate).
    def linear(self, x, w, b, out, ws=None):
        if isinstance(w, QuantizedWeight):  # 16/8-bit weights: dequantize, then matmul (the spec)
            return quant.linear_ref(x, w, b, out)
        return ref.linear(x, w, b, out)

    def attention(self, qkv, k_cache, v_cache, rows, start, slots, out, ws=None, visible=None, head_scale=None,
                  probs=None):
        """Append each row's new keys and values to its cache row, then attend (see _numpy_ops:
        ``visible``, ``head_scale`` and ``probs`` are the reference's alone)."""
        return ref.attention(qkv, k_cache, v_cache, rows, start, slots, out, visible, head_scale, probs)

    def add(self, x, y, out):
        return ref.add(x, y, out)

    #: The most tokens a ``decoder`` step runs (see Model.max_fused_tokens); the reference has none.
    max_fused_tokens = 0

    def decoder(self, weights, config, cache, ws, n_rows):
        """Something whose ``step(rows, slots, logit_items=None)`` runs ``n_rows`` new tokens
        through the whole model in one call (token b of cache row rows[b] at slot slots[b], the
        embeddings already in the workspace ``ws``: a decode step, or a short prompt) and returns
        the logits of the tokens logit_items (default all); or None, and the model runs op by op.
        The reference has none."""
        return None
