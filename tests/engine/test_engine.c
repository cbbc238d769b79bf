/* test_engine.c — the serving loop through the public API (include/sluice.h) on stories260K:
 * greedy tokens equal llama.cpp's fixtures alone and batched under every strategy, cancel frees
 * every block, the queue bound and the context bound give their codes, seeded sampling repeats,
 * parallel samples share prompt blocks, shutdown with requests in flight returns in time,
 * presence/frequency penalties change greedy output, top_logprobs are the raw row's best tokens
 * (streamed and in the result, also with best_of > n), the adaptive controller raises a tiny token
 * budget under a burst without changing greedy outputs; with the KV cache in F16 the batched
 * greedy tokens are still llama.cpp's. */
#include <setjmp.h>
#include <stdarg.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "include/sluice.h"

#define MODEL "../shared/models/stories260K.gguf"
#define FIXTURE "../shared/fixtures/stories260K_greedy.txt"
#define N_FIX 3
#define MAX_IDS 128

typedef struct fixture {
    char prompt[128];
    int32_t prompt_ids[MAX_IDS], output_ids[MAX_IDS];
    int n_prompt, n_output;
} fixture_t;

static int parse_ids(const char *s, int32_t *out)
{
    int n = 0;
    char *end;
    for (;;) {
        long v = strtol(s, &end, 10);
        if (end == s || n == MAX_IDS)
            return n;
        out[n++] = (int32_t)v;
        s = end;
    }
}

/* Reads the three greedy fixtures; 0 when the file is absent. */
static int read_fixtures(fixture_t *fx)
{
    FILE *f = fopen(FIXTURE, "r");
    if (!f)
        return 0;
    char line[4096];
    int k = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "=== ", 4) && k + 1 < N_FIX)
            snprintf(fx[++k].prompt, sizeof fx[k].prompt, "%.127s", line + 4);
        else if (k >= 0 && !strncmp(line, "prompt_ids:", 11))
            fx[k].n_prompt = parse_ids(line + 11, fx[k].prompt_ids);
        else if (k >= 0 && !strncmp(line, "output_ids:", 11))
            fx[k].n_output = parse_ids(line + 11, fx[k].output_ids);
    }
    fclose(f);
    return k + 1;
}

/* The fixtures into fx, or the test is skipped (and says so) when the file is absent. */
static void require_fixtures(fixture_t fx[N_FIX])
{
    memset(fx, 0, sizeof(fixture_t) * N_FIX);
    if (read_fixtures(fx) != N_FIX) {
        print_message("skipped: %s is absent\n", FIXTURE);
        skip();
    }
}

static int model_present(void) { return access(MODEL, R_OK) == 0; }

#define REQUIRE_MODEL()                                                                        \
    do {                                                                                       \
        if (!model_present()) {                                                                \
            print_message("skipped: %s is absent\n", MODEL);                                   \
            skip();                                                                            \
        }                                                                                      \
    } while (0)

static sluice_engine_params small_params(void)
{
    sluice_engine_params p = sluice_engine_default_params();
    p.model = MODEL;
    p.n_threads = 2;
    p.max_num_seqs = 16;
    p.max_batch_size = 8;
    p.batch_timeout_ms = 5;
    p.kv_memory_mb = 64;
    return p;
}

static sluice_engine *create(const sluice_engine_params *p)
{
    char err[512] = "";
    sluice_engine *e = sluice_engine_create(p, err, sizeof err);
    if (!e)
        print_error("sluice_engine_create: %s\n", err);
    assert_non_null(e);
    return e;
}

/* The engine of small_params() as it is, which most tests want (skips when the model is absent). */
static sluice_engine *create_small(void)
{
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    return create(&p);
}

static sluice_request_params greedy(const char *prompt, int max_tokens)
{
    sluice_request_params r = sluice_request_default_params();
    r.prompt = prompt;
    r.max_tokens = max_tokens;
    r.temperature = 0;
    return r;
}

static void assert_ids_equal(const int32_t *a, int na, const int32_t *b, int nb)
{
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++) {
        if (a[i] != b[i])
            print_error("token %d: got %d, want %d\n", i, a[i], b[i]);
        assert_int_equal(a[i], b[i]);
    }
}

#define MAX_REPS 8

/* Submits the fixtures' prompts reps times each at once (a batch), waits for all, checks every id. */
static void check_fixtures_batched(sluice_engine *e, int reps)
{
    fixture_t fx[N_FIX];
    require_fixtures(fx);
    assert_true(reps >= 1 && reps <= MAX_REPS);
    sluice_request_id ids[N_FIX * MAX_REPS];
    for (int i = 0; i < N_FIX * reps; i++) {
        sluice_request_params r = greedy(fx[i % N_FIX].prompt, fx[i % N_FIX].n_output);
        assert_int_equal(sluice_submit(e, &r, &ids[i]), SLUICE_OK);
    }
    for (int i = 0; i < N_FIX * reps; i++) {
        int k = i % N_FIX;
        sluice_result *res = NULL;
        assert_int_equal(sluice_wait(e, ids[i], 60, &res), SLUICE_OK);
        assert_int_equal(res->status, SLUICE_OK);
        assert_ids_equal(res->prompt_ids, res->n_prompt_ids, fx[k].prompt_ids, fx[k].n_prompt);
        assert_ids_equal(res->samples[0].ids, res->samples[0].n_ids, fx[k].output_ids, fx[k].n_output);
        assert_int_equal(res->samples[0].finish_reason, SLUICE_FINISH_LENGTH);
        assert_true(res->t_first_token >= res->t_first_scheduled);
        assert_true(res->t_finish >= res->t_first_token);
        sluice_result_free(res);
    }
}

