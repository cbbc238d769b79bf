/* gguf.h — read-only GGUF (v2, v3) files: header, typed metadata, tensor infos, tensor data views.
 *
 * A GGUF file is: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
 * key/value pairs (key: u64 length + bytes; value: u32 type + payload; arrays: u32 element type,
 * u64 count, elements), the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64
 * offset relative to the data section), padding to the alignment (metadata "general.alignment",
 * default 32), then the tensor data. Everything is little-endian. v2 has the same layout as v3
 * (v3 only added big-endian files, which we reject as an unsupported version); v1 is refused.
 *
 * Contract:
 * - eng_gguf_open() maps the file (mmap, read-only) and validates ALL of it before returning:
 *   every length, count and offset is checked against the file size (no count can make the
 *   reader allocate more than the file could describe), every tensor's type is one sluice
 *   computes with (model.h's eng_type_t), every tensor lies inside the file and is aligned.
 *   After a successful open no accessor can read out of bounds.
 * - Strings in the file are not NUL-terminated; they are returned as eng_gguf_str_t views into the
 *   mapping. Keys and tensor names are copied (NUL-terminated) because they are looked up.
 * - The handle is immutable after open except for its last-error string, which the typed getters
 *   write on a type mismatch; do not share one handle between threads that call getters which can
 *   fail, or give each thread its own error buffer by checking types first.
 * - Views (strings, arrays, tensor data) live as long as the handle.
 *
 * Errors: open returns a status (sched/status.h) and writes "FILE: what is wrong" into err, e.g.
 *   "model.gguf: tensor 'blk.3.attn_q.weight' extends past the end of the file (offset 1234,
 *   size 5678, file 4000)".
 */
#ifndef SLUICE_ENGINE_GGUF_H
#define SLUICE_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, numbered as the file numbers them. */
typedef enum eng_gguf_vtype {
    ENG_GGUF_U8 = 0,
    ENG_GGUF_I8 = 1,
    ENG_GGUF_U16 = 2,
    ENG_GGUF_I16 = 3,
    ENG_GGUF_U32 = 4,
    ENG_GGUF_I32 = 5,
    ENG_GGUF_F32 = 6,
    ENG_GGUF_BOOL = 7,
    ENG_GGUF_STRING = 8,
    ENG_GGUF_ARRAY = 9,
    ENG_GGUF_U64 = 10,
    ENG_GGUF_I64 = 11,
    ENG_GGUF_F64 = 12,
} eng_gguf_vtype_t;

/* A string view into the file: n bytes at p, not NUL-terminated. */
typedef struct eng_gguf_str {
    const char *p;
    uint64_t n;
} eng_gguf_str_t;

/* An array view: n elements of type elem at data (raw little-endian, possibly unaligned).
 * Strings and nested arrays are variable-sized: use eng_gguf_arr_strings / eng_gguf_arr_sub. */
typedef struct eng_gguf_arr {
    eng_gguf_vtype_t elem;
    uint64_t n;
    const uint8_t *data;
    size_t nbytes;      /* bytes of the elements (validated) */
} eng_gguf_arr_t;

typedef struct eng_gguf_tensor {
    const char *name;   /* NUL-terminated copy */
    int type;           /* eng_type_t (model.h); always one sluice supports */
    int n_dims;         /* 1..4 */
    int64_t ne[4];      /* ne[0] fastest; dims past n_dims are 1 */
    uint64_t offset;    /* from the start of the data section */
    const void *data;   /* inside the mapping */
    size_t nbytes;
} eng_gguf_tensor_t;

typedef struct eng_gguf eng_gguf_t;

/* Opens and validates a GGUF file (mmap). On success *out is the handle and SL_OK is returned.
 * On failure *out is NULL, err holds "PATH: problem", and the return is SL_EIO (unreadable),
 * SL_EFORMAT (malformed, truncated, out of bounds), SL_EUNSUPPORTED (version, tensor type) or
 * SL_ENOMEM. */
