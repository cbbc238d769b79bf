/* quant.h — the ggml tensor formats sluice reads: block layouts, scalar quantisers and exact
 * scalar dequantisers (the reference the SIMD kernels are tested against).
 *
 * Block layouts (little-endian, packed, as ggml stores them):
 *   Q4_0  32 elements, 18 bytes: f16 d; u8 qs[16]. Byte j holds element j in its low nibble and
 *         element j+16 in its high nibble; value = (q - 8) * d.
 *   Q4_1  32 elements, 20 bytes: f16 d; f16 m; u8 qs[16] (nibbles as Q4_0); value = q * d + m.
 *   Q8_0  32 elements, 34 bytes: f16 d; i8 qs[32]; value = q * d.
 *   Q5_0  32 elements, 22 bytes: f16 d; u8 qh[4]; u8 qs[16]. Nibbles as Q4_0, and bit j of the
 *         little-endian 32-bit qh is element j's fifth bit; value = (q - 16) * d.
 *   Q5_1  32 elements, 24 bytes: f16 d; f16 m; u8 qh[4]; u8 qs[16] (bits as Q5_0); value = q * d + m.
 *   Q6_K  256 elements, 210 bytes: u8 ql[128] (low 4 bits); u8 qh[64] (high 2 bits); i8
 *         scales[16] (one per 16 elements); f16 d. Two halves of 128 elements; in half h, for
 *         l in 0..31 with ql' = ql + 64h, qh' = qh + 32h, sc' = scales + 8h, s = l / 16:
 *           y[l]      = d * sc'[s+0] * ((ql'[l]    & 15 | (qh'[l] >> 0 & 3) << 4) - 32)
 *           y[l + 32] = d * sc'[s+2] * ((ql'[l+32] & 15 | (qh'[l] >> 2 & 3) << 4) - 32)
 *           y[l + 64] = d * sc'[s+4] * ((ql'[l]   >> 4 | (qh'[l] >> 4 & 3) << 4) - 32)
 *           y[l + 96] = d * sc'[s+6] * ((ql'[l+32] >> 4 | (qh'[l] >> 6 & 3) << 4) - 32)
 *   Q4_K  256 elements, 144 bytes: f16 d; f16 dmin; u8 scales[12]; u8 qs[128]. Eight sub-blocks of
 *         32 elements, each with a 6-bit scale sc and a 6-bit minimum m (eng_q4_K_scales_mins);
 *         sub-blocks 2p and 2p+1 share bytes qs[32p .. 32p+31], 2p in the low nibbles, 2p+1 in
 *         the high ones; value = d * sc * q - dmin * m. (Q4_K_M files are Q4_K and Q6_K.)
 *   Q5_K  256 elements, 176 bytes: f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]. As Q4_K,
 *         with a fifth bit: element l of sub-block j adds 16 when bit j of qh[l] is set.
 *   F16 IEEE half, BF16 the top 16 bits of an f32, F32.
 *
 * The quantisers follow ggml's reference rounding (Q8_0: d = amax/127, q = round(x/d); Q4_0:
 * d = (value of largest magnitude) / -8, q = min(15, trunc(x/d + 8.5)); Q4_1: d = (max-min)/15,
 * m = min, q = min(15, trunc((x-m)/d + 0.5))), so files we write read back as ggml reads them.
 * None of these functions allocate; none can fail except on a bad type or length (below).
 */
#ifndef SLUICE_ENGINE_QUANT_H
#define SLUICE_ENGINE_QUANT_H

#include <stdint.h>
#include <string.h>

#define ENG_QK 32    /* elements per Q4_0 / Q4_1 / Q8_0 block */
#define ENG_QK_K 256 /* elements per Q6_K / Q4_K super-block */

typedef struct eng_block_q4_0 {
    uint16_t d;       /* f16 scale */
    uint8_t qs[16];
} eng_block_q4_0;

typedef struct eng_block_q4_1 {
    uint16_t d;       /* f16 scale */
    uint16_t m;       /* f16 minimum */
    uint8_t qs[16];
} eng_block_q4_1;

typedef struct eng_block_q8_0 {
    uint16_t d;       /* f16 scale */
    int8_t qs[32];
} eng_block_q8_0;

typedef struct eng_block_q6_K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;       /* f16 super-block scale */
} eng_block_q6_K;

typedef struct eng_block_q5_0 {
    uint16_t d;       /* f16 scale */
    uint8_t qh[4];    /* fifth bits, element j at bit j */
    uint8_t qs[16];
} eng_block_q5_0;

typedef struct eng_block_q5_1 {
    uint16_t d;       /* f16 scale */
    uint16_t m;       /* f16 minimum */
    uint8_t qh[4];
    uint8_t qs[16];
} eng_block_q5_1;

typedef struct eng_block_q4_K {
    uint16_t d;       /* f16 scale of the sub-block scales */
    uint16_t dmin;    /* f16 scale of the sub-block minimums */
    uint8_t scales[12];
    uint8_t qs[128];
} eng_block_q4_K;

