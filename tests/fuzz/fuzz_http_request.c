/* fuzz_http_request.c — libFuzzer target over the OpenAI request parser (engine/http/openai_req.c).
 *
 * The first byte picks the endpoint; the rest is the body. Every input must either parse (then
 * a chat request's messages are rendered with both built-in templates, engine/chat.c, and the
 * request is freed) or produce a 4xx/5xx error with a message; ASan/UBSan catch the rest.
 * Build by hand: clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_http_request.c \
 *   engine/http/openai_req.c engine/chat.c sched/status.c -lcjson -lm   (or `make fuzz`). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/http/openai_req.h"
#include "sched/status.h"

/* A chat request's messages through both built-in templates, as the server renders them: a
 * prompt, or an error with a message (Llama-2 refuses roles out of order). */
static void render_both(const srv_request_t *r)
{
    if (!r->messages)
        return;
    eng_chat_msg_t *msgs = malloc((size_t)r->n_messages * sizeof *msgs);
    if (!msgs)
        return;
    for (int i = 0; i < r->n_messages; i++)
        msgs[i] = (eng_chat_msg_t){r->messages[i].role, r->messages[i].content};
    static const char *const names[] = {"chatml", "llama2"};
    for (int k = 0; k < 2; k++) {
        eng_chat_template_t t;
        char err[256] = "", *out = NULL;
        if (eng_chat_builtin(names[k], &t, err, sizeof err) != SL_OK)
            abort();
        int rc = eng_chat_render(&t, msgs, r->n_messages, r->add_generation_prompt, &out, err, sizeof err);
        if ((rc == SL_OK) != (out != NULL) || (rc != SL_OK && err[0] == '\0'))
            abort();
        sl_free(out);
        eng_chat_template_free(&t);
    }
    free(msgs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    srv_endpoint_t ep = (srv_endpoint_t)(data[0] % 4);
    srv_limits_t lim = srv_limits_default("stories260K", 512, 512);
    srv_request_t r;
    srv_error_t e;
    int rc = srv_request_parse(ep, (const char *)data + 1, size - 1, &lim, &r, &e);
    if (rc == SL_OK) {
        if (r.n < 1 || r.best_of < r.n || r.n_stop > lim.max_stop || (!r.prompt_text && !r.prompt_ids && !r.messages))
            abort();
        render_both(&r);
        srv_request_free(&r);
    } else if (e.http_status < 400 || e.message[0] == '\0' || strlen(e.message) >= sizeof e.message) {
        abort();
    }
    return 0;
}
