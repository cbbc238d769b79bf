/* test_openai_req.c — the OpenAI request parser and validator: every error case with its exact
 * message, defaults, and that no failure path leaks (allocation fault injection). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/http/openai_req.h"
#include "sched/status.h"

static srv_limits_t lim(void)
{
    return srv_limits_default("stories260K", 512, 256);
}

/* Parses body for ep and expects an error: status, code, param and message. */
static void expect_error(srv_endpoint_t ep, const char *body, int status, const char *code, const char *param,
                         const char *message)
{
    srv_limits_t l = lim();
    srv_request_t r;
    srv_error_t e;
    int rc = srv_request_parse(ep, body, strlen(body), &l, &r, &e);
    if (rc == SL_OK) fail_msg("accepted: %s", body);
    assert_int_equal(e.http_status, status);
    assert_string_equal(e.code, code);
    assert_string_equal(e.param, param);
    assert_string_equal(e.message, message);
    assert_null(r.model);
    assert_null(r.stop);
}

static srv_request_t parse_ok(srv_endpoint_t ep, const char *body)
{
    srv_limits_t l = lim();
    srv_request_t r;
    srv_error_t e;
    if (srv_request_parse(ep, body, strlen(body), &l, &r, &e) != SL_OK) fail_msg("rejected %s: %s", body, e.message);
    return r;
}

static void test_completion_defaults(void **state)
{
    (void)state;
    srv_request_t r = parse_ok(SRV_EP_COMPLETIONS, "{\"prompt\": \"Once upon\"}");
    assert_string_equal(r.prompt_text, "Once upon");
    assert_null(r.model);
    assert_int_equal(r.max_tokens, 0);
    assert_true(r.temperature == 1.0 && r.top_p == 1.0 && r.repetition_penalty == 1.0);
    assert_int_equal(r.top_k, 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.best_of, 1);
    assert_int_equal(r.logprobs, -1);
    assert_false(r.stream);
    assert_false(r.has_seed);
    srv_request_free(&r);
}

static void test_completion_all_fields(void **state)
{
    (void)state;
    srv_request_t r = parse_ok(SRV_EP_COMPLETIONS,
                               "{\"model\":\"stories260K\",\"prompt\":[1,2,3],\"max_tokens\":7,\"temperature\":0,"
                               "\"top_p\":0.5,\"top_k\":-1,\"min_p\":0.1,\"repetition_penalty\":1.2,"
                               "\"frequency_penalty\":0.5,\"presence_penalty\":-0.5,\"stop\":[\"a\",\"bc\"],"
                               "\"seed\":42,\"n\":2,\"best_of\":3,\"logprobs\":2,"
                               "\"priority\":-3,\"user\":\"ignored\"}  \n");
    assert_string_equal(r.model, "stories260K");
    assert_int_equal(r.n_prompt_ids, 3);
    assert_int_equal(r.prompt_ids[2], 3);
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.temperature == 0 && r.top_p == 0.5 && r.min_p == 0.1 && r.repetition_penalty == 1.2);
    assert_int_equal(r.top_k, 0);
    assert_true(r.frequency_penalty == 0.5 && r.presence_penalty == -0.5);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "bc");
    assert_true(r.has_seed);
    assert_int_equal(r.seed, 42);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.best_of, 3);
    assert_int_equal(r.logprobs, 2);
    assert_int_equal(r.priority, -3);
    srv_request_free(&r);
    r = parse_ok(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    assert_true(r.stream && r.include_usage);
    srv_request_free(&r);
}

static void test_prompt_forms(void **state)
{
    (void)state;
    srv_request_t r = parse_ok(SRV_EP_COMPLETIONS, "{\"prompt\": [\"single\"], \"stop\": \"x\"}");
    assert_string_equal(r.prompt_text, "single");
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "x");
    srv_request_free(&r);
    r = parse_ok(SRV_EP_COMPLETIONS, "{\"prompt\": [[5, 6]]}");
    assert_int_equal(r.n_prompt_ids, 2);
    srv_request_free(&r);
}