int eng_gguf_open(const char *path, eng_gguf_t **out, char *err, int errlen);
/* The same over bytes in memory (not copied: data must outlive the handle). name is used in
 * error messages ("<memory>" when NULL). Used by the fuzz target and tests. */
int eng_gguf_open_memory(const void *data, size_t size, const char *name, eng_gguf_t **out,
                         char *err, int errlen);
/* Unmaps and frees. NULL is a no-op. */
void eng_gguf_close(eng_gguf_t *g);
/* A hint that bytes [p, p + n) of the file will not be read for a while (a backend copied them):
 * a mapped file gives the whole pages among them back to the kernel, and a later read faults them
 * in from the file again; a handle over caller memory ignores it. Cannot fail. */
void eng_gguf_release(const eng_gguf_t *g, const void *p, size_t n);

/* The last error a getter reported on this handle ("" if none). Cannot fail. */
const char *eng_gguf_errmsg(const eng_gguf_t *g);
/* The name given at open (path, or the memory name). */
const char *eng_gguf_name(const eng_gguf_t *g);
uint32_t eng_gguf_version(const eng_gguf_t *g);
uint32_t eng_gguf_alignment(const eng_gguf_t *g);
size_t eng_gguf_data_offset(const eng_gguf_t *g); /* start of the tensor data section */

/* ---- metadata ---- */
int64_t eng_gguf_n_kv(const eng_gguf_t *g);
/* Key of entry i (0 <= i < n_kv), NULL out of range. */
const char *eng_gguf_kv_key(const eng_gguf_t *g, int64_t i);
/* Index of key, or -1 when absent. */
int64_t eng_gguf_find_key(const eng_gguf_t *g, const char *key);
/* Value type of entry i; -1 out of range. */
int eng_gguf_kv_type(const eng_gguf_t *g, int64_t i);

/* Typed getters by key. Each returns SL_OK and writes *out, SL_ENOTFOUND when the key is absent
 * (*out untouched, no error recorded), or SL_EFORMAT when the value has another type or does not
 * fit (*out untouched; eng_gguf_errmsg says "FILE: key 'k' is a string, expected an integer").
 * Integers: any integer type whose value fits. Floats: f32, f64 or any integer type.
 * Bool: bool only. */
int eng_gguf_get_i64(eng_gguf_t *g, const char *key, int64_t *out);
int eng_gguf_get_u64(eng_gguf_t *g, const char *key, uint64_t *out);
int eng_gguf_get_f64(eng_gguf_t *g, const char *key, double *out);
int eng_gguf_get_bool(eng_gguf_t *g, const char *key, int *out);
int eng_gguf_get_str(eng_gguf_t *g, const char *key, eng_gguf_str_t *out);
int eng_gguf_get_arr(eng_gguf_t *g, const char *key, eng_gguf_arr_t *out);

/* Element i of a numeric or bool array as a double (i < a->n, a->elem numeric); NaN otherwise.
 * Exact for every integer type up to 2^53. */
double eng_gguf_arr_num(const eng_gguf_arr_t *a, uint64_t i);
/* Fills out[0..a->n) with the string views of a string array. SL_EINVAL if a is not a string
 * array. Cannot otherwise fail (validated at open). O(n). */
int eng_gguf_arr_strings(const eng_gguf_arr_t *a, eng_gguf_str_t *out);
/* Element i of an array of arrays (linear scan). SL_EINVAL when a is not an array of arrays or
 * i is out of range. */
int eng_gguf_arr_sub(const eng_gguf_arr_t *a, uint64_t i, eng_gguf_arr_t *out);

/* ---- tensors ---- */
int64_t eng_gguf_n_tensors(const eng_gguf_t *g);
/* Tensor i, NULL out of range. */
const eng_gguf_tensor_t *eng_gguf_tensor_at(const eng_gguf_t *g, int64_t i);
/* Tensor by name, NULL when absent. */
const eng_gguf_tensor_t *eng_gguf_find_tensor(const eng_gguf_t *g, const char *name);

#endif
