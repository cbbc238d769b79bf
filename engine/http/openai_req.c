/* openai_req.c — parsing and validation of OpenAI-style request bodies (see openai_req.h).
 *
 * Each field has one small reader that checks its JSON type and range and reports the first
 * problem with the field's name as `param`. Messages follow OpenAI's wording where one exists
 * ("'temperature' must be a number, got a string"). Absent and null fields mean "default".
 */
#include "engine/http/openai_req.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sched/status.h"

#define INVALID "invalid_request_error"

void srv_error_set(srv_error_t *err, int http_status, const char *type, const char *code,
                   const char *param, const char *fmt, ...)
{
    va_list ap;
    err->http_status = http_status;
    err->type = type;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

srv_limits_t srv_limits_default(const char *model_name, int vocab_size, int context_len)
{
    srv_limits_t l = {
        .model_name = model_name,
        .vocab_size = vocab_size,
        .max_n = 16,
        .max_stop = 16,
        .max_stop_len = 256,
        .max_prompt_ids = context_len,
        .max_messages = 1024,
    };
    return l;
}

/* ---- JSON helpers ------------------------------------------------------------------------ */

static const char *json_type_name(const cJSON *v)
{
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

static int type_error(srv_error_t *err, const char *param, const char *want, const cJSON *got)
{
    srv_error_set(err, 400, INVALID, "invalid_type", param, "'%s' must be %s, got %s", param, want,
                  json_type_name(got));
    return SL_EINVAL;
}

static int value_error(srv_error_t *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int value_error(srv_error_t *err, const char *param, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_error_set(err, 400, INVALID, "invalid_value", param, "'%s' %s", param, msg);
    return SL_EINVAL;
}

static int missing_error(srv_error_t *err, const char *param)
{
    srv_error_set(err, 400, INVALID, "missing_field", param, "'%s' is a required property", param);
    return SL_EINVAL;
}

static int nomem(srv_error_t *err)
{
    srv_error_set(err, 500, "server_error", "out_of_memory", NULL, "out of memory");
    return SL_ENOMEM;
}

/* The field, or NULL when absent or null (both mean "use the default"). */
static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(v) ? NULL : v;
}

static bool is_integer(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble) &&
           v->valuedouble >= lo && v->valuedouble <= hi;
}

/* Reads an optional integer in [lo, hi] into *out (unchanged when absent). */
static int get_int(const cJSON *obj, const char *name, long long lo, long long hi, long long *out,
                   srv_error_t *err)
{
    const cJSON *v = field(obj, name);
    if (!v) return SL_OK;
    if (!cJSON_IsNumber(v)) return type_error(err, name, "an integer", v);
    if (!is_integer(v, -9.2e18, 9.2e18)) return value_error(err, name, "must be an integer, got %g", v->valuedouble);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return value_error(err, name, "must be between %lld and %lld, got %.0f", lo, hi, v->valuedouble);
    *out = (long long)v->valuedouble;
    return SL_OK;
}

static int get_int32(const cJSON *obj, const char *name, int lo, int hi, int *out, srv_error_t *err)
{
    long long x = *out;
    int rc = get_int(obj, name, lo, hi, &x, err);
    if (rc == SL_OK) *out = (int)x;
    return rc;
}

/* Reads an optional number in [lo, hi] (open at lo when lo_open) into *out. */
static int get_num(const cJSON *obj, const char *name, double lo, bool lo_open, double hi, double *out,
                   srv_error_t *err)
{
    const cJSON *v = field(obj, name);
    if (!v) return SL_OK;
    if (!cJSON_IsNumber(v)) return type_error(err, name, "a number", v);
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) {
        if (isinf(hi)) return value_error(err, name, "must be %s %g, got %g", lo_open ? ">" : ">=", lo, x);
        return value_error(err, name, "must be in %c%g, %g], got %g", lo_open ? '(' : '[', lo, hi, x);
    }
    *out = x;
    return SL_OK;
}

