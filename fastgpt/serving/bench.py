"""``fastgpt bench-serve``: how a running server holds up under N concurrent streaming clients.

Method (STYLE habit 14):

- One request mix for every level: ``--requests`` prompts of exactly ``--prompt-tokens``
  token ids (windows of a seeded random text, tokenized by the server's ``/tokenize`` and
  sent as ids so that the length is exact), each asking for
  ``--new-tokens`` tokens with ``ignore_eos`` (every request makes exactly that many),
  greedy unless ``--temperature`` is given (then seeded sampling, top-k 40).
- A level of C clients: C threads, each sending the mix's requests one after the other
  (request i goes to client i mod C), all streaming. Level 1 is the same requests sent one
  at a time.
- Per request: time to first token (request sent -> first token's chunk), inter-token
  latencies (gaps between consecutive token chunks; the server sends one chunk per token).
  Per level: aggregate generated tokens/s = all tokens / the level's wall time (prefill
  included), TTFT and ITL p50/p99 over every request of the level.
- Levels run in rounds (1, 4, 8, 16, 1, 4, ...), so that drift in the machine's bandwidth
  hits every level alike; ratios to level 1 are taken within a round, and the report gives
  the median over rounds.
- The server's answers are checked: each request must end with ``[DONE]`` and report
  exactly ``--new-tokens`` completion tokens in its usage, else the run fails. The same
  client drives llama.cpp's server (its ``/tokenize`` field is ``content``; its closing
  chunk carries no token).

The client is plain ``http.client`` in threads: it reads and timestamps, nothing more, so it
costs the server's machine little.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..cli_args import UsageError, check_writable, finite_float, positive_int, positive_int_list

SEED = 0
#: One extra request per level warms the server up (first-call allocations) before timing.
WARMUP_REQUESTS = 1


# -- the client -------------------------------------------------------------------------------
@dataclass
class Reply:
    """One HTTP exchange. For a stream: every ``data:`` event as JSON (``[DONE]`` excluded),
    with its arrival time (perf_counter seconds)."""
    status: int
    headers: dict
    body: dict | None = None                     # a non-streamed answer
    events: list = field(default_factory=list)   # [(seconds, json)]
    done: bool = False                           # saw data: [DONE]
    sent: float = 0.0                            # perf_counter when the request went out
    closed_early: bool = False                   # we hung up (hang_up said so)


def post(url: str, path: str, payload, *, timeout: float = 60.0,
         hang_up: Callable[[list], bool] | None = None) -> Reply:
    """POST ``payload`` (a dict, or raw bytes sent as is) to ``url + path`` and read the reply.

    A streamed reply is read event by event; when ``hang_up(events so far)`` is true the
    connection is closed (a client that goes away mid-stream).
    """
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        sent = time.perf_counter()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, sent=sent)
        if not reply.headers.get("content-type", "").startswith("text/event-stream"):
            raw = resp.read()
            reply.body = json.loads(raw) if raw else None
            return reply
        while True:
            line = resp.readline()
            if not line:
                return reply
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                reply.done = True
                return reply
            reply.events.append((time.perf_counter(), json.loads(data)))
            if hang_up is not None and hang_up(reply.events):
                reply.closed_early = True
                return reply
    finally:
        conn.close()


def get(url: str, path: str, timeout: float = 10.0) -> tuple[int, str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


# -- the benchmark ------------------------------------------------------------------------------
@dataclass
class Timing:
    ttft: float
    itl: list
    tokens: int


def request_mix(prompts: list[list[int]], new_tokens: int, temperature: float | None,
                model: str) -> list[dict]:
    mix = []
    for i, ids in enumerate(prompts):
        body = {"prompt": ids, "max_tokens": new_tokens, "model": model, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.0}
        if temperature is not None:
            body.update(temperature=temperature, top_k=40, seed=SEED + i)
        mix.append(body)
    return mix


def _timed(url: str, body: dict, new_tokens: int, timeout: float) -> Timing:
    reply = post(url, "/v1/completions", body, timeout=timeout)
    if reply.status != 200 or not reply.done:
        # Most often the server refusing what the flags asked for (--new-tokens past its cap).
        raise UsageError(f"the server answered {reply.status} {reply.body or reply.events[-1:]}")
    usage = next((e["usage"] for _, e in reply.events if e.get("usage")), None)
    if usage is None or usage["completion_tokens"] != new_tokens:
        raise RuntimeError(f"expected usage with {new_tokens} completion tokens, got {usage}")
    # Token chunks: all but an empty closing chunk that only carries the finish reason
    # (llama.cpp sends one; fastgpt sends one chunk per token).
    times = [t for t, e in reply.events if e.get("choices")
             and (e["choices"][0]["text"] or e["choices"][0]["finish_reason"] is None)]
    return Timing(times[0] - reply.sent, np.diff(times).tolist(), new_tokens)


def run_level(url: str, mix: list[dict], clients: int, new_tokens: int, timeout: float) -> dict:
    """Send ``mix`` through ``clients`` concurrent clients; the level's figures."""
    results: list[Timing | None] = [None] * len(mix)
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for i in range(c, len(mix), clients):
                results[i] = _timed(url, mix[i], new_tokens, timeout)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    ttft = [r.ttft for r in results]
    itl = [x for r in results for x in r.itl]
    tokens = sum(r.tokens for r in results)
    return {"clients": clients, "requests": len(mix), "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall,
            "ttft_p50": float(np.percentile(ttft, 50)), "ttft_p99": float(np.percentile(ttft, 99)),
            "itl_p50": float(np.percentile(itl, 50)), "itl_p99": float(np.percentile(itl, 99))}


