/* test_profile.c — the measured-profile step-time model (sim/profile.h): knots, the fit recovering
 * a known model, non-negative coefficients under noise, host terms, step pricing (and pricing the
 * engine's own steps), rescaling to the machine's speed, KV sizing as the engine sizes it,
 * staleness checks, JSON round trip, and the simulator running on a profile. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cJSON.h>

#include "sched/status.h"
#include "sim/profile.h"
#include "sim/sim.h"
#include "workloads/trace.h"

/* A profile with knots for M <= 256, rows <= 16, decode contexts <= 512, and a known model. */
static sim_profile_t truth(void)
{
    sim_profile_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "t");
    snprintf(p.backend, sizeof p.backend, "cpu");
    snprintf(p.host, sizeof p.host, "h1");
    snprintf(p.cpu, sizeof p.cpu, "cpu1");
    p.threads = 2;
    assert_int_equal(sched_model_shape_builtin("stories260k", &p.model), SL_OK);
    assert_int_equal(sim_profile_set_knots(&p, 256, 16, 512), SL_OK);
    for (int i = 0; i < p.n_knots; i++) /* small-M inefficiency: a floor, then linear */
        p.dense[i] = 40e-6 + 20e-6 * p.knot[i];
    for (int i = 0; i < p.n_lm_knots; i++)
        p.lm[i] = 5e-6 + 2e-6 * p.lm_knot[i];
    for (int i = 0; i < p.n_dec_knots; i++) /* faster per token while the KV stays in cache */
        p.dec[i] = p.dec_knot[i] * (p.dec_knot[i] <= 64 ? 1e-7 : 2e-7);
    for (int i = 0; i < p.n_kv_knots; i++) /* the batch's KV beyond the caches */
        p.kv[i] = p.kv_knot[i] * (p.kv_knot[i] <= 1024 ? 0 : 3e-8);
    p.pre = 4e-9;
    p.host_s = 30e-6, p.host_row = 2e-6;
    return p;
}

/* Points like the profiler's grid, timed by the profile itself (times * (1 + noise_i)). */
static int grid(const sim_profile_t *p, sim_profile_point_t *pts, double noise)
{
    int n = 0;
    for (int i = 0; i < p->n_knots; i++) {
        int m = (int)p->knot[i];
        pts[n++] = (sim_profile_point_t){.m = m, .rows = 1, .pre_work = m * (m + 1) / 2.0};
        pts[n++] = (sim_profile_point_t){.m = m, .rows = 0, .pre_work = m * (m + 1) / 2.0};
        pts[n++] = (sim_profile_point_t){.m = m, .rows = 1, .pre_work = m * (200 + (m + 1) / 2.0)};
    }
    for (int i = 0; i < p->n_lm_knots; i++)
        for (int ctx = 16, b = (int)p->lm_knot[i]; ctx <= 512; ctx *= 2)
            pts[n++] = (sim_profile_point_t){.m = b, .rows = b, .dec_kv = ctx + 1.0, .n_dec = b};
    pts[n++] = (sim_profile_point_t){.m = 64, .rows = 8, .pre_work = 8 * 8 * 4.5};
    pts[n++] = (sim_profile_point_t){.m = 100, .rows = 5, .pre_work = 96 * 48.5, .dec_kv = 300, .n_dec = 4};
    for (int i = 0; i < n; i++)
        pts[i].t = sim_profile_forward(p, &pts[i]) * (1 + noise * ((i * 7919) % 11 - 5) / 5.0);
    return n;
}

