# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A decode step of the whole model in one call: csrc/decode.c runs every block, the final norm
and the LM head in one parallel region, the phases separated by barriers.

A Decoder is built once per (weights, cache, workspace, thread count): it checks every array's
dtype, shape and contiguity here and keeps the pointers, so that a step checks only the rows and
slots it writes and the cache's left padding before it releases the GIL. It holds references to the
arrays, never to the cache or the model, and uses the arrays the weights held when it was built
(the backend builds a new one for another weights object, cache, workspace or thread count).
"""
import numpy as np

from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport calloc, free

from ._csrc cimport (FG_AMX, FG_Q8_BLOCK, FG_Q_BF16, FG_Q_F16, FG_Q_I8, FG_W_F32, fg_block, fg_decode_prep_bytes,
                     fg_decode_step, fg_decoder, fg_matrix, fg_quant_level, fg_simd_level)
from ._elementwise import ACTIVATION_KINDS

include "_check.pxi"
include "_kvcache.pxi"
include "_qweight.pxi"

cdef int SIMD_LEVEL = fg_simd_level()
cdef int QUANT_LEVEL = fg_quant_level()


cdef const float *float_pointer(str name, object arr, tuple shape, list keep) except? NULL:
    """A float32 C-contiguous array of `shape` (None allowed for an optional bias)."""
    cdef const float[::1] flat
    if arr is None:
        return NULL
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != shape or not arr.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous float32 array of shape {shape}, got "
                         f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    keep.append(arr)
    if arr.size == 0:
        return NULL
    flat = arr.reshape(-1)
    return &flat[0]


cdef float *buffer_pointer(str name, object arr, Py_ssize_t rows, Py_ssize_t cols, list keep) except NULL:
    """The first `rows` rows of a writable float32 workspace buffer with `cols` columns."""
    cdef float[:, ::1] view
    if (not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] < rows
            or arr.shape[1] != cols or not arr.flags.c_contiguous or not arr.flags.writeable):
        raise ValueError(f"workspace {name}: expected a writable C-contiguous float32 array of at least "
                         f"({rows}, {cols}), got {getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    keep.append(arr)
    view = arr
    return &view[0, 0]


cdef int fill_matrix(fg_matrix *m, str name, object w, object b, Py_ssize_t n_out, Py_ssize_t n_in,
                     list keep, int qlevel) except -1:
    cdef const float[:, ::1] w32
    cdef const void *wp = NULL
    cdef const unsigned short *sp = NULL
    if n_out == 0 or n_in == 0:
        raise ValueError(f"{name}: the fused decode step needs non-empty matrices, got ({n_out}, {n_in})")
    m.n_out, m.n_in = n_out, n_in
    m.b = float_pointer(name.replace("_w", "_b"), b, (n_out,), keep)
    if isinstance(w, np.ndarray):
        if w.dtype != np.float32 or w.shape != (n_out, n_in) or not w.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous float32 array of shape {(n_out, n_in)}, "
                             f"got {w.dtype} {w.shape}")
        w32 = w
        m.w, m.s, m.sg, m.fmt = &w32[0, 0], NULL, NULL, FG_W_F32
    else:
        if tuple(w.data.shape) != (n_out, n_in):
            raise ValueError(f"{name}: expected shape {(n_out, n_in)}, got {w.format} {w.data.shape}")
        m.fmt = check_weight(w, n_in, &wp, &sp)
        m.w, m.s = wp, sp
        m.sg = grouped_scales(w, m.fmt, qlevel, keep)
        keep.append(w.scales)
        w = w.data
    keep.append(w)
    return 0


cdef class Decoder:
    """One token per row through every block, ln_f and the head (see the module docstring).

    weights: fastgpt.weights.GPT2Weights (matrices float32 or QuantizedWeight); k_cache, v_cache:
    (n_layer, B, n_head, S, head_dim) float32, float16 or bfloat16 bits (uint16); start: (B,) int64, the cache's left padding (read
    at every step); workspace: a fastgpt.kv_cache.Workspace (its last and logits: B rows). A step runs up to
    the workspace's rows of tokens ("items"): one new token for each of several cache rows (a
    decode step), a prompt's tokens in one row, or both; logits for up to B of them. max_level caps
    the SIMD level (0 scalar, 1 AVX2, 2 AVX-512, 3 AMX), for testing the fallbacks.
    """
    cdef fg_decoder dec
    cdef fg_block *blocks
    cdef list keep                  # every array whose memory the pointers above point into
    cdef const int64_t[::1] start
    cdef int64_t[::1] row_next        # a step's slot check per cache row, without allocating
    cdef readonly int n_threads
    cdef readonly Py_ssize_t n_rows, n_items, n_slots
    cdef readonly object logits     # the workspace's (B, vocab) buffer that step() fills

    def __cinit__(self):
        self.blocks = NULL

    def __dealloc__(self):
        free(self.blocks)

    def __init__(self, weights, config, k_cache, v_cache, start, workspace, int n_threads, int max_level=3):
        cdef Py_ssize_t L = config.n_layer, C = config.n_embd, H = config.n_head, F = config.d_ff
        cdef Py_ssize_t V = config.vocab_size, D, B, N, S, layer, prep_bytes
        cdef char *kc
        cdef char *vc
        cdef Py_ssize_t layer_bytes
        cdef int kv_fmt
        cdef int qlevel = min(QUANT_LEVEL, max_level)
        cdef unsigned char[::1] prep
        cdef float[:, ::1] scores
        check_threads(n_threads)
        if config.activation_function not in ACTIVATION_KINDS:
            raise ValueError(f"unknown activation {config.activation_function!r}")
        if len(weights.blocks) != L:
            raise ValueError(f"weights have {len(weights.blocks)} blocks, config says n_layer={L}")
        D = C // H
        self.keep = []
        start = np.asarray(start)
        if start.dtype != np.int64 or start.ndim != 1 or start.shape[0] == 0:
            raise ValueError(f"start: expected a non-empty 1-d int64 array, got {start.dtype} {start.shape}")
        B = start.shape[0]
        self.start = start
        self.row_next = np.zeros(B, np.int64)
        kv_fmt = kv_format("k_cache", k_cache)
        for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
            if (not isinstance(cache, np.ndarray) or kv_format(name, cache) != kv_fmt or cache.ndim != 5
                    or cache.shape[:3] != (L, B, H) or cache.shape[4] != D or cache.shape[3] == 0
                    or not cache.flags.c_contiguous or not cache.flags.writeable):
                raise ValueError(f"{name}: expected a writable C-contiguous {k_cache.dtype} array of shape "
                                 f"({L}, {B}, {H}, slots, {D}), got {getattr(cache, 'dtype', type(cache))} "
                                 f"{getattr(cache, 'shape', '')}")
        if k_cache.shape != v_cache.shape:
            raise ValueError(f"k_cache {k_cache.shape} and v_cache {v_cache.shape} differ")
        S = k_cache.shape[3]
        self.n_rows, self.n_slots, self.n_threads = B, S, n_threads
        self.keep += [k_cache, v_cache]

        free(self.blocks)               # __init__ called again on the same object
        self.blocks = <fg_block *>calloc(max(L, 1), sizeof(fg_block))
        if self.blocks == NULL:
            raise MemoryError("could not allocate the decoder's block table")
        if L > 0:
            kc, vc = <char *>kv_data(k_cache), <char *>kv_data(v_cache)
            layer_bytes = k_cache.nbytes // L
        for layer in range(L):
            blk = weights.blocks[layer]
            p = f"blocks.{layer}."
            self.blocks[layer].ln1_g = float_pointer(p + "ln_1_g", blk.ln_1_g, (C,), self.keep)
            self.blocks[layer].ln1_b = float_pointer(p + "ln_1_b", blk.ln_1_b, (C,), self.keep)
            self.blocks[layer].ln2_g = float_pointer(p + "ln_2_g", blk.ln_2_g, (C,), self.keep)
            self.blocks[layer].ln2_b = float_pointer(p + "ln_2_b", blk.ln_2_b, (C,), self.keep)
            fill_matrix(&self.blocks[layer].qkv, p + "attn_qkv_w", blk.attn_qkv_w, blk.attn_qkv_b, 3 * C, C, self.keep,
                        qlevel)
            fill_matrix(&self.blocks[layer].attn_proj, p + "attn_proj_w", blk.attn_proj_w, blk.attn_proj_b, C, C,
                        self.keep, qlevel)
            fill_matrix(&self.blocks[layer].fc, p + "mlp_fc_w", blk.mlp_fc_w, blk.mlp_fc_b, F, C, self.keep, qlevel)
            fill_matrix(&self.blocks[layer].proj, p + "mlp_proj_w", blk.mlp_proj_w, blk.mlp_proj_b, C, F, self.keep,
                        qlevel)
            self.blocks[layer].k = kc + layer * layer_bytes
            self.blocks[layer].v = vc + layer * layer_bytes
        fill_matrix(&self.dec.head, "lm_head", weights.lm_head, None, V, C, self.keep, qlevel)

        self.dec.n_layer, self.dec.n_embd, self.dec.n_head = L, C, H
        self.dec.head_dim, self.dec.n_ff, self.dec.n_slots = D, F, S
        self.dec.eps = config.layer_norm_epsilon
        self.dec.act_kind = ACTIVATION_KINDS[config.activation_function]
        self.dec.level = min(SIMD_LEVEL, max_level)
        self.dec.qlevel = qlevel
        self.dec.kv_fmt = kv_fmt
        self.dec.blocks = self.blocks
        self.dec.lnf_g = float_pointer("ln_f_g", weights.ln_f_g, (C,), self.keep)
        self.dec.lnf_b = float_pointer("ln_f_b", weights.ln_f_b, (C,), self.keep)
        self.dec.start = &self.start[0]
        ws = workspace
        N = self.n_items = max(1, ws.x.shape[0] if isinstance(ws.x, np.ndarray) and ws.x.ndim == 2 else 0)
        self.dec.x = buffer_pointer("x", ws.x, N, C, self.keep)
        self.dec.h = buffer_pointer("h", ws.h, N, C, self.keep)
        self.dec.qkv = buffer_pointer("qkv", ws.qkv, N, 3 * C, self.keep)
        self.dec.attn = buffer_pointer("attn", ws.attn, N, C, self.keep)
        self.dec.ff = buffer_pointer("ff", ws.ff, N, F, self.keep)
        self.dec.last = buffer_pointer("last", ws.last, B, C, self.keep)
        self.dec.logits = buffer_pointer("logits", ws.logits, B, V, self.keep)
        if ws.logits.shape[0] != B or ws.last.shape[0] != B:
            raise ValueError(f"workspace last/logits must have {B} rows, got {ws.last.shape[0]}/{ws.logits.shape[0]}")
        self.logits = ws.logits

        # the prepared x of the quantized kernels (int8 / bfloat16), 64-byte aligned
        prep_bytes = fg_decode_prep_bytes(N, C, F, self.dec.qlevel)
        prep_array = np.zeros(prep_bytes + 64, np.uint8)
        self.keep.append(prep_array)
        prep = prep_array
        self.dec.prep = &prep[(-<uintptr_t>&prep[0]) % 64]
        # per thread: four rows of S scores (a prompt's queries go four at a time, fg_attend_four)
        scores_array = np.zeros((n_threads, 4 * S), np.float32)
        self.keep.append(scores_array)
        scores = scores_array
        self.dec.scores = &scores[0, 0]
        self.dec.scores_stride = 4 * S

    def step(self, const int64_t[::1] rows, const int64_t[::1] slots, const int64_t[::1] logit_items=None):
        """Run item b = a token of cache row rows[b] at slot slots[b] (x's first len(rows) rows of
        the workspace hold their embeddings) through the model. The items of one cache row must
        sit at consecutive slots, in order. Returns the workspace's logits (n, vocab) of the items
        logit_items (default: every item, one per row of the cache at most), overwritten by the
        next step."""
        cdef Py_ssize_t b, j, r, n = rows.shape[0], n_logits
        cdef const int64_t *picked = NULL
        if n == 0 or n > self.n_items or slots.shape[0] != n:
            raise ValueError(f"a step runs 1 to {self.n_items} tokens with one slot each, got {n} rows and "
                             f"{slots.shape[0]} slots")
        n_logits = n if logit_items is None else logit_items.shape[0]
        if n_logits > self.n_rows:
            raise ValueError(f"a step gives the logits of at most {self.n_rows} tokens (the cache's rows), "
                             f"asked for {n_logits}")
        if logit_items is not None:
            for j in range(n_logits):
                if logit_items[j] < 0 or logit_items[j] >= n:
                    raise ValueError(f"logit_items[{j}]={logit_items[j]} is not one of the step's {n} tokens")
            if n_logits:
                picked = &logit_items[0]
        self.row_next[:] = -1
        for b in range(n):
            r = rows[b]
            if r < 0 or r >= self.n_rows:
                raise ValueError(f"rows[{b}]={r} is not a row of the cache's {self.n_rows}")
            if self.row_next[r] >= 0 and slots[b] != self.row_next[r]:
                raise ValueError(f"slot {slots[b]} of row {r} does not follow the step's previous token of that "
                                 f"row (slot {self.row_next[r] - 1})")
            if slots[b] < 0 or slots[b] >= self.n_slots:
                raise ValueError(f"slot {slots[b]} of row {r} is outside the cache's {self.n_slots} slots")
            if self.start[r] < 0 or self.start[r] >= self.n_slots:
                raise ValueError(f"start[{r}]={self.start[r]} is outside [0, {self.n_slots})")
            self.row_next[r] = slots[b] + 1
        with nogil:
            fg_decode_step(&self.dec, n, &rows[0], &slots[0], n_logits, picked, self.n_threads)
        return self.logits[:n_logits]
