/* test_cpu_backend.c — the CPU backend's step semantics on small models built here, one per weight
 * type: a batch mixing sequences, prefill chunks over cached context and decodes, read through
 * scattered block tables, gives the logits of each sequence run alone token by token; copy-on-
 * write blocks; F16 KV; thread counts; forward_greedy; errors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/uniform.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "sched/status.h"

#define BS 4       /* KV block size: small, so sequences span many blocks */
#define NB 96      /* blocks in the pool */
#define MAXTOK 32

static uint64_t rng;

static float frand(void)
{
    return test_uniform(&rng);
}

/* ---- a tiny random Llama model in any weight type ------------------------------------------- */

static void make_tensor(eng_tensor_t *t, int type, int64_t n_in, int64_t n_out, float scale)
{
    size_t rb = eng_type_row_bytes(type, n_in);
    uint8_t *d = malloc(rb * n_out);
    float *row = malloc(sizeof(float) * n_in);
    for (int64_t r = 0; r < n_out; r++) {
        if (type == ENG_T_Q6_K || type == ENG_T_Q4_K || type == ENG_T_Q5_0 || type == ENG_T_Q5_K ||
            type == ENG_T_Q5_1) {
            for (size_t i = 0; i < rb; i++)
                d[rb * r + i] = (uint8_t)(frand() * 128 + 128);
            for (int64_t s = 0; s < n_in / ENG_QK_K; s++) {
                if (type == ENG_T_Q6_K) {
                    ((eng_block_q6_K *)(d + rb * r))[s].d = eng_f32_to_f16(scale / 1024.0f);
                } else if (type == ENG_T_Q5_0 || type == ENG_T_Q5_1) { /* d (Q5_1: then m) leads */
                    const uint16_t h = eng_f32_to_f16(scale / 16.0f), mz = 0;
                    for (int64_t q = 0; q < ENG_QK_K / ENG_QK; q++) {
                        uint8_t *blk = d + rb * r + (size_t)eng_type_block_bytes(type) * (s * (ENG_QK_K / ENG_QK) + q);
                        memcpy(blk, &h, 2);
                        if (type == ENG_T_Q5_1)
                            memcpy(blk + 2, &mz, 2);
                    }
                } else { /* Q4_K, Q5_K: d and dmin lead the block */
                    const uint16_t h = eng_f32_to_f16(scale / 256.0f);
                    uint8_t *blk = d + rb * r + (size_t)eng_type_block_bytes(type) * s;
                    memcpy(blk, &h, 2);
                    memcpy(blk + 2, &h, 2);
                }
            }
        } else {
            for (int64_t i = 0; i < n_in; i++)
                row[i] = frand() * scale;
            assert_int_equal(eng_quantize_row(type, row, d + rb * r, n_in), 0);
        }
    }
    free(row);
    *t = (eng_tensor_t){.type = type, .n_dims = 2, .ne = {n_in, n_out, 1, 1}, .data = d, .nbytes = rb * n_out};
}

static void make_norm(eng_tensor_t *t, int n)
{
    float *d = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++)
        d[i] = 1.0f + 0.2f * frand();
    *t = (eng_tensor_t){.type = ENG_T_F32, .n_dims = 1, .ne = {n, 1, 1, 1}, .data = d, .nbytes = 4u * n};
}

