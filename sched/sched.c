/* sched.c — the scheduler's step API: create, submit, commit, abort, fork, drain, stats, checks.
 *
 * Design notes
 *
 * 1. States and the function behind each transition:
 *
 *      (new) ──sched_submit──► WAITING ──batcher_plan/seq_admit──► RUNNING ──sched_commit──► FINISHED
 *                                 ▲                                 │  │
 *                                 └── seq_preempt (PREEMPTED) ◄─────┘  └──sched_abort──► ABORTED
 *      WAITING ──sched_abort──► ABORTED          (new) ──sched_fork──► RUNNING
 *
 *    A RUNNING request aborted while it is in the in-flight step keeps its place (abort_pending)
 *    until sched_commit releases it; sched_request_state() already reports ABORTED.
 *    PREEMPTED is transient: seq_preempt frees the blocks and requeues in one call.
 *
 * 2. Invariants (sched_check_invariants proves them; every API call keeps them):
 *    a. Every live request is in the id map and in exactly one of the waiting queue (WAITING, no
 *       blocks, kv_len 0) or the running set (RUNNING). n_live = n_waiting + n_running.
 *    b. refcnt[b] = number of running block tables holding b; free + used + cached = num_blocks.
 *    c. Heaps are heap-ordered; the running set is sorted by (priority, arrival, submit order).
 *    d. Between steps a running sequence holds exactly blocks_for(kv_len) blocks (commit trims
 *       speculative surplus); while planning it may hold more, covering context + the step.
 *    e. A sequence that has finished its (re)prefill holds kv_len = prompt + output - 1: the last
 *       sampled token is not in KV yet; a decode step runs it (plus drafts).
 *    f. Blocks [0, n_hashed) of a sequence are full and their chain hash is known; registered
 *       blocks are never written again, so copy-on-write only ever concerns the partial last block.
 *
 * 3. Only submit, fork and create allocate. They reserve, up front, room for every later move of
 *    the request (queue slot for a requeue, running slot, step slot, done record, block table of
 *    prompt + max_new blocks), so plan, commit and abort cannot fail for memory.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SETERR(...)                                     \
    do {                                                \
        if (err && errlen > 0)                          \
            snprintf(err, (size_t)errlen, __VA_ARGS__); \
    } while (0)

/* ---- create / free -------------------------------------------------------------------------- */

static int step_reserve(sched_t *s, int n)
{
    if (n <= s->cap_step)
        return SL_OK;
    int cap = s->cap_step ? 2 * s->cap_step : 16;
    while (cap < n)
        cap *= 2;
    sched_seq_step_t *seqs = sl_realloc(s->step_seqs, (size_t)cap * sizeof *seqs);
    if (!seqs)
        return SL_ENOMEM;
    s->step_seqs = seqs;
    sreq_t **reqs = sl_realloc(s->step_reqs, (size_t)cap * sizeof *reqs);
    if (!reqs)
        return SL_ENOMEM;
    s->step_reqs = reqs;
    /* at most one copy-on-write per sequence per step */
    sched_block_copy_t *copies = sl_realloc(s->step_copies, (size_t)cap * sizeof *copies);
    if (!copies)
        return SL_ENOMEM;
    s->step_copies = copies;
    s->cap_step = cap;
    return SL_OK;
}

