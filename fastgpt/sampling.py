"""Decoding processors (logits processors and warpers) and the final draw, in pure NumPy.

Purpose: turn one step's raw logits into the next token id. Every processor is a small
pure function ``f(logits, ...) -> new array`` that checks its own arguments, documents its
neutral value (which returns an unchanged copy) and never mutates its input. The chain
ends in exactly one draw from a caller-provided ``np.random.Generator``
(:func:`sample_token`) or in an argmax (:func:`greedy_token`). Greedy is argmax, not
temperature 0.

Non-goals: beam search, batched id-based processors (repetition / presence / n-gram take
one sequence), torch tensors, streaming or stop rules (those live in ``generate.py``).

Dimension legend: V vocabulary size, B batch rows, L context length (prompt + generated).
Logits are 1-D ``(V,)`` float32; the processors that only need the logits themselves
(temperature, logit bias, min-new-tokens, top-k, top-p, min-p, log-softmax) also accept
``(B, V)`` and work row by row along the last axis.

Chain order (:func:`process_logits`); for the steps transformers has, the same order as its
``GenerationMixin._get_logits_processor`` (except ``logit_bias``, see below):

    1. repetition_penalty             (prompt + generated ids, each id once)
    2. presence / frequency penalty   (generated ids only; not in transformers, OpenAI)
    3. no_repeat_ngram_size           (prompt + generated ids)
    4. logit_bias
    5. min_new_tokens                 (EOS -> -inf while too few tokens were generated)
    -- only when do_sample: --
    6. temperature -> 7. top_k -> 8. top_p -> 9. min_p
    then sample_token (do_sample) or greedy_token (not do_sample).

Why this order: the penalties and bans edit the model's scores before any reshaping, so
a banned token stays banned whatever the warpers do. Temperature comes first among the
warpers, as in transformers, so top-p and min-p see the *tempered* distribution. llama.cpp's
default chain (``common/common.h``) puts temperature last, after top-k/top-p/min-p: there
top-p picks its nucleus from the untempered distribution, so at ``T < 1`` transformers'
order keeps fewer tokens than llama.cpp's (a sharper distribution reaches mass ``p``
sooner) and at ``T > 1`` more. Top-k is the only warper unaffected by the order (it is
monotone); min-p is affected too (its cut is ``x < max + T*log(min_p)`` in raw logits).

Difference from transformers: its closest analogue of ``logit_bias``
(``SequenceBiasLogitsProcessor``) runs *before* the repetition penalty. Here the bias is
added after the penalties, which is the OpenAI meaning (the bias is added to the final
logits and is not rescaled by the penalty). The two orders only differ when a biased token
is also penalised with ``repetition_penalty != 1``.

Numerics: inputs stay float32 and processors return the input dtype; scalar parameters
are applied as Python floats, so NumPy (NEP 50) rounds them to float32 the way torch does,
and the processors match transformers to float32 rounding. Probabilities used for
decisions (top-p cumulative mass, min-p ratio, the draw) are computed in float64.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "SamplingParams",
    "apply_repetition_penalty",
    "apply_presence_frequency_penalty",
    "apply_no_repeat_ngram",
    "apply_logit_bias",
    "apply_min_new_tokens",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "apply_min_p",
    "process_logits",
    "sample_token",
    "greedy_token",
    "log_softmax",
]

_NEG_INF = -math.inf


# --------------------------------------------------------------------------------------
# Argument checks. Parameter problems raise ValueError naming the argument and its value;
# a wrong kind of array or generator raises TypeError.
# --------------------------------------------------------------------------------------


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


_F32_MAX = float(np.finfo(np.float32).max)


def _check_real(name: str, value, *, lo=None, lo_open=False, hi=None, hi_open=False, hint=""):
    """Return ``float(value)``; raise ValueError unless it is a finite real in the range."""
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, got {value!r}.{hint}")
    v = float(value)
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else repr(lo)
        hi_s = "inf" if hi is None else repr(hi)
        raise ValueError(f"`{name}` must be in {left}{lo_s}, {hi_s}{right}, got {value!r}.{hint}")
    return v


def _check_int(name: str, value, *, lo: int = 0, hint: str = "") -> int:
    if not _is_int(value) or value < lo:
        raise ValueError(f"`{name}` must be an integer >= {lo}, got {value!r}.{hint}")
    return int(value)


def _check_logits(logits, *, batched: bool, name: str = "logits") -> np.ndarray:
    """View ``logits`` as an ndarray of shape (V,) (or (B, V) when ``batched``); no copy."""
    x = np.asarray(logits)
    if x.dtype.kind != "f":
        raise TypeError(
            f"`{name}` must be a floating-point array (float32 logits), got dtype {x.dtype}."
        )
    ndims = (1, 2) if batched else (1,)
    if x.ndim not in ndims or x.shape[-1] == 0:
        want = "(vocab,) or (batch, vocab)" if batched else "(vocab,)"
        raise ValueError(f"`{name}` must have shape {want} with vocab >= 1, got {x.shape}.")
    return x


def _check_ids(name: str, ids, vocab_size: int) -> np.ndarray:
    """Token ids as a 1-D int64 array, every id in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must be a 1-D sequence of integer token ids, "
            f"got shape {arr.shape} dtype {arr.dtype}."
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"`{name}` holds token id {bad}, outside [0, {vocab_size}) for this vocabulary."
        )
    return arr.astype(np.int64, copy=False)


