/* hw.c — built-in hardware profiles and the key=value profile file reader. */
#include "sim/hw.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "sched/status.h"

/* Datasheet figures (peak, bandwidth, memory); efficiencies are the roofline fits of
 * `sluice calibrate` on the shipped tables (docs/SIMULATOR.md); host terms are assumptions. */
static const sim_hw_t builtin[] = {
    {.name = "a100-40gb", .calib_gpu = "a100", .mem_bytes = 40LL << 30, .peak_flops = 312e12,
     .hbm_bw = 1.555e12, .nvlink_bw = 300e9, .gemm_eff_flops = 0.70, .gemm_eff_bw = 0.73,
     .elem_eff_bw = 0.45, .attn_eff_flops = 0.74, .attn_eff_bw = 0.93, .kernel_floor_s = 4e-6,
     .host_overhead_s = 1e-3, .launch_gap_s = 20e-6, .cuda_graphs = true, .gpu_mem_util = 0.9},
    {.name = "a100-80gb", .calib_gpu = "a100", .mem_bytes = 80LL << 30, .peak_flops = 312e12,
     .hbm_bw = 2.039e12, .nvlink_bw = 300e9, .gemm_eff_flops = 0.70, .gemm_eff_bw = 0.73,
     .elem_eff_bw = 0.45, .attn_eff_flops = 0.74, .attn_eff_bw = 0.93, .kernel_floor_s = 4e-6,
     .host_overhead_s = 1e-3, .launch_gap_s = 20e-6, .cuda_graphs = true, .gpu_mem_util = 0.9},
    {.name = "h100-sxm", .calib_gpu = "h100", .mem_bytes = 80LL << 30, .peak_flops = 989e12,
     .hbm_bw = 3.35e12, .nvlink_bw = 450e9, .gemm_eff_flops = 0.70, .gemm_eff_bw = 0.73,
     .elem_eff_bw = 0.45, .attn_eff_flops = 0.74, .attn_eff_bw = 0.93, .kernel_floor_s = 3e-6,
     .host_overhead_s = 1e-3, .launch_gap_s = 20e-6, .cuda_graphs = true, .gpu_mem_util = 0.9},
};
enum { N_BUILTIN = sizeof builtin / sizeof builtin[0] };

const char *sim_hw_names(void) { return "a100-40gb, a100-80gb, h100-sxm"; }

int sim_hw_builtin(const char *name, sim_hw_t *out)
{
    for (int i = 0; i < N_BUILTIN; i++)
        if (name && !strcasecmp(name, builtin[i].name)) {
            *out = builtin[i];
            return SL_OK;
        }
    return SL_ENOTFOUND;
}

