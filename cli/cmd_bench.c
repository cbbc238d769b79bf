/* cmd_bench.c — `sluice bench`: drive the real engine with a workload and record the run.
 *
 * Open loop (--trace FILE | --preset NAME): requests are submitted at the trace's arrival times
 * (real time, scaled by --rate-scale). Closed loop (--concurrency C[,C...]): C requests are kept
 * in flight until --requests have completed, for each C; with two or more levels the tokens/s
 * ratio of each level to the first is printed. --repeat N runs the sweep N times, the levels
 * interleaved (round 1: every level, round 2: every level, ...), and prints each level's median
 * with its range and the median of the rounds' ratios: on a machine whose speed drifts, a ratio
 * within a round compares runs seconds apart, where two single runs may fall in different phases.
 *
 * The replay itself (prompts, forced output lengths, clipping to the context, the records) is
 * cli/engine_run.h's, shared with `sluice validate`; the clipped count is printed.
 *
 * Each run is recorded (mode "real") in the SQLite store with the same per-request and per-step
 * records and summary as `sluice sim`, from the engine's own timestamps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/metrics.h"
#include "analysis/store.h"
#include "cli/cli.h"
#include "cli/engine_run.h"
#include "cli/fwd_bench.h"
#include "engine/engine.h"
#include "sched/sched.h"
#include "workloads/presets.h"
#include "workloads/trace.h"

#define CMD "bench"
#define MAX_LEVELS 16
#define MAX_REPEAT 50

static const char usage[] =
    "usage: sluice bench -m MODEL (--trace FILE | --preset NAME | --concurrency C[,C...]) [options]\n"
    "  -m, --model PATH          GGUF file or synthetic:SHAPE\n"
    "  --trace FILE              replay a trace CSV in real time\n"
    "  --preset NAME             replay a preset workload (chat, code, sharegpt, summarize)\n"
    "  -n N                      first N requests of the trace / preset\n"
    "  --rate R                  preset arrival rate (req/s)\n"
    "  --rate-scale X            multiply the arrival rate by X (default 1)\n"
    "  --concurrency C[,C...]    closed loop: keep C requests in flight (sweep with commas)\n"
    "  --requests N              closed loop: requests per level (default 4 * C)\n"
    "  --prompt-len L            closed loop: prompt tokens (default 128)\n"
    "  --max-tokens T            closed loop: output tokens (default 128)\n"
    "  --repeat N                closed loop: run the sweep N times, levels interleaved; print the\n"
    "                            medians and the median ratio of the rounds (default 1)\n"
    "  --backend cpu|cuda        (default cpu)\n"
    "  --threads N               cpu threads (default: all cores)\n"
    "  --fixed-threads           every step on all N threads, even while other processes hold cores\n"
    "                            (default: fewer threads then)\n"
    "  --kv-memory-mb MB         KV pool cap (default: sized from max_num_seqs, capped by memory)\n"
    "  --kv-dtype f32|f16|int8   KV cache elements on the cpu backend (default f16 on CPUs with\n"
    "                            AVX-512, f32 elsewhere; int8: half f16's memory; cuda: always f16);\n"
    "                            alias --kv-cache-dtype\n"
    "  --idle-spin-ms MS         poll for new work this long after a step before sleeping (default 1000)\n"
    "  --seed S                  prompt RNG seed (default 1)\n"
    "  --num-speculative-tokens K  draft tokens per decode step by prompt lookup (default 0 = off)\n"
    "  --prompt-lookup-min N, --prompt-lookup-max N  n-gram lengths the lookup matches (default 2, 3)\n"
    "  --db FILE                 run store (default sluice.db); --no-record to skip\n"
    "  --strategy NAME and every scheduler knob as --knob-name VALUE\n"
    "                            (--max-num-seqs, --max-batch-size, --batch-timeout-ms, ...)\n";

typedef struct opts {
    cli_replay_opts_t run; /* trace or preset, -n, rates, run store */
    int n_levels, levels[MAX_LEVELS], requests, prompt_len, max_tokens, repeat;
    cli_engine_opts_t eng; /* model, backend, threads, KV cap, seed, scheduler */
} opts_t;

