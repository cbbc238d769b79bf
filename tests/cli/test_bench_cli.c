/* test_bench_cli.c — `sluice bench --repeat N`: bad values are refused naming the flag and the
 * value; a repeated concurrency sweep runs its levels interleaved, round by round, and its table
 * prints each level's median over the rounds (one of the runs' own figures), their range, and the
 * median of the rounds' ratios to the first level. The sweep needs
 * ../shared/models/stories260K.gguf and says that it was skipped when it is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "tests/cli/capture.h"

#define MODEL "../shared/models/stories260K.gguf"

static void expect(int argc, char **argv, int want_rc, const char *want_text)
{
    int rc;
    char *text = capture(cmd_bench, argc, argv, &rc);
    if (rc != want_rc || !strstr(text, want_text))
        fail_msg("sluice bench: exit %d (want %d), output lacks \"%s\":\n%s", rc, want_rc, want_text, text);
    free(text);
}

static void test_bench_refuses_a_bad_repeat(void **state)
{
    static const struct { const char *value, *says; } bad[] = {
        {"0", "sluice bench: --repeat: expected a number in 1..50, got '0'"},
        {"51", "sluice bench: --repeat: expected a number in 1..50, got '51'"},
        {"x", "sluice bench: --repeat: expected a number in 1..50, got 'x'"},
        {"2.5", "sluice bench: --repeat: expected a whole number of rounds, got '2.5'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"bench", "-m", MODEL, "--concurrency", "1", "--repeat", (char *)bad[i].value};
        expect(7, argv, 2, bad[i].says);
    }
    char *preset[] = {"bench", "-m", MODEL, "--preset", "chat", "--repeat", "2"};
    expect(7, preset, 2, "sluice bench: --repeat repeats a --concurrency sweep; a trace or preset runs once");
}

/* The "X output tok/s over wall time" figures of the runs, in the order they ran. */
static int run_figures(const char *text, double *v, int max)
{
    int n = 0;
    for (const char *p = text; n < max && (p = strstr(p, "  wall ")); p++) {
        double wall, tps;
        assert_int_equal(sscanf(p, "  wall %lf s, %lf output tok/s", &wall, &tps), 2);
        v[n++] = tps;
    }
    return n;
}

static double median3(double a, double b, double c)
{
    return a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}

static void test_bench_repeat_interleaves_the_levels_and_prints_medians(void **state)
{
    if (access(MODEL, R_OK) != 0) {
        print_message("SKIPPED: %s is absent\n", MODEL);
        skip();
    }
    char *argv[] = {"bench", "-m", MODEL, "--concurrency", "1,2", "--repeat", "3", "--requests", "2",
                    "--prompt-len", "4", "--max-tokens", "4", "--threads", "1", "--no-record"};
    int rc;
    char *text = capture(cmd_bench, (int)(sizeof argv / sizeof argv[0]), argv, &rc);
    assert_int_equal(rc, 0);
    /* rounds in order, each with every level: c=1, c=2, c=1, c=2, c=1, c=2 */
    const char *at = text;
    for (int round = 1; round <= 3; round++)
        for (int c = 1; c <= 2; c++) {
            char head[64];
            snprintf(head, sizeof head, "round %d of 3, c=%d\n", round, c);
            const char *p = strstr(at, head);
            if (!p)
                fail_msg("no \"%s\" after the runs before it:\n%s", head, text);
            at = p + strlen(head);
        }
    double run[6];
    assert_int_equal(run_figures(text, run, 6), 6);
    const char *table = strstr(text, "concurrency sweep (output tok/s over wall time; median of 3 rounds, levels interleaved):\n");
    assert_non_null(table);
    for (int c = 1; c <= 2; c++) {
        char head[32];
        snprintf(head, sizeof head, "  c=%d ", c);
        const char *line = strstr(table, head);
        assert_non_null(line);
        double med, ratio, lo, hi;
        int level;
        assert_int_equal(sscanf(line, "  c=%d %lf tok/s %lfx c=1 (%lf..%lf tok/s)", &level, &med, &ratio, &lo, &hi), 5);
        const double a = run[c - 1], b = run[c + 1], d = run[c + 3]; /* this level's three runs */
        /* the median, lowest and highest: its runs' own figures, as they printed them */
        const double expect_v[3] = {median3(a, b, d), fmin(a, fmin(b, d)), fmax(a, fmax(b, d))}, got_v[3] = {med, lo, hi};
        for (int k = 0; k < 3; k++) {
            char want[32], got[32];
            snprintf(want, sizeof want, "%.1f", expect_v[k]);
            snprintf(got, sizeof got, "%.1f", got_v[k]);
            assert_string_equal(got, want);
        }
        const double want_ratio = median3(run[c - 1] / run[0], run[c + 1] / run[2], run[c + 3] / run[4]);
        if (ratio < want_ratio - 0.006 || ratio > want_ratio + 0.006)
            fail_msg("c=%d: ratio %.2f, the rounds' ratios have median %.4f", c, ratio, want_ratio);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bench_refuses_a_bad_repeat),
        cmocka_unit_test(test_bench_repeat_interleaves_the_levels_and_prints_medians),
    };
    return cmocka_run_group_tests_name("bench_cli", tests, NULL, NULL);
}
