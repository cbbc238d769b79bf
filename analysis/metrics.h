/* metrics.h — per-request and per-step records of a run, and the summary computed from them:
 * throughput, latency percentiles, goodput under an SLO, KV utilisation and waste, batch shape.
 *
 * Definitions (all times in seconds; a record field of -1 means "never happened"):
 *   TTFT     first_token - arrival
 *   TPOT     (finished - first_token) / (output_len - 1), requests with output_len >= 2 only
 *   E2E      finished - arrival
 *   queue    first_scheduled - arrival
 *   duration last finish - first arrival (over all records)
 *   throughput = completed requests / duration; input/output tokens/s count completed requests
 *   Latency statistics cover completed requests (finished >= 0 and finish_reason != ABORT).
 * Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7, NumPy's
 * default): over the n sorted values x[0..n-1], h = (n - 1) * p / 100 and
 * P(p) = x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h]).
 * Goodput: completed requests that meet every per-request limit of the SLO (ttft <= limit, tpot
 * <= limit, e2e <= limit; TPOT limits pass requests with one output token), per second of
 * duration; goodput_frac is their share of all requests. slo_met is 1 when every SLO term holds
 * at its stated percentile over the completed requests.
 * Step metrics are time-weighted by step duration (t_end - t_start):
 *   kv_util     kv_used_blocks / kv_blocks_per_replica (needs opts.kv_blocks_per_replica)
 *   kv_waste    1 - sum(kv_used_slots) / sum(kv_reserved_slots): paged allocation waste
 *   kv_naive_waste  1 - sum(kv_used_slots) / sum(kv_naive_slots): a max-length reservation's
 *   busy_frac   sum of step durations / (duration * replicas)
 * Batch size and tokens per step are plain means over steps. A statistic with no data is NaN.
 */
#ifndef SLUICE_AN_METRICS_H
#define SLUICE_AN_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* One request of a run (a row of the store's requests table). finish_reason holds a
 * sched_finish_reason_t value (sched/sched.h): 0 none, 1 eos, 2 stop, 3 length, 4 abort. */
typedef struct an_request_rec {
    int64_t req_id;
    int replica;
    int priority;
    double arrival, first_scheduled, first_token, finished; /* s; -1 = never */
    int prompt_len, output_len, cached_prompt_len;          /* tokens */
    int preemptions;
    int finish_reason;
} an_request_rec_t;

/* One scheduler step of one replica (a row of the store's steps table). */
typedef struct an_step_rec {
    int replica;
    int64_t seq_no;            /* step number within the replica, from 0 */
    double t_start, t_end;     /* s */
    int n_seqs;                /* sequences in the step */
    int n_tokens;              /* tokens processed (prefill chunks + decode tokens), padding excluded */
    int n_prefill_tokens;
    int n_decode_seqs;
    int n_padded_tokens;       /* padding computed on top of n_tokens (NAIVE / BUCKETED) */
    int kv_used_blocks;
    int64_t kv_reserved_slots; /* kv_used_blocks * block_size */
    int64_t kv_used_slots;     /* tokens actually held */
    int64_t kv_naive_slots;    /* what a max-length reservation would hold for the same sequences */
    int n_preempted;           /* sequences preempted in this step */
} an_step_rec_t;

/* ---- SLO --------------------------------------------------------------------------------- */

typedef enum an_slo_metric { AN_SLO_TTFT = 0, AN_SLO_TPOT, AN_SLO_E2E } an_slo_metric_t;

#define AN_SLO_MAX_TERMS 8
typedef struct an_slo {
    int n;                                /* terms; 0 = no SLO */
    struct {
        an_slo_metric_t metric;
        double percentile;                /* in (0, 100] */
        double limit;                     /* seconds, > 0 */
    } term[AN_SLO_MAX_TERMS];
} an_slo_t;

/* Parses "ttft_p99=1s,tpot_p99=100ms,e2e_p90=20s": comma-separated METRIC_pPCT=VALUEUNIT, METRIC
 * one of ttft, tpot, e2e, PCT in (0, 100] (decimals allowed: p99.9), UNIT s or ms (required).
 * An empty string gives an empty SLO. SL_EINVAL with a message in err ("'tpot_p99=100': missing
 * unit, use s or ms (e.g. 100ms)"), *out unaltered. */
int an_slo_parse(const char *spec, an_slo_t *out, char *err, size_t errlen);
/* Writes the canonical spelling ("ttft_p99=1s,tpot_p99=0.1s") into buf. Cannot fail (truncates). */
void an_slo_format(const an_slo_t *slo, char *buf, size_t buflen);

/* ---- summary ------------------------------------------------------------------------------ */

/* The summary's fields: X(name, unit, description). All are doubles (counts are exact up to
 * 2^53); NaN means "no data". The store saves them by name, `sluice show` prints them in this
 * order; adding a field needs no schema change. */
