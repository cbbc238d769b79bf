/* cmd_sim.c — `sluice sim`: simulate a trace or preset on a GPU profile, print the summary and
 * record the run (mode sim, requests and steps) in the run store. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "sched/status.h"
#include "sim/calib.h"
#include "sim/sim.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

#define DEFAULT_TRACE "../shared/traces/azure_conv_2023.csv"

static void usage(FILE *out)
{
    fprintf(out,
        "usage: sluice sim [--trace FILE | --preset NAME [-n N] [--rate R]] [--rate-scale X]\n"
        "                  [--model NAME] [--gpu NAME|FILE] [--strategy NAME] [--replicas N] [--tp N]\n"
        "                  [--router round_robin|least_outstanding|least_kv] [scheduler knobs]\n"
        "                  [--slo ttft_p99=1s,tpot_p99=100ms] [--seed S] [--db FILE] [--no-record]\n"
        "                  [--calib-dir DIR] [--json]\n"
        "defaults: --trace " DEFAULT_TRACE " if present, else --preset chat; --model llama2-7b;\n"
        "          --gpu a100-80gb; --strategy continuous; --db ./sluice.db; --max-seq-len: the\n"
        "          model's context (longer requests are rejected and counted)\n"
        "scheduler knobs: --max-num-seqs N --max-num-batched-tokens N --max-batch-size N\n"
        "          --batch-timeout-ms X --bucket-size N --block-size N --max-seq-len N\n"
        "          --memory-limit-mb X --no-prefix-caching --no-chunked-prefill\n");
}

/* ---- record collection -------------------------------------------------------------------- */

typedef struct collect {
    an_request_rec_t *req;
    size_t n_req, cap_req;
    an_step_rec_t *step;
    size_t n_step, cap_step;
    int block_size;
    bool progress;
    double t0;
} collect_t;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return SL_OK;
    size_t nc = *cap ? *cap * 2 : 4096;
    void *np = sl_realloc(*p, nc * elem);
    if (!np)
        return SL_ENOMEM;
    *p = np, *cap = nc;
    return SL_OK;
}

static int on_done(void *ctx, int replica, const sched_done_t *d)
{
    collect_t *c = ctx;
    if (c->n_req == c->cap_req && grow((void **)&c->req, &c->cap_req, c->n_req + 1, sizeof *c->req))
        return SL_ENOMEM;
    c->req[c->n_req++] = (an_request_rec_t){
        .req_id = (int64_t)d->id, .replica = replica, .priority = d->priority, .arrival = d->arrival,
        .first_scheduled = d->first_scheduled, .first_token = d->first_token, .finished = d->finished,
        .prompt_len = d->prompt_len, .output_len = d->output_len, .cached_prompt_len = d->cached_prompt_len,
        .preemptions = d->preemptions, .finish_reason = (int)d->reason};
    return SL_OK;
}

static int on_step(void *ctx, const sim_step_info_t *in)
{
    collect_t *c = ctx;
    if (c->n_step == c->cap_step && grow((void **)&c->step, &c->cap_step, c->n_step + 1, sizeof *c->step))
        return SL_ENOMEM;
    const sched_step_t *s = in->step;
    c->step[c->n_step++] = (an_step_rec_t){
        .replica = in->replica, .seq_no = (int64_t)s->seq_no, .t_start = in->t_start, .t_end = in->t_end,
        .n_seqs = s->n_seqs, .n_tokens = s->n_tokens, .n_prefill_tokens = s->n_prefill_tokens,
        .n_decode_seqs = s->n_decode_seqs, .n_padded_tokens = s->n_padded_tokens,
        .kv_used_blocks = in->stats->used_blocks, .kv_reserved_slots = in->stats->kv_reserved_slots,
        .kv_used_slots = in->stats->kv_used_slots, .kv_naive_slots = in->stats->kv_naive_slots,
        .n_preempted = s->n_preempted};
    return SL_OK;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, double now, uint64_t done, uint64_t total)
{
    collect_t *c = ctx;
    if (!c->progress || wall_now() - c->t0 < 1.0)
        return;
    int w = 40, fill = total ? (int)(w * (double)done / total) : 0;
    fprintf(stderr, "\r[%.*s%*s] %llu/%llu requests, t=%.0f s", fill,
            "########################################", w - fill, "", (unsigned long long)done,
            (unsigned long long)total, now);
}

