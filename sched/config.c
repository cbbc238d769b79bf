/* config.c — scheduler configuration: defaults, the knob table, text setters, validation. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sched.h"

static const char *const strategy_names[] = {"naive", "bucketed", "memory_aware", "continuous"};

const char *sched_strategy_name(sched_strategy_t strategy)
{
    return (unsigned)strategy < 4 ? strategy_names[strategy] : "?";
}

int sched_strategy_parse(const char *name, sched_strategy_t *out)
{
    for (int i = 0; i < 4; i++) {
        const char *a = name, *b = strategy_names[i];
        while (*a && *b && (tolower((unsigned char)*a) == *b || (*a == '-' && *b == '_'))) {
            a++;
            b++;
        }
        if (!*a && !*b) {
            *out = (sched_strategy_t)i;
            return SL_OK;
        }
    }
    return SL_EINVAL;
}

const char *sched_finish_reason_name(sched_finish_reason_t reason)
{
    static const char *const names[] = {"none", "eos", "stop", "length", "abort"};
    return (unsigned)reason < 5 ? names[reason] : "?";
}

sched_config_t sched_config_default(void)
{
    sched_config_t c;
    memset(&c, 0, sizeof c);
    c.strategy = SCHED_CONTINUOUS;
    c.max_batch_size = 32;
    c.max_sequence_length = 2048;
    c.batch_timeout_ms = 50;
    c.bucket_size = 128;
    c.memory_limit_mb = 4096;
    c.max_total_tokens = 32768;
    c.block_size = 16;
    c.num_blocks = 4096;
    c.max_num_batched_tokens = 2048;
    c.max_num_seqs = 256;
    c.max_waiting_requests = 4096;
    c.max_waiting_tokens = 0;
    c.enable_prefix_caching = true;
    c.enable_chunked_prefill = true;
    c.num_speculative_tokens = 0;
    c.speculative_disable_by_batch_size = 0;
    sched_model_shape_builtin("llama2-7b", &c.model);
    c.gpu_memory_utilization = 0.9;
    return c;
}

/* ---- the knob table ------------------------------------------------------------------------- */

typedef struct knob_entry {
    sched_knob_t k;
    size_t off; /* field offset in sched_config_t */
} knob_entry_t;

