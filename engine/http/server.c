/* server.c — the OpenAI-compatible HTTP server on libmicrohttpd (see server.h).
 *
 * Design notes.
 *
 * 1. Threads. MHD runs a listening thread and one thread per connection. A connection thread
 *    reads the body, parses it (openai_req.c), tokenizes, and submits to the engine; then it
 *    blocks on the request's job: a non-streaming request inside the access handler until the
 *    engine is done, a streaming one inside the content-reader callback until the next tokens
 *    arrive. The engine thread only appends to jobs (on_token, on_done) and signals them.
 *    Lock order: never call into the engine while holding a job's lock (the engine calls the
 *    callbacks outside its own lock, and they take the job's lock).
 *
 * 2. Job ownership. A job is reference counted: one reference for the connection context (dropped
 *    in the request-completed callback), one for the engine (dropped at the end of on_done; not
 *    taken when the submit fails), one for a streaming response (dropped by MHD's free callback).
 *
 * 3. Disconnects. MHD reports a failed write to the request-completed callback with an error
 *    code; a request still running is canceled there. While a job waits for tokens it also
 *    peeks at the socket every WAIT_SLICE_MS: EOF means the client left, and the request is
 *    canceled before it even reaches the model. Canceling frees its KV blocks at once.
 *
 * 4. Timeouts. MHD closes connections idle for idle_timeout_s. A connection is not idle while
 *    the model works for it, so its timeout is suspended from submit to the end of its answer
 *    (MHD_CONNECTION_OPTION_TIMEOUT 0, then back, which also restarts the idle clock).
 *
 * 5. Shutdown. srv_shutdown quiesces the listening socket, flags draining (new generation
 *    requests get 503), shuts the engine down with the deadline (every job then gets on_done,
 *    so every waiting thread wakes and finishes its answer), waits up to SHUTDOWN_GRACE_S for
 *    those answers to be sent (`active` counts generation requests MHD has not completed), then
 *    stops the daemon.
 */
#include "engine/http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/http/metrics.h"
#include "engine/http/openai_req.h"
#include "engine/http/response.h"
#include "engine/http/sse.h"
#include "engine/tokenizer.h"
#include "sched/status.h"

#define WAIT_SLICE_MS 100
#define SHUTDOWN_GRACE_S 5 /* after the engine stops: time the answers get to reach their clients */
#define JSON_TYPE "application/json"

struct srv {
    srv_config_t cfg;            /* strings below are owned copies */
    char *host, *model_name, *chat_template_name;
    struct MHD_Daemon *d;
    int port;
    long long created;           /* Unix seconds at create (model "created") */
    _Atomic(sluice_engine *) engine; /* NULL while loading */
    atomic_bool draining;
    atomic_ullong next_id;
    bool shut;
    pthread_mutex_t lock;        /* guards active */
    pthread_cond_t idle;         /* signalled when active drops to 0 */
    int active;                  /* generation requests not yet completed by MHD */
    srv_metrics_t *metrics;
    /* set by srv_attach, read-only afterwards */
    const eng_tokenizer_t *tok;  /* NULL for synthetic models */
    srv_limits_t limits;
    int max_seq_len;
    bool have_chat;
    eng_chat_template_t chat;
    char chat_err[200];          /* why chat cannot be served (when !have_chat) */
};

srv_config_t srv_config_default(void)
{
    srv_config_t c = {
        .host = "127.0.0.1",
        .port = 8080,
        .max_body = 1 << 20,
        .max_connections = 512,
        .idle_timeout_s = 120,
        .model_name = NULL,
        .chat_template = NULL,
        .default_max_tokens = 16,
        .on_result = NULL,
        .result_user = NULL,
    };
    return c;
}

/* ==== jobs ==================================================================================== */

typedef struct job_choice {
    srv_buf_t pending;      /* streaming: text produced, not yet sent */
    size_t sent;            /* streaming: bytes of text sent (completions' text_offset) */
    int32_t *lp_ids;        /* logprobs: sampled tokens and their log-probabilities */
    float *lp_vals;
    sluice_top_logprob *lp_tops; /* (cap_lp * job n_top) each token's alternatives (token -1: none) */
    int n_lp, cap_lp, lp_sent;
    char *text;             /* non-streaming: the final text, from the result */
    size_t text_len;
    sluice_finish_reason finish;
    bool opened, closed;    /* streaming: role chunk sent; finish chunk sent */
} job_choice_t;

typedef struct srv_job {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    srv_t *srv;
    struct MHD_Connection *conn;
    srv_request_t req;
    int32_t *prompt;        /* the ids submitted (kept alive until the engine is done) */
    int n_prompt;
    char id[48];
    srv_resp_meta_t meta;
    sluice_request_id engine_id;
    bool submitted, done, canceled, ended, failed;
    int status;             /* the result's status */
    int completion_tokens;
    int n_choices;
    int n_top;              /* alternatives per logprobs entry (0 without logprobs) */
    job_choice_t *choices;
    srv_buf_t out;          /* streaming: SSE bytes ready to send */
} srv_job_t;

