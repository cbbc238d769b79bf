/* profile.c — the measured-profile step-time model (contract in profile.h).
 *
 * Notes
 * 1. Basis. dense(M) = sum_i w_i(M) dense[i] with hat functions in M over the knots (two
 *    non-zero weights between knots, one at a knot, M / knot[n-1] on the last one past it), and
 *    likewise lm(rows) and dec(K). So the step time is linear in every coefficient and one weighted linear
 *    least squares fits them all; M = 0 and rows = 0 give a zero row of the basis.
 * 2. Identifiability. Every forward has some M, so a constant can move between dense and lm
 *    unless some points have rows = 0 (non-final prefill chunks): the profiler measures those.
 * 3. Times cannot be negative: while the fit has a negative coefficient, the most negative one is
 *    fixed at 0 (its column dropped) and the fit redone (a greedy form of non-negative least
 *    squares; noise on a shared machine otherwise trades a knot against its neighbours).
 */
#include "sim/profile.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <gsl/gsl_fit.h>

#include "sched/status.h"
#include "sim/calib.h"

static int geo_knots(double *k, long first, int factor, int max, int *n)
{
    if (max < 1)
        return SL_EINVAL;
    int c = 0;
    for (long v = first; v < max; v *= factor) {
        if (c >= SIM_PROFILE_MAX_KNOTS - 1)
            return SL_EINVAL;
        k[c++] = (double)v;
    }
    k[c++] = max;
    *n = c;
    return SL_OK;
}

/* Every integer up to SMALL_M, then doubling (32, 64, ...), and max: the CPU kernels work in tiles
 * of a few tokens, so the cost of a small step is not smooth in M (on SmolLM2 a 7-token decode step
 * cost 12% more than interpolating between 4 and 8 gives); past it the cost is close to linear. */
#define SMALL_M 16
static int small_m_knots(double *k, int max, int *n)
{
    if (max < 1)
        return SL_EINVAL;
    int c = 0;
    for (long v = 1; v < max; v = v < SMALL_M ? v + 1 : 2 * v) {
        if (c >= SIM_PROFILE_MAX_KNOTS - 1)
            return SL_EINVAL;
        k[c++] = (double)v;
    }
    k[c++] = max;
    *n = c;
    return SL_OK;
}

int sim_profile_set_knots(sim_profile_t *p, int max_m, int max_rows, int max_ctx)
{
    int rc = small_m_knots(p->knot, max_m, &p->n_knots);
    if (rc == SL_OK)
        rc = small_m_knots(p->lm_knot, max_rows, &p->n_lm_knots);
    if (rc == SL_OK)
        rc = geo_knots(p->dec_knot, 16, 2, max_ctx, &p->n_dec_knots);
    return rc == SL_OK ? geo_knots(p->kv_knot, 64, 4, max_rows * max_ctx, &p->n_kv_knots) : rc;
}

/* Hat-function weights of x over knots k[0..n) into w[0..n): linear in x between knots, x / k[0]
 * below the first, x / k[n-1] on the last one past it. Every table is linear between its knots:
 * the work of the projections and of attention grows linearly in the tokens and the KV read,
 * and the knots are dense where it is not (interpolating in log x, as before 2026-11-27,
 * overshot a linear cost by up to 25% between knots 4x apart). */
static void hat(const double *k, int n, double x, double *w)
{
    memset(w, 0, sizeof(double) * (size_t)n);
    if (x <= 0)
        return;
    if (x >= k[n - 1]) {
        w[n - 1] = x / k[n - 1];
        return;
    }
    if (x <= k[0]) {
        w[0] = x / k[0];
        return;
    }
    int i = 0;
    while (x > k[i + 1])
        i++;
    double u = (x - k[i]) / (k[i + 1] - k[i]);
    w[i] = 1 - u;
    w[i + 1] = u;
}

static double table(const double *k, const double *t, int n, double x)
{
    double w[SIM_PROFILE_MAX_KNOTS], s = 0;
    hat(k, n, x, w);
    for (int i = 0; i < n; i++)
        s += w[i] * t[i];
    return s;
}