static eng_model_t *tiny_model(int type)
{
    rng = 0x1234567ull + (uint64_t)type;
    eng_model_t *m = calloc(1, sizeof *m);
    m->cfg = (eng_model_config_t){.arch = "llama", .name = "tiny", .n_layers = 2, .dim = 256, .n_heads = 8,
                                  .n_kv_heads = 2, .head_dim = 32, .ffn_dim = 512, .vocab = 300,
                                  .n_ctx_train = 256, .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                                  .tied_output = 1};
    const eng_model_config_t *c = &m->cfg;
    m->layers = calloc(c->n_layers, sizeof *m->layers);
    for (int l = 0; l < c->n_layers; l++) {
        eng_layer_t *L = &m->layers[l];
        make_norm(&L->attn_norm, c->dim);
        make_norm(&L->ffn_norm, c->dim);
        make_tensor(&L->wq, type, c->dim, c->n_heads * c->head_dim, 0.15f);
        make_tensor(&L->wk, type, c->dim, c->n_kv_heads * c->head_dim, 0.15f);
        make_tensor(&L->wv, type, c->dim, c->n_kv_heads * c->head_dim, 0.15f);
        make_tensor(&L->wo, type, c->n_heads * c->head_dim, c->dim, 0.1f);
        make_tensor(&L->w_gate, type, c->dim, c->ffn_dim, 0.1f);
        make_tensor(&L->w_up, type, c->dim, c->ffn_dim, 0.1f);
        make_tensor(&L->w_down, type, c->ffn_dim, c->dim, 0.1f);
    }
    make_tensor(&m->tok_embd,
                type == ENG_T_Q6_K || type == ENG_T_Q4_K || type == ENG_T_Q5_0 || type == ENG_T_Q5_K || type == ENG_T_Q5_1
                    ? ENG_T_Q8_0 : type,
                c->dim, c->vocab, 1.0f);
    m->output = m->tok_embd;
    make_norm(&m->out_norm, c->dim);
    return m;
}