static srv_job_t *job_create(srv_t *s, struct MHD_Connection *conn, srv_request_t *req, int refs)
{
    srv_job_t *j = sl_calloc(1, sizeof *j);
    if (!j) return NULL;
    j->choices = sl_calloc((size_t)req->n, sizeof *j->choices);
    if (!j->choices || pthread_mutex_init(&j->lock, NULL) != 0) {
        sl_free(j->choices);
        sl_free(j);
        return NULL;
    }
    if (pthread_cond_init(&j->cond, NULL) != 0) {
        pthread_mutex_destroy(&j->lock);
        sl_free(j->choices);
        sl_free(j);
        return NULL;
    }
    j->refs = refs;
    j->srv = s;
    j->conn = conn;
    j->req = *req; /* moved */
    memset(req, 0, sizeof *req);
    j->n_choices = j->req.n;
    j->n_top = j->req.logprobs > 0 ? j->req.logprobs : 0;
    for (int i = 0; i < j->n_choices; i++) j->choices[i].pending = srv_buf_make(0);
    j->out = srv_buf_make(0);
    snprintf(j->id, sizeof j->id, "%s-%llx%08llx", j->req.endpoint == SRV_EP_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->created, (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    j->meta = (srv_resp_meta_t){j->req.endpoint, j->id, (long long)time(NULL), s->model_name};
    return j;
}

static void job_release(srv_job_t *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->lock);
    int left = --j->refs;
    pthread_mutex_unlock(&j->lock);
    if (left > 0) return;
    for (int i = 0; i < j->n_choices; i++) {
        job_choice_t *c = &j->choices[i];
        srv_buf_free(&c->pending);
        sl_free(c->lp_ids);
        sl_free(c->lp_vals);
        sl_free(c->lp_tops);
        sl_free(c->text);
    }
    sl_free(j->choices);
    srv_buf_free(&j->out);
    sl_free(j->prompt);
    srv_request_free(&j->req);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    sl_free(j);
}

/* Cancels the job's engine request if it is still running (the client went away). */
static void job_cancel(srv_job_t *j)
{
    pthread_mutex_lock(&j->lock);
    bool cancel = j->submitted && !j->done && !j->canceled;
    j->canceled = true;
    sluice_request_id id = j->engine_id;
    pthread_mutex_unlock(&j->lock);
    if (!cancel) return;
    sluice_cancel(atomic_load(&j->srv->engine), id);
    srv_metrics_reject(j->srv->metrics, SRV_REJECT_DISCONNECT);
}

/* Appends one logprob entry to a choice: the token, its logprob and its alternatives top[0..n)
 * (n <= stride; the row's tail is marked unused). */
static int choice_push_lp(job_choice_t *c, int stride, int32_t id, float lp, const sluice_top_logprob *top, int n)
{
    if (c->n_lp == c->cap_lp) {
        int cap = c->cap_lp ? 2 * c->cap_lp : 64;
        int32_t *ids = sl_realloc(c->lp_ids, (size_t)cap * sizeof *ids);
        if (!ids) return SL_ENOMEM;
        c->lp_ids = ids;
        float *vals = sl_realloc(c->lp_vals, (size_t)cap * sizeof *vals);
        if (!vals) return SL_ENOMEM;
        c->lp_vals = vals;
        if (stride) {
            sluice_top_logprob *tops = sl_realloc(c->lp_tops, (size_t)cap * (size_t)stride * sizeof *tops);
            if (!tops) return SL_ENOMEM;
            c->lp_tops = tops;
        }
        c->cap_lp = cap;
    }
    sluice_top_logprob *row = c->lp_tops ? c->lp_tops + (size_t)c->n_lp * (size_t)stride : NULL;
    for (int k = 0; k < stride; k++) row[k] = k < n && top ? top[k] : (sluice_top_logprob){-1, 0};
    c->lp_ids[c->n_lp] = id;
    c->lp_vals[c->n_lp++] = lp;
    return SL_OK;
}

/* Engine thread: one sampled token. */
static bool on_token(const sluice_token *t, void *user)
{
    srv_job_t *j = user;
    pthread_mutex_lock(&j->lock);
    if (t->index >= 0 && t->index < j->n_choices) {
        job_choice_t *c = &j->choices[t->index];
        int rc = SL_OK;
        if (j->req.stream && t->piece_len) rc = srv_buf_append(&c->pending, t->piece, t->piece_len);
        if (!rc && j->req.stream && j->req.logprobs >= 0)
            rc = choice_push_lp(c, j->n_top, t->token, t->logprob, t->top, t->n_top);
        if (rc) j->failed = true;
    }
    bool keep = !j->canceled && !j->failed;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
    return keep;
}

/* Engine thread: the request is over (finished, canceled or failed). */
static void on_done(const sluice_result *r, void *user)
{
    srv_job_t *j = user;
    srv_metrics_observe(j->srv->metrics, r);
    if (j->srv->cfg.on_result) j->srv->cfg.on_result(r, j->srv->cfg.result_user);
    pthread_mutex_lock(&j->lock);
    j->status = r->status;
    j->n_prompt = r->n_prompt_ids;
    for (int i = 0; i < r->n_samples && i < j->n_choices; i++) {
        const sluice_sample *smp = &r->samples[i];
        job_choice_t *c = &j->choices[i];
        c->finish = smp->finish_reason;
        j->completion_tokens += smp->n_ids;
        if (!j->req.stream) {
            c->text = sl_malloc(smp->text_len + 1);
            if (!c->text) {
                j->failed = true;
                continue;
            }
            memcpy(c->text, smp->text, smp->text_len);
            c->text[smp->text_len] = '\0';
            c->text_len = smp->text_len;
            /* logprobs from the result: with best_of > n no token was streamed */
            for (int k = 0; j->req.logprobs >= 0 && k < smp->n_ids; k++)
                if (choice_push_lp(c, j->n_top, smp->ids[k], smp->logprobs[k],
                                   smp->top_logprobs ? smp->top_logprobs + (size_t)k * (size_t)smp->n_top : NULL,
                                   smp->n_top < j->n_top ? smp->n_top : j->n_top))
                    j->failed = true;
        }
    }
    j->done = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
    job_release(j);
}

/* ==== small helpers =========================================================================== */

static sluice_engine *engine_of(srv_t *s)
{
    return atomic_load(&s->engine);
}

/* True when the peer has closed its end (EOF on a peek) or the socket failed. */
static bool client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Suspends (hold) or restores the connection's idle timeout (design note 4). */
static void hold_timeout(srv_t *s, struct MHD_Connection *conn, bool hold)
{
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, hold ? 0u : s->cfg.idle_timeout_s);
}

