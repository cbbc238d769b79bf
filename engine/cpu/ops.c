/* ops.c — RMSNorm and RoPE (see ops.h). */
#include "engine/cpu/ops.h"

#include <math.h>

void eng_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++)
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
    int half = head_dim / 2;
    for (int e = e0; e < e1; e += 2) {
        int i = e % head_dim / 2;
        float c = cs[i], s = cs[half + i];
        float a = x[e], b = x[e + 1];
        x[e] = a * c - b * s;
        x[e + 1] = a * s + b * c;
    }
}
