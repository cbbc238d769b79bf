/* test_metrics.c — summary metrics on hand-computed records, percentiles, goodput, SLO parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "analysis/metrics.h"
#include "sched/status.h"

#define assert_near(a, b)                                                                    \
    do {                                                                                     \
        double a_ = (a), b_ = (b);                                                           \
        if (!(fabs(a_ - b_) <= 1e-9 * (1 + fabs(b_))))                                       \
            fail_msg("%s = %.12g, expected %.12g", #a, a_, b_);                              \
    } while (0)

/* req_id, replica, priority, arrival, first_scheduled, first_token, finished, prompt, output,
 * cached, preemptions, finish_reason (3 length, 1 eos, 4 abort) */
static const an_request_rec_t reqs[5] = {
    {0, 0, 0, 0.0, 0.1, 0.5, 2.5, 100, 5, 0, 0, 3},
    {1, 1, 0, 1.0, 1.0, 1.2, 2.2, 200, 11, 50, 1, 3},
    {2, 0, 0, 2.0, 2.5, 3.0, 3.0, 300, 1, 100, 0, 1},
    {3, 1, 0, 3.0, 3.2, 3.4, 4.0, 400, 4, 0, 2, 3},
    {4, 0, 0, 3.5, -1, -1, -1, 50, 0, 0, 0, 4},
};
/* replica, seq_no, t_start, t_end, n_seqs, n_tokens, n_prefill, n_decode_seqs, n_padded,
 * kv_used_blocks, reserved, used, naive, n_preempted */
static const an_step_rec_t steps[3] = {
    {0, 0, 0.0, 1.0, 2, 100, 98, 1, 0, 10, 160, 120, 400, 0},
    {0, 1, 1.0, 2.0, 4, 50, 46, 3, 10, 20, 320, 300, 800, 1},
    {1, 0, 0.0, 2.0, 1, 30, 30, 0, 0, 5, 80, 40, 100, 0},
};

static void test_metrics_percentile_interpolates_between_closest_ranks(void **state)
{
    const double v[4] = {1, 2, 3, 4};
    assert_near(an_percentile_sorted(v, 4, 50), 2.5);
    assert_near(an_percentile_sorted(v, 4, 90), 3.7);
    assert_near(an_percentile_sorted(v, 4, 99), 3.97);
    assert_near(an_percentile_sorted(v, 4, 0), 1);
    assert_near(an_percentile_sorted(v, 4, 100), 4);
    assert_near(an_percentile_sorted(v, 1, 99), 1);
    assert_true(isnan(an_percentile_sorted(v, 0, 50)));
}

static void test_metrics_request_latencies_and_throughput(void **state)
{
    an_summary_t s;
    assert_int_equal(an_metrics_compute(reqs, 5, NULL, 0, NULL, &s), SL_OK);
    assert_near(s.n_requests, 5);
    assert_near(s.n_completed, 4);
    assert_near(s.duration, 4.0);
    assert_near(s.request_throughput, 1.0);
    assert_near(s.input_tps, 250);
    assert_near(s.output_tps, 5.25);
    assert_near(s.ttft_mean, 0.525);
    assert_near(s.ttft_p50, 0.45);
    assert_near(s.ttft_p90, 0.85);
    assert_near(s.ttft_p99, 0.985);
    assert_near(s.tpot_mean, 0.8 / 3);
    assert_near(s.tpot_p50, 0.2);
    assert_near(s.tpot_p90, 0.44);
    assert_near(s.tpot_p99, 0.494);
    assert_near(s.e2e_mean, 1.425);
    assert_near(s.e2e_p50, 1.1);
    assert_near(s.e2e_p90, 2.11);
    assert_near(s.e2e_p99, 2.461);
    assert_near(s.queue_mean, 0.2);
    assert_near(s.queue_p50, 0.15);
    assert_near(s.preemptions, 3);
    assert_near(s.preempted_requests, 2);
    assert_near(s.prefix_hit_rate, 150.0 / 1050.0);
    /* no SLO: every completed request counts, slo_met unknown */
    assert_near(s.goodput, 1.0);
    assert_near(s.goodput_frac, 0.8);
    assert_true(isnan(s.slo_met));
    assert_true(isnan(s.n_steps) && isnan(s.mfu));
}

