/* gguf.c — GGUF reader: maps the file, validates every byte it will ever look at, then serves views.
 *
 * Design notes
 *  1. One pass validates: parse_header -> parse_kvs -> parse_tensor_infos -> place_tensors. Each
 *     reader call goes through a cursor that checks the bytes it takes against the end of the
 *     buffer, so a truncated or lying file fails at the first field that does not fit, with that
 *     field named in the message.
 *  2. Counts are checked against the bytes left before anything is allocated for them: every
 *     metadata entry takes at least 13 bytes, every tensor info at least 24, every string 8, so a
 *     count larger than (bytes left / minimum size) is rejected as a lie. Nested arrays are
 *     limited to MAX_DEPTH levels so a hostile file cannot exhaust the stack.
 *  3. Keys and tensor names are copied into one arena, NUL-terminated, and indexed by a small
 *     open-addressing hash table (duplicates are an error, as in ggml). Values stay in the file.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "sched/status.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define MAX_DEPTH 4
#define MIN_KV_BYTES 13     /* key length (8) + type (4) + a one-byte value */
#define MIN_TENSOR_BYTES 24 /* name length (8) + n_dims (4) + one dim (8) + type (4) ... */

typedef struct kv {
    const char *key;
    eng_gguf_vtype_t type;
    const uint8_t *val; /* the payload (for arrays: the first element) */
    eng_gguf_vtype_t elem;
    uint64_t n;         /* array element count */
    size_t nbytes;      /* payload bytes */
} kv_t;

/* Name -> index + 1 (0 = empty slot), capacity a power of two >= 2 * count. */
typedef struct name_index {
    uint32_t *slots;
    size_t mask;
} name_index_t;

struct eng_gguf {
    char *name;
    const uint8_t *base;
    size_t size;
    int mapped;
    uint32_t version;
    uint32_t alignment;
    size_t data_off;
    int64_t n_kv;
    kv_t *kv;
    int64_t n_tensors;
    eng_gguf_tensor_t *tensors;
    char *arena;
    name_index_t kv_index, tensor_index;
    char errmsg[256];
};

typedef struct cursor {
    const uint8_t *p;
    size_t pos, size;
    const char *name;
    char *err;
    int errlen;
} cursor_t;

/* ---------------------------------------------------------------- errors ---------------------- */

static int fail(cursor_t *c, int status, const char *fmt, ...)
{
    if (c->err && c->errlen > 0) {
        int k = snprintf(c->err, (size_t)c->errlen, "%s: ", c->name);
        if (k < 0 || k >= c->errlen) return status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, (size_t)(c->errlen - k), fmt, ap);
        va_end(ap);
    }
    return status;
}

/* ---------------------------------------------------------------- reading --------------------- */

static size_t left(const cursor_t *c) { return c->size - c->pos; }

static int take(cursor_t *c, size_t n, const void **out, const char *what)
{
    if (n > left(c))
        return fail(c, SL_EFORMAT, "truncated: %s needs %zu bytes at offset %zu, file has %zu", what,
                    n, c->pos, c->size);
    *out = c->p + c->pos;
    c->pos += n;
    return SL_OK;
}

static int rd_u32(cursor_t *c, uint32_t *v, const char *what)
{
    const void *p = NULL;
    int rc = take(c, 4, &p, what);
    if (rc == SL_OK) memcpy(v, p, 4);
    return rc;
}

static int rd_u64(cursor_t *c, uint64_t *v, const char *what)
{
    const void *p = NULL;
    int rc = take(c, 8, &p, what);
    if (rc == SL_OK) memcpy(v, p, 8);
    return rc;
}

static int rd_str(cursor_t *c, eng_gguf_str_t *s, const char *what)
{
    uint64_t n;
    int rc = rd_u64(c, &n, what);
    if (rc != SL_OK) return rc;
    if (n > left(c))
        return fail(c, SL_EFORMAT, "%s: string of %llu bytes at offset %zu runs past the end of the "
                    "file (%zu bytes)", what, (unsigned long long)n, c->pos, c->size);
    s->p = (const char *)c->p + c->pos;
    s->n = n;
    c->pos += (size_t)n;
    return SL_OK;
}