/* Waits up to one slice on the job's condition; the caller holds the lock. Returns true when the
 * slice ran out (the caller then checks the client). */
static bool job_wait_slice(srv_job_t *j)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WAIT_SLICE_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(&j->cond, &j->lock, &ts) == ETIMEDOUT;
}

static const char *finish_name(sluice_finish_reason r)
{
    switch (r) {
    case SLUICE_FINISH_EOS:
    case SLUICE_FINISH_STOP: return "stop";
    case SLUICE_FINISH_LENGTH: return "length";
    case SLUICE_FINISH_ABORT: return "abort";
    case SLUICE_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype, const char *body,
                               size_t len, const char *hdr, const char *hdr_value)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hdr) MHD_add_response_header(r, hdr, hdr_value);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_buf(struct MHD_Connection *conn, unsigned status, const char *ctype, srv_buf_t *b)
{
    enum MHD_Result ret = respond(conn, status, ctype, b->data ? b->data : "", b->len, NULL, NULL);
    srv_buf_free(b);
    return ret;
}

static enum MHD_Result respond_error(srv_t *s, struct MHD_Connection *conn, const srv_error_t *e)
{
    srv_buf_t b = srv_buf_make(0);
    if (srv_json_error(&b, e) != SL_OK) return MHD_NO;
    srv_metrics_reject(s->metrics, e->http_status == 429 ? SRV_REJECT_QUEUE_FULL : SRV_REJECT_INVALID);
    enum MHD_Result ret = respond(conn, (unsigned)e->http_status, JSON_TYPE, b.data, b.len,
                                  e->http_status == 429   ? MHD_HTTP_HEADER_RETRY_AFTER
                                  : e->http_status == 405 ? MHD_HTTP_HEADER_ALLOW
                                                          : NULL,
                                  e->http_status == 429 ? "1" : e->http_status == 405 ? e->param : NULL);
    srv_buf_free(&b);
    return ret;
}

static enum MHD_Result respond_unavailable(srv_t *s, struct MHD_Connection *conn)
{
    srv_error_t e;
    srv_error_set(&e, 503, "service_unavailable", atomic_load(&s->draining) ? "shutting_down" : "loading", NULL,
                  atomic_load(&s->draining) ? "The server is shutting down" : "The model is still loading");
    return respond_error(s, conn, &e);
}

static enum MHD_Result respond_oom(srv_t *s, struct MHD_Connection *conn)
{
    srv_error_t e;
    srv_error_set(&e, 500, "server_error", "out_of_memory", NULL, "The server ran out of memory");
    return respond_error(s, conn, &e);
}

/* ==== prompts ================================================================================= */

/* Encodes text into a new id array. */
static int encode(const srv_t *s, const char *text, bool add_bos, bool special, int32_t **ids, int *n,
                  srv_error_t *err)
{
    if (!s->tok) {
        srv_error_set(err, 400, "invalid_request_error", "no_tokenizer", NULL,
                      "This model has no tokenizer (synthetic weights): send the prompt as token ids");
        return SL_EINVAL;
    }
    int cap = (int)(strlen(text) < (size_t)s->max_seq_len * 8 ? strlen(text) : (size_t)s->max_seq_len * 8) + 8;
    for (;;) {
        int32_t *buf = sl_malloc((size_t)cap * sizeof *buf);
        if (!buf) break;
        int got = eng_tok_encode(s->tok, text, add_bos && eng_tok_add_bos(s->tok), special, buf, cap);
        if (got >= 0 && got <= cap) {
            *ids = buf;
            *n = got;
            return SL_OK;
        }
        sl_free(buf);
        if (got < 0) break;
        cap = got;
    }
    srv_error_set(err, 500, "server_error", "tokenizer_error", NULL, "The prompt could not be tokenized");
    return SL_ENOMEM;
}

