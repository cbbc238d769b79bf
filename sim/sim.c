/* sim.c — the event loop: a (time, seq) heap, replicas each driving a sched_t, a router.
 *
 * Invariants
 * 1. A replica has at most one step in flight (busy) and then exactly one STEP_DONE event in
 *    the heap; an idle replica has at most one live WAKE event (older ones carry a stale
 *    generation number and are dropped).
 * 2. The heap holds at most one ARRIVAL: the next trace row; popping it pushes the one after.
 * 3. Nothing allocates per step: result arrays grow geometrically to the largest step seen.
 * 4. A sequence's result depends only on (seed, req_id, its step's shape for it): token ids and
 *    draft acceptances are hashes of the position they are for, never drawn from a stream.
 */
#include "sim/sim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sched/status.h"

enum { EV_ARRIVAL = 0, EV_STEP_DONE, EV_WAKE };

typedef struct event {
    double t;
    uint64_t seq;
    int kind, replica;
    uint64_t arg; /* ARRIVAL: trace row; WAKE: generation */
} event_t;

typedef struct replica {
    sched_t *sched;
    sim_cost_t *cost;
    bool busy;
    sched_step_t step;
    sched_step_t priced;       /* the step as priced and reported: drafts not proposed left out */
    sched_seq_step_t *priced_seqs; /* (priced_cap) priced.seqs when it differs from step.seqs */
    int priced_cap;
    sim_cost_parts_t parts;
    double step_start;
    double last_end;           /* when its last step ended (-INFINITY before the first) */
    uint64_t wake_gen;
    double wake_at;            /* time of the live WAKE, INFINITY when none */
    int64_t outstanding;       /* submitted, not yet done */
    sched_seq_result_t *res;   /* (res_cap) */
    int32_t *res_tok;          /* (tok_cap) sampled token ids for token-carrying requests: up to
                                  1 + n_draft per sequence, packed */
    int res_cap, tok_cap;
} replica_t;

struct sim {
    sim_config_t cfg;
    int num_blocks;
    replica_t *rep;
    event_t *heap;
    int heap_n, heap_cap;
    uint64_t ev_seq;
    int32_t *prompt;           /* scratch for synthesised prompts */
    int prompt_cap;
    sched_done_t done[256];
    uint64_t rr;
    sim_hook_t hook;           /* between_steps NULL: none */
    double wake_s, wake_after; /* a step after wake_after idle costs wake_s more (profile runs) */
    double cold_s, cold_after; /* and one after cold_after, cold_s: the larger of the two applies */
};

static const char *const router_names[] = {"round_robin", "least_outstanding", "least_kv"};

const char *sim_router_name(sim_router_t r) { return r <= SIM_ROUTE_LEAST_KV ? router_names[r] : "?"; }

int sim_router_parse(const char *name, sim_router_t *out)
{
    char buf[32];
    size_t n = strlen(name);
    if (n >= sizeof buf)
        return SL_EINVAL;
    for (size_t i = 0; i <= n; i++)
        buf[i] = name[i] == '-' ? '_' : name[i];
    for (int i = 0; i <= SIM_ROUTE_LEAST_KV; i++)
        if (!strcasecmp(buf, router_names[i])) {
            *out = (sim_router_t)i;
            return SL_OK;
        }
    return SL_EINVAL;
}

int sim_config_default(sim_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->sched = sched_config_default();
    cfg->replicas = 1, cfg->tp = 1, cfg->plan_kv = true;
    cfg->router = SIM_ROUTE_ROUND_ROBIN;
    cfg->engine_idle_spin_s = 1;
    cfg->spec_propose = 1;
    int rc = sim_hw_builtin("a100-80gb", &cfg->hw);
    if (rc == SL_OK)
        rc = sched_model_shape_builtin("llama2-7b", &cfg->model);
    return rc;
}

/* ---- heap ------------------------------------------------------------------------------- */