_INT64_END = 2**63


def _check_eos_ids(eos_ids, vocab_size: int | None, name: str = "eos_token_id") -> np.ndarray:
    """None -> no ids; an int -> [int]; a sequence of ints -> array. Range-checked if V known."""
    if eos_ids is None:
        return np.empty(0, dtype=np.int64)
    items = [eos_ids] if _is_int(eos_ids) else eos_ids
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"`{name}` must be None, an int or a list of ints, got {eos_ids!r}.")
    # Without a vocabulary the ids must still fit the int64 array they are kept in.
    top = vocab_size if vocab_size is not None else _INT64_END
    for t in items:
        if not _is_int(t) or not 0 <= t < top:
            rng = f"[0, {vocab_size})" if vocab_size is not None else "[0, 2**63)"
            raise ValueError(f"`{name}` must hold token ids in {rng}, got {t!r} in {eos_ids!r}.")
    return np.asarray(items, dtype=np.int64)


def _check_logit_bias(bias, vocab_size: int | None) -> dict[int, float]:
    if bias is None:
        return {}
    if not isinstance(bias, Mapping):
        raise ValueError(f"`logit_bias` must be None or a dict {{token_id: bias}}, got {bias!r}.")
    for k, v in bias.items():
        if not _is_int(k) or k < 0 or (vocab_size is not None and k >= vocab_size):
            rng = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
            raise ValueError(f"`logit_bias` keys must be token ids in {rng}, got key {k!r}.")
        # -inf is allowed (a hard ban); NaN and +inf would poison the softmax, and so would a
        # finite value past float32's range, which the float32 scores round to +-inf.
        if not _is_real(v) or math.isnan(v) or v == math.inf or (v != -math.inf and abs(v) > _F32_MAX):
            raise ValueError(
                f"`logit_bias[{k}]` must be a real number within float32's range (|x| <= {_F32_MAX:.4g}) "
                f"or -inf, got {v!r}."
            )
    return {int(k): float(v) for k, v in bias.items()}


def _check_temperature(t, name: str = "temperature") -> float:
    hint = ""
    if _is_real(t) and t == 0:
        hint = " For greedy decoding use do_sample=False (greedy_token), not temperature 0."
    return _check_real(name, t, lo=0.0, lo_open=True, hint=hint)


def _check_top_p(p) -> float:
    return _check_real("top_p", p, lo=0.0, lo_open=True, hi=1.0,
                       hint=" Use 1.0 to disable top-p.")


def _check_min_p(p) -> float:
    return _check_real("min_p", p, lo=0.0, hi=1.0, hint=" Use 0.0 to disable min-p.")


def _check_penalty(p, name: str = "penalty") -> float:
    # Bounded by float32's range: the scores it divides are float32.
    return _check_real(name, p, lo=0.0, lo_open=True, hi=_F32_MAX,
                       hint=" 1.0 means no penalty; > 1 discourages repeats, < 1 favours them.")