/* Bytes of one fixed-size value, 0 for strings, arrays and unknown types. */
static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case ENG_GGUF_U8: case ENG_GGUF_I8: case ENG_GGUF_BOOL: return 1;
    case ENG_GGUF_U16: case ENG_GGUF_I16: return 2;
    case ENG_GGUF_U32: case ENG_GGUF_I32: case ENG_GGUF_F32: return 4;
    case ENG_GGUF_U64: case ENG_GGUF_I64: case ENG_GGUF_F64: return 8;
    default: return 0;
    }
}

static const char *vtype_name(uint32_t t)
{
    static const char *const names[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Validates and skips one value of type t (an array's header included). For arrays *elem and *n
 * receive the element type and count. */
static int skip_value(cursor_t *c, uint32_t t, int depth, const char *key, uint32_t *elem,
                      uint64_t *n)
{
    size_t sz = vtype_size(t);
    const void *p;
    if (sz) return take(c, sz, &p, key);
    if (t == ENG_GGUF_STRING) {
        eng_gguf_str_t s;
        return rd_str(c, &s, key);
    }
    if (t != ENG_GGUF_ARRAY)
        return fail(c, SL_EFORMAT, "key '%s': unknown value type %u", key, t);
    if (depth >= MAX_DEPTH)
        return fail(c, SL_EFORMAT, "key '%s': arrays nested deeper than %d levels", key, MAX_DEPTH);
    uint32_t et;
    uint64_t count;
    int rc = rd_u32(c, &et, key);
    if (rc == SL_OK) rc = rd_u64(c, &count, key);
    if (rc != SL_OK) return rc;
    size_t esz = vtype_size(et);
    if (esz == 0 && et != ENG_GGUF_STRING && et != ENG_GGUF_ARRAY)
        return fail(c, SL_EFORMAT, "key '%s': array of unknown value type %u", key, et);
    size_t min = esz ? esz : et == ENG_GGUF_STRING ? 8 : 12;
    if (count > left(c) / min)
        return fail(c, SL_EFORMAT, "key '%s': array of %llu %s elements does not fit in the %zu "
                    "bytes left in the file", key, (unsigned long long)count, vtype_name(et), left(c));
    if (elem) *elem = et;
    if (n) *n = count;
    if (esz) return take(c, (size_t)count * esz, &p, key);
    for (uint64_t i = 0; i < count; i++) {
        rc = skip_value(c, et, depth + 1, key, NULL, NULL);
        if (rc != SL_OK) return rc;
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- name index ------------------ */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Builds the index over names[i] (stride bytes apart). SL_EFORMAT on a duplicate: *dup = its
 * index. */
static int index_build(name_index_t *ix, const void *items, size_t stride, int64_t n, int64_t *dup)
{
    size_t cap = 8;
    while (cap < (size_t)n * 2) cap *= 2;
    ix->slots = sl_calloc(cap, sizeof *ix->slots);
    if (!ix->slots) return SL_ENOMEM;
    ix->mask = cap - 1;
    for (int64_t i = 0; i < n; i++) {
        const char *name = *(const char *const *)((const char *)items + (size_t)i * stride);
        size_t h = (size_t)hash_name(name) & ix->mask;
        for (; ix->slots[h]; h = (h + 1) & ix->mask) {
            const char *o = *(const char *const *)((const char *)items +
                                                   (size_t)(ix->slots[h] - 1) * stride);
            if (strcmp(o, name) == 0) {
                *dup = i;
                return SL_EFORMAT;
            }
        }
        ix->slots[h] = (uint32_t)(i + 1);
    }
    return SL_OK;
}

static int64_t index_find(const name_index_t *ix, const void *items, size_t stride,
                          const char *name)
{
    if (!ix->slots) return -1;
    for (size_t h = (size_t)hash_name(name) & ix->mask; ix->slots[h]; h = (h + 1) & ix->mask) {
        int64_t i = ix->slots[h] - 1;
        if (strcmp(*(const char *const *)((const char *)items + (size_t)i * stride), name) == 0)
            return i;
    }
    return -1;
}

/* ---------------------------------------------------------------- parsing --------------------- */

/* Copies a view into the arena as a NUL-terminated string; views with an embedded NUL are
 * rejected because lookups are by C string. */
static int arena_put(cursor_t *c, char **arena, eng_gguf_str_t s, const char **out,
                     const char *what)
{
    if (memchr(s.p, 0, (size_t)s.n))
        return fail(c, SL_EFORMAT, "%s '%.*s' contains a NUL byte", what, (int)strnlen(s.p, 64),
                    s.p);
    memcpy(*arena, s.p, (size_t)s.n);
    (*arena)[s.n] = 0;
    *out = *arena;
    *arena += s.n + 1;
    return SL_OK;
}

static int parse(eng_gguf_t *g, cursor_t *c)
{
    const void *magic = NULL;
    int rc = take(c, 4, &magic, "magic");
    if (rc != SL_OK) return fail(c, SL_EFORMAT, "not a GGUF file (%zu bytes, too short for a header)",
                                 c->size);
    if (memcmp(magic, "GGUF", 4) != 0) {
        const uint8_t *m = magic;
        return fail(c, SL_EFORMAT, "not a GGUF file (magic %02x %02x %02x %02x, expected 'GGUF')",
                    m[0], m[1], m[2], m[3]);
    }
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u32(c, &g->version, "version")) != SL_OK) return rc;
    if (g->version != 2 && g->version != 3)
        return fail(c, SL_EUNSUPPORTED, "GGUF version %u is not supported (sluice reads versions 2 "
                    "and 3)", g->version);
    if ((rc = rd_u64(c, &n_tensors, "tensor count")) != SL_OK) return rc;
    if ((rc = rd_u64(c, &n_kv, "metadata count")) != SL_OK) return rc;
    if (n_kv > left(c) / MIN_KV_BYTES)
        return fail(c, SL_EFORMAT, "metadata count %llu does not fit in the %zu bytes of the file",
                    (unsigned long long)n_kv, c->size);
    g->n_kv = (int64_t)n_kv;
    g->kv = sl_calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    if (!g->kv) return SL_ENOMEM;

    /* Keys are parsed as views first; the arena is sized once all names are known. */
    eng_gguf_str_t *names = NULL;
    size_t arena_bytes = 0;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    eng_gguf_str_t *knames = sl_calloc(n_kv ? n_kv : 1, sizeof *knames);
    if (!knames) return SL_ENOMEM;
    for (uint64_t i = 0; i < n_kv; i++) {
        kv_t *kv = &g->kv[i];
        uint32_t t;
        char what[48];
        snprintf(what, sizeof what, "key of entry %llu", (unsigned long long)i);
        if ((rc = rd_str(c, &knames[i], what)) != SL_OK) goto out;
        char key[96];
        snprintf(key, sizeof key, "%.*s", (int)(knames[i].n < 80 ? knames[i].n : 80), knames[i].p);
        if ((rc = rd_u32(c, &t, key)) != SL_OK) goto out;
        kv->type = (eng_gguf_vtype_t)t;
        size_t start = c->pos;
        uint32_t elem = 0;
        uint64_t n = 0;
        if ((rc = skip_value(c, t, 0, key, &elem, &n)) != SL_OK) goto out;
        kv->elem = (eng_gguf_vtype_t)elem;
        kv->n = n;
        kv->val = c->p + start + (t == ENG_GGUF_ARRAY ? 12 : 0);
        kv->nbytes = c->pos - start - (t == ENG_GGUF_ARRAY ? 12 : 0);
        arena_bytes += (size_t)knames[i].n + 1;
        if (knames[i].n == 17 && memcmp(knames[i].p, "general.alignment", 17) == 0) {
            uint32_t a;
            if (t != ENG_GGUF_U32) {
                rc = fail(c, SL_EFORMAT, "general.alignment is a %s, expected u32", vtype_name(t));
                goto out;
            }
            memcpy(&a, kv->val, 4);
            if (a == 0 || (a & (a - 1)) != 0) {
                rc = fail(c, SL_EFORMAT, "general.alignment %u is not a power of two", a);
                goto out;
            }
            g->alignment = a;
        }
    }

    if (n_tensors > left(c) / MIN_TENSOR_BYTES) {
        rc = fail(c, SL_EFORMAT, "tensor count %llu does not fit in the %zu bytes of the file",
                  (unsigned long long)n_tensors, c->size);
        goto out;
    }
    g->n_tensors = (int64_t)n_tensors;
    g->tensors = sl_calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    names = sl_calloc(n_tensors ? n_tensors : 1, sizeof *names);
    if (!g->tensors || !names) {
        rc = SL_ENOMEM;
        goto out;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        eng_gguf_tensor_t *t = &g->tensors[i];
        char what[48];
        snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)i);
        if ((rc = rd_str(c, &names[i], what)) != SL_OK) goto out;
        char tn[96];
        snprintf(tn, sizeof tn, "tensor '%.*s'", (int)(names[i].n < 64 ? names[i].n : 64),
                 names[i].p);
        uint32_t nd, type;
        if ((rc = rd_u32(c, &nd, tn)) != SL_OK) goto out;
        if (nd < 1 || nd > 4) {
            rc = fail(c, SL_EFORMAT, "%s has %u dimensions (1 to 4 allowed)", tn, nd);
            goto out;
        }
        t->n_dims = (int)nd;
        int64_t nelem = 1;
        for (int d = 0; d < 4; d++) {
            uint64_t ne = 1;
            if (d < (int)nd && (rc = rd_u64(c, &ne, tn)) != SL_OK) goto out;
            if (ne == 0 || ne > (uint64_t)INT64_MAX / (uint64_t)nelem) {
                rc = fail(c, SL_EFORMAT, "%s: dimension %d (%llu) is zero or makes the element "
                          "count overflow", tn, d, (unsigned long long)ne);
                goto out;
            }
            t->ne[d] = (int64_t)ne;
            nelem *= (int64_t)ne;
        }
        if ((rc = rd_u32(c, &type, tn)) != SL_OK || (rc = rd_u64(c, &t->offset, tn)) != SL_OK)
            goto out;
        int be = eng_type_block_elems((int)type);
        if (be == 0) {
            rc = fail(c, SL_EUNSUPPORTED, "unsupported tensor type %u (%s) for '%.*s'", type,
                      eng_type_name((int)type), (int)names[i].n, names[i].p);
            goto out;
        }
        t->type = (int)type;
        size_t row = eng_type_row_bytes(t->type, t->ne[0]);
        if (row == 0) {
            rc = fail(c, SL_EFORMAT, "%s: rows of %lld elements are not a multiple of the %s block "
                      "(%d)", tn, (long long)t->ne[0], eng_type_name(t->type), be);
            goto out;
        }
        uint64_t rows = (uint64_t)(nelem / t->ne[0]);
        if (rows > SIZE_MAX / row) {
            rc = fail(c, SL_EFORMAT, "%s: size overflows", tn);
            goto out;
        }
        t->nbytes = row * (size_t)rows;
        if (t->offset % g->alignment != 0) {
            rc = fail(c, SL_EFORMAT, "%s: offset %llu is not a multiple of the alignment %u", tn,
                      (unsigned long long)t->offset, g->alignment);
            goto out;
        }
        arena_bytes += (size_t)names[i].n + 1;
    }

    /* The data section starts at the next multiple of the alignment. */
    size_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    g->data_off = c->pos + pad;
    for (uint64_t i = 0; i < n_tensors; i++) {
        eng_gguf_tensor_t *t = &g->tensors[i];
        size_t avail = g->data_off <= c->size ? c->size - g->data_off : 0;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            rc = fail(c, SL_EFORMAT, "tensor '%.*s' extends past the end of the file (offset "
                      "%llu, size %zu, file %zu)", (int)names[i].n, names[i].p,
                      (unsigned long long)(g->data_off + t->offset), t->nbytes, c->size);
            goto out;
        }
        t->data = c->p + g->data_off + t->offset;
    }

    /* Copy names, then index them. */
    char *a = g->arena = sl_malloc(arena_bytes ? arena_bytes : 1);
    if (!a) {
        rc = SL_ENOMEM;
        goto out;
    }
    for (uint64_t i = 0; i < n_kv; i++)
        if ((rc = arena_put(c, &a, knames[i], &g->kv[i].key, "key")) != SL_OK) goto out;
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((rc = arena_put(c, &a, names[i], &g->tensors[i].name, "tensor name")) != SL_OK)
            goto out;
    int64_t dup = 0;
    rc = index_build(&g->kv_index, g->kv, sizeof *g->kv, g->n_kv, &dup);
    if (rc == SL_EFORMAT) rc = fail(c, rc, "duplicate key '%s'", g->kv[dup].key);
    if (rc != SL_OK) goto out;
    rc = index_build(&g->tensor_index, g->tensors, sizeof *g->tensors, g->n_tensors, &dup);
    if (rc == SL_EFORMAT) rc = fail(c, rc, "duplicate tensor '%s'", g->tensors[dup].name);
out:
    sl_free(knames);
    sl_free(names);
    return rc;
}

