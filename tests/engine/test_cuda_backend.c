/* test_cuda_backend.c — the CUDA backend end to end on a device: "no CUDA device" is a clear error;
 * a decode step replayed from a graph equals the same step run eagerly; the flash prefill kernel
 * equals token-by-token split-K attention; chunked prefill equals one-shot prefill; the device
 * sampler picks the host sampler's tokens; launching with PDL and the wide FA2 tiles change no bit. On a machine
 * without a device (or a build without CUDA) the device tests report SKIPPED. The comparison with
 * the CPU backend on real GGUFs is tests/bench/bench_cuda.c check (run by scripts/device-check.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#ifdef SLUICE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/model.h"
#include "sched/status.h"

static int have_device(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/* Skips the calling test, saying so, when there is no device. */
static void require_device(void) {
    if (!have_device()) {
        print_message("SKIPPED: no CUDA device\n");
        skip();
    }
}

static void test_create_without_device_says_so(void **state) {
    (void)state;
    if (have_device()) {
        print_message("SKIPPED: a CUDA device is present\n");
        skip();
    }
    char err[512] = "";
    eng_model_t *m = eng_model_load("synthetic:stories260k", err, sizeof err);
    assert_non_null(m);
    eng_backend_params_t p = eng_backend_params_default();
    assert_null(eng_backend_create("cuda", m, &p, err, sizeof err));
    assert_non_null(strstr(err, "cuda: no CUDA device"));
    eng_model_free(m);
}

static double rel(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Prefills n tokens of toks in steps of `chunk` tokens (chunk >= n: one step), then runs 4 decode
 * steps; out receives the logits of the last one. */
static void run(eng_backend_t *b, const int32_t *toks, int n, int chunk, float *out) {
    int32_t bt[8] = {7, 3, 5, 1, 0, 2, 4, 6};
    int rows;
    for (int done = 0; done < n; done += chunk) {
        int k = n - done < chunk ? n - done : chunk;
        eng_batch_seq_t s = {toks + done, k, done, bt, 8, 1};
        eng_batch_t batch = {1, &s, 0, NULL, NULL};
        assert_int_equal(b->ops->forward(b, &batch, out, &rows), SL_OK);
        assert_int_equal(rows, 1);
    }
    for (int i = 0; i < 4; i++) {
        eng_batch_seq_t s = {toks + n + i, 1, n + i, bt, 8, 1};
        eng_batch_t batch = {1, &s, 0, NULL, NULL};
        assert_int_equal(b->ops->forward(b, &batch, out, &rows), SL_OK);
    }
}

static void test_graph_flash_and_chunks_agree(void **state) {
    (void)state;
    require_device();
    char err[512] = "";
    eng_model_t *m = eng_model_load("synthetic:smollm2-135m", err, sizeof err); /* head_dim 64 */
    assert_non_null(m);
    eng_backend_params_t pg = eng_backend_params_default(), pe = pg;
    pg.gpu_memory_utilization = pe.gpu_memory_utilization = 0.3;
    pe.use_graphs = 0;
    eng_backend_t *g = eng_backend_create("cuda", m, &pg, err, sizeof err);
    assert_non_null(g);
    eng_backend_t *e = eng_backend_create("cuda", m, &pe, err, sizeof err);
    assert_non_null(e);
    assert_int_equal(g->ops->kv_alloc(g, 8, 16), SL_OK);
    assert_int_equal(e->ops->kv_alloc(e, 8, 16), SL_OK);
    int32_t toks[100];
    for (int i = 0; i < 100; i++)
        toks[i] = (i * 7919 + 13) % m->cfg.vocab;
    int V = m->cfg.vocab;
    float *a = malloc((size_t)V * 4), *b = malloc((size_t)V * 4);
    assert_non_null(a);
    assert_non_null(b);
    run(g, toks, 90, 90, a); /* flash prefill, graph decode */
    run(e, toks, 90, 90, b); /* flash prefill, eager decode */
    assert_true(rel(a, b, V) < 1e-3);
    run(e, toks, 90, 1, b);  /* split-K rows token by token */
    assert_true(rel(a, b, V) < 1e-2);
    run(e, toks, 90, 40, b); /* chunked flash prefill on cached context */
    assert_true(rel(a, b, V) < 1e-2);
    /* the wide FA2 tiles (128 queries, 32 rows a warp) sum every row in the same order */
    float *w = malloc((size_t)V * 4);
    assert_non_null(w);
    assert_int_equal(eng_cuda_set_path(e, ENG_CUDA_PATH_PREFILL_ATTN, ENG_CUDA_PREFILL_FA2W),
                     SL_OK);
    run(e, toks, 90, 40, w);
    assert_int_equal(memcmp(w, b, (size_t)V * 4), 0);
    run(e, toks, 90, 90, w);
    assert_int_equal(eng_cuda_set_path(e, ENG_CUDA_PATH_PREFILL_ATTN, ENG_CUDA_PREFILL_FA2),
                     SL_OK);
    run(e, toks, 90, 90, b);
    assert_int_equal(memcmp(w, b, (size_t)V * 4), 0);
    free(w);
    assert_int_equal(eng_cuda_set_path(e, ENG_CUDA_PATH_PREFILL_ATTN, 5), SL_EINVAL);
    assert_int_equal(eng_cuda_set_path(e, ENG_CUDA_N_PATHS, 0), SL_EINVAL);
    for (int path = 0; path < ENG_CUDA_N_PATHS; path++)
        assert_int_equal(eng_cuda_set_path(e, path, 1), SL_OK);
    run(e, toks, 90, 40, b); /* every bypass: old prefill kernel, scalar, unfused, split-K */
    assert_true(rel(a, b, V) < 1e-2);
    free(a);
    free(b);
    eng_backend_free(g);
    eng_backend_free(e);
    eng_model_free(m);
}

/* Programmatic dependent launch only lets each kernel start early; the kernels wait for their inputs
 * themselves, so a prefill and graphed decode steps give the same bits with it and without. (Every
 * small projection on the GEMV kernel: toggling PDL re-times the AUTO choice.) */
static void test_pdl_changes_no_bit(void **state) {
    (void)state;
    require_device();
    char err[512] = "";
    eng_model_t *m = eng_model_load("synthetic:smollm2-135m", err, sizeof err);
    assert_non_null(m);
    eng_backend_params_t p = eng_backend_params_default();
    p.gpu_memory_utilization = 0.3;
    eng_backend_t *b = eng_backend_create("cuda", m, &p, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(b->ops->kv_alloc(b, 8, 16), SL_OK);
    assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_FORCE), SL_OK);
    int32_t toks[100];
    for (int i = 0; i < 100; i++)
        toks[i] = (i * 7919 + 13) % m->cfg.vocab;
    const int V = m->cfg.vocab;
    float *on = malloc((size_t)V * 4), *off = malloc((size_t)V * 4);
    assert_non_null(on);
    assert_non_null(off);
    assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_PDL, 0), SL_OK);
    run(b, toks, 90, 90, on);
    assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_PDL, 1), SL_OK);
    run(b, toks, 90, 90, off);
    assert_memory_equal(on, off, (size_t)V * sizeof *on);
    assert_true(rel(on, off, V) == 0.0);
    free(on);
    free(off);
    eng_backend_free(b);
    eng_model_free(m);
}

