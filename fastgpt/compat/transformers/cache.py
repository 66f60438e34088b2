"""``past_key_values``: transformers' cache objects over a fastgpt ``KVCache``.

A forward with ``use_cache=True`` returns a :class:`Cache` wrapping the KVCache it filled.
Passed back (as ``past_key_values=``, ``cache=`` or the old ``past=``), the next forward
extends that same KVCache in place, as transformers' ``DynamicCache`` is extended in place:
nothing is copied or recomputed. Its per-layer keys and values are views of the cache,
``(batch, heads, seq, head_dim)``, as torch tensors when the call's inputs were.

Accepted as input too, copied into a new KVCache: transformers' own ``DynamicCache`` (anything
with ``.layers[i].keys / .values``) and the legacy format, a tuple of per-layer
``(key, value)`` pairs.
"""

from __future__ import annotations

from ...kv_cache import CacheError, KVCache
from ._tensors import as_output, to_numpy


class CacheLayer:
    """One layer of the cache: ``keys`` and ``values``, (batch, heads, seq, head_dim)."""

    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class Cache:
    """transformers' ``DynamicCache`` surface: ``len()``, iteration and indexing give per-layer
    ``(keys, values)`` (transformers 4's legacy layout), ``layers[i].keys``,
    ``get_seq_length()``, ``to_legacy_cache()``, ``reorder_cache()``, ``crop()``."""

    is_compileable = False

    def __init__(self, kv: KVCache, torch_out: bool):
        self.kv = kv
        self.torch_out = torch_out

    @property
    def layers(self) -> list[CacheLayer]:
        return [CacheLayer(*as_output(pair, self.torch_out)) for pair in self.kv.to_layers()]

    def __len__(self) -> int:
        return self.kv.config.n_layer

    def __iter__(self):
        for layer in self.layers:
            yield layer.keys, layer.values

    def __getitem__(self, layer: int):
        pair = self.layers[layer]
        return pair.keys, pair.values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv.pos

    def get_max_cache_shape(self) -> int:
        return self.kv.max_len

    def to_legacy_cache(self) -> tuple:
        return tuple(iter(self))

    def reorder_cache(self, beam_idx) -> None:
        """Row r takes row beam_idx[r] (beam search), in place."""
        self.kv.reorder(to_numpy(beam_idx, "beam_idx"))

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` positions (negative: drop that many from the end)."""
        n = self.kv.pos
        keep = n + max_length if max_length < 0 else min(max_length, n)
        if keep < 0:
            raise CacheError(f"crop({max_length}) on a cache of {n} positions")
        self.kv.pos = keep

    def __repr__(self) -> str:
        kv = self.kv
        return f"Cache(layers={len(self)}, batch={kv.batch_size}, seq={kv.pos}, max_len={kv.max_len})"


def as_kv_cache(past, config) -> KVCache:
    """The KVCache a forward extends for ``past`` (one of ours: itself; else a copy)."""
    if isinstance(past, Cache):
        return past.kv
    if isinstance(past, KVCache):
        return past
    layers = getattr(past, "layers", None)
    if layers is not None and all(hasattr(layer, "keys") for layer in layers):
        pairs = [(layer.keys, layer.values) for layer in layers]
    elif isinstance(past, (tuple, list)):
        pairs = list(past)
    else:
        raise TypeError(f"past_key_values must be a cache returned by a forward, transformers' DynamicCache or a "
                        f"tuple of per-layer (key, value) tensors, got {type(past).__name__}")
    return KVCache.from_layers(config, [tuple(to_numpy(t, "past_key_values") for t in pair[:2]) for pair in pairs])