/* ---- one run -------------------------------------------------------------------------------- */

static void print_lat(const char *name, double mean, double p50, double p90, double p99)
{
    printf("  %-10s mean %8.3f  p50 %8.3f  p90 %8.3f  p99 %8.3f s\n", name, mean, p50, p90, p99);
}

static void print_summary(const an_summary_t *s, const char *model, const char *backend, const char *kv_dtype,
                          const sched_config_t *sc, const char *workload, int rejected, int clipped)
{
    printf("sluice bench: %s on %s (KV %s), %s, %s\n", model, backend, kv_dtype, sched_strategy_name(sc->strategy),
           workload);
    printf("  requests   %.0f (%.0f completed, %d rejected, %d clipped to the context) over %.1f s\n",
           s->n_requests, s->n_completed, rejected, clipped, s->duration);
    printf("  throughput %.2f req/s, %.0f input tok/s, %.0f output tok/s\n", s->request_throughput,
           s->input_tps, s->output_tps);
    print_lat("TTFT", s->ttft_mean, s->ttft_p50, s->ttft_p90, s->ttft_p99);
    print_lat("TPOT", s->tpot_mean, s->tpot_p50, s->tpot_p90, s->tpot_p99);
    print_lat("E2E", s->e2e_mean, s->e2e_p50, s->e2e_p90, s->e2e_p99);
    print_lat("queueing", s->queue_mean, s->queue_p50, s->queue_p90, s->queue_p99);
    printf("  preemptions %.0f (%.0f requests); prefix cache hit rate %.1f%%\n", s->preemptions,
           s->preempted_requests, 100 * s->prefix_hit_rate);
    printf("  KV         %d blocks; utilisation mean %.1f%% peak %.1f%%; waste paged %.1f%%, "
           "max-length reservation %.1f%%\n", sc->num_blocks, 100 * s->kv_util_mean,
           100 * s->kv_util_peak, 100 * s->kv_waste, 100 * s->kv_naive_waste);
    printf("  batches    %.1f seqs/step, %.0f tokens/step, %.0f steps, padding %.1f%%, busy %.1f%%\n",
           s->batch_size_mean, s->tokens_per_step, s->n_steps, 100 * s->padding_frac, 100 * s->busy_frac);
}

static int record(const opts_t *o, sluice_engine *e, const char *workload, uint64_t hash,
                  const cli_engine_run_t *r, const an_summary_t *sum, int64_t *run_id)
{
    an_store_t *st = NULL;
    int rc = an_store_open(o->run.db, &st);
    if (rc == SL_OK)
        rc = cli_engine_record(st, e, &o->eng, workload, hash, r, sum, run_id);
    if (rc != SL_OK)
        cli_fail(CMD, "%s: %s", o->run.db, st ? an_store_errmsg(st) : sl_strerror(rc));
    an_store_close(st);
    return rc;
}

/* Runs the trace (open loop, concurrency 0) or a closed loop at `concurrency` over tr's rows, on a
 * fresh engine; prints and records the run. *out_tps gets output tokens per second of wall time. */
