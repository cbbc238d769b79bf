/* test_store.c — the SQLite run store: lifecycle, failed runs, schema and foreign-file refusal, speed. */
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
#include <time.h>
#include <unistd.h>

#include "analysis/store.h"
#include "sched/status.h"

/* Sanitizer builds (make asan) run several times slower; speed limits scale by this. */
#if defined(__SANITIZE_ADDRESS__)
#define SPEED_SLACK 5.0
#else
#define SPEED_SLACK 1.0
#endif

typedef struct fixture {
    char dir[64];
    char path[96];
    an_store_t *st;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice_store_XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/sluice.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    an_store_close(f->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static an_store_t *open_ok(fixture_t *f)
{
    int rc = an_store_open(f->path, &f->st);
    if (rc)
        fail_msg("open: %s", an_store_errmsg(f->st));
    return f->st;
}

static const an_run_info_t info = {"sim", "a100-80gb", "llama2-7b", "continuous", "{\"block_size\":16}",
                                   "chat", 0xfedcba9876543210ULL, 42, "v0.1-3-gabc"};

static void make_requests(an_request_rec_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        r[i] = (an_request_rec_t){(int64_t)i, (int)(i % 2), 0, (double)i, i + 0.25, i + 0.5, i + 2.0,
                                  100 + (int)i, 10, 0, 0, 3};
}

static void make_steps(an_step_rec_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s[i] = (an_step_rec_t){0, (int64_t)i, i * 0.01, i * 0.01 + 0.01, 8, 256, 200, 7, 0, 30, 480, 400, 4000, 0};
}

static void test_store_run_lifecycle_round_trips_everything(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    assert_int_equal(an_store_schema_version(st), AN_SCHEMA_VERSION);
    an_request_rec_t reqs[3];
    an_step_rec_t steps[4];
    make_requests(reqs, 3);
    make_steps(steps, 4);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(id, 1);
    int64_t other;
    assert_int_equal(an_run_begin(st, &info, &other), SL_ESTATE);
    assert_int_equal(an_run_add_requests(st, id, reqs, 3), SL_OK);
    assert_int_equal(an_run_add_steps(st, id, steps, 4), SL_OK);
    an_summary_t sum;
    an_summary_init(&sum);
    sum.ttft_p99 = 0.75;
    sum.n_requests = 3;
    assert_int_equal(an_run_finish(st, id, &sum), SL_OK);
    an_store_close(st);

    st = open_ok(f);
    an_run_t r;
    assert_int_equal(an_run_get(st, id, &r), SL_OK);
    assert_string_equal(r.status, "ok");
    assert_null(r.error);
    assert_string_equal(r.info.mode, "sim");
    assert_string_equal(r.info.hardware, "a100-80gb");
    assert_string_equal(r.info.model, "llama2-7b");
    assert_string_equal(r.info.strategy, "continuous");
    assert_string_equal(r.info.config_json, "{\"block_size\":16}");
    assert_string_equal(r.info.workload_name, "chat");
    assert_string_equal(r.info.code_revision, "v0.1-3-gabc");
    assert_true(r.info.workload_hash == 0xfedcba9876543210ULL);
    assert_true(r.info.seed == 42);
    assert_int_equal(strlen(r.created_at), 19);
    assert_true(r.wall_seconds >= 0);
    assert_int_equal(r.has_summary, 1);
    assert_true(r.summary.ttft_p99 == 0.75);
    assert_true(r.summary.n_requests == 3);
    assert_true(isnan(r.summary.tpot_p99));
    an_run_clear(&r);

    an_request_rec_t *rq;
    an_step_rec_t *sp;
    size_t n;
    assert_int_equal(an_run_requests(st, id, &rq, &n), SL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(rq[2].req_id, 2);
    assert_int_equal(rq[1].replica, 1);
    assert_true(rq[2].first_token == 2.5 && rq[2].finished == 4.0);
    assert_int_equal(rq[2].prompt_len, 102);
    assert_int_equal(rq[0].finish_reason, 3);
    sl_free(rq);
    assert_int_equal(an_run_steps(st, id, &sp, &n), SL_OK);
    assert_int_equal(n, 4);
    assert_int_equal(sp[3].seq_no, 3);
    assert_int_equal(sp[3].kv_naive_slots, 4000);
    assert_true(sp[3].t_end == 0.04);
    sl_free(sp);
}

static void test_store_failed_run_keeps_no_rows_and_says_why(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    an_request_rec_t reqs[5];
    make_requests(reqs, 5);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_add_requests(st, id, reqs, 5), SL_OK);
    assert_int_equal(an_run_fail(st, id, "cost model: no profile for h200"), SL_OK);
    assert_int_equal(an_run_fail(st, id, "again"), SL_ESTATE);
    an_request_rec_t *rq;
    size_t n = 99;
    assert_int_equal(an_run_requests(st, id, &rq, &n), SL_OK);
    assert_int_equal(n, 0);
    assert_null(rq);
    an_run_t r;
    assert_int_equal(an_run_get(st, id, &r), SL_OK);
    assert_string_equal(r.status, "failed");
    assert_string_equal(r.error, "cost model: no profile for h200");
    assert_int_equal(r.has_summary, 0);
    an_run_clear(&r);
}

static void test_store_close_with_an_open_run_records_it_failed(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    an_request_rec_t reqs[2];
    make_requests(reqs, 2);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_add_requests(st, id, reqs, 2), SL_OK);
    an_store_close(st);
    st = open_ok(f);
    an_run_t *runs;
    size_t n;
    assert_int_equal(an_run_list(st, 10, &runs, &n), SL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].status, "failed");
    assert_string_equal(runs[0].error, "store closed while the run was open");
    an_run_list_free(runs, n);
}

