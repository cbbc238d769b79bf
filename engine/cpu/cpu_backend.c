/* cpu_backend.c — the CPU backend: a Llama-family forward pass over a paged KV pool, with the
 * weights used in place (GGUF views) and every heavy operation spread over a persistent pool.
 *
 * Design notes:
 * 1. One step = one parallel region (threadpool.h). All tokens of all sequences of the batch go
 *    through each projection together (one matrix product with M = tokens in the step), so each
 *    weight row is read once per step whatever the batch; attention then runs per sequence, per
 *    head, per tile of query tokens, causal over the sequence's context in the pool. Rows and
 *    attention tasks are claimed dynamically.
 * 2. Few barriers (each one stalls when a thread is descheduled): four per layer, only where
 *    rows other threads wrote are read (after attention, wo, gate/up, down). Everything else is
 *    done where it needs no barrier: every thread normalises and quantises a matrix input for
 *    all tokens itself into its own buffer (tiny next to the product), the owner of q/k/v rows
 *    rotates them and writes K/V into the pool, the owner of gate/up rows applies SiLU·up,
 *    residual adds happen in the products, and attention of a KV head group waits on a count
 *    of that group's finished q/k/v chunks instead of a barrier.
 * 3. Matrix inputs are quantised to 8-bit blocks when any weight reading them is quantised
 *    (kernels.h); float weights read the float rows directly.
 * 4. The step writes the K/V of its tokens into the pool before any attention reads it, so a
 *    prefill chunk sees its own earlier tokens and the sequence's cached context alike.
 * 5. Only the rows asked for (the last token, or every token, per sequence) go through the final
 *    norm and the LM head, written straight into the caller's logits.
 * 6. Workspace grows geometrically past the largest step seen and is kept; the KV pool is allocated
 *    by kv_alloc.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/threadpool.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "sched/status.h"

#define ENG_CPU_CHUNK_ROWS 16 /* weight rows per claimed matrix-product chunk */
#define ENG_CPU_CHUNK_MACS (1 << 18) /* products a matrix-product chunk grows to (chunk_rows) */
#define ENG_CPU_SHARED_PREP_ROWS 8   /* steps of this many rows prepare each product input once (prep_input) */
#define ENG_CPU_ATT_QTILE ENG_CPU_ATTEND_MAX_Q /* query tokens per claimed attention task */
#define ENG_CPU_LONG_STEP 64 /* steps of this many tokens or more keep a thread count of their own
                              * (threadpool.h: kinds of regions) */
/* floats of one thread's eng_cpu_attend scratch for contexts up to ctx, `heads` heads a task */
#define ATT_SCRATCH(ctx, heads) ENG_CPU_ATTEND_SCRATCH(ENG_CPU_ATT_QTILE, heads, ctx)
#define ENG_CPU_ALIGN 64
#define ENG_CPU_LAYER_MM 7 /* products per layer: q, k, v, output, gate, up, down */

typedef struct eng_cpu_ctx {
    const eng_model_t *m;
    const eng_cpu_kernels_t *k;
    eng_cpu_pool_t *pool;
    eng_cpu_kv_t kv;              /* data NULL until kv_alloc */
    int kmax;                     /* widest matrix input: max(dim, ffn, n_heads * head_dim) */
    /* workspace for cap_tok tokens, cap_seq sequences and cap_ctx positions (one allocation) */
    void *ws;
    int cap_tok, cap_seq, cap_ctx;
    float *x;                     /* (cap_tok, dim) residual stream */
    float *xn;                    /* (n_threads, cap_tok, dim) each thread's normalised rows */
    float *att;                   /* (cap_tok, n_heads * head_dim) attention output */
    float *q;                     /* (cap_tok, n_heads * head_dim) */
    float *kb, *vb;               /* (cap_tok, n_kv_heads * head_dim) */
    float *hg, *hu;               /* (cap_tok, ffn) gate and up */
    void *xq;                     /* (n_threads, cap_tok, eng_cpu_q8_row_bytes(kmax)) each thread's
                                   * copy of the current input, quantised */
    float *rope;                  /* (cap_tok, 2 head_dim) rotation table per token (ops.h) */
    float *scores;                /* (n_threads, ATT_SCRATCH(cap_ctx, att_heads)) attention scratch */
    int32_t *tok_seq;             /* (cap_tok) sequence of each token */
    int32_t *rows;                /* (cap_tok) tokens whose logits are returned */
    int32_t *seq_first;           /* (cap_seq + 1) first token of each sequence */
    int32_t *task_first;          /* (cap_seq + 1) first attention tile of each sequence */
    atomic_int *ready;            /* (n_kv_heads) q/k/v chunks finished per KV head group this step */
    float *glogits;               /* (cap_glogits, vocab) forward_greedy's and forward_sample's rows */
    int cap_glogits;
    const void **packed;          /* (n_layers * ENG_CPU_LAYER_MM + 1) each product's weight packed for the
                                   * kernels (pack_weights), or NULL: read in the file's layout */
    void *packed_data;            /* the allocation behind them */
    eng_sampler_ws_t **sws;       /* (n_sws) forward_sample's sampler scratch per thread, made on first use */
    int n_sws;
    char err[256];
} eng_cpu_ctx_t;

/* one step, shared by the threads of its region */
typedef struct eng_cpu_step {
    eng_cpu_ctx_t *c;
    const eng_batch_t *batch;
    int n_tok, n_rows;
    float *logits;                /* (n_rows, vocab) */
} eng_cpu_step_t;

/* one matrix product of a group sharing an input */
typedef struct eng_cpu_mm {
    const eng_tensor_t *w;
    const void *packed;           /* w's data packed (eng_cpu_pack16), or NULL */
    float *out;                   /* (n_tok, w->ne[1]) */
    int accumulate;
} eng_cpu_mm_t;

