/* cuda_backend.c — the CUDA backend: fp16 weights on one device, one paged fp16 KV pool, a step
 * as ~10 launches per layer on one stream (cuBLAS GEMMs for the projections, own kernels for the
 * rest), decode steps replayed from CUDA graphs captured per batch bucket.
 *
 * Design notes
 *  1. Weights: one device allocation. Q, K, V rows are stacked into one matrix and gate, up into
 *     another, so a layer is four GEMMs. GGUF types are dequantised on the host to fp32 in chunks
 *     (engine/quant.h), uploaded and rounded to fp16 on the device. A model with neither a GGUF
 *     file nor an owned buffer (model->gguf == NULL && model->owned == NULL: "shape only") gets
 *     its weights generated on the device from a seeded hash (ENG_CUDA_SYNTH_SEED), uniform with
 *     standard deviation 0.02 like eng_model_synthetic, norms 1: 13.5 GB of Llama-2-7B never
 *     exists on the host.
 *  2. Memory: at create, weights + workspace (cuda_plan.c: eng_cuda_sizes) must fit in
 *     min(free, total * gpu_memory_utilization), else "model needs X GiB, device has Y".
 *     kv_budget_bytes is what then remains under total * utilization; kv_alloc takes it.
 *  3. A step: the batch is flattened on the host into one int32 plan (tokens, positions, KV slots,
 *     attention rows/tiles, logits rows, block tables, copies), uploaded with one copy; then
 *     copy-on-write block copies, then the layers, then the LM head on the wanted rows only, in
 *     chunks of ENG_CUDA_MAX_LOGIT_ROWS, each followed by its device-to-host copy (fp32 logits, or
 *     int32 ids after an on-device argmax for forward_greedy).
 *  4. Graphs: a decode step (1..256 sequences, one token each, logits wanted) is padded to its
 *     bucket (1,2,4,...,256) and replays a graph keyed by (greedy, bucket, split bucket); the
 *     split bucket is the power of two >= ceil(longest context / ENG_CUDA_ATTN_PART), so one graph
 *     serves every context up to its width (the kernels read lengths from the plan). Graphs hold
 *     device pointers: kv_alloc destroys them all.
 *  5. Errors: every CUDA and cuBLAS call and every launch is checked; the first failure is written
 *     as "cuda: FILE:LINE: CALL: MESSAGE" into the backend's error string and returned as
 *     SL_EDEVICE (SL_ENOMEM for an allocation that failed).
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/quant.h"
#include "sched/status.h"

typedef struct cuda_layer {
    uint16_t *wqkv;   /* ((n_heads + 2 n_kv) head_dim) x dim */
    uint16_t *wo;     /* dim x (n_heads head_dim) */
    uint16_t *wgu;    /* (2 ffn) x dim: gate rows then up rows */
    uint16_t *wdown;  /* dim x ffn */
    float *attn_norm; /* dim */
    float *ffn_norm;  /* dim */
} cuda_layer_t;

typedef struct cuda_ctx {
    char err[512];
    int device;
    char dev_name[256];
    eng_backend_params_t params;
    eng_model_config_t cfg;
    eng_cuda_sizes_t sizes;
    int qkv_dim, flash;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* device memory */
    void *wbuf;           /* every fp16 weight */
    float *nbuf;          /* every norm weight */
    void *ws;             /* the workspace (activations, partials, logits, plan, cuBLAS) */
    uint16_t *embd, *out_w;
    float *out_norm;
    cuda_layer_t *layers; /* host array of device pointers */
    float *x, *logits, *partial;
    uint16_t *xn, *qkv, *att, *gu, *h;
    int32_t *ids, *meta;
    void *blas_ws;
    /* pinned host memory */
    int32_t *meta_h;
    /* KV pool */
    uint16_t *kv;
    int num_blocks, block_size;
    int64_t pool_elems;   /* elements of one layer's K (or V) pool */
    cudaGraphExec_t graphs[2][ENG_CUDA_N_BUCKETS][ENG_CUDA_N_SPLIT_BUCKETS];
} cuda_ctx_t;

