"""The two ways to run fastgpt under Ray Serve, as users type them, each on a fresh Ray instance:

    fastgpt serve --ray --replicas 2 --threads 1 --port P
    ray start --head ...; serve start ...; serve run fastgpt.serving.ray:app model=kjv-tiny dtype=int8 replicas=2

Each serves a streamed greedy completion equal to Generator's, and leaves no Ray process
behind once stopped (found by the instance's own temporary folder, ended by pid).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_cluster import LOOPBACK_ENV, end_processes, free_port, short_temp_dir, stop_processes
from server_process import ServerProcess, require_serve

require_serve("ray", "openai")

from openai import OpenAI  # noqa: E402

from fastgpt import Generator, Model, Tokenizer  # noqa: E402
from fastgpt.serving.bench import get  # noqa: E402

MODEL = "kjv-tiny"
PROMPT = "And God said"
NEW_TOKENS = 12
#: Seconds for Ray, Serve and two replicas to come up (and for a command to stop).
WAIT = 120.0
BIN = Path(sys.executable).parent


def expected(dtype: str | None = None) -> str:
    model = Model.from_pretrained(MODEL, num_threads=1, dtype=dtype)
    return Generator(model, Tokenizer.from_pretrained(MODEL)).generate(PROMPT, max_new_tokens=NEW_TOKENS)


def streamed(url: str) -> str:
    api = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=WAIT)
    return "".join(c.choices[0].text for c in api.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=NEW_TOKENS, temperature=0, stream=True))


@pytest.fixture
def ray_env(monkeypatch):
    """A temporary folder for this test's Ray instance (in every one of its processes' command
    lines) and loopback-only Ray; afterwards, no process of that instance may remain."""
    temp_dir = short_temp_dir()
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    # Commands started from a source checkout would import that tree (without built kernels).
    monkeypatch.chdir(temp_dir)
    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)
    yield temp_dir
    left = end_processes(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"Ray processes left behind (ended by pid): {sorted(left)}"


def test_fastgpt_serve_ray(ray_env, tmp_path):
    port = free_port()
    server = ServerProcess(["--ray", "--replicas", "2", "--threads", "1", "--model", MODEL],
                           tmp_path / "serve.log", port=port)
    with server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert streamed(server.url) == expected()
        assert get(server.url, "/health")[0] == 200
    assert server.proc.returncode == 0, server.log()
    print(server.log()[-2000:])


def test_serve_run_builder(ray_env, tmp_path, monkeypatch):
    ray_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{ray_port}"
    log = tmp_path / "serve-run.log"

    def run(*argv, **kw):
        return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=WAIT, **kw)

    # `ray start` turns on Ray's token authentication (the token in ~/.ray/auth_token); the
    # commands that join that cluster must be told to present it.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")

    started = run("ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={ray_port}", "--num-cpus=2",
                  "--include-dashboard=false", "--disable-usage-stats")
    assert started.returncode == 0, started.stdout + started.stderr
    proc = None
    try:
        served = run("serve", "start", "--address", address, "--http-host", "127.0.0.1", "--http-port", str(http_port))
        assert served.returncode == 0, served.stdout + served.stderr
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(BIN / "serve"), "run", "--address", address, "fastgpt.serving.ray:app",
                                     f"model={MODEL}", "dtype=int8", "replicas=2", "threads=1"],
                                    stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if get(url, "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"serve run did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        assert streamed(url) == expected("int8")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)           # serve run shuts the app down on Ctrl-C
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
        # the cluster `ray start` made, by its processes' pids (`ray stop` would end any Ray here)
        stop_processes(ray_env)
