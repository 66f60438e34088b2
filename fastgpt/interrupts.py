"""Ctrl-C while a command starts: held until its imports are done, then a clean exit.

An interrupt that lands inside an import printed a KeyboardInterrupt traceback, or surfaced as an
ImportError (a C extension whose own import of another module fails with the interrupt pending,
as numpy's does: "PyCapsule_Import could not import module datetime", two tracebacks), which the
``except ImportError`` around an optional dependency would swallow, the command going on as if
nothing had happened. Held, the interrupt is raised once the imports are done, where
``fastgpt``'s entry point turns it into exit status 130 without a traceback.

(A process that a non-interactive shell starts in the background inherits SIGINT ignored; Python
then installs no handler, and neither does this: such a process only stops on SIGINT once a
server's own handler is in place.)
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
