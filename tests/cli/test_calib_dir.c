/* test_calib_dir.c — `--calib-dir` of sim, plan and tune: a folder the user names whose tables
 * cannot be read is an error that names it (a typo must not fall back to the roofline unnoticed);
 * `--calib-dir none` prices with the roofline, without the note the default folder's absence
 * prints; the folder is recorded as escaped JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <cJSON.h>

#include "analysis/recommend.h"
#include "cli/cli.h"
#include "cli/sim_run.h"
#include "sched/status.h"
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
    EXPECT(2, "sluice plan: --calib-dir " MISSING ": ", cmd_plan, "plan", "--rate", "1", "--slo", "ttft_p99=1s",
           "--preset", "chat", "--limit", "20", "--gpus", "a100-80gb", "--calib-dir", MISSING, "-o",
           "/tmp/sluice_calib_dir_plan");
    EXPECT(2, "sluice tune: --calib-dir " MISSING ": ", cmd_tune, "tune", "--preset", "chat", "-n", "20", "--slo",
           "ttft_p99=1s", "--budget", "2", "--db", "/tmp/sluice_calib_dir_tune.db", "--calib-dir", MISSING);
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

/* The folder is recorded with the run as an escaped JSON string: a path with a quote or a
 * backslash keeps the run's configuration readable (recommendations leave out unreadable ones). */
static void test_the_folder_is_recorded_as_escaped_json(void **state)
{
    (void)state;
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    char json[8192];
    assert_true(cli_sim_config_json(&cfg, "/tmp/a\"b\\c", json, sizeof json));
    assert_non_null(strstr(json, "\"calib_dir\": \"/tmp/a\\\"b\\\\c\""));
    cJSON *root = cJSON_Parse(json);
    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(root, "calib_dir")->valuestring, "/tmp/a\"b\\c");
    cJSON_Delete(root);
    sched_config_t sc = sched_config_default();
    char err[256];
    assert_int_equal(an_reco_apply_config_json(json, &sc, err, sizeof err), SL_OK);
    assert_false(cli_sim_config_json(&cfg, "/tmp", json, 40));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_named_folder_that_cannot_be_read_is_an_error),
        cmocka_unit_test(test_none_prices_with_the_roofline_quietly),
        cmocka_unit_test(test_the_folder_is_recorded_as_escaped_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
