"""A real ``fastgpt serve`` process for the server tests: started on 127.0.0.1, ended by its pid.

(A plain module, not conftest.py, so that test files can import it by a unique name.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import importlib.util

import pytest

#: Set to 1 to skip (not fail) the server tests where the serve extra or chromium is missing.
ALLOW_MISSING = os.environ.get("FASTGPT_ALLOW_NO_SERVE", "") not in ("", "0")

#: Seconds a server may take to print its address (a random 124M model is built and quantized).
START_TIMEOUT = 120.0
#: Seconds a server may take to exit after SIGTERM.
STOP_TIMEOUT = 20.0

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
_READY = re.compile(r"OpenAI API: (http://127\.0\.0\.1:\d+)/v1")


def require_serve(*modules: str) -> None:
    """Fail (skip with FASTGPT_ALLOW_NO_SERVE=1) when the serve extra or ``modules`` is missing:
    CI installs them, and a silently skipped server test would hide a broken install."""
    missing = [m for m in ("starlette", "uvicorn", "pydantic", "prometheus_client", *modules)
               if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = (f"{', '.join(missing)} missing: pip install '.[serve,test]' "
               "(or set FASTGPT_ALLOW_NO_SERVE=1 to skip the server tests)")
    if ALLOW_MISSING:
        pytest.skip(message, allow_module_level=True)
    pytest.fail(message, pytrace=False)


class ServerProcess:
    """``with ServerProcess(["--model", "kjv-tiny"], log_path) as server: server.url``.

    Output (stdout and stderr) goes to ``log_path``, read back by :meth:`log`. On a failed
    start the log is shown in the error.
    """

    def __init__(self, args: list[str], log_path, port: int = 0):
        self.args = ["--host", "127.0.0.1", "--port", str(port), *args]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, wait: bool = True) -> "ServerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # `python -m` puts its working directory first on sys.path: started from a source checkout
        # it would import that tree (without built kernels), not the fastgpt the tests run.
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "fastgpt", "serve", *self.args],
                                         stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=Path(self.log_path).parent)
        if wait:
            self.wait_ready()
        return self

    def wait_listening(self) -> str:
        """The URL, as soon as the socket is bound (the model may still be loading)."""
        self.url = self._wait_for(_LISTENING, "listen")
        return self.url

    def wait_ready(self) -> str:
        self.url = self._wait_for(_READY, "become ready")
        return self.url

    def _wait_for(self, pattern, what: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            m = pattern.search(self.log())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"fastgpt serve {' '.join(self.args)} did not {what}:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident memory now (Linux /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"the server ignored SIGTERM for {STOP_TIMEOUT} s:\n{self.log()}")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def metric(text: str, name: str, **labels) -> float:
    """The value of one Prometheus sample in /metrics text (AssertionError if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    raise AssertionError(f"no sample {name}{{{want}}} in /metrics")
