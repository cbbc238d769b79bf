/* kv.h — internal to sched/: the paged KV block manager (reference counts, prefix cache, LRU).
 *
 * A pool of num_blocks blocks of block_size token slots. Every block is in exactly one of three
 * places:
 *   free      refcnt 0, holds nothing worth keeping             (free stack)
 *   used      refcnt > 0, in at least one sequence's block table
 *   cached    refcnt 0, holds a full registered block            (LRU list, evictable)
 * A *registered* block is full, its tokens are known, and it is indexed in an open-addressing table
 * by its chained hash h = H(parent hash, block tokens); a registered block is never written again.
 * kv_alloc() takes a free block first and evicts the least recently used cached block only when no
 * free block is left. Nothing here allocates after kv_init(), so no call but kv_init() can fail.
 */
#ifndef SLUICE_SCHED_KV_H
#define SLUICE_SCHED_KV_H

#include <stdbool.h>
#include <stdint.h>

/* Chain hash of the first block of a sequence's parent (there is none). */
#define KV_HASH_ROOT UINT64_C(0xcbf29ce484222325)

typedef struct sched_kv {
    int num_blocks, block_size;
    int32_t *refcnt;      /* (num_blocks) sequences holding the block */
    uint8_t *registered;  /* (num_blocks) 1: full, indexed in the prefix table */
    uint64_t *hash;       /* (num_blocks) chain hash of a registered block */
    uint64_t *parent;     /* (num_blocks) chain hash of its parent, checked on a hit */
    int32_t *tokens;      /* (num_blocks, block_size) tokens of registered blocks; NULL: no caching */
    int32_t *free_stack;  /* (num_blocks) free block ids; n_free on the stack */
    int n_free;
    int32_t *lru_prev, *lru_next; /* (num_blocks) cached blocks, head = least recently used */
    int lru_head, lru_tail, n_lru;
    int32_t *table;       /* (table_mask + 1) block ids by hash, -1 = empty; linear probing */
    uint32_t table_mask;
    int n_registered;
    int64_t evictions;
} sched_kv_t;

/* Sets up a pool with every block free. caching = false leaves the token store and the table out
 * (kv_register then never indexes). SL_OK or SL_ENOMEM (nothing left allocated). */
int kv_init(sched_kv_t *kv, int num_blocks, int block_size, bool caching);
void kv_destroy(sched_kv_t *kv);

/* Blocks kv_alloc() can still hand out: free + cached. Cannot fail. */
static inline int kv_available(const sched_kv_t *kv) { return kv->n_free + kv->n_lru; }

/* Takes a block with refcnt 1: a free one, else evicts the LRU head (unregistering it). -1 if
 * kv_available() is 0. */
int32_t kv_alloc(sched_kv_t *kv);
/* One more holder of block b (a cached block leaves the LRU). Cannot fail. */
void kv_ref(sched_kv_t *kv, int32_t b);
/* One holder fewer; at zero a registered block becomes the LRU's most recent, any other goes
 * back to the free stack. Cannot fail. */
void kv_unref(sched_kv_t *kv, int32_t b);

/* Chained hash of one full block: 64-bit FNV-1a over (parent, tokens) with a final avalanche. */
uint64_t kv_chain_hash(uint64_t parent, const int32_t *tokens, int n);
/* The registered block with this hash whose parent hash and tokens match exactly, or -1. */
int32_t kv_lookup(const sched_kv_t *kv, uint64_t hash, uint64_t parent, const int32_t *tokens);
/* Registers used block b (full, tokens known) under hash unless that content is already indexed
 * or caching is off; returns whether it did. Cannot fail. */
bool kv_register(sched_kv_t *kv, int32_t b, uint64_t hash, uint64_t parent, const int32_t *tokens);

/* Checks the free/used/cached partition and the hash index against refcnt (the block-table side
 * is checked by the caller); mark is num_blocks entries of scratch. SL_OK or SL_ESTATE with the
 * broken invariant in err. */
int kv_check(const sched_kv_t *kv, int32_t *mark, char *err, int errlen);

#endif
