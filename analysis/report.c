/* report.c — run reports: charts through chart.c, a Markdown / HTML page, regression verdicts. */
#include "analysis/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis/chart.h"
#include "sched/status.h"

#define ERR(...) snprintf(err, errlen, __VA_ARGS__)

/* ---- verdict -------------------------------------------------------------------------------- */

void an_report_compare(const an_summary_t *base, const an_summary_t *cur, double threshold, an_verdict_t *out)
{
    static const struct { const char *name; bool higher; } m[AN_VERDICT_ROWS] = {
        {"request_throughput", true}, {"output_tps", true}, {"ttft_p99", false}, {"tpot_p99", false},
        {"e2e_p99", false}};
    memset(out, 0, sizeof *out);
    out->threshold = threshold;
    for (int i = 0; i < AN_VERDICT_ROWS; i++) {
        const an_summary_field_t *f = an_summary_field_find(m[i].name);
        an_verdict_row_t *r = &out->row[out->n_rows++];
        r->metric = m[i].name, r->higher_is_better = m[i].higher;
        r->base = *(const double *)((const char *)base + f->offset);
        r->cur = *(const double *)((const char *)cur + f->offset);
        r->delta = isfinite(r->base) && isfinite(r->cur) && r->base > 0 ? (r->cur - r->base) / r->base : NAN;
        r->regressed = !isnan(r->delta) && (m[i].higher ? r->delta < -threshold : r->delta > threshold);
        out->n_regressed += r->regressed;
    }
}

/* ---- data for charts ------------------------------------------------------------------------ */

typedef struct run_data {
    an_run_t run;
    an_request_rec_t *req;
    size_t n_req;
    an_step_rec_t *step;
    size_t n_step;
} run_data_t;

static void run_data_free(run_data_t *d)
{
    an_run_clear(&d->run);
    sl_free(d->req);
    sl_free(d->step);
    memset(d, 0, sizeof *d);
}

