/* cmd_sim.c — `sluice sim`: simulate a trace or preset on a GPU profile, print the summary and
 * record the run (mode sim, requests and steps) in the run store. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "cli/profile_db.h"
#include "cli/sched_opts.h"
#include "cli/sim_run.h"
#include "sched/adapt.h"
#include "sched/status.h"
#include "sim/calib.h"
#include "sim/sim.h"
#include "workloads/trace.h"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: sluice sim [--trace FILE | --preset NAME [-n N] [--rate R]] [--rate-scale X]\n"
        "                  [--model NAME] [--gpu NAME|FILE] [--strategy NAME] [--replicas N] [--tp N]\n"
        "                  [--router round_robin|least_outstanding|least_kv] [scheduler options]\n"
        "                  [--config FILE] [--slo ttft_p99=1s,tpot_p99=100ms] [--seed S] [--db FILE]\n"
        "                  [--no-record] [--calib-dir DIR|none] [--json] [--adaptive] [--spec-acceptance A]\n"
        "                  [--spec-propose P]\n"
        "defaults: --trace " CLI_DEFAULT_TRACE " if present, else --preset chat; --model llama2-7b;\n"
        "          --gpu a100-80gb; --strategy continuous; --db ./sluice.db; --max-sequence-length:\n"
        "          the model's context (longer requests are rejected and counted); --num-blocks: what\n"
        "          fits the GPU's memory after the weights\n"
        "--gpu NAME that is not built in: a profile file, else a profile `sluice calibrate` stored in --db\n"
        "--adaptive: a controller per replica adjusts max_num_batched_tokens (continuous) or\n"
        "          batch_timeout_ms (static) between steps toward the --slo ttft_p99 / tpot_p99 targets\n"
        "          (default 1s / 100ms); the recorded config is the starting one; each change is printed\n"
        "--spec-acceptance A: with --num-speculative-tokens K > 0 (required then), the probability that\n"
        "          the target model accepts a draft token given it accepted the drafts before it (0..1);\n"
        "          a decode step appends (1 - A^(K+1)) / (1 - A) tokens on average (docs/SIMULATOR.md)\n"
        "--spec-propose P: the probability that a sequence's drafter proposes drafts in a step (default 1;\n"
        "          prompt lookup finds some only where text repeats: `sluice bench` prints both rates)\n");
}

/* ---- options ------------------------------------------------------------------------------ */

typedef struct opts {
    const char *trace, *preset, *gpu, *router, *slo, *db, *calib_dir;
    long n;
    double rate, rate_scale;
    int replicas, tp;
    uint64_t seed;
    bool json, no_record, adaptive, spec_given; /* spec_given: --spec-acceptance */
} opts_t;

/* ---- output ------------------------------------------------------------------------------- */

static void print_lat(const char *name, double mean, double p50, double p90, double p99)
{
    printf("  %-10s mean %8.3f  p50 %8.3f  p90 %8.3f  p99 %8.3f s\n", name, mean, p50, p90, p99);
}