static void test_store_lists_newest_first_and_gets_the_latest(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    for (int i = 0; i < 3; i++) {
        int64_t id;
        assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
        assert_int_equal(an_run_finish(st, id, NULL), SL_OK);
    }
    an_run_t *runs;
    size_t n;
    assert_int_equal(an_run_list(st, 2, &runs, &n), SL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(runs[0].id, 3);
    assert_int_equal(runs[1].id, 2);
    an_run_list_free(runs, n);
    an_run_t r;
    assert_int_equal(an_run_get(st, 0, &r), SL_OK);
    assert_int_equal(r.id, 3);
    an_run_clear(&r);
    assert_int_equal(an_run_get(st, 9, &r), SL_ENOTFOUND);
    char want[160];
    snprintf(want, sizeof want, "%s: no run 9", f->path);
    assert_string_equal(an_store_errmsg(st), want);
}

static void test_store_rejects_bad_mode_and_foreign_run_ids(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    an_run_info_t bad = info;
    bad.mode = "real-ish";
    int64_t id;
    assert_int_equal(an_run_begin(st, &bad, &id), SL_EINVAL);
    assert_string_equal(an_store_errmsg(st), "run mode must be 'sim' or 'real', got 'real-ish'");
    an_request_rec_t r[1];
    make_requests(r, 1);
    assert_int_equal(an_run_add_requests(st, 5, r, 1), SL_ESTATE);
}

/* Runs sql on the SQLite file at path, behind the store's back. */
static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", path, msg);
    sqlite3_close(db);
}

/* Opening f's file fails with SL_EDB and the message "<path><tail>". */
static void assert_open_refused(fixture_t *f, const char *tail)
{
    assert_int_equal(an_store_open(f->path, &f->st), SL_EDB);
    char want[200];
    snprintf(want, sizeof want, "%s%s", f->path, tail);
    assert_string_equal(an_store_errmsg(f->st), want);
}

static void test_store_refuses_a_newer_schema(void **state)
{
    fixture_t *f = *state;
    an_store_close(open_ok(f));
    f->st = NULL;
    exec_sql(f->path, "UPDATE schema_version SET version = 7");
    char tail[120];
    snprintf(tail, sizeof tail, " has schema 7, this sluice understands up to %d (use a newer sluice)",
             AN_SCHEMA_VERSION);
    assert_open_refused(f, tail);
}

static void test_store_refuses_a_file_that_is_not_a_database(void **state)
{
    fixture_t *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n0,1,1\n0,1,1\n0,1,1\n0,1,1\n0,1,1\n", fp);
    fclose(fp);
    assert_open_refused(f, ": not an SQLite database, so not a sluice run store");
}

static void test_store_refuses_an_sqlite_database_of_another_program(void **state)
{
    fixture_t *f = *state;
    exec_sql(f->path, "CREATE TABLE t(x)");
    assert_open_refused(f, ": an SQLite database but not a sluice run store (no schema_version table)");
}

