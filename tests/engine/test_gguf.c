/* test_gguf.c — the GGUF reader and the model loader on files crafted here: every metadata type,
 * alignment, and each malformation giving its own error without a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "sched/status.h"

/* ---- a GGUF writer for tests ---- */

typedef struct gbuf {
    uint8_t *p;
    size_t n, cap;
} gbuf_t;

static void put(gbuf_t *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void u32(gbuf_t *b, uint32_t v) { put(b, &v, 4); }
static void u64(gbuf_t *b, uint64_t v) { put(b, &v, 8); }
static void str(gbuf_t *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void header(gbuf_t *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    put(b, "GGUF", 4);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void kv_u32(gbuf_t *b, const char *k, uint32_t v) { str(b, k); u32(b, ENG_GGUF_U32); u32(b, v); }
static void kv_f32(gbuf_t *b, const char *k, float v) { str(b, k); u32(b, ENG_GGUF_F32); put(b, &v, 4); }
static void kv_str(gbuf_t *b, const char *k, const char *v) { str(b, k); u32(b, ENG_GGUF_STRING); str(b, v); }
static void tensor_info(gbuf_t *b, const char *name, int n_dims, const int64_t *ne, uint32_t type, uint64_t off)
{
    str(b, name);
    u32(b, (uint32_t)n_dims);
    for (int i = 0; i < n_dims; i++) u64(b, (uint64_t)ne[i]);
    u32(b, type);
    u64(b, off);
}
static void pad(gbuf_t *b, size_t align)
{
    static const uint8_t zero[64];
    put(b, zero, (align - b->n % align) % align);
}

static int open_buf(gbuf_t *b, eng_gguf_t **g, char *err)
{
    return eng_gguf_open_memory(b->p, b->n, "t.gguf", g, err, 256);
}

/* A file with every metadata type, one F32 tensor of 2x3 and alignment 64. */
static void build_all_types(gbuf_t *b)
{
    header(b, 3, 1, 15);
    str(b, "u8"); u32(b, ENG_GGUF_U8); put(b, "\xfe", 1);
    str(b, "i8"); u32(b, ENG_GGUF_I8); put(b, "\xfe", 1);
    str(b, "u16"); u32(b, ENG_GGUF_U16); put(b, "\x34\x12", 2);
    str(b, "i16"); u32(b, ENG_GGUF_I16); put(b, "\xff\xff", 2);
    kv_u32(b, "u32", 4000000000u);
    str(b, "i32"); u32(b, ENG_GGUF_I32); { int32_t v = -7; put(b, &v, 4); }
    kv_f32(b, "f32", 1.5f);
    str(b, "bool"); u32(b, ENG_GGUF_BOOL); put(b, "\x01", 1);
    kv_str(b, "str", "héllo");
    str(b, "u64"); u32(b, ENG_GGUF_U64); u64(b, 1ull << 40);
    str(b, "i64"); u32(b, ENG_GGUF_I64); u64(b, (uint64_t)-5);
    str(b, "f64"); u32(b, ENG_GGUF_F64); { double v = 2.25; put(b, &v, 8); }
    str(b, "arr_i32"); u32(b, ENG_GGUF_ARRAY); u32(b, ENG_GGUF_I32); u64(b, 3);
    for (int32_t v = -1; v <= 1; v++) put(b, &v, 4);
    str(b, "arr_nested"); u32(b, ENG_GGUF_ARRAY); u32(b, ENG_GGUF_ARRAY); u64(b, 2);
    u32(b, ENG_GGUF_STRING); u64(b, 2); str(b, "ab"); str(b, "c");
    u32(b, ENG_GGUF_U8); u64(b, 3); put(b, "\x01\x02\x03", 3);
    kv_u32(b, "general.alignment", 64);
    int64_t ne[2] = {2, 3};
    tensor_info(b, "w", 2, ne, ENG_T_F32, 0);
    pad(b, 64);
    float data[6] = {1, 2, 3, 4, 5, 6};
    put(b, data, sizeof data);
}

static void test_gguf_reads_every_metadata_type(void **state)
{
    gbuf_t b = {0};
    build_all_types(&b);
    eng_gguf_t *g;
    char err[256] = "";
    assert_int_equal(open_buf(&b, &g, err), SL_OK);
    int64_t i;
    uint64_t u;
    double f;
    int bl;
    eng_gguf_str_t s;
    assert_int_equal(eng_gguf_get_u64(g, "u8", &u), SL_OK); assert_int_equal(u, 254);
    assert_int_equal(eng_gguf_get_i64(g, "i8", &i), SL_OK); assert_int_equal(i, -2);
    assert_int_equal(eng_gguf_get_u64(g, "u16", &u), SL_OK); assert_int_equal(u, 0x1234);
    assert_int_equal(eng_gguf_get_i64(g, "i16", &i), SL_OK); assert_int_equal(i, -1);
    assert_int_equal(eng_gguf_get_u64(g, "u32", &u), SL_OK); assert_int_equal(u, 4000000000u);
    assert_int_equal(eng_gguf_get_i64(g, "i32", &i), SL_OK); assert_int_equal(i, -7);
    assert_int_equal(eng_gguf_get_f64(g, "f32", &f), SL_OK); assert_true(f == 1.5);
    assert_int_equal(eng_gguf_get_bool(g, "bool", &bl), SL_OK); assert_int_equal(bl, 1);
    assert_int_equal(eng_gguf_get_str(g, "str", &s), SL_OK);
    assert_int_equal(s.n, 6); assert_memory_equal(s.p, "héllo", 6);
    assert_int_equal(eng_gguf_get_u64(g, "u64", &u), SL_OK); assert_int_equal(u, 1ull << 40);
    assert_int_equal(eng_gguf_get_i64(g, "i64", &i), SL_OK); assert_int_equal(i, -5);
    assert_int_equal(eng_gguf_get_f64(g, "f64", &f), SL_OK); assert_true(f == 2.25);
    eng_gguf_arr_t a, sub;
    assert_int_equal(eng_gguf_get_arr(g, "arr_i32", &a), SL_OK);
    assert_int_equal(a.n, 3);
    assert_true(eng_gguf_arr_num(&a, 0) == -1 && eng_gguf_arr_num(&a, 2) == 1);
    assert_int_equal(eng_gguf_get_arr(g, "arr_nested", &a), SL_OK);
    assert_int_equal(a.elem, ENG_GGUF_ARRAY);
    assert_int_equal(eng_gguf_arr_sub(&a, 1, &sub), SL_OK);
    assert_int_equal(sub.elem, ENG_GGUF_U8);
    assert_true(eng_gguf_arr_num(&sub, 2) == 3);
    assert_int_equal(eng_gguf_arr_sub(&a, 0, &sub), SL_OK);
    eng_gguf_str_t strs[2];
    assert_int_equal(eng_gguf_arr_strings(&sub, strs), SL_OK);
    assert_memory_equal(strs[0].p, "ab", 2);
    assert_memory_equal(strs[1].p, "c", 1);
    /* type mismatches name the key, negative values refuse unsigned getters */
    assert_int_equal(eng_gguf_get_i64(g, "str", &i), SL_EFORMAT);
    assert_string_equal(eng_gguf_errmsg(g), "t.gguf: key 'str' has type string, expected an integer");
    assert_int_equal(eng_gguf_get_u64(g, "i64", &u), SL_EFORMAT);
    assert_int_equal(eng_gguf_get_i64(g, "absent", &i), SL_ENOTFOUND);
    /* tensor placed after the 64-byte alignment */
    assert_int_equal(eng_gguf_alignment(g), 64);
    assert_int_equal(eng_gguf_data_offset(g) % 64, 0);
    const eng_gguf_tensor_t *t = eng_gguf_find_tensor(g, "w");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 2);
    assert_int_equal(t->ne[1], 3);
    assert_int_equal(t->nbytes, 24);
    assert_true(((const float *)t->data)[5] == 6.0f);
    assert_null(eng_gguf_find_tensor(g, "nope"));
    eng_gguf_close(g);
    free(b.p);
}

/* Opens b and expects status rc and an error containing want. */
static void expect_error(gbuf_t *b, int rc, const char *want)
{
    eng_gguf_t *g = (eng_gguf_t *)1;
    char err[256] = "";
    assert_int_equal(open_buf(b, &g, err), rc);
    assert_null(g);
    if (!strstr(err, want)) fail_msg("error '%s' does not contain '%s'", err, want);
    free(b->p);
}

static void test_gguf_rejects_bad_magic(void **state)
{
    gbuf_t b = {0};
    put(&b, "GGML", 4);
    u32(&b, 3); u64(&b, 0); u64(&b, 0);
    expect_error(&b, SL_EFORMAT, "t.gguf: not a GGUF file (magic 47 47 4d 4c, expected 'GGUF')");
}

static void test_gguf_rejects_versions_1_and_99(void **state)
{
    gbuf_t b = {0};
    header(&b, 1, 0, 0);
    expect_error(&b, SL_EUNSUPPORTED, "t.gguf: GGUF version 1 is not supported");
    b = (gbuf_t){0};
    header(&b, 99, 0, 0);
    expect_error(&b, SL_EUNSUPPORTED, "GGUF version 99 is not supported");
}

static void test_gguf_accepts_version_2(void **state)
{
    gbuf_t b = {0};
    header(&b, 2, 0, 1);
    kv_u32(&b, "k", 1);
    eng_gguf_t *g;
    char err[256];
    assert_int_equal(open_buf(&b, &g, err), SL_OK);
    assert_int_equal(eng_gguf_version(g), 2);
    eng_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_truncated_header(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 0, 0);
    b.n = 12; /* cut inside the tensor count */
    expect_error(&b, SL_EFORMAT, "t.gguf: truncated: tensor count needs 8 bytes at offset 8, file has 12");
}

static void test_gguf_rejects_string_past_eof(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 0, 1);
    u64(&b, 1000); /* key length */
    put(&b, "abcdefghijklm", 13);
    expect_error(&b, SL_EFORMAT, "string of 1000 bytes at offset 32 runs past the end of the file (45 bytes)");
}

static void test_gguf_rejects_huge_counts(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 0, UINT64_MAX / 2);
    expect_error(&b, SL_EFORMAT, "metadata count 9223372036854775807 does not fit");
    b = (gbuf_t){0};
    header(&b, 3, 0, 1);
    str(&b, "big"); u32(&b, ENG_GGUF_ARRAY); u32(&b, ENG_GGUF_U64); u64(&b, 1ull << 61);
    expect_error(&b, SL_EFORMAT, "key 'big': array of 2305843009213693952 u64 elements does not fit");
    b = (gbuf_t){0};
    header(&b, 3, 1ull << 60, 0);
    expect_error(&b, SL_EFORMAT, "tensor count 1152921504606846976 does not fit");
}

