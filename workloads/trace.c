/* trace.c — the trace arrays, the CSV reader and writer, hashing and helpers.
 *
 * The reader loads the whole input into one NUL-terminated buffer and walks it once: header
 * first (column names to roles), then row by row, field by field, with hand-rolled number
 * parsers (no sscanf, no per-field allocation). Row counts are estimated from the newlines so the
 * arrays are allocated once. Every error names FILE:LINE and the 1-based column with its name.
 */
#include "workloads/trace.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/status.h"

/* ---- object ------------------------------------------------------------------------------ */

static int set_err(wl_trace_t *t, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(wl_trace_t *t, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);
    va_end(ap);
    return status;
}

wl_trace_t *wl_trace_create(void)
{
    return sl_calloc(1, sizeof(wl_trace_t));
}

void wl_trace_free(wl_trace_t *t)
{
    if (!t)
        return;
    sl_free(t->arrival);
    sl_free(t->prompt_len);
    sl_free(t->output_len);
    sl_free(t->priority);
    sl_free(t->prefix_group);
    sl_free(t->prefix_len);
    sl_free(t);
}

const char *wl_trace_errmsg(const wl_trace_t *t)
{
    return t->errmsg;
}

void wl_trace_clear(wl_trace_t *t)
{
    t->n = 0;
}

static int grow(void **p, size_t cap, size_t elem)
{
    void *q = sl_realloc(*p, cap * elem);
    if (!q)
        return SL_ENOMEM;
    *p = q;
    return SL_OK;
}

int wl_trace_reserve(wl_trace_t *t, size_t cap)
{
    if (cap <= t->cap)
        return SL_OK;
    /* Each array grows independently; a failure leaves the larger ones larger, which is harmless
     * because t->cap (the usable size) only changes once all have grown. */
    if (grow((void **)&t->arrival, cap, sizeof(double)) || grow((void **)&t->prompt_len, cap, sizeof(int)) ||
        grow((void **)&t->output_len, cap, sizeof(int)) || grow((void **)&t->priority, cap, sizeof(int)) ||
        grow((void **)&t->prefix_group, cap, sizeof(int)) || grow((void **)&t->prefix_len, cap, sizeof(int)))
        return set_err(t, SL_ENOMEM, "out of memory for %zu trace rows", cap);
    t->cap = cap;
    return SL_OK;
}

int wl_trace_append(wl_trace_t *t, const wl_request_t *r)
{
    if (t->n == t->cap) {
        int rc = wl_trace_reserve(t, t->cap ? t->cap * 2 : 64);
        if (rc)
            return rc;
    }
    size_t i = t->n++;
    t->arrival[i] = r->arrival;
    t->prompt_len[i] = r->prompt_len;
    t->output_len[i] = r->output_len;
    t->priority[i] = r->priority;
    t->prefix_group[i] = r->prefix_group;
    t->prefix_len[i] = r->prefix_len;
    return SL_OK;
}

void wl_trace_get(const wl_trace_t *t, size_t i, wl_request_t *out)
{
    out->arrival = t->arrival[i];
    out->prompt_len = t->prompt_len[i];
    out->output_len = t->output_len[i];
    out->priority = t->priority[i];
    out->prefix_group = t->prefix_group[i];
    out->prefix_len = t->prefix_len[i];
}

/* ---- CSV reader --------------------------------------------------------------------------- */

typedef enum col_role {
    COL_IGNORED = 0,
    COL_ARRIVAL,
    COL_PROMPT,
    COL_OUTPUT,
    COL_PRIORITY,
    COL_PREFIX_GROUP,
    COL_PREFIX_LEN,
    COL_ROLES
} col_role_t;

static const char *const role_name[COL_ROLES] = {
    [COL_ARRIVAL] = "arrived_at",     [COL_PROMPT] = "num_prefill_tokens", [COL_OUTPUT] = "num_decode_tokens",
    [COL_PRIORITY] = "priority",      [COL_PREFIX_GROUP] = "prefix_group", [COL_PREFIX_LEN] = "prefix_len",
};

/* Reader state: the input, where we are, and the column map. */
typedef struct reader {
    wl_trace_t *t;
    const char *name;
    const char *p, *end;  /* current position in the NUL-terminated buffer */
    long line;
    size_t n_cols;        /* header columns */
    col_role_t *role;     /* (n_cols) */
    size_t role_col[COL_ROLES]; /* 1-based column of each role, 0 = absent */
} reader_t;

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* One field: [s, e) trimmed; *p advanced past it to the ',' or line end. */
static void next_field(const char **p, const char *end, const char **s, const char **e)
{
    const char *q = *p;
    while (q < end && is_blank(*q))
        q++;
    *s = q;
    while (q < end && *q != ',' && *q != '\n' && *q != '\r')
        q++;
    const char *f = q;
    while (f > *s && is_blank(f[-1]))
        f--;
    *e = f;
    *p = q;
}

