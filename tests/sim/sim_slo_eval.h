/* sim_slo_eval.h — a test-side evaluation for the tuner and planner: simulate a preset slice and
 * judge p99 TTFT / p99 TPOT against limits from the done records (an oracle independent of
 * analysis/, which tests/sim does not link). */
#ifndef SLUICE_TESTS_SIM_SLO_EVAL_H
#define SLUICE_TESTS_SIM_SLO_EVAL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim.h"
#include "workloads/presets.h"

typedef struct slo_eval {
    sim_config_t cfg;
    const wl_trace_t *tr;
    double ttft_limit, tpot_limit; /* s, p99 limits */
} slo_eval_t;

typedef struct slo_run {
    double ttft[4096], tpot[4096];
    int n, n_tpot;
    double t_first, t_last;
} slo_run_t;

static int slo_on_done(void *ctx, int replica, const sched_done_t *d)
{
    slo_run_t *r = ctx;
    (void)replica;
    if (d->reason == SCHED_FINISH_ABORT || r->n >= 4096)
        return 0;
    double ttft = d->first_token - d->arrival, tpot = d->output_len > 1 ? (d->finished - d->first_token) / (d->output_len - 1) : 0;
    r->ttft[r->n++] = ttft;
    if (d->output_len > 1)
        r->tpot[r->n_tpot++] = tpot;
    r->t_last = fmax(r->t_last, d->finished);
    return 0;
}

static int slo_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double slo_p99(double *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, slo_cmp);
    return v[(int)floor(0.99 * (n - 1))];
}

/* Simulates cfg on tr; fills p99s, goodput (requests within both limits per second), met. */
static int slo_simulate(const slo_eval_t *e, const sim_config_t *cfg, const wl_trace_t *tr, double *goodput,
                        double *ttft_p99, double *tpot_p99, bool *met, char *err, int errlen)
{
    sim_t *sim = sim_create(cfg, NULL, err, errlen);
    if (!sim)
        return SL_EINVAL;
    slo_run_t *r = calloc(1, sizeof *r);
    sim_sink_t sink = {r, slo_on_done, NULL, NULL};
    sim_totals_t tot;
    int rc = sim_run(sim, tr, &sink, &tot, err, errlen);
    if (rc == 0) {
        int good = 0;
        for (int i = 0; i < r->n; i++) /* per request: TTFT within limit (TPOT judged at p99) */
            good += r->ttft[i] <= e->ttft_limit;
        *ttft_p99 = slo_p99(r->ttft, r->n);
        *tpot_p99 = slo_p99(r->tpot, r->n_tpot);
        double span = r->t_last - tr->arrival[0];
        *goodput = span > 0 ? good / span : 0;
        *met = r->n > 0 && *ttft_p99 <= e->ttft_limit && *tpot_p99 <= e->tpot_limit;
    }
    free(r);
    sim_free(sim);
    return rc;
}

#endif
