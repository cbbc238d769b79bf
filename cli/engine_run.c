/* engine_run.c — a workload replayed on the real engine (contract in engine_run.h). */
#include "cli/engine_run.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/sched_opts.h"
#include "engine/draft.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "sched/status.h"

/* The completion side of a replay: requests in flight, under mu. */
typedef struct flight {
    cli_engine_run_t *r;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* closed loop: a request finished */
    int in_flight;
} flight_t;

/* A request's user pointer: where its record goes. */
typedef struct slot {
    flight_t *f;
    size_t idx;
} slot_t;

static bool grow(void *pp, size_t size, size_t cap)
{
    void *q = sl_realloc(*(void **)pp, size * cap);
    if (q)
        *(void **)pp = q;
    return q != NULL;
}

/* Engine thread only; read by the caller after the engine thread is joined. */
static void on_step(const sluice_step_info *i, void *user)
{
    cli_engine_run_t *r = user;
    if (r->n_step == r->cap_step) {
        size_t cap = r->cap_step ? 2 * r->cap_step : 4096;
        if (!grow(&r->step, sizeof *r->step, cap) || !grow(&r->forward_s, sizeof *r->forward_s, cap) ||
            !grow(&r->n_sampled, sizeof *r->n_sampled, cap) ||
            !grow(&r->prefill_pairs, sizeof *r->prefill_pairs, cap) ||
            !grow(&r->dec_first, sizeof *r->dec_first, cap)) {
            r->oom = true;
            return;
        }
        r->cap_step = cap;
    }
    size_t nd = (size_t)i->n_decode_seqs;
    if (r->n_dec_kv + nd > r->cap_dec_kv) {
        size_t cap = r->cap_dec_kv ? 2 * r->cap_dec_kv : 8192;
        while (cap < r->n_dec_kv + nd)
            cap *= 2;
        if (!grow(&r->dec_kv, sizeof *r->dec_kv, cap)) {
            r->oom = true;
            return;
        }
        r->cap_dec_kv = cap;
    }
    if (nd)
        memcpy(r->dec_kv + r->n_dec_kv, i->decode_kv, nd * sizeof *r->dec_kv);
    r->dec_first[r->n_step] = r->n_dec_kv;
    r->n_dec_kv += nd;
    r->prefill_pairs[r->n_step] = i->prefill_pairs;
    r->forward_s[r->n_step] = i->forward_s;
    r->n_sampled[r->n_step] = i->n_sampled;
    cli_spec_add(&r->spec, i);
    r->step[r->n_step++] = (an_step_rec_t){
        .replica = 0, .seq_no = (int64_t)i->seq_no, .t_start = i->t_start, .t_end = i->t_end,
        .n_seqs = i->n_seqs, .n_tokens = i->n_tokens, .n_prefill_tokens = i->n_prefill_tokens,
        .n_decode_seqs = i->n_decode_seqs, .n_padded_tokens = i->n_padded_tokens,
        .kv_used_blocks = i->kv_blocks_used, .kv_reserved_slots = i->kv_reserved_slots,
        .kv_used_slots = i->kv_used_slots, .kv_naive_slots = i->kv_naive_slots,
        .n_preempted = i->n_preempted,
    };
}