/* ---- error recording --------------------------------------------------------------------------- */

static int fail(cuda_ctx_t *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

/* "cuda: file:line: cudaMalloc: out of memory": the call's name is the text before its '('. */
static int fail_call(cuda_ctx_t *c, int is_oom, const char *file, int line, const char *call,
                     const char *msg) {
    const char *base = strrchr(file, '/');
    int n = (int)strcspn(call, "(");
    return fail(c, is_oom ? SL_ENOMEM : SL_EDEVICE, "cuda: %s:%d: %.*s: %s", base ? base + 1 : file,
                line, n, call, msg);
}

#define CK(c, call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (cudaError_t)(call);                                                      \
        if (e_ != cudaSuccess)                                                                     \
            return fail_call((c), e_ == cudaErrorMemoryAllocation, __FILE__, __LINE__, #call,      \
                             cudaGetErrorString(e_));                                              \
    } while (0)

#define CKB(c, call)                                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return fail_call((c), s_ == CUBLAS_STATUS_ALLOC_FAILED, __FILE__, __LINE__, #call,     \
                             cublasGetStatusString(s_));                                           \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        int r_ = (call);                                                                           \
        if (r_ != SL_OK)                                                                           \
            return r_;                                                                             \
    } while (0)

/* ---- weights ------------------------------------------------------------------------------------ */

static int model_is_shape_only(const eng_model_t *m) { return m->gguf == NULL && m->owned == NULL; }

/* Uploads rows [0, n_out) of t (n_out x n_in) as fp16 to dst; stage_h (pinned) and stage_d hold
 * stage_floats floats. Synthetic (shape-only) models generate instead, seeded by id. */
static int upload_matrix(cuda_ctx_t *c, const eng_model_t *m, const eng_tensor_t *t, const char *name,
                         int64_t n_in, int64_t n_out, uint16_t *dst, uint64_t id, float *stage_h,
                         float *stage_d, int64_t stage_floats) {
    if (model_is_shape_only(m)) {
        const float a = 0.02f * 1.7320508f;
        CK(c, eng_cuda_launch_synth_f16(dst, n_in * n_out,
                                        ENG_CUDA_SYNTH_SEED ^ (id * 0x9e3779b97f4a7c15ULL), a,
                                        c->stream));
        return SL_OK;
    }
    if (!t->data || t->ne[0] != n_in || t->ne[1] != n_out)
        return fail(c, SL_EINVAL, "cuda: tensor %s is missing or not %lld x %lld", name,
                    (long long)n_out, (long long)n_in);
    size_t rb = eng_type_row_bytes(t->type, n_in);
    if (rb == 0)
        return fail(c, SL_EUNSUPPORTED, "cuda: tensor %s: type %s rows of %lld", name,
                    eng_type_name(t->type), (long long)n_in);
    if (t->type == ENG_T_F16) {
        CK(c, cudaMemcpy(dst, t->data, (size_t)(n_in * n_out) * 2, cudaMemcpyHostToDevice));
        return SL_OK;
    }
    int64_t chunk = stage_floats / n_in;
    for (int64_t r0 = 0; r0 < n_out; r0 += chunk) {
        int64_t n = n_out - r0 < chunk ? n_out - r0 : chunk;
        CK(c, cudaStreamSynchronize(c->stream)); /* the previous chunk left stage_h */
        for (int64_t r = 0; r < n; r++)
            if (eng_dequantize_row(t->type, (const char *)t->data + (size_t)(r0 + r) * rb,
                                   stage_h + r * n_in, n_in) != SL_OK)
                return fail(c, SL_EUNSUPPORTED, "cuda: tensor %s: cannot dequantise type %s",
                            name, eng_type_name(t->type));
        CK(c, cudaMemcpyAsync(stage_d, stage_h, (size_t)(n * n_in) * 4, cudaMemcpyHostToDevice,
                              c->stream));
        CK(c, eng_cuda_launch_f32_to_f16(dst + r0 * n_in, stage_d, n * n_in, c->stream));
    }
    return SL_OK;
}

