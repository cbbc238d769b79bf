/* test_continuous.c — CONTINUOUS: token budget, chunked prefill, decodes first, preemption, drafts. */
#include "helpers.h"

static void test_continuous_splits_budget_decodes_first_then_chunks(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.max_num_batched_tokens = 16;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 10), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 0, 4, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_tokens, 8);
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(submit_len(s, 3, 0, 1, 40, 2), SL_OK);
    const int chunk[] = {14, 14, 12};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(plan(s, 1 + i, &step), SCHED_PLAN_STEP);
        assert_int_equal(step.n_seqs, 3);
        /* the two decodes come first, the prompt chunk gets the rest of the budget */
        assert_int_equal(step.seqs[0].req_id, 1);
        assert_int_equal(step.seqs[1].req_id, 2);
        assert_false(step.seqs[0].is_prefill);
        assert_int_equal(step.seqs[0].n_tokens, 1);
        assert_int_equal(step.n_decode_seqs, 2);
        const sched_seq_step_t *q = &step.seqs[2];
        assert_int_equal(q->req_id, 3);
        assert_true(q->is_prefill);
        assert_int_equal(q->n_tokens, chunk[i]);
        assert_int_equal(q->context_len, 14 * i);
        assert_int_equal(q->sample, i == 2);
        assert_int_equal(q->n_blocks, (14 * i + chunk[i] + 3) / 4);
        assert_int_equal(step.n_prefill_tokens, chunk[i]);
        assert_true(step.n_tokens <= 16);
        commit_step(s, &step, 1 + i, NULL, 0);
        assert_invariants(s);
    }
    /* the next step decodes all three */
    assert_int_equal(plan(s, 4, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_decode_seqs, 3);
    assert_int_equal(seq_of(&step, 3)->context_len, 40);
    commit_step(s, &step, 4, NULL, 0);
    sched_free(s);
}

static void test_continuous_without_chunking_prompt_waits_for_budget(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.enable_chunked_prefill = false;
    c.max_sequence_length = 64;
    c.max_num_batched_tokens = 64;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 3), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 0, 4, 3), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(submit_len(s, 3, 0, 1, 63, 1), SL_OK); /* 63 > 64 - 2 decodes */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
        assert_int_equal(step.n_seqs, 2);
        assert_null(seq_of(&step, 3));
        commit_step(s, &step, 1, NULL, 0);
    }
    assert_int_equal(plan(s, 2, &step), SCHED_PLAN_STEP); /* 1 and 2 are done: the whole prompt */
    assert_int_equal(step.n_seqs, 1);
    assert_int_equal(step.seqs[0].n_tokens, 63);
    commit_step(s, &step, 2, NULL, 0);
    sched_free(s);
}

static void test_continuous_preempts_least_urgent_latest_and_recomputes(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.num_blocks = 6; /* 24 slots: three 8-token prompts fill it */
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0.0, 8, 8), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 1.0, 8, 8), SL_OK);
    assert_int_equal(submit_len(s, 3, 1, 0.5, 8, 8), SL_OK); /* least urgent, though not the latest */
    sched_step_t step;
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 3);
    commit_step(s, &step, 1, NULL, 0);
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.free_blocks, 0);
    /* 1 needs a fifth token slot block: 3 is preempted for it, 2 takes the freed spare */
    assert_int_equal(plan(s, 2, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_preempted, 1);
    assert_int_equal(step.n_seqs, 2);
    assert_non_null(seq_of(&step, 1));
    assert_non_null(seq_of(&step, 2));
    sched_req_state_t rs;
    assert_int_equal(sched_request_state(s, 3, &rs), SL_OK);
    assert_int_equal(rs, SCHED_WAITING);
    assert_invariants(s);
    commit_step(s, &step, 2, NULL, 0);
    /* run to the end; 3 comes back as one prefill of prompt + its one output token */
    bool recomputed = false;
    for (int i = 0; i < 100 && plan(s, 3 + i, &step) == SCHED_PLAN_STEP; i++) {
        const sched_seq_step_t *q = seq_of(&step, 3);
        if (q && !recomputed) {
            assert_true(q->is_prefill && q->sample);
            assert_int_equal(q->context_len, 0);
            assert_int_equal(q->n_tokens, 9);
            recomputed = true;
        }
        commit_step(s, &step, 3 + i, NULL, 0);
        assert_invariants(s);
    }
    assert_true(recomputed);
    sched_done_t d[3];
    assert_int_equal(sched_drain_done(s, d, 3), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d[i].output_len, 8);
        assert_int_equal(d[i].reason, SCHED_FINISH_LENGTH);
        if (d[i].id == 3) {
            assert_true(d[i].preemptions >= 1);
            assert_true(d[i].computed_tokens > 8 + 7);
        }
    }
    sched_get_stats(s, &st);
    assert_true(st.preemptions >= 1);
    assert_int_equal(st.free_blocks + st.cached_blocks, 6);
    sched_free(s);
}

