/* kernels.c — the portable scalar kernels and the run-time choice of instruction set.
 *
 * The scalar products compute exactly what the SIMD ones compute (integer block dots, the same
 * activation quantisation with round-half-to-even), so they are both the fallback on CPUs without
 * AVX2 and a second opinion in the tests.
 */
#include "engine/cpu/kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "engine/model.h"
#include "engine/quant.h"

int eng_cpu_type_supported(int type)
{
    switch (type) {
    case ENG_T_F32: case ENG_T_F16: case ENG_T_BF16:
    case ENG_T_Q8_0: case ENG_T_Q4_0: case ENG_T_Q4_1: case ENG_T_Q6_K: case ENG_T_Q4_K: case ENG_T_Q5_0:
    case ENG_T_Q5_K: case ENG_T_Q5_1:
        return 1;
    default:
        return 0;
    }
}

int eng_cpu_type_quantized(int type)
{
    return type == ENG_T_Q8_0 || type == ENG_T_Q4_0 || type == ENG_T_Q4_1 || type == ENG_T_Q6_K ||
           type == ENG_T_Q4_K || type == ENG_T_Q5_0 || type == ENG_T_Q5_K || type == ENG_T_Q5_1;
}

int eng_cpu_packable(int type, int64_t rows)
{
    return (type == ENG_T_Q4_0 || type == ENG_T_Q4_1 || type == ENG_T_Q8_0) && rows > 0 &&
           rows % ENG_CPU_PACK_ROWS == 0;
}

void eng_cpu_pack16(int type, const void *src, int k, int64_t rows, void *dst)
{
    const int nb = k / ENG_CPU_QK, q8 = type == ENG_T_Q8_0;
    const size_t row_bytes = eng_type_row_bytes(type, k), qbytes = q8 ? 512 : 256;
    /* where a block keeps its scale, minimum and quants (the file's block structs) */
    const size_t bsz = q8 ? sizeof(eng_block_q8_0) : type == ENG_T_Q4_1 ? sizeof(eng_block_q4_1)
                                                                       : sizeof(eng_block_q4_0);
    const size_t qoff = type == ENG_T_Q4_1 ? offsetof(eng_block_q4_1, qs) : 2;
    for (int64_t r0 = 0; r0 < rows; r0 += ENG_CPU_PACK_ROWS) {
        uint8_t *grp = (uint8_t *)dst + (size_t)r0 * row_bytes;
        uint8_t *dscale = grp + (size_t)nb * qbytes, *mins = dscale + (size_t)nb * 32;
        for (int i = 0; i < ENG_CPU_PACK_ROWS; i++) {
            const uint8_t *row = (const uint8_t *)src + (size_t)(r0 + i) * row_bytes;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bsz;
                uint8_t *q = grp + (size_t)b * qbytes;
                for (size_t j = 0; j < qbytes / 64; j++)
                    for (int e = 0; e < 4; e++) /* Q8_0: signed + 128, stored unsigned */
                        q[64 * j + 4 * i + e] = (uint8_t)(blk[qoff + 4 * j + e] ^ (q8 ? 0x80 : 0));
                memcpy(dscale + 32 * b + 2 * i, blk, 2);
                if (type == ENG_T_Q4_1)
                    memcpy(mins + 32 * b + 2 * i, blk + offsetof(eng_block_q4_1, m), 2);
            }
        }
    }
}

#if defined(__x86_64__)
static int amx_usable;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

/* AMX-TILE and AMX-INT8 (cpuid leaf 7: edx bits 24, 25), and Linux's permission for this process
 * to use the 8 KiB tile state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA): without
 * it the first tile instruction faults. Asked once; the grant covers every thread. */
static void amx_probe(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) || !(edx & (1u << 25)))
        return;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    amx_usable = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}
#endif

eng_cpu_isa_t eng_cpu_isa_detect(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
        pthread_once(&amx_once, amx_probe);
        return amx_usable ? ENG_CPU_ISA_AMX : ENG_CPU_ISA_AVX512;
    }
    /* F16C through cpuid (leaf 1, ecx bit 29): clang's __builtin_cpu_supports does not know "f16c" */
    unsigned eax, ebx, ecx, edx;
    int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)
        return ENG_CPU_ISA_AVX2;
#endif
    return ENG_CPU_ISA_SCALAR;
}

int eng_cpu_prefers_f16_kv(void)
{
    return eng_cpu_isa_detect() >= ENG_CPU_ISA_AVX512;
}

