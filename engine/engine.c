/* engine.c — the serving loop: one engine thread owning one scheduler and one backend; the
 * implementation of the public API in include/sluice.h.
 *
 * Design notes
 *
 * 1. Threads and the lock. e->mu protects the scheduler, the request table, the counters and the
 *    flags. Caller threads take it to submit (tokenize first, outside it), cancel (sched_abort at
 *    once: a waiting request's blocks are free when sluice_cancel returns; a request in the step
 *    running now is released at that step's commit), wait (on e->done_cv) and read stats. The
 *    engine thread holds it while planning and committing, and drops it for the forward pass,
 *    sampling and every callback. Everything the forward pass reads is copied out of the step
 *    under the lock, so a concurrent submit or abort never touches memory the backend is reading.
 *
 * 2. Who writes what. A sample's generation state (tokens, text, sampler, times) is written only by
 *    the engine thread. A request's `canceled` flag is the only field other threads write after
 *    submit (under the lock, read atomically by the engine thread to skip callbacks).
 *
 * 3. One iteration of the loop (engine_main):
 *        lock
 *        abort everything if the shutdown deadline has passed
 *        plan(now) ─ IDLE ─► collect done records; if any, run callbacks; else sleep on wake_cv
 *          │                 until wake_at (static batch timeout), a submit, a cancel or shutdown
 *          STEP: copy tokens and block tables into the batch (with prompt-lookup drafts for
 *                decodes that have draft slots); unlock
 *        forward (padding of static strategies is counted in the step, never computed)
 *        sample each sampled row with its sample's own sampler (per-request params and PRNG;
 *        a sequence with drafts row after row until a draw differs from its draft),
 *        select the row's top_logprobs alternatives when the request asks for them, detokenize the new token, scan stop strings, decide EOS / STOP
 *        lock; commit; fork parallel samples after their first token; drain done records
 *        unlock; token callbacks, completion callbacks, on_step; (loop)
 *
 * 4. Request lifecycle. submit -> LIVE (in the table; sample 0 in the scheduler) -> samples done
 *    one by one as the scheduler reports them -> DONE (result built) -> collected by sluice_wait,
 *    or, for a detached request (on_done), freed after its callback. Parallel samples 1..best_of-1
 *    are created with sched_fork when sample 0 has its first token: they share its prompt blocks
 *    and its first token, and diverge from the second (each has its own PRNG, seed + index).
 *
 * 5. Adaptive tuning (params.adaptive). One sched_adapt_t (sched/adapt.h), under the lock, fed
 *    sample 0's done record of every request (collect_done: TTFT, TPOT, queueing, on the engine
 *    clock) and the queue length after each step; right after a step's commit, with no step in
 *    flight, it decides and the engine applies the change with sched_update_config, logs it to
 *    stderr and counts it (sluice_stats). e->scfg stays the starting config; the live values are
 *    sched_config(e->sched).
 *
 * 6. Shutdown. sluice_engine_shutdown sets `stopping` (submits get SLUICE_ESTATE) and a deadline;
 *    the loop keeps serving until the deadline, then aborts whatever is live, delivers those
 *    results and exits when no request is live. The caller joins the thread.
 */
#include "engine/engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/backend.h"
#include "engine/chat.h"
#include "engine/draft.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "sched/adapt.h"
#include "sched/status.h"

/* The public codes are the project's codes. */
_Static_assert((int)SLUICE_ENOMEM == (int)SL_ENOMEM && (int)SLUICE_EINVAL == (int)SL_EINVAL && (int)SLUICE_EIO == (int)SL_EIO &&
                   (int)SLUICE_EUNSUPPORTED == (int)SL_EUNSUPPORTED && (int)SLUICE_ENOTFOUND == (int)SL_ENOTFOUND &&
                   (int)SLUICE_EQUEUE_FULL == (int)SL_EQUEUE_FULL && (int)SLUICE_ETOO_LONG == (int)SL_ETOO_LONG &&
                   (int)SLUICE_EBUSY == (int)SL_EBUSY && (int)SLUICE_ESTATE == (int)SL_ESTATE &&
                   (int)SLUICE_EDEVICE == (int)SL_EDEVICE && (int)SLUICE_ECANCELED == (int)SL_ECANCELED,
               "sluice.h status codes must equal sched/status.h");
_Static_assert((int)SLUICE_FINISH_EOS == (int)SCHED_FINISH_EOS &&
                   (int)SLUICE_FINISH_STOP == (int)SCHED_FINISH_STOP &&
                   (int)SLUICE_FINISH_LENGTH == (int)SCHED_FINISH_LENGTH &&
                   (int)SLUICE_FINISH_ABORT == (int)SCHED_FINISH_ABORT,
               "finish reasons must match the scheduler's");
_Static_assert((int)SLUICE_STRATEGY_NAIVE == (int)SCHED_NAIVE &&
                   (int)SLUICE_STRATEGY_BUCKETED == (int)SCHED_BUCKETED &&
                   (int)SLUICE_STRATEGY_MEMORY_AWARE == (int)SCHED_MEMORY_AWARE &&
                   (int)SLUICE_STRATEGY_CONTINUOUS == (int)SCHED_CONTINUOUS,
               "strategies must match the scheduler's");

#define ENG_DEFAULT_MAX_SEQ 2048 /* cap on the model's trained context when none is given */
#define ENG_RATE_WINDOW_S 10.0
#define ENG_RATE_SLOTS 16

/* ==== types ======================================================================================= */

typedef enum { SAMPLE_PENDING = 0, SAMPLE_LIVE, SAMPLE_DONE } sample_state_t;

typedef struct eng_req eng_req_t;

/* One sequence: a parallel sample of a request; one scheduler request. */
typedef struct eng_sample {
    eng_req_t *req;
    int index;
    uint64_t seq_id;          /* scheduler id */
    sample_state_t state;
    eng_sampler_t sampler;
    int32_t *toks;            /* (n_prompt + cap) prompt then generated ids */
    int n_out;                /* generated ids (toks + n_prompt) */
    double *times;            /* (cap) time of each generated token */
    float *lps;               /* (cap) log-probability of each generated token */
    sluice_top_logprob *tops; /* (cap * req->n_top) most likely tokens at each position, or NULL */
    char *text;               /* decoded text, NUL-terminated (stop string cut at the end) */
    size_t text_len, text_cap;
    size_t emitted;           /* bytes of text already passed to on_token */
    double logprob_sum;
    bool stopped;             /* a stop string matched: no more text */
    sched_finish_reason_t finish;
} eng_sample_t;

/* A request. `res` comes first: a sluice_result * handed out is this struct. */
struct eng_req {
    sluice_result res;
    sluice_sample *out;       /* (n) the result's samples */
    eng_sample_t *samples;    /* (best_of) */
    int n, best_of;
    int n_top;                /* top_logprobs per position */
    int n_prompt;
    int max_new;              /* generated tokens at most per sample */
    int n_done;               /* samples in SAMPLE_DONE */
    char **stop;              /* (n_stop) copies */
    int n_stop;
    bool ignore_eos;
    sluice_token_cb on_token;
    sluice_done_cb on_done;
    atomic_bool canceled;
    bool done;                /* result built */
    bool waited;              /* a sluice_wait holds it */
    bool delivered;           /* callbacks ran: a waiter may collect it */
    eng_req_t *next_done;     /* engine thread: completions waiting for their callbacks */
};

/* A token to pass to on_token after the step. */
typedef struct tok_event {
    eng_req_t *req;
    int index;
    int32_t token;
    float logprob;
    size_t off, len;          /* the piece inside the sample's text */
    int n_generated;
    double t;
} tok_event_t;

struct sluice_engine {
    /* immutable after create */
    eng_model_t *model;
    eng_backend_t *backend;
    sched_config_t scfg;
    eng_chat_template_t chat;
    bool has_chat;
    int vocab;
    double t0;                          /* CLOCK_MONOTONIC at create */
    sluice_step_cb on_step;
    void *step_user;
    int lookup_min, lookup_max;         /* prompt-lookup n-gram lengths (speculative drafts) */

    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake_cv;             /* engine thread: work or shutdown */
    atomic_uint kicks;                  /* bumped with every wake_cv signal: what idle_wait's spin polls */
    double idle_spin_s;                 /* params.idle_spin_ms */
    double last_step_end;               /* engine time the last step ended; -INFINITY before the first */
    pthread_cond_t done_cv;             /* waiters: a request is done */
    sched_t *sched;
    sched_adapt_t *adapt;               /* NULL unless params.adaptive */
    sched_adapt_change_t adapt_change;  /* the change the controller just logged */
    int64_t adapt_changes;              /* applied */
    int threads_active;                 /* the backend's threads for the next step (0: no pool) */
    int64_t thread_drops;
    eng_req_t **reqs;                   /* live and uncollected requests */
    int n_reqs, cap_reqs;
    uint64_t next_id;
    bool stopping, joined;
    double stop_deadline;
    int n_shutdown_aborted;
    int64_t submitted, rejected, finished, canceled, prompt_tokens, gen_tokens;
    int64_t spec_drafts, spec_accepted, spec_rejections, spec_lookups, spec_proposals;
    double busy_s;
    struct { double t; int64_t p, g; } rate[ENG_RATE_SLOTS];
    int rate_head, rate_n;
    char errmsg[512];

    pthread_t thread;
    bool thread_started;

