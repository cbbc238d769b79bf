/* response.h — OpenAI-shaped JSON response bodies: errors, completions, chat completions,
 * streaming chunks, model lists, tokenize/detokenize answers.
 *
 * Every builder appends one JSON document to a srv_buf_t (sse.h); text from the model is made
 * valid UTF-8 first (invalid bytes become U+FFFD) so any client's JSON parser accepts it.
 * Shapes follow the OpenAI API as vLLM serves it:
 *   completion:  {id, object: "text_completion", created, model,
 *                 choices: [{index, text, logprobs, finish_reason}], usage}
 *   chat:        {id, object: "chat.completion", created, model,
 *                 choices: [{index, message: {role: "assistant", content}, logprobs, finish_reason}], usage}
 *   chunks:      object "text_completion" / "chat.completion.chunk"; chat deltas carry
 *                {role: "assistant", content: ""} first, then {content}; finish_reason null until the
 *                last chunk of a choice; a final usage chunk has "choices": [] (include_usage).
 *   error:       {"error": {message, type, param, code}} (param and code null when empty).
 *
 * Failure: SL_ENOMEM (or SL_ETOO_LONG past the buffer's limit); the buffer is then unchanged.
 * No global state; safe from any thread.
 */
#ifndef SLUICE_HTTP_RESPONSE_H
#define SLUICE_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/http/openai_req.h"
#include "engine/http/sse.h"

/* One token for logprobs: a sampled one with its most likely alternatives, or one alternative. */
typedef struct srv_token_lp {
    const char *piece; /* the token's bytes (may be an incomplete UTF-8 sequence) */
    size_t piece_len;
    float logprob;
    const struct srv_token_lp *top; /* alternatives, most likely first (their own top unused) */
    int n_top;
} srv_token_lp_t;

typedef struct srv_choice {
    int index;
    const char *text;          /* chunk: the new text (delta); response: the whole text */
    size_t text_len;
    const char *finish_reason; /* "stop", "length", "abort", "error", or NULL (still running) */
    int logprobs;              /* -1: "logprobs": null; else top alternatives asked for (each
                                  token's top[0..n_top) are written; completions' top_logprobs
                                  dict also always holds the sampled token, as OpenAI's does) */
    const srv_token_lp_t *lps; /* the tokens of this text, when logprobs >= 0 */
    int n_lps;
    size_t text_offset;        /* completions: byte offset of this text in the whole output */
} srv_choice_t;

typedef struct srv_usage {
    int prompt_tokens;
    int completion_tokens;
} srv_usage_t;

typedef struct srv_resp_meta {
    srv_endpoint_t endpoint;   /* SRV_EP_COMPLETIONS or SRV_EP_CHAT */
    const char *id;            /* "cmpl-..." / "chatcmpl-..." */
    long long created;         /* Unix seconds */
    const char *model;
} srv_resp_meta_t;

int srv_json_error(srv_buf_t *b, const srv_error_t *e);

/* A whole (non-streaming) response with n choices and usage. */
int srv_json_response(srv_buf_t *b, const srv_resp_meta_t *m, const srv_choice_t *choices, int n,
                      const srv_usage_t *usage);

/* A streaming chunk: one choice (role_delta: the chat chunk that opens a choice with
 * {"role": "assistant", "content": ""}), or, with choice NULL, the usage-only final chunk.
 * usage non-NULL adds "usage" (vLLM's continuous usage); NULL writes none. */
int srv_json_chunk(srv_buf_t *b, const srv_resp_meta_t *m, const srv_choice_t *choice, bool role_delta,
                   const srv_usage_t *usage);

/* {"object": "list", "data": [{id, object: "model", created, owned_by: "sluice", max_model_len}]} */
int srv_json_models(srv_buf_t *b, const char *model, long long created, int max_model_len);

/* {"count": n, "max_model_len": m, "tokens": [...]} */
int srv_json_tokens(srv_buf_t *b, const int32_t *ids, int n, int max_model_len);

/* {"prompt": "text"} */
int srv_json_detokenized(srv_buf_t *b, const char *text, size_t len);

#endif
