/* adapt.c — the adaptive controller (rules in adapt.h).
 *
 * State: a ring of the last window_cap finished requests (time, TTFT, TPOT, queueing delay),
 * the queue length at the last step and at the last evaluation, the times of the last
 * evaluation and the last change. Percentiles sort a copy of the window (scratch allocated at
 * create), at most once per eval_interval_s.
 */
#include "adapt.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

typedef struct sample {
    double t, ttft, tpot, queue; /* tpot NaN for one-token outputs */
} sample_t;

struct sched_adapt {
    sched_adapt_opts_t o;
    int id;
    sample_t *ring;
    int head, n;          /* oldest at head */
    double *scratch;      /* window_cap values for percentiles */
    double last_eval, last_change;
    int waiting, waiting_at_eval;
    int n_changes;
};

void sched_adapt_opts_default(sched_adapt_opts_t *o, const sched_config_t *start)
{
    *o = (sched_adapt_opts_t){.ttft_target = 1, .tpot_target = 0.1, .window_s = 20, .window_cap = 4096,
                            .min_samples = 20, .eval_interval_s = 1, .min_interval_s = 5, .hysteresis = 0.2,
                            .budget_min = 256, .budget_max = 8192, .timeout_min_ms = 1,
                            .timeout_max_ms = start && start->batch_timeout_ms > 1 ? start->batch_timeout_ms : 1};
}

static int check_opts(const sched_adapt_opts_t *o, char *err, int errlen)
{
    const char *bad = !(o->ttft_target >= 0) ? "ttft_target: must be >= 0"
                    : !(o->tpot_target >= 0) ? "tpot_target: must be >= 0"
                    : !(o->window_s > 0) ? "window_s: must be > 0"
                    : o->window_cap < 16 ? "window_cap: must be >= 16"
                    : o->min_samples < 1 || o->min_samples > o->window_cap ? "min_samples: must be 1..window_cap"
                    : !(o->eval_interval_s >= 0) ? "eval_interval_s: must be >= 0"
                    : !(o->min_interval_s >= 0) ? "min_interval_s: must be >= 0"
                    : !(o->hysteresis >= 0 && o->hysteresis <= 0.9) ? "hysteresis: must be 0..0.9"
                    : o->budget_min < 1 || o->budget_max < o->budget_min ? "budget_min, budget_max: need 1 <= min <= max"
                    : !(o->timeout_min_ms >= 0 && o->timeout_max_ms >= o->timeout_min_ms)
                        ? "timeout_min_ms, timeout_max_ms: need 0 <= min <= max"
                        : NULL;
    if (bad && err && errlen > 0)
        snprintf(err, (size_t)errlen, "adaptive controller: %s", bad);
    return bad ? SL_EINVAL : SL_OK;
}

sched_adapt_t *sched_adapt_create(const sched_adapt_opts_t *o, int id, char *err, int errlen)
{
    if (check_opts(o, err, errlen) != SL_OK)
        return NULL;
    sched_adapt_t *a = sl_calloc(1, sizeof *a);
    if (a) {
        a->ring = sl_malloc((size_t)o->window_cap * sizeof *a->ring);
        a->scratch = sl_malloc((size_t)o->window_cap * sizeof *a->scratch);
    }
    if (!a || !a->ring || !a->scratch) {
        sched_adapt_free(a);
        if (err && errlen > 0)
            snprintf(err, (size_t)errlen, "adaptive controller: out of memory");
        return NULL;
    }
    a->o = *o, a->id = id;
    a->last_eval = a->last_change = -INFINITY;
    return a;
}

void sched_adapt_free(sched_adapt_t *a)
{
    if (!a)
        return;
    sl_free(a->ring);
    sl_free(a->scratch);
    sl_free(a);
}

void sched_adapt_observe_request(sched_adapt_t *a, const sched_done_t *d)
{
    if (d->reason == SCHED_FINISH_ABORT || d->first_token < 0 || d->finished < 0)
        return;
    sample_t s = {d->finished, d->first_token - d->arrival,
                  d->output_len >= 2 ? (d->finished - d->first_token) / (d->output_len - 1) : NAN,
                  d->first_scheduled - d->arrival};
    if (a->n == a->o.window_cap) { /* full: the oldest gives way */
        a->ring[a->head] = s;
        a->head = (a->head + 1) % a->o.window_cap;
    } else {
        a->ring[(a->head + a->n++) % a->o.window_cap] = s;
    }
}

void sched_adapt_observe_step(sched_adapt_t *a, int waiting) { a->waiting = waiting; }

