/* sse.c — byte buffers, SSE framing and UTF-8 hygiene for streamed text (see sse.h). */
#include "engine/http/sse.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sched/status.h"

srv_buf_t srv_buf_make(size_t limit)
{
    srv_buf_t b = {NULL, 0, 0, limit ? limit : SIZE_MAX};
    return b;
}

/* Makes room for n more bytes plus a NUL. */
static int reserve(srv_buf_t *b, size_t n)
{
    if (n > b->limit || b->len > b->limit - n) return SL_ETOO_LONG;
    if (b->len + n + 1 <= b->cap) return SL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
    char *p = sl_realloc(b->data, cap);
    if (!p) return SL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return SL_OK;
}

int srv_buf_append(srv_buf_t *b, const void *data, size_t n)
{
    int rc = reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return SL_OK;
}

int srv_buf_appendf(srv_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return SL_EINVAL;
    int rc = reserve(b, (size_t)n);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SL_OK;
}

void srv_buf_truncate(srv_buf_t *b, size_t len)
{
    if (len < b->len) b->len = len;
    if (b->data) b->data[b->len] = '\0';
}

void srv_buf_consume(srv_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void srv_buf_free(srv_buf_t *b)
{
    sl_free(b->data);
    *b = srv_buf_make(b->limit);
}

int srv_sse_event(srv_buf_t *b, const char *json)
{
    size_t n = strlen(json), before = b->len;
    int rc = srv_buf_append(b, "data: ", 6);
    if (!rc) rc = srv_buf_append(b, json, n);
    if (!rc) rc = srv_buf_append(b, "\n\n", 2);
    if (rc) srv_buf_truncate(b, before); /* unchanged on error */
    return rc;
}

int srv_sse_done(srv_buf_t *b)
{
    return srv_sse_event(b, "[DONE]");
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* The sequence at s[0..n): its length when valid and complete, 0 when valid so far but cut
 * short by n, -1 when invalid (the first byte is then replaced). */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (s[i] < lo_i || s[i] > hi_i) return -1;
    }
    return len;
}

int srv_utf8_append_clean(srv_buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t before = b->len, i = 0, run = 0; /* run: start of the pending valid bytes */
    int rc = SL_OK;
    while (i < n && !rc) {
        int k = utf8_seq(u + i, n - i); /* a sequence cut short at the end is invalid here */
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        rc = srv_buf_append(b, s + run, i - run);
        if (!rc) rc = srv_buf_append(b, "\xEF\xBF\xBD", 3);
        i++;
        run = i;
    }
    if (!rc) rc = srv_buf_append(b, s + run, n - run);
    if (rc) srv_buf_truncate(b, before);
    return rc;
}
