/* cuda_backend.h — internal contract of the CUDA backend (engine/cuda/); nothing outside
 * engine/cuda/ and its tests includes this.
 *
 * Three parts:
 *   cuda_plan.c     pure host arithmetic, testable without a GPU: graph buckets, the attention
 *                   split count, memory sizing, and the step plan (the batch flattened into one
 *                   int32 array that is uploaded with a single copy per step).
 *   cuda_kernels.cu / cuda_attn.cu   kernels and their launchers (extern "C", C types only:
 *                   fp16 buffers are uint16_t *). Every launcher enqueues on the given stream and
 *                   returns cudaGetLastError(); it never synchronises.
 *   cuda_gemv.cu    the small-M projection kernel (chosen against cuBLAS by timing at create).
 *   cuda_sample.cu  token selection on the device (the host sampler's pipeline).
 *   cuda_backend.c  eng_cuda_backend_create and the ops table (weights, KV pool, forward, graphs),
 *                   plus the internal entry points below for the checks and the benchmark.
 *
 * Layouts (all row-major, fp16 unless said):
 *   weight W (n_out x n_in): n_out rows of n_in, as in GGUF; Wqkv = [Wq; Wk; Wv], Wgu = [Wgate; Wup]
 *   KV pool, per layer l and per K/V: [num_blocks][n_kv_heads][block_size][head_dim]; the slot of
 *   position p of a sequence is block_table[p / block_size] * block_size + p % block_size.
 *   activations: x (T x dim) fp32 residual; xn (T x dim); qkv (T x (n_heads + 2 n_kv) head_dim);
 *   att (T x n_heads head_dim); gu (T x 2 ffn); h (T x ffn); logits (L x vocab) fp32. The o and down
 *   projections add onto x in their GEMM epilogue (fp32 C, beta = 1): that is the residual add.
 */
#ifndef SLUICE_ENGINE_CUDA_BACKEND_H
#define SLUICE_ENGINE_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engine/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ENG_CUDA_MAX_STEP_TOKENS 4096 /* tokens one forward may carry (activation workspace) */
#define ENG_CUDA_MAX_LOGIT_ROWS 256   /* logits rows computed per LM-head pass (chunked above) */
#define ENG_CUDA_N_BUCKETS 9          /* decode graph batch buckets 1,2,4,...,256 */
#define ENG_CUDA_N_SPLIT_BUCKETS 16   /* decode graph split buckets 1,2,4,...,2^15 */
#define ENG_CUDA_ATTN_PART 128        /* keys per split of the split-K attention */
#define ENG_CUDA_FLASH_TILE 64        /* query rows per tile of the prefill attention */
#define ENG_CUDA_FLASH_TILE_WIDE 128  /* ... of its wide variant (4 warps of 32 rows) */
#define ENG_CUDA_FLASH_MIN_TOKENS 16  /* a sequence with fewer new tokens uses the split-K kernel */
#define ENG_CUDA_MAX_GQA 8            /* query heads per KV head the split-K kernel supports */
#define ENG_CUDA_META_CAP (1 << 20)   /* int32 entries of the per-step plan array */
#define ENG_CUDA_SYNTH_SEED 0x5eed5eedULL /* seed of device-generated synthetic weights */
#define ENG_CUDA_GEMV_MAX_M 8         /* the custom small-M projection kernel takes M <= this */
#define ENG_CUDA_GEMV_BUCKETS 4       /* M buckets its run-time choice is made for: 1, 2, 4, 8 */
#define ENG_CUDA_GEMV_NORM_MAX_M 4    /* the GEMV normalises its own input (RMSNorm) for M <= this */
#define ENG_CUDA_GEMV_NORM_SMEM 49152 /* ... when the M normalised fp16 rows fit in this many bytes */
#define ENG_CUDA_GEMV_VARIANTS 4      /* load schedules of the GEMV kernel (cuda_gemv.cu), same bits */
#define ENG_CUDA_GEMV_VARIANT_MAX_M 2 /* variants other than 0 exist for M <= this */
#define ENG_CUDA_ATTN_SINGLE_MAX 512  /* decode rows attending at most this many keys: one pass */
/* forward_sample picks on the device from this many logits rows up; fewer go to the host's pick
 * (one block per row makes the device sampler ~1.2 ms for any row count up to the SM count, the
 * host's pick after copying the rows back 0.63 ms per row: H100 runs 5-6, Llama-2-7B vocab;
 * at 2 rows 1.23 ms on the host against 1.29 on the device) */