/* ---------------------------------------------------------------- open / close ---------------- */

static int open_common(eng_gguf_t *g, char *err, int errlen, eng_gguf_t **out)
{
    cursor_t c = {g->base, 0, g->size, g->name, err, errlen};
    int rc = parse(g, &c);
    if (rc == SL_ENOMEM) fail(&c, rc, "out of memory while reading the header");
    if (rc != SL_OK) {
        eng_gguf_close(g);
        return rc;
    }
    *out = g;
    return SL_OK;
}

static eng_gguf_t *new_handle(const char *name)
{
    eng_gguf_t *g = sl_calloc(1, sizeof *g);
    if (g && !(g->name = sl_strdup(name))) {
        sl_free(g);
        g = NULL;
    }
    return g;
}

int eng_gguf_open_memory(const void *data, size_t size, const char *name, eng_gguf_t **out,
                         char *err, int errlen)
{
    *out = NULL;
    eng_gguf_t *g = new_handle(name ? name : "<memory>");
    if (!g) {
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s: out of memory", name ? name : "<memory>");
        return SL_ENOMEM;
    }
    g->base = data;
    g->size = size;
    return open_common(g, err, errlen, out);
}

int eng_gguf_open(const char *path, eng_gguf_t **out, char *err, int errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return SL_EIO;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        if (err && errlen > 0)
            snprintf(err, (size_t)errlen, "%s: not a GGUF file (%s)", path,
                     S_ISREG(st.st_mode) ? "empty" : "not a regular file");
        close(fd);
        return SL_EFORMAT;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s: cannot map: %s", path, strerror(map_errno));
        return SL_EIO;
    }
    eng_gguf_t *g = new_handle(path);
    if (!g) {
        munmap(map, (size_t)st.st_size);
        if (err && errlen > 0) snprintf(err, (size_t)errlen, "%s: out of memory", path);
        return SL_ENOMEM;
    }
    g->base = map;
    g->size = (size_t)st.st_size;
    g->mapped = 1;
    return open_common(g, err, errlen, out);
}