#define F(field) offsetof(sched_config_t, field)
static const knob_entry_t knobs[] = {
    {{"strategy", SCHED_KNOB_STRATEGY, "", 0, 3, "naive | bucketed | memory_aware | continuous", false}, F(strategy)},
    {{"max_batch_size", SCHED_KNOB_INT, "requests", 1, 65536, "static strategies: members per batch", false},
     F(max_batch_size)},
    {{"max_sequence_length", SCHED_KNOB_INT, "tokens", 1, 1048576, "prompt + output tokens per request", false},
     F(max_sequence_length)},
    {{"batch_timeout_ms", SCHED_KNOB_DOUBLE, "ms", 0, 3600000,
      "static strategies: oldest waiter's longest wait before a partial batch runs", true},
     F(batch_timeout_ms)},
    {{"bucket_size", SCHED_KNOB_INT, "tokens", 1, 1048576, "bucketed: prompt-length bucket width", false}, F(bucket_size)},
    {{"memory_limit_mb", SCHED_KNOB_DOUBLE, "MiB", 1, 16777216, "memory_aware: KV + activation budget of one batch", false},
     F(memory_limit_mb)},
    {{"max_total_tokens", SCHED_KNOB_INT64, "tokens", 1, 1099511627776.0,
      "memory_aware: sum of prompt + max new tokens per batch", false},
     F(max_total_tokens)},
    {{"block_size", SCHED_KNOB_INT, "tokens", 1, 4096, "KV tokens per block", false}, F(block_size)},
    {{"num_blocks", SCHED_KNOB_INT, "blocks", 1, 16777216, "KV pool size", false}, F(num_blocks)},
    {{"max_num_batched_tokens", SCHED_KNOB_INT, "tokens", 1, 1048576, "continuous: token budget per step", true},
     F(max_num_batched_tokens)},
    {{"max_num_seqs", SCHED_KNOB_INT, "requests", 1, 65536, "continuous: running sequences at most", false},
     F(max_num_seqs)},
    {{"max_waiting_requests", SCHED_KNOB_INT, "requests", 0, 2147483647.0, "queue bound (0 = unbounded)", false},
     F(max_waiting_requests)},
    {{"max_waiting_tokens", SCHED_KNOB_INT64, "tokens", 0, 1099511627776.0,
      "queue bound on waiting prompt tokens (0 = unbounded)", false},
     F(max_waiting_tokens)},
    {{"enable_prefix_caching", SCHED_KNOB_BOOL, "", 0, 1, "reuse cached full KV blocks across requests", false},
     F(enable_prefix_caching)},
    {{"enable_chunked_prefill", SCHED_KNOB_BOOL, "", 0, 1, "continuous: split prompts over steps", false},
     F(enable_chunked_prefill)},
    {{"num_speculative_tokens", SCHED_KNOB_INT, "tokens", 0, 16, "continuous: draft tokens per decode (0 = off)", false},
     F(num_speculative_tokens)},
    {{"speculative_disable_by_batch_size", SCHED_KNOB_INT, "sequences", 0, 65536,
      "continuous: no drafts while this many sequences run (0 = never)", false},
     F(speculative_disable_by_batch_size)},
    {{"model", SCHED_KNOB_MODEL, "", 0, 0, "memory_aware: estimator shape (a built-in model name)", false}, F(model)},
    {{"gpu_memory_utilization", SCHED_KNOB_DOUBLE, "fraction", 0.01, 1, "engine: usable share of device memory", false},
     F(gpu_memory_utilization)},
};
#undef F
#define N_KNOBS ((int)(sizeof knobs / sizeof knobs[0]))

int sched_knob_count(void) { return N_KNOBS; }

const sched_knob_t *sched_knob_at(int i) { return i >= 0 && i < N_KNOBS ? &knobs[i].k : NULL; }

static const knob_entry_t *find_entry(const char *name)
{
    for (int i = 0; i < N_KNOBS; i++) {
        const char *a = name, *b = knobs[i].k.name;
        while (*a && (*a == *b || (*a == '-' && *b == '_'))) {
            a++;
            b++;
        }
        if (!*a && !*b)
            return &knobs[i];
    }
    return NULL;
}

const sched_knob_t *sched_knob_find(const char *name)
{
    const knob_entry_t *e = find_entry(name);
    return e ? &e->k : NULL;
}

#define SETERR(...)                                       \
    do {                                                  \
        if (err && errlen > 0)                            \
            snprintf(err, (size_t)errlen, __VA_ARGS__);   \
    } while (0)

/* Range text for messages: "1..65536". */
static void range_text(const sched_knob_t *k, char *buf, size_t len)
{
    if (k->type == SCHED_KNOB_DOUBLE)
        snprintf(buf, len, "%g..%g", k->min, k->max);
    else
        snprintf(buf, len, "%.0f..%.0f", k->min, k->max);
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "1", "on", "yes"}, *const no[] = {"false", "0", "off", "no"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i]) || !strcasecmp(v, no[i])) {
            *out = !strcasecmp(v, yes[i]);
            return true;
        }
    }
    return false;
}

int sched_config_set(sched_config_t *cfg, const char *key, const char *value, char *err, int errlen)
{
    const knob_entry_t *e = find_entry(key);
    if (!e) {
        SETERR("%s: unknown scheduler setting", key);
        return SL_ENOTFOUND;
    }
    const sched_knob_t *k = &e->k;
    char *field = (char *)cfg + e->off, range[64];
    range_text(k, range, sizeof range);
    switch (k->type) {
    case SCHED_KNOB_STRATEGY: {
        sched_strategy_t st;
        if (sched_strategy_parse(value, &st) != SL_OK) {
            SETERR("%s: must be one of naive, bucketed, memory_aware, continuous, got '%s'", k->name, value);
            return SL_EINVAL;
        }
        *(sched_strategy_t *)field = st;
        return SL_OK;
    }
    case SCHED_KNOB_MODEL: {
        sched_model_shape_t m;
        if (sched_model_shape_builtin(value, &m) != SL_OK) {
            SETERR("%s: must be one of %s, got '%s'", k->name, sched_model_shape_names(), value);
            return SL_EINVAL;
        }
        *(sched_model_shape_t *)field = m;
        return SL_OK;
    }
    case SCHED_KNOB_BOOL: {
        bool b;
        if (!parse_bool(value, &b)) {
            SETERR("%s: must be true or false, got '%s'", k->name, value);
            return SL_EINVAL;
        }
        *(bool *)field = b;
        return SL_OK;
    }
    case SCHED_KNOB_DOUBLE: {
        char *end;
        errno = 0;
        double d = strtod(value, &end);
        if (end == value || *end || errno || !isfinite(d) || d < k->min || d > k->max) {
            SETERR("%s: must be a number in %s, got '%s'", k->name, range, value);
            return SL_EINVAL;
        }
        *(double *)field = d;
        return SL_OK;
    }
    case SCHED_KNOB_INT:
    case SCHED_KNOB_INT64: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end || errno || (double)v < k->min || (double)v > k->max) {
            SETERR("%s: must be an integer in %s, got '%s'", k->name, range, value);
            return SL_EINVAL;
        }
        if (k->type == SCHED_KNOB_INT)
            *(int *)field = (int)v;
        else
            *(int64_t *)field = v;
        return SL_OK;
    }
    }
    return SL_EINVAL;
}

/* The shortest %g text that reads back as v exactly (0.9 -> "0.9", not "0.90000000000000002"):
 * the least precision 1..17 that round-trips (17 always does for a finite double), raised to the
 * number of integer digits so whole numbers print plainly (50, 3600000; not 5e+01). snprintf's count. */
