/* metrics.c — the run summary from request and step records, and the SLO parser (metrics.h). */
#include "analysis/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/status.h"

/* sched_finish_reason_t's SCHED_FINISH_ABORT; the value is part of the store format. */
#define FINISH_ABORT 4

/* ---- summary fields ----------------------------------------------------------------------- */

static const an_summary_field_t fields[] = {
#define AN_FIELD_ROW(name, unit, desc) {#name, unit, desc, offsetof(an_summary_t, name)},
    AN_SUMMARY_FIELDS(AN_FIELD_ROW)
#undef AN_FIELD_ROW
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

size_t an_summary_field_count(void)
{
    return N_FIELDS;
}

const an_summary_field_t *an_summary_field_at(size_t i)
{
    return &fields[i];
}

const an_summary_field_t *an_summary_field_find(const char *name)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (!strcmp(fields[i].name, name))
            return &fields[i];
    return NULL;
}

void an_summary_init(an_summary_t *s)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        *(double *)((char *)s + fields[i].offset) = NAN;
}

void an_metrics_opts_default(an_metrics_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
}

/* ---- SLO ---------------------------------------------------------------------------------- */

static const char *const slo_metric_name[] = {"ttft", "tpot", "e2e"};

/* One term "ttft_p99=1s" in [s, e). */
static int parse_term(const char *s, const char *e, an_slo_t *slo, char *err, size_t errlen)
{
    int len = (int)(e - s);
    char term[128];
    if (len >= (int)sizeof term)
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%.40s...' is too long", s);
    memcpy(term, s, (size_t)len);
    term[len] = '\0';
    const char *us = strchr(term, '_');
    const char *eq = strchr(term, '=');
    if (!us || !eq || us > eq)
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': expected METRIC_pPCT=VALUE (e.g. ttft_p99=1s)", term);
    int m = -1;
    for (int k = 0; k < 3; k++)
        if ((size_t)(us - term) == strlen(slo_metric_name[k]) && !strncmp(term, slo_metric_name[k], (size_t)(us - term)))
            m = k;
    if (m < 0)
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': unknown metric '%.*s' (accepted: ttft, tpot, e2e)", term,
                        (int)(us - term), term);
    char *end;
    double pct = us[1] == 'p' ? strtod(us + 2, &end) : NAN;
    if (us[1] != 'p' || end == us + 2 || end != eq || !(pct > 0 && pct <= 100))
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': expected a percentile p1..p100 after '%s_' (e.g. %s_p99)", term,
                        slo_metric_name[m], slo_metric_name[m]);
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || !(v > 0) || !isfinite(v))
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': expected a limit > 0 with a unit (e.g. 500ms or 2s)", term);
    double scale = !strcmp(end, "s") ? 1 : !strcmp(end, "ms") ? 1e-3 : 0;
    if (!*end)
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': missing unit, use s or ms (e.g. %gms)", term, v);
    if (scale == 0)
        return sl_errf(err, errlen, SL_EINVAL, "SLO term '%s': unknown unit '%s', use s or ms", term, end);
    if (slo->n == AN_SLO_MAX_TERMS)
        return sl_errf(err, errlen, SL_EINVAL, "SLO: at most %d terms", AN_SLO_MAX_TERMS);
    slo->term[slo->n].metric = (an_slo_metric_t)m;
    slo->term[slo->n].percentile = pct;
    slo->term[slo->n].limit = v * scale;
    slo->n++;
    return SL_OK;
}

int an_slo_parse(const char *spec, an_slo_t *out, char *err, size_t errlen)
{
    an_slo_t slo = {0};
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        if (e == p)
            return sl_errf(err, errlen, SL_EINVAL, "SLO '%s': empty term (two commas, or a comma at an end)", spec);
        int rc = parse_term(p, e, &slo, err, errlen);
        if (rc)
            return rc;
        p = *e ? e + 1 : e;
        if (*e && !*p)
            return sl_errf(err, errlen, SL_EINVAL, "SLO '%s': empty term (two commas, or a comma at an end)", spec);
    }
    *out = slo;
    return SL_OK;
}

