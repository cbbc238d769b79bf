/* cmd_serve.c — `sluice serve`: the OpenAI-compatible HTTP server (engine/http/server.h) on one
 * engine. Starts listening first (/health answers 503 while the model loads), then loads the
 * model, serves until SIGINT or SIGTERM, then stops accepting, lets in-flight requests finish
 * within --shutdown-timeout (aborting the rest) and exits 0.
 *
 * Scheduler settings: every knob of the sched_knob table is a flag (cli/sched_opts.h), and
 * --config FILE applies a JSON file of them. --settings-from DB [--recommendation ID] first applies
 * a stored recommendation (analysis/recommend.h; ID 0 or absent = the latest); the flags and
 * --config files given on the command line are applied after it, so they override it. The
 * recommendation's max_sequence_length is not taken (it describes the workload it was tuned on):
 * the served model's context applies unless --max-sequence-length is given.
 *
 * Run record (--db FILE or --record): the served traffic is recorded as a "real" run in the store
 * (analysis/store.h) at shutdown: one request record per finished generation request and one
 * step record per engine step, each kept up to a bound (--record-max requests, 8x as many steps;
 * the first ones are kept, the rest counted as dropped and reported).
 *
 * Adaptive tuning (--adaptive [--slo ttft_p99=1s,tpot_p99=100ms]): the engine's controller
 * (sluice_engine_params.adaptive, sched/adapt.h) moves max_num_batched_tokens (continuous) or
 * batch_timeout_ms (static strategies) between steps toward the SLO's p99 TTFT / TPOT limits
 * (defaults 1 s and 100 ms); each change is a stderr line, and /metrics shows the live values.
 *
 * Signals: SIGINT and SIGTERM are blocked before any thread starts (so every thread inherits the
 * mask) and the main thread takes them with sigwait(): no handler, no global flag.
 *
 * Exit codes: 0 after a clean shutdown; 2 for bad options, a missing or foreign settings store, an
 * unknown recommendation, a model that fails to load, or a run that cannot be recorded. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/metrics.h"
#include "analysis/recommend.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "cli/engine_run.h"
#include "cli/sched_opts.h"
#include "engine/engine.h"
#include "engine/http/server.h"
#include "sched/status.h"

#define CMD "serve"
#define STEPS_PER_REQUEST 8 /* step records kept per request record */

static const char usage[] =
    "usage: sluice serve -m MODEL [options] [scheduler flags]\n"
    "  -m, --model PATH            GGUF file or synthetic:SHAPE\n"
    "  --host ADDR                 IPv4 address to bind (default 127.0.0.1)\n"
    "  --port N                    TCP port; 0 = any free port (default 8080)\n"
    "  --served-model-name NAME    the id clients send as \"model\" (default: file name without .gguf)\n"
    "  --chat-template chatml|llama2  template for models without one sluice can render\n"
    "  --backend cpu|cuda          (default cpu)\n"
    "  --threads N                 cpu threads (default: all cores)\n"
    "  --fixed-threads             every step on all N threads, even while other processes hold cores\n"
    "                              (default: fewer threads then)\n"
    "  --kv-memory-mb MB           KV pool cap (default: enough for max_num_seqs full sequences)\n"
    "  --kv-dtype f32|f16|int8     KV cache elements on the cpu backend (default f16 on CPUs with\n"
    "                              AVX-512, f32 elsewhere; int8: half f16's memory; cuda: always f16);\n"
    "                              alias --kv-cache-dtype\n"
    "  --idle-spin-ms MS           after the last step, poll for new work this long before sleeping\n"
    "                              (a core that slept starts slow; default 1000, 0 = sleep at once)\n"
    "  --num-speculative-tokens K  speculative decoding: up to K draft tokens per step by prompt lookup,\n"
    "                              verified in the same forward (same output; default 0 = off)\n"
    "  --prompt-lookup-min N, --prompt-lookup-max N  n-gram lengths the lookup matches (default 2, 3)\n"
    "  --max-body BYTES            request body limit before 413 (default 1048576)\n"
    "  --max-connections N         concurrent connections (default 512)\n"
    "  --shutdown-timeout S        seconds in-flight requests get on SIGINT/SIGTERM (default 10)\n"
    "  --settings-from DB          start from a stored recommendation (sluice tune); flags override it\n"
    "  --recommendation ID         which one (default 0: the latest)\n"
    "  --db FILE                   record the served run (mode real) in FILE at shutdown\n"
    "  --record                    record it in sluice.db (the default --db)\n"
    "  --record-max N              request records kept (default 20000; 8x as many steps)\n"
    "  --config FILE               scheduler settings from a JSON object of knob names\n"
    "  --adaptive                  adjust max_num_batched_tokens / batch_timeout_ms while serving\n"
    "  --slo ttft_p99=1s,tpot_p99=100ms  the adaptive controller's targets (p99 TTFT / TPOT terms only)\n"
    "scheduler flags (--NAME VALUE or --NAME=VALUE; queue full = max_waiting_requests -> 429):\n";