static void free_tiny(eng_model_t *m)
{
    for (int l = 0; l < m->cfg.n_layers; l++) {
        eng_layer_t *L = &m->layers[l];
        const eng_tensor_t *ts[] = {&L->attn_norm, &L->ffn_norm, &L->wq, &L->wk, &L->wv,
                                    &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            free((void *)ts[i]->data);
    }
    free((void *)m->tok_embd.data);
    free((void *)m->out_norm.data);
    free(m->layers);
    free(m);
}

static eng_backend_t *make_backend(const eng_model_t *m, int n_threads, eng_kv_dtype_t kv)
{
    char err[256];
    eng_backend_params_t p = eng_backend_params_default();
    p.n_threads = n_threads;
    p.kv_dtype = kv;
    eng_backend_t *b = eng_backend_create("cpu", m, &p, err, sizeof err);
    if (!b)
        fail_msg("%s", err);
    assert_int_equal(b->ops->kv_alloc(b, NB, BS), SL_OK);
    return b;
}

/* logits (n, vocab) of one sequence fed token by token from an empty cache */
static void alone(const eng_model_t *m, const int32_t *tokens, int n, eng_kv_dtype_t kv, float *out)
{
    eng_backend_t *b = make_backend(m, 2, kv);
    int32_t table[NB];
    for (int i = 0; i < NB; i++)
        table[i] = i;
    for (int t = 0; t < n; t++) {
        eng_batch_seq_t s = {.tokens = &tokens[t], .n_tokens = 1, .pos = t, .block_table = table,
                             .n_blocks = NB, .logits = 1};
        eng_batch_t bt = {.n_seqs = 1, .seqs = &s};
        int rows;
        assert_int_equal(b->ops->forward(b, &bt, out + (size_t)t * m->cfg.vocab, &rows), SL_OK);
        assert_int_equal(rows, 1);
    }
    eng_backend_free(b);
}

static void expect_close(const float *got, const float *want, int n, float rel, const char *what)
{
    float mx = 0, err = 0;
    for (int i = 0; i < n; i++) {
        mx = fmaxf(mx, fabsf(want[i]));
        err = fmaxf(err, fabsf(got[i] - want[i]));
    }
    if (!(err <= rel * mx))
        fail_msg("%s: max error %g against max |logit| %g", what, err, mx);
}

static const int all_types[] = {ENG_T_F32, ENG_T_F16, ENG_T_BF16, ENG_T_Q8_0,
                                ENG_T_Q4_0, ENG_T_Q4_1, ENG_T_Q6_K, ENG_T_Q4_K, ENG_T_Q5_0,
                                ENG_T_Q5_K, ENG_T_Q5_1};

/* Three sequences over two steps, blocks scattered through the pool:
 *   step 1: A tokens 0..12 (all logits), B tokens 0..4 (all logits)
 *   step 2: A tokens 13..20 (all, over A's cached context), B token 5 (a decode, last logits),
 *           C tokens 0..8 (all)                                                              */
static void check_batched_equals_alone(int type, eng_kv_dtype_t kv)
{
    eng_model_t *m = tiny_model(type);
    const int V = m->cfg.vocab, len[3] = {21, 6, 9};
    int32_t tok[3][MAXTOK], table[3][NB / 3];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < len[s]; i++)
            tok[s][i] = (int32_t)((s * 97 + i * 31 + 7) % V);
        for (int i = 0; i < NB / 3; i++)
            table[s][i] = (i * 3 + s) * 7 % NB; /* 7 is prime to 96: a permutation, interleaved */
    }
    float *want[3], *got = malloc(sizeof(float) * 64 * V);
    for (int s = 0; s < 3; s++) {
        want[s] = malloc(sizeof(float) * len[s] * V);
        alone(m, tok[s], len[s], kv, want[s]);
    }
    eng_backend_t *b = make_backend(m, 2, kv);
    eng_batch_seq_t s1[2] = {
        {.tokens = tok[0], .n_tokens = 13, .pos = 0, .block_table = table[0], .n_blocks = NB / 3, .logits = 2},
        {.tokens = tok[1], .n_tokens = 5, .pos = 0, .block_table = table[1], .n_blocks = 2, .logits = 2},
    };
    eng_batch_t b1 = {.n_seqs = 2, .seqs = s1};
    int rows;
    assert_int_equal(b->ops->forward(b, &b1, got, &rows), SL_OK);
    assert_int_equal(rows, 18);
    expect_close(got, want[0], 13 * V, 1e-5f, "step 1, A");
    expect_close(got + 13 * V, want[1], 5 * V, 1e-5f, "step 1, B");
    eng_batch_seq_t s2[3] = {
        {.tokens = tok[0] + 13, .n_tokens = 8, .pos = 13, .block_table = table[0], .n_blocks = NB / 3, .logits = 2},
        {.tokens = tok[1] + 5, .n_tokens = 1, .pos = 5, .block_table = table[1], .n_blocks = 2, .logits = 1},
        {.tokens = tok[2], .n_tokens = 9, .pos = 0, .block_table = table[2], .n_blocks = NB / 3, .logits = 2},
    };
    eng_batch_t b2 = {.n_seqs = 3, .seqs = s2};
    assert_int_equal(b->ops->forward(b, &b2, got, &rows), SL_OK);
    assert_int_equal(rows, 18);
    expect_close(got, want[0] + 13 * V, 8 * V, 1e-5f, "step 2, A");
    expect_close(got + 8 * V, want[1] + 5 * V, V, 1e-5f, "step 2, B");
    expect_close(got + 9 * V, want[2], 9 * V, 1e-5f, "step 2, C");
    eng_backend_free(b);
    for (int s = 0; s < 3; s++)
        free(want[s]);
    free(got);
    free_tiny(m);
}

static void test_batched_chunked_paged_step_equals_each_sequence_alone(void **state)
{
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++)
        check_batched_equals_alone(all_types[i], ENG_KV_F32);
    check_batched_equals_alone(ENG_T_Q4_1, ENG_KV_F16);
    check_batched_equals_alone(ENG_T_Q4_1, ENG_KV_I8); /* k and v claimed by whole heads */
    check_batched_equals_alone(ENG_T_F32, ENG_KV_I8);
}

/* t = src dequantised to F32 (a new buffer) */
static void dequantised(const eng_tensor_t *src, eng_tensor_t *t)
{
    const int64_t n_in = src->ne[0], n_out = src->n_dims > 1 ? src->ne[1] : 1;
    float *d = malloc(sizeof(float) * n_in * n_out);
    for (int64_t r = 0; r < n_out; r++)
        assert_int_equal(eng_dequantize_row(src->type, (const char *)src->data + eng_type_row_bytes(src->type, n_in) * r,
                                            d + n_in * r, n_in),
                         0);
    *t = *src;
    t->type = ENG_T_F32, t->data = d, t->nbytes = sizeof(float) * n_in * n_out;
}

