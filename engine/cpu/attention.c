/* attention.c — K/V stores into the paged pool and causal attention of a few consecutive queries
 * (attention.h).
 *
 * Two passes over the context, block by block: scores q.k (kept in `scores`), then the softmax
 * weights applied to V, each over a block's rows at once (dot_rows / axpy_rows of the pool's
 * element type, F32, F16 or I8; an I8 row's scale multiplies its score and its softmax weight,
 * so the row kernels see only the integers). The queries of a prompt tile, and the query heads of a kv head, take
 * each block in turn, so a block is read from memory once for all of them and, in F16, widened
 * once: a prompt tile's block into scratch, and each row by the row kernels for the heads they
 * take together (F16C conversion costs Zen 1 about as much as the FMAs: widening per query made
 * F16 prefill 15% slower than F32). The
 * context is at most a few thousand positions, so the scores fit in cache and a one-pass (online
 * softmax) form would buy little here.
 */
#include "engine/cpu/attention.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "engine/vector_clones.h"

eng_cpu_kv_t eng_cpu_kv_layout(int n_layers, int n_kv_heads, int head_dim, eng_kv_dtype_t type, int num_blocks,
                               int block_size)
{
    eng_cpu_kv_t kv = {.num_blocks = num_blocks, .block_size = block_size, .n_layers = n_layers,
                       .n_kv_heads = n_kv_heads, .head_dim = head_dim, .type = type};
    const size_t n = (size_t)block_size * head_dim;
    kv.run_bytes = type == ENG_KV_F32 ? 4 * n : type == ENG_KV_F16 ? 2 * n : (n + 3) / 4 * 4 + 4 * (size_t)block_size;
    kv.block_bytes = (size_t)n_layers * 2 * n_kv_heads * kv.run_bytes;
    return kv;
}

/* q[0..n) = x / d rounded to the nearest integer (halves away from zero), with d = max |x| / 127
 * (0 for a zero row); returns d. Plain C, the same on every instruction set (a conversion, not a
 * libm call: nearbyintf was a call per element). */
static float quantize_i8(const float *x, int8_t *q, int n)
{
    float amax = 0.0f;
    for (int e = 0; e < n; e++)
        amax = fabsf(x[e]) > amax ? fabsf(x[e]) : amax;
    const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int e = 0; e < n; e++) {
        float v = x[e] * id;
        v = v < 127.0f ? v : 127.0f; /* and NaN: a defined conversion whatever the input */
        v = v > -127.0f ? v : -127.0f;
        q[e] = (int8_t)(int)(v + (v < 0.0f ? -0.5f : 0.5f));
    }
    return d;
}

void eng_cpu_kv_store(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                      int layer, int pos, int which, const float *row, int e0, int e1)
{
    int block = block_table[pos / kv->block_size], slot = pos % kv->block_size, hd = kv->head_dim;
    for (int e = e0; e < e1;) {
        int h = e / hd, n = ((h + 1) * hd < e1 ? (h + 1) * hd : e1) - e;
        char *dst = eng_cpu_kv_row(kv, block, layer, which, h, slot);
        switch (kv->type) {
        case ENG_KV_F32: memcpy(dst + (size_t)(e - h * hd) * 4, row + e, (size_t)n * sizeof(float)); break;
        case ENG_KV_F16: k->to_f16(row + e, (uint16_t *)dst + (e - h * hd), n); break;
        case ENG_KV_I8: /* whole rows (n == hd) */
            eng_cpu_kv_scales(kv, block, layer, which, h)[slot] = quantize_i8(row + e, (int8_t *)dst, n);
            break;
        }
        e += n;
    }
}

/* x[0..n) *= a (one call per query head: GCC left the plain loop at -O2 scalar, ~half of this
 * file's own time in a 16-stream decode step; the vector type at the baseline ISA had gone through
 * the stack) */
ENG_VECTOR_CLONES static void scale_row(float *x, int n, float a)
{
    int e = 0;
    for (; e + 16 <= n; e += 16) {
        vec16f v;
        memcpy(&v, x + e, sizeof v);
        v *= a;
        memcpy(x + e, &v, sizeof v);
    }
    for (; e < n; e++)
        x[e] *= a;
}

