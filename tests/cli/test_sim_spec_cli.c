/* test_sim_spec_cli.c — `sluice sim --spec-acceptance A`: speculation without an acceptance is an
 * error (exit 2, `sim`, `tune` and `plan` alike) that names the flag; an acceptance outside 0..1
 * is refused; a recorded run's configuration says which acceptance it assumed. */
#include <fcntl.h>
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
#include "tests/cli/capture.h"

static void test_speculation_needs_an_acceptance(void **state)
{
    EXPECT(2, "num_speculative_tokens 4 needs --spec-acceptance", cmd_sim, "sim", "--preset", "chat", "-n", "20",
           "--no-record", "--num-speculative-tokens", "4");
    EXPECT(2, "num_speculative_tokens 2 needs --spec-acceptance", cmd_tune, "tune", "--preset", "chat", "-n", "20",
           "--slo", "ttft_p99=1s", "--num-speculative-tokens", "2");
    EXPECT(2, "num_speculative_tokens 3 needs --spec-acceptance", cmd_plan, "plan", "--rate", "1", "--slo",
           "ttft_p99=1s", "--limit", "20", "--num-speculative-tokens", "3");
    EXPECT(2, "--spec-acceptance: expected a number in 0..1, got '1.5'", cmd_sim, "sim", "--preset", "chat", "-n",
           "20", "--no-record", "--num-speculative-tokens", "4", "--spec-acceptance", "1.5");
    /* without drafts the flag is optional, and ignored when given */
    EXPECT(0, "", cmd_sim, "sim", "--preset", "chat", "-n", "20", "--no-record");
}

static void test_recorded_run_says_its_acceptance(void **state)
{
    char dir[] = "/tmp/sluice_spec_cli_XXXXXX", db[96], cmd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/s.db", dir);
    EXPECT(0, "", cmd_sim, "sim", "--preset", "chat", "-n", "40", "--rate", "1", "--db", db, "--calib-dir", "none",
           "--num-speculative-tokens", "4", "--spec-acceptance", "0.8");
    EXPECT(0, "", cmd_sim, "sim", "--preset", "chat", "-n", "40", "--rate", "1", "--db", db, "--calib-dir", "none");
    an_store_t *st;
    assert_int_equal(an_store_open(db, &st), SL_OK);
    an_run_t *runs;
    size_t n;
    assert_int_equal(an_run_list(st, 0, &runs, &n), SL_OK);
    assert_int_equal(n, 2); /* newest first */
    assert_non_null(strstr(runs[1].info.config_json, "\"spec_acceptance\": 0.8,"));
    assert_non_null(strstr(runs[1].info.config_json, "\"num_speculative_tokens\": 4"));
    assert_non_null(strstr(runs[0].info.config_json, "\"spec_acceptance\": 0,"));
    /* the speculating run decodes in fewer steps */
    assert_true(runs[1].summary.n_steps < runs[0].summary.n_steps);
    an_run_list_free(runs, n);
    an_store_close(st);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_speculation_needs_an_acceptance),
        cmocka_unit_test(test_recorded_run_says_its_acceptance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
