/* internal.h — internal to sched/: the scheduler's state, shared by sched.c (API, commit, abort,
 * fork, invariants), queue.c (heaps, id map, running set) and batcher.c (the strategies' plan). */
#ifndef SLUICE_SCHED_INTERNAL_H
#define SLUICE_SCHED_INTERNAL_H

#include "kv.h"
#include "sched.h"

/* One live request. */
typedef struct sreq {
    uint64_t id;
    void *user;
    int priority;
    double arrival;
    uint64_t order;      /* submit order: the queue's last tie-break */
    int prompt_len, max_new, output_len;
    int32_t *tokens;     /* (prompt_len + max_new) prompt then output ids; NULL: length only */
    int kv_len;          /* tokens whose KV is computed */
    int prefill_end;     /* prefilling while kv_len < prefill_end (prompt + output at admission) */
    int32_t *blocks;     /* (cap_blocks) block table; n_blocks in use */
    int n_blocks, cap_blocks;
    int n_hashed;        /* leading blocks whose chain hash is known (hit or registered) */
    uint64_t chain_hash; /* chain hash of block n_hashed - 1 (KV_HASH_ROOT when none) */
    sched_req_state_t state;
    bool abort_pending;  /* aborted while in the in-flight step: released at its commit */
    int queue;           /* which priority heap holds it while waiting (bucket for BUCKETED) */
    int qpos, apos;      /* positions in that heap and in the arrival heap; -1 when absent */
    int step_pos;        /* index in the step being planned / in flight; -1 when not in it */
    int cached_prompt_len, preemptions;
    int64_t computed;
    double first_scheduled, first_token;
} sreq_t;

/* Binary heap of waiting requests, ordered by (priority, arrival, order) or by (arrival, order). */
typedef struct sheap {
    sreq_t **a;
    int n, cap;
    bool by_arrival; /* also selects the position field: apos instead of qpos */
} sheap_t;

struct sched {
    sched_config_t cfg;
    sched_kv_t kv;
    uint64_t next_order, next_step;

    sheap_t *queues; /* n_queues priority heaps: one, or one per bucket (BUCKETED) */
    int n_queues;
    sheap_t by_arrival; /* static strategies: every waiter, oldest first (batch timeouts) */
    int n_waiting;
    int64_t waiting_tokens;
    int64_t kv_tokens; /* sum of kv_len over live requests (waiting ones hold 0): stats in O(1) */
    bool forked;       /* a fork happened: a partial last block may be shared (copy on write) */

    sreq_t **running; /* sorted by (priority, arrival, order); n_running used, cap_running */
    int n_running, cap_running;
    int batch_slots; /* static strategies: members of the current batch, finished ones included */

    sreq_t **ids; /* open-addressing id map of live requests; ids_mask + 1 slots */
    uint32_t ids_mask;
    int n_live;

    sched_done_t *done; /* ring of finished/aborted records; capacity >= pending + live */
    int done_head, n_done, cap_done;

    /* the step being planned or in flight; capacity cap_step (>= n_running at all times) */
    bool in_flight;
    sched_step_t step;
    sched_seq_step_t *step_seqs;
    sreq_t **step_reqs;
    sched_block_copy_t *step_copies;
    int cap_step;
    int32_t *scratch; /* max(num_blocks, blocks per request): prefix hits, invariant checks */

    int64_t prefix_queries, prefix_query_tokens, prefix_hit_tokens;
    int64_t preemptions, finished, aborted;
};

/* ---- queue.c ---------------------------------------------------------------------------------- */

/* (priority, arrival, order) comparison: < 0 when a is more urgent. */
int sreq_cmp(const sreq_t *a, const sreq_t *b);
/* Grows h to hold n entries. SL_OK or SL_ENOMEM (h unchanged). */
int heap_reserve(sheap_t *h, int n);
/* Push needs capacity (heap_reserve first); remove cannot fail. */
void heap_push(sheap_t *h, sreq_t *r);
void heap_remove(sheap_t *h, sreq_t *r);
static inline sreq_t *heap_top(const sheap_t *h) { return h->n ? h->a[0] : NULL; }

/* The waiting queue: every waiter is in its priority heap and (static strategies) the arrival heap. */
void queue_push(sched_t *s, sreq_t *r);
void queue_remove(sched_t *s, sreq_t *r);
/* Capacity for one more waiter in queue q (and a requeue of every live request). SL_ENOMEM. */
int queue_reserve(sched_t *s, int q);
/* Bucket / heap index a request queues in. */
int queue_of(const sched_t *s, int prompt_len);

/* Running set, kept sorted; capacity is reserved by the caller (running_reserve). */
int running_reserve(sched_t *s, int n);
void running_insert(sched_t *s, sreq_t *r);
void running_remove(sched_t *s, sreq_t *r);

/* Id map. ids_reserve makes room for one more live request (SL_ENOMEM, unchanged). */
int ids_reserve(sched_t *s);
sreq_t *ids_find(const sched_t *s, uint64_t id);
void ids_insert(sched_t *s, sreq_t *r);
void ids_remove(sched_t *s, sreq_t *r);

/* ---- sched.c, used by batcher.c -------------------------------------------------------------- */

static inline int blocks_for(const sched_t *s, int64_t tokens)
{
    return (int)((tokens + s->cfg.block_size - 1) / s->cfg.block_size);
}
/* Frees r's blocks, last block first so its prefix stays cached longest. Cannot fail. */
void seq_release_blocks(sched_t *s, sreq_t *r);
/* RUNNING -> PREEMPTED -> WAITING: frees blocks, requeues at its original position. */
void seq_preempt(sched_t *s, sreq_t *r);
/* Takes the n_hit blocks seq_query_prefix found into r's (empty) block table; returns the tokens
 * they cover. Updates the prefix counters. Cannot fail. */
int seq_take_prefix(sched_t *s, sreq_t *r, int n_hit, const int32_t *hit_blocks);
/* Counts r's cached leading blocks (not taken) into hit_blocks; also how many of them sit on
 * the LRU (taking those lowers kv_available). Cannot fail. */
int seq_query_prefix(const sched_t *s, const sreq_t *r, int32_t *hit_blocks, int *n_in_lru);
/* WAITING -> RUNNING once r is out of the queue: state, first_scheduled, prefill_end, running set. */
void seq_admit(sched_t *s, sreq_t *r, double now);

/* ---- batcher.c ------------------------------------------------------------------------------ */

/* MEMORY_AWARE: does a static batch of n members, sum_tokens (prompt + max new) in all and its
 * longest prompt max_prompt fit memory_limit_mb (KV + activation workspace) and max_total_tokens? */
bool batcher_memory_fits(const sched_t *s, int n, int64_t sum_tokens, int max_prompt);
/* Plans the next step into s->step (seqs, copies). SCHED_PLAN_STEP or SCHED_PLAN_IDLE (+ wake_at). */
int batcher_plan(sched_t *s, double now, double *wake_at);

#endif
