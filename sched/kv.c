/* kv.c — the paged KV block manager: free stack, LRU of cached blocks, prefix hash index. */
#include "kv.h"

#include <stdio.h>
#include <string.h>

#include "status.h"

int kv_init(sched_kv_t *kv, int num_blocks, int block_size, bool caching)
{
    memset(kv, 0, sizeof *kv);
    kv->num_blocks = num_blocks;
    kv->block_size = block_size;
    kv->lru_head = kv->lru_tail = -1;
    size_t n = (size_t)num_blocks;
    kv->refcnt = sl_calloc(n, sizeof *kv->refcnt);
    kv->registered = sl_calloc(n, sizeof *kv->registered);
    kv->hash = sl_calloc(n, sizeof *kv->hash);
    kv->parent = sl_calloc(n, sizeof *kv->parent);
    kv->free_stack = sl_malloc(n * sizeof *kv->free_stack);
    kv->lru_prev = sl_malloc(n * sizeof *kv->lru_prev);
    kv->lru_next = sl_malloc(n * sizeof *kv->lru_next);
    if (!kv->refcnt || !kv->registered || !kv->hash || !kv->parent || !kv->free_stack || !kv->lru_prev ||
        !kv->lru_next)
        goto err;
    if (caching) {
        /* load factor <= 1/2 keeps linear probes short */
        uint32_t cap = 16;
        while (cap < 2u * (uint32_t)num_blocks)
            cap <<= 1;
        kv->table_mask = cap - 1;
        kv->table = sl_malloc(cap * sizeof *kv->table);
        kv->tokens = sl_malloc(n * (size_t)block_size * sizeof *kv->tokens);
        if (!kv->table || !kv->tokens)
            goto err;
        memset(kv->table, 0xff, cap * sizeof *kv->table);
    }
    /* stack top = block 0, so a fresh pool hands out 0, 1, 2, ... */
    for (int i = 0; i < num_blocks; i++)
        kv->free_stack[i] = num_blocks - 1 - i;
    kv->n_free = num_blocks;
    return SL_OK;
err:
    kv_destroy(kv);
    return SL_ENOMEM;
}

void kv_destroy(sched_kv_t *kv)
{
    sl_free(kv->refcnt);
    sl_free(kv->registered);
    sl_free(kv->hash);
    sl_free(kv->parent);
    sl_free(kv->free_stack);
    sl_free(kv->lru_prev);
    sl_free(kv->lru_next);
    sl_free(kv->table);
    sl_free(kv->tokens);
    memset(kv, 0, sizeof *kv);
}

/* ---- LRU list -------------------------------------------------------------------------------- */

static void lru_unlink(sched_kv_t *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], nx = kv->lru_next[b];
    if (p >= 0)
        kv->lru_next[p] = nx;
    else
        kv->lru_head = nx;
    if (nx >= 0)
        kv->lru_prev[nx] = p;
    else
        kv->lru_tail = p;
    kv->n_lru--;
}

static void lru_push_tail(sched_kv_t *kv, int32_t b)
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

/* ---- hash index -------------------------------------------------------------------------------- */

uint64_t kv_chain_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (int i = 0; i < 8; i++) {
        h ^= (parent >> (8 * i)) & 0xff;
        h *= UINT64_C(0x100000001b3);
    }
    for (int t = 0; t < n; t++) {
        uint32_t v = (uint32_t)tokens[t];
        for (int i = 0; i < 4; i++) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= UINT64_C(0x100000001b3);
        }
    }
    /* FNV-1a's low bits mix poorly; the table indexes by them, so avalanche (splitmix64 finaliser) */
    h ^= h >> 30;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h *= UINT64_C(0x94d049bb133111eb);
    h ^= h >> 31;
    return h;
}

static const int32_t *block_tokens(const sched_kv_t *kv, int32_t b)
{
    return kv->tokens + (size_t)b * (size_t)kv->block_size;
}

int32_t kv_lookup(const sched_kv_t *kv, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    if (!kv->table)
        return -1;
    for (uint32_t i = (uint32_t)hash & kv->table_mask;; i = (i + 1) & kv->table_mask) {
        int32_t b = kv->table[i];
        if (b < 0)
            return -1;
        if (kv->hash[b] == hash && kv->parent[b] == parent &&
            !memcmp(block_tokens(kv, b), tokens, (size_t)kv->block_size * sizeof *tokens))
            return b;
    }
}

bool kv_register(sched_kv_t *kv, int32_t b, uint64_t hash, uint64_t parent, const int32_t *tokens)
{
    if (!kv->table || kv->registered[b] || kv_lookup(kv, hash, parent, tokens) >= 0)
        return false;
    uint32_t i = (uint32_t)hash & kv->table_mask;
    while (kv->table[i] >= 0)
        i = (i + 1) & kv->table_mask;
    kv->table[i] = b;
    kv->registered[b] = 1;
    kv->hash[b] = hash;
    kv->parent[b] = parent;
    memcpy(kv->tokens + (size_t)b * (size_t)kv->block_size, tokens, (size_t)kv->block_size * sizeof *tokens);
    kv->n_registered++;
    return true;
}

