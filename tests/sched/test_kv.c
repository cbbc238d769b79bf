/* test_kv.c — KV block manager: reference counts, prefix reuse, LRU eviction, copy-on-write. */
#include "helpers.h"
#include "sched/kv.h"

static void fill(int32_t *t, int n, int32_t first)
{
    for (int i = 0; i < n; i++)
        t[i] = first + i;
}

static void test_kv_evicts_least_recently_used_cached_block_first(void **state)
{
    sched_kv_t kv;
    int32_t mark[6];
    assert_int_equal(kv_init(&kv, 6, 4, true), SL_OK);
    int32_t blk[3], tok[3][4];
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        blk[i] = kv_alloc(&kv);
        fill(tok[i], 4, 100 * i);
        h[i] = kv_chain_hash(KV_HASH_ROOT, tok[i], 4);
        assert_true(kv_register(&kv, blk[i], h[i], KV_HASH_ROOT, tok[i]));
    }
    assert_int_equal(blk[0], 0);
    assert_int_equal(blk[2], 2);
    /* released in the order 1, 0, 2: that is the LRU order */
    kv_unref(&kv, blk[1]);
    kv_unref(&kv, blk[0]);
    kv_unref(&kv, blk[2]);
    assert_int_equal(kv.n_lru, 3);
    assert_int_equal(kv_check(&kv, mark, NULL, 0), SL_OK);
    /* the three free blocks go first, no eviction */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kv_alloc(&kv), 3 + i);
    assert_int_equal(kv.evictions, 0);
    /* then the least recently used: block 1 */
    assert_int_equal(kv_alloc(&kv), blk[1]);
    assert_int_equal(kv.evictions, 1);
    assert_int_equal(kv_lookup(&kv, h[1], KV_HASH_ROOT, tok[1]), -1);
    assert_int_equal(kv_lookup(&kv, h[0], KV_HASH_ROOT, tok[0]), blk[0]);
    /* a hit on block 0 takes it off the LRU: block 2 is evicted next, then nothing is left */
    kv_ref(&kv, blk[0]);
    assert_int_equal(kv_alloc(&kv), blk[2]);
    assert_int_equal(kv_alloc(&kv), -1);
    assert_int_equal(kv.evictions, 2);
    assert_int_equal(kv_check(&kv, mark, NULL, 0), SL_OK);
    kv_destroy(&kv);
}

static void test_kv_lookup_verifies_tokens_and_parent(void **state)
{
    sched_kv_t kv;
    assert_int_equal(kv_init(&kv, 4, 4, true), SL_OK);
    int32_t t[4] = {1, 2, 3, 4}, other[4] = {1, 2, 3, 5};
    uint64_t h = kv_chain_hash(KV_HASH_ROOT, t, 4);
    assert_true(h != kv_chain_hash(KV_HASH_ROOT, other, 4));
    assert_true(h != kv_chain_hash(h, t, 4)); /* the parent is part of the key */
    int32_t b = kv_alloc(&kv);
    assert_true(kv_register(&kv, b, h, KV_HASH_ROOT, t));
    assert_false(kv_register(&kv, kv_alloc(&kv), h, KV_HASH_ROOT, t)); /* content already indexed */
    assert_int_equal(kv_lookup(&kv, h, KV_HASH_ROOT, t), b);
    /* a forged hash collision: same hash, other tokens or other parent, is a miss */
    assert_int_equal(kv_lookup(&kv, h, KV_HASH_ROOT, other), -1);
    assert_int_equal(kv_lookup(&kv, h, 42, t), -1);
    kv_destroy(&kv);
}

