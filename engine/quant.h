/* quant.h — the ggml tensor formats sluice reads: block layouts, scalar quantisers and exact
 * scalar dequantisers (the reference the SIMD kernels are tested against).
 *
 * Block layouts (little-endian, packed, as ggml stores them):
 *   Q4_0  32 elements, 18 bytes: f16 d; u8 qs[16]. Byte j holds element j in its low nibble and
 *         element j+16 in its high nibble; value = (q - 8) * d.
 *   Q4_1  32 elements, 20 bytes: f16 d; f16 m; u8 qs[16] (nibbles as Q4_0); value = q * d + m.
 *   Q8_0  32 elements, 34 bytes: f16 d; i8 qs[32]; value = q * d.
 *   Q6_K  256 elements, 210 bytes: u8 ql[128] (low 4 bits); u8 qh[64] (high 2 bits); i8
 *         scales[16] (one per 16 elements); f16 d. Two halves of 128 elements; in half h, for
 *         l in 0..31 with ql' = ql + 64h, qh' = qh + 32h, sc' = scales + 8h, s = l / 16:
 *           y[l]      = d * sc'[s+0] * ((ql'[l]    & 15 | (qh'[l] >> 0 & 3) << 4) - 32)
 *           y[l + 32] = d * sc'[s+2] * ((ql'[l+32] & 15 | (qh'[l] >> 2 & 3) << 4) - 32)
 *           y[l + 64] = d * sc'[s+4] * ((ql'[l]   >> 4 | (qh'[l] >> 4 & 3) << 4) - 32)
 *           y[l + 96] = d * sc'[s+6] * ((ql'[l+32] >> 4 | (qh'[l] >> 6 & 3) << 4) - 32)
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

#define ENG_QK 32    /* elements per Q4_0 / Q4_1 / Q8_0 block */
#define ENG_QK_K 256 /* elements per Q6_K super-block */

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

_Static_assert(sizeof(eng_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(eng_block_q4_1) == 20, "q4_1 block is 20 bytes");
_Static_assert(sizeof(eng_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(eng_block_q6_K) == 210, "q6_K block is 210 bytes");

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

/* Dequantises a row of n elements of any eng_type_t (model.h). SL_EINVAL for an unknown type or
 * an n that is not a multiple of the type's block size (dst untouched). */
int eng_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantises a row of n floats into type: F32, F16, BF16, Q8_0, Q4_0, Q4_1. SL_EUNSUPPORTED for
 * Q6_K (sluice reads it, never writes it), SL_EINVAL for an unknown type or a bad n. */
int eng_quantize_row(int type, const float *src, void *dst, int64_t n);

#endif