sched_t *sched_create(const sched_config_t *cfg, char *err, int errlen)
{
    if (sched_config_validate(cfg, err, errlen) != SL_OK)
        return NULL;
    sched_t *s = sl_calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->cfg = *cfg;
    s->n_queues = cfg->strategy == SCHED_BUCKETED ? (cfg->max_sequence_length - 1) / cfg->bucket_size + 1 : 1;
    s->by_arrival.by_arrival = true;
    int per_req = (cfg->max_sequence_length + cfg->block_size - 1) / cfg->block_size;
    if (!(s->queues = sl_calloc((size_t)s->n_queues, sizeof *s->queues)) ||
        !(s->scratch = sl_malloc((size_t)(cfg->num_blocks > per_req ? cfg->num_blocks : per_req) * sizeof(int32_t))))
        goto nomem_free;
    if (kv_init(&s->kv, cfg->num_blocks, cfg->block_size, cfg->enable_prefix_caching) != SL_OK)
        goto nomem_free;
    if (step_reserve(s, cfg->max_num_seqs > cfg->max_batch_size ? cfg->max_num_seqs : cfg->max_batch_size) != SL_OK)
        goto nomem_free;
    return s;
nomem_free:
    sched_free(s);
nomem:
    SETERR("out of memory creating the scheduler (%d KV blocks)", cfg->num_blocks);
    return NULL;
}

static void req_free(sreq_t *r)
{
    sl_free(r->tokens);
    sl_free(r->blocks);
    sl_free(r);
}

void sched_free(sched_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; s->ids && i <= s->ids_mask; i++)
        if (s->ids[i])
            req_free(s->ids[i]);
    for (int q = 0; s->queues && q < s->n_queues; q++)
        sl_free(s->queues[q].a);
    sl_free(s->queues);
    sl_free(s->by_arrival.a);
    sl_free(s->running);
    sl_free(s->ids);
    sl_free(s->done);
    sl_free(s->step_seqs);
    sl_free(s->step_reqs);
    sl_free(s->step_copies);
    sl_free(s->scratch);
    kv_destroy(&s->kv);
    sl_free(s);
}

const sched_config_t *sched_config(const sched_t *s) { return &s->cfg; }

int sched_update_config(sched_t *s, const sched_config_t *cfg, char *err, int errlen)
{
    if (s->in_flight) {
        SETERR("cannot change the configuration while a step is in flight (between steps only)");
        return SL_ESTATE;
    }
    if (sched_config_validate(cfg, err, errlen) != SL_OK)
        return SL_EINVAL;
    const char *fixed = sched_config_fixed_change(&s->cfg, cfg);
    if (fixed) {
        SETERR("%s: cannot change on a running scheduler (live: batch_timeout_ms, max_num_batched_tokens)", fixed);
        return SL_EINVAL;
    }
    s->cfg = *cfg; /* batcher_plan reads both live knobs from s->cfg at every plan */
    return SL_OK;
}

/* ---- done records ----------------------------------------------------------------------------- */

/* Room for a done record for every live request plus one more. SL_ENOMEM (ring unchanged). */
static int done_reserve(sched_t *s)
{
    int need = s->n_done + s->n_live + 1;
    if (need <= s->cap_done)
        return SL_OK;
    int cap = s->cap_done ? 2 * s->cap_done : 64;
    while (cap < need)
        cap *= 2;
    sched_done_t *d = sl_malloc((size_t)cap * sizeof *d);
    if (!d)
        return SL_ENOMEM;
    for (int i = 0; i < s->n_done; i++)
        d[i] = s->done[(s->done_head + i) % s->cap_done];
    sl_free(s->done);
    s->done = d;
    s->done_head = 0;
    s->cap_done = cap;
    return SL_OK;
}

/* Records r as done, drops it from the id map and frees it. r must be out of queue and running
 * set and hold no blocks. */
static void req_retire(sched_t *s, sreq_t *r, sched_finish_reason_t reason, double now)
{
    sched_done_t *d = &s->done[(s->done_head + s->n_done++) % s->cap_done];
    *d = (sched_done_t){.id = r->id,
                        .user = r->user,
                        .priority = r->priority,
                        .reason = reason,
                        .prompt_len = r->prompt_len,
                        .output_len = r->output_len,
                        .cached_prompt_len = r->cached_prompt_len,
                        .preemptions = r->preemptions,
                        .computed_tokens = r->computed,
                        .arrival = r->arrival,
                        .first_scheduled = r->first_scheduled,
                        .first_token = r->first_token,
                        .finished = now};
    if (reason == SCHED_FINISH_ABORT)
        s->aborted++;
    else
        s->finished++;
    ids_remove(s, r);
    req_free(r);
}

