"""The serving engine: many requests share one model, one cache and one thread, step by step.

Purpose: continuous batching for ``fastgpt serve``. One thread owns the model and a KV cache
of ``max_batch`` rows (slots) and runs the step loop; callers on other threads submit
requests and receive each one's tokens as events. Nothing here knows of HTTP.

Each step (the shape of llama.cpp's ``update_slots`` and vLLM's scheduler):

1. retire cancelled requests: their rows are free for this very step;
2. admit waiting requests into free rows, oldest first: a request of ``P`` prompts with
   ``n`` choices each enters prompt by prompt, each prompt's ``n`` sequences together (one
   row each), so a request larger than the free rows enters over several steps;
3. decode: one batched ``model.forward`` of one token for every sequence that has one,
   each on its own row and at its own length, then each sequence picks its next token. Short
   prompts (``n`` x tokens within one fused call of the backend: ``Model.max_fused_tokens``)
   go in in the same call (``Model.forward_rows``), in pieces that fill the step to
   ``STEP_TOKENS``, as vLLM's chunked prefill mixes prompt and decode tokens in a step;
4. prefill, oldest first, up to ``PREFILL_CHUNKS_PER_STEP`` chunks' worth of rows x tokens in
   a step (the decode call's prompt pieces included; past the budget, one chunk of the oldest
   short prompt when the decode call had none, and one of the oldest long one), as llama.cpp's server
   fills a step up to ``n_batch`` tokens: the short prompts that the decode call had no room
   for packed together into fused calls of their own, so that a burst of chat-sized prompts
   goes in at the width the kernels run best at and its streams start decoding together (not
   one piece per step, each step's pause felt by the streams admitted before); the other
   prompts one per call (its ``n`` rows together, as ``Generator`` runs
   ``num_return_sequences=n``), in chunks of exactly ``model.prefill_chunk`` tokens (the last
   one shorter), one chunk per prompt per step, so that a long prompt delays the running
   streams by one chunk per step, not by its whole prefill; when a prompt is in, each of its
   sequences picks its first token;
5. a sequence that finished (EOS, stop string, length) frees its row at once.

Exactness: a sequence's tokens are those of the same request alone through ``Generator``,
whoever else runs. The kernels give each row of a decode step bitwise what it gives alone
(every product of up to ``SKINNY_MAX_ROWS`` = 64 rows sums a row in an order that does not
depend on the other rows; a ``max_batch`` above that loses this for full steps); prefill runs
the same shapes as ``Generator`` does for the prompt (``Model.forward`` chunks it), or, for a
short prompt in a decode step or packed with others into a prompt-only call, the same fused
kernels, which give its rows the same bits; and
the per-row rules (processor chain, draw, EOS, stop strings, text release, log-probabilities)
are ``fastgpt.sequence``'s, built and seeded by ``Generator.new_sequences`` (prompt ``i``'s
choice ``j`` of ``n`` draws from ``SeedSequence(seed).spawn(n)[j]``, as that prompt alone
with ``num_return_sequences=n``). This holds for the compiled backend. On the NumPy reference
(no fused step) a row decoded beside others may differ from the row alone in the last bits of
its logits (batched products sum in another order): in its log-probabilities by ~1e-6, and in
a token at a near-tie.

Bounds: ``max_batch`` rows (and ``n <= max_batch``), ``max_queue`` waiting requests (past
it :meth:`Engine.submit` raises :class:`QueueFull` at once), ``max_tokens`` new tokens per
sequence.

Events, delivered on the engine thread to the request's ``sink`` (keep it cheap and
non-blocking; without a sink they queue for :meth:`Request.events`): :class:`PromptLogprobs`
(echo with log-probabilities), then one :class:`Delta` per generated token and choice, then
:class:`Done`, or :class:`Failed` (cancelled, shutting down, or an internal error).

Non-goals: prefix sharing between requests, preemption, speculative decoding.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .. import memory
from ..generate import GenerationConfig, Generator
from ..kv_cache import KVCache, Workspace
from ..sampling import log_softmax
from ..sequence import Sequence, top_logprobs

__all__ = ["Delta", "Done", "Engine", "EngineObserver", "EngineStats", "EngineStopped", "Failed",
           "PromptLogprobs", "QueueFull", "Request"]

log = logging.getLogger("fastgpt.serving")

#: Prompt tokens (rows x tokens) a step may prefill, in chunks: llama.cpp's server defaults to
#: 4 (n_batch 2048 over n_ubatch 512). With one chunk per step a burst of 16 64-token prompts
#: entered over two steps and the streams admitted first waited for the second: fastgpt
#: bench-serve at 16 clients (GPT-2 124M shapes, int8, interleaved, median of 2 rounds) gave
#: ITL p99 134 ms with 1 chunk, 80 ms with 4 (p50 54 and 48 ms). Short prompts share the budget:
#: those that the decode call has no room for go in packed into fused calls of their own. Against
#: feeding them only as pieces of the decode calls (bench-serve, 16 clients, 64-token prompts,
#: --max-batch 16, int8, 4 interleaved rounds, medians): 1044 -> 1129 tokens/s, ITL p99 24.2 ->
#: 21.9 ms, TTFT p50 221 -> 178 ms and p99 448 -> 294 ms (a burst enters in one or a few steps).
PREFILL_CHUNKS_PER_STEP = 4

#: Tokens a decode step may carry in all, its decoding rows and the prompt pieces beside them:
#: more feeds prompts faster, fewer keeps the running streams' steps short. 16 streams of 64-token
#: prompts and 128 new tokens (GPT-2 124M shapes, int8, 2 threads, engine alone, 2 rounds): 64 gave
#: 942 / 853 tokens/s with ITL p99 24.9 / 34.5 ms, 48 gave 922 / 858 with 22.8 / 21.7 ms, 32 gave
#: 814 / 813 with 20.2 / 22.4 ms.
STEP_TOKENS = 48

class QueueFull(RuntimeError):
    """The waiting queue is at ``max_queue``: try again later (HTTP 503 + Retry-After)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class EngineStopped(RuntimeError):
    """The engine is shutting down (or was never started) and takes no requests."""


# -- events ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptLogprobs:
    """Log-probabilities of prompt ``prompt``'s tokens (the first has none), for echo."""
    prompt: int
    logprobs: list                  # [None, float, ...], one per prompt token
    top_logprobs: list              # [None, {id: logprob}, ...] or None when not asked


@dataclass(frozen=True)
class Delta:
    """One step of choice ``index``: its new token and the text that became final.

    ``token_id`` is None only for a choice that generates nothing (``max_tokens=0``).
    ``text_offset`` is where this token's text starts in the choice's completion.
    ``finish_reason`` ("eos", "stop", "length") is set on the choice's last delta.
    """
    index: int
    token_id: int | None
    text: str
    logprob: float | None = None
    top_logprobs: dict | None = None
    text_offset: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class Done:
    """Every choice finished. Usage counts the ending token (EOS or stop) as generated."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The request ended early. ``reason``: "cancelled", "shutdown", "invalid" (its own options
    failed on finite logits: the client's mistake) or "error"."""
    reason: str
    message: str


Event = PromptLogprobs | Delta | Done | Failed


@dataclass(frozen=True)
class EngineStats:
    running: int          # requests with at least one sequence in a row
    waiting: int          # requests in the queue, none of their sequences admitted yet
    rows_busy: int        # rows (slots) holding a sequence
    max_batch: int
    max_queue: int
    steps: int            # engine steps run so far


class EngineObserver:
    """Hooks the engine calls on its thread (for metrics); every method is a no-op here."""

    def request_admitted(self, queue_seconds: float, prompt_tokens: int) -> None: ...
    def token(self, seconds: float, first: bool) -> None:
        """A token of a sequence: ``first``: seconds since arrival (TTFT), else since the previous."""
    def request_finished(self, reason: str, seconds: float) -> None:
        """``reason``: a finish reason of the last choice, or "cancelled" / "shutdown" / "invalid" /
        "error"."""


# -- requests --------------------------------------------------------------------------------
class Request:
    """One submitted request: its prompts' sequences and where its events go.

    Made by :meth:`Engine.submit`. Without a ``sink``, iterate :meth:`events` (blocking).
    """

    _ids = itertools.count()

    def __init__(self, sequences: list[Sequence], n: int, prompt_tokens: int,
                 want_prompt_logprobs: bool, sink: Callable[[Event], None] | None):
        self.id = next(Request._ids)
        self.sequences = sequences
        self.n = n                                   # choices per prompt
        self.prompt_tokens = prompt_tokens
        self.want_prompt_logprobs = want_prompt_logprobs
        self._queue: queue.SimpleQueue | None = None
        if sink is None:
            self._queue = queue.SimpleQueue()
            sink = self._queue.put
        self.sink = sink
        self.cancelled = False                       # asked to end (engine.cancel)
        self.ended = False                           # Done or Failed was sent
        self.arrival = time.perf_counter()
        self.first_token_seen = False
        self.pending = deque(range(0, len(sequences), n))  # first choice of each prompt waiting
        self.unfinished = len(sequences)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """The request's events until Done or Failed; ``timeout`` bounds each wait (queue.Empty)."""
        if self._queue is None:
            raise RuntimeError("this request's events go to its sink")
        while True:
            event = self._queue.get(timeout=timeout)
            yield event
            if isinstance(event, (Done, Failed)):
                return


class _Slot:
    """A sequence in a row, and what it feeds next (None while its prompt goes in)."""

    __slots__ = ("request", "index", "seq", "row", "next_token", "last_time")

    def __init__(self, request: Request, index: int, row: int):
        self.request = request
        self.index = index
        self.seq = request.sequences[index]
        self.row = row
        self.next_token: int | None = None
        self.last_time = 0.0


class _Prefill:
    """One prompt going into the rows of its ``n`` sequences, chunk by chunk."""

    __slots__ = ("request", "slots", "rows", "prompt", "fed")

    def __init__(self, request: Request, slots: list[_Slot]):
        self.request = request
        self.slots = slots
        self.rows = np.array([slot.row for slot in slots], np.int64)          # (n,)
        self.prompt = slots[0].seq.prompt                                     # (P,)
        self.fed = 0


# -- the engine ------------------------------------------------------------------------------
class Engine:
    """Continuous batching over one model. ``start()`` it, ``submit`` requests, ``stop()`` it.

    ``model``/``tokenizer``: a loaded :class:`~fastgpt.Model` and its tokenizer.
    ``max_batch``: rows of the shared cache (sequences decoded per step). ``max_queue``:
    waiting requests before :class:`QueueFull`. ``max_tokens``: the largest number of new
    tokens a sequence may ask for (None: the context). ``observer``: metrics hooks.
    ``step_tokens`` (attribute, default STEP_TOKENS): the most tokens a step's decode call carries
    (its decoding rows and the prompt pieces beside them; the step's prefill calls come on top).
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_queue: int = 64,
                 max_tokens: int | None = None, observer: EngineObserver | None = None):
        for name, value, lo in (("max_batch", max_batch, 1), ("max_queue", max_queue, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"`{name}` must be an integer >= {lo}, got {value!r}")
        n_ctx = model.config.n_positions
        if max_tokens is None:
            max_tokens = n_ctx - 1
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens < n_ctx:
            raise ValueError(f"`max_tokens` must be an integer in [1, {n_ctx - 1}] (the context "
                             f"less one prompt token), got {max_tokens!r}")
        # All of an engine's memory is taken up front: refuse a max_batch the machine cannot hold
        # before allocating any of it (the cache, each row's scores, the widest step's buffers).
        config = model.config
        memory.require(KVCache.nbytes_for(config, max_batch, n_ctx, model.kv_dtype)
                       + 4 * max_batch * config.vocab_size
                       + Workspace.nbytes_for(config, max(max_batch, model.max_fused_tokens), max_batch),
                       f"an engine of max_batch={max_batch} (its KV cache of {n_ctx} positions per row)")
        self.model = model
        self.tokenizer = tokenizer
        self.generator = Generator(model, tokenizer)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_tokens = max_tokens
        self.prefill_chunk = model.prefill_chunk
        self.step_tokens = STEP_TOKENS
        self.observer = observer or EngineObserver()

        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()      # guarded by _cond
        self._to_cancel: list[Request] = []          # guarded by _cond
        self._stopping: str | None = None            # guarded by _cond: the reason once stopping
        self._thread: threading.Thread | None = None
        self._running_requests = 0                   # written by the engine thread only
        self._steps = 0                              # written by the engine thread only
        # The engine thread's own state.
        self._active: list[Request] = []             # admitted, unfinished, in arrival order
        self._slots: list[_Slot | None] = [None] * max_batch
        self._prefills: list[_Prefill] = []          # prompts going in, in admission order
        self._free_rows = list(range(max_batch - 1, -1, -1))
        self._step_ids = np.zeros((max_batch, 1), np.int64)   # (B, 1) a decode step's inputs
        self._step_rows = np.zeros(max_batch, np.int64)       # (B,) their cache rows
        V = model.config.vocab_size
        self._scratch = np.empty((max_batch, V), np.float32)  # (B, V) processed scores
        self._cache = model.new_cache(batch_size=max_batch)
        # Its pages now, as llama.cpp clears its KV buffer at start: left to first use, a row's
        # first prompt also paid for mapping and zeroing the row's whole span (1.5 MB per layer
        # for GPT-2 124M in 16 bits, huge pages), e.g. a 64-token prompt beside 16 decoding rows
        # took 48 ms instead of ~20 the first time a row served.
        self._cache.k.fill(0)
        self._cache.v.fill(0)
        # Buffers for the widest step up front (a fused step of decoding rows and prompt pieces):
        # a workspace that grows later is a new one, and the fused step is rebuilt for it.
        self._cache.workspace(max(max_batch, model.max_fused_tokens))

    # -- the callers' side ----------------------------------------------------------------------
    def start(self) -> "Engine":
        if self._thread is not None:
            raise RuntimeError("the engine is already started")
        self._thread = threading.Thread(target=self._loop, name="fastgpt-engine", daemon=True)
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._stopping is None

    def submit(self, prompts: list[list[int]], config: GenerationConfig, *,
               top_logprobs: int | None = None, prompt_logprobs: bool = False,
               sink: Callable[[Event], None] | None = None) -> Request:
        """Queue one request: ``prompts`` (lists of token ids), each completed
        ``config.num_return_sequences`` times with ``config``'s options.

        ``top_logprobs``: None for no log-probabilities, else how many most likely tokens to
        report per step (0: only the chosen token's). ``prompt_logprobs``: also score the
        prompts' tokens (echo). Raises ValueError naming the bad option or prompt,
        :class:`QueueFull`, or :class:`EngineStopped`.
        """
        if not prompts:
            raise ValueError("`prompt` is empty: give at least one prompt")
        if config.max_new_tokens > self.max_tokens:
            raise ValueError(f"`max_tokens` must be at most {self.max_tokens} on this server, "
                             f"got {config.max_new_tokens}")
        if config.num_return_sequences > self.max_batch:
            raise ValueError(f"`n` ({config.num_return_sequences}) must be at most this server's "
                             f"{self.max_batch} slots: a prompt's choices run side by side")
        want = top_logprobs is not None
        sequences: list[Sequence] = []
        for i, ids in enumerate(prompts):
            try:
                sequences += self.generator.new_sequences(
                    [ids], config, need_text=True, return_logprobs=want,
                    top_logprobs=top_logprobs or 0, check_memory=False)     # rows of the engine's cache
            except ValueError as exc:
                if len(prompts) == 1:
                    raise
                raise type(exc)(f"prompt[{i}]: {exc}") from None
        request = Request(sequences, config.num_return_sequences, sum(map(len, prompts)),
                          prompt_logprobs, sink)
        with self._cond:
            if self._stopping is not None or self._thread is None:
                raise EngineStopped(self._stopping or "the engine is not started")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting); retry "
                                "later", retry_after=1.0)
            self._waiting.append(request)
            self._cond.notify()
        return request

    def cancel(self, request: Request) -> None:
        """End ``request`` (its events end with Failed("cancelled")); its rows are free from
        the next step on. Harmless on a request that already ended."""
        with self._cond:
            if not request.cancelled:
                request.cancelled = True
                self._to_cancel.append(request)
                self._cond.notify()

    def stop(self, message: str = "the server is shutting down", timeout: float | None = 30.0) -> None:
        """Refuse new requests, end every running and waiting one with Failed("shutdown"),
        and join the engine thread (a step in progress finishes first)."""
        with self._cond:
            if self._stopping is None:
                self._stopping = message
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def stats(self) -> EngineStats:
        with self._cond:
            waiting = len(self._waiting)
        return EngineStats(running=self._running_requests, waiting=waiting,
                           rows_busy=self.max_batch - len(self._free_rows),
                           max_batch=self.max_batch, max_queue=self.max_queue, steps=self._steps)

    # -- the engine thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while (self._stopping is None and not self._waiting and not self._to_cancel
                           and not self._active):
                        self._cond.wait()
                    if self._stopping is not None:
                        break
                    cancelled, self._to_cancel = self._to_cancel, []
                self._step(cancelled)
        except BaseException:                         # a bug: fail everyone rather than hang them
            log.exception("the engine loop died")
            with self._cond:
                self._stopping = self._stopping or "the engine failed; see the server log"
            self._end_all("error", self._stopping)
            raise
        self._end_all("shutdown", self._stopping)

    def _step(self, cancelled: list[Request]) -> None:
        self._steps += 1
        for request in cancelled:
            self._end(request, "cancelled", "the request was cancelled")
        self._admit()
        carried = self._decode()
        self._prefill(PREFILL_CHUNKS_PER_STEP * self.prefill_chunk - carried, forced=carried == 0)

    def _admit(self) -> None:
        """Give free rows to waiting prompts: partly admitted requests first, then the queue,
        in arrival order (a request that does not fit yet holds back the ones behind it)."""
        for request in list(self._active):
            self._admit_from(request)
            if request.pending:
                return
        while True:
            with self._cond:
                if not self._waiting or len(self._free_rows) < self._waiting[0].n:
                    return
                request = self._waiting.popleft()
            self._start_request(request)
            self._admit_from(request)
            if request.pending:
                return

    def _start_request(self, request: Request) -> None:
        self._active.append(request)
        self._running_requests = len(self._active)
        self.observer.request_admitted(time.perf_counter() - request.arrival, request.prompt_tokens)
        if request.want_prompt_logprobs:
            try:
                self._score_prompts(request)
            except Exception as exc:
                self._fail(request, exc)

    def _admit_from(self, request: Request) -> None:
        """Admit the request's waiting prompts, each with its n rows at once, while rows last."""
        n = request.n
        while request.pending and len(self._free_rows) >= n:
            first = request.pending.popleft()
            if request.sequences[first].max_new == 0:  # nothing to generate: no row needed
                for index in range(first, first + n):
                    seq = request.sequences[index]
                    seq.finish_empty()
                    self._send(request, Delta(index, None, "", finish_reason=seq.finish_reason))
                    self._sequence_done(request, seq.finish_reason)
                continue
            slots = []
            for index in range(first, first + n):
                row = self._free_rows.pop()
                slots.append(_Slot(request, index, row))
                self._slots[row] = slots[-1]
            prefill = _Prefill(request, slots)
            self._cache.reset(prefill.rows)
            self._prefills.append(prefill)

    def _decode(self) -> int:
        """The step's decode call; returns the prompt tokens (rows x tokens) it carried."""
        slots = [s for s in self._slots if s is not None and s.next_token is not None]
        pieces = self._prompt_pieces(self._step_limit() - len(slots))
        if slots or pieces:
            self._run(slots, pieces)
        return _prompt_tokens(pieces)

    def _run(self, slots: list[_Slot], pieces: list[tuple[_Prefill, int]]) -> None:
        """One fused call: a token for each of ``slots``, and the prompt ``pieces`` beside them;
        the slots and the prompts that this call completes pick their next token."""
        B = len(slots)
        ids, rows = self._step_ids[:B], self._step_rows[:B]         # (B', 1), (B',)
        for i, slot in enumerate(slots):
            ids[i, 0] = slot.next_token
            rows[i] = slot.row
        finishing = [prefill for prefill, size in pieces if prefill.fed + size == prefill.prompt.shape[0]]
        try:
            if pieces:
                row_ids, all_rows, want = list(ids), [rows], list(range(B))   # logits: decoding rows,
                for prefill, size in pieces:                                    # and finished prompts'
                    n = prefill.rows.shape[0]
                    if prefill in finishing:
                        want.extend(range(len(row_ids), len(row_ids) + n))
                    row_ids += [prefill.prompt[prefill.fed: prefill.fed + size]] * n
                    all_rows.append(prefill.rows)
                logits = self.model.forward_rows(row_ids, self._cache, np.concatenate(all_rows),
                                                 logit_rows=np.array(want, np.int64))
            else:
                logits = self._forward(ids, rows)                   # (B', V)
        except Exception as exc:                      # the step's requests end; the engine goes on
            for slot in slots + [s for p, _ in pieces for s in p.slots]:
                self._fail(slot.request, exc)
            for prefill, _ in pieces:
                self._prefills.remove(prefill)
            return
        for prefill, size in pieces:
            prefill.fed += size
        for prefill in finishing:
            self._prefills.remove(prefill)
        for i, slot in enumerate(slots + [s for p in finishing for s in p.slots]):
            if not slot.request.ended:
                self._advance(slot, logits[i], self._scratch[i])

    def _mixes(self, prefill: _Prefill) -> bool:
        """Whether the prompt goes in in pieces of fused calls (beside the decoding rows, or
        packed with other prompts): when alone it runs as fused calls too (its n rows x each
        prefill chunk within one), any split of it gives its rows the same bits."""
        fused = self.model.max_fused_tokens
        return prefill.rows.shape[0] * min(prefill.prompt.shape[0], self.prefill_chunk) <= fused

    def _step_limit(self) -> int:
        """The most tokens of a step's decode call: one fused call's, and at most step_tokens."""
        return min(self.step_tokens, self.model.max_fused_tokens)

    def _prompt_pieces(self, room: int) -> list[tuple[_Prefill, int]]:
        """(prompt, tokens) of the short prompts going in that fit in ``room`` tokens, oldest
        first: as many tokens of each as its n rows leave room for."""
        pieces = []
        for prefill in self._prefills:
            if not self._mixes(prefill) or prefill.request.ended:
                continue
            n = prefill.rows.shape[0]
            if room < n:
                break
            size = min(prefill.prompt.shape[0] - prefill.fed, room // n)
            pieces.append((prefill, size))
            room -= n * size
        return pieces

    def _prefill(self, budget: int, forced: bool) -> None:
        """Prompts going in after the decode call, within ``budget`` rows x tokens: the short
        ones packed into fused calls, then one chunk of each long one. The first long prompt's
        chunk goes in whatever the budget, and when ``forced`` (the decode call carried no
        prompt) so does a packed call with room for one chunk of the oldest short prompt: the
        oldest prompts move on every step."""
        self._prefills = [prefill for prefill in self._prefills if not prefill.request.ended]
        fused = self.model.max_fused_tokens
        while budget > 0 or forced:
            room = min(fused, budget)
            if forced:          # one chunk of the oldest short prompt at least, whatever the budget
                oldest = next((p for p in self._prefills if self._mixes(p)), None)
                if oldest is not None:
                    room = min(fused, max(room, oldest.rows.shape[0] * self.prefill_chunk))
            pieces = self._prompt_pieces(room)
            if not pieces:
                break
            self._run([], pieces)
            budget -= _prompt_tokens(pieces)
            forced = False
        calls = 0
        for prefill in [p for p in self._prefills if not self._mixes(p)]:
            if budget <= 0 and calls:
                return
            if prefill.request.ended:
                continue
            n = prefill.rows.shape[0]
            chunk = prefill.prompt[prefill.fed: prefill.fed + self.prefill_chunk]   # (T,) view
            ids = np.broadcast_to(chunk, (n, chunk.shape[0]))                        # (n, T)
            calls += 1
            try:
                logits = self._forward(ids, prefill.rows)                            # (n, V)
            except Exception as exc:
                self._fail(prefill.request, exc)
                self._prefills.remove(prefill)
                continue
            prefill.fed += chunk.shape[0]
            budget -= n * chunk.shape[0]
            if prefill.fed == prefill.prompt.shape[0]:
                self._prefills.remove(prefill)
                for i, slot in enumerate(prefill.slots):
                    if not slot.request.ended:
                        self._advance(slot, logits[i], self._scratch[i])

    def _forward(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """ids (B', T) extend cache rows ``rows``; the last positions' logits (B', V), which
        live in the cache's workspace until the next forward."""
        return self.model.forward(ids, cache=self._cache, rows=rows, last_only=True)

    def _advance(self, slot: _Slot, logits: np.ndarray, scratch: np.ndarray) -> None:
        """The sequence picks its token from its logits (V,); the delta goes out."""
        seq, request = slot.seq, slot.request
        offset = len(seq.text)
        try:
            token = seq.advance(logits, scratch)
        except Exception as exc:                      # e.g. NaN logits: this request only
            if isinstance(exc, ValueError) and np.isfinite(logits).all():
                # The model's logits were fine: the request's own options (a repetition penalty so
                # small that the scaled logits overflow, a logit_bias banning every token) left
                # nothing to choose. The client's mistake, not the server's.
                log.info("request %d: its sampling options failed: %s", request.id, exc)
                self._end(request, "invalid", f"this request's options left no token to choose: {exc}")
            else:
                self._fail(request, exc)
            return
        now = time.perf_counter()
        first = not request.first_token_seen
        if first:
            request.first_token_seen = True
            self.observer.token(now - request.arrival, first=True)
        elif slot.last_time:
            self.observer.token(now - slot.last_time, first=False)
        slot.last_time = now
        slot.next_token = token
        self._send(request, Delta(
            slot.index, token, seq.release(),
            logprob=seq.logprobs[-1] if seq.logprobs is not None else None,
            top_logprobs=seq.top_logprobs[-1] if seq.top_logprobs is not None else None,
            text_offset=offset, finish_reason=seq.finish_reason))
        if seq.finished:
            self._free(slot)
            self._sequence_done(request, seq.finish_reason)

    def _sequence_done(self, request: Request, reason: str) -> None:
        """One choice finished; the request is done with its last choice (whose reason counts)."""
        request.unfinished -= 1
        if request.unfinished == 0:
            completion = sum(len(seq.ids) for seq in request.sequences)
            request.ended = True
            self._forget(request)
            self._send(request, Done(request.prompt_tokens, completion))
            self.observer.request_finished(reason, time.perf_counter() - request.arrival)

    def _score_prompts(self, request: Request) -> None:
        """Log-probabilities of every prompt token after the first (a cacheless forward)."""
        top_n = request.sequences[0].chooser.top_n
        for p in range(0, len(request.sequences), request.n):
            prompt = request.sequences[p].prompt
            logprobs: list = [None]
            tops: list | None = [None] if top_n else None
            if prompt.shape[0] > 1:
                lp = log_softmax(self.model.forward(prompt[:-1]))          # (P-1, V)
                targets = prompt[1:]
                logprobs += lp[np.arange(targets.shape[0]), targets].tolist()
                if tops is not None:
                    tops += [top_logprobs(row, top_n) for row in lp]
            self._send(request, PromptLogprobs(p // request.n, logprobs, tops))

    def _free(self, slot: _Slot) -> None:
        self._slots[slot.row] = None
        self._free_rows.append(slot.row)

    def _forget(self, request: Request) -> None:
        if request in self._active:
            self._active.remove(request)
            self._running_requests = len(self._active)

    def _end(self, request: Request, reason: str, message: str) -> None:
        """End a request early: free its rows, drop it from the queue, send Failed."""
        if request.ended:
            return
        request.ended = True
        for slot in self._slots:
            if slot is not None and slot.request is request:
                self._free(slot)
        with self._cond:
            if request in self._waiting:
                self._waiting.remove(request)
        request.pending.clear()
        self._forget(request)
        self._send(request, Failed(reason, message))
        self.observer.request_finished(reason, time.perf_counter() - request.arrival)

    def _fail(self, request: Request, exc: Exception) -> None:
        log.error("request %d failed", request.id, exc_info=exc)
        self._end(request, "error", f"internal error: {type(exc).__name__}: {exc}")

    def _end_all(self, reason: str, message: str) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for request in list(self._active) + waiting:
            self._end(request, reason, message)

    def _send(self, request: Request, event: Event) -> None:
        try:
            request.sink(event)
        except Exception:                              # a broken sink must not stop the others
            log.exception("request %d: its event sink failed; cancelling it", request.id)
            if not request.ended:
                self.cancel(request)


def _prompt_tokens(pieces: list[tuple[_Prefill, int]]) -> int:
    """Rows x tokens of prompt pieces: what they count against a step's budget."""
    return sum(prefill.rows.shape[0] * size for prefill, size in pieces)
