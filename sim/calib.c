/* calib.c — calibration tables: CSV loading, GSL least-squares fits, held-out checks.
 *
 * Design notes
 * 1. Operator tables are kept per TP degree as (M, seconds) arrays sorted by M with duplicate
 *    rows averaged. With holdout, every other distinct M (odd index) goes to the held-out arrays
 *    and never touches the interpolation table or the fits.
 * 2. Every fit is a weighted linear least squares (gsl_multifit_wlinear) with weights 1/t^2, so
 *    it minimises relative error, which is what the 5% target measures.
 * 3. The GEMM roofline is max(memory line, compute line); each line is fitted on the points where
 *    it binds (M <= 32 and M >= 1024), so both stay linear problems. Prefill attention likewise
 *    is max(launch floor, line in FLOPs and query tokens): the floor is the mean of the rows within 30% of the
 *    fastest, the line is fitted on the rest.
 */
#include "sim/calib.h"

#include <errno.h>
#include <gsl/gsl_multifit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/status.h"
#include "sim/hw.h"

static const char *const op_names[SIM_N_OPS] = {
    "emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
};

const char *sim_op_name(sim_op_t op) { return op < SIM_N_OPS ? op_names[op] : "?"; }

bool sim_op_is_gemm(sim_op_t op)
{
    return op == SIM_OP_QKV || op == SIM_OP_O || op == SIM_OP_UP || op == SIM_OP_DOWN;
}

/* ---- work per operator ------------------------------------------------------------------ */

void sim_op_work(const sched_model_shape_t *s, int tp, sim_op_t op, double m, double *bytes,
                 double *flops)
{
    const double a = 2.0; /* fp16 activation bytes */
    const double w = s->bytes_per_weight;
    double h = s->hidden, q = (double)s->n_heads * s->head_dim / tp,
           kv = (double)s->n_kv_heads * s->head_dim / tp, inter = (double)s->intermediate / tp;
    double n = 0, k = 0;
    *flops = 0;
    switch (op) {
    case SIM_OP_QKV: n = q + 2 * kv, k = h; break;
    case SIM_OP_O: n = h, k = q; break;
    case SIM_OP_UP: n = 2 * inter, k = h; break;
    case SIM_OP_DOWN: n = h, k = inter; break;
    case SIM_OP_EMB: *bytes = m * 2 * h * a; return;
    case SIM_OP_INPUT_NORM:
    case SIM_OP_POST_NORM: *bytes = m * 2 * h * a + h * w; return;
    case SIM_OP_ROPE: *bytes = m * 2 * (q + kv) * a; return;
    case SIM_OP_ACT: *bytes = m * 3 * inter * a; return;
    case SIM_OP_ADD: *bytes = m * 3 * h * a; return;
    default: *bytes = 0; return;
    }
    *bytes = n * k * w + m * (n + k) * a;
    *flops = 2 * m * n * k;
}

/* ---- CSV ---------------------------------------------------------------------------------- */

typedef struct csv {
    const char *path;
    char *buf;
    char *cur;     /* next line */
    int line;
    int ncol;
    char *hdr[64];
    char *f[64];   /* current row's fields */
} csv_t;

static int csv_split(char *s, char **out, int cap)
{
    int n = 0;
    for (;;) {
        if (n < cap)
            out[n] = s;
        n++;
        char *c = strchr(s, ',');
        if (!c)
            break;
        *c = 0;
        s = c + 1;
    }
    char *e = out[n <= cap ? n - 1 : cap - 1];
    e[strcspn(e, "\r\n")] = 0;
    return n;
}

static int csv_next(csv_t *c)
{
    while (c->cur && *c->cur) {
        char *line = c->cur, *nl = strchr(line, '\n');
        c->cur = nl ? nl + 1 : NULL;
        if (nl)
            *nl = 0;
        c->line++;
        if (!*line || *line == '\r')
            continue;
        return csv_split(line, c->f, 64);
    }
    return 0;
}

