/* metrics.c — latency histograms and the Prometheus text exposition (see metrics.h). */
#include "engine/http/metrics.h"

#include <pthread.h>
#include <string.h>

#include "sched/status.h"

/* Upper bounds (seconds) shared by the four latency histograms: 0.5 ms to ~10 min. */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                   0.25,   0.5,   0.75,   1.0,   2.5,  5.0,   10.0, 20.0,  40.0, 80.0,
                                   160.0,  640.0};
#define N_BUCKETS ((int)(sizeof bucket_le / sizeof bucket_le[0]))

typedef struct histogram {
    int64_t counts[N_BUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
    int64_t count;
    double sum;
} histogram_t;

enum { H_TTFT, H_ITL, H_E2E, H_QUEUE, H_COUNT };
static const char *const hist_name[H_COUNT] = {
    "time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
    "request_queue_time_seconds"};
static const char *const hist_help[H_COUNT] = {
    "Time from arrival to the first generated token.", "Time between consecutive generated tokens.",
    "Time from arrival to the end of the request.", "Time from arrival to the first scheduled step."};

/* finish reasons, indexed by sluice_finish_reason */
#define N_REASONS (SLUICE_FINISH_ERROR + 1)
static const char *const reject_name[SRV_REJECT_COUNT] = {"queue_full", "invalid", "disconnect"};

struct srv_metrics {
    pthread_mutex_t lock;
    char *model;
    histogram_t h[H_COUNT];
    int64_t finished[N_REASONS];
    int64_t rejected[SRV_REJECT_COUNT];
};

srv_metrics_t *srv_metrics_create(const char *model_name)
{
    srv_metrics_t *m = sl_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->model = sl_strdup(model_name);
    if (!m->model || pthread_mutex_init(&m->lock, NULL) != 0) {
        sl_free(m->model);
        sl_free(m);
        return NULL;
    }
    return m;
}

void srv_metrics_free(srv_metrics_t *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    sl_free(m->model);
    sl_free(m);
}

static void hist_add(histogram_t *h, double v)
{
    int i = 0;
    while (i < N_BUCKETS && v > bucket_le[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

/* Adds b - a when both times happened. */
static void hist_span(histogram_t *h, double a, double b)
{
    if (a >= 0 && b >= 0) hist_add(h, b >= a ? b - a : 0);
}

void srv_metrics_observe(srv_metrics_t *m, const sluice_result *r)
{
    pthread_mutex_lock(&m->lock);
    hist_span(&m->h[H_TTFT], r->t_arrival, r->t_first_token);
    hist_span(&m->h[H_QUEUE], r->t_arrival, r->t_first_scheduled);
    hist_span(&m->h[H_E2E], r->t_arrival, r->t_finish);
    for (int s = 0; s < r->n_samples; s++) {
        const sluice_sample *smp = &r->samples[s];
        for (int i = 1; smp->token_times && i < smp->n_ids; i++)
            hist_span(&m->h[H_ITL], smp->token_times[i - 1], smp->token_times[i]);
        if ((int)smp->finish_reason >= 0 && smp->finish_reason < N_REASONS) m->finished[smp->finish_reason]++;
    }
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_reject(srv_metrics_t *m, srv_reject_reason_t why)
{
    pthread_mutex_lock(&m->lock);
    m->rejected[why]++;
    pthread_mutex_unlock(&m->lock);
}

/* ---- exposition -------------------------------------------------------------------------- */

static int series(srv_buf_t *b, const char *model, const char *name, const char *type, const char *help,
                  double value)
{
    return srv_buf_appendf(b, "# HELP sluice:%s %s\n# TYPE sluice:%s %s\nsluice:%s{model_name=\"%s\"} %.17g\n",
                           name, help, name, type, name, model, value);
}

static int engine_series(srv_buf_t *b, const char *model, const sluice_stats *st)
{
    const struct {
        const char *name, *type, *help;
        double value;
    } rows[] = {
        {"num_requests_running", "gauge", "Sequences holding KV blocks.", st->running},
        {"num_requests_waiting", "gauge", "Sequences waiting to be scheduled.", st->waiting},
        {"kv_cache_usage_perc", "gauge", "Fraction of KV blocks in use (1 = full).",
         st->kv_blocks_total ? (double)st->kv_blocks_used / st->kv_blocks_total : 0},
        {"kv_blocks_total", "gauge", "KV blocks in the pool.", st->kv_blocks_total},
        {"kv_blocks_used", "gauge", "KV blocks held by live requests.", st->kv_blocks_used},
        {"kv_blocks_free", "gauge", "KV blocks free.", st->kv_blocks_free},
        {"kv_blocks_cached", "gauge", "Free KV blocks kept for the prefix cache (evictable).", st->kv_blocks_cached},
        {"prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
         (double)st->prefix_query_tokens},
        {"prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", (double)st->prefix_hit_tokens},
        {"num_preemptions_total", "counter", "Sequences preempted under KV pressure.", (double)st->preemptions},
        {"max_num_batched_tokens", "gauge", "Token budget per step now (moved by --adaptive).", st->max_num_batched_tokens},
        {"batch_timeout_ms", "gauge", "Static batch timeout now, in ms (moved by --adaptive).", st->batch_timeout_ms},
        {"adaptive_changes_total", "counter", "Knob changes made by the adaptive controller.", (double)st->adaptive_changes},
        {"prompt_tokens_total", "counter", "Prompt tokens run through the model.", (double)st->prompt_tokens},
        {"generation_tokens_total", "counter", "Tokens generated.", (double)st->generation_tokens},
        {"spec_decode_num_draft_tokens_total", "counter", "Speculative draft tokens proposed and run.",
         (double)st->spec_draft_tokens},
        {"spec_decode_num_accepted_tokens_total", "counter", "Speculative draft tokens kept.",
         (double)st->spec_accepted_tokens},
        {"requests_submitted_total", "counter", "Requests accepted by the engine.", (double)st->requests_submitted},
        {"cpu_threads_active", "gauge", "CPU threads the next step runs on (fewer than --threads while other processes hold the cores).",
         st->threads_active},
        {"cpu_thread_drops_total", "counter", "Times the CPU backend moved its steps to one thread fewer.",
         (double)st->thread_drops},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int rc = series(b, model, rows[i].name, rows[i].type, rows[i].help, rows[i].value);
        if (rc) return rc;
    }
    return SL_OK;
}

static int server_series(srv_buf_t *b, const srv_metrics_t *m)
{
    int rc = srv_buf_appendf(b, "# HELP sluice:request_success_total Finished requests' samples by finish reason.\n"
                                "# TYPE sluice:request_success_total counter\n");
    for (int r = SLUICE_FINISH_EOS; r < N_REASONS && !rc; r++)
        rc = srv_buf_appendf(b, "sluice:request_success_total{model_name=\"%s\",finished_reason=\"%s\"} %lld\n",
                             m->model, sluice_finish_reason_name((sluice_finish_reason)r), (long long)m->finished[r]);
    if (!rc) rc = srv_buf_appendf(b, "# HELP sluice:request_rejected_total Requests refused or cut short, by reason.\n"
                                     "# TYPE sluice:request_rejected_total counter\n");
    for (int r = 0; r < SRV_REJECT_COUNT && !rc; r++)
        rc = srv_buf_appendf(b, "sluice:request_rejected_total{model_name=\"%s\",reason=\"%s\"} %lld\n", m->model,
                             reject_name[r], (long long)m->rejected[r]);
    for (int h = 0; h < H_COUNT && !rc; h++) {
        const histogram_t *hi = &m->h[h];
        rc = srv_buf_appendf(b, "# HELP sluice:%s %s\n# TYPE sluice:%s histogram\n", hist_name[h], hist_help[h],
                             hist_name[h]);
        int64_t cum = 0;
        for (int i = 0; i <= N_BUCKETS && !rc; i++) {
            cum += hi->counts[i];
            if (i < N_BUCKETS)
                rc = srv_buf_appendf(b, "sluice:%s_bucket{model_name=\"%s\",le=\"%g\"} %lld\n", hist_name[h], m->model,
                                     bucket_le[i], (long long)cum);
            else
                rc = srv_buf_appendf(b, "sluice:%s_bucket{model_name=\"%s\",le=\"+Inf\"} %lld\n", hist_name[h], m->model,
                                     (long long)cum);
        }
        if (!rc)
            rc = srv_buf_appendf(b, "sluice:%s_sum{model_name=\"%s\"} %.17g\nsluice:%s_count{model_name=\"%s\"} %lld\n",
                                 hist_name[h], m->model, hi->sum, hist_name[h], m->model, (long long)hi->count);
    }
    return rc;
}

int srv_metrics_format(srv_metrics_t *m, const sluice_stats *st, srv_buf_t *out)
{
    size_t before = out->len;
    pthread_mutex_lock(&m->lock);
    int rc = st ? engine_series(out, m->model, st) : SL_OK;
    if (!rc) rc = server_series(out, m);
    pthread_mutex_unlock(&m->lock);
    if (rc) srv_buf_truncate(out, before);
    return rc;
}
