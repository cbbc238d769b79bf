/* sluice.h — the public C API of the sluice inference engine.
 *
 * One engine = one model, one compute backend (cpu or cuda), one scheduler and one engine thread
 * that runs the serving loop. Any thread may submit requests, cancel them, wait for them and read
 * statistics; tokens stream to a per-request callback as they are produced.
 *
 *     sluice_engine_params ep = sluice_engine_default_params();
 *     ep.model = "model.gguf";
 *     char err[256];
 *     sluice_engine *e = sluice_engine_create(&ep, err, sizeof err);   // NULL + err on failure
 *
 *     sluice_request_params rp = sluice_request_default_params();
 *     rp.prompt = "Once upon a time";
 *     rp.max_tokens = 64;
 *     rp.on_token = print_piece;                                        // optional streaming
 *     sluice_request_id id;
 *     int rc = sluice_submit(e, &rp, &id);                              // table of codes below
 *     sluice_result *r;
 *     rc = sluice_wait(e, id, -1, &r);                                  // blocks; r is yours
 *     ... r->samples[0].text ...
 *     sluice_result_free(r);
 *     sluice_engine_free(e);                                            // shuts down, joins
 *
 * Conventions (llama.h style): opaque handles, create/free pairs, params structs from
 * *_default_params() (every field documented with unit and default; 0 often means "from the
 * model"), int status codes (0 = OK, negative = error, named below; sluice_strerror() names them).
 * The header is self-contained C11 and depends on nothing else of sluice.
 *
 * Threading: every function may be called from any thread, except that callbacks run on the engine
 * thread and must not call sluice_wait() or sluice_engine_free()/shutdown() (they may call
 * sluice_cancel(), sluice_submit() and sluice_get_stats()). Callbacks should return quickly: the
 * next step of every request waits for them.
 *
 * Times: seconds on the engine's monotonic clock (sluice_now()); -1 when an event never happened.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes (the same values as the project's sl_status table) -------------------------- */

enum {
    SLUICE_OK = 0,
    SLUICE_ENOMEM = -1,       /* out of memory */
    SLUICE_EINVAL = -2,       /* a parameter is invalid (message via sluice_engine_errmsg) */
    SLUICE_EIO = -3,          /* a file could not be read */
    SLUICE_EUNSUPPORTED = -5, /* the model or backend lacks the feature (e.g. no chat template) */
    SLUICE_ENOTFOUND = -6,    /* no such request (finished and collected, detached, or never existed) */
    SLUICE_EQUEUE_FULL = -7,  /* the waiting queue is at max_waiting_requests: retry later (HTTP 429) */
    SLUICE_ETOO_LONG = -8,    /* prompt + max_tokens exceed max_sequence_length or the KV pool (HTTP 400) */
    SLUICE_EBUSY = -10,       /* sluice_wait timed out; the request is still running */
    SLUICE_ESTATE = -11,      /* the engine is shutting down and accepts no new requests (HTTP 503) */
    SLUICE_EDEVICE = -12,     /* the backend failed a step; the requests in it finished with this status */
    SLUICE_ECANCELED = -14,   /* the request was canceled (sluice_cancel, callback, or shutdown) */
};

/* A message for a status code ("queue full"); "unknown status" outside the table. Cannot fail. */
const char *sluice_strerror(int status);

/* ---- engine ----------------------------------------------------------------------------------- */

typedef struct sluice_engine sluice_engine;
typedef uint64_t sluice_request_id;

typedef enum sluice_strategy {
    SLUICE_STRATEGY_NAIVE = 0,    /* static batches padded to the longest prompt */
    SLUICE_STRATEGY_BUCKETED,     /* static batches of similar prompt length (bucket_size) */
    SLUICE_STRATEGY_MEMORY_AWARE, /* static batches admitted while KV + activations fit memory_limit_mb */
    SLUICE_STRATEGY_CONTINUOUS,   /* iteration-level batching, chunked prefill, preemption */
} sluice_strategy;

/* The KV cache's elements (sluice_engine_params.kv_dtype). */
typedef enum sluice_kv_dtype {
    SLUICE_KV_F32 = 0,
    SLUICE_KV_F16 = 1,
    SLUICE_KV_INT8 = 2, /* cpu: int8 values with one float scale per token and kv head: about half
                           the bytes of F16, so twice the cached tokens in the same memory */
} sluice_kv_dtype;