int sim_hw_validate(const sim_hw_t *hw, char *err, int errlen)
{
    struct { const char *key; double v, lo, hi; } r[] = {
        {"mem_bytes", (double)hw->mem_bytes, 1, 1e15},
        {"peak_flops", hw->peak_flops, 1e9, 1e18},
        {"hbm_bw", hw->hbm_bw, 1e6, 1e15},
        {"nvlink_bw", hw->nvlink_bw, 1e6, 1e15},
        {"gemm_eff_flops", hw->gemm_eff_flops, 1e-3, 1},
        {"gemm_eff_bw", hw->gemm_eff_bw, 1e-3, 1.2},
        {"elem_eff_bw", hw->elem_eff_bw, 1e-3, 1.2},
        {"attn_eff_flops", hw->attn_eff_flops, 1e-3, 1},
        {"attn_eff_bw", hw->attn_eff_bw, 1e-3, 1.2},
        {"kernel_floor_s", hw->kernel_floor_s, 0, 1},
        {"host_overhead_s", hw->host_overhead_s, 0, 10},
        {"launch_gap_s", hw->launch_gap_s, 0, 1},
        {"gpu_mem_util", hw->gpu_mem_util, 0.01, 1},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (!(r[i].v >= r[i].lo && r[i].v <= r[i].hi)) {
            if (err && errlen > 0)
                snprintf(err, errlen, "%s: must be %g..%g, got %g", r[i].key, r[i].lo, r[i].hi, r[i].v);
            return SL_EINVAL;
        }
    return SL_OK;
}

/* One numeric key: field pointer and the factor from the file's unit to SI. */
static double *num_field(sim_hw_t *hw, const char *key, double *scale)
{
    struct { const char *key; double *f; double scale; } t[] = {
        {"peak_flops", &hw->peak_flops, 1}, {"peak_tflops", &hw->peak_flops, 1e12},
        {"hbm_bw", &hw->hbm_bw, 1}, {"hbm_tbps", &hw->hbm_bw, 1e12},
        {"nvlink_bw", &hw->nvlink_bw, 1}, {"nvlink_gbps", &hw->nvlink_bw, 1e9},
        {"gemm_eff_flops", &hw->gemm_eff_flops, 1}, {"gemm_eff_bw", &hw->gemm_eff_bw, 1},
        {"elem_eff_bw", &hw->elem_eff_bw, 1}, {"attn_eff_flops", &hw->attn_eff_flops, 1},
        {"attn_eff_bw", &hw->attn_eff_bw, 1}, {"kernel_floor_s", &hw->kernel_floor_s, 1},
        {"host_overhead_s", &hw->host_overhead_s, 1}, {"host_overhead_ms", &hw->host_overhead_s, 1e-3},
        {"launch_gap_s", &hw->launch_gap_s, 1}, {"launch_gap_us", &hw->launch_gap_s, 1e-6},
        {"gpu_mem_util", &hw->gpu_mem_util, 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(key, t[i].key)) {
            *scale = t[i].scale;
            return t[i].f;
        }
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

static int set_key(sim_hw_t *hw, const char *key, const char *val, char *why, int whylen)
{
    if (!strcmp(key, "base")) {
        char name[32];
        snprintf(name, sizeof name, "%s", hw->name);
        if (sim_hw_builtin(val, hw) != SL_OK) {
            snprintf(why, whylen, "base: unknown profile '%s' (accepted: %s)", val, sim_hw_names());
            return SL_EINVAL;
        }
        if (name[0])
            snprintf(hw->name, sizeof hw->name, "%s", name);
        return SL_OK;
    }
    if (!strcmp(key, "name") || !strcmp(key, "calib_gpu")) {
        char *dst = key[0] == 'n' ? hw->name : hw->calib_gpu;
        size_t cap = key[0] == 'n' ? sizeof hw->name : sizeof hw->calib_gpu;
        if (strlen(val) >= cap) {
            snprintf(why, whylen, "%s: longer than %zu characters", key, cap - 1);
            return SL_EINVAL;
        }
        for (const char *c = val; *c; c++) /* the name goes into JSON, SQL text and chart titles */
            if (!isprint((unsigned char)*c) || strchr("\"'\\`", *c)) {
                snprintf(why, whylen, "%s: character %ld is not allowed (printable ASCII without quotes or "
                         "backslashes)", key, (long)(c - val) + 1);
                return SL_EINVAL;
            }
        memcpy(dst, val, strlen(val) + 1);
        return SL_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (end == val || *end || errno || !isfinite(v)) {
        snprintf(why, whylen, "%s: expected a number, got '%s'", key, val);
        return SL_EFORMAT;
    }
    if (!strcmp(key, "cuda_graphs")) {
        hw->cuda_graphs = v != 0;
        return SL_OK;
    }
    if (!strcmp(key, "mem_bytes") || !strcmp(key, "mem_gb")) {
        const double bytes = v * (key[4] == 'g' ? (double)(1LL << 30) : 1.0);
        if (!(bytes >= 1 && bytes <= 1e15)) { /* the range sim_hw_validate checks, before the cast */
            snprintf(why, whylen, "%s: must be 1..1e15 bytes, got %g bytes", key, bytes);
            return SL_EINVAL;
        }
        hw->mem_bytes = (int64_t)bytes;
        return SL_OK;
    }
    double scale;
    double *f = num_field(hw, key, &scale);
    if (!f) {
        snprintf(why, whylen, "unknown key '%s'", key);
        return SL_EINVAL;
    }
    *f = v * scale;
    return SL_OK;
}

int sim_hw_load_file(const char *path, sim_hw_t *out, char *err, int errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return SL_EIO;
    }
    memset(out, 0, sizeof *out);
    char line[512], why[256];
    int lineno = 0, rc = SL_OK;
    while (rc == SL_OK && fgets(line, sizeof line, f)) {
        lineno++;
        const bool whole = strchr(line, '\n') || feof(f); /* else fgets hands the rest over as a line */
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line), *eq = strchr(s, '=');
        if (!whole) {
            snprintf(why, sizeof why, "line longer than %zu characters", sizeof line - 2);
            rc = SL_EFORMAT;
        } else if (!*s) {
            continue;
        } else if (!eq) {
            snprintf(why, sizeof why, "expected key = value");
            rc = SL_EFORMAT;
        } else {
            *eq = 0;
            rc = set_key(out, trim(s), trim(eq + 1), why, sizeof why);
        }
        if (rc != SL_OK && err && errlen > 0)
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
    }
    fclose(f);
    if (rc == SL_OK && !out->name[0])
        snprintf(out->name, sizeof out->name, "custom");
    if (rc == SL_OK && sim_hw_validate(out, why, sizeof why) != SL_OK) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: %s", path, why);
        rc = SL_EINVAL;
    }
    return rc;
}

bool sim_hw_to_json(const sim_hw_t *hw, char *buf, size_t len)
{
    /* %.17g: the profile reads back bit for bit */
    int n = snprintf(buf, len,
                     "{\"name\": \"%s\", \"calib_gpu\": \"%s\", \"mem_bytes\": %lld, \"peak_flops\": %.17g, "
                     "\"hbm_bw\": %.17g, \"nvlink_bw\": %.17g, \"gemm_eff_flops\": %.17g, \"gemm_eff_bw\": %.17g, "
                     "\"elem_eff_bw\": %.17g, \"attn_eff_flops\": %.17g, \"attn_eff_bw\": %.17g, "
                     "\"kernel_floor_s\": %.17g, \"host_overhead_s\": %.17g, \"launch_gap_s\": %.17g, "
                     "\"cuda_graphs\": %d, \"gpu_mem_util\": %.17g}",
                     hw->name, hw->calib_gpu, (long long)hw->mem_bytes, hw->peak_flops, hw->hbm_bw, hw->nvlink_bw,
                     hw->gemm_eff_flops, hw->gemm_eff_bw, hw->elem_eff_bw, hw->attn_eff_flops, hw->attn_eff_bw,
                     hw->kernel_floor_s, hw->host_overhead_s, hw->launch_gap_s, hw->cuda_graphs ? 1 : 0,
                     hw->gpu_mem_util);
    return n >= 0 && (size_t)n < len;
}

int sim_hw_from_json(const char *json, sim_hw_t *out, char *err, int errlen)
{
    cJSON *root = cJSON_Parse(json);
    int rc = cJSON_IsObject(root) ? SL_OK : SL_EFORMAT;
    char why[256] = "not a JSON object of profile keys", val[64];
    memset(out, 0, sizeof *out);
    for (const cJSON *v = root ? root->child : NULL; rc == SL_OK && v; v = v->next) {
        if (cJSON_IsString(v) && strlen(v->valuestring) < sizeof val)
            snprintf(val, sizeof val, "%s", v->valuestring);
        else if (cJSON_IsNumber(v))
            snprintf(val, sizeof val, "%.17g", v->valuedouble);
        else {
            snprintf(why, sizeof why, "%s: expected a number or a short string", v->string);
            rc = SL_EINVAL;
            break;
        }
        rc = set_key(out, v->string, val, why, sizeof why);
    }
    cJSON_Delete(root);
    if (rc == SL_OK && sim_hw_validate(out, why, sizeof why) != SL_OK)
        rc = SL_EINVAL;
    if (rc != SL_OK && err && errlen > 0)
        snprintf(err, errlen, "%s", why);
    return rc;
}

int sim_hw_resolve(const char *name_or_path, sim_hw_t *out, char *err, int errlen)
{
    if (sim_hw_builtin(name_or_path, out) == SL_OK)
        return SL_OK;
    if (strchr(name_or_path, '/') || strchr(name_or_path, '.'))
        return sim_hw_load_file(name_or_path, out, err, errlen);
    if (err && errlen > 0)
        snprintf(err, errlen, "unknown GPU '%s' (accepted: %s, or a profile file path)", name_or_path,
                 sim_hw_names());
    return SL_ENOTFOUND;
}