/* Renders chat messages with the model's (or the configured) template into a new string. */
static int render_chat(const srv_t *s, const srv_request_t *req, char **out, srv_error_t *err)
{
    if (!s->have_chat) {
        srv_error_set(err, 400, "invalid_request_error", "no_chat_template", "messages", "%s", s->chat_err);
        return SL_EUNSUPPORTED;
    }
    eng_chat_msg_t *msgs = sl_malloc((size_t)req->n_messages * sizeof *msgs);
    if (!msgs) {
        srv_error_set(err, 500, "server_error", "out_of_memory", NULL, "out of memory");
        return SL_ENOMEM;
    }
    for (int i = 0; i < req->n_messages; i++) msgs[i] = (eng_chat_msg_t){req->messages[i].role, req->messages[i].content};
    char why[256] = "";
    int rc = eng_chat_render(&s->chat, msgs, req->n_messages, req->add_generation_prompt, out, why, sizeof why);
    sl_free(msgs);
    if (rc == SL_ENOMEM) srv_error_set(err, 500, "server_error", "out_of_memory", NULL, "out of memory");
    else if (rc) srv_error_set(err, 400, "invalid_request_error", "invalid_value", "messages", "%s", why);
    return rc;
}

/* The request's prompt as token ids (*ids owned by the caller). */
static int prompt_ids(const srv_t *s, srv_request_t *req, int32_t **ids, int *n, srv_error_t *err)
{
    if (req->messages) {
        char *text = NULL;
        int rc = render_chat(s, req, &text, err);
        if (rc) return rc;
        rc = encode(s, text, false, true, ids, n, err);
        sl_free(text);
        return rc;
    }
    if (req->prompt_text) return encode(s, req->prompt_text, req->add_special_tokens, false, ids, n, err);
    *ids = req->prompt_ids; /* moved */
    *n = req->n_prompt_ids;
    req->prompt_ids = NULL;
    req->n_prompt_ids = 0;
    return SL_OK;
}

/* ==== generation ============================================================================== */

/* A choice's logprob entries [from, to) as response.h wants them: lps[0..n) with their
 * alternatives after them in the same array, the token texts in text. */
typedef struct lp_view {
    srv_token_lp_t *lps;
    int n;
    srv_buf_t text;
} lp_view_t;

static void lp_view_free(lp_view_t *v)
{
    sl_free(v->lps);
    srv_buf_free(&v->text);
    memset(v, 0, sizeof *v);
}

/* Appends id's text to v->text; *len gets its length. */
static int lp_piece(const srv_t *s, lp_view_t *v, int32_t id, size_t *len)
{
    char piece[128];
    int n = s->tok ? eng_tok_piece(s->tok, id, 0, piece, (int)sizeof piece) : 0;
    if (n < 0) n = 0;
    if (n > (int)sizeof piece) n = (int)sizeof piece;
    *len = (size_t)n;
    return srv_buf_append(&v->text, piece, (size_t)n);
}

static int lp_view_build(const srv_t *s, const job_choice_t *c, int stride, int from, int to, lp_view_t *v)
{
    memset(v, 0, sizeof *v);
    v->text = srv_buf_make(0);
    if (to <= from) return SL_OK;
    int n = to - from, total = n * (1 + stride);
    v->lps = sl_calloc((size_t)total, sizeof *v->lps);
    if (!v->lps) return SL_ENOMEM;
    v->n = n;
    srv_token_lp_t *alts = v->lps + n;
    for (int i = 0; i < n; i++) {
        srv_token_lp_t *t = &v->lps[i];
        if (lp_piece(s, v, c->lp_ids[from + i], &t->piece_len)) goto oom;
        t->logprob = c->lp_vals[from + i];
        t->top = alts + (size_t)i * (size_t)stride;
        for (int k = 0; k < stride; k++) {
            const sluice_top_logprob *a = &c->lp_tops[(size_t)(from + i) * (size_t)stride + (size_t)k];
            if (a->token < 0) break;
            if (lp_piece(s, v, a->token, &alts[i * stride + k].piece_len)) goto oom;
            alts[i * stride + k].logprob = a->logprob;
            t->n_top++;
        }
    }
    /* the text is final: point every entry (mains, then alternatives, in append order) into it */
    size_t at = 0;
    for (int i = 0; i < n; i++)
        for (int k = -1; k < v->lps[i].n_top; k++) {
            srv_token_lp_t *t = k < 0 ? &v->lps[i] : &alts[i * stride + k];
            t->piece = v->text.data ? v->text.data + at : "";
            at += t->piece_len;
        }
    return SL_OK;
oom:
    lp_view_free(v);
    return SL_ENOMEM;
}