# --------------------------------------------------------------------------------------
# In-place kernels: each edits ``x`` (an owned, writeable array) and returns nothing. The
# public apply_* functions copy first; process_logits runs them on its one output buffer.
# --------------------------------------------------------------------------------------


def _repetition_penalty_(x, seen, penalty):
    # x: (V,); seen: (L,) int64 ids. Each distinct id is penalised once.
    ids = np.unique(seen)                                      # (U,)
    s = x[ids]                                                 # (U,)
    x[ids] = np.where(s < 0, s * penalty, s / penalty)


def _presence_frequency_(x, generated, presence, frequency):
    # x: (V,); generated: (G,) int64 ids.
    ids, counts = np.unique(generated, return_counts=True)    # (U,), (U,)
    delta = counts * frequency + presence                      # (U,) float64, counts > 0
    x[ids] -= delta.astype(x.dtype)


def _no_repeat_ngram_(x, ids, n):
    # x: (V,); ids: (L,) int64. Ban every token t such that ids[-(n-1):] + [t] already
    # occurs as an n-gram in ids (transformers NoRepeatNGramLogitsProcessor).
    L = ids.shape[0]
    if L < n:
        return                                                 # no complete n-gram yet
    windows = np.lib.stride_tricks.sliding_window_view(ids, n) # (L-n+1, n)
    prefix = ids[L - n + 1:]                                   # (n-1,)
    match = (windows[:, :-1] == prefix).all(axis=1)            # (L-n+1,); all True if n == 1
    x[windows[match, -1]] = _NEG_INF


def _logit_bias_(x, bias):
    # x: (V,) or (B, V); bias: {id: value}, ids already checked.
    keys = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))     # (K,)
    vals = np.fromiter(bias.values(), dtype=np.float64, count=len(bias)) # (K,)
    x[..., keys] += vals.astype(x.dtype)


def _temperature_(x, t):
    # Python float divisor: NumPy rounds it to x.dtype (NEP 50), as torch does.
    np.divide(x, float(t), out=x)


def _top_k_(x, k, filter_value, min_tokens_to_keep):
    # x: (V,) or (B, V). Keep every score >= the k-th largest, so ties at the cut survive
    # (transformers: scores < topk(scores, k)[0][..., -1] -> filter).
    V = x.shape[-1]
    k = min(max(k, min_tokens_to_keep), V)
    if k >= V:
        return
    kth = np.partition(x, V - k, axis=-1)[..., V - k:V - k + 1] # (..., 1)
    x[x < kth] = filter_value


# Top-p first tries the C largest logits as candidates, so that a decode step does not sort
# the whole vocabulary (a full stable argsort of 50257 float32 logits takes several ms, the
# candidate path about 1 ms). It gives the same result whenever the tokens outside the
# candidates would all be dropped anyway; otherwise it tries the next size, then the full
# sort. tests/test_sampling.py checks both paths against each other and transformers.
_TOP_P_CANDIDATES = (256, 4096)


def _top_p_(x, p, min_tokens_to_keep, filter_value):
    # x: (V,) or (B, V). transformers TopPLogitsWarper: sort ascending, cumulative softmax,
    # drop where cumprob <= 1 - p, always keep the last (largest) min_tokens_to_keep.
    # A stable sort: among tied logits the lower id sorts first and so is dropped first.
    for row in (x[None] if x.ndim == 1 else x):                  # row: (V,) view
        _top_p_row_(row, p, min_tokens_to_keep, filter_value)


