"""fastgpt's server as replicas under Ray Serve (fastgpt/serving/ray.py), on a local Ray instance.

Two replicas of the bundled model with one thread each, on a fresh Ray instance bound to
127.0.0.1 (see ray_cluster.py). The oracle for every greedy completion is ``Generator`` on the
same model in this process. At the end, Ray's shutdown must leave none of its processes behind.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ray_cluster import LOOPBACK_ENV, end_processes, free_port, processes_mentioning, short_temp_dir
from server_process import require_serve

require_serve("ray", "openai", "httpx")

import httpx  # noqa: E402
import ray  # noqa: E402
from openai import OpenAI  # noqa: E402
from ray import serve  # noqa: E402

from fastgpt import Generator, Model, Tokenizer  # noqa: E402
from fastgpt.serving.ray import REPLICA_HEADER, build_app, parse_options  # noqa: E402

MODEL = "kjv-tiny"
PROMPTS = ["And God said", "In the beginning", "The LORD is my shepherd", "Blessed are"]
NEW_TOKENS = 12
#: Seconds any wait on Ray or the server may take (replica start, replacement, metrics export).
WAIT = 90.0
# Small enough that the overload test can fill both replicas and Ray's queue, large enough that
# Ray's router does not refuse a burst of 8 clients while it assigns them (it counts those).
OPTIONS = {"model": MODEL, "replicas": 2, "threads": 1, "max_batch": 2, "max_queue": 2,
           "max_queued_requests": 16}


@pytest.fixture(scope="module")
def cluster():
    """(base URL, Ray metrics URL) of the app on a fresh local Ray instance; ended by pid."""
    temp_dir = short_temp_dir()
    # Ray's processes inherit RAY_TMPDIR: how the end of the test finds every one of them.
    env = {**LOOPBACK_ENV, "RAY_TMPDIR": temp_dir}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # Ray's workers put the driver's working directory on sys.path: from a source checkout they
    # would import that tree (without built kernels), not the fastgpt the tests run.
    cwd = os.getcwd()
    os.chdir(temp_dir)
    metrics_port, http_port = free_port(), free_port()
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", _temp_dir=temp_dir, num_cpus=2,
                 include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port)
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(build_app(parse_options(OPTIONS)), name="fastgpt", route_prefix="/")
        yield f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.chdir(cwd)
            os.environ.update({k: v for k, v in saved.items() if v is not None})
            for k in (k for k, v in saved.items() if v is None):
                os.environ.pop(k, None)
        left = end_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray left processes behind after shutdown (ended by pid): {sorted(left)}"


@pytest.fixture(scope="module")
def generator():
    model = Model.from_pretrained(MODEL, num_threads=1)
    return Generator(model, Tokenizer.from_pretrained(MODEL))


def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=WAIT)


def test_openai_client_gets_generators_greedy_tokens(cluster, generator):
    url, _ = cluster
    api = client(url)
    for prompt in PROMPTS:
        want = generator.generate(prompt, max_new_tokens=NEW_TOKENS)
        whole = api.completions.create(model=MODEL, prompt=prompt, max_tokens=NEW_TOKENS, temperature=0)
        assert whole.choices[0].text == want, prompt
        assert whole.usage.completion_tokens == NEW_TOKENS
        pieces = [c.choices[0].text for c in api.completions.create(
            model=MODEL, prompt=prompt, max_tokens=NEW_TOKENS, temperature=0, stream=True)]
        assert "".join(pieces) == want, prompt


def test_every_response_names_its_replica_and_both_serve_8_clients(cluster):
    url, _ = cluster
    seen, errors = [], []

    def ask(k: int) -> None:
        try:
            for _ in range(3):
                r = httpx.post(f"{url}/v1/completions", timeout=WAIT,
                               json={"prompt": PROMPTS[k % 4], "max_tokens": 8, "temperature": 0})
                assert r.status_code == 200, r.text
                seen.append(r.headers[REPLICA_HEADER])
        except Exception as exc:                       # reported below, with the others
            errors.append(repr(exc))

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join(WAIT) for t in threads]
    assert not errors, errors
    assert len(seen) == 24 and len(set(seen)) == 2, f"replicas seen: {sorted(set(seen))}"
    with httpx.stream("POST", f"{url}/v1/completions", timeout=WAIT,
                      json={"prompt": "And", "max_tokens": 4, "stream": True}) as r:
        assert r.headers[REPLICA_HEADER] in seen
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_each_replicas_metrics_reach_rays_metrics(cluster):
    url, metrics_url = cluster
    def served_by(_):
        return httpx.post(f"{url}/v1/completions", json={"prompt": "And", "max_tokens": 8},
                          timeout=WAIT).headers[REPLICA_HEADER]

    # Concurrent, so that Ray's router spreads them over both replicas even on a busy machine.
    with ThreadPoolExecutor(8) as pool:
        replicas = set(pool.map(served_by, range(16)))
    assert len(replicas) == 2, f"only {replicas} served"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = httpx.get(metrics_url, timeout=10).text
        found = {r for r in replicas
                 if any(line.startswith("ray_fastgpt_generation_tokens") and f'replica="{r}"' in line
                        for line in text.splitlines())}
        if found == replicas:
            return
        time.sleep(1)
    raise AssertionError(f"Ray's metrics show fastgpt series for {found or 'no replica'}, not {replicas}")


def test_full_replicas_and_queue_answer_503_with_retry_after(cluster):
    url, _ = cluster
    # 2 replicas x (2 slots + 2 waiting) + Ray's 16 queued = 24 at once: 60 at once overflow it
    clients = 60
    codes, retry_after, start = [], [], threading.Barrier(clients)

    def ask() -> None:
        start.wait(WAIT)
        with httpx.stream("POST", f"{url}/v1/completions", timeout=WAIT,
                          json={"prompt": "And God said", "max_tokens": 250, "temperature": 0,
                                "stream": True, "ignore_eos": True}) as r:
            codes.append(r.status_code)
            if r.status_code == 503:
                retry_after.append(r.headers.get("retry-after"))
            for _ in r.iter_bytes():
                pass

    threads = [threading.Thread(target=ask) for _ in range(clients)]
    [t.start() for t in threads]
    [t.join(WAIT) for t in threads]
    assert not any(t.is_alive() for t in threads), "a request hung"
    print(f"{clients} at once: {codes.count(200)} served, {codes.count(503)} refused")
    assert 503 in codes and 200 in codes, sorted(codes)
    assert set(codes) <= {200, 503}, sorted(codes)
    assert all(value is not None and int(value) >= 1 for value in retry_after), retry_after
    after = httpx.post(f"{url}/v1/completions", json={"prompt": "And", "max_tokens": 3}, timeout=WAIT)
    assert after.status_code == 200, after.text


def test_a_killed_replica_is_replaced_and_its_requests_end_clearly(cluster, generator):
    url, _ = cluster
    # ~2 s of work per replica (10 streams of 250 tokens, 2 at a time): a replica killed 0.5 s in
    # holds running and waiting streams; the streams still in Ray's queue go to the survivor.
    outcomes, tokens, first_replica = {}, {}, threading.Event()

    def stream(k: int) -> None:
        try:
            with httpx.stream("POST", f"{url}/v1/completions", timeout=WAIT,
                              json={"prompt": PROMPTS[k % 4], "max_tokens": 250, "temperature": 0,
                                    "stream": True, "ignore_eos": True}) as r:
                replica = r.headers.get(REPLICA_HEADER)
                if replica:
                    outcomes[k] = (replica, r.status_code, "")
                    first_replica.set()
                lines = [line for line in r.iter_lines() if line]
                tokens[k] = sum(1 for line in lines if line.startswith("data: {") and '"text"' in line)
                outcomes[k] = (replica, r.status_code, lines[-1] if lines else "")
        except httpx.HTTPError as exc:
            outcomes[k] = (outcomes.get(k, (None,))[0], None, f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(20)]
    [t.start() for t in threads]
    assert first_replica.wait(WAIT)
    time.sleep(0.5)
    victim_id = next(o[0] for o in outcomes.values() if o[0])
    ray.kill(ray.get_actor(f"SERVE_REPLICA::fastgpt#fastgpt#{victim_id}", namespace="serve"), no_restart=True)
    [t.join(WAIT) for t in threads]
    assert not any(t.is_alive() for t in threads), "a stream hung after its replica was killed"
    held = {k: o for k, o in outcomes.items() if o[0] == victim_id}
    print(f"killed {victim_id}; the streams it held ended with:", [o[1:] for o in held.values()])
    assert held, f"no stream ran on {victim_id}: {outcomes}"
    for k, (replica, status, last) in outcomes.items():
        # A request that the victim held before its response began is answered by Ray's proxy: a
        # plain 500 without our replica header (every response of fastgpt's app names its replica,
        # and its errors are OpenAI's JSON). Ray routes a request to a replica before it runs, so
        # this happens when the kill lands between the two.
        died_before_answering = replica is None and (status, last) == (500, "Internal Server Error")
        if replica == victim_id or died_before_answering:
            # ended, with an error the client sees, never as if complete: a [DONE] only after all
            # 250 tokens (a stream may finish before the kill lands)
            assert last != "data: [DONE]" or tokens.get(k) == 250, (k, replica, status, last, tokens.get(k))
        else:                        # everything else completed, or was refused at once
            assert (status, last) == (200, "data: [DONE]") or status == 503, (k, replica, status, last)
    # later requests succeed, and Ray brings the deployment back to two replicas
    want = generator.generate("And God said", max_new_tokens=NEW_TOKENS)
    api = client(url)
    assert api.completions.create(model=MODEL, prompt="And God said", max_tokens=NEW_TOKENS,
                                  temperature=0).choices[0].text == want
    deadline, seen = time.monotonic() + WAIT, set()
    while time.monotonic() < deadline and len(seen) < 2:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "And", "max_tokens": 2}, timeout=WAIT)
        assert r.status_code == 200, r.text
        seen.add(r.headers[REPLICA_HEADER])
        time.sleep(0.2)
    assert victim_id not in seen and len(seen) == 2, f"replicas after the kill: {seen}"
    assert processes_mentioning(f"fastgpt#{victim_id}") == {}