void eng_gguf_release(const eng_gguf_t *g, const void *p, size_t n)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), start = (uintptr_t)p;
    const uintptr_t lo = (start + page - 1) & ~(page - 1), hi = (start + n) & ~(page - 1);
    if (g->mapped && start >= (uintptr_t)g->base && start + n <= (uintptr_t)g->base + g->size && hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* private and read-only: nothing is lost */
}

void eng_gguf_close(eng_gguf_t *g)
{
    if (!g) return;
    if (g->mapped) munmap((void *)g->base, g->size);
    sl_free(g->kv_index.slots);
    sl_free(g->tensor_index.slots);
    sl_free(g->arena);
    sl_free(g->kv);
    sl_free(g->tensors);
    sl_free(g->name);
    sl_free(g);
}

/* ---------------------------------------------------------------- accessors ------------------- */

const char *eng_gguf_errmsg(const eng_gguf_t *g) { return g->errmsg; }
const char *eng_gguf_name(const eng_gguf_t *g) { return g->name; }
uint32_t eng_gguf_version(const eng_gguf_t *g) { return g->version; }
uint32_t eng_gguf_alignment(const eng_gguf_t *g) { return g->alignment; }
size_t eng_gguf_data_offset(const eng_gguf_t *g) { return g->data_off; }
int64_t eng_gguf_n_kv(const eng_gguf_t *g) { return g->n_kv; }
int64_t eng_gguf_n_tensors(const eng_gguf_t *g) { return g->n_tensors; }

