/* test_prices.c — the price table: defaults equal docs/prices.csv, bad rows named by line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "analysis/prices.h"
#include "sched/status.h"

static void test_prices_builtin_matches_docs(void **state)
{
    (void)state;
    an_prices_t b, d;
    char err[256];
    an_prices_builtin(&b);
    assert_int_equal(b.n, 3);
    assert_non_null(an_prices_find(&b, "a100-40gb"));
    assert_non_null(an_prices_find(&b, "a100-80gb"));
    assert_non_null(an_prices_find(&b, "h100-sxm"));
    assert_int_equal(an_prices_load("docs/prices.csv", &d, err, sizeof err), SL_OK);
    assert_int_equal(d.n, b.n);
    for (int i = 0; i < b.n; i++) {
        assert_string_equal(d.row[i].gpu, b.row[i].gpu);
        assert_true(d.row[i].usd_per_gpu_hour == b.row[i].usd_per_gpu_hour);
        assert_string_equal(d.row[i].date, b.row[i].date);
    }
}

static void expect_error(const char *text, const char *needle)
{
    an_prices_t p;
    char err[256] = "";
    assert_int_equal(an_prices_parse(text, "p.csv", &p, err, sizeof err), SL_EFORMAT);
    if (!strstr(err, needle))
        fail_msg("expected '%s' in '%s'", needle, err);
}

static void test_prices_bad_rows_name_their_line(void **state)
{
    (void)state;
    const char *h = "gpu,usd_per_gpu_hour,source,date\n";
    char buf[256];
    snprintf(buf, sizeof buf, "# c\n%sa100-80gb,1.5,x,2025-01-01\nh100-sxm,abc,x,2025-01-01\n", h);
    expect_error(buf, "p.csv:4: usd_per_gpu_hour: expected a positive number, got 'abc'");
    snprintf(buf, sizeof buf, "%sa100-80gb,-2,x,2025-01-01\n", h);
    expect_error(buf, "p.csv:2: usd_per_gpu_hour");
    snprintf(buf, sizeof buf, "%sa100-80gb,2\n", h);
    expect_error(buf, "p.csv:2: expected 4 fields");
    snprintf(buf, sizeof buf, "%sa100-80gb,2,x,d\na100-80gb,3,y,d\n", h);
    expect_error(buf, "p.csv:3: gpu 'a100-80gb' is listed twice");
    expect_error("gpu,price\n", "p.csv:1: expected the header");
    expect_error("", "empty price table");
    an_prices_t p;
    char err[128];
    snprintf(buf, sizeof buf, "\n%s\n  h100-sxm , 2.5 , list , 2025-02-02 \r\n", h);
    assert_int_equal(an_prices_parse(buf, "p.csv", &p, err, sizeof err), SL_OK);
    assert_true(an_prices_find(&p, "h100-sxm")->usd_per_gpu_hour == 2.5);
    assert_int_equal(an_prices_load("/nonexistent/p.csv", &p, err, sizeof err), SL_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prices_builtin_matches_docs),
        cmocka_unit_test(test_prices_bad_rows_name_their_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
