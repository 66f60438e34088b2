# A QuantizedWeight's arrays checked for a kernel (needs FG_Q_*, FG_Q8_BLOCK and FG_AMX cimported from _csrc,
# and numpy as np).
FORMAT_CODES = {"bfloat16": FG_Q_BF16, "float16": FG_Q_F16, "int8": FG_Q_I8}


cdef int check_weight(object w, Py_ssize_t n_in, const void **wp, const unsigned short **sp) except -1:
    """Check w's arrays (format, dtypes, shapes) against n_in; set the data / scale pointers."""
    cdef const unsigned short[:, ::1] w16
    cdef const signed char[:, ::1] w8
    cdef const unsigned short[:, ::1] s16
    fmt = FORMAT_CODES.get(w.format)
    if fmt is None:
        raise ValueError(f"unknown quantized format {w.format!r}; expected one of {', '.join(FORMAT_CODES)}")
    data = w.data
    if data.ndim != 2 or data.shape[1] != n_in:
        raise ValueError(f"x has {n_in} features but the weight has shape {data.shape}; it must be [out, in]")
    sp[0] = NULL
    if fmt == FG_Q_I8:
        w8 = data                                       # dtype int8, C-contiguous, or TypeError/ValueError
        if n_in % FG_Q8_BLOCK:
            raise ValueError(f"int8 weights need the input width to be a multiple of {FG_Q8_BLOCK}, got {n_in}")
        s16 = w.scales
        if s16.shape[0] != data.shape[0] or s16.shape[1] != n_in // FG_Q8_BLOCK:
            raise ValueError(f"int8 scales must have shape ({data.shape[0]}, {n_in // FG_Q8_BLOCK}), "
                             f"got ({s16.shape[0]}, {s16.shape[1]})")
        wp[0] = &w8[0, 0] if w8.shape[0] > 0 else NULL
        if s16.shape[0] > 0 and s16.shape[1] > 0:
            sp[0] = &s16[0, 0]
    else:
        w16 = data
        wp[0] = &w16[0, 0] if w16.shape[0] > 0 and n_in > 0 else NULL
    return fmt


cdef const unsigned short *grouped_scales(object w, int fmt, int level, list keep) except? NULL:
    """int8 on AMX: w's scales by groups of 16 rows (QuantizedWeight.scales_by_group), checked
    against w's shape; NULL otherwise (the kernel then groups them itself, per call)."""
    cdef const unsigned short[:, :, ::1] g
    if fmt != FG_Q_I8 or level < FG_AMX or not hasattr(w, "scales_by_group"):
        return NULL
    arr = w.scales_by_group()
    want = ((w.data.shape[0] + 15) // 16, w.data.shape[1] // FG_Q8_BLOCK, 16)
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint16 or arr.shape != want:
        raise ValueError(f"int8 grouped scales must be a uint16 array of shape {want}, got "
                         f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    g = arr                                             # C-contiguous, or ValueError
    if keep is not None:
        keep.append(arr)
    return &g[0, 0, 0] if g.shape[0] > 0 and g.shape[1] > 0 else NULL
