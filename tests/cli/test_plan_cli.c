/* test_plan_cli.c — `sluice plan` on a trace holding a request longer than the model's context:
 * that request is left out of every option (a plan is still found), while the answer for the
 * rest is unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/cli.h"

/* 200 requests at 2 req/s of 200 + 50 tokens; with_long: request 100 asks for 5000 + 50 tokens,
 * over llama2-7b's 4096. */
static void write_trace(const char *path, int with_long)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "arrived_at,num_prefill_tokens,num_decode_tokens\n");
    for (int i = 0; i < 200; i++)
        fprintf(f, "%.3f,%d,50\n", i * 0.5, with_long && i == 100 ? 5000 : 200);
    fclose(f);
}

static int plan_replicas(const char *dir, const char *trace)
{
    char out[128], report[160];
    snprintf(out, sizeof out, "%s/plan", dir);
    char *argv[] = {"plan", "--rate", "8", "--slo", "ttft_p99=2s,tpot_p99=200ms", "--gpus", "a100-80gb",
                    "--trace", (char *)trace, "--calib-dir", "none", "-o", out};
    assert_int_equal(cmd_plan((int)(sizeof argv / sizeof argv[0]), argv), 0);
    snprintf(report, sizeof report, "%s/plan.md", out);
    FILE *f = fopen(report, "r");
    assert_non_null(f);
    char line[512];
    int replicas = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "| a100-80gb |", 13) == 0)
            sscanf(line, "| a100-80gb | %*d | %*s | %d", &replicas);
    fclose(f);
    return replicas;
}

static void test_plan_leaves_out_requests_over_the_context(void **state)
{
    char dir[] = "/tmp/sluice_plan_cli_XXXXXX", plain[96], with_long[96], cmd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(plain, sizeof plain, "%s/plain.csv", dir);
    snprintf(with_long, sizeof with_long, "%s/long.csv", dir);
    write_trace(plain, 0);
    write_trace(with_long, 1);
    int base = plan_replicas(dir, plain);
    assert_true(base >= 1);
    assert_int_equal(plan_replicas(dir, with_long), base);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_leaves_out_requests_over_the_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
