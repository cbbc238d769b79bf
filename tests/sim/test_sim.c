/* test_sim.c — the event loop driving the real scheduler: determinism and behaviour on a slice of
 * the Azure conversation trace (skipped when ../shared is absent). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sched/status.h"
#include "sim/calib.h"
#include "sim/sim.h"
#include "workloads/trace.h"

#define TRACE "../shared/traces/azure_conv_2023.csv"
#define SLICE 1500

typedef struct outcome {
    uint64_t hash;              /* FNV-1a over every done record and step time */
    int completed;
    double first_arrival, last_finish, out_tokens;
    double *ttft;               /* (completed) */
    double used_dt, reserved_dt;
    int64_t cached;             /* prompt tokens served from the prefix cache */ /* sum over steps of KV slots x step duration */
    sim_totals_t tot;
} outcome_t;

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 0x100000001b3ULL;
}

static int on_done(void *ctx, int replica, const sched_done_t *d)
{
    outcome_t *o = ctx;
    fnv(&o->hash, &d->id, sizeof d->id);
    fnv(&o->hash, &d->first_token, sizeof d->first_token);
    fnv(&o->hash, &d->finished, sizeof d->finished);
    if (d->reason == SCHED_FINISH_ABORT)
        return 0;
    o->ttft[o->completed++] = d->first_token - d->arrival;
    o->cached += d->cached_prompt_len;
    o->last_finish = fmax(o->last_finish, d->finished);
    o->out_tokens += d->output_len;
    return 0;
}

static int on_step(void *ctx, const sim_step_info_t *in)
{
    outcome_t *o = ctx;
    double dt = in->t_end - in->t_start;
    fnv(&o->hash, &in->t_end, sizeof in->t_end);
    o->used_dt += in->stats->kv_used_slots * dt;
    o->reserved_dt += in->stats->kv_reserved_slots * dt;
    return 0;
}

typedef struct fixture {
    wl_trace_t *trace;
    sim_calib_t *calib;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    *state = f;
    if (access(TRACE, R_OK) != 0)
        return 0;
    f->trace = wl_trace_create();
    assert_int_equal(wl_trace_read_file(f->trace, TRACE), SL_OK);
    wl_trace_truncate(f->trace, SLICE);
    char err[512];
    f->calib = sim_calib_load("../shared/calibration", "a100", false, err, sizeof err);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    wl_trace_free(f->trace);
    sim_calib_free(f->calib);
    free(f);
    return 0;
}

