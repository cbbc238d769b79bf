/* test_sched_opts.c — scheduler knobs from flags and JSON config files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/sched_opts.h"

static void test_sched_opts_flags_in_both_forms(void **state)
{
    sched_config_t c = sched_config_default();
    char *argv[] = {"sim", "--max-num-seqs", "64", "--strategy=naive", "--enable-chunked-prefill=false",
                    "--enable-prefix-caching", "--trace", "x.csv", NULL};
    int argc = 8, seen = 0;
    char err[256];
    for (int i = 1; i < argc; i++) {
        int rc = sched_opts_parse_arg(&c, argc, argv, &i, err, sizeof err);
        assert_true(rc >= 0);
        seen += rc;
        if (!rc)
            assert_string_equal(argv[i], i == 6 ? "--trace" : "x.csv"); /* not ours: left alone */
    }
    assert_int_equal(seen, 4);
    assert_int_equal(c.max_num_seqs, 64);
    assert_int_equal(c.strategy, SCHED_NAIVE);
    assert_false(c.enable_chunked_prefill);
    assert_true(c.enable_prefix_caching);
}

static void test_sched_opts_refuses_bad_flag_values_naming_the_range(void **state)
{
    sched_config_t c = sched_config_default();
    char err[256];
    char *argv[] = {"sim", "--max-num-seqs", "0", "--block-size"};
    int i = 1;
    assert_int_equal(sched_opts_parse_arg(&c, 4, argv, &i, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "max_num_seqs: must be an integer in 1..65536, got '0'");
    assert_int_equal(c.max_num_seqs, 256);
    i = 3;
    assert_int_equal(sched_opts_parse_arg(&c, 4, argv, &i, err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "--block-size: missing value");
}

static void test_sched_opts_json_applies_known_keys(void **state)
{
    sched_config_t c = sched_config_default();
    char err[256];
    assert_int_equal(sched_opts_apply_json(&c,
                                           "{\"strategy\": \"continuous\", \"max_num_seqs\": 64, "
                                           "\"batch_timeout_ms\": 12.5, \"enable_prefix_caching\": false, "
                                           "\"model\": \"llama3-8b\"}",
                                           "cfg.json", err, sizeof err),
                     SL_OK);
    assert_int_equal(c.max_num_seqs, 64);
    assert_true(c.batch_timeout_ms == 12.5);
    assert_false(c.enable_prefix_caching);
    assert_int_equal(c.model.n_kv_heads, 8);
}

static void test_sched_opts_json_refuses_unknown_keys_types_and_ranges(void **state)
{
    sched_config_t c = sched_config_default(), before = c;
    char err[256];
    assert_int_equal(sched_opts_apply_json(&c, "{\"max_num_seqs\": 8, \"max_seqs\": 1}", "cfg.json", err, sizeof err),
                     SL_ENOTFOUND);
    assert_string_equal(err, "cfg.json: max_seqs: unknown scheduler setting");
    assert_int_equal(c.max_num_seqs, before.max_num_seqs); /* nothing applied */
    assert_int_equal(sched_opts_apply_json(&c, "{\"max_num_seqs\": \"64\"}", "cfg.json", err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "cfg.json: max_num_seqs: must be an integer (1..65536)");
    assert_int_equal(sched_opts_apply_json(&c, "{\"max_num_seqs\": 6.5}", "cfg.json", err, sizeof err), SL_EINVAL);
    assert_int_equal(sched_opts_apply_json(&c, "{\"enable_prefix_caching\": 1}", "cfg.json", err, sizeof err),
                     SL_EINVAL);
    assert_string_equal(err, "cfg.json: enable_prefix_caching: must be true or false (true, false)");
    assert_int_equal(sched_opts_apply_json(&c, "{\"max_num_seqs\": 70000}", "cfg.json", err, sizeof err), SL_EINVAL);
    assert_string_equal(err, "cfg.json: max_num_seqs: must be an integer in 1..65536, got '70000'");
    assert_int_equal(sched_opts_apply_json(&c, "[1, 2]", "cfg.json", err, sizeof err), SL_EFORMAT);
    assert_int_equal(memcmp(&c, &before, sizeof c), 0);
}

static void test_sched_opts_config_flag_reads_a_file(void **state)
{
    char path[] = "/tmp/sluice-sched-opts-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *json = "{\"strategy\": \"bucketed\", \"bucket_size\": 64}";
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    sched_config_t c = sched_config_default();
    char err[256];
    char *argv[] = {"sim", "--config", path};
    int i = 1;
    assert_int_equal(sched_opts_parse_arg(&c, 3, argv, &i, err, sizeof err), 1);
    assert_int_equal(i, 2);
    assert_int_equal(c.strategy, SCHED_BUCKETED);
    assert_int_equal(c.bucket_size, 64);
    unlink(path);
    i = 1;
    assert_int_equal(sched_opts_parse_arg(&c, 3, argv, &i, err, sizeof err), SL_EIO);
}

static void test_sched_opts_help_lists_every_knob_with_default_and_range(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    sched_opts_print_help(f);
    fclose(f);
    for (int i = 0; i < sched_knob_count(); i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", sched_knob_at(i)->name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_')
                *p = '-';
        assert_non_null(strstr(text, flag));
    }
    assert_non_null(strstr(text, "--max-num-seqs N\n      continuous: running sequences at most [requests] (default 256; 1..65536)"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_opts_flags_in_both_forms),
        cmocka_unit_test(test_sched_opts_refuses_bad_flag_values_naming_the_range),
        cmocka_unit_test(test_sched_opts_json_applies_known_keys),
        cmocka_unit_test(test_sched_opts_json_refuses_unknown_keys_types_and_ranges),
        cmocka_unit_test(test_sched_opts_config_flag_reads_a_file),
        cmocka_unit_test(test_sched_opts_help_lists_every_knob_with_default_and_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
