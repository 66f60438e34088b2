"""One generated sequence and how it picks its next token, shared by every decode loop.

Purpose: the per-row rules of generation in one place. ``Generator`` (generate.py) drives a
batch of sequences through one cache; the serving engine (serving/engine.py) drives each
request's sequences through rows of a cache it shares with other requests. Both hand a
sequence the raw logits of its step and feed back the token it returns, so the two give the
same tokens for the same logits and random state.

A :class:`Sequence` owns its context ids, its random generator, its decoded text and its
finish reason; :meth:`Sequence.advance` runs the :class:`TokenChooser` (processor chain, then
argmax or one draw, then log-probabilities) and :meth:`Sequence.push` applies the ending rules
(EOS, stop strings on the decoded text, length). :meth:`Sequence.release` hands out text
that is final (whole characters, nothing that may still become a stop string).

Non-goals: the model, the cache, batching, seeding and option checks (the callers' jobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .sampling import SamplingParams, greedy_token, log_softmax, process_logits, sample_token

if TYPE_CHECKING:
    from .tokenizer import IncrementalDecoder

__all__ = ["GenerationResult", "Sequence", "TokenChooser", "top_logprobs"]


@dataclass
class GenerationResult:
    """One generated sequence.

    ``text``: the completion (no prompt, no EOS token, cut right before a stop string);
    None when the Generator has no tokenizer. ``token_ids``: the new ids, including the
    token that ended the row (EOS, or the one completing a stop string), as transformers
    returns them. ``logprobs``: one float per entry of ``token_ids``, the log-probability of
    that token under the model's raw distribution at that step (None unless requested).
    ``top_logprobs``: per step, a dict ``{token_id: logprob}`` of the ``top_logprobs`` most
    likely tokens under the same distribution, in decreasing order (ties: lower id first);
    None unless requested. ``finish_reason``: "length", "stop" or "eos".
    ``prompt_tokens_dropped``: tokens cut from the prompt's start by ``truncate="left"``.
    ``score``: with beam search, the hypothesis' score (see ``length_penalty``).
    """

    text: str | None
    token_ids: list[int]
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    finish_reason: str = "length"
    prompt_tokens_dropped: int = 0
    score: float | None = None


# --------------------------------------------------------------------------------------
# Stop strings and streaming hold-back, on plain str.
# --------------------------------------------------------------------------------------


def find_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Index of the earliest stop string occurring in ``text[start:]`` (as a whole), or -1."""
    best = -1
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def partial_stop_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string.

    That tail may still become a stop string, so a stream must hold it back.
    """
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def top_logprobs(lp: np.ndarray, n: int) -> dict[int, float]:
    """The ``n`` (>= 1) most likely ids of one step's log-probabilities lp (V,), as
    ``{id: logprob}`` in decreasing order (ties: lower id first)."""
    top = np.argpartition(-lp, n - 1)[:n]                          # (n,) unordered
    top = top[np.lexsort((top, -lp[top]))]                         # by logprob desc, id asc
    return {int(t): float(lp[t]) for t in top}


class TokenChooser:
    """How one call picks tokens: the processor chain, then argmax or one draw, and which
    log-probabilities it records. Shared by the sequences of a call; holds no per-row state.

    ``params`` are validated against the vocabulary by the caller; ``top_logprobs`` (>= 0)
    asks for that many most likely tokens per step and implies ``want_logprobs``.
    """

    __slots__ = ("params", "want_logprobs", "top_n", "plain_greedy")

    def __init__(self, params: SamplingParams, want_logprobs: bool = False, top_logprobs: int = 0):
        self.params = params
        self.top_n = int(top_logprobs)
        self.want_logprobs = bool(want_logprobs) or self.top_n > 0
        p = params
        # Greedy with every processor at its neutral value is argmax of the raw logits.
        self.plain_greedy = not p.do_sample and (
            p.repetition_penalty == 1.0 and p.presence_penalty == 0.0
            and p.frequency_penalty == 0.0 and p.no_repeat_ngram_size == 0
            and not p.logit_bias and (p.min_new_tokens == 0 or not p.eos_token_id)
        )

    def choose(self, logits: np.ndarray, seq: "Sequence", scratch: np.ndarray | None) -> int:
        """The next token of ``seq`` from this step's raw logits (V,); ``scratch`` (V,) float32
        receives the processed scores (unused, may be None, when ``plain_greedy``)."""
        if self.plain_greedy:
            return greedy_token(logits)
        p = self.params
        scores = process_logits(logits, p, seq.context, seq.n_prompt, out=scratch)
        return sample_token(scores, seq.rng) if p.do_sample else greedy_token(scores)

    def score(self, logits: np.ndarray, token: int, seq: "Sequence") -> None:
        """Record the raw log-probability of ``token`` (and the top ones) in ``seq``."""
        lp = log_softmax(logits)                                   # (V,) float64
        seq.logprobs.append(float(lp[token]))
        if self.top_n:
            seq.top_logprobs.append(top_logprobs(lp, self.top_n))


class Sequence:
    """The state of one sequence: its ids, decoded text, scores, random state and finish reason.

    ``rng`` is the sequence's own ``np.random.Generator`` (None when greedy), so its draws do
    not depend on which other sequences run beside it or when they finish.
    """

    __slots__ = ("ctx", "length", "n_prompt", "dropped", "max_new", "eos", "stops",
                 "max_stop", "stop_context", "decoder", "ids", "text", "released", "finish_reason",
                 "logprobs", "top_logprobs", "rng", "chooser")

    def __init__(self, prompt: list[int], dropped: int, max_new: int, eos: frozenset[int],
                 stops: tuple[str, ...], decoder: IncrementalDecoder | None,
                 chooser: TokenChooser, rng: np.random.Generator | None = None, stop_context: str = ""):
        self.n_prompt = len(prompt)
        self.ctx = np.empty(self.n_prompt + max_new, np.int64)   # (L_max,) prompt + new
        self.ctx[: self.n_prompt] = prompt
        self.length = self.n_prompt
        self.dropped = dropped
        self.max_new = max_new
        self.eos = eos
        self.stops = stops
        self.max_stop = max((len(s) for s in stops), default=0)
        # The prompt's last characters, when a stop string may begin in the prompt (transformers'
        # stop_strings); matches must still reach into the generated text.
        self.stop_context = stop_context[len(stop_context) - self.max_stop + 1:] if self.max_stop > 1 else ""
        self.decoder = decoder
        self.ids: list[int] = []
        self.text = ""
        self.released = 0                      # characters of text handed to a stream
        self.finish_reason: str | None = None
        self.logprobs: list[float] | None = [] if chooser.want_logprobs else None
        self.top_logprobs: list[dict[int, float]] | None = [] if chooser.top_n else None
        self.rng = rng
        self.chooser = chooser

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def context(self) -> np.ndarray:
        return self.ctx[: self.length]                      # (L,) view, no copy

    @property
    def prompt(self) -> np.ndarray:
        return self.ctx[: self.n_prompt]                    # (P,) view, no copy

    def advance(self, logits: np.ndarray, scratch: np.ndarray | None = None) -> int:
        """Pick this step's token from its raw logits (V,), record its scores, push it.

        Returns the token, which is the next input of this sequence unless it finished.
        """
        chooser = self.chooser
        token = chooser.choose(logits, self, scratch)
        if chooser.want_logprobs:
            chooser.score(logits, token, self)
        self.push(token)
        return token

    def push(self, token: int) -> None:
        """Append one generated token and decide whether the row is done."""
        self.ctx[self.length] = token
        self.length += 1
        self.ids.append(token)
        if token in self.eos:
            self._finish("eos")
            return
        if self.decoder is not None:
            piece = self.decoder.push(token)
            if piece and self._add_text(piece):
                self.finish_reason = "stop"
                return
        if len(self.ids) >= self.max_new:
            self._finish("length")

    def finish_empty(self) -> None:
        self.finish_reason = "length"

    def _add_text(self, piece: str) -> bool:
        """Append decoded text; on a stop string cut the text before it and return True."""
        # A new match must end inside `piece`, so it starts at most max_stop - 1 before it.
        ctx = self.stop_context
        start = max(0, len(ctx) + len(self.text) - self.max_stop + 1)
        self.text += piece
        if not self.stops:
            return False
        cut = find_stop(ctx + self.text if ctx else self.text, self.stops, start)
        if cut < 0:
            return False
        self.text = self.text[:max(0, cut - len(ctx))]
        return True

    def _finish(self, reason: str) -> None:
        if self.decoder is not None:
            # Bytes of an unfinished character become U+FFFD, as Tokenizer.decode does.
            tail = self.decoder.flush()
            if tail and self._add_text(tail):
                reason = "stop"
        self.finish_reason = reason

    def release(self) -> str:
        """Text that is final: not an unfinished character, not a possible stop prefix."""
        end = len(self.text)
        if not self.finished and self.stops:
            end -= min(end, partial_stop_len(self.stop_context + self.text, self.stops))
        if end <= self.released:
            return ""
        piece = self.text[self.released:end]
        self.released = end
        return piece

    def result(self) -> GenerationResult:
        return GenerationResult(
            text=self.text if self.decoder is not None else None,
            token_ids=list(self.ids),
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            finish_reason=self.finish_reason or "length",
            prompt_tokens_dropped=self.dropped,
        )


