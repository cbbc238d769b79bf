/* adapt.h — the adaptive controller ("adaptive tuning at run time"): adjusts a live scheduler's
 * batch_timeout_ms and max_num_batched_tokens (the knobs sched_update_config() may change) toward
 * latency targets, from observations the executor feeds it, each with its own timestamp. No
 * clock, no I/O, no allocation after create; a pure function of its observations, so a simulated
 * run stays deterministic.
 *
 * Observations: finished requests (TTFT, TPOT, queueing delay; their finish time is the
 * sample's time) and steps (waiting requests after each; decisions are stamped with the step's
 * end). Percentiles are over the requests finished in the last window_s seconds (at most
 * window_cap of them, oldest dropped).
 *
 * Decisions (sched_adapt_decide), at most one change per min_interval_s, evaluated at most every
 * eval_interval_s and only with min_samples requests in the window:
 *   CONTINUOUS (max_num_batched_tokens, within [budget_min, budget_max], x2 or /2 per change):
 *     1. TPOT p99 > tpot_target                                      -> lower the budget
 *     2. TTFT p99 > ttft_target, the queue grew since the last evaluation, and TPOT p99 below
 *        tpot_target * (1 - hysteresis) (headroom)                   -> raise the budget
 *   static strategies (batch_timeout_ms, within [timeout_min_ms, timeout_max_ms], /2 or x2):
 *     1. TTFT p99 > ttft_target and queueing is at least half of it  -> shorten the timeout
 *     2. TTFT p99 < ttft_target * (1 - hysteresis) and the queue did not grow
 *                                                                    -> lengthen the timeout
 * After a change the window is emptied, so the next decision judges the new setting on requests
 * finished under it (min_samples of them). The hysteresis band, the fresh window and the minimum
 * interval keep it from oscillating; a target of 0 disables the rules that read it.
 *
 * Every change is reported to the log callback (time, knob, old -> new, reason). One controller
 * steers one scheduler. Both executors use this one implementation: the simulator one per replica
 * (sim_adaptive_t in sim/sim.h), the engine one in its serving loop (sluice_engine_params.adaptive).
 *
 * Threading: none; the caller serialises calls on a controller (the engine under its lock).
 */
#ifndef SLUICE_SCHED_ADAPT_H
#define SLUICE_SCHED_ADAPT_H

#include <stdbool.h>
#include <stdint.h>

#include "sched.h"

typedef struct sched_adapt_change {
    int id;               /* the controller's id (the replica) */
    double t;             /* observation time of the decision (s) */
    const char *knob;     /* "max_num_batched_tokens" or "batch_timeout_ms" (static string) */
    double old_value, new_value;
    char reason[160];     /* "ttft p99 2.31 s > 1 s and queue 40 -> 55: raise the token budget" */
} sched_adapt_change_t;

typedef void (*sched_adapt_log_fn)(void *ctx, const sched_adapt_change_t *c);

typedef struct sched_adapt_opts {
    double ttft_target;        /* s, p99 TTFT to stay under; 0 = none. default 1 */
    double tpot_target;        /* s, p99 TPOT to stay under; 0 = none. default 0.1 */
    double window_s;           /* sliding window of finished requests. default 20 */
    int window_cap;            /* most requests kept in the window, >= 16. default 4096 */
    int min_samples;           /* requests in the window before acting. default 20 */
    double eval_interval_s;    /* evaluate at most this often. default 1 */
    double min_interval_s;     /* between two changes. default 5 */
    double hysteresis;         /* band below a target, 0..0.9. default 0.2 */
    int budget_min, budget_max;          /* default 256 .. 8192 */
    double timeout_min_ms, timeout_max_ms; /* default 1 .. the starting timeout (at least 1) */
    sched_adapt_log_fn log;      /* may be NULL */
    void *log_ctx;
} sched_adapt_opts_t;

/* Defaults above for a scheduler starting at start (timeout_max_ms from it). Cannot fail. */
void sched_adapt_opts_default(sched_adapt_opts_t *o, const sched_config_t *start);

typedef struct sched_adapt sched_adapt_t;

/* A controller with id (reported in its changes). NULL with the reason in err for bad options
 * ("budget_min: must be 1..budget_max, got 0") or out of memory. */
sched_adapt_t *sched_adapt_create(const sched_adapt_opts_t *o, int id, char *err, int errlen);
void sched_adapt_free(sched_adapt_t *a);

/* Feeds a finished request (aborted ones and requests without a first token are ignored).
 * Cannot fail. */
void sched_adapt_observe_request(sched_adapt_t *a, const sched_done_t *d);
/* Feeds the queue length (waiting requests) after a step. Cannot fail. */
void sched_adapt_observe_step(sched_adapt_t *a, int waiting);

/* Decides at time now from the observations so far: returns true with *next = cur and one live
 * knob changed (logged), or false (*next = cur). The caller applies it (sched_update_config).
 * Cannot fail. */
bool sched_adapt_decide(sched_adapt_t *a, double now, const sched_config_t *cur, sched_config_t *next);

/* Changes made so far. Cannot fail. */
int sched_adapt_changes(const sched_adapt_t *a);

#endif