/* The same model with every tensor in F32: the products then read float rows, not packed blocks or
 * q8 activations, so it is a reference for how the backend wires each quantised (and, where the
 * kernels pack, packed) weight into the forward: a product given another's weight is far off. */
static eng_model_t *f32_twin(const eng_model_t *m)
{
    eng_model_t *t = calloc(1, sizeof *t);
    t->cfg = m->cfg;
    t->layers = calloc(m->cfg.n_layers, sizeof *t->layers);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const eng_layer_t *L = &m->layers[l];
        eng_layer_t *T = &t->layers[l];
        const eng_tensor_t *src[] = {&L->attn_norm, &L->ffn_norm, &L->wq, &L->wk, &L->wv,
                                     &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        eng_tensor_t *dst[] = {&T->attn_norm, &T->ffn_norm, &T->wq, &T->wk, &T->wv,
                               &T->wo, &T->w_gate, &T->w_up, &T->w_down};
        for (size_t i = 0; i < sizeof src / sizeof src[0]; i++)
            dequantised(src[i], dst[i]);
    }
    dequantised(&m->tok_embd, &t->tok_embd);
    dequantised(&m->out_norm, &t->out_norm);
    t->output = t->tok_embd;
    return t;
}

/* Each quantised type against its F32 twin, token by token, within a share of the largest logit:
 * the q8 activations' rounding, measured 0.3-1.1% (Q6_K's random-byte weights 7.4%); gate and up
 * given each other's packed weights measured 27-35%, k and v 61-76%. The tiny model's 256-wide
 * layers pack on SIMD CPUs (rows a multiple of 16, heads of 32); its 300-row LM head does not. */
static void test_quantised_model_matches_its_f32_twin(void **state)
{
    const struct { int type; float tol; } cases[] = {
        {ENG_T_Q4_0, 0.03f}, {ENG_T_Q4_1, 0.03f}, {ENG_T_Q8_0, 0.03f},
        {ENG_T_Q4_K, 0.03f}, {ENG_T_Q5_0, 0.03f}, {ENG_T_Q6_K, 0.12f},
    };
    enum { N = 12 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int type = cases[i].type;
        eng_model_t *m = tiny_model(type), *t = f32_twin(m);
        const int V = m->cfg.vocab;
        int32_t tok[N];
        for (int j = 0; j < N; j++)
            tok[j] = (int32_t)((j * 37 + 5) % V);
        float *got = malloc(sizeof(float) * N * V), *want = malloc(sizeof(float) * N * V);
        alone(m, tok, N, ENG_KV_F32, got);
        alone(t, tok, N, 0, want);
        char what[64];
        snprintf(what, sizeof what, "%s against F32", eng_type_name(type));
        expect_close(got, want, N * V, cases[i].tol, what);
        free(got);
        free(want);
        free_tiny(m);
        free_tiny(t);
    }
}