/* x[0..n) *= d[0..n): an I8 pool's row scales applied to a row of scores or, with `weights`, of
 * softmax weights, where a product under FLT_MIN becomes 0: a subnormal weight adds nothing a
 * float sum of at least the largest weight can hold, but every FMA that takes one costs a
 * microcode assist on Intel cores (a chat trace on stories260K ran at half F16's speed) */
ENG_VECTOR_CLONES static void mul_row(float *x, const float *d, int n, bool weights)
{
    int e = 0;
    for (; e + 16 <= n; e += 16) {
        vec16f v, w;
        memcpy(&v, x + e, sizeof v);
        memcpy(&w, d + e, sizeof w);
        v *= w;
        if (weights) /* they are >= 0 */
            v = (vec16f)((vec16i)v & (v >= FLT_MIN));
        memcpy(x + e, &v, sizeof v);
    }
    for (; e < n; e++) {
        x[e] *= d[e];
        if (weights && !(x[e] >= FLT_MIN))
            x[e] = 0.0f;
    }
}

/* An I8 pool: the scales of positions 0..span-1 of K (which 0) or V, gathered block by block into
 * d, times the nq nh rows of scores (K) or softmax weights (V), row i nh + j over n_ctx + i */
static void apply_row_scales(const eng_cpu_kv_t *kv, const int32_t *block_table, int layer, int which, int head,
                             int span, float *d, float *scores, int nq, int nh, int n_ctx)
{
    for (int b = 0, p0 = 0; p0 < span; b++, p0 += kv->block_size) {
        const int m = span - p0 < kv->block_size ? span - p0 : kv->block_size;
        memcpy(d + p0, eng_cpu_kv_scales(kv, block_table[b], layer, which, head), (size_t)m * sizeof(float));
    }
    for (int r = 0; r < nq * nh; r++)
        mul_row(scores + (size_t)r * span, d, n_ctx + r / nh, which == 1);
}

static inline int min3(int a, int b, int c)
{
    int m = a < b ? a : b;
    return m < c ? m : c;
}

/* Rows [o, o + n) of block `block` of K (which 0) or V as the kernels read them: in place (*type
 * the pool's), or widened from F16 or I8 into tmp when `widen` (*type F32). */
static const void *rows_for(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, int block, int layer, int which,
                            int head, int o, int n, bool widen, float *tmp, eng_kv_dtype_t *type)
{
    const void *r = eng_cpu_kv_row(kv, block, layer, which, head, o);
    *type = widen ? ENG_KV_F32 : kv->type;
    if (widen && kv->type == ENG_KV_F16)
        k->to_f32(r, tmp, n * kv->head_dim);
    else if (widen)
        k->i8_to_f32(r, tmp, n * kv->head_dim);
    return widen ? tmp : r;
}

static void dot_rows(const eng_cpu_kernels_t *k, eng_kv_dtype_t type, const float *q, int nh, const void *rows, int n,
                     int hd, float scale, float *out, size_t out_stride)
{
    switch (type) {
    case ENG_KV_F32: k->dot_rows_f32(q, nh, rows, n, hd, scale, out, out_stride); break;
    case ENG_KV_F16: k->dot_rows_f16(q, nh, rows, n, hd, scale, out, out_stride); break;
    case ENG_KV_I8: k->dot_rows_i8(q, nh, rows, n, hd, scale, out, out_stride); break;
    }
}

static void axpy_rows(const eng_cpu_kernels_t *k, eng_kv_dtype_t type, const float *w, size_t w_stride, int nh,
                      const void *rows, int n, int hd, float *y)
{
    switch (type) {
    case ENG_KV_F32: k->axpy_rows_f32(w, w_stride, nh, rows, n, hd, y); break;
    case ENG_KV_F16: k->axpy_rows_f16(w, w_stride, nh, rows, n, hd, y); break;
    case ENG_KV_I8: k->axpy_rows_i8(w, w_stride, nh, rows, n, hd, y); break;
    }
}

