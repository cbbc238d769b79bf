/* test_tune.c — the policy search: beats NAIVE on a small slice, stays within budget, ranks, refuses bad options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "sched/status.h"
#include "sim/tune.h"
#include "sim_slo_eval.h"

static int eval(void *ctx, int worker, const sched_config_t *sc, sim_tune_score_t *out, char *err, int errlen)
{
    const slo_eval_t *e = ctx;
    sim_config_t cfg = e->cfg;
    cfg.sched = *sc;
    (void)worker;
    int rc = slo_simulate(e, &cfg, e->tr, &out->goodput, &out->ttft_p99, &out->tpot_p99, &out->slo_met, err, errlen);
    out->throughput = out->goodput;
    return rc;
}

static void test_tune_small_slice_beats_naive(void **state)
{
    (void)state;
    wl_trace_t *tr = wl_trace_create();
    assert_int_equal(wl_preset_generate("chat", 300, 6.0, 1, 0, tr), SL_OK);
    slo_eval_t e = {.tr = tr, .ttft_limit = 1.0, .tpot_limit = 0.1};
    assert_int_equal(sim_config_default(&e.cfg), SL_OK);
    sim_tune_opts_t o;
    sim_tune_opts_default(&o, &e.cfg.sched);
    o.budget = 16, o.jobs = 2, o.eval = eval, o.ctx = &e;
    sim_tune_result_t r;
    char err[256];
    assert_int_equal(sim_tune_run(&o, &r, err, sizeof err), SL_OK);
    assert_true(r.n >= 2 && r.n <= 16);
    const sim_tune_entry_t *b = &r.entries[r.baseline];
    assert_int_equal(b->cfg.strategy, SCHED_NAIVE);
    assert_string_equal(b->phase, "baseline");
    assert_true(sim_tune_compare(&r.entries[0].score, &b->score) < 0); /* strictly better than NAIVE */
    assert_true(r.entries[0].score.goodput > b->score.goodput);
    for (int i = 1; i < r.n; i++)
        assert_true(sim_tune_compare(&r.entries[i - 1].score, &r.entries[i].score) <= 0);
    sim_tune_result_free(&r);
    wl_trace_free(tr);
}

/* With drafts in the base config, the tuner also tries its best continuous point without them and
 * recommends whichever serves the load better: drafts that are never accepted (acceptance 0) lose
 * to none; drafts accepted 90% of the time win under a tight TPOT limit. */
static const sim_tune_entry_t *tune_spec(double acceptance, sim_tune_result_t *r)
{
    static wl_trace_t *tr;
    static slo_eval_t e;
    if (!tr) {
        tr = wl_trace_create();
        assert_int_equal(wl_preset_generate("chat", 300, 3.0, 1, 0, tr), SL_OK);
    }
    e = (slo_eval_t){.tr = tr, .ttft_limit = 2.0, .tpot_limit = 0.02};
    assert_int_equal(sim_config_default(&e.cfg), SL_OK);
    e.cfg.sched.num_speculative_tokens = 2;
    e.cfg.spec_acceptance = acceptance;
    sim_tune_opts_t o;
    sim_tune_opts_default(&o, &e.cfg.sched);
    o.budget = 16, o.jobs = 2, o.eval = eval, o.ctx = &e;
    o.strategy[SCHED_NAIVE] = o.strategy[SCHED_BUCKETED] = o.strategy[SCHED_MEMORY_AWARE] = false;
    char err[256];
    assert_int_equal(sim_tune_run(&o, r, err, sizeof err), SL_OK);
    int no_spec = 0;
    for (int i = 0; i < r->n; i++)
        no_spec += !strcmp(r->entries[i].phase, "no-spec");
    assert_int_equal(no_spec, 1);
    print_message("acceptance %.1f: best %s drafts %d, goodput %.3f\n", acceptance, r->entries[0].phase,
                  r->entries[0].cfg.num_speculative_tokens, r->entries[0].score.goodput);
    return &r->entries[0];
}

static void test_tune_tries_the_load_without_drafts(void **state)
{
    (void)state;
    sim_tune_result_t r;
    assert_int_equal(tune_spec(0.0, &r)->cfg.num_speculative_tokens, 0);
    sim_tune_result_free(&r);
    assert_int_equal(tune_spec(0.9, &r)->cfg.num_speculative_tokens, 2);
    sim_tune_result_free(&r);
}

static int failing_eval(void *ctx, int worker, const sched_config_t *sc, sim_tune_score_t *out, char *err, int errlen)
{
    (void)ctx, (void)worker, (void)sc, (void)out;
    snprintf(err, (size_t)errlen, "planted failure");
    return SL_EIO;
}

static void test_tune_stops_on_eval_error_and_bad_options(void **state)
{
    (void)state;
    sched_config_t base = sched_config_default();
    sim_tune_opts_t o;
    sim_tune_opts_default(&o, &base);
    sim_tune_result_t r;
    char err[256];
    assert_int_equal(sim_tune_run(&o, &r, err, sizeof err), SL_EINVAL); /* no eval */
    o.eval = failing_eval;
    assert_int_equal(sim_tune_run(&o, &r, err, sizeof err), SL_EIO);
    assert_string_equal(err, "planted failure");
    assert_null(r.entries);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tune_small_slice_beats_naive),
        cmocka_unit_test(test_tune_stops_on_eval_error_and_bad_options),
        cmocka_unit_test(test_tune_tries_the_load_without_drafts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
