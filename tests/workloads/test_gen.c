/* test_gen.c — generators: determinism per seed, distribution sanity, spec parsing, presets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sched/status.h"
#include "workloads/gen.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

#define assert_near(a, b, tol)                                                                          \
    do {                                                                                                \
        double a_ = (a), b_ = (b);                                                                      \
        if (!(fabs(a_ - b_) <= (tol)))                                                                  \
            fail_msg("%s = %.6g, expected %.6g within %g", #a, a_, b_, (double)(tol));                  \
    } while (0)

static int setup(void **state)
{
    *state = wl_trace_create();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    wl_trace_free(*state);
    return 0;
}

/* Generates n requests from spec strings; max_seq_len as in wl_gen_config_t. */
static void gen_capped(wl_trace_t *t, size_t n, uint64_t seed, const char *arrival, const char *prompt,
                       const char *output, int max_seq_len)
{
    wl_gen_config_t c;
    char err[256];
    wl_gen_config_default(&c);
    c.max_seq_len = max_seq_len;
    c.n = n;
    c.seed = seed;
    assert_int_equal(wl_parse_arrival(arrival, &c.arrival, err, sizeof err), SL_OK);
    assert_int_equal(wl_parse_length(prompt, &c.prompt, err, sizeof err), SL_OK);
    assert_int_equal(wl_parse_length(output, &c.output, err, sizeof err), SL_OK);
    int rc = wl_gen_generate(&c, t);
    if (rc)
        fail_msg("generate: %s", wl_trace_errmsg(t));
}

static void gen(wl_trace_t *t, size_t n, uint64_t seed, const char *arrival, const char *prompt, const char *output)
{
    gen_capped(t, n, seed, arrival, prompt, output, WL_DEFAULT_MAX_SEQ_LEN);
}

static double mean_gap(const wl_trace_t *t)
{
    return (t->arrival[t->n - 1] - t->arrival[0]) / (double)(t->n - 1);
}

static void moments(const int *v, size_t n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i], s2 += (double)v[i] * v[i];
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

static void test_gen_same_seed_gives_the_same_trace(void **state)
{
    wl_trace_t *t = *state, *u = wl_trace_create();
    gen(t, 5000, 42, "gamma:4,2", "lognormal:1155,1100", "zipf:1.1,500");
    gen(u, 5000, 42, "gamma:4,2", "lognormal:1155,1100", "zipf:1.1,500");
    assert_true(wl_trace_hash(t) == wl_trace_hash(u));
    gen(u, 5000, 43, "gamma:4,2", "lognormal:1155,1100", "zipf:1.1,500");
    assert_true(wl_trace_hash(t) != wl_trace_hash(u));
    assert_true(t->arrival[0] == 0.0);
    wl_trace_free(u);
}

static void test_gen_trace_survives_the_csv_round_trip_bit_for_bit(void **state)
{
    wl_trace_t *t = *state, *u = wl_trace_create();
    char path[128];
    snprintf(path, sizeof path, "/tmp/sluice_test_gen_rt_%d.csv", (int)getpid());
    gen(t, 3000, 9, "gamma:7,1.5", "lognormal:500,300", "uniform:1,99");
    assert_int_equal(wl_trace_write_file(t, path), SL_OK);
    assert_int_equal(wl_trace_read_file(u, path), SL_OK);
    assert_true(wl_trace_hash(t) == wl_trace_hash(u));
    unlink(path);
    wl_trace_free(u);
}

static void test_gen_survives_every_failed_allocation(void **state)
{
    wl_gen_config_t c;
    char err[128];
    wl_gen_config_default(&c);
    c.n = 100;
    assert_int_equal(wl_parse_length("zipf:1.1,1000", &c.prompt, err, sizeof err), SL_OK);
    int rc = SL_ENOMEM;
    for (long k = 0; rc == SL_ENOMEM; k++) {
        wl_trace_t *t = wl_trace_create();
        assert_non_null(t);
        sl_alloc_fail_after(k);
        rc = wl_gen_generate(&c, t);
        sl_alloc_fail_after(-1);
        assert_int_equal(t->n, rc == SL_OK ? 100 : 0);
        wl_trace_free(t);
    }
    assert_int_equal(rc, SL_OK);
}

static void test_gen_poisson_gamma_constant_rates_and_burstiness(void **state)
{
    wl_trace_t *t = *state;
    gen(t, 40000, 1, "poisson:5", "fixed:10", "fixed:10");
    assert_near(mean_gap(t), 0.2, 0.004);
    gen(t, 40000, 1, "gamma:5,3", "fixed:10", "fixed:10");
    assert_near(mean_gap(t), 0.2, 0.01);
    double s = 0, s2 = 0;
    for (size_t i = 1; i < t->n; i++) {
        double g = t->arrival[i] - t->arrival[i - 1];
        s += g, s2 += g * g;
    }
    double m = s / (double)(t->n - 1);
    assert_near(sqrt(s2 / (double)(t->n - 1) - m * m) / m, 3.0, 0.15);
    gen(t, 11, 1, "constant:4", "fixed:10", "fixed:10");
    assert_true(t->arrival[10] == 2.5);
}