/* The SmolLM2-135M shape (synthetic weights, head_dim 64) on the device, in 30% of its memory. */
static eng_backend_t *smollm2_on_device(eng_model_t **m) {
    char err[512] = "";
    *m = eng_model_load("synthetic:smollm2-135m", err, sizeof err);
    assert_non_null(*m);
    eng_backend_params_t p = eng_backend_params_default();
    p.gpu_memory_utilization = 0.3;
    eng_backend_t *b = eng_backend_create("cuda", *m, &p, err, sizeof err);
    assert_non_null(b);
    return b;
}

/* A speculative step: a decoding sequence's token and 3 drafts in one forward with a logits row
 * each (eager, the tokens a short chunk on top of the context) gives the rows decoding the same 4
 * tokens one step at a time gives (graph path). */
static void test_speculative_step_rows_match_one_at_a_time(void **state) {
    (void)state;
    require_device();
    eng_model_t *m;
    eng_backend_t *b = smollm2_on_device(&m);
    assert_int_equal(b->ops->kv_alloc(b, 8, 16), SL_OK);
    const int V = m->cfg.vocab, n = 60, q = 4;
    int32_t toks[64], bt[8] = {7, 3, 5, 1, 0, 2, 4, 6};
    for (int i = 0; i < n + q; i++)
        toks[i] = (i * 7919 + 13) % V;
    float *one = malloc(sizeof(float) * (size_t)V * q), *all = malloc(sizeof(float) * (size_t)V * q);
    assert_non_null(one);
    assert_non_null(all);
    int rows;
    for (int pass = 0; pass < 2; pass++) {
        eng_batch_seq_t s = {toks, n, 0, bt, 8, 1};
        eng_batch_t batch = {1, &s, 0, NULL, NULL};
        assert_int_equal(b->ops->forward(b, &batch, all, &rows), SL_OK);
        if (pass == 0) {
            for (int j = 0; j < q; j++) {
                eng_batch_seq_t d = {toks + n + j, 1, n + j, bt, 8, 1};
                eng_batch_t bd = {1, &d, 0, NULL, NULL};
                assert_int_equal(b->ops->forward(b, &bd, one + (size_t)j * V, &rows), SL_OK);
                assert_int_equal(rows, 1);
            }
        } else {
            eng_batch_seq_t d = {toks + n, q, n, bt, 8, 2};
            eng_batch_t bd = {1, &d, 0, NULL, NULL};
            assert_int_equal(b->ops->forward(b, &bd, all, &rows), SL_OK);
            assert_int_equal(rows, q);
        }
    }
    for (int j = 0; j < q; j++) {
        double e = rel(all + (size_t)j * V, one + (size_t)j * V, V);
        print_message("row %d (position %d): rel err %.2e\n", j, n + j, e);
        assert_true(e < 1e-2);
    }
    free(one);
    free(all);
    eng_backend_free(b);
    eng_model_free(m);
}

