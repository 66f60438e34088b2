/* One decode step of the whole GPT-2 stack in one parallel region: one new token for each of many
 * cache rows, a short prompt's tokens, or both at once (a server's step that feeds prompt pieces
 * beside its decoding rows). A token's key and value are stored in a phase of their own, before
 * any token attends, so that a prompt's tokens see each other's keys.
 *
 * Decoding a token of a 124M model makes ~50 matrix-vector products of 0.02-0.5 ms each, with
 * small ops between them. Run op by op from Python, every product pays a fork/join of the
 * thread team (~1.5 us) and the call and argument checks (~1 us), ~120 calls per token. Here the
 * team is forked once per token and the phases are separated by barriers. int8 decoding of GPT-2
 * 124M, 2 threads, interleaved with the op-by-op path: 1.20-1.32x at ~78 GB/s of read bandwidth,
 * 1.06-1.10x at ~47 GB/s.
 *
 * Prefetching each thread's band of the next matrix before a barrier (16 KB into L2), or the
 * whole next band spread over the attention phase, measured within +-2% of none in 8 A/B runs
 * at both bandwidth levels: not done.
 *
 * Every phase calls the same row kernels as the op-by-op path (fg_linear_rows_f32,
 * fg_qlinear_rows, fg_attend_one, fg_layer_norm_row_f32, fg_activation_f32), whose results
 * do not depend on the band or the number of rows, so the result is bitwise that path's: the
 * tests hold it to that.
 */
#include <math.h>

#include "fastgpt_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#define FG_BARRIER() _Pragma("omp barrier")
#else
#define FG_BARRIER() ((void)0)
#endif