static void test_knots_are_dense_for_small_m_then_double(void **state)
{
    sim_profile_t p = {0};
    assert_int_equal(sim_profile_set_knots(&p, 2048, 64, 64 * 2048), SL_OK);
    assert_int_equal(p.n_knots, 23); /* 1..16, 32 64 128 256 512 1024 2048 */
    for (int i = 0; i < 16; i++)
        assert_true(p.knot[i] == i + 1);
    assert_true(p.knot[16] == 32 && p.knot[17] == 64 && p.knot[21] == 1024 && p.knot[22] == 2048);
    assert_int_equal(p.n_lm_knots, 18); /* 1..16 32 64 */
    assert_true(p.lm_knot[17] == 64 && p.lm_knot[16] == 32);
    assert_true(p.dec_knot[0] == 16 && p.dec_knot[p.n_dec_knots - 1] == 64 * 2048);
    assert_int_equal(sim_profile_set_knots(&p, 1000, 48, 100), SL_OK);
    assert_true(p.knot[p.n_knots - 1] == 1000 && p.knot[p.n_knots - 2] == 512);
    assert_int_equal(sim_profile_set_knots(&p, 5, 3, 100), SL_OK);
    assert_true(p.n_knots == 5 && p.knot[4] == 5 && p.n_lm_knots == 3);
    assert_int_equal(sim_profile_set_knots(&p, 0, 4, 4), SL_EINVAL);
}

static void test_fit_recovers_a_known_model(void **state)
{
    sim_profile_t p = truth(), q = truth();
    sim_profile_point_t pts[256];
    int n = grid(&p, pts, 0);
    memset(q.dense, 0, sizeof q.dense), memset(q.lm, 0, sizeof q.lm), memset(q.dec, 0, sizeof q.dec), q.pre = 0;
    char err[256];
    assert_int_equal(sim_profile_fit(&q, pts, n, err, sizeof err), SL_OK);
    assert_true(q.fit_err < 1e-6);
    for (int i = 0; i < n; i++)
        assert_true(fabs(sim_profile_forward(&q, &pts[i]) - pts[i].t) <= 1e-6 * pts[i].t);
    assert_true(fabs(q.pre - p.pre) < 1e-3 * p.pre);
    for (int i = 0; i < p.n_knots; i++)
        assert_true(fabs(q.dense[i] - p.dense[i]) < 1e-3 * p.dense[i]);
}

static void test_fit_under_noise_keeps_every_time_non_negative(void **state)
{
    sim_profile_t p = truth(), q = truth();
    sim_profile_point_t pts[256];
    int n = grid(&p, pts, 0.08);
    char err[256];
    assert_int_equal(sim_profile_fit(&q, pts, n, err, sizeof err), SL_OK);
    assert_true(q.pre >= 0);
    for (int i = 0; i < q.n_knots; i++)
        assert_true(q.dense[i] >= 0);
    for (int i = 0; i < q.n_lm_knots; i++)
        assert_true(q.lm[i] >= 0);
    for (int i = 0; i < q.n_dec_knots; i++)
        assert_true(q.dec[i] >= 0);
    assert_true(q.fit_err < 0.08);
}

static void test_fit_refuses_too_few_points(void **state)
{
    sim_profile_t p = truth();
    sim_profile_point_t pts[3] = {{.m = 1, .rows = 1, .t = 1e-4}, {.m = 2, .rows = 1, .t = 2e-4},
                                  {.m = 4, .rows = 0, .t = 3e-4}};
    char err[256];
    assert_int_equal(sim_profile_fit(&p, pts, 3, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "measured points"));
}

static void test_host_terms_fit_medians_by_rows(void **state)
{
    sim_profile_t p = truth();
    double ov[60];
    int rows[60];
    for (int i = 0; i < 60; i++) {
        rows[i] = 1 + i % 12;
        ov[i] = 100e-6 + 5e-6 * rows[i];
    }
    ov[7] = 50e-3, ov[30] = 20e-3; /* the OS took the CPU away twice */
    char err[256];
    assert_int_equal(sim_profile_fit_host(&p, ov, rows, 60, err, sizeof err), SL_OK);
    assert_true(fabs(p.host_s - 100e-6) < 1e-6);
    assert_true(fabs(p.host_row - 5e-6) < 1e-7);
    assert_int_equal(sim_profile_fit_host(&p, ov, rows, 2, err, sizeof err), SL_EINVAL);
    /* a per-row cost with no fixed cost (the line's intercept comes out slightly negative): the
     * line through the origin, not a mean that charges a 1-row step a 12-row step's overhead */
    for (int i = 0; i < 60; i++)
        ov[i] = 7e-6 * rows[i] - (i % 2 ? 1e-6 : 0);
    assert_int_equal(sim_profile_fit_host(&p, ov, rows, 60, err, sizeof err), SL_OK);
    assert_true(p.host_s == 0);
    assert_true(fabs(p.host_row - 7e-6) < 0.5e-6);
}