/* The GEMV kernel and cuBLAS compute the same decode logits at every M bucket (graph path), and a
 * bad mode is refused. */
static void test_gemv_matches_cublas(void **state) {
    (void)state;
    require_device();
    eng_model_t *m;
    eng_backend_t *b = smollm2_on_device(&m);
    assert_int_equal(b->ops->kv_alloc(b, 64, 16), SL_OK);
    assert_int_equal(eng_cuda_set_gemv_mode(b, 7), SL_EINVAL);
    const int V = m->cfg.vocab;
    float *a = malloc((size_t)8 * V * 4), *g = malloc((size_t)8 * V * 4);
    assert_non_null(a);
    assert_non_null(g);
    int32_t bt[8][2], toks[8];
    eng_batch_seq_t s[8];
    for (int n = 1; n <= 8; n++) {
        for (int i = 0; i < n; i++) {
            bt[i][0] = 2 * i;
            bt[i][1] = 2 * i + 1;
            toks[i] = (i * 7919 + n * 13) % V;
            s[i] = (eng_batch_seq_t){&toks[i], 1, 3 + i, bt[i], 2, 1};
        }
        eng_batch_t batch = {n, s, 0, NULL, NULL};
        int ra = 0, rg = 0;
        assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_CUBLAS), SL_OK);
        assert_int_equal(b->ops->forward(b, &batch, a, &ra), SL_OK);
        assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_FORCE), SL_OK);
        assert_int_equal(b->ops->forward(b, &batch, g, &rg), SL_OK);
        assert_int_equal(ra, n);
        assert_int_equal(rg, n);
        for (int r = 0; r < n; r++)
            assert_true(rel(g + (size_t)r * V, a + (size_t)r * V, V) < 5e-3);
        /* the fused GEMVs (RMSNorm in, SiLU*mul out) compute the unfused path's bits */
        assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_FUSE, 1), SL_OK);
        assert_int_equal(b->ops->forward(b, &batch, a, &ra), SL_OK);
        assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_FUSE, 0), SL_OK);
        assert_int_equal(memcmp(a, g, (size_t)n * V * sizeof *a), 0);
        /* every GEMV variant schedules the same sums: the same bits as variant 0 */
        for (int v = 1; v < ENG_CUDA_GEMV_VARIANTS; v++) {
            assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_FORCE + v), SL_OK);
            assert_int_equal(b->ops->forward(b, &batch, a, &ra), SL_OK);
            assert_int_equal(memcmp(a, g, (size_t)n * V * sizeof *a), 0);
        }
    }
    assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_FORCE + ENG_CUDA_GEMV_VARIANTS),
                     SL_EINVAL);
    assert_int_equal(eng_cuda_set_gemv_mode(b, ENG_CUDA_GEMV_AUTO), SL_OK);
    char rep[2048];
    eng_cuda_gemv_report(b, rep, sizeof rep);
    assert_non_null(strstr(rep, "qkv"));
    free(a);
    free(g);
    eng_backend_free(b);
    eng_model_free(m);
}

/* The device sampler picks what the host sampler picks from the same logits, row by row: greedy,
 * temperature, top-k, top-p, min-p and penalties, flat rows (synthetic weights: nuclei of
 * thousands of tokens) and peaked ones (temperature 0.05), in a graphed decode step of 64 rows and
 * an eager one of 300 (two LM-head chunks); bad pairs are refused before the device sees them. */