/* One executed step, reported to sluice_engine_params.on_step (for run records and profiling). */
typedef struct sluice_step_info {
    uint64_t seq_no;          /* 0, 1, 2, ... */
    double t_start, t_end;    /* planning started / results committed */
    double forward_s;         /* time inside the backend's forward */
    int n_seqs;               /* sequences in the step */
    int n_tokens;             /* tokens run (prompt chunks + decodes + drafts) */
    int n_prefill_tokens;     /* of which prompt tokens */
    int n_decode_seqs;        /* sequences decoding (one token, and its drafts under speculation) */
    int n_padded_tokens;      /* NAIVE/BUCKETED padding (counted, never computed by the backend) */
    int n_sampled;            /* logits rows sampled (a speculating sequence: 1 + its drafts) */
    int n_draft_tokens;       /* draft tokens proposed and run (included in n_tokens) */
    int n_accepted_drafts;    /* of which kept: the sampler drew the same token */
    int n_rejections;         /* sequences whose drafts ended at a rejected one (not all kept) */
    int n_lookups;            /* decoding sequences with draft slots (a prompt lookup was made) */
    int n_proposals;          /* of which the lookup found drafts to run */
    int n_preempted;          /* sequences preempted while planning the step */
    double prefill_pairs;     /* the prompt chunks' causal attention work: sum of q * (ctx + (q + 1) / 2),
                                 a decoding sequence's drafts counted as a chunk after its token */
    const int *decode_kv;     /* (n_decode_seqs) KV tokens each decoding sequence's token read
                                 (context + 1);
                                 valid during the callback only */
    int kv_blocks_used, kv_blocks_free, kv_blocks_cached;
    int64_t kv_used_slots;     /* tokens held by running sequences after the step */
    int64_t kv_reserved_slots; /* blocks in use × block_size */
    int64_t kv_naive_slots;    /* what max-length reservation would hold for the running set */
    int waiting, running;      /* queue after the step */
} sluice_step_info;

typedef void (*sluice_step_cb)(const sluice_step_info *info, void *user);

