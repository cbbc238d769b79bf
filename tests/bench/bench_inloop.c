/* bench_inloop.c — does a forward run slower inside the serving loop than back to back, and how much
 * does this machine's speed move by itself? Alternates, in one process, CYCLES times:
 *   in-loop:      one request (prompt 200 tokens, 160 out) through the real engine (the code
 *                 `sluice bench` and `validate` run); the median forward of its decode steps
 *                 that read 300..360 KV tokens;
 *   back to back: the same decode shape (1 sequence at contexts 300..356) timed 48 times through
 *                 the backend interface, as `sluice profile` times it (cli/fwd_bench.h);
 * and prints both and their ratio per cycle. A ratio that stays above 1 is an in-loop cost the
 * profile misses; ratios scattered around 1 are the machine's own noise at this time scale, the
 * floor under any simulator-vs-engine comparison. Built and run by scripts/bench-validate.sh
 * --inloop.
 *
 * With -g GAP (seconds), it asks instead whether a step right after the engine sat idle (polling,
 * within its idle_spin_ms) is slower: 8 requests (prompt 200, 24 out) arrive GAP apart, so the
 * engine idles between them; per cycle it prints, in the loop and back to back, the median of the
 * prompt step (200 tokens), of the first 4 decodes after it (KV 201..204) and of the last 8 (KV
 * 216..223). A first-decode / last-decode ratio above the back-to-back one is a cost of the gap.
 *
 *   bench_inloop MODEL [-t THREADS] [-c CYCLES] [-g GAP]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/engine_run.h"
#include "cli/fwd_bench.h"
#include "engine/engine.h"
#include "sched/status.h"
#include "workloads/trace.h"

/* The engine's decode forwards at 300..360 KV tokens: their median (s), NAN on error. */
static double in_loop(const cli_engine_opts_t *eo, sched_config_t *sc)
{
    char err[1024];
    cli_engine_run_t r = {0};
    sluice_engine *e = cli_engine_open(eo, &r, err, sizeof err);
    wl_trace_t *tr = wl_trace_create();
    wl_request_t q = {.arrival = 0, .prompt_len = 200, .output_len = 160, .prefix_group = -1};
    double med = NAN;
    if (e && tr && wl_trace_append(tr, &q) == SL_OK) {
        *sc = *eng_engine_sched_config(e);
        if (cli_engine_replay(e, eo, tr, 0, &r, err, sizeof err) == SL_OK) {
            double *v = malloc(sizeof *v * (r.n_step + 1));
            int n = 0;
            for (size_t i = 0; v && i < r.n_step; i++)
                if (r.step[i].n_decode_seqs == 1 && r.dec_kv[r.dec_first[i]] >= 300 &&
                    r.dec_kv[r.dec_first[i]] <= 360)
                    v[n++] = r.forward_s[i];
            med = v ? cli_median(v, n) : NAN;
            free(v);
        }
    } else if (!e) {
        fprintf(stderr, "bench_inloop: %s\n", err);
    }
    sluice_engine_free(e);
    wl_trace_free(tr);
    cli_engine_run_free(&r);
    return med;
}

/* Step classes of the gap mode: the prompt step, the first decodes after it, the last ones. */
enum { GAP_PROMPT, GAP_FIRST, GAP_LAST, GAP_CLASSES };
static const char *const gap_class[GAP_CLASSES] = {"prompt 200", "decode KV 201..204", "decode KV 216..223"};

static int gap_class_of(int n_prefill, int n_decode, int kv)
{
    if (n_prefill == 200 && n_decode == 0)
        return GAP_PROMPT;
    if (n_prefill == 0 && n_decode == 1)
        return kv >= 201 && kv <= 204 ? GAP_FIRST : kv >= 216 && kv <= 223 ? GAP_LAST : -1;
    return -1;
}

/* The medians of the gap mode's classes in the serving loop (med[GAP_CLASSES], s); -1 on error. */
static int gap_in_loop(const cli_engine_opts_t *eo, double gap, sched_config_t *sc, double *med)
{
    char err[1024];
    cli_engine_run_t r = {0};
    sluice_engine *e = cli_engine_open(eo, &r, err, sizeof err);
    wl_trace_t *tr = wl_trace_create();
    int rc = -1, n_req = 0;
    for (int i = 0; e && tr && i < 8; i++) {
        wl_request_t q = {.arrival = gap * i, .prompt_len = 200, .output_len = 24, .prefix_group = -1};
        n_req += wl_trace_append(tr, &q) == SL_OK;
    }
    if (n_req == 8) {
        *sc = *eng_engine_sched_config(e);
        if (cli_engine_replay(e, eo, tr, 0, &r, err, sizeof err) == SL_OK) {
            double *v = malloc(sizeof *v * (r.n_step + 1));
            for (int c = 0; v && c < GAP_CLASSES; c++) {
                int n = 0;
                for (size_t i = 0; i < r.n_step; i++) {
                    int kv = r.step[i].n_decode_seqs ? r.dec_kv[r.dec_first[i]] : 0;
                    if (gap_class_of(r.step[i].n_prefill_tokens, r.step[i].n_decode_seqs, kv) == c)
                        v[n++] = r.forward_s[i];
                }
                med[c] = cli_median(v, n);
            }
            rc = v ? 0 : -1;
            free(v);
        }
    }
    if (!e)
        fprintf(stderr, "bench_inloop: %s\n", err);
    sluice_engine_free(e);
    wl_trace_free(tr);
    cli_engine_run_free(&r);
    return rc;
}

