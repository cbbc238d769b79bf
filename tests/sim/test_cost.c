/* test_cost.c — hardware profiles, the cost model and the calibration fits. */
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
#include "sim/cost.h"
#include "sim/hw.h"

#define CALIB_DIR "../shared/calibration"

typedef struct fixture {
    sched_model_shape_t m;
    sim_hw_t hw;
    sim_calib_t *calib; /* NULL when ../shared is absent */
    sim_cost_t *roof, *tab, *tp2;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    char err[512];
    assert_int_equal(sched_model_shape_builtin("llama2-7b", &f->m), SL_OK);
    assert_int_equal(sim_hw_builtin("a100-80gb", &f->hw), SL_OK);
    f->calib = sim_calib_load(CALIB_DIR, "a100", false, err, sizeof err);
    f->roof = sim_cost_create(&f->m, &f->hw, 1, NULL, err, sizeof err);
    f->tab = sim_cost_create(&f->m, &f->hw, 1, f->calib, err, sizeof err);
    f->tp2 = sim_cost_create(&f->m, &f->hw, 2, f->calib, err, sizeof err);
    assert_non_null(f->roof);
    assert_non_null(f->tab);
    assert_non_null(f->tp2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sim_cost_free(f->roof);
    sim_cost_free(f->tab);
    sim_cost_free(f->tp2);
    sim_calib_free(f->calib);
    free(f);
    return 0;
}

/* A step of n sequences; ctx[i], ntok[i], prefill and sample flags per sequence. */
typedef struct step_buf {
    sched_seq_step_t seqs[8];
    sched_step_t step;
} step_buf_t;

static const sched_step_t *mk(step_buf_t *b, int n, const int *ctx, const int *ntok, bool prefill, bool sample)
{
    memset(b, 0, sizeof *b);
    for (int i = 0; i < n; i++) {
        b->seqs[i] = (sched_seq_step_t){.req_id = i, .n_tokens = ntok[i], .context_len = ctx[i],
                                        .is_prefill = prefill, .sample = sample};
        b->step.n_tokens += ntok[i];
        if (prefill)
            b->step.n_prefill_tokens += ntok[i];
        else
            b->step.n_decode_seqs++;
    }
    b->step.n_seqs = n;
    b->step.seqs = b->seqs;
    return &b->step;
}

static void test_hw_builtin_profiles_and_unknown_name(void **state)
{
    sim_hw_t hw;
    char err[256];
    assert_int_equal(sim_hw_builtin("h100-sxm", &hw), SL_OK);
    assert_true(hw.peak_flops == 989e12 && hw.hbm_bw == 3.35e12);
    assert_int_equal(sim_hw_builtin("a100-40gb", &hw), SL_OK);
    assert_true(hw.hbm_bw == 1.555e12);
    assert_int_equal(sim_hw_resolve("tpu-v9", &hw, err, sizeof err), SL_ENOTFOUND);
    assert_non_null(strstr(err, "a100-40gb, a100-80gb, h100-sxm"));
}

static void test_hw_file_reports_bad_line(void **state)
{
    char path[] = "/tmp/sluice_hw_XXXXXX";
    int fd = mkstemp(path);
    FILE *fp = fdopen(fd, "w");
    fprintf(fp, "# my card\nbase = a100-80gb\nname = mycard\nhbm_tbps = 1.0\npeak_tflops = abc\n");
    fclose(fp);
    sim_hw_t hw;
    char err[512];
    assert_int_equal(sim_hw_load_file(path, &hw, err, sizeof err), SL_EFORMAT);
    assert_non_null(strstr(err, ":5: peak_tflops: expected a number"));
    fp = fopen(path, "w");
    fprintf(fp, "base = a100-80gb\nname = mycard\nhbm_tbps = 1.0\n");
    fclose(fp);
    assert_int_equal(sim_hw_load_file(path, &hw, err, sizeof err), SL_OK);
    assert_string_equal(hw.name, "mycard");
    assert_true(hw.hbm_bw == 1.0e12 && hw.peak_flops == 312e12);
    fp = fopen(path, "w"); /* a long line is one error, not its pieces read as lines */
    fprintf(fp, "base = a100-80gb\n# %0600d\nhbm_tbps = 1.0\n", 7);
    fclose(fp);
    assert_int_equal(sim_hw_load_file(path, &hw, err, sizeof err), SL_EFORMAT);
    assert_non_null(strstr(err, ":2: line longer than 510 characters"));
    unlink(path);
}

/* A name goes into JSON, SQL text and chart titles: quotes, backslashes and control characters
 * are refused where they are read; a memory size is range-checked before it becomes an integer
 * (both found by fuzz_config). */
static void test_hw_refuses_quoted_names_and_huge_memory(void **state)
{
    (void)state;
    sim_hw_t hw;
    char err[512];
    assert_int_equal(sim_hw_from_json("{\"base\": \"a100-80gb\", \"name\": \"my\\\"gpu\"}", &hw, err, sizeof err),
                     SL_EINVAL);
    assert_string_equal(err, "name: character 3 is not allowed (printable ASCII without quotes or backslashes)");
    assert_int_equal(sim_hw_from_json("{\"base\": \"a100-80gb\", \"calib_gpu\": \"a\\tb\"}", &hw, err, sizeof err),
                     SL_EINVAL);
    assert_non_null(strstr(err, "calib_gpu: character 2 is not allowed"));
    assert_int_equal(sim_hw_from_json("{\"base\": \"a100-80gb\", \"mem_gb\": 1e300}", &hw, err, sizeof err),
                     SL_EINVAL);
    assert_non_null(strstr(err, "mem_gb: must be 1..1e15 bytes"));
    assert_int_equal(sim_hw_from_json("{\"base\": \"a100-80gb\", \"name\": \"My GPU (lab 2)\"}", &hw, err,
                                      sizeof err), SL_OK);
    assert_string_equal(hw.name, "My GPU (lab 2)");
}

/* The run store keeps profiles as JSON: a profile reads back bit for bit; bad JSON is refused. */
static void test_hw_json_round_trip(void **state)
{
    (void)state;
    sim_hw_t a, b;
    char json[1024], err[256];
    assert_int_equal(sim_hw_builtin("h100-sxm", &a), SL_OK);
    a.host_overhead_s = 1.0 / 3, a.cuda_graphs = !a.cuda_graphs;
    assert_true(sim_hw_to_json(&a, json, sizeof json));
    assert_false(sim_hw_to_json(&a, json, 16));
    assert_true(sim_hw_to_json(&a, json, sizeof json));
    assert_int_equal(sim_hw_from_json(json, &b, err, sizeof err), SL_OK);
    assert_string_equal(a.name, b.name);
    assert_string_equal(a.calib_gpu, b.calib_gpu);
    assert_true(a.mem_bytes == b.mem_bytes && a.peak_flops == b.peak_flops && a.hbm_bw == b.hbm_bw &&
                a.host_overhead_s == b.host_overhead_s && a.cuda_graphs == b.cuda_graphs &&
                a.launch_gap_s == b.launch_gap_s && a.gpu_mem_util == b.gpu_mem_util);
    assert_int_equal(sim_hw_from_json("[1]", &b, err, sizeof err), SL_EFORMAT);
    assert_int_equal(sim_hw_from_json("{\"base\": \"a100-80gb\", \"hbm_bw\": -1}", &b, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "hbm_bw"));
    assert_int_equal(sim_hw_from_json("{\"warp\": 9}", &b, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "warp"));
}

static void test_dense_cost_monotonic_in_tokens(void **state)
{
    fixture_t *f = *state;
    for (int m = 1; m < 8192; m++)
        assert_true(sim_cost_dense(f->roof, m + 1) >= sim_cost_dense(f->roof, m));
    /* the measured table is noisy at a few tokens; on a coarse grid it rises */
    const int grid[] = {1, 64, 256, 512, 1024, 2048, 4096, 8192, 16384};
    for (size_t i = 0; i + 1 < sizeof grid / sizeof grid[0]; i++)
        assert_true(sim_cost_dense(f->tab, grid[i + 1]) > sim_cost_dense(f->tab, grid[i]));
}

static void test_decode_cost_monotonic_in_context(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int one[] = {1};
    double prev = 0;
    for (int ctx = 16; ctx <= 4096; ctx *= 2) {
        int c[] = {ctx};
        double t = sim_cost_step(f->tab, mk(&b, 1, c, one, false, true), NULL);
        assert_true(t > prev);
        prev = t;
    }
}

static void test_decode_priced_per_sequence_not_batch_mean(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int ones[] = {1, 1, 1, 1}, even[] = {1000, 1000, 1000, 1000}, spread[] = {100, 100, 100, 3700};
    sim_cost_parts_t pe, ps;
    sim_cost_step(f->tab, mk(&b, 4, even, ones, false, true), &pe);
    sim_cost_step(f->tab, mk(&b, 4, spread, ones, false, true), &ps);
    /* equal mean context (1000); the longest sequence's term makes the spread batch dearer */
    assert_true(ps.attention > pe.attention);
    assert_true(ps.dense == pe.dense && ps.lm_head == pe.lm_head);
}

static void test_prefill_attention_grows_with_spread(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int ctx[] = {0, 0}, even[] = {1024, 1024}, spread[] = {128, 1920};
    sim_cost_parts_t pe, ps;
    sim_cost_step(f->tab, mk(&b, 2, ctx, even, true, true), &pe);
    sim_cost_step(f->tab, mk(&b, 2, ctx, spread, true, true), &ps);
    assert_true(ps.attention > pe.attention); /* causal q*q work is convex in q */
}

static void test_lm_head_only_for_sampled_rows(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int ctx[] = {0}, n[] = {512};
    sim_cost_parts_t chunk, last;
    sim_cost_step(f->tab, mk(&b, 1, ctx, n, true, false), &chunk);
    sim_cost_step(f->tab, mk(&b, 1, ctx, n, true, true), &last);
    assert_true(chunk.lm_head == 0.0);
    assert_true(last.lm_head == sim_cost_lm_head(f->tab, 1));
    assert_true(last.dense == chunk.dense);
}

static void test_tensor_parallel_adds_all_reduce(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int ctx[] = {0}, n[] = {256};
    sim_cost_parts_t p1, p2;
    sim_cost_step(f->tab, mk(&b, 1, ctx, n, true, true), &p1);
    sim_cost_step(f->tp2, mk(&b, 1, ctx, n, true, true), &p2);
    assert_true(p1.allreduce == 0.0);
    assert_true(p2.allreduce > 0.0);
    assert_true(p2.dense < p1.dense); /* half the weights per GPU */
}

static void test_launch_gap_off_for_graph_decode_steps(void **state)
{
    fixture_t *f = *state;
    sim_hw_t h100;
    char err[256];
    assert_int_equal(sim_hw_builtin("h100-sxm", &h100), SL_OK);
    h100.launch_gap_s = 100e-6; /* an eager host: launches outlast a 1-token step's kernels */
    sim_cost_t *c = sim_cost_create(&f->m, &h100, 1, NULL, err, sizeof err);
    assert_non_null(c);
    step_buf_t b;
    int ctx[] = {100}, one[] = {1};
    sim_cost_parts_t dec, pre;
    sim_cost_step(c, mk(&b, 1, ctx, one, false, true), &dec);
    sim_cost_step(c, mk(&b, 1, ctx, one, true, true), &pre);
    assert_true(dec.launch == 0.0);
    assert_true(pre.launch > 0.0);
    assert_true(pre.total == pre.dense + pre.attention + pre.lm_head + pre.allreduce + pre.launch + pre.host);
    sim_cost_free(c);
}

static void test_padding_counts_as_work(void **state)
{
    fixture_t *f = *state;
    step_buf_t b;
    int ctx[] = {0}, n[] = {100};
    double plain = sim_cost_step(f->tab, mk(&b, 1, ctx, n, true, true), NULL);
    b.seqs[0].padded_tokens = 400;
    b.step.n_padded_tokens = 400;
    double padded = sim_cost_step(f->tab, &b.step, NULL);
    assert_true(padded > plain);
}

static void test_calibration_check_within_five_percent(void **state)
{
    if (access(CALIB_DIR "/a100/vidur_llama2-7b_mlp.csv", R_OK) != 0) {
        skip(); /* ../shared absent */
    }
    const char *gpus[] = {"a100", "h100"};
    for (int g = 0; g < 2; g++) {
        char err[512];
        sim_calib_t *c = sim_calib_load(CALIB_DIR, gpus[g], true, err, sizeof err);
        assert_non_null(c);
        sim_check_row_t rows[96];
        int n = sim_calib_check(c, rows, 96);
        assert_true(n >= 40);
        for (int i = 0; i < n; i++)
            if (rows[i].gated && !(rows[i].mape_model <= 0.05))
                fail_msg("%s %s tp %d: %.2f%%", gpus[g], rows[i].op, rows[i].tp, 100 * rows[i].mape_model);
        sim_calib_free(c);
    }
}

static void test_calibration_missing_file_names_path(void **state)
{
    char err[512];
    assert_null(sim_calib_load("/nonexistent", "a100", false, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/a100/vidur_llama2-7b_mlp.csv"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hw_builtin_profiles_and_unknown_name),
        cmocka_unit_test(test_hw_file_reports_bad_line),
        cmocka_unit_test(test_hw_json_round_trip),
        cmocka_unit_test(test_hw_refuses_quoted_names_and_huge_memory),
        cmocka_unit_test(test_dense_cost_monotonic_in_tokens),
        cmocka_unit_test(test_decode_cost_monotonic_in_context),
        cmocka_unit_test(test_decode_priced_per_sequence_not_batch_mean),
        cmocka_unit_test(test_prefill_attention_grows_with_spread),
        cmocka_unit_test(test_lm_head_only_for_sampled_rows),
        cmocka_unit_test(test_tensor_parallel_adds_all_reduce),
        cmocka_unit_test(test_launch_gap_off_for_graph_decode_steps),
        cmocka_unit_test(test_padding_counts_as_work),
        cmocka_unit_test(test_calibration_check_within_five_percent),
        cmocka_unit_test(test_calibration_missing_file_names_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
