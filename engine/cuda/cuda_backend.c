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
 *     int32 ids after an on-device argmax for forward_greedy, or ids and log-probabilities after
 *     the on-device sampler for forward_sample: cuda_sample.cu).
 *  4. Graphs: a decode step (1..256 sequences, one token each, logits wanted) is padded to its
 *     bucket (1,2,4,...,256) and replays a graph keyed by (greedy, bucket, split bucket); the
 *     split bucket is the power of two >= ceil(longest context / ENG_CUDA_ATTN_PART), so one graph
 *     serves every context up to its width (the kernels read lengths from the plan). Graphs hold
 *     device pointers: kv_alloc destroys them all.
 *  5. Small-M projections: a custom GEMV kernel (cuda_gemv.cu) or cuBLAS, chosen per (projection,
 *     M bucket 1/2/4/8) at create by timing cuBLAS and the GEMV variants in graphs
 *     (SLUICE_CUDA_GEMV=auto|cublas|gemv|gemvV; auto by default). A graph captures whichever
 *     kernel the choice names at capture time, so a change of choice drops the graphs.
 *  6. Profiling (eng_cuda_profile_step): an eager run with an event recorded after every launch;
 *     the intervals are summed by kind (projections, attention, the rest).
 *  7. Errors: every CUDA and cuBLAS call and every launch is checked; the first failure is written
 *     as "cuda: FILE:LINE: CALL: MESSAGE" into the backend's error string and returned as
 *     SL_EDEVICE (SL_ENOMEM for an allocation that failed).
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* What an interval between two profiling events is spent on. */
enum { PROF_START = -1, PROF_GEMM, PROF_ATTN, PROF_OTHER };

typedef struct cuda_prof {
    cudaEvent_t *ev;
    int *kind; /* kind[i]: what ran between ev[i - 1] and ev[i] */
    int n, cap;
} cuda_prof_t;

