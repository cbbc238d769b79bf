/* gen.c — synthetic trace generation (GSL MT19937) and the spec-string parsers of gen.h. */
#include "workloads/gen.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "sched/status.h"

void wl_gen_config_default(wl_gen_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->n = 1000;
    cfg->arrival.kind = WL_ARRIVAL_POISSON;
    cfg->arrival.rate = 1;
    cfg->arrival.time_scale = 1;
    cfg->prompt.kind = WL_LEN_FIXED;
    cfg->prompt.fixed = 512;
    cfg->output.kind = WL_LEN_FIXED;
    cfg->output.fixed = 128;
    cfg->max_seq_len = WL_DEFAULT_MAX_SEQ_LEN;
}

/* ---- spec parsing ------------------------------------------------------------------------- */

/* Splits "kind:args" into kind (copied into kind[kindlen]) and a pointer to args ("" if none). */
static const char *split_kind(const char *spec, char *kind, size_t kindlen)
{
    const char *colon = strchr(spec, ':');
    size_t k = colon ? (size_t)(colon - spec) : strlen(spec);
    if (k >= kindlen)
        k = kindlen - 1;
    memcpy(kind, spec, k);
    kind[k] = '\0';
    return colon ? colon + 1 : "";
}

/* Parses exactly n comma-separated numbers from args; 0 on success. */
static int parse_numbers(const char *args, double *v, int n)
{
    const char *p = args;
    for (int i = 0; i < n; i++) {
        char *end;
        if (!*p || *p == ',' || *p == ' ')
            return -1;
        v[i] = strtod(p, &end);
        if (end == p || !isfinite(v[i]))
            return -1;
        p = end;
        if (i + 1 < n) {
            if (*p != ',')
                return -1;
            p++;
        }
    }
    return *p ? -1 : 0;
}

static int is_int(double v)
{
    return v == floor(v) && fabs(v) < 2e9;
}

static int copy_path(const char *spec, const char *path, size_t len, char *dst, char *err, size_t errlen)
{
    if (len == 0)
        return sl_errf(err, errlen, SL_EINVAL, "'%s': needs a trace FILE", spec);
    if (len >= WL_PATH_MAX)
        return sl_errf(err, errlen, SL_EINVAL, "'%s': the file name is longer than %d bytes", spec, WL_PATH_MAX - 1);
    memcpy(dst, path, len);
    dst[len] = '\0';
    return SL_OK;
}

int wl_parse_arrival(const char *spec, wl_arrival_spec_t *out, char *err, size_t errlen)
{
    static const char accepted[] = "accepted: poisson:RATE, gamma:RATE,CV, constant:RATE, replay:FILE[,SCALE]";
    char kind[32];
    const char *args = split_kind(spec, kind, sizeof kind);
    wl_arrival_spec_t a = {.time_scale = 1};
    double v[2];
    if (!strcmp(kind, "poisson") || !strcmp(kind, "constant")) {
        a.kind = kind[0] == 'p' ? WL_ARRIVAL_POISSON : WL_ARRIVAL_CONSTANT;
        if (parse_numbers(args, v, 1) || !(v[0] > 0))
            return sl_errf(err, errlen, SL_EINVAL, "'%s': %s needs a RATE > 0 in requests/s (e.g. %s:5)", spec, kind, kind);
        a.rate = v[0];
    } else if (!strcmp(kind, "gamma")) {
        a.kind = WL_ARRIVAL_GAMMA;
        if (parse_numbers(args, v, 2) || !(v[0] > 0) || !(v[1] > 0))
            return sl_errf(err, errlen, SL_EINVAL, "'%s': gamma needs RATE,CV, both > 0 (e.g. gamma:5,2)", spec);
        a.rate = v[0], a.cv = v[1];
    } else if (!strcmp(kind, "replay")) {
        a.kind = WL_ARRIVAL_REPLAY;
        const char *comma = strrchr(args, ',');
        size_t plen = strlen(args);
        if (comma && !parse_numbers(comma + 1, v, 1)) {
            if (!(v[0] > 0))
                return sl_errf(err, errlen, SL_EINVAL, "'%s': replay SCALE must be > 0 (2 = twice the rate)", spec);
            a.time_scale = v[0];
            plen = (size_t)(comma - args);
        }
        if (copy_path(spec, args, plen, a.path, err, errlen))
            return SL_EINVAL;
    } else
        return sl_errf(err, errlen, SL_EINVAL, "'%s': unknown arrival process '%s' (%s)", spec, kind, accepted);
    *out = a;
    return SL_OK;
}