/* Skips "\r" and returns 1 at a line end (or buffer end), 0 at a ','. */
static int at_line_end(const char *p, const char *end)
{
    while (p < end && *p == '\r')
        p++;
    return p >= end || *p == '\n';
}

static int field_error(reader_t *r, size_t col, const char *what, const char *s, const char *e)
{
    int len = e - s > 40 ? 40 : (int)(e - s);
    return set_err(r->t, SL_EFORMAT, "%s:%ld: column %zu (%s): %s, got '%.*s'", r->name, r->line, col,
                   role_name[r->role[col - 1]], what, len, s);
}

/* Decimal integer with an optional '-', then optionally ".0..." (pandas writes ints as floats).
 * Returns 0 on success. */
static int parse_int(const char *s, const char *e, long *out)
{
    int neg = 0;
    if (s < e && (*s == '-' || *s == '+'))
        neg = *s++ == '-';
    if (s == e || *s < '0' || *s > '9')
        return -1;
    long v = 0;
    while (s < e && *s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > 2147483647L)
            return -1;
    }
    if (s < e && *s == '.') {
        s++;
        while (s < e && *s == '0')
            s++;
    }
    if (s != e)
        return -1;
    *out = neg ? -v : v;
    return 0;
}

/* Decimal number: [+-]digits[.digits][(e|E)[+-]digits]. Short plain decimals are computed exactly
 * (mantissa and power of ten are exact doubles, so one division rounds correctly); anything else
 * is checked here and converted by strtod (the buffer is NUL-terminated, strtod stops at ','). */
static int parse_double(const char *s, const char *e, double *out)
{
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    const char *q = s;
    int neg = 0;
    if (q < e && (*q == '-' || *q == '+'))
        neg = *q++ == '-';
    uint64_t mant = 0;
    int digits = 0, frac = 0, any = 0;
    while (q < e && *q >= '0' && *q <= '9') {
        mant = mant * 10 + (uint64_t)(*q++ - '0');
        digits++, any = 1;
    }
    if (q < e && *q == '.') {
        q++;
        while (q < e && *q >= '0' && *q <= '9') {
            mant = mant * 10 + (uint64_t)(*q++ - '0');
            digits++, frac++, any = 1;
        }
    }
    if (!any)
        return -1;
    int has_exp = 0;
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '-' || *q == '+'))
            q++;
        if (q == e || *q < '0' || *q > '9')
            return -1;
        while (q < e && *q >= '0' && *q <= '9')
            q++;
        has_exp = 1;
    }
    if (q != e)
        return -1;
    double v;
    if (!has_exp && digits <= 15)
        v = (double)mant / pow10[frac];
    else {
        v = strtod(s, NULL);
        if (!isfinite(v))
            return -1;
        *out = v;
        return 0;
    }
    *out = neg ? -v : v;
    return 0;
}

