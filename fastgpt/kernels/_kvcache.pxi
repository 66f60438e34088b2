# The KV cache's arrays checked for a kernel (needs numpy as np and FG_W_F32, FG_Q_F16, FG_Q_BF16
# cimported from _csrc). fastgpt.kv_cache.KV_DTYPES: float32, float16 (np.float16) and bfloat16
# (its bit patterns in np.uint16).
cdef int kv_format(str name, object cache) except -1:
    """The kernels' format code of a cache array: FG_W_F32, FG_Q_F16 or FG_Q_BF16."""
    dtype = getattr(cache, "dtype", None)
    if dtype == np.float32:
        return FG_W_F32
    if dtype == np.float16:
        return FG_Q_F16
    if dtype == np.uint16:
        return FG_Q_BF16
    raise ValueError(f"{name}: a KV cache holds float32, float16 or bfloat16 (uint16 bits), got {dtype}")


cdef void *kv_data(object cache) except NULL:
    """The first element of a non-empty C-contiguous writable cache array (checked by the caller)."""
    cdef unsigned char[::1] flat = cache.reshape(-1).view(np.uint8)
    return &flat[0]
