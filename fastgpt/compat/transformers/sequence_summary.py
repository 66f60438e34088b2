"""GPT2DoubleHeadsModel's ``multiple_choice_head``: transformers' sequence summary, in NumPy.

One vector per sequence (the hidden state at ``cls_index``, the first, the last, or their
mean), projected by ``multiple_choice_head.summary`` and activated, as the config's
``summary_*`` fields say. A checkpoint without the head gets one initialised as transformers
initialises it (normal(0, initializer_range) weights, zero bias).
"""

from __future__ import annotations

import numpy as np

from ..._numpy_ops import ACTIVATION_FUNCTIONS
from ...config import ConfigError
from ...loaders.gpt2 import CheckpointMismatchError
from .configuration import GPT2Config

_MC = "multiple_choice_head.summary."


class SequenceSummary:
    """GPT2DoubleHeadsModel's ``multiple_choice_head``: one vector per sequence (the hidden
    state at ``cls_index``, the first, the last, or the mean), projected and activated."""

    _ACTIVATIONS = {None: None, "linear": None, "tanh": np.tanh, "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x))}

    def __init__(self, config: GPT2Config, tensors: dict, seed: int):
        self.summary_type = config.summary_type
        if self.summary_type not in ("last", "first", "mean", "cls_index"):
            raise ConfigError(f"GPT2Config.summary_type={self.summary_type!r}: expected 'last', 'first', 'mean' or "
                              "'cls_index' (transformers implements no other)")
        activation = config.summary_activation
        if activation in self._ACTIVATIONS:
            self.activation = self._ACTIVATIONS[activation]
        elif activation in ACTIVATION_FUNCTIONS:
            self.activation = lambda x, f=ACTIVATION_FUNCTIONS[activation]: f(x, np.empty_like(x))
        else:
            raise ConfigError(f"GPT2Config.summary_activation={activation!r} is not supported")
        C = config.n_embd
        n_out = config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else C
        self.weight = self.bias = None
        if config.summary_use_proj:
            w, b = tensors.get(f"{_MC}weight"), tensors.get(f"{_MC}bias")
            if w is None or b is None:      # a checkpoint without the head: initialised, as transformers warns
                rng = np.random.default_rng(seed)
                w = rng.standard_normal((n_out, C), dtype=np.float32) * np.float32(config.initializer_range)
                b = np.zeros(n_out, np.float32)
            if tuple(w.shape) != (n_out, C) or tuple(b.shape) != (n_out,):
                raise CheckpointMismatchError(f"{_MC}weight/bias have shapes {tuple(w.shape)} / {tuple(b.shape)}, "
                                              f"expected {(n_out, C)} / {(n_out,)}")
            self.weight, self.bias = np.asarray(w, np.float32), np.asarray(b, np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {} if self.weight is None else {f"{_MC}weight": self.weight, f"{_MC}bias": self.bias}

    def __call__(self, hidden: np.ndarray, cls_index: np.ndarray | None) -> np.ndarray:
        # hidden: (..., T, C); cls_index: (...) positions, default the last one.
        T = hidden.shape[-2]
        if self.summary_type == "last":
            x = hidden[..., -1, :]
        elif self.summary_type == "first":
            x = hidden[..., 0, :]
        elif self.summary_type == "mean":
            x = hidden.mean(axis=-2)
        else:
            if cls_index is None:
                cls_index = np.full(hidden.shape[:-2], T - 1)
            cls_index = np.asarray(cls_index)
            if cls_index.shape != hidden.shape[:-2] or cls_index.dtype.kind not in "iu":
                raise ValueError(f"mc_token_ids must be integers of shape {hidden.shape[:-2]}, got "
                                 f"{cls_index.dtype} {cls_index.shape}")
            if ((cls_index < 0) | (cls_index >= T)).any():
                raise ValueError(f"mc_token_ids must be positions in [0, {T}), got {cls_index.ravel().tolist()}")
            x = np.take_along_axis(hidden, cls_index[..., None, None], axis=-2)[..., 0, :]
        if self.weight is not None:
            x = x @ self.weight.T + self.bias
        return x if self.activation is None else self.activation(x).astype(np.float32)
