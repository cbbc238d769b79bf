/* test_cpu_kernels.c — every CPU kernel, on every instruction set this machine runs, against a
 * plain scalar reference: weights dequantised by quant.h, a float dot. Random inputs, odd sizes.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/uniform.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    return test_uniform(&rng);
}

static void fill(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++)
        x[i] = frand() * scale;
}

/* Random bytes in blocks of a type sluice does not write, with n_lead finite f16 scales (d, then m
 * or dmin) at the head of each block. */
static void random_blocks(uint8_t *row, int type, int k, int n_lead, float scale)
{
    const size_t bsz = eng_type_block_bytes(type);
    for (int s = 0; s < k / eng_type_block_elems(type); s++) {
        uint8_t *blk = row + bsz * s;
        for (size_t i = 0; i < bsz; i++)
            blk[i] = (uint8_t)(frand() * 128 + 128);
        for (int h = 0; h < n_lead; h++) {
            const uint16_t v = eng_f32_to_f16(scale + scale * frand());
            memcpy(blk + 2 * h, &v, 2);
        }
    }
}

/* n_rows rows of k elements of type, from random floats (Q6_K, Q5_0, Q5_1, Q4_K, Q5_K: random bytes,
 * finite scales). */
static uint8_t *make_weights(int type, int n_rows, int k)
{
    size_t rb = eng_type_row_bytes(type, k);
    uint8_t *w = malloc(rb * n_rows);
    float *row = malloc(sizeof(float) * k);
    for (int r = 0; r < n_rows; r++) {
        if (type == ENG_T_Q6_K) {
            eng_block_q6_K *b = (eng_block_q6_K *)(w + rb * r);
            for (int s = 0; s < k / ENG_QK_K; s++) {
                for (size_t i = 0; i < sizeof b[s]; i++)
                    ((uint8_t *)&b[s])[i] = (uint8_t)(frand() * 128 + 128);
                b[s].d = eng_f32_to_f16(0.01f + 0.01f * frand());
            }
        } else if (type == ENG_T_Q5_0 || type == ENG_T_Q5_1) {
            random_blocks(w + rb * r, type, k, type == ENG_T_Q5_1 ? 2 : 1, 0.01f);
        } else if (type == ENG_T_Q4_K || type == ENG_T_Q5_K) {
            random_blocks(w + rb * r, type, k, 2, 0.001f);
        } else {
            fill(row, k, 1.0f);
            assert_int_equal(eng_quantize_row(type, row, w + rb * r, k), 0);
        }
    }
    free(row);
    return w;
}

static const int all_types[] = {ENG_T_F32, ENG_T_F16, ENG_T_BF16, ENG_T_Q8_0,
                                ENG_T_Q4_0, ENG_T_Q4_1, ENG_T_Q6_K, ENG_T_Q4_K, ENG_T_Q5_0,
                                ENG_T_Q5_K, ENG_T_Q5_1};

/* One product of every type on every instruction set against the reference; rows, tokens and
 * (for float types) k odd so every tile remainder runs. */
static void check_gemm(int type, int n_rows, int n_tok, int k, int accumulate)
{
    uint8_t *w = make_weights(type, n_rows, k);
    size_t rb = eng_type_row_bytes(type, k);
    float *x = malloc(sizeof(float) * n_tok * k), *xr = malloc(sizeof(float) * n_tok * k);
    const size_t qrow = eng_cpu_q8_row_bytes(k);
    char *xq = malloc(qrow * n_tok);
    float *wr = malloc(sizeof(float) * k);
    float *ref = malloc(sizeof(float) * n_tok * n_rows), *out = malloc(sizeof(float) * n_tok * n_rows);
    float *mag = malloc(sizeof(float) * n_tok * n_rows);
    fill(x, n_tok * k, 2.0f);
    int quant = eng_cpu_type_quantized(type);
    /* the reference reads the activations the kernel reads: the q8 blocks, dequantised */
    if (quant) {
        for (int t = 0; t < n_tok; t++) {
            const char *row = xq + qrow * t;
            eng_cpu_kernels_scalar.quantize_q8(x + t * k, xq + qrow * t, k);
            for (int i = 0; i < k; i++)
                xr[t * k + i] = eng_cpu_q8_d(row, k)[i / 32] * ((const int8_t *)row)[i];
        }
    } else {
        memcpy(xr, x, sizeof(float) * n_tok * k);
    }
    for (int r = 0; r < n_rows; r++) {
        assert_int_equal(eng_dequantize_row(type, w + rb * r, wr, k), 0);
        for (int t = 0; t < n_tok; t++) {
            double s = 0, a = 0;
            for (int i = 0; i < k; i++) {
                s += (double)wr[i] * xr[t * k + i];
                a += fabs((double)wr[i] * xr[t * k + i]);
            }
            ref[t * n_rows + r] = (float)s + (accumulate ? 1.0f : 0.0f);
            mag[t * n_rows + r] = (float)a;
        }
    }
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        if (!kt)
            continue;
        for (int t = 0; quant && t < n_tok; t++)
            kt->quantize_q8(x + t * k, xq + qrow * t, k);
        eng_cpu_gemm_t g = {
            .type = type, .w = w, .w_stride = rb, .x = quant ? (const void *)xq : (const void *)x,
            .x_stride = quant ? qrow : sizeof(float) * k,
            .n_tok = n_tok, .k = k, .out = out, .ldo = n_rows, .accumulate = accumulate,
        };
        for (int i = 0; i < n_tok * n_rows; i++)
            out[i] = 1.0f;
        /* two calls over a split of the rows, as the backend's threads make them */
        kt->gemm(&g, 0, n_rows / 3);
        kt->gemm(&g, n_rows / 3, n_rows);
        for (int i = 0; i < n_tok * n_rows; i++) {
            float tol = 1e-5f * mag[i] + 1e-5f;
            if (fabsf(out[i] - ref[i]) > tol)
                fail_msg("%s %s rows %d tok %d k %d: out[%d] = %g, reference %g", kt->name,
                         eng_type_name(type), n_rows, n_tok, k, i, out[i], ref[i]);
        }
    }
    free(w); free(x); free(xr); free(xq); free(wr); free(ref); free(out); free(mag);
}

