/* metrics.h — the server's Prometheus metrics: latency histograms it observes itself, plus the
 * engine's gauges and counters (sluice_stats) rendered at scrape time.
 *
 * Exposition format 0.0.4 (text/plain; version=0.0.4). Names follow vLLM's with the "sluice:"
 * prefix: sluice:num_requests_running / _waiting, sluice:kv_cache_usage_perc (0..1),
 * sluice:kv_blocks_{total,used,free,cached}, sluice:prefix_cache_queries_total / _hits_total
 * (tokens), sluice:num_preemptions_total, sluice:prompt_tokens_total, sluice:generation_tokens_total,
 * sluice:request_success_total{finished_reason}, sluice:request_rejected_total{reason}, and the
 * histograms sluice:time_to_first_token_seconds, sluice:inter_token_latency_seconds,
 * sluice:e2e_request_latency_seconds, sluice:request_queue_time_seconds. Every series carries
 * model_name="...".
 *
 * Threading: observe/reject/format may be called from any thread (one mutex inside).
 * Failure: create returns NULL on out of memory; format returns SL_ENOMEM with the buffer
 * unchanged; the rest cannot fail.
 */
#ifndef SLUICE_HTTP_METRICS_H
#define SLUICE_HTTP_METRICS_H

#include "engine/http/sse.h"
#include "include/sluice.h"

typedef struct srv_metrics srv_metrics_t;

/* model_name is copied. */
srv_metrics_t *srv_metrics_create(const char *model_name);
void srv_metrics_free(srv_metrics_t *m);

/* Records a finished request: TTFT, queue time, E2E latency, each gap between a sample's token
 * times, and its finish reason. Times of -1 (never happened) are skipped. */
void srv_metrics_observe(srv_metrics_t *m, const sluice_result *r);

typedef enum srv_reject_reason {
    SRV_REJECT_QUEUE_FULL = 0, /* 429 */
    SRV_REJECT_INVALID,        /* 4xx for the request's content */
    SRV_REJECT_DISCONNECT,     /* the client went away before the end */
    SRV_REJECT_COUNT
} srv_reject_reason_t;

void srv_metrics_reject(srv_metrics_t *m, srv_reject_reason_t why);

/* Appends the whole exposition: the engine stats (NULL while the model loads: only the server's
 * own series) and the histograms. */
int srv_metrics_format(srv_metrics_t *m, const sluice_stats *st, srv_buf_t *out);

#endif