/* The served run's records, written by the engine thread (request results through the server's
 * hook, steps through on_step) and read by the main thread only after the engine thread is joined
 * (sluice_engine_shutdown), so they need no lock. Bounded: the first max_req / max_step records
 * are kept, the rest counted. */
typedef struct serve_rec {
    an_request_rec_t *req;
    an_step_rec_t *step;
    size_t n_req, cap_req, max_req, dropped_req;
    size_t n_step, cap_step, max_step, dropped_step;
    cli_spec_counts_t spec; /* every step's, recorded or not */
    bool oom;
} serve_rec_t;

/* Makes room for one more record in *p (n used, *cap allocated, at most max); false when the
 * bound is reached or memory is short (then *oom). */
static bool rec_room(void **p, size_t n, size_t *cap, size_t max, size_t sz, bool *oom)
{
    if (n < *cap)
        return true;
    if (n >= max)
        return false;
    size_t c = *cap ? 2 * *cap : 1024;
    if (c > max)
        c = max;
    void *q = sl_realloc(*p, c * sz);
    if (!q) {
        *oom = true;
        return false;
    }
    *p = q;
    *cap = c;
    return true;
}

static void rec_result(const sluice_result *r, void *user)
{
    serve_rec_t *rec = user;
    if (!rec_room((void **)&rec->req, rec->n_req, &rec->cap_req, rec->max_req, sizeof *rec->req, &rec->oom)) {
        rec->dropped_req++;
        return;
    }
    const sluice_sample *s = r->n_samples > 0 ? &r->samples[0] : NULL;
    rec->req[rec->n_req] = (an_request_rec_t){
        .req_id = (int64_t)rec->n_req, .replica = 0, .priority = 0,
        .arrival = r->t_arrival, .first_scheduled = r->t_first_scheduled,
        .first_token = r->t_first_token, .finished = r->t_finish,
        .prompt_len = r->n_prompt_ids, .output_len = s ? s->n_ids : 0,
        .cached_prompt_len = r->n_cached_prompt_tokens, .preemptions = r->preemptions,
        .finish_reason = r->status == SLUICE_OK && s ? (int)s->finish_reason : (int)SLUICE_FINISH_ABORT,
    };
    rec->n_req++;
}

static void rec_step(const sluice_step_info *i, void *user)
{
    serve_rec_t *rec = user;
    cli_spec_add(&rec->spec, i);
    if (!rec_room((void **)&rec->step, rec->n_step, &rec->cap_step, rec->max_step, sizeof *rec->step, &rec->oom)) {
        rec->dropped_step++;
        return;
    }
    rec->step[rec->n_step++] = (an_step_rec_t){
        .replica = 0, .seq_no = (int64_t)i->seq_no, .t_start = i->t_start, .t_end = i->t_end,
        .n_seqs = i->n_seqs, .n_tokens = i->n_tokens, .n_prefill_tokens = i->n_prefill_tokens,
        .n_decode_seqs = i->n_decode_seqs, .n_padded_tokens = i->n_padded_tokens,
        .kv_used_blocks = i->kv_blocks_used, .kv_reserved_slots = i->kv_reserved_slots,
        .kv_used_slots = i->kv_used_slots, .kv_naive_slots = i->kv_naive_slots,
        .n_preempted = i->n_preempted,
    };
}