static void test_store_calibration_and_recommendations(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    char *json;
    assert_int_equal(an_calib_load(st, "a100-80gb", "gemm", &json), SL_ENOTFOUND);
    assert_int_equal(an_calib_save(st, "a100-80gb", "gemm", "{\"eff\":0.7}"), SL_OK);
    assert_int_equal(an_calib_save(st, "a100-80gb", "gemm", "{\"eff\":0.8}"), SL_OK);
    assert_int_equal(an_calib_load(st, "a100-80gb", "gemm", &json), SL_OK);
    assert_string_equal(json, "{\"eff\":0.8}");
    sl_free(json);
    int64_t ids[2] = {1, 2}, rid;
    assert_int_equal(an_reco_save(st, ids, 2, "{\"strategy\":\"continuous\"}", &rid), SL_OK);
    assert_int_equal(rid, 1);
    assert_int_equal(an_reco_save(st, ids, 1, "{\"strategy\":\"naive\"}", &rid), SL_OK);
    int64_t got;
    assert_int_equal(an_reco_get(st, 0, &got, &json), SL_OK); /* the latest */
    assert_int_equal(got, 2);
    assert_string_equal(json, "{\"strategy\":\"naive\"}");
    sl_free(json);
    assert_int_equal(an_reco_get(st, 1, &got, &json), SL_OK);
    assert_string_equal(json, "{\"strategy\":\"continuous\"}");
    sl_free(json);
    assert_int_equal(an_reco_get(st, 9, &got, &json), SL_ENOTFOUND);
    assert_null(json);
    assert_non_null(strstr(an_store_errmsg(st), "no recommendation 9"));
}

/* The v1 schema as sluice shipped it (store.c's migration[0]), with one run and its steps. */
static void make_v1_store(const char *path)
{
    const char *v1 =
        "CREATE TABLE schema_version(version INTEGER NOT NULL); INSERT INTO schema_version VALUES(1);"
        "CREATE TABLE runs(id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,"
        " mode TEXT NOT NULL CHECK(mode IN ('sim','real')),"
        " status TEXT NOT NULL CHECK(status IN ('running','ok','failed')), error TEXT,"
        " hardware TEXT, model TEXT, strategy TEXT, config_json TEXT, workload_name TEXT,"
        " workload_hash TEXT, seed INTEGER, code_revision TEXT, wall_seconds REAL);"
        "CREATE TABLE requests(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " req_id INTEGER NOT NULL, replica INTEGER, priority INTEGER, arrival REAL, first_scheduled REAL,"
        " first_token REAL, finished REAL, prompt_len INTEGER, output_len INTEGER,"
        " cached_prompt_len INTEGER, preemptions INTEGER, finish_reason INTEGER,"
        " PRIMARY KEY(run_id, req_id)) WITHOUT ROWID;"
        "CREATE TABLE steps(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " replica INTEGER NOT NULL, seq_no INTEGER NOT NULL, t_start REAL, t_end REAL, n_seqs INTEGER,"
        " n_tokens INTEGER, n_prefill_tokens INTEGER, n_decode_seqs INTEGER, n_padded_tokens INTEGER,"
        " kv_used_blocks INTEGER, kv_reserved_slots INTEGER, kv_used_slots INTEGER, kv_naive_slots INTEGER,"
        " n_preempted INTEGER, PRIMARY KEY(run_id, replica, seq_no)) WITHOUT ROWID;"
        "CREATE TABLE summaries(run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
        " key TEXT NOT NULL, value REAL, PRIMARY KEY(run_id, key)) WITHOUT ROWID;"
        "CREATE TABLE calibration(profile TEXT NOT NULL, op TEXT NOT NULL, params_json TEXT NOT NULL,"
        " created_at TEXT NOT NULL, PRIMARY KEY(profile, op));"
        "CREATE TABLE recommendations(id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL,"
        " run_ids TEXT NOT NULL, json TEXT NOT NULL);"
        "INSERT INTO runs(created_at, mode, status, model) VALUES('2025-01-01 00:00:00', 'sim', 'ok', 'llama2-7b');"
        "INSERT INTO steps VALUES(1, 1, 0, 0.0, 0.5, 2, 20, 16, 1, 0, 3, 48, 40, 100, 0);"
        "INSERT INTO steps VALUES(1, 0, 1, 0.5, 0.6, 1, 1, 0, 1, 0, 2, 32, 21, 64, 0);"
        "INSERT INTO steps VALUES(1, 0, 0, 0.0, 0.5, 1, 20, 20, 0, 0, 2, 32, 20, 64, 1);"
        "INSERT INTO summaries VALUES(1, 'n_steps', 3);";
    exec_sql(path, v1);
}