int sched_drain_done(sched_t *s, sched_done_t *out, int cap)
{
    int n = 0;
    while (n < cap && s->n_done > 0) {
        out[n++] = s->done[s->done_head];
        s->done_head = (s->done_head + 1) % s->cap_done;
        s->n_done--;
    }
    return n;
}

/* ---- sequence helpers (used by batcher.c) ------------------------------------------------------- */

void seq_release_blocks(sched_t *s, sreq_t *r)
{
    while (r->n_blocks > 0)
        kv_unref(&s->kv, r->blocks[--r->n_blocks]);
    s->kv_tokens -= r->kv_len;
    r->kv_len = 0;
    r->n_hashed = 0;
    r->chain_hash = KV_HASH_ROOT;
}

void seq_preempt(sched_t *s, sreq_t *r)
{
    running_remove(s, r);
    seq_release_blocks(s, r);
    r->state = SCHED_WAITING; /* PREEMPTED lasts only inside this call */
    r->preemptions++;
    s->preemptions++;
    queue_push(s, r);
}

static bool caches(const sched_t *s, const sreq_t *r) { return r->tokens && s->cfg.enable_prefix_caching; }

int seq_query_prefix(const sched_t *s, const sreq_t *r, int32_t *hit_blocks, int *n_in_lru)
{
    *n_in_lru = 0;
    if (!caches(s, r))
        return 0;
    int bs = s->cfg.block_size;
    /* the last token is always computed: its logits are what gets sampled */
    int max_hit = (r->prompt_len + r->output_len - 1) / bs, n = 0;
    uint64_t parent = KV_HASH_ROOT;
    for (; n < max_hit; n++) {
        const int32_t *t = r->tokens + (size_t)n * (size_t)bs;
        uint64_t h = kv_chain_hash(parent, t, bs);
        int32_t b = kv_lookup(&s->kv, h, parent, t);
        if (b < 0)
            break;
        hit_blocks[n] = b;
        *n_in_lru += s->kv.refcnt[b] == 0;
        parent = h;
    }
    return n;
}

int seq_take_prefix(sched_t *s, sreq_t *r, int n_hit, const int32_t *hit_blocks)
{
    if (!caches(s, r))
        return 0;
    for (int i = 0; i < n_hit; i++) {
        kv_ref(&s->kv, hit_blocks[i]);
        r->blocks[r->n_blocks++] = hit_blocks[i];
    }
    int bs = s->cfg.block_size;
    r->n_hashed = n_hit;
    r->chain_hash = n_hit ? s->kv.hash[hit_blocks[n_hit - 1]] : KV_HASH_ROOT;
    r->kv_len = n_hit * bs; /* from 0: r was waiting */
    s->kv_tokens += r->kv_len;
    s->prefix_queries++;
    s->prefix_query_tokens += r->prompt_len + r->output_len;
    s->prefix_hit_tokens += (int64_t)n_hit * bs;
    return n_hit * bs;
}

void seq_admit(sched_t *s, sreq_t *r, double now)
{
    r->state = SCHED_RUNNING;
    r->prefill_end = r->prompt_len + r->output_len;
    if (r->first_scheduled < 0)
        r->first_scheduled = now;
    running_insert(s, r);
}

/* Registers r's newly full blocks in the prefix cache (their chain hashes become known). */
static void seq_register_full(sched_t *s, sreq_t *r)
{
    if (!caches(s, r))
        return;
    int bs = s->cfg.block_size;
    for (int full = r->kv_len / bs; r->n_hashed < full; r->n_hashed++) {
        const int32_t *t = r->tokens + (size_t)r->n_hashed * (size_t)bs;
        uint64_t h = kv_chain_hash(r->chain_hash, t, bs);
        kv_register(&s->kv, r->blocks[r->n_hashed], h, r->chain_hash, t);
        r->chain_hash = h;
    }
}

