/* model.h — a Llama-family model in memory: hyperparameters, weight tensors, the tokenizer handle.
 *
 * Immutable after loading. Weights are views: for a GGUF file they point into the mmap (never
 * freed one by one), for synthetic models into one buffer the model owns. Backends read this and
 * build their own copies (the CUDA backend uploads fp16; the CPU backend uses the views directly).
 *
 * Matrix convention (GGUF/ggml): a weight of shape ne = {n_in, n_out} is stored as n_out rows of
 * n_in elements, each row in the tensor's type (blocks of 32 for Q4_0/Q4_1/Q8_0, 256 for Q6_K).
 * y = W x computes y[r] = dot(row r, x).
 */
#ifndef SLUICE_ENGINE_MODEL_H
#define SLUICE_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

/* Tensor element types, numbered as GGUF/ggml numbers them. */
typedef enum eng_type {
    ENG_T_F32 = 0,
    ENG_T_F16 = 1,
    ENG_T_Q4_0 = 2,
    ENG_T_Q4_1 = 3,
    ENG_T_Q5_0 = 6,
    ENG_T_Q5_1 = 7,
    ENG_T_Q8_0 = 8,
    ENG_T_Q4_K = 12,
    ENG_T_Q5_K = 13,
    ENG_T_Q6_K = 14,
    ENG_T_BF16 = 30,
} eng_type_t;

/* Name ("q4_1") of a type; "?" for an unknown value. Cannot fail. */
const char *eng_type_name(int type);
/* Elements per block (1 for float types) and bytes per block; 0 for an unknown type. */
int eng_type_block_elems(int type);
int eng_type_block_bytes(int type);
/* Bytes of a row of n elements (n a multiple of the block size); 0 when it is not. */
size_t eng_type_row_bytes(int type, int64_t n);

typedef struct eng_tensor {
    eng_type_t type;
    int n_dims;
    int64_t ne[4];     /* ne[0] = elements per row (fastest), ne[1] = rows, ... */
    const void *data;  /* NULL if absent (optional tensors) */
    size_t nbytes;
} eng_tensor_t;

typedef struct eng_layer {
    eng_tensor_t attn_norm; /* (dim)                           F32 */
    eng_tensor_t wq;        /* (dim -> n_heads * head_dim)       */
    eng_tensor_t wk;        /* (dim -> n_kv_heads * head_dim)    */
    eng_tensor_t wv;        /* (dim -> n_kv_heads * head_dim)    */
    eng_tensor_t wo;        /* (n_heads * head_dim -> dim)       */
    eng_tensor_t ffn_norm;  /* (dim)                           F32 */
    eng_tensor_t w_gate;    /* (dim -> ffn)                      */
    eng_tensor_t w_up;      /* (dim -> ffn)                      */
    eng_tensor_t w_down;    /* (ffn -> dim)                      */
} eng_layer_t;

typedef struct eng_model_config {
    char arch[32];          /* "llama" */
    char name[64];          /* general.name, or the synthetic shape name */
    int n_layers;
    int dim;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ffn_dim;
    int vocab;
    int n_ctx_train;        /* trained context length */
    float rope_theta;       /* default 10000 */
    float norm_eps;         /* RMSNorm epsilon, default 1e-5 */
    int tied_output;        /* 1: the LM head is tok_embd */
} eng_model_config_t;

struct eng_tokenizer;
struct eng_gguf;

typedef struct eng_model {
    eng_model_config_t cfg;
    eng_tensor_t tok_embd;  /* (dim, vocab): row t is token t's embedding */
    eng_tensor_t out_norm;  /* (dim) F32 */
    eng_tensor_t output;    /* (dim -> vocab); equals tok_embd when tied */
    eng_layer_t *layers;    /* n_layers */
    struct eng_tokenizer *tok;  /* NULL for synthetic models */
    struct eng_gguf *gguf;      /* the file the views point into, or NULL */
    void *owned;                /* synthetic weights buffer, or NULL */
    char *chat_template;        /* tokenizer.chat_template, or NULL */
} eng_model_t;

/* Loads a model: a GGUF path, or "synthetic:SHAPE" (a built-in shape from sched/memest.h, random
 * weights of weight_type, seeded). On error returns NULL and writes "FILE: what is wrong" into err.
 * Errors: unreadable file, not GGUF, unsupported version/arch/type, missing or mis-shaped tensor. */
eng_model_t *eng_model_load(const char *path_or_synthetic, char *err, int errlen);
/* Synthetic model of a built-in shape with random weights of the given type (F32, F16, Q8_0,
 * Q4_0, Q4_1), deterministic for seed. NULL + err on unknown shape or out of memory. */
eng_model_t *eng_model_synthetic(const char *shape, eng_type_t weight_type, uint64_t seed, char *err,
                                 int errlen);
void eng_model_free(eng_model_t *m);

/* A built-in shape with no weights on the host: the config of eng_model_synthetic and every tensor
 * typed (F16 projections, F32 norms) and shaped, but data NULL; gguf, owned and tok NULL. For
 * backends that generate their own weights (CUDA); the CPU backend refuses it with a clear error.
 * NULL + err on an unknown shape or out of memory. Free with eng_model_free. */
eng_model_t *eng_model_shape_only(const char *shape, char *err, int errlen);
/* eng_model_load for a backend: on "cuda", "synthetic:SHAPE" and "synthetic:SHAPE:f16" give
 * eng_model_shape_only (the backend generates fp16 weights on the device) and another synthetic
 * type is an error; everything else is eng_model_load. */
eng_model_t *eng_model_load_for(const char *path_or_synthetic, const char *backend, char *err,
                                int errlen);

#endif
