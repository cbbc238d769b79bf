/* test_kv_dtype.c — the KV cache element type on the command line (`--kv-dtype f32|f16|int8`,
 * alias `--kv-cache-dtype`): every engine command refuses a bad value naming the flag and the value;
 * `sluice run` with F16 KV gives llama.cpp's greedy tokens on stories260K; `sluice bench` with F16
 * KV fits twice the blocks in the same --kv-memory-mb, with int8 8/3 times (stories260K's rows of 8:
 * 8 bytes and a 4-byte scale); `sluice validate` refuses a profile taken with another KV type and
 * looks for the F16 or int8 profile under its own default name; without the flag
 * the engine takes the type this CPU's kernels read faster (F16 with AVX-512). Parts that need
 * ../shared/models/stories260K.gguf say that they were skipped when it is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "tests/cli/capture.h"
#include "cli/profile_db.h"
#include "engine/cpu/kernels.h"
#include "sched/memest.h"
#include "sched/status.h"
#include "sim/profile.h"

#define MODEL "../shared/models/stories260K.gguf"
#define FIXTURE "../shared/fixtures/stories260K_greedy.txt"

static int model_present(void)
{
    if (access(MODEL, R_OK) == 0)
        return 1;
    print_message("SKIPPED: %s is absent\n", MODEL);
    return 0;
}

static void expect(cmd_fn cmd, int argc, char **argv, int want_rc, const char *want_text)
{
    int rc;
    char *text = capture(cmd, argc, argv, &rc);
    if (rc != want_rc || !strstr(text, want_text))
        fail_msg("sluice %s: exit %d (want %d), output lacks \"%s\":\n%s", argv[0], rc, want_rc, want_text, text);
    free(text);
}

static void test_every_engine_command_refuses_a_bad_kv_dtype(void **state)
{
    static const struct { const char *name; cmd_fn fn; } cmds[] = {
        {"run", cmd_run}, {"bench", cmd_bench}, {"serve", cmd_serve}, {"profile", cmd_profile},
        {"validate", cmd_validate},
    };
    static const char *const flags[] = {"--kv-dtype", "--kv-cache-dtype"};
    static const char *const bad[] = {"f8", "F16", "fp16", "i8", ""};
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++)
        for (size_t f = 0; f < 2; f++) {
            for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
                char *argv[] = {(char *)cmds[c].name, "-m", MODEL, (char *)flags[f], (char *)bad[b]};
                char want[128];
                snprintf(want, sizeof want, "sluice %s: %s: expected f32, f16 or int8, got '%s'", cmds[c].name,
                         flags[f], bad[b]);
                expect(cmds[c].fn, 5, argv, 2, want);
            }
            char *argv[] = {(char *)cmds[c].name, "-m", MODEL, (char *)flags[f]}; /* no value */
            char want[128];
            if (cmds[c].fn == cmd_serve) /* serve says so for all its valued flags */
                snprintf(want, sizeof want, "sluice serve: %s needs a value", flags[f]);
            else
                snprintf(want, sizeof want, "sluice %s: %s: expected f32, f16 or int8, got ''", cmds[c].name,
                         flags[f]);
            expect(cmds[c].fn, 4, argv, 2, want);
        }
}

/* The "output_ids:" numbers after `key` in text into ids; their count. */
static int ids_after(const char *text, const char *key, int32_t *ids, int cap)
{
    const char *p = strstr(text, key);
    int n = 0;
    for (char *end; p && n < cap; p = end) {
        if (n == 0)
            p += strlen(key);
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
    }
    return n;
}

