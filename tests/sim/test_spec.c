/* test_spec.c — speculative decoding in the simulator (sim_config_t.spec_acceptance): a decode
 * step with k draft slots appends 1 + the leading drafts accepted, each with probability alpha
 * given the ones before it, so (1 - alpha^(k+1)) / (1 - alpha) tokens on average.
 *
 * Most tests run requests one after another (arrivals far apart), so every step holds one
 * sequence and the tokens a decode step appended are read off the scheduler's KV-token counter
 * (stats.kv_used_slots after the step minus before); the step that finishes a request releases
 * its KV, so its tokens come from the request's output length instead. Needs no ../shared. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/status.h"
#include "sim/sim.h"
#include "workloads/trace.h"

enum { MAX_K = 16 };

typedef struct probe {
    int k;                    /* num_speculative_tokens of the run */
    /* decode steps of a lone sequence, by tokens appended (1..k+1) */
    long all[MAX_K + 2];      /* every such step */
    long full[MAX_K + 2];     /* those with all k draft slots (not clamped near max_new_tokens) */
    int64_t prev_kv, got;     /* KV tokens after the last step; tokens the current request decoded */
    bool pending, pending_full; /* the last step finished its request: its tokens come with on_done */
    int max_running;
    uint64_t steps, hash;     /* FNV-1a over done records and step end times */
    int completed;
    double tpot_sum;
    int64_t *computed;        /* (n) by request: tokens run through the model, drafts included */
    int *out_len;             /* (n) by request */
    bool check_invariants;    /* options, kept by run(): sched_check_invariants after every step */
    bool crowd;               /* requests overlap: no per-step token counts (all[], full[]) */
} probe_t;

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 0x100000001b3ULL;
}

static void record(probe_t *p, int64_t t, bool full)
{
    assert_true(t >= 1 && t <= p->k + 1);
    p->all[t]++;
    if (full)
        p->full[t]++;
}

static int on_step(void *ctx, const sim_step_info_t *in)
{
    probe_t *p = ctx;
    const sched_step_t *st = in->step;
    p->steps++;
    fnv(&p->hash, &in->t_end, sizeof in->t_end);
    if (in->stats->running > p->max_running)
        p->max_running = in->stats->running;
    if (!p->crowd && st->n_seqs == 1 && st->n_decode_seqs == 1 && st->n_prefill_tokens == 0) {
        bool full = st->n_tokens == 1 + p->k;
        if (in->stats->running == 1) {
            int64_t t = in->stats->kv_used_slots - p->prev_kv;
            record(p, t, full);
            p->got += t;
        } else {
            p->pending = true, p->pending_full = full;
        }
    }
    p->prev_kv = in->stats->kv_used_slots;
    return 0;
}

static int on_done(void *ctx, int replica, const sched_done_t *d)
{
    probe_t *p = ctx;
    fnv(&p->hash, &d->id, sizeof d->id);
    fnv(&p->hash, &d->first_token, sizeof d->first_token);
    fnv(&p->hash, &d->finished, sizeof d->finished);
    fnv(&p->hash, &d->computed_tokens, sizeof d->computed_tokens);
    assert_int_equal(d->reason, SCHED_FINISH_LENGTH);
    if (p->pending) /* the first token came with the prompt; the decode steps made the rest */
        record(p, d->output_len - 1 - p->got, p->pending_full);
    p->pending = false, p->got = 0;
    p->computed[d->id] = d->computed_tokens;
    p->out_len[d->id] = d->output_len;
    p->completed++;
    if (d->output_len > 1)
        p->tpot_sum += (d->finished - d->first_token) / (d->output_len - 1);
    return 0;
}

static int check(void *ctx, const sim_step_info_t *info, sched_t *sched)
{
    char err[256];
    int rc = sched_check_invariants(sched, err, sizeof err);
    if (rc != SL_OK)
        print_error("invariant: %s\n", err);
    return rc;
}

/* n requests of prompt + output tokens, one every gap seconds; grouped: each its own prefix group
 * (the request carries token ids). */
static wl_trace_t *make_trace(int n, int prompt, int output, double gap, bool grouped)
{
    wl_trace_t *t = wl_trace_create();
    assert_non_null(t);
    for (int i = 0; i < n; i++) {
        wl_request_t r = {.arrival = i * gap, .prompt_len = prompt, .output_len = output,
                          .prefix_group = grouped ? i : -1, .prefix_len = grouped ? prompt / 2 : 0};
        assert_int_equal(wl_trace_append(t, &r), SL_OK);
    }
    return t;
}