#define HUGE_PAGE ((size_t)2 << 20)

/* n bytes at a multiple of ENG_CPU_ALIGN. A buffer of a huge page or more starts on a huge-page
 * boundary and asks the kernel for transparent huge pages (madvise; a no-op where THP is off): the
 * KV pool is read a block at a time, one 4 KiB page per block, layer and head, so with small pages
 * attention over a long context takes a TLB miss every few KiB it reads. */
static void *aligned_alloc64(size_t n)
{
    size_t align = n >= HUGE_PAGE ? HUGE_PAGE : ENG_CPU_ALIGN;
    char *p = sl_malloc(n + align + sizeof(void *));
    if (!p)
        return NULL;
    uintptr_t a = ((uintptr_t)p + sizeof(void *) + align - 1) & ~(uintptr_t)(align - 1);
    ((void **)a)[-1] = p;
    if (align == HUGE_PAGE)
        madvise((void *)a, n & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);
    return (void *)a;
}

static void aligned_free(void *a)
{
    if (a)
        sl_free(((void **)a)[-1]);
}

static size_t round64(size_t n)
{
    return (n + ENG_CPU_ALIGN - 1) & ~(size_t)(ENG_CPU_ALIGN - 1);
}

/* ---- the forward pass, run by every thread of the pool ------------------------------------- */

static int any_quantized(const eng_cpu_mm_t *mm, int n_mm)
{
    for (int i = 0; i < n_mm; i++)
        if (eng_cpu_type_quantized(mm[i].w->type))
            return 1;
    return 0;
}

/* Thread ith's quantised input rows. */
static char *thread_xq(const eng_cpu_ctx_t *c, int ith)
{
    return (char *)c->xq + (size_t)ith * c->cap_tok * eng_cpu_q8_row_bytes(c->kmax);
}

/* Whose copy of a product's input of n_rows rows thread ith reads: its own, or, for steps of
 * ENG_CPU_SHARED_PREP_ROWS rows or more, thread 0's, which all threads prepare together. */
static int prep_shared(int n_rows)
{
    return n_rows >= ENG_CPU_SHARED_PREP_ROWS;
}

static int prep_owner(int n_rows, int ith)
{
    return prep_shared(n_rows) ? 0 : ith;
}

/* A matrix input: rows rows[i] (or i when rows is NULL) of src (n floats each), normalised by
 * `norm` when given, quantised when `quant`. A step of few rows has every thread make its own copy
 * of every row, so no barrier separates it from the product; a step of many rows is split over
 * the threads into one copy, then a barrier (each thread normalising and quantising every row was
 * 10% of a 512-token prompt and 7% of a 16-sequence decode step, and read every row across cores).
 * Every call follows a barrier, so no thread still reads the copy it overwrites. Returns the float
 * rows. */
static const float *prep_input(eng_cpu_ctx_t *c, int ith, int nth, const float *src, const int32_t *rows,
                               int n_rows, int n, const float *norm, int quant)
{
    const int shared = prep_shared(n_rows), owner = prep_owner(n_rows, ith);
    float *xn = c->xn + (size_t)owner * c->cap_tok * c->m->cfg.dim;
    const size_t qb = eng_cpu_q8_row_bytes(c->kmax);
    char *xq = thread_xq(c, owner);
    int lo = 0, hi = n_rows;
    if (shared)
        eng_cpu_split(n_rows, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        const float *row = src + (size_t)(rows ? rows[t] : t) * n;
        if (norm) {
            eng_cpu_rmsnorm(row, norm, xn + (size_t)t * n, n, c->m->cfg.norm_eps);
            row = xn + (size_t)t * n;
        }
        if (quant)
            c->k->quantize_q8(row, xq + (size_t)t * qb, n);
    }
    if (shared)
        eng_cpu_pool_barrier(c->pool);
    return norm ? xn : src;
}

/* Rows [r0, r1) of one product for every token, reading thread ith's input (prep_input). */
static void mm_rows(eng_cpu_ctx_t *c, int ith, const eng_cpu_mm_t *mm, const float *xf, int n_tok, int r0, int r1)
{
    const eng_tensor_t *w = mm->w;
    const int kk = (int)w->ne[0], quant = eng_cpu_type_quantized(w->type);
    eng_cpu_gemm_t g = {
        .type = w->type,
        .w = mm->packed ? mm->packed : w->data,
        .packed = mm->packed != NULL,
        .w_stride = eng_type_row_bytes(w->type, kk),
        .x = quant ? (const void *)thread_xq(c, prep_owner(n_tok, ith)) : (const void *)xf,
        .x_stride = quant ? eng_cpu_q8_row_bytes(c->kmax) : (size_t)kk * sizeof(float),
        .n_tok = n_tok,
        .k = kk,
        .out = mm->out,
        .ldo = (size_t)w->ne[1],
        .accumulate = mm->accumulate,
    };
    c->k->gemm(&g, r0, r1);
}

/* Query heads of one kv head an attention task takes together: the largest divisor of the group
 * that eng_cpu_attend takes at once */
static int att_heads(const eng_model_config_t *cfg)
{
    int group = cfg->n_heads / cfg->n_kv_heads, h = ENG_CPU_ATTEND_MAX_HEADS;
    while (group % h != 0)
        h--;
    return h;
}

static int n_chunks(int rows)
{
    return (rows + ENG_CPU_CHUNK_ROWS - 1) / ENG_CPU_CHUNK_ROWS;
}

/* Rows per claimed chunk of a product of `rows` rows of k elements over n_tok tokens:
 * ENG_CPU_CHUNK_ROWS, doubled while a chunk carries under ENG_CPU_CHUNK_MACS products and every
 * thread still gets 8 chunks. A claim is an atomic on a line the threads share, which costs a
 * visible share of a chunk of a few microseconds (decode: one token); a thread finishing a large
 * chunk alone at the end costs about half a chunk. */