const char *eng_gguf_kv_key(const eng_gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

int eng_gguf_kv_type(const eng_gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? (int)g->kv[i].type : -1;
}

int64_t eng_gguf_find_key(const eng_gguf_t *g, const char *key)
{
    return index_find(&g->kv_index, g->kv, sizeof *g->kv, key);
}

const eng_gguf_tensor_t *eng_gguf_tensor_at(const eng_gguf_t *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const eng_gguf_tensor_t *eng_gguf_find_tensor(const eng_gguf_t *g, const char *name)
{
    int64_t i = index_find(&g->tensor_index, g->tensors, sizeof *g->tensors, name);
    return i < 0 ? NULL : &g->tensors[i];
}

/* A numeric value read by scalar(): signed in i, unsigned in u, and always as a double in f. */
typedef struct scalar {
    enum { SCALAR_NONE, SCALAR_SIGNED, SCALAR_UNSIGNED, SCALAR_FLOAT } kind;
    int64_t i;
    uint64_t u;
    double f;
} scalar_t;

/* The scalar of type t at p; kind SCALAR_NONE when t is not a number (bool, string, array). */
static scalar_t scalar(uint32_t t, const uint8_t *p)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } v;
    scalar_t s = {SCALAR_NONE, 0, 0, 0};
    size_t sz = vtype_size(t);
    if (!sz || t == ENG_GGUF_BOOL) return s;
    memcpy(&v, p, sz);
    switch (t) {
    case ENG_GGUF_U8: s.u = v.u8; break;
    case ENG_GGUF_U16: s.u = v.u16; break;
    case ENG_GGUF_U32: s.u = v.u32; break;
    case ENG_GGUF_U64: s.u = v.u64; break;
    case ENG_GGUF_I8: s.i = v.i8; break;
    case ENG_GGUF_I16: s.i = v.i16; break;
    case ENG_GGUF_I32: s.i = v.i32; break;
    case ENG_GGUF_I64: s.i = v.i64; break;
    case ENG_GGUF_F32: s.kind = SCALAR_FLOAT, s.f = v.f32; return s;
    default: s.kind = SCALAR_FLOAT, s.f = v.f64; return s;
    }
    int is_unsigned = t == ENG_GGUF_U8 || t == ENG_GGUF_U16 || t == ENG_GGUF_U32 || t == ENG_GGUF_U64;
    s.kind = is_unsigned ? SCALAR_UNSIGNED : SCALAR_SIGNED;
    s.f = is_unsigned ? (double)s.u : (double)s.i;
    return s;
}

