/* test_trace.c — the trace CSV reader (every error kind, exact messages), writer, hash, helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched/status.h"

/* Sanitizer builds (make asan) run several times slower; speed limits scale by this. */
#if defined(__SANITIZE_ADDRESS__)
#define SPEED_SLACK 5.0
#else
#define SPEED_SLACK 1.0
#endif
#include "workloads/trace.h"

#define AZURE "../shared/traces/azure_conv_2023.csv"

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

static int parse(wl_trace_t *t, const char *csv)
{
    return wl_trace_read_buffer(t, "t.csv", csv, strlen(csv));
}

static void expect_error(wl_trace_t *t, const char *csv, const char *msg)
{
    assert_int_equal(parse(t, csv), SL_EFORMAT);
    assert_string_equal(wl_trace_errmsg(t), msg);
    assert_int_equal(t->n, 0);
}

static void test_trace_reads_vidur_columns_with_defaults(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(parse(t, "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,374,44\n4.314579,396,109\n"), SL_OK);
    assert_int_equal(t->n, 2);
    assert_true(t->arrival[1] == 4.314579);
    assert_int_equal(t->prompt_len[1], 396);
    assert_int_equal(t->output_len[0], 44);
    assert_int_equal(t->priority[0], 0);
    assert_int_equal(t->prefix_group[1], -1);
    assert_int_equal(t->prefix_len[1], 0);
}

static void test_trace_reads_optional_and_unknown_columns_in_any_order(void **state)
{
    wl_trace_t *t = *state;
    const char *csv = "\xEF\xBB\xBF"
                      "id, num_decode_tokens ,prefix_len,arrived_at,priority,num_prefill_tokens,prefix_group\r\n"
                      "a,10,4,0.5,2,20,3\r\n"
                      "\r\n"
                      "b,11,,1e0,-1,21,\r\n";
    assert_int_equal(parse(t, csv), SL_OK);
    assert_int_equal(t->n, 2);
    assert_true(t->arrival[0] == 0.5 && t->arrival[1] == 1.0);
    assert_int_equal(t->prompt_len[0], 20);
    assert_int_equal(t->output_len[1], 11);
    assert_int_equal(t->priority[0], 2);
    assert_int_equal(t->priority[1], -1);
    assert_int_equal(t->prefix_group[0], 3);
    assert_int_equal(t->prefix_len[0], 4);
    assert_int_equal(t->prefix_group[1], -1);
    assert_int_equal(t->prefix_len[1], 0);
}

static void test_trace_error_non_numeric_names_line_and_column(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,x,2\n",
                 "t.csv:3: column 2 (num_prefill_tokens): expected an integer >= 1, got 'x'");
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\nabc,1,1\n",
                 "t.csv:2: column 1 (arrived_at): expected a non-negative number of seconds, got 'abc'");
}

static void test_trace_error_negative_values(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n-1.5,1,1\n",
                 "t.csv:2: column 1 (arrived_at): expected a non-negative number of seconds, got '-1.5'");
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,-3\n",
                 "t.csv:2: column 3 (num_decode_tokens): expected an integer >= 1, got '-3'");
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens,prefix_len\n0,5,3,-2\n",
                 "t.csv:2: column 4 (prefix_len): expected an integer >= 0, got '-2'");
}

static void test_trace_error_zero_tokens(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,0,1\n",
                 "t.csv:2: column 2 (num_prefill_tokens): expected an integer >= 1, got '0'");
}

static void test_trace_error_missing_column(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n\n2,3\n",
                 "t.csv:4: column 3 (num_decode_tokens): missing (the row has 2 columns, the header 3)");
    expect_error(*state, "arrived_at,num_prefill_tokens\n0,1\n",
                 "t.csv:1: the header has no column 'num_decode_tokens' (it reads 'arrived_at,num_prefill_tokens')");
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1,9\n",
                 "t.csv:2: the row has more than the header's 3 columns");
}

static void test_trace_short_row_may_omit_optional_columns(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(parse(t, "arrived_at,num_prefill_tokens,num_decode_tokens,priority\n0,1,1\n"), SL_OK);
    assert_int_equal(t->priority[0], 0);
}

