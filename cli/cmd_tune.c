/* cmd_tune.c — `sluice tune`: search batching strategies and knobs by simulation under an SLO,
 * record every run, print the ranked table beside the NAIVE baseline, store the recommendation.
 * `sluice tune --from-runs` prints the recommendation from runs already recorded. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/recommend.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "cli/sched_opts.h"
#include "cli/sim_run.h"
#include "sim/tune.h"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: sluice tune --slo ttft_p99=1s,tpot_p99=100ms [--trace FILE | --preset NAME [--rate R]]\n"
        "                   [--limit N] [--rate-scale X] [--model NAME] [--gpu NAME|FILE] [--replicas N]\n"
        "                   [--tp N] [--budget RUNS] [--jobs N] [--strategies naive,bucketed,...]\n"
        "                   [--db FILE] [--calib-dir DIR|none] [--seed S] [--record-steps] [--spec-acceptance A]\n"
        "                   [--spec-propose P]\n"
        "                   [scheduler knobs for the base config]\n"
        "       sluice tune --from-runs --slo SLO [--db FILE] [--model NAME] [--gpu NAME]\n"
        "defaults: --budget 50, --jobs 2, --model llama2-7b, --gpu a100-80gb, --db sluice.db, all strategies;\n"
        "          the workload as in sluice sim. Every run is recorded (requests and summary; step rows\n"
        "          too with --record-steps); the pick is stored as a recommendation\n"
        "          (sluice serve --settings-from DB).\n");
}

typedef struct opts {
    cli_workload_t w;
    const char *model, *gpu, *slo, *db, *calib_dir, *strategies; /* model: cfg.model's name */
    int budget, jobs, replicas, tp;
    bool from_runs, record_steps, spec_given; /* spec_given: --spec-acceptance (as in sluice sim) */
} opts_t;

/* ---- evaluation: one simulation per candidate, recorded under a lock ------------------------ */

typedef struct tune_ctx {
    sim_config_t base;
    const sim_calib_t *calib;
    const wl_trace_t *tr;
    an_slo_t slo;
    const char *workload, *calib_dir;
    uint64_t hash, seed;
    an_store_t *st;
    bool record_steps;  /* step rows too (large: up to ~10^5 per run) */
    pthread_mutex_t mu; /* serialises the store */
    int done;
    bool progress;      /* count runs on stderr (a terminal) */
} tune_ctx_t;

static int tune_eval(void *ctx, int worker, const sched_config_t *sc, sim_tune_score_t *out, char *err, int errlen)
{
    tune_ctx_t *c = ctx;
    sim_config_t cfg = c->base;
    cfg.sched = *sc;
    char knobs[256];
    sim_tune_knobs_text(sc, knobs, sizeof knobs);
    sim_t *sim = sim_create(&cfg, c->calib, err, errlen);
    if (!sim)
        return SL_EINVAL;
    cli_collect_t col;
    cli_collect_init(&col, c->record_steps, false); /* step metrics come from the folded steps */
    sim_sink_t sink = cli_collect_sink(&col);
    sim_totals_t tot;
    char serr[512];
    int rc = sim_run(sim, c->tr, &sink, &tot, serr, sizeof serr);
    an_summary_t sum;
    if (rc != SL_OK)
        snprintf(err, (size_t)errlen, "%s %s: simulation stopped: %s", sched_strategy_name(sc->strategy), knobs, serr);
    else if ((rc = cli_sim_summary(&col, &tot, &cfg, &c->slo, &sum)) != SL_OK)
        snprintf(err, (size_t)errlen, "out of memory computing a summary");
    if (rc == SL_OK) {
        cfg.sched.num_blocks = tot.num_blocks;
        pthread_mutex_lock(&c->mu);
        rc = cli_sim_record(c->st, &cfg, c->calib_dir, c->workload, c->hash, c->seed, &col, c->record_steps, &sum, &out->run_id);
        if (rc != SL_OK)
            snprintf(err, (size_t)errlen, "recording a run: %s", an_store_errmsg(c->st));
        c->done++;
        if (c->progress)
            fprintf(stderr, "\r  %d runs", c->done);
        pthread_mutex_unlock(&c->mu);
        out->goodput = sum.goodput, out->throughput = sum.request_throughput;
        out->ttft_p99 = sum.ttft_p99, out->tpot_p99 = sum.tpot_p99;
        out->slo_met = sum.slo_met == 1;
    }
    cli_collect_free(&col);
    sim_free(sim);
    return rc;
}

