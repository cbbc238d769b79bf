/* gen.h — synthetic trace generators: arrival processes, length distributions, priority mixes
 * and prefix groups, driven by GSL's MT19937 so one seed gives one trace, bit for bit.
 *
 * A generation is described by a wl_gen_config_t (from wl_gen_config_default(), then the specs
 * filled by hand or by the wl_parse_* functions from command-line strings):
 *
 *   arrival  poisson:RATE         exponential gaps, RATE requests/s
 *            gamma:RATE,CV        gamma gaps with mean 1/RATE and coefficient of variation CV
 *                                 (CV > 1 is burstier than Poisson, CV < 1 smoother)
 *            constant:RATE        one request every 1/RATE s
 *            replay:FILE[,SCALE]  the arrival times of FILE's rows, divided by SCALE (default 1;
 *                                 2 = twice the rate); cycles, shifted, when n exceeds the file
 *   lengths  fixed:N              always N
 *            uniform:A,B          integers uniform in [A, B]
 *            lognormal:MEAN,SD    lognormal whose lengths have this mean and standard deviation
 *                                 (not the log's: sigma^2 = ln(1 + SD^2/MEAN^2), mu = ln MEAN - sigma^2/2)
 *            zipf:S,MAX           P(k) proportional to k^-S over k = 1..MAX (S > 0)
 *            resample:FILE        a uniformly drawn row of FILE (its num_prefill_tokens for the
 *                                 prompt spec, num_decode_tokens for the output spec); when both
 *                                 specs resample the same FILE one row is drawn for both, so the
 *                                 prompt/output correlation survives
 *   priority mix   "0:0.8,1:0.2"  priority value:weight pairs (weights are normalised)
 *   prefix groups  "G:LEN:FRAC"   FRAC of the requests are spread uniformly over G groups whose
 *                                 members share a LEN-token prompt prefix (prompts shorter than
 *                                 LEN + 1 are lengthened to LEN + 1)
 * Lengths are rounded to the nearest integer and are at least 1. When max_seq_len > 0, a request
 * whose prompt + output exceeds it has its output capped at max_seq_len - 1, then its prompt at
 * max_seq_len - output (and its prefix at the prompt). Capping, unlike redrawing, keeps the
 * medians of both columns; the means of heavy tails drop a little.
 * The first request arrives at 0 (or at the replayed time); each later one a drawn gap after the
 * previous. Arrival times are rounded to whole microseconds, the CSV's precision, so a generated
 * trace written and read back is identical (same wl_trace_hash). Draw order per request (fixed, so adding a feature that is off changes nothing): gap
 * (not for the first request nor when replaying),
 * prompt, output (not when resampled jointly), priority (only with a mix), prefix group (only with
 * groups: one uniform draw, then the group index for members).
 */
#ifndef SLUICE_WL_GEN_H
#define SLUICE_WL_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "workloads/trace.h"

#define WL_PATH_MAX 1024
#define WL_PRIORITY_MIX_MAX 16
#define WL_DEFAULT_MAX_SEQ_LEN 4096

typedef enum wl_arrival_kind {
    WL_ARRIVAL_POISSON = 0,
    WL_ARRIVAL_GAMMA,
    WL_ARRIVAL_CONSTANT,
    WL_ARRIVAL_REPLAY,
} wl_arrival_kind_t;

typedef struct wl_arrival_spec {
    wl_arrival_kind_t kind;
    double rate;              /* requests/s (POISSON, GAMMA, CONSTANT), > 0 */
    double cv;                /* GAMMA: coefficient of variation of the gaps, > 0 */
    double time_scale;        /* REPLAY: arrivals are divided by this, > 0 (default 1) */
    char path[WL_PATH_MAX];   /* REPLAY: the trace file, loaded by wl_gen_generate */
} wl_arrival_spec_t;

