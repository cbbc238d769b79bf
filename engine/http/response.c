/* response.c — OpenAI-shaped JSON bodies built with cJSON (see response.h).
 *
 * Builders assemble a cJSON tree, print it unformatted and append the text to the caller's
 * buffer. Any failed allocation on the way marks the tree bad (`ok` below), so each builder
 * checks once at the end instead of after every node.
 */
#include "engine/http/response.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "sched/status.h"

/* Adds item to obj under name (or to an array when name is NULL); clears *ok on any failure. */
static cJSON *add(cJSON *obj, const char *name, cJSON *item, bool *ok)
{
    if (!item || !obj) {
        cJSON_Delete(item);
        *ok = false;
        return NULL;
    }
    if (!(name ? cJSON_AddItemToObject(obj, name, item) : cJSON_AddItemToArray(obj, item))) {
        cJSON_Delete(item);
        *ok = false;
        return NULL;
    }
    return item;
}

/* A JSON string of s[0..n) with invalid UTF-8 replaced; NULL s gives JSON null. */
static cJSON *text_item(const char *s, size_t n)
{
    if (!s) return cJSON_CreateNull();
    srv_buf_t t = srv_buf_make(0);
    if (srv_utf8_append_clean(&t, s, n) != SL_OK) return NULL;
    cJSON *item = cJSON_CreateString(t.data ? t.data : "");
    srv_buf_free(&t);
    return item;
}