static int upload_norm(cuda_ctx_t *c, const eng_model_t *m, const eng_tensor_t *t, const char *name,
                       float *dst, float *stage_h) {
    int64_t dim = c->cfg.dim;
    if (model_is_shape_only(m)) {
        CK(c, eng_cuda_launch_fill_f32(dst, dim, 1.0f, c->stream));
        return SL_OK;
    }
    if (!t->data || t->ne[0] != dim)
        return fail(c, SL_EINVAL, "cuda: norm %s is missing or not of %lld elements", name,
                    (long long)dim);
    CK(c, cudaStreamSynchronize(c->stream));
    if (eng_dequantize_row(t->type, t->data, stage_h, dim) != SL_OK)
        return fail(c, SL_EUNSUPPORTED, "cuda: norm %s: cannot read type %s", name,
                    eng_type_name(t->type));
    CK(c, cudaMemcpy(dst, stage_h, (size_t)dim * 4, cudaMemcpyHostToDevice));
    return SL_OK;
}

/* Carves the weight buffers and uploads everything. */
static int load_weights(cuda_ctx_t *c, const eng_model_t *m) {
    const eng_model_config_t *g = &c->cfg;
    int64_t dim = g->dim, ffn = g->ffn_dim, nq = (int64_t)g->n_heads * g->head_dim,
            nkvd = (int64_t)g->n_kv_heads * g->head_dim, vocab = g->vocab;
    size_t align = 256, slack = align * (size_t)(4 * g->n_layers + 2);
    CK(c, cudaMalloc(&c->wbuf, (size_t)c->sizes.weight_bytes + slack));
    CK(c, cudaMalloc((void **)&c->nbuf, (size_t)c->sizes.norm_bytes));
    char *p = c->wbuf;
#define CARVE(ptr, elems)                                                                          \
    do {                                                                                           \
        (ptr) = (void *)p;                                                                         \
        p += ((size_t)(elems) * 2 + align - 1) / align * align;                                    \
    } while (0)
    CARVE(c->embd, vocab * dim);
    if (g->tied_output)
        c->out_w = c->embd;
    else
        CARVE(c->out_w, vocab * dim);
    float *np = c->nbuf;
    for (int l = 0; l < g->n_layers; l++) {
        cuda_layer_t *L = &c->layers[l];
        CARVE(L->wqkv, (nq + 2 * nkvd) * dim);
        CARVE(L->wo, dim * nq);
        CARVE(L->wgu, 2 * ffn * dim);
        CARVE(L->wdown, dim * ffn);
        L->attn_norm = np;
        L->ffn_norm = np + dim;
        np += 2 * dim;
    }
#undef CARVE
    c->out_norm = np;

    /* staging: the x activation buffer on the device, a pinned buffer of the same size here */
    int64_t stage = (int64_t)ENG_CUDA_MAX_STEP_TOKENS * dim;
    float *stage_h = NULL;
    CK(c, cudaMallocHost((void **)&stage_h, (size_t)stage * 4));
    int rc = SL_OK;
    uint64_t id = 1;
#define UP(t, name, nin, nout, dst)                                                                \
    if (rc == SL_OK)                                                                               \
    rc = upload_matrix(c, m, (t), (name), (nin), (nout), (dst), id++, stage_h, c->x, stage)
    UP(&m->tok_embd, "token_embd", dim, vocab, c->embd);
    if (!g->tied_output)
        UP(&m->output, "output", dim, vocab, c->out_w);
    if (rc == SL_OK)
        rc = upload_norm(c, m, &m->out_norm, "output_norm", c->out_norm, stage_h);
    for (int l = 0; l < g->n_layers && rc == SL_OK; l++) {
        const eng_layer_t *ml = &m->layers[l];
        cuda_layer_t *L = &c->layers[l];
        UP(&ml->wq, "attn_q", dim, nq, L->wqkv);
        UP(&ml->wk, "attn_k", dim, nkvd, L->wqkv + nq * dim);
        UP(&ml->wv, "attn_v", dim, nkvd, L->wqkv + (nq + nkvd) * dim);
        UP(&ml->wo, "attn_output", nq, dim, L->wo);
        UP(&ml->w_gate, "ffn_gate", dim, ffn, L->wgu);
        UP(&ml->w_up, "ffn_up", dim, ffn, L->wgu + ffn * dim);
        UP(&ml->w_down, "ffn_down", ffn, dim, L->wdown);
        if (rc == SL_OK)
            rc = upload_norm(c, m, &ml->attn_norm, "attn_norm", L->attn_norm, stage_h);
        if (rc == SL_OK)
            rc = upload_norm(c, m, &ml->ffn_norm, "ffn_norm", L->ffn_norm, stage_h);
    }
#undef UP
    cudaError_t e = cudaStreamSynchronize(c->stream);
    cudaFreeHost(stage_h);
    if (rc != SL_OK)
        return rc;
    CK(c, e);
    return SL_OK;
}