static int run_data_load(an_store_t *st, int64_t id, bool steps, run_data_t *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    int rc = an_run_get(st, id, &d->run);
    if (rc == SL_ENOTFOUND) {
        ERR("no run %lld in the store (sluice runs lists them)", (long long)id);
        return rc;
    }
    if (rc == SL_OK && !d->run.has_summary) {
        ERR("run %lld is %s: it has no summary to report", (long long)id, d->run.status);
        rc = SL_EINVAL;
    }
    if (rc == SL_OK)
        rc = an_run_requests(st, id, &d->req, &d->n_req);
    if (rc == SL_OK && steps)
        rc = an_run_steps(st, id, &d->step, &d->n_step);
    if (rc != SL_OK && !err[0])
        ERR("run %lld: %s", (long long)id, rc == SL_ENOMEM ? "out of memory" : an_store_errmsg(st));
    if (rc != SL_OK)
        run_data_free(d);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorted latency values of completed requests: 0 ttft, 1 tpot, 2 e2e. *out sl_malloc'd. */
static size_t latencies(const run_data_t *d, int which, double **out)
{
    double *v = sl_malloc((d->n_req ? d->n_req : 1) * sizeof *v);
    size_t n = 0;
    if (!v) {
        *out = NULL;
        return 0;
    }
    for (size_t i = 0; i < d->n_req; i++) {
        const an_request_rec_t *r = &d->req[i];
        if (r->finished < 0 || r->finish_reason == 4 || r->first_token < 0)
            continue;
        if (which == 0)
            v[n++] = r->first_token - r->arrival;
        else if (which == 1 && r->output_len >= 2)
            v[n++] = (r->finished - r->first_token) / (r->output_len - 1);
        else if (which == 2)
            v[n++] = r->finished - r->arrival;
    }
    qsort(v, n, sizeof *v, cmp_double);
    *out = v;
    return n;
}

static char *run_label(const an_run_t *r, char *buf, size_t len)
{
    snprintf(buf, len, "run %lld (%s, %s)", (long long)r->id, r->info.strategy ? r->info.strategy : "-", r->info.mode);
    return buf;
}

/* ---- charts --------------------------------------------------------------------------------- */

static int chart_cdfs(const run_data_t *runs, int n_runs, const char *dir, int *n_charts, char *err, size_t errlen)
{
    static const char *const stem[3] = {"cdf_ttft", "cdf_tpot", "cdf_e2e"};
    static const char *const title[3] = {"TTFT CDF", "TPOT CDF", "E2E latency CDF"};
    int rc = SL_OK;
    for (int w = 0; w < 3 && rc == SL_OK; w++) {
        an_series_t s[2];
        double *x[2] = {NULL, NULL}, *y[2] = {NULL, NULL};
        char names[2][96];
        for (int k = 0; k < n_runs; k++) {
            size_t n = latencies(&runs[k], w, &x[k]);
            y[k] = sl_malloc((n ? n : 1) * sizeof *y[k]);
            if (!x[k] || !y[k]) {
                rc = SL_ENOMEM;
                ERR("out of memory");
                n = 0;
            }
            for (size_t i = 0; i < n; i++)
                y[k][i] = (double)(i + 1) / (double)n;
            s[k] = (an_series_t){run_label(&runs[k].run, names[k], sizeof names[k]), x[k], y[k], n};
        }
        an_chart_t c = {title[w], "seconds", "fraction of requests", true, false, AN_CHART_STEPS, s, n_runs};
        if (rc == SL_OK && (rc = an_chart_write(&c, dir, stem[w], err, errlen)) == SL_OK)
            (*n_charts)++;
        for (int k = 0; k < n_runs; k++)
            sl_free(x[k]), sl_free(y[k]);
    }
    return rc;
}

/* KV blocks and batch size over time, at most ~2000 points per series (max over each window). */
static int chart_timeline(const run_data_t *d, const char *dir, int *n_charts, char *err, size_t errlen)
{
    size_t n = d->n_step, stride = n / 2000 + 1, m = 0;
    double *t = sl_malloc((n / stride + 1) * sizeof *t), *kv = sl_malloc((n / stride + 1) * sizeof *kv),
           *bs = sl_malloc((n / stride + 1) * sizeof *bs);
    int rc = SL_OK;
    if (!t || !kv || !bs) {
        ERR("out of memory");
        rc = SL_ENOMEM;
    }
    for (size_t i = 0; rc == SL_OK && i < n; i += stride, m++) {
        t[m] = d->step[i].t_start, kv[m] = 0, bs[m] = 0;
        for (size_t j = i; j < i + stride && j < n; j++) {
            kv[m] = fmax(kv[m], d->step[j].kv_used_blocks);
            bs[m] = fmax(bs[m], d->step[j].n_seqs);
        }
    }
    an_series_t s1 = {"used KV blocks (replica's steps)", t, kv, m}, s2 = {"sequences per step", t, bs, m};
    an_chart_t c1 = {"KV usage over time", "seconds", "blocks", false, false, AN_CHART_LINES, &s1, 1};
    an_chart_t c2 = {"Batch size over time", "seconds", "sequences", false, false, AN_CHART_LINES, &s2, 1};
    if (rc == SL_OK && (rc = an_chart_write(&c1, dir, "kv_time", err, errlen)) == SL_OK)
        (*n_charts)++;
    if (rc == SL_OK && (rc = an_chart_write(&c2, dir, "batch_time", err, errlen)) == SL_OK)
        (*n_charts)++;
    sl_free(t), sl_free(kv), sl_free(bs);
    return rc;
}

static bool same_str(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

enum { MAX_RELATED = 64 };

/* Offered rate of a run: (requests - 1) / arrival span, from its request rows. */
static double offered_rate(an_store_t *st, int64_t id)
{
    an_request_rec_t *r = NULL;
    size_t n = 0;
    double lo = INFINITY, hi = -INFINITY;
    if (an_run_requests(st, id, &r, &n) != SL_OK)
        return NAN;
    for (size_t i = 0; i < n; i++)
        lo = fmin(lo, r[i].arrival), hi = fmax(hi, r[i].arrival);
    sl_free(r);
    return n > 1 && hi > lo ? (double)(n - 1) / (hi - lo) : NAN;
}

/* Throughput and p99 latencies against offered rate over the related runs; *made 0 when fewer
 * than two rates exist. */
static int chart_vs_rate(an_store_t *st, const an_run_t *me, an_run_t *all, size_t n_all, const char *dir,
                         int *made, char *err, size_t errlen)
{
    double pts[MAX_RELATED][5]; /* rate, req/s, ttft p99, tpot p99, e2e p99 */
    int n = 0;
    *made = 0;
    for (size_t i = 0; i < n_all && n < MAX_RELATED; i++) {
        const an_run_t *r = &all[i];
        if (!r->has_summary || !same_str(r->info.workload_name, me->info.workload_name) ||
            !same_str(r->info.model, me->info.model) || !same_str(r->info.hardware, me->info.hardware) ||
            !same_str(r->info.strategy, me->info.strategy) || strcmp(r->info.mode, me->info.mode))
            continue;
        double rate = offered_rate(st, r->id);
        if (isnan(rate))
            continue;
        pts[n][0] = rate, pts[n][1] = r->summary.request_throughput, pts[n][2] = r->summary.ttft_p99;
        pts[n][3] = r->summary.tpot_p99, pts[n][4] = r->summary.e2e_p99;
        n++;
    }
    qsort(pts, (size_t)n, sizeof pts[0], cmp_double); /* by rate, the first column */
    int distinct = n > 0;
    for (int i = 1; i < n; i++)
        distinct += fabs(pts[i][0] - pts[i - 1][0]) > 1e-9 * pts[i][0];
    if (distinct < 2)
        return SL_OK;
    double x[MAX_RELATED], y[4][MAX_RELATED];
    for (int i = 0; i < n; i++) {
        x[i] = pts[i][0];
        for (int k = 0; k < 4; k++)
            y[k][i] = pts[i][k + 1];
    }
    an_series_t thr = {"completed req/s", x, y[0], (size_t)n};
    an_series_t lat[3] = {{"TTFT p99", x, y[1], (size_t)n}, {"TPOT p99", x, y[2], (size_t)n},
                          {"E2E p99", x, y[3], (size_t)n}};
    an_chart_t c1 = {"Throughput against offered load", "offered req/s", "completed req/s", false, false,
                     AN_CHART_LINES, &thr, 1};
    an_chart_t c2 = {"p99 latency against offered load", "offered req/s", "seconds", false, true, AN_CHART_LINES,
                     lat, 3};
    int rc = an_chart_write(&c1, dir, "throughput_vs_rate", err, errlen);
    if (rc == SL_OK)
        rc = an_chart_write(&c2, dir, "latency_vs_rate", err, errlen);
    *made = rc == SL_OK ? 2 : 0;
    return rc;
}

/* p99 TTFT against throughput per strategy over runs of the same workload hash, model, hardware. */
static int chart_strategies(const an_run_t *me, an_run_t *all, size_t n_all, const char *dir, int *made, char *err,
                            size_t errlen)
{
    static const char *const names[4] = {"naive", "bucketed", "memory_aware", "continuous"};
    double x[4][MAX_RELATED], y[4][MAX_RELATED];
    size_t cnt[4] = {0};
    int kinds = 0;
    *made = 0;
    for (size_t i = 0; i < n_all; i++) {
        const an_run_t *r = &all[i];
        if (!r->has_summary || r->info.workload_hash != me->info.workload_hash ||
            !same_str(r->info.model, me->info.model) || !same_str(r->info.hardware, me->info.hardware))
            continue;
        for (int k = 0; k < 4; k++)
            if (same_str(r->info.strategy, names[k]) && cnt[k] < MAX_RELATED) {
                kinds += cnt[k] == 0;
                x[k][cnt[k]] = r->summary.request_throughput, y[k][cnt[k]] = r->summary.ttft_p99;
                cnt[k]++;
            }
    }
    if (kinds < 2)
        return SL_OK;
    an_series_t s[4];
    int ns = 0;
    for (int k = 0; k < 4; k++)
        if (cnt[k])
            s[ns++] = (an_series_t){names[k], x[k], y[k], cnt[k]};
    an_chart_t c = {"Strategies: p99 TTFT against throughput", "completed req/s", "TTFT p99 (s)", false, true,
                    AN_CHART_POINTS, s, ns};
    int rc = an_chart_write(&c, dir, "strategies", err, errlen);
    *made = rc == SL_OK;
    return rc;
}

/* ---- page ----------------------------------------------------------------------------------- */

typedef struct page {
    FILE *f;
    bool html;
} page_t;

static void p_head(page_t *p, int level, const char *text)
{
    if (p->html)
        fprintf(p->f, "<h%d>%s</h%d>\n", level, text, level);
    else
        fprintf(p->f, "\n%.*s %s\n\n", level, "####", text);
}

static void p_row(page_t *p, bool header, int n, const char *const *cells)
{
    if (p->html) {
        fprintf(p->f, "<tr>");
        for (int i = 0; i < n; i++)
            fprintf(p->f, header ? "<th>%s</th>" : "<td>%s</td>", cells[i]);
        fprintf(p->f, "</tr>\n");
        return;
    }
    for (int i = 0; i < n; i++)
        fprintf(p->f, "| %s ", cells[i]);
    fprintf(p->f, "|\n");
    if (header) {
        for (int i = 0; i < n; i++)
            fprintf(p->f, "| --- ");
        fprintf(p->f, "|\n");
    }
}

static void p_table(page_t *p, bool open)
{
    if (p->html)
        fprintf(p->f, open ? "<table border=\"1\" cellpadding=\"4\">\n" : "</table>\n");
}

static void p_para(page_t *p, const char *text)
{
    fprintf(p->f, p->html ? "<p>%s</p>\n" : "%s\n\n", text);
}

static void p_image(page_t *p, const char *stem, const char *alt)
{
    if (p->html)
        fprintf(p->f, "<p><img src=\"%s.svg\" alt=\"%s\"></p>\n", stem, alt);
    else
        fprintf(p->f, "![%s](%s.png) ([SVG](%s.svg))\n\n", alt, stem, stem);
}

static void fmt(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.4g", v);
}

static void summary_table(page_t *p, const run_data_t *runs, int n_runs)
{
    static const char *const keys[] = {"n_requests", "n_completed", "duration", "request_throughput", "output_tps",
                                       "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p99", "queue_p99",
                                       "goodput", "slo_met", "preemptions", "kv_util_mean", "padding_frac",
                                       "batch_size_mean", "busy_frac", "mfu"};
    char lab[2][96], val[3][32];
    const char *hdr[3] = {"metric", run_label(&runs[0].run, lab[0], sizeof lab[0]),
                          n_runs > 1 ? run_label(&runs[1].run, lab[1], sizeof lab[1]) : ""};
    p_table(p, true);
    p_row(p, true, 1 + n_runs, hdr);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const an_summary_field_t *f = an_summary_field_find(keys[i]);
        const char *cells[3] = {keys[i], val[0], val[1]};
        for (int k = 0; k < n_runs; k++)
            fmt(val[k], sizeof val[k], *(const double *)((const char *)&runs[k].run.summary + f->offset));
        p_row(p, false, 1 + n_runs, cells);
    }
    p_table(p, false);
}

static void verdict_table(page_t *p, const an_verdict_t *v)
{
    char b[32], c[32], d[32], thr[64];
    const char *hdr[5] = {"metric", "baseline", "run", "delta", "verdict"};
    snprintf(thr, sizeof thr, "Threshold %.1f%%: %d regression(s).", 100 * v->threshold, v->n_regressed);
    p_para(p, thr);
    p_table(p, true);
    p_row(p, true, 5, hdr);
    for (int i = 0; i < v->n_rows; i++) {
        const an_verdict_row_t *r = &v->row[i];
        fmt(b, sizeof b, r->base), fmt(c, sizeof c, r->cur);
        if (isnan(r->delta))
            snprintf(d, sizeof d, "-");
        else
            snprintf(d, sizeof d, "%+.1f%%", 100 * r->delta);
        const char *cells[5] = {r->metric, b, c, d, isnan(r->delta) ? "not compared" : r->regressed ? "REGRESSED" : "ok"};
        p_row(p, false, 5, cells);
    }
    p_table(p, false);
}

static int make_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        ERR("%s: cannot create the folder: %s", dir, strerror(errno));
        return SL_EIO;
    }
    return SL_OK;
}