static int csv_open(csv_t *c, const char *path, char *err, int errlen)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return SL_EIO;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->buf = len >= 0 ? sl_malloc((size_t)len + 1) : NULL;
    if (!c->buf || fread(c->buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        sl_free(c->buf);
        c->buf = NULL;
        snprintf(err, errlen, "%s: cannot read (%s)", path, len < 0 ? "seek failed" : "out of memory");
        return c->buf ? SL_EIO : SL_ENOMEM;
    }
    fclose(f);
    c->buf[len] = 0;
    c->cur = c->buf;
    c->ncol = csv_next(c);
    if (c->ncol <= 0 || c->ncol > 64) {
        snprintf(err, errlen, "%s:1: expected a header of 1..64 columns", path);
        sl_free(c->buf);
        c->buf = NULL;
        return SL_EFORMAT;
    }
    memcpy(c->hdr, c->f, sizeof c->hdr);
    return SL_OK;
}

static int csv_col(const csv_t *c, const char *name, char *err, int errlen)
{
    for (int i = 0; i < c->ncol; i++)
        if (!strcmp(c->hdr[i], name))
            return i;
    snprintf(err, errlen, "%s:1: no column '%s'", c->path, name);
    return -1;
}

static int csv_num(const csv_t *c, int col, double *out, char *err, int errlen)
{
    char *end;
    errno = 0;
    *out = strtod(c->f[col], &end);
    if (end == c->f[col] || *end || errno || !isfinite(*out)) {
        snprintf(err, errlen, "%s:%d: column '%s': expected a number, got '%s'", c->path, c->line,
                 c->hdr[col], c->f[col]);
        return SL_EFORMAT;
    }
    return SL_OK;
}

/* ---- weighted least squares -------------------------------------------------------------- */

int sim_fit_relative(const double *x, const double *y, int n, int p, double *c)
{
    if (n < p)
        return SL_EINVAL;
    gsl_matrix *X = gsl_matrix_alloc(n, p), *cov = gsl_matrix_alloc(p, p);
    gsl_vector *Y = gsl_vector_alloc(n), *W = gsl_vector_alloc(n), *C = gsl_vector_alloc(p);
    gsl_multifit_linear_workspace *ws = gsl_multifit_linear_alloc(n, p);
    int rc = SL_ENOMEM;
    if (X && cov && Y && W && C && ws) {
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < p; j++)
                gsl_matrix_set(X, i, j, x[i * p + j]);
            gsl_vector_set(Y, i, y[i]);
            gsl_vector_set(W, i, 1.0 / (y[i] * y[i]));
        }
        double chisq;
        rc = gsl_multifit_wlinear(X, W, Y, C, cov, &chisq, ws) ? SL_EINVAL : SL_OK;
        for (int j = 0; j < p; j++)
            c[j] = gsl_vector_get(C, j);
    }
    gsl_multifit_linear_free(ws);
    gsl_vector_free(C);
    gsl_vector_free(W);
    gsl_vector_free(Y);
    gsl_matrix_free(cov);
    gsl_matrix_free(X);
    return rc;
}

/* ---- operator tables ---------------------------------------------------------------------- */

double sim_roof_eval(const sim_roof_fit_t *f, const sched_model_shape_t *s, int tp, sim_op_t op,
                     double m, double bw_scale, double flop_scale)
{
    double bytes, flops;
    sim_op_work(s, tp, op, m, &bytes, &flops);
    return fmax(f->c0 + f->xb * bw_scale * bytes, f->xf * flop_scale * flops);
}

static double interp(const double *x, const double *y, int n, double v, bool logx)
{
    if (n == 1 || v <= x[0])
        return y[0];
    if (v >= x[n - 1])
        return y[n - 1];
    int lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    double u = logx ? (log(v) - log(x[lo])) / (log(x[hi]) - log(x[lo])) : (v - x[lo]) / (x[hi] - x[lo]);
    return y[lo] + u * (y[hi] - y[lo]);
}

double sim_calib_interp(const sim_op_table_t *tab, sim_op_t op, double m)
{
    return interp(tab->m, tab->t[op], tab->n, m, true);
}