#define ENG_CUDA_SAMPLE_DEVICE_MIN_ROWS 3

/* ---- graph buckets and attention splits (cuda_plan.c) ---------------------------------------- */

/* Smallest decode bucket (1,2,4,...,256) holding n sequences; 0 when n < 1 or n > 256. */
int eng_cuda_graph_bucket(int n);
/* Index of a power-of-two bucket: 1 -> 0, 2 -> 1, 3..4 -> 2, ...; -1 for n < 1. */
int eng_cuda_pow2_index(int n);

/* Splits of the split-K attention for n_rows rows over at most max_keys keys each, with partial
 * results limited to cap_floats floats (rows * heads * splits * (head_dim + 2)). Starts from
 * ENG_CUDA_ATTN_PART keys per split and widens the split when the partials would not fit.
 * Returns SL_OK with *splits >= 1 and *part >= 1 (splits * part >= max_keys), or SL_ENOMEM when
 * even one split per row does not fit. max_keys 0 gives one split. */
int eng_cuda_attn_splits(int max_keys, int n_rows, int n_heads, int head_dim, int64_t cap_floats,
                         int *part, int *splits);

/* ---- memory sizing (cuda_plan.c) -------------------------------------------------------------- */

typedef struct eng_cuda_sizes {
    int64_t weight_bytes;     /* fp16 weights on the device (fused QKV and gate/up included) */
    int64_t norm_bytes;       /* fp32 norm weights */
    int64_t act_bytes;        /* activation workspace for ENG_CUDA_MAX_STEP_TOKENS tokens */
    int64_t partial_floats;   /* split-K attention partials capacity, floats */
    int64_t logits_bytes;     /* logits rows, the sampler's probability rows, ids, logprobs and
                                 sampling rows for ENG_CUDA_MAX_LOGIT_ROWS rows */
    int64_t meta_bytes;       /* the step plan array */
    int64_t cublas_ws_bytes;  /* cuBLAS workspace */
    int64_t total_bytes;      /* everything above (partials as bytes) */
    int64_t kv_bytes_per_block_token; /* KV bytes of one token, all layers, K and V */
} eng_cuda_sizes_t;

/* Device bytes the backend needs for a model config before the KV pool. Cannot fail. */
void eng_cuda_sizes(const eng_model_config_t *cfg, eng_cuda_sizes_t *out);
/* KV budget: total * utilization minus what is already in use on the device (total - free),
 * never negative. Cannot fail. */
int64_t eng_cuda_kv_budget(int64_t total, int64_t free_bytes, double utilization);
/* SL_OK when need bytes fit in min(free, total * utilization); else SL_ENOMEM with
 * "cuda: model needs X GiB of device memory (weights W GiB + workspace S GiB), device DEV has Y GiB
 * free of Z GiB (gpu_memory_utilization U)" in err. */
int eng_cuda_check_fit(const eng_cuda_sizes_t *s, int64_t free_bytes, int64_t total,
                       double utilization, const char *device_name, char *err, int errlen);

/* ---- the step plan (cuda_plan.c) --------------------------------------------------------------- */

typedef struct eng_cuda_geom {
    int block_size;   /* tokens per KV block */
    int num_blocks;   /* blocks in the pool */
    int vocab;
    int max_tokens;   /* workspace limit on tokens per step */
    int flash_tile;   /* > 0: sequences with >= ENG_CUDA_FLASH_MIN_TOKENS new tokens use the
                         prefill (flash) kernel in tiles of this many queries; 0: every token is
                         a split-K row */
} eng_cuda_geom_t;