int wl_parse_length(const char *spec, wl_length_spec_t *out, char *err, size_t errlen)
{
    static const char accepted[] = "accepted: fixed:N, uniform:A,B, lognormal:MEAN,SD, zipf:S,MAX, resample:FILE";
    char kind[32];
    const char *args = split_kind(spec, kind, sizeof kind);
    wl_length_spec_t l = {0};
    double v[2];
    if (!strcmp(kind, "fixed")) {
        l.kind = WL_LEN_FIXED;
        if (parse_numbers(args, v, 1) || !is_int(v[0]) || v[0] < 1)
            return sl_errf(err, errlen, SL_EINVAL, "'%s': fixed needs an integer N >= 1 (e.g. fixed:128)", spec);
        l.fixed = (int)v[0];
    } else if (!strcmp(kind, "uniform")) {
        l.kind = WL_LEN_UNIFORM;
        if (parse_numbers(args, v, 2) || !is_int(v[0]) || !is_int(v[1]) || v[0] < 1 || v[1] < v[0])
            return sl_errf(err, errlen, SL_EINVAL, "'%s': uniform needs integers A,B with 1 <= A <= B (e.g. uniform:16,512)", spec);
        l.lo = (int)v[0], l.hi = (int)v[1];
    } else if (!strcmp(kind, "lognormal")) {
        l.kind = WL_LEN_LOGNORMAL;
        if (parse_numbers(args, v, 2) || !(v[0] > 0) || !(v[1] >= 0))
            return sl_errf(err, errlen, SL_EINVAL,
                        "'%s': lognormal needs MEAN,SD of the lengths, MEAN > 0, SD >= 0 (e.g. lognormal:1155,1100)",
                        spec);
        l.mean = v[0], l.sd = v[1];
    } else if (!strcmp(kind, "zipf")) {
        l.kind = WL_LEN_ZIPF;
        if (parse_numbers(args, v, 2) || !(v[0] > 0) || !is_int(v[1]) || v[1] < 1 || v[1] > 1e7)
            return sl_errf(err, errlen, SL_EINVAL, "'%s': zipf needs S,MAX with S > 0 and an integer 1 <= MAX <= 10000000 (e.g. zipf:1.2,4096)",
                        spec);
        l.zipf_s = v[0], l.zipf_max = (int)v[1];
    } else if (!strcmp(kind, "resample")) {
        l.kind = WL_LEN_RESAMPLE;
        if (copy_path(spec, args, strlen(args), l.path, err, errlen))
            return SL_EINVAL;
    } else
        return sl_errf(err, errlen, SL_EINVAL, "'%s': unknown length distribution '%s' (%s)", spec, kind, accepted);
    *out = l;
    return SL_OK;
}

int wl_parse_priority_mix(const char *spec, wl_gen_config_t *cfg, char *err, size_t errlen)
{
    int n = 0, value[WL_PRIORITY_MIX_MAX];
    double weight[WL_PRIORITY_MIX_MAX], total = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long pr = strtol(p, &end, 10);
        if (end == p || *end != ':')
            return sl_errf(err, errlen, SL_EINVAL, "priority mix '%s': expected PRIORITY:WEIGHT pairs separated by ',' (e.g. 0:0.8,1:0.2)",
                        spec);
        if (n == WL_PRIORITY_MIX_MAX)
            return sl_errf(err, errlen, SL_EINVAL, "priority mix '%s': at most %d priorities", spec, WL_PRIORITY_MIX_MAX);
        p = end + 1;
        double w = strtod(p, &end);
        if (end == p || !(w > 0) || !isfinite(w) || (*end && *end != ','))
            return sl_errf(err, errlen, SL_EINVAL, "priority mix '%s': weight of priority %ld must be a number > 0", spec, pr);
        for (int i = 0; i < n; i++)
            if (value[i] == (int)pr)
                return sl_errf(err, errlen, SL_EINVAL, "priority mix '%s': priority %ld appears twice", spec, pr);
        value[n] = (int)pr, weight[n] = w, total += w, n++;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return sl_errf(err, errlen, SL_EINVAL, "priority mix '%s': trailing ','", spec);
    }
    if (n == 0)
        return sl_errf(err, errlen, SL_EINVAL, "priority mix is empty (e.g. 0:0.8,1:0.2)");
    cfg->n_priorities = n;
    for (int i = 0; i < n; i++)
        cfg->priority_value[i] = value[i], cfg->priority_weight[i] = weight[i] / total;
    return SL_OK;
}