/* Streaming: turns what the engine delivered into SSE events in j->out. Caller holds j->lock. */
static int stream_pump(srv_job_t *j)
{
    const srv_t *s = j->srv;
    bool chat = j->req.endpoint == SRV_EP_CHAT, all_closed = true;
    int rc = SL_OK;
    srv_buf_t json = srv_buf_make(0);
    for (int i = 0; i < j->n_choices && !rc; i++) {
        job_choice_t *c = &j->choices[i];
        srv_choice_t ch = {.index = i, .text = "", .logprobs = j->req.logprobs, .text_offset = c->sent};
        if (chat && !c->opened) { /* the role chunk */
            rc = srv_json_chunk(&json, &j->meta, &ch, true, NULL);
            if (!rc) rc = srv_sse_event(&j->out, json.data);
            srv_buf_truncate(&json, 0);
        }
        c->opened = true;
        bool finish = j->done && !c->closed;
        if (rc || (!c->pending.len && c->lp_sent == c->n_lp && !finish)) {
            all_closed &= c->closed;
            continue;
        }
        lp_view_t lv = {0};
        if (j->req.logprobs >= 0) rc = lp_view_build(s, c, j->n_top, c->lp_sent, c->n_lp, &lv);
        ch.text = c->pending.data ? c->pending.data : "";
        ch.text_len = c->pending.len;
        ch.lps = lv.lps;
        ch.n_lps = lv.n;
        ch.finish_reason = finish ? finish_name(c->finish) : NULL;
        if (!rc) rc = srv_json_chunk(&json, &j->meta, &ch, false, NULL);
        if (!rc) rc = srv_sse_event(&j->out, json.data);
        lp_view_free(&lv);
        srv_buf_truncate(&json, 0);
        if (rc) break;
        c->sent += c->pending.len;
        srv_buf_truncate(&c->pending, 0);
        c->lp_sent = c->n_lp;
        c->closed |= finish;
        all_closed &= c->closed;
    }
    if (!rc && j->done && all_closed && !j->ended) {
        if (j->req.include_usage) {
            srv_usage_t u = {j->n_prompt, j->completion_tokens};
            rc = srv_json_chunk(&json, &j->meta, NULL, false, &u);
            if (!rc) rc = srv_sse_event(&j->out, json.data);
        }
        if (!rc) rc = srv_sse_done(&j->out);
        j->ended = !rc;
    }
    srv_buf_free(&json);
    return rc;
}