static void print_summary(const an_summary_t *s, const sim_totals_t *t, double wall, const char *workload,
                          const sim_config_t *cfg, const an_slo_t *slo, const char *slo_text)
{
    printf("sluice sim: %s on %d x %s (tp %d, %s), %s, %s router\n", cfg->model.name, cfg->replicas,
           cfg->hw.name, cfg->tp, sched_strategy_name(cfg->sched.strategy), workload,
           sim_router_name(cfg->router));
    if (cfg->sched.num_speculative_tokens > 0 && cfg->sched.strategy == SCHED_CONTINUOUS)
        printf("  speculation %d draft%s per decode, proposed %g of the time, acceptance %g: %.2f tokens per "
               "decode step expected\n",
               cfg->sched.num_speculative_tokens, cfg->sched.num_speculative_tokens == 1 ? "" : "s",
               cfg->spec_propose, cfg->spec_acceptance,
               1 + cfg->spec_propose *
                       (sim_spec_tokens_per_step(cfg->spec_acceptance, cfg->sched.num_speculative_tokens) - 1));
    printf("  requests   %.0f (%.0f completed, %llu rejected) over %.1f s simulated\n", s->n_requests,
           s->n_completed, (unsigned long long)t->rejected, s->duration);
    printf("  throughput %.2f req/s, %.0f input tok/s, %.0f output tok/s\n", s->request_throughput,
           s->input_tps, s->output_tps);
    print_lat("TTFT", s->ttft_mean, s->ttft_p50, s->ttft_p90, s->ttft_p99);
    print_lat("TPOT", s->tpot_mean, s->tpot_p50, s->tpot_p90, s->tpot_p99);
    print_lat("E2E", s->e2e_mean, s->e2e_p50, s->e2e_p90, s->e2e_p99);
    print_lat("queueing", s->queue_mean, s->queue_p50, s->queue_p90, s->queue_p99);
    if (slo->n)
        printf("  goodput    %.2f req/s (%.1f%% of requests) under %s: SLO %s\n", s->goodput,
               100 * s->goodput_frac, slo_text, s->slo_met == 1 ? "met" : "missed");
    else
        printf("  goodput    %.2f req/s (no SLO given: every completed request counts)\n", s->goodput);
    printf("  preemptions %.0f (%.0f requests); prefix cache hit rate %.1f%%\n", s->preemptions,
           s->preempted_requests, 100 * s->prefix_hit_rate);
    printf("  KV         %d blocks/replica; utilisation mean %.1f%% peak %.1f%%\n", t->num_blocks,
           100 * s->kv_util_mean, 100 * s->kv_util_peak);
    printf("  KV waste   paged: %.1f%%; max-length reservation: %.1f%%: %.1fx less memory\n",
           100 * s->kv_waste, 100 * s->kv_naive_waste,
           (1 - s->kv_waste) > 0 && (1 - s->kv_naive_waste) > 0 ? (1 - s->kv_waste) / (1 - s->kv_naive_waste) : NAN);
    printf("  batches    %.1f seqs/step, %.0f tokens/step, %.0f steps, padding %.1f%%, busy %.1f%%\n",
           s->batch_size_mean, s->tokens_per_step, s->n_steps, 100 * s->padding_frac, 100 * s->busy_frac);
    printf("  MFU        %.1f%%\n", 100 * s->mfu);
    printf("simulated %.0f requests in %.3f s wall (%.0f req/s)\n", s->n_requests, wall,
           wall > 0 ? s->n_requests / wall : 0);
}

static void print_json(const an_summary_t *s, double wall, int64_t run_id)
{
    printf("{\"run_id\": %lld, \"wall_seconds\": %.6f", (long long)run_id, wall);
    for (size_t i = 0; i < an_summary_field_count(); i++) {
        const an_summary_field_t *f = an_summary_field_at(i);
        double v = *(const double *)((const char *)s + f->offset);
        if (isfinite(v))
            printf(", \"%s\": %.17g", f->name, v);
        else
            printf(", \"%s\": null", f->name);
    }
    printf("}\n");
}

/* ---- the adaptive controller's change log ---------------------------------------------------- */

typedef struct change_log {
    sched_adapt_change_t *c;
    size_t n, cap;
    bool oom; /* a change could not be kept (the count stays right) */
    size_t total;
} change_log_t;

static void log_change(void *ctx, const sched_adapt_change_t *c)
{
    change_log_t *l = ctx;
    l->total++;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        sched_adapt_change_t *p = sl_realloc(l->c, cap * sizeof *p);
        if (!p) {
            l->oom = true;
            return;
        }
        l->c = p, l->cap = cap;
    }
    l->c[l->n++] = *c;
}

