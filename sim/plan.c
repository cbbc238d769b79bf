/* plan.c — capacity search (doubling + bisection on rate) and replica search (see plan.h). */
#include "sim/plan.h"

#include <math.h>
#include <stdio.h>

#include "sched/status.h"

static int eval_keep(sim_plan_eval_fn eval, void *ctx, int replicas, double rate, sim_plan_curve_t *curve,
                     sim_plan_point_t *p, char *err, int errlen)
{
    int rc = eval(ctx, replicas, rate, p, err, errlen);
    p->replicas = replicas, p->rate = rate;
    if (rc == SL_OK && curve && curve->n < SIM_PLAN_MAX_POINTS)
        curve->pt[curve->n++] = *p;
    return rc;
}

int sim_plan_capacity(sim_plan_eval_fn eval, void *ctx, double rate_hint, int iters, double *capacity,
                      sim_plan_curve_t *curve, char *err, int errlen)
{
    if (!(rate_hint > 0) || iters < 1 || iters > 20) {
        snprintf(err, (size_t)errlen, "plan: capacity search needs a rate hint > 0 and 1..20 bisections");
        return SL_EINVAL;
    }
    sim_plan_point_t p;
    double lo = 0, hi = 0, r = rate_hint;
    int rc = eval_keep(eval, ctx, 1, r, curve, &p, err, errlen);
    if (rc != SL_OK)
        return rc;
    if (p.slo_met) { /* double until it fails */
        lo = r;
        for (int k = 0; k < 12 && rc == SL_OK && p.slo_met; k++) {
            r *= 2;
            if ((rc = eval_keep(eval, ctx, 1, r, curve, &p, err, errlen)) == SL_OK && p.slo_met)
                lo = r;
        }
        hi = p.slo_met ? INFINITY : r;
    } else { /* halve until it holds */
        hi = r;
        for (int k = 0; k < 10 && rc == SL_OK && !p.slo_met; k++) {
            r /= 2;
            if ((rc = eval_keep(eval, ctx, 1, r, curve, &p, err, errlen)) == SL_OK && !p.slo_met)
                hi = r;
        }
        lo = p.slo_met ? r : 0;
    }
    for (int k = 0; rc == SL_OK && k < iters && lo > 0 && isfinite(hi); k++) {
        double mid = sqrt(lo * hi); /* rates span decades: bisect geometrically */
        if ((rc = eval_keep(eval, ctx, 1, mid, curve, &p, err, errlen)) == SL_OK)
            *(p.slo_met ? &lo : &hi) = mid;
    }
    *capacity = lo;
    return rc;
}

int sim_plan_replicas(sim_plan_eval_fn eval, void *ctx, double rate, double capacity, int max_replicas,
                      int *replicas, sim_plan_point_t *at, char *err, int errlen)
{
    if (!(rate > 0) || !(capacity > 0) || max_replicas < 1) {
        snprintf(err, (size_t)errlen, "plan: replica search needs rate > 0, capacity > 0, max_replicas >= 1");
        return SL_EINVAL;
    }
    double est = ceil(rate / capacity);
    int n = est > max_replicas ? max_replicas : (int)est;
    int lo = 0, hi = 0; /* lo fails (0 = none known), hi meets */
    sim_plan_point_t p;
    int rc;
    for (;;) {
        if ((rc = eval_keep(eval, ctx, n, rate, NULL, &p, err, errlen)) != SL_OK)
            return rc;
        if (p.slo_met) {
            hi = n, *at = p;
            break;
        }
        lo = n;
        if (n == max_replicas) {
            *replicas = max_replicas;
            snprintf(err, (size_t)errlen, "even %d replicas miss the SLO at %.3g req/s", max_replicas, rate);
            return SL_ENOTFOUND;
        }
        n = n * 2 > max_replicas ? max_replicas : n * 2;
    }
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if ((rc = eval_keep(eval, ctx, mid, rate, NULL, &p, err, errlen)) != SL_OK)
            return rc;
        if (p.slo_met)
            hi = mid, *at = p;
        else
            lo = mid;
    }
    *replicas = hi;
    return SL_OK;
}