static void test_trace_error_arrival_going_backwards(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n4.5,1,1\n3.25,1,1\n",
                 "t.csv:3: column 1 (arrived_at): 3.25 is before the previous row's 4.5 (arrival times must not "
                 "decrease)");
}

static void test_trace_error_prefix_longer_than_prompt(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens,prefix_group,prefix_len\n0,10,1,0,11\n",
                 "t.csv:2: column 5 (prefix_len): 11 exceeds the prompt length 10");
}

static void test_trace_error_empty_trace_and_empty_file(void **state)
{
    expect_error(*state, "arrived_at,num_prefill_tokens,num_decode_tokens\n\n",
                 "t.csv: no requests (the file has a header but no rows)");
    expect_error(*state, "", "t.csv:1: empty file, expected a header naming arrived_at, num_prefill_tokens, "
                             "num_decode_tokens");
}

static void test_trace_error_missing_file(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(wl_trace_read_file(t, "/nonexistent/x.csv"), SL_EIO);
    assert_string_equal(wl_trace_errmsg(t), "/nonexistent/x.csv: cannot open: No such file or directory");
}

static void test_trace_loads_the_azure_conversation_trace(void **state)
{
    wl_trace_t *t = *state;
    if (access(AZURE, R_OK) != 0) {
        print_message("skipped: %s not found (../shared absent)\n", AZURE);
        skip();
    }
    assert_int_equal(wl_trace_read_file(t, AZURE), SL_OK);
    assert_int_equal(t->n, 19366);
    assert_int_equal(t->prompt_len[0], 374);
    assert_int_equal(t->output_len[0], 44);
    assert_true(t->arrival[t->n - 1] == 3501.721937);
    wl_trace_stats_t s;
    assert_int_equal(wl_trace_stats(t, &s), SL_OK);
    assert_true(s.prompt_mean > 1000 && s.prompt_mean < 1300);
}

static char *tmp_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/sluice_test_trace_%d_%s", (int)getpid(), name);
    return buf;
}

