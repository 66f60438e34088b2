# Declarations of the C inner loops in csrc/ (see csrc/fastgpt_kernels.h for their contracts).
cdef extern from "fastgpt_kernels.h" nogil:
    int FG_ACT_GELU_TANH, FG_ACT_GELU_ERF, FG_ACT_RELU, FG_ACT_SILU, FG_ACT_QUICK_GELU
    int FG_SCALAR, FG_AVX2, FG_AVX512, FG_AMX
    int fg_simd_level()
    float fg_dot_f32(const float *a, const float *b, Py_ssize_t n, int level)
    void fg_linear_rows_f32(const float *w, const float *b, const float *x, Py_ssize_t x_stride,
                            float *y, Py_ssize_t y_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                            Py_ssize_t o_begin, Py_ssize_t o_end, int level)
    void fg_gemm_pack_x_f32(const float *x, Py_ssize_t x_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                            Py_ssize_t p_begin, Py_ssize_t p_end, float *xp, int level)
    void fg_gemm_f32(const float *xp, Py_ssize_t n_rows, Py_ssize_t n_in, const float *w, const float *b,
                     float *y, Py_ssize_t y_stride, Py_ssize_t o_begin, Py_ssize_t o_end, int level)
    void fg_kv_store(const float *src, void *dst, Py_ssize_t at, int kv_fmt, Py_ssize_t n, int level)
    void fg_attend_one(const float *q, const void *k, const void *v, int kv_fmt, Py_ssize_t d, Py_ssize_t first,
                       Py_ssize_t last, float scale, float *scores, float *out, int level)
    int fg_attend_four(const float *q, Py_ssize_t q_stride, const void *k, const void *v, int kv_fmt, Py_ssize_t d,
                       Py_ssize_t first, Py_ssize_t last0, float scale, float *scores, Py_ssize_t s_stride,
                       float *out, Py_ssize_t out_stride, int level)
    void fg_layer_norm_row_f32(const float *x, const float *g, const float *b, Py_ssize_t n,
                               float eps, float *out, int level)
    void fg_activation_f32(const float *x, float *out, Py_ssize_t n, int kind, int level)
    double fg_read_sum_f32(const float *x, Py_ssize_t n, int level)
    int FG_PEAK_F32_FMA, FG_PEAK_I8_VNNI, FG_PEAK_BF16_DOT, FG_PEAK_I8_AMX, FG_PEAK_BF16_AMX
    double fg_peak(int kind, long iters)

# Quantized weights (csrc/quant.c, fastgpt/quant.py).
cdef extern from "fastgpt_kernels.h" nogil:
    int FG_Q_BF16, FG_Q_F16, FG_Q_I8, FG_Q8_BLOCK
    int fg_quant_level()
    int fg_q8_activations(int level)
    Py_ssize_t fg_qprep_bytes(int fmt, Py_ssize_t n_rows, Py_ssize_t n_in, int level)
    int FG_PREP_ROWS
    void fg_qprep_x_rows(int fmt, const float *x, Py_ssize_t x_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                         Py_ssize_t r_begin, Py_ssize_t r_end, void *prep, int level)
    void fg_qlinear_rows(const void *w, const unsigned short *s, const unsigned short *sg, int fmt, const float *b,
                         const float *x, Py_ssize_t x_stride, const void *prep, float *y, Py_ssize_t y_stride,
                         Py_ssize_t n_rows, Py_ssize_t n_in, Py_ssize_t o_begin, Py_ssize_t o_end, int level)
    void fg_qlinear_rows_ref(const void *w, const unsigned short *s, int fmt, const float *b, const float *x,
                             Py_ssize_t x_stride, float *y, Py_ssize_t y_stride, Py_ssize_t n_rows,
                             Py_ssize_t n_in, Py_ssize_t o_begin, Py_ssize_t o_end)
    void fg_dequantize_rows(const void *w, const unsigned short *s, int fmt, Py_ssize_t n_in, Py_ssize_t o_begin,
                            Py_ssize_t o_end, float *out, int level)