static void test_gen_length_distributions_match_their_parameters(void **state)
{
    wl_trace_t *t = *state;
    double mean, sd;
    gen_capped(t, 100000, 7, "poisson:1", "lognormal:1155,1100", "uniform:10,20", 0);
    moments(t->prompt_len, t->n, &mean, &sd);
    assert_near(mean, 1155, 1155 * 0.02);
    assert_near(sd, 1100, 1100 * 0.05);
    int lo = 100, hi = 0;
    for (size_t i = 0; i < t->n; i++)
        lo = t->output_len[i] < lo ? t->output_len[i] : lo, hi = t->output_len[i] > hi ? t->output_len[i] : hi;
    assert_int_equal(lo, 10);
    assert_int_equal(hi, 20);
    moments(t->output_len, t->n, &mean, &sd);
    assert_near(mean, 15, 0.1);
    /* zipf:1,4: P(k) = (1/k) / (1 + 1/2 + 1/3 + 1/4) -> P(1) = 12/25 */
    gen(t, 100000, 7, "poisson:1", "zipf:1,4", "fixed:3");
    size_t ones = 0;
    for (size_t i = 0; i < t->n; i++)
        ones += t->prompt_len[i] == 1;
    assert_near((double)ones / (double)t->n, 0.48, 0.01);
}

static void test_gen_caps_prompt_plus_output_at_max_seq_len(void **state)
{
    wl_trace_t *t = *state;
    gen(t, 20000, 3, "poisson:1", "lognormal:3000,3000", "lognormal:1000,1000");
    int capped = 0;
    for (size_t i = 0; i < t->n; i++) {
        assert_true(t->prompt_len[i] + t->output_len[i] <= WL_DEFAULT_MAX_SEQ_LEN);
        assert_true(t->output_len[i] >= 1);
        capped += t->prompt_len[i] + t->output_len[i] == WL_DEFAULT_MAX_SEQ_LEN;
    }
    assert_true(capped > 1000);
}