/* Offsets (in int32 entries) of the plan's arrays inside the meta array, and their counts.
 *   tokens[T], pos[T], slot[T]      per token: id, absolute position, KV slot (-1: not written)
 *   row_tok[R], row_bt[R], row_nk[R] per split-K row: token index (query row), offset of its block
 *                                   table in bt[], keys it attends (0: padding, output zero)
 *   tiles[4 NT]                     per flash tile: first token index, queries (<= flash_tile),
 *                                   position
 *                                   of the first query, block-table offset
 *   out[L]                          token indices whose logits are wanted, batch order
 *   bt[NB]                          all block tables, concatenated
 *   copies[2 C]                     copy-on-write (src, dst) pairs
 * Every offset before bt depends only on (T, R, NT, L), so a decode plan padded to a bucket has
 * the same layout at every step: what a captured graph needs. */
typedef struct eng_cuda_plan {
    int n_tokens, n_rows, n_tiles, n_out, n_bt, n_copies;
    int max_keys;  /* largest row_nk */
    int n_real;    /* sequences in the batch (n_tokens > n_real only for prefill or padding) */
    int off_tokens, off_pos, off_slot, off_row_tok, off_row_bt, off_row_nk, off_tiles, off_out,
        off_bt, off_copies;
    int n_ints;    /* entries used */
} eng_cuda_plan_t;

/* Validates the batch and flattens it into meta (capacity meta_cap entries). pad_to > 0 pads a
 * decode batch (every sequence one token, logits wanted) to pad_to sequences: padding tokens are
 * id 0 at position 0, not written to the KV pool, attend nothing, and their logits are computed and
 * ignored. Returns SL_OK, or SL_EINVAL with the reason in err (empty batch, token id out of range,
 * negative position, a block table too short for pos + n_tokens or naming a block outside the pool,
 * a copy outside the pool, more than geom->max_tokens tokens, a plan larger than meta_cap, pad_to
 * smaller than the batch or on a batch that is not all single-token decodes). */
int eng_cuda_plan_build(const eng_batch_t *batch, const eng_cuda_geom_t *geom, int pad_to,
                        int32_t *meta, int meta_cap, eng_cuda_plan_t *plan, char *err, int errlen);

/* 1 when the batch can replay a decode graph: 1..256 sequences, each one token with logits wanted. */
int eng_cuda_batch_is_decode(const eng_batch_t *batch);

/* ---- kernels (cuda_kernels.cu, cuda_attn.cu); each returns a cudaError_t as int -------------- */
typedef struct CUstream_st *eng_cuda_stream_t;
/* Where a step kernel is enqueued: the stream, and pdl 1 to launch it with programmatic stream
 * serialisation (sm_90+: it may start while the kernel before it finishes, and waits for that
 * kernel's results itself; the protocol is in cuda_device.cuh). The results do not depend on pdl. */
typedef struct eng_cuda_exec {
    eng_cuda_stream_t stream;
    int pdl;
} eng_cuda_exec_t;

/* fp16 dst[i] = uniform(-scale, scale) from a hash of (seed, i); deterministic. */
int eng_cuda_launch_synth_f16(uint16_t *dst, int64_t n, uint64_t seed, float scale,
                              eng_cuda_stream_t s);
/* fp32 dst[i] = value. */
int eng_cuda_launch_fill_f32(float *dst, int64_t n, float value, eng_cuda_stream_t s);
/* fp16 dst[i] = src[i] (round to nearest even). */
int eng_cuda_launch_f32_to_f16(uint16_t *dst, const float *src, int64_t n, eng_cuda_stream_t s);
/* x[t][:] = embd[tokens[t]][:] as fp32, t < T. */
int eng_cuda_launch_embed(float *x, const uint16_t *embd, const int32_t *tokens, int T, int dim,
                          eng_cuda_exec_t ex);
