/* test_recommend.c — reasons from crafted summaries; real runs preferred over simulated ones;
 * settings stored and loaded back for `sluice serve`; unknown recommendations refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/recommend.h"
#include "sched/status.h"

static an_reco_candidate_t crafted(sched_strategy_t strategy)
{
    an_reco_candidate_t c;
    memset(&c, 0, sizeof c);
    c.cfg = sched_config_default();
    c.cfg.strategy = strategy;
    an_summary_init(&c.sum);
    c.sum.n_requests = 100, c.sum.preempted_requests = 0, c.sum.slo_met = 0, c.sum.busy_frac = 0.5;
    c.sum.padding_frac = 0;
    c.preempt_step_frac = 0;
    return c;
}

static bool has(char (*r)[AN_RECO_REASON_LEN], int n, const char *needle)
{
    for (int i = 0; i < n; i++)
        if (strstr(r[i], needle))
            return true;
    return false;
}

static void test_reasons_from_crafted_summaries(void **state)
{
    (void)state;
    an_slo_t slo;
    char err[128], r[AN_RECO_MAX_REASONS][AN_RECO_REASON_LEN];
    assert_int_equal(an_slo_parse("ttft_p99=1s,tpot_p99=100ms", &slo, err, sizeof err), SL_OK);

    an_reco_candidate_t c = crafted(SCHED_CONTINUOUS);
    c.sum.ttft_p99 = 1.1, c.sum.queue_p99 = 0.8, c.sum.tpot_p99 = 0.05;
    int n = an_reco_reasons(&c, &slo, r, AN_RECO_MAX_REASONS);
    assert_true(has(r, n, "p99 TTFT is queueing-dominated (queue p99 0.8 s of TTFT p99 1.1 s): raise max_num_seqs"));

    c = crafted(SCHED_CONTINUOUS);
    c.sum.ttft_p99 = 0.5, c.sum.queue_p99 = 0.1, c.sum.tpot_p99 = 0.05, c.preempt_step_frac = 0.12;
    n = an_reco_reasons(&c, &slo, r, AN_RECO_MAX_REASONS);
    assert_true(has(r, n, "12% of steps preempt: lower max_num_seqs or raise gpu_memory_utilization"));
    assert_false(has(r, n, "queueing"));

    c = crafted(SCHED_NAIVE);
    c.sum.ttft_p99 = 0.5, c.sum.queue_p99 = 0.1, c.sum.tpot_p99 = 0.05, c.sum.padding_frac = 0.35;
    n = an_reco_reasons(&c, &slo, r, AN_RECO_MAX_REASONS);
    assert_true(has(r, n, "padding is 35% of static-batch tokens: use BUCKETED or CONTINUOUS"));

    c = crafted(SCHED_CONTINUOUS);
    c.sum.ttft_p99 = 0.3, c.sum.queue_p99 = 0.1, c.sum.tpot_p99 = 0.15, c.sum.slo_met = 0;
    n = an_reco_reasons(&c, &slo, r, AN_RECO_MAX_REASONS);
    assert_true(has(r, n, "p99 TPOT 0.15 s is over the 0.1 s limit"));

    c = crafted(SCHED_CONTINUOUS);
    c.sum.ttft_p99 = 0.3, c.sum.queue_p99 = 0.1, c.sum.tpot_p99 = 0.05, c.sum.slo_met = 1, c.sum.goodput = 3;
    c.sum.goodput_frac = 0.99;
    n = an_reco_reasons(&c, &slo, r, AN_RECO_MAX_REASONS);
    assert_int_equal(n, 1);
    assert_true(has(r, n, "meets the SLO"));
}

/* Records a run with n requests at 10 req/s, each with TTFT ttft and TPOT 20 ms. */
static int64_t plant(an_store_t *st, const char *mode, const char *strategy, const char *cfg, double ttft)
{
    an_run_info_t info = {.mode = mode, .hardware = "a100-80gb", .model = "llama2-7b", .strategy = strategy,
                          .config_json = cfg, .workload_name = "w", .workload_hash = 7};
    an_request_rec_t req[50];
    for (int i = 0; i < 50; i++)
        req[i] = (an_request_rec_t){.req_id = i, .arrival = i * 0.1, .first_scheduled = i * 0.1,
                                    .first_token = i * 0.1 + ttft, .finished = i * 0.1 + ttft + 9 * 0.02,
                                    .prompt_len = 10, .output_len = 10, .finish_reason = 3};
    an_summary_t s;
    an_metrics_compute(req, 50, NULL, 0, NULL, &s);
    int64_t id;
    assert_int_equal(an_run_begin(st, &info, &id), SL_OK);
    assert_int_equal(an_run_add_requests(st, id, req, 50), SL_OK);
    assert_int_equal(an_run_finish(st, id, &s), SL_OK);
    return id;
}

/* A store in a fresh temporary folder, removed by scratch_remove. */
typedef struct scratch {
    char dir[64], db[96];
} scratch_t;

static an_store_t *scratch_open(scratch_t *sc)
{
    snprintf(sc->dir, sizeof sc->dir, "/tmp/sluice_reco_XXXXXX");
    assert_non_null(mkdtemp(sc->dir));
    snprintf(sc->db, sizeof sc->db, "%s/s.db", sc->dir);
    an_store_t *st;
    assert_int_equal(an_store_open(sc->db, &st), SL_OK);
    return st;
}

