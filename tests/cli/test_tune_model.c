/* test_tune_model.c — `sluice tune --model M` simulates model M (not only the scheduler's model
 * knob): every recorded run names M. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "analysis/store.h"
#include "cli/cli.h"
#include "sched/status.h"

static void test_tune_model_reaches_the_simulator(void **state)
{
    char dir[] = "/tmp/sluice_tune_model_XXXXXX", db[96], cmd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/t.db", dir);
    char *argv[] = {"tune", "--model", "tinyllama-1.1b", "--preset", "chat", "-n", "40", "--rate", "0.5",
                    "--slo", "ttft_p99=60s", "--budget", "2", "--jobs", "1", "--strategies", "continuous",
                    "--calib-dir", "none", "--db", db};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    assert_int_equal(cmd_tune(argc, argv), 0);
    an_store_t *st;
    assert_int_equal(an_store_open(db, &st), SL_OK);
    an_run_t *runs;
    size_t n;
    assert_int_equal(an_run_list(st, 0, &runs, &n), SL_OK);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(runs[i].info.model, "tinyllama-1.1b");
    an_run_list_free(runs, n);
    an_store_close(st);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tune_model_reaches_the_simulator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