static void test_engine_greedy_matches_llama_cpp_alone(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    fixture_t fx[N_FIX];
    require_fixtures(fx);
    sluice_engine_params p = small_params();
    sluice_engine *e = create(&p);
    for (int k = 0; k < N_FIX; k++) {
        sluice_request_params r = greedy(fx[k].prompt, fx[k].n_output);
        sluice_request_id id;
        sluice_result *res;
        assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
        assert_int_equal(sluice_wait(e, id, 60, &res), SLUICE_OK);
        assert_ids_equal(res->samples[0].ids, res->samples[0].n_ids, fx[k].output_ids, fx[k].n_output);
        sluice_result_free(res);
    }
    sluice_engine_free(e);
}

static void test_engine_reports_its_cpu_threads(void **state)
{
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    sluice_engine *e = create(&p);
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.threads_active, 2);
    assert_int_equal(st.thread_drops, 0);
    sluice_engine_free(e);
}

static void run_strategy(sluice_strategy s)
{
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.strategy = s;
    sluice_engine *e = create(&p);
    check_fixtures_batched(e, 1);
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.requests_finished, N_FIX);
    assert_true(st.generation_tokens >= N_FIX * 64);
    sluice_engine_free(e);
}

/* The adaptive controller in the serving loop: from a deliberately tiny token budget (8) and a
 * TTFT target no request can meet (1 us), a burst gives TTFTs over target, a second burst makes the
 * queue grow, and the controller raises the budget (x2 per change, counted in the stats); greedy
 * outputs stay the fixtures' tokens under every budget it picks. */
static void test_engine_adaptive_raises_a_tiny_token_budget(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.max_num_batched_tokens = 8;
    p.adaptive = true;
    p.adaptive_ttft_p99_s = 1e-6;
    p.adaptive_tpot_p99_s = 0; /* no TPOT rule: the budget only goes up */
    p.adaptive_min_batched_tokens = 8;
    p.adaptive_max_batched_tokens = 1024;
    p.adaptive_min_samples = 4;
    p.adaptive_window_s = 600;
    p.adaptive_eval_interval_s = 0;
    p.adaptive_min_interval_s = 0;
    sluice_engine *e = create(&p);
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.max_num_batched_tokens, 8);
    assert_int_equal(st.adaptive_changes, 0);
    check_fixtures_batched(e, 2); /* TTFTs over target in the window */
    check_fixtures_batched(e, 2); /* the queue grows again: raise */
    sluice_get_stats(e, &st);
    print_message("adaptive: %lld changes, token budget 8 -> %d\n", (long long)st.adaptive_changes,
                  st.max_num_batched_tokens);
    assert_true(st.adaptive_changes >= 1);
    assert_int_equal(st.max_num_batched_tokens, 8 << st.adaptive_changes);
    assert_int_equal(st.kv_blocks_used, 0);
    sluice_engine_free(e);

    /* bad bounds are refused at create, naming the field */
    p.adaptive_min_batched_tokens = 0;
    char err[256] = "";
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_non_null(strstr(err, "budget_min"));
}

/* The KV cache in F16 (kv_dtype): the fixtures' prompts twice each at once (shared prompt blocks
 * from the prefix cache, batched decode) still give llama.cpp's tokens, and the pool under the same
 * kv_memory_mb holds twice the blocks of F32; in int8 (stories260K's head size 8: 12 bytes a row
 * with its scale, against F32's 32) 8/3 times. */
static void test_engine_f16_kv_batched_matches_fixtures(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.kv_memory_mb = 4; /* the cap sizes the pool, not max_num_seqs */
    p.kv_dtype = SLUICE_KV_F32; /* the default depends on the CPU */
    sluice_engine *e32 = create(&p);
    int b32 = eng_engine_sched_config(e32)->num_blocks;
    sluice_engine_free(e32);
    p.kv_dtype = SLUICE_KV_INT8;
    sluice_engine *e8 = create(&p);
    int b8 = eng_engine_sched_config(e8)->num_blocks;
    sluice_engine_free(e8);
    if (b8 < 8 * b32 / 3 || b8 > 8 * (b32 + 1) / 3) /* the F32 count is rounded down */
        fail_msg("int8 pool %d blocks, F32 pool %d", b8, b32);
    p.kv_dtype = SLUICE_KV_F16;
    sluice_engine *e = create(&p);
    int b16 = eng_engine_sched_config(e)->num_blocks;
    if (b16 < 2 * b32 || b16 > 2 * b32 + 1) /* + 1: the F32 count is rounded down */
        fail_msg("F16 pool %d blocks, F32 pool %d", b16, b32);
    check_fixtures_batched(e, 2);
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    sluice_engine_free(e);
}

