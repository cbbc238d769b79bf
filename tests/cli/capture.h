/* capture.h — for the CLI tests: run a command's entry point (cmd_run, cmd_bench, ...) with its
 * stdout and stderr going to a temporary file, and get back what it printed. Include after
 * <cmocka.h>. */
#ifndef SLUICE_TESTS_CLI_CAPTURE_H
#define SLUICE_TESTS_CLI_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*cmd_fn)(int argc, char **argv);

/* Runs cmd with stdout and stderr going to a file; returns what they printed (malloc'd), the exit
 * code in *rc. */
static inline char *capture(cmd_fn cmd, int argc, char **argv, int *rc)
{
    char path[] = "/tmp/sluice_cli_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    *rc = cmd(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, text, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return text;
}

/* CAPTURE(cmd, rc, "sim", "--flag", ...): capture() over a literal argument list */
#define CAPTURE(cmd, rc, ...) \
    capture(cmd, (int)(sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)), (char *[]){__VA_ARGS__}, &(rc))

/* EXPECT(rc_want, want, cmd, "sim", "--flag", ...): cmd exits with rc_want and prints want
 * ("": anything) */
#define EXPECT(rc_want, want, cmd, ...)                                                            \
    do {                                                                                           \
        int rc_;                                                                                   \
        char *out_ = CAPTURE(cmd, rc_, __VA_ARGS__);                                               \
        assert_int_equal(rc_, rc_want);                                                            \
        assert_non_null(strstr(out_, want));                                                       \
        free(out_);                                                                                \
    } while (0)

#endif
