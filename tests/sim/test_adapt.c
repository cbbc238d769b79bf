/* test_adapt.c — the adaptive controller (sched/adapt.h, rules tested in tests/sched/test_adapt.c)
 * in the simulator against a load step (rate x3 halfway through a synthetic chat trace) from a
 * poor fixed starting point (a 256-token budget). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/adapt.h"
#include "sched/status.h"
#include "sim/sim.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

typedef struct log_rec {
    int n;
    sched_adapt_change_t c[64];
} log_rec_t;

static void log_change(void *ctx, const sched_adapt_change_t *c)
{
    log_rec_t *l = ctx;
    if (l->n < 64)
        l->c[l->n++] = *c;
}

/* ---- in the simulator: a load step -------------------------------------------------------------- */

#define N_REQ 3000

typedef struct run_out {
    double *ttft;
    int n;
    uint64_t hash;
} run_out_t;

static int on_done(void *ctx, int replica, const sched_done_t *d)
{
    run_out_t *o = ctx;
    for (const unsigned char *p = (const void *)&d->finished, *e = p + sizeof d->finished; p < e; p++)
        o->hash = (o->hash ^ *p) * 0x100000001b3ULL;
    if (d->reason != SCHED_FINISH_ABORT)
        o->ttft[o->n++] = d->first_token - d->arrival;
    return 0;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* chat preset at 2 req/s; from the middle request on, arrivals come 3x as fast */
static wl_trace_t *load_step_trace(void)
{
    wl_trace_t *tr = wl_trace_create();
    assert_int_equal(wl_preset_generate("chat", N_REQ, 1.5, 7, 4096, tr), SL_OK);
    size_t h = tr->n / 2;
    double t0 = tr->arrival[h];
    for (size_t i = h; i < tr->n; i++)
        tr->arrival[i] = t0 + (tr->arrival[i] - t0) / 3;
    return tr;
}

/* p99 TTFT of one run; adaptive: controller on (log into log, changes into *changes). */
static double run(const wl_trace_t *tr, bool adaptive, const sched_adapt_opts_t *ao, int *changes, uint64_t *hash)
{
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    cfg.sched.max_sequence_length = 4096;
    cfg.sched.max_num_batched_tokens = 256; /* the poor starting point */
    char err[512];
    sim_t *sim = sim_create(&cfg, NULL, err, sizeof err);
    assert_non_null(sim);
    run_out_t out = {.ttft = calloc(tr->n, sizeof(double))};
    sim_sink_t inner = {&out, on_done, NULL, NULL}, sink = inner;
    sim_adaptive_t *ad = NULL;
    if (adaptive) {
        ad = sim_adaptive_create(ao, cfg.replicas, err, sizeof err);
        assert_non_null(ad);
        sink = sim_adaptive_sink(ad, &inner);
        sim_hook_t hook = sim_adaptive_hook(ad);
        sim_set_hook(sim, &hook);
    }
    sim_totals_t tot;
    assert_int_equal(sim_run(sim, tr, &sink, &tot, err, sizeof err), SL_OK);
    assert_true(out.n > (int)tr->n * 9 / 10);
    qsort(out.ttft, (size_t)out.n, sizeof(double), cmp);
    double h = (out.n - 1) * 0.99, p99 = out.ttft[(int)h] + (h - (int)h) * (out.ttft[(int)h + 1] - out.ttft[(int)h]);
    if (changes)
        *changes = ad ? sim_adaptive_changes(ad) : 0;
    if (hash)
        *hash = out.hash;
    free(out.ttft);
    sim_adaptive_free(ad);
    sim_free(sim);
    return p99;
}

static void test_controller_beats_the_fixed_setting_on_a_load_step(void **state)
{
    wl_trace_t *tr = load_step_trace();
    sched_config_t start = sched_config_default();
    start.max_num_batched_tokens = 256;
    sched_adapt_opts_t o;
    sched_adapt_opts_default(&o, &start);
    log_rec_t log = {0};
    o.log = log_change, o.log_ctx = &log;
    o.ttft_target = 1, o.tpot_target = 0.1;
    int changes = 0;
    uint64_t h1, h2, h_fixed, h_idle;
    double fixed = run(tr, false, NULL, NULL, &h_fixed);
    double adaptive = run(tr, true, &o, &changes, &h1);
    print_message("load step: p99 TTFT fixed budget 256 = %.2f s, adaptive = %.2f s, %d changes\n", fixed,
                  adaptive, changes);
    for (int i = 0; i < log.n; i++)
        print_message("  t=%.1f %s %g -> %g: %s\n", log.c[i].t, log.c[i].knob, log.c[i].old_value,
                      log.c[i].new_value, log.c[i].reason);
    assert_true(changes >= 1 && changes == log.n);
    assert_true(adaptive < 0.5 * fixed);
    for (int i = 0; i < log.n; i++) {
        assert_true(log.c[i].new_value >= o.budget_min && log.c[i].new_value <= o.budget_max);
        if (i > 0)
            assert_true(log.c[i].t - log.c[i - 1].t >= o.min_interval_s);
    }
    /* deterministic: the same run again gives the same records */
    log.n = 0;
    run(tr, true, &o, NULL, &h2);
    assert_true(h1 == h2);
    /* a controller that never acts leaves the run exactly as without the hook */
    sched_adapt_opts_t idle = o;
    idle.ttft_target = 0, idle.tpot_target = 0;
    run(tr, true, &idle, &changes, &h_idle);
    assert_int_equal(changes, 0);
    assert_true(h_idle == h_fixed);
    wl_trace_free(tr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controller_beats_the_fixed_setting_on_a_load_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