static void test_chat_messages(void **state)
{
    (void)state;
    srv_request_t r = parse_ok(SRV_EP_CHAT,
                               "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},{\"type\":\"text\",\"text\":\"there\"}]},"
                               "{\"role\":\"assistant\",\"content\":null}],\"max_completion_tokens\":5,"
                               "\"logprobs\":true,\"top_logprobs\":3}");
    assert_int_equal(r.n_messages, 3);
    assert_string_equal(r.messages[1].content, "Hi there");
    assert_string_equal(r.messages[2].role, "assistant");
    assert_string_equal(r.messages[2].content, "");
    assert_int_equal(r.max_tokens, 5);
    assert_int_equal(r.logprobs, 3);
    assert_true(r.add_generation_prompt);
    srv_request_free(&r);
}

static void test_tokenize_and_detokenize(void **state)
{
    (void)state;
    srv_request_t r = parse_ok(SRV_EP_TOKENIZE, "{\"prompt\":\"hello\",\"add_special_tokens\":false}");
    assert_string_equal(r.prompt_text, "hello");
    assert_false(r.add_special_tokens);
    srv_request_free(&r);
    r = parse_ok(SRV_EP_TOKENIZE, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_int_equal(r.n_messages, 1);
    assert_false(r.add_special_tokens);
    srv_request_free(&r);
    r = parse_ok(SRV_EP_DETOKENIZE, "{\"tokens\":[1,511]}");
    assert_int_equal(r.n_prompt_ids, 2);
    srv_request_free(&r);
}

static void test_malformed_bodies(void **state)
{
    (void)state;
    expect_error(SRV_EP_COMPLETIONS, "", 400, "invalid_json", "", "The request body is empty; expected a JSON object");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\": \"x\"", 400, "invalid_json", "",
                 "The request body is not valid JSON (error near byte 13)");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\": \"x\"} trailing", 400, "invalid_json", "",
                 "The request body is not valid JSON (error near byte 16)");
    expect_error(SRV_EP_COMPLETIONS, "[1,2]", 400, "invalid_type", "", "The request body must be a JSON object, got an array");
}

static void test_missing_fields(void **state)
{
    (void)state;
    expect_error(SRV_EP_COMPLETIONS, "{}", 400, "missing_field", "prompt", "'prompt' is a required property");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\": null}", 400, "missing_field", "prompt", "'prompt' is a required property");
    expect_error(SRV_EP_CHAT, "{\"model\":\"stories260K\"}", 400, "missing_field", "messages", "'messages' is a required property");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", 400, "missing_field", "messages[0].role",
                 "'messages[0].role' is a required property");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "missing_field", "messages[0].content",
                 "'messages[0].content' is a required property");
    expect_error(SRV_EP_DETOKENIZE, "{}", 400, "missing_field", "tokens", "'tokens' is a required property");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", 400, "invalid_type", "temperature",
                 "'temperature' must be a number, got a string");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":1.5}", 400, "invalid_value", "max_tokens",
                 "'max_tokens' must be an integer, got 1.5");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":\"5\"}", 400, "invalid_type", "max_tokens",
                 "'max_tokens' must be an integer, got a string");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stream\":1}", 400, "invalid_type", "stream",
                 "'stream' must be a boolean, got a number");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":42}", 400, "invalid_type", "prompt",
                 "'prompt' must be a string or an array of token ids, got a number");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":[1,\"a\"]}", 400, "invalid_type", "prompt[1]",
                 "'prompt[1]' must be a token id (integer), got a string");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"model\":7}", 400, "invalid_type", "model",
                 "'model' must be a string, got a number");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":{}}", 400, "invalid_type", "stop",
                 "'stop' must be a string or an array of strings, got an object");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[\"a\",3]}", 400, "invalid_type", "stop[1]",
                 "'stop[1]' must be a string, got a number");
    expect_error(SRV_EP_CHAT, "{\"messages\":\"hi\"}", 400, "invalid_type", "messages", "'messages' must be an array, got a string");
    expect_error(SRV_EP_CHAT, "{\"messages\":[3]}", 400, "invalid_type", "messages[0]", "'messages[0]' must be an object, got a number");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "invalid_type", "messages[0].content",
                 "'messages[0].content' must be a string or an array of content parts, got a number");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", 400, "invalid_type",
                 "logprobs", "'logprobs' must be a boolean, got a number");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":[]}", 400, "invalid_type",
                 "stream_options", "'stream_options' must be an object, got an array");
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"model\":\"gpt-4\"}", 400, "model_not_found", "model",
                 "The model 'gpt-4' does not exist; this server serves 'stories260K'");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"temperature\":3}", 400, "invalid_value", "temperature",
                 "'temperature' must be in [0, 2], got 3");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"top_p\":0}", 400, "invalid_value", "top_p",
                 "'top_p' must be in (0, 1], got 0");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"repetition_penalty\":0}", 400, "invalid_value", "repetition_penalty",
                 "'repetition_penalty' must be > 0, got 0");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":0}", 400, "invalid_value", "max_tokens",
                 "'max_tokens' must be between 1 and 1073741824, got 0");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"n\":17}", 400, "invalid_value", "n", "'n' must be between 1 and 16, got 17");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"n\":3,\"best_of\":2}", 400, "invalid_value", "best_of",
                 "'best_of' must be >= n (3), got 2");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"best_of\":2,\"stream\":true}", 400, "invalid_value", "best_of",
                 "'best_of' must equal n when streaming (candidates are ranked at the end)");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"logprobs\":6}", 400, "invalid_value", "logprobs",
                 "'logprobs' must be between 0 and 5, got 6");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}", 400, "invalid_value",
                 "stream_options", "'stream_options' is only allowed when 'stream' is true");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[\"\"]}", 400, "invalid_value", "stop[0]", "'stop[0]' must not be empty");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":[]}", 400, "invalid_value", "prompt", "'prompt' must not be empty");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":[1,512]}", 400, "invalid_value", "prompt[1]",
                 "'prompt[1]' must be a token id in [0, 512), got 512");
    expect_error(SRV_EP_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", 400, "invalid_value", "prompt",
                 "'prompt' holds 2 prompts; send one prompt per request");
    expect_error(SRV_EP_CHAT, "{\"messages\":[]}", 400, "invalid_value", "messages", "'messages' must not be empty");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "invalid_value", "messages[0].role",
                 "'messages[0].role' must be one of system, user, assistant, tool, developer; got 'robot'");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400, "invalid_value",
                 "messages[0].content[0]",
                 "'messages[0].content[0]' must be a text part ({\"type\": \"text\", \"text\": ...}); only text content is supported");
    expect_error(SRV_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400, "invalid_value",
                 "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
}