/* A block copy carries every layer's K and V rows, and an int8 pool's row scales with them */
static void check_copy_on_write(eng_kv_dtype_t kv)
{
    eng_model_t *m = tiny_model(ENG_T_Q4_1);
    const int V = m->cfg.vocab;
    int32_t a[7] = {5, 9, 13, 17, 21, 25, 29}, bt[7] = {5, 9, 13, 17, 21, 25, 101};
    float *want = malloc(sizeof(float) * 7 * V), *got = malloc(sizeof(float) * 2 * V);
    alone(m, bt, 7, kv, want);
    eng_backend_t *b = make_backend(m, 2, kv);
    /* A fills blocks 10 and 11 with 6 tokens; the fork B shares block 10, copies 11 into 40 */
    int32_t ta[2] = {10, 11}, tb[2] = {10, 40}, src = 11, dst = 40;
    eng_batch_seq_t s = {.tokens = a, .n_tokens = 6, .pos = 0, .block_table = ta, .n_blocks = 2, .logits = 0};
    eng_batch_t b1 = {.n_seqs = 1, .seqs = &s};
    int rows;
    assert_int_equal(b->ops->forward(b, &b1, got, &rows), SL_OK);
    assert_int_equal(rows, 0);
    eng_batch_seq_t s2[2] = {
        {.tokens = a + 6, .n_tokens = 1, .pos = 6, .block_table = ta, .n_blocks = 2, .logits = 1},
        {.tokens = bt + 6, .n_tokens = 1, .pos = 6, .block_table = tb, .n_blocks = 2, .logits = 1},
    };
    eng_batch_t b2 = {.n_seqs = 2, .seqs = s2, .n_copies = 1, .copy_src = &src, .copy_dst = &dst};
    assert_int_equal(b->ops->forward(b, &b2, got, &rows), SL_OK);
    assert_int_equal(rows, 2);
    expect_close(got + V, want + 6 * V, V, 1e-5f, "forked sequence");
    eng_backend_free(b);
    free(want);
    free(got);
    free_tiny(m);
}

static void test_copy_on_write_block_gives_forked_sequence_its_own_copy(void **state)
{
    check_copy_on_write(ENG_KV_F32);
    check_copy_on_write(ENG_KV_I8);
}

/* F16 and int8 K/V rows stay close to F32 ones (int8: 1/127 of each row's largest magnitude) */
static void test_f16_and_int8_kv_stay_close_to_f32_kv(void **state)
{
    eng_model_t *m = tiny_model(ENG_T_F16);
    const int V = m->cfg.vocab, n = 20;
    int32_t tok[20];
    for (int i = 0; i < n; i++)
        tok[i] = (i * 13 + 3) % V;
    float *a = malloc(sizeof(float) * n * V), *b = malloc(sizeof(float) * n * V);
    alone(m, tok, n, ENG_KV_F32, a);
    alone(m, tok, n, ENG_KV_F16, b);
    expect_close(b, a, n * V, 1e-2f, "f16 KV");
    alone(m, tok, n, ENG_KV_I8, b);
    expect_close(b, a, n * V, 3e-2f, "int8 KV");
    free(a);
    free(b);
    free_tiny(m);
}

static void test_results_do_not_depend_on_thread_count(void **state)
{
    eng_model_t *m = tiny_model(ENG_T_Q4_0);
    const int V = m->cfg.vocab, n = 17;
    int32_t tok[17], table[NB];
    for (int i = 0; i < n; i++)
        tok[i] = (i * 7 + 1) % V;
    for (int i = 0; i < NB; i++)
        table[i] = i;
    float *out[3];
    const int threads[3] = {1, 2, 3};
    for (int k = 0; k < 3; k++) {
        eng_backend_t *b = make_backend(m, threads[k], ENG_KV_F32);
        out[k] = malloc(sizeof(float) * n * V);
        eng_batch_seq_t s = {.tokens = tok, .n_tokens = n, .pos = 0, .block_table = table, .n_blocks = NB, .logits = 2};
        eng_batch_t bt = {.n_seqs = 1, .seqs = &s};
        int rows;
        assert_int_equal(b->ops->forward(b, &bt, out[k], &rows), SL_OK);
        eng_backend_free(b);
    }
    assert_memory_equal(out[0], out[1], sizeof(float) * n * V);
    assert_memory_equal(out[0], out[2], sizeof(float) * n * V);
    for (int k = 0; k < 3; k++)
        free(out[k]);
    free_tiny(m);
}

