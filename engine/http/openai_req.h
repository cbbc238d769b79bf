/* openai_req.h — OpenAI-style request bodies (completions, chat completions, tokenize,
 * detokenize) parsed and validated into plain C structs, and the server's error model.
 *
 * Contract: srv_request_parse() reads a JSON body of known length (no NUL terminator needed),
 * checks every field it knows (types, ranges, required fields, the served model name) and
 * either fills *out (SL_OK; release with srv_request_free) or fills *err with the HTTP status,
 * an OpenAI error type, a machine code, the offending parameter and a message a client can act
 * on, leaving *out zeroed (nothing to free). Unknown fields are ignored, as OpenAI and vLLM do.
 * Limits (stop strings, n, token ids, vocabulary) are passed in, so nothing here is unbounded.
 * Pure functions: no I/O, no global state, safe from any thread.
 *
 * Failure: SL_EINVAL for bad input (err->http_status 400), SL_ENOMEM when an allocation fails
 * (err->http_status 500). Never crashes on any byte sequence (see tests/fuzz/fuzz_http_request.c).
 */
#ifndef SLUICE_HTTP_OPENAI_REQ_H
#define SLUICE_HTTP_OPENAI_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- error model ------------------------------------------------------------------------- */

typedef struct srv_error {
    int http_status;   /* 400, 404, 405, 413, 429, 500, 503 */
    const char *type;  /* OpenAI error type: "invalid_request_error", "not_found_error", ... */
    const char *code;  /* machine-readable code ("invalid_type", "queue_full") or NULL */
    char param[64];    /* the offending field ("messages[1].content"), "" for none */
    char message[384]; /* what is wrong, for a human */
} srv_error_t;

/* Fills *err. param may be NULL. Cannot fail (the message is truncated to fit). */
void srv_error_set(srv_error_t *err, int http_status, const char *type, const char *code,
                   const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- requests ---------------------------------------------------------------------------- */

typedef enum srv_endpoint {
    SRV_EP_COMPLETIONS = 0, /* POST /v1/completions */
    SRV_EP_CHAT,            /* POST /v1/chat/completions */
    SRV_EP_TOKENIZE,        /* POST /tokenize: prompt or messages, add_special_tokens */
    SRV_EP_DETOKENIZE,      /* POST /detokenize: tokens */
} srv_endpoint_t;

typedef struct srv_message {
    char *role;    /* "system", "user", "assistant", "tool" */
    char *content; /* text parts joined; "" for a null assistant content */
} srv_message_t;

typedef struct srv_request {
    srv_endpoint_t endpoint;
    char *model;              /* as sent, or NULL when absent (the served model is meant) */
    /* the prompt: exactly one of text / ids (completions, tokenize) or messages (chat) */
    char *prompt_text;
    int32_t *prompt_ids;      /* ids also carry /detokenize's "tokens" */
    int n_prompt_ids;
    srv_message_t *messages;
    int n_messages;
    int max_tokens;           /* >= 1, or 0 = not given (the server picks the default) */
    double temperature;       /* 0..2, default 1 */
    double top_p;             /* (0, 1], default 1 */
    int top_k;                /* 0 = off (-1 accepted and mapped to 0), default 0 */
    double min_p;             /* [0, 1], default 0 */
    double repetition_penalty;/* > 0, default 1 */
    double frequency_penalty; /* [-2, 2], default 0 */
    double presence_penalty;  /* [-2, 2], default 0 */
    char **stop;              /* n_stop non-empty strings */
    int n_stop;
    bool has_seed;
    uint64_t seed;
    int n;                    /* choices returned, 1..limits.max_n, default 1 */
    int best_of;              /* candidates generated, n..limits.max_n, default n */
    int logprobs;             /* -1 = none; completions: 0..5 top alternatives; chat: top_logprobs */
    bool stream;
    bool include_usage;       /* stream_options.include_usage */
    int priority;             /* lower = more urgent (vLLM's extension), default 0 */
    bool add_special_tokens;  /* tokenize: prepend BOS. default true for prompts, false for messages */
    bool add_generation_prompt; /* chat / tokenize with messages: default true */
} srv_request_t;

typedef struct srv_limits {
    const char *model_name;   /* the served model's id; requests naming another get a 400 */
    int vocab_size;           /* token ids must be in [0, vocab_size) */
    int max_n;                /* n and best_of at most this (default 16) */
    int max_stop;             /* stop strings at most this many (default 16) */
    int max_stop_len;         /* bytes per stop string (default 256) */
    int max_prompt_ids;       /* token ids in a prompt at most this many (the context length) */
    int max_messages;         /* chat messages at most this many (default 1024) */
} srv_limits_t;

/* Limits for a model: model_name and vocab_size as given, max_prompt_ids = context_len, the rest
 * at their defaults. Cannot fail. */
srv_limits_t srv_limits_default(const char *model_name, int vocab_size, int context_len);

/* Parses and validates body[0..len) for the endpoint. See the header comment. */
int srv_request_parse(srv_endpoint_t ep, const char *body, size_t len, const srv_limits_t *lim,
                      srv_request_t *out, srv_error_t *err);

/* Frees what srv_request_parse allocated and zeroes *r. NULL-safe, idempotent. */
void srv_request_free(srv_request_t *r);

#endif
