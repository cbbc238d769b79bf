/* kernels.h — the CPU compute kernels: matrix products over weights in their GGUF format, the
 * 8-bit activation format the quantised products read, and the vector helpers attention and the
 * FFN need. One table of functions per instruction set, chosen at run time.
 *
 * Matrix products: weights stay as the file stores them (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q6_K, Q4_K, Q5_K).
 * For the quantised types the activation rows are first quantised to 8-bit blocks (32 int8
 * values, a float scale and the scaled block sum, like ggml's q8_1), then every block product
 * is an integer dot: Q4_0 and Q4_1 weights are unsigned nibbles times signed activations, with
 * the offset (-8 d for Q4_0, m for Q4_1) applied once per block through the block sum; Q5_0 / Q5_1
 * are 5-bit values with offset -16 d / m; a Q4_K / Q5_K sub-block of 32 is such a block with scale d sc
 * and offset -dmin m; Q8_0 is signed times signed; Q6_K applies its 16-element scales to integer
 * partial sums. Float weights multiply float activations.
 *
 * Q4_0 / Q4_1 / Q8_0 / Q5_0 / Q5_1 / Q4_K / Q5_K rows go in groups of 8 interleaved by 4 elements, so that integer sums of a
 * block land one row per vector lane (no horizontal sums): decode reads them straight from the
 * blocks; with more tokens a slice of the group is unpacked once into a small int8 buffer that
 * serves every token of the step (see kernels_x86.h).
 *
 * Instruction sets: scalar (portable, always present), AVX2+FMA+F16C, AVX-512 (F, BW, VL, VNNI;
 * compiled on x86-64, chosen only when the CPU reports it). All give the same results up to float
 * summation order.
 */
#ifndef SLUICE_ENGINE_CPU_KERNELS_H
#define SLUICE_ENGINE_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define ENG_CPU_QK 32 /* activation block: elements sharing one scale */

/* A quantised activation row of k elements (k a multiple of 32), structure of arrays so that the
 * scales of 8 blocks load as one vector:
 *   int8 qs[k]            value i = d[i / 32] * qs[i]
 *   float d[k / 32]       block scales
 *   float s[k / 32]       d * sum(qs of the block): for Q4_0's offset and Q4_1's minimum
 *   int32 s128[k / 32]    128 * sum(qs of the block), exact: the AVX-512 Q8_0 tiles take it off
 *                         the sums of weights stored with 128 added (kernels_x86.h)          */
static inline size_t eng_cpu_q8_row_bytes(int k)
{
    return (size_t)k + 3 * sizeof(float) * (size_t)(k / ENG_CPU_QK);
}
static inline float *eng_cpu_q8_d(const void *row, int k)
{
    return (float *)((char *)row + k);
}
static inline float *eng_cpu_q8_s(const void *row, int k)
{
    return (float *)((char *)row + k) + k / ENG_CPU_QK;
}
static inline int32_t *eng_cpu_q8_s128(const void *row, int k)
{
    return (int32_t *)((char *)row + k) + 2 * (k / ENG_CPU_QK);
}

typedef enum eng_cpu_isa {
    ENG_CPU_ISA_SCALAR = 0,
    ENG_CPU_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    ENG_CPU_ISA_AVX512 = 2, /* AVX-512 F/BW/VL + VNNI, on top of AVX2 */
    ENG_CPU_ISA_AMX = 3,    /* AVX-512 + AMX-INT8 tiles for quantised products of 16+ tokens */
    ENG_CPU_ISA_COUNT
} eng_cpu_isa_t;

/* A matrix product: out[t * ldo + r] = dot(weight row r, activation row t) (or += when
 * accumulate), for the rows a call names and tokens 0..n_tok-1. */
typedef struct eng_cpu_gemm {
    int type;           /* eng_type_t of the weight */
    const void *w;      /* weight row 0; rows of k elements in `type` */
    size_t w_stride;    /* bytes per weight row */
    const void *x;      /* activations: float (n_tok, k), or q8 rows (n_tok, eng_cpu_q8_row_bytes(k)) */
    size_t x_stride;    /* bytes between two tokens' activation rows */
    int n_tok;
    int k;              /* elements per row; a multiple of the type's block size */
    float *out;         /* (n_tok, ldo) */
    size_t ldo;
    int accumulate;     /* 1: add to out (residual connections) */
    int packed;         /* 1: w is in the 16-row layout of eng_cpu_pack16 (only for tables with pack16) */
} eng_cpu_gemm_t;

/* The 16-row packed layout of Q4_0, Q4_1 and Q8_0 weights (eng_cpu_pack16), which the x86 SIMD
 * products read (AVX2 as two 8-row halves: the low and high 32 bytes of each vector): a tensor whose rows are a multiple of 16 is rearranged within each group of 16
 * rows, so the group still starts at row r0 * (bytes per row) and the tensor keeps its size. For
 * blocks b = 0..nb-1 (nb = k / 32) the group holds, in order:
 *   quants  nb x Q bytes: vector j (64 bytes) of block b holds bytes 4j..4j+3 of the 16 rows'
 *           quants (row i at bytes 4i..4i+3); Q4 (Q = 256, j < 4): byte 4j+e has element 4j+e in its
 *           low nibble and 4j+e+16 in the high one, as in the file; Q8_0 (Q = 512, j < 8): the
 *           signed bytes plus 128 (stored unsigned)
 *   d       nb x 32 bytes: the 16 rows' f16 scales of block b
 *   m       nb x 32 bytes, Q4_1 only: their f16 minimums
 * So a block of 16 rows is 4 (or 8) aligned vector loads in the order the integer products want
 * (rows in lanes, 4 elements per lane), and for 16 or more tokens the Q8_0 quants are the AMX B
 * tile itself: the products do no byte transposes at run time. */
