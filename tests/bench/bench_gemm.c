/* bench_gemm.c — one thread's matrix-product rate, GMAC/s, on every instruction set this CPU runs
 * but scalar, for steps of 1..512 tokens: the kernels alone, without the
 * step's other work. Weights are random rows quantised to TYPE (eng_quantize_row), activations
 * random rows quantised to 8-bit blocks as the backend does; best of 7 timings per point (the
 * shared machine's slow moments are excluded rather than averaged in). Instruction sets that read
 * packed weights (kernels.h, eng_cpu_pack16) run twice: on the file's layout, and packed ("/p",
 * what the backend runs when the rows are a multiple of 16).
 *
 *   bench_gemm [ROWS] [K] [TYPE] [CHUNK]   default 1536 576 Q4_1 (SmolLM2's FFN gate / up), all rows
 *   e.g. bench_gemm 49152 576 Q8_0         (SmolLM2's LM head)
 *        bench_gemm 1536 576 Q4_1 32       (rows in calls of 32, as the backend's claimed chunks)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/cpu/kernels.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "tests/bench/bench_rows.h"
#include "tests/bench/bench_util.h"

int main(int argc, char **argv)
{
    const int rows = argc > 1 ? atoi(argv[1]) : 1536, k = argc > 2 ? atoi(argv[2]) : 576;
    const char *tname = argc > 3 ? argv[3] : "Q4_1";
    const int chunk = argc > 4 ? atoi(argv[4]) : rows;
    int type = -1;
    for (int t = 0; t < 64 && type < 0; t++)
        if (strcasecmp(eng_type_name(t), tname) == 0)
            type = t;
    if (rows <= 0 || k <= 0 || k % 32 != 0 || chunk <= 0 || (type != ENG_T_Q4_0 && type != ENG_T_Q4_1 && type != ENG_T_Q8_0)) {
        fprintf(stderr, "usage: bench_gemm [ROWS] [K] [TYPE] [CHUNK]: TYPE Q4_0, Q4_1 or Q8_0 (the types sluice "
                        "quantises to), K a multiple of 32, CHUNK rows per call (default all)\n");
        return 2;
    }
    enum { MAX_TOK = 512 };
    const size_t rb = eng_type_row_bytes(type, k), xs = eng_cpu_q8_row_bytes(k);
    uint8_t *w = malloc(rb * rows), *wp = malloc(rb * rows);
    char *x = malloc(xs * MAX_TOK);
    float *f = malloc(sizeof(float) * k), *out = malloc(sizeof(float) * (size_t)MAX_TOK * rows);
    if (!w || !wp || !x || !f || !out)
        return 1;
    if (bench_random_weights(type, w, rb, rows, k, f) != 0)
        return 1;
    const int toks[] = {1, 2, 4, 8, 16, 32, 64, MAX_TOK};
    printf("bench_gemm: %d x %d %s, one thread, GMAC/s (best of 7)\n%-8s", rows, k, tname, "tokens");
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++)
        printf(" %7d", toks[i]);
    printf("\n");
    const int packable = eng_cpu_packable(type, rows) && chunk % ENG_CPU_PACK_ROWS == 0;
    if (packable)
        eng_cpu_pack16(type, w, k, rows, wp);
    for (int run = 0; run < 2 * ENG_CPU_ISA_COUNT; run++) {
        const int isa = run / 2, packed = run % 2;
        const eng_cpu_kernels_t *kt = isa >= ENG_CPU_ISA_AVX2 ? eng_cpu_kernels_get(isa) : NULL;
        if (!kt || (packed && !(kt->pack16 && packable)))
            continue;
        srand(1);
        bench_random_q8(kt, x, xs, MAX_TOK, k, f);
        printf("%s%-*s", kt->name, 8 - (int)strlen(kt->name), packed ? "/p" : "");
        for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
            eng_cpu_gemm_t g = {.type = type, .w = packed ? wp : w, .w_stride = rb, .x = x, .x_stride = xs,
                                .n_tok = toks[i], .k = k, .out = out, .ldo = (size_t)rows, .packed = packed};
            const int iters = 2 + (int)(2e8 / ((double)rows * k * toks[i]));
            double best = 1e30;
            for (int rep = 0; rep < 7; rep++) {
                double t0 = bench_now_s();
                for (int it = 0; it < iters; it++)
                    for (int r = 0; r < rows; r += chunk)
                        kt->gemm(&g, r, r + chunk < rows ? r + chunk : rows);
                double dt = (bench_now_s() - t0) / iters;
                best = dt < best ? dt : best;
            }
            printf(" %7.1f", (double)rows * k * toks[i] / best * 1e-9);
            fflush(stdout);
        }
        printf("\n");
    }
    free(w); free(wp); free(x); free(f); free(out);
    return 0;
}