/* For r < n: out[r] = rmsnorm(x[rows ? rows[r] : r]) * w. vec (here, in rope_kv and silu_mul): 1
 * uses 16-byte accesses where the shape allows (dims % 8 == 0), 0 the scalar kernels
 * (SLUICE_CUDA_ELTWISE=scalar). */
int eng_cuda_launch_rmsnorm(const float *x, const float *w, uint16_t *out, const int32_t *rows,
                            int n, int dim, float eps, int vec, eng_cuda_exec_t ex);
/* RoPE (adjacent pairs, theta) on the Q and K heads of each qkv row in place, then K and V of
 * token t into the pool at slot[t] (skipped when slot[t] < 0). kc, vc: this layer's pools. */
int eng_cuda_launch_rope_kv(uint16_t *qkv, const int32_t *pos, const int32_t *slot, uint16_t *kc,
                            uint16_t *vc, int T, int n_heads, int n_kv, int head_dim,
                            int block_size, float theta, int vec, eng_cuda_exec_t ex);
/* h[t][i] = silu(gu[t][i]) * gu[t][ffn + i]. */
int eng_cuda_launch_silu_mul(uint16_t *h, const uint16_t *gu, int T, int ffn, int vec,
                             eng_cuda_exec_t ex);
/* ids[r] = argmax of logits row r (lowest index on ties). */
int eng_cuda_launch_argmax(int32_t *ids, const float *logits, int rows, int vocab,
                           eng_cuda_exec_t ex);
/* For each row r < n (one block each): ids[r] and lps[r] = the token eng_sampler_pick picks from
 * logits row r with rows[r] and the pairs pen (as eng_sampler_prepare made them), and its raw
 * log-probability; -1 and NaN for a row without a finite logit. Reads the logits rows only; works
 * in scratch (n x vocab floats). Rows may share pairs. */
int eng_cuda_launch_sample(int32_t *ids, float *lps, const float *logits, float *scratch,
                           const eng_sample_row_t *rows, const int32_t *pen, int n, int vocab,
                           eng_cuda_exec_t ex);
/* For each pair c < n and each of n_pools pools (layers x K/V, pool p at base + p * pool_elems):
 * block copies[2c] -> copies[2c+1], block_elems fp16 elements each (block_elems % 8 == 0). */
int eng_cuda_launch_copy_blocks(uint16_t *base, int64_t pool_elems, int n_pools,
                                const int32_t *copies, int n, int64_t block_elems,
                                eng_cuda_exec_t ex);

/* Split-K paged attention over the rows of a plan (decode, and prefill without the flash kernel):
 * grid (n_kv, splits, R). part: keys per split. partial_*: R * n_heads * splits entries (acc: x
 * head_dim). Then the reduce writes att[row_tok[r]][h * head_dim + d]. single: every row has at
 * most part * splits keys and one pass of up to 512 threads per (KV head, row) writes att itself
 * (no partials, no reduce kernel). head_dim in {8,16,32,64,
 * 128,256}; n_heads / n_kv <= ENG_CUDA_MAX_GQA. */
int eng_cuda_launch_attn_rows(uint16_t *att, const uint16_t *qkv, const uint16_t *kc,
                              const uint16_t *vc, const int32_t *meta, int off_row_tok,
                              int off_row_bt, int off_row_nk, int off_bt, int R, int n_heads,
                              int n_kv, int head_dim, int block_size, int part, int splits,
                              int single, float *partial, eng_cuda_exec_t ex);
/* Prefill attention kernels: FA2 (mma.sync, register-resident S/P/O, cp.async double-buffered
 * K/V; the default), OLD (the first WMMA kernel, S/P/O through shared memory) or FA2W (FA2 with
 * 128-query tiles, 32 rows per warp: each K/V fragment read from shared memory feeds twice the
 * MMAs; the same bits as FA2): the path ENG_CUDA_PATH_PREFILL_ATTN
 * (SLUICE_CUDA_PREFILL_ATTN=fa2|old|fa2w). */
