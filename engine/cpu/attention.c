/* attention.c — K/V stores into the paged pool and one query's causal attention (attention.h).
 *
 * Two passes over the context, block by block: scores q.k (kept in `scores`), then the softmax
 * weights applied to V, each over a block's rows at once (dot_rows / axpy_rows of the pool's
 * element type, F32 or F16). The context of one query is at most a few thousand positions, so the
 * scores fit in cache and a one-pass (online softmax) form would buy little here.
 */
#include "engine/cpu/attention.h"

#include <string.h>

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

void eng_cpu_attend(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                    int layer, int head, const float *q, int n_ctx, float scale, float *scores,
                    float *out)
{
    const int bs = kv->block_size, hd = kv->head_dim;
    float max = -3.0e38f;
    for (int p0 = 0; p0 < n_ctx; p0 += bs) {
        int n = n_ctx - p0 < bs ? n_ctx - p0 : bs;
        const char *krow = eng_cpu_kv_row(kv, block_table[p0 / bs], layer, 0, head, 0);
        if (kv->f16)
            k->dot_rows_f16(q, (const uint16_t *)krow, n, hd, scale, scores + p0);
        else
            k->dot_rows_f32(q, (const float *)krow, n, hd, scale, scores + p0);
        for (int i = 0; i < n; i++)
            max = scores[p0 + i] > max ? scores[p0 + i] : max;
    }
    float inv = 1.0f / k->exp_sum(scores, n_ctx, max);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int p0 = 0; p0 < n_ctx; p0 += bs) {
        int n = n_ctx - p0 < bs ? n_ctx - p0 : bs;
        const char *vrow = eng_cpu_kv_row(kv, block_table[p0 / bs], layer, 1, head, 0);
        if (kv->f16)
            k->axpy_rows_f16(scores + p0, (const uint16_t *)vrow, n, hd, out);
        else
            k->axpy_rows_f32(scores + p0, (const float *)vrow, n, hd, out);
    }
    for (int e = 0; e < hd; e++)
        out[e] *= inv;
}