static int chunk_rows(const eng_cpu_ctx_t *c, int rows, int k, int n_tok)
{
    const int nth = eng_cpu_pool_size(c->pool);
    int n = ENG_CPU_CHUNK_ROWS;
    while ((double)n * k * n_tok < ENG_CPU_CHUNK_MACS && 2 * n * 8 * nth <= rows)
        n *= 2;
    return n;
}

/* One product, rows claimed in chunks. The caller puts the barrier after it. */
static void mm_claimed(eng_cpu_ctx_t *c, int ith, const eng_cpu_mm_t *mm, const float *xf, int n_tok)
{
    const int rows = (int)mm->w->ne[1], n = chunk_rows(c, rows, (int)mm->w->ne[0], n_tok);
    const int total = (rows + n - 1) / n;
    for (int ci; (ci = eng_cpu_pool_claim_own(c->pool, ith, total)) < total;) {
        int r0 = ci * n;
        mm_rows(c, ith, mm, xf, n_tok, r0, r0 + n < rows ? r0 + n : rows);
    }
}

/* q, k, v and attention of one layer as one work list, then a barrier. The list is the q/k/v row
 * chunks of each KV head group in turn (its query heads' q rows, its k rows, its v rows), each
 * chunk finished by its owner (RoPE, K/V into the pool) and counted in ready[group]; then the
 * attention tasks (group, query head, tile of query tokens), each of which waits until its
 * group's count is complete, not for a barrier. The chunks go by own-range claims (each thread's
 * weight rows stream in order, as in mm_claimed), the tasks by the shared counter after them: a
 * thread takes a task only when every chunk is claimed, so a wait only ever waits for chunks that
 * a running thread is finishing. */
static void attention_block(eng_cpu_step_t *st, int layer, int ith, const eng_cpu_mm_t mm[3], const float *xf)
{
    eng_cpu_ctx_t *c = st->c;
    const eng_model_config_t *cfg = &c->m->cfg;
    const eng_batch_t *b = st->batch;
    const int hd = cfg->head_dim, nh = cfg->n_heads, group = nh / cfg->n_kv_heads;
    const int qdim = nh * hd, kvdim = cfg->n_kv_heads * hd, tiles = c->task_first[b->n_seqs];
    /* an I8 pool's row is quantised whole (its scale is its largest magnitude): k and v chunks are
     * whole heads there */
    const int kv_rows = c->kv.type == ENG_KV_I8 ? hd : ENG_CPU_CHUNK_ROWS;
    const int cq = n_chunks(group * hd), ck = (hd + kv_rows - 1) / kv_rows, per = cq + 2 * ck;
    /* With a tile for every thread, a task takes the query heads of its K/V head together (up to
     * att_heads), so each K/V block comes from memory once for all of them; split across
     * threads, two cores waited on the same rows (16 sequences' KV is far beyond L3). */
    const int hpt = tiles >= eng_cpu_pool_size(c->pool) ? att_heads(cfg) : 1, tpg = group / hpt;
    const int n_mm = cfg->n_kv_heads * per, n_tasks = cfg->n_kv_heads * tpg * tiles;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scores = c->scores + (size_t)ith * ATT_SCRATCH(c->cap_ctx, att_heads(cfg));
    int s = 0;
    for (int ci; (ci = eng_cpu_pool_claim_own(c->pool, ith, n_mm)) < n_mm;) {
        const int g = ci / per, j = ci % per, which = j < cq ? 0 : j < cq + ck ? 1 : 2;
        const int base = which == 0 ? g * group * hd : g * hd, end = base + (which == 0 ? group * hd : hd);
        const int rows = which == 0 ? ENG_CPU_CHUNK_ROWS : kv_rows;
        const int r0 = base + (which == 0 ? j : j - cq - (which - 1) * ck) * rows;
        const int r1 = r0 + rows < end ? r0 + rows : end;
        mm_rows(c, ith, &mm[which], xf, st->n_tok, r0, r1);
        for (int t = 0; t < st->n_tok; t++) {
            const eng_batch_seq_t *sq = &b->seqs[c->tok_seq[t]];
            const int pos = sq->pos + t - c->seq_first[c->tok_seq[t]];
            if (which == 0)
                eng_cpu_rope(c->q + (size_t)t * qdim, r0, r1, hd, c->rope + (size_t)t * 2 * hd);
            else if (which == 1)
                eng_cpu_rope(c->kb + (size_t)t * kvdim, r0, r1, hd, c->rope + (size_t)t * 2 * hd);
            if (which > 0)
                eng_cpu_kv_store(c->k, &c->kv, sq->block_table, layer, pos, which - 1,
                                 (which == 1 ? c->kb : c->vb) + (size_t)t * kvdim, r0, r1);
        }
        atomic_fetch_add_explicit(&c->ready[g], 1, memory_order_release);
    }
    for (int task; (task = eng_cpu_pool_claim(c->pool)) < n_tasks;) {
        const int g = task / (tpg * tiles), rem = task % (tpg * tiles);
        const int head0 = g * group + rem % tpg * hpt, tile = rem / tpg;
        eng_cpu_pool_await(&c->ready[g], (layer + 1) * per);
        while (tile >= c->task_first[s + 1])
            s++;
        while (tile < c->task_first[s])
            s--;
        const eng_batch_seq_t *sq = &b->seqs[s];
        int i0 = (tile - c->task_first[s]) * ENG_CPU_ATT_QTILE;
        int i1 = i0 + ENG_CPU_ATT_QTILE < sq->n_tokens ? i0 + ENG_CPU_ATT_QTILE : sq->n_tokens;
        const size_t t = (size_t)c->seq_first[s] + i0;
        eng_cpu_attend(c->k, &c->kv, sq->block_table, layer, g, c->q + t * qdim + head0 * hd, qdim, i1 - i0, hpt,
                       sq->pos + i0 + 1, scale, scores, c->att + t * qdim + head0 * hd, qdim);
    }
    eng_cpu_pool_barrier(c->pool);
}