static void test_step_price_is_the_sum_of_its_terms(void **state)
{
    sim_profile_t p = truth();
    sched_seq_step_t seqs[3] = {
        {.n_tokens = 40, .context_len = 100, .is_prefill = true, .sample = true},
        {.n_tokens = 1, .context_len = 300, .sample = true},
        {.n_tokens = 1, .context_len = 99, .sample = true},
    };
    sched_step_t st = {.n_seqs = 3, .seqs = seqs, .n_tokens = 42, .n_prefill_tokens = 40, .n_decode_seqs = 2};
    sim_cost_parts_t parts;
    double t = sim_profile_step(&p, &st, &parts);
    /* each decode sequence pays for its own KV: 301 and 100 tokens, not a 2-sequence mean */
    sim_profile_point_t pt = {.m = 42, .rows = 3, .pre_work = 40 * (100 + 41 / 2.0)};
    sim_profile_point_t d301 = {.n_dec = 1, .dec_kv = 301}, d100 = {.n_dec = 1, .dec_kv = 100};
    double fwd = sim_profile_forward(&p, &pt) + sim_profile_forward(&p, &d301) + sim_profile_forward(&p, &d100);
    sim_profile_point_t mean = {.n_dec = 2, .dec_kv = 200.5};
    assert_true(fabs(sim_profile_forward(&p, &mean) - sim_profile_forward(&p, &d301) -
                     sim_profile_forward(&p, &d100)) > 1e-9); /* the table is not linear over 64..301 */
    assert_true(fabs(t - (fwd + p.host_s + 3 * p.host_row)) < 1e-12);
    /* the engine's own step (sluice_step_info: tokens, rows, prefill pairs, each decode's KV read)
     * is priced the same, less the host terms */
    int kv[2] = {301, 100};
    double own = sim_profile_forward_seqs(&p, 42, 3, pt.pre_work, kv, 2);
    assert_true(fabs(own + p.host_s + 3 * p.host_row - t) < 1e-15);
    int same[2] = {200, 200}; /* equal contexts: the grid's uniform point */
    sim_profile_point_t uni = {.m = 42, .rows = 3, .pre_work = pt.pre_work, .n_dec = 2, .dec_kv = 200};
    assert_true(fabs(sim_profile_forward_seqs(&p, 42, 3, pt.pre_work, same, 2) - sim_profile_forward(&p, &uni)) <
                1e-15);
    assert_true(fabs(parts.total - t) < 1e-15);
    assert_true(fabs(parts.host - (p.host_s + 3 * p.host_row)) < 1e-15);
    assert_true(fabs(parts.dense + parts.lm_head + parts.attention - fwd) < 1e-15);
    assert_true(parts.attention > p.pre * pt.pre_work); /* the decode KV term is in it too */
    /* the cost model hands a profile step to the same function */
    char err[128];
    sim_cost_t *c = sim_cost_create_profile(&p, err, sizeof err);
    assert_non_null(c);
    assert_true(sim_cost_step(c, &st, NULL) == t);
    sim_cost_free(c);
}

/* Rescaling: steps of up to 16 tokens (and decode attention, the host loop) by the small factor,
 * of 128 or more (and prefill attention) by the large one, a blend in log M between. */
