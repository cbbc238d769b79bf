/* profile.h — a step-time model fitted to a measured engine profile (`sluice profile`), for the
 * simulator to price steps the way the engine on this machine runs them.
 *
 * Model (seconds per scheduler step; docs/VALIDATION.md says which terms are fitted):
 *   step  = host + host_row * rows                          engine loop: plan, batch, sampling,
 *                                                           commit, callbacks (fitted on real steps)
 *         + dense(M)                                        every per-token op at M = tokens in the
 *                                                           step: table at knots, linear in M
 *         + lm(rows)                                        LM head at rows = sampled rows: table
 *         + pre * sum_prefill q * (ctx + (q + 1) / 2)       prefill attention: causal q x kv pairs
 *                                                           (a decoding sequence's d speculative
 *                                                           drafts count as a chunk of d after its
 *                                                           token, on ctx + 1)
 *         + sum over decode sequences of dec(ctx + 1)       decode attention: each sequence reads
 *                                                           its own KV; a table over one sequence's
 *                                                           KV tokens, as the read outgrows caches
 *         + kv(K)                                           what the batch's whole KV read costs
 *                                                           beyond that, K = sum of ctx + 1: a table,
 *                                                           as many sequences outgrow the caches
 *         + wake    when the step starts idle_after or more after the previous one ended: the CPU
 *                   pool's workers have stopped spinning and sleep; waking them is measured (0 on
 *                   one thread, and where waking costs nothing measurable)
 *         + cold    when it starts cold_after or more after it, while the engine still polls: what
 *                   the step's weights and workspace cost to fetch again after other work (the
 *                   kernel, other processes) evicted them; measured (a stories260K decode: +0.11
 *                   ms on 0.064 after 20 ms of polling); a step past both pays the larger
 * dense, lm, pre and dec are fitted together by weighted least squares (relative error,
 * gsl_multifit_wlinear) on forward passes timed through the backend interface; dense(M), lm(rows)
 * dec(c) and kv(K) are piecewise linear over their knots (hat-function basis), and proportional
 * to M (rows, c, K) past the last knot and below the first. Padding of static strategies counts in M (it is real work for the cost model,
 * though the engine never computes it: see VALIDATION.md).
 *
 * The profile also carries what makes it stale: the machine (host, CPU model), backend, thread
 * count and the model's shape; sim_profile_check refuses a mismatch. Pure functions on their
 * arguments; no global state.
 */
#ifndef SLUICE_SIM_PROFILE_H
#define SLUICE_SIM_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/memest.h"
#include "sched/sched.h"
#include "sim/cost.h"

enum { SIM_PROFILE_MAX_KNOTS = 40 };
/* The step-time model's version, stored with a profile; older ones are refused (3: decode
 * attention per sequence plus the batch's total; 4: anchor times, 2026-11-27) */
enum { SIM_PROFILE_MODEL_VERSION = 4 };
/* Anchor shapes: a few steps timed the same way when profiling and again by `sluice validate`, to
 * see how fast the machine runs now against when it was profiled (cli/fwd_bench.h lists them) */
enum { SIM_PROFILE_ANCHORS = 6 };

/* One timed forward pass (or its median over repeats). */
typedef struct sim_profile_point {
    int m;           /* tokens in the step */
    int rows;        /* logits rows computed */
    double pre_work; /* sum over prefill sequences of q * (ctx + (q + 1) / 2) */
    int n_dec;       /* decode sequences, each reading dec_kv KV tokens (ctx + 1) */
    double dec_kv;
    double t;        /* seconds */
} sim_profile_point_t;

typedef struct sim_profile {
    char name[64];
    char backend[16];           /* "cpu", "cuda" */
    int threads;                /* effective compute threads (cpu) */
    char host[64], cpu[128];    /* where it was measured */
    char model_path[256];       /* informational */
    sched_model_shape_t model;  /* the shape as the engine sees it (bytes per weight / KV element) */
    int64_t kv_budget_bytes;    /* what the backend offered for the KV pool when profiled */
    int max_seq_len;            /* the engine's default max_sequence_length for this model */
    int n_knots, n_lm_knots, n_dec_knots, n_kv_knots;
    double knot[SIM_PROFILE_MAX_KNOTS];    /* M, ascending, knot[0] = 1 */
    double dense[SIM_PROFILE_MAX_KNOTS];   /* s at knot[i] tokens */
    double lm_knot[SIM_PROFILE_MAX_KNOTS]; /* rows, ascending, lm_knot[0] = 1 */
    double lm[SIM_PROFILE_MAX_KNOTS];      /* s at lm_knot[i] rows */
    double dec_knot[SIM_PROFILE_MAX_KNOTS];/* one decode sequence's KV tokens, ascending */
    double dec[SIM_PROFILE_MAX_KNOTS];     /* s at dec_knot[i], per sequence */
    double kv_knot[SIM_PROFILE_MAX_KNOTS]; /* a decode step's KV tokens in all, ascending */
    double kv[SIM_PROFILE_MAX_KNOTS];      /* s at kv_knot[i] */
    double pre;                 /* s per prefill token pair */
    double host_s, host_row;    /* engine loop: s per step, s per sampled row */
    double wake_s, idle_after_s;/* a step starting >= idle_after_s after the backend's last forward
                                   pays wake_s; the simulator adds the engine's idle spin to the gap
                                   (sim_config_t.engine_idle_spin_s). 0: no wake term */
    double cold_s, cold_after_s;/* a step starting >= cold_after_s after the backend's last forward
                                   (the engine polling meanwhile) pays cold_s. 0: no cold term */
    double fit_err;             /* median |fit - measured| / measured over the profile's points */
    double anchor_s[SIM_PROFILE_ANCHORS]; /* the anchor shapes' times when profiled; 0: not timed */
    char created[32];           /* UTC "YYYY-MM-DD HH:MM:SS" */
} sim_profile_t;