/* gate and up by the same chunks of rows, so the chunk's owner applies SiLU(gate) * up to them
 * at once; then a barrier. */
static void ffn_gate_up(eng_cpu_ctx_t *c, int ith, const eng_cpu_mm_t gu[2], const float *xf, int n_tok)
{
    const int ffn = c->m->cfg.ffn_dim, n = chunk_rows(c, ffn, 2 * c->m->cfg.dim, n_tok);
    const int total = (ffn + n - 1) / n;
    for (int ci; (ci = eng_cpu_pool_claim_own(c->pool, ith, total)) < total;) {
        int r0 = ci * n, r1 = r0 + n < ffn ? r0 + n : ffn;
        mm_rows(c, ith, &gu[0], xf, n_tok, r0, r1);
        mm_rows(c, ith, &gu[1], xf, n_tok, r0, r1);
        for (int t = 0; t < n_tok; t++)
            c->k->silu_mul(c->hg + (size_t)t * ffn + r0, c->hu + (size_t)t * ffn + r0, r1 - r0);
    }
    eng_cpu_pool_barrier(c->pool);
}

/* The step: per layer four barriers, after attention, the output projection, gate/up and down
 * (every one a true dependency on rows other threads wrote). */
static void step_main(void *arg, int ith, int nth)
{
    eng_cpu_step_t *st = arg;
    eng_cpu_ctx_t *c = st->c;
    const eng_model_t *m = c->m;
    const eng_model_config_t *cfg = &m->cfg;
    const eng_batch_t *b = st->batch;
    const int dim = cfg->dim, hd = cfg->head_dim, ffn = cfg->ffn_dim, n_tok = st->n_tok;
    const int qdim = cfg->n_heads * hd;
    int lo, hi;
    eng_cpu_split(n_tok, ith, nth, &lo, &hi);

    for (int i = ith; i < b->n_copies; i += nth)
        memcpy((char *)c->kv.data + (size_t)b->copy_dst[i] * c->kv.block_bytes,
               (const char *)c->kv.data + (size_t)b->copy_src[i] * c->kv.block_bytes, c->kv.block_bytes);
    for (int t = lo; t < hi; t++) {
        const eng_batch_seq_t *sq = &b->seqs[c->tok_seq[t]];
        int i = t - c->seq_first[c->tok_seq[t]];
        eng_dequantize_row(m->tok_embd.type,
                           (const char *)m->tok_embd.data + (size_t)sq->tokens[i] * eng_type_row_bytes(m->tok_embd.type, dim),
                           c->x + (size_t)t * dim, dim);
        eng_cpu_rope_table(sq->pos + i, hd, cfg->rope_theta, c->rope + (size_t)t * 2 * hd);
    }
    eng_cpu_pool_barrier(c->pool);

    for (int l = 0; l < cfg->n_layers; l++) {
        const eng_layer_t *L = &m->layers[l];
        const void *const *P = c->packed + (size_t)l * ENG_CPU_LAYER_MM;
        const eng_cpu_mm_t qkv[3] = {{&L->wq, P[0], c->q, 0}, {&L->wk, P[1], c->kb, 0}, {&L->wv, P[2], c->vb, 0}};
        const eng_cpu_mm_t gu[2] = {{&L->w_gate, P[4], c->hg, 0}, {&L->w_up, P[5], c->hu, 0}};
        const eng_cpu_mm_t wo = {&L->wo, P[3], c->x, 1}, down = {&L->w_down, P[6], c->x, 1};

        attention_block(st, l, ith, qkv, prep_input(c, ith, nth, c->x, NULL, n_tok, dim, L->attn_norm.data,
                                               any_quantized(qkv, 3)));
        mm_claimed(c, ith, &wo, prep_input(c, ith, nth, c->att, NULL, n_tok, qdim, NULL, any_quantized(&wo, 1)), n_tok);
        eng_cpu_pool_barrier(c->pool);
        ffn_gate_up(c, ith, gu, prep_input(c, ith, nth, c->x, NULL, n_tok, dim, L->ffn_norm.data, any_quantized(gu, 2)),
                    n_tok);
        mm_claimed(c, ith, &down, prep_input(c, ith, nth, c->hg, NULL, n_tok, ffn, NULL, any_quantized(&down, 1)),
                   n_tok);
        eng_cpu_pool_barrier(c->pool);
    }

    const eng_cpu_mm_t head = {&m->output, c->packed[cfg->n_layers * ENG_CPU_LAYER_MM], st->logits, 0};
    if (st->n_rows > 0)
        mm_claimed(c, ith, &head,
                   prep_input(c, ith, nth, c->x, c->rows, st->n_rows, dim, m->out_norm.data, any_quantized(&head, 1)),
                   st->n_rows);
}

/* ---- backend interface ---------------------------------------------------------------------- */