static void test_forward_greedy_returns_argmax_of_each_requested_row(void **state)
{
    eng_model_t *m = tiny_model(ENG_T_Q8_0);
    const int V = m->cfg.vocab;
    int32_t tok[6] = {1, 2, 3, 4, 5, 6}, table[4] = {0, 1, 2, 3}, table2[4] = {4, 5, 6, 7}, ids[8];
    float *logits = malloc(sizeof(float) * 8 * V);
    eng_backend_t *b = make_backend(m, 2, ENG_KV_F32);
    eng_batch_seq_t s[2] = {
        {.tokens = tok, .n_tokens = 6, .pos = 0, .block_table = table, .n_blocks = 4, .logits = 2},
        {.tokens = tok, .n_tokens = 3, .pos = 0, .block_table = table2, .n_blocks = 4, .logits = 1},
    };
    eng_batch_t bt = {.n_seqs = 2, .seqs = s};
    int rows, rows2;
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_OK);
    assert_int_equal(b->ops->forward_greedy(b, &bt, ids, &rows2), SL_OK);
    assert_int_equal(rows, 7);
    assert_int_equal(rows2, 7);
    for (int r = 0; r < rows; r++) {
        int best = 0;
        for (int v = 1; v < V; v++)
            best = logits[(size_t)r * V + v] > logits[(size_t)r * V + best] ? v : best;
        assert_int_equal(ids[r], best);
    }
    eng_backend_free(b);
    free(logits);
    free_tiny(m);
}

static void test_bad_batches_and_names_fail_with_a_message(void **state)
{
    eng_model_t *m = tiny_model(ENG_T_F32);
    char err[256] = "";
    assert_null(eng_backend_create("tpu", m, NULL, err, sizeof err));
    assert_non_null(strstr(err, "tpu"));
#ifndef SLUICE_HAVE_CUDA
    assert_null(eng_backend_create("cuda", m, NULL, err, sizeof err));
    assert_non_null(strstr(err, "not built"));
#endif
    eng_backend_params_t p = eng_backend_params_default();
    p.n_threads = 2;
    p.kv_dtype = (eng_kv_dtype_t)7;
    assert_null(eng_backend_create("cpu", m, &p, err, sizeof err));
    assert_string_equal(err, "cpu: unknown KV element type 7 (0 F32, 1 F16, 2 I8)");
    p.kv_dtype = ENG_KV_F32;
    eng_backend_t *b = eng_backend_create("cpu", m, &p, err, sizeof err);
    assert_non_null(b);
    assert_non_null(eng_cpu_backend_isa(b));
    float logits[300];
    int32_t tok = 3, bad_tok = 300, table[2] = {0, 1}, bad_table[2] = {0, NB};
    int rows;
    eng_batch_seq_t s = {.tokens = &tok, .n_tokens = 1, .pos = 0, .block_table = table, .n_blocks = 2, .logits = 1};
    eng_batch_t bt = {.n_seqs = 1, .seqs = &s};
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_ESTATE);
    assert_int_equal(b->ops->kv_alloc(b, 0, BS), SL_EINVAL);
    assert_int_equal(b->ops->kv_alloc(b, NB, BS), SL_OK);
    assert_true(b->ops->kv_budget_bytes(b) > 0);
    s.tokens = &bad_tok;
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_EINVAL);
    assert_non_null(strstr(b->ops->errmsg(b), "vocabulary"));
    s.tokens = &tok;
    s.pos = 5;
    s.block_table = bad_table;
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_EINVAL);
    s.pos = 8; /* 2 blocks of 4 cannot hold 9 positions */
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_EINVAL);
    s.pos = 0;
    s.block_table = table;
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows), SL_OK);
    assert_int_equal(rows, 1);
    eng_backend_free(b);
    /* a weight of a type the kernels do not multiply is refused at creation */
    eng_tensor_t saved = m->layers[1].wq;
    m->layers[1].wq.type = 11; /* q3_K */
    assert_null(eng_backend_create("cpu", m, &p, err, sizeof err));
    assert_non_null(strstr(err, "attn_q"));
    m->layers[1].wq = saved;
    free_tiny(m);
}

/* forward_sample picks what eng_sampler_pick picks from forward's logits, row by row, whatever
 * thread takes the row; a pair outside the vocabulary is refused before anything runs. */
