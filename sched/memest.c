/* memest.c — the memory estimator: parameter counts, KV and activation bytes, KV pool plans. */
#include "memest.h"

#include <string.h>

#include "status.h"

/* Numbers from each model's published config.json (HF hub). head_dim = hidden / n_heads except
 * where the config says otherwise. */
static const sched_model_shape_t builtin[] = {
    /* name, layers, hidden, heads, kv heads, head_dim, intermediate, vocab, ctx, tied, w, kv */
    {"llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096, 0, 2, 2},
    {"llama2-13b", 40, 5120, 40, 40, 128, 13824, 32000, 4096, 0, 2, 2},
    {"llama2-70b", 80, 8192, 64, 8, 128, 28672, 32000, 4096, 0, 2, 2},
    {"llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192, 0, 2, 2},
    {"llama3-70b", 80, 8192, 64, 8, 128, 28672, 128256, 8192, 0, 2, 2},
    {"mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768, 0, 2, 2},
    {"tinyllama-1.1b", 22, 2048, 32, 4, 64, 5632, 32000, 2048, 0, 2, 2},
    {"smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 8192, 1, 2, 2},
    {"stories260k", 5, 64, 8, 4, 8, 172, 512, 512, 1, 2, 2},
};
#define N_BUILTIN ((int)(sizeof builtin / sizeof builtin[0]))

int sched_model_shape_builtin(const char *name, sched_model_shape_t *out)
{
    for (int i = 0; i < N_BUILTIN; i++) {
        if (!strcmp(name, builtin[i].name)) {
            *out = builtin[i];
            return SL_OK;
        }
    }
    return SL_ENOTFOUND;
}

const char *sched_model_shape_names(void)
{
    return "llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3-70b, mistral-7b, tinyllama-1.1b, "
           "smollm2-135m, stories260k";
}

int64_t sched_mem_params(const sched_model_shape_t *m)
{
    int64_t d = m->hidden, q = (int64_t)m->n_heads * m->head_dim, kv = (int64_t)m->n_kv_heads * m->head_dim;
    int64_t attn = d * q + 2 * d * kv + q * d;     /* wq, wk, wv, wo */
    int64_t ffn = 3 * d * m->intermediate;         /* gate, up, down */
    int64_t layer = attn + ffn + 2 * d;            /* + attention and FFN RMSNorm weights */
    int64_t embed = (int64_t)m->vocab * d;
    return embed + m->n_layers * layer + d + (m->tied_embeddings ? 0 : embed); /* + final norm, LM head */
}

int64_t sched_mem_weight_bytes(const sched_model_shape_t *m)
{
    return (int64_t)((double)sched_mem_params(m) * m->bytes_per_weight);
}

int64_t sched_mem_kv_bytes_per_token(const sched_model_shape_t *m)
{
    return (int64_t)(2.0 * m->n_layers * m->n_kv_heads * m->head_dim * m->bytes_per_kv);
}

int64_t sched_mem_activation_bytes(const sched_model_shape_t *m, int64_t n_tokens, int64_t n_sampled)
{
    /* Live fp16 rows per token at the widest point of a layer (activations are reused across
     * layers): residual x and normed xb (2 hidden), q and attention output (2 n_heads*head_dim),
     * k and v (2 n_kv_heads*head_dim), SwiGLU gate and up (2 intermediate). Attention scores are
     * not materialised (paged/flash kernels). Plus fp32 logits for the sampled rows. */
    int64_t per_token = 2 * (int64_t)m->hidden + 2 * (int64_t)m->n_heads * m->head_dim +
                        2 * (int64_t)m->n_kv_heads * m->head_dim + 2 * (int64_t)m->intermediate;
    return 2 * n_tokens * per_token + 4 * n_sampled * (int64_t)m->vocab;
}

int sched_mem_plan(const sched_model_shape_t *m, int64_t device_bytes, double utilization, int block_size,
                   int max_step_tokens, sched_mem_plan_t *out)
{
    memset(out, 0, sizeof *out);
    out->device_bytes = device_bytes;
    out->utilization = utilization;
    if (device_bytes <= 0 || !(utilization > 0 && utilization <= 1) || block_size <= 0 || max_step_tokens <= 0 ||
        m->n_layers <= 0 || m->n_kv_heads <= 0 || m->head_dim <= 0 || m->bytes_per_kv <= 0)
        return SL_EINVAL;
    int64_t usable = (int64_t)((double)device_bytes * utilization);
    out->weight_bytes = sched_mem_weight_bytes(m);
    /* every row of the largest step may be sampled (a prefill of many one-token prompts) */
    out->activation_bytes = sched_mem_activation_bytes(m, max_step_tokens, max_step_tokens);
    out->kv_bytes_per_block = sched_mem_kv_bytes_per_token(m) * block_size;
    int64_t left = usable - out->weight_bytes - out->activation_bytes;
    if (left <= 0)
        return SL_ENOMEM;
    out->kv_bytes = left;
    out->num_blocks = left / out->kv_bytes_per_block;
    out->max_tokens_in_kv = out->num_blocks * block_size;
    return SL_OK;
}

int64_t sched_mem_naive_slots(int64_t n_requests, int max_sequence_length)
{
    return n_requests * max_sequence_length;
}