static int fit_table(sim_op_table_t *tab, const sched_model_shape_t *ref)
{
    int n = tab->n;
    double *x = sl_malloc(sizeof(double) * 2 * n), *y = sl_malloc(sizeof(double) * n);
    if (!x || !y) {
        sl_free(x);
        sl_free(y);
        return SL_ENOMEM;
    }
    int rc = SL_OK;
    for (int op = 0; op < SIM_N_OPS && rc == SL_OK; op++) {
        sim_roof_fit_t *fit = &tab->fit[op];
        bool gemm = sim_op_is_gemm(op);
        double c[2], bytes, flops;
        /* A GEMM's bytes at M <= 32 are almost all weights, so an intercept would be collinear
         * with them: its memory line goes through the origin. */
        int k = 0, p = gemm ? 1 : 2;
        for (int i = 0; i < n; i++)
            if (!gemm || tab->m[i] <= 32) {
                sim_op_work(ref, tab->tp, op, tab->m[i], &bytes, &flops);
                if (!gemm)
                    x[p * k] = 1;
                x[p * k + p - 1] = bytes, y[k++] = tab->t[op][i];
            }
        rc = sim_fit_relative(x, y, k, p, c);
        fit->c0 = gemm ? 0 : c[0], fit->xb = c[p - 1], fit->xf = 0;
        if (gemm && rc == SL_OK) {
            k = 0;
            for (int i = 0; i < n; i++)
                if (tab->m[i] >= 1024) {
                    sim_op_work(ref, tab->tp, op, tab->m[i], &bytes, &flops);
                    x[k] = flops, y[k++] = tab->t[op][i];
                }
            rc = sim_fit_relative(x, y, k, 1, c);
            fit->xf = c[0];
        }
    }
    sl_free(x);
    sl_free(y);
    return rc;
}

typedef struct op_row {
    int tp;
    double m;
    double t[SIM_N_OPS];
} op_row_t;

static int cmp_op_row(const void *a, const void *b)
{
    const op_row_t *x = a, *y = b;
    if (x->tp != y->tp)
        return x->tp < y->tp ? -1 : 1;
    return x->m < y->m ? -1 : x->m > y->m;
}

/* Splits rows [lo, hi) of one TP degree (sorted, duplicates already averaged) into tab. */
static int fill_table(sim_op_table_t *tab, const op_row_t *r, int cnt, bool holdout)
{
    int nh = holdout ? cnt / 2 : 0, nf = cnt - nh;
    tab->tp = r[0].tp;
    tab->m = sl_malloc(sizeof(double) * nf);
    tab->hm = sl_malloc(sizeof(double) * (nh ? nh : 1));
    if (!tab->m || !tab->hm)
        return SL_ENOMEM;
    for (int op = 0; op < SIM_N_OPS; op++) {
        tab->t[op] = sl_malloc(sizeof(double) * nf);
        tab->ht[op] = sl_malloc(sizeof(double) * (nh ? nh : 1));
        if (!tab->t[op] || !tab->ht[op])
            return SL_ENOMEM;
    }
    for (int i = 0; i < cnt; i++) {
        bool held = holdout && (i % 2 == 1);
        int k = held ? tab->n_held++ : tab->n++;
        (held ? tab->hm : tab->m)[k] = r[i].m;
        for (int op = 0; op < SIM_N_OPS; op++)
            (held ? tab->ht[op] : tab->t[op])[k] = r[i].t[op];
    }
    return SL_OK;
}