static void test_gemm_matches_dequantised_reference_for_every_type(void **state)
{
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
        int type = all_types[i], block = eng_type_block_elems(type);
        int k = block == 1 ? 77 : block == 32 ? 608 : 512; /* 19 blocks */
        check_gemm(type, 13, 5, k, 0);  /* a tile of 4 tokens and one left; a group of 8 rows and 5 */
        check_gemm(type, 9, 1, k, 1);   /* decode: one token */
        check_gemm(type, 1, 3, block == 1 ? 8 : block == 32 ? 64 : k, 0);
        check_gemm(type, 37, 2, block == 1 ? 1 : block == 32 ? 2048 : 1024, 0); /* several row groups */
        if (block == 32) { /* rows longer than one unpacked slice of 64 blocks */
            check_gemm(type, 11, 6, 32 * 67, 1);
            check_gemm(type, 11, 1, 32 * 67, 0);
        }
    }
}

/* A token's outputs are bitwise the same whatever else is in the step: speculative decoding keeps a
 * draft only when the sampler draws it from a row computed in a step of 1 + drafts tokens, which
 * must equal the row plain decoding computes alone. Every type, every ISA, steps of 1..21 tokens
 * (direct from the blocks up to 3, unpacked slices and their remainders past that, AMX tiles of 16
 * tokens and their remainders). */
/* Float rows of 4099 elements are widened to F32 in blocks of 4 rows for steps of 4 tokens or
 * more (kernels_x86.h, gemm_widened); 8200 elements are too many for a block of 4. */
/* Rows of 32-element blocks are 67 blocks long (two slices of the unpacked 16-row path, the second
 * of 3 blocks), 18 (one slice, SmolLM2's 576) and 2 (a slice shorter than the AMX tiles' pipeline
 * of 3 blocks); 37 rows make two 16-row groups and a short one. */
static void test_gemm_rows_do_not_depend_on_the_step_size(void **state)
{
    enum { ROWS = 37, NT = 21 };
    const int float_ks[] = {77, 4099, 8200}, q32_ks[] = {32 * 67, 32 * 18, 32 * 2};
    for (size_t c = 0; c < sizeof all_types / sizeof all_types[0] * 3; c++) {
        const int type = all_types[c / 3], block = eng_type_block_elems(type);
        if (block != 1 && block != 32 && c % 3 > 0)
            continue;
        const int k = block == 1 ? float_ks[c % 3] : block == 32 ? q32_ks[c % 3] : 512;
        uint8_t *w = make_weights(type, ROWS, k);
        const bool quant = eng_cpu_type_quantized(type);
        const size_t xs = quant ? eng_cpu_q8_row_bytes(k) : sizeof(float) * (size_t)k;
        float *x = malloc(sizeof(float) * NT * k), *alone = malloc(sizeof(float) * NT * ROWS),
              *together = malloc(sizeof(float) * NT * ROWS);
        char *xb = malloc(xs * NT);
        fill(x, NT * k, 2.0f);
        for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
            const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
            if (!kt)
                continue;
            for (int t = 0; t < NT; t++) {
                if (quant)
                    kt->quantize_q8(x + (size_t)t * k, xb + xs * t, k);
                else
                    memcpy(xb + xs * t, x + (size_t)t * k, xs);
            }
            eng_cpu_gemm_t g = {.type = type, .w = w, .w_stride = eng_type_row_bytes(type, k), .x_stride = xs,
                                .k = k, .ldo = ROWS, .n_tok = 1};
            for (int t = 0; t < NT; t++) {
                g.x = xb + xs * t, g.out = alone + (size_t)t * ROWS;
                kt->gemm(&g, 0, ROWS);
            }
            for (int n = 2; n <= NT; n++) {
                g.x = xb, g.out = together, g.n_tok = n;
                kt->gemm(&g, 0, ROWS);
                if (memcmp(alone, together, sizeof(float) * (size_t)n * ROWS))
                    print_error("%s on %s: a step of %d tokens differs from one token at a time\n",
                                eng_type_name(type), kt->name, n);
                assert_memory_equal(alone, together, sizeof(float) * (size_t)n * ROWS);
            }
        }
        free(w); free(x); free(alone); free(together); free(xb);
    }
}

