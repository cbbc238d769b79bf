/* attention.h — the paged KV pool's layout and causal attention of one query over it.
 *
 * The pool is num_blocks blocks of block_size token slots. A block holds every layer's K and V
 * for its tokens, so a copy-on-write copy is one memcpy of block_bytes. Within a block, one run
 * per (layer, K or V, kv head), in that order, each run_bytes long:
 *   F32, F16  block_size rows of head_dim elements
 *   I8        block_size rows of head_dim int8 values, padded to 4 bytes, then the rows' block_size
 *             float scales: element e of row s is scale[s] * q[s][e] (one scale per token and kv
 *             head, the row's largest magnitude over 127)
 * A sequence's position p lives in block block_table[p / block_size], slot p % block_size.
 */
#ifndef SLUICE_ENGINE_CPU_ATTENTION_H
#define SLUICE_ENGINE_CPU_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"

typedef struct eng_cpu_kv {
    void *data;         /* num_blocks blocks of block_bytes */
    int num_blocks;
    int block_size;
    int n_layers, n_kv_heads, head_dim;
    eng_kv_dtype_t type;
    size_t run_bytes;   /* one (layer, K|V, kv head) run of a block */
    size_t block_bytes;
} eng_cpu_kv_t;

/* A pool description (data NULL) of num_blocks blocks of block_size slots, its sizes computed.
 * Cannot fail. */
eng_cpu_kv_t eng_cpu_kv_layout(int n_layers, int n_kv_heads, int head_dim, eng_kv_dtype_t type, int num_blocks,
                               int block_size);

static inline size_t eng_cpu_kv_run_offset(const eng_cpu_kv_t *kv, int block, int layer, int which, int head)
{
    return (size_t)block * kv->block_bytes + (((size_t)layer * 2 + which) * kv->n_kv_heads + head) * kv->run_bytes;
}

/* Address of the K (which = 0) or V (which = 1) row of one position slot. Cannot fail. */
static inline void *eng_cpu_kv_row(const eng_cpu_kv_t *kv, int block, int layer, int which, int head, int slot)
{
    const size_t elem = kv->type == ENG_KV_F32 ? 4 : kv->type == ENG_KV_F16 ? 2 : 1;
    return (char *)kv->data + eng_cpu_kv_run_offset(kv, block, layer, which, head) +
           (size_t)slot * kv->head_dim * elem;
}

/* I8 pools: the scales of a run's rows (slot 0 first). Cannot fail. */
static inline float *eng_cpu_kv_scales(const eng_cpu_kv_t *kv, int block, int layer, int which, int head)
{
    return (float *)((char *)kv->data + eng_cpu_kv_run_offset(kv, block, layer, which, head) +
                     ((size_t)kv->block_size * kv->head_dim + 3) / 4 * 4);
}

/* Stores elements [e0, e1) of one token's K (which = 0) or V (which = 1) row (n_kv_heads *
 * head_dim floats) at position pos of a sequence with this block table, so the thread that
 * computed some rows of the K or V projection stores just those; in an I8 pool e0 and e1 must be
 * multiples of head_dim (a row's scale is its largest magnitude). Cannot fail (the caller
 * validated the table). */
void eng_cpu_kv_store(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                      int layer, int pos, int which, const float *row, int e0, int e1);

#define ENG_CPU_ATTEND_MAX_Q 8     /* query tokens one eng_cpu_attend call takes */
#define ENG_CPU_ATTEND_MAX_HEADS 8 /* query heads of one kv head it takes */
#define ENG_CPU_ATTEND_WIDEN 4096  /* floats of its scratch that F16 and I8 rows are widened into */
/* floats of eng_cpu_attend's scratch for nq queries of nh heads over span positions: the scores,
 * the widened rows, an I8 pool's row scales */
#define ENG_CPU_ATTEND_SCRATCH(nq, nh, span) \
    ((size_t)(nq) * (nh) * (size_t)(span) + ENG_CPU_ATTEND_WIDEN + (size_t)(span))

/* Causal attention of nq (1..ENG_CPU_ATTEND_MAX_Q) consecutive query tokens of a sequence, nh
 * (1..ENG_CPU_ATTEND_MAX_HEADS) query heads each (heads that share kv head `head` of `layer`, grouped-query attention), over
 * that kv head: head j of token i (q + i q_stride + j head_dim) attends positions [0, n_ctx + i),
 * and its output (out + i out_stride + j head_dim, head_dim floats) = softmax(q . K * scale) . V.
 * All nq x nh queries go through the context together, block by block, so each K or V block is
 * read from memory once for all of them: a row is loaded (and an F16 or I8 one widened) once for
 * the heads, by the row kernels, and for two tokens or more an F16 or I8 block is widened once
 * into scratch for all of them. I8 rows are widened exactly (the integers) and their scales
 * applied to the scores and to the softmax weights, so both ways give the same bits. scores is
 * scratch of ENG_CPU_ATTEND_SCRATCH(nq, nh, n_ctx + nq - 1) floats. Every query's output is
 * bitwise what it gets alone. Cannot fail. */
void eng_cpu_attend(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                    int layer, int head, const float *q, size_t q_stride, int nq, int nh, int n_ctx,
                    float scale, float *scores, float *out, size_t out_stride);

#endif