static int load_ops(sim_calib_t *c, const char *path, bool holdout, char *err, int errlen)
{
    csv_t f;
    int rc = csv_open(&f, path, err, errlen);
    if (rc != SL_OK)
        return rc;
    int col[SIM_N_OPS], cm, ctp, ch, ckv, ce, cx, cv;
    char name[64];
    rc = SL_EFORMAT;
    for (int op = 0; op < SIM_N_OPS; op++) {
        snprintf(name, sizeof name, "time_stats.%s.median", op_names[op]);
        if ((col[op] = csv_col(&f, name, err, errlen)) < 0)
            goto out;
    }
    if ((cm = csv_col(&f, "num_tokens", err, errlen)) < 0 ||
        (ctp = csv_col(&f, "num_tensor_parallel_workers", err, errlen)) < 0 ||
        (ch = csv_col(&f, "n_head", err, errlen)) < 0 || (ckv = csv_col(&f, "n_kv_head", err, errlen)) < 0 ||
        (ce = csv_col(&f, "n_embd", err, errlen)) < 0 ||
        (cx = csv_col(&f, "n_expanded_embd", err, errlen)) < 0 ||
        (cv = csv_col(&f, "vocab_size", err, errlen)) < 0)
        goto out;
    int cap = 0, n = 0;
    op_row_t *rows = NULL;
    double v[5];
    while (csv_next(&f) == f.ncol) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            op_row_t *nr = sl_realloc(rows, sizeof *rows * cap);
            if (!nr) {
                rc = SL_ENOMEM;
                snprintf(err, errlen, "%s: out of memory", path);
                goto out_rows;
            }
            rows = nr;
        }
        op_row_t *r = &rows[n];
        double tp, m;
        if ((rc = csv_num(&f, ctp, &tp, err, errlen)) || (rc = csv_num(&f, cm, &m, err, errlen)) ||
            (rc = csv_num(&f, ch, &v[0], err, errlen)) || (rc = csv_num(&f, ckv, &v[1], err, errlen)) ||
            (rc = csv_num(&f, ce, &v[2], err, errlen)) || (rc = csv_num(&f, cx, &v[3], err, errlen)) ||
            (rc = csv_num(&f, cv, &v[4], err, errlen)))
            goto out_rows;
        for (int op = 0; op < SIM_N_OPS; op++) {
            if ((rc = csv_num(&f, col[op], &r->t[op], err, errlen)))
                goto out_rows;
            r->t[op] *= 1e-3;
        }
        if (tp < 1 || m < 1 || v[0] < 1 || v[2] < v[0]) {
            snprintf(err, errlen, "%s:%d: tensor parallel, tokens, heads and width must be positive", path, f.line);
            rc = SL_EFORMAT;
            goto out_rows;
        }
        r->tp = (int)tp, r->m = m;
        n++;
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: no data rows", path);
        rc = SL_EFORMAT;
        goto out_rows;
    }
    sched_model_shape_t *s = &c->ref;
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "llama2-7b");
    s->n_layers = 32, s->n_heads = (int)v[0], s->n_kv_heads = (int)v[1], s->hidden = (int)v[2];
    s->head_dim = s->hidden / s->n_heads, s->intermediate = (int)v[3], s->vocab = (int)v[4];
    s->max_context = 4096, s->bytes_per_weight = 2, s->bytes_per_kv = 2;

    qsort(rows, n, sizeof *rows, cmp_op_row);
    int u = 0; /* average duplicates in place */
    for (int i = 0; i < n;) {
        int j = i;
        op_row_t acc = rows[i];
        while (++j < n && rows[j].tp == acc.tp && rows[j].m == acc.m)
            for (int op = 0; op < SIM_N_OPS; op++)
                acc.t[op] += rows[j].t[op];
        for (int op = 0; op < SIM_N_OPS; op++)
            acc.t[op] /= j - i;
        rows[u++] = acc;
        i = j;
    }
    rc = SL_OK;
    for (int i = 0; i < u && rc == SL_OK;) {
        int j = i;
        while (j < u && rows[j].tp == rows[i].tp)
            j++;
        if (c->n_tables == SIM_CALIB_MAX_TP) {
            snprintf(err, errlen, "%s: more than %d tensor-parallel degrees", path, SIM_CALIB_MAX_TP);
            rc = SL_EFORMAT;
            break;
        }
        sim_op_table_t *tab = &c->tables[c->n_tables++];
        rc = fill_table(tab, rows + i, j - i, holdout);
        if (rc == SL_OK && (rc = fit_table(tab, &c->ref)) != SL_OK)
            snprintf(err, errlen, "%s: tp %d: too few points to fit", path, tab->tp);
        else if (rc == SL_ENOMEM)
            snprintf(err, errlen, "%s: out of memory", path);
        i = j;
    }
out_rows:
    sl_free(rows);
out:
    sl_free(f.buf);
    return rc;
}

typedef struct ar_row {
    int w;
    double bytes, t;
} ar_row_t;

static int cmp_ar_row(const void *a, const void *b)
{
    const ar_row_t *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? -1 : 1;
    return x->bytes < y->bytes ? -1 : x->bytes > y->bytes;
}

