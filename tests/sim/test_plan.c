/* test_plan.c — capacity and replica search: monotone in rate, minimal, refuses bad arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "sched/status.h"
#include "sim/plan.h"
#include "sim_slo_eval.h"

typedef struct plan_fixture {
    slo_eval_t e;
    wl_trace_t *tr;
    double base_rate;
} plan_fixture_t;

static int eval(void *ctx, int replicas, double rate, sim_plan_point_t *out, char *err, int errlen)
{
    plan_fixture_t *f = ctx;
    sim_config_t cfg = f->e.cfg;
    cfg.replicas = replicas;
    cfg.router = SIM_ROUTE_LEAST_OUTSTANDING;
    wl_trace_t *t = wl_trace_create();
    for (size_t i = 0; i < f->tr->n; i++) {
        wl_request_t r;
        wl_trace_get(f->tr, i, &r);
        wl_trace_append(t, &r);
    }
    wl_trace_rate_scale(t, rate / f->base_rate);
    double good = 0;
    int rc = slo_simulate(&f->e, &cfg, t, &good, &out->ttft_p99, &out->tpot_p99, &out->slo_met, err, errlen);
    out->throughput = good;
    wl_trace_free(t);
    return rc;
}

static void test_plan_more_rate_needs_no_fewer_replicas(void **state)
{
    (void)state;
    plan_fixture_t f = {.e = {.ttft_limit = 1.0, .tpot_limit = 0.1}, .tr = wl_trace_create(), .base_rate = 2.0};
    assert_int_equal(wl_preset_generate("chat", 200, f.base_rate, 3, 0, f.tr), SL_OK);
    f.base_rate = (double)(f.tr->n - 1) / (f.tr->arrival[f.tr->n - 1] - f.tr->arrival[0]);
    assert_int_equal(sim_config_default(&f.e.cfg), SL_OK);
    char err[256];
    double cap;
    sim_plan_curve_t curve = {0};
    assert_int_equal(sim_plan_capacity(eval, &f, 2.0, 4, &cap, &curve, err, sizeof err), SL_OK);
    assert_true(cap > 0);
    assert_true(curve.n >= 3);
    int prev = 0;
    const double rates[] = {cap * 0.5, cap * 2, cap * 5, cap * 9};
    for (int i = 0; i < 4; i++) {
        int n;
        sim_plan_point_t at;
        assert_int_equal(sim_plan_replicas(eval, &f, rates[i], cap, 64, &n, &at, err, sizeof err), SL_OK);
        assert_true(at.slo_met);
        assert_true(n >= prev);
        if (n > 1) { /* minimal: one fewer misses */
            sim_plan_point_t less;
            assert_int_equal(eval(&f, n - 1, rates[i], &less, err, sizeof err), SL_OK);
            assert_false(less.slo_met);
        }
        prev = n;
    }
    assert_true(prev >= 2);
    wl_trace_free(f.tr);
}

static void test_plan_refuses_bad_arguments(void **state)
{
    (void)state;
    char err[256];
    double cap;
    int n;
    sim_plan_point_t at;
    assert_int_equal(sim_plan_capacity(eval, NULL, 0, 4, &cap, NULL, err, sizeof err), SL_EINVAL);
    assert_int_equal(sim_plan_replicas(eval, NULL, 1, 0, 8, &n, &at, err, sizeof err), SL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_more_rate_needs_no_fewer_replicas),
        cmocka_unit_test(test_plan_refuses_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
