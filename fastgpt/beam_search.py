"""Beam search over a KV cache whose rows are reordered in place, as transformers does it.

Purpose: for each prompt, the ``num_return_sequences`` best of ``num_beams`` hypotheses,
scored by their summed log-probabilities divided by ``length ** length_penalty``, with
transformers 5's exact procedure (``GenerationMixin._beam_search``), so that the same
checkpoint gives the same sequences:

* each step takes the top ``W = max(2, 1 + n_eos) * num_beams`` continuations of all the
  prompt's beams (``W`` so that enough beams that did not just end remain to continue);
* a continuation that ends (EOS, or the length limit) is a finished hypothesis only if it
  is among the first ``num_beams`` of those ``W``; the best ``num_beams`` finished ones are
  kept; the best ``num_beams`` unfinished ones continue;
* ``early_stopping``: True stops a prompt as soon as ``num_beams`` hypotheses are finished;
  False (default) stops when the best running beam, scored at its current length, cannot
  beat the worst finished one; "never" scores it at the longest possible length when
  ``length_penalty > 0`` (the canonical, slower rule);
* scores are float32 and "impossible" is -1e9 added to a score, both as transformers has it,
  so that comparisons round the same way; ties keep the lower index first.

Design: prompts' rows sit side by side in one cache of ``prompts * num_beams`` rows. The
prompt is computed once per prompt (in beam 0's row, then copied to the other beams' rows); each
step feeds one token per beam and reorders the rows in place (``KVCache.reorder``: the
prefix is never recomputed). The decoding processors (repetition penalty, n-gram ban,
minimum length; with ``do_sample``, temperature, top-k, top-p, min-p) edit each beam's
log-probabilities, as transformers' ``logits_processor`` does. With ``do_sample``, the ``W``
continuations are drawn without replacement from the softmax of the beams' summed scores.

Non-goals: diverse / group / constrained beam search, stop strings, streaming. Differences
from transformers: the n-gram ban sees each beam's real tokens (transformers' also counts
left-padding tokens; its repetition penalty skips them, as here); beam sampling draws from
NumPy, and top-k/top-p keep at least one token (transformers keeps one more than the number of
EOS ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import memory
from .model import Model
from .sampling import SamplingParams, log_softmax, process_logits

#: transformers' stand-in for "impossible", added to float32 scores.
_NEG = np.float32(-1.0e9)
_EARLY_STOPPING = (True, False, "never")


@dataclass
class BeamHypothesis:
    """One finished sequence: its new ``token_ids`` (the last may be EOS), its ``score``
    (summed log-probabilities / new tokens ** length_penalty) and, per new token, the
    flat beam row (``prompt * num_beams + beam``) it was chosen from (transformers'
    ``beam_indices``)."""

    token_ids: list[int]
    score: float
    beam_indices: list[int]


@dataclass
class BeamSearchOutput:
    """``hypotheses[p]``: prompt ``p``'s best hypotheses, best first. ``scores`` / ``logits``
    (when asked): per step, the processed log-probabilities / raw logits of every running
    beam, ``(prompts * num_beams, vocab)`` float32."""

    hypotheses: list[list[BeamHypothesis]]
    scores: list[np.ndarray] | None = None
    logits: list[np.ndarray] | None = None


def check_beam_options(num_beams, length_penalty, early_stopping, num_return_sequences) -> None:
    """ValueError naming the first bad beam-search option."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"`num_beams` must be an integer >= 1, got {num_beams!r}.")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not np.isfinite(length_penalty):
        raise ValueError(f"`length_penalty` must be a finite number, got {length_penalty!r}.")
    if early_stopping not in _EARLY_STOPPING or isinstance(early_stopping, (int, float)) and not isinstance(
            early_stopping, bool):
        raise ValueError(f"`early_stopping` must be True, False or 'never', got {early_stopping!r}.")
    if num_return_sequences > num_beams:
        raise ValueError(f"`num_return_sequences` ({num_return_sequences}) must be <= `num_beams` ({num_beams}): "
                         "beam search returns its best beams.")


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row (P, N), largest first; ties: lower index
    first. A partition finds the k-th largest value; only the entries at or above it (ties at
    the cut included) are sorted: a full sort of num_beams * vocab scores per step costs more
    than the model's own decode step."""
    if k >= x.shape[-1]:
        return np.argsort(-x, axis=-1, kind="stable")[..., :k]
    kth = -np.partition(-x, k - 1, axis=-1)[:, k - 1]                # (P,) the k-th largest value
    out = np.empty((x.shape[0], k), np.int64)
    for p in range(x.shape[0]):
        cand = np.flatnonzero(x[p] >= kth[p])                        # (>= k,) in index order
        out[p] = cand[np.argsort(-x[p, cand], kind="stable")[:k]]
    return out


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[p, idx[p, j], ...] for every prompt p: (P, N, ...) -> (P, J, ...)."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(model: Model, prompts: list[list[int]], *, num_beams: int, max_new_tokens: int,
                eos_token_id: list[int], params: SamplingParams, length_penalty: float = 1.0,
                early_stopping: bool | str = False, num_return_sequences: int = 1, seed: int | None = None,
                return_scores: bool = False, return_logits: bool = False) -> BeamSearchOutput:
    """Beam search from each of ``prompts`` (lists of ids, at least one each); see the module
    docstring. ``params`` are the (validated) processors; ``eos_token_id`` the ids that end a
    hypothesis; ``seed`` seeds the draws when ``params.do_sample``."""
    check_beam_options(num_beams, length_penalty, early_stopping, num_return_sequences)
    if max_new_tokens < 1:                                        # transformers refuses it too
        raise ValueError(f"beam search needs `max_new_tokens` >= 1, got {max_new_tokens}")
    P, K = len(prompts), int(num_beams)
    lengths = np.array([len(p) for p in prompts])
    T = int(lengths.max())
    L = T + max_new_tokens                                        # transformers' max_length
    V = model.config.vocab_size
    eos = np.asarray(eos_token_id, np.int64)
    W = max(2, 1 + eos.size) * K
    top_mask = np.arange(W) < K                                   # (W,) may become finished
    rng = np.random.default_rng(seed) if params.do_sample else None
    plain = _processors_are_neutral(params, eos)

    running = np.zeros((P, K, L), np.int64)                       # (P, K, L) left-padded prompts
    for p, prompt in enumerate(prompts):
        running[p, :, T - len(prompt):T] = prompt
    finished = running.copy()
    running_scores = np.zeros((P, K), np.float32)
    running_scores[:, 1:] = _NEG                                  # only beam 0 may start
    beam_scores = np.full((P, K), _NEG, np.float32)
    is_finished = np.zeros((P, K), bool)
    improvable = np.ones((P, 1), bool)
    running_bi = np.full((P, K, max_new_tokens), -1, np.int64)
    finished_bi = running_bi.copy()
    starts = np.repeat(T - lengths, K)                            # (P*K,) first real slot of each row
    out = BeamSearchOutput([], [] if return_scores else None, [] if return_logits else None)

    # Each step holds a few (P * K, V) arrays beside the cache: the logits and their repeat, the
    # log-probabilities in float64 and float32, the accumulated scores and a partition's int64
    # indices (measured: ~28 bytes per score at num_beams=2000).
    memory.require(32 * P * K * V, f"beam search's per-step scores ({P} prompt(s) x num_beams={K} x {V} tokens)")
    cache = model.new_cache(batch_size=P * K, max_len=L)
    cache.set_left_padding(starts)
    logits = _prefill(model, cache, running[:, 0, :T], K)          # (P*K, V)
    cur = T
    while True:
        if return_logits:
            out.logits.append(logits.copy())
        log_probs = log_softmax(logits).astype(np.float32)        # (P*K, V)
        if not plain:
            flat = running.reshape(P * K, L)
            for r in range(P * K):
                process_logits(log_probs[r], params, flat[r, starts[r]:cur], T - starts[r], out=log_probs[r])
        if return_scores:
            out.scores.append(log_probs.copy())
        dead = ~np.isfinite(log_probs.max(axis=1)).reshape(P, K).any(axis=1)       # (P,)
        if dead.any():
            raise ValueError(f"beam search: every token of every beam of prompt {int(np.argmax(dead))} scores "
                             "-inf (or NaN): nothing to choose (the options, e.g. logit_bias, ban the whole "
                             "vocabulary)")
        acc = (log_probs.reshape(P, K, V) + running_scores[:, :, None]).reshape(P, K * V)
        chosen = _sample(acc, W, rng) if rng is not None else _top(acc, W)          # (P, W)
        values = np.take_along_axis(acc, chosen, axis=1)                            # (P, W) float32
        beam, token = chosen // V, chosen % V
        cand = _take(running, beam)                                                 # (P, W, L)
        cand[:, :, cur] = token
        cand_bi = _take(running_bi, beam)
        cand_bi[:, :, cur - T] = beam + np.arange(P)[:, None] * K
        hits = np.isin(token, eos) | (cur + 1 >= L)                                 # (P, W)

        # the best num_beams continuations that did not end go on
        masked = values + hits.astype(np.float32) * _NEG
        keep = _top(masked, K)
        running, running_scores, running_bi = _take(cand, keep), _take(masked, keep), _take(cand_bi, keep)

        # the ones that ended, if among the first num_beams, compete with the finished ones
        just = hits & top_mask
        final = values / ((cur + 1 - T) ** length_penalty)
        final += (is_finished.all(axis=-1, keepdims=True) & (early_stopping is True)).astype(np.float32) * _NEG
        final += (~improvable).astype(np.float32) * _NEG
        final += (~just).astype(np.float32) * _NEG
        best = _top(np.concatenate([beam_scores, final], axis=1), K)
        finished = _take(np.concatenate([finished, cand], axis=1), best)
        beam_scores = _take(np.concatenate([beam_scores, final], axis=1), best)
        finished_bi = _take(np.concatenate([finished_bi, cand_bi], axis=1), best)
        is_finished = _take(np.concatenate([is_finished, just], axis=1), best)

        cache.reorder(running_bi[:, :, cur - T].reshape(P * K))  # each row takes its beam's prefix
        cur += 1
        improvable = _still_improvable(improvable, running_scores, beam_scores, is_finished, cur - T,
                                       max_new_tokens, early_stopping, length_penalty)
        done_early = is_finished.all() and early_stopping is True
        if not improvable.any() or done_early or hits.all():
            break
        logits = model.forward(running[:, :, cur - 1].reshape(P * K, 1), cache=cache, last_only=True)

    for p in range(P):
        hyps = []
        for k in range(num_return_sequences):
            n = int((finished_bi[p, k] != -1).sum())
            hyps.append(BeamHypothesis(finished[p, k, T:T + n].tolist(), float(beam_scores[p, k]),
                                       finished_bi[p, k, :n].tolist()))
        out.hypotheses.append(hyps)
    return out