enum { ENG_CUDA_PREFILL_FA2, ENG_CUDA_PREFILL_OLD, ENG_CUDA_PREFILL_FA2W };
/* Query rows per flash tile the kernel impl takes. */
int eng_cuda_flash_tile(int impl);
/* Flash-style causal prefill attention over the tiles of a plan (built with
 * eng_cuda_flash_tile(impl) queries per tile), K/V read from the pool through the block tables:
 * grid (NT, n_heads). head_dim in {64, 128}; impl ENG_CUDA_PREFILL_*. */
int eng_cuda_launch_attn_flash(uint16_t *att, const uint16_t *qkv, const uint16_t *kc,
                               const uint16_t *vc, const int32_t *meta, int off_tiles, int off_bt,
                               int NT, int n_heads, int n_kv, int head_dim, int block_size,
                               int impl, eng_cuda_exec_t ex);
/* The RMSNorm a GEMV applies to its input itself: input row m = rmsnorm(x[rows ? rows[m] : m]) * w,
 * rounded to fp16 exactly as eng_cuda_launch_rmsnorm rounds it. */
typedef struct eng_cuda_gemv_norm {
    const float *x, *w;
    const int32_t *rows;
    float eps;
} eng_cuda_gemv_norm_t;
/* Y (M x n_out) = X (M x n_in) W^T with load schedule `variant` (0 .. ENG_CUDA_GEMV_VARIANTS - 1,
 * eng_cuda_gemv_variant_supported; every variant computes the same bits), W (n_out x n_in) and X
 * fp16, fp32 accumulation; mode 0: Y
 * fp16 =, 1: Y fp32 +=, 2: Y fp32 =, 3: W is 2 n_out rows (gate, then up) and Y (M x n_out) fp16 =
 * silu(gate) * up, each rounded to fp16 first (the mode-0 GEMV followed by the SiLU*mul kernel).
 * norm != NULL: the input is that RMSNorm of norm->x (X unused; modes 0, 2, 3;
 * eng_cuda_gemv_norm_supported). Needs eng_cuda_gemv_supported (M <= ENG_CUDA_GEMV_MAX_M,
 * n_in % 8 == 0, W and X (norm->x) 16-byte aligned), else cudaErrorInvalidValue. */
int eng_cuda_launch_gemv(const uint16_t *W, const uint16_t *X, void *Y, int M, int n_out,
                         int n_in, int mode, int variant, const eng_cuda_gemv_norm_t *norm,
                         eng_cuda_exec_t ex);
int eng_cuda_gemv_variant_supported(int variant, int M);
int eng_cuda_gemv_supported(const void *W, const void *X, int M, int n_in);
int eng_cuda_gemv_norm_supported(int M, int n_in);

/* 1 when the kernels support this head_dim (split-K) / the flash kernel does. */
int eng_cuda_attn_rows_supported(int head_dim, int gqa);
int eng_cuda_attn_flash_supported(int head_dim);

/* ---- internal entry points of a created CUDA backend (cuda_backend.c), for the checks ---------- */

/* The projections a step runs; each has its own GEMV-or-cuBLAS choice per M bucket. */
enum { ENG_CUDA_P_QKV, ENG_CUDA_P_O, ENG_CUDA_P_GU, ENG_CUDA_P_DOWN, ENG_CUDA_P_HEAD, ENG_CUDA_N_PROJ };
/* How small-M projections are run. AUTO (the default): at create, cuBLAS and every GEMV variant that
 * applies are timed for every projection at M = 1, 2, 4, 8 (graphs of one launch per layer, so the
 * weights stream from memory as in a step) and the fastest is kept per (projection, M bucket).
 * CUBLAS: always cuBLAS (the path before the GEMV kernel). FORCE + v (v < ENG_CUDA_GEMV_VARIANTS):
 * GEMV variant v wherever it applies (variant 0 where v does not). The environment variable
 * SLUICE_CUDA_GEMV=auto|cublas|gemv|gemvV sets the mode at create (gemv: variant 0). */