/* Packed weights (kernels.h, eng_cpu_pack16) give bitwise the file layout's outputs, on every
 * instruction set that reads them, for steps of 1..21 tokens (direct from the packed blocks up to 3,
 * unpacked slices, AMX tiles), rows split over calls at 16-row boundaries, adding to out or not. */
static void test_packed_weights_give_the_file_layouts_outputs(void **state)
{
    enum { ROWS = 48, NT = 21 };
    const int types[] = {ENG_T_Q4_0, ENG_T_Q4_1, ENG_T_Q8_0}, ks[] = {32 * 67, 32 * 18, 32 * 2};
    assert_false(eng_cpu_packable(ENG_T_Q4_1, 37));
    assert_false(eng_cpu_packable(ENG_T_Q4_K, 256));
    assert_false(eng_cpu_packable(ENG_T_F32, 16));
    for (size_t c = 0; c < 9; c++) {
        const int type = types[c / 3], k = ks[c % 3];
        assert_true(eng_cpu_packable(type, ROWS));
        uint8_t *w = make_weights(type, ROWS, k), *wp = malloc(eng_type_row_bytes(type, k) * ROWS);
        eng_cpu_pack16(type, w, k, ROWS, wp);
        const size_t xs = eng_cpu_q8_row_bytes(k);
        float *x = malloc(sizeof(float) * NT * k), *ref = malloc(sizeof(float) * NT * ROWS),
              *out = malloc(sizeof(float) * NT * ROWS);
        char *xb = malloc(xs * NT);
        fill(x, NT * k, 2.0f);
        int checked = 0;
        for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
            const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
            if (!kt || !kt->pack16)
                continue;
            for (int t = 0; t < NT; t++)
                kt->quantize_q8(x + (size_t)t * k, xb + xs * t, k);
            for (int n = 1; n <= NT; n++) {
                const int acc = n % 2;
                eng_cpu_gemm_t g = {.type = type, .w = w, .w_stride = eng_type_row_bytes(type, k), .x = xb,
                                    .x_stride = xs, .n_tok = n, .k = k, .out = ref, .ldo = ROWS, .accumulate = acc};
                for (int i = 0; i < n * ROWS; i++)
                    ref[i] = out[i] = 0.25f * (float)i;
                kt->gemm(&g, 0, ROWS);
                g.w = wp, g.packed = 1, g.out = out;
                kt->gemm(&g, 0, 16);
                kt->gemm(&g, 16, ROWS);
                if (memcmp(ref, out, sizeof(float) * (size_t)n * ROWS))
                    print_error("%s on %s, %d tokens: packed weights differ from the file's layout\n",
                                eng_type_name(type), kt->name, n);
                assert_memory_equal(ref, out, sizeof(float) * (size_t)n * ROWS);
                checked++;
            }
        }
        if (!checked)
            print_message("packed weights: no instruction set here reads them (skipped)\n");
        free(w); free(wp); free(x); free(ref); free(out); free(xb);
    }
}

static void test_quantised_gemm_is_close_to_float_product(void **state)
{
    /* the 8-bit activations cost well under 1% of a Q8_0 product's magnitude */
    const int n_rows = 6, k = 256;
    uint8_t *w = make_weights(ENG_T_Q8_0, n_rows, k);
    float x[k], wr[k], out[n_rows];
    char xq[eng_cpu_q8_row_bytes(256)];
    fill(x, k, 1.0f);
    const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(eng_cpu_isa_detect());
    kt->quantize_q8(x, xq, k);
    eng_cpu_gemm_t g = {.type = ENG_T_Q8_0, .w = w, .w_stride = eng_type_row_bytes(ENG_T_Q8_0, k), .x = xq,
                        .x_stride = sizeof xq, .n_tok = 1, .k = k, .out = out, .ldo = n_rows};
    kt->gemm(&g, 0, n_rows);
    for (int r = 0; r < n_rows; r++) {
        eng_dequantize_row(ENG_T_Q8_0, w + g.w_stride * r, wr, k);
        double s = 0, a = 0;
        for (int i = 0; i < k; i++) {
            s += (double)wr[i] * x[i];
            a += fabs((double)wr[i] * x[i]);
        }
        assert_true(fabs(out[r] - s) < 0.01 * a);
    }
    free(w);
}

