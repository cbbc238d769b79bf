/* server.h — the OpenAI-compatible HTTP server (libmicrohttpd) in front of one sluice engine.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON, or SSE with "stream": true),
 * GET /v1/models, GET /health, POST /tokenize, POST /detokenize, GET /metrics. Unknown paths 404,
 * wrong methods 405, bodies over max_body 413, a full engine queue 429 with Retry-After, and every
 * other bad request a 400 with {"error": {message, type, param, code}} (see docs/SERVING.md).
 *
 * Threads: libmicrohttpd runs one thread per connection (bounded by max_connections). Those
 * threads only parse, tokenize, submit to the engine, and wait on the request's job for tokens;
 * the engine thread owns the scheduler and delivers tokens through callbacks that append to the
 * job. A client that goes away (a failed write, or EOF seen while its request waits) has its
 * request canceled at once, which frees its KV blocks.
 *
 * Life cycle:
 *     srv_t *s = srv_create(&cfg, err, errlen);   listening; /health answers 503 (loading)
 *     srv_attach(s, engine, err, errlen);          serving
 *     srv_shutdown(s, deadline_s);                 stop accepting, finish or abort in-flight
 *                                                  requests within the deadline, close connections
 *     srv_free(s);  then sluice_engine_free(engine) (the server never owns the engine)
 *
 * Failure: create/attach return NULL / a status and write why into err; handlers never crash on
 * client input and answer errors as JSON. srv_shutdown cannot fail.
 */
#ifndef SLUICE_HTTP_SERVER_H
#define SLUICE_HTTP_SERVER_H

#include <stddef.h>

#include "include/sluice.h"

typedef struct srv_config {
    const char *host;           /* IPv4 address to bind. default "127.0.0.1" */
    int port;                   /* 0 = any free port (srv_port says which). default 8080 */
    size_t max_body;            /* request body bytes at most (413 beyond). default 1 MiB */
    int max_connections;        /* concurrent connections (threads). default 512 */
    unsigned idle_timeout_s;    /* close a connection idle this long. default 120 */
    const char *model_name;     /* the id clients name in "model"; required (copied) */
    const char *chat_template;  /* "chatml" or "llama2": used when the model has no chat template
                                   sluice can render; NULL = chat fails with a 400 then. default NULL */
    int default_max_tokens;     /* /v1/completions without max_tokens (chat: the rest of the
                                   context). default 16 */
    sluice_done_cb on_result;   /* called with every generation request's result (finished,
                                   canceled or failed), on the engine thread, after the server's
                                   own bookkeeping; NULL = none (run records). default NULL */
    void *result_user;          /* passed to on_result */
} srv_config_t;

/* The documented defaults (model_name NULL: set it). Cannot fail. */
srv_config_t srv_config_default(void);

typedef struct srv srv_t;

/* Binds and starts listening. NULL + err on a bad config, a port in use, out of memory. */
srv_t *srv_create(const srv_config_t *cfg, char *err, size_t errlen);

/* The bound port (useful with port 0). Cannot fail. */
int srv_port(const srv_t *s);

/* Starts serving requests on e (loaded). SL_EINVAL + err when the configured chat_template is
 * unknown; SL_ESTATE when an engine is already attached or the server is shutting down. */
int srv_attach(srv_t *s, sluice_engine *e, char *err, size_t errlen);

/* Stops accepting connections and new requests (503), shuts the engine down with the deadline
 * (requests still running then are aborted and their streams end), then closes every connection
 * and joins the server's threads. Returns the number of requests aborted. Idempotent. */
int srv_shutdown(srv_t *s, double deadline_s);

/* Shuts down (deadline 0) if needed and frees the server. NULL is a no-op. */
void srv_free(srv_t *s);

#endif
