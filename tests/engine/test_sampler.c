/* test_sampler.c — greedy, seeded draws, top-k / top-p / min-p, penalties, logprobs, stop strings. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sampler.h"
#include "sched/status.h"

#define V 1000

/* A row with a clear order: logit(i) = -|i - 500| / 50, peak at 500, plus a bump at 123. */
static void row(float *l)
{
    for (int i = 0; i < V; i++) l[i] = -fabsf((float)(i - 500)) / 50.0f;
    l[123] = -0.05f;
}

static int32_t draw(const eng_sampler_params_t *p, eng_sampler_ws_t *ws, const float *l, eng_sampler_t *s)
{
    int32_t tok = -1;
    assert_int_equal(eng_sampler_sample(s, ws, l, NULL, 0, &tok, NULL), SL_OK);
    return tok;
}

static void test_greedy_is_argmax_with_raw_logprob(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    row(l);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.temperature = 0;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int32_t tok;
    float lp;
    assert_int_equal(eng_sampler_sample(&s, ws, l, NULL, 0, &tok, &lp), SL_OK);
    assert_int_equal(tok, 500);
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp(l[i]);
    assert_float_equal(lp, -log(sum), 1e-5);
    assert_int_equal(s.rng, p.seed); /* greedy draws nothing */
    eng_sampler_ws_free(ws);
}

/* The vectorised log-softmax against libm in double on a vocabulary-sized row with a tail that is
 * not a multiple of 8, a NaN and a -inf among the logits, over a 40-unit range. */
static void test_logprob_matches_double_precision_on_a_large_row(void **state)
{
    enum { BIG = 49152 + 5 };
    float *l = malloc(sizeof(float) * BIG);
    assert_non_null(l);
    uint32_t x = 12345;
    for (int i = 0; i < BIG; i++) {
        x = x * 1664525u + 1013904223u;
        l[i] = (float)(x >> 8) / (float)(1u << 24) * 40.0f - 25.0f;
    }
    l[7] = NAN, l[9] = -INFINITY, l[BIG - 1] = 16.0f; /* the top logit is in the tail */
    eng_sampler_ws_t *ws = eng_sampler_ws_create(BIG);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.temperature = 0;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int32_t tok;
    float lp;
    assert_int_equal(eng_sampler_sample(&s, ws, l, NULL, 0, &tok, &lp), SL_OK);
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < BIG; i++)
        if (!isnan(l[i]) && l[i] > mx) mx = l[i];
    for (int i = 0; i < BIG; i++)
        if (!isnan(l[i])) sum += exp((double)l[i] - mx);
    assert_true(l[tok] == (float)mx);
    assert_float_equal(lp, l[tok] - mx - log(sum), 1e-5);
    eng_sampler_ws_free(ws);
    free(l);
}

static void test_same_seed_same_tokens_other_seed_differs(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    row(l);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.seed = 42;
    eng_sampler_t a, b, c;
    eng_sampler_init(&a, &p);
    eng_sampler_init(&b, &p);
    p.seed = 43;
    eng_sampler_init(&c, &p);
    int differ = 0;
    for (int i = 0; i < 50; i++) {
        int32_t ta = draw(&a.p, ws, l, &a);
        /* interleaving another sequence on the same workspace changes nothing */
        (void)draw(&c.p, ws, l, &c);
        assert_int_equal(ta, draw(&b.p, ws, l, &b));
        differ |= ta != 500;
    }
    assert_true(differ); /* temperature 1 really samples */
    eng_sampler_ws_free(ws);
}

