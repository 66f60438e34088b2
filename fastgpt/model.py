"""GPT-2 forward pass over a KV cache: pre-LN blocks, causal attention, tied LM head.

The model owns the weights, the config and the backend (chosen once). ``forward`` appends
the new tokens to a cache and returns logits; with ``last_only=True`` only the last
position's logits are computed, which is what generation needs. A decode step of that kind
(one new token per row) runs as one call when the backend offers a fused decoder (the compiled
one does: kernels/_decode.pyx); otherwise, and for prompts, the blocks run op by op.

``forward_full`` is the same pass with everything a caller of transformers' API can ask
for: the hidden states after each block and the final norm, explicit positions, token
embeddings given instead of ids, an attention mask over the cache's slots, per-head scales
and the attention probabilities. Left padding and the hidden states run on the backend's
kernels; other masks, head scales and probabilities take the NumPy reference attention.

Sharing: a Model holds only read-only state (config, weights, backend settings), so any number
of threads may call it at once, each with its own KVCache (or none): every call gives bitwise
what it gives alone. A KVCache belongs to one call at a time; using one from two threads at once
raises CacheBusyError.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from . import memory
from .backend import select_backend
from .config import GPT2Config
from .kv_cache import CacheError, KVCache, Workspace, check_kv_dtype, default_kv_dtype
from .quant import QuantizedWeight, check_dtype, quantize_weights, weights_dtype
from .weights import GPT2Weights


#: llama.cpp's default ubatch: long enough that a chunk's products run at GEMM speed.
DEFAULT_PREFILL_CHUNK = 512
_NO_TOKENS = np.empty(0, np.int64)      # a fused chunk that needs no logits
_NO_TOKENS.flags.writeable = False


class TokenIdError(ValueError):
    """Token ids that are not integers in [0, vocab_size), or of the wrong shape."""


class Model:
    """A GPT-2 model: config, weights (float32 or 16/8-bit) and the backend chosen once.

    Thread-safe: share one Model between threads freely; give each call its own cache.
    """

    def __init__(self, config: GPT2Config, weights: GPT2Weights, backend: str = "auto",
                 num_threads: int | None = None, dtype: str | None = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, kv_dtype: str | None = None):
        """``dtype``: hold the matrices in "float32", "bfloat16", "float16" or "int8" (quantized
        once, here; see fastgpt/quant.py). None keeps them as given (a converted folder's dtype).
        ``prefill_chunk``: see the property. ``kv_dtype``: what new caches hold keys and values in,
        "float16", "bfloat16" or "float32" (fastgpt.kv_cache); None: float32 for float32 weights,
        float16 for 16/8-bit ones (kv_cache.default_kv_dtype says why)."""
        weights.validate(config)
        if kv_dtype is not None:
            check_kv_dtype(kv_dtype)
        if dtype is not None:
            weights = quantize_weights(weights, dtype)
        self.config = config
        self.weights = weights
        self.backend = select_backend(backend, num_threads)
        self.prefill_chunk = prefill_chunk
        #: The KV cache dtype of caches made by new_cache (and by forward without a cache).
        self.kv_dtype = default_kv_dtype(self.dtype) if kv_dtype is None else kv_dtype

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str = "auto", num_threads: int | None = None,
                        dtype: str | None = None, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                        check_weights: bool = False, kv_dtype: str | None = None) -> "Model":
        """Load a Hugging Face GPT-2 folder (config.json + safetensors / pytorch_model.bin), or
        one written by ``fastgpt convert`` (memory-mapped in its own dtype). ``kv_dtype``: the
        model's default KV cache dtype (see __init__).

        ``check_weights=True`` reads every weight and raises NonFiniteWeightsError naming those
        that hold NaN or Inf. It is off by default because it reads the whole file, which a
        memory-mapped load otherwise never does (pages come in as the model touches them).
        """
        from .loaders.errors import NonFiniteWeightsError
        from .loaders.gpt2 import load_pretrained

        if dtype is not None:
            check_dtype(dtype)  # fail before a long load
        if kv_dtype is not None:
            check_kv_dtype(kv_dtype)
        _check_prefill_chunk(prefill_chunk)
        config, weights = load_pretrained(path)
        if check_weights:
            bad = weights.nonfinite_tensors()
            if bad:
                raise NonFiniteWeightsError(f"{path}: {len(bad)} weight(s) hold NaN or Inf: {', '.join(bad)}")
        return cls(config, weights, backend=backend, num_threads=num_threads, dtype=dtype,
                   prefill_chunk=prefill_chunk, kv_dtype=kv_dtype)

    @classmethod
    def random(cls, config: GPT2Config, seed: int = 0, backend: str = "auto",
               num_threads: int | None = None, dtype: str | None = None,
               prefill_chunk: int = DEFAULT_PREFILL_CHUNK, kv_dtype: str | None = None) -> "Model":
        from .weights import random_weights

        if dtype is not None:
            check_dtype(dtype)
        if kv_dtype is not None:
            check_kv_dtype(kv_dtype)
        return cls(config, random_weights(config, seed), backend=backend, num_threads=num_threads, dtype=dtype,
                   prefill_chunk=prefill_chunk, kv_dtype=kv_dtype)

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

    def new_cache(self, batch_size: int = 1, max_len: int | None = None, kv_dtype: str | None = None) -> KVCache:
        """A cache of batch_size rows of max_len slots (default n_positions), holding keys and values
        in kv_dtype (default: the model's kv_dtype)."""
        return KVCache(self.config, batch_size=batch_size, max_len=max_len,
                       kv_dtype=self.kv_dtype if kv_dtype is None else kv_dtype)

    # -- forward --------------------------------------------------------------------------
    def _check_ids(self, ids) -> tuple[np.ndarray, bool]:
        try:
            arr = np.asarray(ids)
        except ValueError:          # ragged nested lists
            raise TokenIdError("token ids must have shape (seq,) or (batch, seq), got rows of different "
                               "lengths") from None
        if arr.dtype == object:     # Python ints beyond int64 (or not ints at all)
            arr = _object_ids(arr, self.config.vocab_size)
        # Kinds i and u only: NumPy counts timedelta64 as an integer type, and bool is not an id.
        if arr.dtype.kind not in "iu" and arr.size:
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

    def _cache_for(self, cache, rows, B: int, T: int) -> KVCache:
        """The cache that ids (B, T) extend: ``cache``, or a fresh one for these tokens when None."""
        if cache is None:
            if rows is not None:
                raise CacheError("rows= names rows of a cache: pass cache= too")
            if T > self.config.n_positions:
                raise CacheError(f"{T} tokens exceed the model's context of n_positions={self.config.n_positions}")
            memory.require(KVCache.nbytes_for(self.config, B, T, self.kv_dtype)
                           + Workspace.nbytes_for(self.config, B * min(T, self._prefill_chunk), B),
                           f"a pass over a batch of {B} x {T} tokens (its KV cache and activations)")
            return self.new_cache(batch_size=B, max_len=T)
        if not isinstance(cache, KVCache):
            raise CacheError(f"cache must be a KVCache (from model.new_cache), got {type(cache).__name__}")
        return cache

    def _check_cache(self, cache, rows, B: int, T: int) -> np.ndarray:
        """The cache rows that ids of shape (B, T) extend, checked to fit."""
        if not isinstance(cache, KVCache):
            raise CacheError(f"cache must be a KVCache (from model.new_cache), got {type(cache).__name__}")
        if cache.config is not self.config and cache.config != self.config:
            ours, theirs = self.config.to_dict(), cache.config.to_dict()
            differ = ", ".join(f"{k}={theirs[k]!r} (the model's: {v!r})" for k, v in ours.items() if theirs[k] != v)
            raise CacheError(f"cache was made for another model config: {differ}; make one with this model's "
                             "new_cache()")
        if rows is None:
            if cache.batch_size != B:
                raise CacheError(f"ids have batch size {B} but the cache was made for batch_size={cache.batch_size}")
            row_idx = np.arange(B, dtype=np.int64)
        else:
            row_idx = cache.check_rows(rows)
            if row_idx.size != B:
                raise CacheError(f"ids have {B} rows but rows= names {row_idx.size} cache rows")
        # start and lengths are public state that callers may set: the kernels index by them.
        start, lengths = cache.start[row_idx], cache.lengths[row_idx]
        if start.min() < 0 or start.max() >= cache.max_len or lengths.min() < 0 or lengths.max() > cache.max_len:
            bad = np.flatnonzero((start < 0) | (start >= cache.max_len) | (lengths < 0) | (lengths > cache.max_len))
            r = int(row_idx[bad[0]])
            raise CacheError(f"cache row {r} has start={int(cache.start[r])}, lengths={int(cache.lengths[r])}; "
                             f"they must lie in [0, max_len={cache.max_len}) and [0, max_len]")
        fullest = int(lengths.max())
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
        if not last_only:
            memory.require(4 * B * T * self.config.vocab_size, f"the logits of {B} x {T} positions (use last_only=True "
                           "for the last position's)")
        cache = self._cache_for(cache, rows, B, T)
        with cache.in_use():                   # the fit is checked against what no other call can change
            row_idx = self._check_cache(cache, rows, B, T)
            self.backend.threads.apply()
            logits = self._forward_checked(arr, cache, row_idx, last_only)
        return logits[0] if squeeze else logits

    def _forward_checked(self, arr: np.ndarray, cache: KVCache, row_idx: np.ndarray, last_only: bool) -> np.ndarray:
        """forward's pass, its arguments checked: in chunks of at most prefill_chunk tokens."""
        B, T = arr.shape
        chunk = self._prefill_chunk
        if T <= chunk:
            return self._forward_chunk(arr, cache, row_idx, "last" if last_only else "all")
        logits = None if last_only else np.empty((B, T, self.config.vocab_size), np.float32)
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            head = "all" if not last_only else "last" if t1 == T else None
            part = self._forward_chunk(arr[:, t0:t1], cache, row_idx, head)
            if last_only:
                logits = part
            else:
                logits[:, t0:t1] = part
        return logits

    __call__ = forward

    @property
    def max_fused_tokens(self) -> int:
        """The most new tokens (rows x tokens) that one pass runs as one fused call of the
        backend: a decode step of that many rows, a prompt of that many tokens, or a mix of
        them (:meth:`forward_rows`). 0 when the backend has no fused step (the NumPy reference)."""
        return self.backend.max_fused_tokens

    def forward_rows(self, ids, cache: KVCache, rows, logit_rows=None) -> np.ndarray:
        """The last position's logits of several cache rows at once, row i extended by its own
        tokens ``ids[i]`` (1-d, any length: one token of a decode step, a prompt or a piece of
        one, ...), as a server's step mixes decoding rows with prompts going in. Returns
        (len(logit_rows), vocab): the rows ``logit_rows`` (indices into ``rows``; default all).

        Each row gets bitwise what ``forward(ids[i], cache, rows=[rows[i]], last_only=True)``
        gives it alone: in one fused call when the tokens number at most :attr:`max_fused_tokens`
        (whose kernels treat every token's row on its own), else row by row.
        The result lives in the cache's workspace until the next forward on that cache.
        """
        if not isinstance(cache, KVCache):
            raise CacheError(f"cache must be a KVCache (from model.new_cache), got {type(cache).__name__}")
        row_idx = cache.check_rows(rows)
        if not isinstance(ids, (list, tuple)) or len(ids) != row_idx.size:
            raise ValueError(f"ids must be a list of {row_idx.size} token sequences (one per row), got "
                             f"{type(ids).__name__} of {len(ids) if hasattr(ids, '__len__') else '?'}")
        arrs = []
        for i, seq in enumerate(ids):
            arr, squeeze = self._check_ids(seq)
            if not squeeze:
                raise TokenIdError(f"ids[{i}] must be a 1-d sequence of token ids, got shape {np.shape(seq)}")
            arrs.append(arr[0])
        lengths = np.array([a.size for a in arrs], np.int64)
        want = np.arange(row_idx.size) if logit_rows is None else np.asarray(logit_rows)
        if want.ndim != 1 or not np.issubdtype(want.dtype, np.integer) or ((want < 0) | (want >= row_idx.size)).any():
            raise ValueError(f"logit_rows must be indices into the {row_idx.size} rows, got {logit_rows!r}")
        with cache.in_use():
            full = cache.lengths[row_idx] + lengths > cache.max_len
            if full.any():
                i = int(np.argmax(full))
                raise CacheError(f"{lengths[i]} new tokens do not fit in row {row_idx[i]}: it holds "
                                 f"{cache.lengths[row_idx[i]]} of {cache.max_len} positions")
            self.backend.threads.apply()
            N = int(lengths.sum())
            ws = cache.workspace(N)
            decoder = self.backend.decoder(self.weights, self.config, cache, ws, N)
            if decoder is None:
                logits = np.empty((want.size, self.config.vocab_size), np.float32)
                for i, r in enumerate(row_idx):
                    last = self._forward_checked(arrs[i][None], cache, r[None], True)[0]
                    logits[want == i] = last
                return logits
            item_rows = np.repeat(row_idx, lengths)
            offsets = np.cumsum(lengths) - lengths                                   # each row's first token
            item_slots = np.arange(N) - np.repeat(offsets - cache.lengths[row_idx], lengths)
            positions = ws.positions[:N]
            np.maximum(item_slots - cache.start[item_rows], 0, out=positions)
            self._token_embeddings(np.concatenate(arrs), out=ws.x[:N])
            ws.x[:N] += np.take(self.weights.wpe, positions, axis=0, out=ws.h[:N])
            logits = decoder.step(item_rows, item_slots, (offsets + lengths - 1)[want])
            cache.lengths[row_idx] += lengths
        return logits

    def forward_full(self, ids=None, cache: KVCache | None = None, rows=None, *, inputs_embeds=None,
                     position_ids=None, attention_mask=None, head_mask=None, output_hidden_states: bool = False,
                     output_attentions: bool = False, compute_logits: bool = True) -> "ForwardOutput":
        """Every output of one pass over new positions, with what callers such as transformers'
        API set explicitly; see :class:`ForwardOutput` for the results.

        ``ids`` (B, T) ints, or ``inputs_embeds`` (B, T, n_embd): the token embeddings to use
        instead of wte's rows. ``cache`` / ``rows``: as :meth:`forward` (default: a fresh cache).
        ``position_ids`` (B, T): the wpe rows (default: counted from each row's first real slot,
        as :meth:`forward`). ``attention_mask`` (B, S), 0/1 over each row's slots 0..S-1, S its
        length after this call (rows of one length): a query sees the slots at or before its own
        that are 1; a query that sees none gives zeros. A mask that is only left padding
        (0...0 1...1) becomes the rows' ``cache.start`` (on empty rows, or rows already padded so)
        and runs on the backend's kernels; any other mask runs the NumPy reference attention, as
        do ``head_mask`` ((H,) or (n_layer, H): scales each head's attention probabilities) and
        ``output_attentions``. ``compute_logits=False`` skips the LM head. One pass: no prefill
        chunks (``forward`` chunks long prompts, so the two may round differently there).
        """
        C = self.config.n_embd
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("forward_full takes ids or inputs_embeds: give exactly one of them")
        arr = embeds = None
        if ids is not None:
            arr, squeeze = self._check_ids(ids)
            if squeeze:
                raise TokenIdError(f"forward_full takes ids of shape (batch, seq), got {np.shape(ids)}")
        else:
            embeds = np.ascontiguousarray(inputs_embeds, dtype=np.float32)
            if embeds.ndim != 3 or embeds.shape[1] == 0 or embeds.shape[2] != C:
                raise ValueError(f"inputs_embeds must have shape (batch, seq, n_embd={C}), got {np.shape(inputs_embeds)}")
            if not np.isfinite(embeds).all():
                raise ValueError("inputs_embeds holds NaN or infinite values")
        B, T = (arr if arr is not None else embeds).shape[:2]
        positions = None if position_ids is None else self._check_positions(position_ids, B, T)
        head_scale = self._check_head_mask(head_mask)
        if compute_logits:
            memory.require(4 * B * T * self.config.vocab_size, f"the logits of {B} x {T} positions")
        cache = self._cache_for(cache, rows, B, T)
        be, w = self.backend, self.weights
        with cache.in_use():
            row_idx = self._check_cache(cache, rows, B, T)
            slots = cache.lengths[row_idx].copy()                    # (B,) first new slot per row
            visible, pads = self._attention_visibility(attention_mask, cache, row_idx, slots, T)
            extras = None
            if visible is not None or head_scale is not None or output_attentions:
                if output_attentions and (slots != slots[0]).any():
                    raise CacheError(f"output_attentions needs rows of one length, got {slots.tolist()}")
                extras = _AttentionExtras(visible, head_scale, output_attentions, self.config, B, T, int(slots[0]) + T)
            be.threads.apply()
            if pads is not None:
                cache.start[row_idx] = pads
            ws = cache.workspace(B * T)
            self._embed(arr, cache, row_idx, slots, ws, embeds=embeds, positions=positions)
            states = [ws.x[:B * T].reshape(B, T, C).copy()] if output_hidden_states else None
            x = self._blocks(T, cache, row_idx, slots, ws, extras, states)
            cache.lengths[row_idx] = slots + T
            last = np.empty((B * T, C), np.float32)
            be.layer_norm(x, w.ln_f_g, w.ln_f_b, self.config.layer_norm_epsilon, out=last)
            logits = None
            if compute_logits:
                logits = np.empty((B * T, self.config.vocab_size), np.float32)
                be.linear(last, w.lm_head, None, out=logits, ws=ws)
                logits = logits.reshape(B, T, -1)
        return ForwardOutput(logits, last.reshape(B, T, C), None if states is None else tuple(states),
                             None if extras is None or extras.probs is None else tuple(extras.probs))

    def _check_positions(self, position_ids, B: int, T: int) -> np.ndarray:
        pos = np.asarray(position_ids)
        if pos.shape == (T,):
            pos = np.broadcast_to(pos, (B, T))
        if pos.shape not in ((B, T), (1, T)) or not (np.issubdtype(pos.dtype, np.integer) or pos.size == 0):
            raise ValueError(f"position_ids must be integers of shape ({B}, {T}), got {pos.dtype} {pos.shape}")
        P = self.config.n_positions
        if ((pos < 0) | (pos >= P)).any():
            raise ValueError(f"position_ids must lie in [0, n_positions={P}), got {int(pos.min())}..{int(pos.max())}")
        return np.ascontiguousarray(np.broadcast_to(pos, (B, T)), dtype=np.int64)

    def _check_head_mask(self, head_mask) -> np.ndarray | None:
        """(n_layer, H) float32 scales, from (H,) or (n_layer, H)."""
        if head_mask is None:
            return None
        L, H = self.config.n_layer, self.config.n_head
        m = np.asarray(head_mask, dtype=np.float32)
        if m.shape not in ((H,), (L, H)) or not np.isfinite(m).all():
            raise ValueError(f"head_mask must be finite numbers of shape ({H},) or ({L}, {H}), got {m.shape}")
        return np.ascontiguousarray(np.broadcast_to(m, (L, H)))

    def _attention_visibility(self, attention_mask, cache: KVCache, rows: np.ndarray, slots: np.ndarray, T: int):
        """(visible (B, T, S) bool for the reference attention, or None; left padding to give the
        rows as cache.start, or None) for an attention_mask over the rows' slots."""
        if attention_mask is None:
            return None, None
        B = rows.shape[0]
        if (slots != slots[0]).any():
            raise CacheError(f"an attention_mask needs rows of one length, got {slots.tolist()}")
        S = int(slots[0]) + T
        m = np.asarray(attention_mask)
        if m.shape != (B, S) or not (m.dtype == bool or np.issubdtype(m.dtype, np.integer)) or (
                (m != 0) & (m != 1)).any():
            raise ValueError(f"attention_mask must be 0/1 of shape (batch, past + new slots) = ({B}, {S}), "
                             f"got {m.dtype} {m.shape}")
        m = m.astype(bool)
        pads = S - m.sum(axis=1)                                          # (B,) as if left-padded
        left_padded = (m == (np.arange(S)[None, :] >= pads[:, None])).all() and (pads < S).all()
        if left_padded and (slots[0] == 0 or (cache.start[rows] == pads).all()):
            return None, pads
        causal = np.arange(S)[None, :] <= (slots[0] + np.arange(T))[:, None]   # (T, S)
        return causal[None] & m[:, None, :], None

    def _forward_chunk(self, ids: np.ndarray, cache: KVCache, rows: np.ndarray, head: str | None):
        """One pass through the model for ids (B, T), T <= prefill_chunk. ``head``: "last" ->
        logits (B, V) of the last positions, "all" -> (B, T, V), None -> no logits (a prompt's
        chunk before its last)."""
        B, T = ids.shape
        C, V = self.config.n_embd, self.config.vocab_size
        slots = cache.lengths[rows]                                  # (B,) first new slot per row
        ws = cache.workspace(B * T)
        self._embed(ids, cache, rows, slots, ws)
        decoder = self.backend.decoder(self.weights, self.config, cache, ws, B * T) if head != "all" else None
        be = self.backend
        logits = None
        if decoder is not None:                                      # one call for the whole chunk
            if T == 1 and head:
                logits = decoder.step(rows, slots)                   # (B, V): a decode step
            else:                                                    # a short prompt, or its chunk
                picked = np.arange(T - 1, B * T, T) if head else _NO_TOKENS
                out = decoder.step(np.repeat(rows, T), (slots[:, None] + np.arange(T)).reshape(-1), picked)
                logits = out if head else None
        else:
            x = self._blocks(T, cache, rows, slots, ws)              # (B*T, C)
            if head == "last":
                last = ws.last[:B]
                # the rows' last positions gathered into one array: the kernels take contiguous rows
                ends = np.take(x.reshape(B, T, C), T - 1, axis=1, out=ws.h[:B]) if T > 1 else x
                be.layer_norm(ends, self.weights.ln_f_g, self.weights.ln_f_b, self.config.layer_norm_epsilon, out=last)
                logits = be.linear(last, self.weights.lm_head, None, out=ws.logits[:B], ws=ws)   # (B, V)
            elif head == "all":
                h = ws.h[: B * T]
                be.layer_norm(x, self.weights.ln_f_g, self.weights.ln_f_b, self.config.layer_norm_epsilon, out=h)
                logits = np.empty((B * T, V), np.float32)
                be.linear(h, self.weights.lm_head, None, out=logits, ws=ws)
                logits = logits.reshape(B, T, V)
        cache.lengths[rows] = slots + T
        return logits

    def _embed(self, ids: np.ndarray | None, cache: KVCache, rows: np.ndarray, slots: np.ndarray, ws,
               embeds: np.ndarray | None = None, positions: np.ndarray | None = None) -> None:
        """The workspace's x = token + position embeddings of ids (B, T) at each row's slots.
        forward_full may give the token embeddings (``embeds``, (B, T, C)) and the positions."""
        w = self.weights
        B, T = (ids if ids is not None else embeds).shape[:2]
        N = B * T
        x, h = ws.x[:N], ws.h[:N]
        if positions is None:
            # Positions count from each row's first real token (left padding); padding slots get 0.
            positions = ws.positions[:N].reshape(B, T)
            np.add(slots[:, None] - cache.start[rows][:, None], np.arange(T), out=positions)
            np.maximum(positions, 0, out=positions)
        if embeds is not None:
            x[...] = embeds.reshape(N, -1)
        else:
            self._token_embeddings(ids.reshape(N), out=x)          # (N, C)
        np.take(w.wpe, positions.reshape(N), axis=0, out=h)        # (N, C)
        x += h

    def _token_embeddings(self, ids: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out (N, C) = wte rows of ids (N,)."""
        wte = self.weights.wte
        if isinstance(wte, QuantizedWeight):
            return wte.dequantize_rows(ids, out=out)               # only the rows needed
        return np.take(wte, ids, axis=0, out=out)

    def token_embeddings(self, ids) -> np.ndarray:
        """wte rows of token ids (any shape, at least one id): float32 (..., n_embd), a new array."""
        arr = np.asarray(ids)
        flat, _ = self._check_ids(arr.reshape(1, -1))
        out = np.empty((flat.shape[1], self.config.n_embd), np.float32)
        return self._token_embeddings(flat[0], out).reshape(arr.shape + (self.config.n_embd,))

    def _blocks(self, T: int, cache: KVCache, rows: np.ndarray, slots: np.ndarray, ws,
                extras: "_AttentionExtras | None" = None, states: list | None = None) -> np.ndarray:
        """Every block, op by op, over the embeddings that _embed put in the workspace.
        ``extras``: forward_full's attention mask, head scales and probabilities (the reference
        attention computes those); ``states``: receives a copy of each block's output."""
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
            if extras is None:
                be.attention(qkv_bt, cache.k[layer], cache.v[layer], rows, cache.start, slots, out=attn_bthd, ws=ws)
            else:
                be.attention(qkv_bt, cache.k[layer], cache.v[layer], rows, cache.start, slots, out=attn_bthd, ws=ws,
                             **extras.for_layer(layer))
            be.linear(attn, blk.attn_proj_w, blk.attn_proj_b, out=h, ws=ws)
            be.add(x, h, out=x)
            be.layer_norm(x, blk.ln_2_g, blk.ln_2_b, eps, out=h)
            be.linear(h, blk.mlp_fc_w, blk.mlp_fc_b, out=ff, ws=ws)
            be.activation(cfg.activation_function, ff, out=ff)
            be.linear(ff, blk.mlp_proj_w, blk.mlp_proj_b, out=h, ws=ws)
            be.add(x, h, out=x)
            if states is not None:
                states.append(x.reshape(B, T, C).copy())
        return x


def _object_ids(arr: np.ndarray, vocab_size: int) -> np.ndarray:
    """An object array of ids (Python ints too large for int64, or not ints) as int64, or the
    TokenIdError naming the first bad one."""
    for index, value in np.ndenumerate(arr):
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
            raise TokenIdError(f"token ids must be integers, got {type(value).__name__} {value!r} at {list(index)}")
        if not 0 <= value < vocab_size:
            raise TokenIdError(f"token id {value} at position {index[-1]} is outside the vocabulary [0, {vocab_size})")
    return arr.astype(np.int64)


@dataclass
class ForwardOutput:
    """What :meth:`Model.forward_full` computes for the T new positions of B rows.

    ``logits``: (B, T, vocab) float32, or None with ``compute_logits=False``.
    ``last_hidden_state``: (B, T, n_embd), the final layer norm's output (what the head reads).
    ``hidden_states`` (with ``output_hidden_states``): n_layer + 1 arrays (B, T, n_embd): the
    embeddings, then each block's output (the last one before the final layer norm).
    ``attentions`` (with ``output_attentions``): n_layer arrays (B, n_head, T, S): each layer's
    attention probabilities over the rows' slots 0..S-1 (S = their length after the call).
    """

    logits: np.ndarray | None
    last_hidden_state: np.ndarray
    hidden_states: tuple[np.ndarray, ...] | None = None
    attentions: tuple[np.ndarray, ...] | None = None


class _AttentionExtras:
    """forward_full's requests of the reference attention, handed out layer by layer."""

    def __init__(self, visible, head_scale, want_probs: bool, config: GPT2Config, B: int, T: int, S: int):
        self.visible = visible                                 # (B, T, S) bool or None
        self.head_scale = head_scale                           # (n_layer, H) float32 or None
        self.probs = ([np.empty((B, config.n_head, T, S), np.float32) for _ in range(config.n_layer)]
                      if want_probs else None)

    def for_layer(self, layer: int) -> dict:
        return {"visible": self.visible,
                "head_scale": None if self.head_scale is None else self.head_scale[layer],
                "probs": None if self.probs is None else self.probs[layer]}


def _check_prefill_chunk(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"prefill_chunk must be a positive integer, got {value!r}")
    return int(value)
