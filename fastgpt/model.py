"""GPT-2 forward pass over a KV cache: pre-LN blocks, causal attention, tied LM head.

The model owns the weights, the config and the backend (chosen once). ``forward`` appends
the new tokens to a cache and returns logits; with ``last_only=True`` only the last
position's logits are computed, which is what generation needs. A decode step of that kind
(one new token per row) runs as one call when the backend offers a fused decoder (the compiled
one does: kernels/_decode.pyx); otherwise, and for prompts, the blocks run op by op.
"""

from __future__ import annotations

import numpy as np

from .backend import select_backend
from .config import GPT2Config
from .kv_cache import CacheError, KVCache
from .quant import QuantizedWeight, check_dtype, quantize_weights, weights_dtype
from .weights import GPT2Weights


class TokenIdError(ValueError):
    """Token ids that are not integers in [0, vocab_size), or of the wrong shape."""


class Model:
    def __init__(self, config: GPT2Config, weights: GPT2Weights, backend: str = "auto",
                 num_threads: int | None = None, dtype: str | None = None):
        """``dtype``: hold the matrices in "float32", "bfloat16", "float16" or "int8" (quantized
        once, here; see fastgpt/quant.py). None keeps them as given (a converted folder's dtype)."""
        weights.validate(config)
        if dtype is not None:
            weights = quantize_weights(weights, dtype)
        self.config = config
        self.weights = weights
        self.backend = select_backend(backend, num_threads)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str = "auto", num_threads: int | None = None,
                        dtype: str | None = None) -> "Model":
        """Load a Hugging Face GPT-2 folder (config.json + safetensors / pytorch_model.bin), or
        one written by ``fastgpt convert`` (memory-mapped in its own dtype)."""
        from .loaders.gpt2 import load_pretrained

        if dtype is not None:
            check_dtype(dtype)  # fail before a long load
        config, weights = load_pretrained(path)
        return cls(config, weights, backend=backend, num_threads=num_threads, dtype=dtype)

    @classmethod
    def random(cls, config: GPT2Config, seed: int = 0, backend: str = "auto",
               num_threads: int | None = None, dtype: str | None = None) -> "Model":
        from .weights import random_weights

        if dtype is not None:
            check_dtype(dtype)
        return cls(config, random_weights(config, seed), backend=backend, num_threads=num_threads, dtype=dtype)

    @property
    def dtype(self) -> str:
        """What the matrices are held in: "float32", "bfloat16", "float16" or "int8"."""
        return weights_dtype(self.weights)

    @property
    def num_threads(self) -> int:
        return self.backend.threads.num_threads

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

    def forward(self, ids, cache: KVCache | None = None, last_only: bool = False) -> np.ndarray:
        """Logits for ``ids`` appended to ``cache`` (or to an empty sequence).

        ids: (seq,) or (batch, seq) ints. Returns float32 (seq, vocab) / (batch, seq, vocab), or
        with ``last_only`` (vocab,) / (batch, vocab). With a cache and ``last_only`` the result
        lives in the cache's workspace and is overwritten by the next forward on that cache:
        copy it to keep it.
        """
        arr, squeeze = self._check_ids(ids)
        B, T = arr.shape
        if cache is None:
            if T > self.config.n_positions:
                raise CacheError(f"{T} tokens exceed the model's context of n_positions={self.config.n_positions}")
            cache = self.new_cache(batch_size=B, max_len=T)
        if cache.batch_size != B:
            raise CacheError(f"ids have batch size {B} but the cache was made for batch_size={cache.batch_size}")
        if T > cache.remaining:
            raise CacheError(
                f"{T} new tokens do not fit: the cache holds {cache.pos} of {cache.max_len} positions "
                f"(n_positions={self.config.n_positions}); GPT-2 cannot attend further back"
            )
        self.backend.threads.apply()
        self._embed(arr, cache)
        decoder = self.backend.decoder(self.weights, self.config, cache) if last_only and T == 1 else None
        if decoder is not None:                                      # one call for the whole step
            logits = decoder.step(cache.pos)                         # (B, V), cache workspace
            cache.pos += 1
            return logits[0] if squeeze else logits
        x = self._blocks(arr, cache)                                 # (B*T, C)
        C = self.config.n_embd
        ws = cache.workspace(B * T)
        be = self.backend
        if last_only:
            last = x.reshape(B, T, C)[:, -1]                         # (B, C)
            be.layer_norm(last, self.weights.ln_f_g, self.weights.ln_f_b, self.config.layer_norm_epsilon, out=ws.last)
            logits = be.linear(ws.last, self.weights.lm_head, None, out=ws.logits)   # (B, V)
            return logits[0] if squeeze else logits
        h = ws.h[: B * T]
        be.layer_norm(x, self.weights.ln_f_g, self.weights.ln_f_b, self.config.layer_norm_epsilon, out=h)
        logits = np.empty((B * T, self.config.vocab_size), np.float32)
        be.linear(h, self.weights.lm_head, None, out=logits)
        logits = logits.reshape(B, T, -1)
        return logits[0] if squeeze else logits

    __call__ = forward

    def _embed(self, ids: np.ndarray, cache: KVCache) -> None:
        """The workspace's x = token + position embeddings of ids (B, T) at the cache's slots."""
        cfg, w = self.config, self.weights
        B, T = ids.shape
        N, pos = B * T, cache.pos
        ws = cache.workspace(N)
        x, h = ws.x[:N], ws.h[:N]
        # Positions count from each row's first real token (left padding); padding slots get 0.
        positions = ws.positions[:N].reshape(B, T)
        np.subtract(np.arange(pos, pos + T), cache.start[:, None], out=positions)
        np.maximum(positions, 0, out=positions)
        if pos + T > cfg.n_positions:
            raise CacheError(f"position {pos + T - 1} is beyond n_positions={cfg.n_positions}")
        if isinstance(w.wte, QuantizedWeight):
            w.wte.dequantize_rows(ids.reshape(N), out=x)            # (N, C): only the rows needed
        else:
            np.take(w.wte, ids.reshape(N), axis=0, out=x)          # (N, C)
        np.take(w.wpe, positions.reshape(N), axis=0, out=h)        # (N, C)
        x += h

    def _blocks(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """Every block, op by op, over the embeddings that _embed put in the workspace."""
        cfg, w, be = self.config, self.weights, self.backend
        B, T = ids.shape
        N, C, H, D = B * T, cfg.n_embd, cfg.n_head, cfg.head_dim
        pos, eps = cache.pos, cfg.layer_norm_epsilon
        ws = cache.workspace(N)
        x, h, qkv, attn, ff = ws.x[:N], ws.h[:N], ws.qkv[:N], ws.attn[:N], ws.ff[:N]

        q = qkv[:, :C].reshape(B, T, H, D)
        k_new = qkv[:, C:2 * C].reshape(B, T, H, D).transpose(0, 2, 1, 3)   # (B, H, T, D)
        v_new = qkv[:, 2 * C:].reshape(B, T, H, D).transpose(0, 2, 1, 3)
        attn_bthd = attn.reshape(B, T, H, D)
        for layer, blk in enumerate(w.blocks):
            be.layer_norm(x, blk.ln_1_g, blk.ln_1_b, eps, out=h)
            be.linear(h, blk.attn_qkv_w, blk.attn_qkv_b, out=qkv)
            cache.k[layer, :, :, pos:pos + T] = k_new
            cache.v[layer, :, :, pos:pos + T] = v_new
            be.attention(q, cache.k[layer], cache.v[layer], cache.start, pos, out=attn_bthd)
            be.linear(attn, blk.attn_proj_w, blk.attn_proj_b, out=h)
            be.add(x, h, out=x)
            be.layer_norm(x, blk.ln_2_g, blk.ln_2_b, eps, out=h)
            be.linear(h, blk.mlp_fc_w, blk.mlp_fc_b, out=ff)
            be.activation(cfg.activation_function, ff, out=ff)
            be.linear(ff, blk.mlp_proj_w, blk.mlp_proj_b, out=h)
            be.add(x, h, out=x)
        cache.pos = pos + T
        return x