static int fail(eng_cpu_ctx_t *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(eng_cpu_ctx_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return rc;
}

/* cap when it holds need, else need or half as much again as cap, whichever is more. */
static int grown(int need, int cap)
{
    if (need <= cap)
        return cap;
    return cap > INT_MAX / 3 * 2 || need > cap + cap / 2 ? need : cap + cap / 2;
}

/* Grows the workspace to at least n_tok tokens, n_seq sequences and n_ctx positions. On SL_ENOMEM
 * the old workspace is kept. Sizes grow geometrically: a decoding sequence's context passes its
 * longest so far at every step, and a workspace of exactly that size was reallocated (its pages
 * faulted in afresh) at each of those steps: 1,397 of 5,000 steps in a stories260K trace replay,
 * 4,954 page faults inside its forwards (1,056 in 22 steps now). */
static int ensure_workspace(eng_cpu_ctx_t *c, int n_tok, int n_seq, int n_ctx)
{
    if (n_tok <= c->cap_tok && n_seq <= c->cap_seq && n_ctx <= c->cap_ctx)
        return SL_OK;
    const eng_model_config_t *cfg = &c->m->cfg;
    int T = grown(n_tok, c->cap_tok), S = grown(n_seq, c->cap_seq), C = grown(n_ctx, c->cap_ctx);
    int nth = eng_cpu_pool_size(c->pool);
    int qdim = cfg->n_heads * cfg->head_dim, kvdim = cfg->n_kv_heads * cfg->head_dim;
    size_t sizes[] = {
        (size_t)T * cfg->dim * 4, (size_t)nth * T * cfg->dim * 4, (size_t)T * qdim * 4, (size_t)T * qdim * 4,
        (size_t)T * kvdim * 4, (size_t)T * kvdim * 4, (size_t)T * cfg->ffn_dim * 4, (size_t)T * cfg->ffn_dim * 4,
        (size_t)nth * T * eng_cpu_q8_row_bytes(c->kmax), (size_t)T * 2 * cfg->head_dim * 4,
        (size_t)nth * ATT_SCRATCH(C, att_heads(cfg)) * 4, (size_t)T * 4, (size_t)T * 4, (size_t)(S + 1) * 4, (size_t)(S + 1) * 4,
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        total += round64(sizes[i]);
    char *ws = aligned_alloc64(total);
    if (!ws)
        return fail(c, SL_ENOMEM, "cpu: out of memory for a step of %d tokens (%zu bytes of workspace)",
                    n_tok, total);
    aligned_free(c->ws);
    c->ws = ws;
    void **ptrs[] = {
        (void **)&c->x, (void **)&c->xn, (void **)&c->att, (void **)&c->q, (void **)&c->kb, (void **)&c->vb,
        (void **)&c->hg, (void **)&c->hu, (void **)&c->xq, (void **)&c->rope, (void **)&c->scores,
        (void **)&c->tok_seq, (void **)&c->rows, (void **)&c->seq_first, (void **)&c->task_first,
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = ws;
        ws += round64(sizes[i]);
    }
    c->cap_tok = T;
    c->cap_seq = S;
    c->cap_ctx = C;
    return SL_OK;
}

/* Checks a batch against the model and the pool; counts its tokens and logits rows. */
static int check_batch(eng_cpu_ctx_t *c, const eng_batch_t *b, int *n_tok, int *n_rows, int *max_ctx)
{
    if (!c->kv.data)
        return fail(c, SL_ESTATE, "cpu: forward before kv_alloc");
    if (b->n_seqs < 0 || (b->n_seqs > 0 && !b->seqs) || b->n_copies < 0)
        return fail(c, SL_EINVAL, "cpu: malformed batch (n_seqs %d, n_copies %d)", b->n_seqs, b->n_copies);
    for (int i = 0; i < b->n_copies; i++) {
        if (b->copy_src[i] < 0 || b->copy_src[i] >= c->kv.num_blocks || b->copy_dst[i] < 0 ||
            b->copy_dst[i] >= c->kv.num_blocks)
            return fail(c, SL_EINVAL, "cpu: block copy %d: %d -> %d outside the pool of %d blocks", i,
                        b->copy_src[i], b->copy_dst[i], c->kv.num_blocks);
    }
    int64_t toks = 0, rows = 0, ctx = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const eng_batch_seq_t *sq = &b->seqs[s];
        int64_t end = (int64_t)sq->pos + sq->n_tokens;
        if (sq->n_tokens < 0 || sq->pos < 0 || (sq->n_tokens > 0 && !sq->tokens) || sq->logits < 0 ||
            sq->logits > 2)
            return fail(c, SL_EINVAL, "cpu: sequence %d: bad n_tokens %d, pos %d or logits %d", s,
                        sq->n_tokens, sq->pos, sq->logits);
        if ((int64_t)sq->n_blocks * c->kv.block_size < end || !sq->block_table)
            return fail(c, SL_EINVAL, "cpu: sequence %d: %d blocks of %d cannot hold %lld positions", s,
                        sq->n_blocks, c->kv.block_size, (long long)end);
        for (int i = 0; i < (int)((end + c->kv.block_size - 1) / c->kv.block_size); i++)
            if (sq->block_table[i] < 0 || sq->block_table[i] >= c->kv.num_blocks)
                return fail(c, SL_EINVAL, "cpu: sequence %d: block %d outside the pool of %d blocks", s,
                            sq->block_table[i], c->kv.num_blocks);
        for (int i = 0; i < sq->n_tokens; i++)
            if (sq->tokens[i] < 0 || sq->tokens[i] >= c->m->cfg.vocab)
                return fail(c, SL_EINVAL, "cpu: sequence %d: token %d outside the vocabulary of %d", s,
                            sq->tokens[i], c->m->cfg.vocab);
        toks += sq->n_tokens;
        rows += sq->n_tokens == 0 ? 0 : sq->logits == 2 ? sq->n_tokens : sq->logits;
        ctx = end > ctx ? end : ctx;
    }
    if (toks > (1 << 24))
        return fail(c, SL_EINVAL, "cpu: step of %lld tokens is too large", (long long)toks);
    *n_tok = (int)toks;
    *n_rows = (int)rows;
    *max_ctx = (int)ctx;
    return SL_OK;
}

static int cpu_forward(eng_backend_t *be, const eng_batch_t *b, float *logits, int *n_rows)
{
    eng_cpu_ctx_t *c = be->ctx;
    int n_tok = 0, rows = 0, max_ctx = 0;
    int rc = check_batch(c, b, &n_tok, &rows, &max_ctx);
    if (rc == SL_OK)
        rc = ensure_workspace(c, n_tok, b->n_seqs, max_ctx);
    if (rc != SL_OK)
        return rc;
    int t = 0, r = 0, tiles = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        const eng_batch_seq_t *sq = &b->seqs[s];
        c->seq_first[s] = t;
        c->task_first[s] = tiles;
        tiles += (sq->n_tokens + ENG_CPU_ATT_QTILE - 1) / ENG_CPU_ATT_QTILE;
        for (int i = 0; i < sq->n_tokens; i++, t++) {
            c->tok_seq[t] = s;
            if (sq->logits == 2 || (sq->logits == 1 && i == sq->n_tokens - 1))
                c->rows[r++] = t;
        }
    }
    c->seq_first[b->n_seqs] = t;
    c->task_first[b->n_seqs] = tiles;
    for (int g = 0; g < c->m->cfg.n_kv_heads; g++)
        atomic_store_explicit(&c->ready[g], 0, memory_order_relaxed);
    eng_cpu_step_t st = {.c = c, .batch = b, .n_tok = n_tok, .n_rows = rows, .logits = logits};
    if (n_tok > 0 || b->n_copies > 0)
        eng_cpu_pool_run(c->pool, n_tok >= ENG_CPU_LONG_STEP ? 1 : 0, step_main, &st);
    *n_rows = rows;
    return SL_OK;
}

