/* chat.c — recognises ChatML and Llama-2 chat templates and renders messages natively (chat.h). */
#include "chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sched/status.h"

/* The default system turn a ChatML template writes as a literal:
 * "<|im_start|>system" + newline (a real one or the two characters \n) + TEXT + "<|im_end|>". */
static int default_system(const char *tmpl, char **out)
{
    static const char open[] = "<|im_start|>system";
    *out = NULL;
    const char *p = strstr(tmpl, open);
    if (!p) return SL_OK;
    p += sizeof open - 1;
    if (*p == '\n') p++;
    else if (p[0] == '\\' && p[1] == 'n') p += 2;
    else return SL_OK; /* "<|im_start|>system' + ..." : a variable, not a literal */
    const char *end = strstr(p, "<|im_end|>");
    if (!end || memchr(p, '\'', (size_t)(end - p)) || memchr(p, '{', (size_t)(end - p)))
        return SL_OK; /* not one literal string */
    size_t n = (size_t)(end - p);
    if (!(*out = sl_malloc(n + 1))) return SL_ENOMEM;
    memcpy(*out, p, n);
    (*out)[n] = 0;
    return SL_OK;
}

int eng_chat_parse(const char *template_text, eng_chat_template_t *out, char *err, int errlen)
{
    memset(out, 0, sizeof *out);
    if (!template_text) return sl_errf(err, errlen, SL_EINVAL, "model has no chat template");
    if (strstr(template_text, "<|im_start|>")) {
        out->kind = ENG_CHAT_CHATML;
        if (default_system(template_text, &out->default_system) != SL_OK)
            return sl_errf(err, errlen, SL_ENOMEM, "out of memory");
        return SL_OK;
    }
    if (strstr(template_text, "[INST]")) {
        out->kind = ENG_CHAT_LLAMA2;
        return SL_OK;
    }
    return sl_errf(err, errlen, SL_EUNSUPPORTED,
                "chat template is not supported (neither ChatML nor Llama-2 [INST]): '%.60s%s'",
                template_text, strlen(template_text) > 60 ? "..." : "");
}

int eng_chat_builtin(const char *name, eng_chat_template_t *out, char *err, int errlen)
{
    memset(out, 0, sizeof *out);
    if (strcmp(name, "chatml") == 0) out->kind = ENG_CHAT_CHATML;
    else if (strcmp(name, "llama2") == 0) out->kind = ENG_CHAT_LLAMA2;
    else return sl_errf(err, errlen, SL_ENOTFOUND, "unknown chat template '%s' (chatml, llama2)", name);
    return SL_OK;
}

void eng_chat_template_free(eng_chat_template_t *t)
{
    if (!t) return;
    sl_free(t->default_system);
    t->default_system = NULL;
}

/* A growing string; oom sticks. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf_t;

static void put(sbuf_t *b, const char *s)
{
    size_t k = strlen(s);
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + k + 1) cap *= 2;
        char *q = sl_realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

static void render_chatml(sbuf_t *b, const eng_chat_template_t *t, const eng_chat_msg_t *m, int n, int gen)
{
    if (t->default_system && (n == 0 || strcmp(m[0].role, "system") != 0)) {
        put(b, "<|im_start|>system\n");
        put(b, t->default_system);
        put(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, m[i].role);
        put(b, "\n");
        put(b, m[i].content);
        put(b, "<|im_end|>\n");
    }
    if (gen) put(b, "<|im_start|>assistant\n");
}

static int render_llama2(sbuf_t *b, const eng_chat_msg_t *m, int n, char *err, int errlen)
{
    const char *sys = NULL;
    int i = 0;
    if (n > 0 && strcmp(m[0].role, "system") == 0) sys = m[i++].content;
    for (int turn = 0; i < n; i++, turn++) {
        const char *want = turn % 2 == 0 ? "user" : "assistant";
        if (strcmp(m[i].role, want) != 0)
            return sl_errf(err, errlen, SL_EINVAL,
                        "llama2 chat: message %d has role '%s', expected '%s' (user and assistant "
                        "alternate after an optional system message)", i, m[i].role, want);
        if (turn % 2 == 0) {
            put(b, "<s>[INST] ");
            if (sys && turn == 0) {
                put(b, "<<SYS>>\n");
                put(b, sys);
                put(b, "\n<</SYS>>\n\n");
            }
            put(b, m[i].content);
            put(b, " [/INST]");
        } else {
            put(b, " ");
            put(b, m[i].content);
            put(b, " </s>");
        }
    }
    return SL_OK;
}

int eng_chat_render(const eng_chat_template_t *t, const eng_chat_msg_t *msgs, int n,
                    int add_generation_prompt, char **out, char *err, int errlen)
{
    *out = NULL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return sl_errf(err, errlen, SL_EINVAL, "chat message %d has no %s", i,
                        msgs[i].role ? "content" : "role");
    sbuf_t b = {0};
    put(&b, "");
    int rc = SL_OK;
    if (t->kind == ENG_CHAT_CHATML) render_chatml(&b, t, msgs, n, add_generation_prompt);
    else rc = render_llama2(&b, msgs, n, err, errlen);
    if (rc == SL_OK && b.oom) rc = sl_errf(err, errlen, SL_ENOMEM, "out of memory rendering the chat");
    if (rc != SL_OK) {
        sl_free(b.p);
        return rc;
    }
    *out = b.p;
    return SL_OK;
}
