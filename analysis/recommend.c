/* recommend.c — recommendations from recorded runs: rank, explain, store, load (see recommend.h). */
#include "analysis/recommend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "sched/status.h"

#define ERR(...) snprintf(err, errlen, __VA_ARGS__)

/* ---- configs from JSON ------------------------------------------------------------------------ */

int an_reco_apply_config_json(const char *json, sched_config_t *cfg, char *err, size_t errlen)
{
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        ERR("configuration is not a JSON object");
        return SL_EFORMAT;
    }
    sched_config_t c = *cfg;
    int rc = SL_OK;
    for (cJSON *it = o->child; it && rc == SL_OK; it = it->next) {
        if (!sched_knob_find(it->string))
            continue; /* replicas, tp, router, backend ...: not scheduler knobs */
        char v[64], e[160];
        if (cJSON_IsString(it))
            snprintf(v, sizeof v, "%s", it->valuestring);
        else if (cJSON_IsBool(it))
            snprintf(v, sizeof v, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsNumber(it))
            snprintf(v, sizeof v, "%.17g", it->valuedouble);
        else
            snprintf(v, sizeof v, "?");
        if (sched_config_set(&c, it->string, v, e, sizeof e) != SL_OK) {
            ERR("%s", e);
            rc = SL_EINVAL;
        }
    }
    cJSON_Delete(o);
    if (rc == SL_OK)
        *cfg = c;
    return rc;
}

/* ---- ranking -------------------------------------------------------------------------------- */

static int rank_cmp(const void *pa, const void *pb)
{
    const an_summary_t *a = &((const an_reco_candidate_t *)pa)->sum, *b = &((const an_reco_candidate_t *)pb)->sum;
    int ma = a->slo_met == 1, mb = b->slo_met == 1;
    if (ma != mb)
        return ma ? -1 : 1;
    double ga = isnan(a->goodput) ? -1 : a->goodput, gb = isnan(b->goodput) ? -1 : b->goodput;
    if (ga != gb)
        return ga > gb ? -1 : 1;
    double ta = isnan(a->request_throughput) ? -1 : a->request_throughput;
    double tb = isnan(b->request_throughput) ? -1 : b->request_throughput;
    if (ta != tb)
        return ta > tb ? -1 : 1;
    if (a->ttft_p99 != b->ttft_p99)
        return a->ttft_p99 < b->ttft_p99 ? -1 : 1;
    return ((const an_reco_candidate_t *)pa)->run_id < ((const an_reco_candidate_t *)pb)->run_id ? -1 : 1;
}

/* Re-scores run r under slo into *c. SL_EFORMAT when its configuration does not read back. */
static int load_candidate(an_store_t *st, const an_run_t *r, const an_slo_t *slo, an_reco_candidate_t *c)
{
    memset(c, 0, sizeof *c);
    c->run_id = r->id;
    snprintf(c->mode, sizeof c->mode, "%s", r->info.mode);
    c->cfg = sched_config_default();
    if (r->info.strategy)
        sched_strategy_parse(r->info.strategy, &c->cfg.strategy);
    if (an_reco_apply_config_json(r->info.config_json, &c->cfg, NULL, 0) != SL_OK)
        return SL_EFORMAT;
    an_request_rec_t *req = NULL;
    an_step_rec_t *stp = NULL;
    size_t nr = 0, ns = 0;
    int rc = an_run_requests(st, r->id, &req, &nr);
    if (rc == SL_OK)
        rc = an_run_steps(st, r->id, &stp, &ns);
    if (rc == SL_OK) {
        an_metrics_opts_t mo;
        an_metrics_opts_default(&mo);
        mo.slo = *slo;
        mo.kv_blocks_per_replica = c->cfg.num_blocks;
        rc = an_metrics_compute(req, nr, stp, ns, &mo, &c->sum);
        c->sum.mfu = r->summary.mfu;
        if (ns == 0) { /* recorded without step rows: the step metrics of the stored summary */
            c->sum.kv_util_mean = r->summary.kv_util_mean, c->sum.kv_util_peak = r->summary.kv_util_peak;
            c->sum.kv_waste = r->summary.kv_waste, c->sum.kv_naive_waste = r->summary.kv_naive_waste;
            c->sum.n_steps = r->summary.n_steps, c->sum.batch_size_mean = r->summary.batch_size_mean;
            c->sum.tokens_per_step = r->summary.tokens_per_step, c->sum.padding_frac = r->summary.padding_frac;
            c->sum.busy_frac = r->summary.busy_frac;
        }
        size_t pre = 0;
        for (size_t i = 0; i < ns; i++)
            pre += stp[i].n_preempted > 0;
        c->preempt_step_frac = ns ? (double)pre / (double)ns : NAN;
    }
    sl_free(req);
    sl_free(stp);
    return rc;
}