static void scratch_remove(const scratch_t *sc)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", sc->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_recommend_prefers_real_runs_and_round_trips_settings(void **state)
{
    (void)state;
    scratch_t sc;
    char err[512];
    an_store_t *st = scratch_open(&sc);
    an_slo_t slo;
    assert_int_equal(an_slo_parse("ttft_p99=1s", &slo, err, sizeof err), SL_OK);
    int64_t naive = plant(st, "sim", "naive", "{\"max_batch_size\": 32, \"batch_timeout_ms\": 50}", 3.0);
    int64_t sim_best = plant(st, "sim", "continuous", "{\"max_num_seqs\": 96, \"max_num_batched_tokens\": 1024}", 0.2);
    an_reco_query_t q = {.slo = slo};
    an_reco_t r;
    assert_int_equal(an_recommend(st, &q, &r, err, sizeof err), SL_OK);
    assert_string_equal(r.evidence, "sim");
    assert_int_equal(r.best.run_id, sim_best);
    assert_true(r.slo_met);
    assert_true(r.has_baseline);
    assert_int_equal(r.baseline.run_id, naive);
    assert_int_equal(r.best.cfg.max_num_seqs, 96);
    an_reco_clear(&r);

    int64_t real = plant(st, "real", "continuous", "{\"max_num_seqs\": 48}", 0.5);
    assert_int_equal(an_recommend(st, &q, &r, err, sizeof err), SL_OK);
    assert_string_equal(r.evidence, "real"); /* the real run wins though the sim one is faster */
    assert_int_equal(r.best.run_id, real);
    assert_int_equal(r.n_runs, 1);
    char *json;
    assert_int_equal(an_reco_to_json(&r, "llama2-7b", "a100-80gb", &slo, &json), SL_OK);
    int64_t id;
    assert_int_equal(an_reco_save(st, r.run_ids, (size_t)r.n_runs, json, &id), SL_OK);
    sl_free(json);
    an_reco_clear(&r);
    an_store_close(st);

    sched_config_t cfg = sched_config_default();
    cfg.max_num_seqs = 7;
    assert_int_equal(an_reco_load_settings(sc.db, id, &cfg, err, sizeof err), SL_OK);
    assert_int_equal(cfg.max_num_seqs, 48);
    assert_int_equal(cfg.strategy, SCHED_CONTINUOUS);
    cfg = sched_config_default();
    assert_int_equal(an_reco_load_settings(sc.db, 0, &cfg, err, sizeof err), SL_OK); /* latest */
    assert_int_equal(cfg.max_num_seqs, 48);
    assert_int_equal(an_reco_load_settings(sc.db, id + 5, &cfg, err, sizeof err), SL_ENOTFOUND);
    assert_non_null(strstr(err, "no recommendation"));
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none.db", sc.dir);
    assert_int_equal(an_reco_load_settings(missing, 0, &cfg, err, sizeof err), SL_ENOTFOUND);
    assert_int_not_equal(access(missing, F_OK), 0);

    /* no matching run: a clear error */
    assert_int_equal(an_store_open(sc.db, &st), SL_OK);
    q.model = "llama3-70b";
    assert_int_equal(an_recommend(st, &q, &r, err, sizeof err), SL_ENOTFOUND);
    assert_non_null(strstr(err, "no finished run matches"));
    an_store_close(st);
    scratch_remove(&sc);
}

/* A run whose recorded configuration does not read back is left out and counted, not ranked with
 * the default settings it did not use; with none readable, the error says so. */
static void test_recommend_leaves_out_runs_whose_config_does_not_read_back(void **state)
{
    (void)state;
    scratch_t sc;
    char err[512];
    an_store_t *st = scratch_open(&sc);
    an_slo_t slo;
    assert_int_equal(an_slo_parse("ttft_p99=1s", &slo, err, sizeof err), SL_OK);
    plant(st, "sim", "continuous", "{bad", 0.1);                     /* the fastest, but unreadable */
    plant(st, "sim", "continuous", "{\"max_num_seqs\": 0}", 0.1);   /* out of range */
    an_reco_query_t q = {.slo = slo};
    an_reco_t r;
    assert_int_equal(an_recommend(st, &q, &r, err, sizeof err), SL_EFORMAT);
    assert_string_equal(err, "none of the 2 matching runs has a configuration that reads back (the runs table's "
                             "config_json)");
    int64_t good = plant(st, "sim", "continuous", "{\"max_num_seqs\": 96}", 0.4);
    assert_int_equal(an_recommend(st, &q, &r, err, sizeof err), SL_OK);
    assert_int_equal(r.best.run_id, good);
    assert_int_equal(r.n_runs, 1);
    assert_int_equal(r.n_unreadable, 2);
    assert_int_equal(r.best.cfg.max_num_seqs, 96);
    an_reco_clear(&r);
    an_store_close(st);
    scratch_remove(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reasons_from_crafted_summaries),
        cmocka_unit_test(test_recommend_prefers_real_runs_and_round_trips_settings),
        cmocka_unit_test(test_recommend_leaves_out_runs_whose_config_does_not_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