static int shortest_double(char *buf, int buflen, double v)
{
    char tmp[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    int int_digits = isfinite(v) && fabs(v) >= 1 ? (int)floor(log10(fabs(v))) + 1 : 0;
    if (prec < int_digits)
        prec = int_digits < 17 ? int_digits : 17;
    return snprintf(buf, (size_t)buflen, "%.*g", prec, v);
}

int sched_config_get(const sched_config_t *cfg, const char *key, char *buf, int buflen)
{
    const knob_entry_t *e = find_entry(key);
    if (!e)
        return SL_ENOTFOUND;
    const char *field = (const char *)cfg + e->off;
    int n = 0;
    switch (e->k.type) {
    case SCHED_KNOB_STRATEGY: n = snprintf(buf, (size_t)buflen, "%s", sched_strategy_name(*(const sched_strategy_t *)field)); break;
    case SCHED_KNOB_MODEL: n = snprintf(buf, (size_t)buflen, "%s", ((const sched_model_shape_t *)field)->name); break;
    case SCHED_KNOB_BOOL: n = snprintf(buf, (size_t)buflen, "%s", *(const bool *)field ? "true" : "false"); break;
    case SCHED_KNOB_DOUBLE: n = shortest_double(buf, buflen, *(const double *)field); break;
    case SCHED_KNOB_INT: n = snprintf(buf, (size_t)buflen, "%d", *(const int *)field); break;
    case SCHED_KNOB_INT64: n = snprintf(buf, (size_t)buflen, "%lld", (long long)*(const int64_t *)field); break;
    }
    return n >= 0 && n < buflen ? SL_OK : SL_EINVAL;
}

int sched_config_validate(const sched_config_t *cfg, char *err, int errlen)
{
    for (int i = 0; i < N_KNOBS; i++) {
        const sched_knob_t *k = &knobs[i].k;
        const char *field = (const char *)cfg + knobs[i].off;
        double v;
        switch (k->type) {
        case SCHED_KNOB_STRATEGY: v = (double)*(const sched_strategy_t *)field; break;
        case SCHED_KNOB_INT: v = *(const int *)field; break;
        case SCHED_KNOB_INT64: v = (double)*(const int64_t *)field; break;
        case SCHED_KNOB_DOUBLE: v = *(const double *)field; break;
        default: continue; /* bool always valid; the model is checked below */
        }
        if (!(v >= k->min && v <= k->max)) {
            char range[64];
            range_text(k, range, sizeof range);
            SETERR("%s: must be %s, got %g", k->name, range, v);
            return SL_EINVAL;
        }
    }
    const sched_model_shape_t *m = &cfg->model;
    if (m->n_layers <= 0 || m->hidden <= 0 || m->n_heads <= 0 || m->n_kv_heads <= 0 || m->head_dim <= 0 ||
        m->intermediate <= 0 || m->vocab <= 0 || !(m->bytes_per_weight > 0) || !(m->bytes_per_kv > 0)) {
        SETERR("model: shape '%.32s' has a non-positive dimension", m->name);
        return SL_EINVAL;
    }
    /* without chunking a whole (re)computed prompt must fit one step's budget */
    if (cfg->strategy == SCHED_CONTINUOUS && !cfg->enable_chunked_prefill &&
        cfg->max_num_batched_tokens < cfg->max_sequence_length) {
        SETERR("max_num_batched_tokens: must be >= max_sequence_length (%d) when enable_chunked_prefill is false, "
               "got %d",
               cfg->max_sequence_length, cfg->max_num_batched_tokens);
        return SL_EINVAL;
    }
    /* a decode with its drafts must fit the budget */
    if (cfg->max_num_batched_tokens < 1 + cfg->num_speculative_tokens) {
        SETERR("max_num_batched_tokens: must be >= 1 + num_speculative_tokens (%d), got %d",
               1 + cfg->num_speculative_tokens, cfg->max_num_batched_tokens);
        return SL_EINVAL;
    }
    return SL_OK;
}

static bool model_equal(const sched_model_shape_t *a, const sched_model_shape_t *b)
{
    return !strcmp(a->name, b->name) && a->n_layers == b->n_layers && a->hidden == b->hidden &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->intermediate == b->intermediate && a->vocab == b->vocab && a->max_context == b->max_context &&
           a->tied_embeddings == b->tied_embeddings && a->bytes_per_weight == b->bytes_per_weight &&
           a->bytes_per_kv == b->bytes_per_kv;
}

const char *sched_config_fixed_change(const sched_config_t *a, const sched_config_t *b)
{
    for (int i = 0; i < N_KNOBS; i++) {
        const knob_entry_t *e = &knobs[i];
        if (e->k.live)
            continue;
        const char *fa = (const char *)a + e->off, *fb = (const char *)b + e->off;
        bool same;
        switch (e->k.type) {
        case SCHED_KNOB_STRATEGY: same = *(const sched_strategy_t *)fa == *(const sched_strategy_t *)fb; break;
        case SCHED_KNOB_INT: same = *(const int *)fa == *(const int *)fb; break;
        case SCHED_KNOB_INT64: same = *(const int64_t *)fa == *(const int64_t *)fb; break;
        case SCHED_KNOB_DOUBLE: same = *(const double *)fa == *(const double *)fb; break;
        case SCHED_KNOB_BOOL: same = *(const bool *)fa == *(const bool *)fb; break;
        case SCHED_KNOB_MODEL:
        default: same = model_equal((const sched_model_shape_t *)fa, (const sched_model_shape_t *)fb); break;
        }
        if (!same)
            return e->k.name;
    }
    return NULL;
}