static void test_device_sampler_matches_the_host(void **state) {
    (void)state;
    require_device();
    eng_model_t *m;
    eng_backend_t *b = smollm2_on_device(&m);
    enum { N = 300 };
    assert_int_equal(b->ops->kv_alloc(b, N, 16), SL_OK);
    const int V = m->cfg.vocab;
    float *logits = malloc((size_t)N * V * 4), lps[N];
    int32_t *bt = malloc(N * 4), *toks = malloc(N * 4), ids[N], pen[2 * 64];
    eng_batch_seq_t *s = malloc(N * sizeof *s);
    eng_sample_row_t *rows = malloc(N * sizeof *rows);
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    assert_true(logits && bt && toks && s && rows && ws);
    for (int j = 0; j < 64; j++)
        pen[2 * j] = (j * 7717 + 5) % V, pen[2 * j + 1] = 1 + j % 3;
    const float temps[] = {0.0f, 1.0f, 0.05f, 0.7f, 1.3f};
    const int top_ks[] = {0, 1, 40, 1000};
    const float top_ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
    int mismatches = 0, sampled = 0;
    for (int n = 64; n <= N; n += N - 64) {
        for (int i = 0; i < n; i++) {
            bt[i] = i;
            toks[i] = (i * 7919 + n) % V;
            s[i] = (eng_batch_seq_t){&toks[i], 1, 0, &bt[i], 1, 1};
            rows[i] = (eng_sample_row_t){.temperature = temps[i % 5], .top_k = top_ks[(i / 5) % 4],
                                         .top_p = top_ps[(i / 20) % 4],
                                         .min_p = i % 7 == 3 ? 0.05f : 0.0f,
                                         .repetition_penalty = i % 3 ? 1.0f : 1.3f,
                                         .frequency_penalty = i % 4 == 1 ? 0.4f : 0.0f,
                                         .presence_penalty = i % 6 == 2 ? 0.7f : 0.0f,
                                         .pen_off = i % 50, .n_pen = i % 3 ? 0 : 14,
                                         .u = (double)((i * 2654435761u) % 1000003u) / 1000003.0};
            sampled += rows[i].temperature > 0 && rows[i].top_k != 1;
        }
        eng_batch_t batch = {n, s, 0, NULL, NULL};
        int r1 = 0, r2 = 0;
        assert_int_equal(b->ops->forward(b, &batch, logits, &r1), SL_OK);
        assert_int_equal(b->ops->forward_sample(b, &batch, rows, pen, 64, ids, lps, &r2), SL_OK);
        assert_int_equal(r1, n);
        assert_int_equal(r2, n);
        for (int r = 0; r < n; r++) {
            int32_t want;
            float lp;
            assert_int_equal(eng_sampler_pick(ws, logits + (size_t)r * V, &rows[r], pen, &want, &lp),
                             SL_OK);
            if (ids[r] != want) {
                print_message("row %d: device %d, host %d (T %g k %d p %g)\n", r, ids[r], want,
                              rows[r].temperature, rows[r].top_k, rows[r].top_p);
                mismatches++;
            }
            assert_true(fabsf(lps[r] - lp) < 1e-4f);
        }
    }
    print_message("device sampler: %d of %d rows differ from the host (%d sampled)\n", mismatches,
                  64 + N, sampled);
    assert_int_equal(mismatches, 0);
    /* the bypass (SLUICE_CUDA_SAMPLE=host) picks on the host from the same logits */
    assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_SAMPLE, 1), SL_OK);
    {
        eng_batch_t batch = {N, s, 0, NULL, NULL};
        int r1 = 0, r2 = 0;
        assert_int_equal(b->ops->forward(b, &batch, logits, &r1), SL_OK);
        assert_int_equal(b->ops->forward_sample(b, &batch, rows, pen, 64, ids, lps, &r2), SL_OK);
        assert_int_equal(r2, N);
        for (int r = 0; r < N; r++) {
            int32_t want;
            float lp;
            assert_int_equal(eng_sampler_pick(ws, logits + (size_t)r * V, &rows[r], pen, &want, &lp),
                             SL_OK);
            assert_int_equal(ids[r], want);
            assert_true(lps[r] == lp);
        }
    }
    assert_int_equal(eng_cuda_set_path(b, ENG_CUDA_PATH_SAMPLE, 0), SL_OK);
    pen[0] = V;
    eng_batch_t one = {1, s, 0, NULL, NULL};
    rows[0].n_pen = 1, rows[0].pen_off = 0;
    int r3;
    assert_int_equal(b->ops->forward_sample(b, &one, rows, pen, 64, ids, lps, &r3), SL_EINVAL);
    assert_non_null(strstr(b->ops->errmsg(b), "names token"));
    eng_sampler_ws_free(ws);
    free(rows);
    free(s);
    free(bt);
    free(toks);
    free(logits);
    eng_backend_free(b);
    eng_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_without_device_says_so),
        cmocka_unit_test(test_graph_flash_and_chunks_agree),
        cmocka_unit_test(test_pdl_changes_no_bit),
        cmocka_unit_test(test_gemv_matches_cublas),
        cmocka_unit_test(test_device_sampler_matches_the_host),
        cmocka_unit_test(test_speculative_step_rows_match_one_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* built without CUDA */

static void test_cuda_backend_skipped(void **state) {
    (void)state;
    print_message("SKIPPED: no CUDA device (built without CUDA)\n");
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cuda_backend_skipped)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
