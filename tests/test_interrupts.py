"""Ctrl-C while a command starts: no traceback, no server that starts anyway (fastgpt.interrupts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from fastgpt.interrupts import interrupts_held

# Runs the `fastgpt` entry point with a SIGINT sent to itself as the module argv[1] starts to
# import: a Ctrl-C that lands inside an import, deterministically.
INTERRUPTED_START = r"""
import importlib.abc, os, signal, sys

AT = sys.argv[1]

class InterruptAt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == AT:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAt())
sys.argv = ["fastgpt"] + sys.argv[2:]
from fastgpt.__main__ import main
sys.exit(main())
"""


def test_an_interrupt_in_the_block_is_raised_when_it_ends():
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held() as held:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):         # the handler runs at a bytecode boundary
                if held.caught:
                    break
            reached_the_end = True
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nothing_is_raised_without_an_interrupt_and_a_foreign_handler_is_left_alone():
    with interrupts_held() as held:
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert not held.caught
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    failures = []

    def off_the_main_thread():
        try:
            with interrupts_held():
                pass
        except Exception as exc:               # signal.signal would raise ValueError here
            failures.append(exc)

    worker = threading.Thread(target=off_the_main_thread)
    worker.start()
    worker.join()
    assert failures == []


@pytest.mark.parametrize("module", ["numpy", "fastgpt.model", "uvicorn", "fastgpt.serving.app"])
def test_ctrl_c_while_serve_starts_ends_it_cleanly(module):
    pytest.importorskip("uvicorn")
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_START, module, "serve", "--random", "gpt2",
                             "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "listening" not in result.stdout, "the server started after the Ctrl-C"