static void test_gguf_rejects_tensor_out_of_bounds(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 1, 0);
    int64_t ne[2] = {8, 8};
    tensor_info(&b, "blk.3.attn_q.weight", 2, ne, ENG_T_F32, 0);
    pad(&b, 32);
    put(&b, (float[8]){0}, 32); /* 256 bytes needed, 32 present */
    expect_error(&b, SL_EFORMAT, "t.gguf: tensor 'blk.3.attn_q.weight' extends past the end of the file "
                                 "(offset 96, size 256, file 128)");
}

static void test_gguf_rejects_truncated_tensor_data(void **state)
{
    gbuf_t b = {0};
    build_all_types(&b);
    b.n -= 4; /* the last float of 'w' */
    expect_error(&b, SL_EFORMAT, "tensor 'w' extends past the end of the file");
}

static void test_gguf_rejects_unknown_tensor_type(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 1, 0);
    int64_t ne[1] = {256};
    tensor_info(&b, "x", 1, ne, 11, 0);
    expect_error(&b, SL_EUNSUPPORTED, "t.gguf: unsupported tensor type 11 (q3_K) for 'x'");
}

static void test_gguf_rejects_dims_overflow_and_bad_blocks(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 1, 0);
    int64_t ne[3] = {1ll << 32, 1ll << 32, 4};
    tensor_info(&b, "x", 3, ne, ENG_T_F32, 0);
    expect_error(&b, SL_EFORMAT, "tensor 'x': dimension 1");
    b = (gbuf_t){0};
    header(&b, 3, 1, 0);
    int64_t ne2[1] = {33};
    tensor_info(&b, "q", 1, ne2, ENG_T_Q4_0, 0);
    expect_error(&b, SL_EFORMAT, "rows of 33 elements are not a multiple of the q4_0 block (32)");
}

