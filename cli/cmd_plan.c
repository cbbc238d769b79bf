/* cmd_plan.c — `sluice plan`: for each GPU kind and TP degree, the fewest replicas that meet an
 * SLO at a request rate (per-replica capacity by simulation, then a replica search), the cost per
 * hour from the price table, a chart of p99 latency against load and a Markdown report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/chart.h"
#include "analysis/prices.h"
#include "cli/cli.h"
#include "cli/sched_opts.h"
#include "cli/sim_run.h"
#include "sim/plan.h"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: sluice plan --rate R --slo ttft_p99=1s,tpot_p99=100ms [--model NAME]\n"
        "                   [--gpus a100-80gb,h100-sxm] [--tp 1,2,4] [--trace FILE | --preset NAME]\n"
        "                   [--limit N] [--prices FILE] [-o DIR] [--max-replicas N] [--calib-dir DIR|none]\n"
        "                   [scheduler knobs] [--spec-acceptance A [--spec-propose P] (with --num-speculative-tokens)]\n"
        "defaults: --model llama2-7b, --gpus a100-80gb,h100-sxm, --tp 1, --limit 1000 requests of the\n"
        "          workload as in sluice sim, --prices: the built-in table (docs/prices.csv), -o plan,\n"
        "          --max-replicas 256, strategy continuous. Writes DIR/plan.md and DIR/latency_vs_load.{png,svg}.\n");
}

typedef struct plan_ctx {
    sim_config_t cfg;      /* model, hw, tp, scheduler of the option being planned */
    const sim_calib_t *calib;
    const wl_trace_t *tr;  /* the workload at its own rate */
    double base_rate;
    an_slo_t slo;
    uint64_t too_long;     /* requests over the model's context in the last evaluation */
} plan_ctx_t;

/* tr at `rate` req/s into a fresh trace. */
static wl_trace_t *trace_at(const wl_trace_t *tr, double factor)
{
    wl_trace_t *t = wl_trace_create();
    if (!t || wl_trace_reserve(t, tr->n) != SL_OK) {
        wl_trace_free(t);
        return NULL;
    }
    for (size_t i = 0; i < tr->n; i++) {
        wl_request_t r;
        wl_trace_get(tr, i, &r);
        wl_trace_append(t, &r);
    }
    if (wl_trace_rate_scale(t, factor) != SL_OK) {
        wl_trace_free(t);
        return NULL;
    }
    return t;
}

static int plan_eval(void *ctx, int replicas, double rate, sim_plan_point_t *out, char *err, int errlen)
{
    plan_ctx_t *c = ctx;
    sim_config_t cfg = c->cfg;
    cfg.replicas = replicas;
    wl_trace_t *t = trace_at(c->tr, rate / c->base_rate);
    if (!t) {
        snprintf(err, (size_t)errlen, "out of memory");
        return SL_ENOMEM;
    }
    sim_t *sim = sim_create(&cfg, c->calib, err, errlen);
    int rc = sim ? SL_OK : SL_EINVAL;
    cli_collect_t col;
    cli_collect_init(&col, false, false);
    sim_sink_t sink = cli_collect_sink(&col);
    sim_totals_t tot;
    an_summary_t sum;
    if (rc == SL_OK)
        rc = sim_run(sim, t, &sink, &tot, err, errlen);
    if (rc == SL_OK && (rc = cli_sim_summary(&col, &tot, &cfg, &c->slo, &sum)) == SL_OK) {
        /* Requests no replica could ever serve (over the model's context) do not make a plan
         * impossible; every other request must complete (a queue-full rejection is a miss). */
        out->slo_met = sum.slo_met == 1 && sum.n_completed + tot.too_long == sum.n_requests;
        c->too_long = tot.too_long;
        out->throughput = sum.request_throughput;
        out->ttft_p99 = sum.ttft_p99, out->tpot_p99 = sum.tpot_p99, out->e2e_p99 = sum.e2e_p99;
    }
    cli_collect_free(&col);
    sim_free(sim);
    wl_trace_free(t);
    return rc;
}

enum { MAX_OPTIONS = 16 };

typedef struct option {
    char gpu[32];
    int tp;
    double capacity;
    int replicas;           /* 0 = not found */
    sim_plan_point_t at;
    double usd_hour;        /* NaN when the table has no price */
    sim_plan_curve_t curve;
    char note[256];
} option_t;

