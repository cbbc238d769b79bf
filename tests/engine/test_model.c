/* test_model.c — real GGUF models load with their published hyperparameters; synthetic models of
 * built-in shapes are well-formed, deterministic and finite; shape-only models (for the CUDA
 * backend) have every dimension and no host data. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/model.h"
#include "engine/quant.h"
#include "engine/tokenizer.h"
#include "sched/status.h"

#define STORIES "../shared/models/stories260K.gguf"
#define SMOLLM "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static eng_model_t *load_or_skip(const char *path)
{
    char err[256];
    eng_model_t *m = eng_model_load(path, err, sizeof err);
    if (!m) {
        printf("[ SKIPPED  ] %s\n", err);
        skip();
    }
    return m;
}

static void test_stories260k_loads_with_its_hyperparameters(void **state)
{
    eng_model_t *m = load_or_skip(STORIES);
    const eng_model_config_t *c = &m->cfg;
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->ffn_dim, 172);
    assert_int_equal(c->vocab, 512);
    assert_int_equal(c->n_ctx_train, 2048);
    assert_true(c->rope_theta == 10000.0f);
    assert_true(c->norm_eps == 1e-5f);
    assert_int_equal(c->tied_output, 0);
    assert_int_equal(m->output.type, ENG_T_F32);
    assert_int_equal(m->layers[4].wk.ne[1], 32);
    assert_int_equal(m->layers[4].w_down.ne[0], 172);
    assert_non_null(m->tok);
    assert_null(m->chat_template);
    eng_model_free(m);
}

static void test_smollm2_loads_with_tied_q8_0_output(void **state)
{
    eng_model_t *m = load_or_skip(SMOLLM);
    const eng_model_config_t *c = &m->cfg;
    assert_int_equal(c->n_layers, 30);
    assert_int_equal(c->dim, 576);
    assert_int_equal(c->n_heads, 9);
    assert_int_equal(c->n_kv_heads, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->ffn_dim, 1536);
    assert_int_equal(c->vocab, 49152);
    assert_int_equal(c->n_ctx_train, 8192);
    assert_true(c->rope_theta == 100000.0f);
    assert_int_equal(c->tied_output, 1);
    assert_int_equal(m->tok_embd.type, ENG_T_Q8_0);
    assert_ptr_equal(m->output.data, m->tok_embd.data);
    assert_int_equal(m->layers[0].wq.type, ENG_T_Q4_1);
    assert_int_equal(m->layers[29].w_down.ne[0], 1536);
    assert_int_equal(m->layers[0].attn_norm.type, ENG_T_F32);
    assert_int_equal(eng_tok_kind(m->tok), ENG_TOK_BPE);
    assert_non_null(strstr(m->chat_template, "<|im_start|>"));
    /* the embedding of token 0 dequantises to finite, small values */
    float row[576];
    assert_int_equal(eng_dequantize_row(m->tok_embd.type, m->tok_embd.data, row, 576), SL_OK);
    for (int i = 0; i < 576; i++) assert_true(isfinite(row[i]) && fabsf(row[i]) < 10);
    eng_model_free(m);
}

