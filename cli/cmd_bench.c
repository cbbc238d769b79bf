/* cmd_bench.c — `sluice bench`: drive the real engine with a workload and record the run.
 *
 * Open loop (--trace FILE | --preset NAME): requests are submitted at the trace's arrival times
 * (real time, scaled by --rate-scale). Closed loop (--concurrency C[,C...]): C requests are kept
 * in flight until --requests have completed, for each C; with two or more levels the tokens/s
 * ratio of the last level to the first is printed.
 *
 * Prompts: traces carry lengths only, so each prompt is BOS (when the vocabulary has one) plus
 * token ids drawn uniformly, with a seeded RNG, from the vocabulary's normal tokens (never control,
 * byte or unused tokens); requests of one prefix group share their first prefix_len tokens.
 * Output lengths are forced to the trace's num_decode_tokens: EOS is ignored (ignore_eos) and
 * max_tokens is the trace's length. prompt + output is clipped to the engine's
 * max_sequence_length (output first, then prompt) and the clipped count is printed.
 *
 * Each run is recorded (mode "real") in the SQLite store with the same per-request and per-step
 * records and summary as `sluice sim`, from the engine's own timestamps.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "sched/sched.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

#define CMD "bench"
#define MAX_LEVELS 16

static const char usage[] =
    "usage: sluice bench -m MODEL (--trace FILE | --preset NAME | --concurrency C[,C...]) [options]\n"
    "  -m, --model PATH          GGUF file or synthetic:SHAPE\n"
    "  --trace FILE              replay a trace CSV in real time\n"
    "  --preset NAME             replay a preset workload (chat, code, sharegpt, summarize)\n"
    "  -n N                      first N requests of the trace / preset\n"
    "  --rate R                  preset arrival rate (req/s)\n"
    "  --rate-scale X            multiply the arrival rate by X (default 1)\n"
    "  --concurrency C[,C...]    closed loop: keep C requests in flight (sweep with commas)\n"
    "  --requests N              closed loop: requests per level (default 4 * C)\n"
    "  --prompt-len L            closed loop: prompt tokens (default 128)\n"
    "  --max-tokens T            closed loop: output tokens (default 128)\n"
    "  --backend cpu|cuda        (default cpu)\n"
    "  --threads N               cpu threads (default: all cores)\n"
    "  --kv-memory-mb MB         KV pool cap (default: sized from max_num_seqs, capped by memory)\n"
    "  --seed S                  prompt RNG seed (default 1)\n"
    "  --db FILE                 run store (default sluice.db); --no-record to skip\n"
    "  --strategy NAME and every scheduler knob as --knob-name VALUE\n"
    "                            (--max-num-seqs, --max-batch-size, --batch-timeout-ms, ...)\n";

typedef struct opts {
    const char *model, *trace, *preset, *backend, *db;
    long n;
    double rate, rate_scale, kv_mb;
    int threads, n_levels, levels[MAX_LEVELS], requests, prompt_len, max_tokens;
    uint64_t seed;
    bool no_record;
    sched_config_t sched;
} opts_t;

/* What the engine's callbacks collect (requests by index, steps in order). */
typedef struct collect {
    an_request_rec_t *req;      /* (n_req) */
    size_t n_req;
    an_step_rec_t *step;
    size_t n_step, cap_step;
    bool step_oom;
    int64_t out_tokens;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* closed loop: a request finished */
    int in_flight;
} collect_t;

/* A request's user pointer: where its record goes. */
typedef struct slot {
    collect_t *c;
    size_t idx;
} slot_t;