static void test_gguf_rejects_misaligned_offset_and_bad_alignment(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 1, 0);
    int64_t ne[1] = {4};
    tensor_info(&b, "x", 1, ne, ENG_T_F32, 4);
    expect_error(&b, SL_EFORMAT, "tensor 'x': offset 4 is not a multiple of the alignment 32");
    b = (gbuf_t){0};
    header(&b, 3, 0, 1);
    kv_u32(&b, "general.alignment", 48);
    expect_error(&b, SL_EFORMAT, "general.alignment 48 is not a power of two");
}

static void test_gguf_rejects_duplicate_keys_and_deep_nesting(void **state)
{
    gbuf_t b = {0};
    header(&b, 3, 0, 2);
    kv_u32(&b, "k", 1);
    kv_u32(&b, "k", 2);
    expect_error(&b, SL_EFORMAT, "duplicate key 'k'");
    b = (gbuf_t){0};
    header(&b, 3, 0, 1);
    str(&b, "deep");
    u32(&b, ENG_GGUF_ARRAY);
    for (int i = 0; i < 6; i++) { u32(&b, ENG_GGUF_ARRAY); u64(&b, 1); }
    expect_error(&b, SL_EFORMAT, "key 'deep': arrays nested deeper than 4 levels");
}

static void test_gguf_open_reports_missing_file(void **state)
{
    eng_gguf_t *g;
    char err[256];
    assert_int_equal(eng_gguf_open("/nonexistent/m.gguf", &g, err, sizeof err), SL_EIO);
    assert_string_equal(err, "/nonexistent/m.gguf: cannot open: No such file or directory");
}