static cJSON *str_or_null(const char *s)
{
    return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* Prints root into b and deletes it. */
static int finish(srv_buf_t *b, cJSON *root, bool ok)
{
    int rc = SL_ENOMEM;
    if (ok && root) {
        char *s = cJSON_PrintUnformatted(root);
        if (s) {
            rc = srv_buf_append(b, s, strlen(s));
            cJSON_free(s);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int srv_json_error(srv_buf_t *b, const srv_error_t *e)
{
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    cJSON *err = add(root, "error", cJSON_CreateObject(), &ok);
    add(err, "message", cJSON_CreateString(e->message), &ok);
    add(err, "type", cJSON_CreateString(e->type ? e->type : "server_error"), &ok);
    add(err, "param", str_or_null(e->param), &ok);
    add(err, "code", str_or_null(e->code), &ok);
    return finish(b, root, ok);
}

/* ---- logprobs ---------------------------------------------------------------------------- */

/* Completions: {tokens, token_logprobs, top_logprobs, text_offset}. Each top_logprobs entry maps
 * the alternatives' texts to their logprobs (first one wins when two tokens share a text) and
 * always holds the sampled token too, so it has up to logprobs + 1 keys, as OpenAI's. */
static cJSON *completion_logprobs(const srv_choice_t *c, bool *ok)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *tokens = add(lp, "tokens", cJSON_CreateArray(), ok);
    cJSON *values = add(lp, "token_logprobs", cJSON_CreateArray(), ok);
    cJSON *tops = add(lp, "top_logprobs", cJSON_CreateArray(), ok);
    cJSON *offsets = add(lp, "text_offset", cJSON_CreateArray(), ok);
    size_t offset = c->text_offset;
    for (int i = 0; i < c->n_lps && *ok; i++) {
        const srv_token_lp_t *t = &c->lps[i];
        add(tokens, NULL, text_item(t->piece, t->piece_len), ok);
        add(values, NULL, cJSON_CreateNumber(t->logprob), ok);
        cJSON *top = add(tops, NULL, cJSON_CreateObject(), ok);
        for (int k = 0; k <= t->n_top && *ok; k++) {
            const srv_token_lp_t *a = k < t->n_top ? &t->top[k] : t; /* the sampled token last */
            cJSON *key = text_item(a->piece, a->piece_len);
            if (!key) {
                *ok = false;
                break;
            }
            if (!cJSON_GetObjectItemCaseSensitive(top, key->valuestring))
                add(top, key->valuestring, cJSON_CreateNumber(a->logprob), ok);
            cJSON_Delete(key);
        }
        add(offsets, NULL, cJSON_CreateNumber((double)offset), ok);
        offset += t->piece_len;
    }
    return lp;
}

/* {token, logprob, bytes} of one token into obj. */
static void chat_token(cJSON *obj, const srv_token_lp_t *t, bool *ok)
{
    add(obj, "token", text_item(t->piece, t->piece_len), ok);
    add(obj, "logprob", cJSON_CreateNumber(t->logprob), ok);
    cJSON *bytes = add(obj, "bytes", cJSON_CreateArray(), ok);
    for (size_t k = 0; k < t->piece_len && *ok; k++)
        add(bytes, NULL, cJSON_CreateNumber((unsigned char)t->piece[k]), ok);
}

/* Chat: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}, ...]}]}. */
static cJSON *chat_logprobs(const srv_choice_t *c, bool *ok)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *content = add(lp, "content", cJSON_CreateArray(), ok);
    for (int i = 0; i < c->n_lps && *ok; i++) {
        const srv_token_lp_t *t = &c->lps[i];
        cJSON *entry = add(content, NULL, cJSON_CreateObject(), ok);
        chat_token(entry, t, ok);
        cJSON *top = add(entry, "top_logprobs", cJSON_CreateArray(), ok);
        for (int k = 0; k < t->n_top && *ok; k++)
            chat_token(add(top, NULL, cJSON_CreateObject(), ok), &t->top[k], ok);
    }
    return lp;
}

/* ---- completions ------------------------------------------------------------------------- */

static cJSON *header(const srv_resp_meta_t *m, bool chunk, bool *ok)
{
    static const char *const objects[2][2] = {{"text_completion", "chat.completion"},
                                              {"text_completion", "chat.completion.chunk"}};
    cJSON *root = cJSON_CreateObject();
    add(root, "id", cJSON_CreateString(m->id), ok);
    add(root, "object", cJSON_CreateString(objects[chunk][m->endpoint == SRV_EP_CHAT]), ok);
    add(root, "created", cJSON_CreateNumber((double)m->created), ok);
    add(root, "model", cJSON_CreateString(m->model), ok);
    return root;
}

static void add_usage(cJSON *root, const srv_usage_t *u, bool *ok)
{
    cJSON *usage = add(root, "usage", cJSON_CreateObject(), ok);
    add(usage, "prompt_tokens", cJSON_CreateNumber(u->prompt_tokens), ok);
    add(usage, "completion_tokens", cJSON_CreateNumber(u->completion_tokens), ok);
    add(usage, "total_tokens", cJSON_CreateNumber(u->prompt_tokens + u->completion_tokens), ok);
}

/* One element of "choices". chat_key: NULL for completions ("text"), "message" or "delta". */
static void add_choice(cJSON *choices, const srv_choice_t *c, const char *chat_key, bool role, bool *ok)
{
    cJSON *ch = add(choices, NULL, cJSON_CreateObject(), ok);
    add(ch, "index", cJSON_CreateNumber(c->index), ok);
    if (!chat_key) {
        add(ch, "text", text_item(c->text ? c->text : "", c->text_len), ok);
    } else {
        cJSON *msg = add(ch, chat_key, cJSON_CreateObject(), ok);
        if (role) add(msg, "role", cJSON_CreateString("assistant"), ok);
        if (role || c->text_len || !strcmp(chat_key, "message"))
            add(msg, "content", text_item(c->text ? c->text : "", c->text_len), ok);
    }
    add(ch, "logprobs",
        c->logprobs < 0 || (chat_key && c->n_lps == 0 && strcmp(chat_key, "message") != 0)
            ? cJSON_CreateNull()
            : chat_key ? chat_logprobs(c, ok) : completion_logprobs(c, ok),
        ok);
    add(ch, "finish_reason", str_or_null(c->finish_reason), ok);
}

int srv_json_response(srv_buf_t *b, const srv_resp_meta_t *m, const srv_choice_t *choices, int n,
                      const srv_usage_t *usage)
{
    bool ok = true, chat = m->endpoint == SRV_EP_CHAT;
    cJSON *root = header(m, false, &ok);
    cJSON *arr = add(root, "choices", cJSON_CreateArray(), &ok);
    for (int i = 0; i < n && ok; i++) add_choice(arr, &choices[i], chat ? "message" : NULL, chat, &ok);
    add_usage(root, usage, &ok);
    return finish(b, root, ok);
}

int srv_json_chunk(srv_buf_t *b, const srv_resp_meta_t *m, const srv_choice_t *choice, bool role_delta,
                   const srv_usage_t *usage)
{
    bool ok = true, chat = m->endpoint == SRV_EP_CHAT;
    cJSON *root = header(m, true, &ok);
    cJSON *arr = add(root, "choices", cJSON_CreateArray(), &ok);
    if (choice) add_choice(arr, choice, chat ? "delta" : NULL, role_delta, &ok);
    if (usage) add_usage(root, usage, &ok);
    return finish(b, root, ok);
}

/* ---- models and tokens ------------------------------------------------------------------- */

int srv_json_models(srv_buf_t *b, const char *model, long long created, int max_model_len)
{
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    add(root, "object", cJSON_CreateString("list"), &ok);
    cJSON *card = add(add(root, "data", cJSON_CreateArray(), &ok), NULL, cJSON_CreateObject(), &ok);
    add(card, "id", cJSON_CreateString(model), &ok);
    add(card, "object", cJSON_CreateString("model"), &ok);
    add(card, "created", cJSON_CreateNumber((double)created), &ok);
    add(card, "owned_by", cJSON_CreateString("sluice"), &ok);
    add(card, "root", cJSON_CreateString(model), &ok);
    add(card, "max_model_len", cJSON_CreateNumber(max_model_len), &ok);
    return finish(b, root, ok);
}

int srv_json_tokens(srv_buf_t *b, const int32_t *ids, int n, int max_model_len)
{
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    add(root, "count", cJSON_CreateNumber(n), &ok);
    add(root, "max_model_len", cJSON_CreateNumber(max_model_len), &ok);
    cJSON *arr = add(root, "tokens", cJSON_CreateArray(), &ok);
    for (int i = 0; i < n && ok; i++) add(arr, NULL, cJSON_CreateNumber(ids[i]), &ok);
    return finish(b, root, ok);
}

int srv_json_detokenized(srv_buf_t *b, const char *text, size_t len)
{
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    add(root, "prompt", text_item(text, len), &ok);
    return finish(b, root, ok);
}
