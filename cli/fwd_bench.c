/* fwd_bench.c — forward passes timed at hand-built step shapes (contract in fwd_bench.h). */
#include "cli/fwd_bench.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/backend.h"
#include "engine/model.h"
#include "sched/status.h"

struct cli_fwd_bench {
    eng_model_t *model;
    eng_backend_t *be;
    int block_size, num_blocks, vocab, max_tokens, n_seqs;
    int32_t *tokens, *blocks; /* scratch: token ids, block tables (disjoint ranges of the pool) */
    float *logits;
    eng_batch_seq_t seqs[CLI_FWD_MAX_SEQS];
    eng_sample_row_t greedy[CLI_FWD_MAX_SEQS]; /* forward_sample's rows, as the engine's greedy runs */
    int32_t picks[CLI_FWD_MAX_SEQS];
    float logprobs[CLI_FWD_MAX_SEQS];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, int n)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

cli_fwd_bench_t *cli_fwd_bench_open(const char *model, const char *backend, int threads, sluice_kv_dtype kv,
                                    int max_tokens, char *err, size_t errlen)
{
    cli_fwd_bench_t *b = sl_calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(b->model = eng_model_load_for(model, backend, err, errlen))) {
        sl_free(b);
        return NULL;
    }
    eng_backend_params_t bp = eng_backend_params_default();
    bp.n_threads = threads;
    bp.fixed_threads = 1; /* a profile times the thread count it is named by */
    bp.kv_dtype = (eng_kv_dtype_t)kv;
    if (!(b->be = eng_backend_create(backend, b->model, &bp, err, errlen))) {
        cli_fwd_bench_free(b);
        return NULL;
    }
    b->vocab = b->model->cfg.vocab;
    b->max_tokens = max_tokens > CLI_FWD_MAX_SEQS ? max_tokens : CLI_FWD_MAX_SEQS;
    b->tokens = sl_malloc(sizeof(int32_t) * (size_t)b->max_tokens);
    b->logits = sl_malloc(sizeof(float) * CLI_FWD_MAX_SEQS * (size_t)b->vocab);
    if (!b->tokens || !b->logits) {
        snprintf(err, errlen, "out of memory");
        cli_fwd_bench_free(b);
        return NULL;
    }
    return b;
}

int64_t cli_fwd_bench_kv_budget(const cli_fwd_bench_t *b)
{
    return b->be->ops->kv_budget_bytes(b->be);
}

int cli_fwd_bench_blocks_that_fit(const cli_fwd_bench_t *b, int block_size)
{
    const eng_model_config_t *g = &b->be->model->cfg;
    int64_t per_block = (int64_t)ceil(block_size * 2.0 * g->n_layers * g->n_kv_heads * g->head_dim * b->be->kv_elem_bytes);
    int64_t budget = cli_fwd_bench_kv_budget(b);
    if (budget <= 0 || per_block <= 0)
        return INT_MAX;
    return budget / per_block < INT_MAX ? (int)(budget / per_block) : INT_MAX;
}