static double propose_rate = 1; /* cfg.spec_propose of the runs below */

static void run(const wl_trace_t *t, int k, double alpha, uint64_t seed, probe_t *p, sim_totals_t *tot)
{
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    cfg.sched.max_sequence_length = 4096;
    cfg.sched.num_speculative_tokens = k;
    cfg.spec_acceptance = alpha;
    cfg.spec_propose = propose_rate;
    cfg.seed = seed;
    char err[512];
    sim_t *s = sim_create(&cfg, NULL, err, sizeof err);
    if (!s)
        fail_msg("sim_create: %s", err);
    bool inv = p->check_invariants, crowd = p->crowd;
    memset(p, 0, sizeof *p);
    p->k = k, p->check_invariants = inv, p->crowd = crowd;
    p->hash = 0xcbf29ce484222325ULL;
    p->computed = calloc(t->n, sizeof *p->computed);
    p->out_len = calloc(t->n, sizeof *p->out_len);
    if (inv) {
        sim_hook_t h = {p, check};
        sim_set_hook(s, &h);
    }
    sim_sink_t sink = {p, on_done, on_step, NULL};
    int rc = sim_run(s, t, &sink, tot, err, sizeof err);
    if (rc != SL_OK)
        fail_msg("sim_run: %s", err);
    assert_int_equal(tot->done, t->n);
    assert_int_equal(p->completed, (int)t->n);
    for (size_t i = 0; i < t->n; i++)
        assert_int_equal(p->out_len[i], t->output_len[i]);
    sim_free(s);
}

static void probe_free(probe_t *p)
{
    free(p->computed);
    free(p->out_len);
}

/* The law of the tokens T a decode step with k drafts appends: P(T = 1 + a) = alpha^a (1 - alpha)
 * for a < k, alpha^k for a = k. */
static void step_law(double alpha, int k, double *mean, double *var)
{
    double m = 0, m2 = 0;
    for (int a = 0; a <= k; a++) {
        double pr = pow(alpha, a) * (a < k ? 1 - alpha : 1);
        m += pr * (1 + a), m2 += pr * (1 + a) * (1 + a);
    }
    *mean = m, *var = m2 - m * m;
}

/* Mean and variance of the decode steps one request needs for its r tokens after the first, with
 * the scheduler's clamp (at most r' - 1 drafts when r' tokens are left). */
static void steps_law(double alpha, int k, int r, double *mean, double *var)
{
    double *e1 = calloc((size_t)r + 1, sizeof *e1), *e2 = calloc((size_t)r + 1, sizeof *e2);
    for (int x = 1; x <= r; x++) {
        int kk = k < x - 1 ? k : x - 1;
        for (int a = 0; a <= kk; a++) {
            double pr = pow(alpha, a) * (a < kk ? 1 - alpha : 1);
            int left = x - 1 - a;
            e1[x] += pr * (1 + e1[left]);
            e2[x] += pr * (1 + 2 * e1[left] + e2[left]);
        }
    }
    *mean = e1[r], *var = e2[r] - e1[r] * e1[r];
    free(e1);
    free(e2);
}

/* ---- the formulas -------------------------------------------------------------------------- */

static void test_tokens_per_step_formula(void **state)
{
    assert_true(sim_spec_tokens_per_step(0.7, 0) == 1);
    assert_true(sim_spec_tokens_per_step(0, 5) == 1);
    assert_true(sim_spec_tokens_per_step(1, 4) == 5);
    for (int k = 1; k <= 8; k++)
        for (double a = 0.05; a < 1; a += 0.1) {
            double m, v, sum = 0;
            for (int j = 0; j <= k; j++)
                sum += pow(a, j);
            step_law(a, k, &m, &v);
            assert_true(fabs(sim_spec_tokens_per_step(a, k) - sum) < 1e-12);
            assert_true(fabs(m - sum) < 1e-12);
            /* the share of drafts accepted converts back to alpha */
            assert_true(fabs(sim_spec_alpha_from_rate((sum - 1) / k, k) - a) < 1e-9);
        }
    assert_true(fabs(sim_spec_alpha_from_rate(0.5904, 4) - 0.8) < 1e-9); /* 2.3616 of 4 drafts */
    assert_true(sim_spec_alpha_from_rate(0, 4) < 1e-15);
    assert_true(sim_spec_alpha_from_rate(1, 4) > 1 - 1e-15);
    assert_true(isnan(sim_spec_alpha_from_rate(1.2, 4)));
    assert_true(isnan(sim_spec_alpha_from_rate(0.5, 0)));
}