static void test_metrics_goodput_counts_requests_meeting_every_limit(void **state)
{
    an_metrics_opts_t o;
    char err[128];
    an_metrics_opts_default(&o);
    assert_int_equal(an_slo_parse("ttft_p99=600ms,tpot_p90=0.3s", &o.slo, err, sizeof err), SL_OK);
    an_summary_t s;
    assert_int_equal(an_metrics_compute(reqs, 5, NULL, 0, &o, &s), SL_OK);
    /* r0 misses TPOT (0.5), r2 misses TTFT (1.0); r1 and r3 meet both */
    assert_near(s.goodput, 0.5);
    assert_near(s.goodput_frac, 0.4);
    assert_near(s.slo_met, 0); /* p99 TTFT 0.985 > 0.6 */
    assert_int_equal(an_slo_parse("ttft_p50=0.5s,e2e_p90=3s", &o.slo, err, sizeof err), SL_OK);
    assert_int_equal(an_metrics_compute(reqs, 5, NULL, 0, &o, &s), SL_OK);
    assert_near(s.slo_met, 1);
}

static void test_metrics_steps_give_kv_waste_utilisation_and_busy_fraction(void **state)
{
    an_metrics_opts_t o;
    an_metrics_opts_default(&o);
    o.kv_blocks_per_replica = 40;
    an_summary_t s;
    assert_int_equal(an_metrics_compute(reqs, 5, steps, 3, &o, &s), SL_OK);
    assert_near(s.n_steps, 3);
    assert_near(s.batch_size_mean, 7.0 / 3);
    assert_near(s.tokens_per_step, 60);
    assert_near(s.padding_frac, 10.0 / 190);
    assert_near(s.kv_waste, 1 - 500.0 / 640);
    assert_near(s.kv_naive_waste, 1 - 500.0 / 1400);
    assert_near(s.kv_util_mean, 0.25);
    assert_near(s.kv_util_peak, 0.5);
    assert_near(s.busy_frac, 0.5); /* 4 s of steps over 4 s x 2 replicas (from the replica ids) */
    o.n_replicas = 4;
    assert_int_equal(an_metrics_compute(reqs, 5, steps, 3, &o, &s), SL_OK);
    assert_near(s.busy_frac, 0.25);
}

static void test_step_accumulator_matches_the_arrays_bit_for_bit(void **state)
{
    an_metrics_opts_t o;
    an_metrics_opts_default(&o);
    o.kv_blocks_per_replica = 40;
    an_summary_t whole, folded;
    assert_int_equal(an_metrics_compute(reqs, 5, steps, 3, &o, &whole), SL_OK);
    an_step_accum_t acc;
    an_step_accum_init(&acc, 40);
    for (int i = 0; i < 3; i++)
        an_step_accum_add(&acc, &steps[i]);
    assert_int_equal(acc.n, 3);
    assert_int_equal(an_metrics_compute_accum(reqs, 5, &acc, &o, &folded), SL_OK);
    for (size_t i = 0; i < an_summary_field_count(); i++) {
        const an_summary_field_t *f = an_summary_field_at(i);
        double a = *(const double *)((const char *)&whole + f->offset);
        double b = *(const double *)((const char *)&folded + f->offset);
        assert_true(memcmp(&a, &b, sizeof a) == 0); /* NaN and all */
    }
    /* no steps: the step fields stay NaN */
    assert_int_equal(an_metrics_compute_accum(reqs, 5, NULL, &o, &folded), SL_OK);
    assert_true(isnan(folded.n_steps) && isnan(folded.kv_waste) && !isnan(folded.ttft_p99));
}