int cli_fwd_bench_pool(cli_fwd_bench_t *b, int num_blocks, int block_size, double touch_s, char *err,
                       size_t errlen)
{
    sl_free(b->blocks);
    b->num_blocks = 0;
    if (!(b->blocks = sl_malloc(sizeof(int32_t) * (size_t)(num_blocks > 0 ? num_blocks : 1)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (b->be->ops->kv_alloc(b->be, num_blocks, block_size) != SL_OK) {
        snprintf(err, errlen, "%s: KV pool of %d blocks: %s", b->be->ops->name, num_blocks, b->be->ops->errmsg(b->be));
        return -1;
    }
    b->num_blocks = num_blocks, b->block_size = block_size;
    /* one token per block touches every page of it (a block's rows per layer, K/V and head are at
     * most a page) */
    double t0 = now_s();
    int done = 0;
    while (done < num_blocks && now_s() - t0 < touch_s) {
        int k = num_blocks - done < CLI_FWD_MAX_SEQS ? num_blocks - done : CLI_FWD_MAX_SEQS, rows = 0;
        for (int i = 0; i < k; i++) {
            b->tokens[i] = (int32_t)(i % b->vocab);
            b->blocks[i] = done + i;
            b->seqs[i] = (eng_batch_seq_t){.tokens = b->tokens + i, .n_tokens = 1, .pos = 0,
                                           .block_table = b->blocks + i, .n_blocks = 1, .logits = 0};
        }
        eng_batch_t batch = {.n_seqs = k, .seqs = b->seqs};
        if (b->be->ops->forward(b->be, &batch, b->logits, &rows) != SL_OK) {
            snprintf(err, errlen, "%s forward (touching the KV pool): %s", b->be->ops->name, b->be->ops->errmsg(b->be));
            return -1;
        }
        done += k;
    }
    return done;
}

bool cli_fwd_bench_shape(cli_fwd_bench_t *b, int n_pre, int q, int ctx_pre, bool pre_rows, int n_dec, int ctx_dec,
                         sim_profile_point_t *pt)
{
    int n = n_pre + n_dec, tok = 0, blk = 0;
    int need = n_pre * ((ctx_pre + q + b->block_size - 1) / b->block_size) +
               n_dec * ((ctx_dec + 1 + b->block_size - 1) / b->block_size);
    if (n < 1 || n > CLI_FWD_MAX_SEQS || need > b->num_blocks || n_pre * q + n_dec > b->max_tokens)
        return false;
    *pt = (sim_profile_point_t){.m = n_pre * q + n_dec, .rows = (pre_rows ? n_pre : 0) + n_dec, .n_dec = n_dec};
    for (int i = 0; i < n; i++) {
        bool pre = i < n_pre;
        int len = pre ? q : 1, pos = pre ? ctx_pre : ctx_dec;
        int nb = (pos + len + b->block_size - 1) / b->block_size;
        for (int k = 0; k < len; k++)
            b->tokens[tok + k] = (int32_t)((7919u * (unsigned)(tok + k + 1) + 13u * (unsigned)i) % (unsigned)b->vocab);
        for (int k = 0; k < nb; k++)
            b->blocks[blk + k] = blk + k;
        b->seqs[i] = (eng_batch_seq_t){.tokens = b->tokens + tok, .n_tokens = len, .pos = pos,
                                       .block_table = b->blocks + blk, .n_blocks = nb,
                                       .logits = pre ? (pre_rows ? 1 : 0) : 1};
        tok += len, blk += nb;
        if (pre)
            pt->pre_work += (double)q * (ctx_pre + (q + 1) / 2.0);
        else
            pt->dec_kv = ctx_dec + 1;
    }
    b->n_seqs = n;
    return true;
}

int cli_fwd_bench_run(cli_fwd_bench_t *b, double *t, char *err, size_t errlen)
{
    eng_batch_t batch = {.n_seqs = b->n_seqs, .seqs = b->seqs};
    int rows = 0;
    const eng_backend_ops_t *ops = b->be->ops;
    for (int i = 0; ops->forward_sample && i < b->n_seqs; i++)
        b->greedy[i] = (eng_sample_row_t){.top_p = 1, .repetition_penalty = 1};
    double t0 = now_s();
    /* what the engine times as a step's forward: with the pick where the backend samples */
    int rc = ops->forward_sample ? ops->forward_sample(b->be, &batch, b->greedy, NULL, 0, b->picks, b->logprobs, &rows)
                                 : ops->forward(b->be, &batch, b->logits, &rows);
    *t = now_s() - t0;
    if (rc != SL_OK)
        snprintf(err, errlen, "%s forward (%d sequences): %s", b->be->ops->name, b->n_seqs, b->be->ops->errmsg(b->be));
    return rc;
}

/* Runs the shape at least once and up to max_reps (<= 64) times while the runs took under max_s in
 * all: their times into v, their count into *reps. */
static int run_reps(cli_fwd_bench_t *b, int max_reps, double max_s, double *v, int *reps, char *err,
                    size_t errlen)
{
    double spent = 0;
    int rc;
    *reps = 0;
    max_reps = max_reps < 1 ? 1 : max_reps > 64 ? 64 : max_reps;
    while (*reps < 1 || (*reps < max_reps && spent < max_s)) {
        if ((rc = cli_fwd_bench_run(b, &v[*reps], err, errlen)) != SL_OK)
            return rc;
        spent += v[(*reps)++];
    }
    return SL_OK;
}

int cli_fwd_bench_median(cli_fwd_bench_t *b, int max_reps, double max_s, double *t, char *err, size_t errlen)
{
    double v[64];
    int reps, rc = run_reps(b, max_reps, max_s, v, &reps, err, errlen);
    if (rc == SL_OK)
        *t = cli_median(v, reps);
    return rc;
}

int cli_fwd_bench_mean(cli_fwd_bench_t *b, int max_reps, double max_s, double *t, char *err, size_t errlen)
{
    double v[64], sum = 0, warm;
    int reps, rc = cli_fwd_bench_run(b, &warm, err, errlen);
    if (rc == SL_OK && warm >= max_s) { /* a step this long is its own average, warm or not */
        *t = warm;
        return SL_OK;
    }
    if (rc == SL_OK)
        rc = run_reps(b, max_reps, max_s, v, &reps, err, errlen);
    for (int i = 0; rc == SL_OK && i < reps; i++)
        sum += v[i];
    if (rc == SL_OK)
        *t = sum / reps;
    return rc;
}

int cli_fwd_bench_anchors(cli_fwd_bench_t *b, int max_seqs, int max_seq_len, int max_tokens,
                          double t[CLI_FWD_ANCHORS], int m[CLI_FWD_ANCHORS], char *err, size_t errlen)
{
    static const int shape[CLI_FWD_ANCHORS][3] = {/* prompt tokens, decode sequences, their context */
                                                  {0, 1, 63}, {0, 1, 255}, {0, 4, 127}, {0, 8, 63},
                                                  {32, 0, 0}, {128, 0, 0}};
    for (int i = 0; i < CLI_FWD_ANCHORS; i++) {
        int q = shape[i][0] < max_tokens ? shape[i][0] : max_tokens, nd = shape[i][1], ctx = shape[i][2];
        sim_profile_point_t pt;
        t[i] = 0, m[i] = q + nd;
        bool fits = q > 0 ? q <= max_seq_len && cli_fwd_bench_shape(b, 1, q, 0, true, 0, 0, &pt)
                          : nd <= max_seqs && ctx < max_seq_len && cli_fwd_bench_shape(b, 0, 0, 0, false, nd, ctx, &pt);
        int rc = fits ? cli_fwd_bench_median(b, 7, 0.3, &t[i], err, errlen) : SL_OK;
        if (rc != SL_OK)
            return rc;
    }
    return SL_OK;
}

void cli_fwd_bench_set_idle_spin(cli_fwd_bench_t *b, double spin_s)
{
    if (b->be->ops->set_idle_spin)
        b->be->ops->set_idle_spin(b->be, spin_s);
}

void cli_fwd_bench_free(cli_fwd_bench_t *b)
{
    if (!b)
        return;
    if (b->be)
        eng_backend_free(b->be);
    eng_model_free(b->model);
    sl_free(b->tokens);
    sl_free(b->blocks);
    sl_free(b->logits);
    sl_free(b);
}
