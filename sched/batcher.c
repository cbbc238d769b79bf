/* batcher.c — the batching strategies: what the next step runs (static batches or continuous). */
#include <math.h>
#include <string.h>

#include "internal.h"

bool batcher_memory_fits(const sched_t *s, int n, int64_t sum_tokens, int max_prompt)
{
    const sched_model_shape_t *m = &s->cfg.model;
    /* a static batch prefills n prompts padded to the longest, sampling n rows */
    double bytes = (double)sched_mem_kv_bytes_per_token(m) * (double)sum_tokens +
                   (double)sched_mem_activation_bytes(m, (int64_t)n * max_prompt, n);
    return sum_tokens <= s->cfg.max_total_tokens && bytes <= s->cfg.memory_limit_mb * 1048576.0;
}

/* ---- building a step ---------------------------------------------------------------------------- */

static void step_reset(sched_t *s)
{
    memset(&s->step, 0, sizeof s->step);
    s->step.seqs = s->step_seqs;
    s->step.copies = s->step_copies;
}

static void step_add(sched_t *s, sreq_t *r, int n_tokens, int n_draft, int padded)
{
    int i = s->step.n_seqs++;
    bool prefill = r->kv_len < r->prefill_end;
    s->step_seqs[i] = (sched_seq_step_t){
        .req_id = r->id,
        .user = r->user,
        .n_tokens = n_tokens,
        .context_len = r->kv_len,
        .is_prefill = prefill,
        .sample = !prefill || r->kv_len + n_tokens == r->prefill_end,
        .n_draft = n_draft,
        .padded_tokens = padded,
        /* prompt chunk, or the last sampled token (at kv_len, invariant e) */
        .tokens = r->tokens ? r->tokens + r->kv_len : NULL,
        .block_table = r->blocks,
        .n_blocks = r->n_blocks, /* grow() has just sized the table to context + n_tokens */
    };
    s->step_reqs[i] = r;
    r->step_pos = i;
    s->step.n_tokens += n_tokens;
    s->step.n_prefill_tokens += prefill ? n_tokens : 0;
    s->step.n_decode_seqs += !prefill;
    s->step.n_padded_tokens += padded;
}

/* Blocks r's table lacks for n more tokens: blocks_for(kv_len + n) - n_blocks (at least 0),
 * from the free slots of its last block, so that a decode that fits costs no division. */
static int table_need(const sched_t *s, const sreq_t *r, int n)
{
    int room = r->n_blocks * s->cfg.block_size - r->kv_len;
    return n <= room ? 0 : blocks_for(s, (int64_t)n - room);
}

/* Index of r's partial last block when another sequence shares it (only a fork shares a block
 * that is not full), else -1. */
static int shared_tail(const sched_t *s, const sreq_t *r)
{
    int bs = s->cfg.block_size;
    if (!s->forked || r->kv_len % bs == 0)
        return -1;
    int i = r->kv_len / bs;
    return s->kv.refcnt[r->blocks[i]] > 1 ? i : -1;
}

/* Blocks r must take before it can write n more tokens: table growth, plus one when its partial
 * last block is shared (a fork) and must be copied on write. */
static int grow_need(const sched_t *s, const sreq_t *r, int n)
{
    return table_need(s, r, n) + (shared_tail(s, r) >= 0);
}

/* Takes grow_need(r, n) blocks; the caller has checked kv_available(). Cannot fail then. */
static void grow(sched_t *s, sreq_t *r, int n)
{
    int i = shared_tail(s, r);
    if (i >= 0) {
        int32_t shared = r->blocks[i], copy = kv_alloc(&s->kv);
        s->step_copies[s->step.n_copies++] = (sched_block_copy_t){shared, copy};
        kv_unref(&s->kv, shared);
        r->blocks[i] = copy;
    }
    for (int k = table_need(s, r, n); k > 0; k--)
        r->blocks[r->n_blocks++] = kv_alloc(&s->kv);
}

/* ---- static strategies: NAIVE, BUCKETED, MEMORY_AWARE -------------------------------------------- */

/* Next step of the running batch: every live member decodes one token; each finished member's
 * slot still costs one padded token, carried by seqs[0]. Blocks were reserved at formation
 * (members' prompt + max_new fit the pool then, and nobody else allocates during a batch). */
static int plan_batch_decode(sched_t *s)
{
    for (int i = 0; i < s->n_running; i++) {
        sreq_t *r = s->running[i];
        grow(s, r, 1);
        step_add(s, r, 1, 0, 0);
    }
    int idle_slots = s->batch_slots - s->n_running;
    s->step_seqs[0].padded_tokens += idle_slots;
    s->step.n_padded_tokens += idle_slots;
    return SCHED_PLAN_STEP;
}

/* Forms a batch when it is full (max_batch_size members, or the next waiter does not fit the KV
 * pool or, for MEMORY_AWARE, the estimator) or when the oldest waiter has waited
 * batch_timeout_ms. Members come in queue order from the oldest waiter's queue (its length bucket
 * under BUCKETED); admission stops at the first that does not fit, so order is kept. */
