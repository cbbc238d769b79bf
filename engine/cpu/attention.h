/* attention.h — the paged KV pool's layout and causal attention of one query over it.
 *
 * The pool is num_blocks blocks of block_size token slots. A block holds every layer's K and V
 * for its tokens, so a copy-on-write copy is one memcpy of block_bytes:
 *   block (n_layers, 2 [K, V], n_kv_heads, block_size, head_dim)   elements F32 or F16
 * A sequence's position p lives in block block_table[p / block_size], slot p % block_size.
 */
#ifndef SLUICE_ENGINE_CPU_ATTENTION_H
#define SLUICE_ENGINE_CPU_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cpu/kernels.h"

typedef struct eng_cpu_kv {
    void *data;         /* (num_blocks, n_layers, 2, n_kv_heads, block_size, head_dim) */
    int num_blocks;
    int block_size;
    int n_layers, n_kv_heads, head_dim;
    int f16;            /* 1: elements are F16, 0: F32 */
    size_t block_bytes;
} eng_cpu_kv_t;

/* Address of the K (kv = 0) or V (kv = 1) row of one position slot. Cannot fail. */
static inline void *eng_cpu_kv_row(const eng_cpu_kv_t *kv, int block, int layer, int which, int head,
                                   int slot)
{
    size_t idx = ((((size_t)block * kv->n_layers + layer) * 2 + which) * kv->n_kv_heads + head) *
                     kv->block_size + slot;
    return (char *)kv->data + idx * kv->head_dim * (kv->f16 ? 2 : 4);
}

/* Stores elements [e0, e1) of one token's K (which = 0) or V (which = 1) row (n_kv_heads *
 * head_dim floats) at position pos of a sequence with this block table, so the thread that
 * computed some rows of the K or V projection stores just those. Cannot fail (the caller
 * validated the table). */
void eng_cpu_kv_store(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                      int layer, int pos, int which, const float *row, int e0, int e1);

#define ENG_CPU_ATTEND_MAX_Q 8     /* query tokens one eng_cpu_attend call takes */
#define ENG_CPU_ATTEND_MAX_HEADS 8 /* query heads of one kv head it takes */
#define ENG_CPU_ATTEND_WIDEN 4096  /* floats of its scratch that F16 rows are widened into */

/* Causal attention of nq (1..ENG_CPU_ATTEND_MAX_Q) consecutive query tokens of a sequence, nh
 * (1..ENG_CPU_ATTEND_MAX_HEADS) query heads each (heads that share kv head `head` of `layer`, grouped-query attention), over
 * that kv head: head j of token i (q + i q_stride + j head_dim) attends positions [0, n_ctx + i),
 * and its output (out + i out_stride + j head_dim, head_dim floats) = softmax(q . K * scale) . V.
 * All nq x nh queries go through the context together, block by block, so each K or V block is
 * read from memory once for all of them: a row is loaded (and an F16 one widened) once for the
 * heads, by the row kernels, and for two tokens or more an F16 block is widened once into
 * scratch for all of them. scores is scratch of nq nh (n_ctx + nq - 1) + ENG_CPU_ATTEND_WIDEN floats. Every query's
 * output is bitwise what it gets alone. Cannot fail. */
void eng_cpu_attend(const eng_cpu_kernels_t *k, const eng_cpu_kv_t *kv, const int32_t *block_table,
                    int layer, int head, const float *q, size_t q_stride, int nq, int nh, int n_ctx,
                    float scale, float *scores, float *out, size_t out_stride);

#endif