typedef struct sluice_engine_params {
    /* model and backend */
    const char *model;           /* GGUF path or "synthetic:SHAPE" (e.g. synthetic:llama2-7b). required */
    const char *backend;         /* "cpu" or "cuda". default "cpu" */
    int n_threads;               /* cpu: compute threads; 0 = all cores. default 0 */
    sluice_kv_dtype kv_dtype;    /* cpu: the KV cache's elements. default SLUICE_KV_F16 on CPUs with
                                  * AVX-512, where F16 is faster than F32, SLUICE_KV_F32 elsewhere.
                                  * The cuda backend keeps F16 for F32 and F16 and refuses INT8 */
    bool fixed_threads;          /* cpu: run every step on n_threads. By default a step runs on fewer
                                    threads while other processes hold the cores: one descheduled
                                    thread stalls the others at every barrier (2 threads on 2 cores
                                    with one busy: 40 tok/s, against 70 on 1 thread). default false */
    double gpu_memory_utilization; /* cuda: fraction of device memory used. default 0.9 */
    int device;                  /* cuda: device ordinal. default 0 */
    double kv_memory_mb;         /* KV pool size cap in MiB; 0 = enough for max_num_seqs full-length
                                    sequences, capped by what the backend reports free. default 0 */
    double idle_spin_ms;         /* after its last step the engine thread keeps polling for new work
                                    this long before it sleeps, so that a request arriving within it
                                    starts at once on a core at full speed (on a VM a core that slept
                                    runs ~1.5x slower for the next ~80 ms); it yields the CPU while it
                                    polls, and shows as busy. 0 = sleep at once. default 1000 */

    /* batching (the scheduler; see docs/C_API.md for how each strategy uses them) */
    sluice_strategy strategy;    /* default SLUICE_STRATEGY_CONTINUOUS */
    int max_batch_size;          /* static strategies: requests per batch. default 32 */
    int max_sequence_length;     /* prompt + output tokens per request; 0 = the model's trained context
                                    capped at 2048. default 0 */
    double batch_timeout_ms;     /* static strategies: max wait of the oldest request for a batch. default 50 */
    int bucket_size;             /* BUCKETED: prompt-length bucket width (tokens). default 128 */
    double memory_limit_mb;      /* MEMORY_AWARE: KV + activation budget per batch (MiB). default 4096 */
    int64_t max_total_tokens;    /* MEMORY_AWARE: prompt + max new tokens per batch. default 32768 */
    int block_size;              /* KV tokens per block. default 16 */
    int max_num_batched_tokens;  /* CONTINUOUS: token budget per step. default 2048 */
    int max_num_seqs;            /* CONTINUOUS: running sequences at most. default 64 */
    int max_waiting_requests;    /* queue bound; submits beyond it get SLUICE_EQUEUE_FULL; 0 = none. default 4096 */
    bool enable_prefix_caching;  /* reuse KV blocks of identical prompt prefixes. default true */
    bool enable_chunked_prefill; /* CONTINUOUS: split long prompts over steps. default true */

    /* speculative decoding (CONTINUOUS; docs/C_API.md): each decoding sequence proposes up to
       num_speculative_tokens draft tokens by prompt lookup (what followed an earlier occurrence of
       its last prompt_lookup_max .. prompt_lookup_min tokens in its own prompt and output) and runs
       them in the same forward as its next token; the drafts its sampler would have produced are
       kept. Outputs are the same tokens as without it (same seed, same logits); it saves forwards
       where text repeats what came before. Steps with drafts sample on the host. */
    int num_speculative_tokens;  /* draft tokens per decode step; 0 = off. default 0 */
    int speculative_disable_by_batch_size; /* no drafts in a step planned while this many sequences or
                                    more run (a large batch has no compute to spare); 0 = never. default 0 */
    int prompt_lookup_min;       /* shortest n-gram matched, 1..16. default 2 (single-token matches
                                    propose mostly drafts that are rejected) */
    int prompt_lookup_max;       /* longest n-gram matched, prompt_lookup_min..16. default 3 */

    /* observation */
    sluice_step_cb on_step;      /* called on the engine thread after every step, or NULL. default NULL */
    void *step_user;             /* passed to on_step */

    /* adaptive tuning (docs/C_API.md): a controller in the serving loop moves max_num_batched_tokens
       (CONTINUOUS) or batch_timeout_ms (static strategies) within bounds toward p99 latency targets,
       judged on the requests finished in a sliding window; each change is one stderr line
       "adaptive: t=12.31 s max_num_batched_tokens 512 -> 1024 (reason)" and is counted in
       sluice_stats. Off by default; with it off the fields below are ignored. */
    bool adaptive;               /* run the controller. default false */
    double adaptive_ttft_p99_s;  /* p99 TTFT target (s); 0 = none. default 1 */
    double adaptive_tpot_p99_s;  /* p99 time per output token target (s); 0 = none. default 0.1 */
    int adaptive_min_batched_tokens, adaptive_max_batched_tokens; /* token budget bounds. default 256, 8192 */
    double adaptive_min_timeout_ms; /* batch timeout lower bound. default 1 */
    double adaptive_max_timeout_ms; /* batch timeout upper bound; 0 = the starting batch_timeout_ms. default 0 */
    double adaptive_window_s;    /* finished requests judged: those of the last window_s seconds. default 20 */
    int adaptive_min_samples;    /* requests in the window before any change. default 20 */
    double adaptive_eval_interval_s; /* evaluate at most this often (s). default 1 */
    double adaptive_min_interval_s;  /* between two changes (s). default 5 */
} sluice_engine_params;

/* The documented defaults. Cannot fail. */
sluice_engine_params sluice_engine_default_params(void);

/* Loads the model, creates the backend and its KV pool, the scheduler, and starts the engine
 * thread. On error returns NULL and writes what went wrong into err (if err != NULL and
 * errlen > 0): "model.gguf: not a GGUF file", "max_num_seqs: must be 1..65536, got 0",
 * "cuda: not built", "KV pool: 3 blocks do not hold one max_sequence_length sequence". */
sluice_engine *sluice_engine_create(const sluice_engine_params *params, char *err, size_t errlen);

/* Stops accepting requests (submit returns SLUICE_ESTATE), lets the requests in flight run for up
 * to deadline_s seconds (0 = abort them at once), aborts the rest (their results: status
 * SLUICE_ECANCELED, finish_reason SLUICE_FINISH_ABORT, completion callbacks called), and joins the
 * engine thread. Returns the number of requests it had to abort (>= 0). Idempotent: a second call
 * returns 0. Must not be called from a callback. */
int sluice_engine_shutdown(sluice_engine *e, double deadline_s);

/* Shuts down (deadline 0) if not done, then frees everything, including results never collected.
 * NULL is a no-op. */
void sluice_engine_free(sluice_engine *e);