static void on_step(const sluice_step_info *i, void *user)
{
    collect_t *c = user;
    if (c->n_step == c->cap_step) {
        size_t cap = c->cap_step ? 2 * c->cap_step : 4096;
        an_step_rec_t *p = sl_realloc(c->step, cap * sizeof *p);
        if (!p) {
            c->step_oom = true;
            return;
        }
        c->step = p, c->cap_step = cap;
    }
    c->step[c->n_step++] = (an_step_rec_t){
        .replica = 0, .seq_no = (int64_t)i->seq_no, .t_start = i->t_start, .t_end = i->t_end,
        .n_seqs = i->n_seqs, .n_tokens = i->n_tokens, .n_prefill_tokens = i->n_prefill_tokens,
        .n_decode_seqs = i->n_decode_seqs, .n_padded_tokens = i->n_padded_tokens,
        .kv_used_blocks = i->kv_blocks_used, .kv_reserved_slots = i->kv_reserved_slots,
        .kv_used_slots = i->kv_used_slots, .kv_naive_slots = i->kv_naive_slots,
        .n_preempted = i->n_preempted,
    };
}


static void on_done(const sluice_result *r, void *user)
{
    slot_t *sl = user;
    collect_t *c = sl->c;
    const sluice_sample *s = &r->samples[0];
    c->req[sl->idx] = (an_request_rec_t){
        .req_id = (int64_t)sl->idx, .replica = 0, .priority = 0,
        .arrival = r->t_arrival, .first_scheduled = r->t_first_scheduled,
        .first_token = r->t_first_token, .finished = r->t_finish,
        .prompt_len = r->n_prompt_ids, .output_len = s->n_ids,
        .cached_prompt_len = r->n_cached_prompt_tokens, .preemptions = r->preemptions,
        .finish_reason = r->status == SLUICE_OK ? (int)s->finish_reason : (int)SLUICE_FINISH_ABORT,
    };
    pthread_mutex_lock(&c->mu);
    c->out_tokens += s->n_ids;
    c->in_flight--;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* ---- prompts -------------------------------------------------------------------------------- */

typedef struct vocab_pool {
    int32_t *ids;   /* normal tokens */
    int n;
    int32_t bos;    /* -1 when none */
} vocab_pool_t;

static int pool_build(const eng_model_t *m, vocab_pool_t *vp)
{
    const eng_tokenizer_t *t = m->tok;
    vp->ids = sl_malloc(sizeof(int32_t) * (size_t)m->cfg.vocab);
    if (!vp->ids)
        return SL_ENOMEM;
    vp->n = 0;
    vp->bos = t && eng_tok_add_bos(t) ? eng_tok_bos(t) : -1;
    for (int32_t id = 0; id < m->cfg.vocab; id++)
        if (!t || eng_tok_type(t, id) == ENG_TOKT_NORMAL)
            vp->ids[vp->n++] = id;
    return vp->n > 0 ? SL_OK : SL_EINVAL;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fills ids[0..len): BOS, then the group's shared prefix (seeded by group), then the request's
 * own tokens (seeded by request index). */
static void make_prompt(const vocab_pool_t *vp, uint64_t seed, size_t idx, int group, int prefix_len,
                        int32_t *ids, int len)
{
    int k = 0;
    if (vp->bos >= 0)
        ids[k++] = vp->bos;
    uint64_t gs = seed ^ (0xA5A5A5A5ull + (uint64_t)group * 0x100000001B3ull);
    for (; group >= 0 && k < prefix_len && k < len; k++)
        ids[k] = vp->ids[splitmix(&gs) % (uint64_t)vp->n];
    uint64_t rs = seed + idx * 0x2545F4914F6CDD1Dull;
    for (; k < len; k++)
        ids[k] = vp->ids[splitmix(&rs) % (uint64_t)vp->n];
}

/* ---- one run -------------------------------------------------------------------------------- */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(double t)
{
    double d = t - wall_now();
    if (d > 0)
        nanosleep(&(struct timespec){(time_t)d, (long)((d - floor(d)) * 1e9)}, NULL);
}

static void print_lat(const char *name, double mean, double p50, double p90, double p99)
{
    printf("  %-10s mean %8.3f  p50 %8.3f  p90 %8.3f  p99 %8.3f s\n", name, mean, p50, p90, p99);
}

static void print_summary(const an_summary_t *s, const char *model, const char *backend,
                          const sched_config_t *sc, const char *workload, int rejected, int clipped)
{
    printf("sluice bench: %s on %s, %s, %s\n", model, backend, sched_strategy_name(sc->strategy), workload);
    printf("  requests   %.0f (%.0f completed, %d rejected, %d clipped to the context) over %.1f s\n",
           s->n_requests, s->n_completed, rejected, clipped, s->duration);
    printf("  throughput %.2f req/s, %.0f input tok/s, %.0f output tok/s\n", s->request_throughput,
           s->input_tps, s->output_tps);
    print_lat("TTFT", s->ttft_mean, s->ttft_p50, s->ttft_p90, s->ttft_p99);
    print_lat("TPOT", s->tpot_mean, s->tpot_p50, s->tpot_p90, s->tpot_p99);
    print_lat("E2E", s->e2e_mean, s->e2e_p50, s->e2e_p90, s->e2e_p99);
    print_lat("queueing", s->queue_mean, s->queue_p50, s->queue_p90, s->queue_p99);
    printf("  preemptions %.0f (%.0f requests); prefix cache hit rate %.1f%%\n", s->preemptions,
           s->preempted_requests, 100 * s->prefix_hit_rate);
    printf("  KV         %d blocks; utilisation mean %.1f%% peak %.1f%%; waste paged %.1f%%, "
           "max-length reservation %.1f%%\n", sc->num_blocks, 100 * s->kv_util_mean,
           100 * s->kv_util_peak, 100 * s->kv_waste, 100 * s->kv_naive_waste);
    printf("  batches    %.1f seqs/step, %.0f tokens/step, %.0f steps, padding %.1f%%, busy %.1f%%\n",
           s->batch_size_mean, s->tokens_per_step, s->n_steps, 100 * s->padding_frac, 100 * s->busy_frac);
}

static int record(const opts_t *o, sluice_engine *e, const char *workload, uint64_t hash,
                  const collect_t *c, const an_summary_t *sum, int64_t *run_id)
{
    an_store_t *st = NULL;
    int rc = an_store_open(o->db, &st);
    if (rc != SL_OK) {
        cli_fail(CMD, "%s: %s", o->db, st ? an_store_errmsg(st) : sl_strerror(rc));
        an_store_close(st);
        return rc;
    }
    const sched_config_t *sc = eng_engine_sched_config(e);
    char json[2048];
    int k = snprintf(json, sizeof json, "{\"backend\": \"%s\", \"threads\": %d",
                     eng_engine_backend_name(e), o->threads);
    for (int i = 0; i < sched_knob_count() && k < (int)sizeof json - 128; i++) {
        char v[64];
        const sched_knob_t *kn = sched_knob_at(i);
        if (kn->type != SCHED_KNOB_MODEL && sched_config_get(sc, kn->name, v, sizeof v) == SL_OK)
            k += snprintf(json + k, sizeof json - (size_t)k,
                          kn->type == SCHED_KNOB_STRATEGY ? ", \"%s\": \"%s\"" : ", \"%s\": %s",
                          kn->name, v);
    }
    snprintf(json + k, sizeof json - (size_t)k, "}");
    an_run_info_t info = {.mode = "real", .hardware = eng_engine_backend_name(e), .model = o->model,
                          .strategy = sched_strategy_name(sc->strategy), .config_json = json,
                          .workload_name = workload, .workload_hash = hash, .seed = o->seed};
    if ((rc = an_run_begin(st, &info, run_id)) == SL_OK) {
        rc = an_run_add_requests(st, *run_id, c->req, c->n_req);
        if (rc == SL_OK)
            rc = an_run_add_steps(st, *run_id, c->step, c->n_step);
        if (rc == SL_OK)
            rc = an_run_finish(st, *run_id, sum);
        else
            an_run_fail(st, *run_id, an_store_errmsg(st));
    }
    if (rc != SL_OK)
        cli_fail(CMD, "%s: %s", o->db, an_store_errmsg(st));
    an_store_close(st);
    return rc;
}

/* Runs the trace (open loop, concurrency 0) or a closed loop at `concurrency` over tr's rows, on a
 * fresh engine; prints and records the run. *out_tps gets output tokens per second of wall time. */
static int bench_once(const opts_t *o, const wl_trace_t *tr, int concurrency, const char *workload,
                      double *out_tps)
{
    sluice_engine_params ep = sluice_engine_default_params();
    ep.model = o->model;
    ep.backend = o->backend;
    ep.n_threads = o->threads;
    ep.kv_memory_mb = o->kv_mb;
    collect_t c = {0};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    ep.on_step = on_step;
    ep.step_user = &c;
    char err[512];
    sluice_engine *e = eng_engine_create(&ep, &o->sched, err, sizeof err);
    if (!e)
        return cli_fail(CMD, "%s", err);
    int status = 0, rejected = 0, clipped = 0;
    vocab_pool_t vp = {0};
    int max_seq = eng_engine_sched_config(e)->max_sequence_length;
    c.n_req = tr->n;
    c.req = sl_calloc(tr->n, sizeof *c.req);
    slot_t *slots = sl_calloc(tr->n, sizeof *slots);
    int32_t *ids = sl_malloc(sizeof(int32_t) * (size_t)max_seq);
    if (!c.req || !slots || !ids || pool_build(eng_engine_model(e), &vp) != SL_OK) {
        status = cli_fail(CMD, "out of memory (or a vocabulary without normal tokens)");
        goto out;
    }
    double t0 = wall_now();
    for (size_t i = 0; i < tr->n; i++) {
        int plen = tr->prompt_len[i], olen = tr->output_len[i];
        if (plen + olen > max_seq) {
            clipped++;
            olen = olen < max_seq / 2 ? olen : max_seq / 2;
            plen = max_seq - olen < plen ? max_seq - olen : plen;
        }
        make_prompt(&vp, o->seed, i, tr->prefix_group[i], tr->prefix_len[i], ids, plen);
        slots[i] = (slot_t){&c, i};
        c.req[i] = (an_request_rec_t){.req_id = (int64_t)i, .arrival = -1, .first_scheduled = -1,
                                      .first_token = -1, .finished = -1, .prompt_len = plen,
                                      .finish_reason = SLUICE_FINISH_ABORT};
        sluice_request_params rp = sluice_request_default_params();
        rp.prompt_ids = ids;
        rp.n_prompt_ids = plen;
        rp.max_tokens = olen;
        rp.temperature = 0;
        rp.ignore_eos = true;
        rp.priority = tr->priority[i];
        rp.on_done = on_done;
        rp.user = &slots[i];
        pthread_mutex_lock(&c.mu);
        if (concurrency > 0)
            while (c.in_flight >= concurrency)
                pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        if (concurrency == 0)
            sleep_until(t0 + tr->arrival[i]);
        pthread_mutex_lock(&c.mu);
        c.in_flight++;
        pthread_mutex_unlock(&c.mu);
        sluice_request_id id;
        int rc = sluice_submit(e, &rp, &id);
        if (rc != SLUICE_OK) {
            pthread_mutex_lock(&c.mu);
            c.in_flight--;
            pthread_mutex_unlock(&c.mu);
            c.req[i].arrival = c.req[i].finished = sluice_now(e);
            rejected++;
            if (rc != SLUICE_EQUEUE_FULL) {
                status = cli_fail(CMD, "request %zu: %s", i, sluice_engine_errmsg(e));
                break;
            }
        }
    }
    sluice_engine_shutdown(e, status ? 0 : 1e9); /* serve everything in flight, then join */
    double wall = wall_now() - t0;
    *out_tps = wall > 0 ? (double)c.out_tokens / wall : 0;
    if (status == 0) {
        an_metrics_opts_t mo;
        an_metrics_opts_default(&mo);
        mo.n_replicas = 1;
        mo.kv_blocks_per_replica = eng_engine_sched_config(e)->num_blocks;
        an_summary_t sum;
        an_summary_init(&sum);
        if (c.step_oom || an_metrics_compute(c.req, c.n_req, c.step, c.n_step, &mo, &sum) != SL_OK) {
            status = cli_fail(CMD, "out of memory collecting the records");
            goto out;
        }
        int64_t run_id = 0;
        if (!o->no_record && record(o, e, workload, wl_trace_hash(tr), &c, &sum, &run_id) != SL_OK)
            status = 2;
        print_summary(&sum, o->model, eng_engine_backend_name(e), eng_engine_sched_config(e),
                      workload, rejected, clipped);
        printf("  wall       %.2f s, %.1f output tok/s over wall time\n", wall, *out_tps);
        if (run_id > 0)
            printf("recorded as run %lld in %s\n", (long long)run_id, o->db);
    }
out:
    sluice_engine_free(e);
    sl_free(vp.ids);
    sl_free(ids);
    sl_free(slots);
    sl_free(c.req);
    sl_free(c.step);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    return status;
}

/* ---- options -------------------------------------------------------------------------------- */

static int num_arg(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || !(x >= lo && x <= hi)) {
        cli_fail(CMD, "%s: expected a number in %g..%g, got '%s'", flag, lo, hi, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

static int parse_levels(const char *v, opts_t *o)
{
    o->n_levels = 0;
    for (const char *p = v; p && *p && o->n_levels < MAX_LEVELS;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p || c < 1 || c > 65536 || (*end && *end != ','))
            return cli_fail(CMD, "--concurrency: expected C[,C...] with C in 1..65536, got '%s'", v);
        o->levels[o->n_levels++] = (int)c;
        p = *end ? end + 1 : end;
    }
    return o->n_levels > 0 ? 0 : cli_fail(CMD, "--concurrency needs a value");
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    sluice_engine_params ep = sluice_engine_default_params();
    *o = (opts_t){.backend = "cpu", .db = "sluice.db", .rate_scale = 1, .prompt_len = 128,
                  .max_tokens = 128, .seed = 1, .sched = eng_sched_config_from_params(&ep)};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        const char **str = !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->model
                           : !strcmp(a, "--trace")                   ? &o->trace
                           : !strcmp(a, "--preset")                  ? &o->preset
                           : !strcmp(a, "--backend")                 ? &o->backend
                           : !strcmp(a, "--db")                      ? &o->db
                                                                     : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return -1;
        } else if (str) {
            if (!v)
                return cli_fail(CMD, "%s needs a value", a);
            *str = v, i++;
        } else if (!strcmp(a, "--no-record")) {
            o->no_record = true;
        } else if (!strcmp(a, "--concurrency")) {
            if (parse_levels(v, o))
                return 2;
            i++;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--requests") || !strcmp(a, "--prompt-len") ||
                   !strcmp(a, "--max-tokens") || !strcmp(a, "--threads")) {
            if (!num_arg(a, v, 0, 1e9, &x))
                return 2;
            i++;
            if (!strcmp(a, "-n"))
                o->n = (long)x;
            else if (!strcmp(a, "--requests"))
                o->requests = (int)x;
            else if (!strcmp(a, "--prompt-len"))
                o->prompt_len = (int)x;
            else if (!strcmp(a, "--max-tokens"))
                o->max_tokens = (int)x;
            else
                o->threads = (int)x;
        } else if (!strcmp(a, "--rate") || !strcmp(a, "--rate-scale") || !strcmp(a, "--kv-memory-mb") ||
                   !strcmp(a, "--seed")) {
            if (!num_arg(a, v, 0, 1.8e19, &x))
                return 2;
            i++;
            if (!strcmp(a, "--rate"))
                o->rate = x;
            else if (!strcmp(a, "--rate-scale"))
                o->rate_scale = x;
            else if (!strcmp(a, "--kv-memory-mb"))
                o->kv_mb = x;
            else
                o->seed = (uint64_t)x;
        } else if (!strncmp(a, "--", 2) && sched_knob_find(a + 2)) {
            char err[256];
            if (!v)
                return cli_fail(CMD, "%s needs a value", a);
            if (sched_config_set(&o->sched, a + 2, v, err, sizeof err) != SL_OK)
                return cli_fail(CMD, "%s", err);
            i++;
        } else {
            fputs(usage, stderr);
            return cli_fail(CMD, "unknown option '%s'", a);
        }
    }
    if (!o->model)
        return cli_fail(CMD, "-m MODEL is required");
    if (!!o->trace + !!o->preset + (o->n_levels > 0) != 1)
        return cli_fail(CMD, "give exactly one of --trace FILE, --preset NAME, --concurrency C[,C...]");
    return 0;
}

/* The closed loop's workload: N identical-shape requests, all arriving at 0. */
static int closed_trace(const opts_t *o, int level, wl_trace_t *tr)
{
    int n = o->requests > 0 ? o->requests : 4 * level;
    wl_request_t r = {.arrival = 0, .prompt_len = o->prompt_len > 0 ? o->prompt_len : 1,
                      .output_len = o->max_tokens > 0 ? o->max_tokens : 1, .prefix_group = -1};
    wl_trace_clear(tr);
    for (int i = 0; i < n; i++)
        if (wl_trace_append(tr, &r) != SL_OK)
            return SL_ENOMEM;
    return SL_OK;
}

int cmd_bench(int argc, char **argv)
{
    opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    wl_trace_t *tr = wl_trace_create();
    if (!tr)
        return cli_fail(CMD, "out of memory");
    int status = 0;
    if (o.n_levels > 0) {
        double tps[MAX_LEVELS];
        for (int l = 0; l < o.n_levels && status == 0; l++) {
            char name[96];
            snprintf(name, sizeof name, "closed loop c=%d, %d+%d tokens", o.levels[l], o.prompt_len,
                     o.max_tokens);
            if (closed_trace(&o, o.levels[l], tr) != SL_OK)
                status = cli_fail(CMD, "out of memory");
            else
                status = bench_once(&o, tr, o.levels[l], name, &tps[l]);
        }
        if (status == 0 && o.n_levels > 1) {
            printf("\nconcurrency sweep (output tok/s over wall time):\n");
            for (int l = 0; l < o.n_levels; l++)
                printf("  c=%-5d %10.1f tok/s  %6.2fx c=%d\n", o.levels[l], tps[l],
                       tps[0] > 0 ? tps[l] / tps[0] : 0, o.levels[0]);
        }
    } else {
        if (o.trace)
            rc = wl_trace_read_file(tr, o.trace);
        else
            rc = wl_preset_generate(o.preset, (size_t)o.n, o.rate, o.seed, 0, tr);
        if (rc != SL_OK) {
            status = cli_fail(CMD, "%s", wl_trace_errmsg(tr));
        } else {
            if (o.n > 0)
                wl_trace_truncate(tr, (size_t)o.n);
            if (o.rate_scale != 1 && wl_trace_rate_scale(tr, o.rate_scale) != SL_OK)
                status = cli_fail(CMD, "--rate-scale: must be > 0");
            /* arrivals relative to the first request */
            for (size_t i = tr->n; status == 0 && i-- > 0;)
                tr->arrival[i] -= tr->arrival[0];
            double tps;
            if (status == 0)
                status = bench_once(&o, tr, 0, o.trace ? o.trace : o.preset, &tps);
        }
    }
    wl_trace_free(tr);
    return status;
}
