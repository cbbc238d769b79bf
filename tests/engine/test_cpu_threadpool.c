/* test_cpu_threadpool.c — the persistent pool: every thread runs a region, barriers order
 * phases, claims hand out each item exactly once, regions can follow each other many times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/cpu/threadpool.h"

#define N_ITEMS 1000

typedef struct job {
    eng_cpu_pool_t *pool;
    atomic_int hits[N_ITEMS];
    int phase_a[64], phase_b[64];
    atomic_int ran;
    int bad;
} job_t;

static void body(void *arg, int ith, int nth)
{
    job_t *j = arg;
    atomic_fetch_add(&j->ran, 1);
    for (int i; (i = eng_cpu_pool_claim(j->pool)) < N_ITEMS;)
        atomic_fetch_add(&j->hits[i], 1);
    j->phase_a[ith] = ith + 1;
    eng_cpu_pool_barrier(j->pool);
    /* after the barrier every thread sees every other thread's phase-a write, and claims restart */
    for (int t = 0; t < nth; t++)
        if (j->phase_a[t] != t + 1)
            j->bad = 1;
    for (int i; (i = eng_cpu_pool_claim(j->pool)) < N_ITEMS;)
        atomic_fetch_add(&j->hits[i], 1);
    eng_cpu_pool_barrier(j->pool);
    int lo, hi;
    eng_cpu_split(N_ITEMS, ith, nth, &lo, &hi);
    for (int i = lo; i < hi; i++)
        atomic_fetch_add(&j->hits[i], 1);
}

static void run_pool(int n_threads, int regions)
{
    eng_cpu_pool_t *p = NULL;
    assert_int_equal(eng_cpu_pool_create(n_threads, 0.002, &p), 0);
    assert_int_equal(eng_cpu_pool_size(p), n_threads);
    static job_t j;
    for (int r = 0; r < regions; r++) {
        memset(&j, 0, sizeof j);
        j.pool = p;
        eng_cpu_pool_run(p, body, &j);
        assert_int_equal(atomic_load(&j.ran), n_threads);
        assert_int_equal(j.bad, 0);
        for (int i = 0; i < N_ITEMS; i++)
            assert_int_equal(atomic_load(&j.hits[i]), 3);
    }
    eng_cpu_pool_free(p);
}

static void test_every_item_claimed_once_per_loop_across_many_regions(void **state)
{
    run_pool(1, 10);
    run_pool(2, 100);
    run_pool(5, 10); /* more threads than cores: barriers must still make progress */
}

static void test_zero_threads_means_online_cpus(void **state)
{
    eng_cpu_pool_t *p = NULL;
    assert_int_equal(eng_cpu_pool_create(0, 0.002, &p), 0);
    assert_true(eng_cpu_pool_size(p) >= 1);
    eng_cpu_pool_free(p);
    eng_cpu_pool_free(NULL);
}

static void test_static_split_covers_range_without_overlap(void **state)
{
    for (int n = 0; n < 40; n++)
        for (int nth = 1; nth < 7; nth++) {
            int next = 0;
            for (int t = 0; t < nth; t++) {
                int lo, hi;
                eng_cpu_split(n, t, nth, &lo, &hi);
                assert_int_equal(lo, next);
                assert_true(hi >= lo);
                next = hi;
            }
            assert_int_equal(next, n);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_claimed_once_per_loop_across_many_regions),
        cmocka_unit_test(test_zero_threads_means_online_cpus),
        cmocka_unit_test(test_static_split_covers_range_without_overlap),
    };
    return cmocka_run_group_tests_name("cpu_threadpool", tests, NULL, NULL);
}
