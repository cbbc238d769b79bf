/* profile_db.c — engine profiles in the run store (contract in profile_db.h). */
#include "cli/profile_db.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "analysis/store.h"
#include "cli/cli.h"
#include "engine/backend.h"
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

void cli_profile_default_name(const char *model, const char *backend, int threads, sluice_kv_dtype kv, char *out,
                              size_t n)
{
    const char *base = strrchr(model, '/');
    base = base ? base + 1 : model;
    const char *dot = strstr(base, ".gguf");
    int len = dot ? (int)(dot - base) : (int)strlen(base);
    snprintf(out, n, "%.*s-%.15s-t%d%s%s", len < 40 ? len : 40, base, backend, threads, kv == SLUICE_KV_F32 ? "" : "-kv",
             kv == SLUICE_KV_F32 ? "" : cli_kv_dtype_name(kv));
}

/* The --kv-dtype name of a pool of bytes_per_kv bytes per element at head size hd, or "?" */
static const char *kv_dtype_of(double bytes_per_kv, int hd)
{
    for (int t = SLUICE_KV_F32; t <= SLUICE_KV_INT8; t++)
        if (bytes_per_kv == eng_kv_elem_bytes((eng_kv_dtype_t)t, hd))
            return cli_kv_dtype_name((sluice_kv_dtype)t);
    return "?";
}

int cli_profile_check_kv(const sim_profile_t *p, const char *backend, sluice_kv_dtype kv, char *err, size_t errlen)
{
    kv = cli_kv_dtype_kept(backend, kv);
    if (p->model.bytes_per_kv == eng_kv_elem_bytes((eng_kv_dtype_t)kv, p->model.head_dim))
        return SL_OK;
    const char *was = kv_dtype_of(p->model.bytes_per_kv, p->model.head_dim), *now = cli_kv_dtype_name(kv);
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