/* Knots 1, 2, 3, ... 16, 32, 64, ... up to max_m (max_m included), lm knots the same up to max_rows,
 * decode knots 16, 32, 64, ... KV tokens of one sequence up to max_ctx (the longest sequence), kv
 * knots 64, 256, 1024, ... up to max_rows * max_ctx. SL_EINVAL when one is < 1 or needs more than
 * SIM_PROFILE_MAX_KNOTS knots. */
int sim_profile_set_knots(sim_profile_t *p, int max_m, int max_rows, int max_ctx);

/* Fits dense, lm, dec and pre to the points (knots set first) and sets fit_err. Needs at
 * least one point near every knot and rows = 0 points (else the dense/lm split is not
 * identifiable). SL_EINVAL (too few points: err says), SL_ENOMEM, SL_EFORMAT (singular fit or a
 * negative coefficient the data cannot support: err names it). */
int sim_profile_fit(sim_profile_t *p, const sim_profile_point_t *pts, int n, char *err, int errlen);

/* Fits host_s and host_row: the engine loop's time outside the forward pass per step, from n real
 * steps (overhead seconds, sampled rows). SL_EINVAL with fewer than 3 steps. */
int sim_profile_fit_host(sim_profile_t *p, const double *overhead, const int *rows, int n, char *err,
                         int errlen);

/* The forward time the profile predicts for one point (pt->t ignored). Cannot fail. */
double sim_profile_forward(const sim_profile_t *p, const sim_profile_point_t *pt);

/* The forward time the profile predicts for a step of m tokens with rows sampled rows, prefill
 * attention pairs pre_work and n_dec decoding sequences reading dec_kv[i] KV tokens each (the
 * engine's own steps: sluice_step_info). Cannot fail. */
double sim_profile_forward_seqs(const sim_profile_t *p, int m, int rows, double pre_work, const int *dec_kv,
                                int n_dec);

/* Prices one scheduler step (forward + host terms); parts (may be NULL) gets dense, attention,
 * lm_head (LM head), host (loop + sampling) and total; flops is 0. Cannot fail. */
double sim_profile_step(const sim_profile_t *p, const sched_step_t *step, sim_cost_parts_t *parts);

/* Scales the profile to a machine that now takes `small` times as long as when profiled on steps of
 * up to 16 tokens (memory-bound: decode, small LM heads, decode attention, the host loop) and
 * `large` times on steps of 128 tokens or more (compute-bound: prompt chunks, prefill attention);
 * the dense and LM-head tables between 16 and 128 tokens scale by a blend, linear in log M. The
 * wake term is left alone. Cannot fail; a factor that is not > 0 counts as 1. */
void sim_profile_rescale(sim_profile_t *p, double small, double large);

/* KV blocks the engine gives sc (max_num_seqs or max_batch_size full-length sequences, capped by
 * the profile's KV budget or kv_memory_mb when > 0), as the engine sizes its pool. SL_ENOMEM
 * (with err) when not one full-length sequence fits. */
int sim_profile_num_blocks(const sim_profile_t *p, const sched_config_t *sc, double kv_memory_mb, int *out,
                           char *err, int errlen);

/* Refuses a profile for another machine, backend, thread count or model shape: SL_EINVAL with
 * "profile 'x' was measured on host a (CPU b); this is host c (CPU d)" or which field of the
 * model shape differs. Pass NULL for a field not to check. */
int sim_profile_check(const sim_profile_t *p, const char *host, const char *cpu, const char *backend,
                      int threads, const sched_model_shape_t *model, char *err, int errlen);

/* JSON text of the whole profile (for the run store's calibration table). false when buf is too
 * small. */
bool sim_profile_to_json(const sim_profile_t *p, char *buf, size_t len);
/* Reads sim_profile_to_json's text. SL_EFORMAT with the missing or bad key in err. */
int sim_profile_from_json(const char *json, sim_profile_t *p, char *err, int errlen);

#endif