static int plan_batch_form(sched_t *s, double now, double *wake_at)
{
    const sched_config_t *c = &s->cfg;
    sreq_t *oldest = heap_top(&s->by_arrival);
    if (!oldest)
        return SCHED_PLAN_IDLE;
    double deadline = oldest->arrival + c->batch_timeout_ms / 1000.0;
    sheap_t *h = &s->queues[oldest->queue];
    int n = 0, max_prompt = 0, avail = kv_available(&s->kv);
    int64_t blocks = 0, tokens = 0;
    bool full = false;
    /* candidates are parked in step_reqs[] (room for max_batch_size); step_add rewrites the
     * same slots with the same requests below */
    while (n < c->max_batch_size && h->n > 0) {
        sreq_t *r = heap_top(h);
        int64_t total = (int64_t)r->prompt_len + r->max_new;
        int mp = r->prompt_len > max_prompt ? r->prompt_len : max_prompt;
        if (blocks + blocks_for(s, total) > avail ||
            (c->strategy == SCHED_MEMORY_AWARE && !batcher_memory_fits(s, n + 1, tokens + total, mp))) {
            full = true;
            break;
        }
        queue_remove(s, r);
        s->step_reqs[n++] = r;
        blocks += blocks_for(s, total);
        tokens += total;
        max_prompt = mp;
    }
    if (!(full || n == c->max_batch_size || now >= deadline) || n == 0) {
        for (int i = 0; i < n; i++)
            queue_push(s, s->step_reqs[i]);
        *wake_at = n ? deadline : INFINITY;
        return SCHED_PLAN_IDLE;
    }
    s->batch_slots = n;
    for (int i = 0; i < n; i++) {
        sreq_t *r = s->step_reqs[i];
        seq_admit(s, r, now);
        grow(s, r, r->prompt_len);
        step_add(s, r, r->prompt_len, 0, max_prompt - r->prompt_len);
    }
    return SCHED_PLAN_STEP;
}

/* ---- CONTINUOUS ---------------------------------------------------------------------------------- */

/* Makes room for r's next n tokens by preempting the least urgent, latest-arrived running
 * sequence not yet in this step, repeatedly. Returns false when that sequence was r itself. */
static bool make_room(sched_t *s, sreq_t *r, int n)
{
    while (kv_available(&s->kv) < grow_need(s, r, n)) {
        sreq_t *victim = NULL;
        for (int j = s->n_running - 1; j >= 0 && !victim; j--)
            if (s->running[j]->step_pos < 0)
                victim = s->running[j]; /* r is unscheduled, so there is one */
        seq_preempt(s, victim);
        s->step.n_preempted++;
        if (victim == r)
            return false;
    }
    return true;
}

static int plan_continuous(sched_t *s, double now)
{
    const sched_config_t *c = &s->cfg;
    int budget = c->max_num_batched_tokens;
    const int drafts = c->speculative_disable_by_batch_size > 0 && s->n_running >= c->speculative_disable_by_batch_size
                           ? 0
                           : c->num_speculative_tokens;
    /* pass 0: decodes, pass 1: prompt chunks of running sequences; both in priority order. Pass 1
     * runs only when pass 0 passed over a prefilling sequence (pass 0 admits nobody). */
    int prefilling = 0;
    for (int pass = 0; pass < 2 && (pass == 0 || prefilling); pass++) {
        for (int i = 0; i < s->n_running && budget > 0; i++) {
            sreq_t *r = s->running[i];
            bool prefill = r->kv_len < r->prefill_end;
            prefilling += prefill;
            if (r->step_pos >= 0 || prefill != (pass == 1))
                continue;
            int n, draft = 0;
            if (!prefill) {
                draft = drafts;
                if (draft > r->max_new - r->output_len - 1)
                    draft = r->max_new - r->output_len - 1; /* drafts past the length limit are waste */
                if (draft > budget - 1)
                    draft = budget - 1;
                n = 1 + draft;
            } else {
                int left = r->prefill_end - r->kv_len;
                n = left < budget ? left : budget;
                if (n < left && !c->enable_chunked_prefill)
                    continue;
            }
            if (!make_room(s, r, n)) {
                i--; /* r left the running set; the next sequence moved into slot i */
                continue;
            }
            grow(s, r, n);
            step_add(s, r, n, draft, 0);
            budget -= n;
        }
    }
    /* admission in queue order; not right after a preemption (it would thrash) unless the step
     * is empty */
    if (s->step.n_preempted && s->step.n_seqs)
        return SCHED_PLAN_STEP;
    sheap_t *q = &s->queues[0];
    while (budget > 0 && s->n_running < c->max_num_seqs && q->n > 0) {
        sreq_t *r = heap_top(q);
        int n_in_lru, n_hit = seq_query_prefix(s, r, s->scratch, &n_in_lru);
        int cached = n_hit * c->block_size, left = r->prompt_len + r->output_len - cached;
        int n = left < budget ? left : budget;
        if (n < left && !c->enable_chunked_prefill)
            break;
        if (kv_available(&s->kv) - n_in_lru < blocks_for(s, (int64_t)cached + n) - n_hit)
            break;
        bool first = r->first_scheduled < 0;
        queue_remove(s, r);
        seq_admit(s, r, now);
        int hit = seq_take_prefix(s, r, n_hit, s->scratch);
        if (first)
            r->cached_prompt_len = hit < r->prompt_len ? hit : r->prompt_len;
        grow(s, r, n);
        step_add(s, r, n, 0, 0);
        budget -= n;
    }
    return s->step.n_seqs ? SCHED_PLAN_STEP : SCHED_PLAN_IDLE;
}

int batcher_plan(sched_t *s, double now, double *wake_at)
{
    step_reset(s);
    *wake_at = INFINITY;
    if (s->cfg.strategy == SCHED_CONTINUOUS)
        return plan_continuous(s, now);
    return s->n_running > 0 ? plan_batch_decode(s) : plan_batch_form(s, now, wake_at);
}