static void test_limits(void **state)
{
    (void)state;
    char body[2048] = "{\"prompt\":\"x\",\"stop\":[";
    for (int i = 0; i < 17; i++) strcat(body, i ? ",\"s\"" : "\"s\"");
    strcat(body, "]}");
    expect_error(SRV_EP_COMPLETIONS, body, 400, "invalid_value", "stop", "'stop' has 17 strings, more than the limit of 16");
    char big[600] = "{\"prompt\":\"x\",\"stop\":\"";
    memset(big + strlen(big), 'a', 300);
    strcpy(big + 22 + 300, "\"}");
    expect_error(SRV_EP_COMPLETIONS, big, 400, "invalid_value", "stop", "'stop' is 300 bytes, more than the limit of 256");
}

/* Every allocation failure inside a successful parse returns SL_ENOMEM with a 500 and no leak
 * (the leak check is the ASan build). */
static void test_allocation_failures_are_clean(void **state)
{
    (void)state;
    const char *body = "{\"model\":\"stories260K\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                       "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"yo\"}]}],\"stop\":[\"a\",\"b\"]}";
    srv_limits_t l = lim();
    int failures = 0;
    for (long n = 0; n < 64; n++) {
        srv_request_t r;
        srv_error_t e;
        sl_alloc_fail_after(n);
        int rc = srv_request_parse(SRV_EP_CHAT, body, strlen(body), &l, &r, &e);
        sl_alloc_fail_after(-1);
        if (rc == SL_OK) {
            srv_request_free(&r);
            break;
        }
        assert_int_equal(rc, SL_ENOMEM);
        assert_int_equal(e.http_status, 500);
        failures++;
    }
    assert_true(failures > 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_defaults),
        cmocka_unit_test(test_completion_all_fields),
        cmocka_unit_test(test_prompt_forms),
        cmocka_unit_test(test_chat_messages),
        cmocka_unit_test(test_tokenize_and_detokenize),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_allocation_failures_are_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