static void test_gen_resample_draws_rows_jointly_and_replay_scales_time(void **state)
{
    wl_trace_t *t = *state;
    char path[128], spec[160];
    snprintf(path, sizeof path, "/tmp/sluice_test_gen_%d.csv", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,1\n1,200,2\n3,300,3\n", f);
    fclose(f);
    snprintf(spec, sizeof spec, "resample:%s", path);
    char arr[160];
    snprintf(arr, sizeof arr, "replay:%s,2", path);
    gen(t, 7, 5, arr, spec, spec);
    for (size_t i = 0; i < t->n; i++)
        assert_int_equal(t->prompt_len[i], 100 * t->output_len[i]);
    /* replay: 0, 1, 3, then the next cycle shifted by last + mean gap = 3 + 1.5 = 4.5; halved */
    const double want[7] = {0, 0.5, 1.5, 2.25, 2.75, 3.75, 4.5};
    for (int i = 0; i < 7; i++)
        assert_near(t->arrival[i], want[i], 1e-12);
    unlink(path);
    wl_gen_config_t c;
    wl_gen_config_default(&c);
    snprintf(c.prompt.path, sizeof c.prompt.path, "%s", path);
    c.prompt.kind = WL_LEN_RESAMPLE;
    assert_int_equal(wl_gen_generate(&c, t), SL_EIO);
    assert_int_equal(t->n, 0);
}

static void test_gen_priority_mix_and_prefix_groups(void **state)
{
    wl_trace_t *t = *state;
    wl_gen_config_t c;
    char err[256];
    wl_gen_config_default(&c);
    c.n = 50000;
    assert_int_equal(wl_parse_priority_mix("0:8,1:2", &c, err, sizeof err), SL_OK);
    assert_true(c.priority_weight[0] == 0.8);
    assert_int_equal(wl_parse_prefix_groups("4:600:0.5", &c, err, sizeof err), SL_OK);
    assert_int_equal(wl_gen_generate(&c, t), SL_OK);
    size_t p1 = 0, grouped = 0;
    for (size_t i = 0; i < t->n; i++) {
        p1 += t->priority[i] == 1;
        if (t->prefix_group[i] >= 0) {
            grouped++;
            assert_true(t->prefix_group[i] < 4);
            assert_int_equal(t->prefix_len[i], 600);
            assert_int_equal(t->prompt_len[i], 601); /* fixed:512 lengthened past the prefix */
        } else
            assert_int_equal(t->prefix_len[i], 0);
    }
    assert_near((double)p1 / (double)t->n, 0.2, 0.01);
    assert_near((double)grouped / (double)t->n, 0.5, 0.01);
}

static void expect_parse_error(int rc, const char *err, const char *msg)
{
    assert_int_equal(rc, SL_EINVAL);
    assert_string_equal(err, msg);
}

static void test_gen_spec_errors_say_what_is_accepted(void **state)
{
    wl_arrival_spec_t a;
    wl_length_spec_t l;
    wl_gen_config_t c;
    char err[256];
    wl_gen_config_default(&c);
    expect_parse_error(wl_parse_arrival("poisson", &a, err, sizeof err), err,
                       "'poisson': poisson needs a RATE > 0 in requests/s (e.g. poisson:5)");
    expect_parse_error(wl_parse_arrival("bursty:3", &a, err, sizeof err), err,
                       "'bursty:3': unknown arrival process 'bursty' (accepted: poisson:RATE, gamma:RATE,CV, "
                       "constant:RATE, replay:FILE[,SCALE])");
    expect_parse_error(wl_parse_length("lognormal:1155", &l, err, sizeof err), err,
                       "'lognormal:1155': lognormal needs MEAN,SD of the lengths, MEAN > 0, SD >= 0 (e.g. "
                       "lognormal:1155,1100)");
    expect_parse_error(wl_parse_length("fixed:0", &l, err, sizeof err), err,
                       "'fixed:0': fixed needs an integer N >= 1 (e.g. fixed:128)");
    expect_parse_error(wl_parse_length("uniform:9,3", &l, err, sizeof err), err,
                       "'uniform:9,3': uniform needs integers A,B with 1 <= A <= B (e.g. uniform:16,512)");
    expect_parse_error(wl_parse_priority_mix("0:0.8,1", &c, err, sizeof err), err,
                       "priority mix '0:0.8,1': expected PRIORITY:WEIGHT pairs separated by ',' (e.g. 0:0.8,1:0.2)");
    expect_parse_error(wl_parse_prefix_groups("4:0:0.5", &c, err, sizeof err), err,
                       "prefix groups '4:0:0.5': expected GROUPS:LEN:FRAC with GROUPS >= 1, LEN >= 1 tokens, 0 < "
                       "FRAC <= 1 (e.g. 8:512:0.5)");
    assert_int_equal(c.n_priorities, 0);
    assert_int_equal(c.prefix_groups, 0);
}

/* The type-7 median of n ints (sorted in place). */
static int cmp_int(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}
static double median(int *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_int);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static void test_presets_match_published_means_and_medians(void **state)
{
    wl_trace_t *t = *state;
    for (size_t i = 0; i < wl_preset_count(); i++) {
        const wl_preset_t *p = wl_preset_at(i);
        /* means without the length cap (it trims heavy tails), medians with the default cap */
        assert_int_equal(wl_preset_generate(p->name, 200000, 0, 11, -1, t), SL_OK);
        double mean, sd;
        moments(t->prompt_len, t->n, &mean, &sd);
        assert_near(mean, p->prompt_mean, p->prompt_mean * 0.03);
        moments(t->output_len, t->n, &mean, &sd);
        assert_near(mean, p->output_mean, p->output_mean * 0.03);
        assert_int_equal(wl_preset_generate(p->name, 200000, 0, 11, 0, t), SL_OK);
        assert_near(median(t->prompt_len, t->n), p->prompt_median, p->prompt_median * 0.03);
        assert_near(median(t->output_len, t->n), p->output_median, p->output_median * 0.03 + 0.5);
        assert_near(mean_gap(t), 1.0 / p->default_rate, 0.02 / p->default_rate);
    }
}

static void test_presets_unknown_name_lists_the_presets(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(wl_preset_generate("chatty", 10, 0, 1, 0, t), SL_ENOTFOUND);
    assert_string_equal(wl_trace_errmsg(t), "unknown preset 'chatty' (accepted: chat, code, sharegpt, summarize)");
    assert_int_equal(wl_preset_generate("chat", 0, 2.5, 1, 0, t), SL_OK);
    assert_int_equal(t->n, wl_preset_find("chat")->default_n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gen_same_seed_gives_the_same_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_trace_survives_the_csv_round_trip_bit_for_bit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_survives_every_failed_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_poisson_gamma_constant_rates_and_burstiness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_length_distributions_match_their_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_caps_prompt_plus_output_at_max_seq_len, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_resample_draws_rows_jointly_and_replay_scales_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_priority_mix_and_prefix_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gen_spec_errors_say_what_is_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presets_match_published_means_and_medians, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presets_unknown_name_lists_the_presets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
