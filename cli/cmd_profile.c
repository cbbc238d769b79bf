/* cmd_profile.c — `sluice profile`: time the engine's own forward pass on this machine at the step
 * shapes the scheduler produces, fit the simulator's step-time model (sim/profile.h) and store it
 * in the run store under a name `sluice sim --gpu NAME` and `sluice validate --profile NAME` load.
 *
 * What is measured (the grid is timed up to 9 times over while the passes fit in --budget seconds,
 * each shape's time the median of the passes, so a burst of load from elsewhere spoils one pass of
 * a shape rather than all its repeats; shapes over half a second are timed in the first pass only):
 *   1. the engine loop: a burst of short requests through the real engine (cli/engine_run.h);
 *      per step, the start of the next step - its start - its forward time, against the rows
 *      sampled, gives the host terms (and the forwards against the fit in 2, a diagnostic);
 *   2. forward passes through the backend interface (eng_backend_create + forward over hand-built
 *      batches with real, disjoint block tables in a pool of the engine's size): one prompt chunk of
 *      M = 1, 2, 4 .. max_num_batched_tokens tokens (a logits row, and none for a few M, as a
 *      non-final chunk), chunks after a cached context, decode batches of 1 .. max_num_seqs
 *      sequences at contexts 16 .. max_sequence_length, several prompt chunks at once, and mixed
 *      prefill + decode steps; shapes whose KV does not fit the engine's pool are skipped. The
 *      pool is written first (touch_pool), so attention reads real memory as in the engine;
 *   3. the anchor shapes (cli_fwd_bench_anchors) before the grid and after each pass, each shape's
 *      median over these sets: the profile's speed, which `sluice validate` compares with the
 *      machine's speed when it runs;
 *   4. the idle terms: a small step after the backend sat idle, asleep or polling, against back to
 *      back (measure_idle).
 * The fit and its median error are printed; the profile records host, CPU model, backend, threads
 * and the model shape so that a stale one is refused.
 */
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/engine_run.h"
#include "cli/fwd_bench.h"
#include "cli/profile_db.h"
#include "cli/sched_opts.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "sched/status.h"
#include "sim/profile.h"

#define CMD "profile"
#define MAX_POINTS 256
#define BIG_M 512 /* prompt chunks past this are timed split only (measure_forward) */
#define PASSES 9 /* the grid is timed this many times over; a point's time is the median of passes */
#define ONCE_S 0.5 /* s: a shape this long is timed in the first pass only (shape()) */

static const char usage[] =
    "usage: sluice profile -m MODEL [--backend cpu|cuda] [--threads N] [--kv-dtype f32|f16|int8] [-o NAME] [--db FILE]\n"
    "                      [--budget S]\n"
    "                      [scheduler knobs: --max-num-seqs N --max-num-batched-tokens N --max-seq-len N ...]\n"
    "  times the engine's forward pass at the step shapes the scheduler produces (up to the knobs'\n"
    "  limits: engine defaults unless given), fits the simulator's step-time model and stores it\n"
    "  --budget S: the grid is timed up to 9 times over (a shape's time: the median of the passes)\n"
    "  while the passes fit in S seconds from the start; one pass at least\n"
    "  --kv-dtype: the KV cache elements on the cpu backend (alias --kv-cache-dtype); the profile keeps\n"
    "  it, and `sluice validate` refuses a profile of another one\n"
    "  defaults: --backend cpu, --threads all cores, --kv-dtype f16 on CPUs with AVX-512 (f32\n"
    "  elsewhere), -o MODEL-BACKEND-tTHREADS (and -kvf16 or -kvint8), --db sluice.db, --budget 100\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- host overhead: the engine loop around the forward pass --------------------------------- */

/* A burst of short requests (a prompt of 8 tokens) with staggered output lengths, all arriving at
 * once: the batch shrinks one by one, so steps cover 1 .. n sampled rows. The engine's own config
 * (KV pool, context, model shape) goes to *used; the step records stay in r for fit_host. */
