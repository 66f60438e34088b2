"""The preallocated key/value cache and the activation workspace that goes with it.

Keys and values for every layer are allocated once for ``max_len`` positions and written in
place; decoding never grows or copies them. Layout ``[layer, batch, head, slot, dim]`` puts
each head's keys in one contiguous ``(slot, dim)`` block, which is what attention reads.

Rows of a batch may be left-padded: ``start[b]`` is the first real slot of row ``b``.
Positions (for ``wpe``) count from there, and attention ignores the slots before it.
"""

from __future__ import annotations

import numpy as np

from .config import GPT2Config


class CacheError(ValueError):
    """A forward pass does not fit the cache it was given."""


class Workspace:
    """Activation buffers for up to ``rows`` = batch * new positions at once."""

    def __init__(self, config: GPT2Config, rows: int, batch_size: int):
        C, F = config.n_embd, config.d_ff
        self.rows = rows
        self.x = np.empty((rows, C), np.float32)          # residual stream
        self.h = np.empty((rows, C), np.float32)          # normed input / projection output
        self.qkv = np.empty((rows, 3 * C), np.float32)
        self.attn = np.empty((rows, C), np.float32)
        self.ff = np.empty((rows, F), np.float32)
        self.last = np.empty((batch_size, C), np.float32)  # final-normed last positions
        self.logits = np.empty((batch_size, config.vocab_size), np.float32)
        self.positions = np.empty(rows, np.int64)


class KVCache:
    def __init__(self, config: GPT2Config, batch_size: int = 1, max_len: int | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CacheError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_len is None:
            max_len = config.n_positions
        if isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= config.n_positions:
            raise CacheError(f"max_len must be an integer in [1, n_positions={config.n_positions}], got {max_len!r}")
        self.config = config
        self.batch_size = batch_size
        self.max_len = max_len
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.start = np.zeros(batch_size, np.int64)
        self.pos = 0
        self._workspace: Workspace | None = None
        self._spare: np.ndarray | None = None           # one row for reorder's cycles
        self._spare_start = 0

    def reset(self) -> None:
        """Forget the cached sequence; the memory is kept for the next one."""
        self.pos = 0
        self.start[:] = 0

    def set_left_padding(self, pad_counts) -> None:
        """Declare that row b's first ``pad_counts[b]`` slots are padding (call before prefill)."""
        pad = np.asarray(pad_counts, dtype=np.int64)
        if pad.shape != (self.batch_size,) or (pad < 0).any() or (pad >= self.max_len).any():
            raise CacheError(f"pad_counts must be {self.batch_size} integers in [0, {self.max_len}), got {pad_counts!r}")
        if self.pos != 0:
            raise CacheError("set_left_padding must be called on an empty cache (after reset())")
        self.start[:] = pad

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
        while pending:
            free = [r for r in pending if readers[r] == 0]
            if not free:                    # only cycles remain: park one destination in the spare
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
        """Row (or spare, numbered batch_size) dst = src, over the filled slots."""
        n = self.pos
        if self._spare is None and self.batch_size in (dst, src):
            C = self.config
            self._spare = np.empty((2, C.n_layer, C.n_head, self.max_len, C.head_dim), np.float32)
            self._spare_start = 0
        for which, arr in enumerate((self.k, self.v)):
            for layer in range(arr.shape[0]):     # per layer: two disjoint blocks, no temporary
                to = self._spare[which, layer] if dst == self.batch_size else arr[layer, dst]
                fro = self._spare[which, layer] if src == self.batch_size else arr[layer, src]
                to[:, :n] = fro[:, :n]
        starts = self.start
        if dst == self.batch_size:
            self._spare_start = int(starts[src])
        else:
            starts[dst] = self._spare_start if src == self.batch_size else starts[src]

    @property
    def remaining(self) -> int:
        return self.max_len - self.pos

    def workspace(self, rows: int) -> Workspace:
        """Buffers for ``rows`` new activations; reused across calls and grown only for a larger chunk."""
        if self._workspace is None or self._workspace.rows < rows:
            self._workspace = Workspace(self.config, rows, self.batch_size)
        return self._workspace

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes
