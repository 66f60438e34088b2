"""The HTTP face of the engine: OpenAI's completions API, the web page and /metrics (ASGI).

``create_app(engine, model_name=...)`` returns a Starlette app for an engine that is already
built, or for a function that builds one (run in a thread at startup; until it returns,
``/health`` and the API answer 503). The app holds no module-level state, so one process may
host several, and a Ray Serve deployment can wrap the same app (issue 18). It knows nothing
of kernels: it parses, tokenizes, hands requests to the engine and streams its events.

Routes: ``POST /v1/completions`` (JSON, or SSE with ``stream: true``), ``GET /v1/models``,
``POST /v1/chat/completions`` (a 400 saying why not), ``POST /tokenize``,
``POST /detokenize``, ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /`` (the page).

Errors take OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 naming
the field for an invalid value, an over-long prompt or malformed JSON; 404 for another
model's name or an unknown route; 503 with ``Retry-After`` when the queue is full or the
server is loading or stopping. A stream that the engine ends early (shutdown, error) sends
``data: {"error": ...}`` and then ``data: [DONE]``. A client that disconnects cancels its
request: the engine frees its rows at its next step.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import threading
import time
import uuid
from importlib.resources import files
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .engine import Delta, Done, Engine, EngineObserver, EngineStopped, Failed, PromptLogprobs, QueueFull
from .protocol import (CompletionRequest, DetokenizeRequest, RequestError, TokenizeRequest, error_body,
                       param_of, parse, token_text)

__all__ = ["create_app"]

log = logging.getLogger("fastgpt.serving")

STATIC_DIR = files("fastgpt.serving") / "static"
#: Seconds a client is told to wait (Retry-After) when the queue is full or the model loads.
RETRY_AFTER_SECONDS = 1
# Histogram buckets (seconds): token latencies of a CPU model span ~1 ms to seconds.
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5,
                  0.75, 1.0, 2.5, 5.0, 10.0)
_REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def create_app(engine: Engine | Callable[[], Engine], *, model_name: str) -> Starlette:
    """The ASGI app serving ``engine`` (started here if it is not) under ``model_name``.

    ``engine`` may be a function that builds one (e.g. loads the model): it runs in a
    thread when the app starts. ``app.state.fastgpt`` is the :class:`Server` behind the
    routes (its ``loaded`` event, ``load_error`` and ``stop()`` are for the host process).
    """
    server = Server(model_name)
    routes = [
        Route("/", server.page),
        Route("/health", server.health),
        Route("/metrics", server.metrics_page),
        Route("/v1/models", server.models),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
        Route("/detokenize", server.detokenize, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if isinstance(engine, Engine):
            server.attach(engine)
        else:
            threading.Thread(target=server.load, args=(engine,), name="fastgpt-load", daemon=True).start()
        yield
        await run_in_threadpool(server.stop)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    app.state.fastgpt = server
    return app


async def _http_error(request, exc: HTTPException):
    return JSONResponse(error_body(exc.detail, "invalid_request_error", None, exc.status_code),
                        status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request, exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None, 500),
                        status_code=500)


def _error(exc: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code or exc.status),
                        status_code=exc.status, headers=headers)


class Metrics(EngineObserver):
    """The engine's hooks as Prometheus series, in a registry of this app's own."""

    def __init__(self, server: "Server"):
        self.registry = r = CollectorRegistry()
        stat = server.engine_stat
        Gauge("fastgpt_requests_running", "Requests with a sequence in a slot", registry=r).set_function(
            lambda: stat("running"))
        Gauge("fastgpt_requests_waiting", "Requests in the queue", registry=r).set_function(
            lambda: stat("waiting"))
        Gauge("fastgpt_slots_busy", "Slots (cache rows) holding a sequence", registry=r).set_function(
            lambda: stat("rows_busy"))
        Gauge("fastgpt_slots_total", "Slots (--max-batch)", registry=r).set_function(lambda: stat("max_batch"))
        self.prompt_tokens = Counter("fastgpt_prompt_tokens", "Prompt tokens admitted", registry=r)
        self.generation_tokens = Counter("fastgpt_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("fastgpt_time_to_first_token_seconds", "Arrival to first token",
                              buckets=_TOKEN_BUCKETS, registry=r)
        self.itl = Histogram("fastgpt_inter_token_latency_seconds", "Between a sequence's tokens",
                             buckets=_TOKEN_BUCKETS, registry=r)
        self.queue_time = Histogram("fastgpt_request_queue_time_seconds", "Arrival to admission",
                                    buckets=_REQUEST_BUCKETS, registry=r)
        self.e2e = Histogram("fastgpt_e2e_request_latency_seconds", "Arrival to the end",
                             buckets=_REQUEST_BUCKETS, registry=r)
        self.finished = Counter("fastgpt_requests_finished", "Requests ended, by finish reason",
                                ["finished_reason"], registry=r)
        self.rejected = Counter("fastgpt_requests_rejected", "Requests refused, by reason",
                                ["reason"], registry=r)

    def request_admitted(self, queue_seconds: float, prompt_tokens: int) -> None:
        self.queue_time.observe(queue_seconds)
        self.prompt_tokens.inc(prompt_tokens)

    def token(self, seconds: float, first: bool) -> None:
        self.generation_tokens.inc()
        (self.ttft if first else self.itl).observe(seconds)

    def request_finished(self, reason: str, seconds: float) -> None:
        self.finished.labels(_FINISH_REASONS.get(reason, reason)).inc()
        self.e2e.observe(seconds)


class Server:
    """The routes' shared state: the engine (once loaded), the model's name, the metrics."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.engine: Engine | None = None
        self.loaded = threading.Event()       # set when the engine is attached or loading failed
        self.load_error: BaseException | None = None
        self.metrics = Metrics(self)
        self.created = int(time.time())

    # -- lifecycle --------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.observer = self.metrics
        if not engine.ready:
            engine.start()
        self.engine = engine
        self.loaded.set()

    def load(self, build: Callable[[], Engine]) -> None:
        try:
            engine = build()
        except BaseException as exc:          # reported by the host (fastgpt serve exits with it)
            log.error("loading the model failed: %s", exc)
            self.load_error = exc
            self.loaded.set()
            return
        self.attach(engine)

    def stop(self) -> None:
        """End every running stream with an error event and stop the engine."""
        if self.engine is not None:
            self.engine.stop()

    def engine_stat(self, name: str) -> float:
        return getattr(self.engine.stats(), name) if self.engine is not None else 0

    def _engine(self) -> Engine:
        if self.engine is None or not self.engine.ready:
            message = "the model is loading" if self.engine is None else "the server is shutting down"
            raise RequestError(message, status=503, type="server_error")
        return self.engine

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise RequestError(f"The model `{name}` does not exist; this server serves "
                               f"`{self.model_name}` (GET /v1/models).", "model", 404, "model_not_found")

    # -- small routes -----------------------------------------------------------------------------
    async def page(self, request: HTTPRequest):
        return FileResponse(str(STATIC_DIR / "index.html"))

    async def health(self, request: HTTPRequest):
        if self.engine is not None and self.engine.ready:
            return JSONResponse({"status": "ok"})
        status = "error" if self.load_error else ("loading" if self.engine is None else "stopping")
        return JSONResponse({"status": status}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def metrics_page(self, request: HTTPRequest):
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def models(self, request: HTTPRequest):
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "fastgpt"}
        if self.engine is not None:
            card["max_model_len"] = self.engine.model.config.n_positions
        return JSONResponse({"object": "list", "data": [card]})

    async def chat(self, request: HTTPRequest):
        return _error(RequestError(
            "GPT-2 models have no chat format (no roles, no chat template): send a plain prompt "
            "to POST /v1/completions instead", None, 400, "chat_not_supported"))

    async def tokenize(self, request: HTTPRequest):
        try:
            req = parse(TokenizeRequest, await _json(request))
            self._check_model(req.model)
            engine = self._engine()
            ids = await run_in_threadpool(engine.tokenizer.encode, req.prompt, "all")
        except RequestError as exc:
            return _error(exc)
        return JSONResponse({"count": len(ids), "max_model_len": engine.model.config.n_positions,
                             "tokens": ids})

    async def detokenize(self, request: HTTPRequest):
        try:
            req = parse(DetokenizeRequest, await _json(request))
            self._check_model(req.model)
            engine = self._engine()
            V = engine.model.config.vocab_size
            bad = next((i for i, t in enumerate(req.tokens) if not 0 <= t < V), None)
            if bad is not None:
                raise RequestError(f"`tokens[{bad}]`: token id {req.tokens[bad]} is outside the "
                                   f"vocabulary [0, {V})", f"tokens[{bad}]")
        except RequestError as exc:
            return _error(exc)
        return JSONResponse({"prompt": engine.tokenizer.decode(req.tokens)})

    # -- completions ------------------------------------------------------------------------------
    async def completions(self, request: HTTPRequest):
        try:
            req = parse(CompletionRequest, await _json(request)).checked()
            if req.ignored_fields():
                log.warning("The following fields were present in the request but ignored: %s",
                            req.ignored_fields())
            self._check_model(req.model)
            engine = self._engine()
            prompts, texts = await run_in_threadpool(self._prompts, engine, req.prompt)
            config = req.generation_config(self._max_tokens(engine, req, prompts))
            job = _Completion(self, engine, req, prompts, texts)
            job.submit(config)
        except RequestError as exc:
            if exc.code == "queue_full":
                self.metrics.rejected.labels("queue_full").inc()
            return _error(exc)
        if req.stream:
            return StreamingResponse(job.stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await job.respond(request)

    def _prompts(self, engine: Engine, prompt) -> tuple[list[list[int]], list[str | None]]:
        """The prompts as token ids, and as text (None when given as ids: decoded for echo)."""
        tok, V = engine.tokenizer, engine.model.config.vocab_size
        if isinstance(prompt, str):
            prompt = [prompt]
        if isinstance(prompt[0], str):
            ids = [tok.encode(p, "all") for p in prompt]
            texts: list[str | None] = list(prompt)
        else:
            ids = [prompt] if isinstance(prompt[0], int) else prompt
            texts = [None] * len(ids)
        for i, p in enumerate(ids):
            where = "prompt" if len(ids) == 1 else f"prompt[{i}]"
            if not p:
                raise RequestError(f"`{where}` is empty: give at least one token", where)
            bad = next((j for j, t in enumerate(p) if not 0 <= t < V), None)
            if bad is not None:
                raise RequestError(f"`{where}`: token id {p[bad]} at position {bad} is outside the "
                                   f"vocabulary [0, {V})", where)
        return ids, texts

    @staticmethod
    def _max_tokens(engine: Engine, req: CompletionRequest, prompts: list[list[int]]) -> int:
        n_ctx = engine.model.config.n_positions
        longest = max(len(p) for p in prompts)
        if req.max_tokens is None:                    # as vLLM: what the context leaves
            max_tokens = max(0, min(engine.max_tokens, n_ctx - longest))
        elif req.max_tokens > engine.max_tokens:
            raise RequestError(f"`max_tokens` must be at most {engine.max_tokens} on this server, "
                               f"got {req.max_tokens}", "max_tokens")
        else:
            max_tokens = req.max_tokens
        if longest + max_tokens > n_ctx:
            raise RequestError(
                f"This model's maximum context length is {n_ctx} tokens, however you requested "
                f"{longest + max_tokens} tokens ({longest} in your prompt; {max_tokens} for the "
                "completion). Please reduce your prompt or completion length.",
                "prompt", 400, "context_length_exceeded")
        if req.min_tokens > max_tokens:              # only possible when max_tokens was null
            raise RequestError(f"`min_tokens` ({req.min_tokens}) is more than the {max_tokens} tokens "
                               f"that the context of {n_ctx} leaves after the prompt", "min_tokens")
        return max_tokens


class _Completion:
    """One completions request in flight: the engine's events turned into OpenAI's JSON."""

    def __init__(self, server: Server, engine: Engine, req: CompletionRequest,
                 prompts: list[list[int]], texts: list[str | None]):
        self.server = server
        self.engine = engine
        self.req = req
        self.prompts = prompts
        self.texts = texts
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.events: asyncio.Queue = asyncio.Queue()
        self.handle = None
        n_choices = len(prompts) * req.n
        self.echoed = [False] * n_choices           # echo: the prompt goes out once per choice
        self.prompt_logprobs: dict[int, PromptLogprobs] = {}

    def submit(self, config) -> None:
        loop = asyncio.get_running_loop()

        def sink(event):                              # on the engine thread
            loop.call_soon_threadsafe(self.events.put_nowait, event)

        req = self.req
        try:
            self.handle = self.engine.submit(
                self.prompts, config, top_logprobs=req.logprobs,
                prompt_logprobs=req.echo and req.logprobs is not None, sink=sink)
        except QueueFull as exc:
            raise RequestError(str(exc), None, 503, "queue_full", "server_error") from None
        except EngineStopped as exc:
            raise RequestError(str(exc), None, 503, None, "server_error") from None
        except ValueError as exc:
            raise RequestError(str(exc), param_of(str(exc))) from None

    # -- building choices ----------------------------------------------------------------------------
    def _prompt_text(self, p: int) -> str:
        if self.texts[p] is None:
            self.texts[p] = self.engine.tokenizer.decode(self.prompts[p])
        return self.texts[p]

    def _choice(self, delta: Delta) -> dict:
        """One delta as a choice of a response (or of a stream chunk)."""
        req = self.req
        p = delta.index // req.n
        text = delta.text
        logprobs = None
        if req.logprobs is not None:
            logprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        shift = 0
        if req.echo:
            prompt_text = self._prompt_text(p)
            shift = len(prompt_text)
            if not self.echoed[delta.index]:
                self.echoed[delta.index] = True
                text = prompt_text + text
                if logprobs is not None:
                    self._add_prompt_logprobs(logprobs, p)
        if logprobs is not None and delta.token_id is not None:
            name = self._token_name
            tops = {name(t): lp for t, lp in (delta.top_logprobs or {}).items()}
            tops.setdefault(name(delta.token_id), delta.logprob)
            logprobs["tokens"].append(name(delta.token_id))
            logprobs["token_logprobs"].append(delta.logprob)
            logprobs["top_logprobs"].append(tops)
            logprobs["text_offset"].append(delta.text_offset + shift)
        return {"index": delta.index, "text": text, "logprobs": logprobs,
                "finish_reason": _FINISH_REASONS.get(delta.finish_reason)}

    def _token_name(self, token_id: int) -> str:
        return token_text(self.engine.tokenizer, token_id, self.req.return_tokens_as_token_ids)

    def _add_prompt_logprobs(self, logprobs: dict, p: int) -> None:
        scores = self.prompt_logprobs[p]
        tok, name, offset = self.engine.tokenizer, self._token_name, 0
        # A token that ends inside a character adds nothing until the character is whole, so a
        # token's offset is where its character starts, as the completion's own offsets count.
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i, t in enumerate(self.prompts[p]):
            piece = name(t)
            logprobs["tokens"].append(piece)
            logprobs["token_logprobs"].append(scores.logprobs[i])
            top = scores.top_logprobs[i] if scores.top_logprobs else None
            logprobs["top_logprobs"].append(
                None if i == 0 else {**{name(k): v for k, v in (top or {}).items()},
                                     piece: scores.logprobs[i]})
            logprobs["text_offset"].append(offset)
            offset += len(utf8.decode(tok.decode_bytes([t])))

    def _usage(self, done: Done) -> dict:
        return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens}

    def _head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.server.model_name}

    # -- streaming -----------------------------------------------------------------------------------
    async def stream(self):
        req = self.req
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        finished = False
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, PromptLogprobs):
                    self.prompt_logprobs[event.prompt] = event
                elif isinstance(event, Delta):
                    # One chunk per token, also when its text is held back (an unfinished
                    # character, a possible stop string), so clients can count tokens.
                    chunk = {**self._head(), "choices": [self._choice(event)]}
                    if include_usage:
                        chunk["usage"] = None
                    yield _sse(chunk)
                elif isinstance(event, Done):
                    finished = True
                    if include_usage:
                        yield _sse({**self._head(), "choices": [], "usage": self._usage(event)})
                    yield "data: [DONE]\n\n"
                    return
                elif isinstance(event, Failed):
                    finished = True
                    status, kind = _failure_status(event)
                    yield _sse(error_body(event.message, kind, None, status))
                    yield "data: [DONE]\n\n"
                    return
        finally:
            if not finished:                          # the client went away (or we were cancelled)
                self.engine.cancel(self.handle)

    # -- one response --------------------------------------------------------------------------------
    async def respond(self, request: HTTPRequest) -> Response:
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            choices: dict[int, dict] = {}
            while True:
                get = asyncio.ensure_future(self.events.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    self.engine.cancel(self.handle)
                    return Response(status_code=499)     # nobody is listening
                event = get.result()
                if isinstance(event, PromptLogprobs):
                    self.prompt_logprobs[event.prompt] = event
                elif isinstance(event, Delta):
                    _merge(choices, self._choice(event))
                elif isinstance(event, Done):
                    body = {**self._head(), "choices": [choices[i] for i in sorted(choices)],
                            "usage": self._usage(event)}
                    return JSONResponse(body)
                elif isinstance(event, Failed):
                    status, kind = _failure_status(event)
                    return JSONResponse(error_body(event.message, kind, None, status), status_code=status)
        finally:
            gone.cancel()


def _failure_status(event: Failed) -> tuple[int, str]:
    """A request that ended early, as an HTTP status and OpenAI's error type."""
    if event.reason == "invalid":                      # its own options failed: the client's mistake
        return 400, "invalid_request_error"
    return (503 if event.reason == "shutdown" else 500), "server_error"


def _merge(choices: dict[int, dict], part: dict) -> None:
    have = choices.get(part["index"])
    if have is None:
        choices[part["index"]] = part
        return
    have["text"] += part["text"]
    have["finish_reason"] = part["finish_reason"] or have["finish_reason"]
    if have["logprobs"] is not None:
        for key, values in part["logprobs"].items():
            have["logprobs"][key] += values


async def _disconnected(request: HTTPRequest) -> None:
    """Returns when the client disconnects (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _json(request: HTTPRequest):
    try:
        body = await request.body()
    except ClientDisconnect:                           # gone mid-upload: nobody reads the answer
        raise RequestError("the client disconnected before sending the whole body") from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("the request body is not valid JSON: nested too deeply") from None
    # JSON's \uXXXX escapes can spell a lone UTF-16 surrogate, which is no Unicode text: it would
    # fail later, when echoed or named in an error. Only an escape can make one, so most bodies
    # skip the walk.
    if _SURROGATE_ESCAPE.search(body):
        try:
            where = _lone_surrogate(data, "")
        except RecursionError:                         # nested nearly as deep as json allows
            raise RequestError("the request body is not valid JSON: nested too deeply") from None
        if where is not None:
            raise RequestError(f"`{where or 'body'}`: contains a lone UTF-16 surrogate (an unpaired "
                               "\\ud800-\\udfff escape), which is not Unicode text", where or None)
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(value, path: str) -> str | None:
    """The path ("prompt[2]", "logit_bias") of the first string holding a lone surrogate, or None."""
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if _SURROGATE.search(key):
                return path or "body"
            found = _lone_surrogate(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