static void test_engine_batched_continuous_matches_fixtures(void **s) { (void)s; run_strategy(SLUICE_STRATEGY_CONTINUOUS); }
static void test_engine_batched_naive_matches_fixtures(void **s) { (void)s; run_strategy(SLUICE_STRATEGY_NAIVE); }
static void test_engine_batched_bucketed_matches_fixtures(void **s) { (void)s; run_strategy(SLUICE_STRATEGY_BUCKETED); }
static void test_engine_batched_memory_aware_matches_fixtures(void **s) { (void)s; run_strategy(SLUICE_STRATEGY_MEMORY_AWARE); }

/* ---- cancel ---- */

typedef struct counter {
    atomic_int tokens;
    int stop_at;       /* callback returns false at this many tokens (0 = never) */
} counter_t;

static bool count_tokens(const sluice_token *t, void *user)
{
    counter_t *c = user;
    int n = atomic_fetch_add(&c->tokens, 1) + 1;
    (void)t;
    return c->stop_at == 0 || n < c->stop_at;
}

static void sleep_ms(int ms) { nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL); }

static void assert_all_blocks_free(sluice_engine *e)
{
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.kv_blocks_free + st.kv_blocks_cached, st.kv_blocks_total);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.waiting, 0);
}

static void test_engine_cancel_mid_stream_frees_every_block(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    counter_t c = {0};
    sluice_request_params r = greedy("Once upon a time", 400);
    r.ignore_eos = true;
    r.on_token = count_tokens;
    r.user = &c;
    sluice_request_id id;
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    for (int i = 0; i < 5000 && atomic_load(&c.tokens) < 3; i++)
        sleep_ms(1);
    assert_true(atomic_load(&c.tokens) >= 3);
    assert_int_equal(sluice_cancel(e, id), SLUICE_OK);
    sluice_result *res;
    assert_int_equal(sluice_wait(e, id, 30, &res), SLUICE_OK);
    assert_int_equal(res->status, SLUICE_ECANCELED);
    assert_int_equal(res->samples[0].finish_reason, SLUICE_FINISH_ABORT);
    assert_true(res->samples[0].n_ids < 400);
    sluice_result_free(res);
    assert_all_blocks_free(e);
    assert_int_equal(sluice_cancel(e, id), SLUICE_ENOTFOUND);
    sluice_engine_free(e);
}

static void test_engine_callback_false_cancels(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    counter_t c = {.stop_at = 5};
    sluice_request_params r = greedy("Lily wanted to", 200);
    r.ignore_eos = true;
    r.on_token = count_tokens;
    r.user = &c;
    sluice_request_id id;
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    sluice_result *res;
    assert_int_equal(sluice_wait(e, id, 30, &res), SLUICE_OK);
    assert_int_equal(res->status, SLUICE_ECANCELED);
    assert_true(res->samples[0].n_ids < 200);
    assert_int_equal(atomic_load(&c.tokens), 5); /* no callback after the one that said stop */
    sluice_result_free(res);
    assert_all_blocks_free(e);
    sluice_engine_free(e);
}

/* ---- bounds ---- */

static void test_engine_queue_full_has_its_own_code(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.strategy = SLUICE_STRATEGY_NAIVE; /* requests wait for the batch to fill */
    p.batch_timeout_ms = 60000;
    p.max_waiting_requests = 2;
    sluice_engine *e = create(&p);
    sluice_request_params r = greedy("The little dog", 8);
    sluice_request_id id;
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_EQUEUE_FULL);
    assert_non_null(strstr(sluice_engine_errmsg(e), "queue"));
    sluice_stats st;
    sluice_get_stats(e, &st);
    assert_int_equal(st.requests_rejected, 1);
    assert_int_equal(sluice_engine_shutdown(e, 0), 2);
    sluice_engine_free(e);
}

static void test_engine_over_context_is_too_long(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.max_sequence_length = 128;
    sluice_engine *e = create(&p);
    sluice_request_params r = greedy("Once upon a time", 124);
    sluice_request_id id;
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_ETOO_LONG);
    r.max_tokens = 123; /* 5 prompt tokens + 123 = 128 fits */
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    sluice_result *res;
    assert_int_equal(sluice_wait(e, id, 60, &res), SLUICE_OK);
    assert_true(res->samples[0].n_ids <= 123);
    sluice_result_free(res);
    sluice_request_params bad = greedy(NULL, 4);
    assert_int_equal(sluice_submit(e, &bad, &id), SLUICE_EINVAL);
    sluice_engine_free(e);
}

/* ---- sampling ---- */

/* Runs r to completion on e and returns the result, whatever its status (the caller frees it). */
static sluice_result *generate(sluice_engine *e, const sluice_request_params *r)
{
    sluice_request_id id;
    sluice_result *res = NULL;
    assert_int_equal(sluice_submit(e, r, &id), SLUICE_OK);
    assert_int_equal(sluice_wait(e, id, 60, &res), SLUICE_OK);
    return res;
}

/* 48 sampled tokens after "Once upon a time" at temperature t, no other filter, seed `seed`. */
static sluice_request_params sampled(float t, uint64_t seed)
{
    sluice_request_params r = sluice_request_default_params();
    r.prompt = "Once upon a time";
    r.max_tokens = 48;
    r.temperature = t;
    r.top_k = 0;
    r.top_p = 1;
    r.min_p = 0;
    r.ignore_eos = true;
    r.seed = seed;
    return r;
}

