/* test_static.c — static strategies: NAIVE timeout and padding, BUCKETED lengths, MEMORY_AWARE. */
#include "helpers.h"

static void test_naive_waits_for_timeout_then_pads_to_longest(void **state)
{
    sched_config_t c = small_config(SCHED_NAIVE); /* max_batch_size 4, timeout 100 ms */
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0.00, 5, 2), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 0.01, 9, 4), SL_OK);
    assert_int_equal(submit_len(s, 3, 0, 0.02, 3, 1), SL_OK);
    sched_step_t step;
    double wake = 0;
    assert_int_equal(sched_plan(s, 0.05, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(wake == 0.0 + 100 / 1000.0); /* the oldest arrival + the timeout */
    assert_invariants(s);
    assert_int_equal(sched_plan(s, wake, &step, &wake), SCHED_PLAN_STEP);
    /* one prefill of the whole batch, every prompt padded to 9 */
    assert_int_equal(step.n_seqs, 3);
    assert_int_equal(step.n_tokens, 17);
    assert_int_equal(step.n_prefill_tokens, 17);
    assert_int_equal(seq_of(&step, 1)->padded_tokens, 4);
    assert_int_equal(seq_of(&step, 2)->padded_tokens, 0);
    assert_int_equal(seq_of(&step, 3)->padded_tokens, 6);
    assert_int_equal(step.n_padded_tokens, 10);
    commit_step(s, &step, 0.2, NULL, 0); /* 3 is done (max_new 1), keeps its slot */
    assert_int_equal(submit_len(s, 4, 0, 0.15, 2, 1), SL_OK);
    /* decodes: finished slots cost one padded token each; the newcomer waits for the next batch */
    const int want_seqs[] = {2, 1, 1}, want_pad[] = {1, 2, 2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sched_plan(s, 0.3, &step, &wake), SCHED_PLAN_STEP);
        assert_int_equal(step.n_seqs, want_seqs[i]);
        assert_int_equal(step.n_decode_seqs, want_seqs[i]);
        assert_null(seq_of(&step, 4));
        assert_int_equal(step.n_padded_tokens, want_pad[i]);
        assert_int_equal(step.seqs[0].padded_tokens, want_pad[i]);
        commit_step(s, &step, 0.3, NULL, 0);
        assert_invariants(s);
    }
    /* the batch has ended; 4 has waited past its timeout (0.15 + 0.1 <= 0.3) */
    assert_int_equal(sched_plan(s, 0.3, &step, &wake), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 1);
    assert_int_equal(step.seqs[0].req_id, 4);
    assert_int_equal(step.n_padded_tokens, 0);
    commit_step(s, &step, 0.4, NULL, 0);
    assert_int_equal(sched_plan(s, 0.4, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(isinf(wake));
    sched_done_t d[4];
    assert_int_equal(sched_drain_done(s, d, 4), 4);
    assert_int_equal(d[0].id, 3);
    assert_int_equal(d[1].id, 1);
    assert_int_equal(d[2].id, 2);
    assert_int_equal(d[2].output_len, 4);
    sched_free(s);
}

static void test_naive_full_batch_runs_without_waiting(void **state)
{
    sched_config_t c = small_config(SCHED_NAIVE);
    sched_t *s = make_sched(&c);
    for (int i = 1; i <= 5; i++)
        assert_int_equal(submit_len(s, (uint64_t)i, 0, 0, 4, 1), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 4); /* max_batch_size */
    commit_step(s, &step, 0, NULL, 0);
    double wake;
    assert_int_equal(sched_plan(s, 0.01, &step, &wake), SCHED_PLAN_IDLE); /* 5 alone: waits */
    assert_true(wake == 0.1);
    sched_free(s);
}

static void test_naive_batch_member_without_blocks_waits_for_next_batch(void **state)
{
    sched_config_t c = small_config(SCHED_NAIVE);
    c.num_blocks = 8; /* 32 slots; each request needs 12 tokens = 3 blocks */
    sched_t *s = make_sched(&c);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(submit_len(s, (uint64_t)i, 0, 0, 8, 4), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2);
    assert_int_equal(step.seqs[1].req_id, 2);
    commit_step(s, &step, 1, NULL, 0);
    assert_int_equal(run_until_idle(s, 1, 20), 3 /* rest of batch 1 */ + 4 /* batch 2 */);
    sched_done_t d[3];
    assert_int_equal(sched_drain_done(s, d, 3), 3);
    assert_int_equal(d[2].id, 3);
    assert_int_equal(d[2].output_len, 4);
    sched_free(s);
}

static void test_bucketed_batches_one_length_bucket(void **state)
{
    sched_config_t c = small_config(SCHED_BUCKETED);
    c.bucket_size = 8; /* buckets 1..8, 9..16, ... */
    sched_t *s = make_sched(&c);
    const int len[] = {3, 12, 7, 15, 9, 16};
    for (int i = 0; i < 6; i++)
        assert_int_equal(submit_len(s, (uint64_t)i + 1, 0, 0.01 * i, len[i], 1), SL_OK);
    sched_step_t step;
    double wake;
    /* the oldest waiter (1) is in bucket 1..8, which is not full: wait for its timeout */
    assert_int_equal(sched_plan(s, 0.06, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(wake == 0.1);
    assert_int_equal(sched_plan(s, wake, &step, &wake), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2);
    assert_int_equal(seq_of(&step, 1)->padded_tokens, 4);
    assert_int_equal(seq_of(&step, 3)->padded_tokens, 0);
    commit_step(s, &step, 0.2, NULL, 0);
    /* then bucket 9..16, padded to 16 only */
    assert_int_equal(sched_plan(s, 0.2, &step, &wake), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 4);
    assert_int_equal(seq_of(&step, 2)->padded_tokens, 4);
    assert_int_equal(seq_of(&step, 4)->padded_tokens, 1);
    assert_int_equal(seq_of(&step, 5)->padded_tokens, 7);
    assert_int_equal(seq_of(&step, 6)->padded_tokens, 0);
    assert_int_equal(step.n_padded_tokens, 12); /* NAIVE would pad these six to 16: 54 */
    commit_step(s, &step, 0.3, NULL, 0);
    assert_invariants(s);
    sched_free(s);
}

/* Bytes the estimator charges a static batch (what MEMORY_AWARE must keep under the limit). */
static double batch_bytes(const sched_model_shape_t *m, int n, int64_t tokens, int max_prompt)
{
    return (double)sched_mem_kv_bytes_per_token(m) * (double)tokens +
           (double)sched_mem_activation_bytes(m, (int64_t)n * max_prompt, n);
}

static void test_memory_aware_never_over_admits(void **state)
{
    sched_config_t c = small_config(SCHED_MEMORY_AWARE);
    c.max_batch_size = 8;
    c.num_blocks = 256;
    /* llama2-7b: 0.5 MiB of KV per token; a member of 10 + 10 tokens costs 10 MiB of KV and
     * 10 * 93,184 + 128,000 bytes (~1.01 MiB) of workspace: three fit in 40 MiB, four do not */
    c.memory_limit_mb = 40;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 100, 0, 0, 70, 10), SL_ETOO_LONG); /* 40 MiB of KV alone */
    for (int i = 1; i <= 7; i++)
        assert_int_equal(submit_len(s, (uint64_t)i, 0, 0, 10, 10), SL_OK);
    sched_step_t step;
    double wake;
    const int want[] = {3, 3};
    for (int b = 0; b < 2; b++) {
        assert_int_equal(sched_plan(s, 0, &step, &wake), SCHED_PLAN_STEP); /* memory-full: no wait */
        assert_int_equal(step.n_seqs, want[b]);
        assert_true(batch_bytes(&c.model, step.n_seqs, 20 * step.n_seqs, 10) <= 40 * 1048576.0);
        assert_true(batch_bytes(&c.model, step.n_seqs + 1, 20 * (step.n_seqs + 1), 10) > 40 * 1048576.0);
        commit_step(s, &step, 0, NULL, 0);
        assert_int_equal(run_until_idle(s, 0, 9), 9); /* the batch's nine decodes */
    }
    /* the last one alone is not full: it waits for its timeout */
    assert_int_equal(sched_plan(s, 0, &step, &wake), SCHED_PLAN_IDLE);
    assert_true(wake == 0.1);
    sched_free(s);
}

static void test_memory_aware_respects_max_total_tokens(void **state)
{
    sched_config_t c = small_config(SCHED_MEMORY_AWARE);
    c.max_batch_size = 8;
    c.memory_limit_mb = 1 << 20;
    c.max_total_tokens = 50;
    sched_t *s = make_sched(&c);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(submit_len(s, (uint64_t)i, 0, 0, 10, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2); /* 40 tokens; a third makes 60 > 50 */
    sched_free(s);
}

static void test_static_strategies_refuse_fork(void **state)
{
    sched_config_t c = small_config(SCHED_NAIVE);
    sched_t *s = make_sched(&c);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(submit_len(s, (uint64_t)i, 0, 0, 4, 3), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(sched_fork(s, 1, 9, NULL, 0), SL_EUNSUPPORTED);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_naive_waits_for_timeout_then_pads_to_longest),
        cmocka_unit_test(test_naive_full_batch_runs_without_waiting),
        cmocka_unit_test(test_naive_batch_member_without_blocks_waits_for_next_batch),
        cmocka_unit_test(test_bucketed_batches_one_length_bucket),
        cmocka_unit_test(test_memory_aware_never_over_admits),
        cmocka_unit_test(test_memory_aware_respects_max_total_tokens),
        cmocka_unit_test(test_static_strategies_refuse_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