static void on_done(const sluice_result *res, void *user)
{
    slot_t *sl = user;
    flight_t *f = sl->f;
    const sluice_sample *s = &res->samples[0];
    f->r->req[sl->idx] = (an_request_rec_t){
        .req_id = (int64_t)sl->idx, .replica = 0, .priority = 0,
        .arrival = res->t_arrival, .first_scheduled = res->t_first_scheduled,
        .first_token = res->t_first_token, .finished = res->t_finish,
        .prompt_len = res->n_prompt_ids, .output_len = s->n_ids,
        .cached_prompt_len = res->n_cached_prompt_tokens, .preemptions = res->preemptions,
        .finish_reason = res->status == SLUICE_OK ? (int)s->finish_reason : (int)SLUICE_FINISH_ABORT,
    };
    pthread_mutex_lock(&f->mu);
    f->r->out_tokens += s->n_ids;
    f->in_flight--;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
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

sluice_engine *cli_engine_open(const cli_engine_opts_t *o, cli_engine_run_t *r, char *err, size_t errlen)
{
    sluice_engine_params ep = sluice_engine_default_params();
    ep.model = o->model;
    ep.backend = o->backend;
    ep.n_threads = o->threads;
    ep.fixed_threads = o->fixed_threads;
    ep.kv_memory_mb = o->kv_mb;
    ep.kv_dtype = o->kv_dtype;
    ep.idle_spin_ms = o->idle_spin_ms;
    ep.num_speculative_tokens = o->sched.num_speculative_tokens;
    ep.prompt_lookup_min = o->lookup_min;
    ep.prompt_lookup_max = o->lookup_max;
    ep.on_step = on_step;
    ep.step_user = r;
    return eng_engine_create(&ep, &o->sched, err, errlen);
}

const char *cli_engine_kv_dtype(const sluice_engine *e, sluice_kv_dtype kv)
{
    return cli_kv_dtype_name(cli_kv_dtype_kept(eng_engine_backend_name(e), kv));
}

int cli_engine_check_fits(const sluice_engine *e, const wl_trace_t *tr, char *err, size_t errlen)
{
    int max_seq = eng_engine_sched_config(e)->max_sequence_length;
    for (size_t i = 0; i < tr->n; i++)
        if ((int64_t)tr->prompt_len[i] + tr->output_len[i] > max_seq) {
            snprintf(err, errlen, "request %zu: prompt %d + output %d tokens exceed the engine's "
                     "max_sequence_length %d", i, tr->prompt_len[i], tr->output_len[i], max_seq);
            return SL_ETOO_LONG;
        }
    return SL_OK;
}

int cli_engine_replay(sluice_engine *e, const cli_engine_opts_t *o, const wl_trace_t *tr, int concurrency,
                      cli_engine_run_t *r, char *err, size_t errlen)
{
    int status = SL_OK;
    flight_t f = {.r = r};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    vocab_pool_t vp = {0};
    int max_seq = eng_engine_sched_config(e)->max_sequence_length;
    r->n_req = tr->n;
    r->req = sl_calloc(tr->n ? tr->n : 1, sizeof *r->req);
    slot_t *slots = sl_calloc(tr->n ? tr->n : 1, sizeof *slots);
    int32_t *ids = sl_malloc(sizeof(int32_t) * (size_t)max_seq);
    if (!r->req || !slots || !ids || pool_build(eng_engine_model(e), &vp) != SL_OK) {
        snprintf(err, errlen, "out of memory (or a vocabulary without normal tokens)");
        status = SL_ENOMEM;
        sluice_engine_shutdown(e, 0);
        goto out;
    }
    double t0 = wall_now();
    for (size_t i = 0; i < tr->n; i++) {
        int plen = tr->prompt_len[i], olen = tr->output_len[i];
        if (plen + olen > max_seq) {
            r->clipped++;
            olen = olen < max_seq / 2 ? olen : max_seq / 2;
            plen = max_seq - olen < plen ? max_seq - olen : plen;
        }
        make_prompt(&vp, o->seed, i, tr->prefix_group[i], tr->prefix_len[i], ids, plen);
        slots[i] = (slot_t){&f, i};
        r->req[i] = (an_request_rec_t){.req_id = (int64_t)i, .arrival = -1, .first_scheduled = -1,
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
        pthread_mutex_lock(&f.mu);
        if (concurrency > 0)
            while (f.in_flight >= concurrency)
                pthread_cond_wait(&f.cv, &f.mu);
        pthread_mutex_unlock(&f.mu);
        if (concurrency == 0)
            sleep_until(t0 + tr->arrival[i] - tr->arrival[0]);
        pthread_mutex_lock(&f.mu);
        f.in_flight++;
        pthread_mutex_unlock(&f.mu);
        sluice_request_id id;
        int rc = sluice_submit(e, &rp, &id);
        if (rc != SLUICE_OK) {
            pthread_mutex_lock(&f.mu);
            f.in_flight--;
            pthread_mutex_unlock(&f.mu);
            r->req[i].arrival = r->req[i].finished = sluice_now(e);
            r->rejected++;
            if (rc != SLUICE_EQUEUE_FULL) {
                snprintf(err, errlen, "request %zu: %s", i, sluice_engine_errmsg(e));
                status = rc;
                break;
            }
        }
    }
    sluice_engine_shutdown(e, status ? 0 : 1e9); /* serve everything in flight, then join */
    r->wall = wall_now() - t0;
    sluice_stats es;
    sluice_get_stats(e, &es);
    r->thread_drops = es.thread_drops;
    if (status == SL_OK && r->oom) {
        snprintf(err, errlen, "out of memory collecting the step records");
        status = SL_ENOMEM;
    }
out:
    sl_free(vp.ids);
    sl_free(ids);
    sl_free(slots);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cv);
    return status;
}

int cli_engine_summary(const sluice_engine *e, const cli_engine_run_t *r, an_summary_t *out)
{
    an_metrics_opts_t mo;
    an_metrics_opts_default(&mo);
    mo.n_replicas = 1;
    mo.kv_blocks_per_replica = eng_engine_sched_config(e)->num_blocks;
    an_summary_init(out);
    if (r->oom)
        return SL_ENOMEM;
    return an_metrics_compute(r->req, r->n_req, r->step, r->n_step, &mo, out);
}

int cli_engine_record(an_store_t *st, const sluice_engine *e, const cli_engine_opts_t *o, const char *workload,
                      uint64_t hash, const cli_engine_run_t *r, const an_summary_t *sum, int64_t *run_id)
{
    const sched_config_t *sc = eng_engine_sched_config(e);
    char json[2048];
    int k = snprintf(json, sizeof json,
                     "{\"backend\": \"%s\", \"threads\": %d, \"fixed_threads\": %s, \"thread_drops\": %lld, "
                     "\"kv_dtype\": \"%s\"",
                     eng_engine_backend_name(e), o->threads, o->fixed_threads ? "true" : "false",
                     (long long)r->thread_drops, cli_engine_kv_dtype(e, o->kv_dtype));
    for (int i = 0; i < sched_knob_count() && k < (int)sizeof json - 128; i++) {
        char v[64];
        const sched_knob_t *kn = sched_knob_at(i);
        if (kn->type != SCHED_KNOB_MODEL && sched_config_get(sc, kn->name, v, sizeof v) == SL_OK)
            k += snprintf(json + k, sizeof json - (size_t)k,
                          kn->type == SCHED_KNOB_STRATEGY ? ", \"%s\": \"%s\"" : ", \"%s\": %s",
                          kn->name, v);
    }
    if (sc->num_speculative_tokens > 0 && k < (int)sizeof json - 256)
        k += snprintf(json + k, sizeof json - (size_t)k,
                      ", \"prompt_lookup_min\": %d, \"prompt_lookup_max\": %d, \"spec_draft_tokens\": %lld, "
                      "\"spec_accepted_tokens\": %lld, \"spec_rejections\": %lld, \"spec_lookups\": %lld, "
                      "\"spec_proposals\": %lld",
                      o->lookup_min, o->lookup_max, (long long)r->spec.drafts, (long long)r->spec.kept,
                      (long long)r->spec.rejections, (long long)r->spec.lookups, (long long)r->spec.proposals);
    snprintf(json + k, sizeof json - (size_t)k, "}");
    an_run_info_t info = {.mode = "real", .hardware = eng_engine_backend_name(e), .model = o->model,
                          .strategy = sched_strategy_name(sc->strategy), .config_json = json,
                          .workload_name = workload, .workload_hash = hash, .seed = o->seed,
                          .code_revision = cli_code_revision()};
    int rc = an_run_begin(st, &info, run_id);
    if (rc != SL_OK)
        return rc;
    rc = an_run_add_requests(st, *run_id, r->req, r->n_req);
    if (rc == SL_OK)
        rc = an_run_add_steps(st, *run_id, r->step, r->n_step);
    if (rc == SL_OK)
        return an_run_finish(st, *run_id, sum);
    an_run_fail(st, *run_id, an_store_errmsg(st));
    return rc;
}

void cli_engine_run_free(cli_engine_run_t *r)
{
    sl_free(r->req);
    sl_free(r->step);
    sl_free(r->forward_s);
    sl_free(r->n_sampled);
    sl_free(r->prefill_pairs);
    sl_free(r->dec_first);
    sl_free(r->dec_kv);
    memset(r, 0, sizeof *r);
}

cli_engine_opts_t cli_engine_opts_default(void)
{
    sluice_engine_params ep = sluice_engine_default_params();
    return (cli_engine_opts_t){.backend = "cpu", .seed = 1, .idle_spin_ms = ep.idle_spin_ms, .kv_dtype = ep.kv_dtype,
                               .lookup_min = ep.prompt_lookup_min, .lookup_max = ep.prompt_lookup_max,
                               .sched = eng_sched_config_from_params(&ep)};
}

cli_replay_opts_t cli_replay_opts_default(void)
{
    return (cli_replay_opts_t){.db = "sluice.db", .rate_scale = 1};
}

int cli_engine_parse_arg(const char *cmd, int argc, char **argv, int *i, cli_engine_opts_t *eng,
                         cli_replay_opts_t *run)
{
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    const char **str = !strcmp(a, "-m") || !strcmp(a, "--model") ? &eng->model
                       : !strcmp(a, "--backend")                 ? &eng->backend
                       : !strcmp(a, "--trace")                   ? &run->trace
                       : !strcmp(a, "--preset")                  ? &run->preset
                       : !strcmp(a, "--db")                      ? &run->db
                                                                 : NULL;
    double *num = !strcmp(a, "--rate") ? &run->rate : !strcmp(a, "--rate-scale") ? &run->rate_scale
                  : !strcmp(a, "--kv-memory-mb")                               ? &eng->kv_mb
                  : !strcmp(a, "--idle-spin-ms")                               ? &eng->idle_spin_ms
                                                                               : NULL;
    double x;
    int *count = !strcmp(a, "--prompt-lookup-min") ? &eng->lookup_min
                 : !strcmp(a, "--prompt-lookup-max") ? &eng->lookup_max
                                                      : NULL;
    if (!strcmp(a, "--no-record") || !strcmp(a, "--fixed-threads")) {
        *(!strcmp(a, "--no-record") ? &run->no_record : &eng->fixed_threads) = true;
        return 1;
    } else if (count) {
        if (cli_number(cmd, a, v, 1, ENG_DRAFT_MAX_NGRAM, &x))
            return 2;
        if (x != floor(x))
            return cli_fail(cmd, "%s: expected a whole number, got '%s'", a, v);
        *count = (int)x;
    } else if (cli_is_kv_dtype_flag(a)) {
        if (cli_kv_dtype(cmd, a, v, &eng->kv_dtype))
            return 2;
    } else if (str) {
        if (!v)
            return cli_fail(cmd, "%s needs a value", a);
        *str = v;
    } else if (num || !strcmp(a, "--seed") || !strcmp(a, "-n")) {
        if (cli_number(cmd, a, v, 0, 1.8e19, &x))
            return 2;
        if (num)
            *num = x;
        else if (!strcmp(a, "--seed"))
            eng->seed = (uint64_t)x;
        else if (x != floor(x) || x > 1e12)
            return cli_fail(cmd, "-n: expected a whole number of requests, got '%s'", v);
        else
            run->n = (long)x;
    } else {
        /* after -m/--model: the scheduler's `model` knob (a shape name) must not take the model path */
        char err[512];
        int rc = sched_opts_parse_arg(&eng->sched, argc, argv, i, err, sizeof err);
        return rc >= 0 ? rc : cli_fail(cmd, "%s", err);
    }
    (*i)++;
    return 1;
}