static void test_engine_seeded_sampling_is_reproducible(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    sluice_request_params r = sampled(1.0f, 1234);
    sluice_result *a = generate(e, &r), *b = generate(e, &r);
    assert_ids_equal(a->samples[0].ids, a->samples[0].n_ids, b->samples[0].ids, b->samples[0].n_ids);
    assert_string_equal(a->samples[0].text, b->samples[0].text);
    r.seed = 99;
    sluice_result *c = generate(e, &r);
    assert_memory_not_equal(a->samples[0].ids, c->samples[0].ids, sizeof(int32_t) * 48);
    sluice_result_free(a);
    sluice_result_free(b);
    sluice_result_free(c);
    sluice_engine_free(e);
}

/* The backend picks tokens (forward_sample) unless a sequence wants top logprobs, which sends the
 * logits to the host sampler: the same seed gives the same tokens and logprobs either way. */
static void test_engine_samples_on_the_backend_as_on_the_host(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    sluice_request_params r = sampled(0.9f, 4321);
    r.top_k = 40;
    r.top_p = 0.9f;
    r.min_p = 0.02f;
    r.repeat_penalty = 1.2f;
    sluice_result *dev = generate(e, &r);
    r.top_logprobs = 2;
    sluice_result *host = generate(e, &r);
    const sluice_sample *a = &dev->samples[0], *b = &host->samples[0];
    assert_null(a->top_logprobs);
    assert_non_null(b->top_logprobs);
    assert_ids_equal(a->ids, a->n_ids, b->ids, b->n_ids);
    assert_memory_equal(a->logprobs, b->logprobs, sizeof(float) * (size_t)a->n_ids);
    sluice_result_free(dev);
    sluice_result_free(host);
    sluice_engine_free(e);
}

/* A request for a 40-token prompt (BOS, then ids 301..339): 2 full blocks of 16 + a partial one. */
static sluice_request_params prompt40(int32_t prompt[40])
{
    prompt[0] = 1;
    for (int i = 1; i < 40; i++)
        prompt[i] = 300 + i;
    sluice_request_params r = sluice_request_default_params();
    r.prompt_ids = prompt;
    r.n_prompt_ids = 40;
    r.ignore_eos = true;
    return r;
}

static void track_peak(const sluice_step_info *info, void *user)
{
    atomic_int *peak = user;
    int cur = atomic_load(peak);
    while (info->kv_blocks_used > cur && !atomic_compare_exchange_weak(peak, &cur, info->kv_blocks_used))
        ;
}

static void test_engine_parallel_samples_share_prompt_blocks(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    atomic_int peak = 0;
    sluice_engine_params p = small_params();
    p.enable_prefix_caching = false; /* only the fork may share */
    p.block_size = 16;
    p.on_step = track_peak;
    p.step_user = &peak;
    sluice_engine *e = create(&p);
    int32_t prompt[40];
    sluice_request_params r = prompt40(prompt);
    r.max_tokens = 6;
    r.temperature = 1.0f;
    r.seed = 7;
    r.n = 2;
    sluice_result *res = generate(e, &r);
    assert_int_equal(res->status, SLUICE_OK);
    assert_int_equal(res->n_samples, 2);
    for (int k = 0; k < 2; k++)
        assert_int_equal(res->samples[k].n_ids, 6);
    assert_int_equal(res->samples[0].ids[0], res->samples[1].ids[0]); /* the shared first token */
    /* alone: 46 tokens = 3 blocks; unshared pair 6; shared: 2 prompt blocks + 2 own tails */
    assert_true(atomic_load(&peak) >= 3);
    assert_true(atomic_load(&peak) <= 4);
    sluice_result_free(res);

    r.n = 1;
    r.best_of = 3;
    res = generate(e, &r);
    assert_int_equal(res->n_samples, 1);
    assert_int_equal(res->samples[0].n_ids, 6);
    sluice_result_free(res);
    assert_all_blocks_free(e);
    sluice_engine_free(e);
}

/* Each step reports its attention work: the prompt chunk's causal pairs, and the KV each decoding
 * sequence read (context + 1), so a cost model can price the very steps the engine ran. */
typedef struct step_log {
    int n;
    double pairs[16];
    int n_dec[16], kv[16];
} step_log_t;

static void log_step(const sluice_step_info *info, void *user)
{
    step_log_t *l = user;
    if (l->n < 16) {
        l->pairs[l->n] = info->prefill_pairs;
        l->n_dec[l->n] = info->n_decode_seqs;
        l->kv[l->n] = info->n_decode_seqs ? info->decode_kv[0] : -1;
        l->n++;
    }
}

static void test_engine_steps_report_their_attention_work(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    step_log_t log = {0};
    sluice_engine_params p = small_params();
    p.on_step = log_step;
    p.step_user = &log;
    sluice_engine *e = create(&p);
    int32_t prompt[40];
    sluice_request_params r = prompt40(prompt);
    r.max_tokens = 4;
    sluice_result *res = generate(e, &r);
    assert_int_equal(res->status, SLUICE_OK);
    sluice_result_free(res);
    sluice_engine_free(e); /* joins the engine thread: the log is complete */
    assert_int_equal(log.n, 4); /* the prompt (and the first token), then 3 decodes */
    assert_true(log.pairs[0] == 40 * (0 + 41 / 2.0));
    assert_int_equal(log.n_dec[0], 0);
    for (int i = 1; i < 4; i++) {
        assert_true(log.pairs[i] == 0);
        assert_int_equal(log.n_dec[i], 1);
        assert_int_equal(log.kv[i], 40 + i);
    }
}