double sim_profile_forward(const sim_profile_t *p, const sim_profile_point_t *pt)
{
    return table(p->knot, p->dense, p->n_knots, pt->m) + table(p->lm_knot, p->lm, p->n_lm_knots, pt->rows) +
           pt->n_dec * table(p->dec_knot, p->dec, p->n_dec_knots, pt->dec_kv) +
           table(p->kv_knot, p->kv, p->n_kv_knots, pt->n_dec * pt->dec_kv) + p->pre * pt->pre_work;
}

double sim_profile_forward_seqs(const sim_profile_t *p, int m, int rows, double pre_work, const int *dec_kv,
                                int n_dec)
{
    double dec = 0, kv = 0;
    for (int i = 0; i < n_dec; i++)
        dec += table(p->dec_knot, p->dec, p->n_dec_knots, dec_kv[i]), kv += dec_kv[i];
    return table(p->knot, p->dense, p->n_knots, m) + table(p->lm_knot, p->lm, p->n_lm_knots, rows) + dec +
           table(p->kv_knot, p->kv, p->n_kv_knots, kv) + p->pre * pre_work;
}

/* ---- fitting -------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int sim_profile_fit(sim_profile_t *p, const sim_profile_point_t *pts, int n, char *err, int errlen)
{
    int nk = p->n_knots, nl = p->n_lm_knots, nd = p->n_dec_knots, nv = p->n_kv_knots, q = nk + nl + nd + nv + 1;
    if (nk < 1 || nl < 1 || nd < 1 || nv < 1) {
        snprintf(err, errlen, "profile fit: knots not set");
        return SL_EINVAL;
    }
    if (n < q) {
        snprintf(err, errlen, "profile fit: %d measured points for %d coefficients", n, q);
        return SL_EINVAL;
    }
    /* the full design matrix; columns: dense knots, lm knots, dec knots, kv knots, pre */
    double *full = sl_calloc((size_t)n * q, sizeof *full), *x = sl_malloc(sizeof *x * (size_t)n * q);
    double *y = sl_malloc(sizeof *y * (size_t)n), *c = sl_malloc(sizeof *c * (size_t)q), coef[5 * SIM_PROFILE_MAX_KNOTS];
    bool use[5 * SIM_PROFILE_MAX_KNOTS];
    if (!full || !x || !y || !c) {
        sl_free(full), sl_free(x), sl_free(y), sl_free(c);
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        double *row = full + (size_t)i * q;
        hat(p->knot, nk, pts[i].m, row);
        hat(p->lm_knot, nl, pts[i].rows, row + nk);
        hat(p->dec_knot, nd, pts[i].dec_kv, row + nk + nl);
        for (int j = 0; j < nd; j++)
            row[nk + nl + j] *= pts[i].n_dec;
        hat(p->kv_knot, nv, pts[i].n_dec * pts[i].dec_kv, row + nk + nl + nd);
        row[q - 1] = pts[i].pre_work;
        y[i] = pts[i].t;
    }
    int rc = SL_OK;
    for (int j = 0; j < q; j++)
        use[j] = true;
    for (int pass = 0; pass < q && rc == SL_OK; pass++) { /* note 3: greedy non-negativity */
        int u = 0;
        for (int j = 0; j < q; j++)
            u += use[j];
        for (int i = 0; i < n; i++)
            for (int j = 0, k = 0; j < q; j++)
                if (use[j])
                    x[(size_t)i * u + k++] = full[(size_t)i * q + j];
        if ((rc = sim_fit_relative(x, y, n, u, c)) != SL_OK)
            break;
        int worst = -1;
        for (int j = 0, k = 0; j < q; j++) {
            coef[j] = use[j] ? c[k++] : 0;
            if (coef[j] < 0 && (worst < 0 || coef[j] < coef[worst]))
                worst = j;
        }
        if (worst < 0)
            break;
        use[worst] = false, coef[worst] = 0;
    }
    sl_free(full), sl_free(x), sl_free(y), sl_free(c);
    if (rc != SL_OK) {
        snprintf(err, errlen, "profile fit: least squares failed (too few distinct step shapes)");
        return rc;
    }
    for (int j = 0; j < q; j++)
        coef[j] = fmax(0, coef[j]);
    memcpy(p->dense, coef, sizeof(double) * (size_t)nk);
    memcpy(p->lm, coef + nk, sizeof(double) * (size_t)nl);
    memcpy(p->dec, coef + nk + nl, sizeof(double) * (size_t)nd);
    memcpy(p->kv, coef + nk + nl + nd, sizeof(double) * (size_t)nv);
    p->pre = coef[q - 1];
    double *rel = sl_malloc(sizeof *rel * (size_t)n);
    if (!rel) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    for (int i = 0; i < n; i++)
        rel[i] = fabs(sim_profile_forward(p, &pts[i]) - pts[i].t) / pts[i].t;
    qsort(rel, (size_t)n, sizeof *rel, cmp_double);
    p->fit_err = n % 2 ? rel[n / 2] : 0.5 * (rel[n / 2 - 1] + rel[n / 2]);
    sl_free(rel);
    return SL_OK;
}

