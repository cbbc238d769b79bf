/* backend.h — the compute backend interface: an opaque handle over a versioned table of functions.
 *
 * A backend owns a copy (or view) of the model's weights in its preferred layout and one paged KV
 * pool of num_blocks blocks of block_size tokens. It runs one scheduler step at a time: for every
 * sequence of the step, it writes that sequence's new tokens' K/V into the blocks named by the
 * block table and attends over context_len + n_tokens positions, then returns logits rows.
 *
 * Backends: cpu (engine/cpu/, the oracle) and cuda (engine/cuda/). The CPU backend is the
 * reference the CUDA backend is checked against (ggml's compare-backends habit).
 */
#ifndef SLUICE_ENGINE_BACKEND_H
#define SLUICE_ENGINE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"

#define ENG_BACKEND_VERSION 2

/* One sequence's slice of a batch. */
typedef struct eng_batch_seq {
    const int32_t *tokens;      /* n_tokens ids */
    int n_tokens;
    int pos;                    /* position of tokens[0] = tokens already in this sequence's KV */
    const int32_t *block_table; /* blocks covering pos + n_tokens positions */
    int n_blocks;
    int logits;                 /* 0: none; 1: the last token's row; 2: one row per token */
} eng_batch_seq_t;

typedef struct eng_batch {
    int n_seqs;
    const eng_batch_seq_t *seqs;
    int n_copies;               /* block copies (copy-on-write) to do before the forward */
    const int32_t *copy_src, *copy_dst;
} eng_batch_t;

/* Element type of the KV pool. The CPU backend keeps any; the CUDA one keeps F16 and refuses the
 * others. I8: int8 values with one float scale per token and kv head (engine/cpu/attention.h),
 * about half the bytes of F16. */
typedef enum eng_kv_dtype { ENG_KV_F32 = 0, ENG_KV_F16 = 1, ENG_KV_I8 = 2 } eng_kv_dtype_t;

/* Bytes of one K or V element in a pool of this type, scales included: 4, 2, or (head_dim + 4) /
 * head_dim for I8 (exact when block_size * head_dim is a multiple of 4). Cannot fail. */
double eng_kv_elem_bytes(eng_kv_dtype_t type, int head_dim);

typedef struct eng_backend_params {
    int n_threads;              /* cpu: worker threads (0 = all cores). default 0 */
    eng_kv_dtype_t kv_dtype;    /* the KV pool's elements. default ENG_KV_F16 where eng_cpu_prefers_f16_kv(),
                                   else ENG_KV_F32 */
    double gpu_memory_utilization; /* cuda: fraction of device memory to use. default 0.9 */
    int device;                 /* cuda: device ordinal. default 0 */
    int use_graphs;             /* cuda: capture decode steps in CUDA graphs. default 1 */
    double idle_spin_s;         /* cpu: workers poll for the next step this long after one before
                                   they sleep (the engine passes its idle_spin_ms). default 0.002 */
    int fixed_threads;          /* cpu: 1 = every step on n_threads; 0 = on fewer while other processes
                                   hold the cores (engine/cpu/threadpool.h). default 0 */
} eng_backend_params_t;

eng_backend_params_t eng_backend_params_default(void);

typedef struct eng_backend eng_backend_t;

typedef struct eng_backend_ops {
    int version;     /* ENG_BACKEND_VERSION */
    const char *name;
    /* Bytes of memory available for the KV pool after weights and workspace (for the estimator);
     * the CPU backend reports host memory. */
    int64_t (*kv_budget_bytes)(eng_backend_t *b);
    /* (Re)allocates the KV pool. SL_ENOMEM when it does not fit. */
    int (*kv_alloc)(eng_backend_t *b, int num_blocks, int block_size);
    /* Runs the batch. logits receives the requested rows, in sequence order then token order, each
     * cfg.vocab floats; *n_rows is set to their count. Returns SL_OK or an error (message in
     * errmsg). logits must hold at least (sum of requested rows) * vocab floats. */
    int (*forward)(eng_backend_t *b, const eng_batch_t *batch, float *logits, int *n_rows);
    /* (optional) Greedy argmax of each requested row, on the device: writes n_rows token ids and
     * skips returning logits. NULL when the backend has none. */
    int (*forward_greedy)(eng_backend_t *b, const eng_batch_t *batch, int32_t *tokens, int *n_rows);
    /* (optional) Picks each requested row's token on the device as eng_sampler_pick would from its
     * logits: rows[i] for the i-th requested row, pen[0 .. 2 n_pen) the step's (token, count)
     * pairs the rows point into. Writes n_rows token ids (-1 for a row without a finite logit)
     * and their raw log-probabilities; no logits cross to the host. NULL when the backend has
     * none (the engine then samples on the host from forward's logits). */
    int (*forward_sample)(eng_backend_t *b, const eng_batch_t *batch, const eng_sample_row_t *rows,
                          const int32_t *pen, int n_pen, int32_t *tokens, float *logprobs,
                          int *n_rows);
    /* (optional) Threads the next step runs on and how many times the backend has dropped one
     * because other processes held its cores (engine/cpu/threadpool.h). Called by the thread that
     * runs the steps. NULL when the backend has no such pool. */
    void (*threads)(eng_backend_t *b, int *active, int64_t *drops);
    /* (optional) How long the workers poll for the next step after one before they sleep, from the
     * next wait on (created with eng_backend_params_t.idle_spin_s). NULL when the backend has no
     * such workers. */
    void (*set_idle_spin)(eng_backend_t *b, double spin_s);
    const char *(*errmsg)(eng_backend_t *b);
    void (*free)(eng_backend_t *b);
} eng_backend_ops_t;

struct eng_backend {
    const eng_backend_ops_t *ops;
    const eng_model_t *model; /* not owned; must outlive the backend */
    double kv_elem_bytes;     /* bytes per K or V element in its pool, I8's scales included: 4 (F32),
                                 2 (F16), (head_dim + 4) / head_dim (I8) */
    void *ctx;
};

/* Creates a backend by name ("cpu", "cuda"). NULL + err on unknown name, a backend not built in
 * ("cuda: not built: nvcc was not found at build time"), no device, or not enough memory. */
eng_backend_t *eng_backend_create(const char *name, const eng_model_t *model,
                                  const eng_backend_params_t *params, char *err, int errlen);
void eng_backend_free(eng_backend_t *b);

/* Constructors each backend provides (used by eng_backend_create). */
eng_backend_t *eng_cpu_backend_create(const eng_model_t *model, const eng_backend_params_t *params,
                                      char *err, int errlen);
eng_backend_t *eng_cuda_backend_create(const eng_model_t *model, const eng_backend_params_t *params,
                                       char *err, int errlen);

#endif