/* MHD content reader for a streaming response: blocks until events are ready (thread-per-connection). */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    srv_job_t *j = cls;
    (void)pos;
    pthread_mutex_lock(&j->lock);
    while (j->out.len == 0) {
        if (j->ended) {
            pthread_mutex_unlock(&j->lock);
            hold_timeout(j->srv, j->conn, false);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (j->failed || stream_pump(j) != SL_OK) {
            pthread_mutex_unlock(&j->lock);
            job_cancel(j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (j->out.len || j->ended) continue;
        if (job_wait_slice(j) && client_gone(j->conn)) {
            pthread_mutex_unlock(&j->lock);
            job_cancel(j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = j->out.len < max ? j->out.len : max;
    memcpy(buf, j->out.data, n);
    srv_buf_consume(&j->out, n);
    pthread_mutex_unlock(&j->lock);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    job_release(cls);
}

/* Non-streaming: waits in the handler until the engine is done, then answers. */
static enum MHD_Result finish_blocking(srv_t *s, struct MHD_Connection *conn, srv_job_t *j)
{
    pthread_mutex_lock(&j->lock);
    while (!j->done) {
        if (job_wait_slice(j) && client_gone(conn)) {
            pthread_mutex_unlock(&j->lock);
            job_cancel(j);
            pthread_mutex_lock(&j->lock);
        }
    }
    bool canceled = j->canceled, failed = j->failed;
    pthread_mutex_unlock(&j->lock);
    hold_timeout(s, conn, false);
    if (canceled) return MHD_NO; /* the client is gone: close the connection */
    if (failed) return respond_oom(s, conn);

    /* the job is done: the engine no longer touches it, so no lock is needed below */
    srv_choice_t *choices = sl_calloc((size_t)j->n_choices, sizeof *choices);
    lp_view_t *views = sl_calloc((size_t)j->n_choices, sizeof *views);
    srv_buf_t body = srv_buf_make(0);
    int rc = choices && views ? SL_OK : SL_ENOMEM;
    for (int i = 0; i < j->n_choices && !rc; i++) {
        job_choice_t *c = &j->choices[i];
        if (j->req.logprobs >= 0) rc = lp_view_build(s, c, j->n_top, 0, c->n_lp, &views[i]);
        choices[i] = (srv_choice_t){.index = i, .text = c->text, .text_len = c->text_len,
                                    .finish_reason = finish_name(c->finish), .logprobs = j->req.logprobs,
                                    .lps = views[i].lps, .n_lps = views[i].n};
    }
    srv_usage_t u = {j->n_prompt, j->completion_tokens};
    if (!rc) rc = srv_json_response(&body, &j->meta, choices, j->n_choices, &u);
    for (int i = 0; views && i < j->n_choices; i++) lp_view_free(&views[i]);
    sl_free(views);
    sl_free(choices);
    if (rc) {
        srv_buf_free(&body);
        return respond_oom(s, conn);
    }
    return respond_buf(conn, MHD_HTTP_OK, JSON_TYPE, &body);
}

/* Checks the context length; resolves max_tokens. */
static int check_generation(const srv_t *s, srv_request_t *req, int n_prompt, srv_error_t *err)
{
    int room = s->max_seq_len - n_prompt;
    if (req->max_tokens == 0 && room >= 1)
        req->max_tokens = req->endpoint == SRV_EP_CHAT || room < s->cfg.default_max_tokens ? room : s->cfg.default_max_tokens;
    if (room < 1 || req->max_tokens > room) {
        srv_error_set(err, 400, "invalid_request_error", "context_length_exceeded",
                      req->messages ? "messages" : "prompt",
                      "This model's maximum context length is %d tokens. However, you requested %d tokens "
                      "(%d in the %s, %d for the completion). Please reduce the length of the %s or the completion.",
                      s->max_seq_len, n_prompt + (req->max_tokens ? req->max_tokens : 1), n_prompt,
                      req->messages ? "messages" : "prompt", req->max_tokens ? req->max_tokens : 1,
                      req->messages ? "messages" : "prompt");
        return SL_ETOO_LONG;
    }
    return SL_OK;
}

/* The submit status as an HTTP error. */
static void submit_error(sluice_engine *e, int rc, srv_error_t *err)
{
    const char *why = sluice_engine_errmsg(e);
    switch (rc) {
    case SLUICE_EQUEUE_FULL:
        srv_error_set(err, 429, "rate_limit_error", "queue_full", NULL,
                      "The server's request queue is full; retry after a moment");
        break;
    case SLUICE_ETOO_LONG:
        srv_error_set(err, 400, "invalid_request_error", "context_length_exceeded", NULL, "%s", why);
        break;
    case SLUICE_ESTATE:
        srv_error_set(err, 503, "service_unavailable", "shutting_down", NULL, "The server is shutting down");
        break;
    case SLUICE_ENOMEM:
        srv_error_set(err, 500, "server_error", "out_of_memory", NULL, "The server ran out of memory");
        break;
    default:
        srv_error_set(err, 400, "invalid_request_error", "invalid_value", NULL, "%s", why);
    }
}

static sluice_request_params request_params(srv_job_t *j)
{
    const srv_request_t *q = &j->req;
    sluice_request_params p = sluice_request_default_params();
    p.prompt_ids = j->prompt;
    p.n_prompt_ids = j->n_prompt;
    p.max_tokens = q->max_tokens;
    p.priority = q->priority;
    p.temperature = (float)q->temperature;
    p.top_k = q->top_k;
    p.top_p = (float)q->top_p;
    p.min_p = (float)q->min_p;
    p.repeat_penalty = (float)q->repetition_penalty;
    p.frequency_penalty = (float)q->frequency_penalty;
    p.presence_penalty = (float)q->presence_penalty;
    p.top_logprobs = q->logprobs > 0 ? q->logprobs : 0;
    p.seed = q->has_seed ? q->seed : SLUICE_SEED_RANDOM;
    p.stop = (const char *const *)q->stop;
    p.n_stop = q->n_stop;
    p.n = q->n;
    p.best_of = q->best_of;
    p.on_token = on_token;
    p.on_done = on_done;
    p.user = j;
    return p;
}

static enum MHD_Result handle_generate(srv_t *s, struct MHD_Connection *conn, srv_endpoint_t ep, const srv_buf_t *body,
                                       srv_job_t **job_out)
{
    sluice_engine *e = engine_of(s);
    if (!e || atomic_load(&s->draining)) return respond_unavailable(s, conn);
    srv_request_t req;
    srv_error_t err;
    int32_t *ids = NULL;
    int n_ids = 0;
    if (srv_request_parse(ep, body->data ? body->data : "", body->len, &s->limits, &req, &err) != SL_OK)
        return respond_error(s, conn, &err);
    if (prompt_ids(s, &req, &ids, &n_ids, &err) || check_generation(s, &req, n_ids, &err)) {
        sl_free(ids);
        srv_request_free(&req);
        return respond_error(s, conn, &err);
    }
    bool stream = req.stream;
    srv_job_t *j = job_create(s, conn, &req, stream ? 3 : 2); /* context + engine (+ response) */
    if (!j) {
        sl_free(ids);
        srv_request_free(&req);
        return respond_oom(s, conn);
    }
    j->prompt = ids;
    j->n_prompt = n_ids;
    *job_out = j; /* the connection context owns the first reference from here */
    pthread_mutex_lock(&s->lock);
    s->active++;
    pthread_mutex_unlock(&s->lock);
    sluice_request_params p = request_params(j);
    hold_timeout(s, conn, true);
    sluice_request_id id;
    int rc = sluice_submit(e, &p, &id);
    if (rc != SLUICE_OK) {
        j->refs -= stream ? 2 : 1; /* no callback will come, no response will hold it */
        hold_timeout(s, conn, false);
        submit_error(e, rc, &err);
        return respond_error(s, conn, &err);
    }
    pthread_mutex_lock(&j->lock);
    j->engine_id = id;
    j->submitted = true;
    pthread_mutex_unlock(&j->lock);
    if (!stream) return finish_blocking(s, conn, j);

    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, j, stream_free);
    if (!r) {
        job_cancel(j);
        job_release(j); /* the response's reference */
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ==== other endpoints ========================================================================= */

static enum MHD_Result handle_tokenize(srv_t *s, struct MHD_Connection *conn, srv_endpoint_t ep, const srv_buf_t *body)
{
    if (!engine_of(s)) return respond_unavailable(s, conn);
    srv_request_t req;
    srv_error_t err;
    if (srv_request_parse(ep, body->data ? body->data : "", body->len, &s->limits, &req, &err) != SL_OK)
        return respond_error(s, conn, &err);
    srv_buf_t out = srv_buf_make(0);
    int rc;
    if (ep == SRV_EP_TOKENIZE) {
        int32_t *ids = NULL;
        int n = 0;
        rc = prompt_ids(s, &req, &ids, &n, &err);
        if (!rc) rc = srv_json_tokens(&out, ids, n, s->max_seq_len) ? SL_ENOMEM : SL_OK;
        sl_free(ids);
    } else if (!s->tok) {
        srv_error_set(&err, 400, "invalid_request_error", "no_tokenizer", NULL, "This model has no tokenizer");
        rc = SL_EINVAL;
    } else {
        int len = eng_tok_decode(s->tok, req.prompt_ids, req.n_prompt_ids, 0, NULL, 0);
        char *text = len >= 0 ? sl_malloc((size_t)len + 1) : NULL;
        rc = text ? SL_OK : SL_ENOMEM;
        if (text) eng_tok_decode(s->tok, req.prompt_ids, req.n_prompt_ids, 0, text, len + 1);
        if (!rc) rc = srv_json_detokenized(&out, text, (size_t)len);
        sl_free(text);
        if (rc) srv_error_set(&err, 500, "server_error", "out_of_memory", NULL, "out of memory");
    }
    srv_request_free(&req);
    if (rc) {
        srv_buf_free(&out);
        return respond_error(s, conn, &err);
    }
    return respond_buf(conn, MHD_HTTP_OK, JSON_TYPE, &out);
}

static enum MHD_Result handle_models(srv_t *s, struct MHD_Connection *conn)
{
    srv_buf_t out = srv_buf_make(0);
    if (srv_json_models(&out, s->model_name, s->created, s->max_seq_len)) return respond_oom(s, conn);
    return respond_buf(conn, MHD_HTTP_OK, JSON_TYPE, &out);
}

static enum MHD_Result handle_metrics(srv_t *s, struct MHD_Connection *conn)
{
    sluice_engine *e = engine_of(s);
    sluice_stats st;
    if (e) sluice_get_stats(e, &st);
    srv_buf_t out = srv_buf_make(0);
    if (srv_metrics_format(s->metrics, e ? &st : NULL, &out)) return respond_oom(s, conn);
    return respond_buf(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &out);
}

static enum MHD_Result handle_health(srv_t *s, struct MHD_Connection *conn)
{
    if (!engine_of(s) || atomic_load(&s->draining)) return respond_unavailable(s, conn);
    return respond(conn, MHD_HTTP_OK, NULL, "", 0, NULL, NULL);
}

/* ==== routing ================================================================================= */

typedef enum route_id { R_COMPLETIONS, R_CHAT, R_MODELS, R_HEALTH, R_TOKENIZE, R_DETOKENIZE, R_METRICS } route_id_t;

typedef struct route {
    const char *path, *method;
    route_id_t id;
} route_t;

static const route_t routes[] = {
    {"/v1/completions", "POST", R_COMPLETIONS}, {"/v1/chat/completions", "POST", R_CHAT},
    {"/v1/models", "GET", R_MODELS},            {"/health", "GET", R_HEALTH},
    {"/tokenize", "POST", R_TOKENIZE},          {"/detokenize", "POST", R_DETOKENIZE},
    {"/metrics", "GET", R_METRICS},
};

typedef struct conn_ctx {
    const route_t *route;
    srv_buf_t body;
    bool too_large;
    srv_job_t *job; /* a reference, released when the request completes */
} conn_ctx_t;

static enum MHD_Result body_too_large(srv_t *s, struct MHD_Connection *conn)
{
    srv_error_t e;
    srv_error_set(&e, 413, "invalid_request_error", "body_too_large", NULL,
                  "The request body is larger than the server's limit of %zu bytes", s->cfg.max_body);
    return respond_error(s, conn, &e);
}

/* First call for a request: route it, or answer 404 / 405 / 413 at once. */
static enum MHD_Result begin(srv_t *s, struct MHD_Connection *conn, const char *url, const char *method, void **con_cls)
{
    const route_t *path_match = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) != 0) continue;
        path_match = &routes[i];
        if (!strcmp(method, routes[i].method)) break;
    }
    srv_error_t e;
    if (!path_match) {
        srv_error_set(&e, 404, "not_found_error", "not_found", NULL, "No route for %.200s %.200s", method, url);
        return respond_error(s, conn, &e);
    }
    if (strcmp(method, path_match->method) != 0) {
        srv_error_set(&e, 405, "invalid_request_error", "method_not_allowed", path_match->method,
                      "%.200s accepts %s only, not %.20s", url, path_match->method, method);
        return respond_error(s, conn, &e);
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) return body_too_large(s, conn);
    conn_ctx_t *ctx = sl_calloc(1, sizeof *ctx);
    if (!ctx) return MHD_NO;
    ctx->route = path_match;
    ctx->body = srv_buf_make(s->cfg.max_body);
    *con_cls = ctx;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    srv_t *s = cls;
    conn_ctx_t *ctx = *con_cls;
    (void)version;
    if (!ctx) return begin(s, conn, url, method, con_cls);
    if (*upload_data_size) {
        if (!ctx->too_large && srv_buf_append(&ctx->body, upload_data, *upload_data_size) != SL_OK)
            ctx->too_large = true; /* keep reading (and dropping) the rest, then answer 413 */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (ctx->too_large) return body_too_large(s, conn);
    switch (ctx->route->id) {
    case R_COMPLETIONS: return handle_generate(s, conn, SRV_EP_COMPLETIONS, &ctx->body, &ctx->job);
    case R_CHAT: return handle_generate(s, conn, SRV_EP_CHAT, &ctx->body, &ctx->job);
    case R_TOKENIZE: return handle_tokenize(s, conn, SRV_EP_TOKENIZE, &ctx->body);
    case R_DETOKENIZE: return handle_tokenize(s, conn, SRV_EP_DETOKENIZE, &ctx->body);
    case R_MODELS: return handle_models(s, conn);
    case R_HEALTH: return handle_health(s, conn);
    case R_METRICS: return handle_metrics(s, conn);
    }
    return MHD_NO;
}

/* MHD: the request is over (answered, or the connection failed). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv_t *s = cls;
    conn_ctx_t *ctx = *con_cls;
    (void)conn;
    if (!ctx) return;
    if (ctx->job) {
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) job_cancel(ctx->job);
        job_release(ctx->job);
        pthread_mutex_lock(&s->lock);
        if (--s->active == 0) pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->lock);
    }
    srv_buf_free(&ctx->body);
    sl_free(ctx);
    *con_cls = NULL;
}

/* ==== life cycle ============================================================================== */

srv_t *srv_create(const srv_config_t *cfg, char *err, size_t errlen)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    if (!cfg->model_name || !cfg->host || cfg->port < 0 || cfg->port > 65535 || cfg->max_body == 0 ||
        cfg->max_connections < 1) {
        snprintf(err, errlen, "invalid server config (model name, host, port 0..65535, max body and connections > 0)");
        return NULL;
    }
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "--host: '%s' is not an IPv4 address", cfg->host);
        return NULL;
    }
    srv_t *s = sl_calloc(1, sizeof *s);
    if (!s) goto nomem;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        sl_free(s);
        s = NULL;
        goto nomem;
    }
    pthread_cond_init(&s->idle, NULL);
    s->cfg = *cfg;
    s->host = sl_strdup(cfg->host);
    s->model_name = sl_strdup(cfg->model_name);
    s->chat_template_name = cfg->chat_template ? sl_strdup(cfg->chat_template) : NULL;
    s->metrics = srv_metrics_create(cfg->model_name);
    if (!s->host || !s->model_name || (cfg->chat_template && !s->chat_template_name) || !s->metrics) goto nomem;
    s->cfg.host = s->host;
    s->cfg.model_name = s->model_name;
    s->cfg.chat_template = s->chat_template_name;
    s->created = (long long)time(NULL);
    atomic_init(&s->engine, NULL);
    atomic_init(&s->draining, false);
    atomic_init(&s->next_id, 1);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                                MHD_USE_ITC | MHD_USE_ERROR_LOG,
                            (uint16_t)cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, s, MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, errlen, "cannot listen on %s:%d (port in use, or not permitted)", cfg->host, cfg->port);
        srv_free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
