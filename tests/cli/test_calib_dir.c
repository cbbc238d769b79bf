/* test_calib_dir.c — `--calib-dir` of sim, plan and tune: a folder the user names whose tables
 * cannot be read is an error that names it (a typo must not fall back to the roofline unnoticed);
 * `--calib-dir none` prices with the roofline, without the note the default folder's absence
 * prints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cli/cli.h"
#include "tests/cli/capture.h"

#define MISSING "/tmp/sluice_no_such_calibration_dir"

static void test_a_named_folder_that_cannot_be_read_is_an_error(void **state)
{
    (void)state;
    int rc;
    char *out = CAPTURE(cmd_sim, rc, "sim", "--preset", "chat", "-n", "20", "--no-record", "--calib-dir", MISSING);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "sluice sim: --calib-dir " MISSING ": " MISSING "/a100/vidur_llama2-7b_mlp.csv"));
    assert_non_null(strstr(out, "(--calib-dir none prices with the roofline only)"));
    free(out);
    out = CAPTURE(cmd_plan, rc, "plan", "--rate", "1", "--slo", "ttft_p99=1s", "--preset", "chat", "--limit", "20",
                  "--gpus", "a100-80gb", "--calib-dir", MISSING, "-o", "/tmp/sluice_calib_dir_plan");
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "sluice plan: --calib-dir " MISSING ": "));
    free(out);
    out = CAPTURE(cmd_tune, rc, "tune", "--preset", "chat", "-n", "20", "--slo", "ttft_p99=1s", "--budget", "2",
                  "--db", "/tmp/sluice_calib_dir_tune.db", "--calib-dir", MISSING);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "sluice tune: --calib-dir " MISSING ": "));
    free(out);
    remove("/tmp/sluice_calib_dir_tune.db");
}

static void test_none_prices_with_the_roofline_quietly(void **state)
{
    (void)state;
    int rc;
    char *out = CAPTURE(cmd_sim, rc, "sim", "--preset", "chat", "-n", "20", "--no-record", "--calib-dir", "none");
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "calibration tables unavailable"));
    assert_non_null(strstr(out, "20 (20 completed, 0 rejected)"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_named_folder_that_cannot_be_read_is_an_error),
        cmocka_unit_test(test_none_prices_with_the_roofline_quietly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