/* Asks for the whole run (rows and, I8, scales) of K or V of `block`, which the pass reads after
 * the block it is on: a run is 1-8 KiB a block-size apart from the sequence's other blocks, too
 * short for the hardware prefetcher to ramp up, so each block waited on its own misses
 * (bench_attn, 16 sequences at depth 256, one thread: F16 -25%, I8 -40%). Inlined by force: as a
 * call GCC took it for a function without effects (prefetches only) and deleted the calls. */
static inline __attribute__((always_inline)) void prefetch_run(const eng_cpu_kv_t *kv, int block, int layer,
                                                                int which, int head)
{
    const char *r = (const char *)kv->data + eng_cpu_kv_run_offset(kv, block, layer, which, head);
    for (size_t off = 0; off < kv->run_bytes; off += 64)
        __builtin_prefetch(r + off);
}

void eng_cpu_attend(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                    int layer, int head, const float *q, size_t q_stride, int nq, int nh, int n_ctx,
                    float scale, float *scores, float *out, size_t out_stride)
{
    const int hd = kv->head_dim, bs = kv->block_size, span = n_ctx + nq - 1;
    float *tmp = scores + (size_t)nq * nh * span; /* score row of head j of token i: i nh + j */
    float *row_scale = tmp + ENG_CPU_ATTEND_WIDEN; /* I8: the scales of positions 0..span-1 */
    const bool widen = kv->type != ENG_KV_F32 && nq > 1 && hd <= ENG_CPU_ATTEND_WIDEN;
    const bool i8 = kv->type == ENG_KV_I8;
    const int step = widen ? ENG_CPU_ATTEND_WIDEN / hd : bs; /* rows per run */
    /* runs of rows block by block (no division per block: it showed in decode) */
    for (int b = 0, p0 = 0; p0 < span; b++, p0 += bs)
        for (int o = 0; o < bs && p0 + o < span; o += step) {
            const int p = p0 + o, n = min3(step, bs - o, span - p);
            eng_kv_dtype_t type;
            if (o == 0 && p0 + bs < span)
                prefetch_run(kv, block_table[b + 1], layer, 0, head);
            const void *rows = rows_for(k, kv, block_table[b], layer, 0, head, o, n, widen, tmp, &type);
            for (int i = 0; i < nq; i++) {
                const int m = n_ctx + i - p < n ? n_ctx + i - p : n; /* token i's causal limit */
                float *s = scores + (size_t)i * nh * span + p;
                if (m <= 0)
                    continue;
                dot_rows(k, type, q + i * q_stride, nh, rows, m, hd, scale, s, (size_t)span);
            }
        }
    if (i8) /* the K rows' scales times their scores */
        apply_row_scales(kv, block_table, layer, 0, head, span, row_scale, scores, nq, nh, n_ctx);
    float inv[ENG_CPU_ATTEND_MAX_Q][ENG_CPU_ATTEND_MAX_HEADS];
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nh; j++) {
            inv[i][j] = 1.0f / k->exp_sum(scores + (size_t)(i * nh + j) * span, n_ctx + i);
            memset(out + i * out_stride + j * hd, 0, (size_t)hd * sizeof(float));
        }
    if (i8) /* and the V rows' scales times their weights (each weight serves one row) */
        apply_row_scales(kv, block_table, layer, 1, head, span, row_scale, scores, nq, nh, n_ctx);
    for (int b = 0, p0 = 0; p0 < span; b++, p0 += bs)
        for (int o = 0; o < bs && p0 + o < span; o += step) {
            const int p = p0 + o, n = min3(step, bs - o, span - p);
            eng_kv_dtype_t type;
            if (o == 0 && p0 + bs < span)
                prefetch_run(kv, block_table[b + 1], layer, 1, head);
            const void *rows = rows_for(k, kv, block_table[b], layer, 1, head, o, n, widen, tmp, &type);
            for (int i = 0; i < nq; i++) {
                const int m = n_ctx + i - p < n ? n_ctx + i - p : n;
                float *w = scores + (size_t)i * nh * span + p;
                if (m <= 0)
                    continue;
                axpy_rows(k, type, w, (size_t)span, nh, rows, m, hd, out + i * out_stride);
            }
        }
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nh; j++)
            scale_row(out + i * out_stride + j * hd, hd, inv[i][j]);
}
