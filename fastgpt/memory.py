"""Refusing an allocation the machine cannot hold, before it is tried.

A KV cache or an activation buffer is sized by arguments (batch size, num_return_sequences,
sequence length). Asked for more than the machine has, NumPy either raises MemoryError or, since
its zero-filled arrays are only committed when touched, succeeds and leaves the OOM killer to end
the process mid-generation. ``require`` compares the bytes with what the system says it can
still give (Linux's MemAvailable, within the cgroup's limit when there is one) and raises a
ValueError naming the bytes and what they were for.

Non-goals: accounting for the model's own weights (already loaded or mapped) or exact limits;
this stops requests that cannot fit, not ones that merely crowd the machine.
"""

from __future__ import annotations

import os


class MemoryLimitError(ValueError):
    """An allocation larger than the memory available now (the message names the bytes)."""


def available_bytes() -> int | None:
    """Bytes the system can give now without swapping, or None where it does not say."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    try:  # cgroup v2: a container's limit may be far below the host's free memory
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            current = int(f.read())
        if limit != "max":
            limits.append(max(0, int(limit) - current))
    except (OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    return min(limits)


#: Below this a request is not checked: reading /proc costs ~20 us, and a fresh cache per
#: forward call (the default) would pay it every time for a few kilobytes.
ALWAYS_FITS = 64 * 1024 * 1024


def require(nbytes: int, what: str) -> None:
    """Raise MemoryLimitError if ``nbytes`` (for ``what``) exceed the memory available now."""
    if nbytes < ALWAYS_FITS:
        return
    available = available_bytes()
    if available is not None and nbytes > available:
        raise MemoryLimitError(f"{what} needs {_format_bytes(nbytes)} ({nbytes} bytes), but only "
                               f"{_format_bytes(available)} of memory is available")


def _format_bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