static int run_burst(const cli_engine_opts_t *eo, cli_engine_run_t *r, sched_config_t *used, char *err,
                     size_t errlen)
{
    sluice_engine *e = cli_engine_open(eo, r, err, errlen);
    if (!e)
        return SL_EINVAL;
    *used = *eng_engine_sched_config(e);
    wl_trace_t *tr = wl_trace_create();
    int n = used->max_num_seqs < 32 ? used->max_num_seqs : 32, rc = tr ? SL_OK : SL_ENOMEM;
    int plen = used->max_sequence_length / 4 < 8 ? used->max_sequence_length / 4 : 8;
    for (int i = 0; i < n && rc == SL_OK; i++) {
        wl_request_t q = {.arrival = 0, .prompt_len = plen > 1 ? plen : 1, .output_len = 2 + 2 * (i + 1),
                          .prefix_group = -1};
        if (q.prompt_len + q.output_len > used->max_sequence_length)
            q.output_len = used->max_sequence_length - q.prompt_len;
        rc = wl_trace_append(tr, &q);
    }
    if (rc == SL_OK)
        rc = cli_engine_replay(e, eo, tr, 0, r, err, errlen);
    else
        snprintf(err, errlen, "out of memory");
    wl_trace_free(tr);
    sluice_engine_free(e);
    return rc;
}

/* The host terms: per step of the burst, the time from its start to the next step's start beyond
 * the step's own forward pass (planning, batch copy, sampling, commit, callbacks), against the
 * rows sampled. Also *loop_ratio: the median of the burst's forward times over what the profile
 * predicts for their shapes, a diagnostic of how a forward inside the serving loop compares with
 * back-to-back ones. */