static int bench_once(const opts_t *o, const wl_trace_t *tr, int concurrency, const char *workload,
                      double *out_tps)
{
    char err[512];
    cli_engine_run_t r = {0};
    sluice_engine *e = cli_engine_open(&o->eng, &r, err, sizeof err);
    if (!e)
        return cli_fail(CMD, "%s", err);
    int status = 0;
    if (cli_engine_replay(e, &o->eng, tr, concurrency, &r, err, sizeof err) != SL_OK) {
        status = cli_fail(CMD, "%s", err);
        goto out;
    }
    *out_tps = r.wall > 0 ? (double)r.out_tokens / r.wall : 0;
    an_summary_t sum;
    if (cli_engine_summary(e, &r, &sum) != SL_OK) {
        status = cli_fail(CMD, "out of memory collecting the records");
        goto out;
    }
    int64_t run_id = 0;
    if (!o->run.no_record && record(o, e, workload, wl_trace_hash(tr), &r, &sum, &run_id) != SL_OK)
        status = 2;
    print_summary(&sum, o->eng.model, eng_engine_backend_name(e), cli_engine_kv_dtype(e, o->eng.kv_dtype),
                  eng_engine_sched_config(e), workload, r.rejected, r.clipped);
    printf("  wall       %.2f s, %.1f output tok/s over wall time\n", r.wall, *out_tps);
    if (eng_engine_sched_config(e)->num_speculative_tokens > 0)
        cli_print_speculation(stdout, "  speculation ", &r.spec, o->eng.lookup_min, o->eng.lookup_max);
    cli_print_thread_drops(stdout, "  ", e);
    if (run_id > 0)
        printf("recorded as run %lld in %s\n", (long long)run_id, o->run.db);
out:
    sluice_engine_free(e);
    cli_engine_run_free(&r);
    return status;
}

/* ---- options -------------------------------------------------------------------------------- */

static int parse_levels(const char *v, opts_t *o)
{
    o->n_levels = 0;
    for (const char *p = v; p && *p && o->n_levels < MAX_LEVELS;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p || c < 1 || c > 65536 || (*end && *end != ','))
            return cli_fail(CMD, "--concurrency: expected C[,C...] with C in 1..65536, got '%s'", v);
        o->levels[o->n_levels++] = (int)c;
        p = *end ? end + 1 : end;
    }
    return o->n_levels > 0 ? 0 : cli_fail(CMD, "--concurrency needs a value");
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.run = cli_replay_opts_default(), .prompt_len = 128, .max_tokens = 128, .repeat = 1,
                  .eng = cli_engine_opts_default()};
    for (int i = 1; i < argc; i++) {
        int shared = cli_engine_parse_arg(CMD, argc, argv, &i, &o->eng, &o->run);
        if (shared == 1)
            continue;
        if (shared)
            return shared;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return -1;
        } else if (!strcmp(a, "--concurrency")) {
            if (parse_levels(v, o))
                return 2;
            i++;
        } else if (!strcmp(a, "--repeat")) {
            if (cli_number(CMD, a, v, 1, MAX_REPEAT, &x))
                return 2;
            if (x != floor(x))
                return cli_fail(CMD, "--repeat: expected a whole number of rounds, got '%s'", v);
            o->repeat = (int)x;
            i++;
        } else if (!strcmp(a, "--requests") || !strcmp(a, "--prompt-len") || !strcmp(a, "--max-tokens") ||
                   !strcmp(a, "--threads")) {
            if (cli_number(CMD, a, v, 0, 1e9, &x))
                return 2;
            i++;
            if (!strcmp(a, "--requests"))
                o->requests = (int)x;
            else if (!strcmp(a, "--prompt-len"))
                o->prompt_len = (int)x;
            else if (!strcmp(a, "--max-tokens"))
                o->max_tokens = (int)x;
            else
                o->eng.threads = (int)x;
        } else {
            fputs(usage, stderr);
            return cli_fail(CMD, "unknown option '%s'", a);
        }
    }
    if (!o->eng.model)
        return cli_fail(CMD, "-m MODEL is required");
    if (!!o->run.trace + !!o->run.preset + (o->n_levels > 0) != 1)
        return cli_fail(CMD, "give exactly one of --trace FILE, --preset NAME, --concurrency C[,C...]");
    if (o->repeat > 1 && o->n_levels == 0)
        return cli_fail(CMD, "--repeat repeats a --concurrency sweep; a trace or preset runs once");
    return 0;
}

