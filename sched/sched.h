/* sched.h — the one scheduler: request queue, batching strategies, paged KV, the step API.
 *
 * A pure state machine over requests and KV blocks. Time is passed in (seconds, any epoch);
 * nothing here reads a clock, sleeps, does I/O or starts threads, so the same object code drives
 * the discrete-event simulator (sim/) and the real engine (engine/).
 *
 * The loop every executor runs:
 *
 *     sched_submit(s, &req, now)                       any number of times, between steps
 *     rc = sched_plan(s, now, &step, &wake_at)         SCHED_PLAN_STEP: execute step
 *                                                      SCHED_PLAN_IDLE: nothing to run before wake_at
 *     ... executor runs the step (cost model or forward pass) and fills a result ...
 *     sched_commit(s, &step, &result, now)             tokens appended, finished requests freed
 *     n = sched_drain_done(s, done, cap)               finished / aborted requests, with timings
 *
 * Exactly one step is in flight: plan, then commit that step, then plan again. sched_abort() may
 * be called at any time; a request in the in-flight step is released at that step's commit.
 *
 * Request state machine (invariants and transitions are documented at the top of sched.c):
 *
 *     WAITING --plan--> RUNNING --commit--> FINISHED
 *        ^                 |  \--abort----> ABORTED   (also from WAITING)
 *        |              preempt
 *        +-- PREEMPTED <---+                (blocks freed; requeued to recompute prompt + output)
 *
 * Threading: none. The engine serialises calls behind its own lock.
 * Ownership: the scheduler owns copies of prompts and generated tokens; `user` is never touched.
 */
#ifndef SLUICE_SCHED_H
#define SLUICE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "memest.h"
#include "status.h"

typedef struct sched sched_t;

/* ---- configuration ------------------------------------------------------------------------ */

typedef enum sched_strategy {
    SCHED_NAIVE = 0,    /* static batch, padded to the longest prompt, runs until its longest member ends */
    SCHED_BUCKETED,     /* static batch drawn from one prompt-length bucket of width bucket_size */
    SCHED_MEMORY_AWARE, /* static batch admitted while the memory estimator says it fits */
    SCHED_CONTINUOUS,   /* iteration-level: token budget, chunked prefill, preemption by recompute */
} sched_strategy_t;

/* "naive", "bucketed", "memory_aware", "continuous". Cannot fail (returns "?" out of range). */
const char *sched_strategy_name(sched_strategy_t strategy);
/* Parses a strategy name (case-insensitive, '-' or '_'). SL_EINVAL for an unknown name. */
int sched_strategy_parse(const char *name, sched_strategy_t *out);

typedef struct sched_config {
    sched_strategy_t strategy;   /* default SCHED_CONTINUOUS */
    int max_batch_size;          /* static strategies: members per batch. default 32, 1..65536 */
    int max_sequence_length;     /* prompt + output tokens per request. default 2048 */
    double batch_timeout_ms;     /* static strategies: oldest waiter's max wait before a partial batch runs. default 50 */
    int bucket_size;             /* BUCKETED: prompt-length bucket width in tokens. default 128 */
    double memory_limit_mb;      /* MEMORY_AWARE: KV + activation budget of one batch (MiB). default 4096 */
    int64_t max_total_tokens;    /* MEMORY_AWARE: sum of (prompt + max new) tokens per batch. default 32768 */
    int block_size;              /* KV tokens per block. default 16 */
    int num_blocks;              /* KV pool size in blocks (from the memory estimator). default 4096 */
    int max_num_batched_tokens;  /* CONTINUOUS: token budget per step. default 2048 */
    int max_num_seqs;            /* CONTINUOUS: running sequences at most. default 256 */
    int max_waiting_requests;    /* queue bound: submits beyond it get SL_EQUEUE_FULL. default 4096; 0 = unbounded */
    int64_t max_waiting_tokens;  /* queue bound on waiting prompt tokens. default 0 = unbounded */
    bool enable_prefix_caching;  /* reuse cached full blocks across requests. default true */
    bool enable_chunked_prefill; /* CONTINUOUS: split prompts over steps to fit the budget. default true */
    int num_speculative_tokens;  /* CONTINUOUS: draft tokens verified per decode step (0 = off). default 0 */
    int speculative_disable_by_batch_size; /* CONTINUOUS: no drafts in a step planned while this many
                                              sequences or more run (drafts cost compute a large
                                              batch no longer has to spare); 0 = never. default 0 */
    sched_model_shape_t model;   /* MEMORY_AWARE's estimator input; default: llama2-7b fp16 */
    double gpu_memory_utilization; /* engine / estimator: fraction of device memory usable. default 0.9.
                                      The scheduler itself does not read it. */
} sched_config_t;