static const kv_t *lookup(eng_gguf_t *g, const char *key)
{
    int64_t i = eng_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

static int mismatch(eng_gguf_t *g, const kv_t *kv, const char *expected)
{
    snprintf(g->errmsg, sizeof g->errmsg, "%s: key '%s' has type %s, expected %s", g->name, kv->key,
             vtype_name(kv->type), expected);
    return SL_EFORMAT;
}

int eng_gguf_get_i64(eng_gguf_t *g, const char *key, int64_t *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    scalar_t v = scalar(kv->type, kv->val);
    if (v.kind == SCALAR_SIGNED) *out = v.i;
    else if (v.kind == SCALAR_UNSIGNED && v.u <= (uint64_t)INT64_MAX) *out = (int64_t)v.u;
    else return mismatch(g, kv, "an integer");
    return SL_OK;
}

int eng_gguf_get_u64(eng_gguf_t *g, const char *key, uint64_t *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    scalar_t v = scalar(kv->type, kv->val);
    if (v.kind == SCALAR_UNSIGNED) *out = v.u;
    else if (v.kind == SCALAR_SIGNED && v.i >= 0) *out = (uint64_t)v.i;
    else return mismatch(g, kv, "a non-negative integer");
    return SL_OK;
}

int eng_gguf_get_f64(eng_gguf_t *g, const char *key, double *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    scalar_t v = scalar(kv->type, kv->val);
    if (v.kind == SCALAR_NONE) return mismatch(g, kv, "a number");
    *out = v.f;
    return SL_OK;
}

int eng_gguf_get_bool(eng_gguf_t *g, const char *key, int *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    if (kv->type != ENG_GGUF_BOOL) return mismatch(g, kv, "a bool");
    *out = kv->val[0] != 0;
    return SL_OK;
}

int eng_gguf_get_str(eng_gguf_t *g, const char *key, eng_gguf_str_t *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    if (kv->type != ENG_GGUF_STRING) return mismatch(g, kv, "a string");
    uint64_t n;
    memcpy(&n, kv->val, 8);
    out->p = (const char *)kv->val + 8;
    out->n = n;
    return SL_OK;
}

int eng_gguf_get_arr(eng_gguf_t *g, const char *key, eng_gguf_arr_t *out)
{
    const kv_t *kv = lookup(g, key);
    if (!kv) return SL_ENOTFOUND;
    if (kv->type != ENG_GGUF_ARRAY) return mismatch(g, kv, "an array");
    out->elem = kv->elem;
    out->n = kv->n;
    out->data = kv->val;
    out->nbytes = kv->nbytes;
    return SL_OK;
}

double eng_gguf_arr_num(const eng_gguf_arr_t *a, uint64_t i)
{
    size_t sz = vtype_size(a->elem);
    if (!sz || i >= a->n) return NAN;
    if (a->elem == ENG_GGUF_BOOL) return a->data[i] != 0;
    return scalar(a->elem, a->data + i * sz).f;
}

int eng_gguf_arr_strings(const eng_gguf_arr_t *a, eng_gguf_str_t *out)
{
    if (a->elem != ENG_GGUF_STRING) return SL_EINVAL;
    const uint8_t *p = a->data;
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t n;
        memcpy(&n, p, 8);
        out[i].p = (const char *)p + 8;
        out[i].n = n;
        p += 8 + n;
    }
    return SL_OK;
}