static void test_rescale_to_the_machines_speed_now(void **state)
{
    sim_profile_t p = truth(), q = truth();
    sim_profile_rescale(&q, 1.1, 0.8);
    sim_profile_point_t dec = {.m = 4, .rows = 4, .n_dec = 4, .dec_kv = 300};
    sim_profile_point_t pre = {.m = 256, .rows = 0, .pre_work = 256 * 128.5}; /* a non-final chunk */
    sim_profile_point_t mid = {.m = 45, .rows = 0}; /* 45 = 16 * 8^(1/2): halfway in log M */
    assert_true(fabs(sim_profile_forward(&q, &dec) - 1.1 * sim_profile_forward(&p, &dec)) < 1e-12);
    assert_true(fabs(sim_profile_forward(&q, &pre) - 0.8 * sim_profile_forward(&p, &pre)) < 1e-12);
    double f = sim_profile_forward(&q, &mid) / sim_profile_forward(&p, &mid);
    assert_true(f < 1.1 && f > 0.8);
    assert_true(fabs(q.host_s - 1.1 * p.host_s) < 1e-15 && fabs(q.host_row - 1.1 * p.host_row) < 1e-15);
    assert_true(q.wake_s == p.wake_s);
    sim_profile_t r = truth(); /* a factor that is not > 0 (no anchor timed) counts as 1 */
    sim_profile_rescale(&r, NAN, 0);
    assert_true(sim_profile_forward(&r, &dec) == sim_profile_forward(&p, &dec));
    assert_true(sim_profile_forward(&r, &pre) == sim_profile_forward(&p, &pre));
}

static void test_kv_blocks_as_the_engine_sizes_them(void **state)
{
    sim_profile_t p = truth();
    sched_config_t sc = sched_config_default();
    sc.max_num_seqs = 8, sc.max_batch_size = 4, sc.max_sequence_length = 512, sc.block_size = 16;
    int nb = 0;
    char err[256];
    p.kv_budget_bytes = 0; /* no cap: max(max_num_seqs, max_batch_size) full-length sequences */
    assert_int_equal(sim_profile_num_blocks(&p, &sc, 0, &nb, err, sizeof err), SL_OK);
    assert_int_equal(nb, 8 * 32);
    int64_t per_block = sched_mem_kv_bytes_per_token(&p.model) * 16;
    p.kv_budget_bytes = per_block * 100; /* the budget caps it */
    assert_int_equal(sim_profile_num_blocks(&p, &sc, 0, &nb, err, sizeof err), SL_OK);
    assert_int_equal(nb, 100);
    assert_int_equal(sim_profile_num_blocks(&p, &sc, per_block * 10 / 1048576.0, &nb, err, sizeof err), SL_ENOMEM);
    assert_non_null(strstr(err, "do not hold one"));
}

static void test_check_refuses_other_machines_and_stale_profiles(void **state)
{
    sim_profile_t p = truth();
    sched_model_shape_t m = p.model;
    char err[512];
    assert_int_equal(sim_profile_check(&p, "h1", "cpu1", "cpu", 2, &m, err, sizeof err), SL_OK);
    assert_int_equal(sim_profile_check(&p, "h2", "cpu1", "cpu", 2, &m, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "measured on host h1"));
    assert_int_equal(sim_profile_check(&p, "h1", "cpu2", NULL, 0, NULL, err, sizeof err), SL_EINVAL);
    assert_int_equal(sim_profile_check(&p, "h1", "cpu1", "cuda", 2, &m, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "backend cpu"));
    assert_int_equal(sim_profile_check(&p, NULL, NULL, "cpu", 1, NULL, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "2 threads"));
    m.n_layers++;
    assert_int_equal(sim_profile_check(&p, NULL, NULL, NULL, 0, &m, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "layers"));
    m = p.model, m.bytes_per_kv = p.model.bytes_per_kv + 2;
    assert_int_equal(sim_profile_check(&p, NULL, NULL, NULL, 0, &m, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "bytes per KV element"));
}

