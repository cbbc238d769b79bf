/* sim_run.c — one simulated run's shared pieces: workload, calibration, record collection,
 * summary and recording (factored out of cmd_sim.c for `sluice sim`, `tune` and `plan`). */
#include "cli/sim_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli/cli.h"
#include "sched/status.h"
#include "workloads/presets.h"

int cli_workload_load(const cli_workload_t *w, wl_trace_t *tr, char *name, size_t namelen, char *err,
                      size_t errlen)
{
    const char *trace = w->trace, *preset = w->preset;
    if (trace && preset) {
        snprintf(err, errlen, "--trace and --preset are exclusive");
        return SL_EINVAL;
    }
    if (!trace && !preset)
        trace = access(CLI_DEFAULT_TRACE, R_OK) == 0 ? CLI_DEFAULT_TRACE : NULL;
    if (!trace && !preset)
        preset = "chat";
    wl_trace_clear(tr);
    int rc;
    if (trace) {
        rc = wl_trace_read_file(tr, trace);
        if (rc == SL_OK && w->n > 0)
            wl_trace_truncate(tr, (size_t)w->n);
        snprintf(name, namelen, "%s", trace);
    } else {
        rc = wl_preset_generate(preset, w->n > 0 ? (size_t)w->n : 0, w->rate, w->seed, 0, tr);
        snprintf(name, namelen, "preset %s", preset);
    }
    if (rc == SL_OK && w->rate_scale > 0 && w->rate_scale != 1)
        rc = wl_trace_rate_scale(tr, w->rate_scale);
    if (rc != SL_OK)
        snprintf(err, errlen, "workload: %s", wl_trace_errmsg(tr));
    return rc;
}

int cli_calib_load(const char *cmd, const char *calib_dir, const sim_hw_t *hw, sim_calib_t **out)
{
    *out = NULL;
    if (!hw->calib_gpu[0] || !strcmp(calib_dir, "none"))
        return 0;
    char err[512];
    *out = sim_calib_load(calib_dir, hw->calib_gpu, false, err, sizeof err);
    if (*out)
        return 0;
    if (strcmp(calib_dir, SIM_CALIB_DEFAULT_DIR)) /* a folder the user named: a typo must not pass */
        return cli_fail(cmd, "--calib-dir %s: %s (--calib-dir none prices with the roofline only)", calib_dir, err);
    fprintf(stderr, "sluice %s: calibration tables unavailable (%s); pricing with the roofline only\n", cmd, err);
    return 0;
}

/* ---- record collection -------------------------------------------------------------------- */

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
    cli_collect_t *c = ctx;
    if (grow((void **)&c->req, &c->cap_req, c->n_req + 1, sizeof *c->req))
        return SL_ENOMEM;
    c->req[c->n_req++] = (an_request_rec_t){
        .req_id = (int64_t)d->id, .replica = replica, .priority = d->priority, .arrival = d->arrival,
        .first_scheduled = d->first_scheduled, .first_token = d->first_token, .finished = d->finished,
        .prompt_len = d->prompt_len, .output_len = d->output_len, .cached_prompt_len = d->cached_prompt_len,
        .preemptions = d->preemptions, .finish_reason = (int)d->reason};
    return SL_OK;
}

/* Writes the pending batch of streamed steps to the store. */
static int flush_steps(cli_collect_t *c)
{
    int rc = c->n_step ? an_run_add_steps(c->st, c->run_id, c->step, c->n_step) : SL_OK;
    c->n_step = 0;
    if (rc != SL_OK && c->stream_rc == SL_OK)
        c->stream_rc = rc;
    return rc;
}

