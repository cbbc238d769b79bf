/* bench_rows.h — the random operands of the product benchmarks (bench_gemm, kernel_ab/driver):
 * weight rows quantised to a type and activation rows quantised to q8 blocks, from rand()'s
 * sequence (seed it first), uniform in [-0.5, 0.5]. Header-only: each benchmark is one program. */
#ifndef SLUICE_TESTS_BENCH_ROWS_H
#define SLUICE_TESTS_BENCH_ROWS_H

#include <stdint.h>
#include <stdlib.h>

#include "engine/cpu/kernels.h"
#include "engine/quant.h"

/* f[0..k) = random floats */
static inline void bench_random_floats(float *f, int k)
{
    for (int i = 0; i < k; i++)
        f[i] = (float)rand() / RAND_MAX - 0.5f;
}

/* rows weight rows of k elements quantised to type, rb bytes apart, into w (f: k floats of
 * scratch); 0, or -1 when the type cannot be quantised to */
static inline int bench_random_weights(int type, uint8_t *w, size_t rb, int rows, int k, float *f)
{
    for (int r = 0; r < rows; r++) {
        bench_random_floats(f, k);
        if (eng_quantize_row(type, f, w + rb * r, k) != 0)
            return -1;
    }
    return 0;
}

/* n activation rows of k elements quantised by kt, xs bytes apart, into x (f: k floats of scratch) */
static inline void bench_random_q8(const eng_cpu_kernels_t *kt, char *x, size_t xs, int n, int k, float *f)
{
    for (int t = 0; t < n; t++) {
        bench_random_floats(f, k);
        kt->quantize_q8(f, x + xs * t, k);
    }
}

#endif