/* The documented defaults above. Cannot fail. */
sched_config_t sched_config_default(void);

/* Checks every field; on error returns SL_EINVAL and writes "max_num_seqs: must be 1..65536, got 0"
 * into err (if non-NULL, errlen > 0). Cannot fail otherwise. */
int sched_config_validate(const sched_config_t *cfg, char *err, int errlen);

/* ---- knobs: every config field by its snake_case name (for flags, config files, the tuner) ---- */

typedef enum sched_knob_type {
    SCHED_KNOB_INT = 0, /* int field */
    SCHED_KNOB_INT64,   /* int64_t field */
    SCHED_KNOB_DOUBLE,
    SCHED_KNOB_BOOL,    /* "true"/"false", "1"/"0", "on"/"off", "yes"/"no" */
    SCHED_KNOB_STRATEGY, /* a sched_strategy_parse() name */
    SCHED_KNOB_MODEL,   /* a built-in shape name (sched_model_shape_builtin) */
} sched_knob_type_t;

typedef struct sched_knob {
    const char *name;       /* "max_num_seqs": the config field's name */
    sched_knob_type_t type;
    const char *unit;       /* "tokens", "ms", "MiB", "blocks", "" */
    double min, max;        /* accepted range, inclusive (numeric knobs; 0..1 for BOOL) */
    const char *help;       /* one line */
    bool live;              /* sched_update_config() may change it on a running scheduler */
} sched_knob_t;

/* Number of knobs, and knob i (0 <= i < count; NULL outside). The default of a knob is
 * sched_config_get() on sched_config_default(). Cannot fail. */
int sched_knob_count(void);
const sched_knob_t *sched_knob_at(int i);
/* The knob called name ('-' accepted for '_'), or NULL. Cannot fail. */
const sched_knob_t *sched_knob_find(const char *name);

/* Sets one field from text. On error returns SL_ENOTFOUND (unknown key) or SL_EINVAL (not a
 * value of the knob's type, or out of range), writes "max_num_seqs: must be an integer in
 * 1..65536, got 0" into err (if non-NULL, errlen > 0), and leaves *cfg unchanged. Range checks
 * only; cross-field rules are sched_config_validate()'s. */
int sched_config_set(sched_config_t *cfg, const char *key, const char *value, char *err, int errlen);
/* Writes a field's value as text sched_config_set() accepts ("64", "continuous", "true"). Returns
 * SL_OK, SL_ENOTFOUND for an unknown key, SL_EINVAL when buf is too small (buf then holds a
 * truncated value). */
int sched_config_get(const sched_config_t *cfg, const char *key, char *buf, int buflen);

/* The name of the first knob that is not `live` and differs between a and b (the model compared
 * field by field), or NULL when only live knobs differ. Cannot fail. */
const char *sched_config_fixed_change(const sched_config_t *a, const sched_config_t *b);

/* ---- requests ----------------------------------------------------------------------------- */

typedef enum sched_req_state {
    SCHED_WAITING = 0,
    SCHED_RUNNING,
    SCHED_PREEMPTED, /* transient: freed and back in the queue; shows as WAITING in the queue */
    SCHED_FINISHED,
    SCHED_ABORTED,
} sched_req_state_t;

typedef enum sched_finish_reason {
    SCHED_FINISH_NONE = 0, /* still running */
    SCHED_FINISH_EOS,      /* executor saw end-of-sequence */
    SCHED_FINISH_STOP,     /* executor matched a stop string or token */
    SCHED_FINISH_LENGTH,   /* max_new_tokens or max_sequence_length reached (the scheduler decides) */
    SCHED_FINISH_ABORT,    /* sched_abort() */
} sched_finish_reason_t;

