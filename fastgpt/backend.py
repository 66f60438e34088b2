"""The backend interface: the handful of ops the model calls, with two implementations.

``NumpyBackend`` is the readable reference and the fallback; ``CythonBackend`` overrides
ops with compiled kernels and inherits the rest, so a kernel that is not written yet (or a
case it does not handle) falls back to the reference. The backend is chosen once, when the
model is built (``select_backend``).

Compiled code never sees unchecked shapes: the model validates token ids and sequence
lengths, and each compiled op checks dtype, contiguity and shapes before it releases the GIL.
"""

from __future__ import annotations

import os

from .numpy_backend import NumpyBackend
from .threads import ThreadSettings

BACKENDS = ("auto", "numpy", "cython")


class BackendError(ValueError):
    """An unknown backend name, or a backend that is not available in this install."""


def kernels_available() -> bool:
    try:
        from .kernels import HAVE_KERNELS
    except ImportError:
        return False
    return HAVE_KERNELS


def select_backend(name: str = "auto", num_threads: int | None = None):
    """Pick the backend once. ``FASTGPT_BACKEND`` overrides ``"auto"`` (a test/build switch)."""
    if name not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        name = os.environ.get("FASTGPT_BACKEND", "auto") or "auto"
        if name not in BACKENDS:
            raise BackendError(f"FASTGPT_BACKEND must be one of numpy, cython, got {name!r}")
    threads = ThreadSettings(num_threads)
    if name == "auto":
        name = "cython" if kernels_available() else "numpy"
    if name == "numpy":
        return NumpyBackend(threads)
    if not kernels_available():
        from .kernels import import_error

        raise BackendError(
            "backend='cython' was requested but fastgpt's compiled kernels are not built "
            f"({import_error()}); reinstall with a C compiler (`pip install .`) or use backend='numpy'"
        )
    from .cython_backend import CythonBackend

    return CythonBackend(threads)
