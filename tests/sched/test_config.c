/* test_config.c — defaults, the knob table, text setters and validation. */
#include "helpers.h"

static void test_config_defaults_are_documented_values(void **state)
{
    sched_config_t c = sched_config_default();
    assert_int_equal(c.strategy, SCHED_CONTINUOUS);
    assert_int_equal(c.max_batch_size, 32);
    assert_int_equal(c.max_sequence_length, 2048);
    assert_true(c.batch_timeout_ms == 50);
    assert_int_equal(c.bucket_size, 128);
    assert_true(c.memory_limit_mb == 4096);
    assert_int_equal(c.max_total_tokens, 32768);
    assert_int_equal(c.block_size, 16);
    assert_int_equal(c.max_num_batched_tokens, 2048);
    assert_int_equal(c.max_num_seqs, 256);
    assert_true(c.gpu_memory_utilization == 0.9);
    assert_string_equal(c.model.name, "llama2-7b");
    assert_int_equal(sched_config_validate(&c, NULL, 0), SL_OK);
}

static void test_config_set_parses_and_refuses_with_the_range(void **state)
{
    sched_config_t c = sched_config_default();
    char err[200];
    assert_int_equal(sched_config_set(&c, "max_num_seqs", "64", err, sizeof err), SL_OK);
    assert_int_equal(c.max_num_seqs, 64);
    assert_int_equal(sched_config_set(&c, "max-num-seqs", "0", err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "max_num_seqs: must be an integer in 1..65536, got '0'");
    assert_int_equal(c.max_num_seqs, 64);
    assert_int_equal(sched_config_set(&c, "max_num_seqs", "12x", err, sizeof err), SL_EINVAL);
    assert_int_equal(sched_config_set(&c, "strategy", "Memory-Aware", err, sizeof err), SL_OK);
    assert_int_equal(c.strategy, SCHED_MEMORY_AWARE);
    assert_int_equal(sched_config_set(&c, "strategy", "fifo", err, sizeof err), SL_EINVAL);
    assert_int_equal(sched_config_set(&c, "enable_prefix_caching", "off", err, sizeof err), SL_OK);
    assert_false(c.enable_prefix_caching);
    assert_int_equal(sched_config_set(&c, "gpu_memory_utilization", "1.5", err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "gpu_memory_utilization: must be a number in 0.01..1, got '1.5'");
    assert_int_equal(sched_config_set(&c, "model", "mistral-7b", err, sizeof err), SL_OK);
    assert_int_equal(c.model.max_context, 32768);
    assert_int_equal(sched_config_set(&c, "max_num_sequences", "1", err, sizeof err), SL_ENOTFOUND);
    assert_non_null(strstr(err, "max_num_sequences"));
}

static void test_config_knobs_round_trip_every_field(void **state)
{
    sched_config_t d = sched_config_default(), c = sched_config_default();
    memset(&c, 0, sizeof c);
    char buf[64], err[200];
    assert_int_equal(sched_knob_count(), 18);
    for (int i = 0; i < sched_knob_count(); i++) {
        const sched_knob_t *k = sched_knob_at(i);
        assert_int_equal(sched_config_get(&d, k->name, buf, sizeof buf), SL_OK);
        assert_int_equal(sched_config_set(&c, k->name, buf, err, sizeof err), SL_OK);
        assert_ptr_equal(sched_knob_find(k->name), k);
    }
    assert_null(sched_knob_at(18));
    assert_int_equal(memcmp(&c.model, &d.model, sizeof c.model), 0);
    assert_int_equal(c.max_waiting_requests, d.max_waiting_requests);
    assert_true(c.enable_chunked_prefill);
    assert_int_equal(sched_config_get(&d, "max_num_seqs", buf, 3), SL_EINVAL); /* "256" needs 4 */
}

static void test_config_validate_checks_cross_field_rules(void **state)
{
    sched_config_t c = sched_config_default();
    char err[200];
    c.enable_chunked_prefill = false;
    c.max_num_batched_tokens = 1024;
    assert_int_equal(sched_config_validate(&c, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "max_num_batched_tokens"));
    assert_null(sched_create(&c, err, sizeof err));
    c = sched_config_default();
    c.block_size = 0;
    assert_int_equal(sched_config_validate(&c, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "block_size: must be 1..4096, got 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_are_documented_values),
        cmocka_unit_test(test_config_set_parses_and_refuses_with_the_range),
        cmocka_unit_test(test_config_knobs_round_trip_every_field),
        cmocka_unit_test(test_config_validate_checks_cross_field_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