static bool is_default_naive(const sched_config_t *c)
{
    sched_config_t d = sched_config_default();
    return c->strategy == SCHED_NAIVE && c->max_batch_size == d.max_batch_size &&
           c->batch_timeout_ms == d.batch_timeout_ms;
}

static bool run_matches(const an_run_t *r, const an_reco_query_t *q, uint64_t hash)
{
    return r->status && !strcmp(r->status, "ok") && r->id >= q->min_run_id && r->info.workload_hash == hash &&
           (!q->model || (r->info.model && !strcmp(q->model, r->info.model))) &&
           (!q->hardware || (r->info.hardware && !strcmp(q->hardware, r->info.hardware)));
}

int an_recommend(an_store_t *st, const an_reco_query_t *q, an_reco_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    an_run_t *runs = NULL;
    size_t n = 0;
    int rc = an_run_list(st, 0, &runs, &n);
    if (rc != SL_OK) {
        ERR("%s", an_store_errmsg(st));
        return rc;
    }
    uint64_t hash = q->workload_hash;
    for (size_t i = 0; !hash && i < n; i++) /* newest first */
        if (runs[i].status && !strcmp(runs[i].status, "ok") && runs[i].id >= q->min_run_id &&
            (!q->model || (runs[i].info.model && !strcmp(q->model, runs[i].info.model))) &&
            (!q->hardware || (runs[i].info.hardware && !strcmp(q->hardware, runs[i].info.hardware))))
            hash = runs[i].info.workload_hash;
    size_t n_real = 0, n_match = 0;
    for (size_t i = 0; i < n; i++)
        if (run_matches(&runs[i], q, hash)) {
            n_match++;
            n_real += !strcmp(runs[i].info.mode, "real");
        }
    if (n_match == 0) {
        ERR("no finished run matches (workload %016llx, model %s, hardware %s); record some with sluice sim, "
            "tune or bench", (unsigned long long)hash, q->model ? q->model : "any",
            q->hardware ? q->hardware : "any");
        an_run_list_free(runs, n);
        return SL_ENOTFOUND;
    }
    out->evidence = n_real ? "real" : "sim";
    out->workload_hash = hash;
    size_t want = n_real ? n_real : n_match;
    an_reco_candidate_t *cand = sl_calloc(want, sizeof *cand);
    out->run_ids = sl_calloc(want, sizeof *out->run_ids);
    if (!cand || !out->run_ids) {
        rc = SL_ENOMEM;
        ERR("out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; rc == SL_OK && i < n; i++) {
        if (!run_matches(&runs[i], q, hash) || (n_real && strcmp(runs[i].info.mode, "real")))
            continue;
        rc = load_candidate(st, &runs[i], &q->slo, &cand[k]);
        if (rc == SL_EFORMAT) {
            out->n_unreadable++;
            rc = SL_OK;
            continue;
        }
        if (rc != SL_OK)
            ERR("run %lld: %s", (long long)runs[i].id, rc == SL_ENOMEM ? "out of memory" : an_store_errmsg(st));
        k++;
    }
    an_run_list_free(runs, n);
    if (rc == SL_OK && k == 0) {
        ERR("none of the %d matching runs has a configuration that reads back (the runs table's config_json)",
            out->n_unreadable);
        rc = SL_EFORMAT;
    }
    if (rc == SL_OK) {
        qsort(cand, k, sizeof *cand, rank_cmp);
        out->n_runs = (int)k;
        for (size_t i = 0; i < k; i++) {
            out->run_ids[i] = cand[i].run_id;
            if (!out->has_baseline && is_default_naive(&cand[i].cfg)) {
                out->has_baseline = true;
                out->baseline = cand[i];
            }
        }
        out->best = cand[0];
        out->slo_met = q->slo.n == 0 || cand[0].sum.slo_met == 1;
        if (!out->slo_met)
            for (size_t i = 0; i < k && i < AN_RECO_MAX_CLOSEST; i++)
                out->closest[out->n_closest++] = cand[i];
        out->n_reasons = an_reco_reasons(&out->best, &q->slo, out->reasons, AN_RECO_MAX_REASONS);
    } else {
        sl_free(out->run_ids);
        memset(out, 0, sizeof *out);
    }
    sl_free(cand);
    return rc;
}

void an_reco_clear(an_reco_t *r)
{
    if (!r)
        return;
    sl_free(r->run_ids);
    memset(r, 0, sizeof *r);
}

/* ---- reasons -------------------------------------------------------------------------------- */

/* The limit of the first SLO term on metric m, or NaN. */
static double slo_limit(const an_slo_t *slo, an_slo_metric_t m)
{
    for (int i = 0; i < slo->n; i++)
        if (slo->term[i].metric == m)
            return slo->term[i].limit;
    return NAN;
}

int an_reco_reasons(const an_reco_candidate_t *c, const an_slo_t *slo, char (*out)[AN_RECO_REASON_LEN], int max)
{
    const an_summary_t *s = &c->sum;
    bool cont = c->cfg.strategy == SCHED_CONTINUOUS, stat = !cont && c->cfg.strategy != SCHED_MEMORY_AWARE;
    double ttft_lim = slo_limit(slo, AN_SLO_TTFT), tpot_lim = slo_limit(slo, AN_SLO_TPOT);
    int n = 0;
#define SAY(...) (n < max ? snprintf(out[n++], AN_RECO_REASON_LEN, __VA_ARGS__) : 0)
    if (slo->n && s->slo_met == 1)
        SAY("meets the SLO: TTFT p99 %.3g s, TPOT p99 %.3g s; goodput %.3g req/s (%.0f%% of requests)", s->ttft_p99,
            s->tpot_p99, s->goodput, 100 * s->goodput_frac);
    if (!(s->ttft_p99 <= ttft_lim) && s->queue_p99 >= 0.5 * s->ttft_p99 && s->ttft_p99 > 0)
        SAY("p99 TTFT is queueing-dominated (queue p99 %.3g s of TTFT p99 %.3g s): %s", s->queue_p99, s->ttft_p99,
            cont ? "raise max_num_seqs or max_num_batched_tokens"
                 : "raise max_batch_size or lower batch_timeout_ms, or use CONTINUOUS");
    else if (ttft_lim > 0 && s->ttft_p99 > ttft_lim)
        SAY("p99 TTFT %.3g s is mostly compute (queue p99 %.3g s): %s", s->ttft_p99, s->queue_p99,
            cont ? "lower max_num_batched_tokens so prefills are chunked" : "use CONTINUOUS with chunked prefill");
    double req_pre = s->n_requests > 0 ? s->preempted_requests / s->n_requests : NAN;
    if (c->preempt_step_frac > 0.05)
        SAY("%.0f%% of steps preempt: lower max_num_seqs or raise gpu_memory_utilization",
            100 * c->preempt_step_frac);
    else if (isnan(c->preempt_step_frac) && req_pre > 0.05)
        SAY("%.0f%% of requests were preempted: lower max_num_seqs or raise gpu_memory_utilization", 100 * req_pre);
    if (stat && s->padding_frac > 0.2)
        SAY("padding is %.0f%% of static-batch tokens: use %s", 100 * s->padding_frac,
            c->cfg.strategy == SCHED_NAIVE ? "BUCKETED or CONTINUOUS" : "a smaller bucket_size or CONTINUOUS");
    if (tpot_lim > 0 && s->tpot_p99 > tpot_lim)
        SAY("p99 TPOT %.3g s is over the %.3g s limit: %s", s->tpot_p99, tpot_lim,
            cont ? "lower max_num_batched_tokens (shorter prefill chunks stall decodes less) or max_num_seqs"
                 : "lower max_batch_size");
    if (s->busy_frac > 0.95 && !(s->slo_met == 1))
        SAY("the replicas are busy %.0f%% of the time: more goodput needs more replicas or a faster GPU "
            "(sluice plan)", 100 * s->busy_frac);
#undef SAY
    return n;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

int an_reco_to_json(const an_reco_t *r, const char *model, const char *hardware, const an_slo_t *slo, char **json)
{
    cJSON *o = cJSON_CreateObject(), *set = cJSON_CreateObject(), *why = cJSON_CreateArray();
    char buf[256];
    if (!o || !set || !why) {
        cJSON_Delete(o), cJSON_Delete(set), cJSON_Delete(why);
        return SL_ENOMEM;
    }
    cJSON_AddStringToObject(o, "strategy", sched_strategy_name(r->best.cfg.strategy));
    for (int i = 0; i < sched_knob_count(); i++) {
        const sched_knob_t *k = sched_knob_at(i);
        if (strcmp(k->name, "model") && strcmp(k->name, "num_blocks") &&
            sched_config_get(&r->best.cfg, k->name, buf, sizeof buf) == SL_OK)
            cJSON_AddStringToObject(set, k->name, buf);
    }
    cJSON_AddItemToObject(o, "settings", set);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)r->workload_hash);
    cJSON_AddStringToObject(o, "workload_hash", buf);
    cJSON_AddStringToObject(o, "model", model ? model : "");
    cJSON_AddStringToObject(o, "hardware", hardware ? hardware : "");
    an_slo_format(slo, buf, sizeof buf);
    cJSON_AddStringToObject(o, "slo", buf);
    cJSON_AddStringToObject(o, "evidence", r->evidence);
    cJSON_AddNumberToObject(o, "run_id", (double)r->best.run_id);
    cJSON_AddNumberToObject(o, "goodput", isnan(r->best.sum.goodput) ? 0 : r->best.sum.goodput);
    cJSON_AddBoolToObject(o, "slo_met", r->slo_met);
    if (r->has_baseline) {
        cJSON_AddNumberToObject(o, "baseline_run_id", (double)r->baseline.run_id);
        cJSON_AddNumberToObject(o, "baseline_goodput", isnan(r->baseline.sum.goodput) ? 0 : r->baseline.sum.goodput);
    }
    for (int i = 0; i < r->n_reasons; i++)
        cJSON_AddItemToArray(why, cJSON_CreateString(r->reasons[i]));
    cJSON_AddItemToObject(o, "reasons", why);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt)
        return SL_ENOMEM;
    *json = sl_strdup(txt);
    cJSON_free(txt);
    return *json ? SL_OK : SL_ENOMEM;
}