static void test_activation_quantisation_is_identical_across_isas(void **state)
{
    const int n = 32 * 7;
    float x[n];
    fill(x, n, 3.0f);
    x[5] = 0.0f;
    memset(x + 64, 0, sizeof(float) * 32); /* an all-zero block: d = 0, no division by zero */
    char ref[eng_cpu_q8_row_bytes(n)], got[eng_cpu_q8_row_bytes(n)];
    eng_cpu_kernels_scalar.quantize_q8(x, ref, n);
    const float *d = eng_cpu_q8_d(ref, n), *s = eng_cpu_q8_s(ref, n);
    const int32_t *s128 = eng_cpu_q8_s128(ref, n);
    assert_true(d[2] == 0.0f && s[2] == 0.0f && s128[2] == 0);
    for (int b = 0; b < n / 32; b++) {
        int sum = 0;
        for (int i = 0; i < 32; i++)
            sum += ((const int8_t *)ref)[b * 32 + i];
        assert_true(fabsf(s[b] - d[b] * sum) <= 1e-6f * fabsf(s[b]) + 1e-12f);
        assert_int_equal(s128[b], 128 * sum);
    }
    for (int isa = 1; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        if (!kt)
            continue;
        kt->quantize_q8(x, got, n);
        assert_memory_equal(ref, got, sizeof ref);
    }
}

/* Head sizes for the attention row kernels: multiples of 8 and not, odd ones (64, 8, 12, 136, 7,
 * 33, 129: 136 and 129 cross the 64-element register chunk; 48 and 144 take the AVX-512 V sums
 * in 3 and in 8 + 1 registers of 16; 16, 48, 64 and 128 the AVX-512 dot products of 16 rows with
 * q in 1, 3, 4 and 8 registers, 144 not). */
static const int attn_hds[] = {64, 8, 12, 136, 7, 33, 129, 48, 144, 16, 128};

static const char *const kv_names[] = {"F32", "F16", "int8"};

/* K/V rows of n floats in each pool element type: F32 (the floats), F16, and int8 (rounded) */
typedef struct kv_rows {
    float *f32;
    uint16_t *f16;
    int8_t *i8;
} kv_rows_t;

static kv_rows_t kv_rows_make(const float *x, int n)
{
    kv_rows_t r = {malloc(sizeof(float) * n), malloc(sizeof(uint16_t) * n), malloc((size_t)n)};
    assert_true(r.f32 && r.f16 && r.i8);
    memcpy(r.f32, x, sizeof(float) * n);
    for (int i = 0; i < n; i++) {
        r.f16[i] = eng_f32_to_f16(x[i]);
        r.i8[i] = (int8_t)lrintf(fminf(fmaxf(x[i], -127.0f), 127.0f));
    }
    return r;
}

static void kv_rows_free(kv_rows_t *r)
{
    free(r->f32), free(r->f16), free(r->i8);
}

static const void *kv_rows_of(const kv_rows_t *r, eng_kv_dtype_t t)
{
    return t == ENG_KV_F32 ? (const void *)r->f32 : t == ENG_KV_F16 ? (const void *)r->f16 : (const void *)r->i8;
}

/* element i of rows of type t as a float (exact) */
static float kv_elem(eng_kv_dtype_t t, const void *rows, int i)
{
    return t == ENG_KV_F32 ? ((const float *)rows)[i]
           : t == ENG_KV_F16 ? eng_f16_to_f32(((const uint16_t *)rows)[i]) : (float)((const int8_t *)rows)[i];
}

/* kt's row kernels for rows of type t */
static void dot_rows_t(const eng_cpu_kernels_t *kt, eng_kv_dtype_t t, const float *q, int nh, const void *rows, int n,
                       int hd, float scale, float *out, size_t out_stride)
{
    if (t == ENG_KV_F32)
        kt->dot_rows_f32(q, nh, rows, n, hd, scale, out, out_stride);
    else if (t == ENG_KV_F16)
        kt->dot_rows_f16(q, nh, rows, n, hd, scale, out, out_stride);
    else
        kt->dot_rows_i8(q, nh, rows, n, hd, scale, out, out_stride);
}

static void axpy_rows_t(const eng_cpu_kernels_t *kt, eng_kv_dtype_t t, const float *w, size_t w_stride, int nh,
                        const void *rows, int n, int hd, float *y)
{
    if (t == ENG_KV_F32)
        kt->axpy_rows_f32(w, w_stride, nh, rows, n, hd, y);
    else if (t == ENG_KV_F16)
        kt->axpy_rows_f16(w, w_stride, nh, rows, n, hd, y);
    else
        kt->axpy_rows_i8(w, w_stride, nh, rows, n, hd, y);
}

/* The attention row kernels against double-precision sums, for the head sizes above and row counts
 * around the 4-row step and the 16-row groups (two groups and a remainder). */