/* ---- output --------------------------------------------------------------------------------- */

static void print_row(int rank, const sim_tune_entry_t *e, double base_goodput)
{
    char knobs[256], ratio[32] = "-";
    sim_tune_knobs_text(&e->cfg, knobs, sizeof knobs);
    double x = base_goodput > 0 ? e->score.goodput / base_goodput : e->score.goodput > 0 ? INFINITY : NAN;
    if (x < 1e6) /* fits: at most 6 digits before the point */
        snprintf(ratio, sizeof ratio, "%.2fx", x);
    else if (x >= 1e6)
        snprintf(ratio, sizeof ratio, "%s", isinf(x) ? "inf" : ">1e6x");
    printf("%4d  %-12s %-46s %8.3f %8.3f %9.3f %9.4f  %-4s %7s  %-8s run %lld\n", rank,
           sched_strategy_name(e->cfg.strategy), knobs, e->score.goodput, e->score.throughput, e->score.ttft_p99,
           e->score.tpot_p99, e->score.slo_met ? "yes" : "no", ratio, e->phase, (long long)e->score.run_id);
}

static void print_reco(const an_reco_t *r, const char *slo_text)
{
    char knobs[256];
    sim_tune_knobs_text(&r->best.cfg, knobs, sizeof knobs);
    printf("recommendation (%s evidence, %d runs): %s %s — goodput %.3f req/s, SLO %s %s (run %lld)\n", r->evidence,
           r->n_runs, sched_strategy_name(r->best.cfg.strategy), knobs, r->best.sum.goodput, slo_text,
           r->slo_met ? "met" : "NOT met", (long long)r->best.run_id);
    if (r->n_unreadable)
        printf("  (%d matching runs left out: their recorded configuration does not read back)\n", r->n_unreadable);
    if (r->has_baseline && r->baseline.sum.goodput > 0)
        printf("  vs NAIVE defaults (run %lld): goodput %.3f req/s -> %.2fx\n", (long long)r->baseline.run_id,
               r->baseline.sum.goodput, r->best.sum.goodput / r->baseline.sum.goodput);
    else if (r->has_baseline)
        printf("  vs NAIVE defaults (run %lld): goodput 0 req/s (no request met the SLO)\n",
               (long long)r->baseline.run_id);
    for (int i = 0; i < r->n_reasons; i++)
        printf("  - %s\n", r->reasons[i]);
    if (!r->slo_met) {
        printf("no recorded candidate meets %s; the closest:\n", slo_text);
        for (int i = 0; i < r->n_closest; i++) {
            sim_tune_knobs_text(&r->closest[i].cfg, knobs, sizeof knobs);
            printf("  run %lld %s %s: goodput %.3f req/s, TTFT p99 %.3f s, TPOT p99 %.4f s\n",
                   (long long)r->closest[i].run_id, sched_strategy_name(r->closest[i].cfg.strategy), knobs,
                   r->closest[i].sum.goodput, r->closest[i].sum.ttft_p99, r->closest[i].sum.tpot_p99);
        }
    }
}