    /* engine thread only: step scratch, grown on demand */
    eng_sampler_ws_t *ws;
    eng_batch_seq_t *bseqs;
    int *bseq_step;                     /* batch seq -> step seq */
    int *step_ntok;                     /* step seq -> tokens run (its drafts trimmed to those proposed) */
    int step_drafts, step_accepted;     /* the step's draft tokens run, and kept */
    int step_rejections;                /* the step's sequences whose drafts ended at a rejected one */
    int step_lookups, step_proposals;   /* the step's sequences with draft slots, and with drafts found */
    int32_t *btoks;                     /* copies of the step's tokens */
    int32_t *bblocks;                   /* copies of the block tables */
    int32_t *copy_src, *copy_dst;
    sched_seq_result_t *results;
    int32_t *out_toks;
    int *step_kv;                       /* sluice_step_info.decode_kv of the last step */
    float *logits;
    eng_sample_row_t *srows;            /* forward_sample: one row per sampled sequence */
    int32_t *spen;                      /* forward_sample: the step's penalty pairs */
    int32_t *stoks;                     /* forward_sample: the backend's picks */
    float *slps;                        /* ... and their log-probabilities */
    int cap_seqs, cap_toks, cap_blocks, cap_copies, cap_rows, cap_srows, cap_spen;
    tok_event_t *events;
    int n_events, cap_events;
    eng_req_t *done_head, *done_tail;   /* completions waiting for their callbacks */
    sched_done_t done_buf[64];
};

/* ==== small helpers ================================================================================ */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double eng_now(const sluice_engine *e) { return mono_now() - e->t0; }

double sluice_now(const sluice_engine *e) { return eng_now(e); }

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Grows *p (elements of size sz) to hold at least need; SL_ENOMEM leaves it unaltered. */
static int grow(void **p, int *cap, int need, size_t sz)
{
    if (need <= *cap)
        return SL_OK;
    int n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = sl_realloc(*p, (size_t)n * sz);
    if (!q)
        return SL_ENOMEM;
    *p = q;
    *cap = n;
    return SL_OK;
}

const char *sluice_strerror(int status) { return sl_strerror(status); }

const char *sluice_finish_reason_name(sluice_finish_reason r)
{
    switch (r) {
    case SLUICE_FINISH_NONE: return "none";
    case SLUICE_FINISH_EOS: return "eos";
    case SLUICE_FINISH_STOP: return "stop";
    case SLUICE_FINISH_LENGTH: return "length";
    case SLUICE_FINISH_ABORT: return "abort";
    case SLUICE_FINISH_ERROR: return "error";
    }
    return "?";
}

const char *sluice_engine_errmsg(const sluice_engine *e) { return e->errmsg; }

/* ==== params ======================================================================================= */

sluice_engine_params sluice_engine_default_params(void)
{
    sched_config_t c = sched_config_default();
    eng_backend_params_t b = eng_backend_params_default();
    sched_adapt_opts_t a;
    sched_adapt_opts_default(&a, &c);
    sluice_engine_params p = {
        .model = NULL,
        .backend = "cpu",
        .n_threads = b.n_threads,
        .kv_dtype = (sluice_kv_dtype)b.kv_dtype,
        .gpu_memory_utilization = b.gpu_memory_utilization,
        .device = b.device,
        .kv_memory_mb = 0,
        .idle_spin_ms = 1000,
        .strategy = (sluice_strategy)c.strategy,
        .max_batch_size = c.max_batch_size,
        .max_sequence_length = 0,
        .batch_timeout_ms = c.batch_timeout_ms,
        .bucket_size = c.bucket_size,
        .memory_limit_mb = c.memory_limit_mb,
        .max_total_tokens = c.max_total_tokens,
        .block_size = c.block_size,
        .max_num_batched_tokens = c.max_num_batched_tokens,
        .max_num_seqs = 64,
        .max_waiting_requests = c.max_waiting_requests,
        .enable_prefix_caching = c.enable_prefix_caching,
        .enable_chunked_prefill = c.enable_chunked_prefill,
        .num_speculative_tokens = c.num_speculative_tokens,
        .speculative_disable_by_batch_size = c.speculative_disable_by_batch_size,
        .prompt_lookup_min = 2,
        .prompt_lookup_max = 3,
        .on_step = NULL,
        .step_user = NULL,
        .adaptive = false,
        .adaptive_ttft_p99_s = a.ttft_target,
        .adaptive_tpot_p99_s = a.tpot_target,
        .adaptive_min_batched_tokens = a.budget_min,
        .adaptive_max_batched_tokens = a.budget_max,
        .adaptive_min_timeout_ms = a.timeout_min_ms,
        .adaptive_max_timeout_ms = 0,
        .adaptive_window_s = a.window_s,
        .adaptive_min_samples = a.min_samples,
        .adaptive_eval_interval_s = a.eval_interval_s,
        .adaptive_min_interval_s = a.min_interval_s,
    };
    return p;
}

sched_config_t eng_sched_config_from_params(const sluice_engine_params *p)
{
    sched_config_t c = sched_config_default();
    c.strategy = (sched_strategy_t)p->strategy;
    c.max_batch_size = p->max_batch_size;
    c.max_sequence_length = p->max_sequence_length;
    c.batch_timeout_ms = p->batch_timeout_ms;
    c.bucket_size = p->bucket_size;
    c.memory_limit_mb = p->memory_limit_mb;
    c.max_total_tokens = p->max_total_tokens;
    c.block_size = p->block_size;
    c.max_num_batched_tokens = p->max_num_batched_tokens;
    c.max_num_seqs = p->max_num_seqs;
    c.max_waiting_requests = p->max_waiting_requests;
    c.enable_prefix_caching = p->enable_prefix_caching;
    c.enable_chunked_prefill = p->enable_chunked_prefill;
    c.num_speculative_tokens = p->num_speculative_tokens;
    c.speculative_disable_by_batch_size = p->speculative_disable_by_batch_size;
    return c;
}

sluice_request_params sluice_request_default_params(void)
{
    sluice_request_params p = {
        .max_tokens = 16,
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = SLUICE_SEED_RANDOM,
        .n = 1,
    };
    return p;
}

/* ==== create / free ================================================================================ */

static void *engine_main(void *arg);

/* The model's shape for the memory estimator, with the real bytes per weight of its tensors. */
static sched_model_shape_t model_shape(const eng_model_t *m, double kv_elem_bytes)
{
    const eng_model_config_t *c = &m->cfg;
    sched_model_shape_t s = {0};
    snprintf(s.name, sizeof s.name, "%.31s", c->name);
    s.n_layers = c->n_layers;
    s.hidden = c->dim;
    s.n_heads = c->n_heads;
    s.n_kv_heads = c->n_kv_heads;
    s.head_dim = c->head_dim;
    s.intermediate = c->ffn_dim;
    s.vocab = c->vocab;
    s.max_context = c->n_ctx_train;
    s.tied_embeddings = c->tied_output;
    s.bytes_per_kv = kv_elem_bytes;
    s.bytes_per_weight = 1;
    double bytes = (double)m->tok_embd.nbytes + (double)m->out_norm.nbytes +
                   (c->tied_output ? 0.0 : (double)m->output.nbytes);
    for (int l = 0; l < c->n_layers; l++) {
        const eng_layer_t *L = &m->layers[l];
        bytes += (double)(L->attn_norm.nbytes + L->wq.nbytes + L->wk.nbytes + L->wv.nbytes +
                          L->wo.nbytes + L->ffn_norm.nbytes + L->w_gate.nbytes + L->w_up.nbytes +
                          L->w_down.nbytes);
    }
    int64_t params = sched_mem_params(&s);
    if (params > 0)
        s.bytes_per_weight = bytes / (double)params;
    return s;
}

/* Fills in what the engine decides: max_sequence_length, model shape, num_blocks. */
static int size_kv(sluice_engine *e, const sluice_engine_params *p, char *err, size_t errlen)
{
    sched_config_t *c = &e->scfg;
    const eng_model_config_t *mc = &e->model->cfg;
    if (c->max_sequence_length <= 0)
        c->max_sequence_length = p->max_sequence_length > 0
                                     ? p->max_sequence_length
                                     : (mc->n_ctx_train > 0 && mc->n_ctx_train < ENG_DEFAULT_MAX_SEQ
                                            ? mc->n_ctx_train
                                            : ENG_DEFAULT_MAX_SEQ);
    c->model = model_shape(e->model, e->backend->kv_elem_bytes); /* what the backend stores */
    if (c->block_size <= 0) {
        set_err(err, errlen, "block_size: must be >= 1, got %d", c->block_size);
        return SL_EINVAL;
    }
    int64_t per_block = sched_mem_kv_bytes_per_token(&c->model) * c->block_size;
    int64_t seqs = c->max_num_seqs > c->max_batch_size ? c->max_num_seqs : c->max_batch_size;
    int64_t blocks_per_seq = (c->max_sequence_length + c->block_size - 1) / c->block_size;
    int64_t want = seqs * blocks_per_seq;
    int64_t cap = e->backend->ops->kv_budget_bytes(e->backend);
    if (p->kv_memory_mb > 0) {
        int64_t lim = (int64_t)(p->kv_memory_mb * 1024.0 * 1024.0);
        if (cap <= 0 || lim < cap)
            cap = lim;
    }
    if (cap > 0 && want * per_block > cap)
        want = cap / per_block;
    if (want < blocks_per_seq) {
        set_err(err, errlen,
                "KV pool: %lld blocks (%.1f MiB) do not hold one max_sequence_length (%d) sequence; "
                "raise kv_memory_mb or lower max_sequence_length",
                (long long)want, (double)(want * per_block) / 1048576.0, c->max_sequence_length);
        return SL_ENOMEM;
    }
    if (want > INT32_MAX / 2)
        want = INT32_MAX / 2;
    c->num_blocks = (int)want;
    return SL_OK;
}

/* The controller's log callback: keeps the change for adapt_between_steps to apply and report. */
static void adapt_log(void *ctx, const sched_adapt_change_t *c)
{
    sluice_engine *e = ctx;
    e->adapt_change = *c;
}

