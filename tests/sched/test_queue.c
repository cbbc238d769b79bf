/* test_queue.c — request queue order, bounds, validation, abort and done records. */
#include "helpers.h"

static void test_queue_orders_by_priority_then_arrival(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.max_num_seqs = 1; /* one admission per step shows the order */
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 5, 0.0, 4, 1), SL_OK);
    assert_int_equal(submit_len(s, 2, 1, 2.0, 4, 1), SL_OK);
    assert_int_equal(submit_len(s, 3, 1, 1.0, 4, 1), SL_OK);
    assert_int_equal(submit_len(s, 4, 5, 0.0, 4, 1), SL_OK); /* same key as 1: submit order */
    assert_int_equal(submit_len(s, 5, 0, 3.0, 4, 1), SL_OK);
    const uint64_t want[] = {5, 3, 2, 1, 4};
    for (int i = 0; i < 5; i++) {
        sched_step_t step;
        assert_int_equal(plan(s, 10.0, &step), SCHED_PLAN_STEP);
        assert_int_equal(step.n_seqs, 1);
        assert_int_equal(step.seqs[0].req_id, want[i]);
        commit_step(s, &step, 10.0, NULL, 0);
        assert_invariants(s);
    }
    sched_done_t done[8];
    assert_int_equal(sched_drain_done(s, done, 8), 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(done[i].id, want[i]);
        assert_int_equal(done[i].reason, SCHED_FINISH_LENGTH);
        assert_int_equal(done[i].output_len, 1);
    }
    sched_free(s);
}

static void test_queue_bounds_refuse_with_queue_full(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.max_waiting_requests = 2;
    c.max_waiting_tokens = 10;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 1), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 0, 7, 1), SL_EQUEUE_FULL); /* 4 + 7 > 10 tokens */
    assert_int_equal(submit_len(s, 3, 0, 0, 6, 1), SL_OK);          /* exactly 10 */
    assert_int_equal(submit_len(s, 4, 0, 0, 1, 1), SL_EQUEUE_FULL); /* 2 requests already */
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.waiting, 2);
    assert_int_equal(st.waiting_prompt_tokens, 10);
    /* admitting frees the queue bound */
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(submit_len(s, 4, 0, 0, 1, 1), SL_OK);
    assert_invariants(s);
    sched_free(s);
}

static void test_submit_refuses_bad_and_too_long_requests(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.num_blocks = 8; /* 32 token slots */
    c.max_sequence_length = 40;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 0, 1), SL_EINVAL);
    assert_int_equal(submit_len(s, 1, 0, 0, 1, 0), SL_EINVAL);
    assert_int_equal(submit_len(s, 1, 0, NAN, 1, 1), SL_EINVAL);
    assert_int_equal(submit_len(s, 1, 0, 0, 30, 11), SL_ETOO_LONG); /* 41 > max_sequence_length */
    assert_int_equal(submit_len(s, 1, 0, 0, 30, 3), SL_ETOO_LONG);  /* 33 tokens = 9 blocks > 8 */
    assert_int_equal(submit_len(s, 1, 0, 0, 30, 2), SL_OK);         /* 32 tokens = 8 blocks */
    assert_int_equal(submit_len(s, 1, 0, 0, 3, 2), SL_EINVAL);      /* duplicate live id */
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.waiting, 1);
    sched_free(s);
}

static void test_abort_waiting_running_and_in_flight(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.max_num_seqs = 2;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 8, 10), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 1, 8, 10), SL_OK);
    assert_int_equal(submit_len(s, 3, 0, 2, 8, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 5, &step), SCHED_PLAN_STEP); /* 1 and 2 run, 3 waits */
    assert_int_equal(step.n_seqs, 2);
    sched_req_state_t st;
    /* waiting: gone at once */
    assert_int_equal(sched_abort(s, 3, 5.5), SL_OK);
    assert_int_equal(sched_request_state(s, 3, &st), SL_ENOTFOUND);
    /* in flight: reported aborted now, released at the commit */
    assert_int_equal(sched_abort(s, 1, 5.5), SL_OK);
    assert_int_equal(sched_request_state(s, 1, &st), SL_OK);
    assert_int_equal(st, SCHED_ABORTED);
    assert_int_equal(sched_abort(s, 1, 5.5), SL_ENOTFOUND);
    assert_invariants(s);
    commit_step(s, &step, 6, NULL, 0);
    assert_int_equal(sched_request_state(s, 1, &st), SL_ENOTFOUND);
    /* running between steps: freed at once */
    assert_int_equal(sched_request_state(s, 2, &st), SL_OK);
    assert_int_equal(st, SCHED_RUNNING);
    assert_int_equal(sched_abort(s, 2, 7), SL_OK);
    assert_int_equal(sched_abort(s, 99, 7), SL_ENOTFOUND);
    assert_invariants(s);
    sched_stats_t stats;
    sched_get_stats(s, &stats);
    assert_int_equal(stats.free_blocks + stats.cached_blocks, c.num_blocks);
    assert_int_equal(stats.aborted, 3);
    sched_done_t done[4];
    assert_int_equal(sched_drain_done(s, done, 4), 3);
    assert_int_equal(done[0].id, 3);
    assert_int_equal(done[1].id, 1);
    assert_int_equal(done[2].id, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(done[i].reason, SCHED_FINISH_ABORT);
    assert_true(done[0].first_scheduled < 0);
    assert_true(done[1].finished == 6.0);
    assert_int_equal(done[2].output_len, 1); /* its prefill sampled one token */
    /* the id is free again */
    assert_int_equal(submit_len(s, 1, 0, 8, 4, 1), SL_OK);
    sched_free(s);
}

static void test_plan_twice_and_stale_commit_are_refused(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 3), SL_OK);
    sched_step_t step, other;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(plan(s, 0, &other), SL_ESTATE);
    sched_seq_result_t bad = {.n_tokens = 2};
    sched_result_t r = {.n_seqs = 1, .seqs = &bad};
    assert_int_equal(sched_commit(s, &step, &r, 0), SL_EINVAL); /* one token sampled, not two */
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(sched_commit(s, &step, &r, 0), SL_ESTATE);
    assert_invariants(s);
    sched_free(s);
}

static void test_length_finish_stamps_timeline(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 1.0, 5, 3), SL_OK);
    sched_step_t step;
    double t = 2.0;
    while (plan(s, t, &step) == SCHED_PLAN_STEP) {
        commit_step(s, &step, t + 0.5, NULL, 0);
        t += 1.0;
    }
    sched_done_t d;
    assert_int_equal(sched_drain_done(s, &d, 1), 1);
    assert_int_equal(d.reason, SCHED_FINISH_LENGTH);
    assert_int_equal(d.output_len, 3);
    assert_int_equal(d.computed_tokens, 5 + 2); /* prompt, then two decodes */
    assert_true(d.arrival == 1.0 && d.first_scheduled == 2.0 && d.first_token == 2.5 && d.finished == 4.5);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_orders_by_priority_then_arrival),
        cmocka_unit_test(test_queue_bounds_refuse_with_queue_full),
        cmocka_unit_test(test_submit_refuses_bad_and_too_long_requests),
        cmocka_unit_test(test_abort_waiting_running_and_in_flight),
        cmocka_unit_test(test_plan_twice_and_stale_commit_are_refused),
        cmocka_unit_test(test_length_finish_stamps_timeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