def _top_p_row_(x, p, min_tokens_to_keep, filter_value):
    V = x.shape[0]
    x64 = x.astype(np.float64)                                   # (V,)
    w = np.exp(x64 - x64.max())                                  # (V,) unnormalised probs
    total = w.sum()
    has_mass = w > 0                                             # (V,) False at -inf
    n_mass = int(np.count_nonzero(has_mass))
    for n_cand in _TOP_P_CANDIDATES:
        if n_cand >= V:
            break
        if n_mass <= n_cand:                                     # e.g. after top-k
            is_cand = has_mass
        else:
            kth = np.partition(x, V - n_cand)[V - n_cand]        # n_cand-th largest
            is_cand = (x >= kth) & has_mass                      # (V,) ties at the cut in
        cand = np.flatnonzero(is_cand)                           # (C,)
        # Every non-candidate is smaller than every candidate, so it sorts first and its
        # cumulative mass is at most `rest`: when rest <= 1 - p they are all dropped.
        rest = w.sum(where=~is_cand)
        if rest / total > 1.0 - p or cand.shape[0] < min_tokens_to_keep:
            continue
        order = cand[np.argsort(x[cand], kind="stable")]          # (C,) ascending
        cum = (rest + np.cumsum(w[order])) / total               # (C,)
        remove_sorted = cum <= 1.0 - p
        remove_sorted[-min_tokens_to_keep:] = False
        x[~is_cand] = filter_value
        x[order[remove_sorted]] = filter_value
        return
    order = np.argsort(x, kind="stable")                         # (V,) ascending
    cum = np.cumsum(w[order]) / total                            # (V,)
    remove_sorted = cum <= 1.0 - p
    remove_sorted[-min_tokens_to_keep:] = False
    x[order[remove_sorted]] = filter_value


def _min_p_(x, min_p, min_tokens_to_keep, filter_value):
    # x: (V,) or (B, V). transformers MinPLogitsWarper: drop probs < min_p * max prob.
    # probs / max prob = exp(x - max), so the softmax denominator is not needed.
    x64 = x.astype(np.float64)                                   # (..., V)
    rel = np.exp(x64 - x64.max(axis=-1, keepdims=True))          # (..., V) in [0, 1]
    remove = rel < min_p
    # The top token has rel == 1 >= min_p and is always kept; keep more if asked.
    k = min(min_tokens_to_keep, x.shape[-1])
    if k > 1:
        top = np.argpartition(-x64, k - 1, axis=-1)[..., :k]     # (..., k)
        np.put_along_axis(remove, top, False, axis=-1)
    x[remove] = filter_value


def _min_new_tokens_(x, n_generated, min_new_tokens, eos):
    # x: (V,) or (B, V); eos: (E,) ids.
    if n_generated < min_new_tokens and eos.size:
        x[..., eos] = _NEG_INF


# --------------------------------------------------------------------------------------
# Public processors: validate, copy, apply. Each returns a new array of the input dtype.
# --------------------------------------------------------------------------------------


def apply_repetition_penalty(logits, seen_ids, penalty: float) -> np.ndarray:
    """CTRL repetition penalty with transformers semantics.

    For each distinct id in ``seen_ids`` (prompt + generated, as transformers does for
    decoder-only models): ``score < 0 -> score * penalty`` else ``score / penalty``.
    Neutral value: ``penalty=1.0``. ``penalty`` must be > 0. logits: (V,).
    """
    x = _check_logits(logits, batched=False)
    penalty = _check_penalty(penalty, "penalty")
    seen = _check_ids("seen_ids", seen_ids, x.shape[-1])
    out = x.copy()
    if penalty != 1.0 and seen.size:
        _repetition_penalty_(out, seen, penalty)
    return out


def apply_presence_frequency_penalty(logits, generated_ids, presence: float,
                                     frequency: float) -> np.ndarray:
    """OpenAI presence / frequency penalties (additive).

    ``logits[j] -= count[j] * frequency + (count[j] > 0) * presence`` where ``count[j]`` is
    how often ``j`` occurs in ``generated_ids``. As in OpenAI's API, only the tokens sampled
    so far (the completion) are counted, not the prompt: :func:`process_logits` passes
    ``context_ids[n_prompt:]``. Neutral values: ``presence=0.0, frequency=0.0``. Negative
    values are allowed (they encourage repeats; OpenAI accepts [-2, 2]). logits: (V,).
    """
    x = _check_logits(logits, batched=False)
    presence = _check_real("presence", presence)
    frequency = _check_real("frequency", frequency)
    gen = _check_ids("generated_ids", generated_ids, x.shape[-1])
    out = x.copy()
    if (presence != 0.0 or frequency != 0.0) and gen.size:
        _presence_frequency_(out, gen, presence, frequency)
    return out