static void test_trace_write_then_read_round_trips(void **state)
{
    wl_trace_t *t = *state;
    wl_request_t rows[3] = {{0.125, 10, 5, 0, -1, 0}, {1.5, 20, 6, 1, 2, 8}, {2.000001, 30, 7, 0, 2, 8}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(wl_trace_append(t, &rows[i]), SL_OK);
    uint64_t h = wl_trace_hash(t);
    const char *path = tmp_path("rt.csv");
    assert_int_equal(wl_trace_write_file(t, path), SL_OK);
    wl_trace_t *u = wl_trace_create();
    assert_int_equal(wl_trace_read_file(u, path), SL_OK);
    assert_int_equal(u->n, 3);
    for (size_t i = 0; i < 3; i++) {
        wl_request_t r;
        wl_trace_get(u, i, &r);
        assert_true(r.arrival == rows[i].arrival);
        assert_int_equal(r.prompt_len, rows[i].prompt_len);
        assert_int_equal(r.output_len, rows[i].output_len);
        assert_int_equal(r.priority, rows[i].priority);
        assert_int_equal(r.prefix_group, rows[i].prefix_group);
        assert_int_equal(r.prefix_len, rows[i].prefix_len);
    }
    assert_true(wl_trace_hash(u) == h);
    wl_trace_free(u);
    unlink(path);
}

static void test_trace_writer_omits_default_optional_columns(void **state)
{
    wl_trace_t *t = *state;
    wl_request_t r = {0.5, 10, 5, 0, -1, 0};
    assert_int_equal(wl_trace_append(t, &r), SL_OK);
    const char *path = tmp_path("plain.csv");
    assert_int_equal(wl_trace_write_file(t, path), SL_OK);
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    unlink(path);
    assert_int_equal(got, strlen(buf));
    assert_string_equal(buf, "arrived_at,num_prefill_tokens,num_decode_tokens\n0.500000,10,5\n");
}

static void test_trace_writer_refuses_invalid_rows(void **state)
{
    wl_trace_t *t = *state;
    wl_request_t r = {0.5, 0, 5, 0, -1, 0};
    assert_int_equal(wl_trace_append(t, &r), SL_OK);
    assert_int_equal(wl_trace_write_file(t, tmp_path("bad.csv")), SL_EFORMAT);
    assert_string_equal(wl_trace_errmsg(t), "row 0: prompt length 0 and output length 5 must be >= 1");
    assert_int_equal(access(tmp_path("bad.csv"), F_OK), -1);
}

static void test_trace_hash_changes_with_any_field_not_with_spelling(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(parse(t, "arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,10,5\n"), SL_OK);
    uint64_t h1 = wl_trace_hash(t);
    assert_int_equal(parse(t, "num_decode_tokens,arrived_at,num_prefill_tokens\n5,0.50,10.0\n"), SL_OK);
    assert_true(wl_trace_hash(t) == h1);
    t->priority[0] = 1;
    assert_true(wl_trace_hash(t) != h1);
}

static void test_trace_rate_scale_truncate_and_stats(void **state)
{
    wl_trace_t *t = *state;
    assert_int_equal(parse(t, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,1\n2,20,2\n4,30,3\n8,40,4\n"),
                     SL_OK);
    assert_int_equal(wl_trace_rate_scale(t, 2.0), SL_OK);
    assert_true(t->arrival[3] == 4.0);
    assert_int_equal(wl_trace_rate_scale(t, 0), SL_EINVAL);
    wl_trace_stats_t s;
    assert_int_equal(wl_trace_stats(t, &s), SL_OK);
    assert_int_equal(s.n, 4);
    assert_true(s.duration == 4.0);
    assert_true(s.rate == 0.75);
    assert_true(s.prompt_mean == 25.0);
    assert_true(s.prompt_median == 25.0);
    assert_true(s.prompt_p90 == 37.0);
    assert_int_equal(s.prompt_max, 40);
    assert_true(s.output_mean == 2.5);
    assert_int_equal(s.output_tokens, 10);
    wl_trace_truncate(t, 2);
    assert_int_equal(t->n, 2);
    wl_trace_truncate(t, 10);
    assert_int_equal(t->n, 2);
}

static void test_trace_read_survives_every_failed_allocation(void **state)
{
    wl_trace_t *t = *state;
    const char *csv = "id,arrived_at,num_prefill_tokens,num_decode_tokens,priority,a,b,c,d,e,f,g,h\n0,0,5,5,1\n";
    int rc = SL_ENOMEM;
    for (long k = 0; rc == SL_ENOMEM; k++) {
        wl_trace_t *fresh = wl_trace_create();
        assert_non_null(fresh);
        sl_alloc_fail_after(k);
        rc = parse(fresh, csv);
        sl_alloc_fail_after(-1);
        if (rc == SL_ENOMEM)
            assert_int_equal(fresh->n, 0);
        else
            assert_int_equal(rc, SL_OK);
        wl_trace_free(fresh);
    }
    assert_int_equal(parse(t, csv), SL_OK);
}

static void test_trace_reads_a_million_rows_in_under_two_seconds(void **state)
{
    wl_trace_t *t = *state;
    const size_t n = 1000000;
    char *buf = malloc(n * 32 + 64);
    assert_non_null(buf);
    size_t len = (size_t)sprintf(buf, "arrived_at,num_prefill_tokens,num_decode_tokens\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%.6f,%zu,%zu\n", (double)i * 0.013, 1 + i % 4000, 1 + i % 700);
    struct timespec a, b; /* CPU time: parallel builds may share the cores */
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    int rc = wl_trace_read_buffer(t, "big.csv", buf, len);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    free(buf);
    assert_int_equal(rc, SL_OK);
    assert_int_equal(t->n, n);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    print_message("1,000,000 rows parsed in %.3f s\n", secs);
    assert_true(secs < 2.0 * SPEED_SLACK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trace_reads_vidur_columns_with_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_reads_optional_and_unknown_columns_in_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_non_numeric_names_line_and_column, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_negative_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_zero_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_missing_column, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_short_row_may_omit_optional_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_arrival_going_backwards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_prefix_longer_than_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_empty_trace_and_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_error_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_loads_the_azure_conversation_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_write_then_read_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_writer_omits_default_optional_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_writer_refuses_invalid_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_hash_changes_with_any_field_not_with_spelling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_rate_scale_truncate_and_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_read_survives_every_failed_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_reads_a_million_rows_in_under_two_seconds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
