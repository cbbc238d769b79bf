/* sse.h — byte buffers and server-sent-event framing for the HTTP server.
 *
 * srv_buf_t is a growable byte string with a hard capacity limit, allocated through sl_malloc.
 * SSE framing follows the OpenAI streaming wire format: each event is "data: <json>\n\n" and the
 * stream ends with "data: [DONE]\n\n". Text from the model passes through srv_utf8_append_clean so
 * the JSON the server emits is always valid UTF-8 (the engine already holds back a token's
 * incomplete multi-byte sequence; any invalid byte left becomes U+FFFD).
 *
 * Failure: appends return SL_ENOMEM (allocation failed) or SL_ETOO_LONG (the limit would be
 * passed) and leave the buffer unchanged. Everything else cannot fail. No global state.
 */
#ifndef SLUICE_HTTP_SSE_H
#define SLUICE_HTTP_SSE_H

#include <stddef.h>

typedef struct srv_buf {
    char *data;   /* NUL-terminated when len > 0 */
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* appends beyond this many bytes fail; 0 = SIZE_MAX */
} srv_buf_t;

/* An empty buffer that holds at most limit bytes (0 = no limit). Cannot fail (allocates lazily). */
srv_buf_t srv_buf_make(size_t limit);
int srv_buf_append(srv_buf_t *b, const void *data, size_t n);
int srv_buf_appendf(srv_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Cuts the buffer back to its first len bytes (len <= b->len): the undo of failed appends. */
void srv_buf_truncate(srv_buf_t *b, size_t len);
/* Drops the first n bytes (n <= len). */
void srv_buf_consume(srv_buf_t *b, size_t n);
void srv_buf_free(srv_buf_t *b);

/* Appends "data: <json>\n\n". */
int srv_sse_event(srv_buf_t *b, const char *json);
/* Appends "data: [DONE]\n\n". */
int srv_sse_done(srv_buf_t *b);

/* Appends s[0..n) to b with every invalid UTF-8 sequence replaced by U+FFFD. */
int srv_utf8_append_clean(srv_buf_t *b, const char *s, size_t n);

#endif