/* The sweep's table: each level's tokens/s (with --repeat: the median over the rounds and their
 * range) and its ratio to the first level (with --repeat: the median of the rounds' ratios). */
static void print_sweep(const opts_t *o, double tps[][MAX_REPEAT])
{
    const int n = o->repeat;
    if (n > 1)
        printf("\nconcurrency sweep (output tok/s over wall time; median of %d rounds, levels interleaved):\n", n);
    else
        printf("\nconcurrency sweep (output tok/s over wall time):\n");
    for (int l = 0; l < o->n_levels; l++) {
        double v[MAX_REPEAT], ratio[MAX_REPEAT], lo = tps[l][0], hi = tps[l][0];
        for (int r = 0; r < n; r++) {
            v[r] = tps[l][r];
            ratio[r] = tps[0][r] > 0 ? tps[l][r] / tps[0][r] : 0;
            lo = v[r] < lo ? v[r] : lo;
            hi = v[r] > hi ? v[r] : hi;
        }
        printf("  c=%-5d %10.1f tok/s  %6.2fx c=%d", o->levels[l], cli_median(v, n), cli_median(ratio, n),
               o->levels[0]);
        if (n > 1)
            printf("  (%.1f..%.1f tok/s)", lo, hi);
        printf("\n");
    }
}

/* The closed loop's workload: N identical-shape requests, all arriving at 0. */
static int closed_trace(const opts_t *o, int level, wl_trace_t *tr)
{
    int n = o->requests > 0 ? o->requests : 4 * level;
    wl_request_t r = {.arrival = 0, .prompt_len = o->prompt_len > 0 ? o->prompt_len : 1,
                      .output_len = o->max_tokens > 0 ? o->max_tokens : 1, .prefix_group = -1};
    wl_trace_clear(tr);
    for (int i = 0; i < n; i++)
        if (wl_trace_append(tr, &r) != SL_OK)
            return SL_ENOMEM;
    return SL_OK;
}

int cmd_bench(int argc, char **argv)
{
    opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    wl_trace_t *tr = wl_trace_create();
    if (!tr)
        return cli_fail(CMD, "out of memory");
    int status = 0;
    if (o.n_levels > 0) {
        double tps[MAX_LEVELS][MAX_REPEAT];
        for (int round = 0; round < o.repeat && status == 0; round++)
            for (int l = 0; l < o.n_levels && status == 0; l++) {
                char name[96];
                snprintf(name, sizeof name, "closed loop c=%d, %d+%d tokens", o.levels[l], o.prompt_len,
                         o.max_tokens);
                if (o.repeat > 1)
                    printf("%sround %d of %d, c=%d\n", round + l > 0 ? "\n" : "", round + 1, o.repeat,
                           o.levels[l]);
                if (closed_trace(&o, o.levels[l], tr) != SL_OK)
                    status = cli_fail(CMD, "out of memory");
                else
                    status = bench_once(&o, tr, o.levels[l], name, &tps[l][round]);
            }
        if (status == 0 && (o.n_levels > 1 || o.repeat > 1))
            print_sweep(&o, tps);
    } else {
        if (o.run.trace)
            rc = wl_trace_read_file(tr, o.run.trace);
        else
            rc = wl_preset_generate(o.run.preset, (size_t)o.run.n, o.run.rate, o.eng.seed, 0, tr);
        if (rc != SL_OK) {
            status = cli_fail(CMD, "%s", wl_trace_errmsg(tr));
        } else {
            if (o.run.n > 0)
                wl_trace_truncate(tr, (size_t)o.run.n);
            if (o.run.rate_scale != 1 && wl_trace_rate_scale(tr, o.run.rate_scale) != SL_OK)
                status = cli_fail(CMD, "--rate-scale: must be > 0");
            double tps;
            if (status == 0)
                status = bench_once(&o, tr, 0, o.run.trace ? o.run.trace : o.run.preset, &tps);
        }
    }
    wl_trace_free(tr);
    return status;
}