/* ---- speculative decoding ---- */

typedef struct spec_log {
    int64_t tokens, drafts, accepted, rejections, spec_steps;
} spec_log_t;

static void log_spec(const sluice_step_info *info, void *user)
{
    spec_log_t *l = user;
    l->tokens += info->n_tokens;
    l->drafts += info->n_draft_tokens;
    l->accepted += info->n_accepted_drafts;
    l->rejections += info->n_rejections;
    l->spec_steps += info->n_draft_tokens > 0;
}

/* Runs r alone on a fresh engine with num_speculative_tokens k (0 = off), drafts from matches of
 * 1 to 3 tokens (stories260K's short outputs repeat few bigrams); returns its result, the engine's
 * stats and the steps' sums. */
static sluice_result *run_spec(int k, const sluice_request_params *r, sluice_stats *st, spec_log_t *log)
{
    sluice_engine_params p = small_params();
    p.num_speculative_tokens = k;
    p.prompt_lookup_min = 1;
    p.on_step = log_spec;
    p.step_user = log;
    sluice_engine *e = create(&p);
    sluice_result *res = generate(e, r);
    sluice_get_stats(e, st);
    sluice_engine_free(e); /* joins the engine thread: the log is complete */
    return res;
}

/* Greedy decoding with drafts gives llama.cpp's tokens, alone and batched, and each kept draft
 * saves exactly one step: steps with drafts = steps without - drafts kept. */
static void test_engine_speculation_keeps_greedy_tokens_and_saves_steps(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    fixture_t fx[N_FIX];
    require_fixtures(fx);
    sluice_request_params r = greedy(fx[0].prompt, fx[0].n_output);
    sluice_stats plain, spec;
    spec_log_t lp = {0}, ls = {0};
    sluice_result *a = run_spec(0, &r, &plain, &lp), *b = run_spec(4, &r, &spec, &ls);
    assert_ids_equal(a->samples[0].ids, a->samples[0].n_ids, fx[0].output_ids, fx[0].n_output);
    assert_ids_equal(b->samples[0].ids, b->samples[0].n_ids, fx[0].output_ids, fx[0].n_output);
    assert_int_equal(plain.spec_draft_tokens, 0);
    assert_true(spec.spec_draft_tokens > 0 && spec.spec_accepted_tokens > 0);
    assert_true(spec.spec_accepted_tokens <= spec.spec_draft_tokens);
    assert_int_equal(spec.steps, plain.steps - spec.spec_accepted_tokens);
    assert_int_equal(ls.drafts, spec.spec_draft_tokens);
    assert_int_equal(ls.accepted, spec.spec_accepted_tokens);
    assert_int_equal(ls.rejections, spec.spec_rejections);
    /* one sequence: a step with drafts ends at a rejection or keeps them all (no EOS here) */
    assert_true(spec.spec_rejections > 0 && spec.spec_rejections <= ls.spec_steps);
    assert_true(spec.spec_accepted_tokens + spec.spec_rejections <= spec.spec_draft_tokens);
    assert_int_equal(ls.tokens, lp.tokens + ls.drafts - ls.accepted); /* every draft ran; a kept one replaced a step's token */
    sluice_result_free(a);
    sluice_result_free(b);

    sluice_engine_params p = small_params();
    p.num_speculative_tokens = 3;
    p.prompt_lookup_min = 2;
    sluice_engine *e = create(&p);
    check_fixtures_batched(e, 2);
    sluice_get_stats(e, &spec);
    assert_true(spec.spec_draft_tokens > 0);
    assert_int_equal(spec.kv_blocks_used, 0);
    sluice_engine_free(e);
}

/* Sampling with every filter and a repetition penalty: the same seed gives the same tokens and
 * log-probabilities with drafts as without (a row is sampled only after the token before it). */
static void test_engine_speculation_keeps_seeded_samples(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_request_params r = sampled(0.7f, 777);
    r.max_tokens = 96;
    r.top_k = 40;
    r.top_p = 0.95f;
    r.min_p = 0.02f;
    r.repeat_penalty = 1.1f;
    r.n = 2;
    r.best_of = 2;
    sluice_stats plain, spec;
    spec_log_t lp = {0}, ls = {0};
    sluice_result *a = run_spec(0, &r, &plain, &lp), *b = run_spec(4, &r, &spec, &ls);
    assert_true(spec.spec_draft_tokens > 0 && spec.spec_accepted_tokens > 0); /* both paths of a row taken */
    assert_true(spec.steps < plain.steps); /* two samples share each step: fewer, not by a fixed count */
    assert_int_equal(a->n_samples, 2);
    assert_int_equal(b->n_samples, 2);
    for (int i = 0; i < 2; i++) {
        const sluice_sample *x = &a->samples[i], *y = &b->samples[i];
        assert_ids_equal(x->ids, x->n_ids, y->ids, y->n_ids);
        assert_memory_equal(x->logprobs, y->logprobs, sizeof(float) * (size_t)x->n_ids);
        assert_string_equal(x->text, y->text);
    }
    sluice_result_free(a);
    sluice_result_free(b);
}