/* ---- workspace ------------------------------------------------------------------------------------ */

static int alloc_workspace(cuda_ctx_t *c) {
    const eng_model_config_t *g = &c->cfg;
    int64_t T = ENG_CUDA_MAX_STEP_TOKENS, dim = g->dim, ffn = g->ffn_dim,
            nq = (int64_t)g->n_heads * g->head_dim;
    const eng_cuda_sizes_t *s = &c->sizes;
    size_t align = 256;
    size_t parts[] = {(size_t)(T * dim * 4),         (size_t)(T * dim * 2),
                      (size_t)(T * c->qkv_dim * 2),  (size_t)(T * nq * 2),
                      (size_t)(T * 2 * ffn * 2),     (size_t)(T * ffn * 2),
                      (size_t)(s->partial_floats * 4),
                      (size_t)ENG_CUDA_MAX_LOGIT_ROWS * (size_t)g->vocab * 4,
                      (size_t)ENG_CUDA_MAX_LOGIT_ROWS * 4, (size_t)s->meta_bytes,
                      (size_t)s->cublas_ws_bytes};
    enum { N = sizeof parts / sizeof parts[0] };
    size_t total = 0;
    for (int i = 0; i < N; i++)
        total += (parts[i] + align - 1) / align * align;
    CK(c, cudaMalloc(&c->ws, total));
    char *p = c->ws;
    void **dst[N] = {(void **)&c->x,  (void **)&c->xn,      (void **)&c->qkv,
                     (void **)&c->att, (void **)&c->gu,     (void **)&c->h,
                     (void **)&c->partial, (void **)&c->logits, (void **)&c->ids,
                     (void **)&c->meta, (void **)&c->blas_ws};
    for (int i = 0; i < N; i++) {
        *dst[i] = p;
        p += (parts[i] + align - 1) / align * align;
    }
    CK(c, cudaMallocHost((void **)&c->meta_h, (size_t)s->meta_bytes));
    CKB(c, cublasSetWorkspace(c->blas, c->blas_ws, (size_t)s->cublas_ws_bytes));
    return SL_OK;
}

/* ---- the step --------------------------------------------------------------------------------- */

/* Y (M x n_out) = X (M x n_in) W^T; fp16 W, X; Y fp16 (add = 0) or fp32 Y += (add = 1) or fp32
 * Y = (add = 2, logits). fp32 accumulation throughout. */
static int gemm(cuda_ctx_t *c, const uint16_t *W, const uint16_t *X, void *Y, int M, int n_out,
                int n_in, int add) {
    const float one = 1.0f, zero = 0.0f;
    CKB(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, M, n_in, &one, W, CUDA_R_16F,
                        n_in, X, CUDA_R_16F, n_in, add == 1 ? &one : &zero, Y,
                        add ? CUDA_R_32F : CUDA_R_16F, n_out, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT));
    return SL_OK;
}