static void test_top_k_1_and_tiny_top_p_are_greedy(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    row(l);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.temperature = 1.5f;
    p.top_k = 1;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    for (int i = 0; i < 20; i++) assert_int_equal(draw(&p, ws, l, &s), 500);
    p.top_k = 0;
    p.top_p = 1e-6f;
    eng_sampler_init(&s, &p);
    for (int i = 0; i < 20; i++) assert_int_equal(draw(&p, ws, l, &s), 500);
    /* a temperature whose inverse overflows (1e-39 is a float denormal) is greedy too, and draws
     * nothing from the PRNG */
    p.top_p = 1.0f;
    p.temperature = 1e-39f;
    eng_sampler_init(&s, &p);
    uint64_t before = s.rng;
    for (int i = 0; i < 20; i++) assert_int_equal(draw(&p, ws, l, &s), 500);
    assert_true(s.rng == before);
    eng_sampler_ws_free(ws);
}

static void test_top_k_keeps_only_the_k_best(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    row(l);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.top_k = 3; /* 500 (0), 123 (-0.05), 499/501 (-0.02) -> {500, 499, 501} */
    p.seed = 7;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int seen[V] = {0};
    for (int i = 0; i < 300; i++) seen[draw(&p, ws, l, &s)]++;
    assert_true(seen[500] && seen[499] && seen[501]);
    assert_int_equal(seen[500] + seen[499] + seen[501], 300);
    eng_sampler_ws_free(ws);
}

static void test_top_p_keeps_the_nucleus(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -30.0f;
    l[10] = logf(0.5f); l[20] = logf(0.3f); l[30] = logf(0.15f); l[40] = logf(0.05f);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.top_p = 0.75f; /* 0.5 + 0.3 reaches it: {10, 20} */
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int seen[V] = {0};
    for (int i = 0; i < 400; i++) seen[draw(&p, ws, l, &s)]++;
    assert_true(seen[10] > 0 && seen[20] > 0);
    assert_int_equal(seen[10] + seen[20], 400);
    eng_sampler_ws_free(ws);
}

static void test_top_p_nucleus_wider_than_the_first_sorted_prefix(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    for (int i = 0; i < V; i++) l[V - 1 - i] = -0.001f * (float)i; /* nearly flat, best last */
    eng_sampler_params_t p = eng_sampler_params_default();
    p.top_p = 0.5f; /* the 381 best hold half the mass: (1 - e^-0.381) / (1 - e^-1) > 0.5 */
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int lowest = V;
    for (int i = 0; i < 2000; i++) {
        int32_t t = draw(&p, ws, l, &s);
        assert_true(t >= V - 381);
        lowest = t < lowest ? t : lowest;
    }
    assert_true(lowest < V - 64); /* beyond the first 64-token sorted prefix */
    eng_sampler_ws_free(ws);
}

static void test_min_p_drops_unlikely_tokens(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -5.0f; /* each e^-5 ~ 0.0067 of the top */
    l[7] = 0.0f;
    l[8] = logf(0.5f);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.min_p = 0.1f;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int seen[V] = {0};
    for (int i = 0; i < 300; i++) seen[draw(&p, ws, l, &s)]++;
    assert_true(seen[7] > 0 && seen[8] > 0);
    assert_int_equal(seen[7] + seen[8], 300);
    eng_sampler_ws_free(ws);
}

static void test_repetition_penalty_changes_the_greedy_pick(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = 0.0f;
    l[5] = 2.0f;
    l[6] = 1.5f;
    eng_sampler_params_t p = eng_sampler_params_default();
    p.temperature = 0;
    p.repetition_penalty = 1.5f; /* 2.0 / 1.5 = 1.33 < 1.5 */
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    const int32_t prev[] = {9, 5, 5, 3};
    int32_t tok;
    assert_int_equal(eng_sampler_sample(&s, ws, l, prev, 4, &tok, NULL), SL_OK);
    assert_int_equal(tok, 6);
    p.repetition_last_n = 1; /* only the last token (3) is in the window */
    eng_sampler_init(&s, &p);
    assert_int_equal(eng_sampler_sample(&s, ws, l, prev, 4, &tok, NULL), SL_OK);
    assert_int_equal(tok, 5);
    p.repetition_penalty = 1.0f;
    p.repetition_last_n = 64;
    p.frequency_penalty = 0.3f; /* 2.0 - 2 * 0.3 = 1.4 < 1.5 */
    eng_sampler_init(&s, &p);
    assert_int_equal(eng_sampler_sample(&s, ws, l, prev, 4, &tok, NULL), SL_OK);
    assert_int_equal(tok, 6);
    p.frequency_penalty = 0;
    p.presence_penalty = 0.4f; /* 2.0 - 0.4 = 1.6 > 1.5 */
    eng_sampler_init(&s, &p);
    assert_int_equal(eng_sampler_sample(&s, ws, l, prev, 4, &tok, NULL), SL_OK);
    assert_int_equal(tok, 5);
    eng_sampler_ws_free(ws);
}