static void test_forward_sample_picks_each_row_as_the_host_sampler(void **state)
{
    eng_model_t *m = tiny_model(ENG_T_Q8_0);
    const int V = m->cfg.vocab;
    int32_t tok[6] = {1, 2, 3, 4, 5, 6}, table[4] = {0, 1, 2, 3}, table2[4] = {4, 5, 6, 7}, ids[8];
    float *logits = malloc(sizeof(float) * 8 * V), lps[8];
    eng_backend_t *b = make_backend(m, 2, ENG_KV_F32);
    eng_batch_seq_t s[2] = {
        {.tokens = tok, .n_tokens = 6, .pos = 0, .block_table = table, .n_blocks = 4, .logits = 2},
        {.tokens = tok, .n_tokens = 3, .pos = 0, .block_table = table2, .n_blocks = 4, .logits = 1},
    };
    eng_batch_t bt = {.n_seqs = 2, .seqs = s};
    int32_t pen[] = {3, 2, 5, 1, 0, 4};
    eng_sample_row_t rows[7];
    for (int r = 0; r < 7; r++)
        rows[r] = (eng_sample_row_t){.temperature = r == 0 ? 0.0f : 0.5f + 0.25f * (float)r,
                                     .top_k = r % 3 == 1 ? 5 : 0, .top_p = r % 2 ? 0.8f : 1.0f,
                                     .min_p = r == 6 ? 0.1f : 0.0f, .repetition_penalty = 1.3f,
                                     .frequency_penalty = r == 2 ? 0.5f : 0.0f,
                                     .pen_off = r % 3, .n_pen = r < 4 ? 1 : 0, .u = (double)r / 7.0 + 0.01};
    int rows1, rows2;
    assert_int_equal(b->ops->forward(b, &bt, logits, &rows1), SL_OK);
    assert_int_equal(b->ops->forward_sample(b, &bt, rows, pen, 3, ids, lps, &rows2), SL_OK);
    assert_int_equal(rows2, 7);
    eng_sampler_ws_t *ws = eng_sampler_ws_create(V);
    int distinct = 0;
    for (int r = 0; r < 7; r++) {
        int32_t want;
        float lp;
        assert_int_equal(eng_sampler_pick(ws, logits + (size_t)r * V, &rows[r], pen, &want, &lp), SL_OK);
        assert_int_equal(ids[r], want);
        assert_true(lps[r] == lp);
        distinct += r > 0 && ids[r] != ids[r - 1];
    }
    assert_true(distinct > 0);
    pen[2] = V; /* a token outside the vocabulary */
    assert_int_equal(b->ops->forward_sample(b, &bt, rows, pen, 3, ids, lps, &rows2), SL_EINVAL);
    assert_non_null(strstr(b->ops->errmsg(b), "pair 1 names token"));
    pen[2] = 5;
    rows[3].pen_off = 3; /* its one pair past the three given */
    assert_int_equal(b->ops->forward_sample(b, &bt, rows, pen, 3, ids, lps, &rows2), SL_EINVAL);
    assert_non_null(strstr(b->ops->errmsg(b), "row 3's pairs [3, +1) are outside the 3 given"));
    eng_sampler_ws_free(ws);
    eng_backend_free(b);
    free(logits);
    free_tiny(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_chunked_paged_step_equals_each_sequence_alone),
        cmocka_unit_test(test_quantised_model_matches_its_f32_twin),
        cmocka_unit_test(test_copy_on_write_block_gives_forked_sequence_its_own_copy),
        cmocka_unit_test(test_f16_and_int8_kv_stay_close_to_f32_kv),
        cmocka_unit_test(test_results_do_not_depend_on_thread_count),
        cmocka_unit_test(test_forward_greedy_returns_argmax_of_each_requested_row),
        cmocka_unit_test(test_forward_sample_picks_each_row_as_the_host_sampler),
        cmocka_unit_test(test_bad_batches_and_names_fail_with_a_message),
    };
    return cmocka_run_group_tests_name("cpu_backend", tests, NULL, NULL);
}