/* eng_gguf_release gives a mapped file's pages back and leaves the bytes readable (they fault in
 * from the file again); over caller memory it does nothing (madvise there would zero the pages). */
static void test_gguf_release_keeps_the_bytes_of_files_and_memory(void **state)
{
    enum { N = 5000 }; /* floats: several pages */
    gbuf_t b = {0};
    header(&b, 3, 1, 1);
    kv_str(&b, "general.architecture", "llama");
    tensor_info(&b, "w", 1, (int64_t[]){N}, ENG_T_F32, 0);
    pad(&b, 32);
    for (int i = 0; i < N; i++) {
        const float v = (float)i * 0.5f + 1.0f;
        put(&b, &v, sizeof v);
    }
    char path[] = "/tmp/sluice_release_XXXXXX.gguf", err[256];
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    void *mem = aligned_alloc(4096, (b.n + 4095) / 4096 * 4096);
    memcpy(mem, b.p, b.n);
    for (int file = 0; file < 2; file++) {
        eng_gguf_t *g;
        assert_int_equal(file ? eng_gguf_open(path, &g, err, sizeof err) : eng_gguf_open_memory(mem, b.n, "m", &g, err, sizeof err),
                         SL_OK);
        const eng_gguf_tensor_t *t = eng_gguf_find_tensor(g, "w");
        assert_non_null(t);
        const float first = ((const float *)t->data)[0];
        eng_gguf_release(g, t->data, t->nbytes);
        for (int i = 0; i < N; i++)
            if (((const float *)t->data)[i] != (float)i * 0.5f + 1.0f)
                fail_msg("%s: element %d reads %g after the release", file ? "file" : "memory", i,
                         ((const float *)t->data)[i]);
        assert_true(first == 1.0f);
        eng_gguf_close(g);
    }
    unlink(path);
    free(mem);
    free(b.p);
}

/* ---- the model loader on a crafted tiny llama ---- */

enum { DIM = 32, FFN = 64, VOCAB = 4 };

typedef struct tiny_opts {
    const char *drop;       /* tensor to leave out */
    const char *reshape;    /* tensor to give a wrong shape */
    const char *arch;
} tiny_opts_t;

static void add_tensor(gbuf_t *info, const tiny_opts_t *o, const char *name, int64_t n_in, int64_t n_out,
                       uint64_t *off)
{
    if (o->drop && strcmp(name, o->drop) == 0) return;
    int64_t ne[2] = {n_in, n_out};
    if (o->reshape && strcmp(name, o->reshape) == 0) ne[0] = n_in / 2;
    tensor_info(info, name, n_out ? 2 : 1, ne, ENG_T_F32, *off);
    *off += (uint64_t)(ne[0] * (n_out ? n_out : 1) * 4 + 31) / 32 * 32;
}

