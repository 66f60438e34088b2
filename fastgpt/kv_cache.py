"""The preallocated key/value cache and the activation workspace that goes with it.

Keys and values for every layer are allocated once for ``max_len`` slots and written in
place; decoding never grows or copies them. Layout ``[layer, row, head, slot, dim]`` puts
each head's keys in one contiguous ``(slot, dim)`` block, which is what attention reads.

Rows are independent: row ``b`` holds ``lengths[b]`` filled slots, and its next token goes to
slot ``lengths[b]``. A row may also be left-padded: ``start[b]`` is its first real slot;
positions (for ``wpe``) count from there and attention ignores the slots before it. A batch
of prompts (``Generator``) left-pads rows to one length; a server resets and refills rows on
their own, so its rows have different lengths.

Keys and values are held in ``kv_dtype``: float32, or 16 bits (float16, bfloat16) for half the
memory and half the bytes that attention reads at every decode step (what bounds decoding at a
long context). A 16-bit cache stores each new key and value rounded to nearest even and the
kernels widen them exactly as they read them; the arithmetic stays float32. ``KV_DTYPES`` names
the choices; :func:`default_kv_dtype` says which a model uses unless told.

A cache and its workspace belong to one call at a time. All scratch that a forward pass
writes with the GIL released lives here, never on the model or the backend, which is what
lets many threads share one model: each brings its own cache. ``in_use`` refuses a second
concurrent user of the same cache instead of letting the two corrupt each other.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from . import memory
from .config import GPT2Config


class CacheError(ValueError):
    """A forward pass does not fit the cache it was given."""


#: The KV cache's element types. bfloat16 is held as its bit patterns in uint16 (NumPy has no
#: bfloat16): fastgpt.quant.float32_to_bf16_bits / bf16_bits_to_float32 convert.
KV_DTYPES = ("float16", "bfloat16", "float32")
_KV_NUMPY = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}


def check_kv_dtype(kv_dtype) -> str:
    """Return ``kv_dtype`` if it is one of KV_DTYPES, else raise CacheError naming the choices."""
    if kv_dtype not in KV_DTYPES:
        raise CacheError(f"kv_dtype must be one of {', '.join(repr(d) for d in KV_DTYPES)}, got {kv_dtype!r}")
    return kv_dtype


def default_kv_dtype(weights_dtype: str) -> str:
    """The cache a model uses unless told: float32 for float32 weights, float16 for 16/8-bit ones.

    float32 weights keep a float32 cache, so that their results stay those of the float32 reference
    (transformers' GPT2LMHeadModel included, token for token). Quantized weights have traded exactness
    for speed already; for them a float16 cache halves the cache's memory and the bytes read per
    token, at a cost below the weights' own rounding (README: perplexity and greedy agreement). float16
    rather than bfloat16: the same bytes and speed, 3 more significant bits; GPT-2's keys and values
    stay far inside float16's range (|x| < 65504; larger ones would become inf).
    """
    return "float32" if weights_dtype == "float32" else "float16"


class CacheBusyError(CacheError):
    """A cache used by two calls at once (a cache belongs to one call at a time)."""


class Workspace:
    """Activation buffers for up to ``rows`` = batch * new positions at once, plus the scratch
    the backend's kernels need (``scratch``), and the backend's fused decoder for this cache."""

    def __init__(self, config: GPT2Config, rows: int, batch_size: int):
        C, F = config.n_embd, config.d_ff
        memory.require(self.nbytes_for(config, rows, batch_size), f"the activations of {rows} new positions "
                       "(batch x tokens)")
        self.rows = rows
        self.x = np.empty((rows, C), np.float32)          # residual stream
        self.h = np.empty((rows, C), np.float32)          # normed input / projection output
        self.qkv = np.empty((rows, 3 * C), np.float32)
        self.attn = np.empty((rows, C), np.float32)
        self.ff = np.empty((rows, F), np.float32)
        self.last = np.empty((batch_size, C), np.float32)  # final-normed last positions
        self.logits = np.empty((batch_size, config.vocab_size), np.float32)
        self.positions = np.empty(rows, np.int64)
        self._scratch: dict[str, np.ndarray] = {}
        #: The backend's fused decode step built for these buffers (see CythonBackend.decoder).
        self.decoder = None

    @staticmethod
    def nbytes_for(config: GPT2Config, rows: int, batch_size: int) -> int:
        """Bytes of the buffers below (the kernels' scratch aside: small, and sized by threads)."""
        C = config.n_embd
        return 4 * (rows * (6 * C + config.d_ff) + batch_size * (C + config.vocab_size)) + 8 * rows

    def scratch(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A buffer of at least ``shape`` (reused; reallocated only when it must grow)."""
        buf = self._scratch.get(name)
        if buf is None or buf.dtype != dtype or buf.ndim != len(shape) or any(
                have < need for have, need in zip(buf.shape, shape)):
            grown = shape if buf is None or buf.ndim != len(shape) else tuple(
                max(have, need) for have, need in zip(buf.shape, shape))
            buf = self._scratch[name] = np.empty(grown, dtype)
        return buf


class KVCache:
    """Keys and values of ``batch_size`` independent rows of up to ``max_len`` slots each, held in
    ``kv_dtype`` (one of KV_DTYPES).

    ``lengths[b]``: slots filled in row b; ``start[b]``: row b's first real slot (left
    padding). Use one cache per call: a cache used from two threads at once raises
    :class:`CacheBusyError`.
    """

    def __init__(self, config: GPT2Config, batch_size: int = 1, max_len: int | None = None,
                 kv_dtype: str = "float32"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CacheError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_len is None:
            max_len = config.n_positions
        if isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= config.n_positions:
            raise CacheError(f"max_len must be an integer in [1, n_positions={config.n_positions}], got {max_len!r}")
        self.kv_dtype = check_kv_dtype(kv_dtype)
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        memory.require(self.nbytes_for(config, batch_size, max_len, kv_dtype),
                       f"a KV cache of batch_size={batch_size}, max_len={max_len}, kv_dtype={kv_dtype}")
        self.config = config
        self.batch_size = batch_size
        self.max_len = max_len
        self.k = np.zeros(shape, _KV_NUMPY[kv_dtype])
        self.v = np.zeros(shape, _KV_NUMPY[kv_dtype])
        self.start = np.zeros(batch_size, np.int64)
        self.lengths = np.zeros(batch_size, np.int64)
        self._workspace: Workspace | None = None
        self._lock = threading.Lock()
        self._spare: np.ndarray | None = None           # one row for reorder's cycles
        self._spare_row = (0, 0)                        # its (length, start)

    # -- the rows' state -------------------------------------------------------------------
    @property
    def pos(self) -> int:
        """The length every row shares; a cache whose rows differ has none (CacheError)."""
        first = int(self.lengths[0])
        if (self.lengths != first).any():
            raise CacheError(f"the cache's rows have different lengths {self.lengths.tolist()}; "
                             "read cache.lengths")
        return first

    @pos.setter
    def pos(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= self.max_len:
            raise CacheError(f"pos must be an integer in [0, max_len={self.max_len}], got {value!r}")
        self.lengths[:] = value

    def reset(self, rows=None) -> None:
        """Forget the given rows (default: all); the memory is kept for their next sequence."""
        index = slice(None) if rows is None else self.check_rows(rows)
        self.lengths[index] = 0
        self.start[index] = 0

    def set_left_padding(self, pad_counts) -> None:
        """Declare that row b's first ``pad_counts[b]`` slots are padding (call before prefill)."""
        try:
            pad = np.asarray(pad_counts, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            pad = None
        if pad is None or pad.shape != (self.batch_size,) or (pad < 0).any() or (pad >= self.max_len).any():
            raise CacheError(f"pad_counts must be {self.batch_size} integers in [0, {self.max_len}), got {pad_counts!r}")
        if self.lengths.any():
            raise CacheError("set_left_padding must be called on an empty cache (after reset())")
        self.start[:] = pad

    def check_rows(self, rows) -> np.ndarray:
        """``rows`` as distinct row indices of this cache, int64 (CacheError naming the bad one)."""
        arr = np.asarray(rows)
        if arr.ndim != 1 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == object):
            raise CacheError(f"rows must be a non-empty list of row indices, got {rows!r}")
        try:
            arr = arr.astype(np.int64, casting="safe" if arr.dtype != object else "unsafe")
        except (TypeError, ValueError, OverflowError):
            raise CacheError(f"rows must be a non-empty list of row indices, got {rows!r}") from None
        bad = (arr < 0) | (arr >= self.batch_size)
        if bad.any():
            raise CacheError(f"row {int(arr[bad][0])} is outside the cache's {self.batch_size} rows")
        if np.unique(arr).size != arr.size:
            raise CacheError(f"rows must be distinct, got {arr.tolist()}")
        return arr

    # -- exchange with per-layer arrays (transformers' past_key_values) ----------------------
    @classmethod
    def from_layers(cls, config: GPT2Config, layers, max_len: int | None = None) -> "KVCache":
        """A cache holding ``layers``: per layer, (keys, values) arrays of shape (batch, heads,
        seq, head_dim), transformers' layout. Every row holds ``seq`` slots from slot 0 (no
        left padding: a padded past is masked by the caller's attention mask). ``max_len``: the
        capacity, room for what comes next (default ``n_positions``)."""
        layers = list(layers)
        if len(layers) != config.n_layer:
            raise CacheError(f"past key/values have {len(layers)} layers, the model has n_layer={config.n_layer}")
        first = np.shape(layers[0][0]) if layers and len(layers[0]) >= 2 else ()
        if len(first) != 4 or first[1:2] + first[3:] != (config.n_head, config.head_dim):
            raise CacheError(f"past keys must have shape (batch, n_head={config.n_head}, seq, head_dim="
                             f"{config.head_dim}), got {first}")
        B, _, S, _ = first
        cache = cls(config, batch_size=B, max_len=max_len)
        if S > cache.max_len:
            raise CacheError(f"past of {S} positions does not fit max_len={cache.max_len}")
        for layer, pair in enumerate(layers):
            if len(pair) < 2:
                raise CacheError(f"layer {layer} of the past is not a (keys, values) pair")
            for which, arr, name in ((cache.k, pair[0], "keys"), (cache.v, pair[1], "values")):
                a = np.asarray(arr, dtype=np.float32)
                if a.shape != first:
                    raise CacheError(f"layer {layer} {name} have shape {a.shape}, layer 0 keys {first}")
                if not np.isfinite(a).all():
                    raise CacheError(f"layer {layer} {name} hold NaN or infinite values")
                which[layer, :, :, :S] = a
        cache.lengths[:] = S
        return cache

    def to_layers(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Per layer, (keys, values) of the filled slots, (batch, heads, seq, head_dim): views
        into this cache (no copy), valid until its rows are reset or reordered."""
        S = self.pos
        return tuple((self.k[layer, :, :, :S], self.v[layer, :, :, :S]) for layer in range(self.config.n_layer))

    def reorder(self, indices) -> None:
        """Row ``r`` takes the contents of row ``indices[r]`` (beam search: each beam continues
        some beam's prefix), in place. Only the filled slots of the rows that change are copied;
        a row that must be overwritten while another still needs it (a cycle) goes through one
        spare row, allocated on first use and kept."""
        src = np.asarray(indices)
        B = self.batch_size
        if src.shape != (B,) or src.dtype.kind not in "iu" or (src < 0).any() or (src >= B).any():
            raise CacheError(f"reorder needs {B} row indices in [0, {B}), got {indices!r}")
        pending = {r: int(s) for r, s in enumerate(src) if s != r}       # destination -> source
        readers = np.bincount(np.fromiter(pending.values(), np.int64, len(pending)), minlength=B + 1)
        spare = B                                                        # the spare's "row number"
        with self.in_use():
            while pending:
                free = [r for r in pending if readers[r] == 0]
                if not free:                # only cycles remain: park one destination in the spare
                    r = next(iter(pending))
                    self._copy_row(spare, r)
                    for d, s in pending.items():
                        if s == r:
                            pending[d] = spare
                    readers[spare], readers[r] = readers[r], 0
                    continue
                for r in free:
                    s = pending.pop(r)
                    self._copy_row(r, s)
                    readers[s] -= 1

    def _copy_row(self, dst: int, src: int) -> None:
        """Row (or the spare, numbered batch_size) dst = src: its filled slots, length and start."""
        B = self.batch_size
        if self._spare is None and B in (dst, src):
            C = self.config
            self._spare = np.empty((2, C.n_layer, C.n_head, self.max_len, C.head_dim), np.float32)
        n, start = self._spare_row if src == B else (int(self.lengths[src]), int(self.start[src]))
        for which, arr in enumerate((self.k, self.v)):
            for layer in range(arr.shape[0]):     # per layer: two disjoint blocks, no temporary
                to = self._spare[which, layer] if dst == B else arr[layer, dst]
                fro = self._spare[which, layer] if src == B else arr[layer, src]
                to[:, :n] = fro[:, :n]
        if dst == B:
            self._spare_row = (n, start)
        else:
            self.lengths[dst], self.start[dst] = n, start

    @property
    def remaining(self) -> int:
        """Slots left in the fullest row."""
        return self.max_len - int(self.lengths.max())

    # -- one call at a time ----------------------------------------------------------------
    @contextmanager
    def in_use(self):
        """Hold the cache for one forward pass; a second, concurrent holder is refused."""
        if not self._lock.acquire(blocking=False):
            raise CacheBusyError("this KVCache is being used by another call (a thread?); "
                                 "a cache belongs to one call at a time: give each thread its own")
        try:
            yield self
        finally:
            self._lock.release()

    def workspace(self, rows: int) -> Workspace:
        """Buffers for ``rows`` new activations; reused across calls and grown only for a larger chunk."""
        if self._workspace is None or self._workspace.rows < rows:
            self._workspace = Workspace(self.config, rows, self.batch_size)
        return self._workspace

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def bytes_per_position(self) -> int:
        """Bytes that one cached position of one row takes: its keys and values in every layer."""
        return 2 * self.config.n_layer * self.config.n_embd * self.k.itemsize

    @staticmethod
    def nbytes_for(config: GPT2Config, batch_size: int, max_len: int, kv_dtype: str) -> int:
        """Bytes of the keys and values of a cache of this size in kv_dtype."""
        itemsize = np.dtype(_KV_NUMPY[check_kv_dtype(kv_dtype)]).itemsize
        return 2 * itemsize * config.n_layer * batch_size * max_len * config.n_embd