#define ENG_CPU_PACK_ROWS 16

/* The element type the kernels' templates (kernels_x86.h) name int8 K/V rows by, beside the
 * eng_type_t of F32 and F16 (GGML's id of I8; never a weight type here). */
#define ENG_CPU_T_I8 24

typedef struct eng_cpu_kernels {
    eng_cpu_isa_t isa;
    const char *name;   /* "scalar", "avx2", "avx512", "amx" */
    /* row = q8(x): one activation row of k elements (k a multiple of 32). */
    void (*quantize_q8)(const float *x, void *row, int k);
    /* Rows [r0, r1) of g, all tokens. g->type must satisfy eng_cpu_type_supported(). With g->packed,
     * r0 and r1 are multiples of 16 (or r1 the tensor's last row). */
    void (*gemm)(const eng_cpu_gemm_t *g, int r0, int r1);
    /* 1 when products run faster on packed weights (eng_cpu_pack16) of the types it packs. */
    int pack16;
    /* Dot product of two float vectors of n elements. */
    float (*dot_f32)(const float *a, const float *b, int n);
    /* Attention over n rows of hd elements (F32 floats, F16 values as uint16_t, or int8 values),
     * rows contiguous,
     * for nh query heads that share them (grouped-query attention): head j's scores out_j[i] =
     * scale * dot(q_j, rows + i hd), with q_j = q + j hd and out_j = out + j out_stride; and head
     * j's y_j[0..hd) += sum_i w_j[i] * (rows + i hd), with w_j = w + j w_stride and y_j = y + j hd.
     * Each head's results are bitwise those of a call with that head alone. The partial sums stay
     * in registers across rows; F16 and int8 elements are widened to float as they load (exact),
     * once for the heads taken together. */
    void (*dot_rows_f32)(const float *q, int nh, const float *rows, int n, int hd, float scale, float *out,
                         size_t out_stride);
    void (*dot_rows_f16)(const float *q, int nh, const uint16_t *rows, int n, int hd, float scale, float *out,
                         size_t out_stride);
    void (*axpy_rows_f32)(const float *w, size_t w_stride, int nh, const float *rows, int n, int hd, float *y);
    void (*axpy_rows_f16)(const float *w, size_t w_stride, int nh, const uint16_t *rows, int n, int hd, float *y);
    void (*dot_rows_i8)(const float *q, int nh, const int8_t *rows, int n, int hd, float scale, float *out,
                        size_t out_stride);
    void (*axpy_rows_i8)(const float *w, size_t w_stride, int nh, const int8_t *rows, int n, int hd, float *y);
    /* y += a * x for a float x of n elements. */
    void (*axpy_f32)(float a, const float *x, float *y, int n);
    /* y = f16(x), n elements; and back (exact). */
    void (*to_f16)(const float *x, uint16_t *y, int n);
    void (*to_f32)(const uint16_t *x, float *y, int n);
    /* y = x, n int8 values as floats (exact). */
    void (*i8_to_f32)(const int8_t *x, float *y, int n);
    /* x[i] = exp(x[i] - max of x) in place (n >= 1); returns the sum. */
    float (*exp_sum)(float *x, int n);
    /* g[i] = silu(g[i]) * u[i]. */
    void (*silu_mul)(float *g, const float *u, int n);
} eng_cpu_kernels_t;

/* The best instruction set this CPU runs. Cannot fail. */
eng_cpu_isa_t eng_cpu_isa_detect(void);
/* 1 when this CPU's kernels read an F16 KV cache faster than an F32 one (AVX-512: the F16
 * widening is cheap and decode attention of many streams is bound by the bytes it reads), 0 where
 * F32 is faster (AVX2 on Zen 1: vcvtph2ps costs about what the FMAs do; scalar). The backends'
 * default KV element type (eng_backend_params_default). Cannot fail. */
int eng_cpu_prefers_f16_kv(void);
/* The kernels of an instruction set; NULL when it is not compiled in or this CPU lacks it. */
const eng_cpu_kernels_t *eng_cpu_kernels_get(eng_cpu_isa_t isa);
/* 1 when the kernels multiply weights of this type. */
int eng_cpu_type_supported(int type);
/* 1 when products with this weight type read q8 activation rows, 0 for float ones. */
int eng_cpu_type_quantized(int type);

/* 1 when a tensor of this type and row count can be packed: Q4_0, Q4_1 or Q8_0, rows a multiple
 * of 16. */
int eng_cpu_packable(int type, int64_t rows);
/* dst (the tensor's size, eng_type_row_bytes(type, k) * rows bytes) = src packed (see above). */
void eng_cpu_pack16(int type, const void *src, int k, int64_t rows, void *dst);

/* Kernel tables of each instruction set (kernels_*.c); use eng_cpu_kernels_get(). */
extern const eng_cpu_kernels_t eng_cpu_kernels_scalar;
#if defined(__x86_64__)
extern const eng_cpu_kernels_t eng_cpu_kernels_avx2;
extern const eng_cpu_kernels_t eng_cpu_kernels_avx512;
extern const eng_cpu_kernels_t eng_cpu_kernels_amx;
#endif

#endif
