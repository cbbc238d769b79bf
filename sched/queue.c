/* queue.c — the waiting queue (binary heaps), the sorted running set and the id map. */
#include <string.h>

#include "internal.h"

int sreq_cmp(const sreq_t *a, const sreq_t *b)
{
    if (a->priority != b->priority)
        return a->priority < b->priority ? -1 : 1;
    if (a->arrival != b->arrival)
        return a->arrival < b->arrival ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* ---- heaps ---------------------------------------------------------------------------------- */

static bool heap_less(const sheap_t *h, const sreq_t *a, const sreq_t *b)
{
    if (!h->by_arrival)
        return sreq_cmp(a, b) < 0;
    return a->arrival < b->arrival || (a->arrival == b->arrival && a->order < b->order);
}

static int *pos_of(const sheap_t *h, sreq_t *r) { return h->by_arrival ? &r->apos : &r->qpos; }

static void heap_set(sheap_t *h, int i, sreq_t *r)
{
    h->a[i] = r;
    *pos_of(h, r) = i;
}

static void sift_up(sheap_t *h, int i)
{
    sreq_t *r = h->a[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!heap_less(h, r, h->a[p]))
            break;
        heap_set(h, i, h->a[p]);
        i = p;
    }
    heap_set(h, i, r);
}

static void sift_down(sheap_t *h, int i)
{
    sreq_t *r = h->a[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && heap_less(h, h->a[c + 1], h->a[c]))
            c++;
        if (!heap_less(h, h->a[c], r))
            break;
        heap_set(h, i, h->a[c]);
        i = c;
    }
    heap_set(h, i, r);
}

/* Grows a request-pointer array to hold at least n (doubling from 16); SL_ENOMEM leaves it as it
 * was. The heaps and the running set share it. */
static int reqs_reserve(sreq_t ***arr, int *cap, int n)
{
    if (n <= *cap)
        return SL_OK;
    int c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    sreq_t **a = sl_realloc(*arr, (size_t)c * sizeof *a);
    if (!a)
        return SL_ENOMEM;
    *arr = a;
    *cap = c;
    return SL_OK;
}

int heap_reserve(sheap_t *h, int n) { return reqs_reserve(&h->a, &h->cap, n); }

void heap_push(sheap_t *h, sreq_t *r)
{
    h->n++;
    heap_set(h, h->n - 1, r);
    sift_up(h, h->n - 1);
}

void heap_remove(sheap_t *h, sreq_t *r)
{
    int i = *pos_of(h, r);
    *pos_of(h, r) = -1;
    sreq_t *last = h->a[--h->n];
    if (i == h->n)
        return;
    heap_set(h, i, last);
    sift_up(h, i);
    sift_down(h, *pos_of(h, last));
}

/* ---- the waiting queue --------------------------------------------------------------------- */

int queue_of(const sched_t *s, int prompt_len)
{
    return s->cfg.strategy == SCHED_BUCKETED ? (prompt_len - 1) / s->cfg.bucket_size : 0;
}

static bool uses_arrival_heap(const sched_t *s) { return s->cfg.strategy != SCHED_CONTINUOUS; }

int queue_reserve(sched_t *s, int q)
{
    /* preemption can requeue every live request into queue 0 (CONTINUOUS); static strategies only
     * push back what they popped in the same plan call, so one more slot is enough there */
    int need = (s->cfg.strategy == SCHED_CONTINUOUS ? s->n_live : s->queues[q].n) + 1;
    if (heap_reserve(&s->queues[q], need) != SL_OK)
        return SL_ENOMEM;
    if (uses_arrival_heap(s) && heap_reserve(&s->by_arrival, s->by_arrival.n + 1) != SL_OK)
        return SL_ENOMEM;
    return SL_OK;
}

void queue_push(sched_t *s, sreq_t *r)
{
    heap_push(&s->queues[r->queue], r);
    if (uses_arrival_heap(s))
        heap_push(&s->by_arrival, r);
    s->n_waiting++;
    s->waiting_tokens += r->prompt_len;
}

void queue_remove(sched_t *s, sreq_t *r)
{
    heap_remove(&s->queues[r->queue], r);
    if (uses_arrival_heap(s))
        heap_remove(&s->by_arrival, r);
    s->n_waiting--;
    s->waiting_tokens -= r->prompt_len;
}

/* ---- running set ---------------------------------------------------------------------------- */

int running_reserve(sched_t *s, int n) { return reqs_reserve(&s->running, &s->cap_running, n); }

/* First index whose request is not more urgent than r. */
static int running_lower_bound(const sched_t *s, const sreq_t *r)
{
    int lo = 0, hi = s->n_running;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (sreq_cmp(s->running[mid], r) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void running_insert(sched_t *s, sreq_t *r)
{
    int i = running_lower_bound(s, r);
    memmove(s->running + i + 1, s->running + i, (size_t)(s->n_running - i) * sizeof *s->running);
    s->running[i] = r;
    s->n_running++;
}

void running_remove(sched_t *s, sreq_t *r)
{
    int i = running_lower_bound(s, r);
    memmove(s->running + i, s->running + i + 1, (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

/* ---- id map ----------------------------------------------------------------------------------- */

static uint32_t id_slot(uint64_t id, uint32_t mask)
{
    id ^= id >> 33;
    id *= UINT64_C(0xff51afd7ed558ccd);
    id ^= id >> 33;
    return (uint32_t)id & mask;
}

int ids_reserve(sched_t *s)
{
    /* keep the load at most 1/2 */
    if (s->ids && 2u * (uint32_t)(s->n_live + 1) <= s->ids_mask + 1)
        return SL_OK;
    uint32_t cap = s->ids ? 2 * (s->ids_mask + 1) : 64;
    sreq_t **t = sl_calloc(cap, sizeof *t);
    if (!t)
        return SL_ENOMEM;
    for (uint32_t i = 0; s->ids && i <= s->ids_mask; i++) {
        sreq_t *r = s->ids[i];
        if (!r)
            continue;
        uint32_t j = id_slot(r->id, cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = r;
    }
    sl_free(s->ids);
    s->ids = t;
    s->ids_mask = cap - 1;
    return SL_OK;
}

sreq_t *ids_find(const sched_t *s, uint64_t id)
{
    if (!s->ids)
        return NULL;
    for (uint32_t i = id_slot(id, s->ids_mask);; i = (i + 1) & s->ids_mask) {
        if (!s->ids[i] || s->ids[i]->id == id)
            return s->ids[i];
    }
}

void ids_insert(sched_t *s, sreq_t *r)
{
    uint32_t i = id_slot(r->id, s->ids_mask);
    while (s->ids[i])
        i = (i + 1) & s->ids_mask;
    s->ids[i] = r;
    s->n_live++;
}

void ids_remove(sched_t *s, sreq_t *r)
{
    uint32_t m = s->ids_mask, i = id_slot(r->id, m);
    while (s->ids[i] != r)
        i = (i + 1) & m;
    /* backward-shift deletion */
    for (uint32_t j = (i + 1) & m; s->ids[j]; j = (j + 1) & m) {
        uint32_t home = id_slot(s->ids[j]->id, m);
        if (((j - home) & m) >= ((j - i) & m)) {
            s->ids[i] = s->ids[j];
            i = j;
        }
    }
    s->ids[i] = NULL;
    s->n_live--;
}
