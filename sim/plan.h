/* plan.h — capacity planning by simulation: one replica's capacity under an SLO, and the fewest
 * replicas that meet the SLO at a request rate.
 *
 * Both searches call a caller-supplied evaluation: simulate `replicas` replicas at `rate` req/s
 * and say whether the SLO held. They assume monotonicity (more rate: no easier; more replicas: no
 * harder), which holds for a trace compressed in time and a load-balancing router up to
 * simulation noise.
 *   capacity   from rate_hint, double (or halve) until the SLO flips, then bisect `iters` times;
 *              every evaluated point is kept (the chart of latency against load)
 *   replicas   start at ceil(rate / capacity), step up by doubling until the SLO holds, then
 *              binary-search down to the fewest; at most max_replicas
 */
#ifndef SLUICE_SIM_PLAN_H
#define SLUICE_SIM_PLAN_H

#include <stdbool.h>

typedef struct sim_plan_point {
    int replicas;
    double rate;             /* offered req/s */
    bool slo_met;
    double throughput;       /* completed req/s */
    double ttft_p99, tpot_p99, e2e_p99; /* s */
} sim_plan_point_t;

typedef int (*sim_plan_eval_fn)(void *ctx, int replicas, double rate, sim_plan_point_t *out, char *err, int errlen);

enum { SIM_PLAN_MAX_POINTS = 32 };

typedef struct sim_plan_curve {
    sim_plan_point_t pt[SIM_PLAN_MAX_POINTS]; /* in evaluation order */
    int n;
} sim_plan_curve_t;

/* One replica's capacity: the highest rate meeting the SLO (0 when even rate_hint / 2^10 fails).
 * SL_EINVAL for rate_hint <= 0 or iters outside 1..20; an evaluation's status otherwise. */
int sim_plan_capacity(sim_plan_eval_fn eval, void *ctx, double rate_hint, int iters, double *capacity,
                      sim_plan_curve_t *curve, char *err, int errlen);

/* Fewest replicas meeting the SLO at rate, given one replica's capacity (> 0). *at gets the
 * evaluation at the answer. SL_ENOTFOUND when even max_replicas fails (*replicas then
 * max_replicas); SL_EINVAL for bad arguments; an evaluation's status otherwise. */
int sim_plan_replicas(sim_plan_eval_fn eval, void *ctx, double rate, double capacity, int max_replicas,
                      int *replicas, sim_plan_point_t *at, char *err, int errlen);

#endif
