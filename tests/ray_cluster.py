"""Ray for the scale-out tests: fresh local instances on 127.0.0.1, ended by their pids.

Ray resolves 127.0.0.1 to the machine's network address unless told that the instance is
one machine's (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); with it, every Ray process listens on
loopback. Each instance gets a temporary folder of its own (``RAY_TMPDIR`` / ``_temp_dir``),
which every one of its processes names in its command line or environment, or holds its log
files open in (Ray renames some processes, ``ray::DashboardAgent``, overwriting both): that is
how the tests find them, so that they end only what they started, never another Ray on the
machine. A stale ``/tmp/ray`` from an earlier
run plays no part.

(A plain module, not conftest.py, so that test files can import it by a unique name.)
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from pathlib import Path

#: Environment that makes a local Ray instance listen on loopback only.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: Seconds Ray's processes get to exit after a shutdown before they count as left behind.
EXIT_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir() -> str:
    """A folder for one Ray instance: short, since Ray puts unix sockets (108-byte paths) in it."""
    return tempfile.mkdtemp(prefix="fgray", dir="/tmp")


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every process that names ``text`` in its command line or its
    environment, or holds a file open under it (Ray's renamed processes overwrite both of the
    former, but keep their session's log files open). Linux /proc."""
    found = {}
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline or needle in (entry / "environ").read_bytes() or _holds_open(entry, text):
                found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def _holds_open(process: Path, folder: str) -> bool:
    for fd in (process / "fd").iterdir():
        try:
            if os.readlink(fd).startswith(folder):
                return True
        except OSError:
            continue
    return False


def stop_processes(text: str, grace: float = 10.0) -> None:
    """What `ray stop` does, by pid and only for the processes mentioning ``text`` (a cluster that
    `ray start` made): SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    _signal(processes_mentioning(text), signal.SIGTERM)
    end_processes(text, grace)


def end_processes(text: str, timeout: float = EXIT_TIMEOUT) -> dict[int, str]:
    """Wait up to ``timeout`` seconds for the processes mentioning ``text`` to exit; SIGKILL the
    rest by pid. Returns those that had to be killed (they were left behind)."""
    deadline = time.monotonic() + timeout
    left = processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_mentioning(text)
    _signal(left, signal.SIGKILL)
    return left


def _signal(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