static int split_list(const char *s, char out[][32], int max)
{
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
        snprintf(out[n++], 32, "%.31s", t);
    return n;
}

static int cmp_rate(const void *a, const void *b)
{
    double x = ((const sim_plan_point_t *)a)->rate, y = ((const sim_plan_point_t *)b)->rate;
    return x < y ? -1 : x > y;
}

static int write_outputs(const char *dir, option_t *opt, int n, double rate, const char *slo_text,
                         const char *workload, const char *model, const char *prices_origin, char *err, size_t errlen)
{
    if (mkdir(dir, 0777) != 0 && access(dir, W_OK) != 0) {
        snprintf(err, errlen, "%s: cannot create the folder", dir);
        return SL_EIO;
    }
    bool chart = an_chart_available();
    an_series_t s[MAX_OPTIONS];
    double x[MAX_OPTIONS][SIM_PLAN_MAX_POINTS], y[MAX_OPTIONS][SIM_PLAN_MAX_POINTS];
    char names[MAX_OPTIONS][sizeof opt[0].gpu + 32]; /* "<gpu> tp<int> (1 replica)" always fits */
    for (int i = 0; i < n; i++) {
        qsort(opt[i].curve.pt, (size_t)opt[i].curve.n, sizeof opt[i].curve.pt[0], cmp_rate);
        for (int k = 0; k < opt[i].curve.n; k++)
            x[i][k] = opt[i].curve.pt[k].rate, y[i][k] = opt[i].curve.pt[k].ttft_p99;
        snprintf(names[i], sizeof names[i], "%s tp%d (1 replica)", opt[i].gpu, opt[i].tp);
        s[i] = (an_series_t){names[i], x[i], y[i], (size_t)opt[i].curve.n};
    }
    an_chart_t c = {"p99 TTFT against load, one replica", "offered req/s", "TTFT p99 (s)", true, true,
                    AN_CHART_LINES, s, n};
    int rc = chart ? an_chart_write(&c, dir, "latency_vs_load", err, errlen) : SL_OK;
    if (rc != SL_OK)
        return rc;
    char path[4200];
    if (snprintf(path, sizeof path, "%s/plan.md", dir) >= (int)sizeof path) {
        snprintf(err, errlen, "-o: folder name too long (%zu characters)", strlen(dir));
        return SL_EINVAL;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%.900s: cannot write", path);
        return SL_EIO;
    }
    fprintf(f, "# sluice plan: %s at %.3g req/s under %s\n\nWorkload %s; prices from %s.\n\n", model, rate, slo_text,
            workload, prices_origin);
    fprintf(f, "| GPU | TP | capacity / replica (req/s) | replicas | GPUs | $/hour | TTFT p99 (s) | TPOT p99 (s) | note |\n"
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "| %s | %d | %.3g | %d | %d | %.2f | %.3g | %.3g | %s |\n", opt[i].gpu, opt[i].tp, opt[i].capacity,
                opt[i].replicas, opt[i].replicas * opt[i].tp, opt[i].replicas * opt[i].tp * opt[i].usd_hour,
                opt[i].at.ttft_p99, opt[i].at.tpot_p99, opt[i].note);
    if (chart)
        fprintf(f, "\n![p99 TTFT against load](latency_vs_load.png) ([SVG](latency_vs_load.svg))\n\nEach curve is "
                   "one replica's p99 TTFT at the rates the capacity search simulated; capacity is the highest rate "
                   "that met the SLO.\n");
    else
        fprintf(f, "\n(gnuplot not found: no chart.)\n");
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%.900s: cannot write", path);
        return SL_EIO;
    }
    return SL_OK;
}

