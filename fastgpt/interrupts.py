"""Ctrl-C while a command starts: held until its imports are done, then a clean exit.

An interrupt that lands inside an import can surface as an ImportError (a C extension whose own
import of another module fails with the interrupt pending, as numpy's does), which the
``except ImportError`` of some optional dependency then swallows: the command went on as if
nothing had happened (``fastgpt serve`` started serving after a Ctrl-C 50 ms into its start), or
printed two tracebacks. Held, the interrupt is raised once the imports are done, where
``fastgpt``'s entry point turns it into exit status 130 without a traceback.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class HeldInterrupts:
    """What interrupts_held yields: ``caught`` once a SIGINT came; ``on_interrupt``, if set, is
    called from the handler (a server told to stop, as its own handler would)."""

    def __init__(self) -> None:
        self.caught = False
        self.on_interrupt = None

    def _handle(self, signum, frame) -> None:
        self.caught = True
        if self.on_interrupt is not None:
            self.on_interrupt()


@contextmanager
def interrupts_held():
    """SIGINT within the block is remembered (and passed to ``on_interrupt``), and raised as
    KeyboardInterrupt when the block ends.

    Only where Python's own handler is in place, on the main thread: a handler that someone else
    installed (a server's, or SIG_IGN under nohup) is left alone."""
    held = HeldInterrupts()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield held
        return
    previous = signal.signal(signal.SIGINT, held._handle)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)
    if held.caught:
        raise KeyboardInterrupt