static void test_synthetic_smollm2_q4_1_is_shaped_finite_and_deterministic(void **state)
{
    char err[256];
    eng_model_t *a = eng_model_load("synthetic:smollm2-135m:q4_1", err, sizeof err);
    assert_non_null(a);
    eng_model_t *b = eng_model_synthetic("smollm2-135m", ENG_T_Q4_1, 0, err, sizeof err);
    assert_non_null(b);
    eng_model_t *c = eng_model_synthetic("smollm2-135m", ENG_T_Q4_1, 1, err, sizeof err);
    assert_non_null(c);
    assert_null(a->tok);
    assert_int_equal(a->cfg.n_layers, 30);
    assert_int_equal(a->cfg.dim, 576);
    assert_int_equal(a->cfg.vocab, 49152);
    assert_int_equal(a->layers[3].wq.type, ENG_T_Q4_1);
    assert_int_equal(a->layers[3].wq.nbytes, eng_type_row_bytes(ENG_T_Q4_1, 576) * 576);
    assert_int_equal(a->layers[3].attn_norm.type, ENG_T_F32);
    assert_true(((const float *)a->layers[3].ffn_norm.data)[100] == 1.0f);
    assert_memory_equal(a->layers[7].w_up.data, b->layers[7].w_up.data, a->layers[7].w_up.nbytes);
    assert_memory_not_equal(a->layers[7].w_up.data, c->layers[7].w_up.data, a->layers[7].w_up.nbytes);
    float row[1536];
    assert_int_equal(eng_dequantize_row(ENG_T_Q4_1, a->layers[29].w_down.data, row, 1536), SL_OK);
    double ss = 0;
    for (int i = 0; i < 1536; i++) {
        assert_true(isfinite(row[i]));
        ss += (double)row[i] * row[i];
    }
    assert_float_equal(sqrt(ss / 1536), 0.02, 0.004); /* the scale of a real init */
    eng_model_free(a);
    eng_model_free(b);
    eng_model_free(c);
}

static void test_synthetic_errors_name_the_problem(void **state)
{
    char err[256];
    assert_null(eng_model_load("synthetic:gpt5", err, sizeof err));
    assert_non_null(strstr(err, "synthetic:gpt5: unknown shape (built-in shapes: "));
    assert_null(eng_model_load("synthetic:smollm2-135m:q3_K", err, sizeof err));
    assert_non_null(strstr(err, "unknown weight type 'q3_K'"));
    assert_null(eng_model_load("synthetic:smollm2-135m:q6_K", err, sizeof err));
    assert_non_null(strstr(err, "weights of type q6_K cannot be generated"));
    assert_null(eng_model_load("synthetic:stories260k:q4_0", err, sizeof err));
    assert_string_equal(err, "synthetic:stories260k: ffn_down.weight rows of 172 elements are not a multiple of "
                             "the q4_0 block (32)");
    eng_model_t *m = eng_model_load("synthetic:stories260k", err, sizeof err);
    assert_non_null(m);
    assert_int_equal(m->tok_embd.type, ENG_T_F16);
    eng_model_free(m);
}

/* A shape-only model has the built-in shape's config and every tensor typed and shaped, but no
 * data anywhere on the host; an unknown shape is refused by name. */