/* The gap mode's classes back to back (med[GAP_CLASSES], s); -1 on error. */
static int gap_back_to_back(const cli_engine_opts_t *eo, const sched_config_t *sc, double *med)
{
    char err[1024];
    cli_fwd_bench_t *b = cli_fwd_bench_open(eo->model, "cpu", eo->threads, eo->kv_dtype, 1024, err, sizeof err);
    int rc = -1;
    if (b && cli_fwd_bench_pool(b, sc->num_blocks, sc->block_size, 3.0, err, sizeof err) >= 0) {
        const int lo[GAP_CLASSES] = {0, 201, 216}, hi[GAP_CLASSES] = {0, 204, 223};
        rc = 0;
        for (int c = 0; c < GAP_CLASSES && rc == 0; c++) {
            double v[64];
            int n = 0;
            sim_profile_point_t pt;
            for (int kv = lo[c]; kv <= hi[c]; kv++) {
                bool ok = c == GAP_PROMPT ? cli_fwd_bench_shape(b, 1, 200, 0, true, 0, 0, &pt)
                                          : cli_fwd_bench_shape(b, 0, 0, 0, false, 1, kv, &pt);
                for (int j = 0; ok && j < (c == GAP_PROMPT ? 8 : 4); j++)
                    if (cli_fwd_bench_run(b, &v[n++], err, sizeof err) != SL_OK)
                        rc = -1;
            }
            med[c] = cli_median(v, n);
        }
    }
    if (rc != 0)
        fprintf(stderr, "bench_inloop: %s\n", err);
    cli_fwd_bench_free(b);
    return rc;
}

/* The same decode shape back to back on a bench with a pool of the engine's size (s), NAN on error. */
static double back_to_back(const cli_engine_opts_t *eo, const sched_config_t *sc)
{
    char err[1024];
    cli_fwd_bench_t *b = cli_fwd_bench_open(eo->model, "cpu", eo->threads, eo->kv_dtype, 1024, err, sizeof err);
    double v[48], med = NAN;
    int n = 0;
    if (b && cli_fwd_bench_pool(b, sc->num_blocks, sc->block_size, 3.0, err, sizeof err) >= 0) {
        sim_profile_point_t pt;
        for (int k = 0; k < 8; k++)
            if (cli_fwd_bench_shape(b, 0, 0, 0, false, 1, 300 + 8 * k, &pt))
                for (int j = 0; j < 6 && cli_fwd_bench_run(b, &v[n], err, sizeof err) == SL_OK; j++)
                    n++;
        med = n ? cli_median(v, n) : NAN;
    } else {
        fprintf(stderr, "bench_inloop: %s\n", err);
    }
    cli_fwd_bench_free(b);
    return med;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_inloop MODEL [-t THREADS] [-c CYCLES] [-g GAP]\n");
        return 2;
    }
    cli_engine_opts_t eo = cli_engine_opts_default();
    eo.model = argv[1];
    eo.threads = 1;
    int cycles = 4;
    double gap = 0;
    for (int i = 2; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "-t"))
            eo.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c"))
            cycles = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-g"))
            gap = atof(argv[i + 1]);
    eo.sched.max_num_batched_tokens = 512, eo.sched.max_num_seqs = 32, eo.sched.max_sequence_length = 1024;
    if (gap > 0) {
        printf("bench_inloop: %s, %d thread(s): steps after %.3f-s arrival gaps (the engine polls %.0f ms), "
               "in the loop against back to back\n", eo.model, eo.threads, gap, eo.idle_spin_ms);
        for (int c = 0; c < cycles; c++) {
            sched_config_t sc;
            double a[GAP_CLASSES], b[GAP_CLASSES];
            if (gap_in_loop(&eo, gap, &sc, a) != 0 || gap_back_to_back(&eo, &sc, b) != 0)
                return 1;
            printf("  cycle %d:", c);
            for (int k = 0; k < GAP_CLASSES; k++)
                printf(" %s %.3f / %.3f ms (x%.3f);", gap_class[k], 1e3 * a[k], 1e3 * b[k], a[k] / b[k]);
            printf(" first/last decode in the loop %.3f, back to back %.3f\n", a[GAP_FIRST] / a[GAP_LAST],
                   b[GAP_FIRST] / b[GAP_LAST]);
            fflush(stdout);
        }
        return 0;
    }
    printf("bench_inloop: %s, %d thread(s): decode at 300..360 KV tokens, in the serving loop against back "
           "to back\n", eo.model, eo.threads);
    for (int c = 0; c < cycles; c++) {
        sched_config_t sc;
        double a = in_loop(&eo, &sc), b = isnan(a) ? NAN : back_to_back(&eo, &sc);
        if (isnan(a) || isnan(b))
            return 1;
        printf("  cycle %d: in the loop %.3f ms, back to back %.3f ms, ratio %.3f\n", c, 1e3 * a, 1e3 * b, a / b);
        fflush(stdout);
    }
    return 0;
}