/* Removes b from the index with backward-shift deletion (no tombstones, probes stay short). */
static void unregister(sched_kv_t *kv, int32_t b)
{
    uint32_t i = (uint32_t)kv->hash[b] & kv->table_mask;
    while (kv->table[i] != b)
        i = (i + 1) & kv->table_mask;
    for (uint32_t j = (i + 1) & kv->table_mask; kv->table[j] >= 0; j = (j + 1) & kv->table_mask) {
        uint32_t home = (uint32_t)kv->hash[kv->table[j]] & kv->table_mask;
        /* move j back into the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & kv->table_mask) >= ((j - i) & kv->table_mask)) {
            kv->table[i] = kv->table[j];
            i = j;
        }
    }
    kv->table[i] = -1;
    kv->registered[b] = 0;
    kv->n_registered--;
}

/* ---- allocation ------------------------------------------------------------------------------ */

int32_t kv_alloc(sched_kv_t *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->n_lru > 0) {
        b = kv->lru_head;
        lru_unlink(kv, b);
        unregister(kv, b);
        kv->evictions++;
    } else {
        return -1;
    }
    kv->refcnt[b] = 1;
    return b;
}

void kv_ref(sched_kv_t *kv, int32_t b)
{
    if (kv->refcnt[b]++ == 0)
        lru_unlink(kv, b); /* only registered blocks sit at refcnt 0 outside the free stack */
}

void kv_unref(sched_kv_t *kv, int32_t b)
{
    if (--kv->refcnt[b] > 0)
        return;
    if (kv->registered[b])
        lru_push_tail(kv, b);
    else
        kv->free_stack[kv->n_free++] = b;
}

/* ---- invariants ------------------------------------------------------------------------------- */

#define KV_FAIL(...)                              \
    do {                                          \
        if (err && errlen > 0)                    \
            snprintf(err, (size_t)errlen, __VA_ARGS__); \
        return SL_ESTATE;                         \
    } while (0)

int kv_check(const sched_kv_t *kv, int32_t *mark, char *err, int errlen)
{
    int n = kv->num_blocks, used = 0, in_lru = 0;
    memset(mark, 0, (size_t)n * sizeof *mark);
    for (int i = 0; i < kv->n_free; i++) {
        int32_t b = kv->free_stack[i];
        if (b < 0 || b >= n || mark[b]++ || kv->refcnt[b] != 0 || kv->registered[b])
            KV_FAIL("kv: free stack entry %d (block %d) is duplicated, used or registered", i, b);
    }
    for (int32_t b = kv->lru_head, prev = -1; b >= 0; prev = b, b = kv->lru_next[b]) {
        if (++in_lru > n || kv->lru_prev[b] != prev || mark[b]++)
            KV_FAIL("kv: LRU list broken at block %d", b);
        if (kv->refcnt[b] != 0 || !kv->registered[b])
            KV_FAIL("kv: cached block %d has refcnt %d / registered %d", b, kv->refcnt[b], kv->registered[b]);
    }
    if (in_lru != kv->n_lru)
        KV_FAIL("kv: LRU holds %d blocks, counter says %d", in_lru, kv->n_lru);
    for (int b = 0; b < n; b++) {
        if (kv->refcnt[b] < 0)
            KV_FAIL("kv: block %d refcnt %d", b, kv->refcnt[b]);
        used += kv->refcnt[b] > 0;
        if (kv->refcnt[b] == 0 && !mark[b])
            KV_FAIL("kv: block %d has refcnt 0 but is neither free nor cached", b);
    }
    if (used + kv->n_free + kv->n_lru != n)
        KV_FAIL("kv: used %d + free %d + cached %d != pool %d", used, kv->n_free, kv->n_lru, n);
    if (!kv->table) {
        if (kv->n_registered != 0)
            KV_FAIL("kv: %d registered blocks without a table", kv->n_registered);
        return SL_OK;
    }
    int indexed = 0;
    for (uint32_t i = 0; i <= kv->table_mask; i++) {
        int32_t b = kv->table[i];
        if (b < 0)
            continue;
        indexed++;
        if (!kv->registered[b])
            KV_FAIL("kv: table slot %u holds unregistered block %d", i, b);
        if (kv_lookup(kv, kv->hash[b], kv->parent[b], block_tokens(kv, b)) != b)
            KV_FAIL("kv: block %d not reachable from its hash", b);
    }
    if (indexed != kv->n_registered)
        KV_FAIL("kv: table holds %d blocks, %d registered", indexed, kv->n_registered);
    return SL_OK;
}