static void test_store_migrates_a_v1_store_to_rowid_steps(void **state)
{
    fixture_t *f = *state;
    make_v1_store(f->path);
    /* readers do not migrate: the v1 store is read as it is */
    char err[256];
    an_store_t *ro;
    assert_int_equal(an_store_open_existing(f->path, &ro, err, sizeof err), SL_OK);
    assert_int_equal(an_store_schema_version(ro), 1);
    an_step_rec_t *steps;
    size_t n;
    assert_int_equal(an_run_steps(ro, 1, &steps, &n), SL_OK);
    assert_int_equal(n, 3);
    sl_free(steps);
    an_store_close(ro);
    /* a writer migrates it, keeping every row */
    an_store_t *st = open_ok(f);
    assert_int_equal(an_store_schema_version(st), 2);
    assert_int_equal(an_run_steps(st, 1, &steps, &n), SL_OK);
    assert_int_equal(n, 3);
    assert_true(steps[0].replica == 0 && steps[0].seq_no == 0 && steps[0].n_preempted == 1);
    assert_true(steps[1].replica == 0 && steps[1].seq_no == 1 && steps[1].kv_used_slots == 21);
    assert_true(steps[2].replica == 1 && steps[2].n_tokens == 20 && steps[2].kv_naive_slots == 100);
    sl_free(steps);
    an_run_t r;
    assert_int_equal(an_run_get(st, 1, &r), SL_OK);
    assert_true(r.has_summary && r.summary.n_steps == 3);
    an_run_clear(&r);
    an_store_close(st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE name = 'steps'", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_null(strstr((const char *)sqlite3_column_text(q, 0), "WITHOUT ROWID"));
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = "
                                            "'steps_run' AND tbl_name = 'steps'", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 2);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_store_open_and_read_survive_every_failed_allocation(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_finish(st, id, NULL), SL_OK);
    an_store_close(st);
    f->st = NULL;
    int rc = SL_ENOMEM;
    for (long k = 0; rc == SL_ENOMEM; k++) {
        an_run_t r;
        sl_alloc_fail_after(k);
        rc = an_store_open(f->path, &st);
        if (!rc)
            rc = an_run_get(st, id, &r);
        sl_alloc_fail_after(-1);
        if (!rc) {
            assert_string_equal(r.status, "ok");
            an_run_clear(&r);
        } else
            assert_int_equal(rc, SL_ENOMEM);
        an_store_close(st);
    }
}

static void test_store_writes_20k_requests_and_100k_steps_under_a_second(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    const size_t nr = 20000, ns = 100000;
    an_request_rec_t *reqs = malloc(nr * sizeof *reqs);
    an_step_rec_t *steps = malloc(ns * sizeof *steps);
    make_requests(reqs, nr);
    make_steps(steps, ns);
    /* CPU time, not wall time: the test must not fail because parallel builds share the cores. */
    struct timespec a, b, wa, wb;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    clock_gettime(CLOCK_MONOTONIC, &wa);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_add_requests(st, id, reqs, nr), SL_OK);
    assert_int_equal(an_run_add_steps(st, id, steps, ns), SL_OK);
    assert_int_equal(an_run_finish(st, id, NULL), SL_OK);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    clock_gettime(CLOCK_MONOTONIC, &wb);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    double wall = (double)(wb.tv_sec - wa.tv_sec) + (double)(wb.tv_nsec - wa.tv_nsec) * 1e-9;
    print_message("20k requests + 100k steps stored in %.3f s CPU (%.3f s wall)\n", secs, wall);
    assert_true(secs < 1.0 * SPEED_SLACK);
    free(reqs);
    free(steps);
    an_step_rec_t *back;
    size_t n;
    assert_int_equal(an_run_steps(st, id, &back, &n), SL_OK);
    assert_int_equal(n, ns);
    sl_free(back);
}

/* A hand-edited store: a summary value of text reads as not measured (NAN), not as 0, which
 * `sluice runs` would show as a plausible figure. */
static void test_store_reads_a_summary_value_of_text_as_not_measured(void **state)
{
    fixture_t *f = *state;
    an_store_t *st = open_ok(f);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    an_summary_t sum;
    an_summary_init(&sum);
    sum.ttft_p99 = 0.75, sum.tpot_p99 = 0.02;
    assert_int_equal(an_run_finish(st, id, &sum), SL_OK);
    an_store_close(st);
    f->st = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE summaries SET value = 'abc' WHERE key = 'ttft_p99'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    st = open_ok(f);
    an_run_t r;
    assert_int_equal(an_run_get(st, id, &r), SL_OK);
    assert_true(isnan(r.summary.ttft_p99));
    assert_true(r.summary.tpot_p99 == 0.02);
    an_run_clear(&r);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_store_run_lifecycle_round_trips_everything),
        T(test_store_failed_run_keeps_no_rows_and_says_why),
        T(test_store_close_with_an_open_run_records_it_failed),
        T(test_store_lists_newest_first_and_gets_the_latest),
        T(test_store_rejects_bad_mode_and_foreign_run_ids),
        T(test_store_refuses_a_newer_schema),
        T(test_store_refuses_a_file_that_is_not_a_database),
        T(test_store_refuses_an_sqlite_database_of_another_program),
        T(test_store_calibration_and_recommendations),
        T(test_store_migrates_a_v1_store_to_rowid_steps),
        T(test_store_open_and_read_survive_every_failed_allocation),
        T(test_store_writes_20k_requests_and_100k_steps_under_a_second),
        T(test_store_reads_a_summary_value_of_text_as_not_measured),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
