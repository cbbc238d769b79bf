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
    assert_int_equal(sched_knob_count(), 19);
    for (int i = 0; i < sched_knob_count(); i++) {
        const sched_knob_t *k = sched_knob_at(i);
        assert_int_equal(sched_config_get(&d, k->name, buf, sizeof buf), SL_OK);
        assert_int_equal(sched_config_set(&c, k->name, buf, err, sizeof err), SL_OK);
        assert_ptr_equal(sched_knob_find(k->name), k);
    }
    assert_null(sched_knob_at(19));
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

static void test_config_get_prints_the_shortest_round_trip(void **state)
{
    sched_config_t c = sched_config_default();
    char buf[64];
    assert_int_equal(sched_config_get(&c, "gpu_memory_utilization", buf, sizeof buf), SL_OK);
    assert_string_equal(buf, "0.9");
    assert_int_equal(sched_config_get(&c, "batch_timeout_ms", buf, sizeof buf), SL_OK);
    assert_string_equal(buf, "50");
    c.batch_timeout_ms = 0.1 + 0.2; /* needs all 17 digits to read back */
    assert_int_equal(sched_config_get(&c, "batch_timeout_ms", buf, sizeof buf), SL_OK);
    sched_config_t d = sched_config_default();
    assert_int_equal(sched_config_set(&d, "batch_timeout_ms", buf, NULL, 0), SL_OK);
    assert_true(d.batch_timeout_ms == c.batch_timeout_ms);
}

static void test_update_config_changes_the_live_knobs_between_steps(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 200, 4), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_tokens, 64); /* the starting budget */
    sched_config_t n = c;
    n.max_num_batched_tokens = 128;
    char err[200] = "";
    assert_int_equal(sched_update_config(s, &n, err, sizeof err), SL_ESTATE); /* in flight */
    assert_int_equal(sched_config(s)->max_num_batched_tokens, 64);
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(sched_update_config(s, &n, err, sizeof err), SL_OK);
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_tokens, 128); /* the new budget from the next plan */
    commit_step(s, &step, 0, NULL, 0);
    assert_invariants(s);

    /* any other field is refused by name, and the scheduler keeps its config */
    sched_config_t bad = n;
    bad.max_num_seqs = 8;
    assert_int_equal(sched_update_config(s, &bad, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "max_num_seqs: cannot change on a running scheduler (live: batch_timeout_ms, "
                             "max_num_batched_tokens)");
    bad = n;
    sched_model_shape_builtin("mistral-7b", &bad.model);
    assert_int_equal(sched_update_config(s, &bad, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "model:"));
    bad = n;
    bad.max_num_batched_tokens = 0; /* out of range: validation's message */
    assert_int_equal(sched_update_config(s, &bad, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "max_num_batched_tokens: must be 1..1048576, got 0");
    assert_int_equal(sched_config(s)->max_num_batched_tokens, 128);
    assert_int_equal(sched_config(s)->max_num_seqs, 16);
    sched_free(s);
}

static void test_update_config_moves_a_static_batch_deadline(void **state)
{
    sched_config_t c = small_config(SCHED_NAIVE); /* timeout 100 ms, batches of 4 */
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 1.0, 8, 2), SL_OK);
    sched_step_t step;
    double wake = 0;
    assert_int_equal(sched_plan(s, 1.0, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(fabs(wake - 1.1) < 1e-9);
    sched_config_t n = c;
    n.batch_timeout_ms = 20;
    assert_int_equal(sched_update_config(s, &n, NULL, 0), SL_OK);
    assert_int_equal(sched_plan(s, 1.0, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(fabs(wake - 1.02) < 1e-9);
    assert_int_equal(sched_plan(s, 1.02, &step, &wake), SCHED_PLAN_STEP); /* the partial batch runs */
    commit_step(s, &step, 1.02, NULL, 0);
    assert_invariants(s);
    sched_free(s);
}

static void test_knob_table_marks_exactly_the_live_knobs(void **state)
{
    int live = 0;
    for (int i = 0; i < sched_knob_count(); i++)
        live += sched_knob_at(i)->live;
    assert_int_equal(live, 2);
    assert_true(sched_knob_find("batch_timeout_ms")->live);
    assert_true(sched_knob_find("max_num_batched_tokens")->live);
    sched_config_t a = sched_config_default(), b = a;
    b.batch_timeout_ms = 5, b.max_num_batched_tokens = 512;
    assert_null(sched_config_fixed_change(&a, &b));
    b.enable_prefix_caching = false;
    assert_string_equal(sched_config_fixed_change(&a, &b), "enable_prefix_caching");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_are_documented_values),
        cmocka_unit_test(test_config_set_parses_and_refuses_with_the_range),
        cmocka_unit_test(test_config_knobs_round_trip_every_field),
        cmocka_unit_test(test_config_validate_checks_cross_field_rules),
        cmocka_unit_test(test_config_get_prints_the_shortest_round_trip),
        cmocka_unit_test(test_update_config_changes_the_live_knobs_between_steps),
        cmocka_unit_test(test_update_config_moves_a_static_batch_deadline),
        cmocka_unit_test(test_knob_table_marks_exactly_the_live_knobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
