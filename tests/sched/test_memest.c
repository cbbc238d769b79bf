/* test_memest.c — the memory estimator against hand-computed figures. */
#include "helpers.h"

static void test_memest_llama2_7b_on_80gb(void **state)
{
    sched_model_shape_t m;
    assert_int_equal(sched_model_shape_builtin("llama2-7b", &m), SL_OK);
    /* params: embeddings 32000*4096 = 131,072,000, the same again for the untied LM head;
     * per layer wq, wk, wv, wo 4*4096*4096 = 67,108,864 + SwiGLU 3*4096*11008 = 135,266,304
     * + two norms 8,192 = 202,383,360, times 32 = 6,476,267,520; final norm 4,096.
     * 262,144,000 + 6,476,267,520 + 4,096 = 6,738,415,616 */
    assert_int_equal(sched_mem_params(&m), 6738415616LL);
    assert_int_equal(sched_mem_weight_bytes(&m), 13476831232LL); /* fp16 */
    /* KV: 2 (k, v) * 32 layers * 32 kv heads * 128 * 2 bytes = 524,288 */
    assert_int_equal(sched_mem_kv_bytes_per_token(&m), 524288);
    /* workspace per token: 2 bytes * (2*4096 + 2*4096 + 2*4096 + 2*11008) = 93,184;
     * 2048 tokens = 190,840,832 + fp32 logits 2048 * 32000 * 4 = 262,144,000 -> 452,984,832 */
    assert_int_equal(sched_mem_activation_bytes(&m, 2048, 2048), 452984832LL);
    sched_mem_plan_t p;
    /* 80 GiB = 85,899,345,920 bytes; 0.9 of it = 77,309,411,328; minus weights and workspace
     * = 63,379,595,264 for KV; blocks of 16 tokens are 8,388,608 bytes: 7,555 blocks */
    assert_int_equal(sched_mem_plan(&m, 85899345920LL, 0.9, 16, 2048, &p), SL_OK);
    assert_int_equal(p.weight_bytes, 13476831232LL);
    assert_int_equal(p.activation_bytes, 452984832LL);
    assert_int_equal(p.kv_bytes, 63379595264LL);
    assert_int_equal(p.kv_bytes_per_block, 8388608);
    assert_int_equal(p.num_blocks, 7555);
    assert_int_equal(p.max_tokens_in_kv, 120880);
    /* reserving 2048 tokens for each of 59 requests would need 120,832 slots: all of it */
    assert_int_equal(sched_mem_naive_slots(59, 2048), 120832);
}

static void test_memest_builtin_shapes_match_published_sizes(void **state)
{
    sched_model_shape_t m;
    assert_int_equal(sched_model_shape_builtin("llama3-8b", &m), SL_OK);
    assert_int_equal(sched_mem_params(&m), 8030261248LL); /* "8.03B" */
    assert_int_equal(sched_mem_kv_bytes_per_token(&m), 131072); /* GQA: 8 kv heads */
    assert_int_equal(sched_model_shape_builtin("smollm2-135m", &m), SL_OK);
    assert_int_equal(sched_mem_params(&m), 134515008LL); /* tied embeddings */
    assert_int_equal(sched_model_shape_builtin("stories260k", &m), SL_OK);
    assert_int_equal(m.head_dim, 8);
    assert_int_equal(sched_mem_kv_bytes_per_token(&m), 2 * 5 * 4 * 8 * 2);
    const char *names[] = {"llama2-13b", "llama2-70b", "llama3-70b", "mistral-7b", "tinyllama-1.1b"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sched_model_shape_builtin(names[i], &m), SL_OK);
        assert_string_equal(m.name, names[i]);
        assert_int_equal(m.hidden, m.n_heads * m.head_dim);
    }
    assert_int_equal(sched_model_shape_builtin("gpt-5", &m), SL_ENOTFOUND);
}

static void test_memest_plan_reports_weights_that_do_not_fit(void **state)
{
    sched_model_shape_t m;
    sched_mem_plan_t p;
    assert_int_equal(sched_model_shape_builtin("llama2-70b", &m), SL_OK);
    assert_int_equal(sched_mem_plan(&m, 85899345920LL, 0.9, 16, 2048, &p), SL_ENOMEM);
    assert_true(p.weight_bytes > 130000000000LL);
    assert_int_equal(p.num_blocks, 0);
    assert_int_equal(sched_mem_plan(&m, 0, 0.9, 16, 2048, &p), SL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memest_llama2_7b_on_80gb),
        cmocka_unit_test(test_memest_builtin_shapes_match_published_sizes),
        cmocka_unit_test(test_memest_plan_reports_weights_that_do_not_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
