/* tune.c — grid + Nelder–Mead search over batching strategies and knobs (see tune.h).
 *
 * Design notes
 *   1. Every evaluation goes through tuner_eval(), which owns the budget and the cache. An entry
 *      is appended (pending) under the lock before its evaluation starts, so a second thread
 *      asking for the same configuration waits for the first one's score instead of paying again.
 *   2. The simplex works in log2 of each knob: a step of 1 doubles the knob, which matches how
 *      these knobs act (batch sizes, budgets and timeouts matter by ratio, not by difference).
 *   3. When the budget is spent the objective returns a large value and the simplex loop stops;
 *      a worker whose simplex converges takes the next start point, so all threads stay busy.
 */
#include "sim/tune.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multimin.h>

/* ---- knobs ----------------------------------------------------------------------------------- */

typedef struct knob_dim {
    const char *name;
    double lo, hi;   /* searched range */
    bool integer;
    double grid[3];  /* grid values, 0-terminated when fewer */
} knob_dim_t;

static const knob_dim_t K_MBS = {"max_batch_size", 1, 512, true, {8, 32, 128}};
static const knob_dim_t K_MBS_B = {"max_batch_size", 1, 512, true, {16, 64, 128}};
static const knob_dim_t K_TMO = {"batch_timeout_ms", 1, 2000, false, {10, 50, 200}};
static const knob_dim_t K_TMO_B = {"batch_timeout_ms", 1, 2000, false, {20, 100, 0}};
static const knob_dim_t K_BKT = {"bucket_size", 16, 4096, true, {64, 256, 0}};
static const knob_dim_t K_MEM = {"memory_limit_mb", 256, 65536, false, {1024, 4096, 16384}};
static const knob_dim_t K_MNBT = {"max_num_batched_tokens", 64, 65536, true, {512, 2048, 8192}};
static const knob_dim_t K_MNS = {"max_num_seqs", 1, 1024, true, {32, 128, 512}};

enum { MAX_DIMS = 3 };
typedef struct strategy_space {
    int n;
    const knob_dim_t *dim[MAX_DIMS];
    const char *names[MAX_DIMS + 1];
} strategy_space_t;

static const strategy_space_t spaces[4] = {
    [SCHED_NAIVE] = {2, {&K_MBS, &K_TMO}, {"max_batch_size", "batch_timeout_ms", NULL}},
    [SCHED_BUCKETED] = {3, {&K_MBS_B, &K_TMO_B, &K_BKT}, {"max_batch_size", "batch_timeout_ms", "bucket_size", NULL}},
    [SCHED_MEMORY_AWARE] = {2, {&K_MEM, &K_TMO_B}, {"memory_limit_mb", "batch_timeout_ms", NULL}},
    [SCHED_CONTINUOUS] = {2, {&K_MNBT, &K_MNS}, {"max_num_batched_tokens", "max_num_seqs", NULL}},
};

const char *const *sim_tune_knobs(sched_strategy_t s)
{
    static const char *const none[] = {NULL};
    return (unsigned)s < 4 ? spaces[s].names : none;
}

/* Sets a searched knob (rounded / clamped); its own name table guarantees the key exists. */
static void knob_put(sched_config_t *c, const knob_dim_t *d, double v)
{
    v = fmin(fmax(v, d->lo), d->hi);
    char txt[32];
    if (d->integer)
        snprintf(txt, sizeof txt, "%.0f", round(v));
    else
        snprintf(txt, sizeof txt, "%.3g", v);
    sched_config_set(c, d->name, txt, NULL, 0);
}

static double knob_value(const sched_config_t *c, const char *name)
{
    char txt[64] = "0";
    sched_config_get(c, name, txt, sizeof txt);
    return atof(txt);
}

void sim_tune_knobs_text(const sched_config_t *cfg, char *buf, int len)
{
    int k = 0;
    buf[0] = '\0';
    for (const char *const *n = sim_tune_knobs(cfg->strategy); *n && k < len; n++) {
        char v[64];
        sched_config_get(cfg, *n, v, sizeof v);
        k += snprintf(buf + k, (size_t)(len - k), "%s%s=%s", k ? " " : "", *n, v);
    }
    if (cfg->strategy == SCHED_CONTINUOUS && cfg->num_speculative_tokens > 0 && k < len)
        snprintf(buf + k, (size_t)(len - k), "%snum_speculative_tokens=%d", k ? " " : "", cfg->num_speculative_tokens);
}

static bool same_point(const sched_config_t *a, const sched_config_t *b)
{
    if (a->strategy != b->strategy || a->num_speculative_tokens != b->num_speculative_tokens)
        return false;
    for (const char *const *n = sim_tune_knobs(a->strategy); *n; n++)
        if (knob_value(a, *n) != knob_value(b, *n))
            return false;
    return true;
}

