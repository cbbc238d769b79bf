/* prices.c — the GPU price table: CSV parsing with line-numbered errors, the built-in defaults. */
#include "analysis/prices.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/status.h"

/* docs/prices.csv, verbatim (tests/analysis/test_prices.c checks they agree). */
static const char builtin_csv[] =
    "# sluice default GPU prices (docs/ANALYSIS.md, \"Price table\"): on-demand list prices, USD per GPU-hour.\n"
    "# Sources: Lambda on-demand cloud pricing page (lambda.ai/pricing), 8-GPU instances, as listed in 2025.\n"
    "# Not re-checked when this file was written: prices change often; pass your own with --prices FILE.\n"
    "gpu,usd_per_gpu_hour,source,date\n"
    "a100-40gb,1.29,Lambda on-demand 8x A100 40GB SXM4,2025-01-01\n"
    "a100-80gb,1.79,Lambda on-demand 8x A100 80GB SXM4,2025-01-01\n"
    "h100-sxm,2.99,Lambda on-demand 8x H100 80GB SXM5,2025-01-01\n";

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    size_t k = strspn(s, " \t");
    memmove(s, s + k, n - k + 1);
}

int an_prices_parse(const char *text, const char *origin, an_prices_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int line = 0;
    bool header = false;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char buf[512];
        line++;
        if (len >= sizeof buf) {
            snprintf(err, errlen, "%s:%d: line longer than %zu characters", origin, line, sizeof buf - 1);
            return SL_EFORMAT;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        p = nl ? nl + 1 : p + len;
        trim(buf);
        if (!buf[0] || buf[0] == '#')
            continue;
        char *f[5] = {0};
        int nf = 0;
        for (char *s = buf; nf < 5; nf++) {
            f[nf] = s;
            char *c = strchr(s, ',');
            if (!c) {
                nf++;
                break;
            }
            *c = '\0';
            s = c + 1;
        }
        for (int i = 0; i < nf; i++)
            trim(f[i]);
        if (!header) {
            if (nf != 4 || strcmp(f[0], "gpu") || strcmp(f[1], "usd_per_gpu_hour") || strcmp(f[2], "source") ||
                strcmp(f[3], "date")) {
                snprintf(err, errlen, "%s:%d: expected the header gpu,usd_per_gpu_hour,source,date", origin, line);
                return SL_EFORMAT;
            }
            header = true;
            continue;
        }
        if (nf != 4) {
            snprintf(err, errlen, "%s:%d: expected 4 fields (gpu,usd_per_gpu_hour,source,date), got %d", origin,
                     line, nf);
            return SL_EFORMAT;
        }
        char *end;
        errno = 0;
        double usd = strtod(f[1], &end);
        if (!f[0][0] || strlen(f[0]) >= sizeof out->row[0].gpu) {
            snprintf(err, errlen, "%s:%d: gpu: expected a profile name (1..31 characters)", origin, line);
            return SL_EFORMAT;
        }
        if (end == f[1] || *end || errno || !isfinite(usd) || usd <= 0) {
            snprintf(err, errlen, "%s:%d: usd_per_gpu_hour: expected a positive number, got '%s'", origin, line, f[1]);
            return SL_EFORMAT;
        }
        if (an_prices_find(out, f[0])) {
            snprintf(err, errlen, "%s:%d: gpu '%s' is listed twice", origin, line, f[0]);
            return SL_EFORMAT;
        }
        if (out->n == AN_PRICES_MAX) {
            snprintf(err, errlen, "%s:%d: more than %d rows", origin, line, AN_PRICES_MAX);
            return SL_EFORMAT;
        }
        an_price_t *r = &out->row[out->n++];
        snprintf(r->gpu, sizeof r->gpu, "%s", f[0]);
        r->usd_per_gpu_hour = usd;
        snprintf(r->source, sizeof r->source, "%s", f[2]);
        snprintf(r->date, sizeof r->date, "%s", f[3]);
    }
    if (!header) {
        snprintf(err, errlen, "%s: empty price table (expected the header gpu,usd_per_gpu_hour,source,date)", origin);
        return SL_EFORMAT;
    }
    return SL_OK;
}

int an_prices_load(const char *path, an_prices_t *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return SL_EIO;
    }
    char *text = sl_malloc(1 << 16);
    size_t n = text ? fread(text, 1, (1 << 16) - 1, f) : 0;
    bool too_big = text && n == (1 << 16) - 1 && fgetc(f) != EOF;
    fclose(f);
    if (!text || too_big) {
        sl_free(text);
        snprintf(err, errlen, "%s: %s", path, text ? "larger than 64 KiB" : "out of memory");
        return text ? SL_EFORMAT : SL_ENOMEM;
    }
    text[n] = '\0';
    int rc = an_prices_parse(text, path, out, err, errlen);
    sl_free(text);
    return rc;
}

void an_prices_builtin(an_prices_t *out)
{
    char err[8];
    an_prices_parse(builtin_csv, "built-in", out, err, sizeof err);
}

const an_price_t *an_prices_find(const an_prices_t *p, const char *gpu)
{
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->row[i].gpu, gpu))
            return &p->row[i];
    return NULL;
}