static void test_json_round_trip(void **state)
{
    sim_profile_t p = truth(), q;
    p.kv_budget_bytes = 123456789012LL, p.max_seq_len = 512, p.fit_err = 0.031;
    p.wake_s = 9e-3, p.idle_after_s = 2e-3, p.cold_s = 1.2e-4, p.cold_after_s = 5e-3;
    snprintf(p.created, sizeof p.created, "2026-11-27 12:00:00");
    snprintf(p.cpu, sizeof p.cpu, "AMD \"EPYC\"\\ 9B14"); /* quotes and backslashes are not kept */
    char buf[8192], err[256];
    assert_true(sim_profile_to_json(&p, buf, sizeof buf));
    assert_int_equal(sim_profile_from_json(buf, &q, err, sizeof err), SL_OK);
    assert_string_equal(q.cpu, "AMD _EPYC__ 9B14");
    assert_string_equal(q.model.name, p.model.name);
    assert_int_equal(q.n_knots, p.n_knots);
    assert_int_equal(q.n_dec_knots, p.n_dec_knots);
    assert_true(q.kv_budget_bytes == p.kv_budget_bytes && q.max_seq_len == 512 && q.threads == 2);
    assert_true(q.wake_s == 9e-3 && q.idle_after_s == 2e-3);
    assert_true(q.cold_s == 1.2e-4 && q.cold_after_s == 5e-3);
    sim_profile_point_t pt = {.m = 77, .rows = 5, .pre_work = 3000, .n_dec = 3, .dec_kv = 200};
    assert_true(fabs(sim_profile_forward(&q, &pt) - sim_profile_forward(&p, &pt)) < 1e-8 * sim_profile_forward(&p, &pt));
    assert_false(sim_profile_to_json(&p, buf, 100));
    assert_int_equal(sim_profile_from_json("[1]", &q, err, sizeof err), SL_EFORMAT);
    assert_int_equal(sim_profile_from_json("{\"name\": \"x\"}", &q, err, sizeof err), SL_EFORMAT);
    assert_non_null(strstr(err, "engine profile 'x' was made by an older sluice"));
    assert_int_equal(sim_profile_from_json("{\"model_version\": 2, \"name\": \"x\"}", &q, err, sizeof err),
                     SL_EFORMAT);
    assert_non_null(strstr(err, "older sluice"));
    assert_int_equal(sim_profile_from_json("{\"model_version\": 3, \"name\": \"x\"}", &q, err, sizeof err),
                     SL_EFORMAT); /* 3: before the anchor times */
    assert_non_null(strstr(err, "older sluice"));
    assert_int_equal(sim_profile_from_json("{\"model_version\": 4, \"name\": \"x\"}", &q, err, sizeof err),
                     SL_EFORMAT);
    assert_non_null(strstr(err, "backend"));
    for (int i = 0; i < SIM_PROFILE_ANCHORS; i++) /* the anchor times survive the round trip */
        p.anchor_s[i] = 1e-3 * (i + 1);
    assert_true(sim_profile_to_json(&p, buf, sizeof buf));
    assert_int_equal(sim_profile_from_json(buf, &q, err, sizeof err), SL_OK);
    assert_memory_equal(q.anchor_s, p.anchor_s, sizeof p.anchor_s);
    snprintf(p.created, sizeof p.created, "2026\\11\"27"); /* every string field is written plain */
    snprintf(p.backend, sizeof p.backend, "c\"pu");
    assert_true(sim_profile_to_json(&p, buf, sizeof buf));
    assert_int_equal(sim_profile_from_json(buf, &q, err, sizeof err), SL_OK);
    assert_string_equal(q.created, "2026_11_27");
    assert_string_equal(q.backend, "c_pu");
}