const char *sched_finish_reason_name(sched_finish_reason_t reason);

typedef struct sched_request {
    uint64_t id;            /* unique among live requests; chosen by the caller */
    int priority;           /* lower = more urgent; FCFS within one priority */
    double arrival;         /* seconds; the queue orders by (priority, arrival, submit order) */
    const int32_t *prompt;  /* prompt_len token ids (copied), or NULL: length only, never prefix-cached */
    int prompt_len;         /* >= 1 */
    int max_new_tokens;     /* >= 1; the scheduler finishes the request at this many outputs */
    void *user;             /* executor's data, returned in steps and done records */
} sched_request_t;

/* One finished or aborted request, with its timeline (seconds; -1 when it never happened). */
typedef struct sched_done {
    uint64_t id;
    void *user;
    int priority;
    sched_finish_reason_t reason;
    int prompt_len;
    int output_len;        /* tokens generated */
    int cached_prompt_len; /* prompt tokens served from the prefix cache at the first schedule */
    int preemptions;
    int64_t computed_tokens; /* tokens run through the model, recompute included */
    double arrival, first_scheduled, first_token, finished;
} sched_done_t;

/* ---- steps and results -------------------------------------------------------------------- */

/* One sequence's part of a step. */
typedef struct sched_seq_step {
    uint64_t req_id;
    void *user;
    int n_tokens;          /* tokens to run now: a prompt chunk, 1 decode token, or 1 + drafts */
    int context_len;       /* tokens already in this sequence's KV before the step */
    bool is_prefill;       /* the tokens are prompt (or recompute) tokens */
    bool sample;           /* a token is sampled after this chunk (last prompt chunk, or decode) */
    int n_draft;           /* speculative draft slots included in n_tokens (executor proposes them) */
    int padded_tokens;     /* static strategies: padding work this sequence carries in this step */
    const int32_t *tokens; /* the n_tokens - n_draft known token ids, or NULL for length-only requests */
    const int32_t *block_table; /* KV block ids covering context_len + n_tokens tokens */
    int n_blocks;
} sched_seq_step_t;

typedef struct sched_block_copy {
    int32_t src, dst; /* copy-on-write: copy KV block src into dst before running the step */
} sched_block_copy_t;

typedef struct sched_step {
    uint64_t seq_no;        /* 0, 1, 2, ... per scheduler */
    int n_seqs;
    sched_seq_step_t *seqs; /* owned by the scheduler; valid until the matching commit */
    int n_tokens;           /* sum of seqs[i].n_tokens */
    int n_prefill_tokens;   /* of which prompt tokens */
    int n_decode_seqs;      /* sequences decoding */
    int n_padded_tokens;    /* sum of seqs[i].padded_tokens */
    int n_copies;
    sched_block_copy_t *copies;
    int n_preempted;        /* sequences preempted while planning this step */
} sched_step_t;

typedef struct sched_seq_result {
    int n_tokens;          /* tokens appended: 0 after a non-final prompt chunk, 1 per decode,
                              1 + accepted drafts under speculation */
    const int32_t *tokens; /* their ids, or NULL for length-only requests */
    sched_finish_reason_t finish; /* SCHED_FINISH_NONE, or EOS / STOP seen by the executor */
} sched_seq_result_t;

typedef struct sched_result {
    int n_seqs; /* must equal the step's n_seqs; seqs[i] answers step.seqs[i] */
    const sched_seq_result_t *seqs;
} sched_result_t;

/* ---- the step API --------------------------------------------------------------------------- */

/* Creates a scheduler. On error returns NULL and, if err != NULL, writes why (invalid config,
 * out of memory). The config is copied. */
sched_t *sched_create(const sched_config_t *cfg, char *err, int errlen);
void sched_free(sched_t *s);

const sched_config_t *sched_config(const sched_t *s);

