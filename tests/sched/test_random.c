/* test_random.c — seeded random operation sequences, allocation failure injection, scale. */
#include "helpers.h"

/* xorshift64*: the test's own generator, so a seed replays the same sequence everywhere */
static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(2685821657736338717);
}
static int rng_below(uint64_t *x, int n) { return (int)(rng_next(x) % (uint64_t)n); }

typedef struct fuzz {
    sched_t *s;
    uint64_t rng, next_id;
    double now;
    bool in_flight;
    sched_step_t step;
    int32_t prompt[200];
} fuzz_t;

static void fuzz_submit(fuzz_t *f)
{
    int len = 1 + rng_below(&f->rng, 60), max_new = 1 + rng_below(&f->rng, 30);
    /* shared prefixes from a few templates make the prefix cache hit */
    int tmpl = rng_below(&f->rng, 4);
    for (int i = 0; i < len; i++)
        f->prompt[i] = i < 24 ? tmpl * 100 + i : rng_below(&f->rng, 1000);
    sched_request_t r = {.id = ++f->next_id, .priority = rng_below(&f->rng, 3), .arrival = f->now,
                         .prompt = rng_below(&f->rng, 4) ? f->prompt : NULL, .prompt_len = len,
                         .max_new_tokens = max_new};
    int rc = sched_submit(f->s, &r, f->now);
    assert_true(rc == SL_OK || rc == SL_EQUEUE_FULL || rc == SL_ETOO_LONG);
}

static void fuzz_commit(fuzz_t *f)
{
    sched_seq_result_t res[64];
    int32_t toks[64][8];
    assert_true(f->step.n_seqs <= 64);
    for (int i = 0; i < f->step.n_seqs; i++) {
        const sched_seq_step_t *q = &f->step.seqs[i];
        int n = q->sample ? 1 + rng_below(&f->rng, 1 + q->n_draft) : 0;
        for (int t = 0; t < n; t++)
            toks[i][t] = rng_below(&f->rng, 1000);
        res[i] = (sched_seq_result_t){.n_tokens = n, .tokens = toks[i],
                                      .finish = rng_below(&f->rng, 20) ? SCHED_FINISH_NONE : SCHED_FINISH_EOS};
    }
    sched_result_t r = {.n_seqs = f->step.n_seqs, .seqs = res};
    assert_int_equal(sched_commit(f->s, &f->step, &r, f->now), SL_OK);
    f->in_flight = false;
}

static void fuzz_plan(fuzz_t *f)
{
    double wake;
    int rc = sched_plan(f->s, f->now, &f->step, &wake);
    assert_true(rc == SCHED_PLAN_STEP || rc == SCHED_PLAN_IDLE);
    f->in_flight = rc == SCHED_PLAN_STEP;
    if (rc == SCHED_PLAN_IDLE && isfinite(wake))
        f->now = wake; /* a static batch's timeout: the executor would sleep until then */
}

static void fuzz_run(sched_strategy_t strategy, uint64_t seed, int ops)
{
    sched_config_t c = small_config(strategy);
    c.num_blocks = 48;
    c.max_sequence_length = 128;
    c.max_waiting_requests = 40;
    c.max_num_batched_tokens = 48;
    c.num_speculative_tokens = strategy == SCHED_CONTINUOUS ? 2 : 0;
    c.memory_limit_mb = 200;
    fuzz_t f = {.s = make_sched(&c), .rng = seed};
    for (int op = 0; op < ops; op++) {
        int dice = rng_below(&f.rng, 100);
        uint64_t id = 1 + (uint64_t)rng_below(&f.rng, (int)f.next_id + 1);
        if (dice < 30) {
            fuzz_submit(&f);
        } else if (dice < 70) {
            if (f.in_flight)
                fuzz_commit(&f);
            else
                fuzz_plan(&f);
        } else if (dice < 80) {
            int rc = sched_abort(f.s, id, f.now);
            assert_true(rc == SL_OK || rc == SL_ENOTFOUND);
        } else if (dice < 90) {
            int rc = sched_fork(f.s, id, ++f.next_id, NULL, f.now);
            assert_true(rc == SL_OK || rc == SL_ENOTFOUND || rc == SL_ESTATE || rc == SL_EUNSUPPORTED);
            assert_true(rc != SL_OK || (!f.in_flight && strategy == SCHED_CONTINUOUS));
        } else {
            f.now += 0.01 * rng_below(&f.rng, 10);
        }
        assert_invariants(f.s);
    }
    /* drain: finish the step in flight, then run everything to completion */
    if (f.in_flight)
        fuzz_commit(&f);
    for (int i = 0; i < 100000; i++) {
        fuzz_plan(&f);
        if (!f.in_flight)
            break;
        fuzz_commit(&f);
        assert_invariants(f.s);
    }
    sched_stats_t st;
    sched_get_stats(f.s, &st);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.used_blocks, 0);
    assert_int_equal(st.free_blocks + st.cached_blocks, c.num_blocks);
    assert_true(st.finished + st.aborted > 100);
    if (strategy == SCHED_CONTINUOUS) {
        assert_true(st.preemptions > 0);
        assert_true(st.prefix_hit_tokens > 0);
    }
    sched_done_t d[64];
    while (sched_drain_done(f.s, d, 64) > 0)
        ;
    sched_free(f.s);
}