typedef struct cuda_ctx {
    char err[512];
    int device;
    char dev_name[256];
    eng_backend_params_t params;
    eng_model_config_t cfg;
    eng_cuda_sizes_t sizes;
    int qkv_dim, flash;
    int pdl_ok; /* the device has programmatic dependent launch (sm_90+) */
    int path[ENG_CUDA_N_PATHS]; /* 0 the default, 1 the bypass (eng_cuda_set_path) */
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
    float *lps, *samp_w;      /* forward_sample: log-probabilities, probability rows */
    eng_sample_row_t *rows_d; /* forward_sample: one chunk's rows */
    int32_t *pen_d;           /* forward_sample: the step's penalty pairs (grown on demand) */
    int pen_cap;              /* pairs pen_d holds */
    float *host_logits;       /* SLUICE_CUDA_SAMPLE=host: the rows forward_sample picks from */
    int cap_host_rows;
    eng_sampler_ws_t *host_ws;
    void *blas_ws;
    /* pinned host memory */
    int32_t *meta_h;
    /* KV pool */
    uint16_t *kv;
    int num_blocks, block_size;
    int64_t pool_elems;   /* elements of one layer's K (or V) pool */
    cudaGraphExec_t graphs[2][ENG_CUDA_N_BUCKETS][ENG_CUDA_N_SPLIT_BUCKETS];
    /* small-M projections: GEMV (1) or cuBLAS (0) per (projection, M bucket), and the timings */
    int gemv_mode;
    signed char gemv_pick[ENG_CUDA_N_PROJ][ENG_CUDA_GEMV_BUCKETS]; /* -1 cuBLAS, else a variant */
    /* [0] cuBLAS, [1 + v] GEMV variant v; 0: untimed */
    float gemv_us[ENG_CUDA_N_PROJ][ENG_CUDA_GEMV_BUCKETS][1 + ENG_CUDA_GEMV_VARIANTS];
    cuda_prof_t *prof;    /* non-NULL during eng_cuda_profile_step */
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
                      (size_t)ENG_CUDA_MAX_LOGIT_ROWS * (size_t)g->vocab * 4,
                      (size_t)ENG_CUDA_MAX_LOGIT_ROWS * 4, (size_t)ENG_CUDA_MAX_LOGIT_ROWS * 4,
                      (size_t)ENG_CUDA_MAX_LOGIT_ROWS * sizeof(eng_sample_row_t),
                      (size_t)s->meta_bytes,
                      (size_t)s->cublas_ws_bytes};
    enum { N = sizeof parts / sizeof parts[0] };
    size_t total = 0;
    for (int i = 0; i < N; i++)
        total += (parts[i] + align - 1) / align * align;
    CK(c, cudaMalloc(&c->ws, total));
    char *p = c->ws;
    void **dst[N] = {(void **)&c->x,  (void **)&c->xn,      (void **)&c->qkv,
                     (void **)&c->att, (void **)&c->gu,     (void **)&c->h,
                     (void **)&c->partial, (void **)&c->logits, (void **)&c->samp_w,
                     (void **)&c->ids, (void **)&c->lps, (void **)&c->rows_d,
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

/* Records a profiling event closing an interval of the given kind (no-op unless profiling). */
static int mark(cuda_ctx_t *c, int kind) {
    cuda_prof_t *p = c->prof;
    if (!p || p->n >= p->cap)
        return SL_OK;
    CK(c, cudaEventRecord(p->ev[p->n], c->stream));
    p->kind[p->n++] = kind;
    return SL_OK;
}

/* Where the step kernels go: the stream, with PDL where the device has it and the path allows,
 * never while profiling (events between launches time each launch on its own). */
static eng_cuda_exec_t ex(const cuda_ctx_t *c) {
    return (eng_cuda_exec_t){c->stream, c->pdl_ok && !c->path[ENG_CUDA_PATH_PDL] && !c->prof};
}

/* Enqueues a kernel launcher's call (a cudaError_t) and closes a profiling interval of KIND. */
#define LAUNCH(c, kind, call)                                                                      \
    do {                                                                                           \
        CK(c, call);                                                                               \
        TRY(mark(c, kind));                                                                        \
    } while (0)

/* One projection's operands: Y (M x n_out) = X (M x n_in) W^T. mode 0: Y fp16; 1: fp32 Y += (the
 * residual add); 2: fp32 Y = (logits). norm: the RMSNorm weights that make X from the residual x
 * (NULL: X is an activation as it is); silu: Y = SiLU*mul of the gate and up halves, into h. */
typedef struct proj_args {
    const uint16_t *W, *X;
    void *Y;
    int n_out, n_in, mode;
    const float *norm;
    int silu;
} proj_args_t;

static proj_args_t proj_args(const cuda_ctx_t *c, int proj, int layer) {
    const eng_model_config_t *g = &c->cfg;
    const cuda_layer_t *L = &c->layers[layer];
    const int dim = g->dim, ffn = g->ffn_dim, nq = g->n_heads * g->head_dim;
    switch (proj) {
    case ENG_CUDA_P_QKV:
        return (proj_args_t){L->wqkv, c->xn, c->qkv, c->qkv_dim, dim, 0, L->attn_norm, 0};
    case ENG_CUDA_P_O: return (proj_args_t){L->wo, c->att, c->x, dim, nq, 1, NULL, 0};
    case ENG_CUDA_P_GU: return (proj_args_t){L->wgu, c->xn, c->gu, 2 * ffn, dim, 0, L->ffn_norm, 1};
    case ENG_CUDA_P_DOWN: return (proj_args_t){L->wdown, c->h, c->x, dim, ffn, 1, NULL, 0};
    default: return (proj_args_t){c->out_w, c->xn, c->logits, g->vocab, dim, 2, c->out_norm, 0};
    }
}

static const char *const proj_name[ENG_CUDA_N_PROJ] = {"qkv", "o", "gate_up", "down", "lm_head"};

/* Projection proj of layer (ignored for the LM head) over M rows (rows: which rows of x the
 * normalised input takes, NULL: the first M), fp32 accumulation throughout, with the RMSNorm
 * before it and the SiLU*mul after it where the projection has them: the GEMV kernel where the
 * choice for M's bucket says so, else cublasGemmEx (fp16 tensor ops). With the FUSE path on, the
 * GEMV normalises its own input (when M rows fit its shared memory) and applies SiLU*mul in its
 * epilogue, so neither runs as a kernel of its own; the results are bit-identical either way. */
static int project(cuda_ctx_t *c, int proj, int layer, int M, const int32_t *rows) {
    const eng_model_config_t *g = &c->cfg;
    const proj_args_t a = proj_args(c, proj, layer);
    const int mb = M <= ENG_CUDA_GEMV_MAX_M ? eng_cuda_pow2_index(M) : -1;
    const int variant = mb >= 0 ? c->gemv_pick[proj][mb] : -1;
    const int gemv = variant >= 0 && eng_cuda_gemv_supported(a.W, a.X, M, a.n_in);
    const int fuse = gemv && !c->path[ENG_CUDA_PATH_FUSE];
    const int fuse_norm = fuse && a.norm && eng_cuda_gemv_norm_supported(M, a.n_in);
    const eng_cuda_gemv_norm_t nm = {c->x, a.norm, rows, g->norm_eps};
    if (a.norm && !fuse_norm)
        LAUNCH(c, PROF_OTHER, eng_cuda_launch_rmsnorm(c->x, a.norm, c->xn, rows, M, a.n_in,
                                                      g->norm_eps, !c->path[ENG_CUDA_PATH_ELTWISE],
                                                      ex(c)));
    if (gemv) {
        const int silu = fuse && a.silu;
        LAUNCH(c, PROF_GEMM,
               eng_cuda_launch_gemv(a.W, a.X, silu ? (void *)c->h : a.Y, M,
                                    silu ? a.n_out / 2 : a.n_out, a.n_in, silu ? 3 : a.mode,
                                    eng_cuda_gemv_variant_supported(variant, M) ? variant : 0,
                                    fuse_norm ? &nm : NULL, ex(c)));
        if (silu)
            return SL_OK;
    } else {
        const float one = 1.0f, zero = 0.0f;
        CKB(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, a.n_out, M, a.n_in, &one, a.W,
                            CUDA_R_16F, a.n_in, a.X, CUDA_R_16F, a.n_in, a.mode == 1 ? &one : &zero,
                            a.Y, a.mode ? CUDA_R_32F : CUDA_R_16F, a.n_out, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
        TRY(mark(c, PROF_GEMM));
    }
    if (a.silu)
        LAUNCH(c, PROF_OTHER, eng_cuda_launch_silu_mul(c->h, c->gu, M, a.n_out / 2,
                                                       !c->path[ENG_CUDA_PATH_ELTWISE], ex(c)));
    return SL_OK;
}

/* Everything up to the final norm; capturable (no host synchronisation). */
static int run_layers(cuda_ctx_t *c, const eng_cuda_plan_t *p, int part, int splits) {
    const eng_model_config_t *g = &c->cfg;
    const int T = p->n_tokens, dim = g->dim;
    const int32_t *meta = c->meta;
    const int single = !c->path[ENG_CUDA_PATH_DECODE_ATTN] &&
                       (int64_t)part * splits <= ENG_CUDA_ATTN_SINGLE_MAX;
    const int vec = !c->path[ENG_CUDA_PATH_ELTWISE];
    LAUNCH(c, PROF_OTHER, eng_cuda_launch_embed(c->x, c->embd, meta + p->off_tokens, T, dim,
                                                ex(c)));
    for (int l = 0; l < g->n_layers; l++) {
        uint16_t *kc = c->kv + (int64_t)(2 * l) * c->pool_elems, *vc = kc + c->pool_elems;
        TRY(project(c, ENG_CUDA_P_QKV, l, T, NULL));
        LAUNCH(c, PROF_OTHER,
               eng_cuda_launch_rope_kv(c->qkv, meta + p->off_pos, meta + p->off_slot, kc, vc, T,
                                       g->n_heads, g->n_kv_heads, g->head_dim, c->block_size,
                                       g->rope_theta, vec, ex(c)));
        if (p->n_tiles > 0)
            LAUNCH(c, PROF_ATTN,
                   eng_cuda_launch_attn_flash(c->att, c->qkv, kc, vc, meta, p->off_tiles,
                                              p->off_bt, p->n_tiles, g->n_heads, g->n_kv_heads,
                                              g->head_dim, c->block_size,
                                              c->path[ENG_CUDA_PATH_PREFILL_ATTN], ex(c)));
        if (p->n_rows > 0)
            LAUNCH(c, PROF_ATTN,
                   eng_cuda_launch_attn_rows(c->att, c->qkv, kc, vc, meta, p->off_row_tok,
                                             p->off_row_bt, p->off_row_nk, p->off_bt, p->n_rows,
                                             g->n_heads, g->n_kv_heads, g->head_dim,
                                             c->block_size, part, splits, single, c->partial,
                                             ex(c)));
        TRY(project(c, ENG_CUDA_P_O, l, T, NULL));
        TRY(project(c, ENG_CUDA_P_GU, l, T, NULL));
        TRY(project(c, ENG_CUDA_P_DOWN, l, T, NULL));
    }
    return SL_OK;
}

/* Final norm + LM head (+ argmax) for out rows [r0, r0 + n); capturable. */
static int run_head(cuda_ctx_t *c, const eng_cuda_plan_t *p, int r0, int n, int greedy) {
    TRY(project(c, ENG_CUDA_P_HEAD, 0, n, c->meta + p->off_out + r0));
    if (greedy)
        LAUNCH(c, PROF_OTHER,
               eng_cuda_launch_argmax(c->ids, c->logits, n, c->cfg.vocab, ex(c)));
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

/* Captures body(c, arg) on the stream into an instantiated graph. */
static int capture(cuda_ctx_t *c, int (*body)(cuda_ctx_t *, const void *), const void *arg,
                   cudaGraphExec_t *out) {
    cudaGraph_t graph = NULL;
    CK(c, cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    int rc = body(c, arg);
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

typedef struct decode_capture {
    const eng_cuda_plan_t *p;
    int splits, greedy;
} decode_capture_t;

static int decode_body(cuda_ctx_t *c, const void *arg) {
    const decode_capture_t *d = arg;
    TRY(run_layers(c, d->p, ENG_CUDA_ATTN_PART, d->splits));
    return run_head(c, d->p, 0, d->p->n_out, d->greedy);
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
    if (!*slot) {
        const decode_capture_t d = {p, 1 << sb, greedy};
        TRY(capture(c, decode_body, &d, slot));
    }
    *out = *slot;
    return SL_OK;
}

/* What a step returns: logits rows (forward), argmax ids (forward_greedy: tokens), or sampled ids
 * and log-probabilities (forward_sample: tokens, logprobs, rows, pen). */
typedef struct step_out {
    float *logits;
    int32_t *tokens;
    float *logprobs;
    const eng_sample_row_t *rows;
    const int32_t *pen;
    int n_pen;
} step_out_t;

/* The penalty pairs of a sampled step on the device (pen_d grown when needed; not captured). */
static int upload_pairs(cuda_ctx_t *c, const int32_t *pen, int n_pen) {
    if (n_pen > c->pen_cap) {
        int cap = n_pen > 2 * c->pen_cap ? n_pen : 2 * c->pen_cap;
        CK(c, cudaFree(c->pen_d));
        c->pen_d = NULL, c->pen_cap = 0;
        CK(c, cudaMalloc((void **)&c->pen_d, (size_t)cap * 8));
        c->pen_cap = cap;
    }
    if (n_pen > 0)
        CK(c, cudaMemcpyAsync(c->pen_d, pen, (size_t)n_pen * 8, cudaMemcpyHostToDevice, c->stream));
    return SL_OK;
}

/* Rows [r0, r0 + n) of the head's output to the host: logits, ids, or sampled ids + logprobs. */
static int fetch_rows(cuda_ctx_t *c, const step_out_t *o, int r0, int n) {
    const int V = c->cfg.vocab;
    if (o->rows) {
        CK(c, cudaMemcpyAsync(c->rows_d, o->rows + r0, (size_t)n * sizeof *o->rows,
                              cudaMemcpyHostToDevice, c->stream));
        LAUNCH(c, PROF_OTHER,
               eng_cuda_launch_sample(c->ids, c->lps, c->logits, c->samp_w, c->rows_d, c->pen_d, n, V,
                                      ex(c)));
        CK(c, cudaMemcpyAsync(o->logprobs + r0, c->lps, (size_t)n * 4, cudaMemcpyDeviceToHost,
                              c->stream));
    }
    if (o->tokens)
        CK(c, cudaMemcpyAsync(o->tokens + r0, c->ids, (size_t)n * 4, cudaMemcpyDeviceToHost,
                              c->stream));
    else
        CK(c, cudaMemcpyAsync(o->logits + (size_t)r0 * V, c->logits, (size_t)n * V * 4,
                              cudaMemcpyDeviceToHost, c->stream));
    return SL_OK;
}

/* One step; eager 1 never replays a graph. */
static int forward_impl(eng_backend_t *b, const eng_batch_t *batch, const step_out_t *o,
                        int *n_rows, int eager) {
    cuda_ctx_t *c = b->ctx;
    const eng_model_config_t *g = &c->cfg;
    const int greedy = o->tokens != NULL && o->rows == NULL; /* argmax inside the graph */
    *n_rows = 0;
    if (!c->kv)
        return fail(c, SL_ESTATE, "cuda: forward before kv_alloc");
    CK(c, cudaSetDevice(c->device));
    eng_cuda_geom_t geom = {c->block_size, c->num_blocks, g->vocab, ENG_CUDA_MAX_STEP_TOKENS,
                            c->flash ? eng_cuda_flash_tile(c->path[ENG_CUDA_PATH_PREFILL_ATTN])
                                     : 0};
    int pad = c->params.use_graphs && !eager && eng_cuda_batch_is_decode(batch)
                  ? eng_cuda_graph_bucket(batch->n_seqs)
                  : 0;
    eng_cuda_plan_t p;
    TRY(eng_cuda_plan_build(batch, &geom, pad, c->meta_h, ENG_CUDA_META_CAP, &p, c->err,
                            (int)sizeof c->err));
    if (o->rows)
        TRY(upload_pairs(c, o->pen, o->n_pen));
    TRY(mark(c, PROF_START));
    LAUNCH(c, PROF_OTHER, cudaMemcpyAsync(c->meta, c->meta_h, (size_t)p.n_ints * 4,
                                          cudaMemcpyHostToDevice, c->stream));
    LAUNCH(c, PROF_OTHER,
           eng_cuda_launch_copy_blocks(c->kv, c->pool_elems, 2 * g->n_layers,
                                       c->meta + p.off_copies, p.n_copies,
                                       (int64_t)g->n_kv_heads * c->block_size * g->head_dim,
                                       ex(c)));
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
        TRY(fetch_rows(c, o, r0, n));
    }
    CK(c, cudaStreamSynchronize(c->stream));
    *n_rows = n_out;
    return SL_OK;
}

/* ---- ops ----------------------------------------------------------------------------------------- */

static int cuda_forward(eng_backend_t *b, const eng_batch_t *batch, float *logits, int *n_rows) {
    const step_out_t o = {.logits = logits};
    return forward_impl(b, batch, &o, n_rows, 0);
}

static int cuda_forward_greedy(eng_backend_t *b, const eng_batch_t *batch, int32_t *tokens,
                               int *n_rows) {
    const step_out_t o = {.tokens = tokens};
    return forward_impl(b, batch, &o, n_rows, 0);
}

/* The rows and pairs of a sampled step are checked before the device indexes with them. */
static int check_sample_rows(cuda_ctx_t *c, const eng_batch_t *batch, const eng_sample_row_t *rows,
                             const int32_t *pen, int n_pen) {
    int n = 0;
    for (int i = 0; i < batch->n_seqs; i++)
        n += batch->seqs[i].logits == 2 ? batch->seqs[i].n_tokens : batch->seqs[i].logits != 0;
    char why[160];
    if (eng_sample_rows_check(rows, n, pen, n_pen, c->cfg.vocab, why, (int)sizeof why) != SL_OK)
        return fail(c, SL_EINVAL, "cuda: forward_sample: %s", why);
    return SL_OK;
}

/* Logits rows a batch asks for. */
static int logit_rows(const eng_batch_t *batch) {
    int n = 0;
    for (int i = 0; i < batch->n_seqs; i++)
        n += batch->seqs[i].logits == 2 ? batch->seqs[i].n_tokens : batch->seqs[i].logits != 0;
    return n;
}

/* The bypass of the device sampler (and its stand-in for fewer than
 * ENG_CUDA_SAMPLE_DEVICE_MIN_ROWS rows): n logits rows come back and the host's reference picks. */
static int sample_on_host(eng_backend_t *b, const eng_batch_t *batch, int n,
                          const eng_sample_row_t *rows, const int32_t *pen, int32_t *tokens,
                          float *logprobs, int *n_rows) {
    cuda_ctx_t *c = b->ctx;
    const size_t V = (size_t)c->cfg.vocab;
    if (!c->host_ws && !(c->host_ws = eng_sampler_ws_create(c->cfg.vocab)))
        return fail(c, SL_ENOMEM, "cuda: out of host memory for the sampler");
    if (n > c->cap_host_rows) {
        float *l = sl_realloc(c->host_logits, (size_t)n * V * sizeof *l);
        if (!l)
            return fail(c, SL_ENOMEM, "cuda: out of host memory for %d logits rows", n);
        c->host_logits = l, c->cap_host_rows = n;
    }
    TRY(cuda_forward(b, batch, c->host_logits, n_rows));
    for (int r = 0; r < *n_rows; r++)
        if (eng_sampler_pick(c->host_ws, c->host_logits + (size_t)r * V, &rows[r], pen, &tokens[r],
                             &logprobs[r]) != SL_OK)
            tokens[r] = -1, logprobs[r] = NAN;
    return SL_OK;
}

static int cuda_forward_sample(eng_backend_t *b, const eng_batch_t *batch,
                               const eng_sample_row_t *rows, const int32_t *pen, int n_pen,
                               int32_t *tokens, float *logprobs, int *n_rows) {
    cuda_ctx_t *c = b->ctx;
    *n_rows = 0;
    TRY(check_sample_rows(c, batch, rows, pen, n_pen));
    const int n = logit_rows(batch);
    if (c->path[ENG_CUDA_PATH_SAMPLE] || n < ENG_CUDA_SAMPLE_DEVICE_MIN_ROWS)
        return sample_on_host(b, batch, n, rows, pen, tokens, logprobs, n_rows);
    const step_out_t o = {.tokens = tokens, .logprobs = logprobs, .rows = rows, .pen = pen,
                          .n_pen = n_pen};
    return forward_impl(b, batch, &o, n_rows, 0);
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
    cudaFree(c->pen_d);
    sl_free(c->host_logits);
    eng_sampler_ws_free(c->host_ws);
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
    .forward_sample = cuda_forward_sample,
    .errmsg = cuda_errmsg,
    .free = cuda_free,
};

/* ---- small-M projections: GEMV or cuBLAS, by measurement ---------------------------------------- */

typedef struct tune_capture {
    int proj, M, reps;
} tune_capture_t;

static int tune_body(cuda_ctx_t *c, const void *arg) {
    const tune_capture_t *t = arg;
    for (int i = 0; i < t->reps; i++)
        TRY(project(c, t->proj, i % c->cfg.n_layers, t->M, NULL));
    return SL_OK;
}

/* Microseconds of one launch of projection proj at M rows with GEMV variant `pick` (-1: cuBLAS): a
 * graph of one launch per layer (the LM head: 8 of its one matrix), so the weights come from
 * memory as in a decode step; warmed once, then 3 replays between events. */
static int time_proj(cuda_ctx_t *c, int proj, int M, int pick, float *us) {
    const int mb = eng_cuda_pow2_index(M);
    const signed char saved = c->gemv_pick[proj][mb];
    c->gemv_pick[proj][mb] = (signed char)pick;
    const tune_capture_t t = {proj, M, c->cfg.n_layers > 8 ? c->cfg.n_layers : 8};
    cudaGraphExec_t exec = NULL;
    int rc = capture(c, tune_body, &t, &exec);
    c->gemv_pick[proj][mb] = saved;
    TRY(rc);
    cudaEvent_t ev[2] = {NULL, NULL};
    cudaError_t e = cudaEventCreate(&ev[0]);
    if (e == cudaSuccess)
        e = cudaEventCreate(&ev[1]);
    if (e == cudaSuccess)
        e = cudaGraphLaunch(exec, c->stream);
    if (e == cudaSuccess)
        e = cudaEventRecord(ev[0], c->stream);
    for (int i = 0; i < 3 && e == cudaSuccess; i++)
        e = cudaGraphLaunch(exec, c->stream);
    if (e == cudaSuccess)
        e = cudaEventRecord(ev[1], c->stream);
    if (e == cudaSuccess)
        e = cudaEventSynchronize(ev[1]);
    float ms = 0;
    if (e == cudaSuccess)
        e = cudaEventElapsedTime(&ms, ev[0], ev[1]);
    cudaGraphExecDestroy(exec);
    for (int i = 0; i < 2; i++)
        if (ev[i])
            cudaEventDestroy(ev[i]);
    CK(c, e);
    *us = ms * 1000.0f / (3.0f * (float)t.reps);
    return SL_OK;
}

/* Sets gemv_pick for the mode; AUTO times cuBLAS and each GEMV variant that applies twice
 * (interleaved rounds) and keeps the fastest. */
static int choose_gemv(cuda_ctx_t *c, int mode) {
    const eng_model_config_t *g = &c->cfg;
    memset(c->gemv_pick, -1, sizeof c->gemv_pick);
    memset(c->gemv_us, 0, sizeof c->gemv_us);
    c->gemv_mode = mode;
    if (mode == ENG_CUDA_GEMV_CUBLAS)
        return SL_OK;
    /* operands the timings read: random, never zeros */
    const int64_t rows = ENG_CUDA_GEMV_MAX_M;
    CK(c, eng_cuda_launch_synth_f16(c->xn, rows * g->dim, ENG_CUDA_SYNTH_SEED + 1, 1.0f, c->stream));
    CK(c, eng_cuda_launch_synth_f16(c->att, rows * g->n_heads * g->head_dim, ENG_CUDA_SYNTH_SEED + 2,
                                    1.0f, c->stream));
    CK(c, eng_cuda_launch_synth_f16(c->h, rows * g->ffn_dim, ENG_CUDA_SYNTH_SEED + 3, 1.0f,
                                    c->stream));
    /* the residual the fused GEMVs normalise (ones: a norm of zeros would read as eps only) */
    CK(c, eng_cuda_launch_fill_f32(c->x, rows * g->dim, 1.0f, c->stream));
    for (int proj = 0; proj < ENG_CUDA_N_PROJ; proj++)
        for (int mb = 0; mb < ENG_CUDA_GEMV_BUCKETS; mb++) {
            const int M = 1 << mb;
            const proj_args_t a = proj_args(c, proj, 0);
            if (!eng_cuda_gemv_supported(a.W, a.X, M, a.n_in))
                continue;
            if (mode >= ENG_CUDA_GEMV_FORCE) {
                const int v = mode - ENG_CUDA_GEMV_FORCE;
                c->gemv_pick[proj][mb] = (signed char)(eng_cuda_gemv_variant_supported(v, M) ? v : 0);
                continue;
            }
            float *best = c->gemv_us[proj][mb]; /* [0] cuBLAS, [1 + v] variant v */
            for (int round = 0; round < 2; round++)
                for (int k = -1; k < ENG_CUDA_GEMV_VARIANTS; k++) {
                    float us = 0;
                    if (k >= 0 && !eng_cuda_gemv_variant_supported(k, M))
                        continue;
                    TRY(time_proj(c, proj, M, k, &us));
                    if (round == 0 || us < best[1 + k])
                        best[1 + k] = us;
                }
            for (int k = 0; k < ENG_CUDA_GEMV_VARIANTS; k++)
                if (best[1 + k] > 0 && best[1 + k] < best[1 + c->gemv_pick[proj][mb]])
                    c->gemv_pick[proj][mb] = (signed char)k;
        }
    return SL_OK;
}

int eng_cuda_set_gemv_mode(eng_backend_t *b, int mode) {
    cuda_ctx_t *c = b->ctx;
    if (mode < ENG_CUDA_GEMV_AUTO || mode >= ENG_CUDA_GEMV_FORCE + ENG_CUDA_GEMV_VARIANTS)
        return fail(c, SL_EINVAL, "cuda: GEMV mode %d", mode);
    CK(c, cudaSetDevice(c->device));
    destroy_graphs(c);
    return choose_gemv(c, mode);
}

void eng_cuda_gemv_report(eng_backend_t *b, char *buf, int len) {
    const cuda_ctx_t *c = b->ctx;
    static const char *const mode_name[] = {"auto", "cublas", "gemv0", "gemv1", "gemv2", "gemv3"};
    _Static_assert(sizeof mode_name / sizeof mode_name[0] == ENG_CUDA_GEMV_FORCE + ENG_CUDA_GEMV_VARIANTS,
                   "a name per mode");
    int n = snprintf(buf, (size_t)len, "small-M projections (SLUICE_CUDA_GEMV=%s; times in us):\n",
                     mode_name[c->gemv_mode]);
    for (int proj = 0; proj < ENG_CUDA_N_PROJ && n >= 0 && n < len; proj++) {
        const proj_args_t a = proj_args(c, proj, 0);
        n += snprintf(buf + n, (size_t)(len - n), "  %-8s %6d x %-6d", proj_name[proj], a.n_out,
                      a.n_in);
        for (int mb = 0; mb < ENG_CUDA_GEMV_BUCKETS && n >= 0 && n < len; mb++) {
            const float *t = c->gemv_us[proj][mb];
            const int pick = c->gemv_pick[proj][mb];
            n += snprintf(buf + n, (size_t)(len - n), " | M%d %-6s", 1 << mb,
                          pick < 0 ? "cublas" : mode_name[ENG_CUDA_GEMV_FORCE + pick]);
            for (int k = -1; k < ENG_CUDA_GEMV_VARIANTS && n >= 0 && n < len; k++)
                if (t[1 + k] > 0)
                    n += k < 0 ? snprintf(buf + n, (size_t)(len - n), " cublas %.1f", t[0])
                               : snprintf(buf + n, (size_t)(len - n), " g%d %.1f", k, t[1 + k]);
        }
        if (n >= 0 && n < len)
            n += snprintf(buf + n, (size_t)(len - n), "\n");
    }
}

/* The run-time paths: environment variable and the names of values 0 (the default), 1 and, for
 * some, 2 (NULL where there is none). */
#define PATH_VALUES 3
static const struct {
    const char *env, *name[PATH_VALUES];
    int in_graphs; /* decode graphs bake the path in: a change drops them */
} path_env[ENG_CUDA_N_PATHS] = {
    [ENG_CUDA_PATH_PREFILL_ATTN] = {"SLUICE_CUDA_PREFILL_ATTN", {"fa2", "old", "fa2w"}, 0},
    [ENG_CUDA_PATH_ELTWISE] = {"SLUICE_CUDA_ELTWISE", {"vec", "scalar"}, 1},
    [ENG_CUDA_PATH_FUSE] = {"SLUICE_CUDA_FUSE", {"on", "off"}, 1},
    [ENG_CUDA_PATH_DECODE_ATTN] = {"SLUICE_CUDA_DECODE_ATTN", {"single", "split"}, 1},
    [ENG_CUDA_PATH_SAMPLE] = {"SLUICE_CUDA_SAMPLE", {"device", "host"}, 0},
    [ENG_CUDA_PATH_PDL] = {"SLUICE_CUDA_PDL", {"on", "off"}, 1},
};

/* Path `path` from its environment variable (unset or empty: the default). */
static int path_from_env(cuda_ctx_t *c, int path, int *value) {
    const char *v = getenv(path_env[path].env);
    *value = 0;
    if (!v || !*v)
        return SL_OK;
    for (int k = 0; k < PATH_VALUES && path_env[path].name[k]; k++)
        if (strcmp(v, path_env[path].name[k]) == 0) {
            *value = k;
            return SL_OK;
        }
    const char *const *n = path_env[path].name;
    if (n[2])
        return fail(c, SL_EINVAL, "cuda: %s=%s (%s, %s or %s)", path_env[path].env, v, n[0], n[1],
                    n[2]);
    return fail(c, SL_EINVAL, "cuda: %s=%s (%s or %s)", path_env[path].env, v, n[0], n[1]);
}

int eng_cuda_set_path(eng_backend_t *b, int path, int value) {
    cuda_ctx_t *c = b->ctx;
    if (path < 0 || path >= ENG_CUDA_N_PATHS || value >= PATH_VALUES ||
        (value >= 0 && !path_env[path].name[value]))
        return fail(c, SL_EINVAL, "cuda: path %d value %d", path, value);
    if (value < 0)
        TRY(path_from_env(c, path, &value));
    const int changed = value != c->path[path];
    if (changed && path_env[path].in_graphs)
        destroy_graphs(c);
    c->path[path] = value;
    /* the GEMV-or-cuBLAS timings hold for the launch mode they were made in */
    if (changed && path == ENG_CUDA_PATH_PDL && c->pdl_ok && c->gemv_mode == ENG_CUDA_GEMV_AUTO) {
        CK(c, cudaSetDevice(c->device));
        return choose_gemv(c, ENG_CUDA_GEMV_AUTO);
    }
    return SL_OK;
}

/* ---- profiling ---------------------------------------------------------------------------------- */

int eng_cuda_profile_step(eng_backend_t *b, const eng_batch_t *batch, int32_t *tokens,
                          eng_cuda_profile_t *out) {
    cuda_ctx_t *c = b->ctx;
    memset(out, 0, sizeof *out);
    CK(c, cudaSetDevice(c->device));
    /* events: start, plan upload, copies, embedding, 10 per layer, 3 per LM-head chunk */
    cuda_prof_t pr = {NULL, NULL, 0,
                      4 + 10 * c->cfg.n_layers +
                          3 * (ENG_CUDA_MAX_STEP_TOKENS / ENG_CUDA_MAX_LOGIT_ROWS)};
    pr.ev = sl_calloc((size_t)pr.cap, sizeof *pr.ev);
    pr.kind = sl_calloc((size_t)pr.cap, sizeof *pr.kind);
    int rc = pr.ev && pr.kind ? SL_OK : fail(c, SL_ENOMEM, "cuda: out of host memory");
    int created = 0;
    for (; rc == SL_OK && created < pr.cap; created++) {
        cudaError_t e = cudaEventCreate(&pr.ev[created]);
        if (e != cudaSuccess)
            rc = fail_call(c, 0, __FILE__, __LINE__, "cudaEventCreate", cudaGetErrorString(e));
    }
    if (rc == SL_OK) {
        int rows;
        c->prof = &pr;
        const step_out_t o = {.tokens = tokens};
        rc = forward_impl(b, batch, &o, &rows, 1);
        c->prof = NULL;
    }
    for (int i = 1; rc == SL_OK && i < pr.n; i++) {
        float ms = 0;
        cudaError_t e = cudaEventElapsedTime(&ms, pr.ev[i - 1], pr.ev[i]);
        if (e != cudaSuccess) {
            rc = fail_call(c, 0, __FILE__, __LINE__, "cudaEventElapsedTime", cudaGetErrorString(e));
            break;
        }
        double *dst = pr.kind[i] == PROF_GEMM ? &out->gemm_ms
                      : pr.kind[i] == PROF_ATTN ? &out->attn_ms
                                                : &out->other_ms;
        *dst += ms;
        out->total_ms += ms;
        out->launches++;
    }
    for (int i = 0; i < created; i++)
        if (pr.ev[i])
            cudaEventDestroy(pr.ev[i]);
    sl_free(pr.ev);
    sl_free(pr.kind);
    return rc;
}

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
    c->pdl_ok = prop.major >= 9;
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
    TRY(load_weights(c, m));
    const char *gm = getenv("SLUICE_CUDA_GEMV");
    int mode = !gm || !*gm || strcmp(gm, "auto") == 0 ? ENG_CUDA_GEMV_AUTO
               : strcmp(gm, "cublas") == 0              ? ENG_CUDA_GEMV_CUBLAS
               : strcmp(gm, "gemv") == 0                ? ENG_CUDA_GEMV_FORCE
                                                        : -1;
    if (mode < 0 && strncmp(gm, "gemv", 4) == 0 && gm[4] >= '0' &&
        gm[4] < '0' + ENG_CUDA_GEMV_VARIANTS && !gm[5])
        mode = ENG_CUDA_GEMV_FORCE + (gm[4] - '0');
    if (mode < 0)
        return fail(c, SL_EINVAL, "cuda: SLUICE_CUDA_GEMV=%s (auto, cublas, gemv or gemv0..gemv%d)", gm,
                    ENG_CUDA_GEMV_VARIANTS - 1);
    for (int path = 0; path < ENG_CUDA_N_PATHS; path++)
        TRY(path_from_env(c, path, &c->path[path]));
    return choose_gemv(c, mode);
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
    if (c->params.kv_dtype == ENG_KV_I8) {
        snprintf(err, (size_t)errlen, "cuda: an int8 KV cache is not supported yet (the cuda pool is F16)");
        sl_free(c);
        sl_free(b);
        return NULL;
    }
    if (ctx_init(c, model) != SL_OK) {
        snprintf(err, (size_t)errlen, "%s", c->err);
        ctx_free(c);
        sl_free(b);
        return NULL;
    }
    b->ops = &cuda_ops;
    b->model = model;
    b->kv_elem_bytes = 2; /* the pool is F16 for F32 and F16 */
    b->ctx = c;
    return b;
}