static int load_ar(sim_calib_t *c, const char *path, bool holdout, char *err, int errlen)
{
    csv_t f;
    int rc = csv_open(&f, path, err, errlen);
    if (rc != SL_OK)
        return rc;
    int ct, cw, cs, cd;
    ar_row_t *rows = NULL;
    int n = 0, cap = 0;
    rc = SL_EFORMAT;
    if ((ct = csv_col(&f, "time_stats.all_reduce.median", err, errlen)) < 0 ||
        (cw = csv_col(&f, "num_workers", err, errlen)) < 0 || (cs = csv_col(&f, "size", err, errlen)) < 0 ||
        (cd = csv_col(&f, "devices_per_node", err, errlen)) < 0)
        goto out;
    while (csv_next(&f) == f.ncol) {
        double w, s, t, d;
        if ((rc = csv_num(&f, cw, &w, err, errlen)) || (rc = csv_num(&f, cs, &s, err, errlen)) ||
            (rc = csv_num(&f, ct, &t, err, errlen)) || (rc = csv_num(&f, cd, &d, err, errlen)))
            goto out;
        if (d != w || w < 2 || s <= 0 || t <= 0) /* one node, NVLink only */
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            ar_row_t *nr = sl_realloc(rows, sizeof *rows * cap);
            if (!nr) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = SL_ENOMEM;
                goto out;
            }
            rows = nr;
        }
        rows[n++] = (ar_row_t){(int)w, s, t * 1e-3};
    }
    qsort(rows, n, sizeof *rows, cmp_ar_row);
    int u = 0;
    for (int i = 0; i < n;) {
        int j = i;
        double sum = 0;
        while (j < n && rows[j].w == rows[i].w && rows[j].bytes == rows[i].bytes)
            sum += rows[j++].t;
        rows[u++] = (ar_row_t){rows[i].w, rows[i].bytes, sum / (j - i)};
        i = j;
    }
    rc = SL_OK;
    for (int i = 0; i < u && c->n_ar < SIM_CALIB_MAX_TP;) {
        int j = i;
        while (j < u && rows[j].w == rows[i].w)
            j++;
        sim_ar_table_t *a = &c->ar[c->n_ar++];
        a->workers = rows[i].w;
        a->bytes = sl_malloc(sizeof(double) * (j - i));
        a->t = sl_malloc(sizeof(double) * (j - i));
        if (!a->bytes || !a->t) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = SL_ENOMEM;
            break;
        }
        int nh = holdout ? (j - i) / 2 : 0;
        for (int k = 0; k < j - i; k++) {
            bool held = holdout && k % 2 == 1;
            int at = held ? (j - i - nh) + a->n_held++ : a->n++;
            a->bytes[at] = rows[i + k].bytes, a->t[at] = rows[i + k].t;
        }
        i = j;
    }
out:
    sl_free(rows);
    sl_free(f.buf);
    return rc;
}

double sim_ar_interp(const sim_ar_table_t *a, double bytes)
{
    if (bytes > a->bytes[a->n - 1])
        return a->t[a->n - 1] * bytes / a->bytes[a->n - 1];
    return interp(a->bytes, a->t, a->n, bytes, true);
}

double sim_calib_allreduce(const sim_calib_t *c, int workers, double bytes)
{
    for (int i = 0; i < c->n_ar; i++)
        if (c->ar[i].workers == workers && c->ar[i].n > 0)
            return sim_ar_interp(&c->ar[i], bytes);
    return -1;
}

/* ---- attention ---------------------------------------------------------------------------- */

sim_attn_fit_t sim_attn_fit_builtin(void)
{
    /* `sluice calibrate` on h100/measured_attention.csv, all rows (docs/SIMULATOR.md). */
    return (sim_attn_fit_t){.a0 = 3.11e-5, .a1 = 1.359e-15, .a2 = 2.09e-8, .a3 = 1.57e-5,
                            .d0 = 2.34e-5, .d1 = 3.193e-13, .d2 = 1.818e-15, .d3 = 3.67e-8,
                            .ref_peak_flops = 989e12, .ref_hbm_bw = 3.35e12};
}

static void attn_row(const sched_model_shape_t *s, const sim_attn_point_t *p, double *x)
{
    if (p->prefill) {
        x[0] = 1, x[1] = p->batch * sim_attn_prefill_flops(s, 1, p->q_len, p->kv_len - p->q_len);
        x[2] = (double)p->batch * p->q_len;
    } else {
        double kb = sim_attn_kv_bytes(s, 1, p->kv_len);
        x[0] = 1, x[1] = p->batch * kb, x[2] = kb, x[3] = p->batch;
    }
}

double sim_attn_predict_point(const sim_attn_fit_t *a, const sched_model_shape_t *s,
                              const sim_attn_point_t *p)
{
    double x[4];
    attn_row(s, p, x);
    return p->prefill ? fmax(a->a0, a->a3 + a->a1 * x[1] + a->a2 * x[2])
                      : a->d0 + a->d1 * x[1] + a->d2 * x[2] + a->d3 * x[3];
}