static void test_random_operations_keep_invariants_continuous(void **state) { fuzz_run(SCHED_CONTINUOUS, 1, 5000); }
static void test_random_operations_keep_invariants_naive(void **state) { fuzz_run(SCHED_NAIVE, 2, 3000); }
static void test_random_operations_keep_invariants_bucketed(void **state) { fuzz_run(SCHED_BUCKETED, 3, 3000); }
static void test_random_operations_keep_invariants_memory_aware(void **state)
{
    fuzz_run(SCHED_MEMORY_AWARE, 4, 3000);
}

static void test_create_survives_every_allocation_failure(void **state)
{
    sched_config_t c = small_config(SCHED_BUCKETED);
    int failures = 0;
    for (long n = 0; n < 100; n++) {
        sl_alloc_fail_after(n);
        char err[128] = "";
        sched_t *s = sched_create(&c, err, sizeof err);
        sl_alloc_fail_after(-1);
        if (s) {
            sched_free(s);
            break;
        }
        assert_non_null(strstr(err, "out of memory"));
        failures++;
    }
    assert_true(failures > 5); /* every allocation of create was failed once */
}

static void test_submit_and_fork_fail_cleanly_without_memory(void **state)
{
    sched_config_t c = small_config(SCHED_CONTINUOUS);
    sched_t *s = make_sched(&c);
    int32_t p[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    int failures = 0;
    for (uint64_t id = 1; id <= 70; id++) { /* enough to grow every table more than once */
        for (long n = 0;; n++) {
            sched_stats_t before, after;
            sched_get_stats(s, &before);
            sl_alloc_fail_after(n);
            int rc = submit_tokens(s, id, 0, p, 10, 5);
            sl_alloc_fail_after(-1);
            assert_invariants(s);
            if (rc == SL_OK)
                break;
            assert_int_equal(rc, SL_ENOMEM);
            sched_get_stats(s, &after);
            assert_int_equal(after.waiting, before.waiting);
            sched_req_state_t st;
            assert_int_equal(sched_request_state(s, id, &st), SL_ENOTFOUND);
            failures++;
        }
    }
    assert_true(failures >= 70 * 2); /* the request and its block table at least */
    sched_step_t step;
    assert_int_equal(plan(s, 0, &step), SCHED_PLAN_STEP);
    commit_step(s, &step, 0, NULL, 0);
    for (long n = 0;; n++) {
        sl_alloc_fail_after(n);
        int rc = sched_fork(s, 1, 1000, NULL, 0);
        sl_alloc_fail_after(-1);
        assert_invariants(s);
        if (rc == SL_OK)
            break;
        assert_int_equal(rc, SL_ENOMEM);
    }
    run_until_idle(s, 1, 1000);
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.finished, 71);
    sched_free(s);
}

/* Plans and commits until idle without the (linear) invariant walk. */
static int run_unchecked(sched_t *s, double now)
{
    sched_step_t step;
    int n = 0;
    while (plan(s, now, &step) == SCHED_PLAN_STEP) {
        commit_step(s, &step, now, NULL, 0);
        n++;
    }
    return n;
}

/* Many requests through a long run: a quadratic scan over the queue would not finish. */
static void test_scale_many_requests_stay_fast(void **state)
{
    sched_config_t c = sched_config_default();
    c.max_waiting_requests = 0;
    sched_t *s = make_sched(&c);
    const int n = 200000;
    for (int i = 0; i < n; i++)
        assert_int_equal(submit_len(s, (uint64_t)i + 1, i % 3, i * 1e-4, 64 + i % 200, 4 + i % 16), SL_OK);
    int steps = run_unchecked(s, 1);
    assert_true(steps > 0);
    sched_stats_t st;
    sched_get_stats(s, &st);
    assert_int_equal(st.finished, n);
    sched_done_t d[1024];
    while (sched_drain_done(s, d, 1024) > 0)
        ;
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_operations_keep_invariants_continuous),
        cmocka_unit_test(test_random_operations_keep_invariants_naive),
        cmocka_unit_test(test_random_operations_keep_invariants_bucketed),
        cmocka_unit_test(test_random_operations_keep_invariants_memory_aware),
        cmocka_unit_test(test_create_survives_every_allocation_failure),
        cmocka_unit_test(test_submit_and_fork_fail_cleanly_without_memory),
        cmocka_unit_test(test_scale_many_requests_stay_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
