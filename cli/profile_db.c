/* profile_db.c — engine profiles in the run store (contract in profile_db.h). */
#include "cli/profile_db.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "analysis/store.h"
#include "sched/status.h"

void cli_machine_id(char *host, size_t hostlen, char *cpu, size_t cpulen)
{
    if (gethostname(host, hostlen) != 0 || !host[0])
        snprintf(host, hostlen, "unknown");
    host[hostlen - 1] = 0;
    snprintf(cpu, cpulen, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !colon)
            continue;
        colon++;
        while (*colon == ' ' || *colon == '\t')
            colon++;
        snprintf(cpu, cpulen, "%s", colon);
        cpu[strcspn(cpu, "\n")] = 0;
        break;
    }
    if (f)
        fclose(f);
}

void cli_profile_default_name(const char *model, const char *backend, int threads, bool kv_f16, char *out,
                              size_t n)
{
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    const char *dot = strstr(base, ".gguf");
    int len = dot ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, n, "%.*s-%.15s-t%d%s", len < 40 ? len : 40, base, backend, threads, kv_f16 ? "-kvf16" : "");
}

int cli_profile_check_kv(const sim_profile_t *p, const char *backend, bool kv_f16, char *err, size_t errlen)
{
    kv_f16 = kv_f16 || strcmp(backend, "cpu") != 0; /* the cuda pool is always F16 */
    double want = kv_f16 ? 2 : 4;
    if (p->model.bytes_per_kv == want)
        return SL_OK;
    const char *was = p->model.bytes_per_kv == 2 ? "f16" : p->model.bytes_per_kv == 4 ? "f32" : "?",
               *now = kv_f16 ? "f16" : "f32";
    snprintf(err, errlen, "profile '%s' is stale: measured with --kv-dtype %s (%g bytes per KV element), this run "
             "uses --kv-dtype %s: profile again with --kv-dtype %s, or run with --kv-dtype %s", p->name, was,
             p->model.bytes_per_kv, now, now, was);
    return SL_EINVAL;
}

int cli_profile_save(const char *db, const sim_profile_t *p, char *err, size_t errlen)
{
    char json[8192];
    if (!sim_profile_to_json(p, json, sizeof json)) {
        snprintf(err, errlen, "profile %s: JSON over %zu bytes", p->name, sizeof json);
        return SL_EINVAL;
    }
    an_store_t *st = NULL;
    int rc = an_store_open(db, &st);
    if (rc == SL_OK)
        rc = an_calib_save(st, p->name, CLI_PROFILE_OP, json);
    if (rc != SL_OK)
        snprintf(err, errlen, "%s: %s", db, st ? an_store_errmsg(st) : sl_strerror(rc));
    an_store_close(st);
    return rc;
}

int cli_profile_load(const char *db, const char *name, sim_profile_t *p, char *err, size_t errlen)
{
    if (access(db, R_OK) != 0) {
        snprintf(err, errlen, "no engine profile '%s': %s does not exist (make one with sluice profile -o %s)",
                 name, db, name);
        return SL_ENOTFOUND;
    }
    an_store_t *st = NULL;
    char *json = NULL, why[256];
    int rc = an_store_open(db, &st);
    if (rc == SL_OK)
        rc = an_calib_load(st, name, CLI_PROFILE_OP, &json);
    if (rc == SL_ENOTFOUND)
        snprintf(err, errlen, "no engine profile '%s' in %s (make one with sluice profile -o %s)", name, db, name);
    else if (rc != SL_OK)
        snprintf(err, errlen, "%s: %s", db, st ? an_store_errmsg(st) : sl_strerror(rc));
    else if ((rc = sim_profile_from_json(json, p, why, sizeof why)) != SL_OK)
        snprintf(err, errlen, "profile '%s' in %s: %s", name, db, why);
    sl_free(json);
    an_store_close(st);
    return rc;
}

void cli_profile_sim_config(const sim_profile_t *p, sim_config_t *cfg)
{
    cfg->profile = p;
    cfg->model = cfg->sched.model = p->model;
    if (cfg->sched.max_sequence_length <= 0 || cfg->sched.max_sequence_length > p->max_seq_len)
        cfg->sched.max_sequence_length = p->max_seq_len;
    cfg->plan_kv = true;
    memset(&cfg->hw, 0, sizeof cfg->hw);
    snprintf(cfg->hw.name, sizeof cfg->hw.name, "%.31s", p->name);
    cfg->hw.gpu_mem_util = 1;
}