/* Logits rows into c->glogits (grown to the batch's requested rows). */
static int forward_own_rows(eng_backend_t *be, const eng_batch_t *b, int *n_rows)
{
    eng_cpu_ctx_t *c = be->ctx;
    const int vocab = c->m->cfg.vocab;
    int rows = 0;
    for (int s = 0; s < b->n_seqs; s++)
        rows += b->seqs[s].logits == 2 ? b->seqs[s].n_tokens : b->seqs[s].logits > 0 && b->seqs[s].n_tokens > 0;
    if (rows > c->cap_glogits) {
        float *g = aligned_alloc64((size_t)rows * vocab * sizeof(float));
        if (!g)
            return fail(c, SL_ENOMEM, "cpu: out of memory for %d logits rows", rows);
        aligned_free(c->glogits);
        c->glogits = g;
        c->cap_glogits = rows;
    }
    return cpu_forward(be, b, c->glogits, n_rows);
}

static int cpu_forward_greedy(eng_backend_t *be, const eng_batch_t *b, int32_t *tokens, int *n_rows)
{
    eng_cpu_ctx_t *c = be->ctx;
    const int vocab = c->m->cfg.vocab;
    int rc = forward_own_rows(be, b, n_rows);
    if (rc != SL_OK)
        return rc;
    for (int r = 0; r < *n_rows; r++) {
        const float *row = c->glogits + (size_t)r * vocab;
        int best = 0;
        for (int i = 1; i < vocab; i++)
            best = row[i] > row[best] ? i : best;
        tokens[r] = best;
    }
    return SL_OK;
}

/* forward_sample's region: the threads claim rows and pick their tokens */
typedef struct eng_cpu_pick {
    eng_cpu_ctx_t *c;
    const eng_sample_row_t *rows;
    const int32_t *pen;
    int n_rows;
    int32_t *tokens;
    float *logprobs;
} eng_cpu_pick_t;

static void pick_main(void *arg, int ith, int nth)
{
    const eng_cpu_pick_t *p = arg;
    const size_t vocab = (size_t)p->c->m->cfg.vocab;
    for (int r; (r = eng_cpu_pool_claim(p->c->pool)) < p->n_rows;)
        if (eng_sampler_pick(p->c->sws[ith], p->c->glogits + (size_t)r * vocab, &p->rows[r], p->pen,
                             &p->tokens[r], &p->logprobs[r]) != SL_OK)
            p->tokens[r] = -1;
}

/* The engine's sampling, spread over the pool's threads instead of one row after another on the
 * engine thread (a 49,152-entry row costs tens of microseconds). */
static int cpu_forward_sample(eng_backend_t *be, const eng_batch_t *b, const eng_sample_row_t *rows,
                              const int32_t *pen, int n_pen, int32_t *tokens, float *logprobs, int *n_rows)
{
    eng_cpu_ctx_t *c = be->ctx;
    const int nth = eng_cpu_pool_size(c->pool);
    if (!c->sws && (c->sws = sl_calloc((size_t)nth, sizeof *c->sws)))
        c->n_sws = nth;
    for (int i = 0; i < nth; i++)
        if (!c->sws || (!c->sws[i] && !(c->sws[i] = eng_sampler_ws_create(c->m->cfg.vocab))))
            return fail(c, SL_ENOMEM, "cpu: out of memory for the sampler's scratch");
    int rc = forward_own_rows(be, b, n_rows);
    if (rc != SL_OK)
        return rc;
    char why[160];
    if (eng_sample_rows_check(rows, *n_rows, pen, n_pen, c->m->cfg.vocab, why, (int)sizeof why) != SL_OK)
        return fail(c, SL_EINVAL, "cpu: forward_sample: %s", why);
    eng_cpu_pick_t pk = {c, rows, pen, *n_rows, tokens, logprobs};
    if (*n_rows > 0)
        eng_cpu_pool_run(c->pool, 0, pick_main, &pk);
    return SL_OK;
}

static int64_t cpu_kv_budget_bytes(eng_backend_t *be)
{
    long pages = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    return pages > 0 && psize > 0 ? (int64_t)pages * psize : 0;
}