/* Writes the run to db (after the engine thread is joined). 0, or 2 with the reason printed. */
static int rec_write(const serve_rec_t *rec, const char *db, const sluice_engine *e, const sluice_engine_params *ep)
{
    if (rec->n_req == 0) {
        fprintf(stderr, "sluice serve: no request finished: nothing recorded in %s\n", db);
        return 0;
    }
    cli_engine_run_t run = {.req = rec->req, .n_req = rec->n_req, .step = rec->step, .n_step = rec->n_step,
                            .spec = rec->spec,
                            .oom = rec->oom};
    an_summary_t sum;
    if (cli_engine_summary(e, &run, &sum) != SL_OK)
        return cli_fail(CMD, "out of memory collecting the run records: nothing recorded in %s", db);
    cli_engine_opts_t o = {.model = ep->model, .threads = ep->n_threads, .kv_dtype = ep->kv_dtype,
                           .lookup_min = ep->prompt_lookup_min, .lookup_max = ep->prompt_lookup_max,
                           .sched = *eng_engine_sched_config(e)};
    an_store_t *st = NULL;
    int64_t run_id = 0;
    int rc = an_store_open(db, &st);
    if (rc == SL_OK)
        rc = cli_engine_record(st, e, &o, "serve", 0, &run, &sum, &run_id);
    if (rc != SL_OK) {
        cli_fail(CMD, "%s: %s", db, st ? an_store_errmsg(st) : sl_strerror(rc));
        an_store_close(st);
        return 2;
    }
    an_store_close(st);
    fprintf(stderr, "sluice serve: recorded run %lld in %s (%zu requests, %zu steps", (long long)run_id, db,
            rec->n_req, rec->n_step);
    if (rec->dropped_req || rec->dropped_step)
        fprintf(stderr, "; %zu requests and %zu steps beyond --record-max not kept", rec->dropped_req,
                rec->dropped_step);
    fprintf(stderr, ")\n");
    return 0;
}

static int num_arg(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || x < lo || x > hi) {
        cli_fail(CMD, "%s: expected a number in %g..%g, got '%s'", flag, lo, hi, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

/* "path/to/stories260K.gguf" -> "stories260K" into buf. */
static const char *default_model_name(const char *path, char *buf, size_t cap)
{
    const char *base = strrchr(path, '/');
    snprintf(buf, cap, "%s", base ? base + 1 : path);
    size_t n = strlen(buf);
    if (n > 5 && !strcmp(buf + n - 5, ".gguf")) buf[n - 5] = '\0';
    return buf;
}

typedef struct serve_opts {
    sluice_engine_params ep;
    srv_config_t sc;
    double shutdown_s;
    const char *settings_db;
    int64_t reco_id;
    const char *db;
    size_t record_max;
    const char *slo;
} serve_opts_t;

/* One pass over the arguments. Serve's own options go into *o; scheduler flags and --config files
 * are applied onto *cfg. Returns 1 after --help, 0 when all is well, 2 after printing an error. */
static int parse_args(int argc, char **argv, serve_opts_t *o, sched_config_t *cfg)
{
    double x;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            sched_opts_print_help(stdout);
            return 1;
        }
        if (!strcmp(a, "--record")) {
            if (!o->db) o->db = "sluice.db";
            continue;
        }
        if (!strcmp(a, "--adaptive")) {
            o->ep.adaptive = true;
            continue;
        }
        if (!strcmp(a, "--fixed-threads")) {
            o->ep.fixed_threads = true;
            continue;
        }
        static const char *const valued[] = {"-m", "--model", "--host", "--port", "--served-model-name",
                                             "--chat-template", "--backend", "--threads", "--kv-memory-mb", "--idle-spin-ms",
                                             "--kv-dtype", "--kv-cache-dtype", "--prompt-lookup-min", "--prompt-lookup-max",
                                             "--max-body", "--max-connections", "--shutdown-timeout",
                                             "--settings-from", "--recommendation", "--db", "--record-max",
                                             "--slo"};
        bool ours = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0] && !ours; k++) ours = !strcmp(a, valued[k]);
        if (!ours) {
            char err[512];
            int rc = sched_opts_parse_arg(cfg, argc, argv, &i, err, (int)sizeof err);
            if (rc < 0) return cli_fail(CMD, "%s", err);
            if (rc == 0) {
                fputs(usage, stderr);
                return cli_fail(CMD, "unknown option '%s' (sluice serve --help lists them)", a);
            }
            continue;
        }
        if (!v) return cli_fail(CMD, "%s needs a value", a);
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->ep.model = v;
        } else if (!strcmp(a, "--host")) {
            o->sc.host = v;
        } else if (!strcmp(a, "--port")) {
            if (!num_arg(a, v, 0, 65535, &x)) return 2;
            o->sc.port = (int)x;
        } else if (!strcmp(a, "--served-model-name")) {
            o->sc.model_name = v;
        } else if (!strcmp(a, "--chat-template")) {
            o->sc.chat_template = v;
        } else if (!strcmp(a, "--backend")) {
            o->ep.backend = v;
        } else if (!strcmp(a, "--threads")) {
            if (!num_arg(a, v, 0, 4096, &x)) return 2;
            o->ep.n_threads = (int)x;
        } else if (!strcmp(a, "--kv-memory-mb")) {
            if (!num_arg(a, v, 0, 1 << 24, &x)) return 2;
            o->ep.kv_memory_mb = x;
        } else if (!strcmp(a, "--idle-spin-ms")) {
            if (!num_arg(a, v, 0, 3600e3, &x)) return 2;
            o->ep.idle_spin_ms = x;
        } else if (cli_is_kv_dtype_flag(a)) {
            if (cli_kv_dtype(CMD, a, v, &o->ep.kv_dtype)) return 2;
        } else if (!strcmp(a, "--prompt-lookup-min") || !strcmp(a, "--prompt-lookup-max")) {
            if (!num_arg(a, v, 1, 16, &x)) return 2;
            *(!strcmp(a, "--prompt-lookup-min") ? &o->ep.prompt_lookup_min : &o->ep.prompt_lookup_max) = (int)x;
        } else if (!strcmp(a, "--max-body")) {
            if (!num_arg(a, v, 64, 1 << 30, &x)) return 2;
            o->sc.max_body = (size_t)x;
        } else if (!strcmp(a, "--max-connections")) {
            if (!num_arg(a, v, 1, 65536, &x)) return 2;
            o->sc.max_connections = (int)x;
        } else if (!strcmp(a, "--shutdown-timeout")) {
            if (!num_arg(a, v, 0, 3600, &x)) return 2;
            o->shutdown_s = x;
        } else if (!strcmp(a, "--settings-from")) {
            o->settings_db = v;
        } else if (!strcmp(a, "--recommendation")) {
            if (!num_arg(a, v, 0, 9e15, &x)) return 2;
            if (x != (double)(int64_t)x) return cli_fail(CMD, "--recommendation: expected an integer id, got '%s'", v);
            o->reco_id = (int64_t)x;
        } else if (!strcmp(a, "--db")) {
            o->db = v;
        } else if (!strcmp(a, "--record-max")) {
            if (!num_arg(a, v, 1, 1e8, &x)) return 2;
            o->record_max = (size_t)x;
        } else if (!strcmp(a, "--slo")) {
            o->slo = v;
        }
    }
    return 0;
}

