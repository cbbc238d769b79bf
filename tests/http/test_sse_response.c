/* test_sse_response.c — SSE framing, UTF-8 hygiene of streamed text, and the exact JSON shapes of
 * errors, responses and streaming chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/http/response.h"
#include "engine/http/sse.h"
#include "sched/status.h"

static const srv_resp_meta_t completion_meta = {SRV_EP_COMPLETIONS, "cmpl-1", 1700000000, "m"};
static const srv_resp_meta_t chat_meta = {SRV_EP_CHAT, "chatcmpl-1", 1700000000, "m"};

static void test_sse_event_framing(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    assert_int_equal(srv_sse_event(&b, "{\"a\":1}"), SL_OK);
    assert_int_equal(srv_sse_done(&b), SL_OK);
    assert_string_equal(b.data, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    srv_buf_consume(&b, 15);
    assert_string_equal(b.data, "data: [DONE]\n\n");
    srv_buf_free(&b);
}

static void test_buffer_limit_leaves_buffer_unchanged(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(10);
    assert_int_equal(srv_buf_append(&b, "12345", 5), SL_OK);
    assert_int_equal(srv_sse_event(&b, "xyz"), SL_ETOO_LONG);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_int_equal(srv_buf_appendf(&b, "%d", 123456), SL_ETOO_LONG);
    assert_int_equal(srv_buf_appendf(&b, "%d", 12345), SL_OK);
    assert_string_equal(b.data, "1234512345");
    srv_buf_free(&b);
}

static void test_utf8_clean_replaces_invalid_bytes(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    assert_int_equal(srv_utf8_append_clean(&b, "a\xFF" "b\xC3\xA9\xED\xA0\x80", 9), SL_OK);
    /* 0xFF invalid; é kept; ED A0 80 is a surrogate: three replacement characters */
    assert_string_equal(b.data, "a\xEF\xBF\xBD" "b\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    srv_buf_truncate(&b, 0);
    assert_int_equal(srv_utf8_append_clean(&b, "x\xE2\x82", 3), SL_OK); /* a cut-off euro sign */
    assert_string_equal(b.data, "x\xEF\xBF\xBD\xEF\xBF\xBD");
    srv_buf_free(&b);
}

static void test_error_shape(void **state)
{
    (void)state;
    srv_error_t e;
    srv_buf_t b = srv_buf_make(0);
    srv_error_set(&e, 400, "invalid_request_error", "invalid_type", "temperature", "'temperature' must be a number");
    assert_int_equal(srv_json_error(&b, &e), SL_OK);
    assert_string_equal(b.data, "{\"error\":{\"message\":\"'temperature' must be a number\",\"type\":\"invalid_request_error\","
                                "\"param\":\"temperature\",\"code\":\"invalid_type\"}}");
    srv_buf_truncate(&b, 0);
    srv_error_set(&e, 404, "not_found_error", NULL, NULL, "no");
    assert_int_equal(srv_json_error(&b, &e), SL_OK);
    assert_string_equal(b.data, "{\"error\":{\"message\":\"no\",\"type\":\"not_found_error\",\"param\":null,\"code\":null}}");
    srv_buf_free(&b);
}

static void test_completion_response_shape(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    srv_choice_t c = {.index = 0, .text = "Hi\xFF", .text_len = 3, .finish_reason = "length", .logprobs = -1};
    srv_usage_t u = {4, 2};
    assert_int_equal(srv_json_response(&b, &completion_meta, &c, 1, &u), SL_OK);
    assert_string_equal(b.data, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
                                "\"choices\":[{\"index\":0,\"text\":\"Hi\xEF\xBF\xBD\",\"logprobs\":null,\"finish_reason\":\"length\"}],"
                                "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}");
    srv_buf_free(&b);
}

static void test_completion_logprobs_shape(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    /* token 0: its alternatives hold it first; token 1 was sampled below its alternatives, and two
     * of them share a text (the first, more likely one is kept) */
    srv_token_lp_t alts[4] = {{.piece = " a", .piece_len = 2, .logprob = -0.5f},
                              {.piece = "c", .piece_len = 1, .logprob = -0.25f},
                              {.piece = "d", .piece_len = 1, .logprob = -0.5f},
                              {.piece = "d", .piece_len = 1, .logprob = -0.75f}};
    srv_token_lp_t lps[2] = {{.piece = " a", .piece_len = 2, .logprob = -0.5f, .top = &alts[0], .n_top = 1},
                             {.piece = "b", .piece_len = 1, .logprob = -1.0f, .top = &alts[1], .n_top = 3}};
    srv_choice_t c = {.index = 0, .text = " ab", .text_len = 3, .finish_reason = "stop", .logprobs = 1, .lps = lps, .n_lps = 2};
    srv_usage_t u = {1, 2};
    assert_int_equal(srv_json_response(&b, &completion_meta, &c, 1, &u), SL_OK);
    assert_non_null(strstr(b.data, "\"logprobs\":{\"tokens\":[\" a\",\"b\"],\"token_logprobs\":[-0.5,-1],"
                                   "\"top_logprobs\":[{\" a\":-0.5},{\"c\":-0.25,\"d\":-0.5,\"b\":-1}],"
                                   "\"text_offset\":[0,2]}"));
    srv_buf_free(&b);
}

