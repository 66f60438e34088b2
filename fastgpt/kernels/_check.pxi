# Shape checks shared by the wrappers: run with the GIL, before any nogil loop.
cdef inline void check_2d(str name, object arr, Py_ssize_t rows, Py_ssize_t cols) except *:
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape ({rows}, {cols}), got {arr.shape}")

cdef inline void check_1d(str name, object arr, Py_ssize_t n) except *:
    if arr is not None and (arr.ndim != 1 or arr.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")

cdef inline int check_threads(int n_threads) except -1:
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads
