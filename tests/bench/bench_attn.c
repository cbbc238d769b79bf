/* bench_attn.c — decode attention of many sequences over the paged KV pool, per KV element type,
 * in one process: the attention of one decode step (every layer, sequence and kv head, one
 * query token, the kv head's query heads together, as the CPU backend's tasks run it) on one
 * thread, over a pool laid out as the engine's (each sequence's blocks scattered through it).
 * The types alternate round by round, so a slow phase of the machine hits them alike; prints
 * each type's median step time and its ratio to F16's.
 *
 *   bench_attn [-b SEQS] [-d DEPTH] [-r ROUNDS] [-l LAYERS] [-k KV_HEADS] [-g GROUP] [-h HEAD_DIM]
 *
 * Defaults: SmolLM2-135M's shape (30 layers, 3 kv heads of 64, 3 query heads each), 16 sequences
 * at depth 256, 15 rounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/cpu/attention.h"
#include "engine/cpu/kernels.h"
#include "tests/bench/bench_util.h"

enum { BLOCK = 16, TYPES = 3 };
#define HUGE_PAGE ((size_t)2 << 20)

/* n bytes on 2 MiB pages, as the CPU backend allocates its pool (a row run per 4 KiB page would be
 * a TLB miss apiece) */
static void *pool_alloc(size_t n)
{
    n = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(HUGE_PAGE, n);
    if (p)
        madvise(p, n, MADV_HUGEPAGE);
    return p;
}

int main(int argc, char **argv)
{
    int seqs = 16, depth = 256, rounds = 15, layers = 30, kvh = 3, group = 3, hd = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "-b")) seqs = v;
        else if (!strcmp(argv[i], "-d")) depth = v;
        else if (!strcmp(argv[i], "-r")) rounds = v;
        else if (!strcmp(argv[i], "-l")) layers = v;
        else if (!strcmp(argv[i], "-k")) kvh = v;
        else if (!strcmp(argv[i], "-g")) group = v;
        else if (!strcmp(argv[i], "-h")) hd = v;
        else depth = -1;
    }
    if (argc % 2 == 0 || seqs <= 0 || depth <= 0 || rounds <= 0 || rounds > 1000 || layers <= 0 || kvh <= 0 ||
        group <= 0 || group > ENG_CPU_ATTEND_MAX_HEADS || hd <= 0 || hd > 512) {
        fprintf(stderr, "usage: bench_attn [-b SEQS] [-d DEPTH] [-r ROUNDS] [-l LAYERS] [-k KV_HEADS] [-g GROUP] "
                        "[-h HEAD_DIM]\n");
        return 2;
    }
    const eng_cpu_kernels_t *k = eng_cpu_kernels_get(eng_cpu_isa_detect());
    const int per_seq = (depth + BLOCK - 1) / BLOCK, blocks = seqs * per_seq;
    int32_t *table = malloc(sizeof(int32_t) * (size_t)blocks);
    float *q = malloc(sizeof(float) * (size_t)group * hd), *out = malloc(sizeof(float) * (size_t)group * hd);
    float *scores = malloc(sizeof(float) * ENG_CPU_ATTEND_SCRATCH(1, group, depth));
    float *row = malloc(sizeof(float) * (size_t)kvh * hd);
    eng_cpu_kv_t kv[TYPES];
    if (!table || !q || !out || !scores || !row)
        return 1;
    for (int b = 0; b < blocks; b++) /* sequence s's j-th block is j * seqs + s: scattered */
        table[b] = (b % per_seq) * seqs + b / per_seq;
    srand(1);
    for (int i = 0; i < group * hd; i++)
        q[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int t = 0; t < TYPES; t++) {
        kv[t] = eng_cpu_kv_layout(layers, kvh, hd, (eng_kv_dtype_t)t, blocks, BLOCK);
        if (!(kv[t].data = pool_alloc(kv[t].block_bytes * (size_t)blocks)))
            return 1;
        for (int s = 0; s < seqs; s++)
            for (int p = 0; p < depth; p++)
                for (int l = 0; l < layers; l++)
                    for (int which = 0; which < 2; which++) {
                        for (int i = 0; i < kvh * hd; i++)
                            row[i] = (float)rand() / RAND_MAX - 0.5f;
                        eng_cpu_kv_store(k, &kv[t], table + s * per_seq, l, p, which, row, 0, kvh * hd);
                    }
    }
    double *ms = malloc(sizeof(double) * TYPES * (size_t)rounds);
    if (!ms)
        return 1;
    for (int r = 0; r < rounds; r++)
        for (int t = 0; t < TYPES; t++) {
            double t0 = bench_now_s();
            for (int l = 0; l < layers; l++)
                for (int s = 0; s < seqs; s++)
                    for (int h = 0; h < kvh; h++)
                        eng_cpu_attend(k, &kv[t], table + s * per_seq, l, h, q, 0, 1, group, depth, 0.125f, scores,
                                       out, 0);
            ms[t * rounds + r] = 1e3 * (bench_now_s() - t0);
        }
    static const char *const names[TYPES] = {"f32", "f16", "int8"};
    double med[TYPES];
    for (int t = 0; t < TYPES; t++) {
        qsort(ms + t * rounds, (size_t)rounds, sizeof(double), bench_cmp_double);
        med[t] = ms[t * rounds + rounds / 2];
    }
    printf("bench_attn (%s): %d sequences at depth %d, %d layers x %d kv heads of %d (%d query heads each), "
           "one thread, median of %d rounds\n", k->name, seqs, depth, layers, kvh, hd, group, rounds);
    for (int t = 0; t < TYPES; t++)
        printf("  %-4s %6.1f MiB pool  %8.3f ms a step (%.3f..%.3f)  %.2fx f16's time\n", names[t],
               kv[t].block_bytes * (double)blocks / (1 << 20), med[t], ms[t * rounds], ms[t * rounds + rounds - 1],
               med[t] / med[1]);
    for (int t = 0; t < TYPES; t++)
        free(kv[t].data);
    free(ms);
    free(row);
    free(scores);
    free(out);
    free(q);
    free(table);
    return 0;
}