static int on_step(void *ctx, const sim_step_info_t *in)
{
    cli_collect_t *c = ctx;
    const sched_step_t *s = in->step;
    an_step_rec_t rec = {
        .replica = in->replica, .seq_no = (int64_t)s->seq_no, .t_start = in->t_start, .t_end = in->t_end,
        .n_seqs = s->n_seqs, .n_tokens = s->n_tokens, .n_prefill_tokens = s->n_prefill_tokens,
        .n_decode_seqs = s->n_decode_seqs, .n_padded_tokens = s->n_padded_tokens,
        .kv_used_blocks = in->stats->used_blocks, .kv_reserved_slots = in->stats->kv_reserved_slots,
        .kv_used_slots = in->stats->kv_used_slots, .kv_naive_slots = in->stats->kv_naive_slots,
        .n_preempted = s->n_preempted};
    if (c->steps.n == 0) /* every replica has the same pool */
        an_step_accum_init(&c->steps, in->stats->num_blocks);
    an_step_accum_add(&c->steps, &rec);
    if (!c->keep_steps && !c->st)
        return SL_OK;
    if (grow((void **)&c->step, &c->cap_step, c->n_step + 1, sizeof *c->step))
        return SL_ENOMEM;
    c->step[c->n_step++] = rec;
    return c->st && c->n_step == CLI_STEP_BATCH ? flush_steps(c) : SL_OK;
}

double cli_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_progress(void *ctx, double now, uint64_t done, uint64_t total)
{
    cli_collect_t *c = ctx;
    if (!c->progress || cli_wall_now() - c->t0 < 1.0)
        return;
    int w = 40, fill = total ? (int)(w * (double)done / total) : 0;
    fprintf(stderr, "\r[%.*s%*s] %llu/%llu requests, t=%.0f s", fill,
            "########################################", w - fill, "", (unsigned long long)done,
            (unsigned long long)total, now);
}

void cli_collect_init(cli_collect_t *c, bool keep_steps, bool progress)
{
    *c = (cli_collect_t){.keep_steps = keep_steps, .progress = progress, .t0 = cli_wall_now()};
    an_step_accum_init(&c->steps, 0);
}

void cli_collect_stream(cli_collect_t *c, an_store_t *st, int64_t run_id)
{
    c->st = st, c->run_id = run_id;
}

sim_sink_t cli_collect_sink(cli_collect_t *c)
{
    return (sim_sink_t){c, on_done, on_step, on_progress};
}

void cli_collect_free(cli_collect_t *c)
{
    sl_free(c->req);
    sl_free(c->step);
    c->req = NULL, c->step = NULL;
    c->n_req = c->cap_req = c->n_step = c->cap_step = 0;
}

/* ---- summary and recording ---------------------------------------------------------------- */

int cli_sim_summary(const cli_collect_t *c, const sim_totals_t *tot, const sim_config_t *cfg, const an_slo_t *slo,
                    an_summary_t *out)
{
    an_metrics_opts_t mo;
    an_metrics_opts_default(&mo);
    if (slo)
        mo.slo = *slo;
    mo.n_replicas = cfg->replicas;
    an_summary_init(out);
    int rc = an_metrics_compute_accum(c->req, c->n_req, &c->steps, &mo, out);
    if (rc == SL_OK)
        out->mfu = out->duration > 0 ? tot->flops / (out->duration * cfg->replicas * tot->peak_flops) : NAN;
    return rc;
}

int cli_sim_spec_check(const sim_config_t *cfg, bool acceptance_given, char *err, size_t errlen)
{
    if (cfg->sched.num_speculative_tokens <= 0 || acceptance_given)
        return SL_OK;
    snprintf(err, errlen,
             "num_speculative_tokens %d needs --spec-acceptance A (0..1): the probability that the target "
             "model accepts a draft token, given it accepted the drafts before it (an engine's accepted / "
             "drafted share is lower; docs/SIMULATOR.md, \"Speculative decoding\", converts it)",
             cfg->sched.num_speculative_tokens);
    return SL_EINVAL;
}

/* x as text that reads back as the same double, short where it can be */
static void exact_text(double x, char out[32])
{
    snprintf(out, 32, "%.15g", x);
    if (strtod(out, NULL) != x)
        snprintf(out, 32, "%.17g", x);
}