static void test_row_without_finite_logit_is_an_error(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(4);
    float l[4] = {NAN, -INFINITY, NAN, -INFINITY};
    eng_sampler_params_t p = eng_sampler_params_default();
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    int32_t tok = 77;
    assert_int_equal(eng_sampler_sample(&s, ws, l, NULL, 0, &tok, NULL), SL_EINVAL);
    assert_int_equal(tok, 77);
    eng_sampler_ws_free(ws);
    assert_null(eng_sampler_ws_create(0));
}

/* prepare lists the window's distinct tokens with their counts and draws only when it samples */
static void test_prepare_lists_the_window_and_draws_only_to_sample(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    eng_sampler_params_t p = eng_sampler_params_default();
    p.temperature = 0;
    p.repetition_penalty = 1.3f;
    p.repetition_last_n = 5;
    eng_sampler_t s;
    eng_sampler_init(&s, &p);
    const int32_t prev[] = {1, 9, 5, 5, 3, 5, V + 4};
    assert_int_equal(eng_sampler_max_pairs(&s, 7), 5);
    int32_t pen[2 * 8] = {0};
    eng_sample_row_t row;
    assert_int_equal(eng_sampler_prepare(&s, ws, prev, 7, &row, pen, 2), 2); /* 5 x3, 3 x1; V+4 out of range */
    assert_int_equal(row.pen_off, 2);
    assert_int_equal(row.n_pen, 2);
    const int32_t want[] = {5, 3, 3, 1};
    assert_memory_equal(pen + 4, want, sizeof want);
    assert_true(row.u == 0 && s.rng == p.seed); /* greedy: no draw */
    p.temperature = 0.7f;
    p.repetition_penalty = 1.0f;
    eng_sampler_init(&s, &p);
    assert_int_equal(eng_sampler_max_pairs(&s, 7), 0);
    assert_int_equal(eng_sampler_prepare(&s, ws, prev, 7, &row, pen, 0), 0);
    assert_true(row.u >= 0 && row.u < 1 && s.rng != p.seed);
    eng_sampler_ws_free(ws);
}

static int32_t pick(eng_sampler_ws_t *ws, const float *l, eng_sample_row_t row)
{
    int32_t tok = -1;
    assert_int_equal(eng_sampler_pick(ws, l, &row, NULL, &tok, NULL), SL_OK);
    return tok;
}

/* Greedy takes the first of equal maxima wherever they lie (the row is scanned 8 lanes at a time
 * with a tail: 1003 logits), skips NaN, and has no token to give when every logit is NaN or -inf. */
static void test_greedy_takes_the_first_of_equal_maxima(void **state)
{
    enum { N = 1003 };
    eng_sampler_ws_t *ws = eng_sampler_ws_create(N);
    float l[N];
    const eng_sample_row_t greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    const int ties[][3] = {{9, 6, 6}, {6, 9, 6}, {17, 16, 16}, {1001, 994, 994}, {999, 1002, 999}, {0, 1, 0}};
    for (size_t c = 0; c < sizeof ties / sizeof ties[0]; c++) {
        for (int i = 0; i < N; i++)
            l[i] = -1.0f;
        l[ties[c][0]] = l[ties[c][1]] = 2.0f;
        assert_int_equal(pick(ws, l, greedy), ties[c][2]);
    }
    for (int i = 0; i < N; i++)
        l[i] = -1.0f;
    l[0] = NAN, l[500] = NAN, l[1] = 0.5f, l[1002] = 0.75f; /* a larger value in the tail */
    assert_int_equal(pick(ws, l, greedy), 1002);
    for (int i = 0; i < N; i++)
        l[i] = i % 2 ? NAN : -INFINITY;
    int32_t tok = -1;
    assert_int_equal(eng_sampler_pick(ws, l, &greedy, NULL, &tok, NULL), SL_EINVAL);
    eng_sampler_ws_free(ws);
}