static int fit_attn(sim_calib_t *c)
{
    double x[64 * 4], y[64], coef[4], floor = INFINITY, floor_sum = 0;
    int floor_n = 0;
    for (int i = 0; i < c->n_attn; i++)
        if (c->attn_pts[i].prefill && !c->attn_pts[i].held)
            floor = fmin(floor, c->attn_pts[i].t);
    for (int pre = 1; pre >= 0; pre--) {
        int p = pre ? 3 : 4, k = 0;
        for (int i = 0; i < c->n_attn && k < 64; i++) {
            const sim_attn_point_t *pt = &c->attn_pts[i];
            if (pt->prefill != (bool)pre || pt->held)
                continue;
            if (pre && pt->t <= 1.3 * floor) {
                floor_sum += pt->t, floor_n++;
                continue;
            }
            double row[4];
            attn_row(&c->ref, pt, row);
            memcpy(x + k * p, row, sizeof(double) * p);
            y[k++] = pt->t;
        }
        if (sim_fit_relative(x, y, k, p, coef) != SL_OK || (pre && floor_n == 0))
            return SL_EINVAL;
        if (pre)
            c->attn.a0 = floor_sum / floor_n, c->attn.a3 = coef[0], c->attn.a1 = coef[1], c->attn.a2 = coef[2];
        else
            c->attn.d0 = coef[0], c->attn.d1 = coef[1], c->attn.d2 = coef[2], c->attn.d3 = coef[3];
    }
    return SL_OK;
}

static int load_attn(sim_calib_t *c, const char *path, bool holdout, char *err, int errlen)
{
    csv_t f;
    int rc = csv_open(&f, path, err, errlen);
    if (rc != SL_OK)
        return rc;
    int cp, cb, cq, ck, ct, n = 0;
    rc = SL_EFORMAT;
    if ((cp = csv_col(&f, "phase", err, errlen)) < 0 || (cb = csv_col(&f, "batch", err, errlen)) < 0 ||
        (cq = csv_col(&f, "q_len", err, errlen)) < 0 || (ck = csv_col(&f, "kv_len", err, errlen)) < 0 ||
        (ct = csv_col(&f, "time_us", err, errlen)) < 0)
        goto out;
    c->attn_pts = sl_malloc(sizeof *c->attn_pts * 64);
    if (!c->attn_pts) {
        rc = SL_ENOMEM;
        goto out;
    }
    rc = SL_OK;
    while (csv_next(&f) == f.ncol && n < 64) {
        double b, q, k, t;
        if ((rc = csv_num(&f, cb, &b, err, errlen)) || (rc = csv_num(&f, cq, &q, err, errlen)) ||
            (rc = csv_num(&f, ck, &k, err, errlen)) || (rc = csv_num(&f, ct, &t, err, errlen)))
            goto out;
        if (b < 1 || q < 1 || k < q || t <= 0) {
            snprintf(err, errlen, "%s:%d: need batch >= 1, 1 <= q_len <= kv_len, time > 0", path, f.line);
            rc = SL_EFORMAT;
            goto out;
        }
        c->attn_pts[n] = (sim_attn_point_t){.prefill = !strcmp(f.f[cp], "prefill"), .held = holdout && n % 3 == 2,
                                            .batch = (int)b, .q_len = (int)q, .kv_len = (int)k, .t = t * 1e-6};
        n++;
    }
    c->n_attn = n;
    if (fit_attn(c) != SL_OK) {
        snprintf(err, errlen, "%s: too few prefill or decode rows to fit", path);
        rc = SL_EFORMAT;
    }
out:
    sl_free(f.buf);
    return rc;
}

/* ---- load / free -------------------------------------------------------------------------- */

void sim_calib_free(sim_calib_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_tables; i++) {
        sl_free(c->tables[i].m);
        sl_free(c->tables[i].hm);
        for (int op = 0; op < SIM_N_OPS; op++) {
            sl_free(c->tables[i].t[op]);
            sl_free(c->tables[i].ht[op]);
        }
    }
    for (int i = 0; i < c->n_ar; i++) {
        sl_free(c->ar[i].bytes);
        sl_free(c->ar[i].t);
    }
    sl_free(c->attn_pts);
    sl_free(c);
}

static bool file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