static void test_run_with_f16_kv_gives_llama_cpp_greedy_tokens(void **state)
{
    if (!model_present())
        skip();
    FILE *f = fopen(FIXTURE, "r");
    assert_non_null(f);
    char *fixture = calloc(1, 1 << 16);
    size_t len = fread(fixture, 1, (1 << 16) - 1, f);
    fclose(f);
    fixture[len] = 0;
    const char *block = strstr(fixture, "=== Once upon a time\n");
    assert_non_null(block);
    int32_t want[128], got[128];
    int n_want = ids_after(block, "output_ids:", want, 128);
    assert_int_equal(n_want, 64);
    for (int k = 0; k < 2; k++) { /* both spellings of the flag */
        char *argv[] = {"run", "-m", MODEL, "-p", "Once upon a time", "-n", "64", "--temp", "0", "--ignore-eos",
                        "--print-ids", "--threads", "1", k ? "--kv-cache-dtype" : "--kv-dtype", "f16"};
        int rc;
        char *text = capture(cmd_run, (int)(sizeof argv / sizeof argv[0]), argv, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(ids_after(text, "output_ids:", got, 128), n_want);
        for (int i = 0; i < n_want; i++)
            if (got[i] != want[i])
                fail_msg("token %d: %d, llama.cpp gives %d", i, got[i], want[i]);
        free(text);
    }
    free(fixture);
}

/* The KV pool `sluice bench` reports ("KV         N blocks") for a tiny closed loop under a 1 MiB cap,
 * with --kv-dtype kv_dtype, or without the flag when NULL (then the pool's type is `want`). */
static int bench_blocks(const char *kv_dtype, const char *want)
{
    char *argv[] = {"bench", "-m", MODEL, "--concurrency", "1", "--requests", "1", "--prompt-len", "8",
                    "--max-tokens", "4", "--threads", "1", "--kv-memory-mb", "1", "--max-sequence-length", "256",
                    "--no-record",
                    "--kv-dtype", (char *)kv_dtype};
    int argc = (int)(sizeof argv / sizeof argv[0]) - (kv_dtype ? 0 : 2), rc, blocks = -1;
    char *text = capture(cmd_bench, argc, argv, &rc);
    assert_int_equal(rc, 0);
    char head[64];
    snprintf(head, sizeof head, "(KV %s)", kv_dtype ? kv_dtype : want);
    assert_non_null(strstr(text, head));
    const char *kv = strstr(text, "  KV ");
    assert_non_null(kv);
    assert_int_equal(sscanf(kv, " KV %d blocks", &blocks), 1);
    free(text);
    return blocks;
}

static void test_bench_with_f16_or_int8_kv_fits_more_blocks(void **state)
{
    if (!model_present())
        skip();
    int b32 = bench_blocks("f32", NULL), b16 = bench_blocks("f16", NULL), b8 = bench_blocks("int8", NULL);
    assert_true(b32 > 0);
    assert_int_equal(b16, 2 * b32);
    if (b8 < 8 * b32 / 3 || b8 > 8 * (b32 + 1) / 3) /* the F32 count is rounded down */
        fail_msg("int8 pool %d blocks, F32 pool %d", b8, b32);
}

static void test_without_the_flag_the_cpu_takes_the_type_its_kernels_read_faster(void **state)
{
    if (!model_present())
        skip();
    const int f16 = eng_cpu_prefers_f16_kv();
    assert_int_equal(f16, eng_cpu_isa_detect() >= ENG_CPU_ISA_AVX512);
    print_message("this CPU (%s kernels): KV %s by default\n", eng_cpu_kernels_get(eng_cpu_isa_detect())->name,
                  f16 ? "f16" : "f32");
    assert_int_equal(bench_blocks(NULL, f16 ? "f16" : "f32"), bench_blocks(f16 ? "f16" : "f32", NULL));
}

/* A profile of stories260K's shape measured here, on the cpu backend at 1 thread, with the KV cache
 * in F16 (bytes_per_kv 2), F32 (4) or int8 (1.5 at its head size 8), saved as `name` in db. */
static void save_profile(const char *db, const char *name, double bytes_per_kv)
{
    sim_profile_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    snprintf(p.backend, sizeof p.backend, "cpu");
    cli_machine_id(p.host, sizeof p.host, p.cpu, sizeof p.cpu);
    p.threads = 1;
    assert_int_equal(sched_model_shape_builtin("stories260k", &p.model), SL_OK);
    p.model.bytes_per_kv = bytes_per_kv;
    assert_int_equal(sim_profile_set_knots(&p, 256, 16, 512), SL_OK);
    for (int i = 0; i < p.n_knots; i++)
        p.dense[i] = 1e-5 * p.knot[i];
    for (int i = 0; i < p.n_lm_knots; i++)
        p.lm[i] = 1e-6 * p.lm_knot[i];
    p.max_seq_len = 512;
    char err[256];
    if (cli_profile_save(db, &p, err, sizeof err) != SL_OK)
        fail_msg("%s", err);
}

static void test_validate_refuses_a_profile_of_the_other_kv_dtype(void **state)
{
    char dir[] = "/tmp/sluice_kv_cli_XXXXXX", db[96], cmd[128];
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/p.db", dir);
    save_profile(db, "p16", 2);
    save_profile(db, "p32", 4);
    save_profile(db, "p8", 1.5);
    /* refused before the model is opened: the path need not exist */
    char *f32run[] = {"validate", "-m", "nosuch/model.gguf", "--profile", "p16", "--threads", "1", "--preset",
                      "sharegpt", "-n", "2", "--db", db, "--kv-dtype", "f32"};
    expect(cmd_validate, (int)(sizeof f32run / sizeof f32run[0]), f32run, 2,
           "sluice validate: profile 'p16' is stale: measured with --kv-dtype f16 (2 bytes per KV element), this "
           "run uses --kv-dtype f32");
    char *f16run[] = {"validate", "-m", "nosuch/model.gguf", "--profile", "p32", "--threads", "1", "--preset",
                      "sharegpt", "-n", "2", "--db", db, "--kv-dtype", "f16"};
    expect(cmd_validate, (int)(sizeof f16run / sizeof f16run[0]), f16run, 2,
           "profile 'p32' is stale: measured with --kv-dtype f32 (4 bytes per KV element), this run uses --kv-dtype "
           "f16");
    char *i8run[] = {"validate", "-m", "nosuch/model.gguf", "--profile", "p8", "--threads", "1", "--preset",
                     "sharegpt", "-n", "2", "--db", db, "--kv-dtype", "f16"};
    expect(cmd_validate, (int)(sizeof i8run / sizeof i8run[0]), i8run, 2,
           "profile 'p8' is stale: measured with --kv-dtype int8 (1.5 bytes per KV element), this run uses "
           "--kv-dtype f16: profile again with --kv-dtype f16, or run with --kv-dtype int8");
    /* without --profile, an F16 run looks for the name `sluice profile --kv-dtype f16` gives */
    char *byname[] = {"validate", "-m", "nosuch/model.gguf", "--threads", "1", "--preset", "sharegpt", "-n", "2",
                      "--db", db, "--kv-dtype", "f16"};
    expect(cmd_validate, (int)(sizeof byname / sizeof byname[0]), byname, 2,
           "no engine profile 'model-cpu-t1-kvf16'");
    char name[64];
    cli_profile_default_name("a/b.gguf", "cpu", 2, SLUICE_KV_F32, name, sizeof name);
    assert_string_equal(name, "b-cpu-t2");
    cli_profile_default_name("a/b.gguf", "cpu", 2, SLUICE_KV_F16, name, sizeof name);
    assert_string_equal(name, "b-cpu-t2-kvf16");
    cli_profile_default_name("a/b.gguf", "cpu", 2, SLUICE_KV_INT8, name, sizeof name);
    assert_string_equal(name, "b-cpu-t2-kvint8");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* The cuda pool is F16: a cuda run expects an F16 profile whatever --kv-dtype says (its backend
 * refuses int8). */
static void test_cuda_runs_expect_f16_profiles(void **state)
{
    (void)state;
    sim_profile_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "x-cuda-t1");
    char err[512];
    p.model.bytes_per_kv = 2;
    assert_int_equal(cli_profile_check_kv(&p, "cuda", SLUICE_KV_F32, err, sizeof err), SL_OK);
    assert_int_equal(cli_profile_check_kv(&p, "cpu", SLUICE_KV_F32, err, sizeof err), SL_EINVAL);
    p.model.bytes_per_kv = 4;
    assert_int_equal(cli_profile_check_kv(&p, "cuda", SLUICE_KV_F32, err, sizeof err), SL_EINVAL);
    assert_non_null(strstr(err, "measured with --kv-dtype f32"));
    assert_int_equal(cli_profile_check_kv(&p, "cpu", SLUICE_KV_F32, err, sizeof err), SL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_engine_command_refuses_a_bad_kv_dtype),
        cmocka_unit_test(test_run_with_f16_kv_gives_llama_cpp_greedy_tokens),
        cmocka_unit_test(test_bench_with_f16_or_int8_kv_fits_more_blocks),
        cmocka_unit_test(test_without_the_flag_the_cpu_takes_the_type_its_kernels_read_faster),
        cmocka_unit_test(test_validate_refuses_a_profile_of_the_other_kv_dtype),
        cmocka_unit_test(test_cuda_runs_expect_f16_profiles),
    };
    return cmocka_run_group_tests_name("kv_dtype_cli", tests, NULL, NULL);
}
