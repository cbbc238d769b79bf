/* ops.c — RMSNorm and RoPE (see ops.h). */
#include "engine/cpu/ops.h"

#include <math.h>

void eng_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
    /* 8 running sums: one sum is a chain of dependent adds, which showed in batched decode */
    double part[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            part[j] += (double)x[i + j] * x[i + j];
    for (; i < n; i++)
        part[0] += (double)x[i] * x[i];
    double ss = 0.0;
    for (int j = 0; j < 8; j++)
        ss += part[j];
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

void eng_cpu_rope_table(int pos, int head_dim, float theta, float *cs)
{
    int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        double angle = pos * pow(theta, -2.0 * i / head_dim);
        cs[i] = (float)cos(angle);
        cs[half + i] = (float)sin(angle);
    }
}

void eng_cpu_rope(float *x, int e0, int e1, int head_dim, const float *cs)
{
    const int half = head_dim / 2;
    /* head by head: a division per pair (e % head_dim) was 4% of a 512-token prompt */
    for (int e = e0; e < e1;) {
        const int h0 = e - e % head_dim, end = h0 + head_dim < e1 ? h0 + head_dim : e1;
        for (; e < end; e += 2) {
            const int i = (e - h0) / 2;
            const float c = cs[i], s = cs[half + i], a = x[e], b = x[e + 1];
            x[e] = a * c - b * s;
            x[e + 1] = a * s + b * c;
        }
    }
}
