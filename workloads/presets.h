/* presets.h — named workloads fitted to published length statistics.
 *
 *   chat       Azure LLM inference trace 2023, conversation: prompt mean 1155 / median 1020,
 *              output mean 211 / median 129
 *   code       Azure LLM inference trace 2023, code: prompt 2048 / 1469, output 28 / 13
 *   sharegpt   ShareGPT as vLLM's benchmark samples it: prompt mean ~230, output mean ~200
 *   summarize  arXiv summarisation: prompt mean ~2588, output mean ~291
 * Lengths are lognormal with median = e^mu and mean = e^(mu + sigma^2/2); where only a mean is
 * published, the median is an assumption stated in presets.c. Arrivals are
 * Poisson at the preset's default rate unless a rate is given. Prompt + output is capped at
 * max_seq_len (gen.h), which keeps medians and lowers the means of heavy tails a little.
 */
#ifndef SLUICE_WL_PRESETS_H
#define SLUICE_WL_PRESETS_H

#include <stddef.h>
#include <stdint.h>

#include "workloads/gen.h"
#include "workloads/trace.h"

typedef struct wl_preset {
    const char *name;
    const char *description;      /* one line, with the source of the statistics */
    double prompt_mean, prompt_median;
    double output_mean, output_median;
    double default_rate;          /* requests/s */
    size_t default_n;             /* requests */
} wl_preset_t;

/* The preset named name, or NULL. Cannot fail. */
const wl_preset_t *wl_preset_find(const char *name);
/* Number of presets and the i-th (i < count), for listing. Cannot fail. */
size_t wl_preset_count(void);
const wl_preset_t *wl_preset_at(size_t i);
/* "chat, code, sharegpt, summarize": for "unknown preset" messages. Cannot fail. */
const char *wl_preset_names(void);

/* A generator config for preset p: n requests (0 = p->default_n), Poisson at rate (<= 0 =
 * p->default_rate), the seed, max_seq_len (0 = WL_DEFAULT_MAX_SEQ_LEN, < 0 = no cap). Other
 * fields (priority mix, prefix groups) keep wl_gen_config_default()'s values so callers may add
 * them. Cannot fail. */
void wl_preset_config(const wl_preset_t *p, size_t n, double rate, uint64_t seed, int max_seq_len,
                      wl_gen_config_t *cfg);

/* Generates preset name into out (arguments as wl_preset_config). SL_ENOTFOUND for an unknown
 * name (errmsg lists the presets), else as wl_gen_generate; out is left empty on error. */
int wl_preset_generate(const char *name, size_t n, double rate, uint64_t seed, int max_seq_len,
                       wl_trace_t *out);

#endif
