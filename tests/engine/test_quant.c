/* test_quant.c — block layouts decoded exactly from hand-built blocks, f16/bf16 conversions, and
 * quantise -> dequantise error bounds for every type sluice writes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/model.h"
#include "engine/quant.h"
#include "sched/status.h"

static void test_f16_conversions_are_exact_and_round_to_even(void **state)
{
    assert_true(eng_f16_to_f32(0x3c00) == 1.0f);
    assert_true(eng_f16_to_f32(0xc000) == -2.0f);
    assert_true(eng_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(eng_f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    assert_true(isinf(eng_f16_to_f32(0x7c00)) && isnan(eng_f16_to_f32(0x7e00)));
    for (uint32_t h = 0; h < 0x10000; h++) { /* every finite half survives a round trip */
        if ((h & 0x7c00) == 0x7c00) continue;
        assert_int_equal(eng_f32_to_f16(eng_f16_to_f32((uint16_t)h)), h);
    }
    assert_int_equal(eng_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie -> even */
    assert_int_equal(eng_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie -> even (up) */
    assert_int_equal(eng_f32_to_f16(70000.0f), 0x7c00);
    assert_int_equal(eng_f32_to_f16(ldexpf(1, -25)), 0x0000);
    assert_int_equal(eng_f32_to_bf16(1.0f), 0x3f80);
    assert_true(eng_bf16_to_f32(0xc040) == -3.0f);
}

static void test_dequant_hand_built_blocks_exactly(void **state)
{
    float y[256];
    eng_block_q4_0 q40 = {.d = eng_f32_to_f16(0.5f)};
    for (int j = 0; j < 16; j++) q40.qs[j] = (uint8_t)(j | (15 - j) << 4);
    eng_dequant_q4_0(&q40, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == (float)(j - 8) * 0.5f);
        assert_true(y[j + 16] == (float)(7 - j) * 0.5f);
    }
    eng_block_q4_1 q41 = {.d = eng_f32_to_f16(0.25f), .m = eng_f32_to_f16(-1.0f)};
    for (int j = 0; j < 16; j++) q41.qs[j] = (uint8_t)(j | (15 - j) << 4);
    eng_dequant_q4_1(&q41, y, 32);
    assert_true(y[3] == 3 * 0.25f - 1.0f && y[16] == 15 * 0.25f - 1.0f);
    eng_block_q8_0 q8 = {.d = eng_f32_to_f16(2.0f)};
    for (int j = 0; j < 32; j++) q8.qs[j] = (int8_t)(j - 16);
    eng_dequant_q8_0(&q8, y, 32);
    for (int j = 0; j < 32; j++) assert_true(y[j] == (float)(j - 16) * 2.0f);
    /* Q6_K: element e in half h, position l (0..31) of quarter r has its low nibble in
     * ql[64h + l + 32 (r & 1)] (high nibble when r >= 2), its top bits at qh[32h + l] >> 2r, and
     * the scale scales[8h + l / 16 + 2r]. Encode q = (e % 64) - 32 everywhere and check. */
    eng_block_q6_K k;
    memset(&k, 0, sizeof k);
    k.d = eng_f32_to_f16(0.5f);
    for (int s = 0; s < 16; s++) k.scales[s] = (int8_t)(s - 8);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = (e % 128) / 32, l = e % 32, q = e % 64;
        uint8_t *ql = &k.ql[64 * h + l + 32 * (r & 1)];
        *ql |= (uint8_t)((q & 15) << (r >= 2 ? 4 : 0));
        k.qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * r));
    }
    eng_dequant_q6_K(&k, y, 256);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = (e % 128) / 32, l = e % 32;
        float want = 0.5f * (float)(k.scales[8 * h + l / 16 + 2 * r]) * (float)(e % 64 - 32);
        if (y[e] != want) fail_msg("q6_K element %d: %g, expected %g", e, y[e], want);
    }
    /* Q4_K: sub-block j (32 elements) has scale sc_j = j + 1 and minimum m_j = 2j + 3 (j >= 4:
     * low nibbles in scales[j + 4], top 2 bits in scales[j - 4] / scales[j]); element l of
     * sub-block 2p / 2p+1 is the low / high nibble of qs[32p + l]. Encode q = (e * 7) % 16. */
    eng_block_q4_K k4;
    memset(&k4, 0, sizeof k4);
    k4.d = eng_f32_to_f16(0.25f);
    k4.dmin = eng_f32_to_f16(0.125f);
    for (int j = 0; j < 8; j++) {
        const int sc = j + 1 + (j >= 4 ? 40 : 0), m = 2 * j + 3 + (j >= 4 ? 32 : 0);
        if (j < 4) {
            k4.scales[j] |= (uint8_t)sc;
            k4.scales[j + 4] |= (uint8_t)m;
        } else {
            k4.scales[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
            k4.scales[j - 4] |= (uint8_t)((sc >> 4) << 6);
            k4.scales[j] |= (uint8_t)((m >> 4) << 6);
        }
    }
    for (int e = 0; e < 256; e++) {
        const int j = e / 32, l = e % 32, q = (e * 7) % 16;
        k4.qs[32 * (j / 2) + l] |= (uint8_t)(q << (j & 1 ? 4 : 0));
    }
    eng_dequant_q4_K(&k4, y, 256);
    /* Q5_K: Q4_K's block above with fifth bits: element l of sub-block j adds 16 when bit j of
     * qh[l] is set; set it where (l + j) % 3 == 0 */
    eng_block_q5_K k5k;
    memset(&k5k, 0, sizeof k5k);
    k5k.d = k4.d;
    k5k.dmin = k4.dmin;
    memcpy(k5k.scales, k4.scales, sizeof k5k.scales);
    memcpy(k5k.qs, k4.qs, sizeof k5k.qs);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++)
            if ((l + j) % 3 == 0)
                k5k.qh[l] |= (uint8_t)(1 << j);
    float y5k[256];
    eng_dequant_q5_K(&k5k, y5k, 256);
    for (int e = 0; e < 256; e++) {
        const int j = e / 32, l = e % 32, sc = j + 1 + (j >= 4 ? 40 : 0), m = 2 * j + 3 + (j >= 4 ? 32 : 0);
        const int q = (e * 7) % 16 + ((l + j) % 3 == 0 ? 16 : 0);
        const float want = 0.25f * (float)sc * (float)q - 0.125f * (float)m;
        if (y5k[e] != want) fail_msg("q5_K element %d: %g, expected %g", e, y5k[e], want);
    }
    /* Q5_0: element j's low 4 bits in qs[j % 16] (high nibble for j >= 16), its fifth bit at bit
     * j of qh; q = (j * 11) % 32 */
    eng_block_q5_0 k5;
    memset(&k5, 0, sizeof k5);
    k5.d = eng_f32_to_f16(0.5f);
    for (int j = 0; j < 32; j++) {
        const int q5 = (j * 11) % 32;
        k5.qs[j % 16] |= (uint8_t)((q5 & 15) << (j >= 16 ? 4 : 0));
        k5.qh[j / 8] |= (uint8_t)((q5 >> 4) << (j % 8));
    }
    float y5[32];
    /* Q5_1: the same bits, value q * d + m */
    eng_block_q5_1 k51 = {.d = k5.d, .m = eng_f32_to_f16(-1.5f)};
    memcpy(k51.qh, k5.qh, 4);
    memcpy(k51.qs, k5.qs, 16);
    eng_dequant_q5_1(&k51, y5, 32);
    for (int j = 0; j < 32; j++)
        if (y5[j] != 0.5f * (float)((j * 11) % 32) - 1.5f)
            fail_msg("q5_1 element %d: %g, expected %g", j, y5[j], 0.5f * (float)((j * 11) % 32) - 1.5f);
    eng_dequant_q5_0(&k5, y5, 32);
    for (int j = 0; j < 32; j++)
        if (y5[j] != 0.5f * (float)((j * 11) % 32 - 16))
            fail_msg("q5_0 element %d: %g, expected %g", j, y5[j], 0.5f * (float)((j * 11) % 32 - 16));
    for (int e = 0; e < 256; e++) {
        const int j = e / 32, sc = j + 1 + (j >= 4 ? 40 : 0), m = 2 * j + 3 + (j >= 4 ? 32 : 0);
        const float want = 0.25f * (float)sc * (float)((e * 7) % 16) - 0.125f * (float)m;
        if (y[e] != want) fail_msg("q4_K element %d: %g, expected %g", e, y[e], want);
    }
}