def apply_no_repeat_ngram(logits, ids, n: int) -> np.ndarray:
    """Ban (-> -inf) every token that would complete an n-gram already present in ``ids``.

    transformers ``NoRepeatNGramLogitsProcessor`` semantics; ``ids`` is the whole context
    (prompt included). ``n=1`` bans every token seen so far. Neutral value: ``n=0``.
    logits: (V,).
    """
    x = _check_logits(logits, batched=False)
    n = _check_int("n", n, lo=0, hint=" Use 0 to disable the n-gram ban.")
    seq = _check_ids("ids", ids, x.shape[-1])
    out = x.copy()
    if n > 0:
        _no_repeat_ngram_(out, seq, n)
    return out


def apply_logit_bias(logits, bias: Mapping[int, float] | None) -> np.ndarray:
    """Add ``bias[token_id]`` to that token's logit (OpenAI ``logit_bias``).

    Keys must be token ids in [0, V); values finite or -inf (a hard ban). Neutral value:
    ``None`` or ``{}``. logits: (V,) or (B, V) (the same bias for every row).
    """
    x = _check_logits(logits, batched=True)
    bias = _check_logit_bias(bias, x.shape[-1])
    out = x.copy()
    if bias:
        _logit_bias_(out, bias)
    return out


def apply_min_new_tokens(logits, n_generated: int, min_new_tokens: int,
                         eos_ids: int | Sequence[int] | None) -> np.ndarray:
    """Set the EOS logits to -inf while ``n_generated < min_new_tokens``.

    transformers ``MinNewTokensLengthLogitsProcessor`` semantics. ``eos_ids``: None, one id
    or a list. Neutral values: ``min_new_tokens=0`` or ``eos_ids=None``.
    logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True)
    n_generated = _check_int("n_generated", n_generated)
    min_new_tokens = _check_int("min_new_tokens", min_new_tokens)
    eos = _check_eos_ids(eos_ids, x.shape[-1], name="eos_ids")
    out = x.copy()
    _min_new_tokens_(out, n_generated, min_new_tokens, eos)
    return out


def apply_temperature(logits, t: float) -> np.ndarray:
    """``logits / t``. ``t`` must be > 0 (greedy is :func:`greedy_token`, not t=0).

    Neutral value: ``t=1.0``. logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True)
    t = _check_temperature(t, "t")
    out = x.copy()
    if t != 1.0:
        _temperature_(out, t)
    return out


def apply_top_k(logits, k: int, filter_value: float = _NEG_INF, *,
                min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep the ``k`` highest logits, set the rest to ``filter_value``.

    transformers ``TopKLogitsWarper`` semantics: every logit equal to the k-th largest is
    kept, so ties at the cut can keep more than ``k`` tokens. ``k`` larger than V keeps
    everything. Neutral value: ``k=0`` (off). logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True)
    k = _check_int("k", k, lo=0, hint=" Use 0 to disable top-k.")
    min_tokens_to_keep = _check_int("min_tokens_to_keep", min_tokens_to_keep, lo=1)
    filter_value = float(filter_value)
    out = x.copy()
    if k > 0:
        _top_k_(out, k, filter_value, min_tokens_to_keep)
    return out


def apply_top_p(logits, p: float, min_tokens_to_keep: int = 1, *,
                filter_value: float = _NEG_INF) -> np.ndarray:
    """Nucleus filtering with transformers ``TopPLogitsWarper`` semantics.

    Sort ascending, take the cumulative softmax, set to ``filter_value`` every token whose
    cumulative probability is ``<= 1 - p``, but always keep the ``min_tokens_to_keep``
    largest. ``p`` in (0, 1]. Neutral value: ``p=1.0`` (returns an unchanged copy; note
    transformers simply does not run the warper then). Among exactly tied logits the lower
    token id is dropped first. logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True)
    p = _check_top_p(p)
    min_tokens_to_keep = _check_int("min_tokens_to_keep", min_tokens_to_keep, lo=1)
    filter_value = float(filter_value)
    out = x.copy()
    if p < 1.0:
        _top_p_(out, p, min_tokens_to_keep, filter_value)
    return out


def apply_min_p(logits, min_p: float, min_tokens_to_keep: int = 1, *,
                filter_value: float = _NEG_INF) -> np.ndarray:
    """Min-p filtering with transformers ``MinPLogitsWarper`` semantics.

    Set to ``filter_value`` every token whose probability is below ``min_p`` times the top
    token's probability; keep at least the ``min_tokens_to_keep`` most likely. ``min_p``
    in [0, 1]; ``1.0`` keeps only the tokens tied with the maximum. Neutral value:
    ``min_p=0.0``. logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True)
    min_p = _check_min_p(min_p)
    min_tokens_to_keep = _check_int("min_tokens_to_keep", min_tokens_to_keep, lo=1)
    filter_value = float(filter_value)
    out = x.copy()
    if min_p > 0.0:
        _min_p_(out, min_p, min_tokens_to_keep, filter_value)
    return out


