"""GPT-2 forward pass over a KV cache: pre-LN blocks, causal attention, tied LM head.

The model owns the weights, the config and the backend (chosen once). ``forward`` appends
the new tokens to a cache and returns logits; with ``last_only=True`` only the last
position's logits are computed, which is what generation needs. A decode step of that kind
(one new token per row) runs as one call when the backend offers a fused decoder (the compiled
one does: kernels/_decode.pyx); otherwise, and for prompts, the blocks run op by op.

Sharing: a Model holds only read-only state (config, weights, backend settings), so any number
of threads may call it at once, each with its own KVCache (or none): every call gives bitwise
what it gives alone. A KVCache belongs to one call at a time; using one from two threads at once
raises CacheBusyError.
"""

from __future__ import annotations

import numpy as np

from .backend import select_backend
from .config import GPT2Config
from .kv_cache import CacheError, KVCache
from .quant import QuantizedWeight, check_dtype, quantize_weights, weights_dtype
from .weights import GPT2Weights


#: llama.cpp's default ubatch: long enough that a chunk's products run at GEMM speed.
DEFAULT_PREFILL_CHUNK = 512


class TokenIdError(ValueError):
    """Token ids that are not integers in [0, vocab_size), or of the wrong shape."""


class Model:
    """A GPT-2 model: config, weights (float32 or 16/8-bit) and the backend chosen once.

    Thread-safe: share one Model between threads freely; give each call its own cache.
    """

    def __init__(self, config: GPT2Config, weights: GPT2Weights, backend: str = "auto",
                 num_threads: int | None = None, dtype: str | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK):
        """``dtype``: hold the matrices in "float32", "bfloat16", "float16" or "int8" (quantized
        once, here; see fastgpt/quant.py). None keeps them as given (a converted folder's dtype).
        ``prefill_chunk``: see the property."""
        weights.validate(config)
        if dtype is not None:
            weights = quantize_weights(weights, dtype)
        self.config = config
        self.weights = weights
        self.backend = select_backend(backend, num_threads)
        self.prefill_chunk = prefill_chunk

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str = "auto", num_threads: int | None = None,
                        dtype: str | None = None, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> "Model":
        """Load a Hugging Face GPT-2 folder (config.json + safetensors / pytorch_model.bin), or
        one written by ``fastgpt convert`` (memory-mapped in its own dtype)."""
        from .loaders.gpt2 import load_pretrained

        if dtype is not None:
            check_dtype(dtype)  # fail before a long load
        _check_prefill_chunk(prefill_chunk)
        config, weights = load_pretrained(path)
        return cls(config, weights, backend=backend, num_threads=num_threads, dtype=dtype,
                   prefill_chunk=prefill_chunk)

    @classmethod
    def random(cls, config: GPT2Config, seed: int = 0, backend: str = "auto",
               num_threads: int | None = None, dtype: str | None = None,
               prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> "Model":
        from .weights import random_weights

        if dtype is not None:
            check_dtype(dtype)
        return cls(config, random_weights(config, seed), backend=backend, num_threads=num_threads, dtype=dtype,
                   prefill_chunk=prefill_chunk)

    @property
    def dtype(self) -> str:
        """What the matrices are held in: "float32", "bfloat16", "float16" or "int8"."""
        return weights_dtype(self.weights)

    @property
    def num_threads(self) -> int:
        return self.backend.threads.num_threads

    @property
    def prefill_chunk(self) -> int:
        """The most new positions one pass through the blocks takes (llama.cpp's ubatch).

        A longer input runs as consecutive chunks of this many tokens. The kernels' rounding
        depends on how many rows a product has, so the chunk size is part of what a prompt
        computes: a server that prefills in chunks of this size gets bitwise what ``Generator``
        gets on the same model.
        """
        return self._prefill_chunk

    @prefill_chunk.setter
    def prefill_chunk(self, value: int) -> None:
        self._prefill_chunk = _check_prefill_chunk(value)

    def num_parameters(self) -> int:
        return self.config.num_parameters(tied_head=self.weights.tied_head)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        return KVCache(self.config, batch_size=batch_size, max_len=max_len)

    # -- forward --------------------------------------------------------------------------
    def _check_ids(self, ids) -> tuple[np.ndarray, bool]:
        arr = np.asarray(ids)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise TokenIdError(f"token ids must be integers, got dtype {arr.dtype}")
        squeeze = arr.ndim == 1
        if squeeze:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise TokenIdError(f"token ids must have shape (seq,) or (batch, seq) with seq >= 1, got {np.shape(ids)}")
        V = self.config.vocab_size
        bad = (arr < 0) | (arr >= V)
        if bad.any():
            b, t = np.argwhere(bad)[0]
            raise TokenIdError(f"token id {int(arr[b, t])} at position {int(t)} is outside the vocabulary [0, {V})")
        return np.ascontiguousarray(arr, dtype=np.int64), squeeze

    def _check_cache(self, cache, rows, B: int, T: int) -> np.ndarray:
        """The cache rows that ids of shape (B, T) extend, checked to fit."""
        if not isinstance(cache, KVCache):
            raise CacheError(f"cache must be a KVCache (from model.new_cache), got {type(cache).__name__}")
        if cache.config is not self.config and cache.config != self.config:
            raise CacheError("cache was made for another model config; make one with this model's new_cache()")
        if rows is None:
            if cache.batch_size != B:
                raise CacheError(f"ids have batch size {B} but the cache was made for batch_size={cache.batch_size}")
            row_idx = np.arange(B, dtype=np.int64)
        else:
            row_idx = cache.check_rows(rows)
            if row_idx.size != B:
                raise CacheError(f"ids have {B} rows but rows= names {row_idx.size} cache rows")
        fullest = int(cache.lengths[row_idx].max())
        if T > cache.max_len - fullest:
            raise CacheError(
                f"{T} new tokens do not fit: a row of the cache holds {fullest} of {cache.max_len} positions "
                f"(n_positions={self.config.n_positions}); GPT-2 cannot attend further back"
            )
        return row_idx

    def forward(self, ids, cache: KVCache | None = None, last_only: bool = False, rows=None) -> np.ndarray:
        """Logits for ``ids`` appended to ``cache`` (or to an empty sequence).

        ids: (seq,) or (batch, seq) ints. Returns float32 (seq, vocab) / (batch, seq, vocab), or
        with ``last_only`` (vocab,) / (batch, vocab). ``rows``: the cache rows that the rows of
        ids extend (default: all of them, in order); each row's tokens go to the slots after its
        own ``cache.lengths[row]``, so rows of different lengths decode together. With a cache
        and ``last_only`` the result lives in the cache's workspace and is overwritten by the
        next forward on that cache: copy it to keep it.
        """
        arr, squeeze = self._check_ids(ids)
        B, T = arr.shape
        if cache is None:
            if rows is not None:
                raise CacheError("rows= names rows of a cache: pass cache= too")
            if T > self.config.n_positions:
                raise CacheError(f"{T} tokens exceed the model's context of n_positions={self.config.n_positions}")
            cache = self.new_cache(batch_size=B, max_len=T)
        row_idx = self._check_cache(cache, rows, B, T)
        with cache.in_use():
            self.backend.threads.apply()
            chunk = self._prefill_chunk
            if T <= chunk:
                logits = self._forward_chunk(arr, cache, row_idx, "last" if last_only else "all")
            else:
                logits = None if last_only else np.empty((B, T, self.config.vocab_size), np.float32)
                for t0 in range(0, T, chunk):
                    t1 = min(T, t0 + chunk)
                    head = "all" if not last_only else "last" if t1 == T else None
                    part = self._forward_chunk(arr[:, t0:t1], cache, row_idx, head)
                    if last_only:
                        logits = part
                    else:
                        logits[:, t0:t1] = part
        return logits[0] if squeeze else logits

    __call__ = forward

    def _forward_chunk(self, ids: np.ndarray, cache: KVCache, rows: np.ndarray, head: str | None):
        """One pass through the model for ids (B, T), T <= prefill_chunk. ``head``: "last" ->
        logits (B, V) of the last positions, "all" -> (B, T, V), None -> no logits (a prompt's
        chunk before its last)."""
        B, T = ids.shape
        C, V = self.config.n_embd, self.config.vocab_size
        slots = cache.lengths[rows]                                  # (B,) first new slot per row
        ws = cache.workspace(B * T)
        self._embed(ids, cache, rows, slots, ws)
        decoder = self.backend.decoder(self.weights, self.config, cache, ws, B) if head == "last" and T == 1 else None
        be = self.backend
        logits = None
        if decoder is not None:                                      # one call for the whole step
            logits = decoder.step(rows, slots)                       # (B, V), cache workspace
        else:
            x = self._blocks(T, cache, rows, slots, ws)              # (B*T, C)
            if head == "last":
                last = ws.last[:B]
                be.layer_norm(x.reshape(B, T, C)[:, -1], self.weights.ln_f_g, self.weights.ln_f_b,
                              self.config.layer_norm_epsilon, out=last)
                logits = be.linear(last, self.weights.lm_head, None, out=ws.logits[:B], ws=ws)   # (B, V)
            elif head == "all":
                h = ws.h[: B * T]
                be.layer_norm(x, self.weights.ln_f_g, self.weights.ln_f_b, self.config.layer_norm_epsilon, out=h)
                logits = np.empty((B * T, V), np.float32)
                be.linear(h, self.weights.lm_head, None, out=logits, ws=ws)
                logits = logits.reshape(B, T, V)
        cache.lengths[rows] = slots + T
        return logits

    def _embed(self, ids: np.ndarray, cache: KVCache, rows: np.ndarray, slots: np.ndarray, ws) -> None:
        """The workspace's x = token + position embeddings of ids (B, T) at each row's slots."""
        w = self.weights
        B, T = ids.shape
        N = B * T
        x, h = ws.x[:N], ws.h[:N]
        # Positions count from each row's first real token (left padding); padding slots get 0.
        positions = ws.positions[:N].reshape(B, T)
        np.add(slots[:, None] - cache.start[rows][:, None], np.arange(T), out=positions)
        np.maximum(positions, 0, out=positions)
        if isinstance(w.wte, QuantizedWeight):
            w.wte.dequantize_rows(ids.reshape(N), out=x)            # (N, C): only the rows needed
        else:
            np.take(w.wte, ids.reshape(N), axis=0, out=x)          # (N, C)
        np.take(w.wpe, positions.reshape(N), axis=0, out=h)        # (N, C)
        x += h

    def _blocks(self, T: int, cache: KVCache, rows: np.ndarray, slots: np.ndarray, ws) -> np.ndarray:
        """Every block, op by op, over the embeddings that _embed put in the workspace."""
        cfg, w, be = self.config, self.weights, self.backend
        B = rows.shape[0]
        N, C, H, D = B * T, cfg.n_embd, cfg.n_head, cfg.head_dim
        eps = cfg.layer_norm_epsilon
        x, h, qkv, attn, ff = ws.x[:N], ws.h[:N], ws.qkv[:N], ws.attn[:N], ws.ff[:N]
        qkv_bt = qkv.reshape(B, T, 3 * C)
        attn_bthd = attn.reshape(B, T, H, D)
        for layer, blk in enumerate(w.blocks):
            be.layer_norm(x, blk.ln_1_g, blk.ln_1_b, eps, out=h)
            be.linear(h, blk.attn_qkv_w, blk.attn_qkv_b, out=qkv, ws=ws)
            be.attention(qkv_bt, cache.k[layer], cache.v[layer], rows, cache.start, slots, out=attn_bthd, ws=ws)
            be.linear(attn, blk.attn_proj_w, blk.attn_proj_b, out=h, ws=ws)
            be.add(x, h, out=x)
            be.layer_norm(x, blk.ln_2_g, blk.ln_2_b, eps, out=h)
            be.linear(h, blk.mlp_fc_w, blk.mlp_fc_b, out=ff, ws=ws)
            be.activation(cfg.activation_function, ff, out=ff)
            be.linear(ff, blk.mlp_proj_w, blk.mlp_proj_b, out=h, ws=ws)
            be.add(x, h, out=x)
        return x


def _check_prefill_chunk(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"prefill_chunk must be a positive integer, got {value!r}")
    return int(value)