/* Recommendation from the store's runs (id >= min_run) and, when save, stored. Exit code. */
static int recommend(const char *cmd, an_store_t *st, const opts_t *o, const an_slo_t *slo, int64_t min_run,
                     bool save)
{
    an_reco_query_t q = {.model = o->model, .hardware = o->gpu, .min_run_id = min_run, .slo = *slo};
    an_reco_t r;
    char err[512], slo_text[256];
    an_slo_format(slo, slo_text, sizeof slo_text);
    if (an_recommend(st, &q, &r, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s: %s", o->db, err);
    print_reco(&r, slo_text);
    int code = r.slo_met ? 0 : 2;
    char *json = NULL;
    int64_t id = 0;
    if (save && r.slo_met) {
        if (an_reco_to_json(&r, o->model, o->gpu, slo, &json) != SL_OK ||
            an_reco_save(st, r.run_ids, (size_t)r.n_runs, json, &id) != SL_OK)
            code = cli_fail(cmd, "%s: cannot store the recommendation: %s", o->db, an_store_errmsg(st));
        else
            printf("stored as recommendation %lld in %s (sluice serve --settings-from %s --recommendation %lld)\n",
                   (long long)id, o->db, o->db, (long long)id);
    }
    sl_free(json);
    an_reco_clear(&r);
    return code;
}

/* ---- options -------------------------------------------------------------------------------- */

static int parse(int argc, char **argv, opts_t *o, sim_config_t *cfg, char *err, int errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = sched_opts_parse_arg(&cfg->sched, argc, argv, &i, err, errlen);
        if (r < 0)
            return 2;
        if (r == 1)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return 1;
        if (!strcmp(a, "--from-runs") || !strcmp(a, "--record-steps")) {
            *(a[2] == 'f' ? &o->from_runs : &o->record_steps) = true;
            continue;
        }
        if (!v) {
            snprintf(err, (size_t)errlen, "unknown option or missing value: '%s'", a);
            return 2;
        }
        const char **s = !strcmp(a, "--trace") ? &o->w.trace : !strcmp(a, "--preset") ? &o->w.preset
                       : !strcmp(a, "--gpu") ? &o->gpu
                       : !strcmp(a, "--slo") ? &o->slo : !strcmp(a, "--db") ? &o->db
                       : !strcmp(a, "--calib-dir") ? &o->calib_dir : !strcmp(a, "--strategies") ? &o->strategies
                       : NULL;
        i++;
        if (s) {
            *s = v;
            continue;
        }
        const cli_num_opt_t nums[] = {
            {"--limit", "-n", 1, 1e9, false, 'l', &o->w.n},
            {"--rate", NULL, 0, INFINITY, true, 'd', &o->w.rate},
            {"--rate-scale", NULL, 0, INFINITY, true, 'd', &o->w.rate_scale},
            {"--budget", NULL, 2, 100000, false, 'i', &o->budget},
            {"--jobs", NULL, 1, 64, false, 'i', &o->jobs},
            {"--replicas", NULL, 1, 4096, false, 'i', &o->replicas},
            {"--tp", NULL, 1, 64, false, 'i', &o->tp},
            {"--seed", NULL, 0, CLI_MAX_SEED, false, 'u', &o->w.seed},
            {"--spec-acceptance", NULL, 0, 1, false, 'd', &cfg->spec_acceptance},
            {"--spec-propose", NULL, 0, 1, false, 'd', &cfg->spec_propose},
        };
        const int rn = cli_num_opt(nums, sizeof nums / sizeof nums[0], a, v, err, (size_t)errlen);
        if (rn == 0)
            snprintf(err, (size_t)errlen, "unknown option '%s'", a);
        if (rn <= 0)
            return 2;
        o->spec_given = o->spec_given || !strcmp(a, "--spec-acceptance");
    }
    return 0;
}

static int parse_strategies(const char *list, bool on[4], char *err, int errlen)
{
    memset(on, 0, 4 * sizeof on[0]);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        sched_strategy_t s;
        if (sched_strategy_parse(t, &s) != SL_OK) {
            snprintf(err, (size_t)errlen, "--strategies: unknown strategy '%s' (accepted: naive, bucketed, "
                     "memory_aware, continuous)", t);
            return SL_EINVAL;
        }
        on[s] = true;
    }
    return SL_OK;
}

