/* cmd_show.c — `sluice show RUN [--db FILE] [--json]`: one recorded run's config and summary. */
#include <cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analysis/store.h"
#include "cli/cli.h"

static const char usage[] = "usage: sluice show RUN [--db FILE] [--json]   (RUN: a run id or 'last'; default ./sluice.db)\n";

static const char *or_dash(const char *s)
{
    return s ? s : "-";
}

static void print_text(const an_run_t *r)
{
    printf("run          %lld  (%s, %s, created %s UTC", (long long)r->id, r->info.mode, r->status, r->created_at);
    if (!isnan(r->wall_seconds))
        printf(", %.3f s wall", r->wall_seconds);
    printf(")\n");
    if (r->error)
        printf("error        %s\n", r->error);
    printf("model        %s\nhardware     %s\nstrategy     %s\n", or_dash(r->info.model), or_dash(r->info.hardware),
           or_dash(r->info.strategy));
    printf("workload     %s  (hash %016" PRIx64 ", seed %" PRIu64 ")\n", or_dash(r->info.workload_name),
           r->info.workload_hash, r->info.seed);
    printf("code         %s\nconfig       %s\n", or_dash(r->info.code_revision), or_dash(r->info.config_json));
    if (!r->has_summary) {
        printf("\n(no summary: the run did not finish)\n");
        return;
    }
    printf("\nsummary\n");
    for (size_t i = 0; i < an_summary_field_count(); i++) {
        const an_summary_field_t *f = an_summary_field_at(i);
        double v = *(const double *)((const char *)&r->summary + f->offset);
        if (isnan(v))
            continue;
        printf("  %-20s %14.6g %-6s %s\n", f->name, v, f->unit, f->description);
    }
}

static void add_string(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static int print_json(const an_run_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    char hash[24];
    snprintf(hash, sizeof hash, "%016" PRIx64, r->info.workload_hash);
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    add_string(o, "created_at", r->created_at);
    add_string(o, "mode", r->info.mode);
    add_string(o, "status", r->status);
    add_string(o, "error", r->error);
    add_string(o, "hardware", r->info.hardware);
    add_string(o, "model", r->info.model);
    add_string(o, "strategy", r->info.strategy);
    add_string(o, "workload_name", r->info.workload_name);
    add_string(o, "workload_hash", hash);
    cJSON_AddNumberToObject(o, "seed", (double)r->info.seed);
    add_string(o, "code_revision", r->info.code_revision);
    if (isnan(r->wall_seconds))
        cJSON_AddNullToObject(o, "wall_seconds");
    else
        cJSON_AddNumberToObject(o, "wall_seconds", r->wall_seconds);
    /* The config as JSON when it parses, else as the string it is. */
    cJSON *cfg = r->info.config_json ? cJSON_Parse(r->info.config_json) : NULL;
    if (cfg)
        cJSON_AddItemToObject(o, "config", cfg);
    else
        add_string(o, "config", r->info.config_json);
    if (r->has_summary) {
        cJSON *s = cJSON_AddObjectToObject(o, "summary");
        for (size_t i = 0; s && i < an_summary_field_count(); i++) {
            const an_summary_field_t *f = an_summary_field_at(i);
            double v = *(const double *)((const char *)&r->summary + f->offset);
            if (isnan(v))
                cJSON_AddNullToObject(s, f->name);
            else
                cJSON_AddNumberToObject(s, f->name, v);
        }
    } else
        cJSON_AddNullToObject(o, "summary");
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text)
        return -1;
    puts(text);
    cJSON_free(text);
    return 0;
}

int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},     {NULL, 0, NULL, 0},
    };
    const char *db = "sluice.db";
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'j': json = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind != argc - 1)
        return cli_fail(argv[0], "expected one RUN (a run id or 'last')\n%s", usage);
    const char *arg = argv[optind];
    long long id = 0;
    if (strcmp(arg, "last")) {
        char *end;
        id = strtoll(arg, &end, 10);
        if (!*arg || *end || id <= 0)
            return cli_fail(argv[0], "RUN must be a run id (an integer >= 1) or 'last', got '%s'", arg);
    }
    if (access(db, F_OK) != 0)
        return cli_fail(argv[0], "no run store at %s (record a run with `sluice sim`, or pass --db FILE)", db);
    an_store_t *st;
    an_run_t r;
    int rc = an_store_open(db, &st);
    if (!rc)
        rc = an_run_get(st, id, &r);
    if (rc) {
        cli_fail(argv[0], "%s", st ? an_store_errmsg(st) : "out of memory");
        an_store_close(st);
        return 2;
    }
    if (json)
        rc = print_json(&r);
    else
        print_text(&r);
    an_run_clear(&r);
    an_store_close(st);
    return rc ? cli_fail(argv[0], "out of memory") : 0;
}
