/* test_metrics.c — the Prometheus exposition: engine gauges and counters, histogram buckets
 * (cumulative, +Inf, sum, count) from observed requests, rejection counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/http/metrics.h"
#include "sched/status.h"

static void assert_has(const char *text, const char *line)
{
    if (!strstr(text, line)) fail_msg("missing line: %s", line);
}

static void test_engine_series(void **state)
{
    (void)state;
    srv_metrics_t *m = srv_metrics_create("tiny");
    assert_non_null(m);
    sluice_stats st = {0};
    st.running = 3;
    st.waiting = 2;
    st.kv_blocks_total = 8;
    st.kv_blocks_used = 2;
    st.kv_blocks_free = 6;
    st.prefix_query_tokens = 100;
    st.prefix_hit_tokens = 40;
    st.preemptions = 1;
    st.prompt_tokens = 1234;
    st.generation_tokens = 99;
    st.spec_draft_tokens = 40;
    st.spec_accepted_tokens = 25;
    st.max_num_batched_tokens = 1024;
    st.batch_timeout_ms = 12.5;
    st.adaptive_changes = 3;
    srv_buf_t b = srv_buf_make(0);
    assert_int_equal(srv_metrics_format(m, &st, &b), SL_OK);
    assert_has(b.data, "# TYPE sluice:num_requests_running gauge\nsluice:num_requests_running{model_name=\"tiny\"} 3\n");
    assert_has(b.data, "sluice:num_requests_waiting{model_name=\"tiny\"} 2\n");
    assert_has(b.data, "sluice:kv_cache_usage_perc{model_name=\"tiny\"} 0.25\n");
    assert_has(b.data, "sluice:kv_blocks_used{model_name=\"tiny\"} 2\n");
    assert_has(b.data, "# TYPE sluice:prefix_cache_queries_total counter\nsluice:prefix_cache_queries_total{model_name=\"tiny\"} 100\n");
    assert_has(b.data, "sluice:prefix_cache_hits_total{model_name=\"tiny\"} 40\n");
    assert_has(b.data, "sluice:num_preemptions_total{model_name=\"tiny\"} 1\n");
    assert_has(b.data, "sluice:prompt_tokens_total{model_name=\"tiny\"} 1234\n");
    assert_has(b.data, "sluice:generation_tokens_total{model_name=\"tiny\"} 99\n");
    assert_has(b.data, "# TYPE sluice:spec_decode_num_draft_tokens_total counter\n"
                       "sluice:spec_decode_num_draft_tokens_total{model_name=\"tiny\"} 40\n");
    assert_has(b.data, "sluice:spec_decode_num_accepted_tokens_total{model_name=\"tiny\"} 25\n");
    assert_has(b.data, "# TYPE sluice:max_num_batched_tokens gauge\nsluice:max_num_batched_tokens{model_name=\"tiny\"} 1024\n");
    assert_has(b.data, "sluice:batch_timeout_ms{model_name=\"tiny\"} 12.5\n");
    assert_has(b.data, "sluice:adaptive_changes_total{model_name=\"tiny\"} 3\n");
    srv_buf_free(&b);
    /* while loading: no engine series, the server's own still there */
    assert_int_equal(srv_metrics_format(m, NULL, &b), SL_OK);
    assert_null(strstr(b.data, "num_requests_running"));
    assert_has(b.data, "sluice:time_to_first_token_seconds_count{model_name=\"tiny\"} 0\n");
    srv_buf_free(&b);
    srv_metrics_free(m);
}

static void test_histograms_from_results(void **state)
{
    (void)state;
    srv_metrics_t *m = srv_metrics_create("tiny");
    double times[3] = {10.2, 10.24, 10.44}; /* ITL 0.04 and 0.2 */
    sluice_sample smp = {.n_ids = 3, .finish_reason = SLUICE_FINISH_LENGTH, .token_times = times};
    sluice_result r = {.n_samples = 1, .samples = &smp, .t_arrival = 10.0, .t_first_scheduled = 10.001,
                       .t_first_token = 10.2, .t_finish = 10.45};
    srv_metrics_observe(m, &r);
    r.t_first_token = -1; /* a request canceled before its first token: no TTFT sample */
    smp.finish_reason = SLUICE_FINISH_ABORT;
    smp.n_ids = 0;
    srv_metrics_observe(m, &r);
    srv_metrics_reject(m, SRV_REJECT_QUEUE_FULL);
    srv_buf_t b = srv_buf_make(0);
    assert_int_equal(srv_metrics_format(m, NULL, &b), SL_OK);
    assert_has(b.data, "# TYPE sluice:time_to_first_token_seconds histogram\n");
    assert_has(b.data, "sluice:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.15\"} 0\n");
    assert_has(b.data, "sluice:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.25\"} 1\n");
    assert_has(b.data, "sluice:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"} 1\n");
    assert_has(b.data, "sluice:time_to_first_token_seconds_count{model_name=\"tiny\"} 1\n");
    assert_has(b.data, "sluice:inter_token_latency_seconds_bucket{model_name=\"tiny\",le=\"0.05\"} 1\n");
    assert_has(b.data, "sluice:inter_token_latency_seconds_bucket{model_name=\"tiny\",le=\"0.25\"} 2\n");
    assert_has(b.data, "sluice:inter_token_latency_seconds_count{model_name=\"tiny\"} 2\n");
    assert_has(b.data, "sluice:e2e_request_latency_seconds_count{model_name=\"tiny\"} 2\n");
    assert_has(b.data, "sluice:request_queue_time_seconds_bucket{model_name=\"tiny\",le=\"0.001\"} 2\n");
    assert_has(b.data, "sluice:request_success_total{model_name=\"tiny\",finished_reason=\"length\"} 1\n");
    assert_has(b.data, "sluice:request_success_total{model_name=\"tiny\",finished_reason=\"abort\"} 1\n");
    assert_has(b.data, "sluice:request_rejected_total{model_name=\"tiny\",reason=\"queue_full\"} 1\n");
    srv_buf_free(&b);
    srv_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_series),
        cmocka_unit_test(test_histograms_from_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