static int cpu_kv_alloc(eng_backend_t *be, int num_blocks, int block_size)
{
    eng_cpu_ctx_t *c = be->ctx;
    if (num_blocks <= 0 || block_size <= 0)
        return fail(c, SL_EINVAL, "cpu: kv_alloc: %d blocks of %d tokens", num_blocks, block_size);
    eng_cpu_kv_t kv = c->kv;
    kv = eng_cpu_kv_layout(kv.n_layers, kv.n_kv_heads, kv.head_dim, kv.type, num_blocks, block_size);
    aligned_free(c->kv.data);
    c->kv.data = NULL;
    kv.data = aligned_alloc64(kv.block_bytes * num_blocks);
    if (!kv.data)
        return fail(c, SL_ENOMEM, "cpu: out of memory for a KV pool of %d blocks (%zu bytes)", num_blocks,
                    kv.block_bytes * num_blocks);
    c->kv = kv;
    return SL_OK;
}

static const char *cpu_errmsg(eng_backend_t *be)
{
    return ((eng_cpu_ctx_t *)be->ctx)->err;
}

static void cpu_free(eng_backend_t *be)
{
    if (!be)
        return;
    eng_cpu_ctx_t *c = be->ctx;
    if (c) {
        eng_cpu_pool_free(c->pool);
        aligned_free(c->kv.data);
        aligned_free(c->ws);
        aligned_free(c->glogits);
        aligned_free(c->packed_data);
        sl_free(c->packed);
        for (int i = 0; i < c->n_sws; i++)
            eng_sampler_ws_free(c->sws[i]);
        sl_free(c->sws);
        sl_free(c->ready);
        sl_free(c);
    }
    sl_free(be);
}

static void cpu_threads(eng_backend_t *be, int *active, int64_t *drops)
{
    const eng_cpu_ctx_t *c = be->ctx;
    *active = eng_cpu_pool_active(c->pool, 0);
    *drops = eng_cpu_pool_drops(c->pool);
}

static void cpu_set_idle_spin(eng_backend_t *be, double spin_s)
{
    eng_cpu_ctx_t *c = be->ctx;
    eng_cpu_pool_set_spin(c->pool, spin_s);
}

static const eng_backend_ops_t cpu_ops = {
    .version = ENG_BACKEND_VERSION,
    .name = "cpu",
    .kv_budget_bytes = cpu_kv_budget_bytes,
    .kv_alloc = cpu_kv_alloc,
    .forward = cpu_forward,
    .forward_greedy = cpu_forward_greedy,
    .forward_sample = cpu_forward_sample,
    .threads = cpu_threads,
    .set_idle_spin = cpu_set_idle_spin,
    .errmsg = cpu_errmsg,
    .free = cpu_free,
};

/* ---- packed weights -------------------------------------------------------------------------- */

/* The weight of product i: layer i / ENG_CPU_LAYER_MM's q, k, v, output, gate, up, down in turn,
 * then the LM head. */
static const eng_tensor_t *product_weight(const eng_model_t *m, int i)
{
    if (i == m->cfg.n_layers * ENG_CPU_LAYER_MM)
        return &m->output;
    const eng_layer_t *L = &m->layers[i / ENG_CPU_LAYER_MM];
    const eng_tensor_t *w[ENG_CPU_LAYER_MM] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return w[i % ENG_CPU_LAYER_MM];
}

/* Whether product i reads its weight packed: the kernels ask for it and the tensor packs. q, k and v
 * are claimed in chunks that end at head boundaries (attention_block), so they pack only when a head
 * is a whole number of 16-row groups. */
static int packs(const eng_cpu_ctx_t *c, int i)
{
    const eng_tensor_t *w = product_weight(c->m, i);
    const int qkv = i < c->m->cfg.n_layers * ENG_CPU_LAYER_MM && i % ENG_CPU_LAYER_MM < 3;
    return c->k->pack16 && eng_cpu_packable(w->type, w->ne[1]) &&
           (!qkv || c->m->cfg.head_dim % ENG_CPU_PACK_ROWS == 0);
}

/* a tensor's bytes, rounded up so the next one starts aligned */
static size_t packed_bytes(const eng_tensor_t *w)
{
    return round64(eng_type_row_bytes(w->type, w->ne[0]) * (size_t)w->ne[1]);
}

static void pack_main(void *arg, int ith, int nth)
{
    eng_cpu_ctx_t *c = arg;
    for (int i = ith; i <= c->m->cfg.n_layers * ENG_CPU_LAYER_MM; i += nth)
        if (c->packed[i]) {
            const eng_tensor_t *w = product_weight(c->m, i);
            eng_cpu_pack16(w->type, w->data, (int)w->ne[0], w->ne[1], (void *)c->packed[i]);
            if (c->m->gguf) /* a tied LM head's embedding rows fault back in as they are read */
                eng_gguf_release(c->m->gguf, w->data, eng_type_row_bytes(w->type, w->ne[0]) * (size_t)w->ne[1]);
        }
}

/* Packs the weights the kernels read faster packed (kernels.h, eng_cpu_pack16) into one allocation,
 * the tensors split over the pool. The file's copy stays mapped for the token embeddings (which may
 * be the LM head's tensor), but each packed tensor's pages are dropped once it is packed, so the
 * weights are resident about once, not twice. */
static int pack_weights(eng_cpu_ctx_t *c)
{
    const int n = c->m->cfg.n_layers * ENG_CPU_LAYER_MM + 1;
    c->packed = sl_calloc((size_t)n, sizeof *c->packed);
    if (!c->packed)
        return SL_ENOMEM;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += packs(c, i) ? packed_bytes(product_weight(c->m, i)) : 0;
    if (total == 0)
        return SL_OK;
    if (!(c->packed_data = aligned_alloc64(total)))
        return SL_ENOMEM;
    char *p = c->packed_data;
    for (int i = 0; i < n; i++)
        if (packs(c, i)) {
            c->packed[i] = p;
            p += packed_bytes(product_weight(c->m, i));
        }
    eng_cpu_pool_run(c->pool, 0, pack_main, c);
    return SL_OK;
}