/* The SLO's p99 TTFT / TPOT limits become the adaptive controller's targets (a term left out keeps
 * its default); any other term is refused, since the controller steers only those two. 0, or 2
 * with the reason printed. */
static int adaptive_targets(const char *spec, sluice_engine_params *ep)
{
    an_slo_t slo;
    char err[256];
    if (an_slo_parse(spec, &slo, err, sizeof err) != SL_OK) return cli_fail(CMD, "--slo: %s", err);
    for (int k = 0; k < slo.n; k++) {
        if (slo.term[k].percentile != 99 || slo.term[k].metric == AN_SLO_E2E)
            return cli_fail(CMD, "--slo: the adaptive controller steers p99 TTFT and TPOT only "
                                 "(ttft_p99=..., tpot_p99=...), got '%s'", spec);
        if (slo.term[k].metric == AN_SLO_TTFT)
            ep->adaptive_ttft_p99_s = slo.term[k].limit;
        else
            ep->adaptive_tpot_p99_s = slo.term[k].limit;
    }
    return 0;
}

/* Applies the recommendation onto *cfg and prints what changed. 0, or 2 with the reason printed. */
static int apply_recommendation(const serve_opts_t *o, sched_config_t *cfg)
{
    sched_config_t before = *cfg, c = *cfg;
    if (c.max_sequence_length <= 0) /* "from the model": any valid length lets the settings validate */
        c.max_sequence_length = sched_config_default().max_sequence_length;
    char err[512];
    if (an_reco_load_settings(o->settings_db, o->reco_id, &c, err, sizeof err) != SL_OK)
        return cli_fail(CMD, "--settings-from: %s", err);
    c.max_sequence_length = before.max_sequence_length;
    *cfg = c;
    char which[64];
    if (o->reco_id > 0)
        snprintf(which, sizeof which, "recommendation %lld", (long long)o->reco_id);
    else
        snprintf(which, sizeof which, "the latest recommendation");
    fprintf(stderr, "sluice serve: applied %s from %s: strategy %s", which, o->settings_db,
            sched_strategy_name(cfg->strategy));
    for (int i = 0; i < sched_knob_count(); i++) {
        const sched_knob_t *k = sched_knob_at(i);
        char was[64], now[64];
        if (k->type == SCHED_KNOB_STRATEGY || sched_config_get(&before, k->name, was, sizeof was) != SL_OK ||
            sched_config_get(cfg, k->name, now, sizeof now) != SL_OK)
            continue;
        if (strcmp(was, now) != 0) fprintf(stderr, ", %s=%s", k->name, now);
    }
    fprintf(stderr, " (flags on the command line override these)\n");
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    serve_opts_t o = {.ep = sluice_engine_default_params(), .sc = srv_config_default(), .shutdown_s = 10,
                      .record_max = 20000};
    /* pass 1: serve's options, and the scheduler flags checked on a scratch config */
    sched_config_t cfg = eng_sched_config_from_params(&o.ep), scratch = cfg;
    int rc = parse_args(argc, argv, &o, &scratch);
    if (rc) return rc == 1 ? 0 : rc;
    if (!o.ep.model) {
        fputs(usage, stderr);
        return cli_fail(CMD, "-m MODEL is required");
    }
    if (o.reco_id > 0 && !o.settings_db) return cli_fail(CMD, "--recommendation needs --settings-from DB");
    if (o.slo && !o.ep.adaptive) return cli_fail(CMD, "--slo sets the adaptive controller's targets: it needs --adaptive");
    if (o.slo && adaptive_targets(o.slo, &o.ep)) return 2;
    /* the recommendation, then pass 2: the command line's scheduler flags over it */
    if (o.settings_db && apply_recommendation(&o, &cfg)) return 2;
    if ((rc = parse_args(argc, argv, &o, &cfg))) return rc;
    o.ep.gpu_memory_utilization = cfg.gpu_memory_utilization;
    char name[256];
    if (!o.sc.model_name) o.sc.model_name = default_model_name(o.ep.model, name, sizeof name);
    serve_rec_t rec = {.max_req = o.record_max, .max_step = o.record_max * STEPS_PER_REQUEST};
    if (o.db) {
        o.sc.on_result = rec_result;
        o.sc.result_user = &rec;
        o.ep.on_step = rec_step;
        o.ep.step_user = &rec;
    }

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL); /* before any thread exists */

    char err[512];
    srv_t *srv = srv_create(&o.sc, err, sizeof err);
    if (!srv) return cli_fail(CMD, "%s", err);
    fprintf(stderr, "sluice serve: loading %s (listening on http://%s:%d, /health is 503 until ready)\n", o.ep.model,
            o.sc.host, srv_port(srv));
    sluice_engine *e = eng_engine_create(&o.ep, &cfg, err, sizeof err);
    if (!e) {
        srv_free(srv);
        return cli_fail(CMD, "%s", err);
    }
    if (srv_attach(srv, e, err, sizeof err) != 0) {
        srv_free(srv);
        sluice_engine_free(e);
        return cli_fail(CMD, "%s", err);
    }
    const sched_config_t *eff = eng_engine_sched_config(e);
    fprintf(stderr, "sluice serve: ready: model '%s' on http://%s:%d (%s, max_num_seqs %d, max_sequence_length %d, "
            "%d KV blocks of %s)\n", o.sc.model_name, o.sc.host, srv_port(srv), sched_strategy_name(eff->strategy),
            eff->max_num_seqs, eff->max_sequence_length, eff->num_blocks,
            cli_engine_kv_dtype(e, o.ep.kv_dtype));
    if (o.ep.adaptive)
        fprintf(stderr, "sluice serve: adaptive: %s toward p99 TTFT %g s, p99 TPOT %g s (0 = no target)\n",
                eff->strategy == SCHED_CONTINUOUS ? "max_num_batched_tokens" : "batch_timeout_ms",
                o.ep.adaptive_ttft_p99_s, o.ep.adaptive_tpot_p99_s);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "sluice serve: %s: stopping (in-flight requests get %.0f s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            o.shutdown_s);
    int aborted = srv_shutdown(srv, o.shutdown_s); /* joins the engine thread */
    srv_free(srv);
    fprintf(stderr, "sluice serve: stopped (%d request%s aborted)\n", aborted, aborted == 1 ? "" : "s");
    int status = o.db ? rec_write(&rec, o.db, e, &o.ep) : 0;
    sluice_engine_free(e);
    sl_free(rec.req);
    sl_free(rec.step);
    return status;
}