/* Speculation under memory pressure: twelve requests at once (greedy and seeded sampling, shared
 * prompt prefixes for the prefix cache, two with n = 2 for copy-on-write) on a pool that holds a
 * fraction of them, so sequences are preempted and recomputed while they draft. Every sample is the
 * same with drafts as without. */
static void run_crowd(int k, sluice_result **out, sluice_stats *st)
{
    static const char *const prompts[] = {"Once upon a time", "Once upon a time there was", "The little dog",
                                          "Lily and Ben went to the park"};
    sluice_engine_params p = small_params();
    p.max_sequence_length = 160;
    p.kv_memory_mb = 0.75; /* ~300 tokens of stories260K's KV: a crowd of 12 x ~100 tokens must take turns */
    p.num_speculative_tokens = k;
    p.prompt_lookup_min = 1;
    sluice_engine *e = create(&p);
    sluice_request_id ids[12];
    for (int i = 0; i < 12; i++) {
        sluice_request_params r = i % 3 ? greedy(prompts[i % 4], 90) : sampled(0.8f, 100 + (uint64_t)i);
        r.prompt = prompts[i % 4];
        r.max_tokens = 90;
        r.n = i % 5 == 0 ? 2 : 1;
        assert_int_equal(sluice_submit(e, &r, &ids[i]), SLUICE_OK);
    }
    for (int i = 0; i < 12; i++) {
        assert_int_equal(sluice_wait(e, ids[i], 120, &out[i]), SLUICE_OK);
        assert_int_equal(out[i]->status, SLUICE_OK);
    }
    sluice_get_stats(e, st);
    assert_all_blocks_free(e);
    sluice_engine_free(e);
}

static void test_engine_speculation_survives_preemption(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_result *plain[12], *spec[12];
    sluice_stats sp, ss;
    run_crowd(0, plain, &sp);
    run_crowd(3, spec, &ss);
    assert_true(sp.preemptions > 0 && ss.preemptions > 0);
    assert_true(ss.spec_accepted_tokens > 0);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(plain[i]->n_samples, spec[i]->n_samples);
        for (int j = 0; j < plain[i]->n_samples; j++) {
            const sluice_sample *a = &plain[i]->samples[j], *b = &spec[i]->samples[j];
            assert_ids_equal(a->ids, a->n_ids, b->ids, b->n_ids);
            assert_string_equal(a->text, b->text);
        }
        sluice_result_free(plain[i]);
        sluice_result_free(spec[i]);
    }
}

static void test_engine_rejects_bad_prompt_lookup_lengths(void **state)
{
    (void)state;
    sluice_engine_params p = small_params();
    char err[256] = "";
    p.prompt_lookup_min = 0;
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_string_equal(err, "prompt_lookup_min: must be in 1..16, got 0");
    p.prompt_lookup_min = 3;
    p.prompt_lookup_max = 2;
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_string_equal(err, "prompt_lookup_max: must be in prompt_lookup_min (3)..16, got 2");
}

/* ---- shutdown ---- */

typedef struct done_log {
    atomic_int n, canceled;
} done_log_t;

static void on_done(const sluice_result *r, void *user)
{
    done_log_t *d = user;
    atomic_fetch_add(&d->n, 1);
    if (r->status == SLUICE_ECANCELED && r->samples[0].finish_reason == SLUICE_FINISH_ABORT)
        atomic_fetch_add(&d->canceled, 1);
}

static void test_engine_shutdown_aborts_in_flight_within_deadline(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    done_log_t d = {0};
    sluice_request_params r = greedy("Once upon a time", 480);
    r.ignore_eos = true;
    r.on_done = on_done;
    r.user = &d;
    sluice_request_id id;
    for (int k = 0; k < 4; k++)
        assert_int_equal(sluice_submit(e, &r, &id), SLUICE_OK);
    sluice_result *res;
    assert_int_equal(sluice_wait(e, id, 1, &res), SLUICE_ENOTFOUND); /* detached */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int aborted = sluice_engine_shutdown(e, 0); /* deadline 0: abort at once */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(dt < 2.0);
    assert_int_equal(aborted, 4);
    assert_int_equal(atomic_load(&d.n), 4);
    assert_int_equal(atomic_load(&d.canceled), 4);
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_ESTATE);
    assert_int_equal(sluice_engine_shutdown(e, 0), 0);
    sluice_engine_free(e);
}

