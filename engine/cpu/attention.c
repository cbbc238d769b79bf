/* attention.c — K/V stores into the paged pool and causal attention of a few consecutive queries
 * (attention.h).
 *
 * Two passes over the context, block by block: scores q.k (kept in `scores`), then the softmax
 * weights applied to V, each over a block's rows at once (dot_rows / axpy_rows of the pool's
 * element type, F32 or F16). The queries of a prompt tile, and the query heads of a kv head, take
 * each block in turn, so a block is read from memory once for all of them and, in F16, widened
 * once: a prompt tile's block into scratch, and each row by the row kernels for the heads they
 * take together (F16C conversion costs Zen 1 about as much as the FMAs: widening per query made
 * F16 prefill 15% slower than F32). The
 * context is at most a few thousand positions, so the scores fit in cache and a one-pass (online
 * softmax) form would buy little here.
 */
#include "engine/cpu/attention.h"

#include <stdbool.h>
#include <string.h>

#include "engine/vector_clones.h"

void eng_cpu_kv_store(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                      int layer, int pos, int which, const float *row, int e0, int e1)
{
    int block = block_table[pos / kv->block_size], slot = pos % kv->block_size, hd = kv->head_dim;
    for (int e = e0; e < e1;) {
        int h = e / hd, n = ((h + 1) * hd < e1 ? (h + 1) * hd : e1) - e;
        char *dst = (char *)eng_cpu_kv_row(kv, block, layer, which, h, slot) + (size_t)(e - h * hd) * (kv->f16 ? 2 : 4);
        if (kv->f16)
            k->to_f16(row + e, (uint16_t *)dst, n);
        else
            memcpy(dst, row + e, (size_t)n * sizeof(float));
        e += n;
    }
}

/* x[0..n) *= a, 8 lanes at a time (GCC does not vectorise the plain loop at -O2: it was ~half of
 * this file's own time in a 16-stream decode step) */
static void scale_row(float *x, int n, float a)
{
    int e = 0;
    for (; e + 8 <= n; e += 8) {
        vec8f v;
        memcpy(&v, x + e, sizeof v);
        v *= a;
        memcpy(x + e, &v, sizeof v);
    }
    for (; e < n; e++)
        x[e] *= a;
}

static inline int min3(int a, int b, int c)
{
    int m = a < b ? a : b;
    return m < c ? m : c;
}

/* Rows [o, o + n) of block `block` of K (which 0) or V as the kernels read them: in place, or
 * widened from F16 into tmp when `widen`. *f16: the rows returned are F16. */
static const void *rows_for(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, int block, int layer, int which,
                            int head, int o, int n, bool widen, float *tmp, bool *f16)
{
    const void *r = eng_cpu_kv_row(kv, block, layer, which, head, o);
    *f16 = kv->f16 && !widen;
    if (!widen)
        return r;
    k->to_f32(r, tmp, n * kv->head_dim);
    return tmp;
}

void eng_cpu_attend(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                    int layer, int head, const float *q, size_t q_stride, int nq, int nh, int n_ctx,
                    float scale, float *scores, float *out, size_t out_stride)
{
    const int hd = kv->head_dim, bs = kv->block_size, span = n_ctx + nq - 1;
    float *tmp = scores + (size_t)nq * nh * span; /* score row of head j of token i: i nh + j */
    const bool widen = kv->f16 && nq > 1 && hd <= ENG_CPU_ATTEND_WIDEN;
    const int step = widen ? ENG_CPU_ATTEND_WIDEN / hd : bs; /* rows per run */
    /* runs of rows block by block (no division per block: it showed in decode) */
    for (int b = 0, p0 = 0; p0 < span; b++, p0 += bs)
        for (int o = 0; o < bs && p0 + o < span; o += step) {
            const int p = p0 + o, n = min3(step, bs - o, span - p);
            bool f16;
            const void *rows = rows_for(k, kv, block_table[b], layer, 0, head, o, n, widen, tmp, &f16);
            for (int i = 0; i < nq; i++) {
                const int m = n_ctx + i - p < n ? n_ctx + i - p : n; /* token i's causal limit */
                float *s = scores + (size_t)i * nh * span + p;
                if (m <= 0)
                    continue;
                if (f16)
                    k->dot_rows_f16(q + i * q_stride, nh, rows, m, hd, scale, s, (size_t)span);
                else
                    k->dot_rows_f32(q + i * q_stride, nh, rows, m, hd, scale, s, (size_t)span);
            }
        }
    float inv[ENG_CPU_ATTEND_MAX_Q][ENG_CPU_ATTEND_MAX_HEADS];
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nh; j++) {
            inv[i][j] = 1.0f / k->exp_sum(scores + (size_t)(i * nh + j) * span, n_ctx + i);
            memset(out + i * out_stride + j * hd, 0, (size_t)hd * sizeof(float));
        }
    for (int b = 0, p0 = 0; p0 < span; b++, p0 += bs)
        for (int o = 0; o < bs && p0 + o < span; o += step) {
            const int p = p0 + o, n = min3(step, bs - o, span - p);
            bool f16;
            const void *rows = rows_for(k, kv, block_table[b], layer, 1, head, o, n, widen, tmp, &f16);
            for (int i = 0; i < nq; i++) {
                const int m = n_ctx + i - p < n ? n_ctx + i - p : n;
                const float *w = scores + (size_t)i * nh * span + p;
                if (m <= 0)
                    continue;
                if (f16)
                    k->axpy_rows_f16(w, (size_t)span, nh, rows, m, hd, out + i * out_stride);
                else
                    k->axpy_rows_f32(w, (size_t)span, nh, rows, m, hd, out + i * out_stride);
            }
        }
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < nh; j++)
            scale_row(out + i * out_stride + j * hd, hd, inv[i][j]);
}