static void test_acceptance_outside_0_1_rejected(void **state)
{
    double bad[] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        sim_config_t cfg;
        assert_int_equal(sim_config_default(&cfg), SL_OK);
        cfg.spec_acceptance = bad[i];
        char err[256] = "", want[64];
        assert_null(sim_create(&cfg, NULL, err, sizeof err));
        snprintf(want, sizeof want, "spec_acceptance: must be 0..1, got %g", bad[i]);
        assert_string_equal(err, want);
    }
}

/* ---- the mean against the formula ------------------------------------------------------------ */

/* Over n full decode steps (all k drafts), the sample mean of T is within z = 5 standard errors
 * (sd / sqrt(n), sd from the law above) of the formula, and so is the share of steps that took
 * every draft (alpha^k, binomial standard error). The run is deterministic: the bound says the
 * draws behave as i.i.d. uniforms would, with a false alarm chance under 1e-6. */
static void test_mean_tokens_per_step_matches_formula(void **state)
{
    const struct {
        double alpha;
        int k;
    } cases[] = {{0.5, 4}, {0.8, 4}, {0.9, 2}, {0.3, 7}, {0.95, 8}};
    wl_trace_t *t = make_trace(64, 32, 2048, 200, false);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double alpha = cases[c].alpha;
        int k = cases[c].k;
        probe_t p = {0};
        sim_totals_t tot;
        run(t, k, alpha, 11, &p, &tot);
        assert_int_equal(p.max_running, 1); /* one request at a time */
        long n = 0;
        double sum = 0;
        for (int j = 1; j <= k + 1; j++)
            n += p.full[j], sum += (double)j * p.full[j];
        double mean, var;
        step_law(alpha, k, &mean, &var);
        double want = sim_spec_tokens_per_step(alpha, k), got = sum / n, tol = 5 * sqrt(var / n);
        double pf = pow(alpha, k), share = (double)p.full[k + 1] / n, tol_f = 5 * sqrt(pf * (1 - pf) / n);
        print_message("alpha %.2f k %d: %ld full steps, %.4f tokens/step (formula %.4f, tolerance %.4f); "
                      "all drafts taken %.4f (alpha^k %.4f +- %.4f)\n",
                      alpha, k, n, got, want, tol, share, pf, tol_f);
        assert_true(n > 8000);
        assert_true(fabs(got - want) <= tol);
        assert_true(fabs(share - pf) <= tol_f);
        /* every decode token is accounted for: 2047 per request */
        long toks = 0;
        for (int j = 1; j <= k + 1; j++)
            toks += (long)j * p.all[j];
        assert_int_equal(toks, 64 * 2047);
        probe_free(&p);
    }
    wl_trace_free(t);
}

/* ---- exact cases ------------------------------------------------------------------------------ */

/* alpha 0: every draft rejected, every result one token: the drafts are pure cost (the behaviour
 * before acceptance was modelled). Same step count as no speculation, each step no cheaper, and no
 * draw is made: the seed changes nothing. */
static void test_acceptance_zero_takes_one_token_per_step(void **state)
{
    wl_trace_t *t = make_trace(16, 32, 300, 100, false);
    probe_t a = {0}, b = {0}, base = {0};
    sim_totals_t ta, tb, tbase;
    run(t, 4, 0, 1, &a, &ta);
    run(t, 4, 0, 2, &b, &tb);
    run(t, 0, 0, 1, &base, &tbase);
    assert_int_equal(a.all[1], 16 * 299);
    for (int j = 2; j <= 5; j++)
        assert_int_equal(a.all[j], 0);
    assert_int_equal(ta.steps, 16 * 300); /* a prompt step and 299 decodes each */
    assert_int_equal(ta.steps, tbase.steps);
    assert_true(a.tpot_sum >= base.tpot_sum);
    assert_true(a.hash == b.hash);
    assert_memory_equal(&ta, &tb, sizeof ta);
    probe_free(&a);
    probe_free(&b);
    probe_free(&base);
    wl_trace_free(t);
}

/* alpha 1: every draft taken; a request with r tokens left takes min(k + 1, r) per step (the
 * scheduler clamps drafts past max_new_tokens), so ceil((output - 1) / (k + 1)) decode steps. */