void sim_tune_opts_default(sim_tune_opts_t *o, const sched_config_t *base)
{
    memset(o, 0, sizeof *o);
    o->base = *base;
    o->budget = 50;
    o->jobs = 2;
    for (int i = 0; i < 4; i++)
        o->strategy[i] = true;
}

int sim_tune_compare(const sim_tune_score_t *a, const sim_tune_score_t *b)
{
    if (a->slo_met != b->slo_met)
        return a->slo_met ? -1 : 1;
    if (a->goodput != b->goodput)
        return a->goodput > b->goodput ? -1 : 1;
    if (a->throughput != b->throughput)
        return a->throughput > b->throughput ? -1 : 1;
    if (a->ttft_p99 != b->ttft_p99)
        return a->ttft_p99 < b->ttft_p99 ? -1 : 1;
    return 0;
}

/* ---- the tuner: budget, cache, results ------------------------------------------------------ */

typedef struct tune_slot {
    sim_tune_entry_t e;
    bool done, failed;
} tune_slot_t;

typedef struct tuner {
    const sim_tune_opts_t *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tune_slot_t *slot;
    int n, cap;
    int status;          /* first evaluation error, SL_OK otherwise */
    char err[512];
    /* work queues */
    sched_config_t *grid;
    int n_grid, next_grid;
    int *starts;         /* refinement start points: slot indices */
    int n_starts, next_start;
} tuner_t;

enum { EVAL_OK = 0, EVAL_SPENT = 1, EVAL_INVALID = 2 };

/* Scores cfg: from the cache, or by an evaluation that costs one unit of budget. Returns EVAL_OK
 * with *score, EVAL_SPENT (budget gone or the search stopped), EVAL_INVALID (config rejected). */
static int tuner_eval(tuner_t *t, int worker, const sched_config_t *cfg, const char *phase, sim_tune_score_t *score)
{
    if (sched_config_validate(cfg, NULL, 0) != SL_OK)
        return EVAL_INVALID;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n; i++) {
        if (!same_point(&t->slot[i].e.cfg, cfg))
            continue;
        while (!t->slot[i].done)
            pthread_cond_wait(&t->cv, &t->mu);
        int r = t->slot[i].failed ? EVAL_SPENT : EVAL_OK;
        *score = t->slot[i].e.score;
        pthread_mutex_unlock(&t->mu);
        return r;
    }
    if (t->status != SL_OK || t->n >= t->o->budget || t->n == t->cap) {
        pthread_mutex_unlock(&t->mu);
        return EVAL_SPENT;
    }
    int i = t->n++;
    t->slot[i] = (tune_slot_t){.e = {.cfg = *cfg, .phase = phase}};
    pthread_mutex_unlock(&t->mu);

    char err[512] = "";
    sim_tune_score_t s = {0};
    int rc = t->o->eval(t->o->ctx, worker, cfg, &s, err, sizeof err);

    pthread_mutex_lock(&t->mu);
    t->slot[i].done = true;
    t->slot[i].e.score = s;
    if (rc != SL_OK) {
        t->slot[i].failed = true;
        if (t->status == SL_OK) {
            t->status = rc;
            snprintf(t->err, sizeof t->err, "%s", err[0] ? err : sl_strerror(rc));
        }
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    *score = s;
    return rc == SL_OK ? EVAL_OK : EVAL_SPENT;
}

/* ---- grid ----------------------------------------------------------------------------------- */

static int grid_values(const knob_dim_t *d)
{
    int n = 0;
    while (n < 3 && d->grid[n] > 0)
        n++;
    return n;
}

/* Appends up to `quota` points of strategy s's grid product, evenly spread over the product. */
static void grid_build(tuner_t *t, sched_strategy_t s, int quota)
{
    const strategy_space_t *sp = &spaces[s];
    int total = 1;
    for (int d = 0; d < sp->n; d++)
        total *= grid_values(sp->dim[d]);
    int take = quota < total ? quota : total;
    for (int k = 0; k < take; k++) {
        int idx = (int)((long)k * total / take), rem = idx;
        sched_config_t c = t->o->base;
        c.strategy = s;
        for (int d = 0; d < sp->n; d++) {
            int nv = grid_values(sp->dim[d]);
            knob_put(&c, sp->dim[d], sp->dim[d]->grid[rem % nv]);
            rem /= nv;
        }
        t->grid[t->n_grid++] = c;
    }
}

static void *grid_worker(void *arg)
{
    void **a = arg;
    tuner_t *t = a[0];
    int worker = (int)(intptr_t)a[1];
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int i = t->next_grid < t->n_grid ? t->next_grid++ : -1;
        pthread_mutex_unlock(&t->mu);
        if (i < 0)
            return NULL;
        sim_tune_score_t s;
        tuner_eval(t, worker, &t->grid[i], "grid", &s);
    }
}

