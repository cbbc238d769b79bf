/* report.h — run reports and regression verdicts: gnuplot charts (PNG + SVG) and a Markdown or
 * HTML page for one recorded run, optionally compared with a baseline run.
 *
 * Charts (written when their data exists; a note in the page says why one is missing):
 *   cdf_ttft, cdf_tpot, cdf_e2e   latency CDFs of the run (and the baseline)
 *   kv_time, batch_time           used KV blocks and sequences per step over time (needs step rows)
 *   vs_rate                       throughput and p99 latency against offered request rate, over the
 *                                 runs of the same workload file, model, hardware and strategy
 *                                 (when at least two rates were recorded)
 *   strategies                    p99 TTFT against throughput, one series per strategy, over the
 *                                 runs of the same workload hash, model and hardware
 * Verdict (with a baseline): throughput (req/s, output tok/s) must not fall, and p99 TTFT, TPOT,
 * E2E must not rise, by more than the threshold (relative). A metric NaN on either side is
 * reported and not judged.
 */
#ifndef SLUICE_AN_REPORT_H
#define SLUICE_AN_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/metrics.h"
#include "analysis/store.h"

enum { AN_VERDICT_ROWS = 5 };

typedef struct an_verdict_row {
    const char *metric;     /* summary field name */
    bool higher_is_better;
    double base, cur;
    double delta;           /* (cur - base) / base; NaN when not comparable */
    bool regressed;
} an_verdict_row_t;

typedef struct an_verdict {
    an_verdict_row_t row[AN_VERDICT_ROWS];
    int n_rows;
    int n_regressed;
    double threshold;
} an_verdict_t;

/* Compares cur with base at threshold (0.05 = 5%). Pure; cannot fail. */
void an_report_compare(const an_summary_t *base, const an_summary_t *cur, double threshold, an_verdict_t *out);

typedef enum an_report_format { AN_REPORT_MD = 0, AN_REPORT_HTML } an_report_format_t;

typedef struct an_report_opts {
    int64_t run_id;         /* the run to report (> 0) */
    int64_t baseline_id;    /* 0: no baseline */
    an_report_format_t format;
    const char *dir;        /* output folder, created if absent */
    double threshold;       /* default 0.05 */
    bool charts;            /* false: the page only (gnuplot missing or not wanted) */
} an_report_opts_t;

typedef struct an_report_result {
    char page[4096];        /* path of the page written */
    int n_charts;           /* charts written */
    bool has_verdict;
    an_verdict_t verdict;
} an_report_result_t;

/* Writes the report. SL_ENOTFOUND for an unknown run or baseline id (nothing written), SL_EINVAL
 * (run still running / failed: no summary), SL_EIO (folder or file), SL_EDB, SL_ENOMEM; err says
 * which. A chart that gnuplot fails on is an error (SL_EIO). */
int an_report_write(an_store_t *st, const an_report_opts_t *o, an_report_result_t *res, char *err, size_t errlen);

#endif