/* Runs the slice with arrivals sped up by rate_scale. */
static void run(fixture_t *f, sched_strategy_t strat, double rate_scale, int replicas, outcome_t *o)
{
    wl_trace_t *t = wl_trace_create();
    for (size_t i = 0; i < f->trace->n; i++) {
        wl_request_t r;
        wl_trace_get(f->trace, i, &r);
        assert_int_equal(wl_trace_append(t, &r), SL_OK);
    }
    assert_int_equal(wl_trace_rate_scale(t, rate_scale), SL_OK);
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    cfg.sched.strategy = strat;
    cfg.sched.max_sequence_length = 4096;
    cfg.sched.max_waiting_requests = 0;
    cfg.replicas = replicas;
    cfg.router = SIM_ROUTE_LEAST_OUTSTANDING;
    char err[512];
    sim_t *s = sim_create(&cfg, f->calib, err, sizeof err);
    assert_non_null(s);
    memset(o, 0, sizeof *o);
    o->hash = 0xcbf29ce484222325ULL;
    o->ttft = calloc(t->n, sizeof *o->ttft);
    o->first_arrival = t->arrival[0];
    sim_sink_t sink = {o, on_done, on_step, NULL};
    assert_int_equal(sim_run(s, t, &sink, &o->tot, err, sizeof err), SL_OK);
    assert_int_equal(o->tot.done, t->n);
    sim_free(s);
    wl_trace_free(t);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double p99_ttft(outcome_t *o)
{
    qsort(o->ttft, o->completed, sizeof *o->ttft, cmp);
    return o->ttft[(int)(0.99 * (o->completed - 1))];
}

static double req_tput(const outcome_t *o) { return o->completed / (o->last_finish - o->first_arrival); }
static double tok_tput(const outcome_t *o) { return o->out_tokens / (o->last_finish - o->first_arrival); }

#define NEED_TRACE(f)                  \
    do {                               \
        if (!(f)->trace)               \
            skip(); /* ../shared absent */ \
    } while (0)

static void test_same_trace_config_seed_gives_identical_runs(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t a, b;
    run(f, SCHED_CONTINUOUS, 1, 2, &a);
    run(f, SCHED_CONTINUOUS, 1, 2, &b);
    assert_true(a.hash == b.hash);
    assert_memory_equal(&a.tot, &b.tot, sizeof a.tot);
    free(a.ttft);
    free(b.ttft);
}

static void test_continuous_outproduces_naive_at_saturation(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t c, n;
    run(f, SCHED_CONTINUOUS, 20, 1, &c);
    run(f, SCHED_NAIVE, 20, 1, &n);
    assert_true(tok_tput(&c) > 1.5 * tok_tput(&n));
    free(c.ttft);
    free(n.ttft);
}

static void test_continuous_has_lower_p99_ttft_at_moderate_load(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t c, n;
    run(f, SCHED_CONTINUOUS, 0.5, 1, &c);
    run(f, SCHED_NAIVE, 0.5, 1, &n);
    assert_true(p99_ttft(&c) < p99_ttft(&n));
    free(c.ttft);
    free(n.ttft);
}

static double mean_ttft(const outcome_t *o)
{
    double sum = 0;
    for (int i = 0; i < o->completed; i++)
        sum += o->ttft[i];
    return sum / o->completed;
}

static void test_overload_saturates_throughput_while_latency_grows(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t lo, hi;
    run(f, SCHED_CONTINUOUS, 4, 1, &lo);
    run(f, SCHED_CONTINUOUS, 16, 1, &hi);
    double r = req_tput(&hi) / req_tput(&lo);
    assert_true(r > 0.85 && r < 1.3);
    assert_true(mean_ttft(&hi) > 1.3 * mean_ttft(&lo));
    free(lo.ttft);
    free(hi.ttft);
}

static void test_two_replicas_double_saturation_throughput(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t one, two;
    run(f, SCHED_CONTINUOUS, 40, 1, &one);
    run(f, SCHED_CONTINUOUS, 40, 2, &two);
    double r = req_tput(&two) / req_tput(&one);
    assert_true(r > 1.7 && r < 2.3);
    free(one.ttft);
    free(two.ttft);
}

static void test_paged_kv_waste_under_four_percent(void **state)
{
    fixture_t *f = *state;
    NEED_TRACE(f);
    outcome_t o;
    run(f, SCHED_CONTINUOUS, 2, 1, &o);
    assert_true(o.reserved_dt > 0);
    assert_true(1 - o.used_dt / o.reserved_dt < 0.04);
    free(o.ttft);
}

static void test_prefix_groups_hit_the_cache(void **state)
{
    wl_trace_t *t = wl_trace_create();
    for (int i = 0; i < 64; i++) {
        wl_request_t r = {.arrival = i * 0.5, .prompt_len = 600, .output_len = 8, .prefix_group = i % 2,
                          .prefix_len = 512};
        assert_int_equal(wl_trace_append(t, &r), SL_OK);
    }
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    char err[512];
    sim_t *s = sim_create(&cfg, NULL, err, sizeof err);
    assert_non_null(s);
    outcome_t o = {.hash = 0xcbf29ce484222325ULL, .ttft = calloc(64, sizeof(double))};
    sim_sink_t sink = {&o, on_done, on_step, NULL};
    assert_int_equal(sim_run(s, t, &sink, &o.tot, err, sizeof err), SL_OK);
    assert_true(o.cached == 62 * 512); /* every member after its group's first hits 512 tokens */
    assert_int_equal(o.completed, 64);
    sim_free(s);
    wl_trace_free(t);
    free(o.ttft);
}

static void test_router_names_parse(void **state)
{
    sim_router_t r;
    assert_int_equal(sim_router_parse("least-kv", &r), SL_OK);
    assert_int_equal(r, SIM_ROUTE_LEAST_KV);
    assert_int_equal(sim_router_parse("random", &r), SL_EINVAL);
    assert_string_equal(sim_router_name(SIM_ROUTE_LEAST_OUTSTANDING), "least_outstanding");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_trace_config_seed_gives_identical_runs),
        cmocka_unit_test(test_continuous_outproduces_naive_at_saturation),
        cmocka_unit_test(test_continuous_has_lower_p99_ttft_at_moderate_load),
        cmocka_unit_test(test_overload_saturates_throughput_while_latency_grows),
        cmocka_unit_test(test_two_replicas_double_saturation_throughput),
        cmocka_unit_test(test_paged_kv_waste_under_four_percent),
        cmocka_unit_test(test_prefix_groups_hit_the_cache),
        cmocka_unit_test(test_router_names_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