int cmd_plan(int argc, char **argv)
{
    const char *cmd = argv[0], *model, *gpus = "a100-80gb,h100-sxm", *tps = "1", *slo_s = NULL,
               *prices_path = NULL, *dir = "plan", *calib_dir = SIM_CALIB_DEFAULT_DIR;
    cli_workload_t w = {.n = 1000, .rate_scale = 1};
    double rate = 0;
    int max_replicas = 256;
    bool spec_given = false; /* --spec-acceptance (as in sluice sim) */
    sim_config_t base;
    char err[1024];
    if (sim_config_default(&base) != SL_OK)
        return cli_fail(cmd, "built-in model llama2-7b missing from this build");
    base.router = SIM_ROUTE_LEAST_OUTSTANDING;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = sched_opts_parse_arg(&base.sched, argc, argv, &i, err, sizeof err);
        if (r < 0)
            return cli_fail(cmd, "%s", err);
        if (r == 1)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return cli_fail(cmd, "unknown option or missing value: '%s'", a);
        }
        i++;
        const char **s = !strcmp(a, "--gpus") ? &gpus : !strcmp(a, "--tp") ? &tps
                       : !strcmp(a, "--slo") ? &slo_s : !strcmp(a, "--prices") ? &prices_path
                       : !strcmp(a, "-o") ? &dir : !strcmp(a, "--trace") ? &w.trace
                       : !strcmp(a, "--preset") ? &w.preset : !strcmp(a, "--calib-dir") ? &calib_dir : NULL;
        if (s) {
            *s = v;
            continue;
        }
        const cli_num_opt_t nums[] = {
            {"--rate", NULL, 0, INFINITY, true, 'd', &rate},
            {"--limit", NULL, 10, 1e7, false, 'l', &w.n},
            {"--max-replicas", NULL, 1, 65536, false, 'i', &max_replicas},
            {"--spec-acceptance", NULL, 0, 1, false, 'd', &base.spec_acceptance},
            {"--spec-propose", NULL, 0, 1, false, 'd', &base.spec_propose},
        };
        const int rn = cli_num_opt(nums, sizeof nums / sizeof nums[0], a, v, err, sizeof err);
        if (rn < 0)
            return cli_fail(cmd, "%s", err);
        if (rn == 0) {
            usage(stderr);
            return cli_fail(cmd, "unknown option '%s'", a);
        }
        spec_given = spec_given || !strcmp(a, "--spec-acceptance");
    }
    if (!(rate > 0) || !slo_s)
        return cli_fail(cmd, "--rate R and --slo SLO are required");
    if (cli_sim_spec_check(&base, spec_given, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s", err);
    an_slo_t slo = {0};
    if (an_slo_parse(slo_s, &slo, err, sizeof err) != SL_OK || slo.n == 0)
        return cli_fail(cmd, "--slo: %s", slo.n ? err : "needs at least one term");
    an_prices_t prices;
    if (prices_path && an_prices_load(prices_path, &prices, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--prices: %s", err);
    if (!prices_path)
        an_prices_builtin(&prices);
    char gl[MAX_OPTIONS][32], tl[8][32];
    int ng = split_list(gpus, gl, MAX_OPTIONS), nt = split_list(tps, tl, 8);
    if (ng * nt > MAX_OPTIONS || ng == 0 || nt == 0)
        return cli_fail(cmd, "between 1 and %d GPU x TP options, got %d x %d", MAX_OPTIONS, ng, nt);
    base.model = base.sched.model; /* --model is the scheduler's model knob (sched_opts), as in sim */
    model = base.model.name;
    base.sched.max_sequence_length = base.model.max_context;
    option_t *opt = calloc((size_t)(ng * nt), sizeof *opt);
    if (!opt)
        return cli_fail(cmd, "out of memory");
    int n = 0;
    for (int g = 0; g < ng; g++)
        for (int t = 0; t < nt; t++, n++) {
            snprintf(opt[n].gpu, sizeof opt[n].gpu, "%.31s", gl[g]);
            char *end;
            long tp = strtol(tl[t], &end, 10);
            sim_hw_t hw;
            if (*end || tp < 1 || tp > 8 || (tp & (tp - 1))) {
                free(opt);
                return cli_fail(cmd, "--tp: expected 1, 2, 4 or 8, got '%s'", tl[t]);
            }
            if (sim_hw_resolve(gl[g], &hw, err, sizeof err) != SL_OK) {
                free(opt);
                return cli_fail(cmd, "--gpus: %s", err);
            }
            opt[n].tp = (int)tp;
            const an_price_t *p = an_prices_find(&prices, hw.name);
            opt[n].usd_hour = p ? p->usd_per_gpu_hour : NAN;
        }

    wl_trace_t *tr = wl_trace_create();
    char workload[1100];
    wl_trace_stats_t ts;
    if (!tr || cli_workload_load(&w, tr, workload, sizeof workload, err, sizeof err) != SL_OK ||
        wl_trace_stats(tr, &ts) != SL_OK || !(ts.rate > 0)) {
        wl_trace_free(tr);
        free(opt);
        return cli_fail(cmd, "%s", tr ? err : "out of memory");
    }
    char slo_text[256];
    an_slo_format(&slo, slo_text, sizeof slo_text);
    printf("sluice plan: %s at %.3g req/s under %s, workload %s (%zu requests)\n", model, rate, slo_text, workload,
           tr->n);
    printf("%-12s %3s %14s %9s %5s %9s %9s %9s\n", "gpu", "tp", "cap/replica", "replicas", "GPUs", "$/hour",
           "ttft_p99", "tpot_p99");
    int code = 0;
    double t0 = cli_wall_now();
    for (int i = 0; i < n && code == 0; i++) {
        plan_ctx_t c = {.cfg = base, .tr = tr, .base_rate = ts.rate, .slo = slo};
        sim_hw_resolve(opt[i].gpu, &c.cfg.hw, err, sizeof err);
        c.cfg.tp = opt[i].tp;
        sim_calib_t *calib;
        if ((code = cli_calib_load(cmd, calib_dir, &c.cfg.hw, &calib)))
            break;
        c.calib = calib;
        int rc = sim_plan_capacity(plan_eval, &c, rate / 4 > ts.rate ? ts.rate : rate / 4, 5, &opt[i].capacity,
                                   &opt[i].curve, err, sizeof err);
        if (rc == SL_OK && c.too_long && i == 0)
            printf("(%llu requests are longer than %s's context and are left out of every option)\n",
                   (unsigned long long)c.too_long, model);
        if (rc == SL_OK && opt[i].capacity <= 0) {
            snprintf(opt[i].note, sizeof opt[i].note, "one replica never meets the SLO");
        } else if (rc == SL_OK) {
            rc = sim_plan_replicas(plan_eval, &c, rate, opt[i].capacity, max_replicas, &opt[i].replicas, &opt[i].at,
                                   err, sizeof err);
            if (rc == SL_ENOTFOUND) {
                snprintf(opt[i].note, sizeof opt[i].note, "%.255s", err);
                opt[i].replicas = 0, rc = SL_OK;
            }
        }
        if (rc != SL_OK && opt[i].note[0] == '\0' && strstr(err, "needs")) { /* the model does not fit */
            snprintf(opt[i].note, sizeof opt[i].note, "%.255s", err);
            rc = SL_OK;
        }
        sim_calib_free(calib);
        if (rc != SL_OK)
            code = cli_fail(cmd, "%s tp %d: %s", opt[i].gpu, opt[i].tp, err);
        else
            printf("%-12s %3d %10.3g r/s %9d %5d %9.2f %9.3g %9.3g %s\n", opt[i].gpu, opt[i].tp, opt[i].capacity,
                   opt[i].replicas, opt[i].replicas * opt[i].tp, opt[i].replicas * opt[i].tp * opt[i].usd_hour,
                   opt[i].at.ttft_p99, opt[i].at.tpot_p99, opt[i].note);
    }
    if (code == 0) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (opt[i].replicas > 0 && isfinite(opt[i].usd_hour) &&
                (best < 0 || opt[i].replicas * opt[i].tp * opt[i].usd_hour <
                                 opt[best].replicas * opt[best].tp * opt[best].usd_hour))
                best = i;
        if (best >= 0)
            printf("cheapest: %d x %s (tp %d) = %d GPUs, $%.2f/hour\n", opt[best].replicas, opt[best].gpu,
                   opt[best].tp, opt[best].replicas * opt[best].tp,
                   opt[best].replicas * opt[best].tp * opt[best].usd_hour);
        else
            printf("no option meets %s at %.3g req/s within %d replicas\n", slo_text, rate, max_replicas);
        if (write_outputs(dir, opt, n, rate, slo_text, workload, model, prices_path ? prices_path : "the built-in table",
                          err, sizeof err) != SL_OK)
            code = cli_fail(cmd, "%s", err);
        else
            printf("wrote %s/plan.md (%.1f s)\n", dir, cli_wall_now() - t0);
        if (code == 0 && best < 0)
            code = 2;
    }
    wl_trace_free(tr);
    free(opt);
    return code;
}