static void test_attention_row_kernels_match_scalar_math(void **state)
{
    enum { MAXR = 37, MAXD = 144 };
    const int *hds = attn_hds;
    float q[MAXD], rows[MAXR * MAXD], w[MAXR], out[MAXR], y[MAXD];
    fill(q, MAXD, 1.0f);
    fill(rows, MAXR * MAXD, 1.0f);
    fill(w, MAXR, 0.5f);
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        if (!kt)
            continue;
        for (size_t h = 0; h < sizeof attn_hds / sizeof attn_hds[0]; h++)
            for (int n = 0; n <= MAXR; n++) {
                const int hd = hds[h];
                kt->dot_rows_f32(q, 1, rows, n, hd, 0.125f, out, 0);
                for (int i = 0; i < n; i++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)q[e] * rows[i * hd + e];
                    assert_true(fabs(out[i] - 0.125 * d) < 1e-5);
                }
                for (int e = 0; e < hd; e++)
                    y[e] = q[e];
                kt->axpy_rows_f32(w, 0, 1, rows, n, hd, y);
                for (int e = 0; e < hd; e++) {
                    double d = q[e];
                    for (int i = 0; i < n; i++)
                        d += (double)w[i] * rows[i * hd + e];
                    assert_true(fabs(y[e] - d) < 1e-5);
                }
            }
    }
}

/* The row kernels take a kv head's query heads together (grouped-query attention: one load and
 * widening of a row for all of them, on AVX-512 at head sizes 64 and 128) and give each head
 * bitwise what it gets alone: every instruction set, F32, F16 and int8 rows, 1..5 heads (groups of
 * 4 and 2 with a head left over), row counts with a tail past the last 16, head sizes fused and
 * not. */
static void test_row_kernels_take_heads_together_as_each_alone(void **state)
{
    (void)state;
    enum { NH = 5, N = 37, MAXD = 128, SPAN = 40 };
    const int hds[] = {64, 128, 48, 12};
    static float x[N * MAXD], q[NH * MAXD], w[NH * SPAN], got[NH * SPAN], want[NH * SPAN], yg[NH * MAXD],
        yw[NH * MAXD];
    fill(x, N * MAXD, 100.0f);
    fill(q, NH * MAXD, 1.0f);
    fill(w, NH * SPAN, 0.5f);
    kv_rows_t rows = kv_rows_make(x, N * MAXD);
    int compared = 0;
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        for (size_t c = 0; kt && c < sizeof hds / sizeof hds[0]; c++)
            for (int nh = 1; nh <= NH; nh++)
                for (eng_kv_dtype_t t = ENG_KV_F32; t <= ENG_KV_I8; t++) {
                    const int hd = hds[c];
                    const void *r = kv_rows_of(&rows, t);
                    memset(got, 0, sizeof got), memset(want, 0, sizeof want);
                    fill(yg, NH * MAXD, 1.0f);
                    memcpy(yw, yg, sizeof yw);
                    dot_rows_t(kt, t, q, nh, r, N, hd, 0.125f, got, SPAN);
                    axpy_rows_t(kt, t, w, SPAN, nh, r, N, hd, yg);
                    for (int j = 0; j < nh; j++) {
                        dot_rows_t(kt, t, q + j * hd, 1, r, N, hd, 0.125f, want + j * SPAN, 0);
                        axpy_rows_t(kt, t, w + j * SPAN, 0, 1, r, N, hd, yw + j * hd);
                    }
                    if (memcmp(got, want, sizeof got) || memcmp(yg, yw, sizeof yg))
                        print_error("%s, %d heads of %d, %s rows: together differs from one at a time\n", kt->name,
                                    nh, hd, kv_names[t]);
                    assert_memory_equal(got, want, sizeof got);
                    assert_memory_equal(yg, yw, sizeof yg);
                    compared++;
                }
    }
    kv_rows_free(&rows);
    assert_true(compared >= 4 * 5 * 3);
}

/* y += sum_i w[i] rows[i] sums each element by the same FMAs in row order on 8 or 16 lanes, so the
 * AVX2 and AVX-512 tables give bitwise the same V sums, F32, F16 and int8 rows alike; SiLU(g) * u runs
 * the same operations per element on 8 or 16 lanes (lengths around both steps and the tail). */
static void test_axpy_rows_is_bitwise_the_same_on_avx2_and_avx512(void **state)
{
    enum { MAXR = 13, MAXD = 144 };
    const eng_cpu_kernels_t *a = eng_cpu_kernels_get(ENG_CPU_ISA_AVX2), *b = eng_cpu_kernels_get(ENG_CPU_ISA_AVX512);
    if (!a || !b) {
        print_message("skipped: this CPU lacks AVX2 or AVX-512 (VNNI), nothing to compare\n");
        skip();
    }
    float x[MAXR * MAXD], w[MAXR], ya[MAXD], yb[MAXD];
    fill(x, MAXR * MAXD, 100.0f);
    fill(w, MAXR, 0.7f);
    kv_rows_t rows = kv_rows_make(x, MAXR * MAXD);
    for (size_t k = 0; k < sizeof attn_hds / sizeof attn_hds[0]; k++)
        for (int n = 0; n <= MAXR; n++) {
            const int hd = attn_hds[k];
            fill(ya, hd, 1.0f);
            memcpy(yb, ya, sizeof(float) * hd);
            for (eng_kv_dtype_t t = ENG_KV_F32; t <= ENG_KV_I8; t++) {
                axpy_rows_t(a, t, w, 0, 1, kv_rows_of(&rows, t), n, hd, ya);
                axpy_rows_t(b, t, w, 0, 1, kv_rows_of(&rows, t), n, hd, yb);
                assert_memory_equal(ya, yb, sizeof(float) * hd);
            }
        }
    kv_rows_free(&rows);
    for (int n = 0; n <= 40; n++) {
        float ga[40], gb[40], u[40];
        fill(ga, n, 12.0f);
        fill(u, n, 2.0f);
        memcpy(gb, ga, sizeof(float) * n);
        a->silu_mul(ga, u, n);
        b->silu_mul(gb, u, n);
        assert_memory_equal(ga, gb, sizeof(float) * n);
    }
}

