/* driver.c — scripts/kernel-ab.sh's timing: one matrix product timed with two builds of the
 * kernels (kernel_ab_base, kernel_ab_test: table.c) in one process, in alternating turns of about
 * a millisecond, base first in one round and test first in the next. On a shared VM whose
 * speed swings by 1.5-2x for seconds at a time, two runs of two programs compare phases more
 * than code; turns this short see the same phase, and the median of the rounds' time ratios
 * resolves ~1% (the same header against itself: medians 0.998-1.005).
 *
 *   driver ROWS K TYPE TOKENS [ROUNDS]   TYPE Q4_0, Q4_1 or Q8_0; weights packed when ROWS % 16 == 0
 *
 * Prints both rates (medians), the median test/base time ratio with its quartiles, and whether
 * the two builds' outputs are bitwise equal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/cpu/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "tests/bench/bench_rows.h"
#include "tests/bench/bench_util.h"

extern const eng_cpu_kernels_t kernel_ab_base, kernel_ab_test;

/* seconds per call of kt->gemm(g), over iters calls */
static double time_calls(const eng_cpu_kernels_t *kt, const eng_cpu_gemm_t *g, int rows, int iters)
{
    double t0 = bench_now_s();
    for (int i = 0; i < iters; i++)
        kt->gemm(g, 0, rows);
    return (bench_now_s() - t0) / iters;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: driver ROWS K TYPE TOKENS [ROUNDS]\n");
        return 2;
    }
    const int rows = atoi(argv[1]), k = atoi(argv[2]), n_tok = atoi(argv[4]);
    const int rounds = argc > 5 ? atoi(argv[5]) : 201;
    const int type = strcasecmp(argv[3], "Q4_0") == 0   ? ENG_T_Q4_0
                     : strcasecmp(argv[3], "Q4_1") == 0 ? ENG_T_Q4_1
                     : strcasecmp(argv[3], "Q8_0") == 0 ? ENG_T_Q8_0
                                                        : -1;
    if (rows <= 0 || k <= 0 || k % 32 != 0 || n_tok <= 0 || rounds <= 0 || type < 0) {
        fprintf(stderr, "driver: ROWS, TOKENS and ROUNDS must be positive, K a multiple of 32, TYPE Q4_0, Q4_1 "
                        "or Q8_0\n");
        return 2;
    }
    if (eng_cpu_isa_detect() < kernel_ab_base.isa) { /* also asks Linux for the AMX tile state */
        static const char *const isa_names[ENG_CPU_ISA_COUNT] = {"scalar", "AVX2", "AVX-512", "AMX"};
        fprintf(stderr, "driver: this CPU does not run the %s kernels\n", isa_names[kernel_ab_base.isa]);
        return 2;
    }
    const size_t rb = eng_type_row_bytes(type, k), xs = eng_cpu_q8_row_bytes(k);
    const int packed = eng_cpu_packable(type, rows);
    uint8_t *w = malloc(rb * rows), *wp = malloc(rb * rows);
    char *x = malloc(xs * n_tok);
    /* both outputs on cache-line boundaries: a misaligned one made its side 2-4% slower */
    const size_t out_bytes = (sizeof(float) * n_tok * rows + 63) & ~(size_t)63;
    float *f = malloc(sizeof(float) * k), *out[2] = {aligned_alloc(64, out_bytes), aligned_alloc(64, out_bytes)};
    double *ratio = malloc(sizeof(double) * rounds * 3), *t_base = ratio + rounds, *t_test = t_base + rounds;
    if (!w || !wp || !x || !f || !out[0] || !out[1] || !ratio)
        return 1;
    srand(1);
    bench_random_weights(type, w, rb, rows, k, f);
    if (packed)
        eng_cpu_pack16(type, w, k, rows, wp);
    bench_random_q8(&kernel_ab_base, x, xs, n_tok, k, f);
    eng_cpu_gemm_t g[2];
    for (int v = 0; v < 2; v++)
        g[v] = (eng_cpu_gemm_t){.type = type, .w = packed ? wp : w, .w_stride = rb, .x = x, .x_stride = xs,
                                .n_tok = n_tok, .k = k, .out = out[v], .ldo = (size_t)rows, .packed = packed};
    kernel_ab_base.gemm(&g[0], 0, rows);
    kernel_ab_test.gemm(&g[1], 0, rows);
    const int same = memcmp(out[0], out[1], sizeof(float) * n_tok * rows) == 0;
    const int iters = 1 + (int)(2e7 / ((double)rows * k * n_tok)); /* ~0.1-1 ms a turn */
    for (int r = 0; r < rounds; r++) {
        if (r % 2 == 0) {
            t_base[r] = time_calls(&kernel_ab_base, &g[0], rows, iters);
            t_test[r] = time_calls(&kernel_ab_test, &g[1], rows, iters);
        } else {
            t_test[r] = time_calls(&kernel_ab_test, &g[1], rows, iters);
            t_base[r] = time_calls(&kernel_ab_base, &g[0], rows, iters);
        }
        ratio[r] = t_test[r] / t_base[r];
    }
    qsort(ratio, rounds, sizeof(double), bench_cmp_double);
    qsort(t_base, rounds, sizeof(double), bench_cmp_double);
    qsort(t_test, rounds, sizeof(double), bench_cmp_double);
    const double macs = (double)rows * k * n_tok;
    printf("%d x %d %s%s, %d tokens: base %.1f, test %.1f GMAC/s (medians of %d rounds); test/base time %.3f "
           "(quartiles %.3f..%.3f); outputs %s\n", rows, k, argv[3], packed ? " packed" : "", n_tok,
           macs / t_base[rounds / 2] * 1e-9, macs / t_test[rounds / 2] * 1e-9, rounds, ratio[rounds / 2],
           ratio[rounds / 4], ratio[3 * rounds / 4], same ? "bitwise equal" : "DIFFER");
    free(w); free(wp); free(x); free(f); free(out[0]); free(out[1]); free(ratio);
    return 0;
}