# --------------------------------------------------------------------------------------
# Parameters and the full chain.
# --------------------------------------------------------------------------------------


@dataclass
class SamplingParams:
    """Decoding options. Every default is the neutral value (greedy, nothing filtered).

    ``do_sample=False`` means greedy decoding: the penalties, bans, bias and
    ``min_new_tokens`` still apply, the warpers (temperature, top_k, top_p, min_p) do not.
    ``eos_token_id`` is only used here by ``min_new_tokens``. Checked on construction
    (without a vocabulary) and by :meth:`validate` (with one).
    """

    do_sample: bool = False
    temperature: float = 1.0           # > 0 when do_sample; 1.0 = neutral
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0                 # (0, 1]; 1.0 = off
    min_p: float = 0.0                 # [0, 1]; 0.0 = off
    repetition_penalty: float = 1.0    # > 0; 1.0 = off
    presence_penalty: float = 0.0      # 0.0 = off (generated tokens only)
    frequency_penalty: float = 0.0     # 0.0 = off (generated tokens only)
    no_repeat_ngram_size: int = 0      # 0 = off
    logit_bias: dict[int, float] | None = None
    min_new_tokens: int = 0            # 0 = off
    eos_token_id: int | list[int] | None = None

    def __post_init__(self):
        self.validate(None)

    def validate(self, vocab_size: int | None = None) -> "SamplingParams":
        """Raise ValueError naming the first bad field and its value; return ``self``.

        With ``vocab_size`` the token ids in ``logit_bias`` and ``eos_token_id`` are also
        checked to lie in [0, vocab_size).
        """
        if vocab_size is not None:
            _check_int("vocab_size", vocab_size, lo=1)
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise ValueError(f"`do_sample` must be a bool, got {self.do_sample!r}.")
        if self.do_sample:
            _check_temperature(self.temperature)
        else:
            # Ignored when greedy, but must still be a number (0 is tolerated here).
            _check_real("temperature", self.temperature, lo=0.0)
        _check_int("top_k", self.top_k, lo=0, hint=" Use 0 to disable top-k.")
        _check_top_p(self.top_p)
        _check_min_p(self.min_p)
        _check_penalty(self.repetition_penalty, "repetition_penalty")
        _check_real("presence_penalty", self.presence_penalty)
        _check_real("frequency_penalty", self.frequency_penalty)
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, lo=0,
                   hint=" Use 0 to disable the n-gram ban.")
        _check_logit_bias(self.logit_bias, vocab_size)
        _check_int("min_new_tokens", self.min_new_tokens, lo=0)
        _check_eos_ids(self.eos_token_id, vocab_size)
        return self