enum { ENG_CUDA_GEMV_AUTO, ENG_CUDA_GEMV_CUBLAS, ENG_CUDA_GEMV_FORCE };
/* Sets the mode on a created backend (AUTO re-times); drops the captured graphs. SL_OK, or
 * SL_EINVAL / SL_EDEVICE with the reason in errmsg. */
int eng_cuda_set_gemv_mode(eng_backend_t *b, int mode);
/* One line per projection: the choice per M bucket and the timings that made it ("qkv 12288 x
 * 4096 | M1 gemv1  cublas 41.1 gemv0 42.2 gemv1 40.3 ..."); no timings outside AUTO. */
void eng_cuda_gemv_report(eng_backend_t *b, char *buf, int len);

/* Run-time paths, each with a default (value 0), a bypass (value 1) and for some a variant
 * (value 2), set at create from the environment (unset or empty: the default):
 *   PREFILL_ATTN  SLUICE_CUDA_PREFILL_ATTN=fa2|old|fa2w  FA2 kernel | the first WMMA kernel |
 *                 FA2 in 128-query tiles (values ENG_CUDA_PREFILL_FA2 / _OLD / _FA2W)
 *   ELTWISE       SLUICE_CUDA_ELTWISE=vec|scalar       16-byte RMSNorm / RoPE + KV / SiLU kernels
 *                 | scalar ones
 *   FUSE          SLUICE_CUDA_FUSE=on|off              GEMVs normalise their own input (no RMSNorm
 *                 launch) and the gate/up GEMV applies SiLU*mul (no SiLU launch) | separate kernels
 *   DECODE_ATTN   SLUICE_CUDA_DECODE_ATTN=single|split rows with at most ENG_CUDA_ATTN_SINGLE_MAX
 *                 keys in one pass | always split-K + reduce
 *   SAMPLE        SLUICE_CUDA_SAMPLE=device|host       forward_sample picks on the device
 *                 (cuda_sample.cu) from ENG_CUDA_SAMPLE_DEVICE_MIN_ROWS rows up | always copies
 *                 the logits back and picks with eng_sampler_pick
 *   PDL           SLUICE_CUDA_PDL=on|off               step kernels launch with programmatic
 *                 dependent launch on sm_90+ (each starts, and streams its first weights, while
 *                 the one before finishes) | plain launches. Never during eng_cuda_profile_step,
 *                 whose events time each launch on its own. Changing it re-times the GEMV choice. */
enum { ENG_CUDA_PATH_PREFILL_ATTN, ENG_CUDA_PATH_ELTWISE, ENG_CUDA_PATH_FUSE,
       ENG_CUDA_PATH_DECODE_ATTN, ENG_CUDA_PATH_SAMPLE, ENG_CUDA_PATH_PDL, ENG_CUDA_N_PATHS };
/* Sets a path of a created backend to one of its values (< 0: as the environment says); drops the
 * decode graphs when it changes what they run. SL_OK, or SL_EINVAL with the reason in errmsg. */
int eng_cuda_set_path(eng_backend_t *b, int path, int value);

/* Device time of one step, split by kind, from events recorded between the launches of an eager
 * (never graphed) run of the batch: projections (cuBLAS or GEMV, LM head included), attention
 * (prefill and split-K kernels and their reduce), everything else (embedding, norms, RoPE + KV
 * write, SiLU, argmax, block copies, the plan upload); total is first event to last. */
typedef struct eng_cuda_profile {
    double gemm_ms, attn_ms, other_ms, total_ms;
    int launches; /* intervals timed */
} eng_cuda_profile_t;
int eng_cuda_profile_step(eng_backend_t *b, const eng_batch_t *batch, int32_t *tokens,
                          eng_cuda_profile_t *out);

#ifdef __cplusplus
}
#endif

#endif