/* ---- submit --------------------------------------------------------------------------------- */

int sched_submit(sched_t *s, const sched_request_t *req, double now)
{
    const sched_config_t *c = &s->cfg;
    if (!req || req->prompt_len < 1 || req->max_new_tokens < 1 || !isfinite(req->arrival) ||
        ids_find(s, req->id))
        return SL_EINVAL;
    int64_t total = (int64_t)req->prompt_len + req->max_new_tokens;
    if (total > c->max_sequence_length || blocks_for(s, total) > c->num_blocks)
        return SL_ETOO_LONG;
    /* a request that cannot fit a batch on its own would wait forever */
    if (c->strategy == SCHED_MEMORY_AWARE && !batcher_memory_fits(s, 1, total, req->prompt_len))
        return SL_ETOO_LONG;
    if ((c->max_waiting_requests > 0 && s->n_waiting >= c->max_waiting_requests) ||
        (c->max_waiting_tokens > 0 && s->waiting_tokens + req->prompt_len > c->max_waiting_tokens))
        return SL_EQUEUE_FULL;
    int q = queue_of(s, req->prompt_len);
    if (ids_reserve(s) != SL_OK || done_reserve(s) != SL_OK || queue_reserve(s, q) != SL_OK ||
        running_reserve(s, s->n_live + 1) != SL_OK)
        return SL_ENOMEM;
    sreq_t *r = sl_calloc(1, sizeof *r);
    if (!r)
        return SL_ENOMEM;
    r->cap_blocks = blocks_for(s, total);
    r->blocks = sl_malloc((size_t)r->cap_blocks * sizeof *r->blocks);
    if (req->prompt)
        r->tokens = sl_malloc((size_t)total * sizeof *r->tokens);
    if (!r->blocks || (req->prompt && !r->tokens)) {
        req_free(r);
        return SL_ENOMEM;
    }
    if (req->prompt)
        memcpy(r->tokens, req->prompt, (size_t)req->prompt_len * sizeof *r->tokens);
    r->id = req->id;
    r->user = req->user;
    r->priority = req->priority;
    r->arrival = req->arrival;
    r->order = s->next_order++;
    r->prompt_len = req->prompt_len;
    r->max_new = req->max_new_tokens;
    r->chain_hash = KV_HASH_ROOT;
    r->state = SCHED_WAITING;
    r->queue = q;
    r->qpos = r->apos = r->step_pos = -1;
    r->first_scheduled = r->first_token = -1;
    (void)now; /* the queue orders by req->arrival; now is the caller's clock, not needed here */
    ids_insert(s, r);
    queue_push(s, r);
    return SL_OK;
}

/* ---- plan / commit ------------------------------------------------------------------------------ */

int sched_plan(sched_t *s, double now, sched_step_t *step, double *wake_at)
{
    if (s->in_flight)
        return SL_ESTATE;
    double wake = INFINITY;
    int rc = batcher_plan(s, now, &wake);
    if (wake_at)
        *wake_at = wake;
    if (rc != SCHED_PLAN_STEP)
        return rc;
    s->step.seq_no = s->next_step++;
    s->in_flight = true;
    *step = s->step;
    return SCHED_PLAN_STEP;
}

static bool valid_finish(sched_finish_reason_t f)
{
    return f == SCHED_FINISH_NONE || f == SCHED_FINISH_EOS || f == SCHED_FINISH_STOP;
}

