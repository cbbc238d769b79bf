/* test_server.c — the server's life cycle over real loopback HTTP: before an engine is attached
 * (what `sluice serve` shows while the model loads) /health and the generation endpoints answer
 * 503 "loading" while /metrics and unknown paths still answer; after srv_attach /health is 200 and
 * a completion is served; after srv_shutdown nothing listens. Uses stories260K (skipped when
 * ../shared is absent). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "engine/http/server.h"

#define MODEL "../shared/models/stories260K.gguf"

/* One HTTP/1.1 exchange with Connection: close; the whole answer into resp (NUL-terminated).
 * Returns the status code, or -1 when nothing listens. */
static int http(int port, const char *method, const char *path, const char *body, char *resp, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    assert_true(write(fd, req, (size_t)n) == n);
    size_t got = 0;
    ssize_t k;
    while (got + 1 < cap && (k = read(fd, resp + got, cap - 1 - got)) > 0)
        got += (size_t)k;
    resp[got] = '\0';
    close(fd);
    int status = -1;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    return status;
}

static void test_server_is_503_loading_until_an_engine_is_attached(void **state)
{
    (void)state;
    srv_config_t c = srv_config_default();
    c.port = 0;
    c.model_name = "stories260K";
    char err[256] = "", resp[16384];
    srv_t *s = srv_create(&c, err, sizeof err);
    assert_non_null(s);
    int port = srv_port(s);
    assert_true(port > 0);

    /* loading: no engine yet */
    assert_int_equal(http(port, "GET", "/health", NULL, resp, sizeof resp), 503);
    assert_non_null(strstr(resp, "\"code\":\"loading\""));
    assert_int_equal(http(port, "POST", "/v1/completions", "{\"prompt\": \"Once\"}", resp, sizeof resp), 503);
    assert_non_null(strstr(resp, "\"code\":\"loading\""));
    assert_int_equal(http(port, "POST", "/tokenize", "{\"prompt\": \"Once\"}", resp, sizeof resp), 503);
    assert_int_equal(http(port, "GET", "/metrics", NULL, resp, sizeof resp), 200);
    assert_int_equal(http(port, "GET", "/nowhere", NULL, resp, sizeof resp), 404);

    if (access(MODEL, R_OK) != 0) {
        srv_free(s);
        print_message("skipped the attached half: %s is absent\n", MODEL);
        skip();
    }
    sluice_engine_params ep = sluice_engine_default_params();
    ep.model = MODEL;
    ep.n_threads = 1;
    ep.kv_memory_mb = 16;
    sluice_engine *e = sluice_engine_create(&ep, err, sizeof err);
    assert_non_null(e);
    assert_int_equal(srv_attach(s, e, err, sizeof err), 0);
    assert_int_not_equal(srv_attach(s, e, err, sizeof err), 0); /* once only */

    /* ready */
    assert_int_equal(http(port, "GET", "/health", NULL, resp, sizeof resp), 200);
    assert_int_equal(http(port, "POST", "/v1/completions",
                          "{\"prompt\": \"Once upon a time\", \"max_tokens\": 4, \"temperature\": 0, \"logprobs\": 2}",
                          resp, sizeof resp),
                     200);
    assert_non_null(strstr(resp, "\"top_logprobs\":[{"));
    assert_non_null(strstr(resp, "\"completion_tokens\":4"));

    srv_shutdown(s, 1);
    assert_int_equal(http(port, "GET", "/health", NULL, resp, sizeof resp), -1);
    srv_free(s);
    sluice_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_is_503_loading_until_an_engine_is_attached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