static bool ev_less(const event_t *a, const event_t *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void heap_push(sim_t *s, double t, int kind, int replica, uint64_t arg)
{
    /* capacity is fixed at 2 * replicas + 1 by invariant 1-2; see sim_create */
    event_t e = {t, s->ev_seq++, kind, replica, arg};
    int i = s->heap_n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!ev_less(&e, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static event_t heap_pop(sim_t *s)
{
    event_t top = s->heap[0], last = s->heap[--s->heap_n];
    int i = 0, n = s->heap_n;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const event_t *best = &last;
        if (l < n && ev_less(&s->heap[l], best))
            m = l, best = &s->heap[l];
        if (r < n && ev_less(&s->heap[r], best))
            m = r;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

/* ---- setup ------------------------------------------------------------------------------ */

void sim_free(sim_t *s)
{
    if (!s)
        return;
    for (int i = 0; s->rep && i < s->cfg.replicas; i++) {
        sched_free(s->rep[i].sched);
        sim_cost_free(s->rep[i].cost);
        sl_free(s->rep[i].res);
        sl_free(s->rep[i].res_tok);
        sl_free(s->rep[i].priced_seqs);
    }
    sl_free(s->rep);
    sl_free(s->heap);
    sl_free(s->prompt);
    sl_free(s);
}

sim_t *sim_create(const sim_config_t *cfg, const sim_calib_t *calib, char *err, int errlen)
{
    if (cfg->replicas < 1 || cfg->replicas > 4096) {
        snprintf(err, errlen, "replicas: must be 1..4096, got %d", cfg->replicas);
        return NULL;
    }
    if (!(cfg->spec_acceptance >= 0 && cfg->spec_acceptance <= 1)) { /* NaN too */
        snprintf(err, errlen, "spec_acceptance: must be 0..1, got %g", cfg->spec_acceptance);
        return NULL;
    }
    if (!(cfg->spec_propose >= 0 && cfg->spec_propose <= 1)) {
        snprintf(err, errlen, "spec_propose: must be 0..1, got %g", cfg->spec_propose);
        return NULL;
    }
    sim_t *s = sl_calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    sched_config_t sc = cfg->sched;
    sc.model = cfg->model;
    if (cfg->plan_kv && cfg->profile) {
        char why[256];
        if (sim_profile_num_blocks(cfg->profile, &sc, 0, &sc.num_blocks, why, sizeof why) != SL_OK) {
            snprintf(err, errlen, "engine profile %s: %s", cfg->profile->name, why);
            sim_free(s);
            return NULL;
        }
    } else if (cfg->plan_kv) {
        sched_mem_plan_t plan;
        int64_t dev = cfg->hw.mem_bytes * cfg->tp; /* the replica's memory; weights split over tp */
        int rc = sched_mem_plan(&cfg->model, dev, cfg->hw.gpu_mem_util, sc.block_size,
                                sc.max_num_batched_tokens, &plan);
        if (rc != SL_OK || plan.num_blocks < 1) {
            snprintf(err, errlen, "%s does not fit on %d x %s: weights %.1f GiB + workspace %.1f GiB, "
                     "usable %.1f GiB (raise --tp)", cfg->model.name, cfg->tp, cfg->hw.name,
                     plan.weight_bytes / 1073741824.0, plan.activation_bytes / 1073741824.0,
                     dev * cfg->hw.gpu_mem_util / 1073741824.0);
            sim_free(s);
            return NULL;
        }
        sc.num_blocks = plan.num_blocks > 1 << 30 ? 1 << 30 : (int)plan.num_blocks;
    }
    s->cfg.sched = sc;
    s->num_blocks = sc.num_blocks;
    s->wake_s = cfg->profile ? cfg->profile->wake_s : 0;
    s->wake_after = s->wake_s > 0 ? cfg->engine_idle_spin_s + cfg->profile->idle_after_s : INFINITY;
    s->cold_s = cfg->profile ? cfg->profile->cold_s : 0;
    s->cold_after = s->cold_s > 0 ? cfg->profile->cold_after_s : INFINITY;
    s->rep = sl_calloc(cfg->replicas, sizeof *s->rep);
    s->heap_cap = 2 * cfg->replicas + 1;
    s->heap = sl_malloc(sizeof *s->heap * s->heap_cap);
    if (!s->rep || !s->heap) {
        snprintf(err, errlen, "out of memory");
        sim_free(s);
        return NULL;
    }
    for (int i = 0; i < cfg->replicas; i++) {
        replica_t *r = &s->rep[i];
        char why[256];
        r->wake_at = INFINITY;
        r->last_end = -INFINITY;
        r->sched = sched_create(&sc, why, sizeof why);
        if (!r->sched) {
            snprintf(err, errlen, "scheduler: %s", why);
            sim_free(s);
            return NULL;
        }
        r->cost = cfg->profile ? sim_cost_create_profile(cfg->profile, why, sizeof why)
                               : sim_cost_create(&cfg->model, &cfg->hw, cfg->tp, calib, why, sizeof why);
        if (!r->cost) {
            snprintf(err, errlen, "cost model: %s", why);
            sim_free(s);
            return NULL;
        }
    }
    return s;
}

int sim_num_blocks(const sim_t *s) { return s->num_blocks; }

void sim_set_hook(sim_t *s, const sim_hook_t *hook)
{
    s->hook = hook && hook->between_steps ? *hook : (sim_hook_t){0};
}

/* ---- tokens for prefix groups ------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Domains of the (seed, domain, id, j) hash: group prompt tokens (id = group, j = position),
 * unique prompt tokens (trace row, position), output tokens (req_id, position), draft
 * acceptance draws (req_id, the draft's position), proposal draws (req_id, the step's context). */
enum { SYN_GROUP = 1, SYN_PROMPT = 2, SYN_OUTPUT = 3, SYN_DRAFT = 4, SYN_PROPOSE = 5 };

static uint64_t synth(uint64_t seed, uint64_t domain, uint64_t id, uint64_t j)
{
    return mix64(mix64(mix64(seed ^ domain) ^ id) ^ j);
}

static int32_t synth_token(uint64_t seed, uint64_t domain, uint64_t id, uint64_t j)
{
    return (int32_t)(synth(seed, domain, id, j) & 0x7fffffff);
}

static int fill_prompt(sim_t *s, const wl_trace_t *tr, size_t i)
{
    int len = tr->prompt_len[i];
    if (len > s->prompt_cap) {
        int cap = len > 2 * s->prompt_cap ? len : 2 * s->prompt_cap;
        int32_t *p = sl_realloc(s->prompt, sizeof *p * cap);
        if (!p)
            return SL_ENOMEM;
        s->prompt = p, s->prompt_cap = cap;
    }
    int shared = tr->prefix_len[i] < len ? tr->prefix_len[i] : len;
    for (int j = 0; j < len; j++)
        s->prompt[j] = j < shared ? synth_token(s->cfg.seed, SYN_GROUP, (uint64_t)tr->prefix_group[i], j)
                                  : synth_token(s->cfg.seed, SYN_PROMPT, i, j);
    return SL_OK;
}

/* ---- the loop ----------------------------------------------------------------------------- */

static int route(sim_t *s)
{
    int n = s->cfg.replicas, best = 0;
    if (s->cfg.router == SIM_ROUTE_ROUND_ROBIN || n == 1)
        return (int)(s->rr++ % (uint64_t)n);
    int64_t best_load = INT64_MAX;
    for (int i = 0; i < n; i++) {
        int64_t load;
        if (s->cfg.router == SIM_ROUTE_LEAST_OUTSTANDING) {
            load = s->rep[i].outstanding;
        } else {
            sched_stats_t st;
            sched_get_stats(s->rep[i].sched, &st);
            int bs = s->cfg.sched.block_size;
            load = st.used_blocks + (st.waiting_prompt_tokens + bs - 1) / bs;
        }
        if (load < best_load)
            best_load = load, best = i;
    }
    return best;
}

/* Whether decoding sequence q's drafter proposes its drafts in this step (cfg.spec_propose). */
static bool spec_proposes(const sim_t *s, const sched_seq_step_t *q)
{
    if (q->n_draft <= 0)
        return false;
    double p = s->cfg.spec_propose;
    return p >= 1 || (synth(s->cfg.seed, SYN_PROPOSE, q->req_id, (uint64_t)q->context_len) >> 11) * 0x1.0p-53 < p;
}

/* r->priced: r->step without the drafts that are not proposed (a copy of its sequences when some
 * are left out, else the step itself). SL_ENOMEM. */
static int price_view(const sim_t *s, replica_t *r)
{
    const sched_step_t *st = &r->step;
    r->priced = *st;
    if (s->cfg.spec_propose >= 1)
        return SL_OK;
    int k = 0;
    while (k < st->n_seqs && (st->seqs[k].n_draft <= 0 || spec_proposes(s, &st->seqs[k])))
        k++;
    if (k == st->n_seqs)
        return SL_OK;
    if (st->n_seqs > r->priced_cap) {
        int cap = st->n_seqs > 2 * r->priced_cap ? st->n_seqs : 2 * r->priced_cap;
        sched_seq_step_t *p = sl_realloc(r->priced_seqs, sizeof *p * (size_t)cap);
        if (!p)
            return SL_ENOMEM;
        r->priced_seqs = p, r->priced_cap = cap;
    }
    memcpy(r->priced_seqs, st->seqs, sizeof *st->seqs * (size_t)st->n_seqs);
    r->priced.seqs = r->priced_seqs;
    for (; k < st->n_seqs; k++) {
        sched_seq_step_t *q = &r->priced_seqs[k];
        if (q->n_draft > 0 && !spec_proposes(s, q)) {
            q->n_tokens -= q->n_draft;
            r->priced.n_tokens -= q->n_draft;
            q->n_draft = 0;
        }
    }
    return SL_OK;
}

/* Plans the replica's next step if it is idle: schedules STEP_DONE, or a WAKE. */
static int kick(sim_t *s, int ri, double now, char *err, int errlen)
{
    replica_t *r = &s->rep[ri];
    if (r->busy)
        return SL_OK;
    double wake_at = INFINITY;
    int rc = sched_plan(r->sched, now, &r->step, &wake_at);
    if (rc == SCHED_PLAN_STEP) {
        if (price_view(s, r) != SL_OK) {
            snprintf(err, errlen, "out of memory");
            return SL_ENOMEM;
        }
        double dt = sim_cost_step(r->cost, &r->priced, &r->parts);
        /* after idle: caches gone cold, or the engine and its workers asleep (sim_profile_t) */
        double gap = now - r->last_end, idle = gap >= s->cold_after ? s->cold_s : 0;
        if (gap >= s->wake_after && s->wake_s > idle)
            idle = s->wake_s;
        dt += idle, r->parts.host += idle, r->parts.total += idle;
        r->busy = true;
        r->step_start = now;
        heap_push(s, now + dt, EV_STEP_DONE, ri, 0);
        return SL_OK;
    }
    if (rc != SCHED_PLAN_IDLE) {
        snprintf(err, errlen, "replica %d: sched_plan at t=%.6f s: %s", ri, now, sl_strerror(rc));
        return rc;
    }
    if (isfinite(wake_at) && wake_at != r->wake_at) {
        if (wake_at <= now)
            wake_at = nextafter(now, INFINITY);
        r->wake_at = wake_at;
        heap_push(s, wake_at, EV_WAKE, ri, ++r->wake_gen);
    }
    return SL_OK;
}

static int drain(sim_t *s, int ri, const sim_sink_t *sink, sim_totals_t *tot)
{
    int n;
    while ((n = sched_drain_done(s->rep[ri].sched, s->done, 256)) > 0) {
        s->rep[ri].outstanding -= n;
        tot->done += n;
        for (int k = 0; sink && sink->on_done && k < n; k++) {
            int rc = sink->on_done(sink->ctx, ri, &s->done[k]);
            if (rc)
                return rc;
        }
    }
    return SL_OK;
}

/* ---- speculative decoding ------------------------------------------------------------------ */

double sim_spec_tokens_per_step(double alpha, int k)
{
    if (k <= 0)
        return 1;
    if (alpha >= 1)
        return k + 1;
    if (k > 64)
        return (1 - pow(alpha, k + 1)) / (1 - alpha);
    double t = 1; /* 1 + alpha (1 + alpha (...)): no cancellation as alpha nears 1 */
    for (int j = 0; j < k; j++)
        t = 1 + alpha * t;
    return t;
}

double sim_spec_alpha_from_rate(double rate, int k)
{
    if (!(rate >= 0 && rate <= 1) || k < 1)
        return NAN;
    if (rate == 0 || rate == 1)
        return rate;
    double lo = 0, hi = 1; /* the accepted share rises strictly with alpha: bisect */
    for (int i = 0; i < 64; i++) {
        double mid = 0.5 * (lo + hi);
        if ((sim_spec_tokens_per_step(mid, k) - 1) / k < rate)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* Drafts the target model accepts in sequence q's decode step: the leading ones whose draw
 * u_j = hash(seed, req_id, the draft's position) in [0, 1) is below alpha. Draft j proposes the
 * token at position context_len + 1 + j (the step's own token sits at context_len); a position
 * is drawn for at most once over a request's life (the next step's drafts start past the token
 * that replaced the first rejected draft), so the draws are independent across steps too. */
static int spec_accepted(const sim_t *s, const sched_seq_step_t *q)
{
    double alpha = s->cfg.spec_acceptance;
    int n = 0;
    if (alpha <= 0 || !q->sample)
        return 0;
    while (n < q->n_draft &&
           (synth(s->cfg.seed, SYN_DRAFT, q->req_id, (uint64_t)q->context_len + 1 + (uint64_t)n) >> 11) *
                   0x1.0p-53 < alpha)
        n++;
    return n;
}

/* Room for the step's results: a result per sequence, and up to 1 + n_draft token ids per sampled
 * sequence. */
static int reserve_results(replica_t *r, const sched_step_t *st)
{
    int ntok = 0;
    for (int k = 0; k < st->n_seqs; k++)
        ntok += st->seqs[k].sample ? 1 + st->seqs[k].n_draft : 0;
    if (st->n_seqs > r->res_cap) {
        int cap = st->n_seqs > 2 * r->res_cap ? st->n_seqs : 2 * r->res_cap;
        sched_seq_result_t *p = sl_realloc(r->res, sizeof *p * cap);
        if (!p)
            return SL_ENOMEM;
        r->res = p, r->res_cap = cap;
    }
    if (ntok > r->tok_cap) {
        int cap = ntok > 2 * r->tok_cap ? ntok : 2 * r->tok_cap;
        int32_t *p = sl_realloc(r->res_tok, sizeof *p * cap);
        if (!p)
            return SL_ENOMEM;
        r->res_tok = p, r->tok_cap = cap;
    }
    return SL_OK;
}

static int step_done(sim_t *s, int ri, double now, const sim_sink_t *sink, sim_totals_t *tot,
                     char *err, int errlen)
{
    replica_t *r = &s->rep[ri];
    sched_step_t *st = &r->step;
    if (reserve_results(r, st) != SL_OK) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    int used = 0; /* of res_tok */
    for (int k = 0; k < st->n_seqs; k++) {
        const sched_seq_step_t *q = &st->seqs[k];
        int n = q->sample ? 1 + (spec_proposes(s, q) ? spec_accepted(s, q) : 0) : 0;
        /* requests with token ids get unique synthetic output tokens (one per position: the
         * first follows the step's known tokens), others length only */
        int32_t *tk = q->tokens && n > 0 ? &r->res_tok[used] : NULL;
        uint64_t pos = (uint64_t)q->context_len + (uint64_t)(q->n_tokens - q->n_draft);
        for (int j = 0; tk && j < n; j++)
            tk[j] = synth_token(s->cfg.seed, SYN_OUTPUT, q->req_id, pos + (uint64_t)j);
        used += tk ? n : 0;
        r->res[k] = (sched_seq_result_t){.n_tokens = n, .tokens = tk, .finish = SCHED_FINISH_NONE};
    }
    sched_result_t res = {st->n_seqs, r->res};
    /* the step's shape stays readable until commit; report it first */
    tot->steps++;
    tot->busy_time += now - r->step_start;
    tot->flops += r->parts.flops;
    sched_step_t shape = r->priced;
    int rc = sched_commit(r->sched, st, &res, now);
    if (rc != SL_OK) {
        snprintf(err, errlen, "replica %d: sched_commit of step %llu at t=%.6f s: %s", ri,
                 (unsigned long long)st->seq_no, now, sl_strerror(rc));
        return rc;
    }
    r->busy = false;
    r->last_end = now;
    bool on_step = sink && sink->on_step, hook = s->hook.between_steps != NULL;
    sched_stats_t stats;
    shape.seqs = NULL, shape.copies = NULL; /* freed by the commit */
    sim_step_info_t info = {ri, r->step_start, now, &shape, &stats, &r->parts};
    if (on_step || hook)
        sched_get_stats(r->sched, &stats);
    if (on_step && (rc = sink->on_step(sink->ctx, &info)))
        return rc;
    if ((rc = drain(s, ri, sink, tot)) != SL_OK || !hook)
        return rc;
    return s->hook.between_steps(s->hook.ctx, &info, r->sched); /* before the replica plans again */
}

static int arrival(sim_t *s, const wl_trace_t *tr, size_t i, double now, const sim_sink_t *sink,
                   sim_totals_t *tot, int *ri_out)
{
    bool grouped = tr->prefix_group && tr->prefix_group[i] >= 0 && tr->prefix_len[i] > 0;
    if (grouped && fill_prompt(s, tr, i) != SL_OK)
        return SL_ENOMEM;
    sched_request_t req = {.id = i, .priority = tr->priority ? tr->priority[i] : 0, .arrival = tr->arrival[i],
                           .prompt = grouped ? s->prompt : NULL, .prompt_len = tr->prompt_len[i],
                           .max_new_tokens = tr->output_len[i], .user = NULL};
    int ri = route(s);
    *ri_out = ri;
    int rc = sched_submit(s->rep[ri].sched, &req, now);
    tot->submitted++;
    if (rc == SL_OK) {
        s->rep[ri].outstanding++;
        return SL_OK;
    }
    if (rc == SL_ENOMEM)
        return rc;
    /* rejected (too long, queue full, invalid): reported done, aborted, never scheduled */
    tot->rejected++;
    tot->too_long += rc == SL_ETOO_LONG;
    tot->done++;
    sched_done_t d = {.id = i, .priority = req.priority, .reason = SCHED_FINISH_ABORT,
                      .prompt_len = req.prompt_len, .arrival = req.arrival, .first_scheduled = -1,
                      .first_token = -1, .finished = -1};
    return sink && sink->on_done ? sink->on_done(sink->ctx, ri, &d) : SL_OK;
}

int sim_run(sim_t *s, const wl_trace_t *tr, const sim_sink_t *sink, sim_totals_t *tot, char *err,
            int errlen)
{
    memset(tot, 0, sizeof *tot);
    if (errlen > 0)
        err[0] = 0;
    tot->num_blocks = s->num_blocks;
    tot->peak_flops = sim_cost_peak_flops(s->rep[0].cost);
    int rc = SL_OK;
    if (tr->n > 0)
        heap_push(s, tr->arrival[0], EV_ARRIVAL, 0, 0);
    while (s->heap_n > 0 && rc == SL_OK) {
        event_t e = heap_pop(s);
        double now = e.t;
        tot->events++;
        tot->end_time = now;
        int ri = e.replica;
        switch (e.kind) {
        case EV_ARRIVAL:
            rc = arrival(s, tr, e.arg, now, sink, tot, &ri);
            if (rc == SL_ENOMEM)
                snprintf(err, errlen, "out of memory at request %llu", (unsigned long long)e.arg);
            if (e.arg + 1 < tr->n)
                heap_push(s, tr->arrival[e.arg + 1], EV_ARRIVAL, 0, e.arg + 1);
            break;
        case EV_STEP_DONE:
            rc = step_done(s, ri, now, sink, tot, err, errlen);
            break;
        case EV_WAKE:
            if (e.arg != s->rep[ri].wake_gen)
                continue; /* superseded */
            s->rep[ri].wake_at = INFINITY;
            break;
        }
        if (rc == SL_OK)
            rc = kick(s, ri, now, err, errlen);
        if (sink && sink->on_progress && (tot->events & 0xffff) == 0)
            sink->on_progress(sink->ctx, now, tot->done, tr->n);
    }
    if (rc != SL_OK && !err[0])
        snprintf(err, errlen, "stopped by the record sink or step hook: %s", sl_strerror(rc));
    return rc;
}

/* ---- adaptive tuning: one controller per replica ----------------------------------------- */

struct sim_adaptive {
    sched_adapt_t **ctl;
    int n;
    sim_sink_t inner;
};

sim_adaptive_t *sim_adaptive_create(const sched_adapt_opts_t *o, int replicas, char *err, int errlen)
{
    sim_adaptive_t *ad = sl_calloc(1, sizeof *ad);
    if (!ad || !(ad->ctl = sl_calloc((size_t)replicas, sizeof *ad->ctl))) {
        sl_free(ad);
        if (err && errlen > 0)
            snprintf(err, (size_t)errlen, "adaptive controller: out of memory");
        return NULL;
    }
    for (ad->n = 0; ad->n < replicas; ad->n++)
        if (!(ad->ctl[ad->n] = sched_adapt_create(o, ad->n, err, errlen))) {
            sim_adaptive_free(ad);
            return NULL;
        }
    return ad;
}

void sim_adaptive_free(sim_adaptive_t *ad)
{
    if (!ad)
        return;
    for (int i = 0; i < ad->n; i++)
        sched_adapt_free(ad->ctl[i]);
    sl_free(ad->ctl);
    sl_free(ad);
}

static int fwd_done(void *ctx, int replica, const sched_done_t *d)
{
    sim_adaptive_t *ad = ctx;
    if (replica >= 0 && replica < ad->n)
        sched_adapt_observe_request(ad->ctl[replica], d);
    return ad->inner.on_done ? ad->inner.on_done(ad->inner.ctx, replica, d) : SL_OK;
}

static int fwd_step(void *ctx, const sim_step_info_t *info)
{
    sim_adaptive_t *ad = ctx;
    return ad->inner.on_step(ad->inner.ctx, info);
}

static void fwd_progress(void *ctx, double now, uint64_t done, uint64_t total)
{
    sim_adaptive_t *ad = ctx;
    ad->inner.on_progress(ad->inner.ctx, now, done, total);
}

sim_sink_t sim_adaptive_sink(sim_adaptive_t *ad, const sim_sink_t *inner)
{
    ad->inner = inner ? *inner : (sim_sink_t){0};
    return (sim_sink_t){ad, fwd_done, ad->inner.on_step ? fwd_step : NULL,
                        ad->inner.on_progress ? fwd_progress : NULL};
}

static int between_steps(void *ctx, const sim_step_info_t *info, sched_t *sched)
{
    sim_adaptive_t *ad = ctx;
    sched_adapt_t *a = ad->ctl[info->replica];
    sched_adapt_observe_step(a, info->stats->waiting);
    sched_config_t next;
    if (!sched_adapt_decide(a, info->t_end, sched_config(sched), &next))
        return SL_OK;
    return sched_update_config(sched, &next, NULL, 0);
}

sim_hook_t sim_adaptive_hook(sim_adaptive_t *ad) { return (sim_hook_t){ad, between_steps}; }

int sim_adaptive_changes(const sim_adaptive_t *ad)
{
    int n = 0;
    for (int i = 0; i < ad->n; i++)
        n += sched_adapt_changes(ad->ctl[i]);
    return n;
}
