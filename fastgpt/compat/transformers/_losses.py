"""Cross-entropy losses as transformers computes them (mean over the targets that are not -100).

Log-softmax runs in float64, a block of rows at a time, so that a long sequence over
GPT-2's 50,257-token vocabulary never needs a float64 copy of all its logits.
"""

from __future__ import annotations

import numpy as np

from ...sampling import log_softmax

IGNORE_INDEX = -100
_ROWS_PER_BLOCK = 64


def cross_entropy(logits: np.ndarray, targets: np.ndarray, what: str) -> np.ndarray:
    """Mean negative log-likelihood of ``targets`` (N,) under ``logits`` (N, V), skipping -100;
    NaN when every target is skipped (as torch). A float32 0-d array."""
    N, V = logits.shape
    targets = np.asarray(targets).reshape(N)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integer class ids, got dtype {targets.dtype}")
    keep = targets != IGNORE_INDEX
    bad = keep & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(f"{what} holds {int(targets[bad][0])}, outside [0, {V}) and not {IGNORE_INDEX} (ignored)")
    rows = np.flatnonzero(keep)
    total = 0.0
    for start in range(0, rows.size, _ROWS_PER_BLOCK):
        block = rows[start:start + _ROWS_PER_BLOCK]
        total -= log_softmax(logits[block])[np.arange(block.size), targets[block]].sum()
    return np.array(total / rows.size if rows.size else np.nan, dtype=np.float32)


def causal_lm_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """transformers' language-model loss: position t predicts ``labels[..., t + 1]``.
    logits: (..., T, V); labels: (..., T)."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels have shape {labels.shape}, expected {logits.shape[:-1]} (the input ids' shape)")
    V = logits.shape[-1]
    return cross_entropy(logits[..., :-1, :].reshape(-1, V), labels[..., 1:].reshape(-1), "labels")