/* The F16 and int8 attention row kernels (K/V cache in F16 or int8) of every instruction set
 * against a double sum of the values widened to float and against the scalar table's kernels: the
 * head sizes above, row counts 0..37 (4-row steps, 16-row groups and every remainder), F16 values
 * up to 4 and down to F16 subnormals, int8 values over -127..127. */
static void test_f16_and_int8_attention_row_kernels_match_scalar_reference(void **state)
{
    enum { MAXR = 37, MAXD = 144 };
    float q[MAXD], x[MAXR * MAXD], w[MAXR], out[MAXR], ref[MAXR], y[MAXD], yref[MAXD];
    fill(q, MAXD, 1.0f);
    fill(x, MAXR * MAXD, 127.0f);
    fill(w, MAXR, 0.5f);
    kv_rows_t rows = kv_rows_make(x, MAXR * MAXD);
    for (int i = 0; i < MAXR * MAXD; i++)
        rows.f16[i] = eng_f32_to_f16(i % 5 == 0 ? x[i] / 127 * 1e-5f : x[i] / 32); /* F16 subnormals too */
    const eng_cpu_kernels_t *sc = &eng_cpu_kernels_scalar;
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        for (size_t k = 0; kt && k < sizeof attn_hds / sizeof attn_hds[0]; k++)
            for (int n = 0; n <= MAXR; n++)
                for (eng_kv_dtype_t t = ENG_KV_F16; t <= ENG_KV_I8; t++) {
                    const int hd = attn_hds[k];
                    const void *r = kv_rows_of(&rows, t);
                    dot_rows_t(kt, t, q, 1, r, n, hd, 0.125f, out, 0);
                    dot_rows_t(sc, t, q, 1, r, n, hd, 0.125f, ref, 0);
                    for (int i = 0; i < n; i++) {
                        double d = 0, mag = 0;
                        for (int e = 0; e < hd; e++) {
                            d += (double)q[e] * kv_elem(t, r, i * hd + e);
                            mag += fabs((double)q[e] * kv_elem(t, r, i * hd + e));
                        }
                        double tol = 1e-6 * 0.125 * mag + 1e-7;
                        if (fabs(out[i] - 0.125 * d) > tol || fabs(out[i] - ref[i]) > tol)
                            fail_msg("%s %s dot_rows hd %d n %d: out[%d] = %.9g, double %.9g, scalar %.9g", kt->name,
                                     kv_names[t], hd, n, i, out[i], 0.125 * d, ref[i]);
                    }
                    for (int e = 0; e < hd; e++)
                        y[e] = yref[e] = q[e];
                    axpy_rows_t(kt, t, w, 0, 1, r, n, hd, y);
                    axpy_rows_t(sc, t, w, 0, 1, r, n, hd, yref);
                    for (int e = 0; e < hd; e++) {
                        double d = q[e], mag = fabs(q[e]);
                        for (int i = 0; i < n; i++) {
                            d += (double)w[i] * kv_elem(t, r, i * hd + e);
                            mag += fabs((double)w[i] * kv_elem(t, r, i * hd + e));
                        }
                        double tol = 1e-6 * mag + 1e-7;
                        if (fabs(y[e] - d) > tol || fabs(y[e] - yref[e]) > tol)
                            fail_msg("%s %s axpy_rows hd %d n %d: y[%d] = %.9g, double %.9g, scalar %.9g", kt->name,
                                     kv_names[t], hd, n, e, y[e], d, yref[e]);
                    }
                }
    }
    kv_rows_free(&rows);
}

