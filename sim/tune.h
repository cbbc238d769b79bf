/* tune.h — the batching-policy search behind `sluice tune`: a coarse grid over strategies and
 * their knobs, then Nelder–Mead refinement (GSL nmsimplex2) of the continuous knobs of the best
 * candidates, every candidate scored by a caller-supplied evaluation (a simulation).
 *
 * Search:
 *   1. the baseline: the base config with strategy NAIVE and its default knobs;
 *   2. the grid: for each enabled strategy, the product of a few values of its knobs (below),
 *      cut evenly to about 60% of the budget; with num_speculative_tokens > 0 in the base, the best
 *      CONTINUOUS grid point is also tried without drafts (phase "no-spec"), so that a load where
 *      speculation does not pay is refined and recommended without it;
 *   3. refinement: the best grid candidate of each of the `jobs` best strategies starts its own
 *      simplex, in log2 space of that strategy's knobs (integers rounded, values clamped to the
 *      knob's range); the simplexes run concurrently, one per thread, until the budget is spent.
 *   Knobs searched per strategy:
 *      NAIVE         max_batch_size, batch_timeout_ms
 *      BUCKETED      max_batch_size, batch_timeout_ms, bucket_size
 *      MEMORY_AWARE  memory_limit_mb, batch_timeout_ms
 *      CONTINUOUS    max_num_batched_tokens, max_num_seqs
 *   A configuration is evaluated once (a cache on the rounded knobs and the draft count); repeats
 *   cost no budget.
 * Ranking: candidates meeting the SLO first, then by goodput, throughput, lower p99 TTFT.
 *
 * Threads: `jobs` worker threads call eval concurrently, each with its own worker index
 * (0..jobs-1); eval must be re-entrant (own simulator per call or per worker). Results are
 * collected under the tuner's lock. No global state.
 */
#ifndef SLUICE_SIM_TUNE_H
#define SLUICE_SIM_TUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/sched.h"

/* What one evaluation measured. */
typedef struct sim_tune_score {
    double goodput;      /* req/s meeting every SLO limit: the objective */
    double throughput;   /* completed req/s */
    double ttft_p99, tpot_p99; /* s */
    bool slo_met;        /* every SLO term held at its percentile */
    int64_t run_id;      /* where the evaluation recorded it (0 = not recorded) */
} sim_tune_score_t;

/* Scores cfg. Returns SL_OK, or a status that stops the search (err says why). Called from the
 * worker threads, concurrently. */
typedef int (*sim_tune_eval_fn)(void *ctx, int worker, const sched_config_t *cfg, sim_tune_score_t *out,
                                char *err, int errlen);

typedef struct sim_tune_entry {
    sched_config_t cfg;
    sim_tune_score_t score;
    const char *phase;   /* "baseline", "grid" or "refine" (static strings) */
} sim_tune_entry_t;

typedef struct sim_tune_opts {
    sched_config_t base;    /* every knob not searched comes from here */
    int budget;             /* evaluations at most, >= 2. default 50 */
    int jobs;               /* worker threads, 1..64. default 2 */
    bool strategy[4];       /* strategies to search (indexed by sched_strategy_t). default all */
    sim_tune_eval_fn eval;
    void *ctx;
} sim_tune_opts_t;

/* Defaults above for base (copied), eval and ctx unset. Cannot fail. */
void sim_tune_opts_default(sim_tune_opts_t *o, const sched_config_t *base);

/* The knob names searched for a strategy (NULL-terminated static list). Cannot fail. */
const char *const *sim_tune_knobs(sched_strategy_t s);

typedef struct sim_tune_result {
    sim_tune_entry_t *entries; /* every evaluated candidate, ranked best first */
    int n;
    int baseline;              /* index of the baseline entry in entries */
} sim_tune_result_t;

/* Runs the search. On SL_OK *out holds the ranked candidates (free with sim_tune_result_free).
 * Errors: SL_EINVAL (bad options, err says which), SL_ENOMEM, or the first status an evaluation
 * returned (err has its message); *out is then empty. */
int sim_tune_run(const sim_tune_opts_t *o, sim_tune_result_t *out, char *err, int errlen);
void sim_tune_result_free(sim_tune_result_t *r);

/* Ranking order (SLO met, goodput, throughput, then lower p99 TTFT): negative when a ranks
 * before b. Cannot fail. */
int sim_tune_compare(const sim_tune_score_t *a, const sim_tune_score_t *b);

/* "max_num_batched_tokens=4096 max_num_seqs=128" (the strategy's searched knobs, and a continuous
 * config's num_speculative_tokens when it has drafts) into buf. */
void sim_tune_knobs_text(const sched_config_t *cfg, char *buf, int len);

#endif
