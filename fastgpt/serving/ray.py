"""fastgpt's server as replicas under Ray Serve: the same engine and routes as ``fastgpt serve``.

Each replica builds the engine that ``fastgpt serve`` builds (its own model, threads and
continuous batching) and serves the same Starlette app (serving/app.py): one app definition,
two ways to run it. Ray Serve's proxy spreads requests over the replicas, restarts a replica
that dies and adds or removes replicas with load. Two ways in:

    fastgpt serve --ray --replicas 2 --threads 1 --port 8000        # starts or joins Ray
    serve run fastgpt.serving.ray:app model=kjv-tiny dtype=int8 replicas=2

``app`` is a Ray Serve application builder: its arguments are ``fastgpt serve``'s flags
without the dashes (``max_batch=16``, ``replicas=auto``), parsed by the same parser.

How Ray's knobs follow the engine's:
- ``max_ongoing_requests`` = ``max_batch + max_queue``: what one engine holds (running and
  waiting). Ray's default of 5 would keep continuous batching from ever filling its slots.
- ``max_queued_requests`` (default ``max_queue``): requests waiting in Ray's router when every
  replica is full; past it Ray answers 503 with ``Retry-After`` at once, never an unbounded wait.
- ``ray_actor_options.num_cpus`` = ``--threads``: Ray places replicas by the cores they use.
- ``replicas``: a count, or ``auto`` with ``min_replicas``, ``max_replicas`` and
  ``target_ongoing_requests`` (Ray's autoscaling_config).

Every response names its replica in the ``x-fastgpt-replica`` header. Each replica's own
``/metrics`` series are mirrored into Ray's metrics, tagged ``replica``, so one scrape of a
node's Ray metrics endpoint (``ray start --metrics-export-port``) covers every replica on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

#: The response header that names the replica that served a request.
REPLICA_HEADER = "x-fastgpt-replica"
#: Seconds between copies of a replica's /metrics into Ray's metrics.
METRICS_PERIOD_SECONDS = 2.0
#: Seconds a client refused by Ray's full router queue is told to wait.
RETRY_AFTER_SECONDS = 1
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def deployment_options(args: argparse.Namespace) -> dict:
    """Ray Serve's deployment options for the engine that ``args`` describe."""
    options = {
        "ray_actor_options": {"num_cpus": args.threads or 1},
        "max_ongoing_requests": args.max_batch + args.max_queue,
        "max_queued_requests": args.max_queue if args.max_queued_requests is None else args.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_SECONDS},
    }
    if args.replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests or args.max_batch,
        }
    else:
        options["num_replicas"] = int(args.replicas)
    return options


def build_app(args: argparse.Namespace):
    """The Ray Serve application: ``args.replicas`` replicas of ``fastgpt serve``'s app."""
    from ray import serve

    deployment = serve.deployment(serve.ingress()(Replica), name="fastgpt")
    return deployment.options(**deployment_options(args)).bind(vars(args))


def app(cli_args: dict):
    """``serve run fastgpt.serving.ray:app model=kjv-tiny replicas=2``: Ray's application builder."""
    return build_app(parse_options(cli_args))


def parse_options(options: dict) -> argparse.Namespace:
    """``{"max_batch": "16"}`` -> the namespace ``fastgpt serve --max-batch 16`` parses to."""
    from .serve import serve_parser

    argv = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True or str(value).lower() == "true":
            argv.append(flag)
        elif value not in (False, None) and str(value).lower() != "false":
            argv += [flag, str(value)]
    parser = serve_parser()
    try:
        return parser.parse_args(argv)
    except SystemExit:
        raise ValueError(f"fastgpt.serving.ray:app: bad arguments {options!r} (they are fastgpt serve's "
                         "flags without the dashes: model=..., dtype=int8, replicas=2)") from None


class Replica:
    """One replica: an engine built as ``fastgpt serve`` builds it, behind serving/app.py's app."""

    async def __init__(self, options: dict):
        from ray import serve

        from .app import create_app
        from .serve import build_engine, served_name

        args = argparse.Namespace(**options)
        # Ray sends a replica at most max_ongoing_requests (max_batch + max_queue) at a time and
        # queues the rest itself. A request's end reaches Ray before the engine retires it (at its
        # next step), so the engine's own queue bound gets that much room: Ray's is the one in force.
        args.max_queue = args.max_batch + args.max_queue
        self.replica = serve.get_replica_context().replica_id.unique_id
        # Loading takes a while: off the replica's event loop, which answers Ray's health checks.
        self.engine = await asyncio.to_thread(build_engine, args)
        self.http = create_app(self.engine, model_name=served_name(args))
        self.mirror = MetricsMirror(self.http.state.fastgpt.metrics.registry, self.replica)
        self.mirror.start()

    def __serve_build_asgi_app__(self):
        return ReplicaHeader(self.http, self.replica)

    async def check_health(self):
        """Ray replaces a replica whose engine has stopped."""
        if not self.engine.ready:
            raise RuntimeError(f"replica {self.replica}: the engine is not running")


class ReplicaHeader:
    """ASGI middleware: every response, streams included, names this replica."""

    def __init__(self, app, replica: str):
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def named(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + [self.header])
            await send(message)

        await self.app(scope, receive, named)


class MetricsMirror:
    """Copies a replica's Prometheus registry into Ray's metrics every METRICS_PERIOD_SECONDS.

    Every sample becomes a Ray gauge of the same name (Ray prefixes ``ray_``) tagged with the
    replica and the sample's labels: counters and histogram buckets keep their running totals,
    so rates and quantiles are computed from them as from the replica's own /metrics.
    """

    def __init__(self, registry, replica: str):
        self.registry = registry
        self.replica = replica
        self.gauges: dict[tuple[str, tuple[str, ...]], object] = {}
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Copy from now on, on the running event loop (the replica's)."""
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.copy()
            await asyncio.sleep(METRICS_PERIOD_SECONDS)

    def copy(self) -> None:
        from ray.util import metrics

        for family in self.registry.collect():
            for sample in family.samples:
                keys = ("replica",) + tuple(sorted(sample.labels))
                gauge = self.gauges.get((sample.name, keys))
                if gauge is None:
                    gauge = self.gauges[(sample.name, keys)] = metrics.Gauge(
                        sample.name, family.documentation or sample.name, tag_keys=keys)
                gauge.set(sample.value, tags={"replica": self.replica, **sample.labels})


# -- fastgpt serve --ray -------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """``fastgpt serve --ray``: start (or join, ``--ray-address``) Ray, run the app, wait for a signal."""
    import ray
    from ray import serve

    if args.ray_address is None and args.host in _LOOPBACK:
        # Ray resolves 127.0.0.1 to the machine's address unless told that this is a one-machine
        # instance; without it a "local" server would listen on the network.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    init = {"address": args.ray_address} if args.ray_address else {
        "address": "local", "include_dashboard": False,
        **({"_node_ip_address": "127.0.0.1"} if args.host in _LOOPBACK else {})}
    ray.init(**init, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(args), name="fastgpt", route_prefix="/")
        base = f"http://{args.host}:{args.port}"
        print(f"fastgpt serve --ray: {args.replicas} replica(s) ready on Ray Serve\n"
              f"  OpenAI API: {base}/v1\n  web page:   {base}/\n  metrics:    each replica's, in Ray's "
              "metrics (ray start --metrics-export-port)", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(parse_options(dict(a.split("=", 1) for a in sys.argv[1:]))))