/* quantise -> dequantise stays within the format's step: half a quantum per block */
static void test_quant_round_trip_error_bounds(void **state)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t buf[N * 4];
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) * 0x1p-53 * 2 - 1) * (i % 64 < 32 ? 1.0f : 0.01f);
    }
    const struct { int type; double rel; } cases[] = {
        {ENG_T_F32, 0}, {ENG_T_F16, 1.0 / 2048}, {ENG_T_BF16, 1.0 / 256},
        {ENG_T_Q8_0, 0.5 / 127 + 1e-3}, {ENG_T_Q4_0, 1.0 / 8 + 1e-3} /* the end opposite the scale clamps: one step */, {ENG_T_Q4_1, 0.5 / 15 * 2 + 1e-3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(eng_quantize_row(cases[c].type, x, buf, N), SL_OK);
        assert_int_equal(eng_dequantize_row(cases[c].type, buf, y, N), SL_OK);
        for (int b = 0; b < N; b += 32) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b + j]));
            for (int j = 0; j < 32; j++)
                if (fabs((double)y[b + j] - x[b + j]) > cases[c].rel * amax + 1e-7)
                    fail_msg("%s element %d: %g -> %g", eng_type_name(cases[c].type), b + j, x[b + j], y[b + j]);
        }
    }
    assert_int_equal(eng_quantize_row(ENG_T_Q6_K, x, buf, 256), SL_EUNSUPPORTED);
    assert_int_equal(eng_quantize_row(ENG_T_Q4_K, x, buf, 256), SL_EUNSUPPORTED);
    assert_int_equal(eng_quantize_row(ENG_T_Q5_0, x, buf, 256), SL_EUNSUPPORTED);
    assert_int_equal(eng_quantize_row(ENG_T_Q4_0, x, buf, 33), SL_EINVAL);
    assert_int_equal(eng_quantize_row(ENG_T_Q5_K, x, buf, 256), SL_EUNSUPPORTED);
    assert_int_equal(eng_dequantize_row(11, buf, y, 256), SL_EINVAL); /* q3_K: not read */
}