/* Changes a live scheduler's configuration between steps (the adaptive controller's lever). Only
 * the knobs marked `live` may differ from the current configuration: batch_timeout_ms and
 * max_num_batched_tokens. The new values apply from the next sched_plan(): a waiting static
 * batch's deadline is recomputed from the new timeout, the next step's token budget is the new
 * budget; nothing already planned or running is undone.
 * Errors (the scheduler then unchanged): SL_ESTATE while a step is in flight (between steps only);
 * SL_EINVAL when cfg fails sched_config_validate() or changes another field, with err naming it
 * ("max_num_seqs: cannot change on a running scheduler (live: batch_timeout_ms,
 * max_num_batched_tokens)"). */
int sched_update_config(sched_t *s, const sched_config_t *cfg, char *err, int errlen);

/* Queues a request. Returns SL_OK; SL_EINVAL (bad fields, duplicate live id); SL_ETOO_LONG
 * (prompt_len + max_new_tokens over max_sequence_length, or more blocks than the whole pool);
 * SL_EQUEUE_FULL (a queue bound is reached); SL_ENOMEM. On error nothing changes. */
int sched_submit(sched_t *s, const sched_request_t *req, double now);

enum { SCHED_PLAN_IDLE = 0, SCHED_PLAN_STEP = 1 };

/* Plans the next step. Returns SCHED_PLAN_STEP with *step filled; or SCHED_PLAN_IDLE when nothing
 * can run now, with *wake_at the time a static batch's timeout expires (INFINITY when only a new
 * submit can create work). SL_ESTATE if a step is already in flight. */
int sched_plan(sched_t *s, double now, sched_step_t *step, double *wake_at);

/* Applies the executor's result to the in-flight step: appends tokens, stamps first-token times,
 * finishes sequences (executor's EOS/STOP, or length), frees their blocks (keeping full blocks
 * in the prefix cache), releases aborted ones. SL_ESTATE if no step is in flight or the step is
 * not the one planned; SL_EINVAL if the result does not match the step. */
int sched_commit(sched_t *s, const sched_step_t *step, const sched_result_t *result, double now);

/* Aborts a live request: frees it now (or at the in-flight step's commit) and reports it done
 * with SCHED_FINISH_ABORT. SL_ENOTFOUND if no live request has this id. */
int sched_abort(sched_t *s, uint64_t id, double now);

/* Parallel sampling: after parent has sampled its first token, creates child_id sharing all of
 * parent's blocks (reference counted); the shared partial last block is copied on the child's next
 * write (listed in that step's copies). SL_ENOTFOUND, SL_ESTATE (parent not running or a step in
 * flight), SL_EINVAL (duplicate id), SL_ENOMEM. The child inherits priority and limits. */
int sched_fork(sched_t *s, uint64_t parent_id, uint64_t child_id, void *child_user, double now);

/* Moves up to cap finished/aborted records into out, oldest first; returns how many. Cannot fail. */
int sched_drain_done(sched_t *s, sched_done_t *out, int cap);

/* ---- observation ---------------------------------------------------------------------------- */

typedef struct sched_stats {
    int waiting, running;              /* requests */
    int64_t waiting_prompt_tokens;
    int num_blocks, free_blocks, used_blocks, cached_blocks; /* cached = evictable on the LRU */
    int64_t kv_reserved_slots;         /* used_blocks * block_size */
    int64_t kv_used_slots;             /* tokens actually held by running sequences */
    int64_t kv_naive_slots;            /* what max-length reservation would hold for the running set */
    int64_t prefix_queries, prefix_query_tokens, prefix_hit_tokens;
    int64_t evictions, preemptions, finished, aborted, steps;
} sched_stats_t;

/* Fills *out. Cannot fail. */
void sched_get_stats(const sched_t *s, sched_stats_t *out);

/* State of a live request; SL_ENOTFOUND otherwise. */
int sched_request_state(const sched_t *s, uint64_t id, sched_req_state_t *out);

/* Checks every internal invariant (reference counts equal block-table uses, free + used + cached
 * = pool, hash index consistent, queue ordered). Returns SL_OK or SL_ESTATE with the broken
 * invariant written into err. For tests and debug builds: it walks every block and request. */
int sched_check_invariants(const sched_t *s, char *err, int errlen);

#endif
