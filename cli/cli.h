/* cli.h — the `sluice` command's subcommands. Each lives in cli/cmd_<name>.c, parses its own
 * flags, calls into the modules and returns the process exit code: 0 success, 1 a failed check
 * (a regression, a validation over tolerance), 2 bad usage or bad input (message on stderr). */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "include/sluice.h"

int cli_main(int argc, char **argv);

/* Subcommands: argv[0] is the subcommand name. */
int cmd_sim(int argc, char **argv);
int cmd_runs(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Parses v as a number in lo..hi for option flag of subcommand cmd into *out. Returns 0, or prints
 * "sluice CMD: FLAG: expected a number in LO..HI, got 'V'" and returns 2 (v NULL: missing). */
int cli_number(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out);

/* One numeric option of a subcommand: its flag (and another spelling, or NULL), the range it
 * accepts (lo excluded when lo_open), and where its value goes, by kind: 'i' int, 'l' long, 'u'
 * uint64_t (these three whole numbers), 'd' double. */
#define CLI_MAX_SEED 9007199254740992.0 /* 2^53: the largest seed a double holds exactly */
typedef struct cli_num_opt {
    const char *flag, *alias;
    double lo, hi;
    bool lo_open;
    char kind;
    void *out;
} cli_num_opt_t;

/* Looks up flag a among opts[0..n). 1: found, v parsed and stored; 0: a is none of them; -1: v
 * out of range or not a number, with "FLAG: expected an integer in 1..4096, got '0'" (or "a number
 * > 0") in err. */
int cli_num_opt(const cli_num_opt_t *opts, size_t n, const char *a, const char *v, char *err, size_t errlen);

/* The KV cache element type flag of the engine commands (run, bench, serve, profile, validate):
 * `--kv-dtype f32|f16|int8`, also spelled `--kv-cache-dtype` (vLLM's name). cli_is_kv_dtype_flag:
 * 1 when a is either spelling. cli_kv_dtype: parses v into *out; returns 0, or prints "sluice CMD:
 * FLAG: expected f32, f16 or int8, got 'V'" and returns 2 (v NULL: missing). cli_kv_dtype_name:
 * "f32", "f16" or "int8" ("?" for another value). cli_kv_dtype_kept: the type a backend ("cpu",
 * "cuda") keeps when asked for kv (cpu: kv; the cuda pool is F16). None can fail otherwise. */
bool cli_is_kv_dtype_flag(const char *a);
int cli_kv_dtype(const char *cmd, const char *flag, const char *v, sluice_kv_dtype *out);
sluice_kv_dtype cli_kv_dtype_kept(const char *backend, sluice_kv_dtype kv);
const char *cli_kv_dtype_name(sluice_kv_dtype t);

/* The `git describe` of this build ("unknown" outside a git checkout), recorded with every run. */
const char *cli_code_revision(void);

/* Prints "sluice SUBCMD: <message>" to stderr and returns 2 (for `return cli_fail(...)`). */
int cli_fail(const char *subcmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Speculative decoding counts of a run: sluice_stats' spec_* fields, or its steps' summed. */
typedef struct cli_spec_counts {
    int64_t drafts, kept, rejections, lookups, proposals;
} cli_spec_counts_t;

/* Adds one step's counts; adds another run's. Cannot fail. */
void cli_spec_add(cli_spec_counts_t *c, const sluice_step_info *step);
void cli_spec_merge(cli_spec_counts_t *c, const cli_spec_counts_t *other);
/* The rates the simulator takes, NAN without data: the per-draft acceptance kept / (kept +
 * rejections) (--spec-acceptance: the rate at which a draft is kept when the drafts before it
 * were) and the proposal rate proposals / lookups (--spec-propose: how often prompt lookup found
 * drafts for a sequence with draft slots). */
double cli_spec_acceptance(const cli_spec_counts_t *c);
double cli_spec_propose_rate(const cli_spec_counts_t *c);
/* One line, after `label`: drafts run and kept, the kept share, and the two rates. Cannot fail. */
void cli_print_speculation(FILE *out, const char *label, const cli_spec_counts_t *c, int lookup_min, int lookup_max);
/* When e's cpu backend moved its steps to fewer threads (other processes held the cores): one line
 * after `label` saying so, since the run's speed is then not the thread count's. Else nothing. */
void cli_print_thread_drops(FILE *out, const char *label, sluice_engine *e);

#endif
