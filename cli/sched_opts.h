/* sched_opts.h — scheduler knobs from the command line and from JSON config files.
 *
 * Every knob of the sched_knob table is a flag: "--max-num-seqs 64" or "--max-num-seqs=64"
 * (underscores accepted too); booleans also take no value ("--enable-prefix-caching" = true).
 * "--config FILE" applies a JSON object of knob names to values: {"strategy": "continuous",
 * "max_num_seqs": 64}. Numbers must be JSON numbers (integral for integer knobs), booleans JSON
 * booleans, strategy and model strings. Unknown keys, wrong types and out-of-range values are
 * refused with a message naming the key and the accepted range; on error *cfg is unchanged
 * (a JSON file is applied to a copy first).
 */
#ifndef SLUICE_CLI_SCHED_OPTS_H
#define SLUICE_CLI_SCHED_OPTS_H

#include <stdio.h>

#include "sched/sched.h"

/* Looks at argv[*i]. Returns 1 when it was a scheduler flag (or --config) and was applied, with
 * *i moved to the last argument consumed; 0 when it is not a scheduler flag (nothing changes);
 * a negative SL_ status on a bad value, missing value or bad file, with the reason in err. */
int sched_opts_parse_arg(sched_config_t *cfg, int argc, char **argv, int *i, char *err, int errlen);

/* Applies a JSON object given as text; origin names it in messages ("cfg.json"). SL_OK, or
 * SL_EFORMAT (not a JSON object), SL_ENOTFOUND (unknown key), SL_EINVAL (type or range), with
 * the reason in err; *cfg unchanged on error. */
int sched_opts_apply_json(sched_config_t *cfg, const char *text, const char *origin, char *err, int errlen);

/* Reads path and applies it (sched_opts_apply_json). SL_EIO when it cannot be read. */
int sched_opts_load_json(sched_config_t *cfg, const char *path, char *err, int errlen);

/* Prints one line per knob: flag, value kind, help, unit, default and accepted range. */
void sched_opts_print_help(FILE *out);

#endif