sim_calib_t *sim_calib_load(const char *dir, const char *gpu, bool holdout, char *err, int errlen)
{
    char path[512], e[1024] = "";
    sim_calib_t *c = sl_calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(c->gpu, sizeof c->gpu, "%s", gpu);
    sim_hw_t ref;
    if (sim_hw_builtin(!strcmp(gpu, "h100") ? "h100-sxm" : "a100-80gb", &ref) != SL_OK)
        goto fail;
    c->ref_peak_flops = ref.peak_flops, c->ref_hbm_bw = ref.hbm_bw;
    snprintf(path, sizeof path, "%s/%s/vidur_llama2-7b_mlp.csv", dir, gpu);
    if (load_ops(c, path, holdout, e, sizeof e) != SL_OK)
        goto fail;
    snprintf(path, sizeof path, "%s/%s/vidur_dgx_all_reduce.csv", dir, gpu);
    if (file_exists(path) && load_ar(c, path, holdout, e, sizeof e) != SL_OK)
        goto fail;
    c->attn = sim_attn_fit_builtin();
    snprintf(c->attn_source, sizeof c->attn_source, "built-in");
    const char *attn_gpu[] = {gpu, "h100"};
    for (int i = 0; i < 2 && !c->attn_fitted; i++) {
        snprintf(path, sizeof path, "%s/%s/measured_attention.csv", dir, attn_gpu[i]);
        if (!file_exists(path))
            continue;
        if (load_attn(c, path, holdout && i == 0, e, sizeof e) != SL_OK)
            goto fail;
        c->attn.ref_peak_flops = 989e12, c->attn.ref_hbm_bw = 3.35e12; /* measured on an H100 */
        c->attn_fitted = true;
        snprintf(c->attn_source, sizeof c->attn_source, "%s/measured_attention.csv", attn_gpu[i]);
    }
    return c;
fail:
    snprintf(err, errlen, "%s", e[0] ? e : "unknown calibration GPU");
    sim_calib_free(c);
    return NULL;
}

/* ---- held-out check ----------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int sim_calib_check(const sim_calib_t *c, sim_check_row_t *rows, int cap)
{
    int nr = 0;
    double e1[512], e2[512];
    for (int i = 0; i < c->n_tables; i++) {
        const sim_op_table_t *t = &c->tables[i];
        for (int op = 0; op < SIM_N_OPS && nr < cap; op++) {
            int k = 0;
            for (int j = 0; j < t->n_held && k < 512; j++, k++) {
                double meas = t->ht[op][j];
                e1[k] = fabs(sim_calib_interp(t, op, t->hm[j]) - meas) / meas;
                e2[k] = fabs(sim_roof_eval(&t->fit[op], &c->ref, t->tp, op, t->hm[j], 1, 1) - meas) / meas;
            }
            sim_check_row_t *r = &rows[nr++];
            snprintf(r->op, sizeof r->op, "%s", op_names[op]);
            r->tp = t->tp, r->n_fit = t->n, r->n_held = k, r->gated = true;
            r->mape_model = median(e1, k), r->mape_roof = median(e2, k);
        }
    }
    for (int pre = 1; pre >= 0 && c->attn_fitted; pre--) {
        if (strncmp(c->attn_source, c->gpu, strlen(c->gpu)) || nr >= cap)
            break;
        int k = 0, nf = 0;
        for (int j = 0; j < c->n_attn; j++) {
            const sim_attn_point_t *p = &c->attn_pts[j];
            if (p->prefill != (bool)pre)
                continue;
            if (!p->held) {
                nf++;
                continue;
            }
            e1[k++] = fabs(sim_attn_predict_point(&c->attn, &c->ref, p) - p->t) / p->t;
        }
        sim_check_row_t *r = &rows[nr++];
        snprintf(r->op, sizeof r->op, "%s", pre ? "attention_prefill" : "attention_decode");
        r->tp = 1, r->n_fit = nf, r->n_held = k, r->gated = true;
        r->mape_model = r->mape_roof = median(e1, k);
    }
    for (int i = 0; i < c->n_ar && nr < cap; i++) {
        const sim_ar_table_t *a = &c->ar[i];
        int k = 0;
        for (int j = 0; j < a->n_held && k < 512; j++, k++) {
            double b = a->bytes[a->n + j], meas = a->t[a->n + j];
            e1[k] = fabs(sim_calib_allreduce(c, a->workers, b) - meas) / meas;
        }
        sim_check_row_t *r = &rows[nr++];
        snprintf(r->op, sizeof r->op, "all_reduce");
        r->tp = a->workers, r->n_fit = a->n, r->n_held = k, r->gated = true;
        r->mape_model = r->mape_roof = median(e1, k);
    }
    return nr;
}