int an_reco_load_settings(const char *db_path, int64_t id, sched_config_t *cfg, char *err, size_t errlen)
{
    an_store_t *st;
    int rc = an_store_open_existing(db_path, &st, err, errlen);
    if (rc != SL_OK)
        return rc;
    int64_t rid = 0;
    char *json = NULL;
    if ((rc = an_reco_get(st, id, &rid, &json)) != SL_OK) {
        ERR("%s", an_store_errmsg(st));
    } else {
        cJSON *o = cJSON_Parse(json);
        cJSON *set = cJSON_GetObjectItemCaseSensitive(o, "settings");
        char *txt = cJSON_IsObject(set) ? cJSON_PrintUnformatted(set) : NULL;
        char e[200] = "";
        sched_config_t c = *cfg;
        if (!txt) {
            ERR("%s: recommendation %lld has no settings object", db_path, (long long)rid);
            rc = SL_EFORMAT;
        } else if ((rc = an_reco_apply_config_json(txt, &c, e, sizeof e)) != SL_OK ||
                   (rc = sched_config_validate(&c, e, sizeof e)) != SL_OK) {
            ERR("%s: recommendation %lld: %s", db_path, (long long)rid, e);
        } else {
            *cfg = c;
        }
        cJSON_free(txt);
        cJSON_Delete(o);
    }
    sl_free(json);
    an_store_close(st);
    return rc;
}
