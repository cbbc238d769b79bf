/* cost.h — the simulator's cost model: how long one scheduler step takes on a replica.
 *
 * A step is priced from its shape (docs/SIMULATOR.md has the derivation and the errors):
 *   dense     per layer: norms, QKV, RoPE, O, gate+up, SiLU*mul, down, two adds at M = tokens in
 *             the step (padding included), interpolated in log M from the calibration table of
 *             the profile's card and TP degree; other M, shapes, cards and TP degrees scale the
 *             table by the ratio of the fitted rooflines; no table: a roofline with the
 *             profile's efficiencies
 *   attention per layer, per sequence: prefill by its causal q x kv FLOPs, decode by its own KV
 *             bytes (and the longest sequence's), never a batch mean
 *   LM head   a vocab x hidden GEMM at M = rows sampled in the step
 *   all-reduce 2 per layer when TP > 1, from the network table (else ring over NVLink)
 *   host      a fixed per-step overhead
 *   launch    CPU launch stream vs GPU: a step not run as a CUDA graph lasts at least
 *             kernels x launch_gap; decode-only steps run as a graph when the profile says so
 * Deterministic: the same step shape gives the same seconds. Dense and LM-head terms are tabled
 * per M at creation, so pricing a step costs O(sequences in the step).
 */
#ifndef SLUICE_SIM_COST_H
#define SLUICE_SIM_COST_H

#include "sched/memest.h"
#include "sched/sched.h"
#include "sim/calib.h"
#include "sim/hw.h"

typedef struct sim_cost sim_cost_t;

/* One step's time by term (seconds) and its useful FLOPs (padding excluded). */
typedef struct sim_cost_parts {
    double dense, attention, lm_head, allreduce, launch, host;
    double total;
    double flops;
} sim_cost_parts_t;

/* Builds a cost model for model m on hw with tensor-parallel degree tp; calib may be NULL (pure
 * roofline). calib is only read during creation. On error returns NULL with err filled (bad tp,
 * invalid profile, out of memory). */
sim_cost_t *sim_cost_create(const sched_model_shape_t *m, const sim_hw_t *hw, int tp,
                            const sim_calib_t *calib, char *err, int errlen);
/* A cost model that prices every step from a measured engine profile (sim/profile.h:
 * sim_profile_step) instead of GPU tables; the profile is copied. sim_cost_dense, sim_cost_lm_head
 * and sim_cost_peak_flops are GPU-model figures and read 0 on it. NULL + err on out of memory. */
struct sim_profile;
sim_cost_t *sim_cost_create_profile(const struct sim_profile *p, char *err, int errlen);
void sim_cost_free(sim_cost_t *c);

/* Prices one step. parts may be NULL. Cannot fail. */
double sim_cost_step(const sim_cost_t *c, const sched_step_t *step, sim_cost_parts_t *parts);

/* The dense per-step time at M tokens, the LM head at `rows` sampled rows (seconds). Cannot fail. */
double sim_cost_dense(const sim_cost_t *c, int m);
double sim_cost_lm_head(const sim_cost_t *c, int rows);

/* Peak FLOP/s of one replica (all its TP GPUs), for MFU. Cannot fail. */
double sim_cost_peak_flops(const sim_cost_t *c);

#endif
