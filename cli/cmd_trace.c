/* cmd_trace.c — `sluice trace gen` (synthetic traces, presets) and `sluice trace stats FILE`. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sched/status.h"
#include "workloads/gen.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

static const char gen_usage[] =
    "usage: sluice trace gen [--preset NAME] [--arrival SPEC] [--prompt SPEC] [--output SPEC] [-n N]\n"
    "                        [--rate R] [--seed S] [--priority-mix P:W,...] [--prefix-groups G:LEN:FRAC]\n"
    "                        [--max-seq-len L] -o FILE\n"
    "  --preset     chat, code, sharegpt, summarize (lengths fitted to published statistics)\n"
    "  --arrival    poisson:RATE | gamma:RATE,CV | constant:RATE | replay:FILE[,SCALE]\n"
    "  --prompt / --output   fixed:N | uniform:A,B | lognormal:MEAN,SD | zipf:S,MAX | resample:FILE\n"
    "  -n           requests to generate (default 1000)\n"
    "  --rate       requests/s, overriding the preset's or the arrival spec's rate\n"
    "  --max-seq-len  cap on prompt + output tokens (default 4096, 0 = none)\n"
    "Explicit --arrival/--prompt/--output override the preset's. One seed gives one trace.\n";

/* Parses a non-negative integer argument of flag into *out; returns 0 or prints and returns 2. */
static int parse_count(const char *flag, const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || s[0] == '-')
        return cli_fail("trace", "%s expects a non-negative integer, got '%s'", flag, s);
    *out = v;
    return 0;
}

static int trace_gen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"preset", required_argument, NULL, 'P'},      {"arrival", required_argument, NULL, 'a'},
        {"prompt", required_argument, NULL, 'p'},      {"output", required_argument, NULL, 'O'},
        {"rate", required_argument, NULL, 'r'},        {"seed", required_argument, NULL, 's'},
        {"priority-mix", required_argument, NULL, 'm'}, {"prefix-groups", required_argument, NULL, 'g'},
        {"max-seq-len", required_argument, NULL, 'L'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *preset = NULL, *arrival = NULL, *prompt = NULL, *output = NULL, *mix = NULL, *groups = NULL;
    const char *out_path = NULL;
    unsigned long long n = 0, seed = 0, max_seq = WL_DEFAULT_MAX_SEQ_LEN;
    double rate = 0;
    int c, rc;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'P': preset = optarg; break;
        case 'a': arrival = optarg; break;
        case 'p': prompt = optarg; break;
        case 'O': output = optarg; break;
        case 'm': mix = optarg; break;
        case 'g': groups = optarg; break;
        case 'o': out_path = optarg; break;
        case 'n':
            if ((rc = parse_count("-n", optarg, &n)))
                return rc;
            if (n == 0) /* 0 stands for "not given" below */
                return cli_fail("trace", "-n expects a number of requests >= 1, got '%s'", optarg);
            break;
        case 's':
            if ((rc = parse_count("--seed", optarg, &seed)))
                return rc;
            break;
        case 'L':
            if ((rc = parse_count("--max-seq-len", optarg, &max_seq)))
                return rc;
            break;
        case 'r': {
            char *end;
            rate = strtod(optarg, &end);
            if (*end || !(rate > 0))
                return cli_fail("trace", "--rate expects a number of requests/s > 0, got '%s'", optarg);
            break;
        }
        case 'h': fputs(gen_usage, stdout); return 0;
        default: fputs(gen_usage, stderr); return 2;
        }
    }
    if (optind < argc)
        return cli_fail("trace", "unexpected argument '%s' (see sluice trace gen --help)", argv[optind]);
    if (!out_path)
        return cli_fail("trace", "gen needs -o FILE (see sluice trace gen --help)");
    if (max_seq > 1000000000ULL)
        return cli_fail("trace", "--max-seq-len %llu is too large", max_seq);

    wl_gen_config_t cfg;
    char err[512];
    if (preset) {
        const wl_preset_t *p = wl_preset_find(preset);
        if (!p)
            return cli_fail("trace", "unknown preset '%s' (accepted: %s)", preset, wl_preset_names());
        wl_preset_config(p, (size_t)n, rate, seed, max_seq == 0 ? -1 : (int)max_seq, &cfg);
    } else {
        wl_gen_config_default(&cfg);
        cfg.seed = seed;
        cfg.max_seq_len = (int)max_seq;
        if (n)
            cfg.n = (size_t)n;
    }
    if ((arrival && wl_parse_arrival(arrival, &cfg.arrival, err, sizeof err)) ||
        (prompt && wl_parse_length(prompt, &cfg.prompt, err, sizeof err)) ||
        (output && wl_parse_length(output, &cfg.output, err, sizeof err)) ||
        (mix && wl_parse_priority_mix(mix, &cfg, err, sizeof err)) ||
        (groups && wl_parse_prefix_groups(groups, &cfg, err, sizeof err)))
        return cli_fail("trace", "%s", err);
    if (rate > 0) {
        if (cfg.arrival.kind == WL_ARRIVAL_REPLAY)
            return cli_fail("trace", "--rate does not apply to replay arrivals (use replay:FILE,SCALE)");
        cfg.arrival.rate = rate;
    }
    wl_trace_t *t = wl_trace_create();
    if (!t)
        return cli_fail("trace", "out of memory");
    rc = wl_gen_generate(&cfg, t);
    if (!rc)
        rc = wl_trace_write_file(t, out_path);
    if (rc) {
        cli_fail("trace", "%s", wl_trace_errmsg(t));
        wl_trace_free(t);
        return 2;
    }
    fprintf(stderr, "wrote %zu requests to %s (seed %llu, hash %016" PRIx64 ")\n", t->n, out_path, seed,
            wl_trace_hash(t));
    wl_trace_free(t);
    return 0;
}

