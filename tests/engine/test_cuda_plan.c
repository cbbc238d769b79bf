/* test_cuda_plan.c — the CUDA backend's host-side arithmetic (engine/cuda/cuda_plan.c): graph
 * buckets, attention splits, memory sizing and the "model needs X GiB" message, and the step plan
 * (block-table flattening, KV slots, flash tiles, padding of decode buckets, validation). Needs no
 * GPU; built without CUDA it reports a skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#ifdef SLUICE_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "sched/memest.h"
#include "sched/status.h"

static void test_graph_bucket_is_smallest_power_of_two(void **state) {
    (void)state;
    assert_int_equal(eng_cuda_graph_bucket(0), 0);
    assert_int_equal(eng_cuda_graph_bucket(1), 1);
    assert_int_equal(eng_cuda_graph_bucket(2), 2);
    assert_int_equal(eng_cuda_graph_bucket(3), 4);
    assert_int_equal(eng_cuda_graph_bucket(17), 32);
    assert_int_equal(eng_cuda_graph_bucket(256), 256);
    assert_int_equal(eng_cuda_graph_bucket(257), 0);
    assert_int_equal(eng_cuda_pow2_index(1), 0);
    assert_int_equal(eng_cuda_pow2_index(3), 2);
    assert_int_equal(eng_cuda_pow2_index(256), 8);
    assert_int_equal(eng_cuda_pow2_index(0), -1);
}

static void test_attn_splits_cover_keys_and_widen_under_cap(void **state) {
    (void)state;
    int part, splits;
    assert_int_equal(eng_cuda_attn_splits(300, 4, 32, 128, 1 << 30, &part, &splits), SL_OK);
    assert_int_equal(part, ENG_CUDA_ATTN_PART);
    assert_int_equal(splits, 3);
    assert_int_equal(eng_cuda_attn_splits(0, 4, 32, 128, 1 << 30, &part, &splits), SL_OK);
    assert_int_equal(splits, 1);
    /* room for 2 splits per row only: the split widens to cover 1000 keys */
    int64_t per = 4LL * 32 * 130;
    assert_int_equal(eng_cuda_attn_splits(1000, 4, 32, 128, 2 * per + 5, &part, &splits), SL_OK);
    assert_int_equal(splits, 2);
    assert_true((int64_t)part * splits >= 1000);
    assert_int_equal(eng_cuda_attn_splits(1000, 4, 32, 128, per - 1, &part, &splits), SL_ENOMEM);
}

static eng_model_config_t llama2_7b(void) {
    eng_model_config_t c = {.n_layers = 32, .dim = 4096, .n_heads = 32, .n_kv_heads = 32,
                            .head_dim = 128, .ffn_dim = 11008, .vocab = 32000,
                            .n_ctx_train = 4096, .rope_theta = 10000.0f, .norm_eps = 1e-5f};
    return c;
}

static void test_sizes_match_the_memory_estimator(void **state) {
    (void)state;
    eng_model_config_t c = llama2_7b();
    eng_cuda_sizes_t s;
    eng_cuda_sizes(&c, &s);
    sched_model_shape_t m;
    assert_int_equal(sched_model_shape_builtin("llama2-7b", &m), SL_OK);
    /* the estimator counts norms as weights too; fp16 matrices are the rest */
    assert_int_equal(s.weight_bytes + s.norm_bytes / 2, sched_mem_weight_bytes(&m));
    assert_int_equal(s.kv_bytes_per_block_token, sched_mem_kv_bytes_per_token(&m));
    assert_int_equal(s.kv_bytes_per_block_token, 512 * 1024);
    assert_true(s.total_bytes > s.weight_bytes);
    assert_true(s.total_bytes - s.weight_bytes < (int64_t)2 << 30); /* workspace under 2 GiB */
}

static void test_kv_budget_subtracts_what_is_in_use(void **state) {
    (void)state;
    int64_t G = 1LL << 30;
    assert_int_equal(eng_cuda_kv_budget(80 * G, 60 * G, 0.9), 72 * G - 20 * G);
    assert_int_equal(eng_cuda_kv_budget(80 * G, 5 * G, 0.5), 0);
}

static void test_check_fit_says_what_is_needed_and_what_is_there(void **state) {
    (void)state;
    eng_model_config_t c = llama2_7b();
    eng_cuda_sizes_t s;
    eng_cuda_sizes(&c, &s);
    char err[512] = "";
    int64_t G = 1LL << 30;
    assert_int_equal(eng_cuda_check_fit(&s, 79 * G, 80 * G, 0.9, "0 (H100)", err, sizeof err),
                     SL_OK);
    assert_int_equal(eng_cuda_check_fit(&s, 12 * G, 16 * G, 0.9, "0 (T4)", err, sizeof err),
                     SL_ENOMEM);
    assert_non_null(strstr(err, "cuda: model needs "));
    assert_non_null(strstr(err, "device 0 (T4) has 12.00 GiB free of 16.00 GiB"));
}

/* ---- the step plan ---- */