int sched_commit(sched_t *s, const sched_step_t *step, const sched_result_t *result, double now)
{
    if (!s->in_flight || !step || step->seq_no != s->step.seq_no || step->seqs != s->step_seqs ||
        step->n_seqs != s->step.n_seqs)
        return SL_ESTATE;
    int n = s->step.n_seqs;
    if (!result || result->n_seqs != n || (n > 0 && !result->seqs))
        return SL_EINVAL;
    for (int i = 0; i < n; i++) {
        const sched_seq_step_t *q = &s->step_seqs[i];
        const sched_seq_result_t *res = &result->seqs[i];
        if (s->step_reqs[i]->abort_pending)
            continue;
        bool count_ok = q->sample ? res->n_tokens >= 1 && res->n_tokens <= 1 + q->n_draft : res->n_tokens == 0;
        if (!count_ok || !valid_finish(res->finish) || (s->step_reqs[i]->tokens && res->n_tokens > 0 && !res->tokens))
            return SL_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        const sched_seq_step_t *q = &s->step_seqs[i];
        const sched_seq_result_t *res = &result->seqs[i];
        sreq_t *r = s->step_reqs[i];
        r->step_pos = -1;
        if (r->abort_pending) {
            running_remove(s, r);
            seq_release_blocks(s, r);
            req_retire(s, r, SCHED_FINISH_ABORT, now);
            continue;
        }
        r->computed += q->n_tokens;
        int kv_add = q->is_prefill ? q->n_tokens : q->sample ? res->n_tokens : 0; /* decode: the input
                                                  token and the accepted drafts */
        r->kv_len += kv_add;
        s->kv_tokens += kv_add;
        if (q->sample) {
            int room = r->max_new - r->output_len;
            if (room > s->cfg.max_sequence_length - r->prompt_len - r->output_len)
                room = s->cfg.max_sequence_length - r->prompt_len - r->output_len;
            int add = res->n_tokens < room ? res->n_tokens : room;
            if (r->tokens)
                memcpy(r->tokens + r->prompt_len + r->output_len, res->tokens, (size_t)add * sizeof *r->tokens);
            if (r->output_len == 0)
                r->first_token = now;
            r->output_len += add;
        }
        seq_register_full(s, r);
        /* rejected draft slots: give back blocks past the context (n_blocks > blocks_for(kv_len),
         * without the division) */
        while ((int64_t)(r->n_blocks - 1) * s->cfg.block_size >= r->kv_len)
            kv_unref(&s->kv, r->blocks[--r->n_blocks]);
        sched_finish_reason_t why = res->finish;
        if (why == SCHED_FINISH_NONE && (r->output_len >= r->max_new ||
                                         r->prompt_len + r->output_len >= s->cfg.max_sequence_length))
            why = SCHED_FINISH_LENGTH;
        if (why != SCHED_FINISH_NONE) {
            running_remove(s, r);
            seq_release_blocks(s, r);
            req_retire(s, r, why, now);
        }
    }
    if (s->n_running == 0)
        s->batch_slots = 0; /* a static batch ends with its longest member */
    s->in_flight = false;
    return SL_OK;
}

/* ---- abort / fork ------------------------------------------------------------------------------- */

int sched_abort(sched_t *s, uint64_t id, double now)
{
    sreq_t *r = ids_find(s, id);
    if (!r || r->abort_pending)
        return SL_ENOTFOUND;
    if (r->step_pos >= 0) {
        r->abort_pending = true; /* the executor is running it: released at the commit */
        return SL_OK;
    }
    if (r->state == SCHED_WAITING) {
        queue_remove(s, r);
    } else {
        running_remove(s, r);
        seq_release_blocks(s, r);
    }
    req_retire(s, r, SCHED_FINISH_ABORT, now);
    return SL_OK;
}