/* The controller of params (adaptive on) for the scheduler's starting config e->scfg. */
static int adapt_create(sluice_engine *e, const sluice_engine_params *p, char *err, size_t errlen)
{
    sched_adapt_opts_t o;
    sched_adapt_opts_default(&o, &e->scfg);
    o.ttft_target = p->adaptive_ttft_p99_s;
    o.tpot_target = p->adaptive_tpot_p99_s;
    o.budget_min = p->adaptive_min_batched_tokens;
    o.budget_max = p->adaptive_max_batched_tokens;
    o.timeout_min_ms = p->adaptive_min_timeout_ms;
    if (p->adaptive_max_timeout_ms > 0)
        o.timeout_max_ms = p->adaptive_max_timeout_ms;
    o.window_s = p->adaptive_window_s;
    o.min_samples = p->adaptive_min_samples;
    o.eval_interval_s = p->adaptive_eval_interval_s;
    o.min_interval_s = p->adaptive_min_interval_s;
    o.log = adapt_log;
    o.log_ctx = e;
    char buf[256];
    e->adapt = sched_adapt_create(&o, 0, buf, (int)sizeof buf);
    if (!e->adapt) {
        set_err(err, errlen, "%s", buf);
        return SL_EINVAL;
    }
    return SL_OK;
}

static void req_free(eng_req_t *r);

static void engine_destroy(sluice_engine *e)
{
    for (int i = 0; i < e->n_reqs; i++)
        req_free(e->reqs[i]);
    sl_free(e->reqs);
    sched_free(e->sched);
    if (e->backend)
        eng_backend_free(e->backend);
    if (e->has_chat)
        eng_chat_template_free(&e->chat);
    if (e->model)
        eng_model_free(e->model);
    eng_sampler_ws_free(e->ws);
    sl_free(e->bseqs);
    sl_free(e->bseq_step);
    sl_free(e->step_ntok);
    sl_free(e->btoks);
    sl_free(e->bblocks);
    sl_free(e->copy_src);
    sl_free(e->copy_dst);
    sl_free(e->results);
    sl_free(e->out_toks);
    sl_free(e->step_kv);
    sl_free(e->logits);
    sl_free(e->srows);
    sl_free(e->spen);
    sl_free(e->stoks);
    sl_free(e->slps);
    sl_free(e->events);
    sched_adapt_free(e->adapt);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake_cv);
    pthread_cond_destroy(&e->done_cv);
    sl_free(e);
}

sluice_engine *eng_engine_create(const sluice_engine_params *p, const sched_config_t *sched,
                                 char *err, size_t errlen)
{
    char buf[512];
    if (!p || !p->model) {
        set_err(err, errlen, "model: required (a GGUF path or synthetic:SHAPE)");
        return NULL;
    }
    if (!(p->idle_spin_ms >= 0 && p->idle_spin_ms <= 3600e3)) {
        set_err(err, errlen, "idle_spin_ms: must be in 0..3600000, got %g", p->idle_spin_ms);
        return NULL;
    }
    if (p->prompt_lookup_min < 1 || p->prompt_lookup_min > ENG_DRAFT_MAX_NGRAM) {
        set_err(err, errlen, "prompt_lookup_min: must be in 1..%d, got %d", ENG_DRAFT_MAX_NGRAM, p->prompt_lookup_min);
        return NULL;
    }
    if (p->prompt_lookup_max < p->prompt_lookup_min || p->prompt_lookup_max > ENG_DRAFT_MAX_NGRAM) {
        set_err(err, errlen, "prompt_lookup_max: must be in prompt_lookup_min (%d)..%d, got %d", p->prompt_lookup_min,
                ENG_DRAFT_MAX_NGRAM, p->prompt_lookup_max);
        return NULL;
    }
    sluice_engine *e = sl_calloc(1, sizeof *e);
    if (!e) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->wake_cv, &ca);
    pthread_cond_init(&e->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    e->t0 = mono_now();
    e->next_id = 1;
    e->idle_spin_s = p->idle_spin_ms / 1e3;
    e->last_step_end = -INFINITY;
    e->on_step = p->on_step;
    e->step_user = p->step_user;
    e->lookup_min = p->prompt_lookup_min;
    e->lookup_max = p->prompt_lookup_max;
    e->scfg = sched ? *sched : eng_sched_config_from_params(p);

    const char *backend = p->backend ? p->backend : "cpu";
    e->model = eng_model_load_for(p->model, backend, buf, sizeof buf);
    if (!e->model) {
        set_err(err, errlen, "%s", buf);
        goto err;
    }
    e->vocab = e->model->cfg.vocab;
    if (e->model->chat_template && eng_chat_parse(e->model->chat_template, &e->chat, NULL, 0) == SL_OK)
        e->has_chat = true;

    eng_backend_params_t bp = eng_backend_params_default();
    bp.n_threads = p->n_threads;
    bp.fixed_threads = p->fixed_threads;
    bp.kv_dtype = (eng_kv_dtype_t)p->kv_dtype;
    bp.idle_spin_s = p->idle_spin_ms / 1e3;
    bp.gpu_memory_utilization = p->gpu_memory_utilization;
    bp.device = p->device;
    e->backend = eng_backend_create(backend, e->model, &bp, buf, sizeof buf);
    if (!e->backend) {
        set_err(err, errlen, "%s", buf);
        goto err;
    }
    if (e->backend->ops->threads)
        e->backend->ops->threads(e->backend, &e->threads_active, &e->thread_drops);
    if (size_kv(e, p, err, errlen) != SL_OK)
        goto err;
    e->sched = sched_create(&e->scfg, buf, sizeof buf);
    if (!e->sched) {
        set_err(err, errlen, "%s", buf);
        goto err;
    }
    if (p->adaptive && adapt_create(e, p, err, errlen) != SL_OK)
        goto err;
    int rc = e->backend->ops->kv_alloc(e->backend, e->scfg.num_blocks, e->scfg.block_size);
    if (rc != SL_OK) {
        set_err(err, errlen, "%s: KV pool of %d blocks: %s", e->backend->ops->name,
                e->scfg.num_blocks, e->backend->ops->errmsg(e->backend));
        goto err;
    }
    e->ws = eng_sampler_ws_create(e->vocab);
    if (!e->ws) {
        set_err(err, errlen, "out of memory");
        goto err;
    }
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        set_err(err, errlen, "cannot start the engine thread: %s", strerror(errno));
        goto err;
    }
    e->thread_started = true;
    return e;
err:
    engine_destroy(e);
    return NULL;
}

sluice_engine *sluice_engine_create(const sluice_engine_params *params, char *err, size_t errlen)
{
    return eng_engine_create(params, NULL, err, errlen);
}

/* Wakes the engine thread, sleeping or spinning in idle_wait. Under the lock. */
static void kick_locked(sluice_engine *e)
{
    atomic_fetch_add_explicit(&e->kicks, 1, memory_order_release);
    pthread_cond_broadcast(&e->wake_cv);
}