static const eng_cuda_geom_t GEOM = {.block_size = 16, .num_blocks = 100, .vocab = 1000,
                                     .max_tokens = 4096, .flash_tile = 64};

static void test_plan_decode_padded_to_bucket(void **state) {
    (void)state;
    int32_t t0[] = {5}, t1[] = {6}, t2[] = {7};
    int32_t bt0[] = {3}, bt1[] = {9, 4}, bt2[] = {1, 2, 8};
    eng_batch_seq_t seqs[] = {{t0, 1, 0, bt0, 1, 1}, {t1, 1, 17, bt1, 2, 1}, {t2, 1, 40, bt2, 3, 1}};
    eng_batch_t b = {3, seqs, 0, NULL, NULL};
    assert_true(eng_cuda_batch_is_decode(&b));
    int32_t meta[256];
    eng_cuda_plan_t p;
    char err[256];
    assert_int_equal(eng_cuda_plan_build(&b, &GEOM, 4, meta, 256, &p, err, sizeof err), SL_OK);
    assert_int_equal(p.n_tokens, 4);
    assert_int_equal(p.n_rows, 4);
    assert_int_equal(p.n_tiles, 0);
    assert_int_equal(p.n_out, 4);
    assert_int_equal(p.n_real, 3);
    assert_int_equal(p.n_bt, 6);
    assert_int_equal(p.max_keys, 41);
    /* slots: block * 16 + pos % 16 */
    assert_int_equal(meta[p.off_slot + 0], 3 * 16 + 0);
    assert_int_equal(meta[p.off_slot + 1], 4 * 16 + 1);
    assert_int_equal(meta[p.off_slot + 2], 8 * 16 + 8);
    assert_int_equal(meta[p.off_slot + 3], -1); /* padding: never written */
    /* rows: block-table offsets into the concatenation, keys = pos + 1 */
    assert_int_equal(meta[p.off_row_bt + 0], 0);
    assert_int_equal(meta[p.off_row_bt + 1], 1);
    assert_int_equal(meta[p.off_row_bt + 2], 3);
    assert_int_equal(meta[p.off_row_nk + 1], 18);
    assert_int_equal(meta[p.off_row_nk + 3], 0);
    assert_int_equal(meta[p.off_bt + 3], 1);
    assert_int_equal(meta[p.off_bt + 5], 8);
    assert_int_equal(meta[p.off_out + 3], 3);
    /* the layout before bt depends only on the bucket: a 1-sequence batch padded to 4 agrees */
    eng_batch_t b1 = {1, seqs, 0, NULL, NULL};
    eng_cuda_plan_t p1;
    assert_int_equal(eng_cuda_plan_build(&b1, &GEOM, 4, meta, 256, &p1, err, sizeof err), SL_OK);
    assert_int_equal(p1.off_bt, p.off_bt);
    assert_int_equal(p1.off_row_nk, p.off_row_nk);
    assert_int_equal(p1.off_out, p.off_out);
}

static void test_plan_prefill_tiles_and_rows(void **state) {
    (void)state;
    int32_t toks[200];
    for (int i = 0; i < 200; i++)
        toks[i] = i;
    int32_t bt_long[] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
    int32_t bt_short[] = {50};
    /* chunked prefill: 150 new tokens on top of 70 cached (220 positions -> 14 blocks), last-row
     * logits; then a 5-token sequence below the flash threshold with all rows' logits */
    eng_batch_seq_t seqs[] = {{toks, 150, 70, bt_long, 15, 1}, {toks, 5, 0, bt_short, 1, 2}};
    int32_t src[] = {12}, dst[] = {60};
    eng_batch_t b = {2, seqs, 1, src, dst};
    assert_false(eng_cuda_batch_is_decode(&b));
    int32_t meta[1024];
    eng_cuda_plan_t p;
    char err[256];
    assert_int_equal(eng_cuda_plan_build(&b, &GEOM, 0, meta, 1024, &p, err, sizeof err), SL_OK);
    assert_int_equal(p.n_tokens, 155);
    assert_int_equal(p.n_tiles, 3); /* 64 + 64 + 22 */
    assert_int_equal(p.n_rows, 5);
    assert_int_equal(p.n_out, 1 + 5);
    const int32_t *tile = meta + p.off_tiles;
    assert_int_equal(tile[4 * 1 + 0], 64);      /* first token of tile 1 */
    assert_int_equal(tile[4 * 1 + 1], 64);      /* queries */
    assert_int_equal(tile[4 * 1 + 2], 70 + 64); /* position of its first query */
    assert_int_equal(tile[4 * 2 + 1], 22);
    assert_int_equal(tile[4 * 2 + 3], 0);       /* block-table offset */
    /* token 149 is at position 219: block bt_long[13] = 23, offset 11 */
    assert_int_equal(meta[p.off_pos + 149], 219);
    assert_int_equal(meta[p.off_slot + 149], 23 * 16 + 11);
    /* the short sequence's rows: token index 150.., its table after the 15 of the first */
    assert_int_equal(meta[p.off_row_tok + 0], 150);
    assert_int_equal(meta[p.off_row_bt + 0], 15);
    assert_int_equal(meta[p.off_row_nk + 4], 5);
    assert_int_equal(meta[p.off_out + 0], 149);
    assert_int_equal(meta[p.off_out + 5], 154);
    assert_int_equal(meta[p.off_copies + 0], 12);
    assert_int_equal(meta[p.off_copies + 1], 60);
    assert_int_equal(p.n_ints, p.off_copies + 2);
    /* the wide kernel's tiles: 128 + 22 queries */
    eng_cuda_geom_t g = GEOM;
    assert_int_equal(eng_cuda_flash_tile(ENG_CUDA_PREFILL_FA2), 64);
    assert_int_equal(eng_cuda_flash_tile(ENG_CUDA_PREFILL_OLD), 64);
    g.flash_tile = eng_cuda_flash_tile(ENG_CUDA_PREFILL_FA2W);
    assert_int_equal(g.flash_tile, 128);
    assert_int_equal(eng_cuda_plan_build(&b, &g, 0, meta, 1024, &p, err, sizeof err), SL_OK);
    assert_int_equal(p.n_tiles, 2);
    tile = meta + p.off_tiles;
    assert_int_equal(tile[4 * 0 + 1], 128);
    assert_int_equal(tile[4 * 1 + 0], 128);
    assert_int_equal(tile[4 * 1 + 1], 22);
    assert_int_equal(tile[4 * 1 + 2], 70 + 128);
    assert_int_equal(tile[4 * 1 + 3], 0);
    assert_int_equal(p.n_rows, 5);
    /* without the flash kernel every token is a split-K row */
    g.flash_tile = 0;
    assert_int_equal(eng_cuda_plan_build(&b, &g, 0, meta, 1024, &p, err, sizeof err), SL_OK);
    assert_int_equal(p.n_tiles, 0);
    assert_int_equal(p.n_rows, 155);
    assert_int_equal(p.max_keys, 220);
}