int wl_parse_prefix_groups(const char *spec, wl_gen_config_t *cfg, char *err, size_t errlen)
{
    char *end;
    long g = strtol(spec, &end, 10), len = 0;
    double frac = 0;
    int ok = end != spec && *end == ':' && g >= 1 && g <= 1000000;
    if (ok) {
        const char *p = end + 1;
        len = strtol(p, &end, 10);
        ok = end != p && *end == ':' && len >= 1 && len <= 1000000;
        if (ok) {
            p = end + 1;
            frac = strtod(p, &end);
            ok = end != p && !*end && frac > 0 && frac <= 1;
        }
    }
    if (!ok)
        return sl_errf(err, errlen, SL_EINVAL,
                    "prefix groups '%s': expected GROUPS:LEN:FRAC with GROUPS >= 1, LEN >= 1 tokens, 0 < FRAC <= 1 "
                    "(e.g. 8:512:0.5)",
                    spec);
    cfg->prefix_groups = (int)g, cfg->prefix_len = (int)len, cfg->prefix_frac = frac;
    return SL_OK;
}

int wl_gen_config_check(const wl_gen_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->n < 1)
        return sl_errf(err, errlen, SL_EINVAL, "the number of requests must be >= 1");
    const wl_arrival_spec_t *a = &cfg->arrival;
    if ((unsigned)a->kind > WL_ARRIVAL_REPLAY)
        return sl_errf(err, errlen, SL_EINVAL, "arrivals: unknown process kind %d", (int)a->kind);
    if ((a->kind == WL_ARRIVAL_REPLAY) ? !(a->time_scale > 0) || !a->path[0] : !(a->rate > 0) || !isfinite(a->rate))
        return sl_errf(err, errlen, SL_EINVAL, "arrivals: %s", a->kind == WL_ARRIVAL_REPLAY ? "replay needs a file and a scale > 0" : "rate must be > 0");
    if (a->kind == WL_ARRIVAL_GAMMA && !(a->cv > 0))
        return sl_errf(err, errlen, SL_EINVAL, "arrivals: gamma CV must be > 0");
    const wl_length_spec_t *ls[2] = {&cfg->prompt, &cfg->output};
    for (int k = 0; k < 2; k++) {
        const wl_length_spec_t *l = ls[k];
        const char *what = k ? "output" : "prompt";
        if ((unsigned)l->kind > WL_LEN_RESAMPLE)
            return sl_errf(err, errlen, SL_EINVAL, "%s lengths: unknown distribution kind %d", what, (int)l->kind);
        int ok = l->kind == WL_LEN_FIXED       ? l->fixed >= 1
                 : l->kind == WL_LEN_UNIFORM   ? l->lo >= 1 && l->hi >= l->lo
                 : l->kind == WL_LEN_LOGNORMAL ? l->mean > 0 && l->sd >= 0
                 : l->kind == WL_LEN_ZIPF      ? l->zipf_s > 0 && l->zipf_max >= 1 && l->zipf_max <= 10000000
                                               : l->path[0] != '\0';
        if (!ok)
            return sl_errf(err, errlen, SL_EINVAL, "%s lengths: parameters out of range for %s", what,
                        (const char *[]){"fixed (N >= 1)", "uniform (1 <= A <= B)", "lognormal (MEAN > 0, SD >= 0)",
                                         "zipf (S > 0, 1 <= MAX <= 10000000)", "resample (a FILE)"}[l->kind]);
    }
    if (cfg->max_seq_len < 0 || cfg->max_seq_len == 1)
        return sl_errf(err, errlen, SL_EINVAL, "max sequence length must be 0 (none) or >= 2, got %d", cfg->max_seq_len);
    if (cfg->n_priorities < 0 || cfg->n_priorities > WL_PRIORITY_MIX_MAX)
        return sl_errf(err, errlen, SL_EINVAL, "priority mix: 0 to %d priorities", WL_PRIORITY_MIX_MAX);
    for (int i = 0; i < cfg->n_priorities; i++)
        if (!(cfg->priority_weight[i] > 0))
            return sl_errf(err, errlen, SL_EINVAL, "priority mix: weights must be > 0");
    if (cfg->prefix_groups < 0 ||
        (cfg->prefix_groups > 0 && (cfg->prefix_len < 1 || !(cfg->prefix_frac > 0 && cfg->prefix_frac <= 1))))
        return sl_errf(err, errlen, SL_EINVAL, "prefix groups: need GROUPS >= 1, LEN >= 1, 0 < FRAC <= 1");
    if (cfg->prefix_groups > 0 && cfg->max_seq_len > 0 && cfg->prefix_len >= cfg->max_seq_len - 1)
        return sl_errf(err, errlen, SL_EINVAL, "prefix groups: prefix length %d leaves no room under the max sequence length %d",
                    cfg->prefix_len, cfg->max_seq_len);
    return SL_OK;
}