/* Everything up to the final norm; capturable (no host synchronisation). */
static int run_layers(cuda_ctx_t *c, const eng_cuda_plan_t *p, int part, int splits) {
    const eng_model_config_t *g = &c->cfg;
    const int T = p->n_tokens, dim = g->dim, ffn = g->ffn_dim, nq = g->n_heads * g->head_dim;
    const int32_t *meta = c->meta;
    CK(c, eng_cuda_launch_embed(c->x, c->embd, meta + p->off_tokens, T, dim, c->stream));
    for (int l = 0; l < g->n_layers; l++) {
        const cuda_layer_t *L = &c->layers[l];
        uint16_t *kc = c->kv + (int64_t)(2 * l) * c->pool_elems, *vc = kc + c->pool_elems;
        CK(c, eng_cuda_launch_rmsnorm(c->x, L->attn_norm, c->xn, NULL, T, dim, g->norm_eps,
                                      c->stream));
        TRY(gemm(c, L->wqkv, c->xn, c->qkv, T, c->qkv_dim, dim, 0));
        CK(c, eng_cuda_launch_rope_kv(c->qkv, meta + p->off_pos, meta + p->off_slot, kc, vc, T,
                                      g->n_heads, g->n_kv_heads, g->head_dim, c->block_size,
                                      g->rope_theta, c->stream));
        CK(c, eng_cuda_launch_attn_flash(c->att, c->qkv, kc, vc, meta, p->off_tiles, p->off_bt,
                                         p->n_tiles, g->n_heads, g->n_kv_heads, g->head_dim,
                                         c->block_size, c->stream));
        CK(c, eng_cuda_launch_attn_rows(c->att, c->qkv, kc, vc, meta, p->off_row_tok,
                                        p->off_row_bt, p->off_row_nk, p->off_bt, p->n_rows,
                                        g->n_heads, g->n_kv_heads, g->head_dim, c->block_size,
                                        part, splits, c->partial, c->stream));
        TRY(gemm(c, L->wo, c->att, c->x, T, dim, nq, 1));
        CK(c, eng_cuda_launch_rmsnorm(c->x, L->ffn_norm, c->xn, NULL, T, dim, g->norm_eps,
                                      c->stream));
        TRY(gemm(c, L->wgu, c->xn, c->gu, T, 2 * ffn, dim, 0));
        CK(c, eng_cuda_launch_silu_mul(c->h, c->gu, T, ffn, c->stream));
        TRY(gemm(c, L->wdown, c->h, c->x, T, dim, ffn, 1));
    }
    return SL_OK;
}

/* Final norm + LM head (+ argmax) for out rows [r0, r0 + n); capturable. */
static int run_head(cuda_ctx_t *c, const eng_cuda_plan_t *p, int r0, int n, int greedy) {
    const eng_model_config_t *g = &c->cfg;
    CK(c, eng_cuda_launch_rmsnorm(c->x, c->out_norm, c->xn, c->meta + p->off_out + r0, n, g->dim,
                                  g->norm_eps, c->stream));
    TRY(gemm(c, c->out_w, c->xn, c->logits, n, g->vocab, g->dim, 2));
    if (greedy)
        CK(c, eng_cuda_launch_argmax(c->ids, c->logits, n, g->vocab, c->stream));
    return SL_OK;
}

static void destroy_graphs(cuda_ctx_t *c) {
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < ENG_CUDA_N_BUCKETS; b++)
            for (int s = 0; s < ENG_CUDA_N_SPLIT_BUCKETS; s++)
                if (c->graphs[a][b][s]) {
                    cudaGraphExecDestroy(c->graphs[a][b][s]);
                    c->graphs[a][b][s] = NULL;
                }
}