static void test_metrics_empty_input_gives_nan_not_a_crash(void **state)
{
    an_summary_t s;
    assert_int_equal(an_metrics_compute(NULL, 0, NULL, 0, NULL, &s), SL_OK);
    assert_near(s.n_requests, 0);
    assert_true(isnan(s.duration) && isnan(s.ttft_p99) && isnan(s.kv_waste));
}

static void test_metrics_summary_fields_are_named_and_ordered(void **state)
{
    assert_string_equal(an_summary_field_at(0)->name, "n_requests");
    const an_summary_field_t *f = an_summary_field_find("tpot_p99");
    assert_non_null(f);
    assert_int_equal(f->offset, offsetof(an_summary_t, tpot_p99));
    assert_string_equal(f->unit, "s");
    assert_null(an_summary_field_find("nope"));
    assert_int_equal(an_summary_field_count(), sizeof(an_summary_t) / sizeof(double));
}

static void expect_slo_error(const char *spec, const char *msg)
{
    an_slo_t slo = {.n = 99};
    char err[160];
    assert_int_equal(an_slo_parse(spec, &slo, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, msg);
    assert_int_equal(slo.n, 99);
}

static void test_slo_parser_units_and_errors(void **state)
{
    an_slo_t slo;
    char err[160], buf[160];
    assert_int_equal(an_slo_parse("ttft_p99=1s,tpot_p99.9=100ms,e2e_p90=2.5s", &slo, err, sizeof err), SL_OK);
    assert_int_equal(slo.n, 3);
    assert_int_equal(slo.term[1].metric, AN_SLO_TPOT);
    assert_near(slo.term[1].percentile, 99.9);
    assert_near(slo.term[1].limit, 0.1);
    an_slo_format(&slo, buf, sizeof buf);
    assert_string_equal(buf, "ttft_p99=1s,tpot_p99.9=0.1s,e2e_p90=2.5s");
    assert_int_equal(an_slo_parse("", &slo, err, sizeof err), SL_OK);
    assert_int_equal(slo.n, 0);
    expect_slo_error("tpot_p99=100", "SLO term 'tpot_p99=100': missing unit, use s or ms (e.g. 100ms)");
    expect_slo_error("ttft_p99=1min", "SLO term 'ttft_p99=1min': unknown unit 'min', use s or ms");
    expect_slo_error("itl_p99=1s", "SLO term 'itl_p99=1s': unknown metric 'itl' (accepted: ttft, tpot, e2e)");
    expect_slo_error("ttft_q99=1s", "SLO term 'ttft_q99=1s': expected a percentile p1..p100 after 'ttft_' (e.g. ttft_p99)");
    expect_slo_error("ttft_p150=1s", "SLO term 'ttft_p150=1s': expected a percentile p1..p100 after 'ttft_' (e.g. ttft_p99)");
    expect_slo_error("ttft_p99=-1s", "SLO term 'ttft_p99=-1s': expected a limit > 0 with a unit (e.g. 500ms or 2s)");
    expect_slo_error("ttft_p99=1s,", "SLO 'ttft_p99=1s,': empty term (two commas, or a comma at an end)");
    expect_slo_error("ttft", "SLO term 'ttft': expected METRIC_pPCT=VALUE (e.g. ttft_p99=1s)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_percentile_interpolates_between_closest_ranks),
        cmocka_unit_test(test_metrics_request_latencies_and_throughput),
        cmocka_unit_test(test_metrics_goodput_counts_requests_meeting_every_limit),
        cmocka_unit_test(test_metrics_steps_give_kv_waste_utilisation_and_busy_fraction),
        cmocka_unit_test(test_metrics_empty_input_gives_nan_not_a_crash),
        cmocka_unit_test(test_metrics_summary_fields_are_named_and_ordered),
        cmocka_unit_test(test_slo_parser_units_and_errors),
        cmocka_unit_test(test_step_accumulator_matches_the_arrays_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