int sched_adapt_changes(const sched_adapt_t *a) { return a->n_changes; }

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* p99 (type 7 interpolation) of one field over the window, NaN values skipped; NaN when none. */
static double window_p99(sched_adapt_t *a, size_t field)
{
    int m = 0;
    for (int i = 0; i < a->n; i++) {
        double v = *(const double *)((const char *)&a->ring[(a->head + i) % a->o.window_cap] + field);
        if (!isnan(v))
            a->scratch[m++] = v;
    }
    if (m == 0)
        return NAN;
    qsort(a->scratch, (size_t)m, sizeof *a->scratch, cmp_double);
    double h = (m - 1) * 0.99;
    int lo = (int)h;
    return lo + 1 < m ? a->scratch[lo] + (h - lo) * (a->scratch[lo + 1] - a->scratch[lo]) : a->scratch[lo];
}

static bool change(sched_adapt_t *a, double now, const char *knob, double old_v, double new_v, sched_config_t *next,
                   const char *reason)
{
    if (new_v == old_v)
        return false; /* already at the bound */
    if (knob[0] == 'm')
        next->max_num_batched_tokens = (int)new_v;
    else
        next->batch_timeout_ms = new_v;
    a->last_change = now;
    a->n_changes++;
    a->n = 0; /* judge the new setting on requests finished under it only */
    if (a->o.log) {
        sched_adapt_change_t c = {.id = a->id, .t = now, .knob = knob, .old_value = old_v, .new_value = new_v};
        snprintf(c.reason, sizeof c.reason, "%s", reason);
        a->o.log(a->o.log_ctx, &c);
    }
    return true;
}

bool sched_adapt_decide(sched_adapt_t *a, double now, const sched_config_t *cur, sched_config_t *next)
{
    *next = *cur;
    if (now - a->last_eval < a->o.eval_interval_s)
        return false;
    a->last_eval = now;
    int q_prev = a->waiting_at_eval;
    a->waiting_at_eval = a->waiting;
    bool grew = a->waiting > q_prev;
    while (a->n > 0 && a->ring[a->head].t < now - a->o.window_s) {
        a->head = (a->head + 1) % a->o.window_cap;
        a->n--;
    }
    if (a->n < a->o.min_samples || now - a->last_change < a->o.min_interval_s)
        return false;
    const sched_adapt_opts_t *o = &a->o;
    double ttft = window_p99(a, offsetof(sample_t, ttft)), tpot = window_p99(a, offsetof(sample_t, tpot));
    bool ttft_over = o->ttft_target > 0 && ttft > o->ttft_target;
    bool tpot_over = o->tpot_target > 0 && tpot > o->tpot_target;
    char why[160];
    if (cur->strategy == SCHED_CONTINUOUS) {
        double b = cur->max_num_batched_tokens;
        /* never below what validation needs: a decode with its drafts; a whole prompt unchunked */
        double floor_b = fmax(o->budget_min, 1 + cur->num_speculative_tokens);
        if (!cur->enable_chunked_prefill)
            floor_b = fmax(floor_b, cur->max_sequence_length);
        if (tpot_over) {
            snprintf(why, sizeof why, "tpot p99 %.3g s > %.3g s: lower the token budget", tpot, o->tpot_target);
            return change(a, now, "max_num_batched_tokens", b, fmax(floor_b, fmin(b, floor(b / 2))), next, why);
        }
        bool headroom = o->tpot_target == 0 || !(tpot >= o->tpot_target * (1 - o->hysteresis));
        if (ttft_over && grew && headroom) {
            snprintf(why, sizeof why, "ttft p99 %.3g s > %.3g s and queue %d -> %d: raise the token budget", ttft,
                     o->ttft_target, q_prev, a->waiting);
            return change(a, now, "max_num_batched_tokens", b, fmin(o->budget_max, fmax(b, b * 2)), next, why);
        }
        return false;
    }
    double t = cur->batch_timeout_ms;
    double queue = window_p99(a, offsetof(sample_t, queue));
    if (ttft_over && queue >= 0.5 * ttft) {
        snprintf(why, sizeof why, "ttft p99 %.3g s > %.3g s, queueing p99 %.3g s of it: shorten the batch timeout",
                 ttft, o->ttft_target, queue);
        return change(a, now, "batch_timeout_ms", t, fmax(o->timeout_min_ms, fmin(t, t / 2)), next, why);
    }
    if (o->ttft_target > 0 && ttft < o->ttft_target * (1 - o->hysteresis) && !grew) {
        snprintf(why, sizeof why, "ttft p99 %.3g s < %.3g s, queue steady: lengthen the batch timeout", ttft,
                 o->ttft_target * (1 - o->hysteresis));
        return change(a, now, "batch_timeout_ms", t, fmin(o->timeout_max_ms, fmax(t, t * 2)), next, why);
    }
    return false;
}
