/* engine_run.h — one workload replayed on the real engine: the piece `sluice bench`, `profile` and
 * `validate` share (the same code path, so what validate measures is what bench measures).
 *
 * Open loop (concurrency 0): request i is submitted at t0 + arrival[i] of wall time. Closed loop
 * (concurrency C > 0): C requests are kept in flight, arrivals ignored.
 * Prompts: traces carry lengths only, so each prompt is BOS (when the vocabulary has one) plus
 * token ids drawn uniformly, with a seeded RNG, from the vocabulary's normal tokens (never control,
 * byte or unused tokens); requests of one prefix group share their first prefix_len tokens.
 * Output lengths are forced to the trace's output length: EOS is ignored, greedy sampling,
 * max_tokens is the trace's length. prompt + output over the engine's max_sequence_length is
 * clipped (output first, then prompt) and counted; callers that must not clip check first with
 * cli_engine_check_fits.
 *
 * Records: one an_request_rec_t per trace row (by index) and one an_step_rec_t per executed step,
 * from the engine's own timestamps, plus the step's forward time, sampled rows and attention work
 * (prefill pairs, each decoding sequence's KV read), so a cost model can price the very steps
 * the engine ran.
 *
 * Thread safety: a run object belongs to one caller; the engine's callbacks fill it under its own
 * mutex. Errors: a status with the reason in err; the run is then empty (freed).
 */
#ifndef SLUICE_CLI_ENGINE_RUN_H
#define SLUICE_CLI_ENGINE_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "include/sluice.h"
#include "sched/sched.h"
#include "workloads/trace.h"

typedef struct cli_engine_opts {
    const char *model;   /* GGUF path or synthetic:SHAPE */
    const char *backend; /* "cpu" (NULL) or "cuda" */
    int threads;         /* cpu threads, 0 = all cores */
    bool fixed_threads;  /* sluice_engine_params.fixed_threads */
    double kv_mb;        /* KV pool cap, 0 = engine default sizing */
    sluice_kv_dtype kv_dtype; /* the KV cache's elements (sluice_engine_params.kv_dtype) */
    double idle_spin_ms; /* sluice_engine_params.idle_spin_ms */
    int lookup_min, lookup_max; /* sluice_engine_params.prompt_lookup_min / _max (speculative drafts) */
    uint64_t seed;       /* prompt RNG */
    sched_config_t sched;
} cli_engine_opts_t;

/* The engine options' defaults: cpu backend, all cores, engine KV sizing, seed 1, the engine's
 * default scheduler config. Cannot fail. */
cli_engine_opts_t cli_engine_opts_default(void);

/* What `bench` and `validate` replay and where they record it. */
typedef struct cli_replay_opts {
    const char *trace, *preset; /* --trace FILE | --preset NAME */
    const char *db;             /* --db FILE, default sluice.db */
    long n;                     /* -n: the first N rows of the trace / N generated; 0 = all */
    double rate, rate_scale;    /* --rate (preset req/s, 0 = its own), --rate-scale (default 1) */
    bool no_record;             /* --no-record */
} cli_replay_opts_t;

/* --db sluice.db, --rate-scale 1, nothing else set. */
cli_replay_opts_t cli_replay_opts_default(void);

/* The options `bench` and `validate` share, at argv[*i]: -m/--model, --backend, --kv-memory-mb,
 * --kv-dtype (--kv-cache-dtype), --idle-spin-ms, --prompt-lookup-min/-max, --seed, every scheduler
 * knob (cli/sched_opts.h, --config FILE too) into eng;
 * --trace, --preset, --db, -n, --rate, --rate-scale, --no-record into run. Returns 1 when it
 * consumed the option (*i then points at its value), 0 when argv[*i] is not one of these, 2 after
 * printing what is wrong with a bad or missing value. */
int cli_engine_parse_arg(const char *cmd, int argc, char **argv, int *i, cli_engine_opts_t *eng,
                         cli_replay_opts_t *run);

/* What one replay collected. */
typedef struct cli_engine_run {
    an_request_rec_t *req;  /* (n_req) by trace row */
    size_t n_req;
    an_step_rec_t *step;    /* (n_step) in execution order */
    double *forward_s;      /* (n_step) seconds inside the backend's forward */
    int *n_sampled;         /* (n_step) logits rows sampled */
    double *prefill_pairs;  /* (n_step) the prompt chunks' attention work (sluice_step_info) */
    size_t *dec_first;      /* (n_step) step i's decoding sequences read dec_kv[dec_first[i] + j] KV
                               tokens, j < step[i].n_decode_seqs */
    int *dec_kv;
    size_t n_step, cap_step, n_dec_kv, cap_dec_kv;
    int rejected, clipped;
    int64_t out_tokens;
    cli_spec_counts_t spec; /* speculative decoding, every step's */
    double wall;            /* first submit to the last request done, s */
    int64_t thread_drops;   /* sluice_stats.thread_drops at the end of the replay */
    bool oom;               /* a step record could not be kept */
} cli_engine_run_t;

/* Creates an engine for o (the engine sizes its KV pool and fills num_blocks, max_sequence_length
 * and the model shape of its scheduler config: eng_engine_sched_config). The run r (zeroed by the
 * caller) receives the step records of every step this engine executes. NULL + err on error. */
sluice_engine *cli_engine_open(const cli_engine_opts_t *o, cli_engine_run_t *r, char *err, size_t errlen);

/* "f32", "f16" or "int8": the KV cache element type engine e keeps when asked for kv (the cpu
 * backend keeps what it is asked for, cuda F16). Cannot fail. */
const char *cli_engine_kv_dtype(const sluice_engine *e, sluice_kv_dtype kv);

/* SL_ETOO_LONG with "request 12: prompt 500 + output 100 tokens exceed the engine's
 * max_sequence_length 512" in err when a row cannot be served unclipped; SL_OK otherwise. */
int cli_engine_check_fits(const sluice_engine *e, const wl_trace_t *tr, char *err, size_t errlen);

/* Replays tr on e (from cli_engine_open with the same r), then shuts the engine down (serving
 * everything in flight). Arrivals are taken relative to tr->arrival[0]. SL_OK, SL_ENOMEM, or the
 * status of a submit that failed for another reason than a full queue (err says which request). */
int cli_engine_replay(sluice_engine *e, const cli_engine_opts_t *o, const wl_trace_t *tr, int concurrency,
                      cli_engine_run_t *r, char *err, size_t errlen);

/* The run's summary (KV utilisation against the engine's pool). SL_ENOMEM (also when step records
 * were lost). */
int cli_engine_summary(const sluice_engine *e, const cli_engine_run_t *r, an_summary_t *out);

/* Records the run (mode real) in st: config JSON with backend, threads, fixed_threads, thread_drops
 * (steps moved to fewer threads while other processes held the cores), kv_dtype, every
 * scheduler knob and, with speculative decoding, the prompt-lookup lengths and the drafts run and
 * kept.
 * On error the status, with an_store_errmsg(st) saying why. */
int cli_engine_record(an_store_t *st, const sluice_engine *e, const cli_engine_opts_t *o, const char *workload,
                      uint64_t hash, const cli_engine_run_t *r, const an_summary_t *sum, int64_t *run_id);

/* Frees the records and zeroes r. */
void cli_engine_run_free(cli_engine_run_t *r);

#endif
