/* cuda_plan.c — host-side arithmetic of the CUDA backend: buckets, splits, memory sizing and the
 * per-step plan. No CUDA calls here, so every function is unit-tested on a machine without a GPU
 * (tests/engine/test_cuda_plan.c). Contract in cuda_backend.h. */
#include "engine/cuda/cuda_backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sched/status.h"

int eng_cuda_graph_bucket(int n) {
    if (n < 1 || n > (1 << (ENG_CUDA_N_BUCKETS - 1)))
        return 0;
    int b = 1;
    while (b < n)
        b <<= 1;
    return b;
}

int eng_cuda_pow2_index(int n) {
    if (n < 1)
        return -1;
    int i = 0;
    while ((1 << i) < n)
        i++;
    return i;
}

int eng_cuda_attn_splits(int max_keys, int n_rows, int n_heads, int head_dim, int64_t cap_floats,
                         int *part, int *splits) {
    int64_t per_split = (int64_t)(n_rows > 0 ? n_rows : 1) * n_heads * (head_dim + 2);
    if (per_split > cap_floats)
        return SL_ENOMEM;
    if (max_keys < 1) {
        *part = ENG_CUDA_ATTN_PART;
        *splits = 1;
        return SL_OK;
    }
    int p = ENG_CUDA_ATTN_PART;
    int n = (max_keys + p - 1) / p;
    if ((int64_t)n * per_split > cap_floats) {
        n = (int)(cap_floats / per_split);
        p = (max_keys + n - 1) / n;
        n = (max_keys + p - 1) / p;
    }
    *part = p;
    *splits = n;
    return SL_OK;
}

/* ---- memory sizing ----------------------------------------------------------------------------- */

void eng_cuda_sizes(const eng_model_config_t *c, eng_cuda_sizes_t *o) {
    memset(o, 0, sizeof *o);
    int64_t dim = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, ffn = c->ffn_dim;
    int64_t qkv = (nh + 2 * nkv) * hd;
    int64_t per_layer = qkv * dim + nh * hd * dim + 2 * ffn * dim + ffn * dim;
    int64_t embd = (int64_t)c->vocab * dim;
    o->weight_bytes = 2 * (per_layer * c->n_layers + embd + (c->tied_output ? 0 : embd));
    o->norm_bytes = 4 * (2 * dim * c->n_layers + dim);
    int64_t T = ENG_CUDA_MAX_STEP_TOKENS;
    /* x fp32; xn, qkv, att, gu, h fp16 */
    o->act_bytes = T * (4 * dim + 2 * (dim + qkv + nh * hd + 2 * ffn + ffn));
    int64_t ctx = c->n_ctx_train > 0 ? c->n_ctx_train : 4096;
    int64_t splits = (ctx + ENG_CUDA_ATTN_PART - 1) / ENG_CUDA_ATTN_PART;
    int64_t decode = (int64_t)(1 << (ENG_CUDA_N_BUCKETS - 1)) * splits;
    o->partial_floats = (decode > T ? decode : T) * nh * (hd + 2);
    o->logits_bytes = (int64_t)ENG_CUDA_MAX_LOGIT_ROWS *
                      (8 * (int64_t)c->vocab + 8 + (int64_t)sizeof(eng_sample_row_t));
    o->meta_bytes = 4 * (int64_t)ENG_CUDA_META_CAP;
    o->cublas_ws_bytes = 32 << 20;
    o->total_bytes = o->weight_bytes + o->norm_bytes + o->act_bytes + 4 * o->partial_floats +
                     o->logits_bytes + o->meta_bytes + o->cublas_ws_bytes;
    o->kv_bytes_per_block_token = 2 * 2 * (int64_t)c->n_layers * nkv * hd;
}

int64_t eng_cuda_kv_budget(int64_t total, int64_t free_bytes, double utilization) {
    int64_t b = (int64_t)((double)total * utilization) - (total - free_bytes);
    return b > 0 ? b : 0;
}

#define GIB(x) ((double)(x) / (1024.0 * 1024.0 * 1024.0))

