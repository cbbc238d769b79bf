/* cli.c — subcommand table and dispatch for the `sluice` command. */
#include "cli/cli.h"

#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "revision.h"

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command_t;

static const cli_command_t commands[] = {
    {"sim", cmd_sim, "simulate a trace or preset on a GPU profile and record the run"},
    {"runs", cmd_runs, "list recorded runs"},
    {"show", cmd_show, "print one recorded run"},
    {"trace", cmd_trace, "generate a synthetic trace (trace gen ...)"},
    {"calibrate", cmd_calibrate, "fit the cost model to calibration tables (--check prints errors)"},
    {"run", cmd_run, "generate text from a model"},
    {"bench", cmd_bench, "replay a trace on the real engine and record the run"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
    {"profile", cmd_profile, "time the engine's operators into a hardware profile"},
    {"validate", cmd_validate, "compare the simulator's prediction with the engine on one trace"},
    {"tune", cmd_tune, "search batching strategies and settings for a trace and SLO"},
    {"plan", cmd_plan, "capacity plan: GPUs needed for a rate under an SLO"},
    {"report", cmd_report, "charts and regression verdicts for recorded runs"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice COMMAND [options]   (sluice COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int cli_fail(const char *subcmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "sluice %s: ", subcmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int cli_number(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out)
{
    const cli_num_opt_t opt = {flag, NULL, lo, hi, false, 'd', out};
    char err[256];
    return cli_num_opt(&opt, 1, flag, v, err, sizeof err) < 0 ? cli_fail(cmd, "%s", err) : 0;
}

int cli_num_opt(const cli_num_opt_t *opts, size_t n, const char *a, const char *v, char *err, size_t errlen)
{
    const cli_num_opt_t *o = opts;
    while (o < opts + n && strcmp(a, o->flag) && !(o->alias && !strcmp(a, o->alias)))
        o++;
    if (o == opts + n)
        return 0;
    const bool whole = o->kind != 'd';
    char *end = NULL;
    const double x = v ? strtod(v, &end) : NAN;
    const bool in_range = isfinite(x) && (o->lo_open ? x > o->lo : x >= o->lo) && x <= o->hi;
    if (!v || end == v || *end || !in_range || (whole && x != floor(x))) {
        char range[64];
        if (o->hi == INFINITY)
            snprintf(range, sizeof range, "%s %.17g", o->lo_open ? ">" : ">=", o->lo);
        else
            snprintf(range, sizeof range, "in %.17g..%.17g", o->lo, o->hi);
        snprintf(err, errlen, "%s: expected %s %s, got '%s'", a, whole ? "an integer" : "a number", range, v ? v : "");
        return -1;
    }
    switch (o->kind) {
    case 'i': *(int *)o->out = (int)x; break;
    case 'l': *(long *)o->out = (long)x; break;
    case 'u': *(uint64_t *)o->out = (uint64_t)x; break;
    default: *(double *)o->out = x; break;
    }
    return 1;
}

bool cli_is_kv_dtype_flag(const char *a)
{
    return !strcmp(a, "--kv-dtype") || !strcmp(a, "--kv-cache-dtype");
}

static const char *const kv_dtype_names[] = {[SLUICE_KV_F32] = "f32", [SLUICE_KV_F16] = "f16",
                                              [SLUICE_KV_INT8] = "int8"};

int cli_kv_dtype(const char *cmd, const char *flag, const char *v, sluice_kv_dtype *out)
{
    for (int i = 0; v && i < (int)(sizeof kv_dtype_names / sizeof kv_dtype_names[0]); i++)
        if (!strcmp(v, kv_dtype_names[i])) {
            *out = (sluice_kv_dtype)i;
            return 0;
        }
    return cli_fail(cmd, "%s: expected f32, f16 or int8, got '%s'", flag, v ? v : "");
}

sluice_kv_dtype cli_kv_dtype_kept(const char *backend, sluice_kv_dtype kv)
{
    return strcmp(backend, "cpu") ? SLUICE_KV_F16 : kv;
}

const char *cli_kv_dtype_name(sluice_kv_dtype t)
{
    return (unsigned)t < sizeof kv_dtype_names / sizeof kv_dtype_names[0] ? kv_dtype_names[t] : "?";
}

const char *cli_code_revision(void) { return SLUICE_REVISION; }

void cli_spec_add(cli_spec_counts_t *c, const sluice_step_info *step)
{
    const cli_spec_counts_t s = {step->n_draft_tokens, step->n_accepted_drafts, step->n_rejections, step->n_lookups,
                                 step->n_proposals};
    cli_spec_merge(c, &s);
}

void cli_spec_merge(cli_spec_counts_t *c, const cli_spec_counts_t *other)
{
    c->drafts += other->drafts;
    c->kept += other->kept;
    c->rejections += other->rejections;
    c->lookups += other->lookups;
    c->proposals += other->proposals;
}

double cli_spec_acceptance(const cli_spec_counts_t *c)
{
    return c->kept + c->rejections > 0 ? (double)c->kept / (double)(c->kept + c->rejections) : NAN;
}

double cli_spec_propose_rate(const cli_spec_counts_t *c)
{
    return c->lookups > 0 ? (double)c->proposals / (double)c->lookups : NAN;
}

void cli_print_speculation(FILE *out, const char *label, const cli_spec_counts_t *c, int lookup_min, int lookup_max)
{
    fprintf(out, "%s%lld draft tokens run, %lld kept (%.1f%%; prompt lookup %d..%d)", label, (long long)c->drafts,
            (long long)c->kept, c->drafts > 0 ? 100.0 * (double)c->kept / (double)c->drafts : 0.0, lookup_min,
            lookup_max);
    double a = cli_spec_acceptance(c), p = cli_spec_propose_rate(c);
    if (!isnan(p))
        fprintf(out, "; drafts found in %.1f%% of lookups (sluice sim --spec-propose %.3f)", 100 * p, p);
    if (!isnan(a))
        fprintf(out, "; per-draft acceptance %.3f (--spec-acceptance)", a);
    fputc('\n', out);
}

int cli_main(int argc, char **argv)
{
    /* GSL's default handler aborts the process; every GSL call here checks its return instead. */
    gsl_set_error_handler_off();
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

void cli_print_thread_drops(FILE *out, const char *label, sluice_engine *e)
{
    sluice_stats st;
    sluice_get_stats(e, &st);
    if (st.thread_drops > 0)
        fprintf(out, "%scpu threads: dropped one %lld time(s) while other processes held the cores, %d at the end "
                     "(--fixed-threads keeps them all)\n",
                label, (long long)st.thread_drops, st.threads_active);
}
