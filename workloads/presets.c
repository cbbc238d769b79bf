/* presets.c — the named workloads of presets.h.
 *
 * Where a source publishes a mean only, the median is our assumption, chosen for the skew such
 * length distributions show (ShareGPT: median about 0.6 of the mean; arXiv summarisation, whose
 * inputs are long documents truncated by the benchmark, a mild skew: median 0.9 of the mean).
 */
#include "workloads/presets.h"

#include <stdio.h>
#include <string.h>

#include "sched/status.h"

static const wl_preset_t presets[] = {
    {"chat", "Azure LLM inference trace 2023, conversation (prompt 1155/1020, output 211/129 mean/median)", 1155,
     1020, 211, 129, 5.0, 1000},
    {"code", "Azure LLM inference trace 2023, code (prompt 2048/1469, output 28/13 mean/median)", 2048, 1469, 28, 13,
     5.0, 1000},
    {"sharegpt", "ShareGPT as vLLM's benchmark samples it (prompt ~230, output ~200 mean; medians assumed)", 230, 140,
     200, 120, 10.0, 1000},
    {"summarize", "arXiv summarisation (prompt ~2588, output ~291 mean; medians assumed)", 2588, 2330, 291, 262, 1.0,
     1000},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

const wl_preset_t *wl_preset_find(const char *name)
{
    for (size_t i = 0; i < N_PRESETS; i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

size_t wl_preset_count(void)
{
    return N_PRESETS;
}

const wl_preset_t *wl_preset_at(size_t i)
{
    return &presets[i];
}

const char *wl_preset_names(void)
{
    return "chat, code, sharegpt, summarize";
}

static void lognormal_spec(double mean, double median, wl_length_spec_t *l)
{
    memset(l, 0, sizeof *l);
    l->kind = WL_LEN_LOGNORMAL;
    l->mean = mean;
    wl_lognormal_sd_from_median(mean, median, &l->sd); /* cannot fail: the table has median <= mean */
}

void wl_preset_config(const wl_preset_t *p, size_t n, double rate, uint64_t seed, int max_seq_len,
                      wl_gen_config_t *cfg)
{
    wl_gen_config_default(cfg);
    cfg->n = n ? n : p->default_n;
    cfg->seed = seed;
    cfg->arrival.kind = WL_ARRIVAL_POISSON;
    cfg->arrival.rate = rate > 0 ? rate : p->default_rate;
    lognormal_spec(p->prompt_mean, p->prompt_median, &cfg->prompt);
    lognormal_spec(p->output_mean, p->output_median, &cfg->output);
    cfg->max_seq_len = max_seq_len == 0 ? WL_DEFAULT_MAX_SEQ_LEN : max_seq_len < 0 ? 0 : max_seq_len;
}

int wl_preset_generate(const char *name, size_t n, double rate, uint64_t seed, int max_seq_len, wl_trace_t *out)
{
    const wl_preset_t *p = wl_preset_find(name);
    if (!p) {
        wl_trace_clear(out);
        snprintf(out->errmsg, sizeof out->errmsg, "unknown preset '%s' (accepted: %s)", name, wl_preset_names());
        return SL_ENOTFOUND;
    }
    wl_gen_config_t cfg;
    wl_preset_config(p, n, rate, seed, max_seq_len, &cfg);
    return wl_gen_generate(&cfg, out);
}