bool cli_sim_config_json(const sim_config_t *cfg, const char *calib_dir, char *buf, size_t len)
{
    char acc[32], prop[32];
    exact_text(cfg->spec_acceptance, acc);
    exact_text(cfg->spec_propose, prop);
    /* the folder as a JSON string, escaped: a path may hold quotes or backslashes */
    cJSON *dir = cJSON_CreateString(calib_dir);
    char *dir_json = dir ? cJSON_PrintUnformatted(dir) : NULL;
    cJSON_Delete(dir);
    if (!dir_json)
        return false;
    size_t k = (size_t)snprintf(buf, len,
                                "{\"replicas\": %d, \"tp\": %d, \"router\": \"%s\", \"spec_acceptance\": %s, "
                                "\"spec_propose\": %s, \"calib_dir\": %s",
                                cfg->replicas, cfg->tp, sim_router_name(cfg->router), acc, prop, dir_json);
    cJSON_free(dir_json);
    for (int i = 0; i < sched_knob_count() && k < len; i++) {
        char v[64];
        const sched_knob_t *kn = sched_knob_at(i);
        if (kn->type != SCHED_KNOB_MODEL && sched_config_get(&cfg->sched, kn->name, v, sizeof v) == SL_OK)
            k += (size_t)snprintf(buf + k, len - k, kn->type == SCHED_KNOB_STRATEGY ? ", \"%s\": \"%s\"" : ", \"%s\": %s",
                                  kn->name, v);
    }
    if (k + 1 >= len)
        return false;
    buf[k] = '}', buf[k + 1] = 0;
    return true;
}

int cli_sim_record_begin(an_store_t *st, const sim_config_t *cfg, const char *calib_dir, const char *workload,
                         uint64_t hash, uint64_t seed, int64_t *run_id)
{
    char json[8192];
    if (!cli_sim_config_json(cfg, calib_dir, json, sizeof json)) /* only a very long --calib-dir */
        snprintf(json, sizeof json, "{\"error\": \"configuration too long to record\"}");
    an_run_info_t info = {.mode = "sim", .hardware = cfg->hw.name, .model = cfg->model.name,
                          .strategy = sched_strategy_name(cfg->sched.strategy), .config_json = json,
                          .workload_name = workload, .workload_hash = hash, .seed = seed};
    return an_run_begin(st, &info, run_id);
}

int cli_sim_record_finish(an_store_t *st, int64_t run_id, const cli_collect_t *c, bool with_steps,
                          const an_summary_t *sum, int run_rc, const char *run_err)
{
    if (run_rc != SL_OK) {
        an_run_fail(st, run_id, run_err);
        return run_rc;
    }
    int rc = SL_OK;
    for (size_t i = 0; rc == SL_OK && i < c->n_req; i += CLI_STEP_BATCH)
        rc = an_run_add_requests(st, run_id, c->req + i, c->n_req - i < CLI_STEP_BATCH ? c->n_req - i : CLI_STEP_BATCH);
    /* kept steps, or the last streamed batch */
    for (size_t i = 0; rc == SL_OK && (with_steps || c->st) && i < c->n_step; i += CLI_STEP_BATCH)
        rc = an_run_add_steps(st, run_id, c->step + i, c->n_step - i < CLI_STEP_BATCH ? c->n_step - i : CLI_STEP_BATCH);
    if (rc == SL_OK)
        return an_run_finish(st, run_id, sum);
    an_run_fail(st, run_id, an_store_errmsg(st));
    return rc;
}

int cli_sim_record(an_store_t *st, const sim_config_t *cfg, const char *calib_dir, const char *workload,
                   uint64_t hash, uint64_t seed, const cli_collect_t *c, bool with_steps, const an_summary_t *sum,
                   int64_t *run_id)
{
    int rc = cli_sim_record_begin(st, cfg, calib_dir, workload, hash, seed, run_id);
    return rc == SL_OK ? cli_sim_record_finish(st, *run_id, c, with_steps, sum, SL_OK, NULL) : rc;
}