def process_logits(logits, params: SamplingParams, context_ids, n_prompt: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Run the whole chain (see the module docstring for the order) on one step's logits.

    logits: (V,) float raw scores for the next token; never modified unless passed as
    ``out``. context_ids: (L,) ids so far, prompt first then generated; n_prompt: how many
    of them are the prompt (0 <= n_prompt <= L). out: optional (V,) array of the same dtype
    to write into (may be ``logits`` itself for an explicit in-place update). Returns the
    processed scores (``out`` if given), filtered entries at -inf; feed them to
    :func:`sample_token` when ``params.do_sample`` else to :func:`greedy_token`.
    """
    x = _check_logits(logits, batched=False)
    if not isinstance(params, SamplingParams):
        raise TypeError(f"`params` must be a SamplingParams, got {type(params).__name__}.")
    V = x.shape[0]
    params.validate(V)
    ids = _check_ids("context_ids", context_ids, V)              # (L,)
    L = ids.shape[0]
    n_prompt = _check_int("n_prompt", n_prompt, lo=0)
    if n_prompt > L:
        raise ValueError(f"`n_prompt` ({n_prompt}) exceeds len(context_ids) ({L}).")

    if out is None:
        out = x.copy()
    else:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
            raise ValueError(
                f"`out` must be an ndarray of shape {x.shape} and dtype {x.dtype}, got "
                f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', type(out).__name__)}."
            )
        if out is not x:
            np.copyto(out, x)

    p = params
    if p.repetition_penalty != 1.0 and L:
        _repetition_penalty_(out, ids, p.repetition_penalty)
    if (p.presence_penalty != 0.0 or p.frequency_penalty != 0.0) and L > n_prompt:
        _presence_frequency_(out, ids[n_prompt:], p.presence_penalty, p.frequency_penalty)
    if p.no_repeat_ngram_size > 0:
        _no_repeat_ngram_(out, ids, p.no_repeat_ngram_size)
    if p.logit_bias:
        _logit_bias_(out, p.logit_bias)
    if p.min_new_tokens > 0:
        eos = _check_eos_ids(p.eos_token_id, V)
        _min_new_tokens_(out, L - n_prompt, p.min_new_tokens, eos)
    if p.do_sample:
        if p.temperature != 1.0:
            _temperature_(out, p.temperature)
        if p.top_k > 0:
            _top_k_(out, p.top_k, _NEG_INF, 1)
        if p.top_p < 1.0:
            _top_p_(out, p.top_p, 1, _NEG_INF)
        if p.min_p > 0.0:
            _min_p_(out, p.min_p, 1, _NEG_INF)
    return out


# --------------------------------------------------------------------------------------
# The draw.
# --------------------------------------------------------------------------------------


def sample_token(processed_logits, rng: np.random.Generator) -> int:
    """Draw one token id from ``softmax(processed_logits)`` with one ``rng.random()`` call.

    Inverse CDF in float64: u ~ U[0, 1) scaled by the total mass, then the first index
    whose cumulative mass exceeds it. Tokens at -inf (probability exactly 0) are never
    drawn. ``rng`` must be a ``np.random.Generator``; the global ``np.random`` state is
    never read or advanced. processed_logits: (V,).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"`rng` must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got "
            f"{type(rng).__name__}; the global np.random state is deliberately not used."
        )
    x = _check_logits(processed_logits, batched=False, name="processed_logits")
    m = float(x.max())                                           # NaN propagates here
    if not math.isfinite(m):
        raise ValueError(
            f"`processed_logits` has max {m}: nothing to sample (all -inf, or NaN/+inf present)."
            + (" A very small temperature or repetition_penalty, or a huge negative presence or frequency "
               "penalty, overflows the float32 scores to +inf."
               if m == math.inf else "")
        )
    w = np.exp(x.astype(np.float64) - m)                         # (V,) unnormalised, max 1
    cdf = np.cumsum(w)                                           # (V,)
    u = rng.random() * cdf[-1]
    i = int(np.searchsorted(cdf, u, side="right"))
    if i >= cdf.shape[0]:
        # u * total rounded up to the total: take the last token with non-zero mass.
        i = int(np.flatnonzero(w)[-1])
    return i


def greedy_token(logits) -> int:
    """The argmax (first index among ties). Greedy decoding, not temperature 0. logits: (V,)."""
    x = _check_logits(logits, batched=False)
    i = int(np.argmax(x))
    if math.isnan(x[i]):
        raise ValueError(f"`logits` contains NaN (at index {i}).")
    if x[i] == -math.inf:                 # argmax would silently pick token 0, itself banned
        raise ValueError("every token's score is -inf: nothing to choose (the options, e.g. logit_bias, "
                         "ban the whole vocabulary).")
    return i


def log_softmax(logits) -> np.ndarray:
    """Stable log-softmax over the last axis, returned as float64 (sums of log-probs over
    long sequences should not drift). -inf inputs give -inf. logits: (V,) or (B, V).
    """
    x = _check_logits(logits, batched=True).astype(np.float64)  # (..., V)
    m = x.max(axis=-1, keepdims=True)                            # (..., 1)
    if not np.all(np.isfinite(m)):
        raise ValueError("`logits` has a row that is all -inf or holds NaN/+inf.")
    x -= m
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x
