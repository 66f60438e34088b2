"""``fastgpt serve``: load a model once and answer many HTTP clients (uvicorn + serving/app.py).

The socket is bound first (a taken port is a one-line error), then the model loads in a
thread while ``/health`` answers 503; when both are up the command prints the API's URL and
the page's address. SIGINT or SIGTERM stops the engine first, so every running stream ends
with an error event and ``[DONE]``, then uvicorn closes the connections; nothing waits for a
stream to run to its end.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from pathlib import Path

from ..cli_args import UsageError, add_model_args, model_name, non_negative_int, port_number, positive_int
from ..interrupts import interrupts_held

#: Seconds uvicorn waits for open connections after the engine ended their streams.
SHUTDOWN_GRACE_SECONDS = 5


DESCRIPTION = ("Serve a model over HTTP: POST /v1/completions (OpenAI's API, streaming included), a "
               "playground page at /, /metrics for Prometheus. Needs the serve extra: pip install "
               "'fastgpt[serve]'; --ray runs replicas under Ray Serve (pip install 'fastgpt[serve,ray]').")


def add_serve_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="an OpenAI-compatible HTTP server with continuous batching and a web page",
        description=DESCRIPTION)
    _add_serve_args(p)
    p.set_defaults(func=cmd_serve)


def serve_parser() -> argparse.ArgumentParser:
    """The serve command's flags on their own (fastgpt.serving.ray parses its arguments with it)."""
    p = argparse.ArgumentParser(prog="fastgpt serve", description=DESCRIPTION)
    _add_serve_args(p)
    return p


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    from ..bench import RANDOM_CONFIGS, SEED

    add_model_args(p)
    p.add_argument("--random", choices=list(RANDOM_CONFIGS),
                   help=f"serve a model of these shapes with random weights (seed {SEED}) and "
                        "GPT-2's tokenizer, for load tests and benchmarks")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--max-batch", type=positive_int, default=8,
                   help="slots: sequences decoded together in each step (default: 8)")
    p.add_argument("--max-queue", type=non_negative_int, default=64,
                   help="requests that may wait for a slot; past it a request gets 503 (default: 64)")
    p.add_argument("--prefill-chunk", type=positive_int, default=None,
                   help="prompt tokens per prefill call; a long prompt enters over several steps "
                        "(default: the model's, 512)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="the most new tokens a request may ask for (default: the context)")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients pass as `model` (default: the --model argument)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    ray = p.add_argument_group("replicas under Ray Serve (--ray)")
    ray.add_argument("--ray", action="store_true",
                     help="run --replicas copies of this server under Ray Serve, on a local Ray instance "
                          "or the cluster at --ray-address")
    ray.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    ray.add_argument("--replicas", type=_replicas, default=1,
                     help="replicas, each its own engine with --threads threads, or 'auto' to scale between "
                          "--min-replicas and --max-replicas with load (default: 1)")
    ray.add_argument("--min-replicas", type=non_negative_int, default=1, help="with --replicas auto (default: 1)")
    ray.add_argument("--max-replicas", type=positive_int, default=2, help="with --replicas auto (default: 2)")
    ray.add_argument("--target-ongoing-requests", type=positive_int, default=None,
                     help="with --replicas auto: requests per replica Ray aims at (default: --max-batch)")
    ray.add_argument("--max-queued-requests", type=non_negative_int, default=None,
                     help="requests Ray holds while every replica is full; past it, 503 (default: --max-queue)")


def _replicas(text: str):
    if text == "auto":
        return text
    return positive_int(text)


def cmd_serve(args) -> int:
    if args.random and args.model:
        raise UsageError("give --model or --random, not both")
    # A Ctrl-C waits for the imports (fastgpt.interrupts: one inside them could be swallowed and
    # the server start anyway), then stops the server as uvicorn's own handler would; a later one
    # goes to uvicorn's handler, which takes over while it serves.
    with interrupts_held() as held:
        try:
            import uvicorn

            from .app import create_app
        except ImportError as exc:
            raise UsageError(f"fastgpt serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'fastgpt[serve]'") from None
        if args.ray:
            from .ray import run
        else:
            name = served_name(args)
            sock = _bind(args.host, args.port)
            logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
            app = create_app(lambda: build_engine(args), model_name=name)
            state = app.state.fastgpt
            config = uvicorn.Config(app, log_level="info", access_log=args.access_log,
                                    timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
            server = _uvicorn_server_class()(config, state)
            host, port = sock.getsockname()[:2]
            held.on_interrupt = lambda: server.handle_exit(signal.SIGINT, None)
            if not held.caught:
                print(f"fastgpt serve: listening on {_base_url(host, port)}; loading {name}", flush=True)
                threading.Thread(target=_announce, args=(server, state, name, host, port), daemon=True).start()
                server.run(sockets=[sock])
    if args.ray:
        return run(args)
    if state.load_error is not None:
        raise state.load_error
    return 0


def served_name(args) -> str:
    """The name clients pass as ``model``."""
    if args.served_model_name:
        return args.served_model_name
    if args.random:
        return f"random-{args.random}"
    model = model_name(args)
    return Path(model).name if Path(model).is_dir() else model


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
                         "(0: any free one) or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_engine(args):
    """The engine ``args`` describe: its model loaded, not started."""
    from ..cli_args import load_model_and_tokenizer
    from .engine import Engine

    if args.random:
        from ..bench import RANDOM_CONFIGS, SEED
        from ..model import Model
        from ..tokenizer import Tokenizer

        model = Model.random(RANDOM_CONFIGS[args.random], seed=SEED, backend=args.backend,
                             num_threads=args.threads, dtype=args.dtype, kv_dtype=args.kv_dtype)
        tokenizer = Tokenizer.gpt2()
    else:
        model, tokenizer = load_model_and_tokenizer(args)
    if args.prefill_chunk is not None:
        model.prefill_chunk = args.prefill_chunk
    return Engine(model, tokenizer, max_batch=args.max_batch, max_queue=args.max_queue,
                  max_tokens=args.max_tokens)


def _announce(server, state, name: str, host: str, port: int) -> None:
    """Print the addresses once the socket serves and the model is loaded (or why not)."""
    state.loaded.wait()
    if state.load_error is not None:
        server.should_exit = True
        return
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.should_exit:
        return
    engine = state.engine
    model = engine.model
    base = _base_url(host, port)
    print(f"fastgpt serve: {name} ready ({model.dtype}, {model.backend.name} backend, "
          f"{model.num_threads} threads, {engine.max_batch} slots, queue {engine.max_queue}, "
          f"prefill chunk {engine.prefill_chunk})\n"
          f"  OpenAI API: {base}/v1   (e.g. OpenAI(base_url=\"{base}/v1\", api_key=\"unused\"))\n"
          f"  web page:   {base}/\n"
          f"  metrics:    {base}/metrics", flush=True)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, but a signal first ends the running streams (the engine stops)."""

        def __init__(self, config, state):
            super().__init__(config)
            self.fastgpt = state

        def handle_exit(self, sig, frame):
            if self.fastgpt.engine is not None:
                # Without waiting: the streams' last events go out through the event loop.
                self.fastgpt.engine.stop(timeout=0)
            super().handle_exit(sig, frame)

    return Server
