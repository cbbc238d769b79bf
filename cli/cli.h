/* cli.h — the `sluice` command's subcommands. Each lives in cli/cmd_<name>.c, parses its own
 * flags, calls into the modules and returns the process exit code: 0 success, 1 a failed check
 * (a regression, a validation over tolerance), 2 bad usage or bad input (message on stderr). */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

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

/* Prints "sluice SUBCMD: <message>" to stderr and returns 2 (for `return cli_usage_error(...)`). */
/* Parses v as a number in lo..hi for option flag of subcommand cmd into *out. Returns 0, or prints
 * "sluice CMD: FLAG: expected a number in LO..HI, got 'V'" and returns 2 (v NULL: missing). */
int cli_number(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out);

/* The `git describe` of this build ("unknown" outside a git checkout), recorded with every run. */
const char *cli_code_revision(void);

int cli_fail(const char *subcmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
