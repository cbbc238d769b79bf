/* cmd_runs.c — `sluice runs [--db FILE] [--limit N]`: the recorded runs, newest first. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "analysis/store.h"
#include "cli/cli.h"

static const char usage[] = "usage: sluice runs [--db FILE] [--limit N]   (default ./sluice.db, 20 runs; 0 = all)\n";

/* A metric cell: the value with %.3g, or "-" when unknown. */
static const char *cell(char *buf, size_t len, double v, double scale)
{
    if (isnan(v))
        return "-";
    snprintf(buf, len, "%.3g", v * scale);
    return buf;
}

int cmd_runs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'}, {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},     {NULL, 0, NULL, 0},
    };
    const char *db = "sluice.db";
    long limit = 20;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd': db = optarg; break;
        case 'l':
            limit = strtol(optarg, &end, 10);
            if (!*optarg || *end || limit < 0 || limit > 1000000000)
                return cli_fail(argv[0], "--limit expects an integer >= 0, got '%s'", optarg);
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc)
        return cli_fail(argv[0], "unexpected argument '%s'\n%s", argv[optind], usage);
    if (access(db, F_OK) != 0)
        return cli_fail(argv[0], "no run store at %s (record a run with `sluice sim`, or pass --db FILE)", db);
    an_store_t *st;
    int rc = an_store_open(db, &st);
    if (rc) {
        cli_fail(argv[0], "%s", st ? an_store_errmsg(st) : "out of memory");
        an_store_close(st);
        return 2;
    }
    an_run_t *runs;
    size_t n;
    rc = an_run_list(st, (int)limit, &runs, &n);
    if (rc) {
        cli_fail(argv[0], "%s", an_store_errmsg(st));
        an_store_close(st);
        return 2;
    }
    printf("%-5s %-19s %-4s %-7s %-14s %-10s %-11s %-14s %9s %10s %10s %9s\n", "ID", "CREATED (UTC)", "MODE", "STATUS",
           "MODEL", "HARDWARE", "STRATEGY", "WORKLOAD", "REQ/S", "TTFT99(s)", "TPOT99(ms)", "GOODPUT");
    for (size_t i = 0; i < n; i++) {
        const an_run_t *r = &runs[i];
        const an_summary_t *s = &r->summary;
        char b1[32], b2[32], b3[32], b4[32];
        printf("%-5lld %-19s %-4s %-7s %-14.14s %-10.10s %-11.11s %-14.14s %9s %10s %10s %9s\n", (long long)r->id,
               r->created_at, r->info.mode, r->status, r->info.model ? r->info.model : "-",
               r->info.hardware ? r->info.hardware : "-", r->info.strategy ? r->info.strategy : "-",
               r->info.workload_name ? r->info.workload_name : "-",
               cell(b1, sizeof b1, s->request_throughput, 1), cell(b2, sizeof b2, s->ttft_p99, 1),
               cell(b3, sizeof b3, s->tpot_p99, 1e3), cell(b4, sizeof b4, s->goodput, 1));
    }
    if (n == 0)
        printf("(no runs recorded in %s)\n", db);
    an_run_list_free(runs, n);
    an_store_close(st);
    return 0;
}