def run_benchmark(url: str, *, levels: list[int], requests: int, prompt_tokens: int, new_tokens: int,
                  rounds: int, temperature: float | None, timeout: float, status=None) -> dict:
    try:
        code, text = get(url, "/v1/models")
    except OSError as exc:
        raise UsageError(f"cannot reach {url}: {exc}; is a fastgpt server running there?") from None
    if code != 200:
        raise UsageError(f"{url}/v1/models answered {code}: is a fastgpt server running there?")
    card = json.loads(text)["data"][0]
    model = card["id"]
    mix = request_mix(prompt_ids(url, model, requests, prompt_tokens), new_tokens, temperature, model)
    for body in mix[:WARMUP_REQUESTS]:
        _timed(url, body, new_tokens, timeout)
    by_level: dict[int, list[dict]] = {c: [] for c in levels}
    for r in range(rounds):
        for c in levels:
            if status:
                status(f"round {r + 1}/{rounds}: {c} client{'s' if c > 1 else ''}")
            by_level[c].append(run_level(url, mix, c, new_tokens, timeout))
    base = levels[0]
    table = []
    for c in levels:
        runs = by_level[c]
        row = {key: statistics.median(run[key] for run in runs)
               for key in ("tokens_per_s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99")}
        row["clients"] = c
        row["speedup"] = statistics.median(run["tokens_per_s"] / b["tokens_per_s"]
                                           for run, b in zip(runs, by_level[base]))
        row["itl_p99_over_single"] = statistics.median(run["itl_p99"] / b["itl_p50"]
                                                       for run, b in zip(runs, by_level[base]))
        row["rounds"] = runs
        table.append(row)
    return {"url": url, "model": model, "requests": requests, "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens, "temperature": temperature, "rounds": rounds, "levels": table}


_WORDS = ("the of and to in is was that he for it with as his on be at by had not are but from or "
          "have an they which one you were her all she there would their we him been has when who "
          "will more no if out so said what up its about into than them can only other new some "
          "could time these two may then do first any my now such like our over man me even most "
          "made after also did many before must through back years where much your way well down "
          "should because each just those people how too little state good very make world still "
          "own see men work long get here between both life being under never day same another "
          "know while last might us great old year off come since against go came right used take").split()


def prompt_ids(url: str, model: str, n: int, length: int) -> list[list[int]]:
    """``n`` prompts of exactly ``length`` ids, from the server's own tokenizer (so every id is
    in its vocabulary): windows of a seeded random text."""
    rng = np.random.default_rng(SEED)
    text = " ".join(rng.choice(_WORDS, size=(n + 1) * length))
    ids = []
    for body in ({"prompt": text, "model": model}, {"content": text}):   # vLLM's, llama.cpp's
        reply = post(url, "/tokenize", body)
        if reply.status == 200 and reply.body["tokens"]:
            ids = reply.body["tokens"]
            break
    if len(ids) < length:
        raise RuntimeError(f"/tokenize answered {reply.status}: {reply.body}")
    step = max(1, (len(ids) - length) // n)
    return [ids[i * step: i * step + length] for i in range(n)]


def format_report(report: dict) -> str:
    mode = "greedy" if report["temperature"] is None else f"sampling at T={report['temperature']}, top-k 40"
    lines = [
        f"fastgpt bench-serve: {report['model']} at {report['url']}",
        f"{report['requests']} requests per level: {report['prompt_tokens']}-token prompts, "
        f"{report['new_tokens']} new tokens each ({mode}); medians of {report['rounds']} "
        "interleaved rounds",
        "",
        "| clients | aggregate tokens/s | x one at a time | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | ITL p99 / single ms/token |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["levels"]:
        lines.append(
            f"| {row['clients']} | {row['tokens_per_s']:.0f} | {row['speedup']:.2f}x | "
            f"{row['ttft_p50'] * 1e3:.0f} ms | {row['ttft_p99'] * 1e3:.0f} ms | "
            f"{row['itl_p50'] * 1e3:.1f} ms | {row['itl_p99'] * 1e3:.1f} ms | "
            f"{row['itl_p99_over_single']:.2f}x |")
    return "\n".join(lines)


def cmd_bench_serve(args) -> int:
    check_writable(args.json)
    levels = args.clients
    if levels[0] != 1:
        levels = [1] + [c for c in levels if c != 1]
    report = run_benchmark(args.url.rstrip("/"), levels=levels, requests=args.requests,
                           prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                           rounds=args.rounds, temperature=args.temperature, timeout=args.timeout,
                           status=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http://HOST[:PORT] URL, got {text!r}")
    try:
        parts.port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    return text


def add_bench_serve_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-serve", help="load-test a running fastgpt server with N concurrent streaming clients",
        description="Drive a running `fastgpt serve` with 1, 4, 8, 16 (--clients) concurrent "
                    "streaming clients on the same requests; report aggregate tokens/s, time to "
                    "first token and inter-token latency (p50/p99) beside one at a time.")
    p.add_argument("--url", type=_http_url, default="http://127.0.0.1:8000", help="the server (default: http://127.0.0.1:8000)")
    p.add_argument("--clients", type=positive_int_list, default=[1, 4, 8, 16], metavar="N[,N...]",
                   help="concurrency levels; 1 (one at a time) is always run first (default: 1,4,8,16)")
    p.add_argument("--requests", type=positive_int, default=16, help="requests per level (default: 16)")
    p.add_argument("--prompt-tokens", type=positive_int, default=64, help="prompt length (default: 64)")
    p.add_argument("--new-tokens", type=positive_int, default=128, help="tokens per request (default: 128)")
    p.add_argument("--rounds", type=positive_int, default=2, help="interleaved rounds (default: 2)")
    p.add_argument("--temperature", type=finite_float(0.0, "non-negative"), default=None,
                   help="sample at this temperature (seeded, top-k 40) instead of greedy")
    p.add_argument("--timeout", type=finite_float(0.0, "positive", lo_open=True), default=300.0, help="seconds per request before failing (default: 300)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    p.set_defaults(func=cmd_bench_serve)
