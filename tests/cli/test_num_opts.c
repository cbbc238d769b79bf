/* test_num_opts.c — numeric flags (cli_num_opt): a value out of range, fractional where a whole
 * number is wanted, or not a number is refused with the flag, what it accepts and what it got
 * (exit 2 from `sim`, `plan` and `tune` alike); an unknown flag is named as unknown; `trace gen
 * -n 0` is refused rather than read as the default. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cli/cli.h"
#include "tests/cli/capture.h"

static void test_parses_into_each_kind_and_names_the_range(void **state)
{
    (void)state;
    int i = 0;
    long l = 0;
    uint64_t u = 0;
    double d = 0;
    const cli_num_opt_t opts[] = {
        {"--count", "-c", 1, 64, false, 'i', &i},
        {"--limit", NULL, 10, 1e7, false, 'l', &l},
        {"--seed", NULL, 0, CLI_MAX_SEED, false, 'u', &u},
        {"--rate", NULL, 0, INFINITY, true, 'd', &d},
    };
    const size_t n = sizeof opts / sizeof opts[0];
    char err[256] = "";
    assert_int_equal(cli_num_opt(opts, n, "-c", "12", err, sizeof err), 1);
    assert_int_equal(cli_num_opt(opts, n, "--limit", "1e6", err, sizeof err), 1);
    assert_int_equal(cli_num_opt(opts, n, "--seed", "9007199254740992", err, sizeof err), 1);
    assert_int_equal(cli_num_opt(opts, n, "--rate", "0.25", err, sizeof err), 1);
    assert_true(i == 12 && l == 1000000 && u == 9007199254740992ULL && d == 0.25);
    assert_int_equal(cli_num_opt(opts, n, "--other", "1", err, sizeof err), 0);

    static const struct { const char *flag, *value, *message; } bad[] = {
        {"--count", "0", "--count: expected an integer in 1..64, got '0'"},
        {"-c", "2.5", "-c: expected an integer in 1..64, got '2.5'"},
        {"--limit", "1e8", "--limit: expected an integer in 10..10000000, got '1e8'"},
        {"--seed", "-1", "--seed: expected an integer in 0..9007199254740992, got '-1'"},
        {"--rate", "0", "--rate: expected a number > 0, got '0'"},
        {"--rate", "fast", "--rate: expected a number > 0, got 'fast'"},
        {"--rate", "nan", "--rate: expected a number > 0, got 'nan'"},
        {"--rate", "inf", "--rate: expected a number > 0, got 'inf'"},
        {"--rate", "", "--rate: expected a number > 0, got ''"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(cli_num_opt(opts, n, bad[k].flag, bad[k].value, err, sizeof err), -1);
        assert_string_equal(err, bad[k].message);
    }
    assert_true(i == 12 && l == 1000000 && d == 0.25); /* untouched by the refusals */
}

static void test_sim_plan_and_tune_name_the_bad_flag(void **state)
{
    (void)state;
    EXPECT(2, "sluice sim: --replicas: expected an integer in 1..4096, got '0'", cmd_sim, "sim", "--replicas", "0");
    EXPECT(2, "sluice sim: unknown option '--warp'", cmd_sim, "sim", "--warp", "9");
    EXPECT(2, "sluice plan: --max-replicas: expected an integer in 1..65536, got '1.5'", cmd_plan, "plan", "--rate",
           "1", "--max-replicas", "1.5");
    EXPECT(2, "--budget: expected an integer in 2..100000, got '-5'", cmd_tune, "tune", "--budget", "-5");
    EXPECT(2, "sluice trace: -n expects a number of requests >= 1, got '0'", cmd_trace, "trace", "gen", "-n", "0",
           "-o", "/tmp/sluice_num_opts.csv"); /* not 1000 */
    assert_int_equal(access("/tmp/sluice_num_opts.csv", F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_into_each_kind_and_names_the_range),
        cmocka_unit_test(test_sim_plan_and_tune_name_the_bad_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