/* ---- options ------------------------------------------------------------------------------ */

typedef struct opts {
    const char *trace, *preset, *model, *gpu, *strategy, *router, *slo, *db, *calib_dir;
    long n;
    double rate, rate_scale;
    int replicas, tp;
    uint64_t seed;
    bool json, no_record;
} opts_t;

/* Integer / real scheduler knobs by flag. */
static int sched_knob(sched_config_t *sc, const char *flag, const char *val, bool *matched)
{
    struct { const char *flag; int *i; double *d; } t[] = {
        {"--max-num-seqs", &sc->max_num_seqs, NULL},
        {"--max-num-batched-tokens", &sc->max_num_batched_tokens, NULL},
        {"--max-batch-size", &sc->max_batch_size, NULL},
        {"--bucket-size", &sc->bucket_size, NULL},
        {"--block-size", &sc->block_size, NULL},
        {"--max-seq-len", &sc->max_sequence_length, NULL},
        {"--batch-timeout-ms", NULL, &sc->batch_timeout_ms},
        {"--memory-limit-mb", NULL, &sc->memory_limit_mb},
    };
    *matched = false;
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        if (strcmp(flag, t[k].flag))
            continue;
        *matched = true;
        char *end;
        double v = strtod(val, &end);
        if (end == val || *end || !isfinite(v) || (t[k].i && (v != floor(v) || fabs(v) > 1e9)))
            return SL_EINVAL;
        if (t[k].i)
            *t[k].i = (int)v;
        else
            *t[k].d = v;
    }
    return SL_OK;
}

static bool num_arg(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && !*end && isfinite(*out);
}

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

static int record(const opts_t *o, const sim_config_t *cfg, const char *workload, uint64_t hash,
                  const collect_t *c, const an_summary_t *sum, int64_t *run_id, const char *cmd)
{
    an_store_t *st = NULL;
    int rc = an_store_open(o->db, &st);
    if (rc != SL_OK) {
        cli_fail(cmd, "%s: %s", o->db, st ? an_store_errmsg(st) : sl_strerror(rc));
        an_store_close(st);
        return rc;
    }
    char json[1024];
    const sched_config_t *sc = &cfg->sched;
    snprintf(json, sizeof json,
             "{\"replicas\": %d, \"tp\": %d, \"router\": \"%s\", \"max_num_seqs\": %d, "
             "\"max_num_batched_tokens\": %d, \"max_batch_size\": %d, \"batch_timeout_ms\": %g, "
             "\"bucket_size\": %d, \"block_size\": %d, \"num_blocks\": %d, \"max_sequence_length\": %d, "
             "\"prefix_caching\": %s, \"chunked_prefill\": %s, \"calib_dir\": \"%s\"}",
             cfg->replicas, cfg->tp, sim_router_name(cfg->router), sc->max_num_seqs, sc->max_num_batched_tokens,
             sc->max_batch_size, sc->batch_timeout_ms, sc->bucket_size, sc->block_size, sc->num_blocks,
             sc->max_sequence_length, sc->enable_prefix_caching ? "true" : "false",
             sc->enable_chunked_prefill ? "true" : "false", o->calib_dir);
    an_run_info_t info = {.mode = "sim", .hardware = cfg->hw.name, .model = cfg->model.name,
                          .strategy = sched_strategy_name(sc->strategy), .config_json = json,
                          .workload_name = workload, .workload_hash = hash, .seed = o->seed};
    if ((rc = an_run_begin(st, &info, run_id)) == SL_OK) {
        for (size_t i = 0; rc == SL_OK && i < c->n_req; i += 8192)
            rc = an_run_add_requests(st, *run_id, c->req + i, c->n_req - i < 8192 ? c->n_req - i : 8192);
        for (size_t i = 0; rc == SL_OK && i < c->n_step; i += 8192)
            rc = an_run_add_steps(st, *run_id, c->step + i, c->n_step - i < 8192 ? c->n_step - i : 8192);
        if (rc == SL_OK)
            rc = an_run_finish(st, *run_id, sum);
        else
            an_run_fail(st, *run_id, an_store_errmsg(st));
    }
    if (rc != SL_OK)
        cli_fail(cmd, "%s: %s", o->db, an_store_errmsg(st));
    an_store_close(st);
    return rc;
}

