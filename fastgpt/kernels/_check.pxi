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


cdef inline const float *check_out_and_bias(str name, Py_ssize_t n, Py_ssize_t n_out, const float[::1] b,
                                            float[:, ::1] out) except? NULL:
    """A linear op's output shape (N, O) and optional bias (O,); returns the bias pointer or NULL."""
    if out.shape[0] != n or out.shape[1] != n_out:
        raise ValueError(f"{name}: out must have shape ({n}, {n_out}), got ({out.shape[0]}, {out.shape[1]})")
    if b is None:
        return NULL
    if b.shape[0] != n_out:
        raise ValueError(f"{name}: bias must have shape ({n_out},), got ({b.shape[0]},)")
    return &b[0]


cdef inline bint filled_trivially(Py_ssize_t n, Py_ssize_t n_in, Py_ssize_t n_out, const float[::1] b,
                                  float[:, ::1] out) except -1:
    """A product with no rows, outputs or inputs needs no kernel: with no inputs every sum is
    empty and out is the bias alone. Returns whether out is done."""
    if n == 0 or n_out == 0:
        return True
    if n_in == 0:
        import numpy
        numpy.asarray(out)[...] = 0 if b is None else numpy.asarray(b)
        return True
    return False