/* The last engine-level error message (a failed step, a rejected request's detail). Never NULL;
 * valid until the next call on this engine from any thread. */
const char *sluice_engine_errmsg(const sluice_engine *e);

/* Seconds on the engine's monotonic clock (the epoch of every time in this API). Cannot fail. */
double sluice_now(const sluice_engine *e);

/* ---- model information and tokenizer ----------------------------------------------------------- */

typedef struct sluice_model_info {
    const char *name;            /* general.name or the synthetic shape */
    const char *arch;            /* "llama" */
    int n_vocab, n_ctx_train, n_layers, dim, n_heads, n_kv_heads;
    int max_sequence_length;     /* the engine's effective limit */
    int32_t bos, eos;            /* special token ids, -1 if none */
    bool has_chat_template;
} sluice_model_info;

/* Fills *out; strings live as long as the engine. Cannot fail. */
void sluice_model_get_info(const sluice_engine *e, sluice_model_info *out);

/* Tokenizes text (adding BOS when add_special and the model asks for it). Writes at most cap ids and
 * returns the full count (call again with a bigger buffer when it exceeds cap), or SLUICE_EINVAL
 * (NULL text), SLUICE_EUNSUPPORTED (synthetic model: no tokenizer), SLUICE_ENOMEM. */
int sluice_tokenize(const sluice_engine *e, const char *text, bool add_special, int32_t *ids, int cap);

/* Detokenizes ids into buf (NUL-terminated, truncated to cap - 1 bytes). Returns the full length
 * in bytes, or SLUICE_EINVAL (bad id), SLUICE_EUNSUPPORTED (no tokenizer). */
int sluice_detokenize(const sluice_engine *e, const int32_t *ids, int n_ids, char *buf, int cap);

typedef struct sluice_chat_message {
    const char *role;            /* "system", "user", "assistant" */
    const char *content;
} sluice_chat_message;

/* Renders messages with the model's chat template (ChatML or Llama-2 [INST]); add_assistant
 * appends the assistant turn's opening. Writes at most cap bytes (NUL-terminated) and returns the
 * full length, or SLUICE_EUNSUPPORTED (no/unknown template), SLUICE_EINVAL. */
int sluice_chat_apply_template(const sluice_engine *e, const sluice_chat_message *msgs, int n_msgs,
                               bool add_assistant, char *buf, int cap);

/* ---- requests --------------------------------------------------------------------------------- */

typedef enum sluice_finish_reason {
    SLUICE_FINISH_NONE = 0, /* still running */
    SLUICE_FINISH_EOS,      /* the model produced end-of-sequence */
    SLUICE_FINISH_STOP,     /* a stop string matched (it is cut from the text) */
    SLUICE_FINISH_LENGTH,   /* max_tokens or max_sequence_length reached */
    SLUICE_FINISH_ABORT,    /* canceled, or shut down */
    SLUICE_FINISH_ERROR,    /* the backend failed (result status says why) */
} sluice_finish_reason;

/* "none", "eos", "stop", "length", "abort", "error". Cannot fail. */
const char *sluice_finish_reason_name(sluice_finish_reason r);

/* The most likely tokens at one position (logprobs): ids with their log-probabilities under the
 * model's raw distribution (log-softmax of the unmodified logits, temperature 1), most likely
 * first (ties: lower id first). */
typedef struct sluice_top_logprob {
    int32_t token;
    float logprob;
} sluice_top_logprob;

#define SLUICE_MAX_TOP_LOGPROBS 20

/* One generated token, passed to on_token. piece: the new text, possibly empty while a multi-byte
 * character or a possible stop string is held back; text is released as soon as it cannot be part
 * of a stop string. Valid during the call only. */
typedef struct sluice_token {
    sluice_request_id id;
    int index;              /* which parallel sample (0 .. n-1) */
    int32_t token;
    float logprob;          /* log-probability of token under the model's distribution (temperature 1) */
    const char *piece;      /* new text, not NUL-terminated */
    size_t piece_len;
    int n_generated;        /* tokens generated so far by this sample, this one included */
    double t;               /* when it was sampled */
    const sluice_top_logprob *top; /* the request's top_logprobs most likely tokens at this position
                                      (the sampled one among them only if it ranks), or NULL */
    int n_top;              /* entries in top: the request's top_logprobs (fewer only when fewer
                               tokens have a finite logit) */
} sluice_token;