typedef struct eng_block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[32];   /* bit j of qh[l]: fifth bit of element l of sub-block j */
    uint8_t qs[128];
} eng_block_q5_K;

/* Element e's (0..31) 5-bit value in a Q5_0 / Q5_1 block: nibble of qs[e % 16] (high for e >= 16)
 * and bit e of the little-endian qh. */
static inline int eng_q5_value(const uint8_t qh[4], const uint8_t qs[16], int e)
{
    const int nib = e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
    return nib | (qh[e / 8] >> (e % 8) & 1) << 4;
}

/* All 8 sub-blocks' 6-bit scales and minimums of a Q4_K / Q5_K super-block's 12 scale bytes, in
 * byte j (bits 8j..8j+7) of *sc and *m: j < 4 in the low 6 bits of scales[j] and scales[j + 4];
 * j >= 4 in the nibbles of scales[j + 4] with their top 2 bits in the top 2 bits of scales[j - 4]
 * and scales[j]. Four bytes at a time, with masks (the CPU kernels decode a super-block at once). */
static inline void eng_q4_K_scales_mins(const uint8_t *scales, uint64_t *sc, uint64_t *m)
{
    uint32_t u[3];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(u, scales, 12); /* three loads (assembling bytes cost the decode path 6%) */
#else
    for (int i = 0; i < 3; i++)
        u[i] = (uint32_t)scales[4 * i] | (uint32_t)scales[4 * i + 1] << 8 |
               (uint32_t)scales[4 * i + 2] << 16 | (uint32_t)scales[4 * i + 3] << 24;
#endif
    const uint32_t six = 0x3f3f3f3f, four = 0x0f0f0f0f, two = 0x03030303;
    const uint32_t sc_hi = (u[2] & four) | ((u[0] >> 6) & two) << 4;
    const uint32_t m_hi = (u[2] >> 4 & four) | ((u[1] >> 6) & two) << 4;
    *sc = (uint64_t)(u[0] & six) | (uint64_t)sc_hi << 32;
    *m = (uint64_t)(u[1] & six) | (uint64_t)m_hi << 32;
}

/* Sub-block j's scale in sc[j] and minimum in m[j], j = 0..7 (eng_q4_K_scales_mins), for code that
 * walks a super-block's sub-blocks in turn. */
static inline void eng_q4_K_unpack_scales(const uint8_t *scales, uint8_t sc[8], uint8_t m[8])
{
    uint64_t s, n;
    eng_q4_K_scales_mins(scales, &s, &n);
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(s >> 8 * j);
        m[j] = (uint8_t)(n >> 8 * j);
    }
}

_Static_assert(sizeof(eng_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(eng_block_q4_1) == 20, "q4_1 block is 20 bytes");
_Static_assert(sizeof(eng_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(eng_block_q6_K) == 210, "q6_K block is 210 bytes");
_Static_assert(sizeof(eng_block_q4_K) == 144, "q4_K block is 144 bytes");
_Static_assert(sizeof(eng_block_q5_0) == 22, "q5_0 block is 22 bytes");
_Static_assert(sizeof(eng_block_q5_K) == 176, "q5_K block is 176 bytes");
_Static_assert(sizeof(eng_block_q5_1) == 24, "q5_1 block is 24 bytes");

/* Half and bfloat16 conversions. f32->f16 rounds to nearest even, saturating to inf; NaN stays
 * NaN. f32->bf16 rounds to nearest even. Cannot fail. */
float eng_f16_to_f32(uint16_t h);
uint16_t eng_f32_to_f16(float f);
float eng_bf16_to_f32(uint16_t h);
uint16_t eng_f32_to_bf16(float f);

/* Per-type scalar dequantisers: n elements (a multiple of the block size) from src to dst. */
void eng_dequant_q4_0(const eng_block_q4_0 *src, float *dst, int64_t n);
void eng_dequant_q4_1(const eng_block_q4_1 *src, float *dst, int64_t n);
void eng_dequant_q8_0(const eng_block_q8_0 *src, float *dst, int64_t n);
void eng_dequant_q6_K(const eng_block_q6_K *src, float *dst, int64_t n);
void eng_dequant_q4_K(const eng_block_q4_K *src, float *dst, int64_t n);
void eng_dequant_q5_0(const eng_block_q5_0 *src, float *dst, int64_t n);
void eng_dequant_q5_K(const eng_block_q5_K *src, float *dst, int64_t n);
void eng_dequant_q5_1(const eng_block_q5_1 *src, float *dst, int64_t n);

/* Dequantises a row of n elements of any eng_type_t (model.h). SL_EINVAL for an unknown type or
 * an n that is not a multiple of the type's block size (dst untouched). */
int eng_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantises a row of n floats into type: F32, F16, BF16, Q8_0, Q4_0, Q4_1. SL_EUNSUPPORTED for
 * Q6_K, Q4_K, Q5_K, Q5_0 and Q5_1 (sluice reads them, never writes them), SL_EINVAL for an unknown type or a
 * bad n. */
int eng_quantize_row(int type, const float *src, void *dst, int64_t n);

#endif