int eng_cuda_check_fit(const eng_cuda_sizes_t *s, int64_t free_bytes, int64_t total,
                       double utilization, const char *device_name, char *err, int errlen) {
    int64_t usable = eng_cuda_kv_budget(total, free_bytes, utilization);
    if (s->total_bytes <= usable)
        return SL_OK;
    snprintf(err, (size_t)errlen,
             "cuda: model needs %.2f GiB of device memory (weights %.2f GiB + workspace %.2f GiB), "
             "device %s has %.2f GiB free of %.2f GiB (gpu_memory_utilization %.2f)",
             GIB(s->total_bytes), GIB(s->weight_bytes), GIB(s->total_bytes - s->weight_bytes),
             device_name, GIB(free_bytes), GIB(total), utilization);
    return SL_ENOMEM;
}

/* ---- the step plan ------------------------------------------------------------------------------ */

static int plan_fail(char *err, int errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(err, (size_t)errlen, "cuda: ");
    if (n >= 0 && n < errlen)
        vsnprintf(err + n, (size_t)(errlen - n), fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

int eng_cuda_batch_is_decode(const eng_batch_t *b) {
    if (b->n_seqs < 1 || b->n_seqs > (1 << (ENG_CUDA_N_BUCKETS - 1)))
        return 0;
    for (int i = 0; i < b->n_seqs; i++)
        if (b->seqs[i].n_tokens != 1 || b->seqs[i].logits == 0)
            return 0;
    return 1;
}

int eng_cuda_flash_tile(int impl) {
    return impl == ENG_CUDA_PREFILL_FA2W ? ENG_CUDA_FLASH_TILE_WIDE : ENG_CUDA_FLASH_TILE;
}

static int seq_uses_flash(const eng_batch_seq_t *s, const eng_cuda_geom_t *g) {
    return g->flash_tile > 0 && s->n_tokens >= ENG_CUDA_FLASH_MIN_TOKENS;
}

int eng_cuda_plan_build(const eng_batch_t *b, const eng_cuda_geom_t *g, int pad_to, int32_t *meta,
                        int meta_cap, eng_cuda_plan_t *p, char *err, int errlen) {
    memset(p, 0, sizeof *p);
    if (b->n_seqs < 1 || !b->seqs)
        return plan_fail(err, errlen, "empty batch");
    if (pad_to > 0 && (!eng_cuda_batch_is_decode(b) || pad_to < b->n_seqs))
        return plan_fail(err, errlen, "padding to %d needs a decode batch of at most that many "
                                      "sequences", pad_to);
    if (b->n_copies < 0 || (b->n_copies > 0 && (!b->copy_src || !b->copy_dst)))
        return plan_fail(err, errlen, "bad copy list");
    /* pass 1: validate and count */
    int64_t T = 0, R = 0, NT = 0, L = 0, NB = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_batch_seq_t *s = &b->seqs[i];
        if (s->n_tokens < 1 || !s->tokens)
            return plan_fail(err, errlen, "sequence %d has no tokens", i);
        if (s->pos < 0)
            return plan_fail(err, errlen, "sequence %d: negative position %d", i, s->pos);
        if (s->logits < 0 || s->logits > 2)
            return plan_fail(err, errlen, "sequence %d: logits mode %d", i, s->logits);
        int64_t need = ((int64_t)s->pos + s->n_tokens + g->block_size - 1) / g->block_size;
        if (!s->block_table || s->n_blocks < need)
            return plan_fail(err, errlen,
                             "sequence %d: block table of %d blocks cannot hold %d positions", i,
                             s->n_blocks, s->pos + s->n_tokens);
        for (int j = 0; j < s->n_blocks; j++)
            if (s->block_table[j] < 0 || s->block_table[j] >= g->num_blocks)
                return plan_fail(err, errlen, "sequence %d: block %d outside the pool of %d", i,
                                 s->block_table[j], g->num_blocks);
        for (int j = 0; j < s->n_tokens; j++)
            if (s->tokens[j] < 0 || s->tokens[j] >= g->vocab)
                return plan_fail(err, errlen, "sequence %d: token id %d outside the vocabulary "
                                              "of %d", i, s->tokens[j], g->vocab);
        T += s->n_tokens;
        if (seq_uses_flash(s, g))
            NT += (s->n_tokens + g->flash_tile - 1) / g->flash_tile;
        else
            R += s->n_tokens;
        L += s->logits == 2 ? s->n_tokens : s->logits;
        NB += s->n_blocks;
    }
    for (int c = 0; c < b->n_copies; c++)
        if (b->copy_src[c] < 0 || b->copy_src[c] >= g->num_blocks || b->copy_dst[c] < 0 ||
            b->copy_dst[c] >= g->num_blocks)
            return plan_fail(err, errlen, "copy %d (%d -> %d) outside the pool of %d blocks", c,
                             b->copy_src[c], b->copy_dst[c], g->num_blocks);
    if (pad_to > 0)
        T = R = L = pad_to;
    if (T > g->max_tokens)
        return plan_fail(err, errlen, "a step of %lld tokens exceeds the workspace of %d",
                         (long long)T, g->max_tokens);
    int64_t total = 3 * T + 3 * R + 4 * NT + L + NB + 2 * (int64_t)b->n_copies;
    if (total > meta_cap)
        return plan_fail(err, errlen, "step plan of %lld entries exceeds %d (block tables too "
                                      "long?)", (long long)total, meta_cap);
    p->n_tokens = (int)T;
    p->n_rows = (int)R;
    p->n_tiles = (int)NT;
    p->n_out = (int)L;
    p->n_bt = (int)NB;
    p->n_copies = b->n_copies;
    p->n_real = b->n_seqs;
    p->off_tokens = 0;
    p->off_pos = p->off_tokens + p->n_tokens;
    p->off_slot = p->off_pos + p->n_tokens;
    p->off_row_tok = p->off_slot + p->n_tokens;
    p->off_row_bt = p->off_row_tok + p->n_rows;
    p->off_row_nk = p->off_row_bt + p->n_rows;
    p->off_tiles = p->off_row_nk + p->n_rows;
    p->off_out = p->off_tiles + 4 * p->n_tiles;
    p->off_bt = p->off_out + p->n_out;
    p->off_copies = p->off_bt + p->n_bt;
    p->n_ints = p->off_copies + 2 * p->n_copies;

    /* pass 2: fill */
    int t = 0, r = 0, tile = 0, o = 0, bt = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_batch_seq_t *s = &b->seqs[i];
        int bt0 = bt;
        memcpy(meta + p->off_bt + bt, s->block_table, (size_t)s->n_blocks * sizeof(int32_t));
        bt += s->n_blocks;
        int flash = seq_uses_flash(s, g);
        for (int j = 0; j < s->n_tokens; j++, t++) {
            int pos = s->pos + j;
            meta[p->off_tokens + t] = s->tokens[j];
            meta[p->off_pos + t] = pos;
            meta[p->off_slot + t] =
                s->block_table[pos / g->block_size] * g->block_size + pos % g->block_size;
            if (!flash) {
                meta[p->off_row_tok + r] = t;
                meta[p->off_row_bt + r] = bt0;
                meta[p->off_row_nk + r] = pos + 1;
                if (pos + 1 > p->max_keys)
                    p->max_keys = pos + 1;
                r++;
            } else if (j % g->flash_tile == 0) {
                int n = s->n_tokens - j < g->flash_tile ? s->n_tokens - j : g->flash_tile;
                int32_t *e = meta + p->off_tiles + 4 * tile++;
                e[0] = t;
                e[1] = n;
                e[2] = pos;
                e[3] = bt0;
            }
            if (s->logits == 2 || (s->logits == 1 && j == s->n_tokens - 1))
                meta[p->off_out + o++] = t;
        }
    }
    for (; t < p->n_tokens; t++, r++, o++) { /* padding of a decode bucket */
        meta[p->off_tokens + t] = 0;
        meta[p->off_pos + t] = 0;
        meta[p->off_slot + t] = -1;
        meta[p->off_row_tok + r] = t;
        meta[p->off_row_bt + r] = 0;
        meta[p->off_row_nk + r] = 0;
        meta[p->off_out + o] = t;
    }
    for (int c = 0; c < b->n_copies; c++) {
        meta[p->off_copies + 2 * c] = b->copy_src[c];
        meta[p->off_copies + 2 * c + 1] = b->copy_dst[c];
    }
    return SL_OK;
}