static int trace_stats(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-')
        return cli_fail("trace", "usage: sluice trace stats FILE");
    wl_trace_t *t = wl_trace_create();
    if (!t)
        return cli_fail("trace", "out of memory");
    wl_trace_stats_t s;
    int rc = wl_trace_read_file(t, argv[1]);
    if (rc) {
        cli_fail("trace", "%s", wl_trace_errmsg(t));
        wl_trace_free(t);
        return 2;
    }
    rc = wl_trace_stats(t, &s);
    if (rc) {
        wl_trace_free(t);
        return cli_fail("trace", "%s", sl_strerror(rc));
    }
    printf("trace        %s\n", argv[1]);
    printf("requests     %zu\n", s.n);
    printf("duration     %.3f s\n", s.duration);
    printf("rate         %.3f req/s\n", s.rate);
    printf("prompt       mean %.1f  median %.1f  p90 %.1f  max %d  (%" PRId64 " tokens)\n", s.prompt_mean,
           s.prompt_median, s.prompt_p90, s.prompt_max, s.prompt_tokens);
    printf("output       mean %.1f  median %.1f  p90 %.1f  max %d  (%" PRId64 " tokens)\n", s.output_mean,
           s.output_median, s.output_p90, s.output_max, s.output_tokens);
    printf("priorities   %zu distinct\n", s.n_priorities);
    printf("prefix       %zu requests in prefix groups\n", s.n_in_prefix_groups);
    printf("hash         %016" PRIx64 "\n", wl_trace_hash(t));
    wl_trace_free(t);
    return 0;
}

int cmd_trace(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs("usage: sluice trace gen ...   (sluice trace gen --help)\n       sluice trace stats FILE\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "gen"))
        return trace_gen(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stats"))
        return trace_stats(argc - 1, argv + 1);
    return cli_fail("trace", "unknown action '%s' (accepted: gen, stats)", argv[1]);
}