/* A weight the forward multiplies: present, of a supported type, ne = {n_in, n_out}. */
static int check_weight(const eng_tensor_t *t, const char *what, int layer, int64_t n_in, int64_t n_out,
                        char *err, int errlen)
{
    if (!t->data || t->ne[0] != n_in || t->ne[1] != n_out || !eng_cpu_type_supported(t->type) ||
        eng_type_row_bytes(t->type, n_in) == 0) {
        snprintf(err, errlen, "cpu: layer %d: %s: missing, of type %s or shape %lldx%lld (want %lldx%lld)",
                 layer, what, eng_type_name(t->type), (long long)t->ne[0], (long long)t->ne[1],
                 (long long)n_in, (long long)n_out);
        return 0;
    }
    return 1;
}

static int check_model(const eng_model_t *m, char *err, int errlen)
{
    const eng_model_config_t *cfg = &m->cfg;
    if (!m->tok_embd.data) {
        snprintf(err, errlen, "cpu: the model has no weights on the host (a shape-only model is for the "
                              "CUDA backend, which generates its weights on the device)");
        return 0;
    }
    if (cfg->n_layers <= 0 || cfg->dim <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 ||
        cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim <= 0 || cfg->head_dim % 2 != 0 ||
        cfg->ffn_dim <= 0 || cfg->vocab <= 0 || !m->layers || !m->out_norm.data) {
        snprintf(err, errlen, "cpu: unsupported model shape (layers %d, dim %d, heads %d/%d, head_dim %d)",
                 cfg->n_layers, cfg->dim, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
        return 0;
    }
    int64_t dim = cfg->dim, qdim = (int64_t)cfg->n_heads * cfg->head_dim;
    int64_t kvdim = (int64_t)cfg->n_kv_heads * cfg->head_dim, ffn = cfg->ffn_dim;
    if (!check_weight(&m->tok_embd, "token_embd", -1, dim, cfg->vocab, err, errlen) ||
        !check_weight(&m->output, "output", -1, dim, cfg->vocab, err, errlen))
        return 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        const eng_layer_t *L = &m->layers[l];
        if (!L->attn_norm.data || !L->ffn_norm.data) {
            snprintf(err, errlen, "cpu: layer %d: missing norm weights", l);
            return 0;
        }
        if (!check_weight(&L->wq, "attn_q", l, dim, qdim, err, errlen) ||
            !check_weight(&L->wk, "attn_k", l, dim, kvdim, err, errlen) ||
            !check_weight(&L->wv, "attn_v", l, dim, kvdim, err, errlen) ||
            !check_weight(&L->wo, "attn_output", l, qdim, dim, err, errlen) ||
            !check_weight(&L->w_gate, "ffn_gate", l, dim, ffn, err, errlen) ||
            !check_weight(&L->w_up, "ffn_up", l, dim, ffn, err, errlen) ||
            !check_weight(&L->w_down, "ffn_down", l, ffn, dim, err, errlen))
            return 0;
    }
    return 1;
}

eng_backend_t *eng_cpu_backend_create(const eng_model_t *model, const eng_backend_params_t *params,
                                      char *err, int errlen)
{
    eng_backend_params_t p = params ? *params : eng_backend_params_default();
    if (!check_model(model, err, errlen))
        return NULL;
    if (p.kv_dtype != ENG_KV_F32 && p.kv_dtype != ENG_KV_F16 && p.kv_dtype != ENG_KV_I8) {
        snprintf(err, errlen, "cpu: unknown KV element type %d (0 F32, 1 F16, 2 I8)", (int)p.kv_dtype);
        return NULL;
    }
    eng_backend_t *be = sl_calloc(1, sizeof *be);
    eng_cpu_ctx_t *c = sl_calloc(1, sizeof *c);
    if (!be || !c) {
        sl_free(be);
        sl_free(c);
        snprintf(err, errlen, "cpu: out of memory");
        return NULL;
    }
    be->ops = &cpu_ops;
    be->model = model;
    be->kv_elem_bytes = eng_kv_elem_bytes(p.kv_dtype, model->cfg.head_dim);
    be->ctx = c;
    const eng_model_config_t *cfg = &model->cfg;
    c->m = model;
    c->k = eng_cpu_kernels_get(eng_cpu_isa_detect());
    int qdim = cfg->n_heads * cfg->head_dim;
    c->kmax = cfg->dim > cfg->ffn_dim ? cfg->dim : cfg->ffn_dim;
    c->kmax = c->kmax > qdim ? c->kmax : qdim;
    c->kmax = (c->kmax + ENG_CPU_QK - 1) / ENG_CPU_QK * ENG_CPU_QK;
    c->kv = eng_cpu_kv_layout(cfg->n_layers, cfg->n_kv_heads, cfg->head_dim, p.kv_dtype, 0, 0);
    c->ready = sl_calloc((size_t)cfg->n_kv_heads, sizeof *c->ready);
    if (!c->ready) {
        snprintf(err, errlen, "cpu: out of memory");
        cpu_free(be);
        return NULL;
    }
    if (eng_cpu_pool_create(p.n_threads, p.idle_spin_s, !p.fixed_threads, &c->pool) != SL_OK) {
        snprintf(err, errlen, "cpu: cannot start %d threads", p.n_threads);
        cpu_free(be);
        return NULL;
    }
    if (pack_weights(c) != SL_OK) {
        snprintf(err, errlen, "cpu: out of memory for the packed weights");
        cpu_free(be);
        return NULL;
    }
    return be;
}

/* The instruction set the backend's kernels use ("avx2", ...), for logs and benchmarks. */
const char *eng_cpu_backend_isa(const eng_backend_t *be)
{
    return ((const eng_cpu_ctx_t *)be->ctx)->k->name;
}