static ptrdiff_t min_pd(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

/* Thread tid's band of output rows: whole groups of 16 (the largest of the skinny kernels' groups,
 * AMX's), as the op-by-op wrappers split them. */
static void band_of(ptrdiff_t n_out, int nt, int tid, ptrdiff_t *o0, ptrdiff_t *o1) {
    ptrdiff_t band = ((n_out + nt - 1) / nt + 15) / 16 * 16;
    *o0 = min_pd((ptrdiff_t)tid * band, n_out);
    *o1 = min_pd(*o0 + band, n_out);
}

static int needs_prep(const fg_matrix *m, int qlevel) {
    return m->fmt != FG_W_F32 && fg_qprep_bytes(m->fmt, 1, m->n_in, qlevel) > 0;
}

/* Rows from which a layer norm's rows are split evenly over the threads, and x's preparation after
 * it shared by parts (fg_qprep_x_part), at the cost of a barrier between the two; below, each unit
 * of FG_PREP_ROWS rows is normed and prepared by one thread, and a decode step of one row pays no
 * extra barrier. With units only, a step of up to 16 rows left the other thread waiting: at 16 rows
 * (int8, GPT-2 124M, 2 threads, each phase timed per thread) the norms and preparations done by one
 * thread took ~4% of the step. Split (x's preparations before the residual products too), 8 runs
 * interleaved: 16-row decode steps 0.95x the time (median of the runs' ratios), a 16-token prompt
 * 1.60 -> 1.53 decode steps, one-row steps unchanged (1.01x). */
#define SPLIT_NORM_ROWS 8

/* x (n rows) prepared for m's kernel (int8 and bfloat16 on AMX, int8 on AVX512-VNNI), this
 * thread's part of it. Callers check needs_prep first: they wait for the preparation only then. */
static void prep_rows(const fg_decoder *d, const fg_matrix *m, const float *x, ptrdiff_t n, int nt, int tid) {
    fg_qprep_x_part(m->fmt, x, m->n_in, n, m->n_in, tid, nt, d->prep, d->qlevel);
}

/* y = x @ m.T + b for x's n rows, over this thread's band [o0, o1). */
static void product(const fg_decoder *d, const fg_matrix *m, const float *x, ptrdiff_t n, float *y, int nt, int tid,
                    ptrdiff_t *o0, ptrdiff_t *o1) {
    band_of(m->n_out, nt, tid, o0, o1);
    if (*o0 >= *o1 || n == 0) return;
    if (m->fmt == FG_W_F32)
        fg_linear_rows_f32((const float *)m->w, m->b, x, m->n_in, y, m->n_out, n, m->n_in, *o0, *o1, d->level);
    else
        fg_qlinear_rows(m->w, m->s, m->sg, m->fmt, m->b, x, m->n_in, d->prep, y, m->n_out, n, m->n_in, *o0, *o1,
                        d->qlevel);
}

/* x[:, o0:o1] += y[:, o0:o1]: the residual add, on the band this thread just wrote. */
static void add_band(const fg_decoder *d, float *x, const float *y, ptrdiff_t o0, ptrdiff_t o1) {
    for (ptrdiff_t r = 0; r < d->n_items; r++)
        for (ptrdiff_t o = o0; o < o1; o++) x[r * d->n_embd + o] = x[r * d->n_embd + o] + y[r * d->n_embd + o];
}

/* &kv[at] for a cache of kv_fmt elements */
static const void *kv_row(const void *kv, ptrdiff_t at, int kv_fmt) {
    return (const char *)kv + at * (kv_fmt == FG_W_F32 ? 4 : 2);
}

/* Keys that item b's token attends over: its row's visible slots up to its own. */
static ptrdiff_t item_keys(const fg_decoder *d, ptrdiff_t b) {
    const ptrdiff_t r = d->rows[b], pos = d->slots[b];
    return pos + 1 - (d->start[r] <= pos ? d->start[r] : pos);
}

/* Every item appends its key and value at its row's slot; split by count (any split will do). */
static void store_items(const fg_decoder *d, const fg_block *blk, int nt, int tid) {
    const ptrdiff_t C = d->n_embd, H = d->n_head, D = d->head_dim, S = d->n_slots;
    for (ptrdiff_t i = tid; i < d->n_items * H; i += nt) {
        const ptrdiff_t b = i / H, hh = i % H, at = (d->rows[b] * H + hh) * S * D + d->slots[b] * D;
        const float *q = d->qkv + b * 3 * C + hh * D;
        fg_kv_store(q + C, blk->k, at, d->kv_fmt, D, d->level);
        fg_kv_store(q + 2 * C, blk->v, at, d->kv_fmt, D, d->level);
    }
}

/* Whether items [b, b + 4) are four tokens of one row at consecutive slots, none before the row's
 * start: four of a prompt's tokens (or of a piece of one) going in this step. */
static int opens_four(const fg_decoder *d, ptrdiff_t b) {
    if (b + 4 > d->n_items) return 0;
    const ptrdiff_t r = d->rows[b], pos = d->slots[b];
    if (d->start[r] > pos) return 0;
    for (ptrdiff_t i = 1; i < 4; i++)
        if (d->rows[b + i] != r || d->slots[b + i] != pos + i) return 0;
    return 1;
}

/* Each (item, head) attends over its row's visible slots up to its own. The keys of a prompt's
 * tokens in this step were stored by store_items before the barrier that precedes this. Items sit
 * at different lengths (a server's batch, a prompt), so the threads split the units by keys read,
 * not by count: thread tid takes the units that start in its share of the total. A unit is one
 * (item, head), or four (opens_four) with one head: fg_attend_four reads each key and value once
 * for the four queries, as the op-by-op path does for a prompt, with the same bits per query as
 * fg_attend_one. A 64-token prompt in one fused call (int8 GPT-2 124M, 2 threads) spent ~7% of
 * its time here one query at a time. */
static void attend_items(const fg_decoder *d, const fg_block *blk, int nt, int tid) {
    const ptrdiff_t C = d->n_embd, H = d->n_head, D = d->head_dim, S = d->n_slots;
    const float scale = (float)(1.0 / sqrt((double)D));
    float *scores = d->scores + tid * d->scores_stride;
    ptrdiff_t total = 0, done = 0;
    for (ptrdiff_t b = 0; b < d->n_items; b++) total += H * item_keys(d, b);
    const ptrdiff_t lo = total * tid / nt, hi = total * (tid + 1) / nt;
    for (ptrdiff_t b = 0; b < d->n_items;) {
        const ptrdiff_t r = d->rows[b], pos = d->slots[b], n = opens_four(d, b) ? 4 : 1;
        ptrdiff_t keys = 0; /* of the unit's items, per head */
        for (ptrdiff_t i = 0; i < n; i++) keys += item_keys(d, b + i);
        for (ptrdiff_t hh = 0; hh < H; hh++, done += keys) {
            if (done < lo || done >= hi) continue;
            const ptrdiff_t at = (r * H + hh) * S * D;
            const void *k = kv_row(blk->k, at, d->kv_fmt), *v = kv_row(blk->v, at, d->kv_fmt);
            const float *q = d->qkv + b * 3 * C + hh * D;
            float *out = d->attn + b * C + hh * D;
            if (n == 4 && fg_attend_four(q, 3 * C, k, v, d->kv_fmt, D, d->start[r], pos + 1, scale, scores, S, out, C,
                                         d->level))
                continue;
            for (ptrdiff_t i = 0; i < n; i++) {
                const ptrdiff_t keys_i = item_keys(d, b + i);
                fg_attend_one(q + i * 3 * C, k, v, d->kv_fmt, D, pos + i + 1 - keys_i, pos + i + 1, scale, scores,
                              out + i * C, d->level);
            }
        }
        b += n;
    }
}

/* x += in @ m.T + b (into h first, as the op-by-op path does). */
static void residual_product(const fg_decoder *d, const fg_matrix *m, const float *in, int nt, int tid) {
    ptrdiff_t o0, o1;
    if (needs_prep(m, d->qlevel)) {
        prep_rows(d, m, in, d->n_items, nt, tid);
        FG_BARRIER();
    }
    product(d, m, in, d->n_items, d->h, nt, tid, &o0, &o1);
    add_band(d, d->x, d->h, o0, o1);
    FG_BARRIER();
}

/* out[r] = layer_norm(x[pick ? pick[r] : r]) * g + b for r in [r0, r1). */
static void norm_rows(const fg_decoder *d, const float *g, const float *b, const int64_t *pick, ptrdiff_t r0,
                      ptrdiff_t r1, float *out) {
    for (ptrdiff_t r = r0; r < r1; r++)
        fg_layer_norm_row_f32(d->x + (pick ? pick[r] : r) * d->n_embd, g, b, d->n_embd, d->eps, out + r * d->n_embd,
                              d->level);
}

/* m's input: the n rows normed (norm_rows), prepared for m's kernel; then the team waits. Few rows:
 * split by units of FG_PREP_ROWS rows, each prepared by the thread that normed it. More: rows split
 * evenly, then the preparation in parts. */
static void normed_input(const fg_decoder *d, const float *g, const float *b, const fg_matrix *m, const int64_t *pick,
                         ptrdiff_t n, float *out, int nt, int tid) {
    if (n >= SPLIT_NORM_ROWS && nt > 1) {
        norm_rows(d, g, b, pick, n * tid / nt, n * (tid + 1) / nt, out);
        if (needs_prep(m, d->qlevel)) {
            FG_BARRIER();
            prep_rows(d, m, out, n, nt, tid);
        }
    } else {
        for (ptrdiff_t r0 = tid * FG_PREP_ROWS; r0 < n; r0 += nt * FG_PREP_ROWS) {
            const ptrdiff_t r1 = min_pd(r0 + FG_PREP_ROWS, n);
            norm_rows(d, g, b, pick, r0, r1, out);
            if (needs_prep(m, d->qlevel)) fg_qprep_x_rows(m->fmt, out, m->n_in, n, m->n_in, r0, r1, d->prep, d->qlevel);
        }
    }
    FG_BARRIER();
}

static void decode_thread(const fg_decoder *d, int nt, int tid) {
    const ptrdiff_t F = d->n_ff;
    ptrdiff_t o0, o1;
    for (ptrdiff_t layer = 0; layer < d->n_layer; layer++) {
        const fg_block *blk = &d->blocks[layer];

        normed_input(d, blk->ln1_g, blk->ln1_b, &blk->qkv, NULL, d->n_items, d->h, nt, tid);
        product(d, &blk->qkv, d->h, d->n_items, d->qkv, nt, tid, &o0, &o1);
        FG_BARRIER();
        store_items(d, blk, nt, tid);
        FG_BARRIER();
        attend_items(d, blk, nt, tid);
        FG_BARRIER();
        residual_product(d, &blk->attn_proj, d->attn, nt, tid);

        normed_input(d, blk->ln2_g, blk->ln2_b, &blk->fc, NULL, d->n_items, d->h, nt, tid);
        product(d, &blk->fc, d->h, d->n_items, d->ff, nt, tid, &o0, &o1);
        for (ptrdiff_t r = 0; r < d->n_items && o0 < o1; r++)
            fg_activation_f32(d->ff + r * F + o0, d->ff + r * F + o0, o1 - o0, d->act_kind, d->level);
        FG_BARRIER();
        residual_product(d, &blk->proj, d->ff, nt, tid);
    }
    normed_input(d, d->lnf_g, d->lnf_b, &d->head, d->logit_items, d->n_logits, d->last, nt, tid);
    product(d, &d->head, d->last, d->n_logits, d->logits, nt, tid, &o0, &o1);
}

ptrdiff_t fg_decode_prep_bytes(ptrdiff_t n_rows, ptrdiff_t n_embd, ptrdiff_t n_ff, int qlevel) {
    ptrdiff_t most = 0;
    for (int fmt = FG_Q_BF16; fmt <= FG_Q_I8; fmt++) {
        ptrdiff_t a = fg_qprep_bytes(fmt, n_rows, n_embd, qlevel), b = fg_qprep_bytes(fmt, n_rows, n_ff, qlevel);
        most = a > most ? a : most;
        most = b > most ? b : most;
    }
    return most;
}

void fg_decode_step(const fg_decoder *dec, ptrdiff_t n_items, const int64_t *rows, const int64_t *slots,
                    ptrdiff_t n_logits, const int64_t *logit_items, int n_threads) {
    fg_decoder d = *dec; /* this step's items: the first n_items rows of the workspace */
    d.n_items = n_items;
    d.rows = rows;
    d.slots = slots;
    d.n_logits = n_logits;
    d.logit_items = logit_items;
#ifdef _OPENMP
#pragma omp parallel num_threads(n_threads)
    decode_thread(&d, omp_get_num_threads(), omp_get_thread_num());
#else
    (void)n_threads;
    decode_thread(&d, 1, 0);
#endif
}