int cmd_tune(int argc, char **argv)
{
    const char *cmd = argv[0];
    opts_t o = {.gpu = "a100-80gb", .db = "sluice.db", .calib_dir = SIM_CALIB_DEFAULT_DIR,
                .budget = 50, .jobs = 2, .replicas = 1, .tp = 1, .w = {.rate_scale = 1}};
    sim_config_t cfg;
    char err[1024];
    if (sim_config_default(&cfg) != SL_OK)
        return cli_fail(cmd, "built-in model llama2-7b missing from this build");
    cfg.sched.max_sequence_length = 0; /* 0 = the model's context, set below */
    int pr = parse(argc, argv, &o, &cfg, err, sizeof err);
    if (pr == 1) {
        usage(stdout);
        return 0;
    }
    if (pr) {
        usage(stderr);
        return cli_fail(cmd, "%s", err);
    }
    /* --model is the scheduler's model knob (sched_opts): the simulator prices that model too, and
       recommendations are looked up for it */
    cfg.model = cfg.sched.model;
    o.model = cfg.model.name;
    if (!o.slo)
        return cli_fail(cmd, "--slo is required (e.g. --slo ttft_p99=1s,tpot_p99=100ms)");
    an_slo_t slo = {0};
    if (an_slo_parse(o.slo, &slo, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--slo: %s", err);

    if (o.from_runs) {
        an_store_t *st;
        if (an_store_open_existing(o.db, &st, err, sizeof err) != SL_OK)
            return cli_fail(cmd, "%s", err);
        int code = recommend(cmd, st, &o, &slo, 0, false);
        an_store_close(st);
        return code;
    }

    sim_tune_opts_t to;
    if (cfg.sched.max_sequence_length == 0)
        cfg.sched.max_sequence_length = cfg.model.max_context;
    if (sim_hw_resolve(o.gpu, &cfg.hw, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--gpu: %s", err);
    cfg.replicas = o.replicas, cfg.tp = o.tp, cfg.seed = o.w.seed;
    if (cli_sim_spec_check(&cfg, o.spec_given, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s", err);
    sim_tune_opts_default(&to, &cfg.sched);
    to.budget = o.budget, to.jobs = o.jobs;
    if (o.strategies && parse_strategies(o.strategies, to.strategy, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s", err);

    wl_trace_t *tr = wl_trace_create();
    if (!tr)
        return cli_fail(cmd, "out of memory");
    char workload[1100];
    if (cli_workload_load(&o.w, tr, workload, sizeof workload, err, sizeof err) != SL_OK) {
        wl_trace_free(tr);
        return cli_fail(cmd, "%s", err);
    }
    tune_ctx_t c = {.base = cfg, .tr = tr, .slo = slo, .workload = workload, .calib_dir = o.calib_dir,
                    .hash = wl_trace_hash(tr), .seed = o.w.seed,
                    .record_steps = o.record_steps, .progress = isatty(2)};
    int rc = an_store_open(o.db, &c.st);
    if (rc != SL_OK) {
        cli_fail(cmd, "%s: %s", o.db, c.st ? an_store_errmsg(c.st) : sl_strerror(rc));
        an_store_close(c.st);
        wl_trace_free(tr);
        return 2;
    }
    sim_calib_t *calib;
    if (cli_calib_load(cmd, o.calib_dir, &cfg.hw, &calib)) {
        an_store_close(c.st);
        wl_trace_free(tr);
        return 2;
    }
    c.calib = calib;
    pthread_mutex_init(&c.mu, NULL);
    to.eval = tune_eval, to.ctx = &c;

    char slo_text[256];
    an_slo_format(&slo, slo_text, sizeof slo_text);
    printf("sluice tune: %s on %d x %s (tp %d), %s (%zu requests), SLO %s, budget %d runs on %d threads\n",
           cfg.model.name, cfg.replicas, cfg.hw.name, cfg.tp, workload, tr->n, slo_text, o.budget,
           o.jobs);
    sim_tune_result_t res;
    double t0 = cli_wall_now();
    rc = sim_tune_run(&to, &res, err, sizeof err);
    double wall = cli_wall_now() - t0;
    if (c.progress)
        fprintf(stderr, "\r%*s\r", 20, "");
    int code = 0;
    if (rc != SL_OK) {
        code = cli_fail(cmd, "%s", err);
    } else {
        const sim_tune_entry_t *b = &res.entries[res.baseline];
        printf("%d runs in %.1f s wall (%.2f s/run on %d threads)\n\n", res.n, wall, wall / res.n, o.jobs);
        printf("%4s  %-12s %-46s %8s %8s %9s %9s  %-4s %7s  %-8s\n", "rank", "strategy", "knobs", "goodput",
               "req/s", "ttft_p99", "tpot_p99", "SLO", "vs base", "phase");
        printf("  --  baseline (NAIVE defaults):\n");
        print_row(res.baseline + 1, b, b->score.goodput);
        printf("  --  ranked:\n");
        for (int i = 0; i < res.n && i < 15; i++)
            print_row(i + 1, &res.entries[i], b->score.goodput);
        if (res.n > 15)
            printf("  ... %d more in %s\n", res.n - 15, o.db);
        int64_t first = 0;
        for (int i = 0; i < res.n; i++)
            if (res.entries[i].score.run_id && (!first || res.entries[i].score.run_id < first))
                first = res.entries[i].score.run_id;
        printf("\n");
        code = recommend(cmd, c.st, &o, &slo, first, true);
        sim_tune_result_free(&res);
    }
    pthread_mutex_destroy(&c.mu);
    sim_calib_free(calib);
    an_store_close(c.st);
    wl_trace_free(tr);
    return code;
}
