/* sim.h — the discrete-event simulator: replicas running the real scheduler (sched/) on a
 * virtual clock, priced by the cost model, fed by a trace through a router.
 *
 * Events (arrival, step done, wake-up) sit in a binary heap ordered by (time, sequence number),
 * so equal-time events run in the order they were scheduled and a run is a pure function of
 * (trace, config): same inputs, same records, bit for bit. Only the next arrival is in the heap
 * at any time, so the heap holds at most replicas * 2 + 1 events.
 *
 * Each replica owns one sched_t (sched_create with cfg.sched) and prices each planned step with
 * its cost model; the step completes at now + cost, when it is committed with one token per
 * sampled sequence, plus the accepted drafts of a speculating decode (cfg.spec_acceptance; the
 * scheduler finishes requests at max_new_tokens = the trace's output length). Requests carry no
 * tokens unless they are in a prefix group; then the first prefix_len prompt tokens are the
 * group's (equal across the group, so the prefix cache can hit) and the rest are unique to the
 * request.
 *
 * Speculative decoding (sched.num_speculative_tokens = k > 0, CONTINUOUS): a decode step runs the
 * sequence's token and k' <= k draft slots (the scheduler clamps k' near max_new_tokens), all
 * charged by the cost model; the target model accepts draft j (0-based) when draft j - 1 was
 * accepted and a uniform draw u_j < alpha = spec_acceptance. u_j hashes (seed, req_id, the
 * draft's position context_len + 1 + j), so a run is reproducible and a request's acceptances do
 * not depend on what else is in its steps. The step appends 1 + accepted tokens (the accepted
 * drafts and the target's own next token): (1 - alpha^(k'+1)) / (1 - alpha) on average. With
 * spec_propose p < 1 a sequence proposes its drafts in a step only when a draw hashed from (seed,
 * req_id, context_len) is below p; otherwise the step prices and appends its own token alone (the
 * reported step shape counts the tokens priced). The draft model's own cost is not modelled
 * (zero: prompt-lookup drafts cost nothing to propose).
 *
 * Records stream out through callbacks as they happen; the simulator keeps none, so memory is
 * bounded by the scheduler's live state whatever the trace length.
 */
#ifndef SLUICE_SIM_SIM_H
#define SLUICE_SIM_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/adapt.h"
#include "sched/sched.h"
#include "sim/calib.h"
#include "sim/cost.h"
#include "sim/hw.h"
#include "sim/profile.h"
#include "workloads/trace.h"

typedef enum sim_router {
    SIM_ROUTE_ROUND_ROBIN = 0,
    SIM_ROUTE_LEAST_OUTSTANDING, /* fewest requests submitted and not yet done */
    SIM_ROUTE_LEAST_KV,          /* fewest used KV blocks + blocks the waiting prompts need */
} sim_router_t;

const char *sim_router_name(sim_router_t r);
/* "round_robin", "least_outstanding", "least_kv" ('-' accepted). SL_EINVAL otherwise. */
int sim_router_parse(const char *name, sim_router_t *out);

typedef struct sim_config {
    sched_config_t sched;      /* per replica; num_blocks is replaced when plan_kv is true */
    sched_model_shape_t model; /* default llama2-7b (needs sched_model_shape_builtin) */
    sim_hw_t hw;               /* default a100-80gb */
    int replicas;              /* default 1 */
    int tp;                    /* tensor-parallel GPUs per replica, default 1 */
    sim_router_t router;       /* default round robin */
    bool plan_kv;              /* num_blocks from sched_mem_plan(model / tp, hw memory). default true */
    uint64_t seed;             /* token synthesis for prefix groups. default 0 */
    const sim_profile_t *profile; /* non-NULL: steps priced by this measured engine profile (read
                                     during sim_create only) and, with plan_kv, KV blocks sized as
                                     the engine sizes its pool; hw then only names the run.
                                     default NULL */
    double engine_idle_spin_s; /* with a profile: how long the engine polls for work after a step
                                  (sluice_engine_params.idle_spin_ms); the profile's wake term is
                                  charged only to a step after idle_spin + idle_after idle. default
                                  1 (the engine's default) */
    double spec_acceptance;    /* speculative decoding (sched.num_speculative_tokens > 0): alpha,
                                  the probability that the target model accepts a draft token given
                                  it accepted the drafts before it (i.i.d. per draft, Leviathan et
                                  al. 2023). 0..1; default 0: every draft rejected, drafts are pure
                                  cost. Unused without drafts */
    double spec_propose;       /* the probability that a decoding sequence's drafter proposes drafts
                                  in a step (prompt lookup finds a match only where the text
                                  repeats); a sequence that does not runs and is charged its own
                                  token only. 0..1; default 1 (a draft model always proposes) */
} sim_config_t;