/* Return false to cancel the request (e.g. the client went away). */
typedef bool (*sluice_token_cb)(const sluice_token *tok, void *user);

typedef struct sluice_sample {
    int index;                  /* 0 .. n-1; with best_of, ordered by mean logprob, best first */
    const int32_t *ids;         /* generated token ids */
    int n_ids;
    const char *text;           /* their text (stop string cut), NUL-terminated */
    size_t text_len;
    double logprob_sum;         /* sum of the tokens' logprobs */
    sluice_finish_reason finish_reason;
    const double *token_times;  /* n_ids times, one per token (inter-token latency) */
    const float *logprobs;      /* n_ids: each token's log-probability (as sluice_token.logprob) */
    const sluice_top_logprob *top_logprobs; /* n_ids * n_top: row i = token i's alternatives, as
                                               sluice_token.top (unused tail entries: token -1,
                                               logprob -INFINITY); NULL when n_top is 0 */
    int n_top;                  /* the request's top_logprobs */
} sluice_sample;

typedef struct sluice_result {
    sluice_request_id id;
    int status;                 /* SLUICE_OK, SLUICE_ECANCELED, SLUICE_EDEVICE */
    int n_samples;              /* n */
    const sluice_sample *samples;
    const int32_t *prompt_ids;  /* the prompt as tokenized (BOS included) */
    int n_prompt_ids;
    int n_cached_prompt_tokens; /* prompt tokens served from the prefix cache */
    int preemptions;
    double t_arrival;           /* submit */
    double t_first_scheduled;   /* first step that included it */
    double t_first_token;       /* first token sampled */
    double t_finish;
    void *user;                 /* the request's user pointer */
} sluice_result;

/* Called once per request when all its samples are done (also for canceled ones). */
typedef void (*sluice_done_cb)(const sluice_result *r, void *user);

typedef struct sluice_request_params {
    /* the prompt: text, or token ids (then text is ignored) */
    const char *prompt;          /* UTF-8, tokenized with BOS as the model asks. default NULL */
    const int32_t *prompt_ids;   /* used as given (add BOS yourself). default NULL */
    int n_prompt_ids;
    bool chat;                   /* wrap prompt as one user message in the chat template. default false */

    int max_tokens;              /* new tokens per sample; 0 = up to max_sequence_length. default 16 */
    int priority;                /* lower = more urgent; FCFS within a priority. default 0 */

    /* sampling */
    float temperature;           /* 0 = greedy. default 0.8 */
    int top_k;                   /* 0 = off. default 40 */
    float top_p;                 /* 1 = off. default 0.95 */
    float min_p;                 /* 0 = off. default 0.05 */
    float repeat_penalty;        /* 1 = off. default 1.0 */
    int repeat_last_n;           /* tokens the penalties look back over; -1 = all. default 64 */
    float frequency_penalty;     /* logit -= f * count in the window. default 0 */
    float presence_penalty;      /* logit -= p if present in the window. default 0 */
    uint64_t seed;               /* PRNG seed; SLUICE_SEED_RANDOM = from the clock. default SLUICE_SEED_RANDOM */
    const char *const *stop;     /* stop strings (matched on the text; cut from it). default NULL */
    int n_stop;
    bool ignore_eos;             /* keep generating past EOS (benchmarks). default false */

    /* parallel sampling: the samples share the prompt's KV blocks and the first token, then fork */
    int n;                       /* samples returned. default 1 */
    int best_of;                 /* samples generated (>= n); the n with the highest mean logprob are
                                    returned. 0 = n. With best_of > n tokens are not streamed. default 0 */

    /* delivery */
    sluice_token_cb on_token;    /* per token, on the engine thread, or NULL. default NULL */
    sluice_done_cb on_done;      /* at completion, or NULL. Set: the request is detached (its result
                                    is freed after on_done returns; sluice_wait gives SLUICE_ENOTFOUND).
                                    default NULL */
    void *user;                  /* passed to both callbacks and kept in the result */

    /* logprobs */
    int top_logprobs;            /* 0..SLUICE_MAX_TOP_LOGPROBS most likely tokens reported per position
                                    (sluice_token.top, sluice_sample.top_logprobs); computed from the raw
                                    logits on the engine thread. default 0 */
} sluice_request_params;

#define SLUICE_SEED_RANDOM UINT64_MAX

/* The documented defaults. Cannot fail. */
sluice_request_params sluice_request_default_params(void);