static void test_type_table(void **state)
{
    assert_string_equal(eng_type_name(ENG_T_Q4_1), "q4_1");
    assert_string_equal(eng_type_name(12), "q4_K");
    assert_int_equal(eng_type_block_bytes(ENG_T_Q4_K), 144);
    assert_int_equal(eng_type_block_elems(ENG_T_Q4_K), 256);
    assert_int_equal(eng_type_block_bytes(ENG_T_Q5_0), 22);
    assert_string_equal(eng_type_name(1000), "?");
    assert_int_equal(eng_type_block_bytes(ENG_T_Q6_K), 210);
    assert_int_equal(eng_type_row_bytes(ENG_T_Q8_0, 576), 18 * 34);
    assert_int_equal(eng_type_row_bytes(ENG_T_Q8_0, 577), 0);
    assert_int_equal(eng_type_row_bytes(ENG_T_BF16, 3), 6);
    assert_int_equal(eng_type_block_elems(11), 0); /* q3_K: not read */
    assert_int_equal(eng_type_block_bytes(ENG_T_Q5_K), 176);
    assert_int_equal(eng_type_block_bytes(ENG_T_Q5_1), 24);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_conversions_are_exact_and_round_to_even),
        cmocka_unit_test(test_dequant_hand_built_blocks_exactly),
        cmocka_unit_test(test_quant_round_trip_error_bounds),
        cmocka_unit_test(test_type_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
