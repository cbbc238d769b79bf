/* ops.c — RMSNorm and RoPE (see ops.h), as plain loops over GCC vector types compiled for each
 * instruction set (vector_clones.h): scalar, they were ~4% of a 16-stream decode step. */
#include "engine/cpu/ops.h"

#include <math.h>
#include <string.h>

#include "engine/vector_clones.h"

ENG_VECTOR_CLONES void eng_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
    /* 8 running sums, element i in sum i % 8: one sum is a chain of dependent adds */
    vec8d part = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        vec8f v;
        memcpy(&v, x + i, sizeof v);
        const vec8d d = __builtin_convertvector(v, vec8d);
        part += d * d;
    }
    for (; i < n; i++)
        part[0] += (double)x[i] * x[i];
    double ss = 0.0;
    for (int j = 0; j < 8; j++)
        ss += part[j];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i + 8 <= n; i += 8) {
        vec8f v, g;
        memcpy(&v, x + i, sizeof v);
        memcpy(&g, w + i, sizeof g);
        v = v * scale * g;
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

void eng_cpu_rope_table(int pos, int head_dim, float theta, float *cs)
{
    for (int i = 0; i < head_dim / 2; i++) {
        const double angle = pos * pow(theta, -2.0 * i / head_dim);
        const float c = (float)cos(angle), s = (float)sin(angle);
        cs[2 * i] = cs[2 * i + 1] = c;
        cs[head_dim + 2 * i] = -s;
        cs[head_dim + 2 * i + 1] = s;
    }
}

/* x[e] = x[e] cos + x[e ^ 1] (-+sin): (a, b) -> (a c + b (-s), b c + a s), bitwise a c - b s and
 * a s + b c */
ENG_VECTOR_CLONES void eng_cpu_rope(float *x, int e0, int e1, int head_dim, const float *cs)
{
    /* head by head: a division per pair (e % head_dim) was 4% of a 512-token prompt */
    for (int e = e0; e < e1;) {
        const int h0 = e - e % head_dim, end = h0 + head_dim < e1 ? h0 + head_dim : e1;
        const float *c = cs - h0, *s = cs + head_dim - h0;
        for (; e + 16 <= end; e += 16) {
            vec16f v, cv, sv;
            memcpy(&v, x + e, sizeof v);
            memcpy(&cv, c + e, sizeof cv);
            memcpy(&sv, s + e, sizeof sv);
            /* __builtin_shufflevector: GCC 12+ and clang (clang lacks __builtin_shuffle) */
            const vec16f swapped = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
            v = v * cv + swapped * sv;
            memcpy(x + e, &v, sizeof v);
        }
        for (; e < end; e += 2) {
            const float a = x[e], b = x[e + 1];
            x[e] = a * c[e] + b * s[e];
            x[e + 1] = b * c[e + 1] + a * s[e + 1];
        }
    }
}