/* Defaults above. SL_ENOTFOUND only if the built-in llama2-7b shape is missing. */
int sim_config_default(sim_config_t *cfg);

/* Expected tokens a decode step with k draft slots appends at acceptance alpha (0..1):
 * 1 + alpha + ... + alpha^k = (1 - alpha^(k+1)) / (1 - alpha); k + 1 at alpha 1; 1 at k <= 0.
 * Cannot fail. */
double sim_spec_tokens_per_step(double alpha, int k);

/* The alpha at which a step with k (>= 1) drafts accepts, on average, the share rate (0..1) of
 * them: the inverse of rate = (sim_spec_tokens_per_step(alpha, k) - 1) / k. An engine's
 * accepted / drafted count is such a share, not alpha (alpha 0.8 with k 4 accepts 59% of the
 * drafts); this converts it. NAN when rate is outside 0..1 or k < 1. */
double sim_spec_alpha_from_rate(double rate, int k);

/* One finished or rejected request (a rejected one has reason SCHED_FINISH_ABORT and no
 * timings); one executed step with its start, end and the replica's KV stats after commit. */
typedef struct sim_step_info {
    int replica;
    double t_start, t_end;
    const sched_step_t *step;
    const sched_stats_t *stats;
    const sim_cost_parts_t *cost;
} sim_step_info_t;

typedef struct sim_sink {
    void *ctx;
    /* either may be NULL; a non-zero return stops the run with that status */
    int (*on_done)(void *ctx, int replica, const sched_done_t *done);
    int (*on_step)(void *ctx, const sim_step_info_t *info);
    /* called about every 2^16 events with the virtual time and requests done; may be NULL */
    void (*on_progress)(void *ctx, double now, uint64_t done, uint64_t total);
} sim_sink_t;

typedef struct sim_totals {
    uint64_t events, steps, submitted, rejected, done;
    uint64_t too_long;    /* of rejected: over the context or the whole KV pool, never servable */
    double end_time;      /* virtual time of the last event */
    double busy_time;     /* sum of step durations over replicas */
    double flops;         /* useful model FLOPs over the run */
    int num_blocks;       /* KV blocks per replica */
    double peak_flops;    /* of one replica */
} sim_totals_t;

typedef struct sim sim_t;

/* Builds replicas (schedulers + cost models). calib may be NULL (roofline). On error returns
 * NULL with the reason in err ("model llama2-70b needs 130.4 GiB per GPU at tp 1; a100-80gb has
 * 72.0 GiB usable"). */
sim_t *sim_create(const sim_config_t *cfg, const sim_calib_t *calib, char *err, int errlen);
void sim_free(sim_t *s);

/* Between-steps hook: called on a replica after each step's commit (after the sink's on_step and
 * the on_done calls of the requests that step finished) and before the replica plans again, with
 * its scheduler: the one point where a running simulation may change a scheduler's live knobs
 * (sched_update_config; the adaptive controller, sim_adaptive_hook below). info is what on_step got. A
 * non-zero return stops the run with that status. */
typedef struct sim_hook {
    void *ctx;
    int (*between_steps)(void *ctx, const sim_step_info_t *info, sched_t *sched);
} sim_hook_t;

/* Installs a copy of hook for later sim_run calls (NULL, or between_steps NULL: none). Without a
 * hook a run is exactly as before. Cannot fail. */
void sim_set_hook(sim_t *s, const sim_hook_t *hook);

/* KV blocks per replica as planned by sim_create (what sim_totals_t.num_blocks will say). Cannot
 * fail. */
int sim_num_blocks(const sim_t *s);

/* Runs the whole trace. Returns SL_OK, a sink's status, or a scheduler error (SL_ESTATE ...) with
 * the detail in err. *totals is filled in every case. */
int sim_run(sim_t *s, const wl_trace_t *trace, const sim_sink_t *sink, sim_totals_t *totals,
            char *err, int errlen);

/* ---- adaptive tuning: one controller (sched/adapt.h) per replica, via the sink and the hook -- */

typedef struct sim_adaptive sim_adaptive_t;

/* Controllers for n replicas with options o (each gets id = replica). NULL + err on error. */
sim_adaptive_t *sim_adaptive_create(const sched_adapt_opts_t *o, int replicas, char *err, int errlen);
void sim_adaptive_free(sim_adaptive_t *ad);
/* A sink that feeds the controllers and forwards every record to inner (may be NULL); valid while
 * ad lives. A hook for sim_set_hook() that lets the replica's controller decide between steps and
 * applies its change with sched_update_config (an error there stops the run with its status). */
sim_sink_t sim_adaptive_sink(sim_adaptive_t *ad, const sim_sink_t *inner);
sim_hook_t sim_adaptive_hook(sim_adaptive_t *ad);
/* Changes over all replicas. Cannot fail. */
int sim_adaptive_changes(const sim_adaptive_t *ad);

#endif
