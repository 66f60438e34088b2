"""One thread-count knob for both OpenMP (our kernels) and BLAS (NumPy's matmul).

Both pools on 2 cores would oversubscribe the machine if each took every core while the
other still spins, so the model sets BLAS to the same count as its OpenMP loops. BLAS's
thread count is process-global; it is only changed when a model with a different count runs.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

_blas_threads_in_force: int | None = None
_controller = None


def default_num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _set_blas_threads(n: int) -> None:
    global _blas_threads_in_force, _controller
    if _blas_threads_in_force == n:
        return
    try:
        import threadpoolctl
    except ImportError:  # without threadpoolctl, BLAS keeps its own default
        _blas_threads_in_force = n
        return
    if _controller is None:
        _controller = threadpoolctl.ThreadpoolController()
    _controller.limit(limits=n, user_api="blas")
    _blas_threads_in_force = n


#: The most threads a model may use: the kernels take the count as a C int, and OpenMP would
#: start every one of them (llama.cpp caps its own at 512 too, GGML_MAX_N_THREADS).
MAX_THREADS = 512


class ThreadSettings:
    def __init__(self, num_threads: int | None = None):
        if num_threads is None:
            num_threads = default_num_threads()
        if (isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, numbers.Integral)
                or not 1 <= num_threads <= MAX_THREADS):
            raise ValueError(f"num_threads must be an integer in [1, {MAX_THREADS}] or None, got {num_threads!r}")
        self.num_threads = int(num_threads)

    def apply(self) -> None:
        """Make BLAS use this many threads (cheap when already in force)."""
        _set_blas_threads(self.num_threads)
