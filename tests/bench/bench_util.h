/* bench_util.h — what the CPU benchmarks share: a monotonic clock and a qsort order for doubles
 * (their medians). Header-only: each benchmark is one program. */
#ifndef SLUICE_TESTS_BENCH_UTIL_H
#define SLUICE_TESTS_BENCH_UTIL_H

#include <time.h>

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* qsort comparator: ascending doubles */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#endif