int an_report_write(an_store_t *st, const an_report_opts_t *o, an_report_result_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    err[0] = '\0';
    run_data_t runs[2];
    memset(runs, 0, sizeof runs);
    int n_runs = 1, rc = run_data_load(st, o->run_id, o->charts, &runs[0], err, errlen);
    if (rc == SL_OK && o->baseline_id > 0) {
        rc = run_data_load(st, o->baseline_id, false, &runs[1], err, errlen);
        n_runs = 2;
    }
    an_run_t *all = NULL;
    size_t n_all = 0;
    if (rc == SL_OK && (rc = an_run_list(st, 0, &all, &n_all)) != SL_OK)
        ERR("%s", an_store_errmsg(st));
    if (rc == SL_OK)
        rc = make_dir(o->dir, err, errlen);
    int n_vs = 0, n_strat = 0;
    if (rc == SL_OK && o->charts) {
        rc = chart_cdfs(runs, n_runs, o->dir, &res->n_charts, err, errlen);
        if (rc == SL_OK && runs[0].n_step)
            rc = chart_timeline(&runs[0], o->dir, &res->n_charts, err, errlen);
        if (rc == SL_OK)
            rc = chart_vs_rate(st, &runs[0].run, all, n_all, o->dir, &n_vs, err, errlen);
        if (rc == SL_OK)
            rc = chart_strategies(&runs[0].run, all, n_all, o->dir, &n_strat, err, errlen);
        res->n_charts += n_vs + n_strat;
    }
    if (rc == SL_OK && n_runs == 2) {
        res->has_verdict = true;
        an_report_compare(&runs[1].run.summary, &runs[0].run.summary, o->threshold, &res->verdict);
    }
    page_t p = {NULL, o->format == AN_REPORT_HTML};
    if (rc == SL_OK) {
        snprintf(res->page, sizeof res->page, "%s/report.%s", o->dir, p.html ? "html" : "md");
        if (!(p.f = fopen(res->page, "w"))) {
            ERR("%s: cannot write: %s", res->page, strerror(errno));
            rc = SL_EIO;
        }
    }
    if (rc == SL_OK) {
        char line[1400], lab[96];
        const an_run_t *r = &runs[0].run;
        snprintf(line, sizeof line, "sluice report: %s", run_label(r, lab, sizeof lab));
        if (p.html)
            fprintf(p.f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head><body>\n", line);
        p_head(&p, 1, line);
        snprintf(line, sizeof line, "Model %s on %s, workload %s (hash %016llx), recorded %s, status %s.",
                 r->info.model ? r->info.model : "-", r->info.hardware ? r->info.hardware : "-",
                 r->info.workload_name ? r->info.workload_name : "-", (unsigned long long)r->info.workload_hash,
                 r->created_at, r->status);
        p_para(&p, line);
        if (res->has_verdict) {
            p_head(&p, 2, "Regression verdict against the baseline");
            verdict_table(&p, &res->verdict);
        }
        p_head(&p, 2, "Summary");
        summary_table(&p, runs, n_runs);
        if (o->charts) {
            p_head(&p, 2, "Latency distributions");
            p_image(&p, "cdf_ttft", "TTFT CDF");
            p_image(&p, "cdf_tpot", "TPOT CDF");
            p_image(&p, "cdf_e2e", "E2E CDF");
            p_head(&p, 2, "KV usage and batch size over time");
            if (runs[0].n_step) {
                p_image(&p, "kv_time", "KV usage over time");
                p_image(&p, "batch_time", "batch size over time");
            } else {
                p_para(&p, "No step rows were recorded for this run (sluice tune records them with --record-steps).");
            }
            p_head(&p, 2, "Throughput and latency against request rate");
            if (n_vs) {
                p_image(&p, "throughput_vs_rate", "throughput against rate");
                p_image(&p, "latency_vs_rate", "latency against rate");
            } else {
                p_para(&p, "Only one request rate is recorded for this workload, model, GPU and strategy "
                           "(sluice sim --rate-scale X records others).");
            }
            p_head(&p, 2, "Strategy comparison");
            if (n_strat)
                p_image(&p, "strategies", "strategy comparison");
            else
                p_para(&p, "Only one strategy is recorded for this workload, model and GPU (sluice tune records several).");
        } else {
            p_para(&p, "Charts were not drawn (gnuplot unavailable or --no-charts).");
        }
        if (p.html)
            fprintf(p.f, "</body></html>\n");
        if (fclose(p.f) != 0) {
            ERR("%s: cannot write", res->page);
            rc = SL_EIO;
        }
    }
    an_run_list_free(all, n_all);
    for (int k = 0; k < 2; k++)
        run_data_free(&runs[k]);
    return rc;
}
