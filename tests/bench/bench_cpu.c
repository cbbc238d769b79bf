/* bench_cpu.c — llama-bench's two figures for sluice's CPU backend: pp (one prompt of P tokens
 * from an empty cache, logits of the last token) and tg (N tokens decoded one at a time from an
 * empty cache), tokens per second, median of R runs. Built and run by scripts/bench-cpu-peer.sh.
 * With -b B (B > 1) it also decodes B sequences together, N steps of one token each from an
 * empty cache, and reports their total tokens/s against tg (one stream): the engine's target is
 * 16 streams >= 4x one stream, which holds when a step of B tokens reads the weights once.
 * With -d D the N decoded tokens go at positions D..D+N-1 (llama-bench's depth: decode over a
 * context of D tokens, prefilled untimed past the P of pp) instead of 0..N-1, the B sequences' too
 * (their pools written once first, one token per block, so attention reads real memory; the
 * timing does not depend on the values); -k f32|f16|int8 picks the KV cache's elements (default: the
 * engine's, F16 on CPUs with AVX-512 and F32 elsewhere; llama-bench's default cache is F16).
 *
 *   bench_cpu MODEL [-t THREADS] [-p 512] [-n 128] [-r 5] [-b 16] [-d 0] [-k f32|f16|int8]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/model.h"
#include "sched/status.h"
#include "tests/bench/bench_util.h"

#define BLOCK 16

int main(int argc, char **argv)
{
    const char *path = NULL;
    eng_backend_params_t prm = eng_backend_params_default();
    int threads = 2, P = 512, N = 128, R = 5, B = 1, D = 0, kv = (int)prm.kv_dtype;
    static const char *const kv_names[] = {"f32", "f16", "int8"};
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "-t") == 0) threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0) P = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-n") == 0) N = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-r") == 0) R = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-b") == 0) B = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-d") == 0) D = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "-k") == 0) for (kv = 2, i++; kv >= 0 && strcmp(argv[i], kv_names[kv]); kv--) {}
        else path = argv[i];
    }
    if (!path || P <= 0 || N <= 0 || R <= 0 || R > 100 || B <= 0 || B > 256 || D < 0 || kv < 0) {
        fprintf(stderr, "usage: bench_cpu MODEL [-t THREADS] [-p PROMPT] [-n GEN] [-r REPS] [-b SEQS] [-d DEPTH] "
                        "[-k f32|f16|int8]\n");
        return 2;
    }
    char err[512];
    eng_model_t *m = eng_model_load(path, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_cpu: %s\n", err);
        return 1;
    }
    prm.n_threads = threads;
    prm.kv_dtype = (eng_kv_dtype_t)kv;
    eng_backend_t *b = eng_backend_create("cpu", m, &prm, err, sizeof err);
    int ctx = P > D + N ? P : D + N, nblocks = (ctx + BLOCK - 1) / BLOCK;
    if (!b || b->ops->kv_alloc(b, nblocks * B, BLOCK) != SL_OK) {
        fprintf(stderr, "bench_cpu: %s\n", b ? b->ops->errmsg(b) : err);
        return 1;
    }
    int32_t *tokens = malloc(sizeof(int32_t) * (ctx + B)), *table = malloc(sizeof(int32_t) * nblocks * B);
    float *logits = malloc(sizeof(float) * m->cfg.vocab * B);
    eng_batch_seq_t *seqs = malloc(sizeof *seqs * B);
    for (int i = 0; i < ctx + B; i++)
        tokens[i] = (int32_t)((i * 7919 + 13) % m->cfg.vocab);
    for (int i = 0; i < nblocks * B; i++)
        table[i] = i;
    for (int j = 1; B > 1 && D > 0 && j < B; j++) /* touch the other sequences' blocks */
        for (int k = 0; k < nblocks; k++) {
            int rows;
            eng_batch_seq_t s = {.tokens = tokens, .n_tokens = 1, .pos = k * BLOCK, .block_table = table + j * nblocks,
                                 .n_blocks = nblocks, .logits = 1};
            eng_batch_t bt = {.n_seqs = 1, .seqs = &s};
            if (b->ops->forward(b, &bt, logits, &rows) != SL_OK) {
                fprintf(stderr, "bench_cpu: %s\n", b->ops->errmsg(b));
                return 1;
            }
        }
    double pp[100], tg[100], bd[100];
    for (int r = -1; r < R; r++) { /* run -1 warms caches and pages */
        int rows;
        eng_batch_seq_t s = {.tokens = tokens, .n_tokens = P, .pos = 0, .block_table = table,
                             .n_blocks = nblocks, .logits = 1};
        eng_batch_t bt = {.n_seqs = 1, .seqs = &s};
        double t0 = bench_now_s();
        if (b->ops->forward(b, &bt, logits, &rows) != SL_OK) {
            fprintf(stderr, "bench_cpu: %s\n", b->ops->errmsg(b));
            return 1;
        }
        if (D > P) { /* the rest of the depth, untimed */
            s = (eng_batch_seq_t){.tokens = tokens + P, .n_tokens = D - P, .pos = P, .block_table = table,
                                  .n_blocks = nblocks, .logits = 1};
            b->ops->forward(b, &bt, logits, &rows);
        }
        double t1 = bench_now_s();
        for (int i = 0; i < N; i++) {
            s = (eng_batch_seq_t){.tokens = &tokens[D + i], .n_tokens = 1, .pos = D + i, .block_table = table,
                                  .n_blocks = nblocks, .logits = 1};
            b->ops->forward(b, &bt, logits, &rows);
        }
        double t2 = bench_now_s();
        for (int i = 0; B > 1 && i < N; i++) { /* sequence j decodes token i + j at position D + i */
            for (int j = 0; j < B; j++)
                seqs[j] = (eng_batch_seq_t){.tokens = &tokens[i + j], .n_tokens = 1, .pos = D + i,
                                            .block_table = table + j * nblocks, .n_blocks = nblocks, .logits = 1};
            eng_batch_t bb = {.n_seqs = B, .seqs = seqs};
            b->ops->forward(b, &bb, logits, &rows);
        }
        double t3 = bench_now_s();
        if (r >= 0) {
            pp[r] = P / (t1 - t0);
            tg[r] = N / (t2 - t1);
            bd[r] = (double)B * N / (t3 - t2);
        }
    }
    qsort(pp, R, sizeof(double), bench_cmp_double);
    qsort(tg, R, sizeof(double), bench_cmp_double);
    char depth[32] = "";
    if (D > 0)
        snprintf(depth, sizeof depth, " @ d%d", D);
    printf("sluice cpu (%s, %d threads, KV %s): pp%d %.1f t/s  tg%d%s %.1f t/s  (median of %d; pp range %.1f-%.1f, "
           "tg range %.1f-%.1f)\n", eng_cpu_backend_isa(b), threads, kv_names[kv], P, pp[R / 2], N, depth,
           tg[R / 2], R, pp[0], pp[R - 1], tg[0], tg[R - 1]);
    if (B > 1) {
        qsort(bd, R, sizeof(double), bench_cmp_double);
        printf("sluice cpu batched decode: %d sequences x %d steps%s: %.1f t/s in all (range %.1f-%.1f), "
               "%.2fx one stream's tg%d\n", B, N, depth, bd[R / 2], bd[0], bd[R - 1], bd[R / 2] / tg[R / 2], N);
    }
    int active;
    int64_t drops;
    b->ops->threads(b, &active, &drops);
    if (drops > 0)
        printf("sluice cpu: other processes held the cores: dropped a thread %lld time(s), %d at the end\n",
               (long long)drops, active);
    eng_backend_free(b);
    eng_model_free(m);
    free(tokens);
    free(table);
    free(logits);
    free(seqs);
    return 0;
}