int sim_profile_fit_host(sim_profile_t *p, const double *overhead, const int *rows, int n, char *err, int errlen)
{
    if (n < 3) {
        snprintf(err, errlen, "host overhead fit: %d engine steps, need at least 3", n);
        return SL_EINVAL;
    }
    /* the median overhead of each distinct row count (robust to a step the OS interrupted), then
     * a line through those medians weighted by how many steps each has */
    double *pair = sl_malloc(sizeof *pair * 2 * (size_t)n);
    double *xs = sl_malloc(sizeof *xs * (size_t)n), *ys = sl_malloc(sizeof *ys * (size_t)n);
    double *ws = sl_malloc(sizeof *ws * (size_t)n), *tmp = sl_malloc(sizeof *tmp * (size_t)n);
    if (!pair || !xs || !ys || !ws || !tmp) {
        sl_free(pair), sl_free(xs), sl_free(ys), sl_free(ws), sl_free(tmp);
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    for (int i = 0; i < n; i++)
        pair[2 * i] = rows[i], pair[2 * i + 1] = overhead[i];
    qsort(pair, (size_t)n, 2 * sizeof *pair, cmp_double); /* by rows */
    int g = 0;
    for (int i = 0; i < n;) {
        int j = i, k = 0;
        while (j < n && pair[2 * j] == pair[2 * i])
            tmp[k++] = pair[2 * j++ + 1];
        qsort(tmp, (size_t)k, sizeof *tmp, cmp_double);
        xs[g] = pair[2 * i];
        ys[g] = k % 2 ? tmp[k / 2] : 0.5 * (tmp[k / 2 - 1] + tmp[k / 2]);
        ws[g++] = k;
        i = j;
    }
    double c0 = ys[0], c1 = 0, cov00, cov01, cov11, sumsq;
    if (g >= 2 && gsl_fit_wlinear(xs, 1, ws, 1, ys, 1, (size_t)g, &c0, &c1, &cov00, &cov01, &cov11, &sumsq) != 0)
        c0 = ys[0], c1 = 0;
    if (c1 < 0) { /* no visible per-row cost: a weighted mean */
        double s = 0, w = 0;
        for (int i = 0; i < g; i++)
            s += ws[i] * ys[i], w += ws[i];
        c0 = fmax(0, s / w), c1 = 0;
    } else if (c0 < 0) { /* no visible fixed cost: a line through the origin. (A mean here once charged
                          * every 1-row step the overhead of a 16-row one: 0.11 ms against 0.01 ms.) */
        double sxy = 0, sxx = 0;
        for (int i = 0; i < g; i++)
            sxy += ws[i] * xs[i] * ys[i], sxx += ws[i] * xs[i] * xs[i];
        c0 = 0, c1 = sxx > 0 ? fmax(0, sxy / sxx) : 0;
    }
    p->host_s = c0, p->host_row = c1;
    sl_free(pair), sl_free(xs), sl_free(ys), sl_free(ws), sl_free(tmp);
    return SL_OK;
}

/* ---- pricing -------------------------------------------------------------------------------- */

double sim_profile_step(const sim_profile_t *p, const sched_step_t *step, sim_cost_parts_t *parts)
{
    sim_profile_point_t pt = {.m = step->n_tokens + step->n_padded_tokens};
    double dec = 0, kv = 0;
    for (int i = 0; i < step->n_seqs; i++) {
        const sched_seq_step_t *s = &step->seqs[i];
        if (s->sample)
            pt.rows += 1 + s->n_draft;
        if (s->is_prefill) {
            double q = s->n_tokens + s->padded_tokens;
            pt.pre_work += q * (s->context_len + (q + 1) / 2);
        } else { /* the token reads its context; drafts after it are a chunk on top (as the engine reports) */
            dec += table(p->dec_knot, p->dec, p->n_dec_knots, s->context_len + 1);
            kv += s->context_len + 1;
            if (s->n_tokens > 1)
                pt.pre_work += (s->n_tokens - 1) * (s->context_len + 1 + s->n_tokens / 2.0);
        }
    }
    dec += table(p->kv_knot, p->kv, p->n_kv_knots, kv);
    sim_cost_parts_t c = {0};
    c.dense = table(p->knot, p->dense, p->n_knots, pt.m);
    c.lm_head = table(p->lm_knot, p->lm, p->n_lm_knots, pt.rows);
    c.attention = p->pre * pt.pre_work + dec;
    c.host = p->host_s + p->host_row * pt.rows;
    c.total = fmax(0, c.dense + c.lm_head + c.attention) + c.host;
    if (parts)
        *parts = c;
    return c.total;
}

/* The rescale factor of a step of m tokens (sim_profile_rescale). */
static double blend(double m, double small, double large)
{
    if (m <= 16)
        return small;
    if (m >= 128)
        return large;
    double u = log(m / 16) / log(8);
    return small + u * (large - small);
}

void sim_profile_rescale(sim_profile_t *p, double small, double large)
{
    small = small > 0 ? small : 1, large = large > 0 ? large : 1;
    for (int i = 0; i < p->n_knots; i++)
        p->dense[i] *= blend(p->knot[i], small, large);
    for (int i = 0; i < p->n_lm_knots; i++)
        p->lm[i] *= blend(p->lm_knot[i], small, large);
    for (int i = 0; i < p->n_dec_knots; i++)
        p->dec[i] *= small;
    for (int i = 0; i < p->n_kv_knots; i++)
        p->kv[i] *= small;
    p->pre *= large;
    p->host_s *= small, p->host_row *= small;
}

int sim_profile_num_blocks(const sim_profile_t *p, const sched_config_t *sc, double kv_memory_mb, int *out,
                           char *err, int errlen)
{
    int64_t per_block = sched_mem_kv_bytes_per_token(&p->model) * sc->block_size;
    int64_t seqs = sc->max_num_seqs > sc->max_batch_size ? sc->max_num_seqs : sc->max_batch_size;
    int64_t blocks_per_seq = (sc->max_sequence_length + sc->block_size - 1) / sc->block_size;
    int64_t want = seqs * blocks_per_seq, cap = p->kv_budget_bytes;
    if (kv_memory_mb > 0) {
        int64_t lim = (int64_t)(kv_memory_mb * 1024.0 * 1024.0);
        if (cap <= 0 || lim < cap)
            cap = lim;
    }
    if (cap > 0 && per_block > 0 && want * per_block > cap)
        want = cap / per_block;
    if (want < blocks_per_seq) {
        snprintf(err, errlen, "KV pool: %lld blocks do not hold one max_sequence_length (%d) sequence",
                 (long long)want, sc->max_sequence_length);
        return SL_ENOMEM;
    }
    *out = want > INT32_MAX / 2 ? INT32_MAX / 2 : (int)want;
    return SL_OK;
}

int sim_profile_check(const sim_profile_t *p, const char *host, const char *cpu, const char *backend, int threads,
                      const sched_model_shape_t *m, char *err, int errlen)
{
    if ((host && strcmp(host, p->host)) || (cpu && strcmp(cpu, p->cpu))) {
        snprintf(err, errlen, "profile '%s' was measured on host %s (CPU %s); this is host %s (CPU %s): "
                 "run `sluice profile` here", p->name, p->host, p->cpu, host ? host : p->host, cpu ? cpu : p->cpu);
        return SL_EINVAL;
    }
    if (backend && strcmp(backend, p->backend)) {
        snprintf(err, errlen, "profile '%s' is stale: measured on backend %s, this run uses %s", p->name,
                 p->backend, backend);
        return SL_EINVAL;
    }
    if (threads > 0 && threads != p->threads) {
        snprintf(err, errlen, "profile '%s' is stale: measured with %d threads, this run uses %d", p->name,
                 p->threads, threads);
        return SL_EINVAL;
    }
    if (m) {
        const sched_model_shape_t *q = &p->model;
        struct { const char *what; double a, b; } f[] = {
            {"layers", q->n_layers, m->n_layers}, {"hidden", q->hidden, m->hidden},
            {"heads", q->n_heads, m->n_heads}, {"KV heads", q->n_kv_heads, m->n_kv_heads},
            {"head_dim", q->head_dim, m->head_dim}, {"FFN width", q->intermediate, m->intermediate},
            {"vocabulary", q->vocab, m->vocab}, {"bytes per weight", q->bytes_per_weight, m->bytes_per_weight},
            {"bytes per KV element", q->bytes_per_kv, m->bytes_per_kv},
        };
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            if (fabs(f[i].a - f[i].b) > 1e-9 * fabs(f[i].a)) {
                snprintf(err, errlen, "profile '%s' is stale: measured on model %s with %s %g, this model (%s) "
                         "has %g", p->name, q->name, f[i].what, f[i].a, m->name, f[i].b);
                return SL_EINVAL;
            }
    }
    return SL_OK;
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static int put(char *buf, size_t len, size_t *k, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t len, size_t *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = *k < len ? vsnprintf(buf + *k, len - *k, fmt, ap) : -1;
    va_end(ap);
    if (w < 0 || *k + (size_t)w >= len)
        return -1;
    *k += (size_t)w;
    return 0;
}

static int put_array(char *buf, size_t len, size_t *k, const char *key, const double *v, int n)
{
    int bad = put(buf, len, k, ", \"%s\": [", key);
    for (int i = 0; i < n && !bad; i++)
        bad = put(buf, len, k, i ? ", %.9g" : "%.9g", v[i]);
    return bad || put(buf, len, k, "]");
}

/* JSON string value without quotes or backslashes (names, hosts, CPU models, paths are plain). */
static void plain(char *dst, size_t n, const char *s)
{
    size_t j = 0;
    for (; s && *s && j + 1 < n; s++)
        dst[j++] = *s == '"' || *s == '\\' || (unsigned char)*s < 0x20 ? '_' : *s;
    dst[j] = 0;
}

bool sim_profile_to_json(const sim_profile_t *p, char *buf, size_t len)
{
    size_t k = 0;
    char name[64], backend[16], host[64], cpu[128], path[256], created[32], model[32];
    plain(name, sizeof name, p->name), plain(backend, sizeof backend, p->backend), plain(host, sizeof host, p->host);
    plain(cpu, sizeof cpu, p->cpu), plain(path, sizeof path, p->model_path), plain(created, sizeof created, p->created);
    plain(model, sizeof model, p->model.name);
    const sched_model_shape_t *m = &p->model;
    int bad = put(buf, len, &k,
                  "{\"model_version\": %d, \"name\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"host\": \"%s\", "
                  "\"cpu\": \"%s\", "
                  "\"model_path\": \"%s\", \"created\": \"%s\", \"model\": {\"name\": \"%s\", \"n_layers\": %d, "
                  "\"hidden\": %d, \"n_heads\": %d, \"n_kv_heads\": %d, \"head_dim\": %d, \"intermediate\": %d, "
                  "\"vocab\": %d, \"max_context\": %d, \"tied_embeddings\": %d, \"bytes_per_weight\": %.17g, "
                  "\"bytes_per_kv\": %.17g}, \"kv_budget_bytes\": %lld, \"max_seq_len\": %d, \"pre\": %.9g, "
                  "\"host_s\": %.9g, \"host_row\": %.9g, \"wake_s\": %.9g, \"idle_after_s\": %.9g, "
                  "\"cold_s\": %.9g, \"cold_after_s\": %.9g, \"fit_err\": %.6g",
                  SIM_PROFILE_MODEL_VERSION, name, backend, p->threads, host, cpu, path, created, model, m->n_layers, m->hidden,
                  m->n_heads, m->n_kv_heads, m->head_dim, m->intermediate, m->vocab, m->max_context,
                  m->tied_embeddings, m->bytes_per_weight, m->bytes_per_kv, (long long)p->kv_budget_bytes,
                  p->max_seq_len, p->pre, p->host_s, p->host_row, p->wake_s, p->idle_after_s, p->cold_s,
                  p->cold_after_s, p->fit_err);
    bad = bad || put_array(buf, len, &k, "knots", p->knot, p->n_knots) ||
          put_array(buf, len, &k, "dense", p->dense, p->n_knots) ||
          put_array(buf, len, &k, "lm_knots", p->lm_knot, p->n_lm_knots) ||
          put_array(buf, len, &k, "lm", p->lm, p->n_lm_knots) ||
          put_array(buf, len, &k, "dec_knots", p->dec_knot, p->n_dec_knots) ||
          put_array(buf, len, &k, "dec", p->dec, p->n_dec_knots) ||
          put_array(buf, len, &k, "kv_knots", p->kv_knot, p->n_kv_knots) ||
          put_array(buf, len, &k, "kv", p->kv, p->n_kv_knots) ||
          put_array(buf, len, &k, "anchor_s", p->anchor_s, SIM_PROFILE_ANCHORS) || put(buf, len, &k, "}");
    return !bad;
}

static bool get_num(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return false;
    *out = v->valuedouble;
    return true;
}

static bool get_str(const cJSON *o, const char *key, char *out, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v))
        return false;
    snprintf(out, n, "%s", v->valuestring);
    return true;
}