int wl_lognormal_sd_from_median(double mean, double median, double *sd)
{
    if (!(median > 0) || !(median <= mean) || !isfinite(mean))
        return SL_EINVAL;
    double s2 = 2 * log(mean / median);
    *sd = mean * sqrt(expm1(s2));
    return SL_OK;
}

/* ---- generation --------------------------------------------------------------------------- */

/* A length sampler: the spec with what it needs precomputed. */
typedef struct sampler {
    const wl_length_spec_t *spec;
    double mu, sigma;         /* LOGNORMAL, of the log */
    double *zipf_cdf;         /* ZIPF: (zipf_max) cumulative probabilities */
    const int *column;        /* RESAMPLE: the source column */
    size_t column_n;
} sampler_t;

static int clamp_len(double x)
{
    if (!(x >= 1))
        return 1;
    return x > 1e9 ? 1000000000 : (int)lround(x);
}

static int sampler_init(sampler_t *s, const wl_length_spec_t *spec)
{
    memset(s, 0, sizeof *s);
    s->spec = spec;
    if (spec->kind == WL_LEN_LOGNORMAL) {
        s->sigma = sqrt(log1p(spec->sd * spec->sd / (spec->mean * spec->mean)));
        s->mu = log(spec->mean) - s->sigma * s->sigma / 2;
    } else if (spec->kind == WL_LEN_ZIPF) {
        s->zipf_cdf = sl_malloc((size_t)spec->zipf_max * sizeof(double));
        if (!s->zipf_cdf)
            return SL_ENOMEM;
        double total = 0;
        for (int k = 1; k <= spec->zipf_max; k++)
            s->zipf_cdf[k - 1] = total += pow(k, -spec->zipf_s);
        for (int k = 0; k < spec->zipf_max; k++)
            s->zipf_cdf[k] /= total;
    }
    return SL_OK;
}

static int sample(const sampler_t *s, gsl_rng *rng, size_t *row)
{
    const wl_length_spec_t *l = s->spec;
    switch (l->kind) {
    case WL_LEN_FIXED:
        return l->fixed;
    case WL_LEN_UNIFORM:
        return l->lo + (int)gsl_rng_uniform_int(rng, (unsigned long)(l->hi - l->lo) + 1);
    case WL_LEN_LOGNORMAL:
        return clamp_len(gsl_ran_lognormal(rng, s->mu, s->sigma));
    case WL_LEN_ZIPF: {
        double u = gsl_rng_uniform(rng);
        size_t lo = 0, hi = (size_t)l->zipf_max - 1; /* first k with cdf[k] > u */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (s->zipf_cdf[mid] > u)
                hi = mid;
            else
                lo = mid + 1;
        }
        return (int)lo + 1;
    }
    case WL_LEN_RESAMPLE:
        if (row && *row != (size_t)-1)
            return s->column[*row];
        size_t r = gsl_rng_uniform_int(rng, s->column_n);
        if (row)
            *row = r;
        return s->column[r];
    }
    return 1;
}

/* Loads the trace at path into a new *t; its error (if any) goes to out's errmsg. */
static int load_source(const char *path, wl_trace_t **t, wl_trace_t *out)
{
    *t = wl_trace_create();
    if (!*t) {
        snprintf(out->errmsg, sizeof out->errmsg, "out of memory");
        return SL_ENOMEM;
    }
    int rc = wl_trace_read_file(*t, path);
    if (rc)
        snprintf(out->errmsg, sizeof out->errmsg, "%s", (*t)->errmsg);
    return rc;
}