const eng_cpu_kernels_t *eng_cpu_kernels_get(eng_cpu_isa_t isa)
{
    if (isa < 0 || isa >= ENG_CPU_ISA_COUNT || isa > eng_cpu_isa_detect())
        return NULL;
    switch (isa) {
#if defined(__x86_64__)
    case ENG_CPU_ISA_AMX: return &eng_cpu_kernels_amx;
    case ENG_CPU_ISA_AVX512: return &eng_cpu_kernels_avx512;
    case ENG_CPU_ISA_AVX2: return &eng_cpu_kernels_avx2;
#endif
    case ENG_CPU_ISA_SCALAR: return &eng_cpu_kernels_scalar;
    default: return NULL;
    }
}

/* ---- scalar kernels ----------------------------------------------------------------------- */

static void quantize_q8_scalar(const float *x, void *row, int k)
{
    int8_t *qs = row;
    float *d = eng_cpu_q8_d(row, k), *s = eng_cpu_q8_s(row, k);
    int32_t *s128 = eng_cpu_q8_s128(row, k);
    for (int b = 0; b < k / ENG_CPU_QK; b++, x += ENG_CPU_QK) {
        float amax = 0.0f;
        for (int i = 0; i < ENG_CPU_QK; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        float db = amax / 127.0f, id = db > 0.0f ? 1.0f / db : 0.0f;
        int sum = 0;
        for (int i = 0; i < ENG_CPU_QK; i++) {
            qs[b * ENG_CPU_QK + i] = (int8_t)nearbyintf(x[i] * id);
            sum += qs[b * ENG_CPU_QK + i];
        }
        d[b] = db;
        s[b] = db * (float)sum;
        s128[b] = 128 * sum;
    }
}

static float load_float(int type, const void *w, int i)
{
    switch (type) {
    case ENG_T_F16: return eng_f16_to_f32(((const uint16_t *)w)[i]);
    case ENG_T_BF16: return eng_bf16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

/* dot of one weight row of a 32-block type (Q4_0, Q4_1, Q8_0) with one q8 activation row */
static float dot_q32_scalar(int type, const uint8_t *w, const void *x, int k)
{
    const int nb = k / ENG_CPU_QK;
    const int8_t *xq = x;
    const float *xd = eng_cpu_q8_d(x, k), *xs = eng_cpu_q8_s(x, k);
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        int isum = 0;
        float dw, mw = 0.0f;
        if (type == ENG_T_Q8_0) {
            const eng_block_q8_0 *blk = (const eng_block_q8_0 *)w + b;
            dw = eng_f16_to_f32(blk->d);
            for (int i = 0; i < 32; i++)
                isum += blk->qs[i] * xq[b * 32 + i];
        } else {
            const uint8_t *qs;
            if (type == ENG_T_Q4_0) {
                const eng_block_q4_0 *blk = (const eng_block_q4_0 *)w + b;
                dw = eng_f16_to_f32(blk->d);
                mw = -8.0f * dw;
                qs = blk->qs;
            } else {
                const eng_block_q4_1 *blk = (const eng_block_q4_1 *)w + b;
                dw = eng_f16_to_f32(blk->d);
                mw = eng_f16_to_f32(blk->m);
                qs = blk->qs;
            }
            for (int i = 0; i < 16; i++)
                isum += (qs[i] & 15) * xq[b * 32 + i] + (qs[i] >> 4) * xq[b * 32 + i + 16];
        }
        sum += dw * xd[b] * (float)isum + mw * xs[b];
    }
    return sum;
}

static float dot_q6_K_scalar(const eng_block_q6_K *w, const void *x, int k)
{
    const int nsb = k / ENG_QK_K;
    const int8_t *xq = x;
    const float *xd = eng_cpu_q8_d(x, k);
    float sum = 0.0f;
    for (int sb = 0; sb < nsb; sb++, w++) {
        float d = eng_f16_to_f32(w->d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w->ql + 64 * h, *qh = w->qh + 32 * h;
            const int8_t *sc = w->scales + 8 * h;
            for (int g = 0; g < 4; g++) {
                const int blk = sb * 8 + h * 4 + g;
                int isum = 0;
                for (int half = 0; half < 2; half++) {
                    int sub = 0;
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        int lo = (g & 1) ? ql[l + 32] : ql[l];
                        lo = (g & 2) ? lo >> 4 : lo & 15;
                        int q = (lo | ((qh[l] >> (2 * g)) & 3) << 4) - 32;
                        sub += q * xq[blk * 32 + l];
                    }
                    isum += sc[2 * g + half] * sub;
                }
                sum += d * xd[blk] * (float)isum;
            }
        }
    }
    return sum;
}

/* dot of one Q4_K or Q5_K weight row with one q8 activation row: per 32-element sub-block, the
 * integer sum scaled by d * sc and the activation's scale, less dmin * m times the activation's
 * sum */
static float dot_qk_scalar(int type, const uint8_t *w, const void *x, int k)
{
    const int8_t *xq = x;
    const float *xd = eng_cpu_q8_d(x, k), *xs = eng_cpu_q8_s(x, k);
    const int five = type == ENG_T_Q5_K;
    float sum = 0.0f;
    for (int sb = 0; sb < k / ENG_QK_K; sb++) {
        const eng_block_q4_K *b4 = (const eng_block_q4_K *)w + sb;
        const eng_block_q5_K *b5 = (const eng_block_q5_K *)w + sb;
        const uint16_t dh = five ? b5->d : b4->d, mh = five ? b5->dmin : b4->dmin;
        const uint8_t *scales = five ? b5->scales : b4->scales, *qs = five ? b5->qs : b4->qs;
        const float d = eng_f16_to_f32(dh), dmin = eng_f16_to_f32(mh);
        uint8_t scs[8], mins[8];
        eng_q4_K_unpack_scales(scales, scs, mins);
        for (int j = 0; j < 8; j++) {
            const int blk = sb * 8 + j;
            const uint8_t *q = qs + 32 * (j / 2);
            const int sc = scs[j], m = mins[j];
            int isum = 0;
            for (int l = 0; l < 32; l++) {
                const int v = ((j & 1) ? q[l] >> 4 : q[l] & 15) | (five ? (b5->qh[l] >> j & 1) << 4 : 0);
                isum += v * xq[blk * 32 + l];
            }
            sum += d * xd[blk] * (float)(sc * isum) - dmin * (float)m * xs[blk];
        }
    }
    return sum;
}

/* dot of one Q5_0 or Q5_1 weight row with one q8 activation row: values 0..31 (d, and -16 d or
 * m through the activation block's sum) */
static float dot_q5_scalar(int type, const uint8_t *w, const void *x, int k)
{
    const int8_t *xq = x;
    const float *xd = eng_cpu_q8_d(x, k), *xs = eng_cpu_q8_s(x, k);
    const size_t bsz = (size_t)eng_type_block_bytes(type), hoff = type == ENG_T_Q5_1 ? 4 : 2;
    float sum = 0.0f;
    for (int b = 0; b < k / ENG_QK; b++, w += bsz) {
        uint16_t dh, mh = 0;
        memcpy(&dh, w, 2);
        if (type == ENG_T_Q5_1)
            memcpy(&mh, w + 2, 2);
        int isum = 0;
        for (int e = 0; e < ENG_QK; e++)
            isum += eng_q5_value(w + hoff, w + hoff + 4, e) * xq[b * 32 + e];
        const float d = eng_f16_to_f32(dh), m = type == ENG_T_Q5_1 ? eng_f16_to_f32(mh) : -16.0f * d;
        sum += d * xd[b] * (float)isum + m * xs[b];
    }
    return sum;
}

static void gemm_scalar(const eng_cpu_gemm_t *g, int r0, int r1)
{
    for (int t = 0; t < g->n_tok; t++) {
        const void *x = (const char *)g->x + (size_t)t * g->x_stride;
        for (int r = r0; r < r1; r++) {
            const void *w = (const char *)g->w + (size_t)r * g->w_stride;
            float v = 0.0f;
            if (g->type == ENG_T_Q6_K) {
                v = dot_q6_K_scalar(w, x, g->k);
            } else if (g->type == ENG_T_Q4_K || g->type == ENG_T_Q5_K) {
                v = dot_qk_scalar(g->type, w, x, g->k);
            } else if (g->type == ENG_T_Q5_0 || g->type == ENG_T_Q5_1) {
                v = dot_q5_scalar(g->type, w, x, g->k);
            } else if (eng_cpu_type_quantized(g->type)) {
                v = dot_q32_scalar(g->type, w, x, g->k);
            } else {
                for (int i = 0; i < g->k; i++)
                    v += load_float(g->type, w, i) * ((const float *)x)[i];
            }
            float *o = &g->out[(size_t)t * g->ldo + r];
            *o = g->accumulate ? *o + v : v;
        }
    }
}

static float dot_f32_scalar(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy_f32_scalar(float a, const float *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* The attention row kernels take the heads one at a time. */
static void dot_rows_f32_scalar(const float *q, int nh, const float *rows, int n, int hd, float scale, float *out,
                                size_t out_stride)
{
    for (int j = 0; j < nh; j++)
        for (int i = 0; i < n; i++)
            out[j * out_stride + i] = scale * dot_f32_scalar(q + j * hd, rows + (size_t)i * hd, hd);
}

static void axpy_rows_f32_scalar(const float *w, size_t w_stride, int nh, const float *rows, int n, int hd, float *y)
{
    for (int j = 0; j < nh; j++)
        for (int i = 0; i < n; i++)
            axpy_f32_scalar(w[j * w_stride + i], rows + (size_t)i * hd, y + j * hd, hd);
}

/* element i of a K/V row of F16 or int8 (type ENG_T_F16 or ENG_CPU_T_I8) as a float, exact */
static float kv_elem(int type, const void *row, size_t i)
{
    return type == ENG_T_F16 ? eng_f16_to_f32(((const uint16_t *)row)[i]) : (float)((const int8_t *)row)[i];
}

static void dot_rows_widened_scalar(int type, const float *q, int nh, const void *rows, int n, int hd, float scale,
                                    float *out, size_t out_stride)
{
    for (int j = 0; j < nh; j++)
        for (int i = 0; i < n; i++) {
            float s = 0.0f;
            for (int e = 0; e < hd; e++)
                s += q[j * hd + e] * kv_elem(type, rows, (size_t)i * hd + e);
            out[j * out_stride + i] = scale * s;
        }
}

static void axpy_rows_widened_scalar(int type, const float *w, size_t w_stride, int nh, const void *rows, int n,
                                     int hd, float *y)
{
    for (int j = 0; j < nh; j++)
        for (int i = 0; i < n; i++)
            for (int e = 0; e < hd; e++)
                y[j * hd + e] += w[j * w_stride + i] * kv_elem(type, rows, (size_t)i * hd + e);
}

static void dot_rows_f16_scalar(const float *q, int nh, const uint16_t *rows, int n, int hd, float scale, float *out,
                                size_t out_stride)
{
    dot_rows_widened_scalar(ENG_T_F16, q, nh, rows, n, hd, scale, out, out_stride);
}

static void axpy_rows_f16_scalar(const float *w, size_t w_stride, int nh, const uint16_t *rows, int n, int hd, float *y)
{
    axpy_rows_widened_scalar(ENG_T_F16, w, w_stride, nh, rows, n, hd, y);
}

static void dot_rows_i8_scalar(const float *q, int nh, const int8_t *rows, int n, int hd, float scale, float *out,
                               size_t out_stride)
{
    dot_rows_widened_scalar(ENG_CPU_T_I8, q, nh, rows, n, hd, scale, out, out_stride);
}

static void axpy_rows_i8_scalar(const float *w, size_t w_stride, int nh, const int8_t *rows, int n, int hd, float *y)
{
    axpy_rows_widened_scalar(ENG_CPU_T_I8, w, w_stride, nh, rows, n, hd, y);
}

static void i8_to_f32_scalar(const int8_t *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = (float)x[i];
}

static void to_f16_scalar(const float *x, uint16_t *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = eng_f32_to_f16(x[i]);
}

static void to_f32_scalar(const uint16_t *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = eng_f16_to_f32(x[i]);
}

static float exp_sum_scalar(float *x, int n)
{
    float s = 0.0f, max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        s += x[i];
    }
    return s;
}

static void silu_mul_scalar(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const eng_cpu_kernels_t eng_cpu_kernels_scalar = {
    .isa = ENG_CPU_ISA_SCALAR,
    .name = "scalar",
    .quantize_q8 = quantize_q8_scalar,
    .gemm = gemm_scalar,
    .dot_f32 = dot_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
    .dot_rows_f32 = dot_rows_f32_scalar,
    .dot_rows_f16 = dot_rows_f16_scalar,
    .axpy_rows_f32 = axpy_rows_f32_scalar,
    .axpy_rows_f16 = axpy_rows_f16_scalar,
    .dot_rows_i8 = dot_rows_i8_scalar,
    .axpy_rows_i8 = axpy_rows_i8_scalar,
    .to_f16 = to_f16_scalar,
    .to_f32 = to_f32_scalar,
    .i8_to_f32 = i8_to_f32_scalar,
    .exp_sum = exp_sum_scalar,
    .silu_mul = silu_mul_scalar,
};