void an_slo_format(const an_slo_t *slo, char *buf, size_t buflen)
{
    size_t used = 0;
    if (buflen)
        buf[0] = '\0';
    for (int i = 0; i < slo->n && used < buflen; i++) {
        int w = snprintf(buf + used, buflen - used, "%s%s_p%g=%gs", i ? "," : "", slo_metric_name[slo->term[i].metric],
                         slo->term[i].percentile, slo->term[i].limit);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* ---- percentiles and latency statistics --------------------------------------------------- */

double an_percentile_sorted(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return NAN;
    double h = (double)(n - 1) * p / 100.0;
    size_t lo = (size_t)floor(h);
    if (lo + 1 >= n)
        return sorted[n - 1];
    return sorted[lo] + (h - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..n) and writes its mean, p50, p90 and p99. */
static void latency_stats(double *v, size_t n, double *mean, double *p50, double *p90, double *p99)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    qsort(v, n, sizeof *v, cmp_double);
    *mean = n ? sum / (double)n : NAN;
    *p50 = an_percentile_sorted(v, n, 50);
    *p90 = an_percentile_sorted(v, n, 90);
    *p99 = an_percentile_sorted(v, n, 99);
}
#define LATENCY_STATS(v, n, s, m) latency_stats(v, n, &(s)->m##_mean, &(s)->m##_p50, &(s)->m##_p90, &(s)->m##_p99)

static int completed(const an_request_rec_t *r)
{
    return r->finished >= 0 && r->first_token >= 0 && r->finish_reason != FINISH_ABORT;
}

static double tpot_of(const an_request_rec_t *r)
{
    return (r->finished - r->first_token) / (double)(r->output_len - 1);
}

/* The value of an SLO metric for request r; NAN when it does not apply (TPOT, one output). */
static double slo_value(const an_request_rec_t *r, an_slo_metric_t m)
{
    switch (m) {
    case AN_SLO_TTFT:
        return r->first_token - r->arrival;
    case AN_SLO_TPOT:
        return r->output_len >= 2 ? tpot_of(r) : NAN;
    case AN_SLO_E2E:
        return r->finished - r->arrival;
    }
    return NAN;
}

/* ---- the summary -------------------------------------------------------------------------- */

static void request_metrics(const an_request_rec_t *reqs, size_t n, const an_slo_t *slo, double *buf[4],
                            an_summary_t *s)
{
    size_t nc = 0, ntp = 0, good = 0;
    double first_arrival = INFINITY, last_finish = -INFINITY, in_tok = 0, out_tok = 0, cached = 0, prompt = 0;
    double preempt = 0, preempted = 0;
    for (size_t i = 0; i < n; i++) {
        const an_request_rec_t *r = &reqs[i];
        if (r->arrival < first_arrival)
            first_arrival = r->arrival;
        if (r->finished > last_finish)
            last_finish = r->finished;
        preempt += r->preemptions;
        preempted += r->preemptions > 0;
        prompt += r->prompt_len;
        cached += r->cached_prompt_len;
        if (!completed(r))
            continue;
        in_tok += r->prompt_len;
        out_tok += r->output_len;
        buf[0][nc] = r->first_token - r->arrival;
        buf[2][nc] = r->finished - r->arrival;
        buf[3][nc] = r->first_scheduled - r->arrival;
        if (r->output_len >= 2)
            buf[1][ntp++] = tpot_of(r);
        int ok = 1;
        for (int k = 0; k < slo->n && ok; k++) {
            double v = slo_value(r, slo->term[k].metric);
            ok = isnan(v) || v <= slo->term[k].limit;
        }
        good += ok;
        nc++;
    }
    s->n_requests = (double)n;
    s->n_completed = (double)nc;
    s->duration = n && last_finish > first_arrival ? last_finish - first_arrival : NAN;
    s->request_throughput = nc / s->duration;
    s->input_tps = in_tok / s->duration;
    s->output_tps = out_tok / s->duration;
    LATENCY_STATS(buf[0], nc, s, ttft);
    LATENCY_STATS(buf[1], ntp, s, tpot);
    LATENCY_STATS(buf[2], nc, s, e2e);
    LATENCY_STATS(buf[3], nc, s, queue);
    s->goodput = good / s->duration;
    s->goodput_frac = n ? (double)good / (double)n : NAN;
    s->preemptions = preempt;
    s->preempted_requests = preempted;
    s->prefix_hit_rate = prompt > 0 ? cached / prompt : NAN;
    if (slo->n > 0) {
        /* buf[] now holds each metric sorted: ttft, tpot, e2e (same order as an_slo_metric_t). */
        const size_t count[3] = {nc, ntp, nc};
        int met = 1;
        for (int k = 0; k < slo->n; k++) {
            an_slo_metric_t m = slo->term[k].metric;
            double v = an_percentile_sorted(buf[m], count[m], slo->term[k].percentile);
            met &= count[m] == 0 || v <= slo->term[k].limit;
        }
        s->slo_met = met;
    }
}

void an_step_accum_init(an_step_accum_t *a, int64_t kv_blocks_per_replica)
{
    memset(a, 0, sizeof *a);
    a->max_replica = -1;
    a->kv_blocks_per_replica = kv_blocks_per_replica;
}

void an_step_accum_add(an_step_accum_t *a, const an_step_rec_t *st)
{
    double dt = st->t_end - st->t_start;
    a->n++;
    a->busy += dt;
    a->used += dt * (double)st->kv_used_slots;
    a->reserved += dt * (double)st->kv_reserved_slots;
    a->naive += dt * (double)st->kv_naive_slots;
    a->seqs += st->n_seqs;
    a->toks += st->n_tokens;
    a->pad += st->n_padded_tokens;
    if (st->replica > a->max_replica)
        a->max_replica = st->replica;
    if (a->kv_blocks_per_replica > 0) {
        double u = (double)st->kv_used_blocks / (double)a->kv_blocks_per_replica;
        a->util += dt * u;
        if (u > a->util_peak)
            a->util_peak = u;
    }
}

/* The step fields of *s from the folded steps; busy_frac needs s->duration. */
static void step_metrics(const an_step_accum_t *a, int n_replicas, an_summary_t *s)
{
    if (a->n == 0)
        return;
    double n = (double)a->n;
    int replicas = n_replicas > 0 ? n_replicas : a->max_replica + 1;
    s->n_steps = n;
    s->batch_size_mean = a->seqs / n;
    s->tokens_per_step = a->toks / n;
    s->padding_frac = a->toks + a->pad > 0 ? a->pad / (a->toks + a->pad) : NAN;
    s->kv_waste = a->reserved > 0 ? 1 - a->used / a->reserved : NAN;
    s->kv_naive_waste = a->naive > 0 ? 1 - a->used / a->naive : NAN;
    if (a->kv_blocks_per_replica > 0 && a->busy > 0) {
        s->kv_util_mean = a->util / a->busy;
        s->kv_util_peak = a->util_peak;
    }
    s->busy_frac = s->duration > 0 ? a->busy / (s->duration * replicas) : NAN;
}

int an_metrics_compute_accum(const an_request_rec_t *reqs, size_t n_reqs, const an_step_accum_t *steps,
                             const an_metrics_opts_t *opts, an_summary_t *out)
{
    an_metrics_opts_t defaults;
    if (!opts) {
        an_metrics_opts_default(&defaults);
        opts = &defaults;
    }
    double *scratch = sl_malloc(4 * (n_reqs ? n_reqs : 1) * sizeof(double));
    if (!scratch)
        return SL_ENOMEM;
    double *buf[4] = {scratch, scratch + n_reqs, scratch + 2 * n_reqs, scratch + 3 * n_reqs};
    an_summary_t s;
    an_summary_init(&s);
    request_metrics(reqs, n_reqs, &opts->slo, buf, &s);
    if (steps)
        step_metrics(steps, opts->n_replicas, &s);
    sl_free(scratch);
    *out = s;
    return SL_OK;
}

int an_metrics_compute(const an_request_rec_t *reqs, size_t n_reqs, const an_step_rec_t *steps, size_t n_steps,
                       const an_metrics_opts_t *opts, an_summary_t *out)
{
    an_metrics_opts_t defaults;
    if (!opts) {
        an_metrics_opts_default(&defaults);
        opts = &defaults;
    }
    an_step_accum_t acc;
    an_step_accum_init(&acc, opts->kv_blocks_per_replica);
    for (size_t i = 0; i < n_steps; i++)
        an_step_accum_add(&acc, &steps[i]);
    return an_metrics_compute_accum(reqs, n_reqs, &acc, opts, out);
}