int wl_gen_generate(const wl_gen_config_t *cfg, wl_trace_t *out)
{
    wl_trace_clear(out);
    out->errmsg[0] = '\0';
    int rc = wl_gen_config_check(cfg, out->errmsg, sizeof out->errmsg);
    if (rc)
        return rc;
    /* Sources: [0] replay, [1] prompt resample, [2] output resample; one load per distinct file. */
    const char *path[3] = {cfg->arrival.kind == WL_ARRIVAL_REPLAY ? cfg->arrival.path : NULL,
                           cfg->prompt.kind == WL_LEN_RESAMPLE ? cfg->prompt.path : NULL,
                           cfg->output.kind == WL_LEN_RESAMPLE ? cfg->output.path : NULL};
    wl_trace_t *src[3] = {NULL, NULL, NULL};
    int owned[3] = {0, 0, 0};
    sampler_t ps, os;
    memset(&ps, 0, sizeof ps);
    memset(&os, 0, sizeof os);
    gsl_rng *rng = NULL;
    for (int i = 0; i < 3 && !rc; i++) {
        if (!path[i])
            continue;
        for (int j = 0; j < i && !src[i]; j++)
            if (path[j] && !strcmp(path[i], path[j]))
                src[i] = src[j];
        if (!src[i]) {
            owned[i] = 1;
            rc = load_source(path[i], &src[i], out);
        }
    }
    if (rc)
        goto done;
    if ((rc = sampler_init(&ps, &cfg->prompt)) || (rc = sampler_init(&os, &cfg->output)) ||
        (rc = wl_trace_reserve(out, cfg->n))) {
        snprintf(out->errmsg, sizeof out->errmsg, "out of memory for %zu requests", cfg->n);
        rc = SL_ENOMEM;
        goto done;
    }
    if (src[1])
        ps.column = src[1]->prompt_len, ps.column_n = src[1]->n;
    if (src[2])
        os.column = src[2]->output_len, os.column_n = src[2]->n;
    int joint = src[1] && src[1] == src[2];
    rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng) {
        snprintf(out->errmsg, sizeof out->errmsg, "out of memory for the random number generator");
        rc = SL_ENOMEM;
        goto done;
    }
    gsl_rng_set(rng, (unsigned long)cfg->seed);

    const wl_arrival_spec_t *a = &cfg->arrival;
    double t = 0, period = 0;
    if (src[0]) {
        const wl_trace_t *r = src[0];
        double gap = r->n > 1 ? (r->arrival[r->n - 1] - r->arrival[0]) / (double)(r->n - 1) : 1.0;
        period = r->arrival[r->n - 1] + (gap > 0 ? gap : 1.0);
    }
    const double gamma_k = a->kind == WL_ARRIVAL_GAMMA ? 1.0 / (a->cv * a->cv) : 0;
    double weight_total = 0;
    for (int k = 0; k < cfg->n_priorities; k++)
        weight_total += cfg->priority_weight[k];
    for (size_t i = 0; i < cfg->n; i++) {
        wl_request_t q = {.priority = 0, .prefix_group = -1, .prefix_len = 0};
        if (src[0]) {
            size_t m = src[0]->n;
            t = (src[0]->arrival[i % m] + (double)(i / m) * period) / a->time_scale;
        } else if (i > 0) {
            t += a->kind == WL_ARRIVAL_POISSON ? gsl_ran_exponential(rng, 1.0 / a->rate)
                 : a->kind == WL_ARRIVAL_GAMMA ? gsl_ran_gamma(rng, gamma_k, 1.0 / (a->rate * gamma_k))
                                               : 1.0 / a->rate;
        }
        q.arrival = round(t * 1e6) / 1e6; /* whole microseconds: the CSV round trip is exact */
        size_t row = (size_t)-1;
        q.prompt_len = sample(&ps, rng, joint ? &row : NULL);
        q.output_len = sample(&os, rng, joint ? &row : NULL);
        if (cfg->n_priorities > 0) {
            double u = gsl_rng_uniform(rng) * weight_total, acc = 0;
            int k = 0;
            for (; k < cfg->n_priorities - 1; k++)
                if (u < (acc += cfg->priority_weight[k]))
                    break;
            q.priority = cfg->priority_value[k];
        }
        if (cfg->prefix_groups > 0 && gsl_rng_uniform(rng) < cfg->prefix_frac) {
            q.prefix_group = (int)gsl_rng_uniform_int(rng, (unsigned long)cfg->prefix_groups);
            q.prefix_len = cfg->prefix_len;
            if (q.prompt_len <= q.prefix_len)
                q.prompt_len = q.prefix_len + 1;
        }
        if (cfg->max_seq_len > 0 && q.prompt_len + (int64_t)q.output_len > cfg->max_seq_len) {
            if (q.output_len > cfg->max_seq_len - 1)
                q.output_len = cfg->max_seq_len - 1;
            if (q.prompt_len > cfg->max_seq_len - q.output_len)
                q.prompt_len = cfg->max_seq_len - q.output_len;
            if (q.prefix_len > q.prompt_len)
                q.prefix_len = q.prompt_len;
        }
        wl_trace_append(out, &q); /* cannot fail: reserved above */
    }
done:
    gsl_rng_free(rng);
    sl_free(ps.zipf_cdf);
    sl_free(os.zipf_cdf);
    for (int i = 0; i < 3; i++)
        if (owned[i])
            wl_trace_free(src[i]);
    if (rc)
        wl_trace_clear(out);
    return rc;
}