/* Bytes of one already-validated value of type t starting at p. */
static size_t value_bytes(uint32_t t, const uint8_t *p)
{
    size_t sz = vtype_size(t);
    if (sz) return sz;
    uint64_t n;
    if (t == ENG_GGUF_STRING) {
        memcpy(&n, p, 8);
        return 8 + (size_t)n;
    }
    uint32_t et;
    memcpy(&et, p, 4);
    memcpy(&n, p + 4, 8);
    size_t total = 12, esz = vtype_size(et);
    if (esz) return total + (size_t)n * esz;
    for (uint64_t i = 0; i < n; i++) total += value_bytes(et, p + total);
    return total;
}

int eng_gguf_arr_sub(const eng_gguf_arr_t *a, uint64_t i, eng_gguf_arr_t *out)
{
    if (a->elem != ENG_GGUF_ARRAY || i >= a->n) return SL_EINVAL;
    const uint8_t *p = a->data;
    for (uint64_t k = 0; k < i; k++) p += value_bytes(ENG_GGUF_ARRAY, p);
    uint32_t et;
    memcpy(&et, p, 4);
    memcpy(&out->n, p + 4, 8);
    out->elem = (eng_gguf_vtype_t)et;
    out->data = p + 12;
    out->nbytes = value_bytes(ENG_GGUF_ARRAY, p) - 12;
    return SL_OK;
}