static int get_bool(const cJSON *obj, const char *name, bool *out, srv_error_t *err)
{
    const cJSON *v = field(obj, name);
    if (!v) return SL_OK;
    if (!cJSON_IsBool(v)) return type_error(err, name, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return SL_OK;
}

static int dup_string(const char *s, char **out, srv_error_t *err)
{
    *out = sl_strdup(s);
    return *out ? SL_OK : nomem(err);
}

/* ---- fields ------------------------------------------------------------------------------ */

static int parse_model(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    const cJSON *v = field(body, "model");
    if (!v) return SL_OK;
    if (!cJSON_IsString(v)) return type_error(err, "model", "a string", v);
    if (lim->model_name && strcmp(v->valuestring, lim->model_name) != 0) {
        srv_error_set(err, 400, INVALID, "model_not_found", "model",
                      "The model '%.100s' does not exist; this server serves '%.100s'", v->valuestring,
                      lim->model_name);
        return SL_EINVAL;
    }
    return dup_string(v->valuestring, &r->model, err);
}

/* An array of token ids, each in [0, vocab). */
static int parse_ids(const cJSON *arr, const char *param, const srv_limits_t *lim, srv_request_t *r,
                     srv_error_t *err)
{
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return value_error(err, param, "must not be empty");
    if (n > lim->max_prompt_ids)
        return value_error(err, param, "has %d tokens, more than the limit of %d", n, lim->max_prompt_ids);
    r->prompt_ids = sl_malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return nomem(err);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!is_integer(e, 0, (double)lim->vocab_size - 1)) {
            char p[64];
            snprintf(p, sizeof p, "%s[%d]", param, i);
            if (!cJSON_IsNumber(e)) return type_error(err, p, "a token id (integer)", e);
            return value_error(err, p, "must be a token id in [0, %d), got %g", lim->vocab_size, e->valuedouble);
        }
        r->prompt_ids[i++] = (int32_t)e->valuedouble;
    }
    r->n_prompt_ids = n;
    return SL_OK;
}

/* prompt: a string, an array of token ids, or a one-element array holding either. */
static int parse_prompt(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    const cJSON *v = field(body, "prompt");
    if (!v) return missing_error(err, "prompt");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 &&
        (cJSON_IsString(v->child) || cJSON_IsArray(v->child)))
        v = v->child; /* the batch form with a single prompt */
    if (cJSON_IsString(v)) return dup_string(v->valuestring, &r->prompt_text, err);
    if (!cJSON_IsArray(v)) return type_error(err, "prompt", "a string or an array of token ids", v);
    if (cJSON_IsString(v->child) || cJSON_IsArray(v->child))
        return value_error(err, "prompt", "holds %d prompts; send one prompt per request", cJSON_GetArraySize(v));
    return parse_ids(v, "prompt", lim, r, err);
}

static bool valid_role(const char *role)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (!strcmp(role, roles[i])) return true;
    return false;
}

/* content: a string, null (assistant turns), or an array of {"type": "text", "text": ...} parts. */
static int parse_content(const cJSON *c, const char *param, char **out, srv_error_t *err)
{
    if (!c || cJSON_IsNull(c)) return dup_string("", out, err);
    if (cJSON_IsString(c)) return dup_string(c->valuestring, out, err);
    if (!cJSON_IsArray(c)) return type_error(err, param, "a string or an array of content parts", c);
    size_t total = 1;
    const cJSON *part;
    int i = 0;
    cJSON_ArrayForEach(part, c) {
        char p[96];
        snprintf(p, sizeof p, "%s[%d]", param, i++);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part)) return type_error(err, p, "an object", part);
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return value_error(err, p, "must be a text part ({\"type\": \"text\", \"text\": ...}); "
                                       "only text content is supported");
        if (!cJSON_IsString(text)) return type_error(err, p, "a text part with a string 'text'", text ? text : part);
        total += strlen(text->valuestring);
    }
    char *s = sl_malloc(total);
    if (!s) return nomem(err);
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(s + at, t, n);
        at += n;
    }
    s[at] = '\0';
    *out = s;
    return SL_OK;
}

static int parse_messages(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    const cJSON *v = field(body, "messages");
    if (!v) return missing_error(err, "messages");
    if (!cJSON_IsArray(v)) return type_error(err, "messages", "an array", v);
    int n = cJSON_GetArraySize(v);
    if (n == 0) return value_error(err, "messages", "must not be empty");
    if (n > lim->max_messages) return value_error(err, "messages", "has %d messages, more than the limit of %d", n, lim->max_messages);
    r->messages = sl_calloc((size_t)n, sizeof *r->messages);
    if (!r->messages) return nomem(err);
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        char p[64];
        int i = r->n_messages;
        snprintf(p, sizeof p, "messages[%d]", i);
        if (!cJSON_IsObject(m)) return type_error(err, p, "an object", m);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(p, sizeof p, "messages[%d].role", i);
        if (!role) return missing_error(err, p);
        if (!cJSON_IsString(role)) return type_error(err, p, "a string", role);
        if (!valid_role(role->valuestring))
            return value_error(err, p, "must be one of system, user, assistant, tool, developer; got '%.40s'",
                               role->valuestring);
        srv_message_t *out = &r->messages[r->n_messages++]; /* counted now so free sees it */
        if (dup_string(role->valuestring, &out->role, err)) return SL_ENOMEM;
        snprintf(p, sizeof p, "messages[%d].content", i);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!content && strcmp(out->role, "assistant") != 0) return missing_error(err, p);
        int rc = parse_content(content, p, &out->content, err);
        if (rc) return rc;
    }
    return SL_OK;
}