static int fit_host(sim_profile_t *p, const cli_engine_run_t *r, double *loop_ratio, char *err, size_t errlen)
{
    double *ov = sl_malloc(sizeof *ov * (r->n_step + 1)), *ratio = sl_malloc(sizeof *ratio * (r->n_step + 1));
    int *rows = sl_malloc(sizeof *rows * (r->n_step + 1)), k = 0;
    if (!ov || !rows || !ratio) {
        sl_free(ov), sl_free(rows), sl_free(ratio);
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    for (size_t i = 0; i + 1 < r->n_step; i++) {
        const an_step_rec_t *s = &r->step[i];
        ratio[k] = r->forward_s[i] / sim_profile_forward_seqs(p, s->n_tokens, r->n_sampled[i], r->prefill_pairs[i],
                                                              r->dec_kv + r->dec_first[i], s->n_decode_seqs);
        ov[k] = fmax(0, r->step[i + 1].t_start - s->t_start - r->forward_s[i]);
        rows[k++] = r->n_sampled[i];
    }
    int rc = sim_profile_fit_host(p, ov, rows, k, err, (int)errlen);
    *loop_ratio = cli_median(ratio, k);
    sl_free(ov), sl_free(rows), sl_free(ratio);
    return rc;
}

/* ---- forward passes through the backend ----------------------------------------------------- */

typedef struct grid {
    cli_fwd_bench_t *fb;
    sim_profile_point_t pts[MAX_POINTS];
    double t[MAX_POINTS][PASSES]; /* each pass's time of each point */
    int n_pts, pass, cursor;       /* pass 0 lists the points; later passes revisit them in order */
    double repeat_s;               /* pass 0: the time spent on shapes later passes time again */
} grid_t;

/* One shape (cli_fwd_bench_shape's arguments), timed (after a warm-up run, the mean of up to 20
 * runs within 0.1 s: a long run of small steps pays its rare slow ones, which a median leaves out:
 * stories260K's decodes averaged 1.02-1.08x their median back to back) into this pass's slot of
 * its point; pass 0 adds the point. Skipped (SL_OK, no point) when it
 * does not fit. A shape that took over ONCE_S in pass 0 keeps that time in later passes: a long
 * step averages the machine's noise over its own length (prompt chunks of 512 tokens vary by 2%
 * between passes, 15-ms decode steps by 5-10%), and timing it again would crowd the short
 * shapes' repeats out of the budget. */
static int shape(grid_t *b, int n_pre, int q, int ctx_pre, bool pre_rows, int n_dec, int ctx_dec, char *err,
                 size_t errlen)
{
    sim_profile_point_t pt;
    if ((b->pass == 0 && b->n_pts >= MAX_POINTS) || (b->pass > 0 && b->cursor >= b->n_pts))
        return SL_OK;
    if (!cli_fwd_bench_shape(b->fb, n_pre, q, ctx_pre, pre_rows, n_dec, ctx_dec, &pt))
        return SL_OK;
    int idx = b->pass == 0 ? b->n_pts : b->cursor;
    if (b->pass > 0 && b->t[idx][0] > ONCE_S) {
        b->t[idx][b->pass] = b->t[idx][0];
        b->cursor++;
        return SL_OK;
    }
    double t, t0 = now_s();
    int rc = cli_fwd_bench_mean(b->fb, 20, 0.1, &t, err, errlen);
    if (rc != SL_OK)
        return rc;
    if (b->pass == 0) {
        b->pts[b->n_pts++] = pt;
        if (t <= ONCE_S)
            b->repeat_s += now_s() - t0;
    } else {
        b->cursor++;
    }
    b->t[idx][b->pass] = t;
    return SL_OK;
}

/* Waits gap seconds as the engine does between steps: asleep (slept), or polling, a yield every
 * 64 polls (engine.c's idle_wait). */
static void idle_for(double gap, bool slept)
{
    if (slept) {
        struct timespec ts = {(time_t)gap, (long)((gap - floor(gap)) * 1e9)};
        nanosleep(&ts, NULL);
        return;
    }
    static atomic_uint kicks; /* what the engine polls; nothing kicks this one */
    const unsigned k0 = atomic_load_explicit(&kicks, memory_order_acquire);
    const double until = now_s() + gap;
    for (unsigned i = 1; atomic_load_explicit(&kicks, memory_order_acquire) == k0; i++)
        if (i % 64 == 0) {
            if (now_s() >= until)
                break;
            sched_yield();
        }
}

/* extra[g]: how much longer the shape built last takes after idling gap[g] (the median of 5)
 * than base, back to back. */
static int after_gaps(cli_fwd_bench_t *b, const double *gap, int n, bool slept, double base, double *extra,
                      char *err, size_t errlen)
{
    enum { REPS = 5 };
    double t[REPS];
    for (int g = 0; g < n; g++) {
        for (int r = 0; r < REPS; r++) {
            idle_for(gap[g], slept);
            int rc = cli_fwd_bench_run(b, &t[r], err, errlen);
            if (rc != SL_OK)
                return rc;
        }
        extra[g] = cli_median(t, REPS) - base;
    }
    return SL_OK;
}

/* The idle terms: a one-sequence decode step after the backend sat idle, against the same step back
 * to back (median of 5 each).
 * - wake: idle asleep, with the pool's workers asleep too after their default 2-ms spin. wake_s is
 *   the extra time after the longest gap, when it is measurable (over 0.05 ms and half the step);
 *   idle_after_s the shortest gap that costs at least half of it. Waking a sleeping worker took
 *   ~9 ms on a 2-core VM (a halted vCPU rescheduled by the hypervisor).
 * - cold: idle polling, as the engine does for idle_spin_ms after a step, the workers polling too.
 *   Nothing sleeps, yet what the kernel and other processes ran meanwhile has evicted the step's
 *   weights and workspace: stories260K's 0.064-ms decode took 0.08-0.16 ms more after 5-400 ms.
 *   cold_s is the median extra of the three longest gaps, when over 0.02 ms and a tenth of the
 *   step; cold_after_s the shortest gap that costs at least half of it. */
static int measure_idle(cli_fwd_bench_t *b, sim_profile_t *p, char *err, size_t errlen)
{
    static const double sleep_gap[] = {0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3};
    static const double poll_gap[] = {1e-3, 5e-3, 20e-3, 50e-3, 100e-3, 200e-3};
    enum { N_SLEEP = sizeof sleep_gap / sizeof sleep_gap[0], N_POLL = sizeof poll_gap / sizeof poll_gap[0] };
    sim_profile_point_t pt;
    double extra[N_SLEEP], base;
    int rc;
    p->wake_s = p->idle_after_s = p->cold_s = p->cold_after_s = 0;
    if (!cli_fwd_bench_shape(b, 0, 0, 0, false, 1, 16, &pt))
        return SL_OK;
    if ((rc = cli_fwd_bench_median(b, 5, INFINITY, &base, err, errlen)) != SL_OK ||
        (rc = after_gaps(b, sleep_gap, N_SLEEP, true, base, extra, err, errlen)) != SL_OK)
        return rc;
    double w = extra[N_SLEEP - 1];
    if (w > 0.05e-3 && w > 0.5 * base)
        for (int g = 0; g < N_SLEEP && !p->wake_s; g++)
            if (extra[g] >= 0.5 * w)
                p->wake_s = w, p->idle_after_s = sleep_gap[g];

    cli_fwd_bench_set_idle_spin(b, 10.0); /* longer than any gap: the workers poll throughout */
    rc = after_gaps(b, poll_gap, N_POLL, false, base, extra, err, errlen);
    cli_fwd_bench_set_idle_spin(b, eng_backend_params_default().idle_spin_s);
    if (rc != SL_OK)
        return rc;
    double longest[3] = {extra[N_POLL - 3], extra[N_POLL - 2], extra[N_POLL - 1]};
    double c = cli_median(longest, 3);
    if (c > 0.02e-3 && c > 0.1 * base)
        for (int g = 0; g < N_POLL && !p->cold_s; g++)
            if (extra[g] >= 0.5 * c)
                p->cold_s = c, p->cold_after_s = poll_gap[g];
    return SL_OK;
}

/* The grid (see the file comment). T = max_num_batched_tokens, S = max_num_seqs, C = max seq len. */
static int measure_forward(grid_t *b, const sim_profile_t *p, int T, int S, int C, char *err, size_t errlen)
{
    int rc = SL_OK;
    /* one prompt chunk at context 0, with and without a logits row; and the same M split into
     * chunks of 32 tokens (or as few more as max_num_seqs allows), whose attention is small:
     * dense(M) apart from prefill attention. Past BIG_M only the split one: a single chunk of
     * 2048 tokens spends most of its time in attention (19 of 32 s for SmolLM2-135M at one
     * thread), which the context chunks below already pin, and the profile must stay under two
     * minutes */
    for (int i = 0; i < p->n_knots && rc == SL_OK; i++) {
        int m = (int)p->knot[i], n = (m + 31) / 32 < S ? (m + 31) / 32 : S;
        while (m % n)
            n--;
        if (m > C)
            continue;
        if (m <= BIG_M)
            rc = shape(b, 1, m, 0, true, 0, 0, err, errlen);
        if (rc == SL_OK && i % 3 == 2 && m <= BIG_M)
            rc = shape(b, 1, m, 0, false, 0, 0, err, errlen);
        if (rc == SL_OK && (n > 1 || m > BIG_M))
            rc = shape(b, n, m / n, 0, i % 2 == 0 || m > BIG_M, 0, 0, err, errlen);
    }
    /* chunks after a cached context: prefill attention (512-token chunks at C/2 only) */
    int qs[] = {16, 128, 512}, fr[] = {4, 2, 1};
    for (int i = 0; i < 3 && rc == SL_OK; i++)
        for (int j = 0; j < 3 && rc == SL_OK; j++) {
            int q = qs[i] < T ? qs[i] : T, ctx = C / fr[j] - q;
            if (ctx > 0 && (qs[i] <= BIG_M / 2 || j == 1))
                rc = shape(b, 1, q, ctx, j != 1, 0, 0, err, errlen);
        }
    /* decode batches: decode attention and the LM head at rows = batch, at every LM-head knot (one
     * context for the batch sizes between powers of two: they pin their knot, the powers of two
     * the attention). 1, 2 and 4 sequences also at every decode knot under C/4 (16, 32, .. KV
     * tokens): a knot no point comes near is a free coefficient (it once fitted dec(256) at
     * 0.003 ms, pricing single-sequence decode at contexts 150-500 20% low); larger batches also
     * at 64 tokens, or the LM head's knot at their row count soaks up their attention */
    int ctxs[] = {16, 31, 63, 127, 255, 511, C / 4, C / 2 - 1, C - 1}, n_small = 6;
    for (int i = 0; i < p->n_lm_knots && rc == SL_OK; i++) {
        int bs = (int)p->lm_knot[i];
        bool pow2 = (bs & (bs - 1)) == 0 || bs == S;
        for (int j = 0; j < 9 && rc == SL_OK; j++)
            if (ctxs[j] >= 1 && ctxs[j] < C &&
                (j < n_small ? pow2 && ctxs[j] < C / 4 && (bs <= 4 || ctxs[j] == 63) : pow2 || j == n_small))
                rc = shape(b, 0, 0, 0, false, bs, ctxs[j], err, errlen);
    }
    /* several prompt chunks at once, and mixed prefill + decode steps */
    int multi[][2] = {{4, 32}, {8, 64}, {16, 16}};
    for (int i = 0; i < 3 && rc == SL_OK; i++)
        if (multi[i][0] <= S && multi[i][0] * multi[i][1] <= T)
            rc = shape(b, multi[i][0], multi[i][1], 0, true, 0, 0, err, errlen);
    int mix[][3] = {{64, 4, 4}, {256, 16, 4}, {256, 4, 2}, {T / 4, S / 2, 2}};
    for (int i = 0; i < 4 && rc == SL_OK; i++) {
        int q = mix[i][0] < T - mix[i][1] ? mix[i][0] : T - mix[i][1], nd = mix[i][1] < S - 1 ? mix[i][1] : S - 1;
        if (q >= 1 && nd >= 1)
            rc = shape(b, 1, q, 0, true, nd, C / mix[i][2] - 1, err, errlen);
    }
    return rc;
}

/* ---- the command ---------------------------------------------------------------------------- */

typedef struct opts {
    const char *name, *db;
    double budget; /* s: passes after the first only while they fit */
    cli_engine_opts_t eng;
} opts_t;

static int parse(int argc, char **argv, opts_t *o)
{
    sluice_engine_params ep = sluice_engine_default_params();
    *o = (opts_t){.db = "sluice.db", .budget = 100,
                  .eng = {.backend = "cpu", .seed = 1, .kv_dtype = ep.kv_dtype, .lookup_min = ep.prompt_lookup_min,
                          .lookup_max = ep.prompt_lookup_max, .sched = eng_sched_config_from_params(&ep)}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char err[512];
        int rc = sched_opts_parse_arg(&o->eng.sched, argc, argv, &i, err, sizeof err);
        if (rc < 0)
            return cli_fail(CMD, "%s", err);
        if (rc > 0)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return -1;
        }
        const char **s = !strcmp(a, "-m") || !strcmp(a, "--model") ? &o->eng.model
                         : !strcmp(a, "--backend")                 ? &o->eng.backend
                         : !strcmp(a, "-o") || !strcmp(a, "--name") ? &o->name
                         : !strcmp(a, "--db")                      ? &o->db
                                                                   : NULL;
        if (s && v) {
            *s = v, i++;
        } else if (!strcmp(a, "--budget") && v) {
            char *end;
            double x = strtod(v, &end);
            if (end == v || *end || !(x >= 0 && x <= 86400))
                return cli_fail(CMD, "--budget: expected seconds in 0..86400, got '%s'", v);
            o->budget = x, i++;
        } else if (cli_is_kv_dtype_flag(a)) {
            if (cli_kv_dtype(CMD, a, v, &o->eng.kv_dtype))
                return 2;
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            char *end;
            long t = strtol(v, &end, 10);
            if (end == v || *end || t < 1 || t > 1024)
                return cli_fail(CMD, "--threads: expected 1..1024, got '%s'", v);
            o->eng.threads = (int)t, i++;
        } else {
            fputs(usage, stderr);
            return cli_fail(CMD, "unknown option or missing value: '%s'", a);
        }
    }
    if (!o->eng.model)
        return cli_fail(CMD, "-m MODEL is required");
    if (o->eng.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->eng.threads = n > 0 ? (int)n : 1; /* what the CPU backend takes for 0 */
    }
    return 0;
}