/* The SLO's p99 TTFT / TPOT limits become the controller's targets (defaults otherwise). */
static void adapt_targets(const an_slo_t *slo, sched_adapt_opts_t *ao)
{
    for (int k = 0; k < slo->n; k++) {
        if (slo->term[k].percentile != 99)
            continue;
        if (slo->term[k].metric == AN_SLO_TTFT)
            ao->ttft_target = slo->term[k].limit;
        else if (slo->term[k].metric == AN_SLO_TPOT)
            ao->tpot_target = slo->term[k].limit;
    }
}

static void print_changes(const change_log_t *l, int replicas)
{
    printf("adaptive: %zu change%s over %d replica%s\n", l->total, l->total == 1 ? "" : "s", replicas,
           replicas == 1 ? "" : "s");
    size_t show = l->n <= 20 ? l->n : 20;
    for (size_t i = 0; i < show; i++)
        printf("  t=%9.2f s  replica %d  %s %g -> %g  (%s)\n", l->c[i].t, l->c[i].id, l->c[i].knob,
               l->c[i].old_value, l->c[i].new_value, l->c[i].reason);
    if (l->total > show)
        printf("  ... %zu more%s\n", l->total - show, l->oom ? " (some not kept: out of memory)" : "");
}

/* A built-in profile or a profile file (sim_hw_resolve), else a profile `sluice calibrate` stored
 * under that name in the run store db (never created here). */
static int resolve_gpu(const char *name, const char *db, sim_hw_t *hw, char *err, int errlen)
{
    int rc = sim_hw_resolve(name, hw, err, errlen);
    if (rc != SL_ENOTFOUND || access(db, R_OK) != 0)
        return rc;
    char *json = NULL;
    an_store_t *st = NULL;
    rc = an_store_open(db, &st);
    if (rc == SL_OK && (rc = an_calib_load(st, name, "profile", &json)) == SL_OK) {
        char why[256];
        if ((rc = sim_hw_from_json(json, hw, why, sizeof why)) != SL_OK)
            snprintf(err, errlen, "profile '%s' stored in %s: %s", name, db, why);
    } else if (rc == SL_ENOTFOUND) { /* err still says what is built in */
        size_t k = strlen(err);
        if (k + 1 < (size_t)errlen &&
            snprintf(err + k, (size_t)errlen - k, "; none stored under that name in %s (sluice calibrate --gpu FILE)",
                     db) >= errlen - (int)k)
            snprintf(err, (size_t)errlen, "no GPU profile '%.64s' built in, as a file or stored in the run store",
                     name);
    } else {
        snprintf(err, errlen, "%s: %s", db, st ? an_store_errmsg(st) : sl_strerror(rc));
    }
    sl_free(json);
    an_store_close(st);
    return rc;
}