def _prefill(model: Model, cache, prompts: np.ndarray, K: int) -> np.ndarray:
    """Every row's logits after its prompt. prompts (P, T) run once each, in rows p*K; their
    keys and values are then copied to the prompt's other K - 1 beam rows."""
    P = prompts.shape[0]
    first = np.arange(P) * K
    logits = model.forward(prompts, cache=cache, last_only=True, rows=first)      # (P, V)
    cache.reorder(np.repeat(first, K))
    return np.repeat(logits, K, axis=0)                                           # (P*K, V)


def _sample(acc: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices per row drawn without replacement from softmax(acc), by decreasing value."""
    P = acc.shape[0]
    chosen = np.empty((P, n), np.int64)
    for p in range(P):
        x = acc[p].astype(np.float64)
        w = np.exp(x - x.max())
        # top-k / top-p may leave fewer than n tokens: draw those, then take banned ones (score
        # -inf, never kept as beams) in index order, as torch's multinomial fills with zeros.
        live = min(n, int(np.count_nonzero(w)))
        picked = rng.choice(x.size, size=live, replace=False, p=w / w.sum())
        if live < n:
            picked = np.concatenate([picked, np.flatnonzero(w == 0)[: n - live]])
        chosen[p] = picked[np.argsort(-acc[p, picked], kind="stable")]
    return chosen


def _still_improvable(improvable, running_scores, beam_scores, is_finished, new_tokens, max_new_tokens,
                      early_stopping, length_penalty) -> np.ndarray:
    """transformers' early-stop heuristic: can a running beam still beat the worst finished one?"""
    if early_stopping == "never" and length_penalty > 0.0:
        best_length = max_new_tokens
    else:
        best_length = new_tokens
    best_running = running_scores[:, :1] / (best_length ** length_penalty)
    worst_finished = np.where(is_finished, beam_scores.min(axis=1, keepdims=True), _NEG)
    return improvable & (best_running > worst_finished).any(axis=-1, keepdims=True)


def _processors_are_neutral(params: SamplingParams, eos: np.ndarray) -> bool:
    p = params
    return (not p.do_sample and p.repetition_penalty == 1.0 and p.presence_penalty == 0.0
            and p.frequency_penalty == 0.0 and p.no_repeat_ngram_size == 0 and not p.logit_bias
            and (p.min_new_tokens == 0 or eos.size == 0))