#define AN_LATENCY_FIELDS(X, m, what)                           \
    X(m##_mean, "s", "mean " what)                              \
    X(m##_p50, "s", "median " what)                             \
    X(m##_p90, "s", "90th percentile " what)                    \
    X(m##_p99, "s", "99th percentile " what)
#define AN_SUMMARY_FIELDS(X)                                                                  \
    X(n_requests, "", "requests in the run")                                                  \
    X(n_completed, "", "requests that finished (not aborted)")                                \
    X(duration, "s", "first arrival to last finish")                                          \
    X(request_throughput, "req/s", "completed requests per second")                           \
    X(input_tps, "tok/s", "prompt tokens of completed requests per second")                   \
    X(output_tps, "tok/s", "output tokens of completed requests per second")                  \
    AN_LATENCY_FIELDS(X, ttft, "time to first token")                                         \
    AN_LATENCY_FIELDS(X, tpot, "time per output token after the first")                       \
    AN_LATENCY_FIELDS(X, e2e, "end-to-end latency")                                           \
    AN_LATENCY_FIELDS(X, queue, "queueing delay (arrival to first schedule)")                 \
    X(goodput, "req/s", "completed requests meeting every SLO limit, per second")             \
    X(goodput_frac, "", "share of requests meeting every SLO limit")                          \
    X(slo_met, "", "1 when every SLO term holds at its percentile, else 0 (NaN: no SLO)")     \
    X(preemptions, "", "preemptions summed over requests")                                    \
    X(preempted_requests, "", "requests preempted at least once")                             \
    X(prefix_hit_rate, "", "prompt tokens served from the prefix cache / prompt tokens")      \
    X(kv_util_mean, "", "time-weighted mean of used KV blocks / KV blocks")                   \
    X(kv_util_peak, "", "peak used KV blocks / KV blocks")                                    \
    X(kv_waste, "", "1 - used / reserved KV slots (paged), time-weighted")                    \
    X(kv_naive_waste, "", "1 - used / max-length-reserved KV slots, time-weighted")           \
    X(n_steps, "", "scheduler steps over all replicas")                                       \
    X(batch_size_mean, "seqs", "mean sequences per step")                                     \
    X(tokens_per_step, "tok", "mean tokens per step (padding excluded)")                      \
    X(padding_frac, "", "padded tokens / (tokens + padded tokens)")                           \
    X(busy_frac, "", "step time / (duration * replicas)")                                     \
    X(mfu, "", "model FLOP utilisation; set by the executor, NaN when unknown")

typedef struct an_summary {
#define AN_SUMMARY_MEMBER(name, unit, desc) double name;
    AN_SUMMARY_FIELDS(AN_SUMMARY_MEMBER)
#undef AN_SUMMARY_MEMBER
} an_summary_t;

/* A description of one summary field, for generic save / print loops. */
typedef struct an_summary_field {
    const char *name, *unit, *description;
    size_t offset;             /* of the double inside an_summary_t */
} an_summary_field_t;

/* Number of fields and the i-th (i < count). Cannot fail. */
size_t an_summary_field_count(void);
const an_summary_field_t *an_summary_field_at(size_t i);
/* The field named name, or NULL. Cannot fail. */
const an_summary_field_t *an_summary_field_find(const char *name);
/* Every field to NaN. Cannot fail. */
void an_summary_init(an_summary_t *s);

typedef struct an_metrics_opts {
    an_slo_t slo;                  /* terms for goodput / slo_met; n = 0: goodput counts all completed */
    int n_replicas;                /* for busy_frac; 0 = count distinct replica ids in the steps */
    int64_t kv_blocks_per_replica; /* for kv_util; 0 = unknown (kv_util NaN) */
} an_metrics_opts_t;

/* Zero SLO terms, replicas and KV blocks from the data. Cannot fail. */
void an_metrics_opts_default(an_metrics_opts_t *opts);

/* Computes *out from the records (either array may be empty; opts NULL = defaults). out->mfu is
 * left NaN. SL_ENOMEM (sorting needs copies) leaves *out unaltered. Folds the steps through an
 * an_step_accum_t and calls an_metrics_compute_accum (one implementation). */
int an_metrics_compute(const an_request_rec_t *reqs, size_t n_reqs, const an_step_rec_t *steps,
                       size_t n_steps, const an_metrics_opts_t *opts, an_summary_t *out);

/* Step records folded one at a time (the step metrics above need only these sums), so a run of
 * any length can be summarised without keeping its steps. Plain data: copy, zero-free. */
typedef struct an_step_accum {
    int64_t n;                     /* steps added */
    int64_t kv_blocks_per_replica; /* from init; 0 = unknown (kv_util NaN) */
    int max_replica;               /* -1 before the first step */
    double busy, util, util_peak, used, reserved, naive, seqs, toks, pad; /* time-weighted / plain sums */
} an_step_accum_t;

/* Empty accumulator; kv_blocks_per_replica as an_metrics_opts_t's. Cannot fail. */
void an_step_accum_init(an_step_accum_t *a, int64_t kv_blocks_per_replica);
/* Folds one step. Cannot fail. */
void an_step_accum_add(an_step_accum_t *a, const an_step_rec_t *st);
/* As an_metrics_compute, with the steps already folded (steps NULL: none; its
 * kv_blocks_per_replica is used, opts->kv_blocks_per_replica ignored). Same result, bit for bit,
 * as an_metrics_compute on the same steps in the same order. */
int an_metrics_compute_accum(const an_request_rec_t *reqs, size_t n_reqs, const an_step_accum_t *steps,
                             const an_metrics_opts_t *opts, an_summary_t *out);

/* The p-th percentile (0 <= p <= 100) of n ascending values by the method above; NaN when n is
 * 0. Cannot fail. */
double an_percentile_sorted(const double *sorted, size_t n, double p);

#endif