static int parse_stop(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    const cJSON *v = field(body, "stop");
    if (!v) return SL_OK;
    int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (n < 0) return type_error(err, "stop", "a string or an array of strings", v);
    if (n > lim->max_stop) return value_error(err, "stop", "has %d strings, more than the limit of %d", n, lim->max_stop);
    if (n == 0) return SL_OK;
    r->stop = sl_calloc((size_t)n, sizeof *r->stop);
    if (!r->stop) return nomem(err);
    const cJSON *e = cJSON_IsString(v) ? v : v->child;
    for (int i = 0; i < n; i++, e = e->next) {
        char p[32] = "stop";
        if (cJSON_IsArray(v)) snprintf(p, sizeof p, "stop[%d]", i);
        if (!cJSON_IsString(e)) return type_error(err, p, "a string", e);
        size_t len = strlen(e->valuestring);
        if (len == 0) return value_error(err, p, "must not be empty");
        if (len > (size_t)lim->max_stop_len)
            return value_error(err, p, "is %zu bytes, more than the limit of %d", len, lim->max_stop_len);
        if (dup_string(e->valuestring, &r->stop[i], err)) return SL_ENOMEM;
        r->n_stop = i + 1;
    }
    return SL_OK;
}

static int parse_sampling(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    int rc;
    long long seed = 0;
    const cJSON *so;
    if ((rc = get_num(body, "temperature", 0, false, 2, &r->temperature, err)) ||
        (rc = get_num(body, "top_p", 0, true, 1, &r->top_p, err)) ||
        (rc = get_int32(body, "top_k", -1, 1 << 30, &r->top_k, err)) ||
        (rc = get_num(body, "min_p", 0, false, 1, &r->min_p, err)) ||
        (rc = get_num(body, "repetition_penalty", 0, true, INFINITY, &r->repetition_penalty, err)) ||
        (rc = get_num(body, "frequency_penalty", -2, false, 2, &r->frequency_penalty, err)) ||
        (rc = get_num(body, "presence_penalty", -2, false, 2, &r->presence_penalty, err)) ||
        (rc = get_int(body, "seed", -9223372036854775807LL, 9223372036854775807LL, &seed, err)) ||
        (rc = get_int32(body, "n", 1, lim->max_n, &r->n, err)) ||
        (rc = get_int32(body, "priority", -(1 << 30), 1 << 30, &r->priority, err)) ||
        (rc = get_bool(body, "stream", &r->stream, err)) ||
        (rc = parse_stop(body, lim, r, err)))
        return rc;
    if (r->top_k < 0) r->top_k = 0;
    r->has_seed = field(body, "seed") != NULL;
    r->seed = (uint64_t)seed;
    r->best_of = r->n;
    if ((rc = get_int32(body, "best_of", 1, lim->max_n, &r->best_of, err))) return rc;
    if (r->best_of < r->n) return value_error(err, "best_of", "must be >= n (%d), got %d", r->n, r->best_of);
    if (r->stream && r->best_of > r->n)
        return value_error(err, "best_of", "must equal n when streaming (candidates are ranked at the end)");
    /* max_tokens; chat also has max_completion_tokens, which wins */
    if ((rc = get_int32(body, "max_tokens", 1, 1 << 30, &r->max_tokens, err))) return rc;
    if (r->endpoint == SRV_EP_CHAT && (rc = get_int32(body, "max_completion_tokens", 1, 1 << 30, &r->max_tokens, err)))
        return rc;
    if ((so = field(body, "stream_options"))) {
        if (!cJSON_IsObject(so)) return type_error(err, "stream_options", "an object", so);
        if (!r->stream) return value_error(err, "stream_options", "is only allowed when 'stream' is true");
        const cJSON *iu = field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu)) return type_error(err, "stream_options.include_usage", "a boolean", iu);
        r->include_usage = cJSON_IsTrue(iu);
    }
    /* logprobs: completions take the number of alternatives; chat a boolean plus top_logprobs */
    if (r->endpoint == SRV_EP_COMPLETIONS)
        return get_int32(body, "logprobs", 0, 5, &r->logprobs, err);
    bool want = false;
    if ((rc = get_bool(body, "logprobs", &want, err))) return rc;
    int top = 0;
    if ((rc = get_int32(body, "top_logprobs", 0, 20, &top, err))) return rc;
    if (field(body, "top_logprobs") && !want)
        return value_error(err, "top_logprobs", "requires 'logprobs' to be true");
    r->logprobs = want ? top : -1;
    return SL_OK;
}