/* key's number, in [lo, hi] and whole when `whole`: what the profile's fields can hold (checked
 * before any cast, and so that the step-time model never divides by zero or prices a step below 0) */
static bool get_ranged(const cJSON *o, const char *key, double lo, double hi, bool whole, double *out)
{
    return get_num(o, key, out) && *out >= lo && *out <= hi && (!whole || *out == floor(*out));
}

/* An array of 1..SIM_PROFILE_MAX_KNOTS numbers, *n of them when *n > 0: knots (`knots`: > 0 and
 * ascending, as the hat functions divide by their gaps) or times (finite, >= 0) */
static int get_array(const cJSON *o, const char *key, double *out, int *n, bool knots)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key), *v;
    const int size = cJSON_GetArraySize(a); /* checked before writing: out may hold just *n */
    if (!cJSON_IsArray(a) || size < 1 || size > SIM_PROFILE_MAX_KNOTS || (*n && *n != size))
        return SL_EFORMAT;
    int i = 0;
    cJSON_ArrayForEach(v, a) {
        const double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(x >= 0 && x <= 1e18) || (knots && !(x > (i > 0 ? out[i - 1] : 0))))
            return SL_EFORMAT;
        out[i++] = x;
    }
    *n = i;
    return SL_OK;
}

int sim_profile_from_json(const char *json, sim_profile_t *p, char *err, int errlen)
{
    memset(p, 0, sizeof *p);
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(err, errlen, "engine profile: not a JSON object");
        return SL_EFORMAT;
    }
    const char *bad = NULL;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    double version = 0;
    if (!get_num(root, "model_version", &version) || version < SIM_PROFILE_MODEL_VERSION) {
        get_str(root, "name", p->name, sizeof p->name);
        snprintf(err, errlen, "engine profile '%s' was made by an older sluice (another step-time model); "
                 "run sluice profile again", p->name);
        cJSON_Delete(root);
        return SL_EFORMAT;
    }
    double v[12];
    enum { BIG = 1 << 30 };
    static const struct { const char *key; double lo, hi; bool whole; } mk[] = {
        {"n_layers", 1, BIG, 1}, {"hidden", 1, BIG, 1}, {"n_heads", 1, BIG, 1}, {"n_kv_heads", 1, BIG, 1},
        {"head_dim", 1, BIG, 1}, {"intermediate", 1, BIG, 1}, {"vocab", 1, BIG, 1}, {"max_context", 1, BIG, 1},
        {"tied_embeddings", 0, 1, 1}, {"bytes_per_weight", 1e-3, 64, 0}, {"bytes_per_kv", 1e-3, 64, 0},
    }, pk[] = {
        {"threads", 1, 65536, 1}, {"kv_budget_bytes", 0, 1e18, 1}, {"max_seq_len", 0, BIG, 1}, {"pre", 0, 1e6, 0},
        {"host_s", 0, 1e6, 0}, {"host_row", 0, 1e6, 0}, {"fit_err", 0, 1e6, 0},
    };
    if (!get_str(root, "name", p->name, sizeof p->name))
        bad = "name";
    else if (!get_str(root, "backend", p->backend, sizeof p->backend))
        bad = "backend";
    else if (!get_str(root, "host", p->host, sizeof p->host) || !get_str(root, "cpu", p->cpu, sizeof p->cpu))
        bad = "host/cpu";
    else if (!cJSON_IsObject(m) || !get_str(m, "name", p->model.name, sizeof p->model.name))
        bad = "model";
    for (size_t i = 0; !bad && i < sizeof mk / sizeof mk[0]; i++)
        if (!get_ranged(m, mk[i].key, mk[i].lo, mk[i].hi, mk[i].whole, &v[i]))
            bad = mk[i].key;
    if (!bad) {
        sched_model_shape_t *s = &p->model;
        s->n_layers = (int)v[0], s->hidden = (int)v[1], s->n_heads = (int)v[2], s->n_kv_heads = (int)v[3];
        s->head_dim = (int)v[4], s->intermediate = (int)v[5], s->vocab = (int)v[6], s->max_context = (int)v[7];
        s->tied_embeddings = (int)v[8], s->bytes_per_weight = v[9], s->bytes_per_kv = v[10];
    }
    for (size_t i = 0; !bad && i < sizeof pk / sizeof pk[0]; i++)
        if (!get_ranged(root, pk[i].key, pk[i].lo, pk[i].hi, pk[i].whole, &v[i]))
            bad = pk[i].key;
    if (!bad) {
        p->threads = (int)v[0], p->kv_budget_bytes = (int64_t)v[1], p->max_seq_len = (int)v[2];
        p->pre = v[3], p->host_s = v[4], p->host_row = v[5], p->fit_err = v[6];
        /* profiles from before the wake term have none */
        if (!get_ranged(root, "wake_s", 0, 1e6, 0, &p->wake_s) ||
            !get_ranged(root, "idle_after_s", 0, 1e6, 0, &p->idle_after_s))
            p->wake_s = p->idle_after_s = 0;
        /* and from before the cold term, none of that */
        if (!get_ranged(root, "cold_s", 0, 1e6, 0, &p->cold_s) ||
            !get_ranged(root, "cold_after_s", 0, 1e6, 0, &p->cold_after_s))
            p->cold_s = p->cold_after_s = 0;
        get_str(root, "model_path", p->model_path, sizeof p->model_path);
        get_str(root, "created", p->created, sizeof p->created);
        if (get_array(root, "knots", p->knot, &p->n_knots, 1) || get_array(root, "dense", p->dense, &p->n_knots, 0))
            bad = "knots/dense";
        else if (get_array(root, "lm_knots", p->lm_knot, &p->n_lm_knots, 1) ||
                 get_array(root, "lm", p->lm, &p->n_lm_knots, 0))
            bad = "lm_knots/lm";
        else if (get_array(root, "dec_knots", p->dec_knot, &p->n_dec_knots, 1) ||
                 get_array(root, "dec", p->dec, &p->n_dec_knots, 0))
            bad = "dec_knots/dec";
        else if (get_array(root, "kv_knots", p->kv_knot, &p->n_kv_knots, 1) ||
                 get_array(root, "kv", p->kv, &p->n_kv_knots, 0))
            bad = "kv_knots/kv";
        int na = SIM_PROFILE_ANCHORS;
        if (!bad && get_array(root, "anchor_s", p->anchor_s, &na, 0))
            bad = "anchor_s";
    }
    cJSON_Delete(root);
    if (bad) {
        snprintf(err, errlen, "engine profile '%s': '%s' missing, malformed or out of range",
                 p->name[0] ? p->name : "?", bad);
        return SL_EFORMAT;
    }
    return SL_OK;
}