static void test_kv_prefix_reuse_across_requests(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    int32_t a[10], b[11];
    fill(a, 10, 1);
    fill(b, 8, 1);
    fill(b + 8, 3, 500);
    assert_int_equal(submit_tokens(s, 1, 0, a, 10, 1), SL_OK);
    run_until_idle(s, 0, 10);
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.cached_blocks, 2); /* two full blocks of a; the partial one was freed */
    assert_int_equal(st.used_blocks, 0);
    assert_int_equal(submit_tokens(s, 2, 1, b, 11, 1), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.seqs[0].context_len, 8);
    assert_int_equal(step.seqs[0].n_tokens, 3);
    assert_true(step.seqs[0].is_prefill && step.seqs[0].sample);
    assert_int_equal(step.seqs[0].tokens[0], 500);
    assert_int_equal(step.seqs[0].block_table[0], 0);
    assert_int_equal(step.seqs[0].block_table[1], 1);
    assert_int_equal(step.n_prefill_tokens, 3);
    commit_step(s, &step, 1, NULL, 0);
    /* the same 8 tokens as a whole prompt: the last token is always computed, so one block hits */
    assert_int_equal(submit_tokens(s, 3, 2, a, 8, 1), SL_OK);
    /* a length-only request of the same length never touches the cache */
    assert_int_equal(submit_len(s, 4, 0, 2, 10, 1), SL_OK);
    assert_int_equal(plan(s, 2, &step), SCHED_PLAN_STEP);
    assert_int_equal(seq_of(&step, 3)->context_len, 4);
    assert_int_equal(seq_of(&step, 4)->context_len, 0);
    commit_step(s, &step, 2, NULL, 0);
    sched_get_stats(s, &st);
    assert_int_equal(st.prefix_queries, 3);
    assert_int_equal(st.prefix_query_tokens, 10 + 11 + 8);
    assert_int_equal(st.prefix_hit_tokens, 8 + 4);
    sched_done_t d[4];
    assert_int_equal(sched_drain_done(s, d, 4), 4);
    assert_int_equal(d[1].cached_prompt_len, 8);
    assert_int_equal(d[1].computed_tokens, 3);
    assert_int_equal(d[2].cached_prompt_len, 4);
    assert_invariants(s);
    sched_free(s);
}

static void test_kv_generated_blocks_become_cacheable(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    int32_t p[9];
    fill(p, 6, 1);
    p[6] = p[7] = 7000; /* what commit_step generates */
    p[8] = 9;
    assert_int_equal(submit_tokens(s, 1, 0, p, 6, 4), SL_OK);
    run_until_idle(s, 0, 10); /* KV ends at 6 + 3 tokens: blocks [1..4], [5, 6, 7000, 7000] full */
    assert_int_equal(submit_tokens(s, 2, 1, p, 9, 1), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.seqs[0].context_len, 8);
    assert_int_equal(step.seqs[0].n_tokens, 1);
    commit_step(s, &step, 1, NULL, 0);
    assert_invariants(s);
    sched_free(s);
}

static void test_kv_fork_shares_blocks_and_copies_partial_on_write(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    int32_t p[6];
    fill(p, 6, 1);
    assert_int_equal(submit_tokens(s, 1, 0, p, 6, 5), SL_OK);
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    assert_int_equal(sched_fork(s, 1, 2, NULL, 0), SL_ESTATE); /* step in flight */
    commit_step(s, &step, 0, NULL, 0);
    assert_int_equal(sched_fork(s, 1, 2, NULL, 0), SL_OK);
    assert_int_equal(sched_fork(s, 1, 2, NULL, 0), SL_EINVAL);
    assert_int_equal(sched_fork(s, 9, 3, NULL, 0), SL_ENOTFOUND);
    assert_invariants(s); /* refcounts: blocks 0 and 1 held twice */
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.used_blocks, 2);
    assert_int_equal(st.running, 2);
    /* both decode at context 6, inside shared block 1: the parent writes first and copies */
    assert_int_equal(plan(s, 1, &step), SCHED_PLAN_STEP);
    assert_int_equal(step.n_seqs, 2);
    assert_int_equal(step.n_copies, 1);
    assert_int_equal(step.copies[0].src, 1);
    assert_int_equal(step.copies[0].dst, 2);
    const sched_seq_step_t *parent = seq_of(&step, 1), *child = seq_of(&step, 2);
    assert_int_equal(parent->block_table[0], 0);
    assert_int_equal(child->block_table[0], 0);
    assert_int_equal(parent->block_table[1], 2);
    assert_int_equal(child->block_table[1], 1);
    assert_int_equal(child->context_len, 6);
    commit_step(s, &step, 1, NULL, 0);
    assert_invariants(s);
    sched_get_stats(s, &st);
    assert_int_equal(st.used_blocks, 3);
    run_until_idle(s, 2, 20);
    sched_done_t d[2];
    assert_int_equal(sched_drain_done(s, d, 2), 2);
    assert_int_equal(d[0].output_len, 5);
    assert_int_equal(d[1].output_len, 5);
    sched_get_stats(s, &st);
    assert_int_equal(st.used_blocks, 0);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_evicts_least_recently_used_cached_block_first),
        cmocka_unit_test(test_kv_lookup_verifies_tokens_and_parent),
        cmocka_unit_test(test_kv_prefix_reuse_across_requests),
        cmocka_unit_test(test_kv_generated_blocks_become_cacheable),
        cmocka_unit_test(test_kv_fork_shares_blocks_and_copies_partial_on_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