/* ---- refinement (Nelder–Mead) --------------------------------------------------------------- */

typedef struct nm_ctx {
    tuner_t *t;
    int worker;
    sched_config_t start;
    const strategy_space_t *sp;
    bool spent;
} nm_ctx_t;

static double nm_objective(const gsl_vector *x, void *p)
{
    nm_ctx_t *c = p;
    sched_config_t cfg = c->start;
    for (int d = 0; d < c->sp->n; d++)
        knob_put(&cfg, c->sp->dim[d], exp2(gsl_vector_get(x, (size_t)d)));
    sim_tune_score_t s;
    int r = tuner_eval(c->t, c->worker, &cfg, "refine", &s);
    if (r == EVAL_SPENT)
        c->spent = true;
    if (r != EVAL_OK)
        return 1e30;
    return -(s.goodput + 1e-3 * s.throughput + (s.slo_met ? 1e3 : 0));
}

static void refine_from(nm_ctx_t *c)
{
    size_t n = (size_t)c->sp->n;
    gsl_vector *x = gsl_vector_alloc(n), *step = gsl_vector_alloc(n);
    gsl_multimin_fminimizer *m = gsl_multimin_fminimizer_alloc(gsl_multimin_fminimizer_nmsimplex2, n);
    if (!x || !step || !m)
        goto out;
    for (size_t d = 0; d < n; d++) {
        const knob_dim_t *k = c->sp->dim[d];
        double v = fmin(fmax(knob_value(&c->start, k->name), k->lo), k->hi);
        gsl_vector_set(x, d, log2(v));
        gsl_vector_set(step, d, 1.0);
    }
    gsl_multimin_function f = {nm_objective, n, c};
    if (gsl_multimin_fminimizer_set(m, &f, x, step) != GSL_SUCCESS)
        goto out;
    for (int it = 0; it < 100 && !c->spent; it++) {
        if (gsl_multimin_fminimizer_iterate(m) != GSL_SUCCESS)
            break;
        if (gsl_multimin_test_size(gsl_multimin_fminimizer_size(m), 0.1) == GSL_SUCCESS)
            break;
    }
out:
    gsl_multimin_fminimizer_free(m);
    gsl_vector_free(x);
    gsl_vector_free(step);
}

static void *refine_worker(void *arg)
{
    void **a = arg;
    tuner_t *t = a[0];
    nm_ctx_t c = {.t = t, .worker = (int)(intptr_t)a[1]};
    while (!c.spent) {
        pthread_mutex_lock(&t->mu);
        int i = t->next_start < t->n_starts ? t->starts[t->next_start++] : -1;
        if (i >= 0)
            c.start = t->slot[i].e.cfg;
        bool spent = t->n >= t->o->budget || t->status != SL_OK;
        pthread_mutex_unlock(&t->mu);
        if (i < 0 || spent)
            return NULL;
        c.sp = &spaces[c.start.strategy];
        refine_from(&c);
    }
    return NULL;
}

/* ---- driver --------------------------------------------------------------------------------- */

static void run_workers(tuner_t *t, void *(*fn)(void *))
{
    pthread_t th[64];
    void *args[64][2];
    int started = 0;
    for (int w = 0; w < t->o->jobs; w++) {
        args[w][0] = t, args[w][1] = (void *)(intptr_t)w;
        if (pthread_create(&th[w], NULL, fn, args[w]) == 0)
            started++;
        else
            break;
    }
    if (started == 0) /* no thread could start: work on this one */
        fn(args[0]);
    for (int w = 0; w < started; w++)
        pthread_join(th[w], NULL);
}

static int slot_rank(const void *a, const void *b, void *ctx)
{
    const tune_slot_t *s = ctx;
    return sim_tune_compare(&s[*(const int *)a].e.score, &s[*(const int *)b].e.score);
}

static int entry_rank(const void *a, const void *b)
{
    return sim_tune_compare(&((const sim_tune_entry_t *)a)->score, &((const sim_tune_entry_t *)b)->score);
}

/* Refinement starts: the best entry of each strategy (best strategies first), then the rest in
 * rank order. Uses the second half of t->starts as scratch. */
static void order_starts(tuner_t *t)
{
    int *sorted = t->starts + t->cap, n = 0, k = 0;
    for (int i = 0; i < t->n; i++)
        if (!t->slot[i].failed)
            sorted[n++] = i;
    qsort_r(sorted, (size_t)n, sizeof *sorted, slot_rank, t->slot);
    bool seen[4] = {false};
    for (int j = 0; j < n; j++) {
        int s = t->slot[sorted[j]].e.cfg.strategy;
        if (!seen[s]) {
            seen[s] = true;
            t->starts[k++] = sorted[j];
            sorted[j] = -1;
        }
    }
    for (int j = 0; j < n; j++)
        if (sorted[j] >= 0)
            t->starts[k++] = sorted[j];
    t->n_starts = k;
}