static void test_vector_helpers_match_scalar_math(void **state)
{
    const int n = 67;
    float a[n], b[n], y0[n], e[n], g[n], u[n];
    uint16_t h[n], h2[n];
    fill(a, n, 1.0f);
    fill(b, n, 1.0f);
    fill(u, n, 2.0f);
    for (int i = 0; i < n; i++)
        h[i] = eng_f32_to_f16(b[i]);
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        if (!kt)
            continue;
        double d32 = 0;
        for (int i = 0; i < n; i++)
            d32 += (double)a[i] * b[i];
        assert_true(fabs(kt->dot_f32(a, b, n) - d32) < 1e-5);
        memcpy(y0, b, sizeof y0);
        kt->axpy_f32(0.5f, a, y0, n);
        for (int i = 0; i < n; i++)
            assert_true(fabsf(y0[i] - (b[i] + 0.5f * a[i])) < 1e-6f);
        kt->to_f16(b, h2, n);
        assert_memory_equal(h, h2, sizeof h);
        for (int i = 0; i < n; i++)
            e[i] = a[i] * 30.0f;
        e[3] = -200.0f; /* underflows to 0, not to garbage */
        float max = -INFINITY;
        for (int i = 0; i < n; i++)
            max = e[i] > max ? e[i] : max;
        float sum = kt->exp_sum(e, n), ref = 0.0f;
        for (int i = 0; i < n; i++) {
            float want = i == 3 ? 0.0f : expf(a[i] * 30.0f - max);
            assert_true(fabsf(e[i] - want) <= 2e-6f * want + 1e-30f);
            ref += want;
        }
        assert_true(fabsf(sum - ref) <= 1e-5f * ref);
        for (int i = 0; i < n; i++)
            g[i] = a[i] * 8.0f;
        kt->silu_mul(g, u, n);
        for (int i = 0; i < n; i++) {
            float x = a[i] * 8.0f, want = x / (1.0f + expf(-x)) * u[i];
            assert_true(fabsf(g[i] - want) <= 1e-5f * fabsf(want) + 1e-7f);
        }
    }
}

/* F16 -> F32 widening is exact on every ISA (subnormals and infinities too; NaN stays NaN). */
static void test_f16_widening_is_exact(void **state)
{
    (void)state;
    enum { N = 1029 };
    uint16_t h[N];
    float got[N];
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (uint16_t)(rng >> 40);
    }
    h[0] = 0x0001, h[1] = 0x03ff, h[2] = 0x7c00, h[3] = 0xfc00, h[4] = 0x8000;
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        if (!kt)
            continue;
        kt->to_f32(h, got, N);
        for (int i = 0; i < N; i++) {
            float want = eng_f16_to_f32(h[i]);
            if (isnan(want))
                assert_true(isnan(got[i]));
            else
                assert_true(got[i] == want);
        }
    }
}

/* A tile of queries, each with 1 or 3 query heads over the kv head (grouped-query attention),
 * through the context together gives each query head exactly what it gets alone, F32, F16 and
 * int8 pools (a tile widens a block once; one query reads it in place), a head size with a scalar
 * tail, a scattered block table. */
static void test_query_tile_equals_one_query_at_a_time(void **state)
{
    (void)state;
    enum { BLOCKS = 8, BS = 16, NQ = ENG_CPU_ATTEND_MAX_Q, NH = 3, CTX = 50 };
    const int32_t table[BLOCKS] = {3, 1, 4, 0, 6, 2, 7, 5};
    const int hds[] = {64, 12};
    for (int h = 0; h < 2; h++)
        for (eng_kv_dtype_t t = ENG_KV_F32; t <= ENG_KV_I8; t++) {
            const int hd = hds[h];
            eng_cpu_kv_t kv = eng_cpu_kv_layout(1, 1, hd, t, BLOCKS, BS);
            kv.data = malloc(kv.block_bytes * BLOCKS);
            float row[64], q[NQ * NH * 64];
            float tile[NQ * NH * 64], alone[NQ * NH * 64], scores[ENG_CPU_ATTEND_SCRATCH(NQ, NH, CTX + NQ)];
            assert_true(kv.data != NULL);
            fill(q, NQ * NH * hd, 1.0f);
            for (int pos = 0; pos < BLOCKS * BS; pos++)
                for (int which = 0; which < 2; which++) {
                    fill(row, hd, 1.0f);
                    eng_cpu_kv_store(&eng_cpu_kernels_scalar, &kv, table, 0, pos, which, row, 0, hd);
                }
            for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
                const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
                if (!kt)
                    continue;
                for (int nh = 1; nh <= NH; nh += NH - 1) {
                    const size_t qs = (size_t)nh * hd; /* token i's heads lie together */
                    eng_cpu_attend(kt, &kv, table, 0, 0, q, qs, NQ, nh, CTX, 0.125f, scores, tile, qs);
                    for (int i = 0; i < NQ; i++)
                        for (int j = 0; j < nh; j++)
                            eng_cpu_attend(kt, &kv, table, 0, 0, q + i * qs + j * hd, qs, 1, 1, CTX + i, 0.125f,
                                           scores, alone + i * qs + j * hd, qs);
                    if (memcmp(tile, alone, sizeof(float) * NQ * qs))
                        print_error("%s, %s pool, head size %d, %d heads: the tile differs\n", kt->name,
                                    kv_names[t], hd, nh);
                    assert_memory_equal(tile, alone, sizeof(float) * NQ * qs);
                }
            }
            free(kv.data);
        }
}

/* An int8 pool's row is its values over scale = largest magnitude / 127, rounded to the nearest
 * integer (halves away from zero), the scale beside the block's rows; a zero row has scale 0, and
 * a NaN or infinity gives defined values; a pool's other rows are untouched. */