int sluice_engine_shutdown(sluice_engine *e, double deadline_s)
{
    pthread_mutex_lock(&e->mu);
    if (e->joined || !e->thread_started) {
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    if (!e->stopping) {
        e->stopping = true;
        e->stop_deadline = eng_now(e) + (deadline_s > 0 ? deadline_s : 0);
    }
    kick_locked(e);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    pthread_mutex_lock(&e->mu);
    e->joined = true;
    int n = e->n_shutdown_aborted;
    pthread_cond_broadcast(&e->done_cv);
    pthread_mutex_unlock(&e->mu);
    return n;
}

void sluice_engine_free(sluice_engine *e)
{
    if (!e)
        return;
    sluice_engine_shutdown(e, 0);
    engine_destroy(e);
}

const eng_model_t *eng_engine_model(const sluice_engine *e) { return e->model; }
const sched_config_t *eng_engine_sched_config(const sluice_engine *e) { return &e->scfg; }
const char *eng_engine_backend_name(const sluice_engine *e) { return e->backend->ops->name; }

/* ==== model information and tokenizer ============================================================== */

void sluice_model_get_info(const sluice_engine *e, sluice_model_info *out)
{
    const eng_model_config_t *c = &e->model->cfg;
    const eng_tokenizer_t *t = e->model->tok;
    *out = (sluice_model_info){
        .name = c->name,
        .arch = c->arch,
        .n_vocab = c->vocab,
        .n_ctx_train = c->n_ctx_train,
        .n_layers = c->n_layers,
        .dim = c->dim,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .max_sequence_length = e->scfg.max_sequence_length,
        .bos = t ? eng_tok_bos(t) : -1,
        .eos = t ? eng_tok_eos(t) : -1,
        .has_chat_template = e->has_chat,
    };
}

int sluice_tokenize(const sluice_engine *e, const char *text, bool add_special, int32_t *ids, int cap)
{
    if (!text || cap < 0 || (cap > 0 && !ids))
        return SL_EINVAL;
    if (!e->model->tok)
        return SL_EUNSUPPORTED;
    return eng_tok_encode(e->model->tok, text, add_special && eng_tok_add_bos(e->model->tok),
                          add_special, ids, cap);
}

int sluice_detokenize(const sluice_engine *e, const int32_t *ids, int n_ids, char *buf, int cap)
{
    if ((n_ids > 0 && !ids) || n_ids < 0 || cap < 0 || (cap > 0 && !buf))
        return SL_EINVAL;
    if (!e->model->tok)
        return SL_EUNSUPPORTED;
    return eng_tok_decode(e->model->tok, ids, n_ids, 0, buf, cap);
}

int sluice_chat_apply_template(const sluice_engine *e, const sluice_chat_message *msgs, int n_msgs,
                               bool add_assistant, char *buf, int cap)
{
    if (!e->has_chat)
        return SL_EUNSUPPORTED;
    if (n_msgs < 0 || (n_msgs > 0 && !msgs) || cap < 0 || (cap > 0 && !buf))
        return SL_EINVAL;
    _Static_assert(sizeof(sluice_chat_message) == sizeof(eng_chat_msg_t),
                   "chat message layouts must match");
    char *out = NULL;
    int rc = eng_chat_render(&e->chat, (const eng_chat_msg_t *)msgs, n_msgs, add_assistant, &out,
                             NULL, 0);
    if (rc != SL_OK)
        return rc;
    size_t len = strlen(out);
    if (cap > 0) {
        size_t k = len < (size_t)cap - 1 ? len : (size_t)cap - 1;
        memcpy(buf, out, k);
        buf[k] = '\0';
    }
    sl_free(out);
    return len > INT32_MAX ? SL_ENOMEM : (int)len;
}

/* ==== requests ===================================================================================== */

static void req_free(eng_req_t *r)
{
    if (!r)
        return;
    if (r->samples)
        for (int k = 0; k < r->best_of; k++) {
            sl_free(r->samples[k].toks);
            sl_free(r->samples[k].times);
            sl_free(r->samples[k].lps);
            sl_free(r->samples[k].tops);
            sl_free(r->samples[k].text);
        }
    for (int k = 0; k < r->n_stop; k++)
        sl_free(r->stop[k]);
    sl_free(r->stop);
    sl_free(r->samples);
    sl_free(r->out);
    sl_free(r);
}

void sluice_result_free(sluice_result *res) { req_free((eng_req_t *)res); }

/* Allocates a sample's buffers: room for the prompt and max_new outputs (with n_top alternatives
 * each). */
static int sample_alloc(eng_sample_t *s, int n_prompt, int max_new, int n_top)
{
    s->toks = sl_malloc(sizeof(int32_t) * (size_t)(n_prompt + max_new));
    s->times = sl_malloc(sizeof(double) * (size_t)max_new);
    s->lps = sl_malloc(sizeof(float) * (size_t)max_new);
    s->tops = n_top ? sl_malloc(sizeof(sluice_top_logprob) * (size_t)max_new * (size_t)n_top) : NULL;
    s->text_cap = 64;
    s->text = sl_malloc(s->text_cap);
    if (!s->toks || !s->times || !s->lps || (n_top && !s->tops) || !s->text)
        return SL_ENOMEM;
    s->text[0] = '\0';
    return SL_OK;
}

/* Tokenizes the prompt (text, chat-wrapped text, or ids) into a new array. */
static int prompt_ids(sluice_engine *e, const sluice_request_params *p, int32_t **out, int *n)
{
    const eng_tokenizer_t *t = e->model->tok;
    if (p->prompt_ids) {
        if (p->n_prompt_ids < 1)
            return SL_EINVAL;
        for (int i = 0; i < p->n_prompt_ids; i++)
            if (p->prompt_ids[i] < 0 || p->prompt_ids[i] >= e->vocab)
                return SL_EINVAL;
        *out = sl_malloc(sizeof(int32_t) * (size_t)p->n_prompt_ids);
        if (!*out)
            return SL_ENOMEM;
        memcpy(*out, p->prompt_ids, sizeof(int32_t) * (size_t)p->n_prompt_ids);
        *n = p->n_prompt_ids;
        return SL_OK;
    }
    if (!p->prompt)
        return SL_EINVAL;
    if (!t)
        return SL_EUNSUPPORTED;
    char *rendered = NULL;
    const char *text = p->prompt;
    int add_bos = eng_tok_add_bos(t), special = 0;
    if (p->chat) {
        if (!e->has_chat)
            return SL_EUNSUPPORTED;
        eng_chat_msg_t m = {"user", p->prompt};
        int rc = eng_chat_render(&e->chat, &m, 1, 1, &rendered, NULL, 0);
        if (rc != SL_OK)
            return rc;
        text = rendered;
        add_bos = 0;
        special = 1;
    }
    int rc = SL_OK;
    int len = eng_tok_encode(t, text, add_bos, special, NULL, 0);
    if (len < 0) {
        rc = len;
    } else if (len == 0) {
        rc = SL_EINVAL;
    } else if (!(*out = sl_malloc(sizeof(int32_t) * (size_t)len))) {
        rc = SL_ENOMEM;
    } else {
        *n = eng_tok_encode(t, text, add_bos, special, *out, len);
    }
    sl_free(rendered);
    return rc;
}

/* Builds a request from params (everything but its id); error message into e->errmsg. */
static int req_build(sluice_engine *e, const sluice_request_params *p, eng_req_t **out)
{
    int best_of = p->best_of > 0 ? p->best_of : p->n;
    if (p->n < 1 || best_of < p->n || best_of > 64 || p->n_stop < 0 || (p->n_stop > 0 && !p->stop) ||
        p->max_tokens < 0 || p->top_logprobs < 0 || p->top_logprobs > SLUICE_MAX_TOP_LOGPROBS) {
        return SL_EINVAL;
    }
    eng_req_t *r = sl_calloc(1, sizeof *r);
    if (!r)
        return SL_ENOMEM;
    int32_t *ids = NULL;
    int rc = prompt_ids(e, p, &ids, &r->n_prompt);
    if (rc != SL_OK) {
        sl_free(r);
        return rc;
    }
    int max_seq = e->scfg.max_sequence_length;
    r->max_new = p->max_tokens > 0 ? p->max_tokens : max_seq - r->n_prompt;
    if (r->max_new < 1 || r->n_prompt + r->max_new > max_seq) {
        sl_free(ids);
        sl_free(r);
        return SL_ETOO_LONG;
    }
    r->n = p->n;
    r->best_of = best_of;
    r->n_top = p->top_logprobs;
    r->ignore_eos = p->ignore_eos;
    r->on_token = best_of > p->n ? NULL : p->on_token;
    r->on_done = p->on_done;
    r->res.user = p->user;
    r->res.n_prompt_ids = r->n_prompt;
    r->samples = sl_calloc((size_t)best_of, sizeof *r->samples);
    r->out = sl_calloc((size_t)r->n, sizeof *r->out);
    r->stop = p->n_stop ? sl_calloc((size_t)p->n_stop, sizeof *r->stop) : NULL;
    if (!r->samples || !r->out || (p->n_stop && !r->stop))
        goto oom;
    r->n_stop = p->n_stop;
    for (int k = 0; k < p->n_stop; k++)
        if (!p->stop[k] || !(r->stop[k] = sl_strdup(p->stop[k])))
            goto oom;
    eng_sampler_params_t sp = eng_sampler_params_default();
    sp.temperature = p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p;
    sp.min_p = p->min_p;
    sp.repetition_penalty = p->repeat_penalty;
    sp.repetition_last_n = p->repeat_last_n;
    sp.frequency_penalty = p->frequency_penalty;
    sp.presence_penalty = p->presence_penalty;
    sp.seed = p->seed == SLUICE_SEED_RANDOM ? (uint64_t)(mono_now() * 1e9) ^ (uint64_t)(uintptr_t)r
                                            : p->seed;
    for (int k = 0; k < best_of; k++) {
        eng_sample_t *s = &r->samples[k];
        s->req = r;
        s->index = k;
        if (sample_alloc(s, r->n_prompt, r->max_new, r->n_top) != SL_OK)
            goto oom;
        eng_sampler_params_t skp = sp;
        skp.seed = sp.seed + (uint64_t)k * 0x9E3779B97F4A7C15ull;
        eng_sampler_init(&s->sampler, &skp);
    }
    memcpy(r->samples[0].toks, ids, sizeof(int32_t) * (size_t)r->n_prompt);
    sl_free(ids);
    r->res.prompt_ids = r->samples[0].toks;
    r->res.t_first_scheduled = r->res.t_first_token = r->res.t_finish = -1;
    *out = r;
    return SL_OK;
oom:
    sl_free(ids);
    req_free(r);
    return SL_ENOMEM;
}

static int find_req(const sluice_engine *e, sluice_request_id id)
{
    for (int i = 0; i < e->n_reqs; i++)
        if (e->reqs[i]->res.id == id)
            return i;
    return -1;
}

static void remove_req(sluice_engine *e, int i) { e->reqs[i] = e->reqs[--e->n_reqs]; }

int sluice_submit(sluice_engine *e, const sluice_request_params *params, sluice_request_id *id)
{
    eng_req_t *r = NULL;
    int rc = params ? req_build(e, params, &r) : SL_EINVAL;
    pthread_mutex_lock(&e->mu);
    if (rc == SL_OK && e->stopping)
        rc = SL_ESTATE;
    if (rc == SL_OK)
        rc = grow((void **)&e->reqs, &e->cap_reqs, e->n_reqs + 1, sizeof *e->reqs);
    if (rc == SL_OK) {
        double now = eng_now(e);
        r->res.id = e->next_id++;
        r->res.t_arrival = now;
        r->samples[0].seq_id = r->res.id;
        sched_request_t sr = {
            .id = r->res.id,
            .priority = params->priority,
            .arrival = now,
            .prompt = r->samples[0].toks,
            .prompt_len = r->n_prompt,
            .max_new_tokens = r->max_new,
            .user = &r->samples[0],
        };
        rc = sched_submit(e->sched, &sr, now);
    }
    if (rc == SL_OK) {
        r->samples[0].state = SAMPLE_LIVE;
        e->reqs[e->n_reqs++] = r;
        e->submitted++;
        if (id)
            *id = r->res.id;
        kick_locked(e);
    } else {
        e->rejected++;
        switch (rc) {
        case SL_ETOO_LONG:
            snprintf(e->errmsg, sizeof e->errmsg,
                     "prompt (%d tokens) + max_tokens (%d) exceed max_sequence_length (%d) or the "
                     "KV pool", r ? r->n_prompt : 0, r ? r->max_new : params->max_tokens,
                     e->scfg.max_sequence_length);
            break;
        case SL_EQUEUE_FULL:
            snprintf(e->errmsg, sizeof e->errmsg, "queue full: %d requests waiting (max_waiting_requests)",
                     e->scfg.max_waiting_requests);
            break;
        case SL_ESTATE:
            snprintf(e->errmsg, sizeof e->errmsg, "the engine is shutting down");
            break;
        case SL_EINVAL:
            snprintf(e->errmsg, sizeof e->errmsg,
                     "invalid request: needs a prompt (text or ids in 0..%d), n >= 1, "
                     "n <= best_of <= 64, max_tokens >= 0, top_logprobs 0..%d, non-NULL stop strings",
                     e->vocab - 1, SLUICE_MAX_TOP_LOGPROBS);
            break;
        default:
            snprintf(e->errmsg, sizeof e->errmsg, "submit: %s", sl_strerror(rc));
        }
        req_free(r);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* Aborts every live sample of r in the scheduler. Under the lock. */
static void abort_req_locked(sluice_engine *e, eng_req_t *r, double now)
{
    atomic_store(&r->canceled, true);
    for (int k = 0; k < r->best_of; k++)
        if (r->samples[k].state == SAMPLE_LIVE)
            sched_abort(e->sched, r->samples[k].seq_id, now);
    kick_locked(e);
}

int sluice_cancel(sluice_engine *e, sluice_request_id id)
{
    pthread_mutex_lock(&e->mu);
    int i = find_req(e, id);
    int rc = SL_ENOTFOUND;
    if (i >= 0 && !e->reqs[i]->done && !atomic_load(&e->reqs[i]->canceled)) {
        abort_req_locked(e, e->reqs[i], eng_now(e));
        rc = SL_OK;
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int sluice_wait(sluice_engine *e, sluice_request_id id, double timeout_s, sluice_result **out)
{
    struct timespec until;
    if (timeout_s >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        double t = (double)until.tv_sec + (double)until.tv_nsec * 1e-9 + timeout_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&e->mu);
    int i = find_req(e, id);
    if (i < 0 || e->reqs[i]->on_done || e->reqs[i]->waited) {
        pthread_mutex_unlock(&e->mu);
        return SL_ENOTFOUND;
    }
    eng_req_t *r = e->reqs[i];
    r->waited = true;
    int rc = SL_OK;
    while (!r->delivered) {
        if (timeout_s < 0) {
            pthread_cond_wait(&e->done_cv, &e->mu);
        } else if (pthread_cond_timedwait(&e->done_cv, &e->mu, &until) == ETIMEDOUT &&
                   !r->delivered) {
            rc = SL_EBUSY;
            break;
        }
    }
    if (rc == SL_OK) {
        remove_req(e, find_req(e, id));
        *out = &r->res;
    } else {
        r->waited = false;
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* ==== statistics =================================================================================== */

void sluice_get_stats(sluice_engine *e, sluice_stats *out)
{
    sched_stats_t s;
    pthread_mutex_lock(&e->mu);
    sched_get_stats(e->sched, &s);
    double now = eng_now(e);
    *out = (sluice_stats){
        .waiting = s.waiting,
        .running = s.running,
        .waiting_prompt_tokens = s.waiting_prompt_tokens,
        .block_size = e->scfg.block_size,
        .kv_blocks_total = s.num_blocks,
        .kv_blocks_used = s.used_blocks,
        .kv_blocks_free = s.free_blocks,
        .kv_blocks_cached = s.cached_blocks,
        .kv_used_slots = s.kv_used_slots,
        .kv_reserved_slots = s.kv_reserved_slots,
        .prefix_queries = s.prefix_queries,
        .prefix_query_tokens = s.prefix_query_tokens,
        .prefix_hit_tokens = s.prefix_hit_tokens,
        .preemptions = s.preemptions,
        .evictions = s.evictions,
        .steps = s.steps,
        .requests_submitted = e->submitted,
        .requests_rejected = e->rejected,
        .requests_finished = e->finished,
        .requests_canceled = e->canceled,
        .prompt_tokens = e->prompt_tokens,
        .generation_tokens = e->gen_tokens,
        .spec_draft_tokens = e->spec_drafts,
        .spec_accepted_tokens = e->spec_accepted,
        .spec_rejections = e->spec_rejections,
        .spec_lookups = e->spec_lookups,
        .spec_proposals = e->spec_proposals,
        .uptime_s = now,
        .busy_s = e->busy_s,
        .max_num_batched_tokens = sched_config(e->sched)->max_num_batched_tokens,
        .batch_timeout_ms = sched_config(e->sched)->batch_timeout_ms,
        .adaptive_changes = e->adapt_changes,
        .threads_active = e->threads_active,
        .thread_drops = e->thread_drops,
    };
    /* rates: against the oldest snapshot inside the window */
    for (int k = e->rate_n; k > 0; k--) {
        int slot = (e->rate_head - k + ENG_RATE_SLOTS) % ENG_RATE_SLOTS;
        if (now - e->rate[slot].t <= ENG_RATE_WINDOW_S && now - e->rate[slot].t > 0.05) {
            out->prompt_tokens_per_s = (double)(e->prompt_tokens - e->rate[slot].p) / (now - e->rate[slot].t);
            out->generation_tokens_per_s = (double)(e->gen_tokens - e->rate[slot].g) / (now - e->rate[slot].t);
            break;
        }
    }
    pthread_mutex_unlock(&e->mu);
}

/* Records a rate snapshot at most once a second. Under the lock. */
static void rate_tick(sluice_engine *e, double now)
{
    int last = (e->rate_head - 1 + ENG_RATE_SLOTS) % ENG_RATE_SLOTS;
    if (e->rate_n > 0 && now - e->rate[last].t < 1.0)
        return;
    e->rate[e->rate_head].t = now;
    e->rate[e->rate_head].p = e->prompt_tokens;
    e->rate[e->rate_head].g = e->gen_tokens;
    e->rate_head = (e->rate_head + 1) % ENG_RATE_SLOTS;
    if (e->rate_n < ENG_RATE_SLOTS)
        e->rate_n++;
}

/* ==== the engine thread ============================================================================ */

static int push_event(sluice_engine *e, eng_sample_t *s, int32_t token, float logprob, size_t off,
                      size_t len, double t)
{
    if (!s->req->on_token)
        return SL_OK;
    if (grow((void **)&e->events, &e->cap_events, e->n_events + 1, sizeof *e->events) != SL_OK)
        return SL_ENOMEM;
    e->events[e->n_events++] = (tok_event_t){s->req, s->index, token, logprob, off, len, s->n_out, t};
    return SL_OK;
}

/* Appends a piece to the sample's text. */
static int text_append(eng_sample_t *s, const char *p, size_t n)
{
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap * 2;
        while (cap < s->text_len + n + 1)
            cap *= 2;
        char *q = sl_realloc(s->text, cap);
        if (!q)
            return SL_ENOMEM;
        s->text = q;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, p, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
    return SL_OK;
}

/* Records a sampled token in s: ids, time, logprob, text, stop strings, EOS. Returns the finish
 * reason the executor reports (NONE, EOS, STOP) and queues the token event. */
static sched_finish_reason_t sample_accept(sluice_engine *e, eng_sample_t *s, int32_t tok,
                                           float logprob, double now)
{
    eng_req_t *r = s->req;
    const eng_tokenizer_t *t = e->model->tok;
    s->toks[r->n_prompt + s->n_out] = tok;
    s->times[s->n_out] = now;
    s->lps[s->n_out] = logprob;
    s->n_out++;
    s->logprob_sum += logprob;
    sched_finish_reason_t fin = SCHED_FINISH_NONE;
    if (t && !r->ignore_eos && eng_tok_is_eog(t, tok))
        fin = SCHED_FINISH_EOS;
    if (t && !s->stopped && fin == SCHED_FINISH_NONE) {
        char piece[256];
        int n = eng_tok_piece(t, tok, 0, piece, sizeof piece);
        if (n > (int)sizeof piece)
            n = (int)sizeof piece;
        if (n > 0 && text_append(s, piece, (size_t)n) != SL_OK)
            n = 0; /* out of memory: the text loses this piece, the ids keep it */
    }
    size_t emit = s->text_len;
    if (!s->stopped && r->n_stop > 0 &&
        eng_stop_scan(s->text, s->text_len, (const char *const *)r->stop, r->n_stop, &emit)) {
        s->stopped = true;
        s->text_len = emit;
        s->text[emit] = '\0';
        fin = SCHED_FINISH_STOP;
    } else if (fin == SCHED_FINISH_NONE && s->n_out < r->max_new && r->n_stop == 0) {
        /* hold back only a trailing incomplete UTF-8 sequence */
        eng_stop_scan(s->text, s->text_len, NULL, 0, &emit);
    }
    /* the last token flushes everything */
    if (fin != SCHED_FINISH_NONE || s->n_out >= r->max_new)
        emit = s->text_len;
    if (emit < s->emitted)
        emit = s->emitted;
    push_event(e, s, tok, logprob, s->emitted, emit - s->emitted, now);
    s->emitted = emit;
    return fin;
}

/* Copies sample 0's generation state into child c (fork). */
static void sample_copy(eng_sample_t *c, const eng_sample_t *p, int n_prompt)
{
    memcpy(c->toks, p->toks, sizeof(int32_t) * (size_t)(n_prompt + p->n_out));
    memcpy(c->times, p->times, sizeof(double) * (size_t)p->n_out);
    memcpy(c->lps, p->lps, sizeof(float) * (size_t)p->n_out);
    if (c->tops)
        memcpy(c->tops, p->tops, sizeof *c->tops * (size_t)p->n_out * (size_t)c->req->n_top);
    c->n_out = p->n_out;
    c->text_len = 0;
    c->text[0] = '\0';
    text_append(c, p->text, p->text_len);
    c->emitted = 0;
    c->logprob_sum = p->logprob_sum;
    c->stopped = p->stopped;
}

/* Sample 0 of r has its first token: create the other samples (sched_fork). Under the lock. */
static void fork_samples(sluice_engine *e, eng_req_t *r, double now)
{
    eng_sample_t *p = &r->samples[0];
    for (int k = 1; k < r->best_of; k++) {
        eng_sample_t *c = &r->samples[k];
        sample_copy(c, p, r->n_prompt);
        c->seq_id = e->next_id++;
        if (sched_fork(e->sched, p->seq_id, c->seq_id, c, now) != SL_OK) {
            c->state = SAMPLE_DONE;
            c->finish = SCHED_FINISH_ABORT;
            r->n_done++;
            continue;
        }
        c->state = SAMPLE_LIVE;
        /* replay the shared first token to the stream of sample k */
        size_t emit = p->emitted;
        push_event(e, c, c->toks[r->n_prompt], (float)c->logprob_sum, 0, emit, c->times[0]);
        c->emitted = emit;
    }
}

/* Orders samples by mean logprob, best first (best_of). */
static int cmp_mean_logprob(const void *a, const void *b)
{
    const eng_sample_t *x = *(eng_sample_t *const *)a, *y = *(eng_sample_t *const *)b;
    double mx = x->n_out ? x->logprob_sum / x->n_out : -INFINITY;
    double my = y->n_out ? y->logprob_sum / y->n_out : -INFINITY;
    return (mx < my) - (mx > my);
}

/* All samples of r are done: build the result. Under the lock. */
static void req_finish(sluice_engine *e, eng_req_t *r, double now)
{
    eng_sample_t *order[64];
    for (int k = 0; k < r->best_of; k++)
        order[k] = &r->samples[k];
    if (r->best_of > r->n)
        qsort(order, (size_t)r->best_of, sizeof order[0], cmp_mean_logprob);
    bool aborted = false;
    for (int k = 0; k < r->n; k++) {
        eng_sample_t *s = order[k];
        r->out[k] = (sluice_sample){
            .index = k,
            .ids = s->toks + r->n_prompt,
            .n_ids = s->n_out,
            .text = s->text,
            .text_len = s->text_len,
            .logprob_sum = s->logprob_sum,
            .finish_reason = (sluice_finish_reason)s->finish,
            .token_times = s->times,
            .logprobs = s->lps,
            .top_logprobs = s->tops,
            .n_top = r->n_top,
        };
        aborted |= s->finish == SCHED_FINISH_ABORT;
    }
    r->res.n_samples = r->n;
    r->res.samples = r->out;
    r->res.t_finish = now;
    if (r->res.status == SL_OK && (aborted || atomic_load(&r->canceled)))
        r->res.status = SL_ECANCELED;
    if (r->res.status == SL_EDEVICE)
        for (int k = 0; k < r->n; k++)
            r->out[k].finish_reason = SLUICE_FINISH_ERROR;
    r->done = true;
    if (r->res.status == SL_OK)
        e->finished++;
    else
        e->canceled++;
}

/* Moves the scheduler's done records into the samples; finished requests go on done_reqs. */
static void collect_done(sluice_engine *e, double now)
{
    int n;
    while ((n = sched_drain_done(e->sched, e->done_buf, (int)(sizeof e->done_buf / sizeof e->done_buf[0]))) > 0) {
        for (int i = 0; i < n; i++) {
            const sched_done_t *d = &e->done_buf[i];
            eng_sample_t *s = d->user;
            eng_req_t *r = s->req;
            s->state = SAMPLE_DONE;
            s->finish = d->reason;
            r->n_done++;
            if (e->adapt && s->index == 0)
                sched_adapt_observe_request(e->adapt, d);
            if (s->index == 0) {
                r->res.n_cached_prompt_tokens = d->cached_prompt_len;
                r->res.preemptions = d->preemptions;
                r->res.t_first_scheduled = d->first_scheduled;
                r->res.t_first_token = d->first_token;
                /* children never forked: they end as sample 0 did */
                for (int k = 1; k < r->best_of; k++) {
                    eng_sample_t *c = &r->samples[k];
                    if (c->state != SAMPLE_PENDING)
                        continue;
                    if (d->reason != SCHED_FINISH_ABORT && s->n_out > 0)
                        sample_copy(c, s, r->n_prompt);
                    c->state = SAMPLE_DONE;
                    c->finish = d->reason;
                    r->n_done++;
                }
            }
            if (r->n_done == r->best_of && !r->done) {
                req_finish(e, r, now);
                r->next_done = NULL;
                if (e->done_tail)
                    e->done_tail->next_done = r;
                else
                    e->done_head = r;
                e->done_tail = r;
            }
        }
    }
}

/* Runs token callbacks, then completion callbacks (detached requests are freed after theirs).
 * Called without the lock; takes it to unlink detached requests. */
static void run_callbacks(sluice_engine *e)
{
    for (int i = 0; i < e->n_events; i++) {
        tok_event_t *ev = &e->events[i];
        eng_req_t *r = ev->req;
        if (atomic_load(&r->canceled))
            continue;
        eng_sample_t *s = &r->samples[ev->index];
        const sluice_top_logprob *top = s->tops ? s->tops + (size_t)(ev->n_generated - 1) * (size_t)r->n_top : NULL;
        int n_top = 0;
        while (top && n_top < r->n_top && top[n_top].token >= 0)
            n_top++;
        sluice_token tk = {
            .id = r->res.id,
            .index = ev->index,
            .token = ev->token,
            .logprob = ev->logprob,
            .piece = s->text + ev->off,
            .piece_len = ev->len,
            .n_generated = ev->n_generated,
            .t = ev->t,
            .top = top,
            .n_top = n_top,
        };
        if (!r->on_token(&tk, r->res.user))
            sluice_cancel(e, r->res.id);
    }
    e->n_events = 0;
    pthread_mutex_lock(&e->mu);
    eng_req_t *list = e->done_head;
    e->done_head = e->done_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    for (eng_req_t *r = list; r; r = r->next_done)
        if (r->on_done)
            r->on_done(&r->res, r->res.user);
    if (!list)
        return;
    pthread_mutex_lock(&e->mu);
    for (eng_req_t *r = list, *next; r; r = next) {
        next = r->next_done;
        if (r->on_done) {
            remove_req(e, find_req(e, r->res.id));
            req_free(r);
        } else {
            r->delivered = true;
        }
    }
    pthread_cond_broadcast(&e->done_cv);
    pthread_mutex_unlock(&e->mu);
}

/* The n most likely tokens of a raw logits row with their log-softmax values into out[0..n), most
 * likely first (ties: lower id first); entries beyond the finite logits get token -1 and -INFINITY.
 * Three passes over the row (maximum, normaliser, then an insertion into the n best so far): a
 * partial selection, the row is never sorted. */
static void top_logprobs(const float *row, int vocab, int n, sluice_top_logprob *out)
{
    for (int k = 0; k < n; k++)
        out[k] = (sluice_top_logprob){-1, -INFINITY};
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (isfinite(row[i]) && row[i] > mx)
            mx = row[i];
    if (!isfinite(mx))
        return;
    double sum = 0;
    for (int i = 0; i < vocab; i++)
        if (isfinite(row[i]))
            sum += exp((double)row[i] - (double)mx);
    double lse = (double)mx + log(sum);
    int m = 0; /* out[0..m) holds the best raw logits so far, descending */
    for (int i = 0; i < vocab; i++) {
        float x = row[i];
        if (!isfinite(x) || (m == n && x <= out[n - 1].logprob))
            continue;
        int j = m < n ? m++ : n - 1;
        for (; j > 0 && out[j - 1].logprob < x; j--)
            out[j] = out[j - 1];
        out[j] = (sluice_top_logprob){i, x};
    }
    for (int k = 0; k < m; k++)
        out[k].logprob = (float)((double)out[k].logprob - lse);
}

/* Reallocates *p to bytes; SL_ENOMEM leaves it unaltered. */
static int resize(void *pp, size_t bytes)
{
    void **p = pp;
    void *q = sl_realloc(*p, bytes ? bytes : 1);
    if (!q)
        return SL_ENOMEM;
    *p = q;
    return SL_OK;
}

static int next_cap(int cap, int need) { return need > 2 * cap ? need : 2 * cap; }

/* Grows the per-sequence step buffers (batch, results). SL_ENOMEM leaves usable smaller ones. */
static int ensure_seqs(sluice_engine *e, int n_seqs)
{
    if (n_seqs <= e->cap_seqs)
        return SL_OK;
    int cap = next_cap(e->cap_seqs, n_seqs);
    if (resize(&e->bseqs, sizeof *e->bseqs * (size_t)cap) ||
        resize(&e->bseq_step, sizeof(int) * (size_t)cap) ||
        resize(&e->step_ntok, sizeof(int) * (size_t)cap) ||
        resize(&e->results, sizeof *e->results * (size_t)cap) ||
        resize(&e->out_toks, sizeof(int32_t) * (size_t)cap) ||
        resize(&e->step_kv, sizeof(int) * (size_t)cap))
        return SL_ENOMEM;
    e->cap_seqs = cap;
    return SL_OK;
}

/* Grows the engine thread's step buffers. SL_ENOMEM leaves usable (smaller) buffers. */
static int ensure_scratch(sluice_engine *e, int n_seqs, int n_toks, int n_blocks, int n_copies)
{
    if (ensure_seqs(e, n_seqs) != SL_OK)
        return SL_ENOMEM;
    if (n_toks > e->cap_toks) {
        int cap = next_cap(e->cap_toks, n_toks);
        if (resize(&e->btoks, sizeof(int32_t) * (size_t)cap))
            return SL_ENOMEM;
        e->cap_toks = cap;
    }
    if (n_blocks > e->cap_blocks) {
        int cap = next_cap(e->cap_blocks, n_blocks);
        if (resize(&e->bblocks, sizeof(int32_t) * (size_t)cap))
            return SL_ENOMEM;
        e->cap_blocks = cap;
    }
    if (n_copies > e->cap_copies) {
        int cap = next_cap(e->cap_copies, n_copies);
        if (resize(&e->copy_src, sizeof(int32_t) * (size_t)cap) ||
            resize(&e->copy_dst, sizeof(int32_t) * (size_t)cap))
            return SL_ENOMEM;
        e->cap_copies = cap;
    }
    return SL_OK;
}

/* Host logits rows, grown on demand: only steps the host samples need them (a backend that samples
 * keeps its logits; 256 rows of a 128k vocabulary are 128 MiB). */
static int ensure_logits(sluice_engine *e, int n_rows)
{
    if (n_rows > e->cap_rows) {
        int cap = next_cap(e->cap_rows, n_rows);
        if (resize(&e->logits, sizeof(float) * (size_t)cap * (size_t)e->vocab))
            return SL_ENOMEM;
        e->cap_rows = cap;
    }
    return SL_OK;
}

/* Copies the step into the backend batch (engine-thread buffers), so the forward pass reads no
 * scheduler memory. Sequences with no token to run (padding-only members of a static batch) are
 * left out. A decoding sequence with draft slots runs its token and the drafts prompt lookup
 * proposes for it (fewer than the slots when fewer are found: the rest is never computed), with a
 * logits row for each. Under the lock. */
static int build_batch(sluice_engine *e, const sched_step_t *st, eng_batch_t *b)
{
    int ntok = 0, nblk = 0;
    for (int i = 0; i < st->n_seqs; i++) {
        ntok += st->seqs[i].n_tokens;
        nblk += st->seqs[i].n_blocks;
    }
    int rc = ensure_scratch(e, st->n_seqs, ntok, nblk, st->n_copies);
    if (rc != SL_OK)
        return rc;
    int nb = 0, to = 0, bo = 0;
    e->step_lookups = e->step_proposals = 0;
    for (int i = 0; i < st->n_seqs; i++) {
        const sched_seq_step_t *q = &st->seqs[i];
        e->step_ntok[i] = 0;
        if (q->n_tokens <= 0)
            continue;
        if (!q->tokens)
            return SL_EINVAL; /* length-only requests are never submitted here */
        int known = q->n_tokens - q->n_draft, drafts = 0;
        memcpy(e->btoks + to, q->tokens, sizeof(int32_t) * (size_t)known);
        if (q->n_draft > 0) {
            const eng_sample_t *s = q->user;
            drafts = eng_draft_lookup(s->toks, s->req->n_prompt + s->n_out, e->lookup_min, e->lookup_max, q->n_draft,
                                      e->btoks + to + known);
            e->step_lookups++;
            e->step_proposals += drafts > 0;
        }
        memcpy(e->bblocks + bo, q->block_table, sizeof(int32_t) * (size_t)q->n_blocks);
        e->bseqs[nb] = (eng_batch_seq_t){
            .tokens = e->btoks + to,
            .n_tokens = known + drafts,
            .pos = q->context_len,
            .block_table = e->bblocks + bo,
            .n_blocks = q->n_blocks,
            .logits = drafts > 0 ? 2 : q->sample ? 1 : 0,
        };
        e->step_ntok[i] = known + drafts;
        e->bseq_step[nb++] = i;
        to += known + drafts;
        bo += q->n_blocks;
    }
    for (int c = 0; c < st->n_copies; c++) {
        e->copy_src[c] = st->copies[c].src;
        e->copy_dst[c] = st->copies[c].dst;
    }
    *b = (eng_batch_t){nb, e->bseqs, st->n_copies, e->copy_src, e->copy_dst};
    return SL_OK;
}

/* The backend samples (forward_sample) unless it cannot, a sequence of the step wants its top
 * logprobs, or one runs drafts: those need the logits on the host (a draft's row is sampled only
 * after the token before it was drawn and matched). */
static bool backend_samples(const sluice_engine *e, const sched_step_t *st, const eng_batch_t *b)
{
    if (!e->backend->ops->forward_sample)
        return false;
    for (int j = 0; j < b->n_seqs; j++)
        if (b->seqs[j].logits == 2 ||
            (b->seqs[j].logits && ((const eng_sample_t *)st->seqs[e->bseq_step[j]].user)->tops))
            return false;
    return true;
}

/* forward_sample with a row per sampled sequence, prepared from its sampler (its PRNG advances
 * exactly as eng_sampler_sample's would). A sequence with no token left to sample gets a greedy row
 * that draws nothing. */
static int forward_sampled(sluice_engine *e, const sched_step_t *st, const eng_batch_t *b, int *n_rows)
{
    int n = 0, pairs = 0;
    for (int j = 0; j < b->n_seqs; j++) {
        if (!b->seqs[j].logits)
            continue;
        const eng_sample_t *s = st->seqs[e->bseq_step[j]].user;
        pairs += eng_sampler_max_pairs(&s->sampler, s->req->n_prompt + s->n_out);
        n++;
    }
    if (n > e->cap_srows) {
        int cap = next_cap(e->cap_srows, n);
        if (resize(&e->srows, sizeof *e->srows * (size_t)cap) || resize(&e->stoks, sizeof(int32_t) * (size_t)cap) ||
            resize(&e->slps, sizeof(float) * (size_t)cap))
            return SL_ENOMEM;
        e->cap_srows = cap;
    }
    if (pairs > e->cap_spen) {
        int cap = next_cap(e->cap_spen, pairs);
        if (resize(&e->spen, 2 * sizeof(int32_t) * (size_t)cap))
            return SL_ENOMEM;
        e->cap_spen = cap;
    }
    int r = 0, np = 0;
    for (int j = 0; j < b->n_seqs; j++) {
        if (!b->seqs[j].logits)
            continue;
        eng_sample_t *s = st->seqs[e->bseq_step[j]].user;
        if (s->n_out < s->req->max_new)
            np += eng_sampler_prepare(&s->sampler, e->ws, s->toks, s->req->n_prompt + s->n_out, &e->srows[r], e->spen, np);
        else
            e->srows[r] = (eng_sample_row_t){.top_p = 1, .repetition_penalty = 1, .pen_off = np};
        r++;
    }
    return e->backend->ops->forward_sample(e->backend, b, e->srows, e->spen, np, e->stoks, e->slps, n_rows);
}

/* Samples sequence s's next token from logits row lg (NULL: the backend's pick in e->stoks[r]) and
 * records it (sample_accept). */
static sched_finish_reason_t sample_row(sluice_engine *e, eng_sample_t *s, const float *lg, int r, double now,
                                        int32_t *tok_out)
{
    int32_t tok = 0;
    float lp = 0;
    if (!lg)
        tok = e->stoks[r], lp = e->slps[r];
    else if (eng_sampler_sample(&s->sampler, e->ws, lg, s->toks, s->req->n_prompt + s->n_out, &tok, &lp) != SL_OK)
        tok = -1;
    if (tok < 0)
        tok = 0, lp = 0; /* no finite logit: keep the sequence well-formed; the text shows it */
    if (s->tops)
        top_logprobs(lg, e->vocab, s->req->n_top, s->tops + (size_t)s->n_out * (size_t)s->req->n_top);
    *tok_out = tok;
    return sample_accept(e, s, tok, lp, now);
}

/* Forward + sampling, without the lock. Fills e->results for every step sequence. A sequence with
 * drafts samples its rows in order, each after the token before it, and stops at the first row
 * whose token is not the draft that was run after it (or at EOS / a stop string / max tokens):
 * the tokens are those plain decoding would give, the PRNG advances as it would, and the KV of
 * the rejected drafts lies past the sequence's new length, overwritten later. Returns the
 * backend's status. */
static int run_step(sluice_engine *e, const sched_step_t *st, const eng_batch_t *b, double *forward_s)
{
    for (int i = 0; i < st->n_seqs; i++)
        e->results[i] = (sched_seq_result_t){0, NULL, SCHED_FINISH_NONE};
    e->step_drafts = e->step_accepted = e->step_rejections = 0;
    const bool on_backend = backend_samples(e, st, b);
    int n_rows = 0, rc;
    for (int j = 0; j < b->n_seqs && !on_backend; j++)
        n_rows += b->seqs[j].logits == 2 ? b->seqs[j].n_tokens : b->seqs[j].logits;
    rc = ensure_logits(e, n_rows);
    double t0 = eng_now(e);
    if (b->n_seqs > 0 && rc == SL_OK)
        rc = on_backend ? forward_sampled(e, st, b, &n_rows) : e->backend->ops->forward(e->backend, b, e->logits, &n_rows);
    double now = eng_now(e);
    *forward_s = now - t0;
    int row = 0;
    for (int j = 0; j < b->n_seqs; j++) {
        if (!b->seqs[j].logits)
            continue;
        const int i = e->bseq_step[j], rows = b->seqs[j].logits == 2 ? b->seqs[j].n_tokens : 1, r0 = row;
        const int32_t *drafts = b->seqs[j].tokens + 1;
        row += rows;
        eng_sample_t *s = st->seqs[i].user;
        const int out0 = s->n_out;
        int32_t tok = 0;
        sched_finish_reason_t fin = SCHED_FINISH_NONE;
        for (int k = 0; k < rows && rc == SL_OK && s->n_out < s->req->max_new; k++) {
            const float *lg = on_backend ? NULL : e->logits + (size_t)(r0 + k) * (size_t)e->vocab;
            fin = sample_row(e, s, lg, r0 + k, now, &tok);
            if (k == rows - 1)
                break;
            if (tok != drafts[k]) {
                e->step_rejections++;
                break;
            }
            e->step_accepted++;
            if (fin != SCHED_FINISH_NONE)
                break;
        }
        e->step_drafts += rows - 1;
        const int added = s->n_out - out0;
        if (added > 0) {
            e->results[i] = (sched_seq_result_t){added, s->toks + s->req->n_prompt + out0, fin};
        } else { /* failed step, or nothing left to sample: the scheduler still expects one token */
            e->out_toks[i] = 0;
            e->results[i] = (sched_seq_result_t){1, &e->out_toks[i], fin};
        }
    }
    return rc;
}

static bool any_live(const sluice_engine *e)
{
    for (int i = 0; i < e->n_reqs; i++)
        if (!e->reqs[i]->done)
            return true;
    return false;
}

/* Aborts every live request with status `status` (SL_OK keeps the cancel default). Returns how
 * many. Under the lock. */
static int abort_all(sluice_engine *e, int status, double now)
{
    int n = 0;
    for (int i = 0; i < e->n_reqs; i++) {
        eng_req_t *r = e->reqs[i];
        if (r->done || atomic_load(&r->canceled))
            continue;
        if (status != SL_OK)
            r->res.status = status;
        abort_req_locked(e, r, now);
        n++;
    }
    return n;
}

/* Sleeps until wake_at (engine time; INFINITY = until signalled). Under the lock. Within
 * idle_spin_s of the last step it polls `kicks` instead (unlocked, yielding the CPU now and then)
 * and returns at the first kick or when the spin ends: a request that arrives soon after the last
 * one then starts at once on a core that is still at full speed. */
static void idle_wait(sluice_engine *e, double wake_at)
{
    if (e->stopping && e->stop_deadline < wake_at)
        wake_at = e->stop_deadline;
    double now = eng_now(e), spin_until = fmin(e->last_step_end + e->idle_spin_s, wake_at);
    if (now < spin_until) {
        unsigned k0 = atomic_load_explicit(&e->kicks, memory_order_acquire);
        pthread_mutex_unlock(&e->mu);
        for (unsigned i = 1; atomic_load_explicit(&e->kicks, memory_order_acquire) == k0; i++) {
            if (i % 64 == 0) {
                if (eng_now(e) >= spin_until)
                    break;
                sched_yield();
            }
        }
        pthread_mutex_lock(&e->mu);
        return;
    }
    if (!isfinite(wake_at)) {
        pthread_cond_wait(&e->wake_cv, &e->mu);
        return;
    }
    double t = e->t0 + wake_at;
    struct timespec ts = {(time_t)t, (long)((t - floor(t)) * 1e9)};
    pthread_cond_timedwait(&e->wake_cv, &e->mu, &ts);
}

static void fill_step_info(sluice_engine *e, const sched_step_t *st, sluice_step_info *info)
{
    sched_stats_t s;
    sched_get_stats(e->sched, &s);
    info->seq_no = st->seq_no;
    info->n_seqs = st->n_seqs;
    info->n_prefill_tokens = st->n_prefill_tokens;
    info->n_decode_seqs = st->n_decode_seqs;
    info->n_padded_tokens = st->n_padded_tokens;
    info->n_preempted = st->n_preempted;
    info->n_draft_tokens = e->step_drafts;
    info->n_accepted_drafts = e->step_accepted;
    info->n_rejections = e->step_rejections;
    info->n_lookups = e->step_lookups;
    info->n_proposals = e->step_proposals;
    int n_dec = 0; /* e->step_kv holds st->n_seqs: ensure_seqs ran for this step */
    for (int i = 0; i < st->n_seqs; i++) {
        const sched_seq_step_t *q = &st->seqs[i];
        const int ran = e->step_ntok[i];
        info->n_tokens += ran;
        if (q->sample && ran > 0)
            info->n_sampled += q->is_prefill ? 1 : ran;
        if (q->is_prefill) {
            info->prefill_pairs += (double)q->n_tokens * (q->context_len + (q->n_tokens + 1) / 2.0);
        } else { /* the token reads its context; drafts after it are a chunk on top (sim/profile.h) */
            e->step_kv[n_dec++] = q->context_len + 1;
            if (ran > 1)
                info->prefill_pairs += (ran - 1) * (q->context_len + 1 + ran / 2.0);
        }
    }
    info->decode_kv = e->step_kv;
    info->kv_blocks_used = s.used_blocks;
    info->kv_blocks_free = s.free_blocks;
    info->kv_blocks_cached = s.cached_blocks;
    info->kv_used_slots = s.kv_used_slots;
    info->kv_reserved_slots = s.kv_reserved_slots;
    info->kv_naive_slots = s.kv_naive_slots;
    info->waiting = s.waiting;
    info->running = s.running;
}

/* After a step's commit (no step in flight), under the lock: the controller sees the queue and
 * may change a live knob, applied here and reported on stderr. */
static void adapt_between_steps(sluice_engine *e, double now, int waiting)
{
    if (!e->adapt)
        return;
    sched_adapt_observe_step(e->adapt, waiting);
    sched_config_t next;
    if (!sched_adapt_decide(e->adapt, now, sched_config(e->sched), &next))
        return;
    const sched_adapt_change_t *c = &e->adapt_change;
    char err[256];
    if (sched_update_config(e->sched, &next, err, (int)sizeof err) != SL_OK) {
        snprintf(e->errmsg, sizeof e->errmsg, "adaptive: %s %g -> %g refused: %s", c->knob, c->old_value,
                 c->new_value, err);
        fprintf(stderr, "%s\n", e->errmsg);
        return;
    }
    e->adapt_changes++;
    fprintf(stderr, "adaptive: t=%.3f s %s %g -> %g (%s)\n", c->t, c->knob, c->old_value, c->new_value, c->reason);
}

static void *engine_main(void *arg)
{
    sluice_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        double now = eng_now(e);
        if (e->stopping && now >= e->stop_deadline)
            e->n_shutdown_aborted += abort_all(e, SL_OK, now);
        collect_done(e, now);
        if (e->done_head || e->n_events > 0) {
            pthread_mutex_unlock(&e->mu);
            run_callbacks(e);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        if (e->stopping && !any_live(e))
            break;

        sched_step_t st;
        double wake_at = INFINITY;
        int rc = sched_plan(e->sched, now, &st, &wake_at);
        if (rc == SCHED_PLAN_IDLE) {
            idle_wait(e, wake_at);
            continue;
        }
        if (rc != SCHED_PLAN_STEP) {
            snprintf(e->errmsg, sizeof e->errmsg, "scheduler: plan failed: %s", sl_strerror(rc));
            abort_all(e, SL_EDEVICE, now);
            idle_wait(e, INFINITY);
            continue;
        }
        sluice_step_info info = {.t_start = now};
        eng_batch_t batch;
        rc = build_batch(e, &st, &batch);
        pthread_mutex_unlock(&e->mu);

        int nsampled = 0;
        if (rc == SL_OK) {
            rc = run_step(e, &st, &batch, &info.forward_s);
        } else {
            /* a commit needs one result per sequence: wait for that little memory */
            while (ensure_seqs(e, st.n_seqs) != SL_OK)
                nanosleep(&(struct timespec){0, 10000000}, NULL);
            e->step_drafts = e->step_accepted = e->step_rejections = 0;
            e->step_lookups = e->step_proposals = 0;
            for (int i = 0; i < st.n_seqs; i++) {
                e->out_toks[i] = 0;
                e->step_ntok[i] = 0;
                e->results[i] = (sched_seq_result_t){st.seqs[i].sample, &e->out_toks[i], SCHED_FINISH_NONE};
            }
        }
        for (int i = 0; i < st.n_seqs; i++)
            nsampled += e->results[i].n_tokens;

        pthread_mutex_lock(&e->mu);
        now = eng_now(e);
        if (rc != SL_OK) {
            snprintf(e->errmsg, sizeof e->errmsg, "%s: step %llu failed: %s",
                     e->backend->ops->name, (unsigned long long)st.seq_no,
                     rc == SL_ENOMEM ? "out of memory" : e->backend->ops->errmsg(e->backend));
            for (int i = 0; i < st.n_seqs; i++) {
                eng_req_t *r = ((eng_sample_t *)st.seqs[i].user)->req;
                if (!r->done) {
                    r->res.status = SL_EDEVICE;
                    abort_req_locked(e, r, now);
                }
            }
        }
        sched_result_t res = {st.n_seqs, e->results};
        int crc = sched_commit(e->sched, &st, &res, now);
        if (crc != SL_OK) {
            snprintf(e->errmsg, sizeof e->errmsg, "scheduler: commit failed: %s", sl_strerror(crc));
            abort_all(e, SL_EDEVICE, now);
        }
        for (int i = 0; i < st.n_seqs; i++) {
            eng_sample_t *s = st.seqs[i].user;
            eng_req_t *r = s->req;
            if (s->index == 0 && r->best_of > 1 && e->results[i].n_tokens == 1 && s->n_out == 1 &&
                r->max_new > 1 && e->results[i].finish == SCHED_FINISH_NONE &&
                r->samples[1].state == SAMPLE_PENDING && !atomic_load(&r->canceled))
                fork_samples(e, r, now);
        }
        e->prompt_tokens += st.n_prefill_tokens;
        e->gen_tokens += nsampled;
        e->spec_drafts += e->step_drafts;
        e->spec_accepted += e->step_accepted;
        e->spec_rejections += e->step_rejections;
        e->spec_lookups += e->step_lookups;
        e->spec_proposals += e->step_proposals;
        e->busy_s += now - info.t_start;
        if (e->backend->ops->threads)
            e->backend->ops->threads(e->backend, &e->threads_active, &e->thread_drops);
        rate_tick(e, now);
        collect_done(e, now);
        info.t_end = now;
        e->last_step_end = now;
        fill_step_info(e, &st, &info);
        adapt_between_steps(e, now, info.waiting);
        pthread_mutex_unlock(&e->mu);

        run_callbacks(e);
        if (e->on_step)
            e->on_step(&info, e->step_user);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}