/* Writes a 1-layer llama (heads 2, kv heads 1, head dim 16) to a temp file; returns its path. */
static char *write_tiny(const tiny_opts_t *o)
{
    gbuf_t info = {0}, b = {0};
    uint64_t off = 0;
    int n = 0;
    struct { const char *name; int in, out; } ts[] = {
        {"token_embd.weight", DIM, VOCAB}, {"output_norm.weight", DIM, 0},
        {"blk.0.attn_norm.weight", DIM, 0}, {"blk.0.attn_q.weight", DIM, DIM},
        {"blk.0.attn_k.weight", DIM, 16}, {"blk.0.attn_v.weight", DIM, 16},
        {"blk.0.attn_output.weight", DIM, DIM}, {"blk.0.ffn_norm.weight", DIM, 0},
        {"blk.0.ffn_gate.weight", DIM, FFN}, {"blk.0.ffn_up.weight", DIM, FFN},
        {"blk.0.ffn_down.weight", FFN, DIM}};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        size_t before = info.n;
        add_tensor(&info, o, ts[i].name, ts[i].in, ts[i].out, &off);
        n += info.n != before;
    }
    header(&b, 3, (uint64_t)n, 10);
    kv_str(&b, "general.architecture", o->arch ? o->arch : "llama");
    kv_u32(&b, "llama.block_count", 1);
    kv_u32(&b, "llama.embedding_length", DIM);
    kv_u32(&b, "llama.attention.head_count", 2);
    kv_u32(&b, "llama.attention.head_count_kv", 1);
    kv_u32(&b, "llama.feed_forward_length", FFN);
    kv_u32(&b, "llama.context_length", 128);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    kv_str(&b, "tokenizer.ggml.model", "llama");
    str(&b, "tokenizer.ggml.tokens"); u32(&b, ENG_GGUF_ARRAY); u32(&b, ENG_GGUF_STRING); u64(&b, VOCAB);
    str(&b, "<unk>"); str(&b, "<s>"); str(&b, "</s>"); str(&b, "\xe2\x96\x81" "a");
    put(&b, info.p, info.n);
    pad(&b, 32);
    void *zeros = calloc(1, off);
    put(&b, zeros, off);
    free(zeros);
    free(info.p);
    char *path = strdup("/tmp/sluice_test_XXXXXX.gguf");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    free(b.p);
    return path;
}

static void load_expect(const tiny_opts_t *o, const char *want)
{
    char *path = write_tiny(o);
    char err[256] = "";
    eng_model_t *m = eng_model_load(path, err, sizeof err);
    unlink(path);
    if (!want) {
        assert_non_null(m);
        assert_int_equal(m->cfg.n_layers, 1);
        assert_int_equal(m->cfg.head_dim, 16);
        assert_int_equal(m->cfg.vocab, VOCAB);
        assert_true(m->cfg.rope_theta == 10000.0f);
        assert_true(m->cfg.norm_eps == 1e-6f);
        assert_int_equal(m->cfg.tied_output, 1);
        assert_ptr_equal(m->output.data, m->tok_embd.data);
        eng_model_free(m);
    } else {
        assert_null(m);
        if (!strstr(err, want) || !strstr(err, path)) fail_msg("error '%s' lacks '%s' or the path", err, want);
    }
    free(path);
}

static void test_model_loads_crafted_llama_with_tied_output(void **state)
{
    load_expect(&(tiny_opts_t){0}, NULL);
}

static void test_model_reports_missing_tensor(void **state)
{
    load_expect(&(tiny_opts_t){.drop = "blk.0.ffn_up.weight"}, ": tensor 'blk.0.ffn_up.weight' is missing");
}

static void test_model_reports_wrong_shape(void **state)
{
    load_expect(&(tiny_opts_t){.reshape = "blk.0.attn_k.weight"},
                ": tensor 'blk.0.attn_k.weight' has shape [16, 16, 1, 1], expected [32, 16, 1, 1]");
}

static void test_model_rejects_other_architectures(void **state)
{
    load_expect(&(tiny_opts_t){.arch = "gpt2"}, ": architecture 'gpt2' is not supported (sluice runs 'llama')");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_reads_every_metadata_type),
        cmocka_unit_test(test_gguf_rejects_bad_magic),
        cmocka_unit_test(test_gguf_rejects_versions_1_and_99),
        cmocka_unit_test(test_gguf_accepts_version_2),
        cmocka_unit_test(test_gguf_rejects_truncated_header),
        cmocka_unit_test(test_gguf_rejects_string_past_eof),
        cmocka_unit_test(test_gguf_rejects_huge_counts),
        cmocka_unit_test(test_gguf_rejects_tensor_out_of_bounds),
        cmocka_unit_test(test_gguf_rejects_truncated_tensor_data),
        cmocka_unit_test(test_gguf_rejects_unknown_tensor_type),
        cmocka_unit_test(test_gguf_rejects_dims_overflow_and_bad_blocks),
        cmocka_unit_test(test_gguf_rejects_misaligned_offset_and_bad_alignment),
        cmocka_unit_test(test_gguf_rejects_duplicate_keys_and_deep_nesting),
        cmocka_unit_test(test_gguf_open_reports_missing_file),
        cmocka_unit_test(test_gguf_release_keeps_the_bytes_of_files_and_memory),
        cmocka_unit_test(test_model_loads_crafted_llama_with_tied_output),
        cmocka_unit_test(test_model_reports_missing_tensor),
        cmocka_unit_test(test_model_reports_wrong_shape),
        cmocka_unit_test(test_model_rejects_other_architectures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