static void test_continuous_speculation_reserves_drafts_and_trims(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.num_speculative_tokens = 3;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.seqs[0].n_draft, 0); /* a prefill has no drafts */
    commit_step(s, &step, 0, NULL, 0);
    /* context before, drafts, accepted, then blocks held after the commit */
    const int ctx[] = {4, 7, 8, 12}, draft[] = {3, 3, 3, 0}, acc[] = {2, 0, 3, 0}, blocks_after[] = {2, 2, 3, 0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(plan(s, 1 + i, &step), SCHED_PLAN_STEP);
        const sched_seq_step_t *q = &step.seqs[0];
        assert_int_equal(q->context_len, ctx[i]);
        assert_int_equal(q->n_draft, draft[i]);
        assert_int_equal(q->n_tokens, 1 + draft[i]);
        assert_int_equal(q->n_blocks, (ctx[i] + 1 + draft[i] + 3) / 4);
        int a = acc[i];
        commit_step(s, &step, 1 + i, &a, 0);
        assert_invariants(s);
        sched_stats_t st;
        sched_get_stats(s, &st);
        assert_int_equal(st.used_blocks, blocks_after[i]);
    }
    sched_done_t d;
    assert_int_equal(sched_drain_done(s, &d, 1), 1);
    assert_int_equal(d.output_len, 10);
    sched_free(s);
}

/* With speculative_disable_by_batch_size 3: two running decodes get their drafts, three get none;
 * when one finishes, drafts come back. */
static void test_continuous_speculation_off_for_large_batches(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    c.num_speculative_tokens = 2;
    c.speculative_disable_by_batch_size = 3;
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 10), SL_OK);
    assert_int_equal(submit_len(s, 2, 0, 0, 4, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP); /* both prompts */
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(step.seqs[i].n_draft, 2);
    commit_step(s, &step, 1, NULL, 0);
    assert_int_equal(submit_len(s, 3, 0, 2, 4, 2), SL_OK);
    assert_int_equal(plan(s, 2, &step), SCHED_PLAN_STEP); /* 2 decodes with drafts + the new prompt */
    assert_int_equal(step.n_seqs, 3);
    assert_int_equal(step.seqs[0].n_draft + step.seqs[1].n_draft, 4);
    commit_step(s, &step, 2, NULL, 0);
    assert_int_equal(plan(s, 3, &step), SCHED_PLAN_STEP); /* 3 running: no drafts */
    assert_int_equal(step.n_seqs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(step.seqs[i].n_draft, 0);
        assert_int_equal(step.seqs[i].n_tokens, 1);
    }
    commit_step(s, &step, 3, NULL, 0); /* request 3 reaches its 2 tokens and leaves */
    assert_int_equal(plan(s, 4, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(step.seqs[i].n_draft, 2);
    commit_step(s, &step, 4, NULL, 0);
    assert_invariants(s);
    sched_free(s);
}

static void test_continuous_eos_finishes_early(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    assert_int_equal(submit_len(s, 1, 0, 0, 4, 10), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    commit_step(s, &step, 0, NULL, 1);
    sched_done_t d;
    assert_int_equal(sched_drain_done(s, &d, 1), 1);
    assert_int_equal(d.reason, SCHED_FINISH_EOS);
    assert_int_equal(d.output_len, 1);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continuous_splits_budget_decodes_first_then_chunks),
        cmocka_unit_test(test_continuous_without_chunking_prompt_waits_for_budget),
        cmocka_unit_test(test_continuous_preempts_least_urgent_latest_and_recomputes),
        cmocka_unit_test(test_continuous_speculation_reserves_drafts_and_trims),
        cmocka_unit_test(test_continuous_speculation_off_for_large_batches),
        cmocka_unit_test(test_continuous_eos_finishes_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