/* A NaN logit is never drawn: it counts as -inf (probability 0) in every draw, at every position
 * of the row (in the 8-lane passes and in their tail), so each draw is the draw from the same row
 * with -inf in its place. */
static void test_draws_skip_nan_logits(void **state)
{
    enum { N = 1003 };
    eng_sampler_ws_t *ws = eng_sampler_ws_create(N);
    float l[N], clean[N];
    for (int i = 0; i < N; i++)
        l[i] = clean[i] = -fabsf((float)(i - 400)) / 200.0f;
    for (int i = 3; i < N; i += 7) /* NaN every 7th, and 1001 in the tail past the last 8 */
        l[i] = NAN, clean[i] = -INFINITY;
    l[1001] = NAN, clean[1001] = -INFINITY;
    const eng_sample_row_t rows[] = {
        {.temperature = 1, .top_p = 1, .repetition_penalty = 1},
        {.temperature = 0.7f, .top_k = 50, .top_p = 1, .repetition_penalty = 1},
        {.temperature = 1.3f, .top_p = 0.9f, .min_p = 0.01f, .repetition_penalty = 1},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        for (int k = 0; k < 200; k++) {
            eng_sample_row_t row = rows[r];
            row.u = (k + 0.5) / 200;
            const int32_t tok = pick(ws, l, row);
            assert_false(isnan(l[tok]));
            assert_int_equal(tok, pick(ws, clean, row));
        }
    eng_sampler_ws_free(ws);
}

/* The selection does not depend on how it is computed: top-k ties go to the lower id, the top-p
 * prefix is ordered by probability then id, and the draw walks the survivors by id. */
static void test_pick_is_canonical(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    l[40] = l[30] = l[20] = l[10] = 1.0f; /* four equal candidates */
    eng_sample_row_t r = {.temperature = 1, .top_k = 3, .top_p = 1, .repetition_penalty = 1};
    /* survivors {10, 20, 30}, each a third of the mass */
    r.u = 0.0;
    assert_int_equal(pick(ws, l, r), 10);
    r.u = 0.5;
    assert_int_equal(pick(ws, l, r), 20);
    r.u = 0.999;
    assert_int_equal(pick(ws, l, r), 30);
    /* top-p 0.5 of four equal: the two lowest ids reach it */
    r.top_k = 0, r.top_p = 0.5f, r.u = 0.999;
    assert_int_equal(pick(ws, l, r), 20);
    /* no filter: the walk is by id, so u just under 3/4 lands on the third candidate */
    r.top_p = 1, r.u = 0.74;
    assert_int_equal(pick(ws, l, r), 30);
    /* penalties from pairs: 20 repeated twice drops below the others with frequency 1.0 */
    const int32_t pen[] = {20, 2};
    r = (eng_sample_row_t){.temperature = 0, .top_p = 1, .repetition_penalty = 1,
                           .frequency_penalty = 1.0f, .n_pen = 1};
    l[20] = 2.5f;
    int32_t tok;
    assert_int_equal(eng_sampler_pick(ws, l, &r, pen, &tok, NULL), SL_OK);
    assert_int_equal(tok, 10); /* 2.5 - 2 = 0.5 < 1.0; 10 is the lowest of the rest */
    eng_sampler_ws_free(ws);
}

/* eng_sampler_sample is prepare + pick: the same tokens from the same seed for every filter */
static void test_sample_is_prepare_then_pick(void **state)
{
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    float l[V];
    row(l);
    const eng_sampler_params_t base = eng_sampler_params_default();
    eng_sampler_params_t ps[4] = {base, base, base, base};
    ps[1].top_k = 40, ps[1].temperature = 0.8f;
    ps[2].top_p = 0.9f, ps[2].repetition_penalty = 1.2f;
    ps[3].min_p = 0.05f, ps[3].top_k = 200, ps[3].top_p = 0.95f, ps[3].presence_penalty = 0.5f;
    int32_t prev[64 + 1];
    for (int c = 0; c < 4; c++) {
        eng_sampler_t a, b;
        ps[c].seed = 11 + (uint64_t)c;
        eng_sampler_init(&a, &ps[c]);
        eng_sampler_init(&b, &ps[c]);
        for (int i = 0; i < 64; i++) {
            int32_t ta, tb, pen[2 * 64];
            float la, lb;
            eng_sample_row_t r;
            assert_int_equal(eng_sampler_sample(&a, ws, l, prev, i, &ta, &la), SL_OK);
            eng_sampler_prepare(&b, ws, prev, i, &r, pen, 0);
            assert_int_equal(eng_sampler_pick(ws, l, &r, pen, &tb, &lb), SL_OK);
            assert_int_equal(ta, tb);
            assert_true(la == lb);
            prev[i] = ta;
        }
    }
    eng_sampler_ws_free(ws);
}

static void test_stop_string_found_cuts_before_it(void **state)
{
    const char *stops[] = {"", "END", "\n\n"};
    size_t emit;
    assert_int_equal(eng_stop_scan("hello\n\nEND", 10, stops, 3, &emit), 1);
    assert_int_equal(emit, 5);
}

static void test_stop_string_prefix_is_held_back(void **state)
{
    const char *stops[] = {"END"};
    size_t emit;
    assert_int_equal(eng_stop_scan("hello EN", 8, stops, 1, &emit), 0);
    assert_int_equal(emit, 6);
    assert_int_equal(eng_stop_scan("hello E!", 8, stops, 1, &emit), 0);
    assert_int_equal(emit, 8);
    /* an incomplete UTF-8 sequence is held back too: "é" is c3 a9 */
    assert_int_equal(eng_stop_scan("caf\xc3", 4, stops, 1, &emit), 0);
    assert_int_equal(emit, 3);
    assert_int_equal(eng_stop_scan("caf\xc3\xa9", 5, stops, 1, &emit), 0);
    assert_int_equal(emit, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax_with_raw_logprob),
        cmocka_unit_test(test_logprob_matches_double_precision_on_a_large_row),
        cmocka_unit_test(test_same_seed_same_tokens_other_seed_differs),
        cmocka_unit_test(test_top_k_1_and_tiny_top_p_are_greedy),
        cmocka_unit_test(test_top_k_keeps_only_the_k_best),
        cmocka_unit_test(test_top_p_keeps_the_nucleus),
        cmocka_unit_test(test_top_p_nucleus_wider_than_the_first_sorted_prefix),
        cmocka_unit_test(test_greedy_takes_the_first_of_equal_maxima),
        cmocka_unit_test(test_min_p_drops_unlikely_tokens),
        cmocka_unit_test(test_repetition_penalty_changes_the_greedy_pick),
        cmocka_unit_test(test_row_without_finite_logit_is_an_error),
        cmocka_unit_test(test_prepare_lists_the_window_and_draws_only_to_sample),
        cmocka_unit_test(test_pick_is_canonical),
        cmocka_unit_test(test_draws_skip_nan_logits),
        cmocka_unit_test(test_sample_is_prepare_then_pick),
        cmocka_unit_test(test_stop_string_found_cuts_before_it),
        cmocka_unit_test(test_stop_string_prefix_is_held_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
