/* cmd_report.c — `sluice report RUN [--baseline RUN2]`: charts and a page for a recorded run, a
 * regression verdict against a baseline (exit 1 past the threshold); `--recommend` prints the
 * recommendation from the recorded runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/chart.h"
#include "analysis/recommend.h"
#include "analysis/report.h"
#include "cli/cli.h"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: sluice report RUN [--baseline RUN2] [--format md|html] [-o DIR] [--threshold 5%%]\n"
        "                     [--db FILE] [--no-charts]\n"
        "       sluice report --recommend --slo SLO [--db FILE]\n"
        "RUN: a run id (sluice runs), or 'latest'. Writes DIR/report.md|html with gnuplot charts (PNG and\n"
        "SVG; default DIR report-RUN). With --baseline, exit 1 when throughput falls or p99 TTFT, TPOT or\n"
        "E2E rises by more than the threshold.\n");
}

static bool parse_id(const char *s, int64_t *id)
{
    if (!strcmp(s, "latest")) {
        *id = 0;
        return true;
    }
    char *end;
    long long v = strtoll(s, &end, 10);
    *id = v;
    return end != s && !*end && v > 0;
}

int cmd_report(int argc, char **argv)
{
    const char *cmd = argv[0], *db = "sluice.db", *dir = NULL, *run = NULL, *base = NULL, *slo_s = NULL;
    an_report_opts_t o = {.format = AN_REPORT_MD, .threshold = 0.05, .charts = true};
    bool recommend = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-charts")) {
            o.charts = false;
        } else if (!strcmp(a, "--recommend")) {
            recommend = true;
        } else if (a[0] != '-') {
            if (run)
                return cli_fail(cmd, "one run at a time ('%s' and '%s')", run, a);
            run = a;
        } else if (!v) {
            usage(stderr);
            return cli_fail(cmd, "unknown option or missing value: '%s'", a);
        } else {
            i++;
            if (!strcmp(a, "--baseline"))
                base = v;
            else if (!strcmp(a, "--db"))
                db = v;
            else if (!strcmp(a, "-o"))
                dir = v;
            else if (!strcmp(a, "--slo"))
                slo_s = v;
            else if (!strcmp(a, "--format") && (!strcmp(v, "md") || !strcmp(v, "html")))
                o.format = !strcmp(v, "html") ? AN_REPORT_HTML : AN_REPORT_MD;
            else if (!strcmp(a, "--threshold")) {
                char *end;
                double t = strtod(v, &end);
                if (end == v || (*end && strcmp(end, "%")) || !(t >= 0 && t < 1000))
                    return cli_fail(cmd, "--threshold: expected a percentage like 5%% or 2.5, got '%s'", v);
                o.threshold = t / 100;
            } else {
                usage(stderr);
                return cli_fail(cmd, "%s %s: unknown option or bad value", a, v);
            }
        }
    }
    char err[1024];
    an_store_t *st;
    if (recommend) {
        an_reco_query_t q = {0};
        if (slo_s && an_slo_parse(slo_s, &q.slo, err, sizeof err) != SL_OK)
            return cli_fail(cmd, "--slo: %s", err);
        if (an_store_open_existing(db, &st, err, sizeof err) != SL_OK)
            return cli_fail(cmd, "%s", err);
        an_reco_t r;
        int rc = an_recommend(st, &q, &r, err, sizeof err);
        an_store_close(st);
        if (rc != SL_OK)
            return cli_fail(cmd, "%s: %s", db, err);
        printf("best recorded run for workload %016llx (%s evidence, %d runs): run %lld, %s, goodput %.3f req/s, "
               "SLO %s\n", (unsigned long long)r.workload_hash, r.evidence, r.n_runs, (long long)r.best.run_id,
               sched_strategy_name(r.best.cfg.strategy), r.best.sum.goodput, r.slo_met ? "met" : "NOT met");
        if (r.n_unreadable)
            printf("  (%d matching runs left out: their recorded configuration does not read back)\n", r.n_unreadable);
        for (int i = 0; i < r.n_reasons; i++)
            printf("  - %s\n", r.reasons[i]);
        rc = r.slo_met ? 0 : 2;
        an_reco_clear(&r);
        return rc;
    }
    if (!run) {
        usage(stderr);
        return cli_fail(cmd, "which run? (sluice runs lists them)");
    }
    if (!parse_id(run, &o.run_id) || (base && (!parse_id(base, &o.baseline_id) || o.baseline_id == 0)))
        return cli_fail(cmd, "run ids are positive integers (or 'latest' for RUN), got '%s'", base && o.run_id ? base : run);
    if (an_store_open_existing(db, &st, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s", err);
    if (o.run_id == 0) {
        an_run_t latest;
        if (an_run_get(st, 0, &latest) != SL_OK) {
            an_store_close(st);
            return cli_fail(cmd, "%s: no runs recorded yet", db);
        }
        o.run_id = latest.id;
        an_run_clear(&latest);
    }
    char dirbuf[64];
    if (!dir) {
        snprintf(dirbuf, sizeof dirbuf, "report-%lld", (long long)o.run_id);
        dir = dirbuf;
    }
    o.dir = dir;
    if (o.charts && !an_chart_available()) {
        fprintf(stderr, "sluice report: gnuplot not found; writing the page without charts\n");
        o.charts = false;
    }
    an_report_result_t res;
    int rc = an_report_write(st, &o, &res, err, sizeof err);
    an_store_close(st);
    if (rc != SL_OK)
        return cli_fail(cmd, "%s", err);
    printf("wrote %s (%d charts)\n", res.page, res.n_charts);
    if (!res.has_verdict)
        return 0;
    const an_verdict_t *v = &res.verdict;
    printf("%-20s %12s %12s %9s\n", "metric", "baseline", "run", "delta");
    for (int i = 0; i < v->n_rows; i++)
        printf("%-20s %12.5g %12.5g %+8.1f%% %s\n", v->row[i].metric, v->row[i].base, v->row[i].cur,
               100 * v->row[i].delta, v->row[i].regressed ? "REGRESSED" : isnan(v->row[i].delta) ? "not compared" : "ok");
    printf("verdict: %s (threshold %.1f%%)\n", v->n_regressed ? "REGRESSION" : "ok", 100 * v->threshold);
    return v->n_regressed ? 1 : 0;
}