nomem:
    snprintf(err, errlen, "out of memory");
    srv_free(s);
    return NULL;
}

int srv_port(const srv_t *s)
{
    return s->port;
}

int srv_attach(srv_t *s, sluice_engine *e, char *err, size_t errlen)
{
    if (engine_of(s) || atomic_load(&s->draining)) {
        snprintf(err, errlen, "an engine is already attached, or the server is shutting down");
        return SL_ESTATE;
    }
    const eng_model_t *m = eng_engine_model(e);
    sluice_model_info info;
    sluice_model_get_info(e, &info);
    s->tok = m->tok;
    s->max_seq_len = info.max_sequence_length;
    s->limits = srv_limits_default(s->model_name, info.n_vocab, info.max_sequence_length);
    char why[160] = "";
    int rc = m->chat_template ? eng_chat_parse(m->chat_template, &s->chat, why, sizeof why) : SL_EINVAL;
    if (rc && !m->chat_template) snprintf(why, sizeof why, "the model has no chat template");
    if (rc && s->chat_template_name) {
        rc = eng_chat_builtin(s->chat_template_name, &s->chat, why, sizeof why);
        if (rc) {
            snprintf(err, errlen, "--chat-template: '%s' is not a built-in template (chatml, llama2)", s->chat_template_name);
            return SL_EINVAL;
        }
    }
    s->have_chat = rc == SL_OK;
    if (!s->have_chat)
        snprintf(s->chat_err, sizeof s->chat_err, "Chat is not available: %.120s; start the server with --chat-template chatml|llama2", why);
    atomic_store(&s->engine, e);
    return SL_OK;
}

int srv_shutdown(srv_t *s, double deadline_s)
{
    if (!s || s->shut) return 0;
    s->shut = true;
    atomic_store(&s->draining, true);
    if (s->d) {
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    sluice_engine *e = engine_of(s);
    int aborted = e ? sluice_engine_shutdown(e, deadline_s) : 0;
    /* every request is done now; let the connections finish sending (bounded: a client that
     * stops reading is cut when the grace ends) */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SHUTDOWN_GRACE_S;
    pthread_mutex_lock(&s->lock);
    while (s->active > 0 && pthread_cond_timedwait(&s->idle, &s->lock, &until) != ETIMEDOUT) {}
    pthread_mutex_unlock(&s->lock);
    if (s->d) MHD_stop_daemon(s->d);
    s->d = NULL;
    return aborted > 0 ? aborted : 0;
}

void srv_free(srv_t *s)
{
    if (!s) return;
    srv_shutdown(s, 0);
    if (s->have_chat) eng_chat_template_free(&s->chat);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    srv_metrics_free(s->metrics);
    sl_free(s->host);
    sl_free(s->model_name);
    sl_free(s->chat_template_name);
    sl_free(s);
}