int cmd_sim(int argc, char **argv)
{
    const char *cmd = argv[0];
    opts_t o = {.model = "llama2-7b", .gpu = "a100-80gb", .strategy = "continuous", .router = "round_robin",
                .db = "sluice.db", .calib_dir = SIM_CALIB_DEFAULT_DIR, .rate_scale = 1, .replicas = 1,
                .tp = 1};
    sim_config_t cfg;
    bool max_seq_given = false;
    if (sim_config_default(&cfg) != SL_OK)
        return cli_fail(cmd, "built-in model llama2-7b missing from this build");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        bool matched;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--no-record")) {
            o.no_record = true;
        } else if (!strcmp(a, "--no-prefix-caching")) {
            cfg.sched.enable_prefix_caching = false;
        } else if (!strcmp(a, "--no-chunked-prefill")) {
            cfg.sched.enable_chunked_prefill = false;
        } else if (!v) {
            usage(stderr);
            return cli_fail(cmd, "unknown option or missing value: '%s'", a);
        } else if (sched_knob(&cfg.sched, a, v, &matched), matched) {
            if (sched_knob(&cfg.sched, a, v, &matched) != SL_OK)
                return cli_fail(cmd, "%s: expected a number, got '%s'", a, v);
            max_seq_given |= !strcmp(a, "--max-seq-len");
            i++;
        } else {
            const char **s = !strcmp(a, "--trace") ? &o.trace : !strcmp(a, "--preset") ? &o.preset
                           : !strcmp(a, "--model") ? &o.model : !strcmp(a, "--gpu") ? &o.gpu
                           : !strcmp(a, "--strategy") ? &o.strategy : !strcmp(a, "--router") ? &o.router
                           : !strcmp(a, "--slo") ? &o.slo : !strcmp(a, "--db") ? &o.db
                           : !strcmp(a, "--calib-dir") ? &o.calib_dir : NULL;
            i++;
            if (s) {
                *s = v;
                continue;
            }
            if (!num_arg(v, &x))
                return cli_fail(cmd, "%s: expected a number, got '%s'", a, v);
            if (!strcmp(a, "-n") && x >= 1 && x <= 1e9 && x == floor(x))
                o.n = (long)x;
            else if (!strcmp(a, "--rate") && x > 0)
                o.rate = x;
            else if (!strcmp(a, "--rate-scale") && x > 0)
                o.rate_scale = x;
            else if (!strcmp(a, "--replicas") && x >= 1 && x <= 4096 && x == floor(x))
                o.replicas = (int)x;
            else if (!strcmp(a, "--tp") && x >= 1 && x <= 64 && x == floor(x))
                o.tp = (int)x;
            else if (!strcmp(a, "--seed") && x >= 0 && x == floor(x))
                o.seed = (uint64_t)x;
            else {
                usage(stderr);
                return cli_fail(cmd, "%s %s: unknown option or value out of range", a, v);
            }
        }
    }
    if (o.trace && o.preset)
        return cli_fail(cmd, "--trace and --preset are exclusive");
    char err[1024];
    if (sched_model_shape_builtin(o.model, &cfg.model) != SL_OK)
        return cli_fail(cmd, "unknown model '%s' (accepted: %s)", o.model, sched_model_shape_names());
    if (!max_seq_given) /* like vLLM's max_model_len: the model's trained context */
        cfg.sched.max_sequence_length = cfg.model.max_context;
    if (sim_hw_resolve(o.gpu, &cfg.hw, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--gpu: %s", err);
    if (sched_strategy_parse(o.strategy, &cfg.sched.strategy) != SL_OK)
        return cli_fail(cmd, "unknown strategy '%s' (accepted: naive, bucketed, memory_aware, continuous)", o.strategy);
    if (sim_router_parse(o.router, &cfg.router) != SL_OK)
        return cli_fail(cmd, "unknown router '%s' (accepted: round_robin, least_outstanding, least_kv)", o.router);
    an_slo_t slo = {0};
    if (o.slo && an_slo_parse(o.slo, &slo, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "--slo: %s", err);
    cfg.replicas = o.replicas, cfg.tp = o.tp, cfg.seed = o.seed;
    if (sched_config_validate(&cfg.sched, err, sizeof err) != SL_OK)
        return cli_fail(cmd, "scheduler: %s", err);

    /* workload */
    wl_trace_t *tr = wl_trace_create();
    if (!tr)
        return cli_fail(cmd, "out of memory");
    char workload[1100];
    int rc;
    if (!o.trace && !o.preset && access(DEFAULT_TRACE, R_OK) == 0)
        o.trace = DEFAULT_TRACE;
    if (o.trace) {
        rc = wl_trace_read_file(tr, o.trace);
        if (rc == SL_OK && o.n > 0)
            wl_trace_truncate(tr, (size_t)o.n);
        snprintf(workload, sizeof workload, "%s", o.trace);
    } else {
        if (!o.preset)
            o.preset = "chat";
        rc = wl_preset_generate(o.preset, (size_t)o.n, o.rate, o.seed, 0, tr);
        snprintf(workload, sizeof workload, "preset %s", o.preset);
    }
    if (rc == SL_OK && o.rate_scale != 1)
        rc = wl_trace_rate_scale(tr, o.rate_scale);
    if (rc != SL_OK) {
        cli_fail(cmd, "workload: %s", wl_trace_errmsg(tr));
        wl_trace_free(tr);
        return 2;
    }

    /* calibration: tables when present, else the roofline with the profile's efficiencies */
    sim_calib_t *calib = NULL;
    if (cfg.hw.calib_gpu[0]) {
        calib = sim_calib_load(o.calib_dir, cfg.hw.calib_gpu, false, err, sizeof err);
        if (!calib)
            fprintf(stderr, "sluice sim: calibration tables unavailable (%s); pricing with the roofline only\n", err);
    }
    sim_t *sim = sim_create(&cfg, calib, err, sizeof err);
    sim_calib_free(calib);
    if (!sim) {
        wl_trace_free(tr);
        return cli_fail(cmd, "%s", err);
    }
    collect_t col = {.block_size = cfg.sched.block_size, .progress = isatty(2), .t0 = wall_now()};
    sim_sink_t sink = {&col, on_done, on_step, on_progress};
    sim_totals_t tot;
    double t0 = wall_now();
    rc = sim_run(sim, tr, &sink, &tot, err, sizeof err);
    double wall = wall_now() - t0;
    if (col.progress && wall >= 1.0)
        fprintf(stderr, "\r%*s\r", 80, "");
    int exit_code = 0;
    if (rc != SL_OK) {
        exit_code = cli_fail(cmd, "simulation stopped: %s", err);
    } else {
        an_metrics_opts_t mo;
        an_metrics_opts_default(&mo);
        mo.slo = slo, mo.n_replicas = cfg.replicas, mo.kv_blocks_per_replica = tot.num_blocks;
        an_summary_t sum;
        an_summary_init(&sum);
        if (an_metrics_compute(col.req, col.n_req, col.step, col.n_step, &mo, &sum) != SL_OK) {
            exit_code = cli_fail(cmd, "out of memory computing the summary");
        } else {
            sum.mfu = sum.duration > 0 ? tot.flops / (sum.duration * cfg.replicas * tot.peak_flops) : NAN;
            int64_t run_id = 0;
            sim_config_t used = cfg;
            used.sched.num_blocks = tot.num_blocks;
            if (!o.no_record && record(&o, &used, workload, wl_trace_hash(tr), &col, &sum, &run_id, cmd) != SL_OK)
                exit_code = 2;
            char slo_text[256] = "";
            an_slo_format(&slo, slo_text, sizeof slo_text);
            if (o.json)
                print_json(&sum, wall, run_id);
            else
                print_summary(&sum, &tot, wall, workload, &used, &slo, slo_text);
            if (!o.json && run_id > 0)
                printf("recorded as run %lld in %s\n", (long long)run_id, o.db);
        }
    }
    sl_free(col.req);
    sl_free(col.step);
    sim_free(sim);
    wl_trace_free(tr);
    return exit_code;
}