# The int8 prefill GEMM in integers (csrc/qgemm.c).
cdef extern from "fastgpt_kernels.h" nogil:
    int fg_qgemm_available()
    Py_ssize_t fg_qgemm_rows_padded(Py_ssize_t n_rows)
    Py_ssize_t fg_qgemm_x_bytes(Py_ssize_t n_rows, Py_ssize_t n_in)
    Py_ssize_t fg_qgemm_tile_bytes(Py_ssize_t n_in, Py_ssize_t n_o)
    void fg_qgemm_pack_x(const float *x, Py_ssize_t x_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                         Py_ssize_t r_begin, Py_ssize_t r_end, void *xbuf)
    void fg_qgemm_pack_w(const signed char *w, const unsigned short *s, Py_ssize_t n_in, Py_ssize_t o_begin,
                         Py_ssize_t o_end, void *tile)
    void fg_qgemm(const void *tile, Py_ssize_t n_o, const void *xbuf, Py_ssize_t n_rows, Py_ssize_t n_in,
                  const float *b, float *y, Py_ssize_t y_stride)
    void fg_qgemm_ref(const signed char *w, const unsigned short *s, const float *b, const float *x,
                      Py_ssize_t x_stride, float *y, Py_ssize_t y_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                      Py_ssize_t o_begin, Py_ssize_t o_end)

# Prefill GEMMs with 16-bit weights (csrc/hgemm.c).
cdef extern from "fastgpt_kernels.h" nogil:
    int fg_bgemm_available()
    Py_ssize_t fg_bgemm_x_bytes(Py_ssize_t n_rows, Py_ssize_t n_in)
    void fg_bgemm_pack_x(const float *x, Py_ssize_t x_stride, Py_ssize_t n_rows, Py_ssize_t n_in,
                         Py_ssize_t p_begin, Py_ssize_t p_end, void *xb)
    void fg_bgemm(const void *xb, Py_ssize_t n_rows, Py_ssize_t n_in, const unsigned short *w, const float *b,
                  float *y, Py_ssize_t y_stride, Py_ssize_t o_begin, Py_ssize_t o_end)
    void fg_gemm_w16_f32(const float *xp, Py_ssize_t n_rows, Py_ssize_t n_in, const unsigned short *w, int fmt,
                         const float *b, float *y, Py_ssize_t y_stride, Py_ssize_t o_begin, Py_ssize_t o_end,
                         float *wide, int level)

# Skinny products of 16-bit weights (csrc/skinny.c) and AMX (csrc/amx.c).
cdef extern from "fastgpt_kernels.h" nogil:
    void fg_skinny_w16(const unsigned short *w, int fmt, const float *b, const float *x, Py_ssize_t x_stride,
                       float *y, Py_ssize_t y_stride, Py_ssize_t n_rows, Py_ssize_t n_in, Py_ssize_t o_begin,
                       Py_ssize_t o_end, int level)
    int fg_amx_available()

# One decode step of a GPT-2 stack in one parallel region (csrc/decode.c).
from libc.stdint cimport int64_t

cdef extern from "fastgpt_kernels.h" nogil:
    int FG_W_F32
    ctypedef struct fg_matrix:
        const void *w
        const unsigned short *s
        const unsigned short *sg
        const float *b
        Py_ssize_t n_out, n_in
        int fmt
    ctypedef struct fg_block:
        const float *ln1_g
        const float *ln1_b
        const float *ln2_g
        const float *ln2_b
        fg_matrix qkv, attn_proj, fc, proj
        void *k
        void *v
    ctypedef struct fg_decoder:
        Py_ssize_t n_layer, n_embd, n_head, head_dim, n_ff, n_slots
        float eps
        int act_kind, level, qlevel, kv_fmt
        const fg_block *blocks
        const float *lnf_g
        const float *lnf_b
        fg_matrix head
        const int64_t *start
        Py_ssize_t n_items, n_logits
        const int64_t *rows
        const int64_t *slots
        const int64_t *logit_items
        float *x
        float *h
        float *qkv
        float *attn
        float *ff
        float *last
        float *logits
        void *prep
        float *scores
        Py_ssize_t scores_stride
    Py_ssize_t fg_decode_prep_bytes(Py_ssize_t n_rows, Py_ssize_t n_embd, Py_ssize_t n_ff, int qlevel)
    void fg_decode_step(const fg_decoder *dec, Py_ssize_t n_items, const int64_t *rows, const int64_t *slots,
                        Py_ssize_t n_logits, const int64_t *logit_items, int n_threads)
