/* recommend.h — batching recommendations from recorded runs: which strategy and settings served a
 * workload best on a model and GPU under an SLO, why, and on what evidence.
 *
 * Reads the run store (never memory): for every finished run matching the query, the requests are
 * re-scored under the query's SLO (an_metrics_compute), its scheduler settings are read back from
 * the run's config JSON, and the share of steps that preempt comes from its step rows. Real runs
 * (mode 'real', from `sluice bench`) are preferred: when any real run matches, only real runs are
 * ranked and the answer's evidence says "real"; otherwise simulated ones ("sim"). Ranking: SLO
 * met first, then goodput, throughput, lower p99 TTFT (the tuner's order, sim/tune.h). Reasons are rules over the metrics (an_reco_reasons).
 *
 * Recommendations are stored as JSON in the store's recommendations table (an_reco_save):
 *   {"strategy": "continuous", "settings": {"strategy": "continuous", "max_num_seqs": "128", ...},
 *    "workload_hash": "…", "model": "…", "hardware": "…", "slo": "ttft_p99=1s,…", "evidence": "sim",
 *    "run_id": 12, "goodput": 3.1, "slo_met": true, "baseline_run_id": 3, "baseline_goodput": 0.4,
 *    "reasons": ["…"]}
 * and an_reco_load_settings() turns one back into a sched_config_t for `sluice serve`.
 */
#ifndef SLUICE_AN_RECOMMEND_H
#define SLUICE_AN_RECOMMEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "sched/sched.h"

/* One recorded run as a recommendation candidate. */
typedef struct an_reco_candidate {
    int64_t run_id;
    char mode[8];              /* "sim" | "real" */
    sched_config_t cfg;        /* defaults overridden by the run's recorded knobs */
    an_summary_t sum;          /* re-scored under the query's SLO */
    double preempt_step_frac;  /* steps with a preemption / steps (NaN without step rows) */
} an_reco_candidate_t;

/* Which runs to consider. */
typedef struct an_reco_query {
    uint64_t workload_hash;    /* 0: the workload of the latest finished run */
    const char *model;         /* NULL: any */
    const char *hardware;      /* NULL: any */
    int64_t min_run_id;        /* only runs with id >= this (0: all) */
    an_slo_t slo;              /* goodput and "met" are judged under it */
} an_reco_query_t;

enum { AN_RECO_MAX_REASONS = 8, AN_RECO_REASON_LEN = 200, AN_RECO_MAX_CLOSEST = 3 };

typedef struct an_reco {
    an_reco_candidate_t best;  /* the pick (check slo_met: it may be only the closest) */
    bool slo_met;              /* best meets every SLO term */
    bool has_baseline;         /* a NAIVE run with default knobs is among the runs */
    an_reco_candidate_t baseline;
    const char *evidence;      /* "real" or "sim" (static) */
    uint64_t workload_hash;
    int n_runs;                /* runs ranked */
    int n_unreadable;          /* matching runs left out: their recorded configuration does not read back */
    int64_t *run_ids;          /* their ids (sl_malloc'd; an_reco_clear frees) */
    an_reco_candidate_t closest[AN_RECO_MAX_CLOSEST]; /* when no run meets the SLO: the nearest */
    int n_closest;
    char reasons[AN_RECO_MAX_REASONS][AN_RECO_REASON_LEN];
    int n_reasons;
} an_reco_t;

/* Ranks the matching runs. A run whose recorded configuration does not read back (not a JSON
 * object, or a knob out of range) is left out and counted, so a recommendation never names
 * settings a run did not use. SL_ENOTFOUND when no finished run matches (err says what was looked
 * for), SL_EFORMAT when none of them has a readable configuration, SL_EDB, SL_ENOMEM; *out zeroed
 * on error. */
int an_recommend(an_store_t *st, const an_reco_query_t *q, an_reco_t *out, char *err, size_t errlen);
void an_reco_clear(an_reco_t *r);

/* The reasons for a candidate's metrics under slo (rules in recommend.c), at most max lines into
 * out; returns how many. Pure: cannot fail. */
int an_reco_reasons(const an_reco_candidate_t *c, const an_slo_t *slo, char (*out)[AN_RECO_REASON_LEN], int max);

/* The recommendation as JSON (format above), sl_malloc'd into *json. SL_ENOMEM only. */
int an_reco_to_json(const an_reco_t *r, const char *model, const char *hardware, const an_slo_t *slo, char **json);

/* Applies a run's config JSON (knob names to values; other keys ignored) onto *cfg. SL_EFORMAT
 * when it is not a JSON object, SL_EINVAL for a bad knob value (err names it); *cfg unchanged on
 * error. */
int an_reco_apply_config_json(const char *json, sched_config_t *cfg, char *err, size_t errlen);

/* For `sluice serve --settings-from DB [--recommendation ID]`: loads recommendation id (0 = the
 * latest) from the store at db_path and applies its settings onto *cfg (start from the server's
 * own config so knobs the recommendation does not name keep their values). Does not write to the
 * store. SL_ENOTFOUND (no such recommendation / no file), SL_EDB (not a sluice store), SL_EFORMAT
 * (unreadable recommendation), SL_EINVAL (a setting out of range); err says which; *cfg unchanged
 * on error. */
int an_reco_load_settings(const char *db_path, int64_t id, sched_config_t *cfg, char *err, size_t errlen);

#endif
