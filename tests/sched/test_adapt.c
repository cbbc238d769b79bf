/* test_adapt.c — the adaptive controller (sched/adapt.h): its rules on crafted observations.
 * The simulator's load-step test is in tests/sim/test_adapt.c; the engine's in
 * tests/engine/test_engine.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/adapt.h"
#include "sched/status.h"

/* ---- the rules, on crafted observations ------------------------------------------------------ */

typedef struct log_rec {
    int n;
    sched_adapt_change_t c[64];
} log_rec_t;

static void log_change(void *ctx, const sched_adapt_change_t *c)
{
    log_rec_t *l = ctx;
    if (l->n < 64)
        l->c[l->n++] = *c;
}

/* n requests finishing at t with the given TTFT, TPOT (10 outputs) and queueing delay. */
static void feed(sched_adapt_t *a, int n, double t, double ttft, double tpot, double queue)
{
    for (int i = 0; i < n; i++) {
        sched_done_t d = {.reason = SCHED_FINISH_LENGTH, .output_len = 10, .arrival = t - ttft - 9 * tpot,
                          .first_scheduled = t - ttft - 9 * tpot + queue, .first_token = t - 9 * tpot,
                          .finished = t};
        sched_adapt_observe_request(a, &d);
    }
}

static void test_continuous_rules_raise_on_queueing_lower_on_tpot(void **state)
{
    sched_config_t cfg = sched_config_default();
    cfg.max_num_batched_tokens = 512;
    sched_adapt_opts_t o;
    sched_adapt_opts_default(&o, &cfg);
    log_rec_t log = {0};
    o.log = log_change, o.log_ctx = &log;
    char err[200];
    sched_adapt_t *a = sched_adapt_create(&o, 3, err, sizeof err);
    assert_non_null(a);
    sched_config_t next;
    /* TTFT over its target and the queue growing, TPOT well under: raise */
    feed(a, 30, 10, 2.5, 0.02, 2.0);
    sched_adapt_observe_step(a, 40);
    assert_true(sched_adapt_decide(a, 10, &cfg, &next));
    assert_int_equal(next.max_num_batched_tokens, 1024);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.c[0].id, 3);
    assert_string_equal(log.c[0].knob, "max_num_batched_tokens");
    assert_true(log.c[0].old_value == 512 && log.c[0].new_value == 1024 && log.c[0].t == 10);
    assert_non_null(strstr(log.c[0].reason, "raise"));
    cfg = next;
    /* within the minimum interval nothing changes, however bad */
    sched_adapt_observe_step(a, 80);
    assert_false(sched_adapt_decide(a, 12, &cfg, &next));
    assert_int_equal(next.max_num_batched_tokens, 1024);
    /* the queue no longer grows: no raise even with TTFT still over */
    sched_adapt_observe_step(a, 80);
    assert_false(sched_adapt_decide(a, 16, &cfg, &next));
    /* TPOT inside the hysteresis band (over 80% of its target): no raise */
    feed(a, 30, 17, 2.5, 0.09, 2.0);
    sched_adapt_observe_step(a, 120);
    assert_false(sched_adapt_decide(a, 17, &cfg, &next));
    /* TPOT over: lower */
    feed(a, 200, 18, 0.5, 0.3, 0.1);
    assert_true(sched_adapt_decide(a, 18, &cfg, &next));
    assert_int_equal(next.max_num_batched_tokens, 512);
    assert_int_equal(sched_adapt_changes(a), 2);
    /* never below budget_min */
    cfg.max_num_batched_tokens = o.budget_min;
    assert_false(sched_adapt_decide(a, 30, &cfg, &next));
    assert_int_equal(next.max_num_batched_tokens, o.budget_min);
    sched_adapt_free(a);
}

static void test_static_rules_shorten_the_timeout_when_queueing_dominates(void **state)
{
    sched_config_t cfg = sched_config_default();
    cfg.strategy = SCHED_NAIVE;
    cfg.batch_timeout_ms = 400;
    sched_adapt_opts_t o;
    sched_adapt_opts_default(&o, &cfg);
    assert_true(o.timeout_max_ms == 400);
    sched_adapt_t *a = sched_adapt_create(&o, 0, NULL, 0);
    sched_config_t next;
    feed(a, 30, 10, 2.0, 0.02, 1.5); /* queueing 1.5 s of a 2 s TTFT */
    assert_true(sched_adapt_decide(a, 10, &cfg, &next));
    assert_true(next.batch_timeout_ms == 200);
    assert_int_equal(next.max_num_batched_tokens, cfg.max_num_batched_tokens);
    cfg = next;
    /* well under the target with a steady queue: back toward the starting timeout, never above */
    feed(a, 400, 40, 0.1, 0.02, 0.05);
    assert_true(sched_adapt_decide(a, 40, &cfg, &next));
    assert_true(next.batch_timeout_ms == 400);
    cfg = next;
    assert_false(sched_adapt_decide(a, 50, &cfg, &next));
    sched_adapt_free(a);
    /* bad options are refused with the field */
    char err[200];
    o.budget_min = 0;
    assert_null(sched_adapt_create(&o, 0, err, sizeof err));
    assert_non_null(strstr(err, "budget_min"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continuous_rules_raise_on_queueing_lower_on_tpot),
        cmocka_unit_test(test_static_rules_shorten_the_timeout_when_queueing_dominates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