static void test_engine_create_reports_a_bad_model(void **state)
{
    (void)state;
    sluice_engine_params p = sluice_engine_default_params();
    p.model = "/nonexistent/model.gguf";
    char err[256] = "";
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_true(strlen(err) > 0);
    p.model = NULL;
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_non_null(strstr(err, "model"));
    p.model = MODEL, p.idle_spin_ms = -1;
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_non_null(strstr(err, "idle_spin_ms: must be in 0..3600000, got -1"));
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* While the engine polls for work after a step (idle_spin_ms), a submit starts the next request at
 * once: with a 60 s spin, a request that waited for the spin to end could not finish in time; and
 * freeing the engine stops the spinning engine thread and pool worker (2 threads) at once. */
static void test_engine_request_during_the_idle_spin_starts_at_once(void **state)
{
    (void)state;
    REQUIRE_MODEL();
    sluice_engine_params p = small_params();
    p.idle_spin_ms = 60e3;
    sluice_engine *e = create(&p);
    sluice_request_params r = greedy("Once upon a time", 8);
    for (int k = 0; k < 3; k++) { /* the 2nd and 3rd arrive while the engine spins */
        double t0 = mono_s();
        sluice_result_free(generate(e, &r));
        assert_true(mono_s() - t0 < 10);
        sleep_ms(20);
    }
    double t0 = mono_s();
    sluice_engine_free(e); /* shutdown ends the spin too */
    assert_true(mono_s() - t0 < 10);
}

/* synthetic:llama2-7b on cuda never builds its 13.5 GB of weights on the host: without a usable
 * device it fails at once with the backend's error (device 99 makes a machine with a GPU fail
 * fast too); a non-fp16 synthetic type is refused before any backend exists. */
static void test_engine_cuda_synthetic_fails_fast_without_host_weights(void **state)
{
    (void)state;
    sluice_engine_params p = sluice_engine_default_params();
    p.model = "synthetic:llama2-7b";
    p.backend = "cuda";
    p.device = 99;
    char err[512] = "";
    double t0 = mono_s();
    assert_null(sluice_engine_create(&p, err, sizeof err));
    double dt = mono_s() - t0;
    printf("  cuda synthetic:llama2-7b refused in %.3f s: %s\n", dt, err);
    assert_true(dt < 2.0);
#ifdef SLUICE_HAVE_CUDA
    assert_true(strstr(err, "cuda: no CUDA device") || strstr(err, "cuda: device 99 does not exist"));
#else
    assert_non_null(strstr(err, "cuda: not built"));
#endif
    p.model = "synthetic:llama2-7b:q4_0";
    assert_null(sluice_engine_create(&p, err, sizeof err));
    assert_string_equal(err, "synthetic:llama2-7b:q4_0: synthetic weights on the CUDA backend are fp16, "
                             "generated on the device: use synthetic:SHAPE or synthetic:SHAPE:f16");
}

/* The CPU backend computes from host weights: given a shape-only model it refuses with an error,
 * it does not dereference the missing data. */
static void test_cpu_backend_refuses_a_shape_only_model(void **state)
{
    (void)state;
    char err[256] = "";
    eng_model_t *m = eng_model_shape_only("stories260k", err, sizeof err);
    assert_non_null(m);
    eng_backend_params_t bp = eng_backend_params_default();
    assert_null(eng_backend_create("cpu", m, &bp, err, sizeof err));
    printf("  cpu on a shape-only model: %s\n", err);
    assert_non_null(strstr(err, "cpu: the model has no weights on the host"));
    eng_model_free(m);
}

/* ---- penalties and logprobs ---- */

/* generate(), and the request itself must have succeeded. */
static sluice_result *run_one(sluice_engine *e, const sluice_request_params *r)
{
    sluice_result *res = generate(e, r);
    assert_int_equal(res->status, SLUICE_OK);
    return res;
}

static bool ids_differ(const sluice_sample *a, const sluice_sample *b)
{
    if (a->n_ids != b->n_ids)
        return true;
    for (int i = 0; i < a->n_ids; i++)
        if (a->ids[i] != b->ids[i])
            return true;
    return false;
}

/* Greedy output with a strong presence penalty (and, separately, a frequency penalty) differs from
 * plain greedy; penalties of 0 give plain greedy back. */
static void test_engine_presence_and_frequency_penalties_change_greedy(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    sluice_request_params r = greedy("Once upon a time", 48);
    r.ignore_eos = true;
    sluice_result *plain = run_one(e, &r);
    r.presence_penalty = 2.0f;
    sluice_result *pres = run_one(e, &r);
    r.presence_penalty = 0;
    r.frequency_penalty = 2.0f;
    sluice_result *freq = run_one(e, &r);
    r.frequency_penalty = 0;
    sluice_result *again = run_one(e, &r);
    assert_true(ids_differ(&plain->samples[0], &pres->samples[0]));
    assert_true(ids_differ(&plain->samples[0], &freq->samples[0]));
    assert_false(ids_differ(&plain->samples[0], &again->samples[0]));
    /* a presence penalty of 2 lowers every repeat: fewer distinct-token repeats than plain greedy */
    int rep_plain = 0, rep_pres = 0;
    for (int i = 1; i < plain->samples[0].n_ids; i++)
        for (int k = 0; k < i; k++) {
            rep_plain += plain->samples[0].ids[k] == plain->samples[0].ids[i];
            rep_pres += pres->samples[0].ids[k] == pres->samples[0].ids[i];
        }
    assert_true(rep_pres < rep_plain);
    sluice_result_free(plain);
    sluice_result_free(pres);
    sluice_result_free(freq);
    sluice_result_free(again);
    sluice_engine_free(e);
}

typedef struct top_check {
    int tokens;
    int bad;          /* streamed tokens whose alternatives broke a rule */
} top_check_t;

/* The rules for one position's alternatives: n of them, sorted, <= 0, and (greedy) the sampled
 * token first with its own logprob. */
static int top_rules_broken(int32_t token, float logprob, const sluice_top_logprob *top, int n_top, int want)
{
    if (!top || n_top != want || top[0].token != token || fabsf(top[0].logprob - logprob) > 1e-3f)
        return 1;
    for (int k = 0; k < n_top; k++)
        if (!(top[k].logprob <= 0) || (k > 0 && top[k].logprob > top[k - 1].logprob) ||
            (k > 0 && top[k].token == top[k - 1].token))
            return 1;
    return 0;
}

static bool check_top(const sluice_token *t, void *user)
{
    top_check_t *c = user;
    c->tokens++;
    c->bad += top_rules_broken(t->token, t->logprob, t->top, t->n_top, 5);
    return true;
}

static void test_engine_top_logprobs_greedy_token_is_the_top_alternative(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    sluice_request_params r = greedy("Once upon a time", 24);
    r.ignore_eos = true;
    r.top_logprobs = 5;
    top_check_t c = {0};
    r.on_token = check_top;
    r.user = &c;
    sluice_result *res = run_one(e, &r);
    const sluice_sample *s = &res->samples[0];
    assert_int_equal(c.tokens, 24);
    assert_int_equal(c.bad, 0);
    assert_int_equal(s->n_top, 5);
    assert_non_null(s->top_logprobs);
    double sum = 0;
    for (int i = 0; i < s->n_ids; i++) {
        assert_int_equal(top_rules_broken(s->ids[i], s->logprobs[i], s->top_logprobs + (size_t)i * 5, 5, 5), 0);
        sum += s->logprobs[i];
    }
    assert_true(fabs(sum - s->logprob_sum) < 1e-3);
    sluice_result_free(res);

    r.top_logprobs = SLUICE_MAX_TOP_LOGPROBS + 1;
    sluice_request_id id;
    assert_int_equal(sluice_submit(e, &r, &id), SLUICE_EINVAL);
    sluice_engine_free(e);
}

/* best_of > n streams nothing, but the result carries every returned token's logprob and
 * alternatives, the first token's copied into the forked samples. */
static void test_engine_best_of_result_carries_logprobs(void **state)
{
    (void)state;
    sluice_engine *e = create_small();
    sluice_request_params r = sluice_request_default_params();
    r.prompt = "Once upon a time";
    r.max_tokens = 12;
    r.temperature = 1.0f;
    r.seed = 7;
    r.ignore_eos = true;
    r.n = 2;
    r.best_of = 4;
    r.top_logprobs = 3;
    sluice_result *res = run_one(e, &r);
    assert_int_equal(res->n_samples, 2);
    for (int k = 0; k < 2; k++) {
        const sluice_sample *s = &res->samples[k];
        assert_int_equal(s->n_ids, 12);
        assert_int_equal(s->n_top, 3);
        double sum = 0;
        for (int i = 0; i < s->n_ids; i++) {
            const sluice_top_logprob *top = s->top_logprobs + (size_t)i * 3;
            assert_true(s->logprobs[i] <= 0);
            assert_true(top[0].logprob >= top[1].logprob && top[1].logprob >= top[2].logprob);
            assert_true(s->logprobs[i] <= top[0].logprob + 1e-4f); /* nothing beats the top one */
            sum += s->logprobs[i];
        }
        assert_true(fabs(sum - s->logprob_sum) < 1e-3);
    }
    /* ranked by mean logprob, best first */
    assert_true(res->samples[0].logprob_sum >= res->samples[1].logprob_sum - 1e-6);
    sluice_result_free(res);
    sluice_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_create_reports_a_bad_model),
        cmocka_unit_test(test_engine_cuda_synthetic_fails_fast_without_host_weights),
        cmocka_unit_test(test_cpu_backend_refuses_a_shape_only_model),
        cmocka_unit_test(test_engine_greedy_matches_llama_cpp_alone),
        cmocka_unit_test(test_engine_reports_its_cpu_threads),
        cmocka_unit_test(test_engine_batched_continuous_matches_fixtures),
        cmocka_unit_test(test_engine_batched_naive_matches_fixtures),
        cmocka_unit_test(test_engine_batched_bucketed_matches_fixtures),
        cmocka_unit_test(test_engine_batched_memory_aware_matches_fixtures),
        cmocka_unit_test(test_engine_f16_kv_batched_matches_fixtures),
        cmocka_unit_test(test_engine_adaptive_raises_a_tiny_token_budget),
        cmocka_unit_test(test_engine_cancel_mid_stream_frees_every_block),
        cmocka_unit_test(test_engine_callback_false_cancels),
        cmocka_unit_test(test_engine_queue_full_has_its_own_code),
        cmocka_unit_test(test_engine_over_context_is_too_long),
        cmocka_unit_test(test_engine_seeded_sampling_is_reproducible),
        cmocka_unit_test(test_engine_samples_on_the_backend_as_on_the_host),
        cmocka_unit_test(test_engine_parallel_samples_share_prompt_blocks),
        cmocka_unit_test(test_engine_steps_report_their_attention_work),
        cmocka_unit_test(test_engine_shutdown_aborts_in_flight_within_deadline),
        cmocka_unit_test(test_engine_presence_and_frequency_penalties_change_greedy),
        cmocka_unit_test(test_engine_top_logprobs_greedy_token_is_the_top_alternative),
        cmocka_unit_test(test_engine_best_of_result_carries_logprobs),
        cmocka_unit_test(test_engine_request_during_the_idle_spin_starts_at_once),
        cmocka_unit_test(test_engine_speculation_keeps_greedy_tokens_and_saves_steps),
        cmocka_unit_test(test_engine_speculation_keeps_seeded_samples),
        cmocka_unit_test(test_engine_speculation_survives_preemption),
        cmocka_unit_test(test_engine_rejects_bad_prompt_lookup_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