static void test_int8_kv_rows_round_to_their_scale(void **state)
{
    (void)state;
    enum { HD = 8, BS = 4 };
    const int32_t table[2] = {1, 0};
    eng_cpu_kv_t kv = eng_cpu_kv_layout(2, 2, HD, ENG_KV_I8, 2, BS);
    assert_int_equal(kv.run_bytes, BS * HD + BS * 4);
    assert_int_equal(kv.block_bytes, 2 * 2 * 2 * kv.run_bytes);
    kv.data = calloc(2, kv.block_bytes);
    assert_non_null(kv.data);
    /* kv heads 0 and 1 of layer 1's V at position 5 (block table[1] = 0, slot 1) */
    const float row[2 * HD] = {254, -254, 6.8f, -7.2f, 1, -1, 5, 0,    /* scale 2 */
                               0, 0, 0, 0, 0, 0, 0, 0};               /* scale 0 */
    eng_cpu_kv_store(&eng_cpu_kernels_scalar, &kv, table, 1, 5, 1, row, 0, 2 * HD);
    const int8_t want[HD] = {127, -127, 3, -4, 1, -1, 3, 0};
    assert_memory_equal(eng_cpu_kv_row(&kv, 0, 1, 1, 0, 1), want, HD);
    assert_true(eng_cpu_kv_scales(&kv, 0, 1, 1, 0)[1] == 2.0f);
    const int8_t zero[HD] = {0};
    assert_memory_equal(eng_cpu_kv_row(&kv, 0, 1, 1, 1, 1), zero, HD);
    assert_true(eng_cpu_kv_scales(&kv, 0, 1, 1, 1)[1] == 0.0f);
    /* the scales sit after the rows of their run: slot 1's scale is bytes BS HD + 4 .. + 8 */
    assert_ptr_equal((char *)eng_cpu_kv_scales(&kv, 0, 1, 1, 0) + 4, (char *)eng_cpu_kv_row(&kv, 0, 1, 1, 0, 0) + BS * HD + 4);
    size_t nonzero = 0;
    for (size_t i = 0; i < 2 * kv.block_bytes; i++)
        nonzero += ((unsigned char *)kv.data)[i] != 0;
    assert_int_equal(nonzero, 7 + 1); /* seven nonzero values and 2.0f (0x40000000) */
    const float bad[HD] = {NAN, INFINITY, 1, -1, 0, 0, 0, 0};
    eng_cpu_kv_store(&eng_cpu_kernels_scalar, &kv, table, 0, 0, 0, bad, 0, HD); /* no trap, no UB */
    free(kv.data);
}

/* int8 -> float widening is exact on every ISA, all 256 values, odd lengths. */
static void test_int8_widening_is_exact(void **state)
{
    (void)state;
    int8_t x[259];
    float got[259];
    for (int i = 0; i < 259; i++)
        x[i] = (int8_t)(i - 128);
    for (int isa = 0; isa < ENG_CPU_ISA_COUNT; isa++) {
        const eng_cpu_kernels_t *kt = eng_cpu_kernels_get(isa);
        for (int n = 250; kt && n <= 259; n++) {
            memset(got, 0, sizeof got);
            kt->i8_to_f32(x, got, n);
            for (int i = 0; i < 259; i++)
                assert_true(got[i] == (i < n ? (float)x[i] : 0.0f));
        }
    }
}

static void test_isa_detection_names_an_available_table(void **state)
{
    eng_cpu_isa_t isa = eng_cpu_isa_detect();
    assert_non_null(eng_cpu_kernels_get(isa));
    assert_non_null(eng_cpu_kernels_get(ENG_CPU_ISA_SCALAR));
    assert_int_equal(eng_cpu_kernels_get(isa)->isa, isa);
    assert_null(eng_cpu_kernels_get(ENG_CPU_ISA_COUNT));
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++)
        assert_true(eng_cpu_type_supported(all_types[i]));
    assert_false(eng_cpu_type_supported(11));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_matches_dequantised_reference_for_every_type),
        cmocka_unit_test(test_gemm_rows_do_not_depend_on_the_step_size),
        cmocka_unit_test(test_packed_weights_give_the_file_layouts_outputs),
        cmocka_unit_test(test_quantised_gemm_is_close_to_float_product),
        cmocka_unit_test(test_activation_quantisation_is_identical_across_isas),
        cmocka_unit_test(test_vector_helpers_match_scalar_math),
        cmocka_unit_test(test_attention_row_kernels_match_scalar_math),
        cmocka_unit_test(test_axpy_rows_is_bitwise_the_same_on_avx2_and_avx512),
        cmocka_unit_test(test_row_kernels_take_heads_together_as_each_alone),
        cmocka_unit_test(test_f16_widening_is_exact),
        cmocka_unit_test(test_query_tile_equals_one_query_at_a_time),
        cmocka_unit_test(test_int8_kv_rows_round_to_their_scale),
        cmocka_unit_test(test_int8_widening_is_exact),
        cmocka_unit_test(test_f16_and_int8_attention_row_kernels_match_scalar_reference),
        cmocka_unit_test(test_isa_detection_names_an_available_table),
    };
    return cmocka_run_group_tests_name("cpu_kernels", tests, NULL, NULL);
}
