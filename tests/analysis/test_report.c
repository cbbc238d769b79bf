/* test_report.c — regression verdicts (a planted 10% slower run fails, 2% passes), report pages
 * and charts (PNG + SVG; skipped without gnuplot), and refusal of unknown runs and foreign files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/chart.h"
#include "analysis/recommend.h"
#include "analysis/report.h"
#include "sched/status.h"

typedef struct fixture {
    char dir[64], db[96];
    an_store_t *st;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice_report_XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db, sizeof f->db, "%s/sluice.db", f->dir);
    if (an_store_open(f->db, &f->st) != SL_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    an_store_close(f->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Records a run of 200 requests whose every latency is multiplied by slow (1 = reference). */
static int64_t plant_run(an_store_t *st, double slow, const char *strategy)
{
    an_run_info_t info = {.mode = "sim", .hardware = "a100-80gb", .model = "llama2-7b", .strategy = strategy,
                          .config_json = "{\"max_num_seqs\": 64}", .workload_name = "w.csv", .workload_hash = 42};
    an_request_rec_t req[200];
    an_step_rec_t step[100];
    for (int i = 0; i < 200; i++)
        req[i] = (an_request_rec_t){.req_id = i, .arrival = i * 0.1, .first_scheduled = i * 0.1 + 0.05 * slow,
                                    .first_token = i * 0.1 + (0.1 + 0.001 * (i % 17)) * slow,
                                    .finished = i * 0.1 + (0.1 + 0.001 * (i % 17)) * slow + 99 * 0.02 * slow,
                                    .prompt_len = 100, .output_len = 100, .finish_reason = 3};
    for (int i = 0; i < 100; i++)
        step[i] = (an_step_rec_t){.seq_no = i, .t_start = i * 0.2, .t_end = i * 0.2 + 0.02, .n_seqs = 1 + i % 8,
                                  .n_tokens = 8, .kv_used_blocks = 10 + i % 30};
    an_metrics_opts_t mo;
    an_metrics_opts_default(&mo);
    an_summary_t s;
    an_metrics_compute(req, 200, step, 100, &mo, &s);
    /* a slower run also completes the same work later: throughput falls by the same factor */
    s.request_throughput /= slow, s.output_tps /= slow;
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_add_requests(st, id, req, 200), SL_OK);
    assert_int_equal(an_run_add_steps(st, id, step, 100), SL_OK);
    assert_int_equal(an_run_finish(st, id, &s), SL_OK);
    return id;
}

static void test_verdict_flags_10_percent_slower_and_passes_2(void **state)
{
    fixture_t *f = *state;
    int64_t base = plant_run(f->st, 1.0, "continuous"), slow = plant_run(f->st, 1.10, "continuous"),
            near = plant_run(f->st, 1.02, "continuous");
    an_run_t b, s, n;
    assert_int_equal(an_run_get(f->st, base, &b), SL_OK);
    assert_int_equal(an_run_get(f->st, slow, &s), SL_OK);
    assert_int_equal(an_run_get(f->st, near, &n), SL_OK);
    an_verdict_t v;
    an_report_compare(&b.summary, &s.summary, 0.05, &v);
    assert_true(v.n_regressed >= 4); /* throughput x2 and p99 TTFT, E2E; TPOT too */
    assert_true(v.row[0].regressed && v.row[0].delta < -0.05);
    an_report_compare(&b.summary, &n.summary, 0.05, &v);
    assert_int_equal(v.n_regressed, 0);
    an_report_compare(&b.summary, &b.summary, 0.0, &v);
    assert_int_equal(v.n_regressed, 0);
    an_run_clear(&b), an_run_clear(&s), an_run_clear(&n);
}

static void test_report_writes_page_charts_and_verdict(void **state)
{
    fixture_t *f = *state;
    int64_t base = plant_run(f->st, 1.0, "continuous"), slow = plant_run(f->st, 1.10, "naive");
    char out[160], err[512], path[256];
    snprintf(out, sizeof out, "%s/rep", f->dir);
    bool charts = an_chart_available();
    if (!charts)
        fprintf(stderr, "SKIP charts: gnuplot not found on PATH (install gnuplot-nox)\n");
    an_report_opts_t o = {.run_id = slow, .baseline_id = base, .format = AN_REPORT_HTML, .dir = out,
                          .threshold = 0.05, .charts = charts};
    an_report_result_t res;
    assert_int_equal(an_report_write(f->st, &o, &res, err, sizeof err), SL_OK);
    assert_true(res.has_verdict);
    assert_true(res.verdict.n_regressed > 0);
    struct stat sb;
    assert_int_equal(stat(res.page, &sb), 0);
    if (charts) {
        const char *stems[] = {"cdf_ttft", "cdf_tpot", "cdf_e2e", "kv_time", "batch_time", "strategies"};
        for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++)
            for (int k = 0; k < 2; k++) {
                snprintf(path, sizeof path, "%s/%s.%s", out, stems[i], k ? "svg" : "png");
                assert_int_equal(stat(path, &sb), 0);
                assert_true(sb.st_size > 100);
            }
        assert_int_equal(res.n_charts, 6);
    }
}

static void test_report_refuses_unknown_run_and_foreign_files(void **state)
{
    fixture_t *f = *state;
    char out[160], err[512], path[160];
    snprintf(out, sizeof out, "%s/none", f->dir);
    an_report_opts_t o = {.run_id = 999, .dir = out, .threshold = 0.05};
    an_report_result_t res;
    assert_int_equal(an_report_write(f->st, &o, &res, err, sizeof err), SL_ENOTFOUND);
    assert_non_null(strstr(err, "no run 999"));
    assert_int_not_equal(access(out, F_OK), 0); /* nothing written */
    an_store_t *st;
    snprintf(path, sizeof path, "%s/missing.db", f->dir);
    assert_int_equal(an_store_open_existing(path, &st, err, sizeof err), SL_ENOTFOUND);
    assert_int_not_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/empty.db", f->dir);
    fclose(fopen(path, "w"));
    assert_int_equal(an_store_open_existing(path, &st, err, sizeof err), SL_EDB);
    assert_non_null(strstr(err, "empty database"));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 0); /* still empty */
    snprintf(path, sizeof path, "%s/foreign.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(an_store_open_existing(path, &st, err, sizeof err), SL_EDB);
    assert_non_null(strstr(err, "not a sluice run store"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verdict_flags_10_percent_slower_and_passes_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_writes_page_charts_and_verdict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_refuses_unknown_run_and_foreign_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
