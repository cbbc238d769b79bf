/* bench_membw.c — how fast this machine streams memory on 1..T threads: each thread sums its share
 * of one buffer with 64-byte loads, as a decode step streams the weights (SmolLM2-135M Q4_1: ~90
 * MB a token). Explains the batched-decode ratio of docs/BENCHMARKS.md: one stream's decode is
 * bound by this rate, 16 streams' by arithmetic, so where T threads read more than T times one
 * thread's rate (the 2-core Sapphire Rapids guest: 2 threads 2.1-2.5x), one stream gains more
 * from threads than 16 do. Median of 7 passes per thread count.
 *
 *   bench_membw [MIB] [THREADS]   default 96 MiB, 2 threads
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/bench/bench_util.h"

/* a cache line; loaded as one vector where the CPU has AVX-512 (target_clones), as the decode's
 * products load their weights (16-byte loads read ~2.5x slower here) */
typedef uint64_t line_t __attribute__((vector_size(64)));

typedef struct share {
    const line_t *p;
    size_t n; /* cache lines */
    uint64_t sum; /* written, so the loads are not optimised away */
} share_t;

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx512f", "default")))
#endif
static void *stream(void *arg)
{
    share_t *s = arg;
    line_t a0 = {0}, a1 = a0; /* two independent sums */
    size_t i = 0;
    for (; i + 2 <= s->n; i += 2) {
        a0 += s->p[i];
        a1 += s->p[i + 1];
    }
    if (i < s->n)
        a0 += s->p[i];
    const line_t a = a0 + a1;
    for (int j = 0; j < 8; j++)
        s->sum += a[j];
    return NULL;
}

int main(int argc, char **argv)
{
    const long mib = argc > 1 ? atol(argv[1]) : 96;
    const int max_threads = argc > 2 ? atoi(argv[2]) : 2;
    if (mib <= 0 || max_threads <= 0 || max_threads > 64) {
        fprintf(stderr, "usage: bench_membw [MIB] [THREADS]: MIB > 0, 1 <= THREADS <= 64\n");
        return 2;
    }
    const size_t bytes = (size_t)mib << 20, lines = bytes / 64;
    line_t *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "bench_membw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    memset(buf, 1, bytes);
    printf("bench_membw: %ld MiB read by each pass, GB/s (median of 7)\n", mib);
    double one = 0;
    for (int t = 1; t <= max_threads; t++) {
        double gbs[7];
        for (int rep = 0; rep < 7; rep++) {
            pthread_t th[64];
            share_t sh[64];
            const double t0 = bench_now_s();
            for (int i = 0; i < t; i++) {
                const size_t lo = lines / t * i, hi = i == t - 1 ? lines : lines / t * (i + 1);
                sh[i] = (share_t){.p = buf + lo, .n = hi - lo};
                if (pthread_create(&th[i], NULL, stream, &sh[i]) != 0) {
                    fprintf(stderr, "bench_membw: cannot start thread %d\n", i);
                    return 1;
                }
            }
            for (int i = 0; i < t; i++)
                pthread_join(th[i], NULL);
            gbs[rep] = (double)bytes / (bench_now_s() - t0) * 1e-9;
        }
        qsort(gbs, 7, sizeof(double), bench_cmp_double);
        if (t == 1)
            one = gbs[3];
        printf("%2d thread%s %6.1f GB/s  %.2fx one thread\n", t, t > 1 ? "s" : " ", gbs[3], gbs[3] / one);
    }
    free(buf);
    return 0;
}
