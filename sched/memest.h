/* memest.h — the memory estimator: model shapes, weight / KV / activation bytes, KV block counts.
 *
 * Pure arithmetic over a model shape: what the weights take, what one token of KV takes, what a
 * step of T tokens needs as activation workspace, how many KV blocks fit in a device's memory
 * under a utilisation limit, and what a naive max-length reservation would take instead (so KV
 * waste can be reported). Built-in shapes carry the numbers of each model's published config.
 */
#ifndef SLUICE_MEMEST_H
#define SLUICE_MEMEST_H

#include <stdint.h>

typedef struct sched_model_shape {
    char name[32];           /* "llama2-7b" */
    int n_layers;
    int hidden;              /* model dimension */
    int n_heads;
    int n_kv_heads;          /* GQA: < n_heads */
    int head_dim;            /* usually hidden / n_heads */
    int intermediate;        /* FFN inner dimension (SwiGLU: gate and up are each this wide) */
    int vocab;
    int max_context;         /* trained context length */
    int tied_embeddings;     /* 1: the LM head reuses the token embedding */
    double bytes_per_weight; /* 2 for fp16; 0.5625 for Q4_1 etc. */
    double bytes_per_kv;     /* bytes per KV element: 2 for fp16, 4 for f32, (head_dim + 4) / head_dim
                                for the CPU engine's int8 rows with their scales */
} sched_model_shape_t;

/* Looks up a built-in shape by name (llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b,
 * mistral-7b, tinyllama-1.1b, smollm2-135m, stories260k), fp16 weights and KV. SL_ENOTFOUND for
 * any other name. */
int sched_model_shape_builtin(const char *name, sched_model_shape_t *out);
/* Comma-separated list of the built-in names, for error messages. Cannot fail. */
const char *sched_model_shape_names(void);

/* Total parameter count (embeddings, all layers, norms, LM head unless tied). */
int64_t sched_mem_params(const sched_model_shape_t *m);
/* Weight bytes = params * bytes_per_weight. */
int64_t sched_mem_weight_bytes(const sched_model_shape_t *m);
/* KV bytes one token occupies across all layers: 2 * n_layers * n_kv_heads * head_dim * bytes_per_kv. */
int64_t sched_mem_kv_bytes_per_token(const sched_model_shape_t *m);
/* Peak activation workspace of one step of n_tokens tokens with n_sampled logits rows (fp16
 * activations; fp32 logits). */
int64_t sched_mem_activation_bytes(const sched_model_shape_t *m, int64_t n_tokens, int64_t n_sampled);

typedef struct sched_mem_plan {
    int64_t device_bytes;        /* input: device memory */
    double utilization;          /* input: fraction usable (gpu_memory_utilization) */
    int64_t weight_bytes;
    int64_t activation_bytes;    /* workspace reserved for the largest step */
    int64_t kv_bytes;            /* what remains for the KV pool */
    int64_t kv_bytes_per_block;
    int64_t num_blocks;          /* KV blocks that fit; 0 when the weights alone do not fit */
    int64_t max_tokens_in_kv;    /* num_blocks * block_size */
} sched_mem_plan_t;

/* Plans the KV pool for a device: usable = device_bytes * utilization; minus weights and the
 * activation workspace of a max_step_tokens step; the rest in blocks of block_size tokens.
 * Returns SL_OK, SL_EINVAL for non-positive inputs, or SL_ENOMEM when the weights and workspace do
 * not fit (out is still filled so the caller can say "model needs X GiB, device has Y"). */
int sched_mem_plan(const sched_model_shape_t *m, int64_t device_bytes, double utilization,
                   int block_size, int max_step_tokens, sched_mem_plan_t *out);

/* Token slots a max-length reservation holds for n_requests requests: n * max_sequence_length. */
int64_t sched_mem_naive_slots(int64_t n_requests, int max_sequence_length);

#endif