int sim_tune_run(const sim_tune_opts_t *o, sim_tune_result_t *out, char *err, int errlen)
{
    memset(out, 0, sizeof *out);
    int n_strat = 0;
    for (int s = 0; s < 4; s++)
        n_strat += o->strategy[s];
    if (!o->eval || o->budget < 2 || o->budget > 100000 || o->jobs < 1 || o->jobs > 64 || n_strat == 0) {
        snprintf(err, (size_t)errlen, "tune: need an evaluation, budget 2..100000 (got %d), jobs 1..64 (got %d) "
                 "and at least one strategy", o->budget, o->jobs);
        return SL_EINVAL;
    }
    gsl_set_error_handler_off();
    tuner_t t = {.o = o, .cap = o->budget};
    t.slot = sl_calloc((size_t)t.cap, sizeof *t.slot);
    t.grid = sl_calloc((size_t)t.cap, sizeof *t.grid);
    t.starts = sl_calloc((size_t)t.cap * 2, sizeof *t.starts);
    if (!t.slot || !t.grid || !t.starts) {
        sl_free(t.slot), sl_free(t.grid), sl_free(t.starts);
        snprintf(err, (size_t)errlen, "tune: out of memory");
        return SL_ENOMEM;
    }
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);

    /* 1. the baseline: NAIVE with its default knobs */
    sched_config_t def = sched_config_default(), baseline = o->base;
    baseline.strategy = SCHED_NAIVE;
    for (const char *const *n = sim_tune_knobs(SCHED_NAIVE); *n; n++) {
        char v[64];
        sched_config_get(&def, *n, v, sizeof v);
        sched_config_set(&baseline, *n, v, NULL, 0);
    }
    sim_tune_score_t bs;
    int r = tuner_eval(&t, 0, &baseline, "baseline", &bs);
    if (r == EVAL_INVALID) {
        t.status = SL_EINVAL;
        sched_config_validate(&baseline, t.err, sizeof t.err);
    }

    /* 2. the grid, ~60% of the budget shared by the strategies */
    int quota = (o->budget * 6 / 10) / n_strat;
    for (int s = 0; s < 4 && t.status == SL_OK; s++)
        if (o->strategy[s])
            grid_build(&t, (sched_strategy_t)s, quota > 1 ? quota : 1);
    if (t.status == SL_OK)
        run_workers(&t, grid_worker);

    /* 2b. speculation on trial: the best continuous candidate without drafts, so that refinement
     *     starts from whichever is better at this load */
    if (t.status == SL_OK && o->strategy[SCHED_CONTINUOUS] && o->base.num_speculative_tokens > 0) {
        int best = -1;
        for (int i = 0; i < t.n; i++)
            if (!t.slot[i].failed && t.slot[i].e.cfg.strategy == SCHED_CONTINUOUS &&
                (best < 0 || entry_rank(&t.slot[i].e, &t.slot[best].e) < 0))
                best = i;
        if (best >= 0) {
            sched_config_t c = t.slot[best].e.cfg;
            c.num_speculative_tokens = 0;
            sim_tune_score_t sc;
            tuner_eval(&t, 0, &c, "no-spec", &sc);
        }
    }

    /* 3. refinement until the budget is spent */
    if (t.status == SL_OK) {
        order_starts(&t);
        run_workers(&t, refine_worker);
    }

    int rc = t.status;
    if (rc == SL_OK) {
        out->entries = sl_calloc((size_t)t.n, sizeof *out->entries);
        if (!out->entries) {
            rc = SL_ENOMEM;
            snprintf(t.err, sizeof t.err, "tune: out of memory");
        }
    }
    if (rc == SL_OK) {
        for (int i = 0; i < t.n; i++)
            out->entries[i] = t.slot[i].e;
        out->n = t.n;
        qsort(out->entries, (size_t)t.n, sizeof *out->entries, entry_rank);
        for (int i = 0; i < t.n; i++)
            if (!strcmp(out->entries[i].phase, "baseline"))
                out->baseline = i;
    } else {
        snprintf(err, (size_t)errlen, "%s", t.err);
    }
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
    sl_free(t.slot), sl_free(t.grid), sl_free(t.starts);
    return rc;
}

void sim_tune_result_free(sim_tune_result_t *r)
{
    sl_free(r->entries);
    memset(r, 0, sizeof *r);
}