int cmd_profile(int argc, char **argv)
{
    opts_t o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    char err[1024];
    double t0 = now_s();
    sim_profile_t p;
    memset(&p, 0, sizeof p);
    if (o.name)
        snprintf(p.name, sizeof p.name, "%s", o.name);
    else
        cli_profile_default_name(o.eng.model, o.eng.backend, o.eng.threads, o.eng.kv_dtype, p.name, sizeof p.name);
    snprintf(p.backend, sizeof p.backend, "%s", o.eng.backend);
    snprintf(p.model_path, sizeof p.model_path, "%s", o.eng.model);
    p.threads = o.eng.threads;
    cli_machine_id(p.host, sizeof p.host, p.cpu, sizeof p.cpu);
    time_t now = time(NULL);
    strftime(p.created, sizeof p.created, "%Y-%m-%d %H:%M:%S", gmtime(&now));

    /* 1. the engine loop, and the engine's own sizing of everything */
    sched_config_t sc;
    cli_engine_run_t burst = {0};
    grid_t *b = NULL;
    int status = 0;
    double loop_ratio = NAN;
    if ((rc = run_burst(&o.eng, &burst, &sc, err, sizeof err)) != SL_OK) {
        status = cli_fail(CMD, "%s", err);
        goto out;
    }
    p.model = sc.model;
    p.max_seq_len = sc.max_sequence_length;
    int T = sc.max_num_batched_tokens < sc.max_sequence_length ? sc.max_num_batched_tokens : sc.max_sequence_length;
    int S = sc.max_num_seqs < CLI_FWD_MAX_SEQS ? sc.max_num_seqs : CLI_FWD_MAX_SEQS, C = sc.max_sequence_length;
    if (sim_profile_set_knots(&p, T, S, C) != SL_OK) {
        status = cli_fail(CMD, "max_num_batched_tokens %d / max_num_seqs %d: out of the profile's range", T, S);
        goto out;
    }

    /* 2. forward passes on a backend of the engine's kind, with a pool of the engine's size */
    if (!(b = sl_calloc(1, sizeof *b)) ||
        !(b->fb = cli_fwd_bench_open(o.eng.model, o.eng.backend, o.eng.threads, o.eng.kv_dtype, T + S, err,
                                     sizeof err))) {
        status = cli_fail(CMD, "%s", b ? err : "out of memory");
        goto out;
    }
    p.kv_budget_bytes = cli_fwd_bench_kv_budget(b->fb);
    int touched = cli_fwd_bench_pool(b->fb, sc.num_blocks, sc.block_size, 0.15 * o.budget, err, sizeof err);
    if (touched < 0) {
        status = cli_fail(CMD, "%s", err);
        goto out;
    }
    /* the anchor shapes before the grid and after each pass of it: the profile's speed, for validate
     * to compare. One set is a fraction of a second, and this machine's speed moves by several
     * percent at that scale, so each shape's time is its median over the sets */
    double anchor[1 + PASSES][CLI_FWD_ANCHORS], t_set = now_s();
    int anchor_m[CLI_FWD_ANCHORS], sets = 0;
    rc = cli_fwd_bench_anchors(b->fb, S, C, T, anchor[sets++], anchor_m, err, sizeof err);
    t_set = now_s() - t_set;
    int passes = PASSES;
    for (b->pass = 0; b->pass < passes && rc == SL_OK; b->pass++) {
        b->cursor = 0;
        rc = measure_forward(b, &p, T, S, C, err, sizeof err);
        if (b->pass == 0) { /* as many more passes (each with its anchor set) as the time budget holds */
            double per = b->repeat_s + t_set, left = o.budget - (now_s() - t0) - t_set;
            int more = per > 0 && left > 0 ? (int)(left / per) : 0;
            passes = 1 + (more < PASSES - 1 ? more : PASSES - 1);
        }
        if (rc == SL_OK)
            rc = cli_fwd_bench_anchors(b->fb, S, C, T, anchor[sets++], anchor_m, err, sizeof err);
    }
    for (int i = 0; i < b->n_pts; i++)
        b->pts[i].t = cli_median(b->t[i], passes);
    for (int i = 0; i < CLI_FWD_ANCHORS && rc == SL_OK; i++) {
        double v[1 + PASSES];
        for (int s = 0; s < sets; s++)
            v[s] = anchor[s][i];
        p.anchor_s[i] = cli_median(v, sets);
    }
    if (rc == SL_OK)
        rc = measure_idle(b->fb, &p, err, sizeof err);
    if (rc != SL_OK || (rc = sim_profile_fit(&p, b->pts, b->n_pts, err, (int)sizeof err)) != SL_OK ||
        (rc = fit_host(&p, &burst, &loop_ratio, err, sizeof err)) != SL_OK) {
        status = cli_fail(CMD, "%s", err);
        goto out;
    }
    if (cli_profile_save(o.db, &p, err, sizeof err) != SL_OK) {
        status = cli_fail(CMD, "%s", err);
        goto out;
    }
    printf("sluice profile: %s (%s) on %s, %d threads, KV %s, host %s, CPU %s\n", p.model.name, o.eng.model,
           p.backend, p.threads, cli_kv_dtype_name(cli_kv_dtype_kept(p.backend, o.eng.kv_dtype)), p.host, p.cpu);
    printf("  %d forward shapes timed, %d pass%s; fit median error %.1f%%; KV pool written: %d of %d blocks\n",
           b->n_pts, passes, passes > 1 ? "es" : "", 100 * p.fit_err, touched, sc.num_blocks);
    printf("  host per step %.3f ms + %.1f us per sampled row; forwards inside the engine loop ran %.2fx "
           "the fit (median over %zu steps)\n", 1e3 * p.host_s, 1e6 * p.host_row, loop_ratio, burst.n_step);
    if (p.wake_s > 0)
        printf("  a step after %.1f ms or more idle pays %.3f ms more (workers asleep)\n", 1e3 * p.idle_after_s,
               1e3 * p.wake_s);
    else
        printf("  a step after idle costs no more than back to back\n");
    if (p.cold_s > 0)
        printf("  a step after %.1f ms or more of polling pays %.3f ms more (caches gone cold)\n",
               1e3 * p.cold_after_s, 1e3 * p.cold_s);
    else
        printf("  a step after the engine polled for work costs no more than back to back\n");
    printf("  attention: prefill %.3g ns per q*kv pair; decode, one sequence by its KV tokens:\n   ", 1e9 * p.pre);
    for (int i = 0; i < p.n_dec_knots; i++)
        printf(" %.0f: %.3f ms", p.dec_knot[i], 1e3 * p.dec[i]);
    printf("\n  and beyond that, a step by its KV tokens in all:\n   ");
    for (int i = 0; i < p.n_kv_knots; i++)
        printf(" %.0f: %.3f ms", p.kv_knot[i], 1e3 * p.kv[i]);
    printf("\n  %8s %12s %12s\n", "M/rows", "dense ms", "LM head ms");
    for (int i = 0; i < p.n_knots; i++) {
        printf("  %8.0f %12.3f", p.knot[i], 1e3 * p.dense[i]);
        if (i < p.n_lm_knots)
            printf(" %12.3f", 1e3 * p.lm[i]);
        printf("\n");
    }
    printf("  %-9s %6s %5s %10s %10s %10s %7s\n", "shape", "M", "rows", "ctx work", "meas ms", "fit ms", "err");
    for (int i = 0; i < b->n_pts; i++) {
        const sim_profile_point_t *q = &b->pts[i];
        double f = sim_profile_forward(&p, q);
        printf("  %-9s %6d %5d %10.0f %10.3f %10.3f %+6.1f%%\n",
               q->n_dec && q->m > q->n_dec ? "mixed" : q->n_dec ? "decode" : "prefill", q->m, q->rows,
               q->pre_work + q->n_dec * q->dec_kv, 1e3 * q->t, 1e3 * f, 100 * (f - q->t) / q->t);
    }
    printf("stored as engine profile '%s' in %s (%.1f s)\n", p.name, o.db, now_s() - t0);
out:
    cli_engine_run_free(&burst);
    if (b)
        cli_fwd_bench_free(b->fb);
    sl_free(b);
    return status;
}