int sched_fork(sched_t *s, uint64_t parent_id, uint64_t child_id, void *child_user, double now)
{
    sreq_t *p = ids_find(s, parent_id);
    if (!p || p->abort_pending)
        return SL_ENOTFOUND;
    if (s->in_flight || p->state != SCHED_RUNNING || p->output_len < 1)
        return SL_ESTATE;
    if (s->cfg.strategy != SCHED_CONTINUOUS)
        return SL_EUNSUPPORTED;
    if (ids_find(s, child_id))
        return SL_EINVAL;
    if (ids_reserve(s) != SL_OK || done_reserve(s) != SL_OK || queue_reserve(s, 0) != SL_OK ||
        running_reserve(s, s->n_live + 1) != SL_OK || step_reserve(s, s->n_running + 1) != SL_OK)
        return SL_ENOMEM;
    sreq_t *c = sl_malloc(sizeof *c);
    if (!c)
        return SL_ENOMEM;
    *c = *p;
    int64_t total = (int64_t)p->prompt_len + p->max_new;
    c->blocks = sl_malloc((size_t)c->cap_blocks * sizeof *c->blocks);
    c->tokens = p->tokens ? sl_malloc((size_t)total * sizeof *c->tokens) : NULL;
    if (!c->blocks || (p->tokens && !c->tokens)) {
        req_free(c);
        return SL_ENOMEM;
    }
    memcpy(c->blocks, p->blocks, (size_t)p->n_blocks * sizeof *c->blocks);
    if (p->tokens)
        memcpy(c->tokens, p->tokens, (size_t)(p->prompt_len + p->output_len) * sizeof *c->tokens);
    for (int i = 0; i < c->n_blocks; i++)
        kv_ref(&s->kv, c->blocks[i]);
    s->kv_tokens += c->kv_len;
    s->forked = true;
    c->id = child_id;
    c->user = child_user;
    c->order = s->next_order++;
    c->preemptions = 0;
    c->computed = 0;
    (void)now; /* the child's timeline is its parent's: same arrival, first schedule, first token */
    ids_insert(s, c);
    running_insert(s, c);
    return SL_OK;
}

/* ---- observation ---------------------------------------------------------------------------- */

void sched_get_stats(const sched_t *s, sched_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->waiting = s->n_waiting;
    out->running = s->n_running;
    out->waiting_prompt_tokens = s->waiting_tokens;
    out->num_blocks = s->kv.num_blocks;
    out->free_blocks = s->kv.n_free;
    out->cached_blocks = s->kv.n_lru;
    out->used_blocks = s->kv.num_blocks - s->kv.n_free - s->kv.n_lru;
    out->kv_reserved_slots = (int64_t)out->used_blocks * s->cfg.block_size;
    out->kv_used_slots = s->kv_tokens;
    out->kv_naive_slots = sched_mem_naive_slots(s->n_running, s->cfg.max_sequence_length);
    out->prefix_queries = s->prefix_queries;
    out->prefix_query_tokens = s->prefix_query_tokens;
    out->prefix_hit_tokens = s->prefix_hit_tokens;
    out->evictions = s->kv.evictions;
    out->preemptions = s->preemptions;
    out->finished = s->finished;
    out->aborted = s->aborted;
    out->steps = (int64_t)s->next_step - s->in_flight;
}

int sched_request_state(const sched_t *s, uint64_t id, sched_req_state_t *out)
{
    const sreq_t *r = ids_find(s, id);
    if (!r)
        return SL_ENOTFOUND;
    *out = r->abort_pending ? SCHED_ABORTED : r->state;
    return SL_OK;
}

#define FAIL(...)                \
    do {                         \
        SETERR(__VA_ARGS__);     \
        return SL_ESTATE;        \
    } while (0)

static int check_heap(const sheap_t *h, int which, char *err, int errlen)
{
    for (int i = 0; i < h->n; i++) {
        const sreq_t *r = h->a[i];
        if ((h->by_arrival ? r->apos : r->qpos) != i || r->state != SCHED_WAITING || r->n_blocks || r->kv_len)
            FAIL("queue %d: request %llu at %d has position %d, state %d, %d blocks", which,
                 (unsigned long long)r->id, i, h->by_arrival ? r->apos : r->qpos, r->state, r->n_blocks);
        const sreq_t *p = h->a[(i - 1) / 2];
        bool less = h->by_arrival ? (r->arrival < p->arrival || (r->arrival == p->arrival && r->order < p->order))
                                  : sreq_cmp(r, p) < 0;
        if (i > 0 && less)
            FAIL("queue %d: request %llu at %d is ahead of its heap parent", which, (unsigned long long)r->id, i);
    }
    return SL_OK;
}