static void test_shape_only_llama2_7b_has_dims_and_no_data(void **state)
{
    (void)state;
    char err[256];
    eng_model_t *m = eng_model_shape_only("llama2-7b", err, sizeof err);
    assert_non_null(m);
    const eng_model_config_t *c = &m->cfg;
    assert_string_equal(c->name, "llama2-7b");
    assert_int_equal(c->n_layers, 32);
    assert_int_equal(c->dim, 4096);
    assert_int_equal(c->n_heads, 32);
    assert_int_equal(c->n_kv_heads, 32);
    assert_int_equal(c->head_dim, 128);
    assert_int_equal(c->ffn_dim, 11008);
    assert_int_equal(c->vocab, 32000);
    assert_false(c->tied_output);
    assert_null(m->gguf);
    assert_null(m->owned);
    assert_null(m->tok);
    assert_int_equal(m->tok_embd.type, ENG_T_F16);
    assert_int_equal(m->tok_embd.ne[0], 4096);
    assert_int_equal(m->tok_embd.ne[1], 32000);
    assert_int_equal(m->output.ne[1], 32000);
    assert_int_equal(m->out_norm.type, ENG_T_F32);
    assert_int_equal(m->out_norm.ne[0], 4096);
    const eng_layer_t *L = &m->layers[31];
    assert_int_equal(L->wk.type, ENG_T_F16);
    assert_int_equal(L->wk.ne[0], 4096);
    assert_int_equal(L->wk.ne[1], 32 * 128);
    assert_int_equal(L->w_down.ne[0], 11008);
    assert_int_equal(L->w_down.ne[1], 4096);
    assert_int_equal(L->w_down.nbytes, (size_t)11008 * 4096 * 2);
    assert_int_equal(L->ffn_norm.type, ENG_T_F32);
    for (int l = 0; l < c->n_layers; l++) {
        const eng_layer_t *y = &m->layers[l];
        const eng_tensor_t *ts[] = {&y->attn_norm, &y->wq,     &y->wk,   &y->wv,    &y->wo,
                                    &y->ffn_norm,  &y->w_gate, &y->w_up, &y->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            assert_null(ts[i]->data);
    }
    assert_null(m->tok_embd.data);
    assert_null(m->output.data);
    assert_null(m->out_norm.data);
    eng_model_free(m);

    assert_null(eng_model_shape_only("gpt5", err, sizeof err));
    assert_non_null(strstr(err, "synthetic:gpt5: unknown shape (built-in shapes: "));
}

/* eng_model_load_for: synthetic:SHAPE[:f16] on cuda is shape only, another type is refused; the
 * CPU backend and GGUF paths load as eng_model_load does. */
static void test_load_for_cuda_keeps_synthetic_weights_off_the_host(void **state)
{
    (void)state;
    char err[256];
    const char *f16[] = {"synthetic:stories260k", "synthetic:stories260k:f16"};
    for (int i = 0; i < 2; i++) {
        eng_model_t *m = eng_model_load_for(f16[i], "cuda", err, sizeof err);
        assert_non_null(m);
        assert_null(m->owned);
        assert_null(m->tok_embd.data);
        eng_model_free(m);
    }
    assert_null(eng_model_load_for("synthetic:stories260k:q8_0", "cuda", err, sizeof err));
    assert_string_equal(err, "synthetic:stories260k:q8_0: synthetic weights on the CUDA backend are "
                             "fp16, generated on the device: use synthetic:SHAPE or synthetic:SHAPE:f16");
    assert_null(eng_model_load_for("synthetic:stories260k:q3_K", "cuda", err, sizeof err));
    assert_non_null(strstr(err, "unknown weight type 'q3_K'"));
    assert_null(eng_model_load_for("synthetic:gpt5", "cuda", err, sizeof err));
    assert_non_null(strstr(err, "unknown shape"));
    eng_model_t *m = eng_model_load_for("synthetic:stories260k", "cpu", err, sizeof err);
    assert_non_null(m);
    assert_non_null(m->owned);
    assert_non_null(m->tok_embd.data);
    eng_model_free(m);
}

/* Fails each allocation of a load in turn: every one gives a clean error (ASan builds prove no
 * leak), and once injection is past the last allocation the load succeeds. */
static void test_load_survives_every_allocation_failure(void **state)
{
    char err[256];
    eng_model_t *m = load_or_skip(STORIES);
    eng_model_free(m);
    int failures = 0;
    for (long n = 0; n < 200; n++) {
        sl_alloc_fail_after(n);
        m = eng_model_load(STORIES, err, sizeof err);
        sl_alloc_fail_after(-1);
        if (m) {
            eng_model_free(m);
            break;
        }
        assert_non_null(strstr(err, "out of memory"));
        failures++;
    }
    assert_in_range(failures, 10, 199);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_loads_with_its_hyperparameters),
        cmocka_unit_test(test_smollm2_loads_with_tied_q8_0_output),
        cmocka_unit_test(test_synthetic_smollm2_q4_1_is_shaped_finite_and_deterministic),
        cmocka_unit_test(test_synthetic_errors_name_the_problem),
        cmocka_unit_test(test_shape_only_llama2_7b_has_dims_and_no_data),
        cmocka_unit_test(test_load_for_cuda_keeps_synthetic_weights_off_the_host),
        cmocka_unit_test(test_load_survives_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
