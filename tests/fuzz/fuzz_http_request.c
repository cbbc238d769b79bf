/* fuzz_http_request.c — libFuzzer target over the OpenAI request parser (engine/http/openai_req.c).
 *
 * The first byte picks the endpoint; the rest is the body. Every input must either parse (then
 * the request is freed) or produce a 4xx/5xx error with a message; ASan/UBSan catch the rest.
 * Build by hand: clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_http_request.c \
 *   engine/http/openai_req.c sched/status.c -lcjson -lm   (or `make fuzz`). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/http/openai_req.h"
#include "sched/status.h"

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
        srv_request_free(&r);
    } else if (e.http_status < 400 || e.message[0] == '\0' || strlen(e.message) >= sizeof e.message) {
        abort();
    }
    return 0;
}