static int capture(cuda_ctx_t *c, const eng_cuda_plan_t *p, int splits, int greedy,
                   cudaGraphExec_t *out) {
    cudaGraph_t graph = NULL;
    CK(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    int rc = run_layers(c, p, ENG_CUDA_ATTN_PART, splits);
    if (rc == SL_OK)
        rc = run_head(c, p, 0, p->n_out, greedy);
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (rc != SL_OK || e != cudaSuccess) {
        if (graph)
            cudaGraphDestroy(graph);
        if (rc != SL_OK)
            return rc;
        CK(c, e);
    }
    e = cudaGraphInstantiate(out, graph, 0);
    cudaGraphDestroy(graph);
    CK(c, e);
    return SL_OK;
}

/* The graph for a padded decode plan, captured on first use; NULL (run eagerly) when the plan's
 * attention needs wider splits than a graph may bake in. */
static int decode_graph(cuda_ctx_t *c, const eng_cuda_plan_t *p, int greedy,
                        cudaGraphExec_t *out) {
    *out = NULL;
    int part, splits;
    const eng_model_config_t *g = &c->cfg;
    if (eng_cuda_attn_splits(p->max_keys, p->n_rows, g->n_heads, g->head_dim,
                             c->sizes.partial_floats, &part, &splits) != SL_OK ||
        part != ENG_CUDA_ATTN_PART)
        return SL_OK;
    int sb = eng_cuda_pow2_index(splits);
    if (sb >= ENG_CUDA_N_SPLIT_BUCKETS ||
        (int64_t)p->n_rows * g->n_heads * (1 << sb) * (g->head_dim + 2) > c->sizes.partial_floats)
        return SL_OK;
    cudaGraphExec_t *slot = &c->graphs[greedy][eng_cuda_pow2_index(p->n_tokens)][sb];
    if (!*slot)
        TRY(capture(c, p, 1 << sb, greedy, slot));
    *out = *slot;
    return SL_OK;
}

static int forward_impl(eng_backend_t *b, const eng_batch_t *batch, float *logits,
                        int32_t *tokens, int *n_rows) {
    cuda_ctx_t *c = b->ctx;
    const eng_model_config_t *g = &c->cfg;
    const int greedy = tokens != NULL;
    *n_rows = 0;
    if (!c->kv)
        return fail(c, SL_ESTATE, "cuda: forward before kv_alloc");
    CK(c, cudaSetDevice(c->device));
    eng_cuda_geom_t geom = {c->block_size, c->num_blocks, g->vocab, ENG_CUDA_MAX_STEP_TOKENS,
                            c->flash};
    int pad = c->params.use_graphs && eng_cuda_batch_is_decode(batch)
                  ? eng_cuda_graph_bucket(batch->n_seqs)
                  : 0;
    eng_cuda_plan_t p;
    TRY(eng_cuda_plan_build(batch, &geom, pad, c->meta_h, ENG_CUDA_META_CAP, &p, c->err,
                            (int)sizeof c->err));
    CK(c, cudaMemcpyAsync(c->meta, c->meta_h, (size_t)p.n_ints * 4, cudaMemcpyHostToDevice,
                          c->stream));
    CK(c, eng_cuda_launch_copy_blocks(c->kv, c->pool_elems, 2 * g->n_layers, c->meta + p.off_copies,
                                      p.n_copies,
                                      (int64_t)g->n_kv_heads * c->block_size * g->head_dim,
                                      c->stream));
    cudaGraphExec_t exec = NULL;
    if (pad)
        TRY(decode_graph(c, &p, greedy, &exec));
    int n_out = pad ? p.n_real : p.n_out;
    if (exec) {
        CK(c, cudaGraphLaunch(exec, c->stream));
    } else {
        int part, splits;
        if (eng_cuda_attn_splits(p.max_keys, p.n_rows, g->n_heads, g->head_dim,
                                 c->sizes.partial_floats, &part, &splits) != SL_OK)
            return fail(c, SL_ENOMEM, "cuda: attention partials for %d rows exceed the workspace",
                        p.n_rows);
        TRY(run_layers(c, &p, part, splits));
    }
    for (int r0 = 0; r0 < n_out; r0 += ENG_CUDA_MAX_LOGIT_ROWS) {
        int n = n_out - r0 < ENG_CUDA_MAX_LOGIT_ROWS ? n_out - r0 : ENG_CUDA_MAX_LOGIT_ROWS;
        if (!exec)
            TRY(run_head(c, &p, r0, n, greedy));
        if (greedy)
            CK(c, cudaMemcpyAsync(tokens + r0, c->ids, (size_t)n * 4, cudaMemcpyDeviceToHost,
                                  c->stream));
        else
            CK(c, cudaMemcpyAsync(logits + (size_t)r0 * g->vocab, c->logits,
                                  (size_t)n * g->vocab * 4, cudaMemcpyDeviceToHost, c->stream));
    }
    CK(c, cudaStreamSynchronize(c->stream));
    *n_rows = n_out;
    return SL_OK;
}

/* ---- ops ----------------------------------------------------------------------------------------- */

static int cuda_forward(eng_backend_t *b, const eng_batch_t *batch, float *logits, int *n_rows) {
    return forward_impl(b, batch, logits, NULL, n_rows);
}

static int cuda_forward_greedy(eng_backend_t *b, const eng_batch_t *batch, int32_t *tokens,
                               int *n_rows) {
    return forward_impl(b, batch, NULL, tokens, n_rows);
}

static int64_t kv_budget(cuda_ctx_t *c) {
    size_t free_b = 0, total = 0;
    if (cudaSetDevice(c->device) != cudaSuccess || cudaMemGetInfo(&free_b, &total) != cudaSuccess)
        return 0;
    int64_t pool = c->kv ? 2 * (int64_t)c->cfg.n_layers * c->pool_elems * 2 : 0;
    return eng_cuda_kv_budget((int64_t)total, (int64_t)free_b + pool,
                              c->params.gpu_memory_utilization);
}

static int64_t cuda_kv_budget_bytes(eng_backend_t *b) { return kv_budget(b->ctx); }

static int cuda_kv_alloc(eng_backend_t *b, int num_blocks, int block_size) {
    cuda_ctx_t *c = b->ctx;
    if (num_blocks < 1 || block_size < 1)
        return fail(c, SL_EINVAL, "cuda: kv_alloc(%d blocks of %d tokens)", num_blocks, block_size);
    CK(c, cudaSetDevice(c->device));
    int64_t bytes = (int64_t)num_blocks * block_size * c->sizes.kv_bytes_per_block_token;
    int64_t budget = kv_budget(c);
    if (bytes > budget)
        return fail(c, SL_ENOMEM,
                    "cuda: a KV pool of %d blocks x %d tokens needs %.2f GiB, the device has "
                    "%.2f GiB left under gpu_memory_utilization %.2f",
                    num_blocks, block_size, bytes / 1073741824.0, budget / 1073741824.0,
                    c->params.gpu_memory_utilization);
    destroy_graphs(c);
    if (c->kv) {
        CK(c, cudaFree(c->kv));
        c->kv = NULL;
    }
    CK(c, cudaMalloc((void **)&c->kv, (size_t)bytes));
    CK(c, cudaMemset(c->kv, 0, (size_t)bytes));
    c->num_blocks = num_blocks;
    c->block_size = block_size;
    c->pool_elems = (int64_t)num_blocks * c->cfg.n_kv_heads * block_size * c->cfg.head_dim;
    return SL_OK;
}

static const char *cuda_errmsg(eng_backend_t *b) { return ((cuda_ctx_t *)b->ctx)->err; }

static void ctx_free(cuda_ctx_t *c) {
    if (!c)
        return;
    cudaSetDevice(c->device);
    destroy_graphs(c);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    cudaFree(c->kv);
    cudaFree(c->ws);
    cudaFree(c->wbuf);
    cudaFree(c->nbuf);
    cudaFreeHost(c->meta_h);
    sl_free(c->layers);
    sl_free(c);
}

static void cuda_free(eng_backend_t *b) {
    if (!b)
        return;
    ctx_free(b->ctx);
    sl_free(b);
}

static const eng_backend_ops_t cuda_ops = {
    .version = ENG_BACKEND_VERSION,
    .name = "cuda",
    .kv_budget_bytes = cuda_kv_budget_bytes,
    .kv_alloc = cuda_kv_alloc,
    .forward = cuda_forward,
    .forward_greedy = cuda_forward_greedy,
    .errmsg = cuda_errmsg,
    .free = cuda_free,
};

/* ---- create -------------------------------------------------------------------------------------- */

static int ctx_init(cuda_ctx_t *c, const eng_model_t *m) {
    const eng_model_config_t *g = &m->cfg;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0)
        return fail(c, SL_EDEVICE, "cuda: no CUDA device (cudaGetDeviceCount: %s)",
                    e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (c->params.device < 0 || c->params.device >= n_dev)
        return fail(c, SL_EINVAL, "cuda: device %d does not exist (%d found)", c->params.device,
                    n_dev);
    if (c->params.gpu_memory_utilization <= 0 || c->params.gpu_memory_utilization > 1)
        return fail(c, SL_EINVAL, "cuda: gpu_memory_utilization %.3f is not in (0, 1]",
                    c->params.gpu_memory_utilization);
    int gqa = g->n_kv_heads > 0 && g->n_heads % g->n_kv_heads == 0 ? g->n_heads / g->n_kv_heads : 0;
    if (!eng_cuda_attn_rows_supported(g->head_dim, gqa))
        return fail(c, SL_EUNSUPPORTED,
                    "cuda: head_dim %d with %d/%d query/KV heads is not supported (head_dim 8, "
                    "16, 32, 64, 128 or 256; at most %d query heads per KV head)",
                    g->head_dim, g->n_heads, g->n_kv_heads, ENG_CUDA_MAX_GQA);
    c->device = c->params.device;
    c->flash = eng_cuda_attn_flash_supported(g->head_dim);
    c->qkv_dim = (g->n_heads + 2 * g->n_kv_heads) * g->head_dim;
    CK(c, cudaSetDevice(c->device));
    struct cudaDeviceProp prop;
    CK(c, cudaGetDeviceProperties(&prop, c->device));
    snprintf(c->dev_name, sizeof c->dev_name, "%d (%.200s)", c->device, prop.name);
    size_t free_b = 0, total = 0;
    CK(c, cudaMemGetInfo(&free_b, &total));
    eng_cuda_sizes(g, &c->sizes);
    TRY(eng_cuda_check_fit(&c->sizes, (int64_t)free_b, (int64_t)total,
                           c->params.gpu_memory_utilization, c->dev_name, c->err,
                           (int)sizeof c->err));
    if (!(c->layers = sl_calloc((size_t)g->n_layers, sizeof *c->layers)))
        return fail(c, SL_ENOMEM, "cuda: out of host memory");
    CK(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CKB(c, cublasCreate(&c->blas));
    CKB(c, cublasSetStream(c->blas, c->stream));
    TRY(alloc_workspace(c));
    return load_weights(c, m);
}

eng_backend_t *eng_cuda_backend_create(const eng_model_t *model, const eng_backend_params_t *params,
                                       char *err, int errlen) {
    cuda_ctx_t *c = sl_calloc(1, sizeof *c);
    eng_backend_t *b = sl_calloc(1, sizeof *b);
    if (!c || !b) {
        sl_free(c);
        sl_free(b);
        snprintf(err, (size_t)errlen, "cuda: out of host memory");
        return NULL;
    }
    c->params = params ? *params : eng_backend_params_default();
    c->cfg = model->cfg;
    if (ctx_init(c, model) != SL_OK) {
        snprintf(err, (size_t)errlen, "%s", c->err);
        ctx_free(c);
        sl_free(b);
        return NULL;
    }
    b->ops = &cuda_ops;
    b->model = model;
    b->ctx = c;
    return b;
}