static void test_chat_logprobs_shape(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    srv_token_lp_t alts[2] = {{.piece = "Hi", .piece_len = 2, .logprob = -0.5f},
                              {.piece = "Yo", .piece_len = 2, .logprob = -1.5f}};
    srv_token_lp_t lp = {.piece = "Hi", .piece_len = 2, .logprob = -0.5f, .top = alts, .n_top = 2};
    srv_choice_t c = {.index = 0, .text = "Hi", .text_len = 2, .finish_reason = "stop", .logprobs = 2, .lps = &lp, .n_lps = 1};
    srv_usage_t u = {1, 1};
    assert_int_equal(srv_json_response(&b, &chat_meta, &c, 1, &u), SL_OK);
    assert_non_null(strstr(b.data, "\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.5,\"bytes\":[72,105],"
                                   "\"top_logprobs\":[{\"token\":\"Hi\",\"logprob\":-0.5,\"bytes\":[72,105]},"
                                   "{\"token\":\"Yo\",\"logprob\":-1.5,\"bytes\":[89,111]}]}]}"));
    srv_buf_free(&b);
}

static void test_chat_response_and_chunks(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    srv_choice_t c = {.index = 1, .text = "Yo", .text_len = 2, .finish_reason = "stop", .logprobs = -1};
    srv_usage_t u = {3, 1};
    assert_int_equal(srv_json_response(&b, &chat_meta, &c, 1, &u), SL_OK);
    assert_string_equal(b.data, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m\","
                                "\"choices\":[{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"Yo\"},"
                                "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                                "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}");
    srv_buf_truncate(&b, 0);
    srv_choice_t open = {.index = 0, .text = "", .logprobs = -1};
    assert_int_equal(srv_json_chunk(&b, &chat_meta, &open, true, NULL), SL_OK);
    assert_string_equal(b.data, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\","
                                "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                                "\"logprobs\":null,\"finish_reason\":null}]}");
    srv_buf_truncate(&b, 0);
    srv_choice_t last = {.index = 0, .text = "", .finish_reason = "length", .logprobs = -1};
    assert_int_equal(srv_json_chunk(&b, &chat_meta, &last, false, NULL), SL_OK);
    assert_non_null(strstr(b.data, "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\""));
    srv_buf_truncate(&b, 0);
    assert_int_equal(srv_json_chunk(&b, &chat_meta, NULL, false, &u), SL_OK);
    assert_non_null(strstr(b.data, "\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}"));
    srv_buf_free(&b);
}

static void test_completion_chunk_shape(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    srv_choice_t c = {.index = 0, .text = " once", .text_len = 5, .logprobs = -1};
    assert_int_equal(srv_json_chunk(&b, &completion_meta, &c, false, NULL), SL_OK);
    assert_string_equal(b.data, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
                                "\"choices\":[{\"index\":0,\"text\":\" once\",\"logprobs\":null,\"finish_reason\":null}]}");
    srv_buf_free(&b);
}

static void test_models_and_tokens(void **state)
{
    (void)state;
    srv_buf_t b = srv_buf_make(0);
    assert_int_equal(srv_json_models(&b, "m", 5, 512), SL_OK);
    assert_string_equal(b.data, "{\"object\":\"list\",\"data\":[{\"id\":\"m\",\"object\":\"model\",\"created\":5,"
                                "\"owned_by\":\"sluice\",\"root\":\"m\",\"max_model_len\":512}]}");
    srv_buf_truncate(&b, 0);
    int32_t ids[] = {1, 2};
    assert_int_equal(srv_json_tokens(&b, ids, 2, 512), SL_OK);
    assert_string_equal(b.data, "{\"count\":2,\"max_model_len\":512,\"tokens\":[1,2]}");
    srv_buf_truncate(&b, 0);
    assert_int_equal(srv_json_detokenized(&b, "a\"b", 3), SL_OK);
    assert_string_equal(b.data, "{\"prompt\":\"a\\\"b\"}");
    srv_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_event_framing),
        cmocka_unit_test(test_buffer_limit_leaves_buffer_unchanged),
        cmocka_unit_test(test_utf8_clean_replaces_invalid_bytes),
        cmocka_unit_test(test_error_shape),
        cmocka_unit_test(test_completion_response_shape),
        cmocka_unit_test(test_completion_logprobs_shape),
        cmocka_unit_test(test_chat_logprobs_shape),
        cmocka_unit_test(test_chat_response_and_chunks),
        cmocka_unit_test(test_completion_chunk_shape),
        cmocka_unit_test(test_models_and_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