static void test_acceptance_one_takes_every_draft(void **state)
{
    const int outs[] = {1, 2, 5, 6, 7, 300};
    for (int k = 1; k <= 5; k += 2)
        for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++) {
            wl_trace_t *t = make_trace(8, 32, outs[o], 100, false);
            probe_t p = {0};
            sim_totals_t tot;
            run(t, k, 1, 3, &p, &tot);
            int dec = (outs[o] - 1 + k) / (k + 1);
            assert_int_equal(tot.steps, 8 * (1 + dec));
            assert_int_equal(p.full[k + 1], p.all[k + 1]);
            long full = 0;
            for (int j = 1; j <= k; j++)
                full += p.full[j];
            assert_int_equal(full, 0); /* a full step never takes fewer than all its drafts */
            assert_int_equal(p.all[k + 1], 8 * ((outs[o] - 1) / (k + 1)));
            probe_free(&p);
            wl_trace_free(t);
        }
}

/* spec_propose P: a sequence proposes its drafts in a step with probability P, else the step runs,
 * is priced and reports its token alone. At alpha 1, k 2: proposing steps take 3 tokens, the others
 * 1; their share is P within 5 binomial standard errors, and P 0 prices every step as no drafts
 * would (same steps, same TPOT). */
static void test_propose_rate_drafts_only_that_often(void **state)
{
    wl_trace_t *t = make_trace(32, 32, 2048, 200, false);
    probe_t p = {0}, none = {0}, base = {0};
    sim_totals_t tot, tnone, tbase;
    propose_rate = 0.5;
    run(t, 2, 1, 5, &p, &tot);
    long n = p.all[1] + p.all[3];
    double share = (double)p.full[3] / n, tol = 5 * sqrt(0.25 / n);
    print_message("propose 0.5: %ld decode steps, %.4f proposed (tolerance %.4f)\n", n, share, tol);
    assert_true(n > 20000);
    assert_true(fabs(share - 0.5) <= tol);
    assert_int_equal(p.full[1] + p.full[2], 0); /* a step that proposes at alpha 1 takes all */
    assert_true(p.all[2] <= 32); /* a draft clamped to one near a request's end */
    propose_rate = 0;
    run(t, 2, 1, 5, &none, &tnone);
    propose_rate = 1;
    run(t, 0, 1, 5, &base, &tbase);
    assert_int_equal(none.all[1], 32 * 2047);
    assert_int_equal(tnone.steps, tbase.steps);
    assert_true(fabs(none.tpot_sum - base.tpot_sum) <= 1e-9 * base.tpot_sum);
    probe_free(&p);
    probe_free(&none);
    probe_free(&base);
    wl_trace_free(t);
}

static void test_propose_rate_outside_0_1_rejected(void **state)
{
    sim_config_t cfg;
    assert_int_equal(sim_config_default(&cfg), SL_OK);
    assert_true(cfg.spec_propose == 1);
    char err[256];
    cfg.spec_propose = 1.5;
    assert_null(sim_create(&cfg, NULL, err, sizeof err));
    assert_string_equal(err, "spec_propose: must be 0..1, got 1.5");
}

/* ---- determinism ---------------------------------------------------------------------------- */

/* A loaded replica (requests overlap, half of them carry token ids): the same seed gives the same
 * run bit for bit; another seed other acceptances (most requests run a different number of
 * tokens through the model). The scheduler's invariants hold after every step. */
static void test_same_seed_same_run_other_seed_differs(void **state)
{
    wl_trace_t *t = wl_trace_create();
    for (int i = 0; i < 200; i++) {
        wl_request_t r = {.arrival = i * 0.05, .prompt_len = 64 + (i * 37) % 400, .output_len = 20 + (i * 53) % 300,
                          .prefix_group = i % 2 ? i % 7 : -1, .prefix_len = i % 2 ? 48 : 0};
        assert_int_equal(wl_trace_append(t, &r), SL_OK);
    }
    probe_t a = {.check_invariants = true, .crowd = true}, b = a, c = a;
    sim_totals_t ta, tb, tc;
    run(t, 3, 0.7, 7, &a, &ta);
    run(t, 3, 0.7, 7, &b, &tb);
    run(t, 3, 0.7, 8, &c, &tc);
    assert_true(a.max_running > 10);
    assert_true(a.hash == b.hash);
    assert_memory_equal(&ta, &tb, sizeof ta);
    assert_memory_equal(a.computed, b.computed, t->n * sizeof *a.computed);
    assert_true(a.hash != c.hash);
    int differ = 0;
    for (size_t i = 0; i < t->n; i++)
        differ += a.computed[i] != c.computed[i];
    print_message("seed 7 vs 8: %d of %zu requests ran a different number of tokens\n", differ, t->n);
    assert_true(differ > (int)t->n / 2);
    probe_free(&a);
    probe_free(&b);
    probe_free(&c);
    wl_trace_free(t);
}