typedef enum wl_length_kind {
    WL_LEN_FIXED = 0,
    WL_LEN_UNIFORM,
    WL_LEN_LOGNORMAL,
    WL_LEN_ZIPF,
    WL_LEN_RESAMPLE,
} wl_length_kind_t;

typedef struct wl_length_spec {
    wl_length_kind_t kind;
    int fixed;                /* FIXED: the length, >= 1 */
    int lo, hi;               /* UNIFORM: inclusive bounds, 1 <= lo <= hi */
    double mean, sd;          /* LOGNORMAL: mean > 0 and standard deviation >= 0 of the lengths */
    double zipf_s;            /* ZIPF: exponent > 0 */
    int zipf_max;             /* ZIPF: largest length, >= 1 */
    char path[WL_PATH_MAX];   /* RESAMPLE: the trace file, loaded by wl_gen_generate */
} wl_length_spec_t;

typedef struct wl_gen_config {
    size_t n;                 /* requests to generate, >= 1 (default 1000) */
    uint64_t seed;            /* MT19937 seed (default 0; GSL maps 0 to its default seed 4357) */
    wl_arrival_spec_t arrival;/* default poisson:1 */
    wl_length_spec_t prompt;  /* default fixed:512 */
    wl_length_spec_t output;  /* default fixed:128 */
    int max_seq_len;          /* cap on prompt + output, 0 = none (default WL_DEFAULT_MAX_SEQ_LEN) */
    int n_priorities;         /* 0 = every request priority 0 (default) */
    int priority_value[WL_PRIORITY_MIX_MAX];
    double priority_weight[WL_PRIORITY_MIX_MAX];
    int prefix_groups;        /* 0 = none (default) */
    int prefix_len;           /* tokens shared within a group, >= 1 when groups are on */
    double prefix_frac;       /* fraction of requests in some group, in (0, 1] */
} wl_gen_config_t;

/* The defaults listed above. Cannot fail. */
void wl_gen_config_default(wl_gen_config_t *cfg);

/* Spec-string parsers (grammar in the header comment). On error they return SL_EINVAL, leave *out
 * unaltered and write a message naming the string and what is accepted into err (errlen bytes,
 * always NUL-terminated), e.g. "--prompt 'lognormal:1155': lognormal needs MEAN,SD (e.g.
 * lognormal:1155,1100)". The flag name is not known here; messages start with the quoted spec. */
int wl_parse_arrival(const char *spec, wl_arrival_spec_t *out, char *err, size_t errlen);
int wl_parse_length(const char *spec, wl_length_spec_t *out, char *err, size_t errlen);
/* Fills cfg->n_priorities / priority_value / priority_weight. */
int wl_parse_priority_mix(const char *spec, wl_gen_config_t *cfg, char *err, size_t errlen);
/* Fills cfg->prefix_groups / prefix_len / prefix_frac. */
int wl_parse_prefix_groups(const char *spec, wl_gen_config_t *cfg, char *err, size_t errlen);

/* Checks every field of cfg (ranges above). SL_EINVAL with a message in err. Cannot otherwise fail. */
int wl_gen_config_check(const wl_gen_config_t *cfg, char *err, size_t errlen);

/* Replaces out's rows with cfg->n generated requests (sorted by arrival, the first at 0 or at
 * the replayed time). Loads REPLAY / RESAMPLE files named in cfg. Errors: SL_EINVAL
 * (bad config), SL_EIO / SL_EFORMAT (a source file), SL_ENOMEM; out is left empty and its errmsg
 * says why. Deterministic: the same cfg gives the same rows on every platform GSL supports. */
int wl_gen_generate(const wl_gen_config_t *cfg, wl_trace_t *out);

/* The standard deviation of a lognormal with the given mean and median (median < mean):
 * sigma^2 = 2 ln(mean / median), sd = mean * sqrt(e^(sigma^2) - 1). SL_EINVAL when
 * 0 < median <= mean does not hold; *sd unaltered on error. */
int wl_lognormal_sd_from_median(double mean, double median, double *sd);

#endif
