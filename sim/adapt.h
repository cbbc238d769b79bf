/* adapt.h — the adaptive controller: adjusts a live scheduler's batch_timeout_ms and
 * max_num_batched_tokens (the knobs sched_update_config() may change) toward latency targets,
 * from observations the executor feeds it, each with its own timestamp. No clock, no I/O, no
 * allocation after create; a pure function of its observations, so a simulated run stays
 * deterministic.
 *
 * Observations: finished requests (TTFT, TPOT, queueing delay; their finish time is the
 * sample's time) and steps (waiting requests after each; decisions are stamped with the step's end). Percentiles are over the
 * requests finished in the last window_s seconds (at most window_cap of them, oldest dropped).
 *
 * Decisions (sim_adapt_decide), at most one change per min_interval_s, evaluated at most every
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
 * steers one scheduler; a simulation with replicas uses one per replica (sim_adaptive_t below).
 */
#ifndef SLUICE_SIM_ADAPT_H
#define SLUICE_SIM_ADAPT_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/sched.h"
#include "sim/sim.h"

typedef struct sim_adapt_change {
    int id;               /* the controller's id (the replica) */
    double t;             /* observation time of the decision (s) */
    const char *knob;     /* "max_num_batched_tokens" or "batch_timeout_ms" (static string) */
    double old_value, new_value;
    char reason[160];     /* "ttft p99 2.31 s > 1 s and queue 40 -> 55: raise the token budget" */
} sim_adapt_change_t;

typedef void (*sim_adapt_log_fn)(void *ctx, const sim_adapt_change_t *c);

typedef struct sim_adapt_opts {
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
    sim_adapt_log_fn log;      /* may be NULL */
    void *log_ctx;
} sim_adapt_opts_t;

/* Defaults above for a scheduler starting at start (timeout_max_ms from it). Cannot fail. */
void sim_adapt_opts_default(sim_adapt_opts_t *o, const sched_config_t *start);

typedef struct sim_adapt sim_adapt_t;

/* A controller with id (reported in its changes). NULL with the reason in err for bad options
 * ("budget_min: must be 1..budget_max, got 0") or out of memory. */
sim_adapt_t *sim_adapt_create(const sim_adapt_opts_t *o, int id, char *err, int errlen);
void sim_adapt_free(sim_adapt_t *a);

/* Feeds a finished request (aborted ones and requests without a first token are ignored).
 * Cannot fail. */
void sim_adapt_observe_request(sim_adapt_t *a, const sched_done_t *d);
/* Feeds the queue length (waiting requests) after a step. Cannot fail. */
void sim_adapt_observe_step(sim_adapt_t *a, int waiting);

/* Decides at time now from the observations so far: returns true with *next = cur and one live
 * knob changed (logged), or false (*next = cur). The caller applies it (sched_update_config).
 * Cannot fail. */
bool sim_adapt_decide(sim_adapt_t *a, double now, const sched_config_t *cur, sched_config_t *next);

/* Changes made so far. Cannot fail. */
int sim_adapt_changes(const sim_adapt_t *a);

/* ---- in the simulator: one controller per replica, wired through the sink and the hook ---- */

typedef struct sim_adaptive sim_adaptive_t;

/* Controllers for n replicas with options o (each gets id = replica). NULL + err on error. */
sim_adaptive_t *sim_adaptive_create(const sim_adapt_opts_t *o, int replicas, char *err, int errlen);
void sim_adaptive_free(sim_adaptive_t *ad);
/* A sink that feeds the controllers and forwards every record to inner (may be NULL); valid while
 * ad lives. A hook for sim_set_hook() that lets the replica's controller decide between steps and
 * applies its change with sched_update_config (an error there stops the run with its status). */
sim_sink_t sim_adaptive_sink(sim_adaptive_t *ad, const sim_sink_t *inner);
sim_hook_t sim_adaptive_hook(sim_adaptive_t *ad);
/* Changes over all replicas. Cannot fail. */
int sim_adaptive_changes(const sim_adaptive_t *ad);

#endif