/* A request's acceptances depend on (seed, request, position) only, not on what shares its steps:
 * request 0 alone and request 0 with 15 others in every step run the same tokens through the
 * model (token-carrying requests: results hold up to 1 + k ids per sequence). */
static void test_acceptances_independent_of_batching(void **state)
{
    wl_trace_t *alone = make_trace(1, 200, 400, 0, true), *crowd = make_trace(16, 200, 400, 0, true);
    probe_t a = {.check_invariants = true, .crowd = true}, b = a;
    sim_totals_t ta, tb;
    run(alone, 4, 0.6, 5, &a, &ta);
    run(crowd, 4, 0.6, 5, &b, &tb);
    assert_int_equal(b.max_running, 16);
    assert_int_equal(a.computed[0], b.computed[0]);
    assert_true(a.computed[0] > 200 + 399); /* drafts were run */
    probe_free(&a);
    probe_free(&b);
    wl_trace_free(alone);
    wl_trace_free(crowd);
}

/* ---- the effect ------------------------------------------------------------------------------- */

/* A decode-bound trace (32-token prompts, 1024-token outputs, one request at a time): alpha 0.8
 * with k 4 needs fewer steps and gives a lower TPOT than no speculation. Without speculation it is
 * exactly 1024 steps per request; with it the step count is within 5 standard deviations of its
 * exact expectation (steps_law: the clamp near max_new_tokens included), and the drop is the
 * tokens-per-step factor 3.36 to within 2% (the prompt steps and the clamped last steps account
 * for 0.4%, the sampling spread for 0.35% per standard deviation). A speculating step costs more
 * than a plain decode on average (its drafts are charged). */
static void test_speculation_speeds_up_decode_bound_trace(void **state)
{
    const int n = 64, out = 1024, k = 4;
    const double alpha = 0.8;
    wl_trace_t *t = make_trace(n, 32, out, 100, false);
    probe_t p0 = {0}, p4 = {0};
    sim_totals_t t0, t4;
    run(t, 0, 0, 9, &p0, &t0);
    run(t, k, alpha, 9, &p4, &t4);
    assert_int_equal(p4.max_running, 1);
    assert_int_equal(t0.steps, (uint64_t)n * out);
    double m, v;
    steps_law(alpha, k, out - 1, &m, &v);
    double want = n * (1 + m), sd = sqrt(n * v);
    double factor = (double)t0.steps / t4.steps, tau = sim_spec_tokens_per_step(alpha, k);
    double tpot0 = p0.tpot_sum / n, tpot4 = p4.tpot_sum / n;
    double step0 = t0.busy_time / t0.steps, step4 = t4.busy_time / t4.steps;
    print_message("steps %llu -> %llu (expected %.1f +- %.1f): %.3fx, tokens per step %.3f; TPOT %.3f -> %.3f ms "
                  "(%.2fx); mean step %.4f -> %.4f ms\n",
                  (unsigned long long)t0.steps, (unsigned long long)t4.steps, want, sd, factor, tau, 1e3 * tpot0,
                  1e3 * tpot4, tpot0 / tpot4, 1e3 * step0, 1e3 * step4);
    assert_true(fabs(t4.steps - want) <= 5 * sd);
    assert_true(fabs(factor / tau - 1) < 0.02);
    assert_true(tpot4 < tpot0);
    assert_true(step4 > step0); /* the drafts are charged */
    probe_free(&p0);
    probe_free(&p4);
    wl_trace_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_per_step_formula),
        cmocka_unit_test(test_acceptance_outside_0_1_rejected),
        cmocka_unit_test(test_mean_tokens_per_step_matches_formula),
        cmocka_unit_test(test_acceptance_zero_takes_one_token_per_step),
        cmocka_unit_test(test_acceptance_one_takes_every_draft),
        cmocka_unit_test(test_same_seed_same_run_other_seed_differs),
        cmocka_unit_test(test_acceptances_independent_of_batching),
        cmocka_unit_test(test_speculation_speeds_up_decode_bound_trace),
        cmocka_unit_test(test_propose_rate_drafts_only_that_often),
        cmocka_unit_test(test_propose_rate_outside_0_1_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
