/* quant.c — scalar quantisers and dequantisers for the ggml block formats (layouts in quant.h).
 *
 * These are the reference: plain loops, one element at a time, written to be read. The SIMD
 * kernels in engine/cpu/ are tested against them.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "model.h"
#include "sched/status.h"

/* ---------------------------------------------------------------- f16 / bf16 ------------------ */

float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13); /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign; /* zero */
    } else {
        /* subnormal half: man * 2^-24, normalise into an f32 */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t eng_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return sign | 0x7e00; /* NaN */
    if (absx >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {
        /* result is subnormal (or zero): value / 2^-24, rounded to nearest even */
        if (absx < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 + (112 - e) + 1 - 1 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    /* normal: drop 13 mantissa bits with round to nearest even (a carry may bump the exponent) */
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float eng_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t eng_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ---------------------------------------------------------------- dequantise ------------------ */

void eng_dequant_q4_0(const eng_block_q4_0 *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = eng_f16_to_f32(src[b].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((src[b].qs[j] & 0x0f) - 8) * d;
            dst[j + 16] = (float)((src[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void eng_dequant_q4_1(const eng_block_q4_1 *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = eng_f16_to_f32(src[b].d), m = eng_f16_to_f32(src[b].m);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(src[b].qs[j] & 0x0f) * d + m;
            dst[j + 16] = (float)(src[b].qs[j] >> 4) * d + m;
        }
    }
}

void eng_dequant_q8_0(const eng_block_q8_0 *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        float d = eng_f16_to_f32(src[b].d);
        for (int j = 0; j < ENG_QK; j++) dst[j] = (float)src[b].qs[j] * d;
    }
}

void eng_dequant_q6_K(const eng_block_q6_K *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK_K; b++) {
        float d = eng_f16_to_f32(src[b].d);
        for (int h = 0; h < 2; h++, dst += 128) {
            const uint8_t *ql = src[b].ql + 64 * h, *qh = src[b].qh + 32 * h;
            const int8_t *sc = src[b].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int s = l / 16;
                int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0 & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2 & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
                dst[l] = d * (float)sc[s + 0] * (float)q1;
                dst[l + 32] = d * (float)sc[s + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[s + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[s + 6] * (float)q4;
            }
        }
    }
}

void eng_dequant_q4_K(const eng_block_q4_K *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK_K; b++) {
        const float d = eng_f16_to_f32(src[b].d), dmin = eng_f16_to_f32(src[b].dmin);
        uint8_t sc[8], m[8];
        eng_q4_K_unpack_scales(src[b].scales, sc, m);
        for (int p = 0; p < 4; p++, dst += 64) {
            const uint8_t *q = src[b].qs + 32 * p;
            for (int l = 0; l < 32; l++) {
                dst[l] = d * (float)sc[2 * p] * (float)(q[l] & 15) - dmin * (float)m[2 * p];
                dst[l + 32] = d * (float)sc[2 * p + 1] * (float)(q[l] >> 4) - dmin * (float)m[2 * p + 1];
            }
        }
    }
}

void eng_dequant_q5_0(const eng_block_q5_0 *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        const float d = eng_f16_to_f32(src[b].d);
        for (int e = 0; e < ENG_QK; e++)
            dst[e] = (float)(eng_q5_value(src[b].qh, src[b].qs, e) - 16) * d;
    }
}

void eng_dequant_q5_1(const eng_block_q5_1 *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, dst += ENG_QK) {
        const float d = eng_f16_to_f32(src[b].d), m = eng_f16_to_f32(src[b].m);
        for (int e = 0; e < ENG_QK; e++)
            dst[e] = (float)eng_q5_value(src[b].qh, src[b].qs, e) * d + m;
    }
}

void eng_dequant_q5_K(const eng_block_q5_K *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK_K; b++) {
        const float d = eng_f16_to_f32(src[b].d), dmin = eng_f16_to_f32(src[b].dmin);
        uint8_t sc[8], m[8];
        eng_q4_K_unpack_scales(src[b].scales, sc, m);
        for (int j = 0; j < 8; j++, dst += 32) {
            const uint8_t *q = src[b].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                const int v = ((j & 1) ? q[l] >> 4 : q[l] & 15) | (src[b].qh[l] >> j & 1) << 4;
                dst[l] = d * (float)sc[j] * (float)v - dmin * (float)m[j];
            }
        }
    }
}

static int row_ok(int type, int64_t n)
{
    int be = eng_type_block_elems(type);
    return be > 0 && n >= 0 && n % be == 0;
}

int eng_dequantize_row(int type, const void *src, float *dst, int64_t n)
{
    if (!row_ok(type, n)) return SL_EINVAL;
    const uint16_t *h = src;
    switch (type) {
    case ENG_T_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case ENG_T_F16: for (int64_t i = 0; i < n; i++) dst[i] = eng_f16_to_f32(h[i]); break;
    case ENG_T_BF16: for (int64_t i = 0; i < n; i++) dst[i] = eng_bf16_to_f32(h[i]); break;
    case ENG_T_Q4_0: eng_dequant_q4_0(src, dst, n); break;
    case ENG_T_Q4_1: eng_dequant_q4_1(src, dst, n); break;
    case ENG_T_Q8_0: eng_dequant_q8_0(src, dst, n); break;
    case ENG_T_Q4_K: eng_dequant_q4_K(src, dst, n); break;
    case ENG_T_Q5_0: eng_dequant_q5_0(src, dst, n); break;
    case ENG_T_Q5_K: eng_dequant_q5_K(src, dst, n); break;
    case ENG_T_Q5_1: eng_dequant_q5_1(src, dst, n); break;
    default: eng_dequant_q6_K(src, dst, n); break;
    }
    return SL_OK;
}

/* ---------------------------------------------------------------- quantise -------------------- */

static void quant_q8_0(const float *x, eng_block_q8_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = 0;
        for (int j = 0; j < ENG_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = eng_f32_to_f16(d);
        for (int j = 0; j < ENG_QK; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q4_0(const float *x, eng_block_q4_0 *y, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float amax = 0, max = 0; /* max: the signed value of largest magnitude */
        for (int j = 0; j < ENG_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = eng_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quant_q4_1(const float *x, eng_block_q4_1 *y, int64_t n)
{
    for (int64_t b = 0; b < n / ENG_QK; b++, x += ENG_QK) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < ENG_QK; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        float d = (hi - lo) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = eng_f32_to_f16(d);
        y[b].m = eng_f32_to_f16(lo);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)((x[j] - lo) * id + 0.5f), q1 = (int)((x[j + 16] - lo) * id + 0.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

int eng_quantize_row(int type, const float *src, void *dst, int64_t n)
{
    if (!row_ok(type, n)) return SL_EINVAL;
    uint16_t *h = dst;
    switch (type) {
    case ENG_T_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case ENG_T_F16: for (int64_t i = 0; i < n; i++) h[i] = eng_f32_to_f16(src[i]); break;
    case ENG_T_BF16: for (int64_t i = 0; i < n; i++) h[i] = eng_f32_to_bf16(src[i]); break;
    case ENG_T_Q4_0: quant_q4_0(src, dst, n); break;
    case ENG_T_Q4_1: quant_q4_1(src, dst, n); break;
    case ENG_T_Q8_0: quant_q8_0(src, dst, n); break;
    default: return SL_EUNSUPPORTED;
    }
    return SL_OK;
}