/* json with its key (in "model" when nested) set to value (JSON text), as a new string (free) */
static char *with_value(const char *json, bool nested, const char *key, const char *value)
{
    cJSON *root = cJSON_Parse(json), *obj = nested ? cJSON_GetObjectItemCaseSensitive(root, "model") : root;
    assert_true(cJSON_ReplaceItemInObjectCaseSensitive(obj, key, cJSON_Parse(value)));
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* A profile comes back from a run store that anyone can edit: a value its field cannot hold, or
 * that would make the step-time model divide by zero or price a step below zero, is refused by
 * name, and an array longer than its field is refused before it is written (found by fuzz_config:
 * seven anchor times overran the six). */
static void test_json_out_of_range_is_refused(void **state)
{
    sim_profile_t p = truth(), q;
    char buf[8192], err[256];
    assert_true(sim_profile_to_json(&p, buf, sizeof buf));
    static const struct { bool nested; const char *key, *value, *named; } bad[] = {
        {false, "anchor_s", "[1, 2, 3, 4, 5, 6, 7]", "'anchor_s'"},
        {false, "threads", "0", "'threads'"},
        {false, "max_seq_len", "2.5", "'max_seq_len'"},
        {false, "kv_budget_bytes", "1e300", "'kv_budget_bytes'"},
        {false, "host_s", "-1e-3", "'host_s'"},
        {true, "n_layers", "1e300", "'n_layers'"},
        {true, "tied_embeddings", "2", "'tied_embeddings'"},
        {true, "bytes_per_kv", "0", "'bytes_per_kv'"},
        {false, "knots", "[1, 2, 2, 4]", "'knots/dense'"},
        {false, "dec_knots", "[0, 16]", "'dec_knots/dec'"},
        {false, "lm", "[-1]", "'lm_knots/lm'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *json = with_value(buf, bad[i].nested, bad[i].key, bad[i].value);
        assert_int_equal(sim_profile_from_json(json, &q, err, sizeof err), SL_EFORMAT);
        assert_non_null(strstr(err, bad[i].named));
        assert_non_null(strstr(err, "missing, malformed or out of range"));
        free(json);
    }
    char *json = with_value(buf, false, "anchor_s", "[0, 0, 0, 0, 0, 1e-3]"); /* 0: not timed */
    assert_int_equal(sim_profile_from_json(json, &q, err, sizeof err), SL_OK);
    free(json);
}

static void test_simulator_runs_on_a_profile_deterministically(void **state)
{
    sim_profile_t p = truth();
    p.kv_budget_bytes = 0;
    wl_trace_t *tr = wl_trace_create();
    for (int i = 0; i < 50; i++) {
        wl_request_t r = {.arrival = i * 0.01, .prompt_len = 20 + i % 30, .output_len = 5 + i % 20, .prefix_group = -1};
        assert_int_equal(wl_trace_append(tr, &r), SL_OK);
    }
    double end[2];
    for (int k = 0; k < 2; k++) {
        sim_config_t cfg;
        assert_int_equal(sim_config_default(&cfg), SL_OK);
        cfg.model = p.model;
        cfg.sched.max_sequence_length = 512;
        cfg.profile = &p;
        char err[256];
        sim_t *s = sim_create(&cfg, NULL, err, sizeof err);
        assert_non_null(s);
        sim_totals_t tot;
        assert_int_equal(sim_run(s, tr, NULL, &tot, err, sizeof err), SL_OK);
        assert_int_equal((int)tot.done, 50);
        assert_int_equal(tot.num_blocks, cfg.sched.max_num_seqs * 32); /* the engine's sizing */
        end[k] = tot.end_time;
        sim_free(s);
    }
    assert_true(end[0] == end[1] && end[0] > 0.49);
    wl_trace_free(tr);
}

/* End time of two one-token requests arriving at 0 and `second`, on profile p, the engine polling
 * `spin` seconds for work after a step. */
static double two_requests_end(const sim_profile_t *p, double second, double spin)
{
    wl_trace_t *tr = wl_trace_create();
    for (int i = 0; i < 2; i++) {
        wl_request_t r = {.arrival = i * second, .prompt_len = 20, .output_len = 1, .prefix_group = -1};
        assert_int_equal(wl_trace_append(tr, &r), SL_OK);
    }
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    cfg.model = p->model;
    cfg.sched.max_sequence_length = 512;
    cfg.profile = p;
    cfg.engine_idle_spin_s = spin;
    char err[256];
    sim_t *s = sim_create(&cfg, NULL, err, sizeof err);
    assert_non_null(s);
    sim_totals_t tot;
    assert_int_equal(sim_run(s, tr, NULL, &tot, err, sizeof err), SL_OK);
    sim_free(s);
    wl_trace_free(tr);
    return tot.end_time;
}

/* How much later the two requests end with w's idle terms than without them (the end time moves
 * with the last step's term, and with the first's when the second waits for it). */
static double idle_extra(const sim_profile_t *w, double second, double spin)
{
    sim_profile_t p = *w;
    p.wake_s = p.idle_after_s = p.cold_s = p.cold_after_s = 0;
    return two_requests_end(w, second, spin) - two_requests_end(&p, second, spin);
}

static void test_a_step_after_idle_pays_the_wake_term(void **state)
{
    sim_profile_t w = truth();
    w.kv_budget_bytes = 0;
    w.wake_s = 9e-3, w.idle_after_s = 2e-3;
    /* a second request 1 s later: both steps start after idle (the first after start-up) */
    assert_true(fabs(idle_extra(&w, 1.0, 0) - 9e-3) < 1e-12);
    /* the second arrives while the first step runs and goes straight after it: one wake */
    assert_true(fabs(idle_extra(&w, 1e-6, 0) - 9e-3) < 1e-12);
    /* the engine polls 0.5 s after a step: a second request 0.3 s later finds it awake, 1 s later
     * asleep (0.5 + 0.002 s) */
    assert_true(fabs(idle_extra(&w, 0.3, 0.5)) < 1e-12);
    assert_true(fabs(idle_extra(&w, 1.0, 0.5) - 9e-3) < 1e-12);
}

static void test_a_step_after_polling_pays_the_cold_term(void **state)
{
    sim_profile_t c = truth();
    c.kv_budget_bytes = 0;
    c.cold_s = 1.2e-4, c.cold_after_s = 5e-3;
    /* the engine polls 0.5 s: a second request 0.3 s later pays the cold term */
    assert_true(fabs(idle_extra(&c, 0.3, 0.5) - 1.2e-4) < 1e-12);
    /* one arriving while the first step runs goes straight after it: the first step's only */
    assert_true(fabs(idle_extra(&c, 1e-6, 0.5) - 1.2e-4) < 1e-12);
    /* with a wake term too: past the spin the larger of the two, within it the cold one */
    c.wake_s = 9e-3, c.idle_after_s = 2e-3;
    assert_true(fabs(idle_extra(&c, 1.0, 0.5) - 9e-3) < 1e-12);
    assert_true(fabs(idle_extra(&c, 0.3, 0.5) - 1.2e-4) < 1e-12);
    /* a cold term larger than the wake one holds past the spin as well */
    c.wake_s = 0.6e-4;
    assert_true(fabs(idle_extra(&c, 1.0, 0.5) - 1.2e-4) < 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_knots_are_dense_for_small_m_then_double),
        cmocka_unit_test(test_fit_recovers_a_known_model),
        cmocka_unit_test(test_fit_under_noise_keeps_every_time_non_negative),
        cmocka_unit_test(test_fit_refuses_too_few_points),
        cmocka_unit_test(test_host_terms_fit_medians_by_rows),
        cmocka_unit_test(test_step_price_is_the_sum_of_its_terms),
        cmocka_unit_test(test_rescale_to_the_machines_speed_now),
        cmocka_unit_test(test_kv_blocks_as_the_engine_sizes_them),
        cmocka_unit_test(test_check_refuses_other_machines_and_stale_profiles),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_out_of_range_is_refused),
        cmocka_unit_test(test_a_step_after_polling_pays_the_cold_term),
        cmocka_unit_test(test_simulator_runs_on_a_profile_deterministically),
        cmocka_unit_test(test_a_step_after_idle_pays_the_wake_term),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