int sched_check_invariants(const sched_t *s, char *err, int errlen)
{
    if (kv_check(&s->kv, s->scratch, err, errlen) != SL_OK)
        return SL_ESTATE;
    int waiting = 0;
    int64_t waiting_tokens = 0;
    for (int q = 0; q < s->n_queues; q++) {
        if (check_heap(&s->queues[q], q, err, errlen) != SL_OK)
            return SL_ESTATE;
        waiting += s->queues[q].n;
        for (int i = 0; i < s->queues[q].n; i++)
            waiting_tokens += s->queues[q].a[i]->prompt_len;
    }
    if (waiting != s->n_waiting || waiting_tokens != s->waiting_tokens)
        FAIL("queue: holds %d requests / %lld tokens, counters say %d / %lld", waiting, (long long)waiting_tokens,
             s->n_waiting, (long long)s->waiting_tokens);
    if (s->cfg.strategy != SCHED_CONTINUOUS &&
        (check_heap(&s->by_arrival, -1, err, errlen) != SL_OK || s->by_arrival.n != waiting))
        FAIL("queue: arrival heap out of step with the priority heaps");
    if (s->n_live != s->n_waiting + s->n_running)
        FAIL("requests: %d live != %d waiting + %d running", s->n_live, s->n_waiting, s->n_running);
    int32_t *refs = s->scratch;
    memset(refs, 0, (size_t)s->kv.num_blocks * sizeof *refs);
    int64_t kv_tokens = 0;
    for (int i = 0; i < s->n_running; i++) {
        const sreq_t *r = s->running[i];
        unsigned long long id = (unsigned long long)r->id;
        kv_tokens += r->kv_len;
        if (ids_find(s, r->id) != r || r->state != SCHED_RUNNING || r->qpos != -1)
            FAIL("running: request %llu not registered as running", id);
        if (i > 0 && sreq_cmp(s->running[i - 1], r) >= 0)
            FAIL("running: request %llu out of order", id);
        if (r->n_blocks > r->cap_blocks || r->kv_len > r->n_blocks * s->cfg.block_size ||
            r->n_hashed * s->cfg.block_size > r->kv_len)
            FAIL("running: request %llu holds %d blocks (cap %d) for %d tokens, %d hashed", id, r->n_blocks,
                 r->cap_blocks, r->kv_len, r->n_hashed);
        if (!s->in_flight && (r->n_blocks != blocks_for(s, r->kv_len) || r->step_pos != -1))
            FAIL("running: request %llu holds %d blocks for %d tokens between steps", id, r->n_blocks, r->kv_len);
        if (r->kv_len >= r->prefill_end && !s->in_flight && r->kv_len != r->prompt_len + r->output_len - 1)
            FAIL("running: request %llu has %d KV tokens after %d + %d", id, r->kv_len, r->prompt_len,
                 r->output_len);
        for (int b = 0; b < r->n_blocks; b++)
            refs[r->blocks[b]]++;
    }
    if (kv_tokens != s->kv_tokens)
        FAIL("running: sequences hold %lld KV tokens, the counter says %lld", (long long)kv_tokens,
             (long long)s->kv_tokens);
    for (int b = 0; b < s->kv.num_blocks; b++)
        if (refs[b] != s->kv.refcnt[b])
            FAIL("kv: block %d refcnt %d but %d block tables hold it", b, s->kv.refcnt[b], refs[b]);
    int live = 0;
    for (uint32_t i = 0; s->ids && i <= s->ids_mask; i++)
        live += s->ids[i] != NULL;
    if (live != s->n_live)
        FAIL("ids: %d in the map, %d live", live, s->n_live);
    return SL_OK;
}
