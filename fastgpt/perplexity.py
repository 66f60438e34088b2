"""Perplexity of a text under a model, with a sliding window (the Hugging Face recipe).

Windows of ``max_length`` tokens (default n_positions) start every ``stride`` tokens; each
token is scored at most once, by the first window in which it is new, with as much left
context as that window holds; a window's first token is not scored (nor is token 0). With stride == max_length the
windows do not overlap (fastest, least context); a smaller stride gives every scored token
at least max_length - stride tokens of context.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .model import Model, TokenIdError


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float
    mean_nll: float         # nats per scored token
    scored_tokens: int
    windows: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # (T, V) float32 -> float64 log-probabilities; float64 keeps the sum over ~1e5 tokens exact enough
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def _window_arg(name: str, value, lo: int, hi: int, hi_name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi_name}={hi}], got {value!r}")
    return int(value)


def _ids_to_score(model: Model, ids) -> np.ndarray:
    """ids as a 1-d int64 array, checked as Model.forward checks them.

    Checked whole, before windowing: a bad id's position is then its position in ``ids``, not
    in the window that would have met it, and nothing is computed for a sequence that fails."""
    # An empty text is too short to score rather than malformed: say that, not Model's shape rule.
    if (isinstance(ids, (list, tuple, range)) and len(ids) == 0) or (isinstance(ids, np.ndarray) and ids.shape == (0,)):
        raise ValueError("ids: need at least 2 tokens to score, got 0")
    arr, one_d = model._check_ids(ids)
    if not one_d:
        raise TokenIdError(f"ids must be a 1-d sequence of token ids, got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"ids: need at least 2 tokens to score, got {arr.shape[1]}")
    return arr[0]


def perplexity_of_ids(model: Model, ids, max_length: int | None = None, stride: int | None = None) -> PerplexityResult:
    """Perplexity of the token ids ``ids`` (a 1-d sequence of integers in [0, vocab_size)).

    Bad ids raise TokenIdError (a ValueError) naming the id and its position in ``ids``; a bad
    ``max_length`` or ``stride`` a ValueError naming it."""
    n_ctx = model.config.n_positions
    max_length = _window_arg("max_length", n_ctx if max_length is None else max_length, 2, n_ctx, "n_positions")
    stride = _window_arg("stride", max_length if stride is None else stride, 1, max_length, "max_length")
    ids = _ids_to_score(model, ids)

    total_nll, scored, windows, prev_end = 0.0, 0, 0, 1   # token 0 is never scored
    for begin in range(0, ids.size - 1, stride):
        end = min(begin + max_length, ids.size)
        if end <= prev_end:
            break
        logp = _log_softmax(model.forward(ids[begin:end]))    # (end - begin, V)
        # A window's first token has no context inside it: as in Hugging Face's recipe, it is
        # not scored (with non-overlapping windows it is never scored at all).
        targets = np.arange(max(prev_end, begin + 1), end)   # absolute positions scored here
        total_nll -= logp[targets - 1 - begin, ids[targets]].sum()
        scored += targets.size
        windows += 1
        prev_end = end
        if end == ids.size:
            break
    mean = total_nll / scored
    return PerplexityResult(perplexity=math.exp(mean), mean_nll=mean, scored_tokens=scored, windows=windows)


def perplexity(model: Model, tokenizer, text: str, max_length: int | None = None, stride: int | None = None,
               allowed_special="all") -> PerplexityResult:
    """Perplexity of ``text``; special tokens such as <|endoftext|> in it count as themselves."""
    return perplexity_of_ids(model, tokenizer.encode(text, allowed_special=allowed_special), max_length, stride)