static void test_plan_rejects_bad_batches(void **state) {
    (void)state;
    int32_t meta[512];
    eng_cuda_plan_t p;
    char err[256];
    int32_t tok[] = {1, 2}, bad_tok[] = {1000}, bt[] = {1, 2}, bad_bt[] = {100};
    struct {
        eng_batch_seq_t s;
        const char *msg;
    } cases[] = {
        {{bad_tok, 1, 0, bt, 1, 1}, "outside the vocabulary"},
        {{tok, 2, 15, bt, 1, 1}, "cannot hold 17 positions"},
        {{tok, 1, 0, bad_bt, 1, 1}, "outside the pool"},
        {{tok, 1, -1, bt, 1, 1}, "negative position"},
        {{tok, 0, 0, bt, 1, 1}, "has no tokens"},
        {{tok, 1, 0, bt, 1, 3}, "logits mode"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_batch_t b = {1, &cases[i].s, 0, NULL, NULL};
        assert_int_equal(eng_cuda_plan_build(&b, &GEOM, 0, meta, 512, &p, err, sizeof err),
                         SL_EINVAL);
        assert_non_null(strstr(err, cases[i].msg));
    }
    eng_batch_seq_t ok = {tok, 2, 0, bt, 1, 1};
    eng_batch_t b = {1, &ok, 0, NULL, NULL};
    eng_cuda_geom_t small = GEOM;
    small.max_tokens = 1;
    assert_int_equal(eng_cuda_plan_build(&b, &small, 0, meta, 512, &p, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "exceeds the workspace"));
    assert_int_equal(eng_cuda_plan_build(&b, &GEOM, 2, meta, 512, &p, err, sizeof err), SL_EINVAL);
    assert_int_equal(eng_cuda_plan_build(&b, &GEOM, 0, meta, 4, &p, err, sizeof err), SL_EINVAL);
    int32_t src[] = {0}, dst[] = {100};
    eng_batch_t bc = {1, &ok, 1, src, dst};
    assert_int_equal(eng_cuda_plan_build(&bc, &GEOM, 0, meta, 512, &p, err, sizeof err), SL_EINVAL);
    eng_batch_t empty = {0, NULL, 0, NULL, NULL};
    assert_int_equal(eng_cuda_plan_build(&empty, &GEOM, 0, meta, 512, &p, err, sizeof err),
                     SL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graph_bucket_is_smallest_power_of_two),
        cmocka_unit_test(test_attn_splits_cover_keys_and_widen_under_cap),
        cmocka_unit_test(test_sizes_match_the_memory_estimator),
        cmocka_unit_test(test_kv_budget_subtracts_what_is_in_use),
        cmocka_unit_test(test_check_fit_says_what_is_needed_and_what_is_there),
        cmocka_unit_test(test_plan_decode_padded_to_bucket),
        cmocka_unit_test(test_plan_prefill_tiles_and_rows),
        cmocka_unit_test(test_plan_rejects_bad_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else /* built without CUDA */

static void test_cuda_plan_skipped(void **state) {
    (void)state;
    print_message("SKIPPED: no CUDA device (built without CUDA)\n");
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cuda_plan_skipped)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
