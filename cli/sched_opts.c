/* sched_opts.c — scheduler knobs from flags and JSON config files (cJSON). */
#include "cli/sched_opts.h"

#include <math.h>
#include <string.h>

#include <cJSON.h>

#define SETERR(...)                                     \
    do {                                                \
        if (err && errlen > 0)                          \
            snprintf(err, (size_t)errlen, __VA_ARGS__); \
    } while (0)

static const char *kind_of(const sched_knob_t *k)
{
    switch (k->type) {
    case SCHED_KNOB_INT:
    case SCHED_KNOB_INT64: return "an integer";
    case SCHED_KNOB_DOUBLE: return "a number";
    case SCHED_KNOB_BOOL: return "true or false";
    case SCHED_KNOB_STRATEGY:
    case SCHED_KNOB_MODEL: return "a name";
    }
    return "?";
}

/* "1..65536", or the names a string knob accepts. */
static void accepted(const sched_knob_t *k, char *buf, size_t len)
{
    if (k->type == SCHED_KNOB_STRATEGY)
        snprintf(buf, len, "naive, bucketed, memory_aware, continuous");
    else if (k->type == SCHED_KNOB_MODEL)
        snprintf(buf, len, "%s", sched_model_shape_names());
    else if (k->type == SCHED_KNOB_BOOL)
        snprintf(buf, len, "true, false");
    else
        snprintf(buf, len, k->type == SCHED_KNOB_DOUBLE ? "%g..%g" : "%.0f..%.0f", k->min, k->max);
}

int sched_opts_parse_arg(sched_config_t *cfg, int argc, char **argv, int *i, char *err, int errlen)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    char name[64];
    const char *eq = strchr(arg + 2, '='), *value = NULL;
    size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    if (n == 0 || n >= sizeof name)
        return 0;
    memcpy(name, arg + 2, n);
    name[n] = '\0';
    bool is_config = !strcmp(name, "config");
    const sched_knob_t *k = is_config ? NULL : sched_knob_find(name);
    if (!is_config && !k)
        return 0;
    int used = 0;
    if (eq) {
        value = eq + 1;
    } else if (k && k->type == SCHED_KNOB_BOOL && (*i + 1 >= argc || !strncmp(argv[*i + 1], "--", 2))) {
        value = "true"; /* a bare boolean flag switches the knob on */
    } else if (*i + 1 < argc) {
        value = argv[*i + 1];
        used = 1;
    } else {
        SETERR("--%s: missing value", name);
        return SL_EINVAL;
    }
    int rc = is_config ? sched_opts_load_json(cfg, value, err, errlen) : sched_config_set(cfg, name, value, err, errlen);
    if (rc != SL_OK)
        return rc;
    *i += used;
    return 1;
}

/* Text sched_config_set accepts for one JSON value, or SL_EINVAL for the wrong JSON type. */
static int json_text(const sched_knob_t *k, const cJSON *v, char *buf, size_t len)
{
    switch (k->type) {
    case SCHED_KNOB_STRATEGY:
    case SCHED_KNOB_MODEL:
        if (!cJSON_IsString(v))
            return SL_EINVAL;
        snprintf(buf, len, "%s", v->valuestring);
        return SL_OK;
    case SCHED_KNOB_BOOL:
        if (!cJSON_IsBool(v))
            return SL_EINVAL;
        snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "true" : "false");
        return SL_OK;
    case SCHED_KNOB_INT:
    case SCHED_KNOB_INT64:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
            return SL_EINVAL;
        snprintf(buf, len, "%.0f", v->valuedouble);
        return SL_OK;
    case SCHED_KNOB_DOUBLE:
        if (!cJSON_IsNumber(v))
            return SL_EINVAL;
        snprintf(buf, len, "%.17g", v->valuedouble);
        return SL_OK;
    }
    return SL_EINVAL;
}

int sched_opts_apply_json(sched_config_t *cfg, const char *text, const char *origin, char *err, int errlen)
{
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        SETERR("%s: not a JSON object of scheduler settings", origin);
        cJSON_Delete(root);
        return SL_EFORMAT;
    }
    sched_config_t next = *cfg;
    int rc = SL_OK;
    char msg[256], buf[128], range[256];
    for (const cJSON *v = root->child; v && rc == SL_OK; v = v->next) {
        const sched_knob_t *k = sched_knob_find(v->string);
        if (!k) {
            SETERR("%s: %s: unknown scheduler setting", origin, v->string);
            rc = SL_ENOTFOUND;
        } else if (json_text(k, v, buf, sizeof buf) != SL_OK) {
            accepted(k, range, sizeof range);
            SETERR("%s: %s: must be %s (%s)", origin, v->string, kind_of(k), range);
            rc = SL_EINVAL;
        } else if ((rc = sched_config_set(&next, k->name, buf, msg, sizeof msg)) != SL_OK) {
            SETERR("%s: %s", origin, msg);
        }
    }
    cJSON_Delete(root);
    if (rc == SL_OK)
        *cfg = next;
    return rc;
}

int sched_opts_load_json(sched_config_t *cfg, const char *path, char *err, int errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        SETERR("%s: cannot open", path);
        return SL_EIO;
    }
    char *text = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (text = sl_malloc((size_t)len + 1)) && fread(text, 1, (size_t)len, f) == (size_t)len) {
        text[len] = '\0';
        fclose(f);
        int rc = sched_opts_apply_json(cfg, text, path, err, errlen);
        sl_free(text);
        return rc;
    }
    fclose(f);
    sl_free(text);
    SETERR("%s: cannot read", path);
    return SL_EIO;
}

void sched_opts_print_help(FILE *out)
{
    sched_config_t d = sched_config_default();
    fprintf(out, "scheduler options (also as keys of a JSON object in --config FILE):\n");
    fprintf(out, "  --config FILE\n      JSON object of the settings below, e.g. {\"strategy\": \"continuous\"}\n");
    for (int i = 0; i < sched_knob_count(); i++) {
        const sched_knob_t *k = sched_knob_at(i);
        char flag[64], def[64], range[256];
        snprintf(flag, sizeof flag, "%s", k->name);
        for (char *p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        sched_config_get(&d, k->name, def, sizeof def);
        accepted(k, range, sizeof range);
        fprintf(out, "  --%s %s\n      %s%s%s%s (default %s; %s)\n", flag,
                k->type == SCHED_KNOB_BOOL ? "[BOOL]" : k->type <= SCHED_KNOB_DOUBLE ? "N" : "NAME", k->help,
                *k->unit ? " [" : "", k->unit, *k->unit ? "]" : "", def, range);
    }
}