int cmd_sim(int argc, char **argv)
{
    const char *cmd = argv[0];
    opts_t o = {.gpu = "a100-80gb", .router = "round_robin", .db = "sluice.db", .calib_dir = SIM_CALIB_DEFAULT_DIR,
                .rate_scale = 1, .replicas = 1, .tp = 1};
    sim_config_t cfg;
    char err[1024];
    if (sim_config_default(&cfg) != SL_OK)
        return cli_fail(cmd, "built-in model llama2-7b missing from this build");
    /* 0 = not given: the model's context / what fits the GPU / the GPU profile's share, set below */
    cfg.sched.max_sequence_length = 0, cfg.sched.num_blocks = 0, cfg.sched.gpu_memory_utilization = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int knob = sched_opts_parse_arg(&cfg.sched, argc, argv, &i, err, sizeof err);
        if (knob < 0)
            return cli_fail(cmd, "%s", err);
        if (knob == 1)
            continue; /* --model, --strategy, --config and every other scheduler knob */
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            sched_opts_print_help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--no-record")) {
            o.no_record = true;
        } else if (!strcmp(a, "--adaptive")) {
            o.adaptive = true;
        } else if (!v) {
            usage(stderr);
            return cli_fail(cmd, "unknown option or missing value: '%s'", a);
        } else {
            const char **s = !strcmp(a, "--trace") ? &o.trace : !strcmp(a, "--preset") ? &o.preset
                           : !strcmp(a, "--gpu") ? &o.gpu : !strcmp(a, "--router") ? &o.router
                           : !strcmp(a, "--slo") ? &o.slo : !strcmp(a, "--db") ? &o.db
                           : !strcmp(a, "--calib-dir") ? &o.calib_dir : NULL;
            i++;
            if (s) {
                *s = v;
                continue;
            }
            if (!strcmp(a, "--spec-acceptance")) {
                if (cli_number(cmd, a, v, 0, 1, &cfg.spec_acceptance))
                    return 2;
                o.spec_given = true;
                continue;
            }
            if (!strcmp(a, "--spec-propose")) {
                if (cli_number(cmd, a, v, 0, 1, &cfg.spec_propose))
                    return 2;
                continue;
            }
            const cli_num_opt_t nums[] = {
                {"-n", NULL, 1, 1e9, false, 'l', &o.n},
                {"--rate", NULL, 0, INFINITY, true, 'd', &o.rate},
                {"--rate-scale", NULL, 0, INFINITY, true, 'd', &o.rate_scale},
                {"--replicas", NULL, 1, 4096, false, 'i', &o.replicas},
                {"--tp", NULL, 1, 64, false, 'i', &o.tp},
                {"--seed", NULL, 0, CLI_MAX_SEED, false, 'u', &o.seed},
            };
            const int r = cli_num_opt(nums, sizeof nums / sizeof nums[0], a, v, err, sizeof err);
            if (r < 0)
                return cli_fail(cmd, "%s", err);
            if (r == 0) {
                usage(stderr);
                return cli_fail(cmd, "unknown option '%s'", a);
            }
        }
    }
    if (o.trace && o.preset)
        return cli_fail(cmd, "--trace and --preset are exclusive");
    cfg.model = cfg.sched.model; /* --model is the scheduler's model knob */
    if (cfg.sched.max_sequence_length == 0) /* like vLLM's max_model_len: the model's trained context */
        cfg.sched.max_sequence_length = cfg.model.max_context;
    cfg.plan_kv = cfg.sched.num_blocks == 0;
    if (cfg.plan_kv)
        cfg.sched.num_blocks = sched_config_default().num_blocks; /* replaced by sim_create's plan */
    sim_profile_t eprof; /* --gpu may name an engine profile (`sluice profile`) in the store */
    if (resolve_gpu(o.gpu, o.db, &cfg.hw, err, sizeof err) != SL_OK) {
        char why[512];
        if (cli_profile_load(o.db, o.gpu, &eprof, why, sizeof why) != SL_OK)
            return cli_fail(cmd, "--gpu: %s", err);
        cli_profile_sim_config(&eprof, &cfg);
    }
    if (cfg.sched.gpu_memory_utilization == 0)
        cfg.sched.gpu_memory_utilization = cfg.hw.gpu_mem_util;
    cfg.hw.gpu_mem_util = cfg.sched.gpu_memory_utilization; /* what sim_create plans the KV pool with */
    if (sim_router_parse(o.router, &cfg.router) != SL_OK)
        return cli_fail(cmd, "unknown router '%s' (accepted: round_robin, least_outstanding, least_kv)", o.router);
    an_slo_t slo = {0};
    if (o.slo && an_slo_parse(o.slo, &slo, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--slo: %s", err);
    cfg.replicas = o.replicas, cfg.tp = o.tp, cfg.seed = o.seed;
    if (sched_config_validate(&cfg.sched, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "scheduler: %s", err);
    if (cli_sim_spec_check(&cfg, o.spec_given, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "%s", err);

    /* workload */
    wl_trace_t *tr = wl_trace_create();
    if (!tr)
        return cli_fail(cmd, "out of memory");
    char workload[1100];
    cli_workload_t w = {.trace = o.trace, .preset = o.preset, .n = o.n, .rate = o.rate,
                        .rate_scale = o.rate_scale, .seed = o.seed};
    int rc = cli_workload_load(&w, tr, workload, sizeof workload, err, sizeof err);
    if (rc != SL_OK) {
        wl_trace_free(tr);
        return cli_fail(cmd, "%s", err);
    }

    /* calibration: tables when present, else the roofline with the profile's efficiencies */
    sim_calib_t *calib;
    if (cli_calib_load(cmd, o.calib_dir, &cfg.hw, &calib)) {
        wl_trace_free(tr);
        return 2;
    }
    sim_t *sim = sim_create(&cfg, calib, err, sizeof err);
    sim_calib_free(calib);
    if (!sim) {
        wl_trace_free(tr);
        return cli_fail(cmd, "%s", err);
    }
    /* recording: the run opens first so steps stream into it as they happen */
    sim_config_t used = cfg;
    used.sched.num_blocks = sim_num_blocks(sim);
    an_store_t *st = NULL;
    int64_t run_id = 0;
    cli_collect_t col;
    cli_collect_init(&col, false, isatty(2));
    if (!o.no_record) {
        rc = an_store_open(o.db, &st);
        if (rc == SL_OK)
            rc = cli_sim_record_begin(st, &used, o.calib_dir, workload, wl_trace_hash(tr), o.seed, &run_id);
        if (rc != SL_OK) {
            cli_fail(cmd, "%s: %s", o.db, st ? an_store_errmsg(st) : sl_strerror(rc));
            an_store_close(st);
            sim_free(sim);
            wl_trace_free(tr);
            return 2;
        }
        cli_collect_stream(&col, st, run_id);
    }
    sim_sink_t sink = cli_collect_sink(&col);
    change_log_t changes = {0};
    sim_adaptive_t *ad = NULL;
    if (o.adaptive) {
        sched_adapt_opts_t ao;
        sched_adapt_opts_default(&ao, &cfg.sched);
        adapt_targets(&slo, &ao);
        ao.log = log_change, ao.log_ctx = &changes;
        if (!(ad = sim_adaptive_create(&ao, cfg.replicas, err, sizeof err)))
            rc = SL_ENOMEM;
        else {
            sink = sim_adaptive_sink(ad, &sink);
            sim_hook_t hook = sim_adaptive_hook(ad);
            sim_set_hook(sim, &hook);
        }
    }
    sim_totals_t tot;
    double t0 = cli_wall_now();
    if (rc == SL_OK)
        rc = sim_run(sim, tr, &sink, &tot, err, sizeof err);
    double wall = cli_wall_now() - t0;
    if (col.progress && wall >= 1.0)
        fprintf(stderr, "\r%*s\r", 80, "");
    int exit_code = 0;
    an_summary_t sum;
    if (rc != SL_OK) {
        exit_code = cli_fail(cmd, "simulation stopped: %s", err);
    } else if (cli_sim_summary(&col, &tot, &cfg, &slo, &sum) != SL_OK) {
        exit_code = cli_fail(cmd, "out of memory computing the summary");
        rc = SL_ENOMEM;
        snprintf(err, sizeof err, "out of memory computing the summary");
    }
    if (st && cli_sim_record_finish(st, run_id, &col, false, &sum, rc, err) != SL_OK && rc == SL_OK) {
        exit_code = cli_fail(cmd, "%s: %s", o.db, an_store_errmsg(st));
        run_id = 0;
    }
    if (rc == SL_OK) {
        char slo_text[256] = "";
        an_slo_format(&slo, slo_text, sizeof slo_text);
        if (o.json)
            print_json(&sum, wall, run_id);
        else
            print_summary(&sum, &tot, wall, workload, &used, &slo, slo_text);
        if (!o.json && ad)
            print_changes(&changes, cfg.replicas);
        if (!o.json && run_id > 0 && exit_code == 0)
            printf("recorded as run %lld in %s\n", (long long)run_id, o.db);
    }
    an_store_close(st);
    sim_adaptive_free(ad);
    sl_free(changes.c);
    cli_collect_free(&col);
    sim_free(sim);
    wl_trace_free(tr);
    return exit_code;
}