/* Queues a request; *id receives its id (unique for the engine's life).
 *
 *   SLUICE_OK            queued
 *   SLUICE_EINVAL        a parameter is invalid (no prompt, n < 1, best_of < n, bad token id, ...)
 *   SLUICE_ETOO_LONG     prompt + max_tokens exceed max_sequence_length or the KV pool
 *   SLUICE_EQUEUE_FULL   max_waiting_requests reached: retry later
 *   SLUICE_ESTATE        the engine is shutting down
 *   SLUICE_EUNSUPPORTED  text prompt on a model without a tokenizer, chat without a template
 *   SLUICE_ENOMEM
 *
 * On error nothing is queued, no callback is called, and sluice_engine_errmsg() says why. */
int sluice_submit(sluice_engine *e, const sluice_request_params *params, sluice_request_id *id);

/* Cancels a request: its KV blocks are freed at once (or at the end of the step running now), its
 * samples finish with SLUICE_FINISH_ABORT and its result gets status SLUICE_ECANCELED.
 * SLUICE_ENOTFOUND if it is not live. */
int sluice_cancel(sluice_engine *e, sluice_request_id id);

/* Waits for a request submitted without on_done and hands its result over (*out; free it with
 * sluice_result_free). timeout_s < 0 waits forever.
 *   SLUICE_OK          *out set (check (*out)->status)
 *   SLUICE_EBUSY       timeout_s passed; the request is still running (wait again later)
 *   SLUICE_ENOTFOUND   unknown id, already collected, or detached (on_done)
 * Only one thread may wait for a given request. */
int sluice_wait(sluice_engine *e, sluice_request_id id, double timeout_s, sluice_result **out);

/* Frees a result from sluice_wait. NULL is a no-op. */
void sluice_result_free(sluice_result *r);

/* ---- statistics ------------------------------------------------------------------------------- */

typedef struct sluice_stats {
    /* queue */
    int waiting, running;          /* requests' sequences waiting for / holding KV */
    int64_t waiting_prompt_tokens;
    /* KV pool */
    int block_size;
    int kv_blocks_total, kv_blocks_used, kv_blocks_free, kv_blocks_cached; /* cached: evictable prefixes */
    int64_t kv_used_slots, kv_reserved_slots;
    /* prefix cache */
    int64_t prefix_queries, prefix_query_tokens, prefix_hit_tokens;
    /* scheduling */
    int64_t preemptions, evictions, steps;
    /* requests */
    int64_t requests_submitted, requests_rejected, requests_finished, requests_canceled;
    /* tokens */
    int64_t prompt_tokens;         /* prompt tokens run through the model (recompute included) */
    int64_t generation_tokens;     /* tokens sampled */
    int64_t spec_draft_tokens;     /* speculative draft tokens proposed and run */
    int64_t spec_accepted_tokens;  /* of which kept (acceptance = accepted / draft) */
    int64_t spec_rejections;       /* speculating steps of a sequence that ended at a rejected draft:
                                      accepted / (accepted + rejections) estimates the per-draft
                                      acceptance rate the simulator takes (--spec-acceptance) */
    int64_t spec_lookups;          /* decode steps of a sequence with draft slots */
    int64_t spec_proposals;        /* of which prompt lookup found drafts: proposals / lookups is the
                                      rate the simulator takes as --spec-propose */
    /* time */
    double uptime_s;               /* since create */
    double busy_s;                 /* time spent running steps */
    double prompt_tokens_per_s;    /* prompt tokens per wall second over the last ~10 s */
    double generation_tokens_per_s; /* sampled tokens per wall second over the last ~10 s */
    /* the live knobs (moved by the adaptive controller; otherwise as configured) */
    int max_num_batched_tokens;    /* CONTINUOUS token budget per step now */
    double batch_timeout_ms;       /* static strategies' batch timeout now */
    int64_t adaptive_changes;      /* changes the adaptive controller made so far (0 when off) */
    /* the cpu backend's threads (0 and 0 on other backends) */
    int threads_active;            /* threads the next decode step runs on: n_threads, or fewer while
                                      other processes hold the cores (sluice_engine_params.fixed_threads;
                                      long prompt steps keep a count of their own) */
    int64_t thread_drops;          /* times a step was moved to one thread fewer */
} sluice_stats;

/* Fills *out with a consistent snapshot. Cannot fail. */
void sluice_get_stats(sluice_engine *e, sluice_stats *out);

#ifdef __cplusplus
}
#endif

#endif