/* ---- entry points ------------------------------------------------------------------------ */

static int parse_fields(const cJSON *body, const srv_limits_t *lim, srv_request_t *r, srv_error_t *err)
{
    int rc;
    if ((rc = parse_model(body, lim, r, err))) return rc;
    switch (r->endpoint) {
    case SRV_EP_COMPLETIONS:
        if ((rc = parse_prompt(body, lim, r, err))) return rc;
        return parse_sampling(body, lim, r, err);
    case SRV_EP_CHAT:
        if ((rc = parse_messages(body, lim, r, err))) return rc;
        if ((rc = get_bool(body, "add_generation_prompt", &r->add_generation_prompt, err))) return rc;
        return parse_sampling(body, lim, r, err);
    case SRV_EP_TOKENIZE:
        if (field(body, "messages")) {
            r->add_special_tokens = false;
            if ((rc = parse_messages(body, lim, r, err)) ||
                (rc = get_bool(body, "add_generation_prompt", &r->add_generation_prompt, err)))
                return rc;
        } else if ((rc = parse_prompt(body, lim, r, err))) {
            return rc;
        }
        return get_bool(body, "add_special_tokens", &r->add_special_tokens, err);
    case SRV_EP_DETOKENIZE: {
        const cJSON *t = field(body, "tokens");
        if (!t) return missing_error(err, "tokens");
        if (!cJSON_IsArray(t)) return type_error(err, "tokens", "an array of token ids", t);
        return parse_ids(t, "tokens", lim, r, err);
    }
    }
    return SL_EINVAL;
}

int srv_request_parse(srv_endpoint_t ep, const char *body, size_t len, const srv_limits_t *lim,
                      srv_request_t *out, srv_error_t *err)
{
    memset(out, 0, sizeof *out);
    out->endpoint = ep;
    out->temperature = 1.0;
    out->top_p = 1.0;
    out->repetition_penalty = 1.0;
    out->n = 1;
    out->best_of = 1;
    out->logprobs = -1;
    out->add_special_tokens = true;
    out->add_generation_prompt = true;

    const char *end = NULL;
    cJSON *root = len ? cJSON_ParseWithLengthOpts(body, len, &end, false) : NULL;
    if (root) { /* only whitespace may follow the value */
        while (end < body + len && strchr(" \t\r\n", *end) && *end) end++;
        if (end != body + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        size_t at = end ? (size_t)(end - body) : 0; /* cJSON sets end to the error position */
        if (len == 0) srv_error_set(err, 400, INVALID, "invalid_json", NULL, "The request body is empty; expected a JSON object");
        else srv_error_set(err, 400, INVALID, "invalid_json", NULL, "The request body is not valid JSON (error near byte %zu)", at);
        return SL_EINVAL;
    }
    int rc;
    if (!cJSON_IsObject(root)) {
        srv_error_set(err, 400, INVALID, "invalid_type", NULL, "The request body must be a JSON object, got %s",
                      json_type_name(root));
        rc = SL_EINVAL;
    } else {
        rc = parse_fields(root, lim, out, err);
    }
    cJSON_Delete(root);
    if (rc) srv_request_free(out);
    return rc;
}

void srv_request_free(srv_request_t *r)
{
    if (!r) return;
    sl_free(r->model);
    sl_free(r->prompt_text);
    sl_free(r->prompt_ids);
    for (int i = 0; i < r->n_messages; i++) {
        sl_free(r->messages[i].role);
        sl_free(r->messages[i].content);
    }
    sl_free(r->messages);
    for (int i = 0; i < r->n_stop; i++) sl_free(r->stop[i]);
    sl_free(r->stop);
    memset(r, 0, sizeof *r);
}
