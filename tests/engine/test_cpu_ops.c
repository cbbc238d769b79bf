/* test_cpu_ops.c — RMSNorm and RoPE (engine/cpu/ops.h), whichever instruction set's clone this
 * CPU runs, bitwise against plain scalar references: the sum of squares in double, element i
 * added to running sum i % 8, and each pair rotated as (a cos - b sin, a sin + b cos). Odd sizes,
 * vector tails, rows rotated in pieces. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/uniform.h"
#include "engine/cpu/ops.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float frand(void) /* uniform in [-4, 4) */
{
    return 4.0f * test_uniform(&rng);
}

static void rmsnorm_ref(const float *x, const float *w, float *y, int n, float eps)
{
    double part[8] = {0};
    for (int i = 0; i < n; i++)
        part[i < n - n % 8 ? i % 8 : 0] += (double)x[i] * x[i];
    double ss = 0.0;
    for (int j = 0; j < 8; j++)
        ss += part[j];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

static void test_rmsnorm_is_bitwise_the_scalar_reference(void **state)
{
    enum { MAX = 1100 };
    static float x[MAX], w[MAX], y[MAX], ref[MAX];
    const int sizes[] = {1, 7, 8, 9, 15, 16, 17, 64, 576, 1000, 1093};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        const int n = sizes[s];
        for (int i = 0; i < n; i++)
            x[i] = frand(), w[i] = frand();
        rmsnorm_ref(x, w, ref, n, 1e-5f);
        eng_cpu_rmsnorm(x, w, y, n, 1e-5f);
        assert_memory_equal(y, ref, (size_t)n * sizeof(float));
        eng_cpu_rmsnorm(x, w, x, n, 1e-5f); /* in place */
        assert_memory_equal(x, ref, (size_t)n * sizeof(float));
    }
}

static void test_rope_table_holds_cosine_and_signed_sine_per_element(void **state)
{
    float cs[2 * 128];
    const int hd = 128, pos = 37;
    const float theta = 10000.0f;
    eng_cpu_rope_table(pos, hd, theta, cs);
    for (int i = 0; i < hd / 2; i++) {
        const double a = pos * pow(theta, -2.0 * i / hd);
        assert_true(cs[2 * i] == (float)cos(a) && cs[2 * i + 1] == (float)cos(a));
        assert_true(cs[hd + 2 * i] == -(float)sin(a) && cs[hd + 2 * i + 1] == (float)sin(a));
    }
}

static void rope_ref(float *x, int n, int hd, int pos, float theta)
{
    for (int e = 0; e < n; e += 2) {
        const int i = e % hd / 2;
        const double angle = pos * pow(theta, -2.0 * i / hd);
        const float c = (float)cos(angle), s = (float)sin(angle), a = x[e], b = x[e + 1];
        x[e] = a * c - b * s;
        x[e + 1] = a * s + b * c;
    }
}

static void test_rope_is_bitwise_the_scalar_reference_whole_or_in_pieces(void **state)
{
    enum { MAX = 9 * 128 };
    static float in[MAX], ref[MAX], out[MAX], cs[2 * 128];
    const struct {
        int hd, heads, pos;
    } cases[] = {{64, 9, 0}, {64, 3, 1}, {64, 9, 271}, {128, 4, 4095}, {12, 5, 33}, {2, 3, 7}, {48, 2, 100}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int hd = cases[c].hd, n = hd * cases[c].heads;
        for (int i = 0; i < n; i++)
            in[i] = frand();
        memcpy(ref, in, sizeof(float) * n);
        rope_ref(ref, n, hd, cases[c].pos, 10000.0f);
        eng_cpu_rope_table(cases[c].pos, hd, 10000.0f, cs);
        /* whole, then in pieces of 16 and of 6 elements, as threads rotate their chunks' rows */
        const int pieces[] = {n, 16, 6};
        for (int p = 0; p < 3; p++) {
            const int piece = pieces[p];
            memcpy(out, in, sizeof(float) * n);
            for (int e = 0; e < n; e += piece)
                eng_cpu_rope(out, e, e + piece < n ? e + piece : n, hd, cs);
            assert_memory_equal(out, ref, sizeof(float) * n);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_is_bitwise_the_scalar_reference),
        cmocka_unit_test(test_rope_table_holds_cosine_and_signed_sine_per_element),
        cmocka_unit_test(test_rope_is_bitwise_the_scalar_reference_whole_or_in_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
