/* sim_run.h — the pieces of one simulated run shared by `sluice sim`, `tune` and `plan`: load a
 * workload, load calibration, collect the simulator's records, summarise them, record the run.
 *
 * Thread safety: every function works on its own arguments only; a collector or a sim_t must not
 * be shared between threads, a loaded trace and calibration may be read by many at once. The run
 * store handle is not thread-safe: callers serialise cli_sim_record() calls on one handle.
 */
#ifndef SLUICE_CLI_SIM_RUN_H
#define SLUICE_CLI_SIM_RUN_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "sim/sim.h"
#include "workloads/trace.h"

/* The trace the simulator reads when neither --trace nor --preset is given (if present). */
#define CLI_DEFAULT_TRACE "../shared/traces/azure_conv_2023.csv"

/* Where a workload comes from. trace and preset are exclusive; both NULL: CLI_DEFAULT_TRACE if
 * readable, else preset "chat". n > 0 keeps the first n requests (trace) or generates n (preset);
 * rate > 0 is the preset's rate; rate_scale (> 0, 1 = as is) multiplies the arrival rate. */
typedef struct cli_workload {
    const char *trace, *preset;
    long n;
    double rate, rate_scale;
    uint64_t seed;
} cli_workload_t;

/* Fills tr (cleared first) and names the workload in name ("../x.csv" or "preset chat").
 * On error returns the status with the reason in err ("workload: x.csv:12: ..."). */
int cli_workload_load(const cli_workload_t *w, wl_trace_t *tr, char *name, size_t namelen, char *err,
                      size_t errlen);

/* Calibration tables for hw into *out, or NULL there: the roofline with the profile's
 * efficiencies (a profile without calib_gpu, or calib_dir "none"). Tables that cannot be read
 * are an error when calib_dir was chosen (not SIM_CALIB_DEFAULT_DIR): "sluice CMD: --calib-dir
 * DIR: FILE:LINE: why ..." on stderr, returns 2; under the default folder, which a checkout may
 * lack, a note on stderr and the roofline. 0 otherwise. Free *out with sim_calib_free. */
int cli_calib_load(const char *cmd, const char *calib_dir, const sim_hw_t *hw, sim_calib_t **out);

/* Collects a run's records from the simulator's sink. Requests are kept (the latency
 * percentiles need them all: ~72 B each). Steps are folded into `steps` as they arrive (the step
 * metrics need only sums) and otherwise kept only when asked: in memory (keep_steps, for a caller
 * that records them after the run) or streamed to an open run of a store in batches of
 * CLI_STEP_BATCH rows (cli_collect_stream), so memory does not grow with the step count. */
enum { CLI_STEP_BATCH = 8192 };
typedef struct cli_collect {
    an_request_rec_t *req;
    size_t n_req, cap_req;
    an_step_accum_t steps; /* every step, folded (set up by cli_collect_init) */
    an_step_rec_t *step;   /* kept steps (keep_steps) or the pending batch (streaming) */
    size_t n_step, cap_step;
    bool keep_steps; /* keep every step in step[] */
    bool progress;   /* draw a progress bar on stderr after a second of wall time */
    double t0;       /* wall seconds at start (cli_wall_now) */
    an_store_t *st;  /* streaming: steps go to run run_id of st (cli_collect_stream) */
    int64_t run_id;
    int stream_rc;   /* the first store error while streaming (the run then stops) */
} cli_collect_t;

/* Zeroes c and sets it up (KV blocks per replica, for kv_util, come with the first step).
 * Cannot fail. */
void cli_collect_init(cli_collect_t *c, bool keep_steps, bool progress);
/* Streams steps to the open run run_id of st from now on (keep_steps must be false). */
void cli_collect_stream(cli_collect_t *c, an_store_t *st, int64_t run_id);
/* A sink writing into c. Cannot fail. */
sim_sink_t cli_collect_sink(cli_collect_t *c);
/* Frees the records and zeroes the counts. */
void cli_collect_free(cli_collect_t *c);

/* Monotonic wall seconds. */
double cli_wall_now(void);

/* Summary of a finished run: metrics under slo (step metrics from the folded steps), MFU from
 * tot. SL_ENOMEM only. */
int cli_sim_summary(const cli_collect_t *c, const sim_totals_t *tot, const sim_config_t *cfg, const an_slo_t *slo,
                    an_summary_t *out);

/* Speculative decoding needs an acceptance: SL_EINVAL with the reason in err ("num_speculative_tokens
 * 4 needs --spec-acceptance A ...") when cfg->sched.num_speculative_tokens > 0 and the command was
 * not given --spec-acceptance (acceptance_given false), SL_OK otherwise. For `sluice sim`, `tune`
 * and `plan`, after their options are parsed. */
int cli_sim_spec_check(const sim_config_t *cfg, bool acceptance_given, char *err, size_t errlen);

/* The run's configuration as JSON (every scheduler knob by name, plus replicas, tp, router,
 * spec_acceptance, calib_dir) into buf. Returns false when buf is too small (or out of memory). */
bool cli_sim_config_json(const sim_config_t *cfg, const char *calib_dir, char *buf, size_t len);

/* Recording in two halves, so steps can stream into the run while it is simulated:
 * cli_sim_record_begin opens run *run_id (mode sim) with cfg (give it the planned num_blocks:
 * sim_num_blocks); cli_sim_record_finish writes the requests, the kept steps (when with_steps) and the
 * summary and commits, or, when run_rc != SL_OK (the simulation failed) or a write fails, records
 * the run as failed with run_err / the store's error. Both return the status; an_store_errmsg(st)
 * says why. */
int cli_sim_record_begin(an_store_t *st, const sim_config_t *cfg, const char *calib_dir, const char *workload,
                         uint64_t hash, uint64_t seed, int64_t *run_id);
int cli_sim_record_finish(an_store_t *st, int64_t run_id, const cli_collect_t *c, bool with_steps,
                          const an_summary_t *sum, int run_rc, const char *run_err);
/* Both halves after the run (for callers that simulate first: tune). */
int cli_sim_record(an_store_t *st, const sim_config_t *cfg, const char *calib_dir, const char *workload,
                   uint64_t hash, uint64_t seed, const cli_collect_t *c, bool with_steps, const an_summary_t *sum,
                   int64_t *run_id);

#endif