static int read_header(reader_t *r)
{
    const char *p = r->p, *end = r->end;
    if (end - p >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
        p += 3; /* UTF-8 byte order mark */
    /* Skip blank lines before the header. */
    for (;;) {
        const char *q = p;
        while (q < end && (is_blank(*q) || *q == '\r'))
            q++;
        if (q < end && *q == '\n') {
            p = q + 1;
            r->line++;
            continue;
        }
        if (q >= end)
            return set_err(r->t, SL_EFORMAT,
                           "%s:%ld: empty file, expected a header naming arrived_at, num_prefill_tokens, num_decode_tokens",
                           r->name, r->line);
        break;
    }
    size_t cap = 8;
    r->role = sl_malloc(cap * sizeof *r->role);
    if (!r->role)
        return set_err(r->t, SL_ENOMEM, "out of memory");
    for (;;) {
        const char *s, *e;
        next_field(&p, end, &s, &e);
        if (r->n_cols == cap) {
            col_role_t *nr = sl_realloc(r->role, 2 * cap * sizeof *nr);
            if (!nr)
                return set_err(r->t, SL_ENOMEM, "out of memory");
            r->role = nr, cap *= 2;
        }
        size_t col = ++r->n_cols;
        if (e - s >= 2 && *s == '"' && e[-1] == '"')
            s++, e--;
        col_role_t role = COL_IGNORED;
        for (int k = 1; k < COL_ROLES; k++)
            if ((size_t)(e - s) == strlen(role_name[k]) && !memcmp(s, role_name[k], (size_t)(e - s)))
                role = (col_role_t)k;
        if (role != COL_IGNORED && r->role_col[role])
            return set_err(r->t, SL_EFORMAT, "%s:%ld: columns %zu and %zu are both named '%s'", r->name, r->line,
                           r->role_col[role], col, role_name[role]);
        r->role[col - 1] = role;
        if (role != COL_IGNORED)
            r->role_col[role] = col;
        if (at_line_end(p, end))
            break;
        p++; /* the ',' */
    }
    for (int k = COL_ARRIVAL; k <= COL_OUTPUT; k++)
        if (!r->role_col[k]) {
            const char *hs = r->p;
            const char *he = hs;
            while (he < end && *he != '\n' && *he != '\r')
                he++;
            int len = (int)(he - hs) > 120 ? 120 : (int)(he - hs);
            return set_err(r->t, SL_EFORMAT, "%s:%ld: the header has no column '%s' (it reads '%.*s')", r->name,
                           r->line, role_name[k], len, hs);
        }
    while (p < end && *p != '\n')
        p++;
    r->p = p < end ? p + 1 : end;
    return SL_OK;
}

/* Parses one data row starting at r->p (not blank) into the trace's next slot. */
static int read_row(reader_t *r)
{
    wl_trace_t *t = r->t;
    size_t i = t->n;
    t->priority[i] = 0;
    t->prefix_group[i] = -1;
    t->prefix_len[i] = 0;
    const char *p = r->p, *end = r->end;
    size_t col = 0;
    for (;;) {
        const char *s, *e;
        next_field(&p, end, &s, &e);
        col++;
        if (col > r->n_cols)
            return set_err(t, SL_EFORMAT, "%s:%ld: the row has more than the header's %zu columns", r->name, r->line,
                           r->n_cols);
        long v = 0;
        switch (r->role[col - 1]) {
        case COL_IGNORED:
            break;
        case COL_ARRIVAL: {
            double a;
            if (parse_double(s, e, &a) || a < 0)
                return field_error(r, col, "expected a non-negative number of seconds", s, e);
            if (i > 0 && a < t->arrival[i - 1])
                return set_err(t, SL_EFORMAT,
                               "%s:%ld: column %zu (arrived_at): %.*s is before the previous row's %.9g "
                               "(arrival times must not decrease)",
                               r->name, r->line, col, (int)(e - s), s, t->arrival[i - 1]);
            t->arrival[i] = a;
            break;
        }
        case COL_PROMPT:
        case COL_OUTPUT:
            if (parse_int(s, e, &v) || v < 1)
                return field_error(r, col, "expected an integer >= 1", s, e);
            (r->role[col - 1] == COL_PROMPT ? t->prompt_len : t->output_len)[i] = (int)v;
            break;
        case COL_PRIORITY:
            if (s != e && parse_int(s, e, &v))
                return field_error(r, col, "expected an integer", s, e);
            t->priority[i] = (int)v;
            break;
        case COL_PREFIX_GROUP:
            if (s == e)
                v = -1;
            else if (parse_int(s, e, &v) || v < -1)
                return field_error(r, col, "expected an integer >= -1 (or empty for none)", s, e);
            t->prefix_group[i] = (int)v;
            break;
        case COL_PREFIX_LEN:
            if (s != e && (parse_int(s, e, &v) || v < 0))
                return field_error(r, col, "expected an integer >= 0", s, e);
            t->prefix_len[i] = (int)v;
            break;
        case COL_ROLES:
            break;
        }
        if (at_line_end(p, end))
            break;
        p++;
    }
    /* A short row may lack optional and ignored columns (they take their defaults), not required ones. */
    for (size_t c = col + 1; c <= r->n_cols; c++)
        if (r->role[c - 1] >= COL_ARRIVAL && r->role[c - 1] <= COL_OUTPUT)
            return set_err(t, SL_EFORMAT, "%s:%ld: column %zu (%s): missing (the row has %zu columns, the header %zu)",
                           r->name, r->line, c, role_name[r->role[c - 1]], col, r->n_cols);
    if (t->prefix_len[i] > t->prompt_len[i] && r->role_col[COL_PREFIX_LEN])
        return set_err(t, SL_EFORMAT, "%s:%ld: column %zu (prefix_len): %d exceeds the prompt length %d", r->name,
                       r->line, r->role_col[COL_PREFIX_LEN], t->prefix_len[i], t->prompt_len[i]);
    t->n++;
    while (p < end && *p != '\n')
        p++;
    r->p = p < end ? p + 1 : end;
    return SL_OK;
}

/* Parses buf[0..len) where buf[len] == '\0'. */
static int read_csv(wl_trace_t *t, const char *name, const char *buf, size_t len)
{
    reader_t r = {.t = t, .name = name, .p = buf, .end = buf + len, .line = 1};
    t->n = 0;
    t->errmsg[0] = '\0';
    size_t lines = 1;
    for (const char *q = buf; (q = memchr(q, '\n', (size_t)(buf + len - q))) != NULL; q++)
        lines++;
    int rc = read_header(&r);
    if (!rc)
        rc = wl_trace_reserve(t, lines);
    while (!rc && r.p < r.end) {
        r.line++;
        const char *q = r.p;
        while (q < r.end && (is_blank(*q) || *q == '\r'))
            q++;
        if (q >= r.end)
            break;
        if (*q == '\n') {
            r.p = q + 1;
            continue;
        }
        rc = read_row(&r);
    }
    if (!rc && t->n == 0)
        rc = set_err(t, SL_EFORMAT, "%s: no requests (the file has a header but no rows)", name);
    sl_free(r.role);
    if (rc)
        t->n = 0;
    return rc;
}

int wl_trace_read_buffer(wl_trace_t *t, const char *name, const char *buf, size_t len)
{
    char *copy = sl_malloc(len + 1);
    if (!copy)
        return set_err(t, SL_ENOMEM, "%s: out of memory for %zu bytes", name, len);
    if (len)
        memcpy(copy, buf, len);
    copy[len] = '\0';
    int rc = read_csv(t, name, copy, len);
    sl_free(copy);
    return rc;
}

int wl_trace_read_file(wl_trace_t *t, const char *path)
{
    t->n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return set_err(t, SL_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = SL_OK;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > 0)
            cap = (size_t)size + 1;
        rewind(f);
    }
    for (;;) {
        if (!buf || len + 1 >= cap) {
            cap = !cap ? 1 << 16 : buf ? cap * 2 : cap + 1; /* + 1: room to see the end of file */
            char *nb = sl_realloc(buf, cap);
            if (!nb) {
                rc = set_err(t, SL_ENOMEM, "%s: out of memory reading the file", path);
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                rc = set_err(t, SL_EIO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!rc) {
        buf[len] = '\0';
        rc = read_csv(t, path, buf, len);
    }
    sl_free(buf);
    return rc;
}

/* ---- validation and writer ---------------------------------------------------------------- */

int wl_trace_validate(wl_trace_t *t)
{
    if (t->n == 0)
        return set_err(t, SL_EFORMAT, "the trace has no requests");
    for (size_t i = 0; i < t->n; i++) {
        if (!(t->arrival[i] >= 0) || !isfinite(t->arrival[i]))
            return set_err(t, SL_EFORMAT, "row %zu: arrival %g is not a non-negative number", i, t->arrival[i]);
        if (i > 0 && t->arrival[i] < t->arrival[i - 1])
            return set_err(t, SL_EFORMAT, "row %zu: arrival %.9g is before the previous row's %.9g", i, t->arrival[i],
                           t->arrival[i - 1]);
        if (t->prompt_len[i] < 1 || t->output_len[i] < 1)
            return set_err(t, SL_EFORMAT, "row %zu: prompt length %d and output length %d must be >= 1", i,
                           t->prompt_len[i], t->output_len[i]);
        if (t->prefix_group[i] < -1 || t->prefix_len[i] < 0 || t->prefix_len[i] > t->prompt_len[i])
            return set_err(t, SL_EFORMAT, "row %zu: prefix group %d / length %d invalid for a %d-token prompt", i,
                           t->prefix_group[i], t->prefix_len[i], t->prompt_len[i]);
    }
    return SL_OK;
}

int wl_trace_write_file(wl_trace_t *t, const char *path)
{
    int rc = wl_trace_validate(t);
    if (rc)
        return rc;
    int extra = 0;
    for (size_t i = 0; i < t->n && !extra; i++)
        extra = t->priority[i] != 0 || t->prefix_group[i] != -1 || t->prefix_len[i] != 0;
    FILE *f = fopen(path, "w");
    if (!f)
        return set_err(t, SL_EIO, "%s: cannot create: %s", path, strerror(errno));
    fputs(extra ? "arrived_at,num_prefill_tokens,num_decode_tokens,priority,prefix_group,prefix_len\n"
                : "arrived_at,num_prefill_tokens,num_decode_tokens\n",
          f);
    for (size_t i = 0; i < t->n; i++) {
        if (extra)
            fprintf(f, "%.6f,%d,%d,%d,%d,%d\n", t->arrival[i], t->prompt_len[i], t->output_len[i], t->priority[i],
                    t->prefix_group[i], t->prefix_len[i]);
        else
            fprintf(f, "%.6f,%d,%d\n", t->arrival[i], t->prompt_len[i], t->output_len[i]);
    }
    int bad = ferror(f);
    if (fclose(f) || bad) {
        remove(path);
        return set_err(t, SL_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return SL_OK;
}

/* ---- hash, scaling, stats ----------------------------------------------------------------- */

static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    for (int b = 0; b < 8; b++) {
        h ^= (v >> (8 * b)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t wl_trace_hash(const wl_trace_t *t)
{
    uint64_t h = fnv_u64(0xcbf29ce484222325ULL, (uint64_t)t->n);
    for (size_t i = 0; i < t->n; i++) {
        uint64_t bits;
        memcpy(&bits, &t->arrival[i], sizeof bits);
        h = fnv_u64(h, bits);
        h = fnv_u64(h, (uint64_t)(int64_t)t->prompt_len[i]);
        h = fnv_u64(h, (uint64_t)(int64_t)t->output_len[i]);
        h = fnv_u64(h, (uint64_t)(int64_t)t->priority[i]);
        h = fnv_u64(h, (uint64_t)(int64_t)t->prefix_group[i]);
        h = fnv_u64(h, (uint64_t)(int64_t)t->prefix_len[i]);
    }
    return h;
}

int wl_trace_rate_scale(wl_trace_t *t, double factor)
{
    if (!(factor > 0) || !isfinite(factor))
        return set_err(t, SL_EINVAL, "rate scale must be a number > 0, got %g", factor);
    for (size_t i = 0; i < t->n; i++)
        t->arrival[i] /= factor;
    return SL_OK;
}

void wl_trace_truncate(wl_trace_t *t, size_t n)
{
    if (n < t->n)
        t->n = n;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* p-th percentile of n ascending ints, linear interpolation between closest ranks (as
 * analysis/metrics.h defines it). */
static double pct_int(const int *v, size_t n, double p)
{
    double h = (double)(n - 1) * p / 100.0;
    size_t lo = (size_t)h;
    double f = h - (double)lo;
    return lo + 1 < n ? v[lo] + f * (v[lo + 1] - v[lo]) : v[lo];
}

/* Mean, median, p90, max and sum of n lengths (scratch: n ints). */
static void length_stats(const int *len, size_t n, int *scratch, double *mean, double *median, double *p90, int *max,
                         int64_t *sum)
{
    int64_t s = 0;
    memcpy(scratch, len, n * sizeof *scratch);
    for (size_t i = 0; i < n; i++)
        s += len[i];
    qsort(scratch, n, sizeof *scratch, cmp_int);
    *sum = s;
    *mean = (double)s / (double)n;
    *median = pct_int(scratch, n, 50);
    *p90 = pct_int(scratch, n, 90);
    *max = scratch[n - 1];
}

int wl_trace_stats(const wl_trace_t *t, wl_trace_stats_t *out)
{
    if (t->n == 0)
        return SL_EINVAL;
    int *scratch = sl_malloc(t->n * sizeof *scratch);
    if (!scratch)
        return SL_ENOMEM;
    wl_trace_stats_t s = {.n = t->n};
    s.duration = t->arrival[t->n - 1] - t->arrival[0];
    s.rate = s.duration > 0 ? (double)(t->n - 1) / s.duration : 0;
    length_stats(t->prompt_len, t->n, scratch, &s.prompt_mean, &s.prompt_median, &s.prompt_p90, &s.prompt_max,
                 &s.prompt_tokens);
    length_stats(t->output_len, t->n, scratch, &s.output_mean, &s.output_median, &s.output_p90, &s.output_max,
                 &s.output_tokens);
    memcpy(scratch, t->priority, t->n * sizeof *scratch);
    qsort(scratch, t->n, sizeof *scratch, cmp_int);
    for (size_t i = 0; i < t->n; i++) {
        s.n_priorities += i == 0 || scratch[i] != scratch[i - 1];
        s.n_in_prefix_groups += t->prefix_group[i] >= 0;
    }
    sl_free(scratch);
    *out = s;
    return SL_OK;
}
